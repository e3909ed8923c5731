//! The wiki's third recipe: the forward stays on the login node's loopback, and a relay on the
//! login node (`pvlaunch relay`, the portfwd replacement) listens where compute nodes reach it.
//! The relay runs in its own ssh session with `--stop-on-stdin-eof`: it lives exactly as long
//! as the session that started it.

use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Ctx, Reach};
use crate::events::Event;
use crate::outcome::Failure;
use crate::process::{self, Kind};
use crate::quote;
use crate::scheduler::Kind as SchedulerKind;
use crate::ssh;

/// How long the remote relay may take to report its port.
pub const RELAY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Where a copied pvlaunch lives on the login node, relative to the home directory.
pub const REMOTE_BIN_DIR: &str = ".cache/pvlaunch/bin";

/// Start the relay on the login node in front of the loopback forward `forward_port`.
pub async fn start(ctx: &mut Ctx<'_>, forward_port: u16) -> Result<Reach, Failure> {
    let program = remote_pvlaunch(ctx).await?;
    let mut argv = vec![
        program,
        "--json".to_string(),
        "relay".into(),
        "--listen".into(),
        "*:0".into(),
        "--to".into(),
        format!("127.0.0.1:{forward_port}"),
        "--stop-on-stdin-eof".into(),
    ];
    let nodes = cluster_nodes(ctx).await;
    if nodes.is_empty() {
        ctx.reporter.emit(Event::Warning {
            message: "the relay on the login node accepts any source (the cluster's node list is unknown)".into(),
        });
    }
    for n in &nodes {
        argv.push("--allow".into());
        argv.push(n.clone());
    }
    let command = quote::join(&argv).map_err(|e| Failure::Profile {
        message: e.to_string(),
    })?;
    let ssh_argv = ctx.master.target.remote_argv(&command);
    let mut cmd = process::command(&ssh_argv, Kind::Helper);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Failure::ssh(e.to_string()))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    ctx.remote.push(child);
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(RELAY_START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(port) = listening_port(&line) {
                return Some(port);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let Some(port) = port else {
        let mut err = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                // Only the last lines are shown; keep the text bounded whatever ssh prints.
                if err.len() > 64 * 1024 {
                    let cut = (err.len() - 32 * 1024..err.len())
                        .find(|&i| err.is_char_boundary(i))
                        .unwrap_or(err.len());
                    err.drain(..cut);
                }
                err.push_str(&l);
                err.push('\n');
            }
        })
        .await;
        // This relay never started: its ssh session is not one to stop (or report) later.
        if let Some(mut c) = ctx.remote.pop() {
            process::stop(&mut c, Duration::from_secs(1)).await;
        }
        return Err(Failure::NoRelay {
            message: format!(
                "the relay on the login node did not start: {}",
                process::tail(&err, 3).join(" / ")
            ),
            hint: Some(
                "run `pvlaunch relay --listen '*:0' --to 127.0.0.1:1` on the login node to see why"
                    .into(),
            ),
        });
    };
    // Keep draining its events so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(_)) = r.next_line().await {}
    });
    ctx.reporter.emit(Event::RelayStarted {
        host: ctx.login_host.to_string(),
        port,
        allowed: nodes,
    });
    Ok(Reach::Reverse {
        client_host: ctx.login_host.to_string(),
        port,
    })
}

/// The port in the relay's `listening` event (`{"event":"listening","listen":"0.0.0.0:4711"}`).
pub fn listening_port(line: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["event"] != "listening" {
        return None;
    }
    v["listen"].as_str()?.rsplit_once(':')?.1.parse().ok()
}

/// The cluster's compute nodes, for the relay's allow-list (Slurm: `sinfo`).
async fn cluster_nodes(ctx: &Ctx<'_>) -> Vec<String> {
    if ctx.plan.scheduler != SchedulerKind::Slurm {
        return Vec::new();
    }
    match ctx
        .master
        .exec("sinfo -h -N -o %N", None, ssh::COMMAND_TIMEOUT)
        .await
    {
        Ok(o) if o.success() => {
            let mut nodes: Vec<String> = o
                .stdout
                .split_whitespace()
                .filter(|n| {
                    n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                })
                .map(str::to_string)
                .collect();
            nodes.sort();
            nodes.dedup();
            nodes
        }
        _ => Vec::new(),
    }
}

/// The pvlaunch program on the login node: the profile's, the one on PATH, a copy made
/// earlier, or a fresh copy of this very binary when the login node runs the same OS and
/// architecture (checked by SHA-256 after the upload).
async fn remote_pvlaunch(ctx: &mut Ctx<'_>) -> Result<String, Failure> {
    if let Some(p) = &ctx.plan.relay_program {
        return Ok(p.clone());
    }
    let probe = "command -v pvlaunch || true; echo ---; uname -sm";
    let out = ctx
        .master
        .exec(probe, None, ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| Failure::ssh(e.to_string()))?;
    let (found, uname) = out.stdout.split_once("---").unwrap_or(("", ""));
    if let Some(path) = found.lines().map(str::trim).find(|l| l.starts_with('/')) {
        return Ok(path.to_string());
    }
    let local = local_uname();
    if uname.trim() != local {
        return Err(Failure::NoRelay {
 message: format!(
                "pvlaunch is not installed on the login node, and this build ({local}) does not run there ({})",
                uname.trim()
            ),
 hint: Some("install pvlaunch on the login node (cargo install --path .), or name it: <Connection relay-program=\"/path/to/pvlaunch\"/>".into()),
 });
    }
    let exe = std::env::current_exe().map_err(|e| Failure::internal(e.to_string()))?;
    let (bytes, sum) = read_and_hash(exe)
        .await
        .map_err(|e| Failure::internal(format!("reading this pvlaunch to copy it: {e}")))?;
    let name = format!("pvlaunch-{}-{}", env!("CARGO_PKG_VERSION"), &sum[..16]);
    let path = format!("{REMOTE_BIN_DIR}/{name}");
    let q = |s: &str| quote::quote(s).map(|c| c.into_owned()).unwrap_or_default();
    // Already there from an earlier session, intact?
    let check = format!("sha256sum {} 2>/dev/null", q(&path));
    if let Ok(o) = ctx.master.exec(&check, None, ssh::COMMAND_TIMEOUT).await
        && o.stdout.split_whitespace().next() == Some(sum.as_str())
    {
        return Ok(format!("./{path}"));
    }
    ctx.reporter.emit(Event::Warning {
        message: format!(
            "pvlaunch is not installed on the login node: copying this one ({:.1} MiB) to ~/{path}",
            bytes.len() as f64 / 1_048_576.0
        ),
    });
    let tmp = format!("{path}.part");
    let upload = format!(
        "mkdir -p {dir} && cat > {tmp} && chmod 700 {tmp} && sha256sum {tmp}",
        dir = q(REMOTE_BIN_DIR),
        tmp = q(&tmp)
    );
    let out = ctx
        .master
        .exec(&upload, Some(&bytes), Duration::from_secs(300))
        .await
        .map_err(|e| Failure::ssh(e.to_string()))?;
    if out.stdout.split_whitespace().next() != Some(sum.as_str()) {
        return Err(Failure::NoRelay {
            message: format!(
                "copying pvlaunch to the login node failed (checksum mismatch): {}",
                out.stderr.trim()
            ),
            hint: Some("check the quota of your home directory on the login node".into()),
        });
    }
    let mv = format!("mv -f {} {}", q(&tmp), q(&path));
    ctx.master
        .exec(&mv, None, ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| Failure::ssh(e.to_string()))?;
    Ok(format!("./{path}"))
}

/// A file's bytes and their SHA-256 (hex), read and hashed off the async runtime (the
/// pvlaunch binary is megabytes: reading and hashing it would stall every other task).
async fn read_and_hash(path: std::path::PathBuf) -> std::io::Result<(Vec<u8>, String)> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path)?;
        let sum = format!("{:x}", Sha256::digest(&bytes));
        Ok((bytes, sum))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `uname -sm` of this machine, as the login node would print it.
fn local_uname() -> String {
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
