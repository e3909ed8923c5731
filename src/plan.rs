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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::diag::Source;
    use crate::profile::parse::parse_source;
    use crate::profile::resolve::{self, Context, Strictness};

    const PROFILE: &str = r#"<Servers><Server name="c" resource="csrc://localhost:11111">
        <CommandStartup><Options>
          <Option name="N"><Range type="int" min="1" max="8" default="2"/></Option>
          <Option name="Q"><String default="viz debug"/></Option>
        </Options></CommandStartup>
        <PVLaunch version="1">
          <Login host="cluster" user="alice" jump="gate"/>
          <Job scheduler="slurm" nodes="$N$" ranks-per-node="4" walltime="30" partition="viz" account="p1">
            <Setup line="module load paraview"/>
          </Job>
          <PVServer exec="pvserver" launcher="srun -n $PVLAUNCH_RANKS$"><Arg value="--title=$Q$"/></PVServer>
          <Connection recipe="auto" remote-port="0" connect-id="random" connect-timeout="60"/>
        </PVLaunch></Server></Servers>"#;

    fn plan(sets: &[&str], overrides: Overrides) -> Result<Plan, PlanError> {
        let report = parse_source(Source::new("t.pvsc", PROFILE));
        assert!(
            report.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            report.diagnostics
        );
        let server = &report.servers[0];
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let resolved = resolve::resolve(
            server,
            &sets,
            &mut Context::fixed("5.11.0", 0.5),
            Strictness::default(),
        )
        .unwrap();
        let launch = server
            .pvlaunch
            .as_ref()
            .unwrap()
            .resolve(|n| resolved.lookup(n).map(str::to_string))
            .unwrap();
        let target = ssh::Target {
            program: "ssh".into(),
            destination: launch.login_host.clone(),
            user: launch.login_user.clone(),
            port: None,
            jump_hosts: launch.jump_hosts.clone(),
            control_path: "/tmp/x/cm".into(),
            extra_options: vec![],
        };
        let mode = Mode::Pvpython {
            program: "pvpython".into(),
            script: "s.py".into(),
            args: vec![],
        };
        build(
            &resolved,
            &launch,
            mode,
            &overrides,
            &target,
            true,
            Fresh {
                connect_id: 77,
                tag: "t1".into(),
            },
        )
    }

    #[test]
    fn the_plan_carries_every_command_and_value() {
        let p = plan(&["N=3"], Overrides::default()).unwrap();
        assert_eq!(p.recipe, Recipe::Auto);
        assert_eq!(p.login, "alice@cluster");
        assert_eq!(p.client_port, 11111);
        assert_eq!(p.connect_id, Some(77));
        assert_eq!(p.job.nodes, 3);
        assert_eq!(p.job.output_path.as_deref(), Some("pvserver-t1.out"));
        assert_eq!(
            p.job.command,
            vec![
                "srun",
                "-n",
                "12",
                "pvserver",
                "--reverse-connection",
                "--client-host=<login-host>",
                "--server-port=<port chosen by sshd>",
                "--connect-id=77",
                "--title=viz debug"
            ]
        );
        assert!(
            p.job_script.contains("#SBATCH --nodes=3"),
            "{}",
            p.job_script
        );
        assert!(
            p.job_script.contains("'--title=viz debug'"),
            "one word, quoted: {}",
            p.job_script
        );
        assert!(p.ssh_master.join(" ").contains("-J gate"));
        assert!(p.ssh_master.contains(&"BatchMode=yes".to_string()));
        assert_eq!(p.submit, vec!["sbatch", "--parsable"]);
        assert_eq!(p.queue_timeout, Duration::from_secs(86400));
        assert_eq!(p.connect_timeout, Duration::from_secs(60));
        let text = p.render();
        assert!(text.contains("cancel the job"), "{text}");
    }

    #[test]
    fn overrides_win_and_unavailable_recipes_say_so() {
        let p = plan(
            &[],
            Overrides {
                client_port: Some(22222),
                connect_id: Some(ConnectId::None),
                keep_job: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (p.client_port, p.connect_id, p.keep_job),
            (22222, None, true)
        );
        assert!(!p.job.command.iter().any(|a| a.starts_with("--connect-id")));
        assert!(p.render().contains("keep the job"));
        let e = plan(
            &[],
            Overrides {
                recipe: Some(Recipe::TwoHop),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::RecipeUnavailable("two-hop")), "{e}");
    }
}
