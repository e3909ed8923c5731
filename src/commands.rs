//! The read-only commands: `list`, `show`, `validate`. Text for people, `--json` for scripts.

use std::io::Write;
use std::path::PathBuf;

use color_eyre::Result;
use serde::Serialize;

use crate::exit::Code;
use crate::profile::diag::{Collector, Diagnostic, Severity, Source, display_path};
use crate::profile::discover::{self, Places};
use crate::profile::model::{Server, Startup};
use crate::profile::parse::FileReport;
use crate::profile::resolve::{self, Context, Origin, ResolveError, Resolved, Strictness};
use crate::profile::settings::Launch;
use crate::profile::{self, Catalog, Entry, LookupError};

/// The widest column `list` and `show` pad to; longer names are printed whole, unpadded.
const MAX_COLUMN: usize = 40;

/// Load every profile; print unreadable files and file errors on stderr.
pub fn load_catalog(cli_files: Vec<PathBuf>) -> Catalog {
    let places = Places::from_system(cli_files);
    let catalog = Catalog::load(&places.candidates());
    report_problems(&catalog);
    catalog
}

fn report_problems(catalog: &Catalog) {
    let mut err = std::io::stderr().lock();
    report_unreadable(catalog, &mut err);
    for r in catalog.reports.iter().filter(|r| r.has_errors()) {
        let _ = writeln!(err, "{}", r.rendered_errors());
    }
}

fn report_unreadable(catalog: &Catalog, err: &mut impl Write) {
    for (path, origin, reason) in &catalog.unreadable {
        let _ = writeln!(
            err,
            "error: cannot read {} (from {}): {reason}",
            path.display(),
            origin.describe()
        );
    }
}

#[derive(Serialize)]
struct ListRow<'a> {
    name: &'a str,
    resource: &'a str,
    startup: &'static str,
    pvlaunch: bool,
    file: String,
    line: usize,
    origin: discover::Origin,
    overrides: Vec<String>,
}

pub fn list(cli_files: Vec<PathBuf>, json: bool) -> Result<Code> {
    let catalog = load_catalog(cli_files);
    let rows: Vec<ListRow> = catalog
        .entries
        .iter()
        .map(|e| ListRow {
            name: &e.server.name,
            resource: &e.server.resource_text,
            startup: e.server.startup.kind(),
            pvlaunch: e.server.pvlaunch.is_some(),
            file: display_path(&e.server.location.file),
            line: e.server.location.line,
            origin: e.origin,
            overrides: e
                .overrides
                .iter()
                .map(|l| format!("{}:{}", display_path(&l.file), l.line))
                .collect(),
        })
        .collect();
    let mut out = crate::term::stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else if rows.is_empty() {
        writeln!(
            out,
            "no profiles found\n  looked in: ParaView's servers.pvsc, pvlaunch's config folder, PVLAUNCH_PROFILES, -f FILE\n  hint: try `pvlaunch -f pvsc/cluster-a.pvsc list`"
        )?;
    } else {
        let w_name = rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, MAX_COLUMN);
        let w_res = rows
            .iter()
            .map(|r| r.resource.chars().count())
            .max()
            .unwrap_or(8)
            .clamp(8, MAX_COLUMN);
        writeln!(
            out,
            "{:w_name$}  {:w_res$}  {:7}  {:8}  FILE",
            "NAME", "RESOURCE", "STARTUP", "PVLAUNCH"
        )?;
        for r in &rows {
            writeln!(
                out,
                "{:w_name$}  {:w_res$}  {:7}  {:8}  {}:{}",
                r.name,
                r.resource,
                r.startup,
                if r.pvlaunch { "yes" } else { "no" },
                r.file,
                r.line
            )?;
            for o in &r.overrides {
                writeln!(out, "{:w_name$}  (overrides the definition at {o})", "")?;
            }
        }
    }
    Ok(if catalog.has_errors() {
        Code::InvalidProfile
    } else {
        Code::Success
    })
}

#[derive(Serialize)]
struct ShowJson<'a> {
    file: String,
    line: usize,
    origin: discover::Origin,
    startup: &'static str,
    /// The definition ParaView would use (its own servers.pvsc wins over --servers-file).
    paraview_definition: profile::ParaViewDefinition,
    #[serde(flatten)]
    resolved: &'a Resolved,
    pvlaunch: Option<&'a profile::settings::Launch>,
}

/// A profile picked by name and resolved with `--set`: where `show` and `connect` start.
pub struct Picked {
    pub catalog: Catalog,
    index: usize,
    pub resolved: Resolved,
    /// pvlaunch's settings, substituted and checked (`None` for a plain ParaView server).
    pub launch: Option<Launch>,
    /// The environment the profile was resolved in.
    pub environment: std::collections::BTreeMap<String, String>,
}

impl Picked {
    pub fn entry(&self) -> &Entry {
        &self.catalog.entries[self.index]
    }
}

/// A server resolved the way `show`, `connect` and `validate` all resolve it.
#[derive(Debug)]
pub struct Prepared {
    pub resolved: Resolved,
    /// pvlaunch's settings, substituted and typed (`None` for a plain ParaView server).
    pub launch: Option<Launch>,
}

/// Why a server cannot be prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// The command line is wrong (`--set`, `--strict`): exit 2.
    Usage(Vec<ResolveError>),
    /// The profile is wrong: positioned errors in its file (exit 3).
    Profile(Vec<Diagnostic>),
}

/// Resolve `server` (from the file `source`) with `sets`, type its pvlaunch settings, and
/// write a trial job script with them. The one path for `validate`, `show` and `connect`: a
/// profile `validate` accepts resolves the same way for the others.
pub fn prepare(
    server: &Server,
    source: &Source,
    sets: &[String],
    ctx: &mut Context,
    strictness: Strictness,
) -> Result<Prepared, PrepareError> {
    let mut diags = Collector::new(source);
    let server_path = format!("Servers/Server[{}]", server.name);
    let resolved = match resolve::resolve(server, sets, ctx, strictness) {
        Ok(r) => r,
        Err(errors) => {
            let (usage, profile): (Vec<_>, Vec<_>) =
                errors.into_iter().partition(ResolveError::is_usage);
            if profile.is_empty() {
                return Err(PrepareError::Usage(usage));
            }
            for e in profile {
                let offset = e.offset().unwrap_or(0);
                diags.push(
                    Severity::Error,
                    offset,
                    &format!("{server_path}/CommandStartup"),
                    e.to_string(),
                    Some(
                        "a command line is at most 64 KiB after substitution, in at most 1000 replacements"
                            .into(),
                    ),
                );
            }
            return Err(PrepareError::Profile(diags.diagnostics));
        }
    };
    let Some(settings) = &server.pvlaunch else {
        return Ok(Prepared {
            resolved,
            launch: None,
        });
    };
    let path = format!("{server_path}/PVLaunch");
    let launch = match settings.resolve(|n| resolved.lookup(n).map(str::to_string)) {
        Ok(l) => l,
        Err(problems) => {
            for (offset, at, message, hint) in problems {
                diags.push(
                    Severity::Error,
                    offset,
                    &format!("{path}/{at}"),
                    message,
                    hint,
                );
            }
            return Err(PrepareError::Profile(diags.diagnostics));
        }
    };
    if let Err(e) = trial_plan(&resolved, &launch) {
        let why = match e {
            crate::plan::PlanError::Script(e) => e.to_string(),
            other => other.to_string(),
        };
        diags.push(
            Severity::Error,
            settings.job.scheduler.offset,
            &format!("{path}/Job"),
            format!(
                "the {} job script cannot be written: {why}",
                launch.scheduler
            ),
            None,
        );
        return Err(PrepareError::Profile(diags.diagnostics));
    }
    Ok(Prepared {
        resolved,
        launch: Some(launch),
    })
}

/// Build the plan `connect` would build (no client of its own, a placeholder login and
/// session): what fails here would fail there.
fn trial_plan(
    resolved: &Resolved,
    launch: &Launch,
) -> Result<crate::plan::Plan, crate::plan::PlanError> {
    let target = crate::ssh::Target {
        program: "ssh".into(),
        destination: launch.login_host.clone(),
        user: launch.login_user.clone(),
        port: launch.login_port,
        jump_hosts: launch.jump_hosts.clone(),
        control_path: "/nonexistent/cm".into(),
        extra_options: vec![],
    };
    crate::plan::build(
        resolved,
        launch,
        crate::client::Mode::Wait,
        &crate::plan::Overrides::default(),
        &target,
        true,
        crate::plan::Fresh {
            connect_id: 1,
            tag: "check".into(),
        },
    )
}

/// Whether to ask the local client for its version when picking a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionProbe {
    /// Always (`connect`: the server must match the client that will run).
    Always,
    /// Only when the profile uses `PV_VERSION*` (`show`, `validate`).
    IfUsed,
}

/// Load the catalog, find `name`, resolve it with `sets`, and resolve its pvlaunch settings.
/// Problems are printed on stderr; the error is the exit code to return. Asks the local client
/// for its version (see [`pick_with`]).
pub fn pick(
    cli_files: Vec<PathBuf>,
    name: &str,
    sets: &[String],
    strict: bool,
) -> Result<Picked, Code> {
    pick_with(cli_files, name, sets, strict, VersionProbe::Always)
}

/// [`pick`], saying when to probe the client's version. A profile whose definition has errors
/// is refused with those errors (exit 3), not reported as missing.
pub fn pick_with(
    cli_files: Vec<PathBuf>,
    name: &str,
    sets: &[String],
    strict: bool,
    probe: VersionProbe,
) -> Result<Picked, Code> {
    let places = Places::from_system(cli_files);
    let catalog = Catalog::load(&places.candidates());
    let mut err = std::io::stderr().lock();
    report_unreadable(&catalog, &mut err);
    let index = match catalog.lookup(name) {
        Ok(e) => catalog
            .entries
            .iter()
            .position(|x| std::ptr::eq(x, e))
            .expect("from the catalog"),
        Err(LookupError::Invalid(bad)) => {
            let _ = writeln!(
                err,
                "error: profile `{name}` is invalid: {} error(s) in its definition at {} (from {})\n",
                bad.server.errors,
                bad.server.location,
                bad.origin.describe()
            );
            let _ = writeln!(err, "{}", bad.server.rendered_errors());
            return Err(Code::InvalidProfile);
        }
        Err(LookupError::Unknown(e)) => {
            let _ = writeln!(err, "error: {e}");
            return Err(Code::Usage);
        }
    };
    let entry = &catalog.entries[index];
    let source = catalog
        .reports
        .iter()
        .find(|r| r.source.path == entry.server.location.file)
        .map(|r| r.source.clone())
        .expect("the entry's file was read");
    let wants_version = probe == VersionProbe::Always || profile::uses_version(&entry.server);
    let mut ctx = profile::system_context(wants_version);
    if wants_version && let resolve::VersionOrigin::BuiltIn { reason } = &ctx.version_origin {
        let _ = writeln!(
            err,
            "warning: the local ParaView's version is unknown ({reason}); PV_VERSION* say {} (set PVLAUNCH_PARAVIEW_VERSION to choose)",
            ctx.version.full
        );
    }
    let environment = ctx.environment.clone();
    let prepared = match prepare(
        &entry.server,
        &source,
        sets,
        &mut ctx,
        Strictness { strict },
    ) {
        Ok(p) => p,
        Err(PrepareError::Usage(errors)) => {
            for e in errors {
                let _ = writeln!(err, "error: {e}");
            }
            return Err(Code::Usage);
        }
        Err(PrepareError::Profile(diags)) => {
            let _ = writeln!(err, "error: profile `{name}` is invalid\n");
            let _ = writeln!(
                err,
                "{}",
                crate::profile::diag::render_limited(&diags, diags.len())
            );
            return Err(Code::InvalidProfile);
        }
    };
    Ok(Picked {
        catalog,
        index,
        resolved: prepared.resolved,
        launch: prepared.launch,
        environment,
    })
}

pub fn show(cli_files: Vec<PathBuf>, json: bool, args: &crate::cli::ShowArgs) -> Result<Code> {
    let picked = match pick_with(
        cli_files,
        &args.name,
        &args.set,
        args.strict,
        VersionProbe::IfUsed,
    ) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let (entry, resolved, launch) = (picked.entry(), &picked.resolved, &picked.launch);
    let paraview_definition = picked.catalog.paraview_definition(entry);
    let mut out = crate::term::stdout();
    if json {
        let doc = ShowJson {
            file: display_path(&entry.server.location.file),
            line: entry.server.location.line,
            origin: entry.origin,
            startup: entry.server.startup.kind(),
            paraview_definition,
            resolved,
            pvlaunch: launch.as_ref(),
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write!(
            out,
            "{}",
            render_show_with(entry, resolved, launch.as_ref(), Some(&paraview_definition))
        )?;
    }
    Ok(Code::Success)
}

fn origin_word(o: Origin) -> &'static str {
    match o {
        Origin::Default => "default",
        Origin::Random => "random",
        Origin::Fallback => "no default",
        Origin::Set => "--set",
        Origin::Declared => "<Set>",
        Origin::Switch => "<Switch>",
        Origin::Predefined => "predefined",
        Origin::Environment => "environment",
    }
}

/// The text form of `show`.
pub fn render_show(entry: &Entry, r: &Resolved, launch: Option<&Launch>) -> String {
    render_show_with(entry, r, launch, None)
}

/// The text form of `show`, saying which definition ParaView would use when given.
pub fn render_show_with(
    entry: &Entry,
    r: &Resolved,
    launch: Option<&Launch>,
    paraview: Option<&profile::ParaViewDefinition>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let server = &entry.server;
    let _ = writeln!(s, "{}", server.name);
    let _ = writeln!(
        s,
        "  file       {}:{} ({})",
        display_path(&server.location.file),
        server.location.line,
        entry.origin.describe()
    );
    if let Some(p) = paraview {
        if p.same {
            let _ = writeln!(s, "  in ParaView the same definition");
        } else {
            let _ = writeln!(
                s,
                "  in ParaView {}:{} ({}) instead: ParaView's own file wins over --servers-file, pvlaunch lets -f win",
                p.file,
                p.line,
                p.origin.describe()
            );
        }
    }
    let _ = writeln!(s, "  resource   {}", server.resource_text);
    let _ = writeln!(s, "  endpoint   {}", r.endpoint);
    match &server.startup {
        Startup::Manual => {
            let _ = writeln!(s, "  startup    manual (start pvserver yourself)");
        }
        Startup::Command(_) => {
            let _ = writeln!(s, "  startup    command");
        }
    }
    if let Some(id) = r.connect_id {
        let _ = writeln!(s, "  connect-id {id}");
    }
    let _ = writeln!(
        s,
        "  paraview   {} ({})",
        r.variables
            .get("PV_VERSION_FULL")
            .map_or("?", |v| v.value.as_str()),
        r.version_origin
    );
    if let Some(t) = server.timeout {
        let _ = writeln!(
            s,
            "  timeout    {t} s{}",
            if t < 0 { " (wait forever)" } else { "" }
        );
    }
    if !r.options.is_empty() {
        let _ = writeln!(s, "\noptions");
        let w = r
            .options
            .iter()
            .map(|o| o.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(MAX_COLUMN);
        let wv = r
            .options
            .iter()
            .map(|o| display_value(o).chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        for o in &r.options {
            let ro = if o.readonly { ", read-only" } else { "" };
            let _ = writeln!(
                s,
                "  {:w$} = {:wv$}  {} ({}{ro}); {}",
                o.name,
                display_value(o),
                o.type_name,
                origin_word(o.origin),
                o.allowed
            );
        }
    }
    let _ = writeln!(s, "\nvariables");
    let w = r
        .variables
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .min(MAX_COLUMN);
    for (k, v) in &r.variables {
        let value = if r
            .options
            .iter()
            .any(|o| &o.name == k && o.type_name == "password")
        {
            "********".to_string()
        } else {
            v.value.clone()
        };
        let _ = writeln!(s, "  {k:w$} = {value:?}  ({})", origin_word(v.origin));
    }
    if let Some(cmd) = &r.command {
        let _ = writeln!(
            s,
            "\ncommand (process_wait {} s, delay {} s)",
            cmd.process_wait, cmd.delay
        );
        let _ = writeln!(s, "  {}", cmd.string);
        let _ = writeln!(s, "\nargv");
        for (i, a) in cmd.argv.iter().enumerate() {
            let _ = writeln!(s, "  [{i}] {a}");
        }
        if !cmd.unknown.is_empty() {
            let _ = writeln!(
                s,
                "\nnote: {} had no value and became the bare name (use --strict to make this an error)",
                cmd.unknown
                    .iter()
                    .map(|n| format!("${n}$"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let Some(l) = launch {
        let _ = writeln!(s, "\npvlaunch settings");
        let mut login = l.login_host.clone();
        if let Some(u) = &l.login_user {
            login = format!("{u}@{login}");
        }
        if !l.jump_hosts.is_empty() {
            login.push_str(&format!(" via {}", l.jump_hosts.join(", ")));
        }
        let _ = writeln!(s, "  login       {login}");
        let _ = writeln!(
            s,
            "  job         {}: {} node(s) x {} rank(s), walltime {}, partition {}, account {}",
            l.scheduler,
            l.nodes,
            l.ranks_per_node,
            l.walltime.map_or("(site default)".to_string(), |w| w.hms()),
            l.partition.as_deref().unwrap_or("(site default)"),
            l.account.as_deref().unwrap_or("(none)")
        );
        for line in &l.setup {
            let _ = writeln!(s, "  set-up      {line}");
        }
        for d in &l.directives {
            let _ = writeln!(s, "  directive   {d}");
        }
        let mut server = l.launcher.clone();
        server.push(l.pvserver.clone());
        server.extend(l.pvserver_args.iter().cloned());
        let _ = writeln!(s, "  pvserver    {}", server.join(" "));
        let _ = writeln!(s, "  recipe      {}", l.recipe.name());
        let remote = if l.remote_port == 0 {
            "chosen by sshd".to_string()
        } else {
            l.remote_port.to_string()
        };
        let _ = writeln!(
            s,
            "  ports       client {}, login node {remote}",
            l.client_port
                .map_or("(resource port)".to_string(), |p| p.to_string())
        );
        let _ = writeln!(s, "  connect-id  {:?}", l.connect_id);
        let _ = writeln!(
            s,
            "  hops        {}",
            match l.owned_hops {
                crate::profile::settings::OwnedHops::Preferred => {
                    "owned (pvlaunch beside pvserver, a session key on every hop); without pvlaunch on the cluster: the plain path, which other users could reach (warned)"
                }
                crate::profile::settings::OwnedHops::Required => {
                    "owned (pvlaunch beside pvserver, a session key on every hop); without pvlaunch on the cluster: no session (owned-hops=\"required\")"
                }
            }
        );
        let _ = writeln!(
            s,
            "  timeouts    queue {} s ({}), connect {} s",
            l.queue_timeout_secs,
            human_duration(l.queue_timeout_secs),
            l.connect_timeout_secs
        );
        let _ = writeln!(
            s,
            "  walltime    {}",
            crate::plan::walltime_words(l.walltime, l.warn_before, !cfg!(windows))
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "\nwarning: {w}");
    }
    s
}

/// `3600` -> `1 h`, `5400` -> `1 h 30 min`, `90` -> `1 min 30 s`.
fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let parts: Vec<String> = [(h, "h"), (m, "min"), (s, "s")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    if parts.is_empty() {
        "0 s".into()
    } else {
        parts.join(" ")
    }
}

fn display_value(o: &resolve::ResolvedOption) -> String {
    if o.type_name == "password" && !o.value.is_empty() {
        "********".into()
    } else {
        format!("{:?}", o.value)
    }
}

#[derive(Serialize)]
struct ValidateFile<'a> {
    file: String,
    servers: Vec<&'a str>,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
    /// Diagnostics found but not kept (beyond the first of each file).
    omitted: usize,
}

/// Read one file and resolve each of its servers as `show` and `connect` would (no `--set`):
/// a server that fails is moved to the report's invalid servers with its positioned errors.
pub fn check_file(path: &std::path::Path) -> std::io::Result<FileReport> {
    let mut report = profile::read_file(path)?;
    check_report(&mut report, |server| {
        profile::system_context(profile::uses_version(server))
    });
    Ok(report)
}

/// Resolve every server of `report` in the context `context` gives it (see [`prepare`]);
/// failures become the report's errors.
pub fn check_report(report: &mut FileReport, mut context: impl FnMut(&Server) -> Context) {
    let mut failed = Vec::new();
    for (i, server) in report.servers.iter().enumerate() {
        let mut ctx = context(server);
        match prepare(server, &report.source, &[], &mut ctx, Strictness::default()) {
            Ok(_) => {}
            Err(PrepareError::Profile(diags)) => failed.push((i, diags)),
            // No `--set` is given, so no usage error can occur; report one as a profile error.
            Err(PrepareError::Usage(errors)) => {
                let mut c = Collector::new(&report.source);
                let offset = report.source.text.find("<Server").unwrap_or(0);
                for e in errors {
                    c.error(
                        offset,
                        &format!("Servers/Server[{}]", server.name),
                        e.to_string(),
                    );
                }
                failed.push((i, c.diagnostics));
            }
        }
    }
    for (i, diags) in failed.into_iter().rev() {
        report.invalidate(i, diags);
    }
}

pub fn validate(files: &[PathBuf], json: bool) -> Result<Code> {
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        match check_file(f) {
            Ok(r) => reports.push(r),
            Err(e) => unreadable.push((f.clone(), e.to_string())),
        }
    }
    let errors: usize = reports.iter().map(|r| r.error_count()).sum::<usize>() + unreadable.len();
    let warnings: usize = reports.iter().map(|r| r.warning_count()).sum();
    // A reader that went away does not change the verdict (exit 3 for an invalid file).
    let mut out = crate::term::stdout();
    if json {
        let mut docs: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::to_value(ValidateFile {
                    file: display_path(&r.source.path),
                    servers: r.servers.iter().map(|s| s.name.as_str()).collect(),
                    errors: r.error_count(),
                    warnings: r.warning_count(),
                    diagnostics: &r.diagnostics,
                    omitted: (r.error_count() + r.warning_count())
                        .saturating_sub(r.diagnostics.len()),
                })
                .expect("serialisable")
            })
            .collect();
        for (f, e) in &unreadable {
            docs.push(serde_json::json!({"file": f.display().to_string(), "errors": 1, "warnings": 0, "unreadable": e}));
        }
        serde_json::to_writer_pretty(&mut out, &docs)?;
        writeln!(out)?;
    } else {
        for (f, e) in &unreadable {
            writeln!(out, "error: cannot read {}: {e}\n", f.display())?;
        }
        for r in &reports {
            if !r.diagnostics.is_empty() {
                writeln!(out, "{}", r.rendered())?;
            }
            let names: Vec<String> = r
                .servers
                .iter()
                .take(20)
                .map(|s| crate::profile::diag::bounded(&s.name, 60))
                .collect();
            let more = r.servers.len().saturating_sub(names.len());
            let status = if r.has_errors() { "INVALID" } else { "ok" };
            writeln!(
                out,
                "{status}: {} ({} server(s): {}{})",
                display_path(&r.source.path),
                r.servers.len(),
                names.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(
            out,
            "{errors} error(s), {warnings} warning(s) in {} file(s)",
            files.len()
        )?;
    }
    Ok(if errors > 0 {
        Code::InvalidProfile
    } else {
        Code::Success
    })
}
