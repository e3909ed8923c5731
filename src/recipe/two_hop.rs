//! The wiki's second recipe, forward: pvserver listens on a compute node, and the client
//! connects to it through a local forward on the login node's ssh connection.
//!
//! Nothing is prepared before the job. Once the job runs, the session reads pvserver's
//! `Accepting connection(s): HOST:PORT` line from the job's output (the port pvserver picked
//! when asked for port 0; the line also means it listens), then asks the master for
//! `-L 127.0.0.1:Z:NODE:PORT` (the login node connects to the node; Z is a free local port),
//! puts pvlaunch's relay in front of it (so the session sees the client connect and leave), and
//! starts the client with `cs://localhost:RELAY`.

use super::{Ctx, NodePath, Reach};
use crate::client::Mode;
use crate::events::Event;
use crate::outcome::Failure;
use crate::ssh::Master;

/// How many free local ports are tried for the forward (another program may take the one
/// found free before ssh binds it).
pub const FORWARD_TRIES: usize = 5;

/// Nothing to open before the job: the node agent (owned) or pvserver listens on
/// `remote-port` (0: it picks one).
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    let port = ctx.plan.remote_port;
    Ok(match ctx.owned {
        // ParaView's Connect dialog connects to a cs:// resource, so pvserver must accept: the
        // node agent cannot stand in front of it.
        Some(_)
            if ctx.plan.client == Mode::None
                && ctx.plan.owned_hops == crate::profile::settings::OwnedHops::Required =>
        {
            return Err(Failure::site(
                "ParaView connects to this profile's cs:// resource itself, so pvserver would have to accept connections other users could reach, and the profile requires owned hops",
                "use a csrc:// resource (ParaView listens; a reverse recipe), or allow the plain path (owned-hops=\"preferred\")",
            ));
        }
        Some(_) if ctx.plan.client == Mode::None => {
            ctx.reporter.emit(Event::Warning {
                message: "ParaView connects to this profile's cs:// resource itself, so pvserver must accept connections on the compute node: other users of the cluster could reach it (a csrc:// resource keeps every hop pvlaunch's own; docs/security.md)".into(),
            });
            Reach::Listen { port }
        }
        Some(owned) => Reach::Node {
            agent: owned.agent(),
            path: NodePath::Listen(port),
        },
        None => Reach::Listen { port },
    })
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
pub fn free_local_port() -> std::io::Result<u16> {
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
