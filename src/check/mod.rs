//! `pvlaunch check`: every link of the path from the workstation to pvserver, probed in order,
//! one row per check (docs/getting-started.md explains each row).
//!
//! This module is the pure part: the list of checks ([`Id`], stable names), what a probe's
//! output means (the parsers below), which recipes can work given the verdicts
//! ([`recipes`]), what `auto` would take and the exit code. The effects (ssh, the test job)
//! are in [`probes`]; rendering in [`report`].

pub mod probes;
pub mod report;

use serde::Serialize;

use crate::exit::Code;
use crate::profile::settings::Recipe;
use crate::scheduler::Walltime;

/// One check. The names ([`Id::name`]) are stable: scripts read them from `check --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum Id {
    SshResolve,
    SshReach,
    SshHostKey,
    SshAuth,
    SshMux,
    FwdRemote,
    FwdGatewayPorts,
    FwdLocal,
    FwdUnix,
    SchedKind,
    SchedPartition,
    SchedWalltime,
    SchedTestOnly,
    PvPvserver,
    PvVersion,
    PvMpi,
    PathNodeToLogin,
    PathNodeToDesk,
    PathLoginToNode,
    PathNodeSshLogin,
    LocalClient,
    LocalPort,
    LocalAskpass,
}

impl From<Id> for &'static str {
    fn from(id: Id) -> &'static str {
        id.name()
    }
}

impl Id {
    /// Every check, in the order they run and are printed.
    pub const ALL: [Id; 23] = [
        Id::LocalClient,
        Id::LocalPort,
        Id::LocalAskpass,
        Id::SshResolve,
        Id::SshReach,
        Id::SshHostKey,
        Id::SshAuth,
        Id::SshMux,
        Id::FwdRemote,
        Id::FwdGatewayPorts,
        Id::FwdLocal,
        Id::FwdUnix,
        Id::SchedKind,
        Id::SchedPartition,
        Id::SchedWalltime,
        Id::SchedTestOnly,
        Id::PvPvserver,
        Id::PvVersion,
        Id::PvMpi,
        Id::PathNodeToLogin,
        Id::PathNodeToDesk,
        Id::PathLoginToNode,
        Id::PathNodeSshLogin,
    ];

    /// The stable name (`ssh.auth`, `fwd.gateway_ports`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Id::SshResolve => "ssh.resolve",
            Id::SshReach => "ssh.reach",
            Id::SshHostKey => "ssh.host_key",
            Id::SshAuth => "ssh.auth",
            Id::SshMux => "ssh.mux",
            Id::FwdRemote => "fwd.remote",
            Id::FwdGatewayPorts => "fwd.gateway_ports",
            Id::FwdLocal => "fwd.local",
            Id::FwdUnix => "fwd.unix",
            Id::SchedKind => "sched.kind",
            Id::SchedPartition => "sched.partition",
            Id::SchedWalltime => "sched.walltime",
            Id::SchedTestOnly => "sched.test_only",
            Id::PvPvserver => "pv.pvserver",
            Id::PvVersion => "pv.version",
            Id::PvMpi => "pv.mpi",
            Id::PathNodeToLogin => "path.node_to_login",
            Id::PathNodeToDesk => "path.node_to_desk",
            Id::PathLoginToNode => "path.login_to_node",
            Id::PathNodeSshLogin => "path.node_ssh_login",
            Id::LocalClient => "local.client",
            Id::LocalPort => "local.port",
            Id::LocalAskpass => "local.askpass",
        }
    }

    /// What the check looks at, in a few words.
    pub fn what(self) -> &'static str {
        match self {
            Id::SshResolve => "the login host's name resolves",
            Id::SshReach => "the login host's ssh port answers",
            Id::SshHostKey => "the login host's key is known (and the methods it offers)",
            Id::SshAuth => "ssh logs in",
            Id::SshMux => "one login carries many sessions (connection sharing)",
            Id::FwdRemote => "sshd accepts a remote forward (-R 0)",
            Id::FwdGatewayPorts => "where sshd binds remote forwards (GatewayPorts)",
            Id::FwdLocal => "sshd accepts a local forward (-L)",
            Id::FwdUnix => "sshd accepts a Unix-socket forward",
            Id::SchedKind => "the batch scheduler and its commands",
            Id::SchedPartition => "the partition or queue exists",
            Id::SchedWalltime => "the walltime is within the partition's limit",
            Id::SchedTestOnly => "the scheduler accepts the job (test-only submit)",
            Id::PvPvserver => "pvserver is found after the set-up lines",
            Id::PvVersion => "pvserver's version matches the local client (major.minor)",
            Id::PvMpi => "the MPI launcher is found",
            Id::PathNodeToLogin => "a compute node reaches the login node (inside a job)",
            Id::PathNodeToDesk => "a compute node reaches this workstation (inside a job)",
            Id::PathLoginToNode => "the login node reaches a compute node's port",
            Id::PathNodeSshLogin => "a compute node can ssh to the login node",
            Id::LocalClient => "the local ParaView client and its version",
            Id::LocalPort => "the local client's port is free",
            Id::LocalAskpass => "an askpass for sessions started from ParaView",
        }
    }

    pub fn from_name(name: &str) -> Option<Id> {
        Id::ALL.into_iter().find(|id| id.name() == name)
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, with a caveat (or only some recipes are affected).
    Warn,
    Fail,
    /// Not run, because a check it depends on failed (or it does not apply here).
    Skipped,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Skipped => "skipped",
        }
    }
}

/// What decided a verdict: the command and the part of its output that decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    pub command: String,
    pub output: String,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub id: Id,
    pub what: &'static str,
    pub verdict: Verdict,
    /// The finding, in words.
    pub detail: String,
    pub evidence: Option<Evidence>,
    /// What to do about it (fail and warn rows).
    pub fix: Option<String>,
}

impl Row {
    pub fn new(id: Id, verdict: Verdict, detail: impl Into<String>) -> Row {
        Row {
            id,
            what: id.what(),
            verdict,
            detail: detail.into(),
            evidence: None,
            fix: None,
        }
    }

    pub fn ok(id: Id, detail: impl Into<String>) -> Row {
        Row::new(id, Verdict::Ok, detail)
    }

    pub fn warn(id: Id, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row::new(id, Verdict::Warn, detail).fix(fix)
    }

    pub fn fail(id: Id, detail: impl Into<String>, fix: impl Into<String>) -> Row {
        Row::new(id, Verdict::Fail, detail).fix(fix)
    }

    pub fn skipped(id: Id, detail: impl Into<String>) -> Row {
        Row::new(id, Verdict::Skipped, detail)
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Row {
        self.fix = Some(fix.into());
        self
    }

    /// Attach the command and the deciding part of its output (cut to [`EVIDENCE_MAX`]).
    pub fn evidence(mut self, command: impl Into<String>, output: &str) -> Row {
        self.evidence = Some(Evidence {
            command: command.into(),
            output: excerpt(output),
        });
        self
    }
}

/// The longest evidence excerpt kept, in characters.
pub const EVIDENCE_MAX: usize = 600;

/// The last lines of `text` that fit in [`EVIDENCE_MAX`] characters, cleaned of escapes.
pub fn excerpt(text: &str) -> String {
    let clean = crate::term::sanitize(text.trim()).into_owned();
    if clean.chars().count() <= EVIDENCE_MAX {
        return clean;
    }
    let tail: String = clean
        .chars()
        .rev()
        .take(EVIDENCE_MAX)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("...{tail}")
}

/// Whether a recipe can work here, and why (the checks that decided).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipeVerdict {
    #[serde(serialize_with = "recipe_name")]
    pub recipe: Recipe,
    pub works: bool,
    /// The checks that stop it (empty when it works).
    pub blocked_by: Vec<Id>,
    /// Checks that could not decide (skipped): it may still work.
    pub unknown: Vec<Id>,
}

fn recipe_name<S: serde::Serializer>(r: &Recipe, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.name())
}

/// The checks each recipe needs, beyond the common ones ([`COMMON`]).
pub fn needs(recipe: Recipe) -> &'static [Id] {
    match recipe {
        Recipe::Reverse => &[Id::FwdRemote, Id::FwdGatewayPorts, Id::PathNodeToLogin],
        Recipe::Relay => &[Id::FwdUnix, Id::PathNodeToLogin],
        Recipe::TwoHop => &[Id::FwdLocal, Id::PathLoginToNode],
        Recipe::ReverseTwoHop => &[Id::FwdRemote, Id::FwdLocal, Id::PathNodeSshLogin],
        Recipe::Auto => &[],
    }
}

/// What every recipe needs.
pub const COMMON: &[Id] = &[
    Id::SshAuth,
    Id::SchedKind,
    Id::SchedPartition,
    Id::SchedWalltime,
    Id::SchedTestOnly,
    Id::PvPvserver,
    Id::PvVersion,
    Id::PvMpi,
];

/// The recipes in the order `auto` tries them for a reverse resource, then two-hop.
pub const RECIPES: [Recipe; 4] = [
    Recipe::Reverse,
    Recipe::Relay,
    Recipe::ReverseTwoHop,
    Recipe::TwoHop,
];

/// Which recipes can work, given the rows: a recipe is blocked by any failed check it needs
/// (a warning does not block, except `fwd.gateway_ports` for `reverse`: the forward is on the
/// login node's loopback, compute nodes cannot reach it).
pub fn recipes(rows: &[Row]) -> Vec<RecipeVerdict> {
    let verdict = |id: Id| rows.iter().find(|r| r.id == id).map(|r| r.verdict);
    RECIPES
        .into_iter()
        .map(|recipe| {
            let mut blocked_by = Vec::new();
            let mut unknown = Vec::new();
            for &id in COMMON.iter().chain(needs(recipe)) {
                match verdict(id) {
                    Some(Verdict::Fail) => blocked_by.push(id),
                    Some(Verdict::Warn)
                        if recipe == Recipe::Reverse && id == Id::FwdGatewayPorts =>
                    {
                        blocked_by.push(id)
                    }
                    Some(Verdict::Skipped) | None => unknown.push(id),
                    _ => {}
                }
            }
            RecipeVerdict {
                recipe,
                works: blocked_by.is_empty(),
                blocked_by,
                unknown,
            }
        })
        .collect()
}

/// The recipe `auto` would take for a reverse resource (`csrc://`, ParaView listens): reverse,
/// relay, then reverse-two-hop (docs/recipes.md, "How auto chooses"). `None`: none of them.
pub fn auto_choice(recipes: &[RecipeVerdict]) -> Option<Recipe> {
    // auto's first step is the TCP forward: refused, it stops there.
    let refused = recipes
        .iter()
        .any(|v| v.recipe == Recipe::Reverse && v.blocked_by.contains(&Id::FwdRemote));
    if refused {
        return None;
    }
    // The relay first: its sessions survive a dropped network (docs/resilience.md).
    [Recipe::Relay, Recipe::Reverse, Recipe::ReverseTwoHop]
        .into_iter()
        .find(|r| recipes.iter().any(|v| v.recipe == *r && v.works))
}

/// The recipe `init` writes: what `auto` would take, else two-hop (with a `cs://` resource).
pub fn chosen(recipes: &[RecipeVerdict]) -> Option<Recipe> {
    auto_choice(recipes).or_else(|| {
        recipes
            .iter()
            .any(|v| v.recipe == Recipe::TwoHop && v.works)
            .then_some(Recipe::TwoHop)
    })
}

/// The exit code of `check`: 0 when a recipe can work; 4 when ssh itself fails (no login);
/// 6 when the site allows no recipe.
pub fn exit_code(rows: &[Row], recipes: &[RecipeVerdict]) -> Code {
    if recipes.iter().any(|r| r.works) {
        return Code::Success;
    }
    let failed = |id: Id| {
        rows.iter()
            .any(|r| r.id == id && r.verdict == Verdict::Fail)
    };
    if [Id::SshResolve, Id::SshReach, Id::SshHostKey, Id::SshAuth]
        .into_iter()
        .any(failed)
    {
        Code::Ssh
    } else {
        Code::Site
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The profile checked, or `None` for `--login HOST`.
    pub profile: Option<String>,
    pub login: String,
    pub checks: Vec<Row>,
    pub recipes: Vec<RecipeVerdict>,
    /// What `auto` would take (a reverse resource).
    #[serde(serialize_with = "opt_recipe_name")]
    pub auto: Option<Recipe>,
    /// What `init` would write.
    #[serde(serialize_with = "opt_recipe_name")]
    pub chosen: Option<Recipe>,
    /// The exit code.
    pub exit_code: i32,
    /// What the checks learnt about the site (for `init`).
    pub site: SiteFacts,
}

fn opt_recipe_name<S: serde::Serializer>(r: &Option<Recipe>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_some(r.name()),
        None => s.serialize_none(),
    }
}

impl Report {
    pub fn new(profile: Option<String>, login: String, rows: Vec<Row>, site: SiteFacts) -> Report {
        let recipes = recipes(&rows);
        let code = exit_code(&rows, &recipes);
        Report {
            profile,
            login,
            auto: auto_choice(&recipes),
            chosen: chosen(&recipes),
            checks: rows,
            recipes,
            exit_code: code.as_i32(),
            site,
        }
    }

    pub fn code(&self) -> Code {
        let recipes = &self.recipes;
        exit_code(&self.checks, recipes)
    }

    pub fn row(&self, id: Id) -> Option<&Row> {
        self.checks.iter().find(|r| r.id == id)
    }
}

/// What the probes learnt, for `init` to write into a profile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiteFacts {
    /// The login node's own name (`hostname`).
    pub login_hostname: Option<String>,
    #[serde(serialize_with = "opt_kind_name")]
    pub scheduler: Option<crate::scheduler::Kind>,
    pub partitions: Vec<Partition>,
    /// The ParaView module whose version matches the client (`module avail`).
    pub module: Option<String>,
    /// pvserver's version on the cluster (after the set-up lines).
    pub server_version: Option<String>,
    /// The local client's version.
    pub client_version: Option<String>,
    /// The MPI launcher found (`mpiexec`, `mpirun`, `srun`).
    pub launcher: Option<String>,
    /// The compute node the test job ran on.
    pub test_node: Option<String>,
}

fn opt_kind_name<S: serde::Serializer>(
    k: &Option<crate::scheduler::Kind>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.serialize_some(k.name()),
        None => s.serialize_none(),
    }
}

/// A partition (Slurm) or queue (PBS), as the scheduler lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub name: String,
    /// The site's default (Slurm marks it with `*`).
    pub default: bool,
    /// Whether jobs can be submitted (`up`, `enabled`).
    pub up: bool,
    /// The walltime limit; `None`: unlimited or not said.
    #[serde(serialize_with = "opt_walltime")]
    pub max_walltime: Option<Walltime>,
    /// Nodes in the partition.
    pub nodes: Option<u32>,
    /// CPUs per node.
    pub cpus_per_node: Option<u32>,
}

fn opt_walltime<S: serde::Serializer>(w: &Option<Walltime>, s: S) -> Result<S::Ok, S::Error> {
    match w {
        Some(w) => s.serialize_some(&w.hms()),
        None => s.serialize_none(),
    }
}

/// The command that lists Slurm's partitions: name (`*` for the default), availability, time
/// limit, nodes, CPUs per node.
pub const SINFO: &str = "sinfo -h -o '%P|%a|%l|%D|%c'";

/// Parse [`SINFO`]'s output. Lines that do not parse are skipped; a partition listed twice
/// (one line per node state) is merged.
pub fn parse_sinfo(text: &str) -> Vec<Partition> {
    let mut out: Vec<Partition> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [name, avail, limit, nodes, cpus] = f.as_slice() else {
            continue;
        };
        let (name, default) = match name.strip_suffix('*') {
            Some(n) => (n, true),
            None => (*name, false),
        };
        if name.is_empty() {
            continue;
        }
        let nodes = nodes.trim().parse().ok();
        let cpus = cpus.trim().trim_end_matches('+').parse().ok();
        if let Some(p) = out.iter_mut().find(|p| p.name == name) {
            p.nodes = match (p.nodes, nodes) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            continue;
        }
        out.push(Partition {
            name: name.to_string(),
            default,
            up: avail.trim() == "up",
            max_walltime: parse_slurm_limit(limit.trim()),
            nodes,
            cpus_per_node: cpus,
        });
    }
    out
}

/// Slurm's time limits: `infinite`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`. `None` for unlimited or unreadable.
pub fn parse_slurm_limit(text: &str) -> Option<Walltime> {
    if text.is_empty() || text.eq_ignore_ascii_case("infinite") || text.eq_ignore_ascii_case("n/a")
    {
        return None;
    }
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, text),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let secs = match (days > 0 || text.contains('-'), parts.as_slice()) {
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(Walltime::from_secs(days * 86400 + secs))
}

/// PBS's queues from `qstat -Q` (header lines skipped): name, whether enabled and started.
pub fn parse_qstat_queues(text: &str) -> Vec<Partition> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0] == "Queue" || f[0].starts_with('-') {
            continue;
        }
        // OpenPBS: Queue Max Tot Ena Str Que Run Hld Wat Trn Ext Type
        let (ena, str_) = (f.get(3).copied(), f.get(4).copied());
        out.push(Partition {
            name: f[0].to_string(),
            default: false,
            up: ena == Some("yes") && str_ == Some("yes"),
            max_walltime: None,
            nodes: None,
            cpus_per_node: None,
        });
    }
    out
}

/// What `sbatch --test-only` said: `Ok(detail)` when the job would be accepted.
pub fn parse_test_only(status: Option<i32>, stdout: &str, stderr: &str) -> Result<String, String> {
    let text = format!("{stdout}\n{stderr}");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("to start at") || l.contains("error"))
        .unwrap_or_else(|| text.trim())
        .to_string();
    if status == Some(0) && !line.contains("error") {
        Ok(line)
    } else {
        Err(line)
    }
}

/// The ParaView modules in `module -t avail paraview` (Lmod and Environment Modules print to
/// stderr, one per line with `-t`; folder headers end with `:`).
pub fn parse_module_avail(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.ends_with(':') || l.contains(' ') {
            continue;
        }
        let l = l.trim_end_matches("(default)").trim_end_matches('/');
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("paraview") && !out.iter().any(|m| m == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// The module among `modules` whose version matches `major.minor` (e.g. `paraview/5.11.2`,
/// `ParaView/5.11.0-foss-2022a-mpi`); the last one listed (the newest patch) wins.
pub fn pick_module(modules: &[String], major: u32, minor: u32) -> Option<String> {
    let want = format!("{major}.{minor}");
    modules
        .iter()
        .rfind(|m| {
            let version = m.split_once('/').map_or("", |(_, v)| v);
            version == want
                || version
                    .strip_prefix(&want)
                    .is_some_and(|rest| rest.starts_with(['.', '-']))
        })
        .cloned()
}

/// The methods an sshd offers, from ssh's `Permission denied (publickey,password).` line.
pub fn offered_methods(stderr: &str) -> Option<Vec<String>> {
    let line = stderr.lines().find(|l| l.contains("Permission denied ("))?;
    let inner = line.split_once("Permission denied (")?.1.split_once(')')?.0;
    Some(inner.split(',').map(|m| m.trim().to_string()).collect())
}

/// What a login attempt with no method (`PreferredAuthentications=none`) says about the host
/// key and the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// The key is known; the server offers these methods.
    Methods(Vec<String>),
    /// Logged in with no authentication at all (rare).
    NoAuth,
    /// The host key is not in known_hosts.
    UnknownKey,
    /// The host key differs from the one known.
    ChangedKey,
    /// The connection itself failed (refused, timed out, no route).
    Unreachable(String),
    Other(String),
}

pub fn parse_greeting(status: Option<i32>, stderr: &str) -> Greeting {
    if status == Some(0) {
        return Greeting::NoAuth;
    }
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return Greeting::ChangedKey;
    }
    if stderr.contains("Host key verification failed")
        || stderr.contains("No ED25519 host key is known")
        || stderr.contains("host key is known")
    {
        return Greeting::UnknownKey;
    }
    if let Some(m) = offered_methods(stderr) {
        return Greeting::Methods(m);
    }
    let last = stderr.trim().lines().last().unwrap_or("").to_string();
    let unreachable = [
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Connection closed by",
        "kex_exchange_identification",
        "Operation timed out",
    ];
    if unreachable.iter().any(|u| stderr.contains(u)) {
        Greeting::Unreachable(last)
    } else {
        Greeting::Other(last)
    }
}

/// Whether ParaView's handshake accepts this pair: the same major.minor.
pub fn versions_match(client: &str, server: &str) -> bool {
    let mm = |v: &str| {
        let v = crate::profile::resolve::Version::parse(v)?;
        Some((v.major, v.minor))
    };
    matches!((mm(client), mm(server)), (Some(a), Some(b)) if a == b)
}

/// The `KEY=VALUE` lines the test job prints (`pvlaunch-check: KEY=VALUE`).
pub fn job_answers(output: &str) -> std::collections::BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix(JOB_PREFIX))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// What each line of the test job's answers starts with.
pub const JOB_PREFIX: &str = "pvlaunch-check: ";

/// Run every check for `site` (on a runtime of its own) and make the report.
pub fn run_site(site: probes::Site) -> color_eyre::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (rows, facts) = runtime.block_on(probes::run(&site));
    Ok(Report::new(
        site.profile.clone(),
        site.login.clone(),
        rows,
        facts,
    ))
}

/// `pvlaunch check SITE` or `pvlaunch check --login HOST`.
pub fn command(
    cli_files: Vec<std::path::PathBuf>,
    json: bool,
    args: &crate::cli::CheckArgs,
) -> color_eyre::Result<Code> {
    let mut site = match (&args.name, &args.login) {
        (Some(name), _) => {
            let picked = match crate::commands::pick(cli_files, name, &args.set, false) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let Some(launch) = picked.launch.as_ref() else {
                crate::say_err!(
                    "error: profile `{name}` has no <PVLaunch> part: nothing for pvlaunch to check (use --login HOST)"
                );
                return Ok(Code::Usage);
            };
            probes::Site::from_launch(name, launch)
        }
        (None, Some(login)) => {
            let mut s = probes::Site::bare(login);
            s.user = args.user.clone();
            s.jump = crate::init::split_jump(args.jump.as_deref());
            s.setup = args.setup.clone();
            s
        }
        (None, None) => {
            crate::say_err!("error: name a profile, or give --login HOST");
            return Ok(Code::Usage);
        }
    };
    if let Some(p) = &args.partition {
        site.partition = Some(p.clone());
    }
    if args.no_job {
        site.job = false;
    }
    let report = run_site(site)?;
    if json {
        crate::say!("{}", report::json(&report));
    } else {
        let _ = std::io::Write::write_all(
            &mut crate::term::stdout(),
            report::render(&report).as_bytes(),
        );
    }
    Ok(report.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(Id, Verdict)]) -> Vec<Row> {
        let mut all: Vec<Row> = Id::ALL.iter().map(|&id| Row::ok(id, "")).collect();
        for &(id, v) in pairs {
            all.iter_mut().find(|r| r.id == id).unwrap().verdict = v;
        }
        all
    }

    fn works(rows: &[Row]) -> Vec<&'static str> {
        recipes(rows)
            .into_iter()
            .filter(|r| r.works)
            .map(|r| r.recipe.name())
            .collect()
    }

    #[test]
    fn ids_are_unique_and_round_trip() {
        let mut names: Vec<_> = Id::ALL.iter().map(|i| i.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Id::ALL.len());
        for id in Id::ALL {
            assert_eq!(Id::from_name(id.name()), Some(id));
            assert_eq!(serde_json::to_value(id).unwrap(), id.name());
        }
    }

    #[test]
    fn a_default_site_takes_the_resumable_relay_before_reverse() {
        let r = rows(&[]);
        assert_eq!(
            works(&r),
            ["reverse", "relay", "reverse-two-hop", "two-hop"]
        );
        let v = recipes(&r);
        assert_eq!(auto_choice(&v), Some(Recipe::Relay));
        assert_eq!(exit_code(&r, &v), Code::Success);
        // Without Unix-socket forwards there is no relay: reverse.
        let r = rows(&[(Id::FwdUnix, Verdict::Fail)]);
        let v = recipes(&r);
        assert_eq!(auto_choice(&v), Some(Recipe::Reverse));
    }

    #[test]
    fn gateway_ports_no_takes_the_relay() {
        let r = rows(&[(Id::FwdGatewayPorts, Verdict::Warn)]);
        let v = recipes(&r);
        assert_eq!(works(&r), ["relay", "reverse-two-hop", "two-hop"]);
        assert_eq!(auto_choice(&v), Some(Recipe::Relay));
        assert_eq!(
            v[0].blocked_by,
            [Id::FwdGatewayPorts],
            "reverse is blocked by the loopback bind"
        );
    }

    #[test]
    fn allow_tcp_forwarding_local_leaves_two_hop_only() {
        let r = rows(&[
            (Id::FwdRemote, Verdict::Fail),
            (Id::FwdGatewayPorts, Verdict::Skipped),
            (Id::FwdUnix, Verdict::Fail),
        ]);
        let v = recipes(&r);
        assert_eq!(works(&r), ["two-hop"]);
        assert_eq!(auto_choice(&v), None);
        assert_eq!(chosen(&v), Some(Recipe::TwoHop));
        assert_eq!(exit_code(&r, &v), Code::Success);
    }

    #[test]
    fn auto_stops_at_a_refused_tcp_forward_even_when_the_relay_could_work() {
        let r = rows(&[(Id::FwdRemote, Verdict::Fail)]);
        let v = recipes(&r);
        assert_eq!(works(&r), ["relay", "two-hop"]);
        assert_eq!(auto_choice(&v), None);
        assert_eq!(chosen(&v), Some(Recipe::TwoHop));
    }

    #[test]
    fn no_forwarding_at_all_is_a_site_failure() {
        let r = rows(&[
            (Id::FwdRemote, Verdict::Fail),
            (Id::FwdLocal, Verdict::Fail),
            (Id::FwdUnix, Verdict::Fail),
        ]);
        let v = recipes(&r);
        assert!(works(&r).is_empty());
        assert_eq!(chosen(&v), None);
        assert_eq!(exit_code(&r, &v), Code::Site);
    }

    #[test]
    fn a_failed_login_is_an_ssh_failure() {
        let r = rows(&[(Id::SshReach, Verdict::Fail), (Id::SshAuth, Verdict::Fail)]);
        let v = recipes(&r);
        assert_eq!(exit_code(&r, &v), Code::Ssh);
    }

    #[test]
    fn a_firewall_between_nodes_and_login_leaves_two_hop() {
        let r = rows(&[
            (Id::PathNodeToLogin, Verdict::Fail),
            (Id::PathNodeSshLogin, Verdict::Fail),
        ]);
        assert_eq!(works(&r), ["two-hop"]);
    }

    #[test]
    fn a_version_mismatch_or_a_wrong_partition_blocks_everything() {
        for id in [Id::PvVersion, Id::SchedPartition] {
            let r = rows(&[(id, Verdict::Fail)]);
            assert!(works(&r).is_empty(), "{id:?}");
            assert_eq!(exit_code(&r, &recipes(&r)), Code::Site);
        }
    }

    #[test]
    fn skipped_checks_do_not_block_but_are_named() {
        let r = rows(&[(Id::PathLoginToNode, Verdict::Skipped)]);
        let v = recipes(&r);
        let two = v.iter().find(|v| v.recipe == Recipe::TwoHop).unwrap();
        assert!(two.works);
        assert_eq!(two.unknown, [Id::PathLoginToNode]);
    }

    #[test]
    fn sinfo_partitions() {
        let p = parse_sinfo(
            "batch*|up|1-00:00:00|2|2\ndebug|up|30:00|1|4\ndebug|up|30:00|1|4\nold|down|infinite|0|1\n",
        );
        assert_eq!(p.len(), 3);
        assert!(p[0].default && p[0].up);
        assert_eq!(p[0].max_walltime, Some(Walltime::from_secs(86400)));
        assert_eq!(p[1].max_walltime, Some(Walltime::from_secs(1800)));
        assert_eq!(p[1].nodes, Some(2));
        assert_eq!(p[1].cpus_per_node, Some(4));
        assert!(!p[2].up);
        assert_eq!(p[2].max_walltime, None);
    }

    #[test]
    fn slurm_limits() {
        let s = |t| parse_slurm_limit(t).map(Walltime::as_secs);
        assert_eq!(s("60"), Some(3600));
        assert_eq!(s("10:30"), Some(630));
        assert_eq!(s("2:00:00"), Some(7200));
        assert_eq!(s("1-12"), Some(86400 + 12 * 3600));
        assert_eq!(s("2-00:30"), Some(2 * 86400 + 1800));
        assert_eq!(s("UNLIMITED"), None);
        assert_eq!(s("infinite"), None);
    }

    #[test]
    fn qstat_queues() {
        let text = "Queue              Max   Tot Ena Str   Que   Run   Hld   Wat   Trn   Ext Type\n\
                    ---------------- ----- ----- --- --- ----- ----- ----- ----- ----- ----- ----\n\
                    workq                0     0 yes yes     0     0     0     0     0     0 Exec\n\
                    closed               0     0 no  yes     0     0     0     0     0     0 Exec\n";
        let q = parse_qstat_queues(text);
        assert_eq!(q.len(), 2);
        assert!(q[0].up && !q[1].up);
    }

    #[test]
    fn test_only_answers() {
        assert_eq!(
            parse_test_only(
                Some(0),
                "",
                "sbatch: Job 12 to start at 2024-01-01T00:00:00 using 2 processors on nodes node1 in partition batch"
            ),
            Ok("sbatch: Job 12 to start at 2024-01-01T00:00:00 using 2 processors on nodes node1 in partition batch".into())
        );
        assert_eq!(
            parse_test_only(
                Some(1),
                "",
                "sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified"
            ),
            Err("sbatch: error: invalid partition specified: nosuch".into())
        );
    }

    #[test]
    fn modules_and_the_matching_one() {
        let text = "/opt/modulefiles:\nparaview/5.10.1\nparaview/5.11.0\nparaview/5.11.2(default)\nParaView/6.0.1-osmesa\ngcc/12\n";
        let m = parse_module_avail(text);
        assert_eq!(
            m,
            [
                "paraview/5.10.1",
                "paraview/5.11.0",
                "paraview/5.11.2",
                "ParaView/6.0.1-osmesa"
            ]
        );
        assert_eq!(pick_module(&m, 5, 11).as_deref(), Some("paraview/5.11.2"));
        assert_eq!(
            pick_module(&m, 6, 0).as_deref(),
            Some("ParaView/6.0.1-osmesa")
        );
        assert_eq!(pick_module(&m, 5, 1), None, "5.1 is not 5.10");
    }

    #[test]
    fn greetings() {
        assert_eq!(
            parse_greeting(
                Some(255),
                "pvtest@login: Permission denied (publickey,keyboard-interactive).\n"
            ),
            Greeting::Methods(vec!["publickey".into(), "keyboard-interactive".into()])
        );
        assert_eq!(
            parse_greeting(
                Some(255),
                "No ED25519 host key is known for login and you have requested strict checking.\nHost key verification failed.\n"
            ),
            Greeting::UnknownKey
        );
        assert!(matches!(
            parse_greeting(
                Some(255),
                "ssh: connect to host login port 22: No route to host\n"
            ),
            Greeting::Unreachable(_)
        ));
    }

    #[test]
    fn versions() {
        assert!(versions_match("5.11.0", "5.11.2"));
        assert!(!versions_match("5.11.0", "5.10.1"));
        assert!(!versions_match("5.11.0", "garbage"));
    }

    #[test]
    fn job_answer_lines() {
        let a =
            job_answers("noise\npvlaunch-check: node=node1\npvlaunch-check: node_to_login=ok\n");
        assert_eq!(a["node"], "node1");
        assert_eq!(a["node_to_login"], "ok");
    }

    #[test]
    fn evidence_is_cut_from_the_front() {
        let long = "x".repeat(2000) + "END";
        let e = excerpt(&long);
        assert!(e.ends_with("END") && e.starts_with("...") && e.len() < 700);
    }
}
