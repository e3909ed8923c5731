//! How pvserver on a compute node and the client find each other: one file per recipe. Each
//! prepares the path before the job is submitted and says what the job's pvserver does
//! ([`Reach`]): connect back (reverse, relay, reverse-two-hop) or listen (two-hop, whose
//! tunnel the session opens once the job runs).
//!
//! `auto` takes two-hop for a `cs://` resource (the plan decides that). Otherwise it opens the
//! reverse forward; when sshd keeps it on the login node's loopback (`GatewayPorts no`), it
//! keeps that forward and puts the relay in front of it; when no relay can run on the login
//! node, the job opens its own hop to it (reverse-two-hop).

pub mod relay;
pub mod reverse;
pub mod reverse_two_hop;
pub mod two_hop;

use std::sync::Arc;

use tokio::process::Child;

use crate::events::{Event, Reporter};
use crate::hop::Secret;
use crate::outcome::Failure;
use crate::plan::Plan;
use crate::profile::settings::{Launch, Recipe};
use crate::pvserver::{self, NodeLink, ServerEnd};
use crate::ssh::Master;

/// What the job's pvserver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connect back to `client_host:port` (reverse, relay), with no pvlaunch beside it.
    Reverse { client_host: String, port: u16 },
    /// Listen on `port` (0: pvserver picks one and prints it); the session forwards to it
    /// (two-hop), with no pvlaunch beside it.
    Listen { port: u16 },
    /// Open an ssh hop from the compute node to `login_host`, whose loopback `port` is the
    /// forward to the client, and connect back through it (reverse-two-hop), with no pvlaunch
    /// beside it.
    Hop { login_host: String, port: u16 },
    /// Owned hops: pvserver connects only to the node agent beside it, which meets the session
    /// by `path`.
    Node { agent: NodeAgent, path: NodePath },
}

/// The node agent's program and key file on the cluster (paths only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAgent {
    pub program: String,
    pub key_file: String,
}

/// How the node agent meets the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePath {
    /// It connects to `HOST:PORT` (the reverse forward, or the relay on the login node).
    To(String),
    /// It listens on this port for the session's tunnel (two-hop).
    Listen(u16),
    /// The job opens its own ssh hop to `login_host` and connects through it to the login
    /// node's Unix socket `socket` (reverse-two-hop).
    Hop { login_host: String, socket: String },
}

impl Reach {
    /// The job's command.
    pub fn job_command(&self, launch: &Launch, connect_id: Option<u32>) -> Vec<String> {
        match self {
            Reach::Reverse { client_host, port } => pvserver::argv(
                launch,
                ServerEnd::Reverse {
                    client_host,
                    port: &port.to_string(),
                },
                connect_id,
            ),
            Reach::Listen { port } => {
                pvserver::argv(launch, ServerEnd::Listen { port: *port }, connect_id)
            }
            Reach::Hop { login_host, port } => {
                pvserver::hop_command(launch, login_host, &port.to_string(), connect_id)
            }
            Reach::Node { agent, path } => match path {
                NodePath::To(endpoint) => pvserver::node_argv(
                    &agent.program,
                    &agent.key_file,
                    NodeLink::To(endpoint),
                    launch,
                    connect_id,
                ),
                NodePath::Listen(port) => pvserver::node_argv(
                    &agent.program,
                    &agent.key_file,
                    NodeLink::Listen(*port),
                    launch,
                    connect_id,
                ),
                NodePath::Hop { login_host, socket } => pvserver::hop_owned_argv(
                    login_host,
                    socket,
                    &agent.program,
                    &agent.key_file,
                    launch,
                    connect_id,
                ),
            },
        }
    }

    /// Whether every hop is pvlaunch's own.
    pub fn owned(&self) -> bool {
        matches!(self, Reach::Node { .. })
    }

    /// Whether the job opens its own ssh hop (reverse-two-hop, owned or not).
    pub fn job_hop(&self) -> bool {
        matches!(
            self,
            Reach::Hop { .. }
                | Reach::Node {
                    path: NodePath::Hop { .. },
                    ..
                }
        )
    }
}

/// What owned hops need on the cluster, prepared by the session once it is logged in.
#[derive(Debug, Clone)]
pub struct Owned {
    /// pvlaunch on the cluster (absolute path), for the node agent and the login relay.
    pub program: String,
    /// The session's key file on the shared home (absolute path, 0600).
    pub key_file: String,
    /// A private (0700) folder on the login node for the session's Unix sockets.
    pub run_dir: String,
    pub secret: Arc<Secret>,
    /// The session's lease file in the run folder, when a lost link may come back (a grace,
    /// and ssh's own connection sharing): the login relay lives while it is fresh.
    pub lease: Option<String>,
}

impl Owned {
    fn agent(&self) -> NodeAgent {
        NodeAgent {
            program: self.program.clone(),
            key_file: self.key_file.clone(),
        }
    }

    /// The login node's end of the forward to the workstation.
    pub fn forward_socket(&self) -> String {
        format!("{}/fwd.sock", self.run_dir)
    }

    /// The login node's end of the forward to the workstation's listener for resumable links.
    pub fn resume_socket(&self) -> String {
        format!("{}/fwd-resume.sock", self.run_dir)
    }
}

/// What a recipe may need from the session.
pub struct Ctx<'a> {
    pub plan: &'a Plan,
    pub master: &'a Master,
    /// The login node's own name (`hostname`), which compute nodes resolve.
    pub login_host: &'a str,
    /// pvlaunch's relay on the workstation, in front of the client.
    pub local_port: u16,
    /// Its listener for resumable links ([`crate::resume`]), when a lost link may come back.
    pub resume_port: Option<u16>,
    pub reporter: &'a mut Reporter,
    /// Long-lived helpers on the login node (their ssh sessions), stopped at cleanup.
    pub remote: &'a mut Vec<Child>,
    /// Owned hops, when pvlaunch runs on the cluster; `None`: the plain paths.
    pub owned: Option<&'a Owned>,
    /// Set by the recipe when the path it opened survives a lost link (the relay with a
    /// lease: pvlaunch on both ends of the network).
    pub resumable: bool,
}

/// The failure when the node agent beside pvserver could not reach or authenticate the
/// session.
pub fn node_failed(why: &str, login_host: &str) -> Failure {
    let hint = if why.contains("key") {
        "something other than this session answered on the session's port (another user's program, or a stale forward); start the session again, and tell the site if it repeats".to_string()
    } else {
        format!(
            "the compute nodes must reach {login_host} on the port of the forward or the relay (a firewall between them?); `pvlaunch connect --dry-run` shows the path, docs/recipes.md what each recipe needs"
        )
    };
    Failure::site(
        format!("the pvlaunch process beside pvserver could not join the session: {why}"),
        hint,
    )
}

/// Prepare the path for `plan.recipe`.
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    match ctx.plan.recipe {
        Recipe::Reverse => match reverse::open(ctx).await? {
            reverse::Forward {
                port,
                compute_facing: true,
            } => Ok(reverse::reach(ctx, port)),
            reverse::Forward { port, .. } => Err(reverse::loopback_only(ctx.login_host, port)),
        },
        Recipe::Auto => auto(ctx).await,
        Recipe::Relay => match ctx.owned {
            Some(owned) => {
                let owned = owned.clone();
                reverse::open_socket(ctx, &owned).await?;
                relay::start(ctx, &owned).await
            }
            None => Err(relay::unavailable(ctx.login_host)),
        },
        Recipe::TwoHop => two_hop::prepare(ctx).await,
        Recipe::ReverseTwoHop => reverse_two_hop::prepare(ctx).await,
    }
}

/// `auto` for a reverse resource: the forward where compute nodes reach it, else a relay on
/// the login node in front of a forward they do not reach, else the job's own hop to it.
async fn auto(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    let forward = reverse::open(ctx).await?;
    // A path that survives a dropped link (pvlaunch on both ends of it) comes first.
    let resumable = ctx
        .owned
        .is_some_and(|o| o.lease.is_some() && ctx.resume_port.is_some());
    if forward.compute_facing && !resumable {
        ctx.reporter.emit(Event::RecipeChosen {
            recipe: "reverse".into(),
            reason: "sshd binds remote forwards where compute nodes reach them".into(),
        });
        return Ok(reverse::reach(ctx, forward.port));
    }
    let Some(owned) = ctx.owned.cloned() else {
        // The plain paths: the loopback forward stays, and the job opens its own hop to it.
        ctx.reporter.emit(Event::RecipeChosen {
            recipe: "reverse-two-hop".into(),
            reason: format!(
                "sshd keeps remote forwards on the login node's loopback (GatewayPorts no) and pvlaunch cannot run on {host}: the job opens its own ssh hop from the compute node back to {host}'s loopback forward",
                host = ctx.login_host
            ),
        });
        return Ok(Reach::Hop {
            login_host: ctx.login_host.to_string(),
            port: forward.port,
        });
    };
    // A loopback TCP forward is reachable by every user of the login node: close it and
    // forward a private Unix socket instead.
    reverse::close(ctx, forward.port).await;
    reverse::open_socket(ctx, &owned).await?;
    let reason = if forward.compute_facing {
        format!(
            "a relay on {} keeps the session's link pvlaunch's on both ends, so the session survives a dropped network (docs/resilience.md); the compute-facing forward is not needed",
            ctx.login_host
        )
    } else {
        format!(
            "sshd keeps remote forwards on the login node's loopback (GatewayPorts no): a relay on {} forwards to a private socket",
            ctx.login_host
        )
    };
    ctx.reporter.emit(Event::RecipeChosen {
        recipe: "relay".into(),
        reason,
    });
    match relay::start(ctx, &owned).await {
        // No relay on this login node: the job opens its own hop instead.
        Err(Failure::NoRelay { message, .. }) => {
            ctx.reporter.emit(Event::Warning { message });
            ctx.reporter.emit(Event::RecipeChosen {
                recipe: "reverse-two-hop".into(),
                reason: format!(
                    "no relay on {host}: the job opens its own ssh hop from the compute node back to {host}'s private socket",
                    host = ctx.login_host
                ),
            });
            Ok(reverse_two_hop::owned_reach(ctx, &owned))
        }
        other => other,
    }
}
