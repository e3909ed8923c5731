//! Runs a [`Plan`]: one coordinator that owns every resource and selects over signals, relay
//! events, the job's state, the client and the ssh link. Cleanup runs on every path.
//!
//! Order of a session (reverse recipes): client listens -> ssh master -> local relay -> the
//! recipe's path (remote forward checked to face the compute nodes; or a relay, or the job's
//! own hop, in front of a loopback forward) -> job submitted -> guard started on the login
//! node -> wait (queued, running, pvserver connected) -> session -> cleanup (client, job,
//! guard, relay, forward, master).
//!
//! Two-hop: ssh master -> job submitted (pvserver listens) -> guard -> running: pvserver's
//! `Accepting connection(s)` line read from the job's output -> local forward to the node ->
//! local relay in front of it -> client started (connects) -> session -> the same cleanup.

use std::time::Duration;

use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::client::{self, Mode};
use crate::events::{Event, Reporter};
use crate::exit::Code;
use crate::plan::{self, Plan};
use crate::profile::settings::Launch;
use crate::quote;
use crate::recipe::{Reach, reverse_two_hop, two_hop};
use crate::relay::{self, Forward, ListenAddr, Relay, RelayConfig, RelayEvent, Target};
use crate::scheduler::{CommandOutput, JobId, JobState, Scheduler};
use crate::ssh::{self, Master};

/// How long a local client may take to start listening (the GUI loads plugins).
pub const CLIENT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// The first pause between scheduler queries; it grows to [`POLL_MAX`].
pub const POLL_MIN: Duration = Duration::from_secs(2);
pub const POLL_MAX: Duration = Duration::from_secs(15);
/// How often a running job is checked once pvserver is connected.
pub const POLL_CONNECTED: Duration = Duration::from_secs(10);
/// How long a client pvlaunch started may take to finish after the connection closed.
pub const CLIENT_EXIT_GRACE: Duration = Duration::from_secs(30);
/// A ParaView session moves far more than this; a connection that closes with less, within
/// two seconds, was refused in the handshake (connect-id or version mismatch).
pub const HANDSHAKE_BYTES: u64 = 4096;

/// Why a session ended: decides the exit code.
#[derive(Debug)]
pub enum Outcome {
    /// The ParaView connection closed or the client exited: a normal end.
    Finished(String),
    Failed {
        code: Code,
        message: String,
        hint: Option<String>,
    },
    Signal(i32),
}

impl Outcome {
    pub fn fail(code: Code, message: impl Into<String>, hint: Option<&str>) -> Outcome {
        Outcome::Failed {
            code,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Outcome::Finished(_) => Code::Success,
            Outcome::Failed { code, .. } => *code,
            Outcome::Signal(n) => Code::Signal(*n),
        }
    }
}

/// Everything the session holds, so that cleanup can release it whatever happened.
struct Held {
    client: Option<Child>,
    master: Option<Master>,
    relay_stop: Option<tokio::sync::oneshot::Sender<()>>,
    relay_task: Option<tokio::task::JoinHandle<relay::RelaySummary>>,
    job: Option<JobId>,
    guard: Option<Child>,
    /// Helpers on the login node (the relay's ssh session).
    remote: Vec<Child>,
    private_dir: Option<tempfile::TempDir>,
}

/// Run a session; returns the exit code. `launch` carries the resolved settings.
pub async fn run(
    plan: Plan,
    launch: Launch,
    target: ssh::Target,
    private_dir: tempfile::TempDir,
    reporter: &mut Reporter,
) -> Code {
    let mut held = Held {
        client: None,
        master: None,
        relay_stop: None,
        relay_task: None,
        job: None,
        guard: None,
        remote: Vec::new(),
        private_dir: Some(private_dir),
    };
    let scheduler = plan.scheduler.scheduler();
    let mut signals = Signals::new();
    let outcome = tokio::select! {
        outcome = drive(&plan, &launch, target, scheduler.as_ref(), &mut held, reporter) => outcome,
        n = signals.next() => Outcome::Signal(n),
    };
    // A second signal during cleanup skips the graceful steps.
    let code = outcome.code();
    match &outcome {
        Outcome::Failed { message, hint, .. } => {
            reporter.emit(Event::Error {
                message: message.clone(),
                hint: hint.clone(),
            });
        }
        Outcome::Signal(n) => reporter.emit(Event::Warning {
            message: format!("stopping on signal {n}: cleaning up (again to force)"),
        }),
        Outcome::Finished(_) => {}
    }
    tokio::select! {
        _ = cleanup(&plan, scheduler.as_ref(), &mut held, reporter) => {}
        n = signals.next() => {
            reporter.emit(Event::Warning { message: format!("signal {n} again: stopping now") });
            hard_stop(&mut held).await;
        }
    }
    let reason = match &outcome {
        Outcome::Finished(r) => r.clone(),
        Outcome::Failed { message, .. } => message.clone(),
        Outcome::Signal(n) => format!("stopped by signal {n}"),
    };
    reporter.emit(Event::Done {
        exit_code: code.as_i32(),
        reason,
    });
    code
}

pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            int: signal(SignalKind::interrupt()).expect("signal handler"),
            term: signal(SignalKind::terminate()).expect("signal handler"),
            hup: signal(SignalKind::hangup()).expect("signal handler"),
        }
    }

    pub(crate) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

async fn drive(
    plan: &Plan,
    launch: &Launch,
    target: ssh::Target,
    scheduler: &dyn Scheduler,
    held: &mut Held,
    reporter: &mut Reporter,
) -> Outcome {
    reporter.emit(Event::Plan {
        profile: plan.profile.clone(),
        recipe: plan::recipe_name(plan.recipe).into(),
        scheduler: plan.scheduler.to_string(),
        login: plan.login.clone(),
        client: plan.client.name().into(),
    });
    if let Some(reason) = &plan.auto_reason {
        reporter.emit(Event::RecipeChosen {
            recipe: plan::recipe_name(plan.recipe).into(),
            reason: reason.clone(),
        });
    }

    // 1. In the reverse recipes the client listens before anything can connect to it. In
    //    two-hop it starts once pvserver listens and the tunnel is open (in `follow`).
    if !plan.forward() {
        if let Some(argv) = &plan.client_argv {
            let env = client_env(
                plan,
                &client::url(true, plan.client_port),
                plan.client_port,
                plan.queue_timeout + plan.connect_timeout,
            );
            match client::start(argv, &env) {
                Ok(c) => held.client = Some(c),
                Err(e) => return Outcome::fail(Code::Client, e.to_string(), Some(e.hint())),
            }
        }
        if let Err(e) =
            client::wait_listening(plan.client_port, held.client.as_mut(), CLIENT_START_TIMEOUT)
                .await
        {
            let hint = match plan.client {
                Mode::Wait => {
                    "start the ParaView client yourself: File > Connect, a server with resource csrc://localhost:PORT"
                }
                _ => "check that the client starts on its own",
            };
            return Outcome::fail(Code::Client, e, Some(hint));
        }
        reporter.emit(Event::ClientListening {
            port: plan.client_port,
            mode: plan.client.name().into(),
        });
    }

    // 2. One ssh connection.
    reporter.emit(Event::SshConnecting {
        destination: plan.login.clone(),
    });
    let batch = !std::io::IsTerminal::is_terminal(&std::io::stdin());
    let master = match Master::start(target, batch).await {
        Ok(m) => held.master.insert(m),
        Err(e) => {
            return Outcome::fail(
                Code::Ssh,
                e.to_string(),
                Some("check that `ssh HOST` works in a terminal (host alias, keys, known_hosts)"),
            );
        }
    };
    let login_host = match master.exec("hostname", None, ssh::COMMAND_TIMEOUT).await {
        Ok(o) if o.success() && !o.stdout.trim().is_empty() => o.stdout.trim().to_string(),
        Ok(o) => {
            return Outcome::fail(
                Code::Ssh,
                format!("`hostname` on the login node failed: {}", o.stderr.trim()),
                None,
            );
        }
        Err(e) => return Outcome::fail(Code::Ssh, e.to_string(), None),
    };
    reporter.emit(Event::SshConnected {
        destination: plan.login.clone(),
        login_host: login_host.clone(),
    });

    // 3. pvlaunch's own relay between the forward and the client (two-hop: between the client
    //    and the tunnel, once the tunnel is open).
    let mut events = None;
    let mut relay_port = 0;
    if !plan.forward() {
        let to = match format!("127.0.0.1:{}", plan.client_port).parse() {
            Ok(t) => t,
            Err(_) => return Outcome::fail(Code::Failure, "bad client address", None),
        };
        match start_relay(held, ListenAddr::loopback(0), to).await {
            Ok((port, rx)) => {
                relay_port = port;
                events = Some(rx);
            }
            Err(o) => return o,
        }
    }
    let master = held.master.as_ref().expect("started above");

    // 4. The path between the compute nodes and pvlaunch's relay (the recipe's part).
    let mut ctx = crate::recipe::Ctx {
        plan,
        master,
        login_host: &login_host,
        local_port: relay_port,
        reporter,
        remote: &mut held.remote,
    };
    let reach = match crate::recipe::prepare(&mut ctx).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };

    // 5. The job.
    let mut spec = plan.job.clone();
    spec.command = reach.job_command(launch, plan.connect_id);
    let script = match scheduler.render_script(&spec) {
        Ok(s) => s,
        Err(e) => return Outcome::fail(Code::InvalidProfile, e.to_string(), None),
    };
    let submit = match quote::join(&plan.submit) {
        Ok(s) => format!("mkdir -p {dir} && cd {dir} && {s}", dir = plan::REMOTE_DIR),
        Err(e) => return Outcome::fail(Code::InvalidProfile, e.to_string(), None),
    };
    let out = match master
        .exec(&submit, Some(script.as_bytes()), ssh::COMMAND_TIMEOUT)
        .await
    {
        Ok(o) => o,
        Err(e) => return Outcome::fail(Code::Ssh, e.to_string(), None),
    };
    let job = match scheduler.parse_submit(&CommandOutput::from(&out)) {
        Ok(id) => id,
        Err(e) => {
            return Outcome::fail(
                Code::Job,
                format!("submitting the job failed: {e}"),
                Some("run the submit command by hand on the login node to see why"),
            );
        }
    };
    held.job = Some(job.clone());
    reporter.emit(Event::JobSubmitted {
        job_id: job.to_string(),
        scheduler: plan.scheduler.to_string(),
        output: format!(
            "{}/{}",
            plan::REMOTE_DIR,
            plan::output_path(&plan.session_tag)
        ),
    });

    // 6. The guard: cancels the job if this session's ssh link drops (even on SIGKILL).
    match crate::job::start_guard_after_submit(master, scheduler, &job) {
        Ok(g) => held.guard = Some(g),
        Err(e) => reporter.emit(Event::Warning {
            message: format!("no guard on the login node: {e}"),
        }),
    }

    // 7. Follow the job until pvserver connects, then until the session ends.
    let mut follow = Follow {
        plan,
        scheduler,
        job: &job,
        login_host: &login_host,
        reach: &reach,
        events,
    };
    follow.run(held, reporter).await
}

/// The client's environment: where to connect or listen, for scripts that connect themselves.
fn client_env(plan: &Plan, url: &str, port: u16, timeout: Duration) -> Vec<(String, String)> {
    let mut env = vec![
        ("PVLAUNCH_URL".to_string(), url.to_string()),
        ("PVLAUNCH_PORT".to_string(), port.to_string()),
        (
            "PVLAUNCH_TIMEOUT".to_string(),
            timeout.as_secs().to_string(),
        ),
    ];
    if let Some(id) = plan.connect_id {
        env.push(("PVLAUNCH_CONNECT_ID".into(), id.to_string()));
    }
    env
}

/// Bind pvlaunch's local relay from `listen` to `to` and run it; returns the port it listens
/// on and its events.
async fn start_relay(
    held: &mut Held,
    listen: ListenAddr,
    to: Target,
) -> Result<(u16, mpsc::UnboundedReceiver<RelayEvent>), Outcome> {
    let relay = Relay::bind(RelayConfig::new(vec![Forward::new(listen, to)]))
        .await
        .map_err(|e| Outcome::fail(Code::Failure, format!("local relay: {e}"), None))?;
    let port = match relay.listeners().first().map(|l| l.addr.clone()) {
        Some(ListenAddr::Tcp { port, .. }) => port,
        _ => {
            return Err(Outcome::fail(
                Code::Failure,
                "local relay has no TCP listener",
                None,
            ));
        }
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    held.relay_stop = Some(stop_tx);
    held.relay_task = Some(tokio::spawn(relay.run(
        async {
            let _ = stop_rx.await;
        },
        Some(events_tx),
    )));
    Ok((port, events))
}

/// What `follow` needs besides the held resources.
struct Follow<'a> {
    plan: &'a Plan,
    scheduler: &'a dyn Scheduler,
    job: &'a JobId,
    login_host: &'a str,
    reach: &'a Reach,
    /// The local relay's events (two-hop: from the moment the tunnel opens).
    events: Option<mpsc::UnboundedReceiver<RelayEvent>>,
}

/// Two-hop: where the tunnel goes, once it is open.
struct Tunnel {
    node: String,
    port: u16,
}

impl Follow<'_> {
    /// Follow the job until pvserver connects (two-hop: until pvserver listens, then the tunnel
    /// opens and the client connects), then until the session ends.
    async fn run(&mut self, held: &mut Held, reporter: &mut Reporter) -> Outcome {
        let plan = self.plan;
        let job = self.job;
        let queued_since = tokio::time::Instant::now();
        let mut running_since: Option<tokio::time::Instant> = None;
        let mut nodes: Vec<String> = Vec::new();
        let mut connected: Option<u64> = None;
        let mut pause = POLL_MIN;
        let mut next_poll = tokio::time::Instant::now();
        let mut last_state: Option<JobState> = None;
        // Two-hop: the job runs and pvserver's output is read until it listens.
        let mut awaiting_server = false;
        let mut next_output = tokio::time::Instant::now();
        let mut tunnel: Option<Tunnel> = None;
        loop {
            let master_alive = held.master.as_mut().is_some_and(|m| m.alive());
            if !master_alive {
                return Outcome::fail(
                    Code::Ssh,
                    "the ssh connection to the login node dropped",
                    Some("the job is cancelled by the guard on the login node"),
                );
            }
            tokio::select! {
                ev = recv(&mut self.events) => match ev {
                    Some(RelayEvent::Opened { id, peer, .. }) if connected.is_none() => {
                        connected = Some(id);
                        let peer = match &tunnel {
                            Some(t) => format!("the tunnel to {}:{}", t.node, t.port),
                            None => peer.to_string(),
                        };
                        reporter.emit(Event::ServerConnected { peer });
                        next_poll = tokio::time::Instant::now() + POLL_CONNECTED;
                    }
                    Some(RelayEvent::Closed { id, bytes_from_peer, bytes_to_peer, duration, .. }) if Some(id) == connected => {
                        // The relay's peer is pvserver in the reverse recipes, the client in two-hop.
                        let (to_client, to_server) = if plan.forward() {
                            (bytes_to_peer, bytes_from_peer)
                        } else {
                            (bytes_from_peer, bytes_to_peer)
                        };
                        reporter.emit(Event::SessionEnded {
                            bytes_to_client: to_client,
                            bytes_to_server: to_server,
                            seconds: duration.as_secs_f64(),
                        });
                        if to_client < HANDSHAKE_BYTES && duration < Duration::from_secs(2) {
                            return handshake_failed(held.master.as_ref().expect("alive"), plan).await;
                        }
                        // A client pvlaunch started (a pvpython script) finishes its own work.
                        if let Some(c) = held.client.as_mut() {
                            return match tokio::time::timeout(CLIENT_EXIT_GRACE, c.wait()).await {
                                Ok(Ok(status)) => {
                                    held.client = None;
                                    client_outcome(status)
                                }
                                _ => Outcome::Finished("the ParaView connection closed".into()),
                            };
                        }
                        return Outcome::Finished("the ParaView connection closed".into());
                    }
                    Some(_) => {}
                    None => return Outcome::fail(Code::Failure, "the local relay stopped", None),
                },
                status = wait_child(&mut held.client) => {
                    held.client = None;
                    return match status {
                        Ok(status) => client_outcome(status),
                        Err(e) => Outcome::fail(Code::Client, format!("waiting for the client: {e}"), None),
                    };
                }
                _ = tokio::time::sleep_until(next_output), if awaiting_server => {
                    match self.open_tunnel(held, reporter, &nodes).await {
                        Ok(Some(t)) => {
                            tunnel = Some(t);
                            awaiting_server = false;
                        }
                        Ok(None) => next_output = tokio::time::Instant::now() + two_hop::OUTPUT_POLL,
                        Err(outcome) => return outcome,
                    }
                }
                _ = tokio::time::sleep_until(next_poll) => {
                    let master = held.master.as_ref().expect("alive");
                    let state = match crate::job::query_state(master, self.scheduler, job).await {
                        Ok(s) => s,
                        Err(e) => {
                            reporter.emit(Event::Warning { message: format!("job query failed: {e}") });
                            next_poll = tokio::time::Instant::now() + pause;
                            continue;
                        }
                    };
                    let mut grow_pause = false;
                    match &state {
                        JobState::Queued { reason, estimated_start } => {
                            if last_state.as_ref() != Some(&state) {
                                reporter.emit(Event::JobQueued { job_id: job.to_string(), reason: reason.clone(), estimated_start: estimated_start.clone() });
                            }
                            if queued_since.elapsed() > plan.queue_timeout {
                                return Outcome::fail(Code::Timeout, format!("job {job} still queued after {} s", plan.queue_timeout.as_secs()), Some("raise <Job queue-timeout>, or pick another partition"));
                            }
                            grow_pause = true;
                        }
                        JobState::Running { nodes: on } => {
                            if running_since.is_none() {
                                running_since = Some(tokio::time::Instant::now());
                                nodes = on.clone();
                                reporter.emit(Event::JobRunning { job_id: job.to_string(), nodes: on.clone() });
                                if plan.forward() {
                                    awaiting_server = true;
                                    next_output = tokio::time::Instant::now();
                                }
                            }
                            if connected.is_none() && running_since.is_some_and(|t| t.elapsed() > plan.connect_timeout) {
                                return connect_timeout(plan, tunnel.is_some());
                            }
                            pause = POLL_MIN.max(Duration::from_secs(3));
                        }
                        JobState::Finished { state: s, exit_code, .. } => {
                            let tail = crate::job::output_tail(held.master.as_ref().expect("alive"), plan).await;
                            reporter.emit(Event::JobFinished { job_id: job.to_string(), state: s.clone(), exit_code: *exit_code, output_tail: tail.clone() });
                            held.job = None;
                            if connected.is_some() {
                                return Outcome::Finished(format!("the job ended ({s})"));
                            }
                            if matches!(self.reach, Reach::Hop { .. })
                                && let Some(why) = reverse_two_hop::hop_failure(&tail)
                            {
                                return reverse_two_hop::failed(&why, self.login_host);
                            }
                            let mut what = if plan.forward() && tunnel.is_none() {
                                two_hop::never_listened(job.as_str(), s)
                            } else {
                                format!("job {job} ended ({s}) before pvserver connected")
                            };
                            let master = held.master.as_ref().expect("alive");
                            if let Ok(Some(out)) = two_hop::read_output(master, plan).await
                                && let Some(e) = crate::recipe::first_error(&out)
                            {
                                what.push_str(": ");
                                what.push_str(&e);
                            }
                            return Outcome::fail(Code::Job, what, Some("the job's output above says why"));
                        }
                        JobState::Unknown { state: s } => {
                            if last_state.as_ref() != Some(&state) {
                                reporter.emit(Event::Warning { message: format!("job {job} is in state {s}") });
                            }
                        }
                    }
                    last_state = Some(state);
                    next_poll = tokio::time::Instant::now() + if connected.is_some() { POLL_CONNECTED } else { pause };
                    if grow_pause {
                        // Back off only after the first quick look.
                        pause = (pause.mul_f32(1.5)).min(POLL_MAX);
                    }
                }
            }
        }
    }

    /// Two-hop: once pvserver's output says it listens, open the tunnel to it, put the local
    /// relay in front, and start the client. `None` while pvserver does not listen yet.
    async fn open_tunnel(
        &mut self,
        held: &mut Held,
        reporter: &mut Reporter,
        nodes: &[String],
    ) -> Result<Option<Tunnel>, Outcome> {
        let plan = self.plan;
        let master = held.master.as_ref().expect("alive");
        let output = match two_hop::read_output(master, plan).await {
            Ok(Some(o)) => o,
            Ok(None) => return Ok(None),
            Err(e) => {
                reporter.emit(Event::Warning {
                    message: format!("reading the job's output failed: {e}"),
                });
                return Ok(None);
            }
        };
        let Some((host, port)) = two_hop::accepting(&output) else {
            return Ok(None);
        };
        reporter.emit(Event::ServerListening {
            host: host.clone(),
            port,
        });
        let node = two_hop::target_node(nodes, &host);
        let local = two_hop::open_tunnel(master, &node, port).await?;
        let to: Target = std::net::SocketAddr::from(([127, 0, 0, 1], local)).into();
        let (relay_port, events) = start_relay(held, ListenAddr::loopback(plan.client_port), to)
            .await
            .map_err(|o| match o {
                Outcome::Failed { message, .. } if plan.client_port != 0 => Outcome::fail(
                    Code::Client,
                    format!("{message} (the client's port {})", plan.client_port),
                    Some("free the port, or choose another one with --port"),
                ),
                o => o,
            })?;
        self.events = Some(events);
        let url = client::url(false, relay_port);
        reporter.emit(Event::TunnelOpened {
            node: node.clone(),
            port,
            url: url.clone(),
        });
        if let Some(argv) = plan.client_argv_for(&url) {
            let env = client_env(plan, &url, relay_port, plan.connect_timeout);
            match client::start(&argv, &env) {
                Ok(c) => held.client = Some(c),
                Err(e) => return Err(Outcome::fail(Code::Client, e.to_string(), Some(e.hint()))),
            }
        }
        Ok(Some(Tunnel { node, port }))
    }
}

/// The next relay event, or never when there is no relay yet.
async fn recv(events: &mut Option<mpsc::UnboundedReceiver<RelayEvent>>) -> Option<RelayEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// pvserver did not connect (two-hop: listen, or the client did not connect) in time.
fn connect_timeout(plan: &Plan, tunnel_open: bool) -> Outcome {
    let secs = plan.connect_timeout.as_secs();
    if !plan.forward() {
        return Outcome::fail(
            Code::Timeout,
            format!("pvserver did not connect within {secs} s of the job starting"),
            Some("see the job's output on the login node"),
        );
    }
    if !tunnel_open {
        let file = format!(
            "~/{}/{}",
            plan::REMOTE_DIR,
            plan::output_path(&plan.session_tag)
        );
        return Outcome::fail(
            Code::Timeout,
            format!("pvserver did not listen within {secs} s of the job starting"),
            Some(&format!(
                "pvlaunch reads pvserver's `Accepting connection(s)` line from {file} on the login node while the job runs; see that file (PBS needs `-k oed`, LSF LSB_STDOUT_DIRECT=y, for it to be written before the job ends)"
            )),
        );
    }
    Outcome::fail(
        Code::Timeout,
        format!("the client did not connect within {secs} s of the job starting"),
        Some(match plan.client {
            Mode::Wait => "connect your ParaView client to the URL printed above",
            _ => "check that the client starts on its own",
        }),
    )
}

/// A connection that closed in the handshake: pvserver's log says why, when it can.
async fn handshake_failed(master: &Master, plan: &Plan) -> Outcome {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Ok(Some(out)) = two_hop::read_output(master, plan).await
            && let Some(r) = crate::recipe::handshake_refusal(&out)
        {
            let mut message = r.message().to_string();
            if r == crate::recipe::Refusal::ConnectId {
                message.push_str(&match plan.connect_id {
                    Some(id) => format!(" (pvserver expects {id})"),
                    None => " (pvserver expects none)".into(),
                });
            }
            return Outcome::fail(Code::Client, message, Some(r.hint()));
        }
    }
    Outcome::fail(
        Code::Client,
        "the connection closed during the ParaView handshake",
        Some(
            "client and server must match on ParaView's major.minor version and on the connect-id",
        ),
    )
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// A client that exits 0 ends the session normally; otherwise its status is the failure.
fn client_outcome(status: std::process::ExitStatus) -> Outcome {
    if status.success() {
        Outcome::Finished("the client finished".into())
    } else {
        Outcome::fail(
            Code::Client,
            format!("the client exited with {status}"),
            None,
        )
    }
}

async fn cleanup(plan: &Plan, scheduler: &dyn Scheduler, held: &mut Held, reporter: &mut Reporter) {
    if let Some(mut c) = held.client.take() {
        crate::process::stop_group(&mut c, Duration::from_secs(5)).await;
        reporter.emit(Event::Cleanup {
            step: "client stopped".into(),
            ok: true,
            detail: None,
        });
    }
    if let Some(job) = held.job.take() {
        if plan.keep_job {
            if let Some(g) = held.guard.as_mut()
                && let Some(mut stdin) = g.stdin.take()
            {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(b"keep\n").await;
                let _ = stdin.shutdown().await;
            }
            reporter.emit(Event::Cleanup {
                step: format!("job {job} kept (--keep-job)"),
                ok: true,
                detail: None,
            });
        } else {
            let result = match (
                held.master.as_ref(),
                quote::join(scheduler.cancel_command(&job)),
            ) {
                (Some(m), Ok(cmd)) => match m.exec(&cmd, None, ssh::COMMAND_TIMEOUT).await {
                    Ok(o) => scheduler
                        .parse_cancel(&CommandOutput::from(&o))
                        .map(|c| format!("{c:?}"))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                (None, _) => Err("no ssh connection; the login node's guard cancels it".into()),
                (_, Err(e)) => Err(e.to_string()),
            };
            reporter.emit(Event::Cleanup {
                step: format!("job {job} cancelled"),
                ok: result.is_ok(),
                detail: result.err(),
            });
        }
    }
    if let Some(mut g) = held.guard.take() {
        crate::process::stop(&mut g, Duration::from_secs(2)).await;
    }
    for mut r in held.remote.drain(..) {
        // Closing its ssh session ends the login node's relay (--stop-on-stdin-eof).
        crate::process::stop(&mut r, Duration::from_secs(2)).await;
        reporter.emit(Event::Cleanup {
            step: "relay on the login node stopped".into(),
            ok: true,
            detail: None,
        });
    }
    if let Some(stop) = held.relay_stop.take() {
        let _ = stop.send(());
        if let Some(task) = held.relay_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        reporter.emit(Event::Cleanup {
            step: "local relay closed".into(),
            ok: true,
            detail: None,
        });
    }
    if let Some(mut m) = held.master.take() {
        m.stop().await;
        reporter.emit(Event::Cleanup {
            step: "ssh connection and forwards closed".into(),
            ok: true,
            detail: None,
        });
    }
    held.private_dir.take();
}

/// Second signal: kill what is local now; the login node's guard cancels the job.
async fn hard_stop(held: &mut Held) {
    if let Some(mut c) = held.client.take() {
        crate::process::stop_group(&mut c, Duration::from_millis(200)).await;
    }
    if let Some(mut g) = held.guard.take() {
        let _ = g.start_kill();
    }
    if let Some(mut m) = held.master.take() {
        m.stop().await;
    }
}
