//! The read-only commands: `list`, `show`, `validate`. Text for people, `--json` for scripts.

use std::io::Write;
use std::path::PathBuf;

use color_eyre::Result;
use serde::Serialize;

use crate::exit::Code;
use crate::profile::diag::{Diagnostic, display_path};
use crate::profile::discover::{self, Places};
use crate::profile::model::Startup;
use crate::profile::resolve::{self, Origin, Resolved, Strictness};
use crate::profile::settings::Launch;
use crate::profile::{self, Catalog, Entry};

/// Load every profile; print unreadable files and file errors on stderr.
pub fn load_catalog(cli_files: Vec<PathBuf>) -> Catalog {
    let places = Places::from_system(cli_files);
    let catalog = Catalog::load(&places.candidates());
    report_problems(&catalog);
    catalog
}

fn report_problems(catalog: &Catalog) {
    let mut err = std::io::stderr().lock();
    for (path, origin, reason) in &catalog.unreadable {
        let _ = writeln!(
            err,
            "error: cannot read {} (from {}): {reason}",
            path.display(),
            origin.describe()
        );
    }
    for d in catalog.diagnostics().filter(|d| d.is_error()) {
        let _ = writeln!(err, "{}", d.render());
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
            .max(4);
        let w_res = rows
            .iter()
            .map(|r| r.resource.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
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

/// Load the catalog, find `name`, resolve it with `sets`, and resolve its pvlaunch settings.
/// Problems are printed on stderr; the error is the exit code to return.
pub fn pick(
    cli_files: Vec<PathBuf>,
    name: &str,
    sets: &[String],
    strict: bool,
) -> Result<Picked, Code> {
    let catalog = load_catalog(cli_files);
    let index = match catalog.get(name) {
        Ok(e) => catalog
            .entries
            .iter()
            .position(|x| std::ptr::eq(x, e))
            .expect("from the catalog"),
        Err(e) => {
            crate::say_err!("error: {e}");
            return Err(Code::Usage);
        }
    };
    let entry = &catalog.entries[index];
    let mut ctx = profile::system_context();
    let environment = ctx.environment.clone();
    let resolved = resolve::resolve(&entry.server, sets, &mut ctx, Strictness { strict }).map_err(
        |errors| {
            for e in errors {
                crate::say_err!("error: {e}");
            }
            Code::Usage
        },
    )?;
    let launch = match &entry.server.pvlaunch {
        None => None,
        Some(settings) => match settings.resolve(|n| resolved.lookup(n).map(str::to_string)) {
            Ok(l) => Some(l),
            Err(problems) => {
                let source = catalog
                    .reports
                    .iter()
                    .find(|r| r.source.path == entry.server.location.file)
                    .map(|r| r.source.clone())
                    .expect("the entry's file was read");
                let mut diags = crate::profile::diag::Collector::new(&source);
                let path = format!("Servers/Server[{}]/PVLaunch", entry.server.name);
                for (offset, at, message, hint) in problems {
                    diags.push(
                        crate::profile::diag::Severity::Error,
                        offset,
                        &format!("{path}/{at}"),
                        message,
                        hint,
                    );
                }
                for d in &diags.diagnostics {
                    crate::say_err!("{}", d.render());
                }
                return Err(Code::InvalidProfile);
            }
        },
    };
    Ok(Picked {
        catalog,
        index,
        resolved,
        launch,
        environment,
    })
}

pub fn show(cli_files: Vec<PathBuf>, json: bool, args: &crate::cli::ShowArgs) -> Result<Code> {
    let picked = match pick(cli_files, &args.name, &args.set, args.strict) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let (entry, resolved, launch) = (picked.entry(), &picked.resolved, &picked.launch);
    let mut out = crate::term::stdout();
    if json {
        let doc = ShowJson {
            file: display_path(&entry.server.location.file),
            line: entry.server.location.line,
            origin: entry.origin,
            startup: entry.server.startup.kind(),
            resolved,
            pvlaunch: launch.as_ref(),
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render_show(entry, resolved, launch.as_ref()))?;
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
    if let Some(t) = server.timeout {
        let _ = writeln!(
            s,
            "  timeout    {t} s{}",
            if t < 0 { " (wait forever)" } else { "" }
        );
    }
    if !r.options.is_empty() {
        let _ = writeln!(s, "\noptions");
        let w = r.options.iter().map(|o| o.name.len()).max().unwrap_or(0);
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
    let w = r.variables.keys().map(String::len).max().unwrap_or(0);
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
            "  job         {:?}: {} node(s) x {} rank(s), walltime {}, partition {}, account {}",
            l.scheduler,
            l.nodes,
            l.ranks_per_node,
            l.walltime.as_deref().unwrap_or("(site default)"),
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
        let _ = writeln!(s, "  recipe      {:?}", l.recipe);
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
            "  timeouts    queue {} s, connect {} s",
            l.queue_timeout_secs, l.connect_timeout_secs
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "\nwarning: {w}");
    }
    s
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
}

pub fn validate(files: &[PathBuf], json: bool) -> Result<Code> {
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        match profile::read_file(f) {
            Ok(r) => reports.push(r),
            Err(e) => unreadable.push((f.clone(), e.to_string())),
        }
    }
    let errors: usize = reports.iter().map(|r| r.error_count()).sum::<usize>() + unreadable.len();
    let warnings: usize = reports
        .iter()
        .map(|r| r.diagnostics.iter().filter(|d| !d.is_error()).count())
        .sum();
    let mut out = crate::term::stdout();
    if json {
        let mut docs: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::to_value(ValidateFile {
                    file: display_path(&r.source.path),
                    servers: r.servers.iter().map(|s| s.name.as_str()).collect(),
                    errors: r.error_count(),
                    warnings: r.diagnostics.iter().filter(|d| !d.is_error()).count(),
                    diagnostics: &r.diagnostics,
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
            for d in &r.diagnostics {
                writeln!(out, "{}", d.render())?;
            }
            let names: Vec<&str> = r.servers.iter().map(|s| s.name.as_str()).collect();
            let status = if r.has_errors() { "INVALID" } else { "ok" };
            writeln!(
                out,
                "{status}: {} ({} server(s): {})",
                display_path(&r.source.path),
                names.len(),
                names.join(", ")
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
