//! The wiki's first recipe: a remote forward on the login node, reached by pvserver directly.

use super::{Ctx, NodePath, Owned, Reach};
use crate::client;
use crate::events::Event;
use crate::outcome::Failure;
use crate::ssh;

/// The forward sshd opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    /// Bound to an address compute nodes reach (not loopback).
    pub compute_facing: bool,
}

/// Ask for `-R 0.0.0.0:PORT:localhost:LOCAL` and read where sshd really bound it.
pub async fn open(ctx: &mut Ctx<'_>) -> Result<Forward, Failure> {
    let port = forward(ctx, Some("0.0.0.0")).await?;
    let out = ctx
        .master
        .exec(
            "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null",
            None,
            ssh::COMMAND_TIMEOUT,
        )
        .await
        .map_err(|e| Failure::ssh(e.to_string()))?;
    let bind = client::parse_proc_net_tcp(&out.stdout)
        .into_iter()
        .find(|s| s.listening && s.port == port)
        .map(|s| s.address);
    let compute_facing = bind.is_some_and(|a| !a.is_loopback());
    ctx.reporter.emit(Event::ForwardOpened {
        remote_port: port,
        bind_address: bind.map_or("unknown".into(), |a| a.to_string()),
        compute_facing,
    });
    Ok(Forward {
        port,
        compute_facing,
    })
}

/// What the job does with a forward compute nodes reach: its node agent connects there
/// (owned), or pvserver itself does.
pub fn reach(ctx: &Ctx<'_>, port: u16) -> Reach {
    match ctx.owned {
        Some(owned) => Reach::Node {
            agent: owned.agent(),
            path: NodePath::To(format!("{}:{port}", ctx.login_host)),
        },
        None => Reach::Reverse {
            client_host: ctx.login_host.to_string(),
            port,
        },
    }
}

/// The forward from a Unix socket in the session's private folder on the login node (sshd
/// creates it 0600): no other user there can connect to it.
pub async fn open_socket(ctx: &mut Ctx<'_>, owned: &Owned) -> Result<(), Failure> {
    let path = owned.forward_socket();
    ctx.master
        .forward_remote_socket(&path, ctx.local_port)
        .await
        .map_err(|e| {
            Failure::site(
                e.to_string(),
                "the login node's sshd refuses remote forwards of Unix sockets (AllowStreamLocalForwarding, AllowTcpForwarding); see docs/recipes.md",
            )
        })?;
    ctx.reporter.emit(Event::ForwardOpened {
        remote_port: 0,
        bind_address: format!("unix:{path}"),
        compute_facing: false,
    });
    Ok(())
}

/// Close a TCP forward opened with [`open`] (best effort).
pub async fn close(ctx: &mut Ctx<'_>, port: u16) {
    let _ = ctx
        .master
        .cancel_forward_remote(Some("0.0.0.0"), port, ctx.local_port)
        .await;
}

/// A forward on the login node's loopback only (for the relay in front of it).
pub async fn open_loopback(ctx: &mut Ctx<'_>) -> Result<u16, Failure> {
    let port = forward(ctx, Some("127.0.0.1")).await?;
    ctx.reporter.emit(Event::ForwardOpened {
        remote_port: port,
        bind_address: "127.0.0.1".into(),
        compute_facing: false,
    });
    Ok(port)
}

async fn forward(ctx: &mut Ctx<'_>, bind: Option<&str>) -> Result<u16, Failure> {
    ctx.master.forward_remote(bind, ctx.plan.remote_port, ctx.local_port).await.map_err(|e| {
        Failure::site(
            e.to_string(),
            "the login node's sshd refuses remote forwards (AllowTcpForwarding); see docs/recipes.md",
        )
    })
}

/// The failure of the reverse recipe under `GatewayPorts no`.
pub fn loopback_only(login_host: &str, port: u16) -> Failure {
    Failure::site(
        format!(
            "the login node's sshd bound the forward to its loopback only (GatewayPorts no): compute nodes cannot reach {login_host}:{port}"
        ),
        "ask the site for `GatewayPorts clientspecified`, or use the relay recipe (<Connection recipe=\"relay\"/> or recipe=\"auto\")",
    )
}
