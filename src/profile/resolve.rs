//! Evaluate a server as ParaView's launcher does: predefined variables, options with their
//! defaults and quirks, `--set` overrides, `<Switch>`, then the command line.

use std::collections::BTreeMap;

use serde::Serialize;

use super::command;
use super::model::*;
use super::parse::parse_bound;
use super::resource::{Endpoint, Resource};
use crate::suggest::did_you_mean;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The `default` attribute.
    Default,
    /// `default="random"`.
    Random,
    /// No usable default: a Range starts at `min`, other types are empty.
    Fallback,
    /// `--set` on the command line.
    Set,
    /// A `<Set>` in `<Options>`.
    Declared,
    /// A `<Set>` inside a matching `<Switch>` case.
    Switch,
    /// One of ParaView's predefined `PV_*` variables.
    Predefined,
    /// The process environment (ParaView passes its whole environment).
    Environment,
}

/// The ParaView version whose client pvlaunch speaks for (`PV_VERSION*` variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub full: String,
}

impl Version {
    /// Parse `6.0.1`, `5.11.0-RC1`, `5.11`.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Version {
            major,
            minor,
            patch,
            full: text.to_string(),
        })
    }
}

/// Where the `PV_VERSION*` values came from (`show` says it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum VersionOrigin {
    /// ParaView's own `PV_VERSION*` variables: ParaView runs pvlaunch.
    Environment,
    /// `PVLAUNCH_PARAVIEW_VERSION`.
    Override,
    /// The output of `PROGRAM --version`.
    Client { program: String },
    /// pvlaunch's built-in version, and why.
    BuiltIn { reason: String },
}

impl std::fmt::Display for VersionOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionOrigin::Environment => {
                f.write_str("from ParaView (PV_VERSION_* in the environment)")
            }
            VersionOrigin::Override => f.write_str("from PVLAUNCH_PARAVIEW_VERSION"),
            VersionOrigin::Client { program } => write!(f, "from `{program} --version`"),
            VersionOrigin::BuiltIn { reason } => write!(f, "built in ({reason})"),
        }
    }
}

/// Finds a program by name, as `which` does.
pub type ProgramFinder = Box<dyn Fn(&str) -> Option<String>>;

/// The world outside the file: what ParaView would know about the workstation.
pub struct Context {
    /// The process environment (ParaView's launcher starts from it).
    pub environment: BTreeMap<String, String>,
    pub client_host: String,
    pub version: Version,
    /// Where `version` came from.
    pub version_origin: VersionOrigin,
    pub platform: String,
    pub application_dir: String,
    pub application_name: String,
    /// A number in [0, 1] for each `default="random"` option.
    pub noise: Box<dyn FnMut() -> f64>,
    /// Find a program (`ssh`, a terminal) as ParaView does with `which`.
    pub find_program: ProgramFinder,
}

impl Context {
    /// A deterministic context: no environment, host `desk`, Linux, every random draw `noise`,
    /// no program found. For tests, fuzzing and reproducible listings.
    pub fn fixed(version: &str, noise: f64) -> Context {
        Context {
            environment: BTreeMap::new(),
            client_host: "desk".into(),
            version: Version::parse(version)
                .unwrap_or_else(|| Version::parse("6.0.1").expect("valid")),
            version_origin: VersionOrigin::BuiltIn {
                reason: "a fixed context".into(),
            },
            platform: "Linux".into(),
            application_dir: String::new(),
            application_name: "ParaView".into(),
            noise: Box::new(move || noise),
            find_program: Box::new(|_| None),
        }
    }
}

/// Treat `$NAME$` without a value as an error instead of ParaView's bare `NAME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strictness {
    pub strict: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedOption {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub type_name: &'static str,
    pub value: String,
    pub origin: Origin,
    pub readonly: bool,
    /// What `--set` accepts, for help and errors.
    pub allowed: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub value: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResolvedCommand {
    /// The command string after assembly and substitution.
    pub string: String,
    /// What ParaView executes: program and arguments, no shell.
    pub argv: Vec<String>,
    pub process_wait: f64,
    pub delay: f64,
    /// `$NAME$` references that had no value (ParaView substitutes the bare name).
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub name: String,
    pub options: Vec<ResolvedOption>,
    /// Predefined, declared, option and switch variables (the environment is left out).
    pub variables: BTreeMap<String, Variable>,
    pub resource: Resource,
    pub endpoint: Endpoint,
    pub connect_id: Option<i64>,
    pub command: Option<ResolvedCommand>,
    pub warnings: Vec<String>,
    /// Where the `PV_VERSION*` values came from.
    pub version_origin: VersionOrigin,
    /// Every variable, environment included: what `$NAME$` can refer to.
    #[serde(skip)]
    pub all_variables: BTreeMap<String, String>,
}

impl Resolved {
    /// The value of `$name$` as the command sees it.
    pub fn lookup(&self, name: &str) -> Option<&str> {
        self.all_variables.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` is not OPTION=VALUE")]
    SetSyntax(String),
    #[error("server `{server}` has no option `{name}`{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownOption {
        server: String,
        name: String,
        hint: Option<String>,
    },
    #[error("option `{name}` is read-only")]
    ReadOnly { name: String },
    #[error("`{value}` is not a valid value for option `{name}` ({type_name}): allowed {allowed}")]
    InvalidValue {
        name: String,
        value: String,
        type_name: &'static str,
        allowed: String,
    },
    #[error("the command refers to {} with no value", names.iter().map(|n| format!("${n}$")).collect::<Vec<_>>().join(", "))]
    Unknown { names: Vec<String> },
    /// The command cannot be built: `offset` is the `<Command>` element's.
    #[error("the command cannot be built: {error}")]
    Substitution {
        offset: usize,
        error: command::SubstitutionError,
    },
}

impl ResolveError {
    /// A fault of the command line (`--set`, `--strict`), not of the profile itself.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ResolveError::Substitution { .. })
    }

    /// Where in the file the problem is, for a problem of the profile itself.
    pub fn offset(&self) -> Option<usize> {
        match self {
            ResolveError::Substitution { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// Resolve `server` with `sets` (`OPTION=VALUE` strings). Every error is collected.
pub fn resolve(
    server: &Server,
    sets: &[String],
    ctx: &mut Context,
    strictness: Strictness,
) -> Result<Resolved, Vec<ResolveError>> {
    let mut errors = Vec::new();
    let mut resource = server.resource.clone();
    let mut warnings = Vec::new();

    let mut all: BTreeMap<String, String> = ctx.environment.clone();
    let mut shown: BTreeMap<String, Variable> = BTreeMap::new();
    let put = |all: &mut BTreeMap<String, String>,
               shown: &mut BTreeMap<String, Variable>,
               k: &str,
               v: String,
               origin: Origin| {
        all.insert(k.to_string(), v.clone());
        // The empty name (a <Set> or <Option> without `name`): `$$` sees it, but ParaView
        // does not export it, so it is not shown as a variable.
        if !k.is_empty() {
            shown.insert(k.to_string(), Variable { value: v, origin });
        }
    };
    for (k, v) in predefined(&resource, ctx) {
        put(&mut all, &mut shown, &k, v, Origin::Predefined);
    }

    let mut options = Vec::new();
    let mut overrides: BTreeMap<String, String> = BTreeMap::new();
    for s in sets {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                overrides.insert(k.to_string(), v.to_string());
            }
            _ => errors.push(ResolveError::SetSyntax(s.clone())),
        }
    }

    let items: &[OptionItem] = server.option_items();
    for item in items {
        match item {
            OptionItem::Set { name, value } => {
                put(&mut all, &mut shown, name, value.clone(), Origin::Declared)
            }
            OptionItem::Option(def) => {
                let (mut value, mut origin) = default_value(def, &mut ctx.noise);
                if let Some(given) = overrides.remove(&def.name) {
                    if def.readonly {
                        errors.push(ResolveError::ReadOnly {
                            name: def.name.clone(),
                        });
                    } else {
                        match check_set(def, &given) {
                            Ok(v) => {
                                value = v;
                                origin = Origin::Set;
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                }
                options.push(ResolvedOption {
                    name: def.name.clone(),
                    label: def.label.clone(),
                    type_name: def.kind.type_name(),
                    value,
                    origin,
                    readonly: def.readonly,
                    allowed: allowed(&def.kind),
                });
            }
            OptionItem::Switch(_) => {}
        }
    }
    for name in overrides.keys() {
        let hint = did_you_mean(name, options.iter().map(|o| o.name.as_str()), |c| {
            format!("`{c}`")
        })
        .or_else(|| {
            (!options.is_empty()).then(|| {
                format!(
                    "options: {}",
                    options
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        });
        errors.push(ResolveError::UnknownOption {
            server: server.name.clone(),
            name: name.clone(),
            hint,
        });
    }

    // ParaView applies option values in name order (a QMap), then the Switches: only when at
    // least one option exists.
    if !options.is_empty() {
        let mut sorted: Vec<&ResolvedOption> = options.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for opt in sorted {
            put(
                &mut all,
                &mut shown,
                &opt.name,
                opt.value.clone(),
                opt.origin,
            );
            let port = || {
                opt.value
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(|p| u16::try_from(p).ok())
            };
            match opt.name.as_str() {
                "PV_SERVER_PORT" if resource.server_port().is_some() => resource.port = port(),
                "PV_DATA_SERVER_PORT" if resource.data_server_port().is_some() => {
                    resource.port = port()
                }
                "PV_RENDER_SERVER_PORT" if resource.render_server_port().is_some() => {
                    resource.render_port = port()
                }
                _ => {}
            }
        }
        for item in items {
            let OptionItem::Switch(sw) = item else {
                continue;
            };
            let Some(current) = all.get(&sw.name).cloned() else {
                warnings.push(format!(
                    "<Switch name=\"{}\"> has no effect: no variable of that name",
                    sw.name
                ));
                continue;
            };
            match sw
                .cases
                .iter()
                .find(|c| c.value.as_deref() == Some(current.as_str()))
            {
                Some(case) => {
                    for (k, v) in &case.sets {
                        put(&mut all, &mut shown, k, v.clone(), Origin::Switch);
                    }
                }
                None => warnings.push(format!(
                    "<Switch name=\"{}\"> has no case for `{current}`",
                    sw.name
                )),
            }
        }
    }

    let connect_id = all
        .get("PV_CONNECT_ID")
        .filter(|_| shown.contains_key("PV_CONNECT_ID"))
        .map(|v| v.trim().parse::<i64>().unwrap_or(0));

    if let Some(spec) = server.command() {
        for text in std::iter::once(&spec.exec).chain(&spec.arguments) {
            if !text.is_ascii() {
                warnings.push(format!(
                    "ParaView 5.11 reads non-ASCII text in exec and <Argument> as Latin-1 and encodes it again: it would run `{}` where pvlaunch runs `{text}`",
                    latin1_again(text)
                ));
            }
        }
    }
    if let Some(encoding) = &server.declared_encoding {
        warnings.push(format!(
            "the file declares encoding {encoding}; pvlaunch decodes it so, but ParaView 5.11 reads every file as UTF-8 and would garble its non-ASCII text"
        ));
    }

    let command = match server.command() {
        Some(spec) => {
            let string = command_string(spec, &resource, ctx, &mut warnings);
            match command::substitute(&string, |n| all.get(n).cloned()) {
                Ok(sub) => {
                    if strictness.strict && !sub.unknown.is_empty() {
                        errors.push(ResolveError::Unknown {
                            names: sub.unknown.iter().cloned().collect(),
                        });
                    }
                    Some(ResolvedCommand {
                        argv: command::split(&sub.text),
                        string: sub.text,
                        process_wait: spec.process_wait,
                        delay: spec.delay,
                        unknown: sub.unknown.into_iter().collect(),
                    })
                }
                Err(error) => {
                    errors.push(ResolveError::Substitution {
                        offset: spec.offset,
                        error,
                    });
                    None
                }
            }
        }
        _ => None,
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Resolved {
        name: server.name.clone(),
        options,
        variables: shown,
        endpoint: resource.endpoint(),
        resource,
        connect_id,
        command,
        warnings,
        version_origin: ctx.version_origin.clone(),
        all_variables: all,
    })
}

/// UTF-8 text read back as Latin-1 and encoded again: what ParaView 5.11's `QTextStream`
/// makes of `exec` and `<Argument>` text (`café` becomes `cafÃ©`).
pub fn latin1_again(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

fn predefined(r: &Resource, ctx: &Context) -> Vec<(String, String)> {
    let port = |p: Option<u16>| p.map_or("-1".to_string(), |p| p.to_string());
    // ParaView 5.11 exports the resource's port here even when <PortForwarding local> is set
    // (measured; see docs/paraview-compat.md).
    let pf_port = port(r.server_port());
    let v = &ctx.version;
    vec![
        ("PV_CLIENT_HOST".into(), ctx.client_host.clone()),
        ("PV_CONNECTION_URI".into(), r.uri()),
        ("PV_CONNECTION_SCHEME".into(), r.scheme.as_str().into()),
        ("PV_VERSION_MAJOR".into(), v.major.to_string()),
        ("PV_VERSION_MINOR".into(), v.minor.to_string()),
        ("PV_VERSION_PATCH".into(), v.patch.to_string()),
        ("PV_VERSION".into(), format!("{}.{}", v.major, v.minor)),
        ("PV_VERSION_FULL".into(), v.full.clone()),
        ("PV_SERVER_HOST".into(), r.server_host().into()),
        ("PV_SERVER_PORT".into(), port(r.server_port())),
        ("PV_SSH_PF_SERVER_PORT".into(), pf_port),
        ("PV_DATA_SERVER_HOST".into(), r.data_server_host().into()),
        ("PV_DATA_SERVER_PORT".into(), port(r.data_server_port())),
        (
            "PV_RENDER_SERVER_HOST".into(),
            r.render_server_host().into(),
        ),
        ("PV_RENDER_SERVER_PORT".into(), port(r.render_server_port())),
        ("PV_CLIENT_PLATFORM".into(), ctx.platform.clone()),
        ("PV_APPLICATION_DIR".into(), ctx.application_dir.clone()),
        ("PV_APPLICATION_NAME".into(), ctx.application_name.clone()),
    ]
}

/// The command string before substitution: `<Command>` as is, or `<SSHCommand>` wrapped in
/// `[setsid ][terminal -e ]ssh [-R|-L local:localhost:port ][user@]host exec args`.
fn command_string(
    spec: &CommandSpec,
    r: &Resource,
    ctx: &Context,
    warnings: &mut Vec<String>,
) -> String {
    let exec = command::assemble(&spec.exec, &spec.arguments);
    let Some(ssh) = &spec.ssh else { return exec };
    let mut out = String::new();
    if ssh.askpass && ctx.platform == "Linux" {
        out.push_str("setsid ");
    }
    if let Some(term) = &ssh.terminal {
        let found = match term {
            Some(exec) => Some(exec.clone()),
            None => find_terminal(ctx),
        };
        match found {
            Some(t) => {
                out.push_str(&t);
                out.push_str(" -e ");
            }
            None => warnings.push("a <Terminal> is requested but none was found (set $TERMINAL); ssh runs without one".into()),
        }
    }
    let ssh_exec = ssh
        .ssh_exec
        .clone()
        .or_else(|| (ctx.find_program)("ssh").map(|p| format!("\"{p}\"")))
        .unwrap_or_else(|| {
            warnings.push("no ssh found on PATH".into());
            "ssh".into()
        });
    out.push_str(&ssh_exec);
    out.push(' ');
    if let Some(local) = &ssh.port_forwarding {
        let remote = r.port.map_or("-1".to_string(), |p| p.to_string());
        let local = local.clone().unwrap_or_else(|| remote.clone());
        let flag = if r.is_reverse() { "-R" } else { "-L" };
        out.push_str(&format!("{flag} {local}:localhost:{remote} "));
    }
    if let Some(user) = ssh.user.as_deref().filter(|u| !u.is_empty()) {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(&r.host);
    out.push(' ');
    out.push_str(&exec);
    out
}

/// The terminals ParaView tries on Linux, in its order.
const TERMINALS: &[&str] = &[
    "x-terminal-emulator",
    "urxvt",
    "rxvt",
    "termit",
    "terminator",
    "Eterm",
    "aterm",
    "uxterm",
    "xterm",
    "gnome-terminal",
    "roxterm",
    "xfce4-terminal",
    "termite",
    "lxterminal",
    "mate-terminal",
    "terminology",
    "st",
    "qterminal",
    "lilyterm",
    "tilix",
    "terminix",
    "konsole",
    "kitty",
    "guake",
    "tilda",
    "alacritty",
    "hyper",
];

fn find_terminal(ctx: &Context) -> Option<String> {
    let from_env = ctx
        .environment
        .get("TERMINAL")
        .cloned()
        .filter(|t| !t.is_empty());
    from_env
        .iter()
        .map(String::as_str)
        .chain(TERMINALS.iter().copied())
        .find_map(|t| (ctx.find_program)(t))
        .map(|p| format!("\"{p}\""))
}

/// Compute an option's starting value as ParaView's dialog would show it.
fn default_value(def: &OptionDef, noise: &mut dyn FnMut() -> f64) -> (String, Origin) {
    match &def.kind {
        OptionKind::Range {
            number,
            min,
            max,
            default,
            random_min,
            random_max,
            ..
        } => match default {
            DefaultValue::Random => {
                // ParaView: min + (max - min) * noise, with min and max read by toInt() or
                // toDouble(), then stored in the spin box and clamped. (Qt 5 rounds an int
                // draw, pvlaunch truncates it as the 6.x reference listing does: a draw is a
                // draw; see docs/paraview-compat.md.)
                let n = noise().clamp(0.0, 1.0);
                let v = match number {
                    RangeType::Int => {
                        let span = (*random_max as i32).wrapping_sub(*random_min as i32);
                        let v = (random_min + f64::from(span) * n).trunc();
                        f64::from(v as i64 as i32)
                    }
                    RangeType::Double => random_min + (random_max - random_min) * n,
                };
                (format_number(*number, v, *min, *max), Origin::Random)
            }
            DefaultValue::Value(text) => match parse_bound(text, *number) {
                Some(v) => (format_number(*number, v, *min, *max), Origin::Default),
                None => (format_number(*number, 0.0, *min, *max), Origin::Fallback),
            },
            // The spin box starts at 0, kept within its range.
            DefaultValue::Absent => (format_number(*number, 0.0, *min, *max), Origin::Fallback),
        },
        OptionKind::String { default }
        | OptionKind::Password { default }
        | OptionKind::File { default } => match default {
            DefaultValue::Value(v) => (v.clone(), Origin::Default),
            _ => (String::new(), Origin::Fallback),
        },
        OptionKind::Boolean {
            true_value,
            false_value,
            default,
        } => match default {
            DefaultValue::Value(v) if v == true_value => (true_value.clone(), Origin::Default),
            DefaultValue::Value(_) => (false_value.clone(), Origin::Default),
            _ => (false_value.clone(), Origin::Fallback),
        },
        OptionKind::Enumeration { entries, default } => match default {
            DefaultValue::Value(v) if entries.iter().any(|e| &e.value == v) => {
                (v.clone(), Origin::Default)
            }
            _ => (String::new(), Origin::Fallback),
        },
    }
}

/// A spin box's value as text: doubles rounded to two decimals (Qt's default) and written as
/// `QVariant::toString()` writes them, both clamped to the range.
fn format_number(number: RangeType, v: f64, min: f64, max: f64) -> String {
    match number {
        RangeType::Int => format!("{}", v.clamp(min, max) as i64),
        RangeType::Double => {
            let r = super::parse::round_decimals(v).clamp(min, max);
            super::number::qt_double_string(r)
        }
    }
}

fn allowed(kind: &OptionKind) -> String {
    match kind {
        OptionKind::Range {
            number, min, max, ..
        } => {
            let what = if *number == RangeType::Int {
                "a whole number"
            } else {
                "a number"
            };
            format!("{what} from {} to {}", fmt_bound(*min), fmt_bound(*max))
        }
        OptionKind::Boolean {
            true_value,
            false_value,
            ..
        } => format!("`{true_value}` or `{false_value}`"),
        OptionKind::Enumeration { entries, .. } => entries
            .iter()
            .map(|e| {
                if e.label == e.value {
                    format!("`{}`", e.value)
                } else {
                    format!("`{}` ({})", e.value, e.label)
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        OptionKind::String { .. } | OptionKind::Password { .. } => "any text".into(),
        OptionKind::File { .. } => "a file path".into(),
    }
}

fn fmt_bound(v: f64) -> String {
    format!("{v}")
}

/// Check a `--set` value against the option's type; returns the value ParaView would use.
fn check_set(def: &OptionDef, value: &str) -> Result<String, ResolveError> {
    let invalid = || ResolveError::InvalidValue {
        name: def.name.clone(),
        value: value.to_string(),
        type_name: def.kind.type_name(),
        allowed: allowed(&def.kind),
    };
    match &def.kind {
        OptionKind::Range {
            number, min, max, ..
        } => {
            let v = parse_bound(value, *number).ok_or_else(invalid)?;
            if v < *min || v > *max {
                return Err(invalid());
            }
            Ok(format_number(*number, v, *min, *max))
        }
        OptionKind::Boolean {
            true_value,
            false_value,
            ..
        } => {
            if value == true_value || value == "true" {
                Ok(true_value.clone())
            } else if value == false_value || value == "false" {
                Ok(false_value.clone())
            } else {
                Err(invalid())
            }
        }
        OptionKind::Enumeration { entries, .. } => entries
            .iter()
            .find(|e| e.value == value)
            .map(|e| e.value.clone())
            .ok_or_else(invalid),
        OptionKind::String { .. } | OptionKind::Password { .. } | OptionKind::File { .. } => {
            Ok(value.to_string())
        }
    }
}
