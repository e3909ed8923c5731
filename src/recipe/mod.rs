//! How pvserver on a compute node reaches the client: one file per recipe. Each prepares the
//! path before the job is submitted and says where pvserver must connect ([`Reach`]).
//!
//! `auto` opens the reverse forward; when sshd keeps it on the login node's loopback
//! (`GatewayPorts no`), it keeps that forward and puts the relay in front of it.

pub mod relay;
pub mod reverse;

use tokio::process::Child;

use crate::events::{Event, Reporter};
use crate::exit::Code;
use crate::plan::Plan;
use crate::profile::settings::Recipe;
use crate::session::Outcome;
use crate::ssh::Master;

/// Where the job's pvserver connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub client_host: String,
    pub port: u16,
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
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Outcome> {
    match ctx.plan.recipe {
        Recipe::Reverse => match reverse::open(ctx).await? {
            reverse::Forward {
                port,
                compute_facing: true,
            } => Ok(Reach {
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
                Ok(Reach {
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
                relay::start(ctx, port).await
            }
        },
        Recipe::Relay => {
            let port = reverse::open_loopback(ctx).await?;
            relay::start(ctx, port).await
        }
        Recipe::TwoHop | Recipe::ReverseTwoHop => Err(Outcome::fail(
            Code::Usage,
            "this recipe is not available in this version of pvlaunch",
            None,
        )),
    }
}
