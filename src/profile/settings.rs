//! pvlaunch's own part of a profile: the `<PVLaunch>` child of `<Server>`.
//!
//! ParaView ignores an unknown child of `<Server>`, so one file serves both. This part is
//! validated strictly: an unknown element or attribute is an error with a suggestion. Values
//! are kept as templates (they may use `$OPTION$`) and checked again once resolved.

use serde::Serialize;

use super::diag::Collector;
use super::number;
use super::xml::Element;
use crate::scheduler::{Kind, Walltime};
use crate::suggest::did_you_mean;

/// The element name inside `<Server>`.
pub const ELEMENT: &str = "PVLaunch";

/// A value as written, with the byte offset of its attribute (for errors after substitution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Value {
    pub text: String,
    #[serde(skip)]
    pub offset: usize,
    /// Where it sits below `<PVLaunch>`, e.g. `Job@walltime`.
    #[serde(skip)]
    pub at: String,
    /// `<Setup raw="true">`: values are pasted as they are (the profile asks for shell code).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

impl Value {
    fn new(text: &str, offset: usize, at: String) -> Value {
        Value {
            text: text.to_string(),
            offset,
            at,
            raw: false,
        }
    }
}

/// Where a substituted value lands, which decides how it is kept one word there (the rule in
/// docs/profile-format.md, "Values in commands"): a `$NAME$` never adds words, options, lines or
/// shell code, unless a `<Setup raw="true">` line asks for shell code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A whole value that its own parser checks (a host, a count, a port).
    Value,
    /// A shell line of the job script: each value POSIX-quoted.
    Shell,
    /// A shell line the profile marked raw: values pasted as they are.
    RawShell,
    /// A scheduler directive: a value may not contain blanks or quotes (the scheduler's own
    /// parser would split it into more options).
    Directive,
    /// A command split like ParaView's (the launcher): each value quoted for that split.
    Command,
}

/// Where a position in a POSIX shell line is, as far as quoting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShellQuote {
    None,
    Single,
    Double,
}

/// Follows the quoting of a shell line left to right, skipping the `$NAME$` references.
#[derive(Debug)]
struct ShellContext {
    state: ShellQuote,
    escaped: bool,
    cursor: usize,
}

impl ShellContext {
    fn new() -> ShellContext {
        ShellContext {
            state: ShellQuote::None,
            escaped: false,
            cursor: 0,
        }
    }

    /// The quoting at byte `at` of `line`; the reference there spans `len` bytes.
    fn at(&mut self, line: &str, at: usize, len: usize) -> ShellQuote {
        for c in line[self.cursor.min(at)..at].chars() {
            if self.escaped {
                self.escaped = false;
                continue;
            }
            self.state = match (self.state, c) {
                (ShellQuote::None, '\\') | (ShellQuote::Double, '\\') => {
                    self.escaped = true;
                    self.state
                }
                (ShellQuote::None, '\'') => ShellQuote::Single,
                (ShellQuote::Single, '\'') => ShellQuote::None,
                (ShellQuote::None, '"') => ShellQuote::Double,
                (ShellQuote::Double, '"') => ShellQuote::None,
                (s, _) => s,
            };
        }
        self.cursor = at + len;
        self.state
    }
}

/// `value` as literal text at a place of a shell line with quoting `q`: never code, one word.
fn shell_literal(value: &str, q: ShellQuote) -> String {
    match q {
        ShellQuote::None => crate::quote::quote(value)
            .map(|v| v.into_owned())
            .unwrap_or_else(|_| "''".into()),
        ShellQuote::Single => value.replace('\'', "'\\''"),
        ShellQuote::Double => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '\\' | '$' | '`' | '"') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    }
}

/// `value` quoted for [`crate::profile::command::split`]: one word whatever it holds.
fn quote_for_split(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\"\""))
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub login: Login,
    pub job: Job,
    pub pvserver: PvServer,
    pub connection: Connection,
}

/// `<Login host user jump port>`: the ssh destination (a `~/.ssh/config` alias is normal).
#[derive(Debug, Clone, Serialize)]
pub struct Login {
    pub host: Value,
    pub user: Option<Value>,
    /// Comma-separated jump hosts, passed to `ssh -J`.
    pub jump: Option<Value>,
    pub port: Option<Value>,
    /// The askpass program ssh asks through when there is no terminal.
    pub askpass: Option<Value>,
    /// How long pvlaunch's own ssh master stays after a session (`no`, `30m`, `8h`).
    pub persist: Value,
    /// Whether a master the user already runs for the host is used.
    pub reuse_master: Value,
    /// `auto`, `yes` or `no`: ssh's connection sharing, or pvlaunch's own channel.
    pub multiplex: Value,
}

/// `<Job scheduler nodes ranks-per-node walltime partition account name queue-timeout
/// warn-before>` with
/// `<Directive value>` and `<Setup line>` children.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub scheduler: Value,
    pub nodes: Value,
    pub ranks_per_node: Value,
    pub walltime: Option<Value>,
    pub partition: Option<Value>,
    pub account: Option<Value>,
    pub name: Value,
    pub queue_timeout: Value,
    /// How long before the job's wall time ends pvlaunch warns (`no`: never).
    pub warn_before: Value,
    pub directives: Vec<Value>,
    pub setup: Vec<Value>,
}

/// `<PVServer exec launcher>` with `<Arg value>` children.
#[derive(Debug, Clone, Serialize)]
pub struct PvServer {
    pub exec: Value,
    /// The MPI launcher, split like a ParaView command (e.g. `mpiexec -n $PVLAUNCH_RANKS$`).
    pub launcher: Value,
    pub args: Vec<Value>,
}

/// `<Connection recipe client-port remote-port connect-timeout connect-id>`.
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub recipe: Value,
    /// Port the local client listens on; defaults to the resource's port.
    pub client_port: Option<Value>,
    /// Port on the login node; 0 lets sshd choose.
    pub remote_port: Value,
    pub connect_timeout: Value,
    /// `random`, `none`, or a number.
    pub connect_id: Value,
    /// The pvlaunch program on the login node, for the relay recipe.
    pub relay_program: Option<Value>,
    /// `preferred` or `required`: whether a session may fall back to a path other users of
    /// the cluster could reach when pvlaunch cannot run there.
    pub owned_hops: Value,
    /// How long a session waits for a lost link to come back: `no`, or a duration.
    pub grace: Value,
}

struct Spec {
    element: &'static str,
    attrs: &'static [&'static str],
    required: &'static [&'static str],
    children: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        element: ELEMENT,
        attrs: &["version"],
        required: &[],
        children: &["Login", "Job", "PVServer", "Connection"],
    },
    Spec {
        element: "Login",
        attrs: &[
            "host",
            "user",
            "jump",
            "port",
            "askpass",
            "persist",
            "reuse-master",
            "multiplex",
        ],
        required: &["host"],
        children: &[],
    },
    Spec {
        element: "Job",
        attrs: &[
            "scheduler",
            "nodes",
            "ranks-per-node",
            "walltime",
            "partition",
            "account",
            "name",
            "queue-timeout",
            "warn-before",
        ],
        required: &[],
        children: &["Directive", "Setup"],
    },
    Spec {
        element: "Directive",
        attrs: &["value"],
        required: &["value"],
        children: &[],
    },
    Spec {
        element: "Setup",
        attrs: &["line", "raw"],
        required: &["line"],
        children: &[],
    },
    Spec {
        element: "PVServer",
        attrs: &["exec", "launcher"],
        required: &[],
        children: &["Arg"],
    },
    Spec {
        element: "Arg",
        attrs: &["value"],
        required: &["value"],
        children: &[],
    },
    Spec {
        element: "Connection",
        attrs: &[
            "recipe",
            "client-port",
            "remote-port",
            "connect-timeout",
            "connect-id",
            "relay-program",
            "owned-hops",
            "grace",
        ],
        required: &[],
        children: &[],
    },
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.element == name)
}

/// Check one element against its spec: unknown attributes and children, missing attributes,
/// text content. Returns false if the element itself is unknown.
fn check(el: &Element, path: &str, out: &mut Collector<'_>) {
    let Some(spec) = spec(&el.name) else { return };
    for attr in &el.attrs {
        if !spec.attrs.contains(&attr.name.as_str()) {
            let hint = did_you_mean(&attr.name, spec.attrs.iter().copied(), |c| format!("`{c}`"))
                .unwrap_or_else(|| format!("<{}> takes: {}", el.name, spec.attrs.join(", ")));
            out.error_hint(
                attr.offset,
                &format!("{path}@{}", attr.name),
                format!("unknown attribute `{}` on <{}>", attr.name, el.name),
                hint,
            );
        }
    }
    for required in spec.required {
        if el.attr(required).is_none() {
            out.error(
                el.offset,
                path,
                format!("<{}> needs a `{required}` attribute", el.name),
            );
        }
    }
    if let Some((_, offset)) = &el.text {
        let hint = match el.name.as_str() {
            "Setup" => "write set-up lines as <Setup line=\"module load paraview\"/>".to_string(),
            _ => "pvlaunch settings are written as attributes".to_string(),
        };
        out.error_hint(*offset, path, format!("<{}> takes no text", el.name), hint);
    }
    for child in &el.children {
        let child_path = format!("{path}/{}", child.name);
        if !spec.children.contains(&child.name.as_str()) {
            let hint = did_you_mean(&child.name, spec.children.iter().copied(), |c| {
                format!("<{c}>")
            })
            .unwrap_or_else(|| {
                if spec.children.is_empty() {
                    format!("<{}> has no child elements", el.name)
                } else {
                    format!(
                        "<{}> contains: {}",
                        el.name,
                        spec.children
                            .iter()
                            .map(|c| format!("<{c}>"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            });
            out.error_hint(
                child.offset,
                &child_path,
                format!("unknown element <{}> in <{}>", child.name, el.name),
                hint,
            );
            continue;
        }
        check(child, &child_path, out);
    }
}

fn get(el: Option<&Element>, name: &str) -> Option<Value> {
    let el = el?;
    el.attr_entry(name)
        .map(|a| Value::new(&a.value, a.offset, format!("{}@{name}", el.name)))
}

fn get_or(el: Option<&Element>, name: &str, default: &str, fallback_offset: usize) -> Value {
    get(el, name)
        .unwrap_or_else(|| Value::new(default, fallback_offset, format!("(default {name})")))
}

fn single<'a>(
    el: &'a Element,
    name: &str,
    path: &str,
    out: &mut Collector<'_>,
) -> Option<&'a Element> {
    let mut found = el.children.iter().filter(|c| c.name == name);
    let first = found.next();
    for dup in found {
        out.error(
            dup.offset,
            &format!("{path}/{name}"),
            format!("<{name}> appears more than once"),
        );
    }
    first
}

/// Read and check the `<PVLaunch>` element. Errors go to `out`; `None` if it is unusable.
pub fn parse(el: &Element, path: &str, out: &mut Collector<'_>) -> Option<Settings> {
    let before = out.error_count();
    check(el, path, out);
    if let Some(version) = el.attr_entry("version")
        && version.value != "1"
    {
        out.error_hint(
            version.offset,
            &format!("{path}@version"),
            format!("unsupported settings version `{}`", version.value),
            "this pvlaunch reads version=\"1\"".into(),
        );
    }

    let login = single(el, "Login", path, out);
    let job = single(el, "Job", path, out);
    let pvserver = single(el, "PVServer", path, out);
    let connection = single(el, "Connection", path, out);
    if login.is_none() {
        out.error_hint(
            el.offset,
            path,
            "pvlaunch settings need a <Login> element",
            "add <Login host=\"cluster-login\"/> (a host alias from ~/.ssh/config is fine)".into(),
        );
    }
    let at = el.offset;
    let settings = Settings {
        login: Login {
            host: get_or(login, "host", "", at),
            user: get(login, "user"),
            jump: get(login, "jump"),
            port: get(login, "port"),
            askpass: get(login, "askpass"),
            persist: get_or(login, "persist", "no", at),
            reuse_master: get_or(login, "reuse-master", "yes", at),
            multiplex: get_or(login, "multiplex", "auto", at),
        },
        job: Job {
            scheduler: get_or(job, "scheduler", "slurm", at),
            nodes: get_or(job, "nodes", "1", at),
            ranks_per_node: get_or(job, "ranks-per-node", "1", at),
            walltime: get(job, "walltime"),
            partition: get(job, "partition"),
            account: get(job, "account"),
            name: get_or(job, "name", "pvserver", at),
            queue_timeout: get_or(job, "queue-timeout", DEFAULT_QUEUE_TIMEOUT, at),
            warn_before: get_or(job, "warn-before", DEFAULT_WARN_BEFORE, at),
            directives: children_values(job, "Directive", "value"),
            setup: setup_values(job),
        },
        pvserver: PvServer {
            exec: get_or(pvserver, "exec", "pvserver", at),
            launcher: get_or(pvserver, "launcher", "mpiexec -n $PVLAUNCH_RANKS$", at),
            args: children_values(pvserver, "Arg", "value"),
        },
        connection: Connection {
            recipe: get_or(connection, "recipe", "auto", at),
            client_port: get(connection, "client-port"),
            remote_port: get_or(connection, "remote-port", "0", at),
            connect_timeout: get_or(connection, "connect-timeout", "300", at),
            connect_id: get_or(connection, "connect-id", "random", at),
            relay_program: get(connection, "relay-program"),
            owned_hops: get_or(connection, "owned-hops", "preferred", at),
            grace: get_or(connection, "grace", DEFAULT_GRACE, at),
        },
    };
    // Literal values (no `$NAME$`) are checked now, by the parsers that type them when the
    // profile is resolved; templates once the options are known.
    let literal = |v: &Value| !v.text.contains('$');
    let mut problems = Vec::new();
    settings.typed(literal, &mut problems);
    for (value, message, hint) in problems {
        out.push(
            super::diag::Severity::Error,
            value.offset,
            &format!("{path}/{}", value.at),
            message,
            hint,
        );
    }
    let after = out.error_count();
    (after == before).then_some(settings)
}

fn children_values(el: Option<&Element>, name: &str, attr: &str) -> Vec<Value> {
    el.map(|el| {
        el.children
            .iter()
            .filter(|c| c.name == name)
            .filter_map(|c| {
                c.attr_entry(attr)
                    .map(|a| Value::new(&a.value, a.offset, format!("{}/{name}@{attr}", el.name)))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The `<Setup line raw>` children, with `raw="true"` kept on the value.
fn setup_values(el: Option<&Element>) -> Vec<Value> {
    let Some(el) = el else { return vec![] };
    el.children
        .iter()
        .filter(|c| c.name == "Setup")
        .filter_map(|c| {
            c.attr_entry("line").map(|a| {
                let mut v = Value::new(&a.value, a.offset, format!("{}/Setup@line", el.name));
                v.raw = c.attr_entry("raw").is_some_and(|r| r.value == "true");
                v
            })
        })
        .collect()
}

/// A problem with one value: the value, the message, and a hint.
pub type Problem<'a> = (&'a Value, String, Option<String>);

/// A parser's refusal: the message and a hint.
type Check<T = ()> = Result<T, (String, Option<String>)>;

/// Reads the values a filter selects, each with its parser, and collects the refusals.
struct Reader<'a, 'p, F> {
    filter: F,
    problems: &'p mut Vec<Problem<'a>>,
    /// Every value was selected (so a complete result can be built).
    complete: bool,
}

impl<'a, F: Fn(&Value) -> bool> Reader<'a, '_, F> {
    fn read<T>(&mut self, v: &'a Value, parse: impl FnOnce(&str) -> Check<T>) -> Option<T> {
        if !(self.filter)(v) {
            self.complete = false;
            return None;
        }
        match parse(&v.text) {
            Ok(t) => Some(t),
            Err((message, hint)) => {
                self.problems.push((v, message, hint));
                None
            }
        }
    }

    /// An optional value: `Some(None)` when it is absent, `None` when it is refused.
    fn opt<T>(
        &mut self,
        v: &'a Option<Value>,
        parse: impl FnOnce(&str) -> Check<T>,
    ) -> Option<Option<T>> {
        match v {
            None => Some(None),
            Some(v) => self.read(v, parse).map(Some),
        }
    }

    fn all(&mut self, vs: &'a [Value], parse: fn(&str) -> Check<String>) -> Option<Vec<String>> {
        let read: Vec<Option<String>> = vs.iter().map(|v| self.read(v, parse)).collect();
        read.into_iter().collect()
    }
}

impl Settings {
    /// Parse every value that `filter` selects with the one parser of that value; refusals are
    /// appended to `problems`. The typed settings come back when every value was selected and
    /// accepted. Parse time runs this on literal values, resolution on all of them: the same
    /// parsers, so what passes the first never fails the second for the same text.
    pub fn typed<'a>(
        &'a self,
        filter: impl Fn(&Value) -> bool,
        problems: &mut Vec<Problem<'a>>,
    ) -> Option<Launch> {
        let mut r = Reader {
            filter,
            problems,
            complete: true,
        };
        let login_host = r.read(&self.login.host, check_host);
        let login_user = r.opt(&self.login.user, check_user);
        let jump_hosts = r.opt(&self.login.jump, check_jump);
        let login_port = r.opt(&self.login.port, |t| port(t, "ssh port", 1));
        let askpass = r.opt(&self.login.askpass, check_one_line);
        let persist = r.read(&self.login.persist, parse_persist);
        let reuse_master = r.read(&self.login.reuse_master, |t| yes_no(t, "reuse-master"));
        let multiplex = r.read(&self.login.multiplex, parse_multiplex);
        let scheduler = r.read(&self.job.scheduler, parse_scheduler);
        let nodes = r.read(&self.job.nodes, parse_nodes);
        let ranks_per_node = r.read(&self.job.ranks_per_node, parse_ranks);
        let walltime = r.opt(&self.job.walltime, parse_walltime);
        let partition = r.opt(&self.job.partition, check_word);
        let account = r.opt(&self.job.account, check_word);
        let job_name = r.read(&self.job.name, check_word);
        let queue_timeout_secs = r.read(&self.job.queue_timeout, |t| {
            whole(t, "queue timeout (seconds)", 1, u32::MAX as u64)
        });
        let warn_before = r.read(&self.job.warn_before, parse_warn_before);
        let directives = r.all(&self.job.directives, check_one_line);
        let setup = r.all(&self.job.setup, check_one_line);
        let pvserver_args = r.all(&self.pvserver.args, check_one_line);
        let pvserver = r.read(&self.pvserver.exec, check_word);
        let launcher = r.read(&self.pvserver.launcher, |t| {
            check_one_line(t).map(|t| super::command::split(&t))
        });
        let recipe = r.read(&self.connection.recipe, parse_recipe);
        let client_port = r.opt(&self.connection.client_port, |t| port(t, "client port", 1));
        let remote_port = r.read(&self.connection.remote_port, |t| port(t, "remote port", 0));
        let connect_timeout_secs = r.read(&self.connection.connect_timeout, |t| {
            whole(t, "connect timeout (seconds)", 1, 86_400 * 7)
        });
        let connect_id = r.read(&self.connection.connect_id, parse_connect_id);
        let relay_program = r.opt(&self.connection.relay_program, check_word);
        let owned_hops = r.read(&self.connection.owned_hops, parse_owned_hops);
        let grace = r.read(&self.connection.grace, parse_grace);
        if !r.complete || !r.problems.is_empty() {
            return None;
        }
        let non_empty = |t: Option<String>| t.filter(|t| !t.is_empty());
        Some(Launch {
            login_host: login_host?,
            login_user: non_empty(login_user?),
            jump_hosts: jump_hosts?.unwrap_or_default(),
            login_port: login_port?,
            askpass: non_empty(askpass?),
            persist: persist?,
            reuse_master: reuse_master?,
            multiplex: multiplex?,
            scheduler: scheduler?,
            nodes: nodes?,
            ranks_per_node: ranks_per_node?,
            walltime: walltime?,
            partition: non_empty(partition?),
            account: non_empty(account?),
            job_name: job_name?,
            queue_timeout_secs: queue_timeout_secs?,
            warn_before: warn_before?,
            directives: directives?,
            setup: setup?,
            pvserver: pvserver?,
            launcher: launcher?,
            pvserver_args: pvserver_args?,
            recipe: recipe?,
            client_port: client_port?,
            remote_port: remote_port?,
            connect_timeout_secs: connect_timeout_secs?,
            connect_id: connect_id?,
            relay_program: non_empty(relay_program?),
            owned_hops: owned_hops?,
            grace: grace?,
        })
    }
}

fn whole(text: &str, what: &str, min: u64, max: u64) -> Check<u64> {
    number::whole(text, what, min, max).map_err(|r| (r.message, Some(r.hint)))
}

fn port(text: &str, what: &str, min: u16) -> Check<u16> {
    whole(text, what, u64::from(min), 65535).map(|p| p as u16)
}

/// The most nodes, and ranks per node, a profile may ask for.
pub const MAX_COUNT: u64 = 100_000;

fn parse_nodes(text: &str) -> Check<u32> {
    whole(text, "node count", 1, MAX_COUNT).map(|n| n as u32)
}

fn parse_ranks(text: &str) -> Check<u32> {
    whole(text, "ranks per node", 1, MAX_COUNT).map(|n| n as u32)
}

/// The scheduler list lives in [`Kind`]: its `FromStr` and [`Kind::ALL`].
fn parse_scheduler(text: &str) -> Check<Kind> {
    text.parse::<Kind>().map_err(|_| {
        let names = Kind::ALL.map(Kind::name);
        let hint = did_you_mean(text, names.iter().copied(), |c| format!("`{c}`"))
            .unwrap_or_else(|| format!("choose one of {}", names.join(", ")));
        (format!("unknown scheduler `{text}`"), Some(hint))
    })
}

/// Walltimes are read by the scheduler layer's own parser, the one the job script uses.
fn parse_walltime(text: &str) -> Check<Walltime> {
    text.parse::<Walltime>().map_err(|_| {
        (
            format!("walltime `{text}` is not a duration"),
            Some(
                "write minutes (`30`), `H:MM:SS` (`1:30:00`) or `D-H:MM:SS` (`1-12:00:00`)".into(),
            ),
        )
    })
}

/// The default of `<Connection grace>`.
pub const DEFAULT_GRACE: &str = "5m";

/// `<Connection grace>`: `no` (a lost link ends the session at once), or a duration as
/// [`parse_persist`] takes (at most 7 days).
pub fn parse_grace(text: &str) -> Check<std::time::Duration> {
    parse_persist(text)
        .map(Option::unwrap_or_default)
        .map_err(|(message, hint)| (message.replacen("persist", "grace", 1), hint))
}

/// How long a job may wait in the queue by default (seconds): a person waits at the screen;
/// `<Job queue-timeout>` or `--queue-timeout` for longer.
pub const DEFAULT_QUEUE_TIMEOUT: &str = "3600";
/// How long before the job's wall time ends pvlaunch warns by default (ParaView's own first
/// warning is at 5 minutes too).
pub const DEFAULT_WARN_BEFORE: &str = "5m";

/// `<Job warn-before>` and `--warn-before`: `no`, or a duration `90s`, `5m`, `1h` (at most a
/// week).
pub fn parse_warn_before(text: &str) -> Check<Option<std::time::Duration>> {
    parse_persist(text).map_err(|(_, hint)| {
        (
            format!("warn-before `{text}` is not a duration"),
            hint.map(|_| "`no`, or a number with s, m, h or d: e.g. `5m`".into()),
        )
    })
}

/// `no`, or a duration: `90s`, `30m`, `8h`, `1d` (at most 7 days), as ssh's `ControlPersist`.
pub fn parse_persist(text: &str) -> Check<Option<std::time::Duration>> {
    if text == "no" {
        return Ok(None);
    }
    let hint = || Some("`no`, or a number with s, m, h or d: e.g. `8h` (at most 7 days)".into());
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err((format!("persist `{text}` is not a duration"), hint())),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| (format!("persist `{text}` is not a duration"), hint()))?;
    let secs = n.saturating_mul(scale);
    if secs == 0 || secs > 7 * 86_400 {
        return Err((format!("persist `{text}` is out of range"), hint()));
    }
    Ok(Some(std::time::Duration::from_secs(secs)))
}

fn parse_multiplex(text: &str) -> Check<Multiplex> {
    match text {
        "auto" => Ok(Multiplex::Auto),
        "yes" => Ok(Multiplex::Yes),
        "no" => Ok(Multiplex::No),
        _ => Err((
            format!("unknown multiplex setting `{text}`"),
            Some("choose `auto` (ssh's connection sharing, pvlaunch's channel when the site allows one session per connection), `yes` or `no` (always the channel)".into()),
        )),
    }
}

fn yes_no(text: &str, what: &str) -> Check<bool> {
    match text {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err((format!("{what} must be `yes` or `no`, not `{text}`"), None)),
    }
}

fn parse_owned_hops(text: &str) -> Check<OwnedHops> {
    match text {
        "preferred" => Ok(OwnedHops::Preferred),
        "required" => Ok(OwnedHops::Required),
        _ => Err((
            format!("unknown owned-hops policy `{text}`"),
            Some("choose `preferred` (fall back, with a warning, when pvlaunch cannot run on the cluster) or `required` (refuse that fallback)".into()),
        )),
    }
}

fn parse_recipe(text: &str) -> Check<Recipe> {
    text.parse::<Recipe>().map_err(|_| {
        let names = Recipe::ALL.map(Recipe::name);
        let hint = did_you_mean(text, names.iter().copied(), |c| format!("`{c}`"))
            .unwrap_or_else(|| format!("choose one of {}", names.join(", ")));
        (format!("unknown recipe `{text}`"), Some(hint))
    })
}

fn no_control(text: &str, what: &str) -> Check {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err((
            format!("{what} contains the control character {:?}", c),
            Some("values end up on remote command lines; write them on one line".into()),
        ));
    }
    Ok(())
}

fn check_one_line(text: &str) -> Check<String> {
    no_control(text, "the value")?;
    Ok(text.to_string())
}

fn check_host(text: &str) -> Check<String> {
    if text.is_empty() {
        return Err((
            "the login host is empty".into(),
            Some("set <Login host=\"...\"/> to an ssh destination".into()),
        ));
    }
    check_ssh_word(text, "login host")?;
    Ok(text.to_string())
}

/// ssh destinations, users and jump hosts must not look like options or carry spaces.
fn check_ssh_word(text: &str, what: &str) -> Check {
    no_control(text, what)?;
    if text.starts_with('-') {
        return Err((
            format!("{what} `{text}` starts with `-`"),
            Some("ssh would read it as an option".into()),
        ));
    }
    if text.chars().any(char::is_whitespace) {
        return Err((format!("{what} `{text}` contains whitespace"), None));
    }
    Ok(())
}

fn check_user(text: &str) -> Check<String> {
    check_ssh_word(text, "user")?;
    if text.contains('@') {
        return Err((
            format!("user `{text}` contains `@`"),
            Some("give the host in `host` and the user in `user`".into()),
        ));
    }
    Ok(text.to_string())
}

fn check_jump(text: &str) -> Check<Vec<String>> {
    for hop in text.split(',') {
        check_ssh_word(hop, "jump host")?;
        if hop.is_empty() {
            return Err((
                "empty jump host".into(),
                Some("separate jump hosts with commas: gate1,gate2".into()),
            ));
        }
    }
    Ok(text.split(',').map(str::to_string).collect())
}

fn check_word(text: &str) -> Check<String> {
    no_control(text, "the value")?;
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err((format!("`{text}` must be one non-empty word"), None));
    }
    Ok(text.to_string())
}

fn parse_connect_id(text: &str) -> Check<ConnectId> {
    match text {
        "random" => Ok(ConnectId::Random),
        "none" => Ok(ConnectId::None),
        _ => match text.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(ConnectId::Fixed(n)),
            _ => Err((
                format!("connect-id `{text}` is not `random`, `none` or a number"),
                Some("a fixed id is a whole number from 1 to 2147483647".into()),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_is_no_or_a_duration_of_at_most_a_week() {
        use std::time::Duration;
        assert_eq!(parse_persist("no"), Ok(None));
        assert_eq!(parse_persist("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_persist("8h"), Ok(Some(Duration::from_secs(8 * 3600))));
        assert_eq!(
            parse_persist("7d"),
            Ok(Some(Duration::from_secs(7 * 86_400)))
        );
        for bad in [
            "",
            "8",
            "h",
            "0m",
            "8x",
            "-1h",
            "8d",
            "99999999999999999999d",
            "yes",
        ] {
            assert!(parse_persist(bad).is_err(), "{bad}");
        }
        assert_eq!(yes_no("no", "reuse-master"), Ok(false));
        assert!(yes_no("maybe", "reuse-master").is_err());
    }

    #[test]
    fn warn_before_is_a_duration_or_no() {
        use std::time::Duration;
        assert_eq!(parse_warn_before("5m"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parse_warn_before("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_warn_before("no"), Ok(None));
        assert_eq!(
            parse_warn_before(DEFAULT_WARN_BEFORE),
            Ok(Some(Duration::from_secs(300)))
        );
        for bad in ["", "5", "5x", "0m", "yes"] {
            let (message, hint) = parse_warn_before(bad).unwrap_err();
            assert!(message.contains("warn-before"), "{message}");
            assert!(hint.unwrap().contains("5m"));
        }
        // A person waits at the screen: an hour, not a day.
        assert_eq!(DEFAULT_QUEUE_TIMEOUT, "3600");
    }

    #[test]
    fn walltimes_are_the_scheduler_layers() {
        for ok in ["30", "01:30:00", "1-00:00:00", "2-12:00:00", "48:00:00"] {
            assert!(parse_walltime(ok).is_ok(), "{ok}");
        }
        // `10:00` is not MM:SS and `01:99:00` has 99 minutes: the job script could not say
        // either, so neither passes here.
        for bad in [
            "",
            "1h",
            "1:2:3:4",
            "-1",
            "a-01:00:00",
            "01::00",
            "10:00",
            "01:99:00",
        ] {
            assert!(parse_walltime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_scheduler_kind_is_accepted() {
        for kind in Kind::ALL {
            assert_eq!(parse_scheduler(kind.name()), Ok(kind));
        }
        let (_, hint) = parse_scheduler("torqe").unwrap_err();
        assert_eq!(hint.as_deref(), Some("did you mean `torque`?"));
        for recipe in Recipe::ALL {
            assert_eq!(parse_recipe(recipe.name()), Ok(recipe));
        }
    }

    #[test]
    fn ssh_words_cannot_be_options() {
        assert!(check_host("-oProxyCommand=x").is_err());
        assert!(check_host("login node").is_err());
        assert!(check_jump("gate1,gate2").is_ok());
        assert!(check_jump("gate1,,gate2").is_err());
        assert!(check_user("a@b").is_err());
    }

    #[test]
    fn connect_ids() {
        assert_eq!(parse_connect_id("random"), Ok(ConnectId::Random));
        assert_eq!(parse_connect_id("42"), Ok(ConnectId::Fixed(42)));
        assert!(parse_connect_id("0").is_err());
        assert!(parse_connect_id("x").is_err());
    }
}

/// A problem found when resolving: byte offset, place below `<PVLaunch>`, message, hint.
pub type SettingsProblem = (usize, String, String, Option<String>);

/// How the connection crosses the site's firewalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    Auto,
    Reverse,
    Relay,
    TwoHop,
    ReverseTwoHop,
}

impl Recipe {
    /// Every recipe, in the order they are documented.
    pub const ALL: [Recipe; 5] = [
        Recipe::Auto,
        Recipe::Reverse,
        Recipe::Relay,
        Recipe::TwoHop,
        Recipe::ReverseTwoHop,
    ];

    /// The name profiles and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Auto => "auto",
            Recipe::Reverse => "reverse",
            Recipe::Relay => "relay",
            Recipe::TwoHop => "two-hop",
            Recipe::ReverseTwoHop => "reverse-two-hop",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> Result<Recipe, String> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| s.to_string())
    }
}

/// What connect-id the session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "policy", content = "value")]
pub enum ConnectId {
    Random,
    None,
    Fixed(u32),
}

/// pvlaunch's settings with every `$NAME$` substituted and every value typed and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Launch {
    pub login_host: String,
    pub login_user: Option<String>,
    pub jump_hosts: Vec<String>,
    pub login_port: Option<u16>,
    /// `<Login askpass>`: the program ssh asks through without a terminal.
    pub askpass: Option<String>,
    /// `<Login persist>`: how long pvlaunch's own master stays after the session (`None`: it
    /// ends with the session).
    pub persist: Option<std::time::Duration>,
    /// `<Login reuse-master>`: use a master the user runs for the host.
    pub reuse_master: bool,
    /// `<Login multiplex>`.
    pub multiplex: Multiplex,
    pub scheduler: Kind,
    pub nodes: u32,
    pub ranks_per_node: u32,
    pub walltime: Option<Walltime>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub job_name: String,
    pub queue_timeout_secs: u64,
    /// `<Job warn-before>`: how long before the wall time ends to warn (`None`: never).
    pub warn_before: Option<std::time::Duration>,
    pub directives: Vec<String>,
    pub setup: Vec<String>,
    pub pvserver: String,
    /// The launcher argv, `$PVLAUNCH_RANKS$` and `$PVLAUNCH_NODES$` substituted.
    pub launcher: Vec<String>,
    pub pvserver_args: Vec<String>,
    pub recipe: Recipe,
    pub client_port: Option<u16>,
    pub remote_port: u16,
    pub connect_timeout_secs: u64,
    pub connect_id: ConnectId,
    /// The pvlaunch program on the login node (relay recipe); found or copied when `None`.
    pub relay_program: Option<String>,
    pub owned_hops: OwnedHops,
    /// How long a session waits for a lost link to come back (zero: not at all).
    pub grace: std::time::Duration,
}

/// How the session's commands and forwards share the one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Multiplex {
    /// ssh's connection sharing; pvlaunch's channel when the login node allows one session
    /// per connection only (`MaxSessions 1`).
    Auto,
    /// ssh's connection sharing, no check.
    Yes,
    /// No connection sharing: one ssh connection whose one session runs pvlaunch's channel.
    No,
}

/// Whether the session's hops must all be pvlaunch's own (see docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnedHops {
    /// Owned hops when pvlaunch runs on the cluster; otherwise the plain path, with a warning.
    Preferred,
    /// Owned hops or no session.
    Required,
}

impl Launch {
    pub fn total_ranks(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.ranks_per_node)
    }

    /// A small launch for unit tests: `mpiexec -n 2 pvserver` on Slurm.
    #[cfg(test)]
    pub fn for_tests() -> Launch {
        Launch {
            login_host: "login".into(),
            login_user: None,
            jump_hosts: vec![],
            login_port: None,
            askpass: None,
            persist: None,
            reuse_master: true,
            multiplex: Multiplex::Auto,
            scheduler: Kind::Slurm,
            nodes: 1,
            ranks_per_node: 2,
            walltime: None,
            partition: None,
            account: None,
            job_name: "pvserver".into(),
            queue_timeout_secs: 600,
            warn_before: Some(std::time::Duration::from_secs(300)),
            directives: vec![],
            setup: vec![],
            pvserver: "pvserver".into(),
            launcher: vec!["mpiexec".into(), "-n".into(), "2".into()],
            pvserver_args: vec![],
            recipe: Recipe::Auto,
            client_port: None,
            remote_port: 0,
            connect_timeout_secs: 60,
            connect_id: ConnectId::Random,
            relay_program: None,
            owned_hops: OwnedHops::Preferred,
            grace: std::time::Duration::from_secs(300),
        }
    }
}

impl Settings {
    /// Substitute `$NAME$` from `lookup` (an unknown name is an error here: these values become
    /// job parameters), check every value, and type it. Problems carry the value's offset.
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Launch, Vec<SettingsProblem>> {
        let mut problems = Vec::new();
        let mut sub_in = |v: &Value, extra: &[(&str, String)], place: Place| -> Value {
            let not_one_word = std::cell::RefCell::new(Vec::<String>::new());
            let mut shell = ShellContext::new();
            let found = |n: &str, at: usize| {
                let value = extra
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone())
                    .or_else(|| lookup(n))?;
                Some(match place {
                    Place::Value | Place::RawShell => value,
                    Place::Shell => shell_literal(&value, shell.at(&v.text, at, n.len() + 2)),
                    Place::Directive => {
                        if value
                            .chars()
                            .any(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '\\'))
                        {
                            not_one_word.borrow_mut().push(n.to_string());
                        }
                        value
                    }
                    Place::Command => quote_for_split(&value),
                })
            };
            let s = match super::command::substitute_once_at(&v.text, found) {
                Ok(s) => s,
                Err(e) => {
                    problems.push((
                        v.offset,
                        v.at.clone(),
                        e.to_string(),
                        Some("pvlaunch's values are at most 64 KiB after substitution".into()),
                    ));
                    return v.clone();
                }
            };
            for n in not_one_word.borrow().iter() {
                problems.push((
                    v.offset,
                    v.at.clone(),
                    format!(
                        "the value of ${n}$ would split this scheduler directive into more options (it holds blanks or quotes)"
                    ),
                    Some(
                        "a value in a <Directive> must be one word; give each option its own <Directive>".into(),
                    ),
                ));
            }
            if !s.unknown.is_empty() {
                problems.push((
                    v.offset,
                    v.at.clone(),
                    format!(
                        "`{}` refers to {} with no value",
                        v.text,
                        s.unknown
                            .iter()
                            .map(|n| format!("${n}$"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("use the name of an <Option>, a <Set>, or a PV_* variable".into()),
                ));
            }
            Value {
                text: s.text,
                offset: v.offset,
                at: v.at.clone(),
                raw: v.raw,
            }
        };
        let nodes = sub_in(&self.job.nodes, &[], Place::Value);
        let ranks = sub_in(&self.job.ranks_per_node, &[], Place::Value);
        // The counts the launcher and directives may use; a refused count is reported below.
        let n = u64::from(parse_nodes(&nodes.text).unwrap_or(1));
        let r = u64::from(parse_ranks(&ranks.text).unwrap_or(1));
        let extra = [
            ("PVLAUNCH_NODES", n.to_string()),
            ("PVLAUNCH_RANKS", (n * r).to_string()),
            ("PVLAUNCH_RANKS_PER_NODE", r.to_string()),
        ];
        let resolved = Settings {
            login: Login {
                host: sub_in(&self.login.host, &[], Place::Value),
                user: self
                    .login
                    .user
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                jump: self
                    .login
                    .jump
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                port: self
                    .login
                    .port
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                askpass: self
                    .login
                    .askpass
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                persist: sub_in(&self.login.persist, &[], Place::Value),
                reuse_master: sub_in(&self.login.reuse_master, &[], Place::Value),
                multiplex: sub_in(&self.login.multiplex, &[], Place::Value),
            },
            job: Job {
                scheduler: sub_in(&self.job.scheduler, &[], Place::Value),
                nodes,
                ranks_per_node: ranks,
                walltime: self
                    .job
                    .walltime
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                partition: self
                    .job
                    .partition
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                account: self
                    .job
                    .account
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                name: sub_in(&self.job.name, &[], Place::Value),
                queue_timeout: sub_in(&self.job.queue_timeout, &[], Place::Value),
                warn_before: sub_in(&self.job.warn_before, &[], Place::Value),
                directives: self
                    .job
                    .directives
                    .iter()
                    .map(|v| sub_in(v, &extra, Place::Directive))
                    .collect(),
                setup: self
                    .job
                    .setup
                    .iter()
                    .map(|v| {
                        let place = if v.raw { Place::RawShell } else { Place::Shell };
                        sub_in(v, &extra, place)
                    })
                    .collect(),
            },
            pvserver: PvServer {
                exec: sub_in(&self.pvserver.exec, &[], Place::Value),
                launcher: sub_in(&self.pvserver.launcher, &extra, Place::Command),
                args: self
                    .pvserver
                    .args
                    .iter()
                    .map(|v| sub_in(v, &extra, Place::Value))
                    .collect(),
            },
            connection: Connection {
                recipe: sub_in(&self.connection.recipe, &[], Place::Value),
                client_port: self
                    .connection
                    .client_port
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                remote_port: sub_in(&self.connection.remote_port, &[], Place::Value),
                connect_timeout: sub_in(&self.connection.connect_timeout, &[], Place::Value),
                connect_id: sub_in(&self.connection.connect_id, &[], Place::Value),
                relay_program: self
                    .connection
                    .relay_program
                    .as_ref()
                    .map(|v| sub_in(v, &[], Place::Value)),
                owned_hops: sub_in(&self.connection.owned_hops, &[], Place::Value),
                grace: sub_in(&self.connection.grace, &[], Place::Value),
            },
        };
        let mut checks = Vec::new();
        let launch = resolved.typed(|_| true, &mut checks);
        problems.extend(
            checks
                .into_iter()
                .map(|(v, m, h)| (v.offset, v.at.clone(), m, h)),
        );
        match launch {
            Some(l) if problems.is_empty() => Ok(l),
            _ => Err(problems),
        }
    }
}
