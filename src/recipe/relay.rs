//! The wiki's third recipe: the forward stays private to the login node (a Unix socket in the
//! session's 0700 folder), and a relay on the login node (`pvlaunch relay`, the portfwd
//! replacement) listens where compute nodes reach it, for connections that prove the session's
//! key. The relay runs in its own ssh session with `--stop-on-stdin-eof` and
//! `--stdin-heartbeat`: it lives exactly as long as the session that started it, and stops
//! when the workstation's beats stop (a link dropped without a word).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Ctx, NodePath, Owned, Reach};
use crate::events::Event;
use crate::hop;
use crate::outcome::Failure;
use crate::process::{self, Kind};
use crate::quote;
use crate::scheduler::Kind as SchedulerKind;
use crate::ssh;

/// How long the remote relay may take to report its port.
pub const RELAY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Start the relay on the login node in front of the forward's Unix socket: it accepts only
/// connections that prove the session's key (from the node agent) and proves it in turn to
/// the workstation's relay. The node agent connects to it.
pub async fn start(ctx: &mut Ctx<'_>, owned: &Owned) -> Result<Reach, Failure> {
    // Where a lost link may come back, the relay's links to the workstation are resumable:
    // their own forward, to the workstation relay's listener for them.
    let resume = match (&owned.lease, ctx.resume_port) {
        (Some(lease), Some(port)) => {
            let socket = owned.resume_socket();
            ctx.master
                .forward_remote_socket(&socket, port)
                .await
                .map_err(|e| {
                    Failure::site(
                        e.to_string(),
                        "the login node's sshd refuses remote forwards of Unix sockets (AllowStreamLocalForwarding, AllowTcpForwarding); see docs/recipes.md",
                    )
                })?;
            Some((lease.clone(), socket))
        }
        _ => None,
    };
    let to = match &resume {
        Some((_, socket)) => socket.clone(),
        None => owned.forward_socket(),
    };
    let mut argv = vec![
        owned.program.clone(),
        "--json".to_string(),
        "relay".into(),
        "--listen".into(),
        "*:0".into(),
        "--to".into(),
        format!("unix:{to}"),
        "--key-file".into(),
        owned.key_file.clone(),
        "--accept-key".into(),
        "--connect-key".into(),
        "--stop-on-stdin-eof".into(),
        "--stdin-heartbeat".into(),
        hop::HEARTBEAT_LIMIT.as_secs().to_string(),
    ];
    if let Some((lease, _)) = &resume {
        let grace = format!("{}s", ctx.plan.grace.as_secs());
        argv.extend([
            "--lease".into(),
            lease.clone(),
            "--lease-grace".into(),
            grace.clone(),
            "--resume-dial".into(),
            grace,
        ]);
    }
    let nodes = cluster_nodes(ctx).await;
    for n in &nodes {
        argv.push("--allow".into());
        argv.push(n.clone());
    }
    let command = quote::join(&argv).map_err(|e| Failure::Profile {
        message: e.to_string(),
    })?;
    let ssh_argv = ctx.master.remote_argv(&command);
    let mut cmd = process::command(&ssh_argv, Kind::Helper);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Failure::ssh(e.to_string()))?;
    let stdin = child.stdin.take().expect("piped");
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
            hint: Some(format!(
                "run `{} relay --listen '*:0' --to 127.0.0.1:1` on the login node to see why",
                owned.program
            )),
        });
    };
    // It stops when the beats stop (a link dropped without a word) or its stdin closes.
    hop::heartbeat(stdin);
    // Keep draining its events so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(_)) = r.next_line().await {}
    });
    if nodes.is_empty() {
        ctx.reporter.emit(Event::Warning {
            message: "the relay on the login node accepts connections from any host (the cluster's node list is unknown); each must still prove the session's key".into(),
        });
    }
    ctx.resumable = resume.is_some();
    ctx.reporter.emit(Event::RelayStarted {
        host: ctx.login_host.to_string(),
        port,
        allowed: nodes,
    });
    Ok(Reach::Node {
        agent: owned.agent(),
        path: NodePath::To(format!("{}:{port}", ctx.login_host)),
    })
}

/// The relay recipe without pvlaunch on the cluster.
pub fn unavailable(login_host: &str) -> Failure {
    Failure::NoRelay {
        message: format!("the relay recipe needs pvlaunch on {login_host}, and it cannot run there"),
        hint: Some("install pvlaunch on the login node and name it: <Connection relay-program=\"/path/to/pvlaunch\"/>; or use recipe=\"auto\"".into()),
    }
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
