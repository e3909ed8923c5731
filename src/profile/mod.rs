//! Server profiles: ParaView's `.pvsc` format plus pvlaunch's `<PVLaunch>` settings.
//!
//! Data flows one way: text -> [`xml`] tree -> [`parse`] (validated [`model::Server`]s and
//! diagnostics) -> [`resolve`] (options, variables, argv). [`discover`] says which files to
//! read; [`Catalog`] merges them, later names winning.

pub mod command;
pub mod diag;
pub mod discover;
pub mod model;
pub mod number;
pub mod parse;
pub mod resolve;
pub mod resource;
pub mod settings;
pub mod xml;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use self::diag::{Diagnostic, Location, Source};
use self::discover::Candidate;
use self::model::Server;
use self::parse::FileReport;
use self::resolve::{Context, Version};

/// The ParaView version assumed for `PV_VERSION*` when nothing says otherwise.
pub const DEFAULT_PARAVIEW_VERSION: &str = "6.0.1";

/// Read one file from disk into a report (a read failure is a diagnostic too). The text is
/// decoded as the file says: a byte-order mark, else the XML declaration's `encoding` (the
/// ones ParaView's expat knows: UTF-8, UTF-16, ISO-8859-1, US-ASCII), else UTF-8.
pub fn read_file(path: &std::path::Path) -> Result<FileReport, std::io::Error> {
    let bytes = std::fs::read(path)?;
    let (text, encoding) = match decode(&bytes) {
        Ok(decoded) => decoded,
        Err((offset, message)) => {
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            let offset = lossy
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|&i| i <= offset)
                .last()
                .unwrap_or(0);
            let source = Source::new(path, lossy);
            let mut out = diag::Collector::new(&source);
            out.error(offset, "", message);
            let (diagnostics, errors, warnings) = (out.diagnostics, out.errors, out.warnings);
            return Ok(FileReport {
                source,
                servers: Vec::new(),
                diagnostics,
                errors,
                warnings,
                invalid: Vec::new(),
            });
        }
    };
    let mut report = parse::parse_source(Source::new(path, text));
    if encoding.is_some() && !report.source.text.is_ascii() {
        for server in &mut report.servers {
            server.declared_encoding = encoding.clone();
        }
    }
    Ok(report)
}

/// The file's text, and the encoding it declares when that is not UTF-8; or the byte offset
/// of the problem and a message.
pub fn decode(bytes: &[u8]) -> Result<(String, Option<String>), (usize, String)> {
    let utf16 = |rest: &[u8], little: bool| -> Result<String, (usize, String)> {
        if !rest.len().is_multiple_of(2) {
            return Err((
                rest.len(),
                "the file is UTF-16 but has an odd number of bytes".into(),
            ));
        }
        let units = rest.chunks(2).map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map_err(|_| (0, "the file is not valid UTF-16".into()))
    };
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return utf8(rest).map(|t| (t, None));
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, true).map(|t| (t, Some("UTF-16".into())));
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, false).map(|t| (t, Some("UTF-16".into())));
    }
    let label = declared_encoding(bytes);
    match label.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("UTF-8") | Some("UTF8") => utf8(bytes).map(|t| (t, None)),
        Some("ISO-8859-1") | Some("LATIN1") | Some("ISO_8859-1") | Some("LATIN-1") => {
            Ok((bytes.iter().map(|&b| char::from(b)).collect(), label))
        }
        Some("US-ASCII") | Some("ASCII") => match bytes.iter().position(|b| !b.is_ascii()) {
            Some(at) => Err((
                at,
                "the file declares US-ASCII but has a byte above 127".into(),
            )),
            None => Ok((String::from_utf8_lossy(bytes).into_owned(), None)),
        },
        Some(_) => Err((
            0,
            format!(
                "the file declares encoding `{}`, which ParaView's XML parser (expat) does not read: use UTF-8 (or ISO-8859-1, UTF-16, US-ASCII)",
                label.unwrap_or_default()
            ),
        )),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, (usize, String)> {
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        (
            e.utf8_error().valid_up_to(),
            "the file is not valid UTF-8 (declare its encoding, e.g. <?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>)".to_string(),
        )
    })
}

/// The `encoding` of a leading `<?xml ...?>` declaration, read from the bytes.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = bytes.strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = rest[1..].split(quote).next()?;
    Some(value.to_string())
}

/// One visible profile and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub server: Server,
    pub origin: discover::Origin,
    /// Earlier definitions of the same name that this one replaces.
    pub overrides: Vec<Location>,
}

/// All profiles from all sources.
#[derive(Debug, Default)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub reports: Vec<FileReport>,
    /// Files that could not be read: path, origin and the reason.
    pub unreadable: Vec<(PathBuf, discover::Origin, String)>,
    /// The names whose last definition has errors, with that definition.
    pub invalid: BTreeMap<String, InvalidEntry>,
    /// The last valid definition of each name in ParaView's own `servers.pvsc`. ParaView
    /// reads that file after `--servers-file`, so its definition replaces the other one
    /// (measured with 5.11); pvlaunch lets `-f` win instead. See [`Catalog::paraview_definition`].
    pub paraview_definitions: BTreeMap<String, Location>,
}

/// Which definition ParaView would use for a name pvlaunch shows.
#[derive(Debug, Clone, Serialize)]
pub struct ParaViewDefinition {
    pub file: String,
    pub line: usize,
    pub origin: discover::Origin,
    /// The one pvlaunch uses.
    pub same: bool,
}

/// A profile whose last definition has errors: asking for it shows them.
#[derive(Debug, Clone)]
pub struct InvalidEntry {
    pub server: parse::InvalidServer,
    pub origin: discover::Origin,
}

/// No usable profile of that name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Unknown(#[from] UnknownProfile),
    /// The profile exists but its definition has errors.
    #[error("profile `{}` is invalid ({} error(s) in {})", .0.server.name, .0.server.errors, .0.server.location)]
    Invalid(Box<InvalidEntry>),
}

/// No profile of that name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no profile named `{name}`{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct UnknownProfile {
    pub name: String,
    pub hint: Option<String>,
}

impl Catalog {
    /// Read every candidate; missing optional files are skipped silently.
    pub fn load(candidates: &[Candidate]) -> Catalog {
        let mut catalog = Catalog::default();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for c in candidates {
            let report = match read_file(&c.path) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !c.required => continue,
                Err(e) => {
                    catalog
                        .unreadable
                        .push((c.path.clone(), c.origin, e.to_string()));
                    continue;
                }
            };
            catalog.add(report, c.origin, &mut index);
        }
        catalog
    }

    /// Add one file's servers, valid and invalid, in document order: a later definition of a
    /// name replaces an earlier one, and if it has errors the name is invalid.
    fn add(
        &mut self,
        report: FileReport,
        origin: discover::Origin,
        index: &mut BTreeMap<String, usize>,
    ) {
        enum Def<'a> {
            Valid(&'a Server),
            Invalid(&'a parse::InvalidServer),
        }
        let mut defs: Vec<(usize, Def<'_>)> = report
            .servers
            .iter()
            .map(|s| (s.location.line, Def::Valid(s)))
            .chain(
                report
                    .invalid
                    .iter()
                    .map(|s| (s.location.line, Def::Invalid(s))),
            )
            .collect();
        defs.sort_by_key(|(line, _)| *line);
        for (_, def) in defs {
            match def {
                Def::Invalid(s) => {
                    self.invalid.insert(
                        s.name.clone(),
                        InvalidEntry {
                            server: s.clone(),
                            origin,
                        },
                    );
                }
                Def::Valid(server) => {
                    self.invalid.remove(&server.name);
                    if origin == discover::Origin::ParaView {
                        self.paraview_definitions
                            .insert(server.name.clone(), server.location.clone());
                    }
                    let entry = Entry {
                        server: server.clone(),
                        origin,
                        overrides: Vec::new(),
                    };
                    match index.get(&server.name) {
                        Some(&i) => {
                            let old = std::mem::replace(&mut self.entries[i], entry);
                            let mut overrides = old.overrides;
                            overrides.push(old.server.location);
                            self.entries[i].overrides = overrides;
                        }
                        None => {
                            index.insert(server.name.clone(), self.entries.len());
                            self.entries.push(entry);
                        }
                    }
                }
            }
        }
        self.reports.push(report);
    }

    /// The definition ParaView would use for `entry` when given its file with
    /// `--servers-file`: its own `servers.pvsc`'s, when that file defines the name too.
    pub fn paraview_definition(&self, entry: &Entry) -> ParaViewDefinition {
        match self.paraview_definitions.get(&entry.server.name) {
            Some(loc) if *loc != entry.server.location => ParaViewDefinition {
                file: diag::display_path(&loc.file),
                line: loc.line,
                origin: discover::Origin::ParaView,
                same: false,
            },
            _ => ParaViewDefinition {
                file: diag::display_path(&entry.server.location.file),
                line: entry.server.location.line,
                origin: entry.origin,
                same: true,
            },
        }
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.reports.iter().flat_map(|r| r.diagnostics.iter())
    }

    pub fn has_errors(&self) -> bool {
        !self.unreadable.is_empty() || self.reports.iter().any(FileReport::has_errors)
    }

    /// The profile called `name`; an error if its last definition has errors, or if there is
    /// none (then with a suggestion of near names).
    pub fn lookup(&self, name: &str) -> Result<&Entry, LookupError> {
        if let Some(bad) = self.invalid.get(name) {
            return Err(LookupError::Invalid(Box::new(bad.clone())));
        }
        Ok(self.get(name)?)
    }

    /// The profile called `name`, or an error that suggests near names.
    pub fn get(&self, name: &str) -> Result<&Entry, UnknownProfile> {
        self.entries
            .iter()
            .find(|e| e.server.name == name)
            .ok_or_else(|| UnknownProfile {
                name: name.to_string(),
                hint: crate::suggest::did_you_mean(
                    name,
                    self.entries
                        .iter()
                        .map(|e| e.server.name.as_str())
                        .chain(self.invalid.keys().map(String::as_str)),
                    |c| format!("`{c}`"),
                )
                .or_else(|| {
                    let unusable = self
                        .reports
                        .iter()
                        .find(|r| r.servers.is_empty() && r.invalid.is_empty() && r.has_errors());
                    if let Some(r) = unusable {
                        Some(format!(
                            "{} has errors and no server could be read from it: see `pvlaunch validate {}`",
                            diag::display_path(&r.source.path),
                            diag::display_path(&r.source.path)
                        ))
                    } else if std::env::var_os("PV_CONNECTION_URI").is_some() {
                        Some("run from ParaView: put the .pvsc file in pvlaunch's config folder (~/.config/pvlaunch/), or import it with ParaView's Connect > Load Servers".into())
                    } else if self.entries.is_empty() {
                        Some("no profiles found: pass -f FILE or see `pvlaunch list`".into())
                    } else {
                        Some("see `pvlaunch list`".into())
                    }
                }),
            })
    }
}

/// How long `paraview --version` may take before the built-in version is used.
pub const VERSION_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The ParaView version for `PV_VERSION*`, and where it came from. In order: ParaView's own
/// `PV_VERSION_*` variables (ParaView runs pvlaunch and exports them), `PVLAUNCH_PARAVIEW_VERSION`,
/// the local client's `--version` when `probe` is set, else the built-in
/// [`DEFAULT_PARAVIEW_VERSION`]. Pure apart from the probe, which [`probe_client_version`] does.
pub fn paraview_version(
    environment: &BTreeMap<String, String>,
    probe: impl FnOnce() -> Result<(Version, String), String>,
    should_probe: bool,
) -> (Version, resolve::VersionOrigin) {
    use resolve::VersionOrigin;
    let from_parts = || {
        let major = environment.get("PV_VERSION_MAJOR")?;
        let minor = environment.get("PV_VERSION_MINOR")?;
        let patch = environment
            .get("PV_VERSION_PATCH")
            .map_or("0", String::as_str);
        Version::parse(&format!(
            "{}.{}.{}",
            major.trim(),
            minor.trim(),
            patch.trim()
        ))
    };
    if let Some(v) = environment
        .get("PV_VERSION_FULL")
        .and_then(|v| Version::parse(v))
        .or_else(from_parts)
    {
        return (v, VersionOrigin::Environment);
    }
    if let Some(v) = environment
        .get("PVLAUNCH_PARAVIEW_VERSION")
        .and_then(|v| Version::parse(v))
    {
        return (v, VersionOrigin::Override);
    }
    let default = || Version::parse(DEFAULT_PARAVIEW_VERSION).expect("valid default");
    if !should_probe {
        return (
            default(),
            VersionOrigin::BuiltIn {
                reason: "the profile does not use PV_VERSION*".into(),
            },
        );
    }
    match probe() {
        Ok((v, program)) => (v, VersionOrigin::Client { program }),
        Err(reason) => (default(), VersionOrigin::BuiltIn { reason }),
    }
}

/// Ask the local client for its version: `pvpython --version` (it needs no display), else
/// `paraview --version`; each may take [`VERSION_PROBE_TIMEOUT`]. The answer of the first
/// call is kept for the rest of the process.
pub fn probe_client_version() -> Result<(Version, String), String> {
    static ANSWER: std::sync::OnceLock<Result<(Version, String), String>> =
        std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let mut reasons = Vec::new();
            for name in ["pvpython", "paraview"] {
                let Ok(path) = which::which(name) else {
                    reasons.push(format!("no {name} on PATH"));
                    continue;
                };
                match run_version(&path, VERSION_PROBE_TIMEOUT) {
                    Ok(v) => return Ok((v, path.display().to_string())),
                    Err(e) => reasons.push(format!("{name}: {e}")),
                }
            }
            Err(reasons.join("; "))
        })
        .clone()
}

/// Run `program --version` and read `... version X.Y.Z` from its output, within `timeout`.
pub fn run_version(
    program: &std::path::Path,
    timeout: std::time::Duration,
) -> Result<Version, String> {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(64 * 1024).read_to_end(&mut out);
        let _ = tx.send(out);
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {} s", timeout.as_secs()));
        }
    };
    // The output is complete; the program should be gone by now.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    parse_version_output(&String::from_utf8_lossy(&out))
        .ok_or_else(|| "its --version output names no version".to_string())
}

/// `paraview version 5.11.0` (ParaView 5.x and 6.x, Debian's too) -> 5.11.0.
pub fn parse_version_output(text: &str) -> Option<Version> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("version") {
            return words.next().and_then(Version::parse);
        }
    }
    None
}

/// The context ParaView would see on this workstation. `probe_version`: ask the local client
/// for its version when the environment does not say (see [`paraview_version`]).
pub fn system_context(probe_version: bool) -> Context {
    let environment: BTreeMap<String, String> = std::env::vars().collect();
    let (version, version_origin) =
        paraview_version(&environment, probe_client_version, probe_version);
    let paraview = which::which("paraview").ok();
    let application_dir = environment
        .get("PV_APPLICATION_DIR")
        .cloned()
        .unwrap_or_else(|| {
            paraview
                .as_ref()
                .and_then(|p| p.parent())
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        });
    Context {
        client_host: hostname(),
        version,
        version_origin,
        platform: platform().into(),
        application_dir,
        application_name: environment
            .get("PV_APPLICATION_NAME")
            .cloned()
            .unwrap_or_else(|| "ParaView".into()),
        environment,
        noise: Box::new(rand::random::<f64>),
        find_program: Box::new(|name| which::which(name).ok().map(|p| p.display().to_string())),
    }
}

/// Whether a server refers to `PV_VERSION*` anywhere (then its version is worth probing).
pub fn uses_version(server: &Server) -> bool {
    serde_json::to_string(server).map_or(true, |j| j.contains("PV_VERSION"))
}

fn platform() -> &'static str {
    if cfg!(windows) {
        "Windows"
    } else if cfg!(target_os = "macos") {
        "Apple"
    } else if cfg!(target_os = "linux") {
        "Linux"
    } else if cfg!(unix) {
        "Unix"
    } else {
        "Unknown"
    }
}

/// This machine's host name (ParaView's `QHostInfo::localHostName()`).
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_else(|_| "localhost".into())
}
