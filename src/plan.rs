//! From a profile and the command line to a [`Plan`]: every command as an argv, every port and
//! timeout, as data. `pvlaunch connect --dry-run` prints it; the session runs it.

use std::time::Duration;

use serde::Serialize;

use crate::client::{self, Mode};
use crate::profile::resolve::Resolved;
use crate::profile::resource::Endpoint;
use crate::profile::settings::{ConnectId, Launch, Recipe, SchedulerKind};
use crate::scheduler::{self, JobSpec, Kind, Walltime};
use crate::ssh;

/// Placeholders in the dry-run rendering for what the session learns while running.
pub const LOGIN_HOST_PLACEHOLDER: &str = "<login-host>";
pub const PORT_PLACEHOLDER: &str = "<port chosen by sshd>";
pub const TUNNEL_PORT_PLACEHOLDER: &str = "<port of the tunnel>";

/// What the session will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub profile: String,
    pub recipe: Recipe,
    /// Why `auto` became this recipe, when the plan decided it.
    pub auto_reason: Option<String>,
    pub scheduler: Kind,
    pub login: String,
    pub client: Mode,
    /// Reverse recipes: the port the local client listens on. Two-hop: the port of
    /// pvlaunch's relay the client connects to (0: a free one, chosen when the tunnel opens).
    pub client_port: u16,
    /// The client's argv (two-hop with a port still to choose: with a placeholder URL).
    pub client_argv: Option<Vec<String>>,
    pub connect_id: Option<u32>,
    /// The port asked for on the login node (0: sshd chooses).
    pub remote_port: u16,
    pub ssh_master: Vec<String>,
    pub job: JobSpec,
    /// The job script as it will be submitted, with placeholders for the login host and port.
    pub job_script: String,
    pub submit: Vec<String>,
    #[serde(serialize_with = "secs")]
    pub queue_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub connect_timeout: Duration,
    pub keep_job: bool,
    /// A random tag for this session's files on the login node.
    pub session_tag: String,
    /// The pvlaunch program on the login node for the relay recipe (found or copied if unset).
    pub relay_program: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "profile `{0}` has a `cs://` resource: ParaView connects, which needs the two-hop recipe (recipe auto or two-hop)"
    )]
    ForwardResource(String),
    #[error(
        "profile `{0}` has a `csrc://` resource: ParaView listens, which needs a reverse recipe (auto, reverse, relay or reverse-two-hop), not two-hop"
    )]
    ReverseResource(String),
    #[error("the job script cannot be written: {0}")]
    Script(#[from] scheduler::ScriptError),
    #[error("walltime: {0}")]
    Walltime(String),
}

/// What the command line adds to the profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub client_port: Option<u16>,
    pub recipe: Option<Recipe>,
    pub connect_id: Option<ConnectId>,
    pub keep_job: bool,
}

pub fn scheduler_kind(k: SchedulerKind) -> Kind {
    match k {
        SchedulerKind::Slurm => Kind::Slurm,
        SchedulerKind::Pbs => Kind::Pbs,
        SchedulerKind::Lsf => Kind::Lsf,
        SchedulerKind::None => Kind::None,
    }
}

/// How pvserver meets the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd<'a> {
    /// Connect back to `client_host:port`.
    Reverse { client_host: &'a str, port: &'a str },
    /// Connect back to `client_host`; whoever runs the argv appends `--server-port`.
    ReverseNoPort { client_host: &'a str },
    /// Listen on `port` (0: pvserver picks a free one and prints it).
    Listen { port: u16 },
}

/// The pvserver argv (launcher first).
pub fn pvserver_argv(launch: &Launch, end: ServerEnd<'_>, connect_id: Option<u32>) -> Vec<String> {
    let mut argv = launch.launcher.clone();
    argv.push(launch.pvserver.clone());
    match end {
        ServerEnd::Reverse { client_host, port } => {
            argv.push("--reverse-connection".into());
            argv.push(format!("--client-host={client_host}"));
            argv.push(format!("--server-port={port}"));
        }
        ServerEnd::ReverseNoPort { client_host } => {
            argv.push("--reverse-connection".into());
            argv.push(format!("--client-host={client_host}"));
        }
        ServerEnd::Listen { port } => argv.push(format!("--server-port={port}")),
    }
    if let Some(id) = connect_id {
        argv.push(format!("--connect-id={id}"));
    }
    argv.extend(launch.pvserver_args.iter().cloned());
    argv
}

/// The reverse-two-hop job command: the hop script around a pvserver that connects back to
/// the compute node's own end of the hop.
pub fn hop_command(
    launch: &Launch,
    login_host: &str,
    forward_port: &str,
    connect_id: Option<u32>,
) -> Vec<String> {
    crate::recipe::reverse_two_hop::job_command(
        login_host,
        forward_port,
        pvserver_argv(
            launch,
            ServerEnd::ReverseNoPort {
                client_host: "localhost",
            },
            connect_id,
        ),
    )
}

/// What is drawn fresh for each session.
#[derive(Debug, Clone)]
pub struct Fresh {
    /// The connect-id used when the policy is `random`.
    pub connect_id: u32,
    /// A tag for this session's files on the login node.
    pub tag: String,
}

impl Fresh {
    pub fn draw() -> Fresh {
        Fresh {
            connect_id: rand::random_range(1..=i32::MAX as u32),
            tag: format!("{:08x}", rand::random::<u32>()),
        }
    }
}

/// Build the plan.
pub fn build(
    resolved: &Resolved,
    launch: &Launch,
    mode: Mode,
    overrides: &Overrides,
    ssh_target: &ssh::Target,
    batch_mode: bool,
    fresh: Fresh,
) -> Result<Plan, PlanError> {
    let requested = overrides.recipe.unwrap_or(launch.recipe);
    let (recipe, auto_reason) = match (requested, &resolved.endpoint) {
        (Recipe::Auto, Endpoint::Connect { .. }) => (
            Recipe::TwoHop,
            Some(
                "the profile's resource is cs:// (the client connects): pvserver listens on the compute node, reached through the login node"
                    .to_string(),
            ),
        ),
        (r, _) => (r, None),
    };
    let forward = recipe == Recipe::TwoHop;
    // Under ParaView's Connect dialog the resource says who connects; a client pvlaunch
    // starts is told.
    if mode == Mode::None {
        match (&resolved.endpoint, forward) {
            (Endpoint::Connect { .. }, false) => {
                return Err(PlanError::ForwardResource(resolved.name.clone()));
            }
            (Endpoint::Listen { .. }, true) => {
                return Err(PlanError::ReverseResource(resolved.name.clone()));
            }
            _ => {}
        }
    }
    let resource_port = match &resolved.endpoint {
        Endpoint::Listen { port } | Endpoint::Connect { port, .. } => *port,
        _ => crate::profile::resource::DEFAULT_PORT,
    };
    let explicit_port = overrides.client_port.or(launch.client_port);
    let client_port = match (explicit_port, &mode) {
        (Some(p), _) => p,
        // A client pvlaunch starts is told the relay's port: any free one.
        (None, Mode::Paraview { .. } | Mode::Pvpython { .. }) if forward => 0,
        (None, _) => resource_port,
    };
    let connect_id = match overrides.connect_id.unwrap_or(launch.connect_id) {
        ConnectId::Random => Some(fresh.connect_id),
        ConnectId::None => None,
        ConnectId::Fixed(n) => Some(n),
    };
    let kind = scheduler_kind(launch.scheduler);
    let walltime = launch
        .walltime
        .as_deref()
        .map(|w| {
            w.parse::<Walltime>()
                .map_err(|e| PlanError::Walltime(e.to_string()))
        })
        .transpose()?;
    let job = JobSpec {
        name: launch.job_name.clone(),
        nodes: launch.nodes,
        ranks_per_node: launch.ranks_per_node,
        walltime,
        queue: launch.partition.clone(),
        account: launch.account.clone(),
        output_path: Some(output_path(&fresh.tag)),
        extra_directives: launch.directives.clone(),
        setup_lines: launch.setup.clone(),
        command: match recipe {
            Recipe::TwoHop => pvserver_argv(
                launch,
                ServerEnd::Listen {
                    port: launch.remote_port,
                },
                connect_id,
            ),
            Recipe::ReverseTwoHop => {
                hop_command(launch, LOGIN_HOST_PLACEHOLDER, PORT_PLACEHOLDER, connect_id)
            }
            Recipe::Auto | Recipe::Reverse | Recipe::Relay => pvserver_argv(
                launch,
                ServerEnd::Reverse {
                    client_host: LOGIN_HOST_PLACEHOLDER,
                    port: PORT_PLACEHOLDER,
                },
                connect_id,
            ),
        },
    };
    let job_script = kind.scheduler().render_script(&job)?;
    let url = if !forward {
        client::url(true, client_port)
    } else if client_port == 0 {
        format!("cs://localhost:{TUNNEL_PORT_PLACEHOLDER}")
    } else {
        client::url(false, client_port)
    };
    let client_argv = client::argv(&mode, &url, connect_id);
    let mut login = launch.login_host.clone();
    if let Some(u) = &launch.login_user {
        login = format!("{u}@{login}");
    }
    Ok(Plan {
        profile: resolved.name.clone(),
        recipe,
        auto_reason,
        scheduler: kind,
        login,
        client: mode,
        client_port,
        client_argv,
        connect_id,
        remote_port: launch.remote_port,
        ssh_master: ssh_target.master_argv(batch_mode),
        submit: submit_command(kind),
        job,
        job_script,
        queue_timeout: Duration::from_secs(launch.queue_timeout_secs),
        connect_timeout: Duration::from_secs(launch.connect_timeout_secs),
        keep_job: overrides.keep_job,
        session_tag: fresh.tag,
        relay_program: launch.relay_program.clone(),
    })
}

/// The folder, relative to the login node's home, where jobs are submitted from.
pub const REMOTE_DIR: &str = ".cache/pvlaunch";

/// The job's output file, relative to [`REMOTE_DIR`].
pub fn output_path(tag: &str) -> String {
    format!("pvserver-{tag}.out")
}

/// The remote command line that submits the script given on stdin.
pub fn submit_command(kind: Kind) -> Vec<String> {
    kind.scheduler().submit_command()
}

impl Plan {
    /// Whether the client connects (two-hop) rather than listens.
    pub fn forward(&self) -> bool {
        self.recipe == Recipe::TwoHop
    }

    /// The client's argv for the URL it must use.
    pub fn client_argv_for(&self, url: &str) -> Option<Vec<String>> {
        client::argv(&self.client, url, self.connect_id)
    }

    /// The human-readable dry run.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let q = |a: &[String]| crate::quote::join(a).unwrap_or_else(|e| e.to_string());
        let mut s = String::new();
        let mut step = 0;
        let mut next = || {
            step += 1;
            step
        };
        let _ = writeln!(
            s,
            "plan for {} ({} recipe, {} job)",
            self.profile,
            recipe_name(self.recipe),
            self.scheduler
        );
        if let Some(r) = &self.auto_reason {
            let _ = writeln!(s, "   recipe auto: {r}");
        }
        if !self.forward() {
            let _ = writeln!(
                s,
                "\n{}. client ({}) listens on localhost:{}",
                next(),
                self.client.name(),
                self.client_port
            );
            if let Some(a) = &self.client_argv {
                let _ = writeln!(s, "   $ {}", q(a));
            }
        }
        let _ = writeln!(
            s,
            "\n{}. one ssh connection to {} (all later steps reuse it)",
            next(),
            self.login
        );
        let _ = writeln!(s, "   $ {}", q(&self.ssh_master));
        let remote = if self.remote_port == 0 {
            "0 (sshd picks a free port)".to_string()
        } else {
            self.remote_port.to_string()
        };
        match self.recipe {
            Recipe::Reverse | Recipe::Auto => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward: login node port {remote} -> pvlaunch's relay on localhost -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   checked to bind an address the compute nodes reach (sshd GatewayPorts){}",
                    if self.recipe == Recipe::Auto {
                        "; if it is on loopback, a relay on the login node in front of it"
                    } else {
                        ""
                    }
                );
            }
            Recipe::Relay => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward on the login node's loopback, port {remote} -> pvlaunch's relay on localhost -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   `pvlaunch relay` on the login node listens for the compute nodes and forwards to it"
                );
            }
            Recipe::ReverseTwoHop => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward on the login node's loopback, port {remote} -> pvlaunch's relay on localhost -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   the job opens `ssh -L PORT:localhost:<forward> <login-host>` from its compute node; pvserver connects to localhost:PORT"
                );
            }
            Recipe::TwoHop => {}
        }
        let _ = writeln!(
            s,
            "\n{}. submit from ~/{REMOTE_DIR} on the login node: {}  (script on stdin)",
            next(),
            q(&self.submit)
        );
        for line in self.job_script.lines() {
            let _ = writeln!(s, "   | {line}");
        }
        let _ = writeln!(
            s,
            "\n{}. follow the job (queue timeout {} s), wait for pvserver (connect timeout {} s)",
            next(),
            self.queue_timeout.as_secs(),
            self.connect_timeout.as_secs()
        );
        if self.forward() {
            let _ = writeln!(
                s,
                "   read `Accepting connection(s): NODE:PORT` from ~/{REMOTE_DIR}/{}",
                output_path(&self.session_tag)
            );
            let local = if self.client_port == 0 {
                "a free port".to_string()
            } else {
                format!("localhost:{}", self.client_port)
            };
            let _ = writeln!(
                s,
                "\n{}. local forward 127.0.0.1:<free port> -> the login node -> NODE:PORT; pvlaunch's relay on {local} in front of it",
                next()
            );
            let _ = writeln!(
                s,
                "\n{}. client ({}) connects to cs://localhost:{}",
                next(),
                self.client.name(),
                if self.client_port == 0 {
                    TUNNEL_PORT_PLACEHOLDER.to_string()
                } else {
                    self.client_port.to_string()
                }
            );
            if let Some(a) = &self.client_argv {
                let _ = writeln!(s, "   $ {}", q(a));
            }
        }
        let _ = writeln!(
            s,
            "\n{}. on exit: {}stop the client, close the forwards and the ssh connection",
            next(),
            if self.keep_job {
                "keep the job (--keep-job), "
            } else {
                "cancel the job, "
            }
        );
        s
    }
}

/// A recipe's name as profiles write it.
pub fn recipe_name(r: Recipe) -> &'static str {
    match r {
        Recipe::Auto => "auto",
        Recipe::Reverse => "reverse",
        Recipe::Relay => "relay",
        Recipe::TwoHop => "two-hop",
        Recipe::ReverseTwoHop => "reverse-two-hop",
    }
}
