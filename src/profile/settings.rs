//! pvlaunch's own part of a profile: the `<PVLaunch>` child of `<Server>`.
//!
//! ParaView ignores an unknown child of `<Server>`, so one file serves both. This part is
//! validated strictly: an unknown element or attribute is an error with a suggestion. Values
//! are kept as templates (they may use `$OPTION$`) and checked again once resolved.

use serde::Serialize;

use super::diag::Collector;
use super::xml::Element;
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
}

impl Value {
    fn new(text: &str, offset: usize, at: String) -> Value {
        Value {
            text: text.to_string(),
            offset,
            at,
        }
    }
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
}

/// `<Job scheduler nodes ranks-per-node walltime partition account name queue-timeout>` with
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
}

pub const SCHEDULERS: [&str; 4] = ["slurm", "pbs", "lsf", "none"];
pub const RECIPES: [&str; 5] = ["auto", "reverse", "relay", "two-hop", "reverse-two-hop"];

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
        attrs: &["host", "user", "jump", "port"],
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
        attrs: &["line"],
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
        },
        job: Job {
            scheduler: get_or(job, "scheduler", "slurm", at),
            nodes: get_or(job, "nodes", "1", at),
            ranks_per_node: get_or(job, "ranks-per-node", "1", at),
            walltime: get(job, "walltime"),
            partition: get(job, "partition"),
            account: get(job, "account"),
            name: get_or(job, "name", "pvserver", at),
            queue_timeout: get_or(job, "queue-timeout", "86400", at),
            directives: children_values(job, "Directive", "value"),
            setup: children_values(job, "Setup", "line"),
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
        },
    };
    // Literal values (no `$NAME$`) are checked now; templates once the options are known.
    let literal = |v: &Value| !v.text.contains('$');
    let mut problems = Vec::new();
    settings.check_values(literal, &mut problems);
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

/// A problem with one value: the value, the message, and a hint.
pub type Problem<'a> = (&'a Value, String, Option<String>);

impl Settings {
    /// Check every value that `filter` selects; problems are appended to `out`.
    pub fn check_values<'a>(&'a self, filter: impl Fn(&Value) -> bool, out: &mut Vec<Problem<'a>>) {
        let mut check = |v: &'a Value, f: fn(&str) -> Check| {
            if filter(v)
                && let Err((message, hint)) = f(&v.text)
            {
                out.push((v, message, hint));
            }
        };
        check(&self.login.host, check_host);
        if let Some(v) = &self.login.user {
            check(v, check_user);
        }
        if let Some(v) = &self.login.jump {
            check(v, check_jump);
        }
        if let Some(v) = &self.login.port {
            check(v, |t| check_number(t, "ssh port", 1, 65535));
        }
        check(&self.job.scheduler, |t| {
            check_choice(t, "scheduler", &SCHEDULERS)
        });
        check(&self.job.nodes, |t| {
            check_number(t, "node count", 1, 100_000)
        });
        check(&self.job.ranks_per_node, |t| {
            check_number(t, "ranks per node", 1, 100_000)
        });
        if let Some(v) = &self.job.walltime {
            check(v, check_walltime);
        }
        for v in [&self.job.partition, &self.job.account]
            .into_iter()
            .flatten()
        {
            check(v, check_word);
        }
        check(&self.job.name, check_word);
        check(&self.job.queue_timeout, |t| {
            check_number(t, "queue timeout (seconds)", 1, u32::MAX as u64)
        });
        for v in self
            .job
            .directives
            .iter()
            .chain(&self.job.setup)
            .chain(&self.pvserver.args)
        {
            check(v, check_one_line);
        }
        check(&self.pvserver.exec, check_program);
        check(&self.pvserver.launcher, check_one_line);
        check(&self.connection.recipe, |t| {
            check_choice(t, "recipe", &RECIPES)
        });
        if let Some(v) = &self.connection.client_port {
            check(v, |t| check_number(t, "client port", 1, 65535));
        }
        check(&self.connection.remote_port, |t| {
            check_number(t, "remote port", 0, 65535)
        });
        check(&self.connection.connect_timeout, |t| {
            check_number(t, "connect timeout (seconds)", 1, 86_400 * 7)
        });
        check(&self.connection.connect_id, check_connect_id);
        if let Some(v) = &self.connection.relay_program {
            check(v, check_program);
        }
    }
}

type Check = Result<(), (String, Option<String>)>;

fn check_choice(text: &str, what: &str, choices: &[&str]) -> Check {
    if choices.contains(&text) {
        return Ok(());
    }
    let hint = did_you_mean(text, choices.iter().copied(), |c| format!("`{c}`"))
        .unwrap_or_else(|| format!("choose one of {}", choices.join(", ")));
    Err((format!("unknown {what} `{text}`"), Some(hint)))
}

fn check_number(text: &str, what: &str, min: u64, max: u64) -> Check {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        Ok(n) => Err((
            format!("{what} {n} is out of range"),
            Some(format!("allowed: {min} to {max}")),
        )),
        Err(_) => Err((
            format!("{what} `{text}` is not a whole number"),
            Some(format!("allowed: {min} to {max}")),
        )),
    }
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

fn check_one_line(text: &str) -> Check {
    no_control(text, "the value")
}

fn check_host(text: &str) -> Check {
    if text.is_empty() {
        return Err((
            "the login host is empty".into(),
            Some("set <Login host=\"...\"/> to an ssh destination".into()),
        ));
    }
    check_ssh_word(text, "login host")
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

fn check_user(text: &str) -> Check {
    check_ssh_word(text, "user")?;
    if text.contains('@') {
        return Err((
            format!("user `{text}` contains `@`"),
            Some("give the host in `host` and the user in `user`".into()),
        ));
    }
    Ok(())
}

fn check_jump(text: &str) -> Check {
    for hop in text.split(',') {
        check_ssh_word(hop, "jump host")?;
        if hop.is_empty() {
            return Err((
                "empty jump host".into(),
                Some("separate jump hosts with commas: gate1,gate2".into()),
            ));
        }
    }
    Ok(())
}

fn check_word(text: &str) -> Check {
    no_control(text, "the value")?;
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err((format!("`{text}` must be one non-empty word"), None));
    }
    Ok(())
}

fn check_program(text: &str) -> Check {
    check_word(text)
}

/// Slurm/PBS/LSF walltimes: `MM`, `HH:MM:SS`, `D-HH:MM:SS`, `MM:SS`, `D-HH`.
fn check_walltime(text: &str) -> Check {
    let bad = || {
        Err((
            format!("walltime `{text}` is not a duration"),
            Some("write minutes (`30`), `HH:MM:SS` (`01:30:00`) or `D-HH:MM:SS`".into()),
        ))
    };
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, text),
    };
    if let Some(d) = days
        && (d.is_empty() || !d.chars().all(|c| c.is_ascii_digit()))
    {
        return bad();
    }
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return bad();
    }
    Ok(())
}

fn check_connect_id(text: &str) -> Check {
    match text {
        "random" | "none" => Ok(()),
        _ => match text.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Ok(()),
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
    fn walltime_forms() {
        for ok in ["30", "01:30:00", "1-00:00:00", "10:00", "2-12"] {
            assert!(check_walltime(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "a-01:00:00", "01::00"] {
            assert!(check_walltime(bad).is_err(), "{bad}");
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
        assert!(check_connect_id("random").is_ok());
        assert!(check_connect_id("42").is_ok());
        assert!(check_connect_id("0").is_err());
        assert!(check_connect_id("x").is_err());
    }
}

/// A problem found when resolving: byte offset, place below `<PVLaunch>`, message, hint.
pub type SettingsProblem = (usize, String, String, Option<String>);

/// The scheduler that runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    Slurm,
    Pbs,
    Lsf,
    /// Run pvserver directly on the login node.
    None,
}

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
    pub scheduler: SchedulerKind,
    pub nodes: u32,
    pub ranks_per_node: u32,
    pub walltime: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub job_name: String,
    pub queue_timeout_secs: u64,
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
}

impl Launch {
    pub fn total_ranks(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.ranks_per_node)
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
        let mut sub = |v: &Value, extra: &[(&str, String)]| -> Value {
            let s = super::command::substitute_once(&v.text, |n| {
                extra
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.clone())
                    .or_else(|| lookup(n))
            });
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
            }
        };
        let nodes = sub(&self.job.nodes, &[]);
        let ranks = sub(&self.job.ranks_per_node, &[]);
        let n: u64 = nodes.text.trim().parse().unwrap_or(1);
        let r: u64 = ranks.text.trim().parse().unwrap_or(1);
        let extra = [
            ("PVLAUNCH_NODES", n.to_string()),
            ("PVLAUNCH_RANKS", (n * r).to_string()),
            ("PVLAUNCH_RANKS_PER_NODE", r.to_string()),
        ];
        let resolved = Settings {
            login: Login {
                host: sub(&self.login.host, &[]),
                user: self.login.user.as_ref().map(|v| sub(v, &[])),
                jump: self.login.jump.as_ref().map(|v| sub(v, &[])),
                port: self.login.port.as_ref().map(|v| sub(v, &[])),
            },
            job: Job {
                scheduler: sub(&self.job.scheduler, &[]),
                nodes,
                ranks_per_node: ranks,
                walltime: self.job.walltime.as_ref().map(|v| sub(v, &[])),
                partition: self.job.partition.as_ref().map(|v| sub(v, &[])),
                account: self.job.account.as_ref().map(|v| sub(v, &[])),
                name: sub(&self.job.name, &[]),
                queue_timeout: sub(&self.job.queue_timeout, &[]),
                directives: self.job.directives.iter().map(|v| sub(v, &extra)).collect(),
                setup: self.job.setup.iter().map(|v| sub(v, &extra)).collect(),
            },
            pvserver: PvServer {
                exec: sub(&self.pvserver.exec, &[]),
                launcher: sub(&self.pvserver.launcher, &extra),
                args: self.pvserver.args.iter().map(|v| sub(v, &extra)).collect(),
            },
            connection: Connection {
                recipe: sub(&self.connection.recipe, &[]),
                client_port: self.connection.client_port.as_ref().map(|v| sub(v, &[])),
                remote_port: sub(&self.connection.remote_port, &[]),
                connect_timeout: sub(&self.connection.connect_timeout, &[]),
                connect_id: sub(&self.connection.connect_id, &[]),
                relay_program: self.connection.relay_program.as_ref().map(|v| sub(v, &[])),
            },
        };
        let mut checks = Vec::new();
        resolved.check_values(|_| true, &mut checks);
        problems.extend(
            checks
                .into_iter()
                .map(|(v, m, h)| (v.offset, v.at.clone(), m, h)),
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        let s = resolved;
        let num = |v: &Value| v.text.trim().parse::<u64>().expect("checked");
        let opt_text =
            |v: &Option<Value>| v.as_ref().map(|v| v.text.clone()).filter(|t| !t.is_empty());
        Ok(Launch {
            login_host: s.login.host.text.clone(),
            login_user: opt_text(&s.login.user),
            jump_hosts: s
                .login
                .jump
                .as_ref()
                .map(|j| j.text.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            login_port: s.login.port.as_ref().map(|p| num(p) as u16),
            scheduler: match s.job.scheduler.text.as_str() {
                "slurm" => SchedulerKind::Slurm,
                "pbs" => SchedulerKind::Pbs,
                "lsf" => SchedulerKind::Lsf,
                _ => SchedulerKind::None,
            },
            nodes: num(&s.job.nodes) as u32,
            ranks_per_node: num(&s.job.ranks_per_node) as u32,
            walltime: opt_text(&s.job.walltime),
            partition: opt_text(&s.job.partition),
            account: opt_text(&s.job.account),
            job_name: s.job.name.text.clone(),
            queue_timeout_secs: num(&s.job.queue_timeout),
            directives: s.job.directives.iter().map(|v| v.text.clone()).collect(),
            setup: s.job.setup.iter().map(|v| v.text.clone()).collect(),
            pvserver: s.pvserver.exec.text.clone(),
            launcher: super::command::split(&s.pvserver.launcher.text),
            pvserver_args: s.pvserver.args.iter().map(|v| v.text.clone()).collect(),
            recipe: match s.connection.recipe.text.as_str() {
                "reverse" => Recipe::Reverse,
                "relay" => Recipe::Relay,
                "two-hop" => Recipe::TwoHop,
                "reverse-two-hop" => Recipe::ReverseTwoHop,
                _ => Recipe::Auto,
            },
            client_port: s.connection.client_port.as_ref().map(|p| num(p) as u16),
            remote_port: num(&s.connection.remote_port) as u16,
            connect_timeout_secs: num(&s.connection.connect_timeout),
            connect_id: match s.connection.connect_id.text.as_str() {
                "random" => ConnectId::Random,
                "none" => ConnectId::None,
                n => ConnectId::Fixed(n.parse().expect("checked")),
            },
            relay_program: opt_text(&s.connection.relay_program),
        })
    }
}
