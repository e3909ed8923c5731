//! From a profile and the command line to a [`Plan`]: every command as an argv, every port and
//! timeout, as data. `pvlaunch connect --dry-run` prints it; the session runs it.

use std::time::Duration;

use serde::Serialize;

use crate::client::{self, Mode};
use crate::profile::resolve::Resolved;
use crate::profile::resource::Endpoint;
use crate::profile::settings::{ConnectId, Launch, OwnedHops, Recipe};
use crate::pvserver;
use crate::scheduler::{self, JobSpec, Kind};
use crate::ssh;

/// Placeholders in the dry-run rendering for what the session learns while running.
pub const LOGIN_HOST_PLACEHOLDER: &str = "<login-host>";
pub const PORT_PLACEHOLDER: &str = "<port chosen by sshd>";
pub const TUNNEL_PORT_PLACEHOLDER: &str = "<port of the tunnel>";
pub const AGENT_PLACEHOLDER: &str = "<pvlaunch on the cluster>";
pub const KEY_PLACEHOLDER: &str = "<the session's key file, 0600>";
pub const SOCKET_PLACEHOLDER: &str = "<login node's forward socket>";

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
    /// How long before the job's wall time ends the session warns (`None`: never).
    #[serde(serialize_with = "opt_secs")]
    pub warn_before: Option<Duration>,
    pub keep_job: bool,
    /// How long a session waits for a lost link to come back (zero: it ends at once).
    #[serde(serialize_with = "secs")]
    pub grace: Duration,
    /// A random tag for this session's files on the login node.
    pub session_tag: String,
    /// The pvlaunch program on the login node for the relay recipe (found or copied if unset).
    pub relay_program: Option<String>,
    /// Whether the session may fall back to a path other users could reach.
    pub owned_hops: OwnedHops,
    /// Why this plan cannot keep every hop pvlaunch's own, when it knows already (ParaView
    /// connecting to a `cs://` resource itself).
    pub exposed: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
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
}

/// What the command line adds to the profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub client_port: Option<u16>,
    pub recipe: Option<Recipe>,
    pub connect_id: Option<ConnectId>,
    pub keep_job: bool,
    /// `--queue-timeout`: instead of `<Job queue-timeout>`.
    pub queue_timeout: Option<Duration>,
    /// `--warn-before`: instead of `<Job warn-before>` (`Some(None)`: no warning).
    pub warn_before: Option<Option<Duration>>,
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
    let kind = launch.scheduler;
    let walltime = launch.walltime;
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
        tag: Some(fresh.tag.clone()),
        command: if forward && mode == Mode::None {
            pvserver::argv(
                launch,
                pvserver::ServerEnd::Listen {
                    port: launch.remote_port,
                },
                connect_id,
            )
        } else {
            owned_command(recipe, launch, connect_id)
        },
    };
    let exposed = (forward && mode == Mode::None).then(|| {
        "ParaView connects to the cs:// resource itself, so pvserver accepts connections on the compute node: other users of the cluster could reach it (a csrc:// resource keeps every hop pvlaunch's own)".to_string()
    });
    let job_script = kind.scheduler().render_script(&job)?;
    // Owned two-hop: the client listens too (pvserver reverse-connects to the node agent).
    let client_listens = !forward || exposed.is_none();
    let scheme = if client_listens { "csrc" } else { "cs" };
    let url = if client_port == 0 {
        format!("{scheme}://localhost:{TUNNEL_PORT_PLACEHOLDER}")
    } else {
        client::url(client_listens, client_port)
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
        queue_timeout: overrides
            .queue_timeout
            .unwrap_or(Duration::from_secs(launch.queue_timeout_secs)),
        connect_timeout: Duration::from_secs(launch.connect_timeout_secs),
        warn_before: overrides.warn_before.unwrap_or(launch.warn_before),
        keep_job: overrides.keep_job,
        grace: launch.grace,
        session_tag: fresh.tag,
        relay_program: launch.relay_program.clone(),
        owned_hops: launch.owned_hops,
        exposed,
    })
}

/// The job's command with owned hops, placeholders for what the session learns (the dry run).
fn owned_command(recipe: Recipe, launch: &Launch, connect_id: Option<u32>) -> Vec<String> {
    use crate::pvserver::NodeLink;
    match recipe {
        Recipe::TwoHop => pvserver::node_argv(
            AGENT_PLACEHOLDER,
            KEY_PLACEHOLDER,
            NodeLink::Listen(launch.remote_port),
            launch,
            connect_id,
        ),
        Recipe::ReverseTwoHop => pvserver::hop_owned_argv(
            LOGIN_HOST_PLACEHOLDER,
            SOCKET_PLACEHOLDER,
            AGENT_PLACEHOLDER,
            KEY_PLACEHOLDER,
            launch,
            connect_id,
        ),
        Recipe::Auto | Recipe::Reverse | Recipe::Relay => pvserver::node_argv(
            AGENT_PLACEHOLDER,
            KEY_PLACEHOLDER,
            NodeLink::To(&format!("{LOGIN_HOST_PLACEHOLDER}:{PORT_PLACEHOLDER}")),
            launch,
            connect_id,
        ),
    }
}

/// The wall time in words: how long, ParaView's countdown, pvlaunch's warning.
pub fn walltime_words(
    walltime: Option<scheduler::Walltime>,
    warn_before: Option<Duration>,
    countdown_command: bool,
) -> String {
    let Some(w) = walltime else {
        return "wall time: the site's default (no <Job walltime>): no countdown in ParaView, no warning".into();
    };
    let countdown = if countdown_command {
        "ParaView shows the minutes left (pvserver --timeout, --timeout-command)"
    } else {
        "ParaView counts down from the connection (pvserver --timeout)"
    };
    let warn = match warn_before {
        Some(d) if d.as_secs() % 60 == 0 => {
            format!("pvlaunch warns {} min before the end", d.as_secs() / 60)
        }
        Some(d) => format!("pvlaunch warns {} s before the end", d.as_secs()),
        None => "no warning from pvlaunch (warn-before no)".into(),
    };
    format!(
        "wall time {} ({} min): {countdown}; {warn}; at the end the client is left to exit on its own (up to 10 min), exit code 9",
        w.hms(),
        w.as_secs().div_ceil(60)
    )
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

    /// What the session does about the job's wall time, in one line (dry run and `show`).
    pub fn walltime_line(&self) -> String {
        walltime_words(self.job.walltime, self.warn_before, !cfg!(windows))
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
        if let Some(why) = &self.exposed {
            let _ = writeln!(s, "\n{}. not owned hops: {why}", next());
        } else {
            let _ = writeln!(
                s,
                "\n{}. owned hops: pvlaunch on the cluster (found, or this binary copied to ~/{REMOTE_DIR}/bin), a fresh session key in ~/{REMOTE_DIR}/keys (0600, never on a command line)",
                next()
            );
            let _ = writeln!(
                s,
                "   pvserver connects only to `pvlaunch node` beside it (localhost, checked to be this user's); every hop between hosts proves the key"
            );
            let _ = writeln!(
                s,
                "   if pvlaunch cannot run on the cluster: {}",
                match self.owned_hops {
                    OwnedHops::Preferred =>
                        "the plain path, which other users of the cluster could reach (a warning says so)",
                    OwnedHops::Required => "stop (owned-hops=\"required\")",
                }
            );
        }
        match self.recipe {
            Recipe::Reverse | Recipe::Auto => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward: login node port {remote} -> pvlaunch's relay on localhost (accepts only the session's key) -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   checked to bind an address the compute nodes reach (sshd GatewayPorts){}",
                    if self.recipe == Recipe::Auto {
                        "; if it is on loopback, a relay on the login node in front of a Unix-socket forward"
                    } else {
                        ""
                    }
                );
            }
            Recipe::Relay => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward from a Unix socket in a private folder on the login node -> pvlaunch's relay on localhost -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   `pvlaunch relay` on the login node listens for the compute nodes, accepts only the session's key, and forwards to the socket"
                );
            }
            Recipe::ReverseTwoHop => {
                let _ = writeln!(
                    s,
                    "\n{}. remote forward from a Unix socket in a private folder on the login node -> pvlaunch's relay on localhost -> localhost:{}",
                    next(),
                    self.client_port
                );
                let _ = writeln!(
                    s,
                    "   the job's own ssh connection forwards a Unix socket on its compute node to it; the node agent connects through it"
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
        let _ = writeln!(s, "   {}", self.walltime_line());
        if self.forward() {
            let port = if self.client_port == 0 {
                TUNNEL_PORT_PLACEHOLDER.to_string()
            } else {
                self.client_port.to_string()
            };
            if self.exposed.is_some() {
                let _ = writeln!(
                    s,
                    "   read `Accepting connection(s): NODE:PORT` from ~/{REMOTE_DIR}/{}",
                    output_path(&self.session_tag)
                );
                let _ = writeln!(
                    s,
                    "\n{}. local forward 127.0.0.1:<free port> -> the login node -> NODE:PORT; pvlaunch's relay on localhost:{port} in front of it (accepts only this user's connections)",
                    next()
                );
                let _ = writeln!(
                    s,
                    "\n{}. client ({}) connects to cs://localhost:{port}",
                    next(),
                    self.client.name(),
                );
            } else {
                let _ = writeln!(
                    s,
                    "   read `pvlaunch-node: listening: NODE:PORT` from ~/{REMOTE_DIR}/{} (the node agent, once pvserver has connected to it)",
                    output_path(&self.session_tag)
                );
                let _ = writeln!(
                    s,
                    "\n{}. local forward 127.0.0.1:<free port> -> the login node -> NODE:PORT (the node agent)",
                    next()
                );
                let _ = writeln!(
                    s,
                    "\n{}. client ({}) listens on csrc://localhost:{port}; pvlaunch proves the key to the node agent through the forward and joins the two (nothing else listens on this machine)",
                    next(),
                    self.client.name(),
                );
            }
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
    r.name()
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
        plan_of(PROFILE, sets, overrides, pvpython())
    }

    fn pvpython() -> Mode {
        Mode::Pvpython {
            program: "pvpython".into(),
            script: "s.py".into(),
            args: vec![],
        }
    }

    fn plan_of(
        profile: &str,
        sets: &[&str],
        overrides: Overrides,
        mode: Mode,
    ) -> Result<Plan, PlanError> {
        let report = parse_source(Source::new("t.pvsc", profile));
        assert!(!report.has_errors(), "{}", report.rendered_errors());
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
                AGENT_PLACEHOLDER,
                "node",
                "--key-file",
                KEY_PLACEHOLDER,
                "--to",
                "<login-host>:<port chosen by sshd>",
                "--",
                "srun",
                "-n",
                "12",
                "pvserver",
                "--reverse-connection",
                "--client-host=localhost",
                "--connect-id=77",
                "--timeout=30",
                &format!("--timeout-command={}", pvserver::TIMEOUT_COMMAND),
                "--title=viz debug"
            ]
        );
        assert!(p.render().contains("owned hops"));
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
        assert_eq!(
            p.queue_timeout,
            Duration::from_secs(3600),
            "a default for a person"
        );
        assert_eq!(p.connect_timeout, Duration::from_secs(60));
        let text = p.render();
        assert!(text.contains("cancel the job"), "{text}");
        assert!(
            text.contains("wall time 00:30:00 (30 min): ParaView shows the minutes left"),
            "the dry run states the wall time: {text}"
        );
        assert!(
            text.contains("pvlaunch warns 5 min before the end"),
            "{text}"
        );
        assert!(text.contains("exit code 9"), "{text}");
    }

    #[test]
    fn overrides_win() {
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
        let p = plan(
            &[],
            Overrides {
                queue_timeout: Some(Duration::from_secs(120)),
                warn_before: Some(None),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.queue_timeout, Duration::from_secs(120));
        assert_eq!(p.warn_before, None);
        assert!(p.render().contains("queue timeout 120 s"));
        assert!(p.render().contains("no warning from pvlaunch"));
    }

    #[test]
    fn two_hop_runs_a_listening_pvserver_and_the_client_learns_its_port_later() {
        let p = plan(
            &[],
            Overrides {
                recipe: Some(Recipe::TwoHop),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.forward());
        assert_eq!(
            p.job.command,
            vec![
                AGENT_PLACEHOLDER,
                "node",
                "--key-file",
                KEY_PLACEHOLDER,
                "--listen",
                "0",
                "--",
                "srun",
                "-n",
                "8",
                "pvserver",
                "--reverse-connection",
                "--client-host=localhost",
                "--connect-id=77",
                "--timeout=30",
                &format!("--timeout-command={}", pvserver::TIMEOUT_COMMAND),
                "--title=viz debug"
            ]
        );
        // pvlaunch starts the client: any free port, known once the tunnel is open.
        assert_eq!(p.client_port, 0);
        let argv = p.client_argv.clone().unwrap();
        assert_eq!(
            argv[..3],
            ["pvpython", "--force-offscreen-rendering", "--connect-id=77"]
        );
        let text = p.render();
        assert!(text.contains("pvlaunch-node: listening"), "{text}");
        assert!(text.contains("local forward 127.0.0.1"), "{text}");
        assert!(!text.contains("listens on localhost"), "{text}");
        assert_eq!(
            p.client_argv_for("cs://localhost:4000").unwrap()[..3],
            argv[..3]
        );
        // An explicit client port is kept.
        let p = plan(
            &[],
            Overrides {
                recipe: Some(Recipe::TwoHop),
                client_port: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.client_port, 5000);
    }

    #[test]
    fn reverse_two_hop_wraps_pvserver_in_the_hop_script() {
        let p = plan(
            &[],
            Overrides {
                recipe: Some(Recipe::ReverseTwoHop),
                ..Default::default()
            },
        )
        .unwrap();
        let c = &p.job.command;
        assert_eq!(c[..2], ["sh", "-c"]);
        assert_eq!(
            c[3..],
            [
                "sh",
                LOGIN_HOST_PLACEHOLDER,
                SOCKET_PLACEHOLDER,
                AGENT_PLACEHOLDER,
                KEY_PLACEHOLDER,
                "srun",
                "-n",
                "8",
                "pvserver",
                "--reverse-connection",
                "--client-host=localhost",
                "--connect-id=77",
                "--timeout=30",
                &format!("--timeout-command={}", pvserver::TIMEOUT_COMMAND),
                "--title=viz debug"
            ]
        );
        assert_eq!(
            p.client_port, 11111,
            "the client listens on the resource's port"
        );
    }

    #[test]
    fn auto_takes_two_hop_for_a_cs_resource_and_paraview_must_agree_with_the_recipe() {
        let cs = PROFILE.replace("csrc://localhost:11111", "cs://localhost:11111");
        let p = plan_of(&cs, &[], Overrides::default(), pvpython()).unwrap();
        assert_eq!(p.recipe, Recipe::TwoHop);
        assert!(p.auto_reason.as_deref().unwrap().contains("cs://"));
        // Under ParaView (client none) it connects to the resource's port.
        let p = plan_of(&cs, &[], Overrides::default(), Mode::None).unwrap();
        assert_eq!((p.recipe, p.client_port), (Recipe::TwoHop, 11111));
        let reverse = Overrides {
            recipe: Some(Recipe::Reverse),
            ..Default::default()
        };
        assert!(matches!(
            plan_of(&cs, &[], reverse.clone(), Mode::None),
            Err(PlanError::ForwardResource(_))
        ));
        // A client pvlaunch starts is told where to listen: fine.
        assert!(plan_of(&cs, &[], reverse, pvpython()).is_ok());
        let two_hop = Overrides {
            recipe: Some(Recipe::TwoHop),
            ..Default::default()
        };
        assert!(matches!(
            plan_of(PROFILE, &[], two_hop, Mode::None),
            Err(PlanError::ReverseResource(_))
        ));
        // A csrc:// resource under auto stays reverse (decided against the site).
        assert_eq!(
            plan(&[], Overrides::default()).unwrap().recipe,
            Recipe::Auto
        );
    }
}
