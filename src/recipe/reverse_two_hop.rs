//! The reverse two-hop recipe, for sites that allow neither `GatewayPorts` nor a relay: the
//! remote forward stays on the login node's loopback, and the job itself opens the second hop
//! from the compute node back to the login node (`ssh -L PORT:localhost:FORWARD login`, with
//! the shared home's keys). pvserver reverse-connects to `localhost:PORT` on its own node.
//!
//! The job's command is `sh -c HOP sh LOGIN FORWARD PVSERVER-ARGV...` ([`crate::pvserver::HOP`], fixed text:
//! every value is a positional argument (never parsed as shell code). The inner ssh is a
//! ControlMaster in the job's process tree (not daemonised): the scheduler's signals reach it,
//! and the script's exit closes it (`-O exit`). The local port is picked on the compute node
//! by asking the inner master for forwards on random ports until one binds
//! (`-L 0:` cannot be used: ssh refuses a local forward on port 0).

use super::{Ctx, NodePath, Owned, Reach};
use crate::outcome::Failure;

/// The login node's forward stays private to it (owned: a Unix socket in the session's 0700
/// folder; plain: its loopback); the job opens the hop to it.
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    if let Some(owned) = ctx.owned.cloned() {
        super::reverse::open_socket(ctx, &owned).await?;
        return Ok(owned_reach(ctx, &owned));
    }
    let port = super::reverse::open_loopback(ctx).await?;
    Ok(Reach::Hop {
        login_host: ctx.login_host.to_string(),
        port,
    })
}

/// The owned hop: the node agent connects through the job's ssh to the forward's socket.
pub fn owned_reach(ctx: &Ctx<'_>, owned: &Owned) -> Reach {
    Reach::Node {
        agent: owned.agent(),
        path: NodePath::Hop {
            login_host: ctx.login_host.to_string(),
            socket: owned.forward_socket(),
        },
    }
}

/// The failure when the compute node could not open the hop.
pub fn failed(why: &str, login_host: &str) -> Failure {
    let hint = if why.contains("cannot ssh") {
        format!(
            "the job's compute node must reach {login_host} with ssh without a prompt: a key in the cluster's shared home (~/.ssh/id_*, listed in ~/.ssh/authorized_keys) and {login_host}'s host key in ~/.ssh/known_hosts; or use the relay recipe"
        )
    } else {
        format!(
            "{login_host}'s sshd must allow local forwards (AllowTcpForwarding yes or local); or use the relay recipe"
        )
    };
    Failure::site(
        format!("the job could not open its ssh hop back to the login node: {why}"),
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_the_open_hop_are_read_from_the_output() {
        let tail = vec![
            "loading".to_string(),
            "pvlaunch-hop: error: node1 cannot ssh to login: Permission denied (publickey). "
                .to_string(),
        ];
        assert_eq!(
            crate::pvserver::hop_failure(&tail).unwrap(),
            "node1 cannot ssh to login: Permission denied (publickey)."
        );
        assert_eq!(crate::pvserver::hop_failure(&["fine".to_string()]), None);
        let out = "x\npvlaunch-hop: open: node1:40123 -> login:localhost:38211\nWaiting\n";
        assert_eq!(
            crate::pvserver::hop_opened(out).unwrap(),
            "node1:40123 -> login:localhost:38211"
        );
        let o = failed("node1 cannot ssh to login: Permission denied", "login");
        assert_eq!(o.code(), crate::exit::Code::Site);
        assert!(o.hint().unwrap().contains("known_hosts"));
    }
}
