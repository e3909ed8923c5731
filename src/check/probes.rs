//! The effects of `pvlaunch check`: local probes, one ssh login (a ControlMaster of its own),
//! forwards asked for from outside, scheduler commands, and a short real test job for the
//! paths between nodes. Each probe has a bounded time; what its output means is decided by the
//! pure functions of [`super`].

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{Id, Partition, Row, SiteFacts, Verdict};
use crate::quote;
use crate::scheduler::{self, CommandOutput, JobSpec, JobState, Kind, Walltime};
use crate::ssh::{self, Master, Target};

/// The longest a single probe through the master may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a TCP connect (ssh port, local probes) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the test job may wait in the queue by default.
pub const JOB_QUEUE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the running test job may take to answer.
pub const JOB_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The walltime of the test job.
pub const JOB_WALLTIME: Duration = Duration::from_secs(300);

/// What to check: a profile's settings, or a bare login host.
#[derive(Debug, Clone)]
pub struct Site {
    pub profile: Option<String>,
    pub login: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub jump: Vec<String>,
    pub askpass: Option<String>,
    /// The profile's scheduler; `None`: find out.
    pub scheduler: Option<Kind>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub walltime: Option<Walltime>,
    pub nodes: u32,
    pub ranks_per_node: u32,
    /// Shell lines run before pvserver (modules), verbatim.
    pub setup: Vec<String>,
    pub pvserver: String,
    /// The MPI launcher's program (`mpiexec`); `None`: look for one.
    pub launcher: Option<String>,
    pub client_port: u16,
    pub queue_timeout: Duration,
    /// Run the test job for the paths between nodes.
    pub job: bool,
    /// Extra `ssh -o` options.
    pub ssh_options: Vec<String>,
}

impl Site {
    /// A login host with no profile: everything else found out.
    pub fn bare(login: &str) -> Site {
        Site {
            profile: None,
            login: login.to_string(),
            user: None,
            port: None,
            jump: Vec::new(),
            askpass: None,
            scheduler: None,
            partition: None,
            account: None,
            walltime: None,
            nodes: 1,
            ranks_per_node: 1,
            setup: Vec::new(),
            pvserver: "pvserver".into(),
            launcher: None,
            client_port: 11111,
            queue_timeout: JOB_QUEUE_TIMEOUT,
            job: true,
            ssh_options: Vec::new(),
        }
    }

    /// A profile's pvlaunch settings.
    pub fn from_launch(name: &str, launch: &crate::profile::settings::Launch) -> Site {
        Site {
            profile: Some(name.to_string()),
            login: launch.login_host.clone(),
            user: launch.login_user.clone(),
            port: launch.login_port,
            jump: launch.jump_hosts.clone(),
            askpass: launch.askpass.clone(),
            scheduler: Some(launch.scheduler),
            partition: launch.partition.clone(),
            account: launch.account.clone(),
            walltime: launch.walltime,
            nodes: launch.nodes,
            ranks_per_node: launch.ranks_per_node,
            setup: launch.setup.clone(),
            pvserver: launch.pvserver.clone(),
            launcher: launch.launcher.first().cloned(),
            client_port: launch.client_port.unwrap_or(11111),
            queue_timeout: Duration::from_secs(launch.queue_timeout_secs)
                .min(Duration::from_secs(600)),
            job: true,
            ssh_options: Vec::new(),
        }
    }

    fn target(&self, control_path: std::path::PathBuf) -> Target {
        Target {
            program: "ssh".into(),
            destination: self.login.clone(),
            user: self.user.clone(),
            port: self.port,
            jump_hosts: self.jump.clone(),
            control_path,
            extra_options: self.ssh_options.clone(),
        }
    }
}

/// Collects the rows; a check whose prerequisite failed is skipped with that reason.
struct Rows {
    rows: Vec<Row>,
}

impl Rows {
    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    fn failed(&self, id: Id) -> bool {
        self.rows
            .iter()
            .any(|r| r.id == id && matches!(r.verdict, Verdict::Fail | Verdict::Skipped))
    }

    fn skip_all(&mut self, ids: &[Id], why: &str) {
        for &id in ids {
            if !self.rows.iter().any(|r| r.id == id) {
                self.rows.push(Row::skipped(id, why));
            }
        }
    }
}

/// Run every check for `site`, in order. Never fails: every problem is a row.
pub async fn run(site: &Site) -> (Vec<Row>, SiteFacts) {
    let mut rows = Rows { rows: Vec::new() };
    let mut facts = SiteFacts::default();
    local_checks(site, &mut rows, &mut facts);
    ssh_before_login(site, &mut rows).await;

    let dir = match ssh::private_dir() {
        Ok(d) => d,
        Err(e) => {
            rows.push(Row::fail(
                Id::SshAuth,
                format!("no private folder for the ssh control socket: {e}"),
                "check that $XDG_RUNTIME_DIR or /tmp is writable",
            ));
            rows.skip_all(&Id::ALL, "ssh could not start");
            return (order(rows.rows), facts);
        }
    };
    let target = site.target(ssh::control_path(dir.path()));
    let asker = crate::auth::choose(&crate::auth::Surroundings::here(site.askpass.as_deref()));
    let argv = target.master_argv(asker.batch_mode());
    let mut master = match Master::start(target, &asker).await {
        Ok(m) => {
            rows.push(Row::ok(
                Id::SshAuth,
                format!("logged in ({})", asker.describe()),
            ));
            m
        }
        Err(e) => {
            let (detail, fix) = match &e {
                ssh::SshError::MasterExited {
                    destination,
                    stderr,
                } => {
                    let said = crate::auth::diagnose(stderr, destination, &asker);
                    (said.message, said.hint)
                }
                other => (other.to_string(), "see docs/authentication.md".to_string()),
            };
            rows.push(
                Row::fail(Id::SshAuth, detail.clone(), fix).evidence(argv.join(" "), &detail),
            );
            rows.skip_all(
                &Id::ALL,
                "ssh.auth failed: nothing on the cluster was checked",
            );
            return (order(rows.rows), facts);
        }
    };
    after_login(site, &master, &mut rows, &mut facts).await;
    master.stop().await;
    drop(dir);
    rows.skip_all(&Id::ALL, "not checked");
    (order(rows.rows), facts)
}

/// The rows in [`Id::ALL`]'s order.
fn order(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| Id::ALL.iter().position(|i| *i == r.id));
    rows
}

fn local_checks(site: &Site, rows: &mut Rows, facts: &mut SiteFacts) {
    match crate::profile::probe_client_version() {
        Ok((v, program)) => {
            facts.client_version = Some(v.full.clone());
            rows.push(
                Row::ok(
                    Id::LocalClient,
                    format!("ParaView {} ({program})", v.full),
                )
                .evidence(format!("{program} --version"), &v.full),
            );
        }
        Err(why) => rows.push(
            Row::warn(
                Id::LocalClient,
                format!("no local ParaView client answered: {why}"),
                "install ParaView (the same major.minor as the cluster's pvserver), or start your own client and use `connect --client wait`",
            )
            .evidence("pvpython --version; paraview --version", &why),
        ),
    }
    match std::net::TcpListener::bind(("127.0.0.1", site.client_port)) {
        Ok(_) => rows.push(Row::ok(
            Id::LocalPort,
            format!("127.0.0.1:{} is free", site.client_port),
        )),
        Err(e) => rows.push(
            Row::warn(
                Id::LocalPort,
                format!("127.0.0.1:{} is taken: {e}", site.client_port),
                "another client (or session) listens there: close it, or give the profile another client-port (`connect --port`)",
            )
            .evidence(format!("bind 127.0.0.1:{}", site.client_port), &e.to_string()),
        ),
    }
    let from_env = std::env::var("SSH_ASKPASS").ok().filter(|s| !s.is_empty());
    match site
        .askpass
        .clone()
        .or(from_env)
        .or_else(crate::auth::find_askpass)
    {
        Some(p) => rows.push(Row::ok(
            Id::LocalAskpass,
            format!("{p}: sessions started from ParaView can ask for a password or code"),
        )),
        None if cfg!(target_os = "macos") => rows.push(Row::ok(
            Id::LocalAskpass,
            "pvlaunch's own dialog (macOS)",
        )),
        None => rows.push(Row::warn(
            Id::LocalAskpass,
            "no askpass program: a session started from ParaView's Connect dialog cannot ask for a password, passphrase or one-time code",
            "install one (Debian: ssh-askpass), set <Login askpass>, or log in with a key that needs no passphrase (docs/authentication.md)",
        )),
    }
}

/// `ssh -G` for what ssh will really connect to (an alias's HostName, its port, its jumps).
async fn ssh_config(site: &Site) -> BTreeMap<String, String> {
    let target = site.target(Default::default());
    let Ok(out) = ssh::run(&target.config_argv(), None, CONNECT_TIMEOUT).await else {
        return BTreeMap::new();
    };
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

async fn ssh_before_login(site: &Site, rows: &mut Rows) {
    let config = ssh_config(site).await;
    let host = config
        .get("hostname")
        .cloned()
        .unwrap_or_else(|| site.login.clone());
    let port: u16 = site
        .port
        .or_else(|| config.get("port").and_then(|p| p.parse().ok()))
        .unwrap_or(22);
    let jump = config
        .get("proxyjump")
        .filter(|j| j.as_str() != "none")
        .cloned()
        .or_else(|| (!site.jump.is_empty()).then(|| site.jump.join(",")));
    let proxy = config.get("proxycommand").filter(|p| p.as_str() != "none");
    let resolve_cmd = format!("resolve {host} (ssh -G {})", site.login);
    if jump.is_some() || proxy.is_some() {
        let via = jump.clone().unwrap_or_else(|| "a ProxyCommand".into());
        rows.push(Row::ok(
            Id::SshResolve,
            format!("{host} is reached through {via}: the gateway resolves it"),
        ));
        rows.push(Row::ok(
            Id::SshReach,
            format!("through {via} (the login below proves it)"),
        ));
    } else {
        let addrs = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((host.clone(), port)),
        )
        .await;
        let addrs: Vec<std::net::SocketAddr> = match addrs {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                rows.push(
                    Row::fail(
                        Id::SshResolve,
                        format!("`{host}` does not resolve: {e}"),
                        "check the name (a typo? an alias missing from ~/.ssh/config?), or the VPN the site needs",
                    )
                    .evidence(resolve_cmd.clone(), &e.to_string()),
                );
                Vec::new()
            }
            Err(_) => {
                rows.push(Row::fail(
                    Id::SshResolve,
                    format!(
                        "resolving `{host}` took more than {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                    "check this machine's DNS, or the VPN the site needs",
                ));
                Vec::new()
            }
        };
        if let Some(first) = addrs.first() {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            rows.push(
                Row::ok(Id::SshResolve, format!("{host} is {}", list.join(", ")))
                    .evidence(resolve_cmd, &list.join(" ")),
            );
            let connect =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(first)).await;
            let cmd = format!("tcp connect {first}");
            match connect {
                Ok(Ok(_)) => rows.push(
                    Row::ok(Id::SshReach, format!("{first} accepts connections"))
                        .evidence(cmd, "connected"),
                ),
                Ok(Err(e)) => rows.push(
                    Row::fail(
                        Id::SshReach,
                        format!("{first} refuses: {e}"),
                        "the login node is not reachable from here: a site with a gateway needs it as a jump host (`--jump GATEWAY`, <Login jump>), or the VPN",
                    )
                    .evidence(cmd, &e.to_string()),
                ),
                Err(_) => rows.push(
                    Row::fail(
                        Id::SshReach,
                        format!("{first} did not answer within {} s", CONNECT_TIMEOUT.as_secs()),
                        "a firewall drops the connection: a site with a gateway needs it as a jump host (`--jump GATEWAY`, <Login jump>), or the VPN",
                    )
                    .evidence(cmd, "timed out"),
                ),
            }
        } else {
            rows.push(Row::skipped(Id::SshReach, "ssh.resolve failed"));
        }
    }
    if rows.failed(Id::SshReach) {
        rows.push(Row::skipped(Id::SshHostKey, "ssh.reach failed"));
        return;
    }
    // A login with no method at all: the server's key is checked and it lists its methods.
    let target = site.target(Default::default());
    let mut argv = vec![target.program.clone(), "-T".into()];
    for o in [
        "ControlMaster=no",
        "ControlPath=none",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "PreferredAuthentications=none",
        "ConnectTimeout=10",
    ] {
        argv.push("-o".into());
        argv.push(o.into());
    }
    for o in &site.ssh_options {
        argv.push("-o".into());
        argv.push(o.clone());
    }
    if let Some(u) = &site.user {
        argv.extend(["-l".into(), u.clone()]);
    }
    if let Some(p) = site.port {
        argv.extend(["-p".into(), p.to_string()]);
    }
    if !site.jump.is_empty() {
        argv.extend(["-J".into(), site.jump.join(",")]);
    }
    argv.extend(["--".into(), site.login.clone(), "true".into()]);
    let cmd = argv.join(" ");
    let out = ssh::run(&argv, None, PROBE_TIMEOUT).await;
    let row = match out {
        Err(e) => Row::warn(
            Id::SshHostKey,
            format!("no answer: {e}"),
            "the login below decides",
        ),
        Ok(o) => match super::parse_greeting(o.code, &o.stderr) {
            super::Greeting::Methods(m) => Row::ok(
                Id::SshHostKey,
                format!("the host key is known; the server offers {}", m.join(", ")),
            )
            .evidence(cmd, &o.stderr),
            super::Greeting::NoAuth => Row::ok(
                Id::SshHostKey,
                "the host key is known; the server asks no authentication",
            ),
            super::Greeting::UnknownKey => Row::fail(
                Id::SshHostKey,
                "the login host's key is not in known_hosts",
                format!(
                    "run `ssh {}` once in a terminal and compare the fingerprint with the one the site publishes",
                    site.login
                ),
            )
            .evidence(cmd, &o.stderr),
            super::Greeting::ChangedKey => Row::fail(
                Id::SshHostKey,
                "the login host's key differs from the one in known_hosts",
                "ask the site whether the key changed; then remove the old one (`ssh-keygen -R HOST`)",
            )
            .evidence(cmd, &o.stderr),
            super::Greeting::Unreachable(last) => Row::fail(
                Id::SshHostKey,
                format!("ssh could not connect: {last}"),
                "the login node is not reachable from here: a gateway (`--jump GATEWAY`), or the VPN",
            )
            .evidence(cmd, &o.stderr),
            super::Greeting::Other(last) => Row::warn(
                Id::SshHostKey,
                format!("ssh said: {last}"),
                "the login below decides",
            )
            .evidence(cmd, &o.stderr),
        },
    };
    rows.push(row);
}

/// A local listener that accepts and counts connections (the far end of the forwards).
struct Sink {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start(any: bool) -> std::io::Result<Sink> {
        let addr = if any { "0.0.0.0:0" } else { "127.0.0.1:0" };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                });
            }
        });
        Ok(Sink {
            port,
            accepted,
            task,
        })
    }

    fn count(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn exec(master: &Master, command: &str) -> Result<ssh::Output, String> {
    master
        .exec(command, None, PROBE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

/// The set-up lines then `command`, in one shell (the setup's output is kept apart).
fn after_setup(setup: &[String], command: &str) -> String {
    if setup.is_empty() {
        return command.to_string();
    }
    format!("{{ {}\n}} >/dev/null 2>&1; {command}", setup.join("\n"))
}

/// `script` in a login shell of bash, where sites define `module`.
fn login_bash(script: &str) -> String {
    let q = quote::quote(script)
        .map(|q| q.into_owned())
        .unwrap_or_default();
    format!("if command -v bash >/dev/null 2>&1; then exec bash -lc {q}; else exec sh -c {q}; fi")
}

async fn after_login(site: &Site, master: &Master, rows: &mut Rows, facts: &mut SiteFacts) {
    let hostname = match exec(master, "hostname; echo \"$SSH_CONNECTION\"; echo \"$HOME\"").await {
        Ok(o) if o.success() => o.stdout,
        Ok(o) => o.stderr,
        Err(e) => e,
    };
    let mut lines = hostname.lines();
    let login_host = lines.next().unwrap_or("").trim().to_string();
    let desk_addr = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    let home = lines.next().unwrap_or("").trim().to_string();
    facts.login_hostname = (!login_host.is_empty()).then(|| login_host.clone());

    // Connection sharing.
    if master.sessions_limited().await {
        rows.push(Row::warn(
            Id::SshMux,
            "the login node allows one session per connection (MaxSessions 1)",
            "nothing to do: pvlaunch carries every command through its own channel on such sites (<Login multiplex=\"no\"> skips this check)",
        ));
    } else {
        rows.push(Row::ok(
            Id::SshMux,
            "several sessions share the one login (every later step needs no new authentication)",
        ));
    }

    forwards(master, &login_host, rows).await;
    let kind = scheduler_checks(site, master, rows, facts).await;
    paraview_checks(site, master, rows, facts).await;
    if site.job {
        node_paths(
            site,
            master,
            kind,
            &login_host,
            &desk_addr,
            &home,
            rows,
            facts,
        )
        .await;
    } else {
        rows.skip_all(
            &[
                Id::PathNodeToLogin,
                Id::PathNodeToDesk,
                Id::PathLoginToNode,
                Id::PathNodeSshLogin,
            ],
            "no test job (--no-job)",
        );
    }
}

async fn forwards(master: &Master, login_host: &str, rows: &mut Rows) {
    let sink = match Sink::start(false).await {
        Ok(s) => s,
        Err(e) => {
            rows.push(Row::fail(
                Id::FwdRemote,
                format!("no local port for the test forward: {e}"),
                "check this machine",
            ));
            return;
        }
    };
    // -R 0: sshd picks the port; where it binds it says GatewayPorts.
    let cmd = master
        .target
        .remote_forward_argv(Some("0.0.0.0"), 0, sink.port)
        .join(" ");
    match master.forward_remote(Some("0.0.0.0"), 0, sink.port).await {
        Ok(port) => {
            rows.push(
                Row::ok(Id::FwdRemote, format!("sshd opened port {port}"))
                    .evidence(cmd, &port.to_string()),
            );
            let probe = "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null";
            let bind = exec(master, probe).await.ok().and_then(|o| {
                crate::client::parse_proc_net_tcp(&o.stdout)
                    .into_iter()
                    .filter(|s| s.listening && s.port == port)
                    .map(|s| s.address)
                    .next()
            });
            let row = match bind {
                Some(a) if !a.is_loopback() => Row::ok(
                    Id::FwdGatewayPorts,
                    format!(
                        "bound to {a}:{port}: compute nodes can reach it (GatewayPorts clientspecified or yes)"
                    ),
                ),
                Some(a) => Row::warn(
                    Id::FwdGatewayPorts,
                    format!(
                        "bound to {a}:{port}, the login node's loopback (GatewayPorts no): compute nodes cannot reach it, so the reverse recipe cannot work"
                    ),
                    "nothing to do: the relay (or reverse-two-hop) recipe works without it; or ask the site for `GatewayPorts clientspecified`",
                ),
                None => Row::warn(
                    Id::FwdGatewayPorts,
                    format!("port {port} is not in the login node's /proc/net/tcp"),
                    "the forward may be on another login node behind a load balancer; use the relay recipe",
                ),
            }
            .evidence(
                format!("{probe} | grep :{port:04X}"),
                &bind.map_or("not listed".into(), |a| format!("{a}:{port} LISTEN")),
            );
            rows.push(row);
            let _ = master
                .cancel_forward_remote(Some("0.0.0.0"), port, sink.port)
                .await;
        }
        Err(e) => {
            let said = e.to_string();
            rows.push(
                Row::fail(
                    Id::FwdRemote,
                    format!("sshd refused the remote forward: {said}"),
                    "the login node's sshd has `AllowTcpForwarding no` or `local` (or `PermitListen` forbids it): the reverse and relay recipes cannot work; ask the site, or use two-hop",
                )
                .evidence(cmd, &said),
            );
            rows.push(Row::skipped(Id::FwdGatewayPorts, "fwd.remote failed"));
        }
    }

    // -L to the login node's own sshd: the banner comes back only if sshd opened the channel.
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port());
    match local {
        Ok(lport) => {
            let cmd = master
                .target
                .local_forward_argv(lport, "localhost", 22)
                .join(" ");
            let row = match master.forward_local(lport, "localhost", 22).await {
                Err(e) => Row::fail(
                    Id::FwdLocal,
                    format!("ssh refused the local forward: {e}"),
                    "the two-hop recipes need `-L`: ask the site for `AllowTcpForwarding yes` (or `local`)",
                )
                .evidence(cmd, &e.to_string()),
                Ok(()) => {
                    let banner = read_banner(lport).await;
                    match banner {
                        Ok(b) if b.starts_with("SSH-") => Row::ok(
                            Id::FwdLocal,
                            format!("a connection through -L reached {login_host}:22 ({b})"),
                        )
                        .evidence(format!("{cmd}; read 127.0.0.1:{lport}"), &b),
                        Ok(b) => Row::fail(
                            Id::FwdLocal,
                            "sshd closed the forwarded connection: it refuses to open -L channels",
                            "the two-hop recipes need `-L`: ask the site for `AllowTcpForwarding yes` (or `local`); `PermitOpen` may also forbid it",
                        )
                        .evidence(format!("{cmd}; read 127.0.0.1:{lport}"), &b),
                        Err(e) => Row::fail(
                            Id::FwdLocal,
                            format!("no answer through the forward: {e}"),
                            "the two-hop recipes need `-L`: ask the site for `AllowTcpForwarding yes` (or `local`)",
                        ),
                    }
                }
            };
            rows.push(row);
        }
        Err(e) => rows.push(Row::skipped(
            Id::FwdLocal,
            format!("no free local port: {e}"),
        )),
    }

    // A Unix socket in a private folder on the login node.
    let mk = exec(
        master,
        "umask 077 && mktemp -d /tmp/pvlaunch-check.XXXXXXXX",
    )
    .await;
    match mk {
        Ok(o) if o.success() && o.stdout.trim().starts_with('/') => {
            let dir = o.stdout.trim().to_string();
            let path = format!("{dir}/fwd.sock");
            let cmd = master
                .target
                .remote_socket_forward_argv(&path, sink.port)
                .join(" ");
            let row = match master.forward_remote_socket(&path, sink.port).await {
                Ok(()) => {
                    let test = format!("test -S {}", quote::quote(&path).unwrap_or_default());
                    match exec(master, &test).await {
                        Ok(t) if t.success() => Row::ok(
                            Id::FwdUnix,
                            format!("sshd made the socket {path}"),
                        )
                        .evidence(format!("{cmd}; {test}"), "socket exists"),
                        _ => Row::fail(
                            Id::FwdUnix,
                            "ssh accepted the request but no socket appeared",
                            "the relay recipe's private socket needs `AllowStreamLocalForwarding yes` (or `remote`)",
                        ),
                    }
                }
                Err(e) => Row::fail(
                    Id::FwdUnix,
                    format!("sshd refused the Unix-socket forward: {e}"),
                    "the relay recipe needs `AllowStreamLocalForwarding yes` (or `remote`) and `AllowTcpForwarding` not `no`/`local`; ask the site, or use another recipe",
                )
                .evidence(cmd, &e.to_string()),
            };
            rows.push(row);
            let q = quote::quote(&dir).unwrap_or_default().into_owned();
            let _ = exec(master, &format!("rm -rf {q}")).await;
        }
        other => {
            let said = match other {
                Ok(o) => o.stderr,
                Err(e) => e,
            };
            rows.push(Row::skipped(
                Id::FwdUnix,
                format!(
                    "no private folder in /tmp on the login node: {}",
                    said.trim()
                ),
            ));
        }
    }
    drop(sink);
}

/// The first line a TCP server sends on `127.0.0.1:port` (empty when it closes at once).
async fn read_banner(port: u16) -> Result<String, String> {
    let attempt = async {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Which scheduler's commands the login node has, in the order looked for.
const SCHEDULER_PROBE: &str = "for c in sbatch qsub bsub; do p=$(command -v \"$c\" 2>/dev/null) && echo \"$c $p\"; done; qstat --version 2>&1 | head -n 1";

async fn scheduler_checks(
    site: &Site,
    master: &Master,
    rows: &mut Rows,
    facts: &mut SiteFacts,
) -> Option<Kind> {
    let out = exec(master, SCHEDULER_PROBE).await;
    let text = match &out {
        Ok(o) => o.stdout.clone(),
        Err(e) => e.clone(),
    };
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| ["sbatch", "qsub", "bsub"].contains(c))
        .collect();
    let discovered = if found.contains(&"sbatch") {
        Some(Kind::Slurm)
    } else if found.contains(&"qsub") {
        if text.to_ascii_lowercase().contains("torque") {
            Some(Kind::Torque)
        } else {
            Some(Kind::Pbs)
        }
    } else if found.contains(&"bsub") {
        Some(Kind::Lsf)
    } else {
        None
    };
    let kind = match (site.scheduler, discovered) {
        (Some(Kind::None), _) => {
            rows.push(Row::ok(
                Id::SchedKind,
                "the profile runs pvserver on the login node itself (scheduler none)",
            ));
            Kind::None
        }
        (Some(want), Some(have)) if want == have => {
            rows.push(
                Row::ok(Id::SchedKind, format!("{want}: its commands are there"))
                    .evidence(SCHEDULER_PROBE, &text),
            );
            want
        }
        (Some(want), other) => {
            rows.push(
                Row::fail(
                    Id::SchedKind,
                    format!(
                        "the profile says {want}, but the login node has {}",
                        other.map_or("no scheduler commands".to_string(), |k| format!(
                            "{k}'s commands"
                        ))
                    ),
                    match other {
                        Some(k) => format!("set <Job scheduler=\"{k}\">"),
                        None => "check the set-up (a module for the scheduler?), or use <Job scheduler=\"none\"> to run on the login node".into(),
                    },
                )
                .evidence(SCHEDULER_PROBE, &text),
            );
            facts.scheduler = other;
            rows.skip_all(
                &[Id::SchedPartition, Id::SchedWalltime, Id::SchedTestOnly],
                "sched.kind failed",
            );
            return None;
        }
        (None, Some(have)) => {
            rows.push(
                Row::ok(Id::SchedKind, format!("{have} (its commands are on PATH)"))
                    .evidence(SCHEDULER_PROBE, &text),
            );
            have
        }
        (None, None) => {
            rows.push(
                Row::warn(
                    Id::SchedKind,
                    "no batch scheduler on the login node (no sbatch, qsub or bsub): pvserver would run on the login node itself",
                    "fine for a small login-node-only machine (<Job scheduler=\"none\">); on a cluster, check the set-up (a module for the scheduler?)",
                )
                .evidence(SCHEDULER_PROBE, &text),
            );
            Kind::None
        }
    };
    facts.scheduler = Some(kind);

    // Partitions or queues.
    let (list_cmd, partitions) = match kind {
        Kind::Slurm => {
            let o = exec(master, super::SINFO).await;
            let parts = o
                .as_ref()
                .map(|o| super::parse_sinfo(&o.stdout))
                .unwrap_or_default();
            (super::SINFO, parts)
        }
        Kind::Pbs | Kind::Torque => {
            let o = exec(master, "qstat -Q").await;
            let parts = o
                .as_ref()
                .map(|o| super::parse_qstat_queues(&o.stdout))
                .unwrap_or_default();
            ("qstat -Q", parts)
        }
        _ => ("", Vec::new()),
    };
    facts.partitions = partitions.clone();
    let mut found = Vec::new();
    partition_rows(site, kind, list_cmd, &partitions, &mut found);
    for row in found {
        rows.push(row);
    }

    // The job as the profile would submit it, checked by the scheduler without running it.
    match kind {
        Kind::Slurm => {
            let spec = JobSpec {
                walltime: site.walltime,
                queue: site.partition.clone(),
                account: site.account.clone(),
                nodes: site.nodes,
                ranks_per_node: site.ranks_per_node,
                command: vec!["true".into()],
                ..JobSpec::new("pvlaunch-check")
            };
            let script = kind.scheduler().render_script(&spec);
            let cmd = "sbatch --test-only";
            let row = match script {
                Err(e) => Row::fail(Id::SchedTestOnly, e.to_string(), "fix the profile's job settings"),
                Ok(script) => match master.exec(cmd, Some(script.as_bytes()), PROBE_TIMEOUT).await {
                    Err(e) => Row::warn(Id::SchedTestOnly, e.to_string(), "try again; the test job below decides"),
                    Ok(o) => match super::parse_test_only(o.code, &o.stdout, &o.stderr) {
                        Ok(line) => Row::ok(Id::SchedTestOnly, "Slurm would accept the job")
                            .evidence(cmd, &line),
                        Err(line) => Row::fail(
                            Id::SchedTestOnly,
                            "Slurm refuses the job",
                            "change the partition, account, nodes, ranks or walltime to what the site allows (`sinfo`, `sacctmgr show assoc user=$USER`)",
                        )
                        .evidence(cmd, &line),
                    },
                },
            };
            rows.push(row);
        }
        Kind::None => rows.push(Row::skipped(Id::SchedTestOnly, "no scheduler")),
        other => rows.push(Row::skipped(
            Id::SchedTestOnly,
            format!("{other} has no test-only submit: the test job below decides"),
        )),
    }
    Some(kind)
}

/// `sched.partition` and `sched.walltime` from the listed partitions (pure apart from `rows`).
pub fn partition_rows(
    site: &Site,
    kind: Kind,
    list_cmd: &str,
    partitions: &[Partition],
    rows: &mut impl Extend<Row>,
) {
    let names: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
    let listed = names.join(" ");
    if kind == Kind::None || kind == Kind::Lsf {
        rows.extend([
            Row::skipped(
                Id::SchedPartition,
                format!("{kind}: not listed by pvlaunch"),
            ),
            Row::skipped(Id::SchedWalltime, format!("{kind}: not listed by pvlaunch")),
        ]);
        return;
    }
    let chosen = match &site.partition {
        Some(want) => match partitions.iter().find(|p| &p.name == want) {
            Some(p) if p.up => {
                rows.extend([
                    Row::ok(Id::SchedPartition, format!("`{want}` exists and is up"))
                        .evidence(list_cmd, &listed),
                ]);
                Some(p)
            }
            Some(p) => {
                rows.extend([Row::fail(
                    Id::SchedPartition,
                    format!("`{want}` exists but does not take jobs"),
                    format!("use one that is up: {}", up_names(partitions)),
                )
                .evidence(list_cmd, &listed)]);
                Some(p)
            }
            None => {
                let near =
                    crate::suggest::did_you_mean(want, names.iter().copied(), |n| format!("`{n}`"));
                rows.extend([Row::fail(
                    Id::SchedPartition,
                    format!("there is no partition or queue `{want}`"),
                    format!(
                        "{}set the partition to one of: {}",
                        near.map_or(String::new(), |n| format!("{n} ")),
                        if listed.is_empty() {
                            "(none listed)".to_string()
                        } else {
                            listed.clone()
                        }
                    ),
                )
                .evidence(list_cmd, &listed)]);
                None
            }
        },
        None => match partitions.iter().find(|p| p.default) {
            Some(p) => {
                rows.extend([Row::ok(
                    Id::SchedPartition,
                    format!("none set: the site's default `{}`", p.name),
                )
                .evidence(list_cmd, &listed)]);
                Some(p)
            }
            None if partitions.is_empty() => {
                rows.extend([Row::warn(
                    Id::SchedPartition,
                    "the scheduler listed no partitions or queues",
                    "set one the site documents",
                )
                .evidence(list_cmd, "(nothing)")]);
                None
            }
            None => {
                rows.extend([Row::ok(
                    Id::SchedPartition,
                    format!("none set (the site's default); listed: {listed}"),
                )]);
                None
            }
        },
    };
    let row = match (site.walltime, chosen.and_then(|p| p.max_walltime)) {
        (Some(w), Some(max)) if w.as_secs() > max.as_secs() => Row::fail(
            Id::SchedWalltime,
            format!(
                "{} is longer than the partition's limit {}",
                w.hms(),
                max.hms()
            ),
            format!("ask for at most {}", max.hms()),
        ),
        (Some(w), Some(max)) => Row::ok(
            Id::SchedWalltime,
            format!("{} is within the limit {}", w.hms(), max.hms()),
        ),
        (Some(w), None) => Row::ok(Id::SchedWalltime, format!("{}: no limit listed", w.hms())),
        (None, Some(max)) => Row::ok(
            Id::SchedWalltime,
            format!("the site's default walltime (the limit is {})", max.hms()),
        ),
        (None, None) => Row::ok(Id::SchedWalltime, "the site's default walltime"),
    };
    rows.extend([row]);
}

fn up_names(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .filter(|p| p.up)
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn paraview_checks(site: &Site, master: &Master, rows: &mut Rows, facts: &mut SiteFacts) {
    let pvserver = quote::quote(&site.pvserver)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| "pvserver".into());
    // Modules (where the site has them): the ParaView ones, for init.
    let modules = exec(master, &login_bash("module -t avail paraview 2>&1 || true")).await;
    let modules = modules
        .map(|o| super::parse_module_avail(&format!("{}\n{}", o.stdout, o.stderr)))
        .unwrap_or_default();
    let client = facts
        .client_version
        .as_deref()
        .and_then(crate::profile::resolve::Version::parse);
    if let Some(v) = &client {
        facts.module = super::pick_module(&modules, v.major, v.minor);
    }
    let mut setup = site.setup.clone();
    if setup.is_empty()
        && let Some(m) = &facts.module
    {
        setup.push(format!(
            "module load {}",
            quote::quote(m).unwrap_or_default()
        ));
    }
    let probe = after_setup(
        &setup,
        &format!("command -v {pvserver} && {pvserver} --version 2>&1 | head -n 3"),
    );
    let out = exec(master, &login_bash(&probe)).await;
    let (found, text) = match &out {
        Ok(o) => (o.success(), format!("{}{}", o.stdout, o.stderr)),
        Err(e) => (false, e.clone()),
    };
    if !found {
        rows.push(
            Row::fail(
                Id::PvPvserver,
                format!("`{}` is not found on the login node after the set-up lines", site.pvserver),
                if modules.is_empty() {
                    "add the set-up line that makes pvserver available (e.g. <Setup line=\"module load paraview\"/>), or set <PVServer exec> to its full path".to_string()
                } else {
                    format!("load one of the site's modules: {}", modules.join(" "))
                },
            )
            .evidence(probe, &text),
        );
        rows.push(Row::skipped(Id::PvVersion, "pv.pvserver failed"));
    } else {
        let path = text.lines().next().unwrap_or("").trim().to_string();
        rows.push(Row::ok(Id::PvPvserver, path.clone()).evidence(probe.clone(), &path));
        let version = crate::profile::parse_version_output(&text);
        facts.server_version = version.as_ref().map(|v| v.full.clone());
        let row = match (&version, &client) {
            (None, _) => Row::warn(
                Id::PvVersion,
                "pvserver --version names no version",
                "check by hand: client and server must share major.minor",
            ),
            (Some(s), None) => Row::warn(
                Id::PvVersion,
                format!("pvserver is {}; no local client to compare with", s.full),
                format!("use a ParaView client {}.{}.x", s.major, s.minor),
            ),
            (Some(s), Some(c)) if super::versions_match(&c.full, &s.full) => Row::ok(
                Id::PvVersion,
                format!("pvserver {} and the client {} share {}.{}", s.full, c.full, c.major, c.minor),
            ),
            (Some(s), Some(c)) => Row::fail(
                Id::PvVersion,
                format!(
                    "pvserver is {} but the local client is {}: the handshake refuses it (\"Client and server are different ParaView versions\")",
                    s.full, c.full
                ),
                match super::pick_module(&modules, c.major, c.minor) {
                    Some(m) => format!("load the matching module: <Setup line=\"module load {m}\"/>"),
                    None if modules.is_empty() => format!(
                        "use a client {}.{}.x here, or a pvserver {}.{}.x there (a module or another <PVServer exec>)",
                        s.major, s.minor, c.major, c.minor
                    ),
                    None => format!(
                        "no module matches {}.{} (the site has: {}): use a client {}.{}.x",
                        c.major, c.minor, modules.join(" "), s.major, s.minor
                    ),
                },
            ),
        }
        .evidence(probe, &text);
        rows.push(row);
    }
    let launcher = site.launcher.clone();
    let candidates = match &launcher {
        Some(l) => vec![l.clone()],
        None => vec!["mpiexec".into(), "mpirun".into(), "srun".into()],
    };
    let words: Vec<String> = candidates
        .iter()
        .map(|c| quote::quote(c).map(|q| q.into_owned()).unwrap_or_default())
        .collect();
    let probe = after_setup(
        &setup,
        &format!(
            "for c in {}; do command -v \"$c\" && exit 0; done; exit 1",
            words.join(" ")
        ),
    );
    match exec(master, &login_bash(&probe)).await {
        Ok(o) if o.success() => {
            let path = o.stdout.trim().to_string();
            facts.launcher = path.rsplit('/').next().map(str::to_string);
            rows.push(Row::ok(Id::PvMpi, path.clone()).evidence(probe, &path));
        }
        Ok(o) if site.scheduler == Some(Kind::None) || launcher.is_none() => rows.push(
            Row::warn(
                Id::PvMpi,
                format!("none of {} is found: pvserver would run as one process", candidates.join(", ")),
                "load the site's MPI module in the set-up lines, or run pvserver without a launcher",
            )
            .evidence(probe, &o.stderr),
        ),
        Ok(o) => rows.push(
            Row::fail(
                Id::PvMpi,
                format!("the launcher `{}` is not found after the set-up lines", candidates[0]),
                "load the site's MPI module in the set-up lines, or set <PVServer launcher>",
            )
            .evidence(probe, &o.stderr),
        ),
        Err(e) => rows.push(Row::warn(Id::PvMpi, e, "try again")),
    }
}

/// The test job's script (set-up lines; the command is `true`): node name, then each path.
/// Positional values come in as shell variables set above it, quoted.
const JOB_SCRIPT: &str = r#"say() { printf 'pvlaunch-check: %s=%s\n' "$1" "$2"; }
probe() { timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' probe "$1" "$2" 2>&1 | tr '\n' ' '; return "${PIPESTATUS[0]}"; }
say node "$(hostname)"
if [ "$PVC_LOGIN_PORT" != 0 ]; then
  if out=$(probe "$PVC_LOGIN" "$PVC_LOGIN_PORT"); then say node_to_login ok; else say node_to_login "fail $out"; fi
fi
if [ -n "$PVC_DESK" ]; then
  if out=$(probe "$PVC_DESK" "$PVC_DESK_PORT"); then say node_to_desk ok; else say node_to_desk "fail $out"; fi
fi
if out=$(timeout 15 ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=yes "$PVC_LOGIN" true 2>&1 </dev/null); then say node_ssh_login ok; else say node_ssh_login "fail $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"; fi
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import socket
s = socket.socket(); s.bind(("", 0)); s.listen(1); s.settimeout(60)
print("pvlaunch-check: listen=%d" % s.getsockname()[1], flush=True)
try:
    c, a = s.accept(); print("pvlaunch-check: accepted=%s" % a[0], flush=True)
except socket.timeout:
    print("pvlaunch-check: accepted=none", flush=True)' || true
else
  say listen none
fi
say done 1"#;

/// A listener on the login node (python3), for the node -> login path when no forward there
/// is compute-facing. Prints its port, accepts one connection, ends with its input.
const LOGIN_LISTENER: &str = r#"exec python3 -c 'import socket, select, sys
s = socket.socket(); s.bind(("", 0)); s.listen(4)
print(s.getsockname()[1], flush=True)
while True:
    r, _, _ = select.select([s, sys.stdin], [], [], 600)
    if not r or sys.stdin in r:
        break
    c, a = s.accept(); print("accepted", a[0], flush=True); c.close()'"#;

#[allow(clippy::too_many_arguments)]
async fn node_paths(
    site: &Site,
    master: &Master,
    kind: Option<Kind>,
    login_host: &str,
    desk: &str,
    home: &str,
    rows: &mut Rows,
    facts: &mut SiteFacts,
) {
    let ids = [
        Id::PathNodeToLogin,
        Id::PathNodeToDesk,
        Id::PathLoginToNode,
        Id::PathNodeSshLogin,
    ];
    let Some(kind) = kind else {
        rows.skip_all(&ids, "sched.kind failed: no test job");
        return;
    };
    if rows.failed(Id::SchedPartition) || rows.failed(Id::SchedTestOnly) {
        rows.skip_all(&ids, "the scheduler refuses the job: no test job");
        return;
    }
    // The far ends: a listener on the login node, one here for node -> workstation.
    let mut listener = None;
    let mut login_port = 0u16;
    let mut listener_lines = None;
    {
        let argv = master.remote_argv(LOGIN_LISTENER);
        let mut cmd = crate::process::command(&argv, crate::process::Kind::Helper);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        if let Ok(mut child) = cmd.spawn() {
            let out = child.stdout.take().expect("piped");
            let mut lines = BufReader::new(out).lines();
            if let Ok(Ok(Some(first))) =
                tokio::time::timeout(PROBE_TIMEOUT, lines.next_line()).await
                && let Ok(p) = first.trim().parse::<u16>()
            {
                login_port = p;
            }
            listener_lines = Some(lines);
            listener = Some(child);
        }
    }
    let via_sshd = login_port == 0;
    if via_sshd {
        // No python3 on the login node: its sshd's port is the best stand-in.
        login_port = 22;
    }
    let desk_sink = Sink::start(true).await.ok();
    let desk_port = desk_sink.as_ref().map_or(0, |s| s.port);

    let tag = format!("{:08x}", rand::random::<u32>());
    let q = |s: &str| quote::quote(s).map(|q| q.into_owned()).unwrap_or_default();
    let mut lines = site.setup.clone();
    lines.push("set +e".into());
    lines.push(format!("PVC_LOGIN={}", q(login_host)));
    lines.push(format!("PVC_LOGIN_PORT={login_port}"));
    lines.push(format!(
        "PVC_DESK={}",
        q(if desk_port == 0 { "" } else { desk })
    ));
    lines.push(format!("PVC_DESK_PORT={desk_port}"));
    lines.extend(JOB_SCRIPT.lines().map(str::to_string));
    let output = format!("check-{tag}.out");
    let spec = JobSpec {
        walltime: Some(Walltime::from_secs(JOB_WALLTIME.as_secs())),
        queue: site.partition.clone(),
        account: site.account.clone(),
        nodes: 1,
        ranks_per_node: 1,
        output_path: Some(output.clone()),
        setup_lines: lines,
        command: vec!["true".into()],
        tag: Some(tag.clone()),
        ..JobSpec::new("pvlaunch-check")
    };
    let sched = kind.scheduler();
    let result = run_job(
        master,
        sched.as_ref(),
        &spec,
        &tag,
        home,
        site.queue_timeout,
    )
    .await;
    if let Some(mut child) = listener {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let _ = child.start_kill();
    }
    drop(listener_lines);
    let answers = match result {
        Ok(a) => a,
        Err(why) => {
            rows.skip_all(&ids, &format!("the test job: {why}"));
            return;
        }
    };
    let node = answers.get("node").cloned().unwrap_or_default();
    facts.test_node = (!node.is_empty()).then(|| node.clone());
    let where_ = if kind == Kind::None {
        format!("{login_host} (no scheduler: the login node itself)")
    } else {
        node.clone()
    };
    let job_cmd = |what: &str| format!("test job on {where_}: {what}");
    let said = |k: &str| {
        answers
            .get(k)
            .cloned()
            .unwrap_or_else(|| "no answer".into())
    };
    let probe_what = format!("bash /dev/tcp/{login_host}/{login_port}");
    rows.push(match said("node_to_login").as_str() {
        "ok" if via_sshd => Row::warn(
            Id::PathNodeToLogin,
            format!("{where_} reaches {login_host}:22 (sshd); other ports were not tried (no python3 on the login node)"),
            "the reverse and relay recipes need another port of the login node: if the session hangs at the connection, ask the site about a firewall between the nodes and the login node",
        )
        .evidence(job_cmd(&probe_what), "connected"),
        "ok" => Row::ok(
            Id::PathNodeToLogin,
            format!("{where_} reaches {login_host}:{login_port}"),
        )
        .evidence(job_cmd(&probe_what), "connected"),
        other => Row::fail(
            Id::PathNodeToLogin,
            format!("{where_} cannot reach {login_host}:{login_port}"),
            "a firewall between the compute nodes and the login node: the reverse and relay recipes cannot work; two-hop (the login node connects to the node) may",
        )
        .evidence(job_cmd(&probe_what), other),
    });
    rows.push(match said("node_to_desk").as_str() {
        "ok" => Row::ok(
            Id::PathNodeToDesk,
            format!("{where_} reaches this workstation ({desk}:{desk_port}) directly: no tunnel would be needed"),
        )
        .evidence(
            job_cmd(&format!("bash /dev/tcp/{desk}/{desk_port}")),
            &format!(
                "connected; this machine accepted {} connection(s)",
                desk_sink.as_ref().map_or(0, Sink::count)
            ),
        ),
        other if desk_port == 0 => Row::skipped(Id::PathNodeToDesk, format!("no local listener ({other})")),
        other => Row::new(
            Id::PathNodeToDesk,
            Verdict::Ok,
            format!("{where_} cannot reach this workstation ({desk}:{desk_port}), as at most sites: the tunnel through the login node is needed"),
        )
        .evidence(job_cmd(&format!("bash /dev/tcp/{desk}/{desk_port}")), other),
    });
    rows.push(match said("node_ssh_login").as_str() {
        "ok" => Row::ok(
            Id::PathNodeSshLogin,
            format!("{where_} logs in to {login_host} with the shared home's key"),
        )
        .evidence(job_cmd(&format!("ssh -o BatchMode=yes {login_host} true")), "ok"),
        other => Row::fail(
            Id::PathNodeSshLogin,
            format!("{where_} cannot ssh to {login_host}"),
            if other.contains("connect to host") || other.contains("timed out") {
                "a firewall between the compute nodes and the login node's ssh port: the reverse-two-hop recipe cannot work"
            } else {
                "the reverse-two-hop recipe needs it: a key pair in the shared home listed in ~/.ssh/authorized_keys, and the login node's host key in ~/.ssh/known_hosts"
            },
        )
        .evidence(job_cmd(&format!("ssh -o BatchMode=yes {login_host} true")), other),
    });
    let listen = answers.get("listen").cloned().unwrap_or_default();
    let probed = answers.get("login_probe").cloned().unwrap_or_default();
    let accepted = answers.get("accepted").cloned().unwrap_or_default();
    let what = format!("bash /dev/tcp/{node}/{listen} on {login_host}");
    rows.push(if listen.is_empty() || listen == "none" {
        Row::skipped(
            Id::PathLoginToNode,
            format!("no python3 on {where_} to listen with"),
        )
    } else if probed == "ok" && !accepted.is_empty() && accepted != "none" {
        Row::ok(
            Id::PathLoginToNode,
            format!("{login_host} reaches {node}:{listen}"),
        )
        .evidence(what, &format!("connected; the node accepted from {accepted}"))
    } else {
        Row::fail(
            Id::PathLoginToNode,
            format!("{login_host} cannot reach {node}:{listen}"),
            "a firewall between the login node and the compute nodes: the two-hop recipe cannot work",
        )
        .evidence(what, &probed)
    });
}

/// Submit the test job under a guard, wait for its answers (and probe login -> node when it
/// listens), then cancel it. `Err`: why there are no answers.
async fn run_job(
    master: &Master,
    sched: &dyn scheduler::Scheduler,
    spec: &JobSpec,
    tag: &str,
    home: &str,
    queue_timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let script = sched.render_script(spec).map_err(|e| e.to_string())?;
    let mut guard = crate::job::start_guard(master, sched, tag, std::time::Duration::ZERO)
        .await
        .map_err(|e| format!("the guard on the login node did not start: {e}"))?;
    let output = format!(
        "{home}/{}/{}",
        crate::plan::REMOTE_DIR,
        spec.output_path.as_deref().unwrap_or("")
    );
    let _ = guard.remove_at_end(&output).await;
    let result = async {
        guard.submitting().await.map_err(|e| e.to_string())?;
        let submit = quote::join(sched.submit_command()).map_err(|e| e.to_string())?;
        let submit = format!(
            "umask 077 && mkdir -p {dir} && cd {dir} && {submit}",
            dir = crate::plan::REMOTE_DIR
        );
        let out = master
            .exec(&submit, Some(script.as_bytes()), PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let id = sched
            .parse_submit(&CommandOutput::from(&out))
            .map_err(|e| format!("the submit failed: {e}"))?;
        let _ = guard.job_known(&id).await;
        // Until it runs (or ends), within the queue timeout.
        let started = tokio::time::Instant::now();
        let mut last_reason;
        loop {
            match crate::job::query_state(master, sched, &id).await {
                Ok(JobState::Running { .. }) | Ok(JobState::Finished { .. }) => break,
                Ok(JobState::Queued { reason, .. }) => {
                    last_reason = reason.unwrap_or_default();
                    if let Some(never) = scheduler::never_starts(&last_reason) {
                        return Err(format!("job {id} will never start: {never:?}"));
                    }
                }
                Ok(JobState::Unknown { state }) => last_reason = state,
                Err(e) => return Err(format!("following job {id}: {e}")),
            }
            if started.elapsed() > queue_timeout {
                return Err(format!(
                    "job {id} did not start within {} s ({last_reason})",
                    queue_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Its answers, and the login -> node probe once it listens.
        let q = quote::quote(&output)
            .map_err(|e| e.to_string())?
            .into_owned();
        let read = format!("cat {q} 2>/dev/null");
        let deadline = tokio::time::Instant::now() + JOB_ANSWER_TIMEOUT;
        let mut probed: Option<String> = None;
        loop {
            let text = exec(master, &read)
                .await
                .map(|o| o.stdout)
                .unwrap_or_default();
            let mut answers = super::job_answers(&text);
            if probed.is_none()
                && let (Some(node), Some(port)) = (answers.get("node"), answers.get("listen"))
                && port != "none"
            {
                let node = quote::quote(node).map_err(|e| e.to_string())?.into_owned();
                let port = quote::quote(port).map_err(|e| e.to_string())?.into_owned();
                let probe = format!(
                    "timeout 5 bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' probe {node} {port} 2>&1"
                );
                probed = Some(match exec(master, &probe).await {
                    Ok(o) if o.success() => "ok".into(),
                    Ok(o) => format!("fail {}", o.stderr.trim()),
                    Err(e) => format!("fail {e}"),
                });
            }
            if answers.contains_key("done") {
                if let Some(p) = probed {
                    answers.insert("login_probe".into(), p);
                }
                return Ok(answers);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "job {id} ran but did not answer within {} s",
                    JOB_ANSWER_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    .await;
    let _ = guard.cancel(Duration::from_secs(20)).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, default: bool, limit: Option<u64>) -> Partition {
        Partition {
            name: name.into(),
            default,
            up: true,
            max_walltime: limit.map(Walltime::from_secs),
            nodes: Some(2),
            cpus_per_node: Some(2),
        }
    }

    #[test]
    fn a_wrong_partition_fails_with_the_list_and_a_suggestion() {
        let mut site = Site::bare("login");
        site.partition = Some("bach".into());
        let mut rows = Vec::new();
        partition_rows(
            &site,
            Kind::Slurm,
            super::super::SINFO,
            &[part("batch", true, Some(3600)), part("debug", false, None)],
            &mut rows,
        );
        assert_eq!(rows[0].verdict, Verdict::Fail);
        let fix = rows[0].fix.as_deref().unwrap();
        assert!(fix.contains("did you mean `batch`"), "{fix}");
        assert!(fix.contains("batch debug"), "{fix}");
    }

    #[test]
    fn a_walltime_over_the_limit_fails() {
        let mut site = Site::bare("login");
        site.walltime = Some(Walltime::from_secs(7200));
        let mut rows = Vec::new();
        partition_rows(
            &site,
            Kind::Slurm,
            "",
            &[part("batch", true, Some(3600))],
            &mut rows,
        );
        assert_eq!(rows[0].verdict, Verdict::Ok);
        assert_eq!(rows[1].verdict, Verdict::Fail);
        assert!(rows[1].fix.as_deref().unwrap().contains("01:00:00"));
    }

    #[test]
    fn setup_output_is_kept_apart() {
        assert_eq!(after_setup(&[], "x"), "x");
        assert_eq!(
            after_setup(&["module load a".into()], "x"),
            "{ module load a\n} >/dev/null 2>&1; x"
        );
    }
}
