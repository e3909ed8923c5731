//! From the XML tree to [`Server`]s. ParaView's own parts are read as ParaView reads them
//! (unknown parts are warnings, as ParaView only warns); pvlaunch's part is strict.

use super::diag::{Collector, Diagnostic, Location, Source, render_limited};
use super::model::*;
use super::resource::Resource;
use super::settings;
use super::xml::{self, Element};
use crate::suggest::did_you_mean;

/// Everything read from one file: its servers and every diagnostic.
#[derive(Debug)]
pub struct FileReport {
    pub source: Source,
    /// The servers without errors, in document order.
    pub servers: Vec<Server>,
    /// The first [`super::diag::KEEP_PER_FILE`] diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// Errors and warnings found, kept in `diagnostics` or not.
    pub errors: usize,
    pub warnings: usize,
    /// Servers left out because they have errors.
    pub invalid: Vec<InvalidServer>,
}

/// A `<Server>` with errors: it is not usable, and asking for it says why.
#[derive(Debug, Clone)]
pub struct InvalidServer {
    pub name: String,
    pub location: Location,
    /// Its errors (some may not have been kept: see `errors`).
    pub diagnostics: Vec<Diagnostic>,
    pub errors: usize,
}

impl InvalidServer {
    /// Its errors, rendered (at most [`super::diag::PRINT_LIMIT`]).
    pub fn rendered_errors(&self) -> String {
        render_limited(&self.diagnostics, self.errors)
    }
}

impl FileReport {
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    pub fn error_count(&self) -> usize {
        self.errors
    }

    pub fn warning_count(&self) -> usize {
        self.warnings
    }

    /// Every error, rendered (at most [`super::diag::PRINT_LIMIT`], then how many more).
    pub fn rendered_errors(&self) -> String {
        render_limited(
            self.diagnostics.iter().filter(|d| d.is_error()),
            self.errors,
        )
    }

    /// Every diagnostic, rendered (at most [`super::diag::PRINT_LIMIT`], then how many more).
    pub fn rendered(&self) -> String {
        render_limited(&self.diagnostics, self.errors + self.warnings)
    }

    /// Move `servers[index]` to `invalid` with `errors` (positioned diagnostics of this
    /// file), as if the parser had found them.
    pub fn invalidate(&mut self, index: usize, errors: Vec<Diagnostic>) {
        if index >= self.servers.len() {
            return;
        }
        let server = self.servers.remove(index);
        self.errors += errors.len();
        let room = super::diag::KEEP_PER_FILE.saturating_sub(self.diagnostics.len());
        self.diagnostics.extend(errors.iter().take(room).cloned());
        self.invalid.push(InvalidServer {
            name: server.name,
            location: server.location,
            errors: errors.len(),
            diagnostics: errors,
        });
    }
}

/// Parse one file's text. Never panics; all problems become diagnostics.
pub fn parse_source(source: Source) -> FileReport {
    let mut out = Collector::new(&source);
    let mut invalid = Vec::new();
    let servers = match xml::parse(&source.text) {
        Ok(root) => read_servers(&root, &mut out, &mut invalid),
        Err(e) => {
            out.error_hint(
                e.offset,
                "",
                format!("malformed XML: {}", e.message),
                "a .pvsc file is XML: <Servers><Server name=... resource=...>...</Server></Servers>".into(),
            );
            Vec::new()
        }
    };
    let (diagnostics, errors, warnings) = (out.diagnostics, out.errors, out.warnings);
    FileReport {
        source,
        servers,
        diagnostics,
        errors,
        warnings,
        invalid,
    }
}

const SERVER_ATTRS: &[&str] = &["name", "resource", "timeout", "configuration", "owner"];
const SERVER_CHILDREN: &[&str] = &[
    "ManualStartup",
    "CommandStartup",
    "Hints",
    settings::ELEMENT,
];

fn read_servers(
    root: &Element,
    out: &mut Collector<'_>,
    invalid: &mut Vec<InvalidServer>,
) -> Vec<Server> {
    if root.name != "Servers" {
        out.error_hint(
            root.offset,
            &root.name,
            format!("the root element is <{}>, not <Servers>", root.name),
            "a ParaView server file starts with <Servers>".into(),
        );
        return Vec::new();
    }
    let mut servers = Vec::new();
    // The first definition's line of each name: one lookup per server, so linear.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for child in &root.children {
        if child.name != "Server" {
            let hint = did_you_mean(&child.name, ["Server"], |c| format!("<{c}>"));
            out.push(
                super::diag::Severity::Warning,
                child.offset,
                &format!("Servers/{}", child.name),
                format!("ignoring unknown element <{}> in <Servers>", child.name),
                hint,
            );
            continue;
        }
        let first_diagnostic = out.diagnostics.len();
        let errors_before = out.error_count();
        let server = read_server(child, out);
        if let Some(name) = child.attr("name") {
            let line = out.source.line_col(child.offset).0;
            match seen.get(name) {
                Some(first) => out.warning(
                    child.offset,
                    &format!("Servers/Server[{name}]"),
                    format!(
                        "a second server named `{name}` (first on line {first}); the later one wins"
                    ),
                ),
                None => {
                    seen.insert(name.to_string(), line);
                }
            }
            if server.is_none() {
                invalid.push(InvalidServer {
                    name: name.to_string(),
                    location: out.source.locate(child.offset),
                    diagnostics: out.diagnostics[first_diagnostic..]
                        .iter()
                        .filter(|d| d.is_error())
                        .cloned()
                        .collect(),
                    errors: out.error_count() - errors_before,
                });
            }
        }
        if let Some(server) = server {
            servers.push(server);
        }
    }
    servers
}

fn warn_unknown_attrs(el: &Element, known: &[&str], path: &str, out: &mut Collector<'_>) {
    for attr in &el.attrs {
        if !known.contains(&attr.name.as_str()) {
            let hint = did_you_mean(&attr.name, known.iter().copied(), |c| format!("`{c}`"));
            out.push(
                super::diag::Severity::Warning,
                attr.offset,
                &format!("{path}@{}", attr.name),
                format!(
                    "ParaView ignores the unknown attribute `{}` on <{}>",
                    attr.name, el.name
                ),
                hint,
            );
        }
    }
}

fn warn_unknown_child(
    child: &Element,
    parent: &str,
    known: &[&str],
    path: &str,
    out: &mut Collector<'_>,
) {
    let hint = did_you_mean(&child.name, known.iter().copied(), |c| format!("<{c}>"));
    out.push(
        super::diag::Severity::Warning,
        child.offset,
        &format!("{path}/{}", child.name),
        format!(
            "ParaView ignores the unknown element <{}> in <{parent}>",
            child.name
        ),
        hint,
    );
}

fn read_server(el: &Element, out: &mut Collector<'_>) -> Option<Server> {
    let location = out.source.locate(el.offset);
    let Some(name) = el.attr("name") else {
        out.error(
            el.offset,
            "Servers/Server",
            "<Server> has no `name` attribute",
        );
        return None;
    };
    let path = format!("Servers/Server[{name}]");
    warn_unknown_attrs(el, SERVER_ATTRS, &path, out);
    let errors_before = out.error_count();

    let has_pvlaunch = el.child(settings::ELEMENT).is_some();
    // A pvlaunch-only server (just <PVLaunch>) needs no resource: pvlaunch listens for pvserver
    // as ParaView's default reverse resource would.
    let resource_text = match el.attr("resource") {
        Some(r) => r.to_string(),
        None if has_pvlaunch => DEFAULT_PVLAUNCH_RESOURCE.to_string(),
        None => String::new(),
    };
    let resource = match Resource::parse(&resource_text) {
        Ok(r) => {
            let authority = resource_text
                .split_once("//")
                .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
            if let Some((user, _)) = authority.rsplit_once('@') {
                let offset = el.attr_entry("resource").map_or(el.offset, |a| a.offset);
                out.warning(
                    offset,
                    &format!("{path}@resource"),
                    format!(
                        "ParaView ignores the user name `{user}@` in the resource: the host is `{}` (for ssh, use <SSHConfig user> or pvlaunch's login settings)",
                        r.host
                    ),
                );
            }
            Some(r)
        }
        Err(message) => {
            let offset = el.attr_entry("resource").map_or(el.offset, |a| a.offset);
            out.error_hint(
                offset,
                &format!("{path}@resource"),
                format!("bad resource: {message}"),
                "examples: cs://host:11111 (client connects), csrc://localhost:11111 (client listens)".into(),
            );
            None
        }
    };

    let timeout = el.attr_entry("timeout").and_then(|a| {
        match super::number::SERVER_TIMEOUT.parse(&a.value) {
            Ok(t) => Some(t as i64),
            Err(refused) => {
                out.warning_hint(
                    a.offset,
                    &format!("{path}@timeout"),
                    format!("{}; ParaView uses 60", refused.message),
                    refused.hint,
                );
                None
            }
        }
    });

    for child in &el.children {
        if !SERVER_CHILDREN.contains(&child.name.as_str()) {
            warn_unknown_child(child, "Server", SERVER_CHILDREN, &path, out);
        }
    }

    let manual = el.child("ManualStartup");
    let command = el.child("CommandStartup");
    let startup = match (manual, command) {
        (Some(_), Some(c)) => {
            out.warning(
                c.offset,
                &format!("{path}/CommandStartup"),
                "ParaView uses <ManualStartup> when both are present; <CommandStartup> is ignored",
            );
            Some(Startup::Manual)
        }
        (Some(_), None) => Some(Startup::Manual),
        (None, Some(c)) => Some(Startup::Command(Box::new(read_command_startup(
            c,
            &format!("{path}/CommandStartup"),
            out,
        )))),
        // pvlaunch supplies the startup of a server that only has <PVLaunch>: `pvlaunch
        // connect` runs it, and `pvlaunch install-paraview` writes the <CommandStartup>
        // ParaView needs.
        (None, None) if has_pvlaunch => Some(Startup::Command(Box::new(CommandStartup {
            options: None,
            command: None,
        }))),
        (None, None) => {
            out.error_hint(
                el.offset,
                &path,
                format!("server `{name}` has neither <ManualStartup> nor <CommandStartup>"),
                "ParaView cannot connect to it; add <ManualStartup/> or a <CommandStartup>".into(),
            );
            None
        }
    };

    let pvlaunch = match el
        .children
        .iter()
        .filter(|c| c.name == settings::ELEMENT)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one, rest @ ..] => {
            for dup in rest {
                out.error(
                    dup.offset,
                    &format!("{path}/{}", settings::ELEMENT),
                    format!("<{}> appears more than once", settings::ELEMENT),
                );
            }
            settings::parse(one, &format!("{path}/{}", settings::ELEMENT), out)
        }
    };

    let errors_after = out.error_count();
    if errors_after > errors_before {
        return None;
    }
    Some(Server {
        name: name.to_string(),
        resource_text,
        resource: resource?,
        timeout,
        startup: startup?,
        pvlaunch,
        location,
        declared_encoding: None,
    })
}

/// The resource of a server with `<PVLaunch>` and no `resource` attribute.
pub const DEFAULT_PVLAUNCH_RESOURCE: &str = "csrc://localhost:11111";

fn read_command_startup(el: &Element, path: &str, out: &mut Collector<'_>) -> CommandStartup {
    const KNOWN: &[&str] = &["Options", "Command", "SSHCommand"];
    for child in &el.children {
        if !KNOWN.contains(&child.name.as_str()) {
            warn_unknown_child(child, "CommandStartup", KNOWN, path, out);
        }
    }
    let options = el
        .child("Options")
        .map(|o| read_options(o, &format!("{path}/Options"), out));
    let ssh = el.child("SSHCommand");
    let command = match ssh {
        Some(s) if s.child("SSHConfig").is_some() => {
            Some(read_command(s, &format!("{path}/SSHCommand"), true, out))
        }
        Some(s) => {
            out.warning(s.offset, &format!("{path}/SSHCommand"), "<SSHCommand> without <SSHConfig> is not used by ParaView; it looks for <Command> instead");
            el.child("Command")
                .map(|c| read_command(c, &format!("{path}/Command"), false, out))
        }
        None => el
            .child("Command")
            .map(|c| read_command(c, &format!("{path}/Command"), false, out)),
    };
    if command.is_none() {
        out.warning(
            el.offset,
            path,
            "<CommandStartup> has no <Command> or <SSHCommand>: ParaView runs nothing",
        );
    }
    CommandStartup { options, command }
}

/// A number attribute of `<Command>`, read as ParaView reads it ([`Rule::parse_stream`]); a
/// refused value is an error here (pvlaunch acts on these numbers).
///
/// [`Rule::parse_stream`]: super::number::Rule::parse_stream
fn number_attr(
    el: &Element,
    name: &str,
    rule: &super::number::Rule,
    path: &str,
    out: &mut Collector<'_>,
) -> Option<f64> {
    let a = el.attr_entry(name)?;
    match rule.parse_stream(&a.value) {
        Ok((v, note)) => {
            if let Some(note) = note {
                out.warning(a.offset, &format!("{path}@{name}"), note);
            }
            Some(v)
        }
        Err(refused) => {
            out.error_hint(
                a.offset,
                &format!("{path}@{name}"),
                refused.message,
                refused.hint,
            );
            Some(0.0)
        }
    }
}

fn read_command(el: &Element, path: &str, is_ssh: bool, out: &mut Collector<'_>) -> CommandSpec {
    use super::number::{DELAY, PROCESS_WAIT};
    warn_unknown_attrs(el, &["exec", "process_wait", "timeout", "delay"], path, out);
    // ParaView reads `process_wait` and falls back to the older `timeout`.
    let process_wait = match el.attr_entry("process_wait") {
        Some(_) => number_attr(el, "process_wait", &PROCESS_WAIT, path, out),
        None => number_attr(el, "timeout", &PROCESS_WAIT, path, out),
    }
    .unwrap_or(0.0);
    let delay = number_attr(el, "delay", &DELAY, path, out).unwrap_or(0.0);
    let known: &[&str] = if is_ssh {
        &["Arguments", "SSHConfig"]
    } else {
        &["Arguments"]
    };
    for child in &el.children {
        if !known.contains(&child.name.as_str()) {
            warn_unknown_child(child, &el.name, known, path, out);
        }
    }
    let mut arguments = Vec::new();
    if let Some(args) = el.child("Arguments") {
        let args_path = format!("{path}/Arguments");
        warn_unknown_attrs(args, &[], &args_path, out);
        for arg in &args.children {
            if arg.name != "Argument" {
                warn_unknown_child(arg, "Arguments", &["Argument"], &args_path, out);
            }
            // ParaView takes the `value` of any child, whatever its name.
            match arg.attr("value") {
                Some(v) => arguments.push(v.to_string()),
                None => out.warning(
                    arg.offset,
                    &format!("{args_path}/{}", arg.name),
                    "an argument without `value` is skipped",
                ),
            }
        }
    }
    let ssh = is_ssh.then(|| {
        let cfg = el.child("SSHConfig").expect("checked by the caller");
        let cfg_path = format!("{path}/SSHConfig");
        warn_unknown_attrs(cfg, &["user", "port"], &cfg_path, out);
        const CHILDREN: &[&str] = &["SSH", "Terminal", "Askpass", "PortForwarding"];
        for child in &cfg.children {
            if !CHILDREN.contains(&child.name.as_str()) {
                warn_unknown_child(child, "SSHConfig", CHILDREN, &cfg_path, out);
            }
        }
        SshConfig {
            user: cfg.attr("user").map(str::to_string),
            port: cfg.attr("port").map(str::to_string),
            ssh_exec: cfg
                .child("SSH")
                .and_then(|s| s.attr("exec"))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            terminal: cfg
                .child("Terminal")
                .map(|t| t.attr("exec").filter(|s| !s.is_empty()).map(str::to_string)),
            askpass: cfg.child("Askpass").is_some(),
            port_forwarding: cfg
                .child("PortForwarding")
                .map(|p| p.attr("local").map(str::to_string)),
        }
    });
    CommandSpec {
        offset: el.offset,
        exec: el.attr("exec").unwrap_or("").to_string(),
        arguments,
        process_wait,
        delay,
        ssh,
    }
}

fn read_default(el: &Element) -> DefaultValue {
    match el.attr("default") {
        None => DefaultValue::Absent,
        Some("random") => DefaultValue::Random,
        Some(v) => DefaultValue::Value(v.to_string()),
    }
}

fn read_options(el: &Element, path: &str, out: &mut Collector<'_>) -> Vec<OptionItem> {
    let mut items = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "Set" => {
                warn_unknown_attrs(child, &["name", "value"], &format!("{path}/Set"), out);
                if child.attr("name").is_none() {
                    out.warning(
                        child.offset,
                        &format!("{path}/Set"),
                        "<Set> has no `name`: ParaView keeps its value under the empty name, which only `$$` refers to (and does not export it)",
                    );
                }
                items.push(OptionItem::Set {
                    name: child.attr("name").unwrap_or("").to_string(),
                    value: child.attr("value").unwrap_or("").to_string(),
                });
            }
            "Option" => {
                if let Some(def) = read_option(child, path, out) {
                    items.push(OptionItem::Option(def));
                }
            }
            "Switch" => {
                if let Some(sw) = read_switch(child, path, out) {
                    items.push(OptionItem::Switch(sw));
                }
            }
            _ => warn_unknown_child(child, "Options", &["Option", "Set", "Switch"], path, out),
        }
    }
    items
}

const TYPES: &[&str] = &[
    "Range",
    "String",
    "Password",
    "File",
    "Boolean",
    "Enumeration",
];

fn read_option(el: &Element, path: &str, out: &mut Collector<'_>) -> Option<OptionDef> {
    let name = match el.attr("name") {
        Some(name) => name,
        None => {
            out.warning(
                el.offset,
                &format!("{path}/Option"),
                "<Option> has no `name`: ParaView keeps its value under the empty name, which only `$$` refers to (and does not export it)",
            );
            ""
        }
    };
    let path = format!("{path}/Option[{name}]");
    warn_unknown_attrs(el, &["name", "label", "readonly", "save"], &path, out);
    let Some(ty) = el.children.first() else {
        out.warning(
            el.offset,
            &path,
            format!("option `{name}` has no type element; ParaView ignores it"),
        );
        return None;
    };
    for extra in &el.children[1..] {
        out.warning(
            extra.offset,
            &format!("{path}/{}", extra.name),
            format!(
                "ParaView reads only the first child of <Option>; <{}> is ignored",
                extra.name
            ),
        );
    }
    let ty_path = format!("{path}/{}", ty.name);
    let mut default = read_default(ty);
    if default == DefaultValue::Random && ty.name != "Range" {
        out.warning(ty.offset, &ty_path, "default=\"random\" only means random for <Range>; here it is the literal text `random`");
        default = DefaultValue::Value("random".into());
    }
    let kind = match ty.name.as_str() {
        "Range" => {
            warn_unknown_attrs(
                ty,
                &["type", "min", "max", "step", "default"],
                &ty_path,
                out,
            );
            let number = match ty.attr("type").unwrap_or("int") {
                "int" => RangeType::Int,
                other => {
                    if other != "double" {
                        out.warning(ty.attr_entry("type").map_or(ty.offset, |a| a.offset), &ty_path, format!("range type `{other}` is neither int nor double; ParaView treats it as double"));
                    }
                    RangeType::Double
                }
            };
            let min_text = ty.attr("min").unwrap_or("0");
            let max_text = ty.attr("max").unwrap_or("99999999999");
            let (min, max) = spin_box_range(number, min_text, max_text);
            let whole = number == RangeType::Int;
            let not_read = |text: &str| {
                if whole {
                    super::number::qt_variant_to_int(text).is_none()
                } else {
                    super::number::qt_to_double(text).is_none()
                }
            };
            for (attr, own) in [("min", "0"), ("max", if whole { "99" } else { "99.99" })] {
                if let Some(a) = ty.attr_entry(attr)
                    && not_read(&a.value)
                {
                    out.warning(
                        a.offset,
                        &format!("{ty_path}@{attr}"),
                        format!(
                            "`{attr}=\"{}\"` is not {}; ParaView's spin box keeps its own {attr} ({own}), so the range is {} to {}",
                            a.value,
                            if whole { "a whole number" } else { "a number" },
                            min,
                            max
                        ),
                    );
                }
            }
            if whole && ty.attr("max").is_none() {
                out.warning(
                    ty.offset,
                    &ty_path,
                    format!(
                        "an int range without `max`: ParaView's default max 99999999999 does not fit an int and becomes {max}{}",
                        if default == DefaultValue::Random {
                            "; default=\"random\" reads it as 0 and draws between 0 and min"
                        } else {
                            ""
                        }
                    ),
                );
            }
            if let Some(a) = ty.attr_entry("min")
                && let Some(m) = if whole {
                    super::number::qt_variant_to_int(&a.value).map(f64::from)
                } else {
                    super::number::qt_to_double(&a.value)
                }
                && m > max
            {
                out.warning(
                    ty.offset,
                    &ty_path,
                    format!("min {m} is above max {max}; ParaView's range is {max} to {max}"),
                );
            }
            if let DefaultValue::Value(v) = &default
                && not_read(v)
            {
                let offset = ty.attr_entry("default").map_or(ty.offset, |a| a.offset);
                out.warning(
                    offset,
                    &format!("{ty_path}@default"),
                    format!(
                        "default `{v}` is not {}; ParaView starts at 0, or the end of the range nearest to it",
                        if whole { "a whole number" } else { "a number" }
                    ),
                );
            }
            let draw = |text: &str| {
                if whole {
                    super::number::qt_to_int(text).map_or(0.0, f64::from)
                } else {
                    super::number::qt_to_double(text).unwrap_or(0.0)
                }
            };
            OptionKind::Range {
                number,
                min,
                max,
                step: ty.attr("step").unwrap_or("1").to_string(),
                default,
                random_min: draw(min_text),
                random_max: draw(max_text),
            }
        }
        "String" | "Password" | "File" => {
            warn_unknown_attrs(ty, &["default"], &ty_path, out);
            match ty.name.as_str() {
                "String" => OptionKind::String { default },
                "Password" => OptionKind::Password { default },
                _ => OptionKind::File { default },
            }
        }
        "Boolean" => {
            warn_unknown_attrs(ty, &["true", "false", "default"], &ty_path, out);
            OptionKind::Boolean {
                true_value: ty.attr("true").unwrap_or("1").to_string(),
                false_value: ty.attr("false").unwrap_or("0").to_string(),
                default,
            }
        }
        "Enumeration" => {
            warn_unknown_attrs(ty, &["default"], &ty_path, out);
            let mut entries = Vec::new();
            for entry in &ty.children {
                if entry.name != "Entry" {
                    warn_unknown_child(entry, "Enumeration", &["Entry"], &ty_path, out);
                    continue;
                }
                warn_unknown_attrs(entry, &["value", "label"], &format!("{ty_path}/Entry"), out);
                let value = entry.attr("value").unwrap_or("").to_string();
                let label = entry
                    .attr("label")
                    .map_or_else(|| value.clone(), str::to_string);
                entries.push(Entry { value, label });
            }
            if let DefaultValue::Value(d) = &default
                && !entries.iter().any(|e| &e.value == d)
            {
                let offset = ty.attr_entry("default").map_or(ty.offset, |a| a.offset);
                let by_label = entries.iter().find(|e| &e.label == d);
                let hint = match by_label {
                    Some(e) => Some(format!(
                        "`{d}` is a label; ParaView matches defaults against values (here `{}`)",
                        e.value
                    )),
                    None => did_you_mean(d, entries.iter().map(|e| e.value.as_str()), |c| {
                        format!("`{c}`")
                    }),
                };
                out.push(super::diag::Severity::Warning, offset, &format!("{ty_path}@default"), format!("default `{d}` is not one of the entry values; ParaView selects nothing (an empty value)"), hint);
            }
            OptionKind::Enumeration { entries, default }
        }
        other => {
            let hint = did_you_mean(other, TYPES.iter().copied(), |c| format!("<{c}>"));
            out.push(
                super::diag::Severity::Warning,
                ty.offset,
                &ty_path,
                format!("unknown option type <{other}>; ParaView ignores option `{name}`"),
                hint,
            );
            return None;
        }
    };
    Some(OptionDef {
        name: name.to_string(),
        label: el.attr("label").unwrap_or(name).to_string(),
        readonly: el.attr("readonly") == Some("true"),
        save: el.attr("save").unwrap_or("true") == "true",
        kind,
        location: out.source.locate(el.offset),
    })
}

/// A Range value as Qt reads it when it is stored in the spin box: for int ranges through
/// `QVariant` (a `long long`, cut to 32 bits; `10.5` is not read), for double ranges
/// `toDouble()`. `None`: the spin box keeps the value it had.
pub fn parse_bound(text: &str, number: RangeType) -> Option<f64> {
    match number {
        RangeType::Int => super::number::qt_variant_to_int(text).map(f64::from),
        RangeType::Double => super::number::qt_to_double(text),
    }
}

/// Two decimals, as a `QDoubleSpinBox` keeps them.
pub fn round_decimals(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The range a `QSpinBox` (0 to 99) or `QDoubleSpinBox` (0 to 99.99, two decimals) ends up
/// with after ParaView sets `minimum`, then `maximum`, from the texts: a text Qt cannot read
/// leaves the bound as it was, a minimum above the maximum raises the maximum, a maximum below
/// the minimum lowers the minimum (measured with ParaView 5.11).
pub fn spin_box_range(number: RangeType, min: &str, max: &str) -> (f64, f64) {
    let (mut lo, mut hi): (f64, f64) = match number {
        RangeType::Int => (0.0, 99.0),
        RangeType::Double => (0.0, 99.99),
    };
    let read = |t: &str| {
        parse_bound(t, number).map(|v| match number {
            RangeType::Int => v,
            RangeType::Double => round_decimals(v),
        })
    };
    if let Some(m) = read(min) {
        lo = m;
        hi = hi.max(m);
    }
    if let Some(m) = read(max) {
        hi = m;
        lo = lo.min(m);
    }
    (lo, hi)
}

fn read_switch(el: &Element, path: &str, out: &mut Collector<'_>) -> Option<SwitchDef> {
    let Some(name) = el.attr("name") else {
        out.warning(
            el.offset,
            &format!("{path}/Switch"),
            "<Switch> has no `name`; ParaView ignores it",
        );
        return None;
    };
    let path = format!("{path}/Switch[{name}]");
    let mut cases = Vec::new();
    for case in &el.children {
        if case.name != "Case" {
            warn_unknown_child(case, "Switch", &["Case"], &path, out);
            continue;
        }
        let mut sets = Vec::new();
        for set in &case.children {
            if set.name != "Set" {
                warn_unknown_child(set, "Case", &["Set"], &format!("{path}/Case"), out);
                continue;
            }
            sets.push((
                set.attr("name").unwrap_or("").to_string(),
                set.attr("value").unwrap_or("").to_string(),
            ));
        }
        cases.push(Case {
            value: case.attr("value").map(str::to_string),
            sets,
        });
    }
    Some(SwitchDef {
        name: name.to_string(),
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileReport {
        parse_source(Source::new("t.pvsc", text.to_string()))
    }

    #[test]
    fn a_server_with_only_pvlaunch_is_a_valid_profile() {
        let r = parse(
            r#"<Servers><Server name="site"><PVLaunch version="1"><Login host="login"/></PVLaunch></Server></Servers>"#,
        );
        assert_eq!(r.errors, 0, "{}", r.rendered());
        let s = &r.servers[0];
        assert_eq!(s.resource_text, DEFAULT_PVLAUNCH_RESOURCE);
        assert!(s.pvlaunch.is_some());
        assert_eq!(s.startup.kind(), "command");
        assert!(s.command().is_none());
    }

    #[test]
    fn a_server_with_neither_startup_nor_pvlaunch_is_still_refused() {
        let r = parse(r#"<Servers><Server name="x" resource="cs://h:1"/></Servers>"#);
        assert_eq!(r.errors, 1);
        assert!(
            r.rendered()
                .contains("has neither <ManualStartup> nor <CommandStartup>")
        );
    }
}
