//! Where profiles come from, in order; later definitions of a name win (as in ParaView).
//!
//! 1. ParaView's own user file: `~/.config/ParaView/servers.pvsc`
//!    (`%APPDATA%\ParaView\servers.pvsc` on Windows);
//! 2. every `*.pvsc` in pvlaunch's config folder (e.g. `~/.config/pvlaunch/`);
//! 3. the files in `PVLAUNCH_PROFILES` (a path list, `:`-separated; `;` on Windows);
//! 4. each `-f/--profiles FILE`, in order.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Which source a file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    ParaView,
    ConfigDir,
    EnvVar,
    CommandLine,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::ParaView => "ParaView's servers.pvsc",
            Origin::ConfigDir => "pvlaunch config folder",
            Origin::EnvVar => "PVLAUNCH_PROFILES",
            Origin::CommandLine => "-f",
        }
    }
}

/// A file to read. Optional files (the implicit locations) may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub origin: Origin,
    /// A missing required file is an error; a missing optional one is skipped.
    pub required: bool,
}

/// What discovery looks at, so that tests can point it anywhere.
#[derive(Debug, Clone, Default)]
pub struct Places {
    pub paraview_file: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub env_profiles: Option<OsString>,
    pub cli_files: Vec<PathBuf>,
}

impl Places {
    /// The real places on this machine.
    pub fn from_system(cli_files: Vec<PathBuf>) -> Places {
        Places {
            paraview_file: paraview_user_file(),
            config_dir: directories::ProjectDirs::from("", "", "pvlaunch")
                .map(|d| d.config_dir().to_path_buf()),
            env_profiles: std::env::var_os("PVLAUNCH_PROFILES"),
            cli_files,
        }
    }

    /// Every candidate file, in order of increasing precedence.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(p) = &self.paraview_file {
            out.push(Candidate {
                path: p.clone(),
                origin: Origin::ParaView,
                required: false,
            });
        }
        if let Some(dir) = &self.config_dir {
            out.extend(pvsc_files_in(dir).into_iter().map(|path| Candidate {
                path,
                origin: Origin::ConfigDir,
                required: false,
            }));
        }
        if let Some(list) = &self.env_profiles {
            for path in std::env::split_paths(list).filter(|p| !p.as_os_str().is_empty()) {
                out.push(Candidate {
                    path,
                    origin: Origin::EnvVar,
                    required: true,
                });
            }
        }
        for path in &self.cli_files {
            out.push(Candidate {
                path: path.clone(),
                origin: Origin::CommandLine,
                required: true,
            });
        }
        out
    }
}

/// ParaView's per-user server file.
pub fn paraview_user_file() -> Option<PathBuf> {
    if cfg!(windows) {
        std::env::var_os("APPDATA").map(|d| PathBuf::from(d).join("ParaView").join("servers.pvsc"))
    } else {
        directories::BaseDirs::new().map(|b| {
            b.home_dir()
                .join(".config")
                .join("ParaView")
                .join("servers.pvsc")
        })
    }
}

fn pvsc_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pvsc") && p.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_paraview_config_env_cli() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.pvsc"), "").unwrap();
        std::fs::write(dir.path().join("a.pvsc"), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let env = std::env::join_paths(["/e1.pvsc", "/e2.pvsc"]).unwrap();
        let places = Places {
            paraview_file: Some("/home/u/.config/ParaView/servers.pvsc".into()),
            config_dir: Some(dir.path().to_path_buf()),
            env_profiles: Some(env),
            cli_files: vec!["/c.pvsc".into()],
        };
        let got: Vec<(String, Origin, bool)> = places
            .candidates()
            .into_iter()
            .map(|c| {
                (
                    c.path.file_name().unwrap().to_string_lossy().into_owned(),
                    c.origin,
                    c.required,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("servers.pvsc".into(), Origin::ParaView, false),
                ("a.pvsc".into(), Origin::ConfigDir, false),
                ("b.pvsc".into(), Origin::ConfigDir, false),
                ("e1.pvsc".into(), Origin::EnvVar, true),
                ("e2.pvsc".into(), Origin::EnvVar, true),
                ("c.pvsc".into(), Origin::CommandLine, true),
            ]
        );
    }
}
