//! The wiki's second recipe, forward: pvserver listens on a compute node, and the client
//! connects to it through a local forward on the login node's ssh connection.
//!
//! Nothing is prepared before the job. Once the job runs, the session reads pvserver's
//! `Accepting connection(s): HOST:PORT` line from the job's output (the port pvserver picked
//! when asked for port 0; the line also means it listens), then asks the master for
//! `-L 127.0.0.1:Z:NODE:PORT` (the login node connects to the node; Z is a free local port),
//! puts pvlaunch's relay in front of it (so the session sees the client connect and leave), and
//! starts the client with `cs://localhost:RELAY`.

use std::time::Duration;

use super::{Ctx, Reach};
use crate::outcome::Failure;
use crate::plan::{self, Plan};
use crate::quote;
use crate::ssh::{self, Master};

/// How many bytes of the job's output are read when looking for pvserver's line.
pub const OUTPUT_WINDOW: usize = 64 * 1024;
/// How often the job's output is read while pvserver starts.
pub const OUTPUT_POLL: Duration = Duration::from_secs(1);
/// How many free local ports are tried for the forward (another program may take the one
/// found free before ssh binds it).
pub const FORWARD_TRIES: usize = 5;

/// Nothing to open before the job: pvserver listens on `remote-port` (0: it picks one).
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    Ok(Reach::Listen {
        port: ctx.plan.remote_port,
    })
}

/// Where pvserver accepts connections, from its output: the last
/// `Accepting connection(s): HOST:PORT` line (with the real port when it was asked for 0).
pub fn accepting(output: &str) -> Option<(String, u16)> {
    output.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("Accepting connection(s):")?;
        let rest = strip_ansi(rest);
        let (host, port) = rest.trim().rsplit_once(':')?;
        let port: u16 = port.trim().parse().ok().filter(|&p| p != 0)?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| (host.to_string(), port))
    })
}

/// Text without ANSI colour sequences (ParaView colours its log lines on some builds).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The end of the job's output on the login node (`None` while the file does not exist).
pub async fn read_output(master: &Master, plan: &Plan) -> Result<Option<String>, String> {
    let path = format!(
        "{}/{}",
        plan::REMOTE_DIR,
        plan::output_path(&plan.session_tag)
    );
    let q = quote::quote(&path).map_err(|e| e.to_string())?;
    let out = master
        .exec(
            &format!("tail -c {OUTPUT_WINDOW} {q} 2>/dev/null"),
            None,
            ssh::COMMAND_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(out.success().then_some(out.stdout))
}

/// Open `-L 127.0.0.1:Z:node:port` on the master; returns Z.
pub async fn open_tunnel(master: &Master, node: &str, port: u16) -> Result<u16, Failure> {
    let mut last = String::new();
    for _ in 0..FORWARD_TRIES {
        let local =
            free_local_port().map_err(|e| Failure::internal(format!("no free local port: {e}")))?;
        match master.forward_local(local, node, port).await {
            Ok(()) => return Ok(local),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Failure::site(
        format!("the local forward to {node}:{port} through the login node failed: {last}"),
        "the login node's sshd must allow local forwards (AllowTcpForwarding yes or local, PermitOpen)",
    ))
}

/// A port nothing listens on right now (bound to 0, then released).
fn free_local_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The node to forward to: the first node the scheduler names (rank 0 and the batch script
/// run there), else the host pvserver printed.
pub fn target_node(nodes: &[String], printed_host: &str) -> String {
    nodes
        .first()
        .cloned()
        .unwrap_or_else(|| printed_host.to_string())
}

/// The message when pvserver's output shows that the job failed to start it, for a job that
/// ended before it listened.
pub fn never_listened(job: &str, state: &str) -> String {
    format!("job {job} ended ({state}) before pvserver listened")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_pvserver_picked() {
        let out = "Waiting for client...\nConnection URL: cs://node1:0\nAccepting connection(s): node1:43345\n";
        assert_eq!(accepting(out), Some(("node1".into(), 43345)));
    }

    #[test]
    fn reads_the_last_line_of_several_and_ignores_colours_and_prefixes() {
        let out = "Accepting connection(s): node1:1000\n\
                   (  0.2s) [pvserver.0 ] Accepting connection(s): node2.cluster:2000\u{1b}[0m\n\
                   Client connected.\n";
        assert_eq!(accepting(out), Some(("node2.cluster".into(), 2000)));
        assert_eq!(
            accepting("Accepting connection(s): [fe80::1]:11111"),
            Some(("fe80::1".into(), 11111))
        );
    }

    #[test]
    fn nothing_until_pvserver_listens() {
        assert_eq!(accepting(""), None);
        assert_eq!(
            accepting("Waiting for client...\nConnection URL: cs://node1:0\n"),
            None
        );
        assert_eq!(accepting("Accepting connection(s): node1:0"), None);
        assert_eq!(accepting("Accepting connection(s): node1:"), None);
        assert_eq!(accepting("Accepting connection(s): :11111"), None);
        assert_eq!(accepting("Accepting connection(s): node1:99999"), None);
    }

    #[test]
    fn the_scheduler_names_the_node() {
        assert_eq!(
            target_node(&["node1".into(), "node2".into()], "node1.local"),
            "node1"
        );
        assert_eq!(target_node(&[], "login"), "login");
    }

    #[test]
    fn free_ports_are_free() {
        // Other tests bind ports at the same time: one of a few draws must still be free.
        let free = (0..5).any(|_| {
            let p = free_local_port().unwrap();
            p > 0 && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        assert!(free);
    }
}
