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

/// What the session will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub profile: String,
    pub recipe: Recipe,
    pub scheduler: Kind,
    pub login: String,
    pub client: Mode,
    /// The port the local client listens on.
    pub client_port: u16,
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
    #[error("the recipe `{0}` is not available in this version of pvlaunch")]
    RecipeUnavailable(&'static str),
    #[error(
        "profile `{0}` has a `cs://` resource: the client connects, which needs the two-hop recipe"
    )]
    ForwardResource(String),
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

/// The pvserver argv for a reverse connection to `client_host:port`.
pub fn pvserver_argv(
    launch: &Launch,
    client_host: &str,
    port: &str,
    connect_id: Option<u32>,
) -> Vec<String> {
    let mut argv = launch.launcher.clone();
    argv.push(launch.pvserver.clone());
    argv.push("--reverse-connection".into());
    argv.push(format!("--client-host={client_host}"));
    argv.push(format!("--server-port={port}"));
    if let Some(id) = connect_id {
        argv.push(format!("--connect-id={id}"));
    }
    argv.extend(launch.pvserver_args.iter().cloned());
    argv
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
    let recipe = overrides.recipe.unwrap_or(launch.recipe);
    match recipe {
        Recipe::Auto | Recipe::Reverse | Recipe::Relay => {}
        Recipe::TwoHop => return Err(PlanError::RecipeUnavailable("two-hop")),
        Recipe::ReverseTwoHop => return Err(PlanError::RecipeUnavailable("reverse-two-hop")),
    }
    let resource_port = match &resolved.endpoint {
        Endpoint::Listen { port } => *port,
        Endpoint::Connect { .. } => return Err(PlanError::ForwardResource(resolved.name.clone())),
        _ => crate::profile::resource::DEFAULT_PORT,
    };
    let client_port = overrides
        .client_port
        .or(launch.client_port)
        .unwrap_or(resource_port);
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
        command: pvserver_argv(launch, LOGIN_HOST_PLACEHOLDER, PORT_PLACEHOLDER, connect_id),
    };
    let job_script = kind.scheduler().render_script(&job)?;
    let client_argv = client::argv(&mode, &client::url(true, client_port), connect_id);
    let mut login = launch.login_host.clone();
    if let Some(u) = &launch.login_user {
        login = format!("{u}@{login}");
    }
    Ok(Plan {
        profile: resolved.name.clone(),
        recipe,
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
    /// The human-readable dry run.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let q = |a: &[String]| crate::quote::join(a).unwrap_or_else(|e| e.to_string());
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan for {} ({:?} recipe, {} job)",
            self.profile, self.recipe, self.scheduler
        );
        let _ = writeln!(
            s,
            "\n1. client ({}) listens on localhost:{}",
            self.client.name(),
            self.client_port
        );
        if let Some(a) = &self.client_argv {
            let _ = writeln!(s, "   $ {}", q(a));
        }
        let _ = writeln!(
            s,
            "\n2. one ssh connection to {} (all later steps reuse it)",
            self.login
        );
        let _ = writeln!(s, "   $ {}", q(&self.ssh_master));
        let remote = if self.remote_port == 0 {
            "0 (sshd picks a free port)".to_string()
        } else {
            self.remote_port.to_string()
        };
        let _ = writeln!(
            s,
            "\n3. remote forward: login node port {remote} -> pvlaunch's relay on localhost -> localhost:{}",
            self.client_port
        );
        let _ = writeln!(
            s,
            "   checked to bind an address the compute nodes reach (sshd GatewayPorts)"
        );
        let _ = writeln!(
            s,
            "\n4. submit from ~/{REMOTE_DIR} on the login node: {}  (script on stdin)",
            q(&self.submit)
        );
        for line in self.job_script.lines() {
            let _ = writeln!(s, "   | {line}");
        }
        let _ = writeln!(
            s,
            "\n5. follow the job (queue timeout {} s), wait for pvserver (connect timeout {} s)",
            self.queue_timeout.as_secs(),
            self.connect_timeout.as_secs()
        );
        let _ = writeln!(
            s,
            "\n6. on exit: {}stop the client, close the forward and the ssh connection",
            if self.keep_job {
                "keep the job (--keep-job), "
            } else {
                "cancel the job, "
            }
        );
        s
    }
}
