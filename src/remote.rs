//! What pvlaunch writes on the cluster, and how: the session's folders in the shared home
//! (`~/.cache/pvlaunch`, its `bin/` and `keys/`), the session key, a copy of this pvlaunch,
//! and the session's run folder for Unix sockets on the login node. Everything goes through
//! the session's master ([`Master::exec`]) as POSIX sh (values quoted with [`crate::quote`]);
//! the scripts are fixed, their values are assigned in front of them.
//!
//! The rules:
//! - `~/.cache/pvlaunch`, `bin/` and `keys/` are created with mode 0700 (and set to 0700 when
//!   they are the user's); one that is a symbolic link, not a folder, not the user's, or still
//!   writable by the group or others is refused, naming the path ([`prepare_home`]).
//! - A key file is created exclusively, mode 0600, with the secret on stdin, never in an argv
//!   ([`RemoteHome::write_key`]).
//! - A copy of pvlaunch is uploaded to a unique temporary name in `bin/`, checked by SHA-256,
//!   then renamed onto its final name (atomic): sessions that copy at the same time all end
//!   with an intact file. An earlier copy is used only when it is a regular file of the user's,
//!   not writable by others, with the right checksum; a pvlaunch on PATH only when it is this
//!   version ([`RemoteHome::place_binary`]).
//! - The run folder is `mktemp -d` (0700) under `$TMPDIR` or `/tmp`, short enough for
//!   `RUN/fwd.sock` to fit a Unix socket's path ([`RemoteHome::make_run_dir`]).
//!
//! Output lines the scripts mean for pvlaunch start with `pvlaunch:` (a login shell's start-up
//! files may print before them).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hop::Secret;
use crate::outcome::Failure;
use crate::quote;
use crate::ssh::{self, Master, SshError};

/// The session's folder, relative to the home directory (where jobs are submitted from).
pub const CACHE_DIR: &str = crate::plan::REMOTE_DIR;
/// The socket a session puts in its run folder.
pub const RUN_SOCKET: &str = "fwd.sock";
/// The longest socket path pvlaunch makes: `sun_path` holds 108 bytes on Linux and 104 on
/// the BSDs and macOS; a margin under both.
pub const SOCKET_PATH_MAX: usize = 100;
/// How long copying pvlaunch to the login node may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Why something could not be written or found on the login node.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The command through the master failed or timed out, or the master is gone.
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A value with a NUL byte.
    #[error(transparent)]
    Nul(#[from] quote::NulError),
    /// `$HOME` on the login node cannot be used.
    #[error("the home directory on the login node cannot be used: {0}")]
    Home(String),
    /// A folder (or file) pvlaunch would use is not safe to use.
    #[error("refusing {path} on the login node: it {why}")]
    Unsafe {
        /// The absolute path.
        path: String,
        /// What is wrong with it, after "it".
        why: String,
    },
    /// A step failed on the login node.
    #[error("{what} on the login node failed{}", detail_text(.detail))]
    Failed {
        /// The step.
        what: String,
        /// What the login node said.
        detail: String,
    },
    /// The session's key file is already there (tags are drawn fresh: something is wrong).
    #[error("the session key {0} already exists on the login node")]
    KeyExists(String),
    /// The tag is not a session tag.
    #[error("invalid session tag {0:?} (expected letters and digits)")]
    InvalidTag(String),
    /// The run folder's path leaves no room for its socket.
    #[error(
        "the run folder {path} on the login node is too long for a Unix socket ({len} bytes; `/{RUN_SOCKET}` must fit in {SOCKET_PATH_MAX})"
    )]
    RunDirTooLong {
        /// The folder (already removed again).
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// No usable pvlaunch on the login node, and this build does not run there.
    #[error(
        "{}, and this build ({local}) does not run there ({remote})",
        found.as_deref().unwrap_or("pvlaunch is not installed on the login node")
    )]
    Foreign {
        /// This machine's `uname -sm`.
        local: String,
        /// The login node's.
        remote: String,
        /// What was found on PATH instead (another version), in words.
        found: Option<String>,
    },
    /// The copy did not arrive intact (quota, a full disk).
    #[error("copying pvlaunch to the login node failed: {0}")]
    Upload(String),
    /// This pvlaunch could not be read.
    #[error("reading this pvlaunch to copy it: {0}")]
    ReadSelf(std::io::Error),
}

fn detail_text(detail: &str) -> String {
    let t = crate::process::tail(detail, 3);
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.join(" / "))
    }
}

impl From<RemoteError> for Failure {
    /// A pvlaunch that cannot run on the cluster (or cannot be copied there) is
    /// [`Failure::NoRelay`] (the `auto` recipe falls back on it); an unsafe folder or a run
    /// folder that is too long is the site's; ssh's own failures stay ssh's.
    fn from(e: RemoteError) -> Failure {
        let message = e.to_string();
        match e {
            RemoteError::Ssh(_) | RemoteError::Failed { .. } => Failure::ssh(message),
            RemoteError::Foreign { .. } => Failure::NoRelay {
                message,
                hint: Some("install pvlaunch on the login node (cargo install --path .), or name it: <Connection relay-program=\"/path/to/pvlaunch\"/>".into()),
            },
            RemoteError::Upload(_) => Failure::NoRelay {
                message,
                hint: Some("check the quota of your home directory on the login node".into()),
            },
            RemoteError::Unsafe { path, .. } => Failure::site(
                message,
                format!("make it a folder of yours that only you can write (chmod 700 {path}), or remove it"),
            ),
            RemoteError::Home(_) => Failure::site(message, "check $HOME on the login node"),
            RemoteError::RunDirTooLong { .. } => Failure::site(
                message,
                "set TMPDIR on the login node to a shorter folder (or unset it: /tmp is used)",
            ),
            RemoteError::Nul(_)
            | RemoteError::KeyExists(_)
            | RemoteError::InvalidTag(_)
            | RemoteError::ReadSelf(_) => Failure::internal(message),
        }
    }
}

/// The session's folder in the user's home on the login node, checked by [`prepare_home`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHome {
    /// `$HOME` on the login node (absolute).
    pub home: String,
    /// `$HOME/.cache/pvlaunch` (absolute).
    pub dir: String,
}

/// Creates and checks the three folders (`$HOME/.cache/pvlaunch` is computed here, where
/// `$HOME` is known), then prints `pvlaunch:ok:HOME`.
const PREPARE_HOME: &str = r#"umask 077
nl=$(printf '\nx'); nl=${nl%x}
h=$HOME
case $h in
  *"$nl"*) echo "pvlaunch:home:newline"; exit 0 ;;
  /*) ;;
  *) echo "pvlaunch:home:relative"; exit 0 ;;
esac
d=${h%/}/.cache/pvlaunch
for p in "$d" "$d/bin" "$d/keys"; do
  if [ ! -e "$p" ] && [ ! -L "$p" ]; then
    e=$(mkdir -p -m 700 -- "$p" 2>&1) || { printf 'pvlaunch:fail:%s\n' "$e"; exit 0; }
  fi
  if [ -L "$p" ]; then printf 'pvlaunch:unsafe:symlink %s\n' "$p"; exit 0; fi
  if [ ! -d "$p" ]; then printf 'pvlaunch:unsafe:notdir %s\n' "$p"; exit 0; fi
  if [ ! -O "$p" ]; then printf 'pvlaunch:unsafe:notowned %s\n' "$p"; exit 0; fi
  chmod 700 -- "$p" 2> /dev/null
  if w=$(find "$p" -prune \( -perm -020 -o -perm -002 \) -print 2> /dev/null); then
    [ -z "$w" ] || { printf 'pvlaunch:unsafe:writable %s\n' "$p"; exit 0; }
  else
    printf 'pvlaunch:unsafe:unchecked %s\n' "$p"; exit 0
  fi
done
# Keys a guard could not remove (it was killed): a key is read only when its session starts.
find "$d/keys" -type f -name '*.key' -mtime +0 -exec rm -f -- {} + 2> /dev/null
printf 'pvlaunch:ok:%s\n' "$h""#;

/// The command that prepares the home folders ([`prepare_home`]).
pub fn prepare_home_command() -> &'static str {
    PREPARE_HOME
}

/// The last line of `stdout` that starts with `pvlaunch:KEY:`, without that prefix.
fn marked<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("pvlaunch:{key}:");
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// Whether `stdout` has a line `pvlaunch:KEY` (no value).
fn flagged(stdout: &str, key: &str) -> bool {
    let line = format!("pvlaunch:{key}");
    stdout.lines().any(|l| l == line)
}

/// Read what [`PREPARE_HOME`] printed.
pub fn parse_home(out: &ssh::Output) -> Result<RemoteHome, RemoteError> {
    let stdout = &out.stdout;
    if let Some(home) = marked(stdout, "ok") {
        let dir = format!("{}/{CACHE_DIR}", home.trim_end_matches('/'));
        return Ok(RemoteHome {
            home: home.to_owned(),
            dir,
        });
    }
    if let Some(why) = marked(stdout, "home") {
        return Err(RemoteError::Home(match why {
            "newline" => "$HOME holds a newline".into(),
            _ => "$HOME is not an absolute path".into(),
        }));
    }
    if let Some(rest) = marked(stdout, "unsafe") {
        let (code, path) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(RemoteError::Unsafe {
            path: path.to_owned(),
            why: unsafe_why(code).into(),
        });
    }
    let detail = marked(stdout, "fail").unwrap_or(&out.stderr).to_owned();
    Err(RemoteError::Failed {
        what: format!("creating ~/{CACHE_DIR}"),
        detail,
    })
}

fn unsafe_why(code: &str) -> &'static str {
    match code {
        "symlink" => "is a symbolic link",
        "notdir" => "is not a folder",
        "notowned" => "is not owned by you",
        "writable" => "is writable by the group or others",
        "notregular" => "is not a regular file",
        _ => "cannot be checked (no `find` on the login node?)",
    }
}

/// Learn `$HOME` on the login node and create (or check) `~/.cache/pvlaunch`, `bin/` and
/// `keys/`: mode 0700, the user's, no symbolic link, nobody else may write there.
pub async fn prepare_home(master: &Master) -> Result<RemoteHome, RemoteError> {
    let out = master
        .exec(PREPARE_HOME, None, ssh::COMMAND_TIMEOUT)
        .await?;
    parse_home(&out)
}

/// Writes stdin to `$f`, created exclusively (mode 0600 by the umask).
const WRITE_KEY: &str = r#"umask 077
if [ -e "$f" ] || [ -L "$f" ]; then echo "pvlaunch:exists"; exit 0; fi
set -C
if ! { : > "$f"; } 2> /dev/null; then echo "pvlaunch:exists"; exit 0; fi
if cat >> "$f"; then echo "pvlaunch:written"; else rm -f -- "$f"; echo "pvlaunch:fail:writing failed"; fi"#;

/// The command that writes a key to `path` (the secret goes on its stdin).
pub fn write_key_command(path: &str) -> Result<String, RemoteError> {
    Ok(format!("f={}\n{WRITE_KEY}", quote::quote(path)?))
}

/// Looks for a pvlaunch on PATH (and its version), the login node's `uname -sm`, and an
/// earlier copy `$d/$n` that is safe to use (its SHA-256).
const PROBE: &str = r#"p=$(command -v pvlaunch 2> /dev/null)
case $p in /*)
  printf 'pvlaunch:path:%s\n' "$p"
  v=$("$p" --version < /dev/null 2> /dev/null | sed -n 1p)
  printf 'pvlaunch:version:%s\n' "$v" ;;
esac
printf 'pvlaunch:uname:%s\n' "$(uname -sm)"
f=$d/$n
if [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] \
  && w=$(find "$f" -prune \( -perm -020 -o -perm -002 \) -print 2> /dev/null) && [ -z "$w" ]; then
  s=$( (sha256sum || shasum -a 256) < "$f" 2> /dev/null)
  printf 'pvlaunch:sum:%s\n' "${s%% *}"
fi"#;

/// The command that probes for a pvlaunch to use: `bin_dir/name` is the copy.
pub fn probe_command(bin_dir: &str, name: &str) -> Result<String, RemoteError> {
    Ok(format!(
        "d={} n={}\n{PROBE}",
        quote::quote(bin_dir)?,
        quote::quote(name)?
    ))
}

/// Uploads stdin to a unique temporary file in `$d`, checks its SHA-256 against `$sum`, and
/// renames it onto `$d/$n`.
const UPLOAD: &str = r#"umask 077
f=$d/$n
if [ -d "$f" ] && [ ! -L "$f" ]; then printf 'pvlaunch:fail:%s is a folder\n' "$f"; exit 0; fi
t=$(mktemp "$d/.$n.XXXXXXXX" 2> /dev/null) || {
  t=$d/.$n.$(hostname 2> /dev/null).$$
  ( set -C; : > "$t" ) 2> /dev/null || { printf 'pvlaunch:fail:cannot create a file in %s\n' "$d"; exit 0; }
}
if ! cat > "$t"; then rm -f -- "$t"; printf 'pvlaunch:fail:writing %s failed\n' "$t"; exit 0; fi
s=$( (sha256sum || shasum -a 256) < "$t" 2> /dev/null); s=${s%% *}
if [ "$s" != "$sum" ]; then rm -f -- "$t"; printf 'pvlaunch:mismatch:%s\n' "$s"; exit 0; fi
if chmod 700 -- "$t" && mv -f -- "$t" "$f"; then echo "pvlaunch:placed"; else rm -f -- "$t"; printf 'pvlaunch:fail:cannot move it to %s\n' "$f"; fi"#;

/// The command that uploads a copy (the bytes go on its stdin) as `bin_dir/name`.
pub fn upload_command(bin_dir: &str, name: &str, sum: &str) -> Result<String, RemoteError> {
    Ok(format!(
        "d={} n={} sum={}\n{UPLOAD}",
        quote::quote(bin_dir)?,
        quote::quote(name)?,
        quote::quote(sum)?
    ))
}

/// Makes a fresh 0700 folder under `$TMPDIR` (when absolute) or `/tmp`.
const MAKE_RUN_DIR: &str = r#"umask 077
b=${TMPDIR:-/tmp}
case $b in /*) ;; *) b=/tmp ;; esac
d=$(mktemp -d "${b%/}/pvlaunch.XXXXXXXX") || exit 1
chmod 700 -- "$d" && printf 'pvlaunch:run:%s\n' "$d""#;

/// The command that makes the run folder ([`RemoteHome::make_run_dir`]).
pub fn run_dir_command() -> &'static str {
    MAKE_RUN_DIR
}

/// Whether `dir` can hold the session's socket: absolute, one line, and `dir/fwd.sock` no
/// longer than [`SOCKET_PATH_MAX`] bytes.
pub fn check_run_dir(dir: &str) -> Result<(), RemoteError> {
    if !dir.starts_with('/') || dir.contains(['\n', '\0']) {
        return Err(RemoteError::Failed {
            what: "making the run folder".into(),
            detail: format!("mktemp printed {dir:?}"),
        });
    }
    let len = dir.len() + 1 + RUN_SOCKET.len();
    if len > SOCKET_PATH_MAX {
        return Err(RemoteError::RunDirTooLong {
            path: dir.to_owned(),
            len: dir.len(),
        });
    }
    Ok(())
}

/// `pvlaunch --version` of this build, as clap prints it.
pub fn version_line() -> String {
    format!("pvlaunch {}", env!("CARGO_PKG_VERSION"))
}

/// The name of a copy of this build: its version and the start of its SHA-256.
pub fn binary_name(sum: &str) -> String {
    format!(
        "pvlaunch-{}-{}",
        env!("CARGO_PKG_VERSION"),
        &sum[..sum.len().min(16)]
    )
}

/// What [`PROBE`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// A pvlaunch on PATH.
    pub on_path: Option<String>,
    /// Its `--version` line.
    pub version: Option<String>,
    /// The login node's `uname -sm`.
    pub uname: String,
    /// The SHA-256 of an earlier copy that is safe to use.
    pub copy_sum: Option<String>,
}

/// Read what [`PROBE`] printed.
pub fn parse_probe(stdout: &str) -> Probe {
    Probe {
        on_path: marked(stdout, "path").map(str::to_owned),
        version: marked(stdout, "version").map(|v| v.trim().to_owned()),
        uname: marked(stdout, "uname").unwrap_or("").trim().to_owned(),
        copy_sum: marked(stdout, "sum")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
    }
}

impl RemoteHome {
    /// `~/.cache/pvlaunch/bin`: copies of pvlaunch.
    pub fn bin_dir(&self) -> String {
        format!("{}/bin", self.dir)
    }

    /// `~/.cache/pvlaunch/keys`: the sessions' key files.
    pub fn keys_dir(&self) -> String {
        format!("{}/keys", self.dir)
    }

    /// The key file of session `tag`: `keys/TAG.key`.
    pub fn key_path(&self, tag: &str) -> Result<String, RemoteError> {
        if !crate::scheduler::valid_tag(tag) {
            return Err(RemoteError::InvalidTag(tag.to_owned()));
        }
        Ok(format!("{}/{tag}.key", self.keys_dir()))
    }

    /// Write the session's key to `keys/TAG.key` (created exclusively, mode 0600; the secret
    /// goes over the ssh session's stdin, never into a command line). Returns its absolute
    /// path.
    pub async fn write_key(
        &self,
        master: &Master,
        tag: &str,
        secret: &Secret,
    ) -> Result<String, RemoteError> {
        let path = self.key_path(tag)?;
        let input = format!("{}\n", secret.to_hex());
        let out = master
            .exec(
                &write_key_command(&path)?,
                Some(input.as_bytes()),
                ssh::COMMAND_TIMEOUT,
            )
            .await?;
        if flagged(&out.stdout, "written") {
            Ok(path)
        } else if flagged(&out.stdout, "exists") {
            Err(RemoteError::KeyExists(path))
        } else {
            Err(RemoteError::Failed {
                what: format!("writing the session key {path}"),
                detail: out.stderr,
            })
        }
    }

    /// A pvlaunch program on the login node that is this version: the one on PATH when it
    /// says so (`pvlaunch --version`), an intact copy made earlier, or a fresh copy of this
    /// very binary when the login node runs the same OS and architecture. `warn` is told
    /// before a copy is made. Returns the program's absolute path.
    pub async fn place_binary(
        &self,
        master: &Master,
        warn: &mut dyn FnMut(String),
    ) -> Result<String, RemoteError> {
        let exe = std::env::current_exe().map_err(RemoteError::ReadSelf)?;
        self.place_program(master, &exe, warn).await
    }

    /// [`RemoteHome::place_binary`] for the local file `program` (taken to be this version
    /// of pvlaunch).
    pub async fn place_program(
        &self,
        master: &Master,
        program: &std::path::Path,
        warn: &mut dyn FnMut(String),
    ) -> Result<String, RemoteError> {
        let (bytes, sum) = read_and_hash(program.to_path_buf())
            .await
            .map_err(RemoteError::ReadSelf)?;
        let bin = self.bin_dir();
        let name = binary_name(&sum);
        let path = format!("{bin}/{name}");
        let out = master
            .exec(&probe_command(&bin, &name)?, None, ssh::COMMAND_TIMEOUT)
            .await?;
        let probe = parse_probe(&out.stdout);
        let ours = version_line();
        let other = match (&probe.on_path, &probe.version) {
            (Some(p), Some(v)) if *v == ours => return Ok(p.clone()),
            (Some(p), v) => Some(format!(
                "the pvlaunch on the login node ({p}) is {}, not {ours}",
                v.as_deref()
                    .filter(|v| !v.is_empty())
                    .map_or("of an unknown version".to_string(), |v| format!("`{v}`"))
            )),
            (None, _) => None,
        };
        let local = local_uname();
        if probe.uname != local {
            return Err(RemoteError::Foreign {
                local,
                remote: probe.uname,
                found: other,
            });
        }
        if probe.copy_sum.as_deref() == Some(sum.as_str()) {
            return Ok(path);
        }
        warn(format!(
            "{}: copying this one ({:.1} MiB) to {path}",
            other
                .as_deref()
                .unwrap_or("pvlaunch is not installed on the login node"),
            bytes.len() as f64 / 1_048_576.0
        ));
        let out = master
            .exec(
                &upload_command(&bin, &name, &sum)?,
                Some(&bytes),
                UPLOAD_TIMEOUT,
            )
            .await?;
        if flagged(&out.stdout, "placed") {
            return Ok(path);
        }
        let detail = if let Some(got) = marked(&out.stdout, "mismatch") {
            format!("checksum mismatch (got {got:?}): {}", out.stderr.trim())
        } else if let Some(why) = marked(&out.stdout, "fail") {
            format!("{why}: {}", out.stderr.trim())
        } else {
            out.stderr.trim().to_owned()
        };
        Err(RemoteError::Upload(
            detail.trim_end_matches([':', ' ']).to_owned(),
        ))
    }

    /// Make the session's run folder on the login node for its Unix sockets: `mktemp -d` (mode
    /// 0700) under `$TMPDIR` (when absolute) or `/tmp`; refused (and removed again) when
    /// `RUN/fwd.sock` would not fit in [`SOCKET_PATH_MAX`] bytes. Returns its absolute path.
    pub async fn make_run_dir(&self, master: &Master) -> Result<String, RemoteError> {
        let out = master
            .exec(MAKE_RUN_DIR, None, ssh::COMMAND_TIMEOUT)
            .await?;
        let Some(dir) = marked(&out.stdout, "run") else {
            return Err(RemoteError::Failed {
                what: "making the run folder".into(),
                detail: out.stderr,
            });
        };
        if let Err(e) = check_run_dir(dir) {
            if let RemoteError::RunDirTooLong { .. } = e {
                let rm = format!("rmdir -- {}", quote::quote(dir)?);
                let _ = master.exec(&rm, None, ssh::COMMAND_TIMEOUT).await;
            }
            return Err(e);
        }
        Ok(dir.to_owned())
    }
}

/// A file's bytes and their SHA-256 (hex), read and hashed off the async runtime (the
/// pvlaunch binary is megabytes: reading and hashing it would stall every other task).
pub async fn read_and_hash(path: std::path::PathBuf) -> std::io::Result<(Vec<u8>, String)> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path)?;
        let sum = format!("{:x}", Sha256::digest(&bytes));
        Ok((bytes, sum))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `uname -sm` of this machine, as the login node would print it.
pub fn local_uname() -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        other => other,
    };
    format!("{os} {}", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::process::Command;

    /// Run a script the way the login node would (`/bin/sh -c`) with HOME set; returns its
    /// output as [`ssh::Output`].
    fn run_sh(shell: &str, script: &str, home: &Path, stdin: &[u8]) -> ssh::Output {
        use std::io::Write as _;
        let mut child = Command::new(shell)
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A script that refuses exits without reading its input.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        ssh::Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ..Default::default()
        }
    }

    /// The POSIX shells here (dash is the strict one).
    fn shells() -> Vec<String> {
        let mut out = vec!["/bin/sh".to_string()];
        for s in ["dash", "bash"] {
            match which::which(s) {
                Ok(p) => out.push(p.display().to_string()),
                Err(_) => eprintln!("SKIPPED for {s}: not installed"),
            }
        }
        out
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn values_are_quoted_in_front_of_the_fixed_scripts() {
        let c = write_key_command("/home/a b/.cache/pvlaunch/keys/x'y.key").unwrap();
        assert!(
            c.starts_with("f='/home/a b/.cache/pvlaunch/keys/x'\\''y.key'\n"),
            "{c}"
        );
        assert!(c.ends_with(WRITE_KEY));
        let c = probe_command("/h/$(rm -rf ~)/bin", "pvlaunch-0.1.0-abc").unwrap();
        assert!(
            c.starts_with("d='/h/$(rm -rf ~)/bin' n=pvlaunch-0.1.0-abc\n"),
            "{c}"
        );
        let c = upload_command("/h/bin", "n", "00ff").unwrap();
        assert!(c.starts_with("d=/h/bin n=n sum=00ff\n"), "{c}");
        assert!(matches!(
            write_key_command("/a\0b"),
            Err(RemoteError::Nul(_))
        ));
        // No value of the caller's ever reaches the fixed scripts themselves.
        for s in [PREPARE_HOME, WRITE_KEY, PROBE, UPLOAD, MAKE_RUN_DIR] {
            assert!(!s.contains('\0'));
        }
    }

    #[test]
    fn the_run_dir_leaves_room_for_its_socket() {
        check_run_dir("/tmp/pvlaunch.abcdefgh").unwrap();
        // 100 bytes exactly with "/fwd.sock".
        let fits = format!(
            "/{}",
            "x".repeat(SOCKET_PATH_MAX - 1 - RUN_SOCKET.len() - 1)
        );
        assert_eq!(fits.len() + 1 + RUN_SOCKET.len(), SOCKET_PATH_MAX);
        check_run_dir(&fits).unwrap();
        let long = format!("{fits}y");
        match check_run_dir(&long) {
            Err(RemoteError::RunDirTooLong { path, len }) => {
                assert_eq!((path.as_str(), len), (long.as_str(), long.len()))
            }
            other => panic!("{other:?}"),
        }
        assert!(check_run_dir("relative/pvlaunch.x").is_err());
        assert!(check_run_dir("/tmp/a\nb").is_err());
    }

    #[test]
    fn names_and_markers() {
        assert_eq!(
            binary_name(&"ab".repeat(32)),
            format!("pvlaunch-{}-abababababababab", env!("CARGO_PKG_VERSION"))
        );
        let p = parse_probe(
            "motd: welcome\npvlaunch:path:/usr/bin/pvlaunch\npvlaunch:version:pvlaunch 9.9.9\n\
             pvlaunch:uname:Linux x86_64\npvlaunch:sum:\n",
        );
        assert_eq!(
            p,
            Probe {
                on_path: Some("/usr/bin/pvlaunch".into()),
                version: Some("pvlaunch 9.9.9".into()),
                uname: "Linux x86_64".into(),
                copy_sum: None,
            }
        );
        // A start-up file's chatter before the marker does not matter; the marker's own
        // line must be whole.
        let out = ssh::Output {
            code: Some(0),
            stdout: "hello from .bashrc\npvlaunch:ok:/home/a:b\n".into(),
            ..Default::default()
        };
        assert_eq!(
            parse_home(&out).unwrap(),
            RemoteHome {
                home: "/home/a:b".into(),
                dir: "/home/a:b/.cache/pvlaunch".into()
            }
        );
    }

    #[test]
    fn an_unsafe_folder_becomes_a_site_failure_naming_it() {
        let e = RemoteError::Unsafe {
            path: "/h/.cache/pvlaunch/bin".into(),
            why: unsafe_why("writable").into(),
        };
        assert_eq!(
            e.to_string(),
            "refusing /h/.cache/pvlaunch/bin on the login node: it is writable by the group or others"
        );
        let f = Failure::from(e);
        assert!(matches!(f, Failure::Site { .. }), "{f:?}");
        assert!(
            f.hint()
                .unwrap()
                .contains("chmod 700 /h/.cache/pvlaunch/bin")
        );
        let f = Failure::from(RemoteError::Foreign {
            local: "Linux x86_64".into(),
            remote: "Linux aarch64".into(),
            found: None,
        });
        assert!(matches!(f, Failure::NoRelay { .. }), "{f:?}");
    }

    #[test]
    fn the_home_is_prepared_private_under_every_shell() {
        for shell in shells() {
            let home = tempfile::tempdir().unwrap();
            let out = run_sh(&shell, PREPARE_HOME, home.path(), b"");
            let h = parse_home(&out).unwrap_or_else(|e| panic!("{shell}: {e} {out:?}"));
            assert_eq!(h.home, home.path().display().to_string());
            for sub in ["", "/bin", "/keys"] {
                let p = format!("{}{sub}", h.dir);
                assert_eq!(mode(Path::new(&p)), 0o700, "{shell}: {p}");
            }
            // Ours but too open: set back to 0700.
            let bin = home.path().join(".cache/pvlaunch/bin");
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
            parse_home(&run_sh(&shell, PREPARE_HOME, home.path(), b"")).unwrap();
            assert_eq!(mode(&bin), 0o700, "{shell}");
            // A symbolic link is refused, naming it.
            let keys = home.path().join(".cache/pvlaunch/keys");
            std::fs::remove_dir(&keys).unwrap();
            let elsewhere = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(elsewhere.path(), &keys).unwrap();
            match parse_home(&run_sh(&shell, PREPARE_HOME, home.path(), b"")) {
                Err(RemoteError::Unsafe { path, why }) => {
                    assert_eq!(path, keys.display().to_string(), "{shell}");
                    assert_eq!(why, "is a symbolic link");
                }
                other => panic!("{shell}: {other:?}"),
            }
            // A file where a folder belongs.
            std::fs::remove_file(&keys).unwrap();
            std::fs::write(&keys, "").unwrap();
            match parse_home(&run_sh(&shell, PREPARE_HOME, home.path(), b"")) {
                Err(RemoteError::Unsafe { why, .. }) => assert_eq!(why, "is not a folder"),
                other => panic!("{shell}: {other:?}"),
            }
        }
    }

    /// As root, a folder handed to another user is not ours: refused, not chmod-ed.
    #[test]
    fn a_folder_of_another_user_is_refused() {
        if crate::relay::effective_uid() != 0 {
            eprintln!("SKIPPED: needs root to give a folder to another user");
            return;
        }
        for shell in shells() {
            let home = tempfile::tempdir().unwrap();
            let dir = home.path().join(".cache/pvlaunch");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            match parse_home(&run_sh(&shell, PREPARE_HOME, home.path(), b"")) {
                Err(RemoteError::Unsafe { path, why }) => {
                    assert_eq!(
                        (path.as_str(), why.as_str()),
                        (dir.to_str().unwrap(), "is not owned by you"),
                        "{shell}"
                    );
                }
                other => panic!("{shell}: {other:?}"),
            }
            assert_eq!(mode(&dir), 0o755, "left as it was");
        }
    }

    #[test]
    fn a_relative_home_is_refused() {
        let out = run_sh("/bin/sh", PREPARE_HOME, Path::new("relative/home"), b"");
        assert!(
            matches!(parse_home(&out), Err(RemoteError::Home(_))),
            "{out:?}"
        );
    }

    #[test]
    fn the_key_file_is_created_exclusively_and_private() {
        for shell in shells() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("1a2b.key");
            let cmd = write_key_command(path.to_str().unwrap()).unwrap();
            let out = run_sh(&shell, &cmd, dir.path(), b"secret\n");
            assert!(flagged(&out.stdout, "written"), "{shell}: {out:?}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret\n");
            assert_eq!(mode(&path), 0o600, "{shell}");
            // Again: refused, the first one untouched.
            let out = run_sh(&shell, &cmd, dir.path(), b"other\n");
            assert!(flagged(&out.stdout, "exists"), "{shell}: {out:?}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret\n");
            // A planted symbolic link (even to /dev/null) is refused and not followed.
            let planted = dir.path().join("2b3c.key");
            let target = dir.path().join("target");
            std::os::unix::fs::symlink(&target, &planted).unwrap();
            let cmd = write_key_command(planted.to_str().unwrap()).unwrap();
            assert!(flagged(
                &run_sh(&shell, &cmd, dir.path(), b"x\n").stdout,
                "exists"
            ));
            assert!(!target.exists(), "{shell}");
            std::fs::remove_file(&planted).unwrap();
            std::os::unix::fs::symlink("/dev/null", &planted).unwrap();
            assert!(flagged(
                &run_sh(&shell, &cmd, dir.path(), b"x\n").stdout,
                "exists"
            ));
        }
    }

    #[test]
    fn the_run_dir_is_made_private_under_tmpdir() {
        for shell in shells() {
            let tmp = tempfile::tempdir().unwrap();
            let out = Command::new(&shell)
                .arg("-c")
                .arg(MAKE_RUN_DIR)
                .env("TMPDIR", tmp.path())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = marked(&stdout, "run").unwrap_or_else(|| panic!("{shell}: {out:?}"));
            assert!(dir.starts_with(&format!("{}/pvlaunch.", tmp.path().display())));
            assert_eq!(mode(Path::new(dir)), 0o700);
            // A relative TMPDIR is not used.
            let out = Command::new(&shell)
                .arg("-c")
                .arg(MAKE_RUN_DIR)
                .env("TMPDIR", "rel")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = marked(&stdout, "run").unwrap();
            assert!(dir.starts_with("/tmp/pvlaunch."), "{dir}");
            std::fs::remove_dir(dir).unwrap();
        }
    }

    #[test]
    fn an_upload_is_checked_then_renamed_and_an_earlier_copy_checked_before_use() {
        for shell in shells() {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().to_str().unwrap();
            let data = b"#!/bin/sh\necho hi\n";
            let sum = format!("{:x}", Sha256::digest(data));
            let name = binary_name(&sum);
            let out = run_sh(
                &shell,
                &upload_command(bin, &name, &sum).unwrap(),
                dir.path(),
                data,
            );
            assert!(flagged(&out.stdout, "placed"), "{shell}: {out:?}");
            let f = dir.path().join(&name);
            assert_eq!(std::fs::read(&f).unwrap(), data);
            assert_eq!(mode(&f), 0o700);
            // Nothing else is left in the folder.
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{shell}");
            // A wrong checksum leaves nothing behind.
            let out = run_sh(
                &shell,
                &upload_command(bin, "other", &sum).unwrap(),
                dir.path(),
                b"truncated",
            );
            assert!(
                marked(&out.stdout, "mismatch").is_some(),
                "{shell}: {out:?}"
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{shell}");
            // The probe reports the copy's checksum only while it is safe to use.
            let probe = |shell: &str| {
                parse_probe(
                    &run_sh(shell, &probe_command(bin, &name).unwrap(), dir.path(), b"").stdout,
                )
            };
            let p = probe(&shell);
            assert_eq!(p.copy_sum.as_deref(), Some(sum.as_str()), "{shell}");
            assert_eq!(p.uname, local_uname());
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o722)).unwrap();
            assert_eq!(probe(&shell).copy_sum, None, "{shell}: group-writable");
            std::fs::remove_file(&f).unwrap();
            let real = dir.path().join("real");
            std::fs::write(&real, data).unwrap();
            std::os::unix::fs::symlink(&real, &f).unwrap();
            assert_eq!(probe(&shell).copy_sum, None, "{shell}: a symbolic link");
        }
    }

    /// Other tasks keep running while the binary is read and hashed.
    #[tokio::test(flavor = "current_thread")]
    async fn hashing_does_not_stall_the_runtime() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), vec![7u8; 8 * 1024 * 1024]).unwrap();
        let ticks = std::cell::Cell::new(0u32);
        let done = std::cell::Cell::new(false);
        let ticker = async {
            while !done.get() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.set(ticks.get() + 1);
            }
        };
        let hash = async {
            let r = read_and_hash(file.path().to_path_buf()).await;
            done.set(true);
            r
        };
        let (result, ()) = tokio::join!(hash, ticker);
        let (bytes, sum) = result.unwrap();
        assert_eq!(bytes.len(), 8 * 1024 * 1024);
        assert_eq!(sum, format!("{:x}", Sha256::digest(&bytes)));
        assert!(
            ticks.get() > 1,
            "the runtime stalled: {} ticks",
            ticks.get()
        );
    }
}
