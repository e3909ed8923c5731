//! Owned hops: how pvlaunch's own processes on the workstation, the login node and the compute
//! node recognise each other before one byte of ParaView's stream flows between them.
//!
//! - [`Secret`]: 32 random bytes per session. It never appears in an argv, an environment a
//!   scheduler publishes, or the job's output: it travels over the ssh session into a 0600 file
//!   ([`Secret::write_new`], [`Secret::read_file`] checks owner and mode).
//! - [`preamble`]: a mutual challenge-response over any stream (HMAC-SHA256 of both sides'
//!   nonces), so the secret itself never crosses the wire and a recorded exchange cannot be
//!   replayed. A connection that fails it is closed; nothing else changes.
//! - [`peer`]: the owner uid of a loopback TCP peer, from the kernel (`/proc/net/tcp`), for the
//!   hop between pvserver and the pvlaunch process beside it on the same node.
//! - [`node`]: that process, `pvlaunch node`.

pub mod node;
pub mod peer;
pub mod preamble;

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How often the workstation tells the session's processes on the login node that it is
/// there (a `beat` line on their stdin, over the ssh connection).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// How long those processes wait without a line before they take the link for dead.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(20);

/// Write a `beat` line every [`HEARTBEAT_INTERVAL`] to `to` until a write fails (the process
/// or its ssh session is gone) or the task is aborted.
pub fn heartbeat<W>(mut to: W) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            if to.write_all(b"beat\n").await.is_err() || to.flush().await.is_err() {
                return;
            }
        }
    })
}

/// Length of a session secret in bytes.
pub const SECRET_LEN: usize = 32;

/// A session's secret. `Debug` prints no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("read the session key {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("the session key {path} belongs to uid {owner}, not to this user ({me})")]
    NotOurs { path: String, owner: u32, me: u32 },
    #[error(
        "the session key {path} is readable or writable by others (mode {mode:o}): refusing it"
    )]
    Exposed { path: String, mode: u32 },
    #[error("the session key {path} is not a session key (expected {} hex digits)", SECRET_LEN * 2)]
    Malformed { path: String },
}

impl Secret {
    /// A fresh secret from the operating system's generator.
    pub fn generate() -> Secret {
        let mut bytes = [0u8; SECRET_LEN];
        rand::fill(&mut bytes);
        Secret(bytes)
    }

    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// Lower-case hex, the form written to the key file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parse [`Secret::to_hex`]'s form (surrounding blanks allowed).
    pub fn from_hex(text: &str) -> Option<Secret> {
        let text = text.trim();
        if text.len() != SECRET_LEN * 2 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; SECRET_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Secret(bytes))
    }

    /// Read a key file, refusing one that is not this user's or that others could read or
    /// change (its mode must not give the group or others any right).
    pub fn read_file(path: &Path) -> Result<Secret, SecretError> {
        use std::os::unix::fs::MetadataExt;
        let shown = path.display().to_string();
        let io = |source| SecretError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let me = crate::relay::effective_uid();
        if meta.uid() != me {
            return Err(SecretError::NotOurs {
                path: shown,
                owner: meta.uid(),
                me,
            });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(SecretError::Exposed {
                path: shown,
                mode: meta.mode() & 0o7777,
            });
        }
        let mut text = String::new();
        (&file).take(256).read_to_string(&mut text).map_err(io)?;
        Secret::from_hex(&text).ok_or(SecretError::Malformed { path: shown })
    }

    /// Write the key to a new file (mode 0600, created exclusively: an existing file, or a
    /// symlink planted there, is an error).
    pub fn write_new(&self, path: &Path) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(self.to_hex().as_bytes())?;
        f.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hex_round_trips_and_debug_hides_it() {
        let s = Secret::generate();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert_eq!(Secret::from_hex(&format!(" {}\n", s.to_hex())).unwrap(), s);
        assert_ne!(Secret::generate(), s);
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(Secret::from_hex("abc").is_none());
        assert!(Secret::from_hex(&"g".repeat(64)).is_none());
        assert!(Secret::from_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn key_files_are_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let s = Secret::generate();
        s.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Secret::read_file(&path).unwrap(), s);
        // Never over an existing file.
        assert!(s.write_new(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Secret::read_file(&path),
            Err(SecretError::Exposed { .. })
        ));
        std::fs::write(dir.path().join("bad"), "nothex").unwrap();
        std::fs::set_permissions(
            dir.path().join("bad"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            Secret::read_file(&dir.path().join("bad")),
            Err(SecretError::Malformed { .. })
        ));
    }
}
