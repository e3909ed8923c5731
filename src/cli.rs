//! The command line, as clap types only. `lib.rs` turns these into domain requests.

use std::path::PathBuf;

use crate::profile::settings::Recipe;

use clap::{Args, Parser, Subcommand};

/// Open a ParaView session on an HPC cluster from one command.
///
/// pvlaunch reads ParaView server profiles (`.pvsc` files), submits pvserver as a batch job,
/// builds the ssh tunnel the site needs and starts or waits for the local ParaView client.
#[derive(Debug, Parser)]
#[command(
    name = "pvlaunch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_long_help = "Examples:
  pvlaunch connect cluster-a            submit pvserver, build the tunnel, start ParaView
  pvlaunch connect cluster-a --dry-run  every command it would run, nothing run
  pvlaunch list                         profiles from every source, and where each comes from
  pvlaunch show cluster-a               resolved options, variables and the command ParaView runs
  pvlaunch show cluster-a --set NODES=4 the same with an option changed
  pvlaunch validate site.pvsc           check a file for a site administrator
  pvlaunch -f pvsc/cluster-a.pvsc list  read an extra profile file")]
pub struct Cli {
    /// Read profiles from FILE as well (repeatable; later files win).
    #[arg(short = 'f', long = "profiles", value_name = "FILE", global = true)]
    pub profiles: Vec<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (repeat for more); also RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every profile pvlaunch can see, with the file it came from.
    ///
    /// Sources, later ones winning for the same name: ParaView's own servers.pvsc, every
    /// *.pvsc in pvlaunch's config folder, the files in PVLAUNCH_PROFILES, then each -f FILE.
    #[command(after_long_help = "Examples:
  pvlaunch list
  pvlaunch list --json | jq -r '.[].name'
  PVLAUNCH_PROFILES=site.pvsc:mine.pvsc pvlaunch list")]
    List,

    /// Show one profile resolved: options, variables, endpoint and the exact argv.
    #[command(after_long_help = "Examples:
  pvlaunch show cluster-a
  pvlaunch show cluster-a --set NODES=4 --set PARTITION=debug
  pvlaunch show 'ORNL andes' --json")]
    Show(ShowArgs),

    /// Check profile files: every error and warning at once; non-zero exit on any error.
    #[command(after_long_help = "Examples:
  pvlaunch validate /etc/paraview/site.pvsc
  pvlaunch validate pvsc/*.pvsc --json")]
    Validate(ValidateArgs),

    /// Open a ParaView session: submit pvserver as a batch job, build the tunnel, start the client.
    ///
    /// Runs until the ParaView connection closes, the job ends, or you stop it (Ctrl-C: a clean
    /// stop that cancels the job and closes every forward; a second Ctrl-C stops at once).
    /// Progress goes to stderr; --json prints NDJSON events on stdout; under ParaView's Connect
    /// dialog (PV_* variables in the environment) plain lines go to stdout.
    #[command(after_long_help = "Examples:
  pvlaunch connect cluster-a                          start ParaView and connect it
  pvlaunch connect cluster-a --set NODES=4 --dry-run  print every command, run nothing
  pvlaunch connect cluster-a --client pvpython --script render.py -- out.png
  pvlaunch connect cluster-a --client wait --port 11111   a client you started yourself
  pvlaunch --json connect cluster-a --client pvpython --script render.py | jq -c .event

Exit codes: 0 session ended, 2 usage, 3 invalid profile, 4 ssh, 5 job failed, 6 site does not
allow the recipe, 7 timeout, 8 client, 128+N signal N.")]
    Connect(ConnectArgs),

    /// Diagnose the path to a site: ssh, forwarding, scheduler, ParaView, nodes, this machine.
    ///
    /// Probes each link in order and prints one row per check: its id, the verdict (ok, warn,
    /// fail, or skipped because of an earlier failure), what was found, and for warnings and
    /// failures the command, the output that decided and the fix. Ends with the recipes that
    /// can work and the one `auto` would take. The paths between nodes are tried from inside a
    /// short real job (cancelled at the end). Every check has a bounded time.
    #[command(after_long_help = "Examples:
  pvlaunch check cluster-a                  a profile's login, scheduler, partition, modules
  pvlaunch check --login login.hpc.example.org --user ann
  pvlaunch check --login login --jump gate  a site behind a gateway
  pvlaunch --json check cluster-a | jq -r '.checks[] | select(.verdict==\"fail\") | .id'

Exit codes: 0 a recipe can work, 2 usage, 3 invalid profile, 4 ssh fails (no login), 6 no recipe
can work at this site.")]
    Check(CheckArgs),

    /// Write a profile for a new site: run the checks, then write NAME.pvsc to pvlaunch's
    /// config folder.
    ///
    /// The profile has the scheduler found, the partitions as a choice (from sinfo / qstat -Q)
    /// with a default, nodes, ranks and walltime limited by the site, the ParaView module that
    /// matches the local client, the recipe the checks chose, and a <CommandStartup> that runs
    /// pvlaunch, so the same file works in ParaView's Connect dialog. Asks questions only on a
    /// terminal (--yes takes the defaults). When no recipe can work, writes nothing and says why.
    #[command(after_long_help = "Examples:
  pvlaunch init mycluster --login login.hpc.example.org
  pvlaunch init mycluster --login login --user ann --jump gate --yes
  pvlaunch init mycluster --login login --install-paraview")]
    Init(InitArgs),

    /// Add a profile to ParaView's user servers.pvsc, so its Connect dialog lists it.
    ///
    /// The file (~/.config/ParaView/servers.pvsc on Linux) is copied aside first
    /// (servers.pvsc.pvlaunch-backup-SECONDS); the user's other servers are kept, a server of
    /// the same name is replaced, and the servers are written sorted by name, as ParaView
    /// itself writes the file.
    #[command(after_long_help = "Examples:
  pvlaunch install-paraview mycluster
  pvlaunch install-paraview mycluster --file /tmp/servers.pvsc")]
    InstallParaview(InstallParaviewArgs),

    /// End the ssh login pvlaunch kept for a profile's login host (`persist`).
    ///
    /// Sessions that used `--persist` or <Login persist> leave their ssh master running so the
    /// next session needs no one-time code; this ends it at once. Exit 0 when it ended or there
    /// was none.
    #[command(after_long_help = "Examples:
  pvlaunch logout cluster-a")]
    Logout(LogoutArgs),

    /// Forward TCP or Unix-socket connections, like portfwd (in the foreground).
    ///
    /// Each --listen is paired with the --to at the same position; --config reads portfwd's
    /// configuration syntax instead (or as well). Listens on loopback unless told otherwise.
    /// Once every listener is bound, prints `listening on ADDR -> TARGET` per listener on stdout
    /// (with --json, one JSON object per event), so a caller learns the port chosen for port 0.
    /// Connections are logged on stderr. SIGINT, SIGTERM or SIGHUP stop it: listeners close,
    /// open connections get --grace to finish, then are closed; a second signal stops at once.
    #[command(after_long_help = "Examples:
  pvlaunch relay --listen 11111 --to client-host:11111
  pvlaunch relay --listen 0.0.0.0:0 --to localhost:40123 --allow 10.1.0.0/16
  pvlaunch relay --listen unix:/tmp/pv.sock --to localhost:11111
  pvlaunch relay --config fwd.cfg          portfwd's syntax (docs/relay.md)
  pvlaunch --json relay --listen 0 --to client-host:11111 | head -n1
  pvlaunch relay --listen '*:0' --to unix:/tmp/pv.sock --key-file T.key --accept-key
                                           only peers that prove the session key get through
  pvlaunch relay --listen 0 --to node1:4000 --key-file T.key --connect-key --same-user
                                           this user's processes only; prove the key to node1
  pvlaunch relay --listen 0 --to client:11111 --stop-on-stdin-eof --stdin-heartbeat 20
                                           stop when stdin closes or is silent for 20 s")]
    Relay(RelayArgs),

    /// Run beside pvserver on a compute node (the batch job's command; not for people).
    ///
    /// Binds 127.0.0.1:0, runs COMMAND with `--server-port=PORT` appended (pvserver in
    /// reverse-connection mode to localhost), accepts exactly one connection from this user on
    /// that port, then either connects to --to and proves the session key, or accepts one
    /// connection on --listen that proves it, and joins the two. With --listen, prints
    /// `pvlaunch-node: listening: HOST:PORT` on stdout before starting COMMAND. Exits with
    /// pvserver's status; 97 when the path could not be opened; 2 for a refused key file.
    #[command(
        hide = true,
        group(clap::ArgGroup::new("hop").required(true).args(["to", "listen"])),
        after_long_help = "Examples (KEY is ~/.cache/pvlaunch/keys/TAG.key):
  pvlaunch node --key-file \"$KEY\" --to login-1:40123 -- srun pvserver ARGS
  pvlaunch node --key-file \"$KEY\" --to unix:/tmp/pvlaunch.Ab12/hop.sock -- mpiexec pvserver ARGS
  pvlaunch node --key-file \"$KEY\" --listen 0 -- srun pvserver ARGS
  pvlaunch node --key-file \"$KEY\" --listen 0 --serve-again --idle 30m -- srun pvserver ARGS
ARGS: --reverse-connection --client-host=localhost and pvserver's own options."
    )]
    Node(NodeArgs),

    /// One ssh session channel for a whole session (not for people).
    ///
    /// For sites without ssh connection sharing: `serve` runs on the login node over the ssh
    /// session's stdio; `exec` runs one command through the session's channel socket.
    #[command(hide = true, subcommand)]
    Channel(ChannelCommand),

    /// Print a shell completion script.
    #[command(after_long_help = "Examples:
  pvlaunch completions bash > ~/.local/share/bash-completion/completions/pvlaunch
  pvlaunch completions zsh > ~/.zfunc/_pvlaunch")]
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout.
    #[command(after_long_help = "Examples:
  pvlaunch man > pvlaunch.1 && man ./pvlaunch.1")]
    Man,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile's name (the `name` attribute of its <Server>).
    pub name: String,

    /// Set an option, as ParaView's dialog would (repeatable).
    #[arg(long = "set", value_name = "OPTION=VALUE")]
    pub set: Vec<String>,

    /// Treat an unknown $NAME$ in the command as an error instead of ParaView's bare NAME.
    #[arg(long)]
    pub strict: bool,
}

/// Which local client `connect` starts or waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientChoice {
    /// `none` under ParaView's Connect dialog, otherwise `paraview` if installed.
    Auto,
    /// Start the ParaView GUI, listening for the server.
    Paraview,
    /// Run a pvpython script (--script) connected to the server.
    Pvpython,
    /// Wait until a client you started listens on the port.
    Wait,
    /// ParaView started pvlaunch and already listens.
    None,
}

/// `--warn-before`'s value: a lead time, or `None` for `no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarnBefore(pub Option<std::time::Duration>);

/// `--warn-before`: the profile's own parser (`no`, or a duration).
fn warn_before_parser(text: &str) -> Result<WarnBefore, String> {
    crate::profile::settings::parse_warn_before(text)
        .map(WarnBefore)
        .map_err(|(message, hint)| match hint {
            Some(h) => format!("{message} ({h})"),
            None => message,
        })
}

/// `--recipe`: the profile layer's own list of recipes, so there is one list.
fn recipe_parser() -> impl clap::builder::TypedValueParser<Value = Recipe> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Recipe::ALL.map(Recipe::name))
        .map(|s| s.parse::<Recipe>().expect("a listed name"))
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The profile's name.
    pub name: String,

    /// Set an option, as ParaView's dialog would (repeatable).
    #[arg(long = "set", value_name = "OPTION=VALUE")]
    pub set: Vec<String>,

    /// The local client.
    #[arg(long, value_enum, default_value = "auto")]
    pub client: ClientChoice,

    /// The pvpython script for --client pvpython.
    #[arg(long, value_name = "FILE", required_if_eq("client", "pvpython"))]
    pub script: Option<PathBuf>,

    /// Arguments for the pvpython script (after `--`).
    #[arg(last = true, value_name = "SCRIPT_ARGS")]
    pub script_args: Vec<String>,

    /// The port the local client listens on (default: the profile's).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Override the profile's recipe.
    #[arg(long, value_parser = recipe_parser())]
    pub recipe: Option<Recipe>,

    /// Leave the job running when pvlaunch exits.
    #[arg(long)]
    pub keep_job: bool,

    /// How long a session whose network link dropped tries to come back (the job stays queued
    /// or running, pvlaunch logs in again and resumes ParaView's stream) before it ends and the
    /// job is cancelled: `90s`, `5m`, `1h`; overrides <Connection grace> (default 5m).
    #[arg(long, value_name = "DURATION", conflicts_with = "no_grace")]
    pub grace: Option<String>,

    /// A dropped link ends the session at once, and the login node cancels the job.
    #[arg(long)]
    pub no_grace: bool,

    /// Warn this long before the job's wall time ends (`5m`, `90s`, `no`); overrides
    /// <Job warn-before>.
    #[arg(long, value_name = "DURATION", value_parser = warn_before_parser)]
    pub warn_before: Option<WarnBefore>,

    /// Give up when the job has not started after this long (`30m`, `4h`); overrides
    /// <Job queue-timeout>.
    #[arg(long, value_name = "DURATION", value_parser = crate::relay::parse_duration)]
    pub queue_timeout: Option<std::time::Duration>,

    /// Print the plan (every command, port and timeout) and run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Keep this session's ssh login for DURATION once unused (`30m`, `8h`, `1d`), so later
    /// sessions need no password or one-time code; overrides <Login persist>. End it with
    /// `pvlaunch logout PROFILE`.
    #[arg(long, value_name = "DURATION")]
    pub persist: Option<String>,

    /// Use no ssh connection sharing: one ssh connection whose one session carries every
    /// command and forward through pvlaunch's own channel (sites with `MaxSessions 1`, ssh
    /// without ControlMaster); overrides <Login multiplex>.
    #[arg(long)]
    pub no_multiplex: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The profile whose login host's kept ssh login to end.
    pub name: String,

    /// Set an option, as for connect (the login host may depend on one).
    #[arg(long = "set", value_name = "OPTION=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The profile to check (its <PVLaunch> settings); or --login.
    #[arg(required_unless_present = "login", conflicts_with_all = ["user", "jump", "setup"])]
    pub name: Option<String>,

    /// Check this login host with no profile.
    #[arg(long, value_name = "HOST", conflicts_with = "name")]
    pub login: Option<String>,

    /// The login name on the site (with --login).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Jump hosts in front of the login node, comma-separated (with --login).
    #[arg(long, value_name = "GATEWAY")]
    pub jump: Option<String>,

    /// A shell line run before pvserver is looked for, e.g. `module load paraview` (with
    /// --login; repeatable).
    #[arg(long, value_name = "LINE")]
    pub setup: Vec<String>,

    /// Check this partition or queue instead of the profile's.
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,

    /// Set a profile option, as for connect (repeatable).
    #[arg(long = "set", value_name = "OPTION=VALUE")]
    pub set: Vec<String>,

    /// No test job: the paths between the nodes are not checked.
    #[arg(long)]
    pub no_job: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The new profile's name (the server's name in ParaView's Connect dialog).
    pub name: String,

    /// The login host (an ~/.ssh/config alias works).
    #[arg(long, value_name = "HOST")]
    pub login: String,

    /// The login name on the site.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Jump hosts in front of the login node, comma-separated.
    #[arg(long, value_name = "GATEWAY")]
    pub jump: Option<String>,

    /// The default partition or queue (default: the site's).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,

    /// Set-up lines for the job instead of the module found, e.g. `module load paraview`
    /// (repeatable).
    #[arg(long, value_name = "LINE")]
    pub setup: Vec<String>,

    /// Take every default; ask nothing.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Replace a profile file of that name.
    #[arg(long)]
    pub force: bool,

    /// Also add the profile to ParaView's servers.pvsc (as install-paraview does).
    #[arg(long)]
    pub install_paraview: bool,
}

#[derive(Debug, Args)]
pub struct InstallParaviewArgs {
    /// The profile to add.
    pub name: String,

    /// ParaView's servers.pvsc to change (default: the user's).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("key_use").multiple(true)))]
pub struct RelayArgs {
    /// Accept connections on ADDR: PORT (loopback), HOST:PORT, [IPV6]:PORT, *:PORT (every
    /// interface) or unix:/path (mode 0600). Port 0 picks a free port. Repeatable.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<crate::relay::ListenAddr>,

    /// Forward the connections of the matching --listen to HOST:PORT or unix:/path.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Vec<crate::relay::Target>,

    /// Read forwards from a portfwd configuration file (TCP sections only).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Accept TCP connections only from these sources: addresses, networks (10.1.0.0/16) or
    /// host names. Repeatable or comma-separated; default: any source.
    #[arg(long, value_name = "SOURCE", value_delimiter = ',')]
    pub allow: Vec<crate::relay::AllowSpec>,

    /// Refuse connections beyond this many open at once.
    #[arg(long, value_name = "N", default_value_t = crate::relay::MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Give up connecting to a target after this long (500ms, 10s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::relay::parse_duration)]
    pub connect_timeout: std::time::Duration,

    /// Close connections idle this long in both directions. Default: never.
    #[arg(long, value_name = "DURATION", value_parser = crate::relay::parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,

    /// On a stop signal, let open connections run this long before closing them.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::relay::parse_duration)]
    pub grace: std::time::Duration,

    /// Stop when standard input is closed (e.g. when the ssh connection that started it dies).
    #[arg(long)]
    pub stop_on_stdin_eof: bool,

    /// With --stop-on-stdin-eof: stop as well when nothing arrives on standard input for SECS
    /// seconds (any bytes count; `500ms`, `2m` work too), for a link that dies without closing.
    #[arg(long, value_name = "SECS", requires = "stop_on_stdin_eof", value_parser = heartbeat)]
    pub stdin_heartbeat: Option<std::time::Duration>,

    /// With --stop-on-stdin-eof: when standard input ends or goes silent, go on while PATH was
    /// modified within the heartbeat plus --lease-grace (a session that came back after a lost
    /// link refreshes it); stop once it is older or gone. A line `stop` on standard input
    /// stops at once.
    #[arg(long, value_name = "PATH", requires = "stop_on_stdin_eof")]
    pub lease: Option<PathBuf>,

    /// See --lease.
    #[arg(long, value_name = "DURATION", default_value = "0s", requires = "lease", value_parser = crate::relay::parse_duration)]
    pub lease_grace: std::time::Duration,

    /// Carry each stream over links to its target that may be lost: a lost link is made again
    /// (and the key proved again) for up to DURATION, and the stream resumes where it was. The
    /// target must be a relay with --resume-accept.
    #[arg(long, value_name = "DURATION", conflicts_with = "resume_accept", value_parser = crate::relay::parse_duration)]
    pub resume_dial: Option<std::time::Duration>,

    /// The accepting end of --resume-dial: accepted connections are links, routed by the stream
    /// they carry; one that comes back within DURATION resumes its stream.
    #[arg(long, value_name = "DURATION", value_parser = crate::relay::parse_duration)]
    pub resume_accept: Option<std::time::Duration>,

    /// The session key, for --accept-key and --connect-key: a file of this user's with no
    /// rights for group or others, holding 64 hex digits.
    #[arg(long, value_name = "PATH", requires = "key_use")]
    pub key_file: Option<PathBuf>,

    /// Every forward accepts only peers that prove the session key (pvlaunch's hop preamble);
    /// others are closed and logged as not authenticated.
    #[arg(long, requires = "key_file", group = "key_use")]
    pub accept_key: bool,

    /// Every forward proves the session key to its target before forwarding a byte; a target
    /// that cannot prove it back gets nothing.
    #[arg(long, requires = "key_file", group = "key_use")]
    pub connect_key: bool,

    /// Accept TCP connections only from processes of this user (loopback peers, by the
    /// kernel's socket table). Unix-socket peers are always checked.
    #[arg(long)]
    pub same_user: bool,

    /// How to move bytes: auto (buffer, splice(2) for bulk data on Linux), buffered or splice.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = CopyModeArg::Auto)]
    pub copy: CopyModeArg,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The session key (this user's file, mode 0600).
    #[arg(long, value_name = "PATH")]
    pub key_file: PathBuf,

    /// Connect pvserver's stream to HOST:PORT or unix:/path, which must prove the key.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: Option<crate::relay::Target>,

    /// Accept the stream's other end on [ADDR:]PORT (every interface by default; 0: a free
    /// port); the connection must prove the key.
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub listen: Option<crate::hop::node::PublicAddr>,

    /// With --listen: after pvserver exits, start a fresh one and accept the next attach (a
    /// kept allocation), until a signal or --idle.
    #[arg(long, requires = "listen")]
    pub serve_again: bool,

    /// With --serve-again: stop (exit 0) when nobody attached for this long (`30m`, `2h`).
    #[arg(long, value_name = "DURATION", requires = "serve_again", value_parser = crate::relay::parse_duration)]
    pub idle: Option<std::time::Duration>,

    /// The launcher and pvserver's argv (after `--`); `--server-port=PORT` is appended.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl From<NodeArgs> for crate::hop::node::NodeRequest {
    fn from(args: NodeArgs) -> Self {
        use crate::hop::node::Hop;
        let peer = match (args.to, args.listen) {
            (Some(to), _) => Hop::To(to),
            (None, Some(listen)) => Hop::Listen(listen),
            (None, None) => unreachable!("clap requires --to or --listen"),
        };
        crate::hop::node::NodeRequest {
            key_file: args.key_file,
            peer,
            command: args.command,
            again: args
                .serve_again
                .then_some(crate::hop::node::Again { idle: args.idle }),
        }
    }
}

/// `--stdin-heartbeat`: a duration (bare numbers are seconds) longer than zero.
fn heartbeat(text: &str) -> Result<std::time::Duration, String> {
    let beat = crate::relay::parse_duration(text)?;
    if beat.is_zero() {
        return Err("must be longer than 0 seconds".into());
    }
    Ok(beat)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyModeArg {
    Auto,
    Buffered,
    Splice,
}

impl From<RelayArgs> for crate::relay::command::RelayRequest {
    fn from(args: RelayArgs) -> Self {
        use crate::relay::CopyMode;
        crate::relay::command::RelayRequest {
            listen: args.listen,
            to: args.to,
            config: args.config,
            allow: args.allow,
            limits: crate::relay::Limits {
                max_connections: args.max_connections,
                connect_timeout: args.connect_timeout,
                idle_timeout: args.idle_timeout,
                grace: args.grace,
            },
            copy: match args.copy {
                CopyModeArg::Auto => CopyMode::Auto,
                CopyModeArg::Buffered => CopyMode::Buffered,
                CopyModeArg::Splice => CopyMode::Splice,
            },
            stop_on_stdin_eof: args.stop_on_stdin_eof,
            stdin_heartbeat: args.stdin_heartbeat,
            lease: args.lease,
            lease_grace: args.lease_grace,
            resume: match (args.resume_dial, args.resume_accept) {
                (Some(grace), _) => Some(crate::relay::ResumeSide::Dial { grace }),
                (None, Some(grace)) => Some(crate::relay::ResumeSide::Accept { grace }),
                (None, None) => None,
            },
            key_file: args.key_file,
            accept_key: args.accept_key,
            connect_key: args.connect_key,
            same_user: args.same_user,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Serve a channel on stdin/stdout (stdout carries only the channel; logs go to stderr).
    #[command(after_long_help = "Examples:
  ssh login 'exec pvlaunch channel serve'")]
    Serve {
        /// How long commands may run on after the channel ended (they are hung up: end of
        /// input, closed output, SIGHUP), before SIGTERM and SIGKILL.
        #[arg(long, value_name = "DURATION", default_value = "11m", value_parser = crate::relay::parse_duration)]
        linger: std::time::Duration,
    },

    /// Run one command through a session's channel, like `ssh -S cm host WIRE`: stdin, stdout,
    /// stderr and exit status are the command's; 255 when the channel is gone.
    #[command(after_long_help = "Examples:
  pvlaunch channel exec --socket /run/user/1000/pvlaunch-Ab12/chan.sock -- \"exec /bin/sh -c 'squeue'\"")]
    Exec {
        /// The session's channel socket.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,

        /// The command for the login node's shell (words are joined with spaces, as ssh does).
        #[arg(last = true, required = true, value_name = "WIRE")]
        wire: Vec<String>,
    },
}
