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

use tokio::process::Child;

use crate::events::{Event, Reporter};
use crate::outcome::Failure;
use crate::plan::Plan;
use crate::profile::settings::{Launch, Recipe};
use crate::pvserver::{self, ServerEnd};
use crate::ssh::Master;

/// What the job's pvserver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Connect back to `client_host:port` (reverse, relay).
    Reverse { client_host: String, port: u16 },
    /// Listen on `port` (0: pvserver picks one and prints it); the session forwards to it
    /// (two-hop).
    Listen { port: u16 },
    /// Open an ssh hop from the compute node to `login_host`, whose loopback `port` is the
    /// forward to the client, and connect back through it (reverse-two-hop).
    Hop { login_host: String, port: u16 },
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
        }
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
    pub reporter: &'a mut Reporter,
    /// Long-lived helpers on the login node (their ssh sessions), stopped at cleanup.
    pub remote: &'a mut Vec<Child>,
}

/// Prepare the path for `plan.recipe`.
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    match ctx.plan.recipe {
        Recipe::Reverse => match reverse::open(ctx).await? {
            reverse::Forward {
                port,
                compute_facing: true,
            } => Ok(Reach::Reverse {
                client_host: ctx.login_host.to_string(),
                port,
            }),
            reverse::Forward { port, .. } => Err(reverse::loopback_only(ctx.login_host, port)),
        },
        Recipe::Auto => match reverse::open(ctx).await? {
            reverse::Forward {
                port,
                compute_facing: true,
            } => {
                ctx.reporter.emit(Event::RecipeChosen {
                    recipe: "reverse".into(),
                    reason: "sshd binds remote forwards where compute nodes reach them".into(),
                });
                Ok(Reach::Reverse {
                    client_host: ctx.login_host.to_string(),
                    port,
                })
            }
            reverse::Forward { port, .. } => {
                ctx.reporter.emit(Event::RecipeChosen {
                    recipe: "relay".into(),
                    reason: format!(
                        "sshd keeps remote forwards on the login node's loopback (GatewayPorts no): a relay on {} forwards to it",
                        ctx.login_host
                    ),
                });
                match relay::start(ctx, port).await {
                    // No relay on this login node: the job opens its own hop instead.
                    Err(Failure::NoRelay { message, .. }) => {
                        ctx.reporter.emit(Event::Warning { message });
                        ctx.reporter.emit(Event::RecipeChosen {
                            recipe: "reverse-two-hop".into(),
                            reason: format!(
                                "no relay on {host}: the job opens its own ssh hop from the compute node back to {host}'s loopback forward",
                                host = ctx.login_host
                            ),
                        });
                        Ok(Reach::Hop {
                            login_host: ctx.login_host.to_string(),
                            port,
                        })
                    }
                    other => other,
                }
            }
        },
        Recipe::Relay => {
            let port = reverse::open_loopback(ctx).await?;
            relay::start(ctx, port).await
        }
        Recipe::TwoHop => two_hop::prepare(ctx).await,
        Recipe::ReverseTwoHop => reverse_two_hop::prepare(ctx).await,
    }
}
