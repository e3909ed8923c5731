//! The validated profile: what one `<Server>` of a `.pvsc` file says, in types.

use serde::Serialize;

use super::diag::Location;
use super::resource::Resource;
use super::settings::Settings;

/// One `<Server>` element.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub name: String,
    /// The `resource` attribute as written.
    pub resource_text: String,
    pub resource: Resource,
    /// The `timeout` attribute of `<Server>` (seconds ParaView waits for the connection; -1: forever).
    pub timeout: Option<i64>,
    pub startup: Startup,
    /// pvlaunch's own settings (the `<PVLaunch>` child), if the file carries them.
    pub pvlaunch: Option<Settings>,
    pub location: Location,
    /// The encoding the file declares when it is not UTF-8 (`ISO-8859-1`): pvlaunch decodes
    /// it as declared, ParaView 5.11 reads every file as UTF-8 (so `show` warns).
    #[serde(skip)]
    pub declared_encoding: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Startup {
    /// `<ManualStartup/>`: the user starts pvserver; ParaView only connects or listens.
    Manual,
    /// `<CommandStartup>`: ParaView runs a command first.
    Command(Box<CommandStartup>),
}

impl Server {
    /// The items of `<Options>` (empty when there is none).
    pub fn option_items(&self) -> &[OptionItem] {
        match &self.startup {
            Startup::Command(c) => c.options.as_deref().unwrap_or(&[]),
            Startup::Manual => &[],
        }
    }

    /// The `<Command>` or `<SSHCommand>` ParaView would run.
    pub fn command(&self) -> Option<&CommandSpec> {
        match &self.startup {
            Startup::Command(c) => c.command.as_ref(),
            Startup::Manual => None,
        }
    }
}

impl Startup {
    pub fn kind(&self) -> &'static str {
        match self {
            Startup::Manual => "manual",
            Startup::Command(_) => "command",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandStartup {
    /// `None` when there is no `<Options>` element at all (then no option and no Switch applies).
    pub options: Option<Vec<OptionItem>>,
    /// `None` when `<CommandStartup>` holds neither `<Command>` nor `<SSHCommand>`.
    pub command: Option<CommandSpec>,
}

/// The children of `<Options>`, in document order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "item", rename_all = "lowercase")]
pub enum OptionItem {
    Set { name: String, value: String },
    Option(OptionDef),
    Switch(SwitchDef),
}

#[derive(Debug, Clone, Serialize)]
pub struct OptionDef {
    pub name: String,
    pub label: String,
    pub readonly: bool,
    pub save: bool,
    pub kind: OptionKind,
    #[serde(skip)]
    pub location: Location,
}

/// The value of a `default` attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultValue {
    Absent,
    Random,
    Value(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeType {
    Int,
    Double,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OptionKind {
    Range {
        number: RangeType,
        /// The spin box's range as Qt ends up with it (see [`super::parse::spin_box_range`]).
        min: f64,
        max: f64,
        step: String,
        default: DefaultValue,
        /// Where `default="random"` draws from: `min` and `max` as `QString::toInt()` /
        /// `toDouble()` read them (0 when they are not numbers); the draw is then clamped to
        /// `min..=max`.
        random_min: f64,
        random_max: f64,
    },
    String {
        default: DefaultValue,
    },
    Password {
        default: DefaultValue,
    },
    File {
        default: DefaultValue,
    },
    Boolean {
        true_value: String,
        false_value: String,
        default: DefaultValue,
    },
    Enumeration {
        entries: Vec<Entry>,
        default: DefaultValue,
    },
}

impl OptionKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            OptionKind::Range {
                number: RangeType::Int,
                ..
            } => "int range",
            OptionKind::Range {
                number: RangeType::Double,
                ..
            } => "double range",
            OptionKind::String { .. } => "string",
            OptionKind::Password { .. } => "password",
            OptionKind::File { .. } => "file",
            OptionKind::Boolean { .. } => "boolean",
            OptionKind::Enumeration { .. } => "enumeration",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub value: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchDef {
    pub name: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// `None` when the `value` attribute is missing (such a case never matches).
    pub value: Option<String>,
    pub sets: Vec<(String, String)>,
}

/// `<Command>` or `<SSHCommand>`.
#[derive(Debug, Clone, Serialize)]
pub struct CommandSpec {
    pub exec: String,
    /// Arguments as written (before quoting and substitution).
    pub arguments: Vec<String>,
    /// Seconds to wait for the process to start (`process_wait`, or the legacy `timeout`).
    pub process_wait: f64,
    /// Seconds to wait before connecting; -1 waits for the command to finish.
    pub delay: f64,
    /// `Some` for `<SSHCommand>` with an `<SSHConfig>`.
    pub ssh: Option<SshConfig>,
    /// Byte offset of the element, for errors found when the command is built.
    #[serde(skip)]
    pub offset: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SshConfig {
    pub user: Option<String>,
    pub port: Option<String>,
    /// `<SSH exec=...>`; `None` means "find ssh on PATH".
    pub ssh_exec: Option<String>,
    /// `<Terminal>` present: `Some(None)` means "find a terminal", `Some(Some(exec))` a given one.
    pub terminal: Option<Option<String>>,
    pub askpass: bool,
    /// `<PortForwarding>` present: `Some(local)` where `local` may be absent.
    pub port_forwarding: Option<Option<String>>,
}
