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
use crate::plan::{self, Plan, ServerEnd};
use crate::profile::settings::{Launch, Recipe};
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
            Reach::Reverse { client_host, port } => plan::pvserver_argv(
                launch,
                ServerEnd::Reverse {
                    client_host,
                    port: &port.to_string(),
                },
                connect_id,
            ),
            Reach::Listen { port } => {
                plan::pvserver_argv(launch, ServerEnd::Listen { port: *port }, connect_id)
            }
            Reach::Hop { login_host, port } => {
                plan::hop_command(launch, login_host, &port.to_string(), connect_id)
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

/// Why pvserver refused a client in the handshake, as its log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ConnectId,
    Version,
    RenderingBackend,
    Dropped,
}

impl Refusal {
    /// The session's message.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ConnectId => {
                "the ParaView handshake failed: client and pvserver have different connect-ids"
            }
            Refusal::Version => {
                "the ParaView handshake failed: client and pvserver are different ParaView versions"
            }
            Refusal::RenderingBackend => {
                "the ParaView handshake failed: client and pvserver use different rendering backends"
            }
            Refusal::Dropped => {
                "the ParaView handshake failed: the connection dropped during the handshake"
            }
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Refusal::ConnectId => {
                "the client must use the session's connect-id (PVLAUNCH_CONNECT_ID, or --connect-id=N for paraview and pvpython); <Connection connect-id=\"none\"/> turns it off"
            }
            Refusal::Version | Refusal::RenderingBackend => {
                "use a client of the same ParaView major.minor version and build as pvserver on the cluster (<PVServer exec> or the <Setup> lines choose it)"
            }
            Refusal::Dropped => "see the job's output on the login node",
        }
    }
}

/// The handshake failure pvserver logged last, if any.
pub fn handshake_refusal(output: &str) -> Option<Refusal> {
    output.lines().rev().find_map(|l| {
        if l.contains("different connection id") || l.contains("connection ids do not match") {
            Some(Refusal::ConnectId)
        } else if l.contains("different ParaView version")
            || l.contains("likely a different version of ParaView")
            || l.contains("likely different versions of ParaView")
            || l.contains("GetVersion()")
            || l.contains("returns different values on the two connecting processes")
        {
            Some(Refusal::Version)
        } else if l.contains("different rendering backend") {
            Some(Refusal::RenderingBackend)
        } else if l.contains("dropped during the handshake") {
            Some(Refusal::Dropped)
        } else {
            None
        }
    })
}

/// The first line of a job's output that reports an error (pvserver's refusal of an argument,
/// a missing program or module, a line of ParaView's log at level ERR), trimmed of colour.
pub fn first_error(output: &str) -> Option<String> {
    const MARKS: [&str; 6] = [
        "ERR|",
        "was not expected",
        "command not found",
        "No such file or directory",
        "error:",
        "Error:",
    ];
    output
        .lines()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| {
            let l = l.replace("\u{1b}[0m", "").replace("\u{1b}[31m", "");
            let l = l.trim();
            // ParaView's log prefix: `(   0.3s) [pvserver.0 ]file:line   ERR| message`
            l.rsplit_once("ERR| ")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_of_a_job() {
        let out = "The following argument was not expected: --no-such-option\nUsage: pvserver [OPTIONS]\n\n[General Guidelines]\nerror: later\n";
        assert_eq!(
            first_error(out).unwrap(),
            "The following argument was not expected: --no-such-option"
        );
        let log = "\u{1b}[0m\u{1b}[31m(   0.315s) [pvserver.0      ]vtkSocketCommunicator.c:786    ERR| vtkSocketCommunicator (0x55): Could not receive tag. 1\u{1b}[0m\n";
        assert_eq!(
            first_error(log).unwrap(),
            "vtkSocketCommunicator (0x55): Could not receive tag. 1"
        );
        assert_eq!(
            first_error(
                "loading\n/var/spool/slurmd/job1/slurm_script: line 9: module: command not found\n"
            )
            .unwrap(),
            "/var/spool/slurmd/job1/slurm_script: line 9: module: command not found"
        );
        assert_eq!(first_error("Waiting for client...\nExiting...\n"), None);
    }

    #[test]
    fn handshake_refusals_from_pvserver_5_11() {
        let id = "(   6.355s) [pvserver.0 ]vtkTCPNetworkAccessMana:572    ERR| vtkTCPNetworkAccessManager (0x56): Client and server connection ids do not match\n\
                  (   6.355s) [pvserver.0 ]vtkTCPNetworkAccessMana:343   WARN| vtkTCPNetworkAccessManager (0x56): \n Connection failed during handshake. The server has a different \n connection id than the client.\n";
        assert_eq!(handshake_refusal(id), Some(Refusal::ConnectId));
        let version = " Connection failed during handshake.  The server has a different ParaView version than the client.\n";
        assert_eq!(handshake_refusal(version), Some(Refusal::Version));
        let version = "ERR| vtkTCPNetworkAccessManager (0x1): Client and server are different ParaView versions. Client reports version: 5.10 but server is version 5.11\n";
        assert_eq!(handshake_refusal(version), Some(Refusal::Version));
        let unparsed = "ERR| Client Handshake didn't parse.  The client is likely a different version of ParaView.\n";
        assert_eq!(handshake_refusal(unparsed), Some(Refusal::Version));
        let comm = "Connection failed during handshake. vtkSocketCommunicator::GetVersion()\n returns different values on the two connecting processes\n";
        assert_eq!(handshake_refusal(comm), Some(Refusal::Version));
        assert_eq!(
            handshake_refusal(" The server has a different rendering backend from the client."),
            Some(Refusal::RenderingBackend)
        );
        assert_eq!(
            handshake_refusal("Accepting connection(s): node1:1\nClient connected.\n"),
            None
        );
        assert!(Refusal::ConnectId.hint().contains("connect-id"));
    }
}
