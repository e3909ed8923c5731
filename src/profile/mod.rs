//! Server profiles: ParaView's `.pvsc` format plus pvlaunch's `<PVLaunch>` settings.
//!
//! Data flows one way: text -> [`xml`] tree -> [`parse`] (validated [`model::Server`]s and
//! diagnostics) -> [`resolve`] (options, variables, argv). [`discover`] says which files to
//! read; [`Catalog`] merges them, later names winning.

pub mod command;
pub mod diag;
pub mod discover;
pub mod model;
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

/// Read one file from disk into a report (a read failure is a diagnostic too).
pub fn read_file(path: &std::path::Path) -> Result<FileReport, std::io::Error> {
    let bytes = std::fs::read(path)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let source = Source::new(path, lossy);
            let mut out = diag::Collector::new(&source);
            out.error(valid, "", "the file is not valid UTF-8");
            let diagnostics = out.diagnostics;
            return Ok(FileReport {
                source,
                servers: Vec::new(),
                diagnostics,
            });
        }
    };
    Ok(parse::parse_source(Source::new(path, text)))
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
            for server in &report.servers {
                let entry = Entry {
                    server: server.clone(),
                    origin: c.origin,
                    overrides: Vec::new(),
                };
                match index.get(&server.name) {
                    Some(&i) => {
                        let old = std::mem::replace(&mut catalog.entries[i], entry);
                        let mut overrides = old.overrides;
                        overrides.push(old.server.location);
                        catalog.entries[i].overrides = overrides;
                    }
                    None => {
                        index.insert(server.name.clone(), catalog.entries.len());
                        catalog.entries.push(entry);
                    }
                }
            }
            catalog.reports.push(report);
        }
        catalog
    }

    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.reports.iter().flat_map(|r| r.diagnostics.iter())
    }

    pub fn has_errors(&self) -> bool {
        !self.unreadable.is_empty() || self.diagnostics().any(Diagnostic::is_error)
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
                    self.entries.iter().map(|e| e.server.name.as_str()),
                    |c| format!("`{c}`"),
                )
                .or_else(|| {
                    if std::env::var_os("PV_CONNECTION_URI").is_some() {
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

/// The context ParaView would see on this workstation.
pub fn system_context() -> Context {
    let environment: BTreeMap<String, String> = std::env::vars().collect();
    let version = environment
        .get("PVLAUNCH_PARAVIEW_VERSION")
        .or_else(|| environment.get("PV_VERSION_FULL"))
        .and_then(|v| Version::parse(v))
        .unwrap_or_else(|| Version::parse(DEFAULT_PARAVIEW_VERSION).expect("valid default"));
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
