//! Runs a [`Plan`]: one coordinator that owns every resource, carries out the steps of the
//! recipe, then follows the job with the [`Follow`] state machine (pure, in `follow.rs`),
//! selecting over signals, relay events, the client, the ssh master and timers. Cleanup runs on
//! every path; the edge ([`run`]) turns the [`Ending`] into the `error` and `done` events.
//!
//! Order of a session (reverse recipes): ssh master -> client listens -> local relay -> the
//! recipe's path (remote forward checked to face the compute nodes; or a relay, or the job's
//! own hop, in front of a loopback forward) -> job submitted -> guard started on the login
//! node -> follow (queued, running, pvserver connected) -> cleanup (client, job, guard, relay,
//! forward, master). The login comes first so that a wrong host or key fails before a client
//! window opens.
//!
//! Two-hop: ssh master -> job submitted (pvserver listens) -> guard -> running: pvserver's
//! `Accepting connection(s)` line read from the job's output -> local forward to the node ->
//! local relay in front of it -> client started (connects) -> session -> the same cleanup.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::mpsc;

use crate::auth;
use crate::client::{self, Mode};
use crate::events::{Event, Reporter};
use crate::exit::Code;
use crate::follow::{self, Action, Finish, Follow, Input};
use crate::hop::Secret;
use crate::job;
use crate::outcome::{self, Ending, Failure};
use crate::plan::{self, Plan};
use crate::process::Signals;
use crate::profile::settings::{Launch, OwnedHops};
use crate::quote;
use crate::recipe::Owned;
use crate::recipe::{Reach, reverse_two_hop, two_hop};
use crate::reconnect::{self, Resumable};
use crate::relay::{self, Forward, ListenAddr, Lock, Relay, RelayConfig, RelayEvent, Target};
use crate::remote;
use crate::scheduler::{CommandOutput, JobId, JobState, Scheduler};
use crate::ssh::{self, Master};

/// How long a local client may take to start listening (the GUI loads plugins).
pub const CLIENT_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client pvlaunch started may take to finish after the connection closed.
pub const CLIENT_EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long the end of a session waits for the job to reach a final state.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the job's wall time ended the session, how long the client pvlaunch started may take
/// to exit on its own (ParaView offers to save its state when its server goes).
pub const CLIENT_WALLTIME_WAIT: Duration = Duration::from_secs(600);
/// How long the client gets to stop (SIGTERM to its group, then SIGKILL).
pub const CLIENT_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the local relay gets to close its connections at cleanup.
pub const RELAY_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long cleanup waits for the guard to confirm the cancel (it goes on after that).
pub const GUARD_CANCEL_WAIT: Duration = Duration::from_secs(20);
/// Whether the workstation's relay checks that local peers are this user's (the kernel's
/// socket table, Linux only; elsewhere the connect-id is the lock).
const SAME_USER_CHECK: bool = cfg!(target_os = "linux");
/// How long a helper ssh session on the login node gets to end at cleanup.
pub const HELPER_STOP_GRACE: Duration = Duration::from_secs(2);

/// Everything the session holds, so that cleanup can release it whatever happened.
struct Held {
    client: Option<Child>,
    master: Option<Master>,
    relay_stop: Option<tokio::sync::oneshot::Sender<()>>,
    relay_task: Option<tokio::task::JoinHandle<relay::RelaySummary>>,
    job: Option<JobId>,
    /// The login node's guard, started before the job is submitted: the one canceller.
    guard: Option<job::Guard>,
    /// Helpers on the login node (the relay's ssh session).
    remote: Vec<Child>,
    private_dir: Option<tempfile::TempDir>,
    /// This session's claim on the client's port.
    port_claim: Option<client::PortClaim>,
    /// Whether a submit was ever sent (before that, there is no job to look for).
    submit_sent: bool,
    /// Owned two-hop: the task that joins the tunnel to the listening client.
    join: Option<tokio::task::JoinHandle<()>>,
    /// What a session needs to come back after a lost link, when its path allows it.
    resumable: Option<Resumable>,
}

/// Run a session: the steps, then cleanup; emits `error` (when it failed) and `done` last.
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
        port_claim: None,
        submit_sent: false,
        join: None,
        resumable: None,
    };
    let scheduler = plan.scheduler.scheduler();
    let mut signals = Signals::new();
    let ending = tokio::select! {
        ending = drive(&plan, &launch, target, scheduler.as_ref(), &mut held, reporter) => ending,
        n = signals.next() => Ending::Signal(n),
    };
    // A signal may have come while ssh owned the terminal.
    reporter.take_back_terminal();
    if let Ending::Signal(n) = &ending {
        reporter.emit(Event::Warning {
            message: format!("stopping on signal {n}: cleaning up (again to force)"),
        });
    }
    // A second signal during cleanup skips the graceful steps.
    tokio::select! {
        _ = cleanup(&plan, scheduler.as_ref(), &mut held, reporter) => {}
        n = signals.next() => {
            reporter.emit(Event::Warning { message: format!("signal {n} again: stopping now") });
            hard_stop(&mut held).await;
        }
    }
    finish(reporter, &ending)
}

/// The edge: the `error` event for a failure, then `done`; returns the exit code.
pub fn finish(reporter: &mut Reporter, ending: &Ending) -> Code {
    if let Ending::Failed(f) = ending {
        reporter.emit(Event::Error {
            message: f.to_string(),
            hint: f.hint(),
        });
    }
    let code = ending.code();
    reporter.emit(Event::Done {
        exit_code: code.as_i32(),
        reason: ending.reason(),
    });
    code
}

async fn drive(
    plan: &Plan,
    launch: &Launch,
    target: ssh::Target,
    scheduler: &dyn Scheduler,
    held: &mut Held,
    reporter: &mut Reporter,
) -> Ending {
    match steps(plan, launch, target, scheduler, held, reporter).await {
        Ok(ending) | Err(ending) => ending,
    }
}

async fn steps(
    plan: &Plan,
    launch: &Launch,
    target: ssh::Target,
    scheduler: &dyn Scheduler,
    held: &mut Held,
    reporter: &mut Reporter,
) -> Result<Ending, Ending> {
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

    // 0. One session per client port: a second one would reach the first one's client.
    if plan.client_port != 0 {
        claim_client_port(plan, held, plan.client_port)?;
    }

    // 1. One ssh connection, before anything else: a wrong host or key fails here.
    reporter.emit(Event::SshConnecting {
        destination: plan.login.clone(),
    });
    let asker = auth::choose(&auth::Surroundings::here(launch.askpass.as_deref()));
    // While ssh may ask something (a passphrase, a host key, a one-time code), the terminal is
    // ssh's: no spinner over its prompt.
    if asker == auth::Asker::Terminal {
        reporter.hand_over_terminal();
    }
    let dir = held
        .private_dir
        .as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let comeback_target = target.clone();
    let started = open_master(target, launch, &asker, &dir, reporter).await;
    reporter.take_back_terminal();
    let master = match started {
        Ok(m) => held.master.insert(m),
        Err(ssh::SshError::MasterExited {
            destination,
            stderr,
        }) => {
            // Never tried again: a site may lock the account after failed codes.
            let said = auth::diagnose(&stderr, &destination, &asker);
            return Err(Failure::SshLogin {
                message: said.message,
                hint: Some(said.hint),
            }
            .into());
        }
        Err(e) => {
            return Err(Failure::SshLogin {
                message: e.to_string(),
                hint: None,
            }
            .into());
        }
    };
    let login_host = match master.exec("hostname", None, ssh::COMMAND_TIMEOUT).await {
        Ok(o) if o.success() && !o.stdout.trim().is_empty() => o.stdout.trim().to_string(),
        Ok(o) => {
            return Err(Failure::ssh(format!(
                "`hostname` on the login node failed: {}",
                o.stderr.trim()
            ))
            .into());
        }
        Err(e) => return Err(Failure::ssh(e.to_string()).into()),
    };
    reporter.emit(Event::SshConnected {
        destination: plan.login.clone(),
        login_host: login_host.clone(),
        master: match master.owner() {
            _ if master.logged_in() => "new",
            ssh::Owner::Session => "new",
            ssh::Owner::Kept => "kept",
            ssh::Owner::User => "user",
        },
    });

    // 2. The guard, before anything is made on the cluster: from here on, whatever happens (a
    //    signal, SIGKILL, a lost link, a submit that hangs after submitting), a job with this
    //    session's tag and the session's files there have someone on the login node to remove
    //    them. It hears the workstation's heartbeat and takes silence for a dead link.
    let guard = job::start_guard(master, scheduler, &plan.session_tag, plan.grace)
        .await
        .map_err(|e| Failure::Ssh {
            message: format!("the guard on the login node did not start: {e}"),
            hint: Some(
                "without a guard a job could outlive this session; check that `sh` runs on the login node".into(),
            ),
        })?;
    held.guard = Some(guard);

    // 3. Owned hops: pvlaunch on the cluster, the session's key, a private folder for sockets.
    let secret = Arc::new(Secret::generate());
    let owned = prepare_owned(plan, held, reporter, &secret).await?;

    // 4. In the reverse recipes the client listens before anything can connect to it. In
    //    two-hop it starts once pvserver listens and the tunnel is open (while following).
    if !plan.forward() {
        start_listening_client(plan, held, reporter).await?;
    }

    // 5. pvlaunch's own relay between the forward and the client (two-hop: between the client
    //    and the tunnel, once the tunnel is open). With owned hops it lets through only a
    //    connection that proves the session's key.
    //    Where a lost link may come back, a second listener takes the resumable links of the
    //    relay recipe (crate::resume): the stream to the client stays open across them.
    let mut events = None;
    let mut relay_port = 0;
    let mut resume_port = None;
    if !plan.forward() {
        let to: Target = std::net::SocketAddr::from(([127, 0, 0, 1], plan.client_port)).into();
        let lock = Lock {
            accept_key: owned.as_ref().map(|o| Arc::clone(&o.secret)),
            same_user: SAME_USER_CHECK,
            connect_key: None,
            resume: None,
        };
        let mut forwards = vec![(ListenAddr::loopback(0), to.clone(), lock.clone())];
        if owned.as_ref().is_some_and(|o| o.lease.is_some()) {
            let resume = Some(relay::ResumeSide::Accept { grace: plan.grace });
            forwards.push((ListenAddr::loopback(0), to, Lock { resume, ..lock }));
        }
        let (ports, rx) = start_relay(held, forwards).await?;
        relay_port = ports[0];
        resume_port = ports.get(1).copied();
        events = Some(rx);
    }
    let master = held.master.as_ref().expect("started above");

    // 6. The path between the compute nodes and pvlaunch's relay (the recipe's part).
    let mut ctx = crate::recipe::Ctx {
        plan,
        master,
        login_host: &login_host,
        local_port: relay_port,
        resume_port,
        reporter,
        remote: &mut held.remote,
        owned: owned.as_ref(),
        resumable: false,
    };
    let reach = crate::recipe::prepare(&mut ctx).await?;
    let resumable = match (&owned, ctx.resumable) {
        (Some(o), true) => Some(Resumable {
            login_host: login_host.clone(),
            key_file: o.key_file.clone(),
            run_dir: o.run_dir.clone(),
            lease: o.lease.clone().expect("a resumable path has a lease"),
            forward_socket: o.resume_socket(),
            relay_port: resume_port.expect("a resumable path has its listener"),
            grace: plan.grace,
        }),
        _ => None,
    };
    match (&resumable, plan.grace.is_zero()) {
        (Some(r), _) => reporter.emit(Event::Resumable {
            resumable: true,
            why: format!(
                "pvlaunch holds both ends of the link to {}: a dropped link is waited for up to {} s (--grace)",
                r.login_host,
                r.grace.as_secs()
            ),
        }),
        (None, true) => reporter.emit(Event::Resumable {
            resumable: false,
            why: "--no-grace (or <Connection grace=\"no\">): a dropped link ends the session".into(),
        }),
        (None, false) => reporter.emit(Event::Resumable {
            resumable: false,
            why: not_resumable_why(plan, owned.is_some(), held.master.as_ref()),
        }),
    }
    if let (Some(r), Some(guard)) = (&resumable, held.guard.as_mut()) {
        guard
            .lease(&r.lease)
            .await
            .map_err(|e| Failure::ssh(format!("the guard on the login node: {e}")))?;
    }
    held.resumable = resumable.clone();
    if !reach.owned() {
        reporter.emit(Event::Warning {
            message: "this session's path is not pvlaunch's own: other users of the cluster could reach pvserver, and only the connect-id stands in their way (docs/security.md)".into(),
        });
    }

    // 7. A submit is under way: the guard sweeps by tag even if its result never arrives.
    let told = match held.guard.as_mut() {
        Some(g) => g.submitting().await,
        None => Ok(()),
    };
    told.map_err(|e| Failure::ssh(format!("the guard on the login node: {e}")))?;

    // 8. The job.
    let mut spec = plan.job.clone();
    spec.command = reach.job_command(launch, plan.connect_id);
    if plan.keep_job {
        crate::keep::serve_again(&mut spec, reporter);
    }
    let script = scheduler
        .render_script(&spec)
        .map_err(|e| Failure::Profile {
            message: e.to_string(),
        })?;
    // umask 077: the scheduler creates the job's output file with the submitter's umask.
    let submit = quote::join(&plan.submit)
        .map(|s| {
            format!(
                "umask 077 && mkdir -p {dir} && cd {dir} && {s}",
                dir = plan::REMOTE_DIR
            )
        })
        .map_err(|e| Failure::Profile {
            message: e.to_string(),
        })?;
    held.submit_sent = true;
    let out = master
        .exec(&submit, Some(script.as_bytes()), ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| match e {
            ssh::SshError::Timeout { timeout, .. } => Failure::SubmitHung {
                secs: timeout.as_secs(),
            },
            e => Failure::ssh(e.to_string()),
        })?;
    let job = scheduler
        .parse_submit(&CommandOutput::from(&out))
        .map_err(|e| Failure::SubmitFailed {
            message: e.to_string(),
        })?;
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
    if let Some(g) = held.guard.as_mut()
        && let Err(e) = g.job_known(&job).await
    {
        // It still cancels by the session's tag.
        reporter.emit(Event::Warning {
            message: format!("the guard on the login node did not take the job's id: {e}"),
        });
    }

    // 9. Follow the job until pvserver connects, then until the session ends.
    let mut follower = Follower {
        plan,
        scheduler,
        job: &job,
        login_host: &login_host,
        reach: &reach,
        secret: reach.owned().then(|| Arc::clone(&secret)),
        events,
        resumable,
        comeback: Comeback {
            target: comeback_target,
            launch,
            asker: &asker,
            dir: &dir,
        },
    };
    Ok(follower.run(held, reporter).await)
}

/// Owned hops need pvlaunch on the cluster (the profile's `relay-program`, one of this version
/// found there, or this binary copied), the session's key in a 0600 file on the shared home, and
/// a private folder on the login node for the forward's socket. Both are removed by the guard
/// at the end. When pvlaunch cannot run there, the plain paths, with a warning (or no session,
/// under `owned-hops="required"`).
async fn prepare_owned(
    plan: &Plan,
    held: &mut Held,
    reporter: &mut Reporter,
    secret: &Arc<Secret>,
) -> Result<Option<Owned>, Failure> {
    let master = held.master.as_ref().expect("logged in");
    let home = remote::prepare_home(master).await?;
    let named = match &plan.relay_program {
        Some(p) => {
            let probe =
                quote::join(&[p.clone(), "--version".into()]).map_err(|e| Failure::Profile {
                    message: e.to_string(),
                })?;
            match master.exec(&probe, None, ssh::COMMAND_TIMEOUT).await {
                Ok(o) if o.success() && o.stdout.starts_with("pvlaunch ") => Some(p.clone()),
                _ => {
                    reporter.emit(Event::Warning {
                        message: format!(
                            "the profile's relay-program {p} does not run on the login node: using a copy of this pvlaunch instead"
                        ),
                    });
                    None
                }
            }
        }
        None => None,
    };
    let program = match named {
        Some(p) => Ok(p),
        None => {
            let mut warn = |message: String| reporter.emit(Event::Warning { message });
            home.place_binary(master, &mut warn).await
        }
    };
    let program = match program {
        Ok(p) => p,
        Err(e @ (remote::RemoteError::Foreign { .. } | remote::RemoteError::Upload(_))) => {
            return match plan.owned_hops {
                OwnedHops::Required => Err(Failure::site(
                    format!(
                        "pvlaunch cannot run on the cluster, and the profile requires owned hops: {e}"
                    ),
                    "install pvlaunch on the cluster and name it (<Connection relay-program=\"/path/to/pvlaunch\"/>), or allow the plain path (owned-hops=\"preferred\")",
                )),
                OwnedHops::Preferred => {
                    reporter.emit(Event::Warning {
                        message: format!(
                            "pvlaunch cannot run on the cluster ({e}): this session takes the plain path, which other users of the cluster could reach (docs/security.md)"
                        ),
                    });
                    Ok(None)
                }
            };
        }
        Err(e) => return Err(e.into()),
    };
    let key_file = home.write_key(master, &plan.session_tag, secret).await?;
    let guard = held.guard.as_mut().expect("started before");
    // A kept allocation is attached to again with the same key (`pvlaunch attach`); `pvlaunch
    // stop` removes it.
    if !plan.keep_job {
        guard
            .remove_at_end(&key_file)
            .await
            .map_err(|e| Failure::ssh(format!("the guard on the login node: {e}")))?;
    }
    let run_dir = home.make_run_dir(master).await?;
    guard
        .remove_at_end(&run_dir)
        .await
        .map_err(|e| Failure::ssh(format!("the guard on the login node: {e}")))?;
    // A lost link can come back where the login relay and the guard can outlive it: a grace,
    // and connections of ssh's own (the channel's commands are hung up with it).
    // The guard takes the lease once the recipe's path is known to allow coming back.
    let lease = (!plan.grace.is_zero() && !master.channelled()).then(|| format!("{run_dir}/lease"));
    Ok(Some(Owned {
        program,
        key_file,
        run_dir,
        secret: Arc::clone(secret),
        lease,
    }))
}

/// Reverse recipes: start the client pvlaunch runs (or wait for the person's) and wait until
/// it listens.
async fn start_listening_client(
    plan: &Plan,
    held: &mut Held,
    reporter: &mut Reporter,
) -> Result<(), Failure> {
    let url = client::url(true, plan.client_port);
    if let Some(argv) = &plan.client_argv {
        if !client::port_free(plan.client_port) {
            return Err(Failure::client(
                format!(
                    "port {} is taken by another program: the client could not listen there",
                    plan.client_port
                ),
                Some("free the port, or choose another one with --port"),
            ));
        }
        let env = client_env(
            plan,
            &url,
            plan.client_port,
            plan.queue_timeout + plan.connect_timeout,
        );
        match client::start(argv, &env) {
            Ok(c) => held.client = Some(c),
            Err(e) => return Err(Failure::client(e.to_string(), Some(e.hint()))),
        }
    }
    if plan.client == Mode::Wait {
        reporter.emit(Event::WaitingForClient {
            url: url.clone(),
            connect_id: plan.connect_id,
        });
    }
    if let Err(e) =
        client::wait_listening(plan.client_port, held.client.as_mut(), CLIENT_START_TIMEOUT).await
    {
        let hint = match plan.client {
            Mode::Wait => format!(
                "start the ParaView client yourself: File > Connect, a server with resource {url}"
            ),
            _ => "check that the client starts on its own".into(),
        };
        return Err(Failure::Client {
            message: e,
            hint: Some(hint),
        });
    }
    // A client the person started must be theirs: another user's program on the port would
    // get this session's pvserver.
    client_is_ours(plan.client_port)?;
    reporter.emit(Event::ClientListening {
        port: plan.client_port,
        mode: plan.client.name().into(),
    });
    Ok(())
}

/// The listener on the client's `port` is this user's (not another user's program, which would
/// get this session's pvserver).
fn client_is_ours(port: u16) -> Result<(), Failure> {
    let me = crate::relay::effective_uid();
    match client::listening_owners(port)
        .into_iter()
        .find(|&u| u != me)
    {
        Some(uid) => Err(Failure::client(
            format!(
                "the program listening on port {port} belongs to another user (uid {uid}), not to you"
            ),
            Some("choose another port with --port, and start your client there"),
        )),
        None => Ok(()),
    }
}

/// Claim the client's port for this session (one session per port).
fn claim_client_port(plan: &Plan, held: &mut Held, port: u16) -> Result<(), Failure> {
    match client::claim_port(port, &format!("profile {}", plan.profile)) {
        Ok(claim) => {
            held.port_claim = Some(claim);
            Ok(())
        }
        Err(message) => Err(Failure::client(
            message,
            Some("end the other session first, or choose another port with --port"),
        )),
    }
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

/// Bind pvlaunch's local relay with these forwards (each from a listener to a target, with
/// its lock) and run it; returns the ports it listens on, in order, and its events.
async fn start_relay(
    held: &mut Held,
    forwards: Vec<(ListenAddr, Target, Lock)>,
) -> Result<(Vec<u16>, mpsc::UnboundedReceiver<RelayEvent>), Failure> {
    let forwards = forwards
        .into_iter()
        .map(|(listen, to, lock)| {
            let mut forward = Forward::new(listen, to);
            forward.lock = lock;
            forward
        })
        .collect();
    let mut config = RelayConfig::new(forwards);
    // One session, one pvserver: a second connection while the first is open is refused.
    config.limits.max_connections = 1;
    let relay = Relay::bind(config)
        .await
        .map_err(|e| Failure::internal(format!("local relay: {e}")))?;
    let mut ports = Vec::new();
    for l in relay.listeners() {
        match l.addr {
            ListenAddr::Tcp { port, .. } => ports.push(port),
            _ => return Err(Failure::internal("local relay has no TCP listener")),
        }
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    held.relay_stop = Some(stop_tx);
    held.relay_task = Some(tokio::spawn(relay.run(
        async {
            let _ = stop_rx.await;
        },
        Some(events_tx),
    )));
    Ok((ports, events))
}

/// What following the job needs besides the held resources.
struct Follower<'a> {
    plan: &'a Plan,
    scheduler: &'a dyn Scheduler,
    job: &'a JobId,
    login_host: &'a str,
    reach: &'a Reach,
    /// The session's key when the hops are owned (two-hop: the relay proves it to the node).
    secret: Option<Arc<Secret>>,
    /// The local relay's events (two-hop: from the moment the tunnel opens).
    events: Option<mpsc::UnboundedReceiver<RelayEvent>>,
    /// Set when a lost link may come back ([`crate::reconnect`]).
    resumable: Option<Resumable>,
    comeback: Comeback<'a>,
}

/// How the session logs in again after a lost link: as it did the first time.
struct Comeback<'a> {
    target: ssh::Target,
    launch: &'a Launch,
    asker: &'a auth::Asker,
    dir: &'a std::path::Path,
}

impl Follower<'_> {
    /// Run the [`Follow`] state machine: carry out its actions, feed it what happened.
    async fn run(&mut self, held: &mut Held, reporter: &mut Reporter) -> Ending {
        let plan = self.plan;
        let cfg = follow::Config {
            job: self.job.to_string(),
            forward: plan.forward(),
            queue_timeout: plan.queue_timeout,
            connect_timeout: plan.connect_timeout,
            client_waited: plan.client == Mode::Wait,
            output_file: format!(
                "{}/{}",
                plan::REMOTE_DIR,
                plan::output_path(&plan.session_tag)
            ),
            walltime: plan.job.walltime.map(|w| Duration::from_secs(w.as_secs())),
            warn_before: plan.warn_before,
        };
        let mut machine = Follow::new(cfg, Instant::now());
        let mut actions: VecDeque<Action> = machine.start().into();
        loop {
            while let Some(action) = actions.pop_front() {
                let input = match action {
                    Action::Emit(e) => {
                        reporter.emit(e);
                        continue;
                    }
                    Action::QueryJob => {
                        let master = held.master.as_ref().expect("alive while following");
                        match job::query_state(master, self.scheduler, self.job).await {
                            // Without the master there is no one to ask: the link is gone.
                            Err(job::JobError::Ssh(ssh::SshError::MasterGone { .. }))
                                if self.resumable.is_some() =>
                            {
                                if let Err(f) = self.come_back(held, reporter).await {
                                    return f.into();
                                }
                                actions.push_front(Action::QueryJob);
                                continue;
                            }
                            Err(job::JobError::Ssh(ssh::SshError::MasterGone { .. })) => {
                                Input::MasterDied
                            }
                            result => Input::JobState(result.map_err(|e| e.to_string())),
                        }
                    }
                    Action::QueryNodes { .. } => {
                        let master = held.master.as_ref().expect("alive while following");
                        Input::Nodes(crate::keep::nodes_finding(master, plan).await)
                    }
                    Action::ReadOutput => {
                        let master = held.master.as_ref().expect("alive while following");
                        Input::Output(
                            job::read_output(master, plan)
                                .await
                                .map_err(|e| e.to_string()),
                        )
                    }
                    Action::OpenTunnel { host, port } => {
                        match self
                            .open_tunnel(held, reporter, machine.nodes(), &host, port)
                            .await
                        {
                            Ok(node) => Input::TunnelOpened { node, port },
                            Err(f) => return f.into(),
                        }
                    }
                    Action::Finish(finish) => {
                        let ending = self.finish(finish, held, reporter).await;
                        wait_client_after_walltime(&ending, held, reporter).await;
                        return ending;
                    }
                };
                actions.extend(machine.on(input, Instant::now()));
            }
            let wake = machine.next_wakeup();
            let input = tokio::select! {
                ev = recv(&mut self.events) => match ev {
                    Some(RelayEvent::Opened { id, peer, .. }) => Input::ConnectionOpened { id, peer: peer.to_string() },
                    Some(RelayEvent::Closed { id, bytes_from_peer, bytes_to_peer, duration, .. }) => {
                        // The relay's peer is pvserver in the reverse recipes, the client in two-hop.
                        let (bytes_to_client, bytes_to_server) = if plan.forward() {
                            (bytes_to_peer, bytes_from_peer)
                        } else {
                            (bytes_from_peer, bytes_to_peer)
                        };
                        Input::ConnectionClosed { id, bytes_to_client, bytes_to_server, duration }
                    }
                    // The owned two-hop join could not open its path.
                    Some(RelayEvent::ConnectFailed { error, .. }) if held.join.is_some() => {
                        return Failure::site(
                            format!("joining the client to the session failed: {error}"),
                            "docs/security.md says how the hops of two-hop meet; `pvlaunch connect --dry-run` shows them",
                        ).into();
                    }
                    Some(RelayEvent::Resumed { replayed, .. }) => {
                        reporter.emit(Event::StreamResumed { replayed });
                        continue;
                    }
                    Some(_) => continue,
                    // The join's one connection has been reported; nothing more comes.
                    None if held.join.is_some() => {
                        self.events = None;
                        continue;
                    }
                    None => return Failure::internal("the local relay stopped").into(),
                },
                status = wait_child(&mut held.client) => {
                    held.client = None;
                    match status {
                        Ok(status) => Input::ClientExited { success: status.success(), status: status.to_string() },
                        Err(e) => return Failure::client(format!("waiting for the client: {e}"), None).into(),
                    }
                }
                _ = wait_master(&mut held.master) => {
                    if self.resumable.is_some() {
                        if let Err(f) = self.come_back(held, reporter).await {
                            return f.into();
                        }
                        continue;
                    }
                    Input::MasterDied
                }
                _ = sleep_until(wake) => Input::Timer,
            };
            actions.extend(machine.on(input, Instant::now()));
        }
    }

    /// The link is gone: log in again until the grace ends, and put back the guard and the
    /// forward ([`reconnect::restore`]). The job, the login relay and the old guard wait on
    /// the login node meanwhile; the local relay keeps the client's connection open.
    async fn come_back(&mut self, held: &mut Held, reporter: &mut Reporter) -> Result<(), Failure> {
        let r = self
            .resumable
            .clone()
            .expect("only for a resumable session");
        let lost = Instant::now();
        reporter.emit(Event::LinkLost {
            why: format!("the ssh connection to {} ended", self.plan.login),
            grace_secs: r.grace.as_secs(),
        });
        // The old guard's ssh is gone; on the login node it waits the grace.
        drop(held.guard.take());
        if let Some(mut m) = held.master.take() {
            m.stop().await;
        }
        for mut c in held.remote.drain(..) {
            // The login relay's ssh session: the relay itself lives on by the lease.
            crate::process::stop(&mut c, HELPER_STOP_GRACE).await;
        }
        let mut pauses = reconnect::pauses();
        let mut host = None;
        let mut attempt = 0;
        loop {
            let left = r.grace.saturating_sub(lost.elapsed());
            if left.is_zero() {
                return Err(Failure::LinkLost {
                    grace_secs: r.grace.as_secs(),
                    attempts: attempt,
                });
            }
            attempt += 1;
            reporter.emit(Event::Reconnecting {
                attempt,
                grace_left_secs: left.as_secs(),
            });
            let target = reconnect::target_for_attempt(&self.comeback.target, host.as_deref());
            let c = &self.comeback;
            if *c.asker == auth::Asker::Terminal {
                reporter.hand_over_terminal();
            }
            let login = tokio::time::timeout(
                left,
                open_master(target, c.launch, c.asker, c.dir, reporter),
            )
            .await;
            reporter.take_back_terminal();
            let why = match login {
                Ok(Ok(master)) => {
                    let restored = reconnect::restore(
                        &master,
                        &r,
                        self.scheduler,
                        &self.plan.session_tag,
                        self.job,
                    )
                    .await;
                    match restored {
                        Ok(guard) => {
                            held.master = Some(master);
                            held.guard = Some(guard);
                            reporter.emit(Event::LinkRestored {
                                gap_secs: lost.elapsed().as_secs(),
                                attempts: attempt,
                            });
                            return Ok(());
                        }
                        Err(e) => {
                            if let reconnect::RestoreError::OtherLoginNode { wanted, .. } = &e {
                                host = Some(wanted.clone());
                            }
                            let mut master = master;
                            master.stop().await;
                            e.to_string()
                        }
                    }
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no login before the grace ended".into(),
            };
            reporter.emit(Event::Warning {
                message: format!(
                    "attempt {attempt} to log in again failed: {}",
                    crate::process::tail(&why, 2).join(" / ")
                ),
            });
            let pause = pauses.next().unwrap_or(reconnect::MAX_PAUSE);
            tokio::time::sleep(pause.min(r.grace.saturating_sub(lost.elapsed()))).await;
        }
    }

    /// The last looks an ending needs: the job's output, the client's exit, the job's state.
    async fn finish(&self, finish: Finish, held: &mut Held, reporter: &mut Reporter) -> Ending {
        let plan = self.plan;
        let job = self.job;
        match finish {
            Finish::Now(ending) => ending,
            Finish::JobLeft {
                state,
                exit_code,
                connected,
            } => {
                let master = held.master.as_ref().expect("alive while following");
                let tail = job::output_tail(master, plan).await;
                reporter.emit(Event::JobFinished {
                    job_id: job.to_string(),
                    state: state.clone(),
                    exit_code,
                    output_tail: tail.clone(),
                });
                held.job = None;
                if connected {
                    return outcome::job_ended_during_session(job.as_str(), &state, exit_code);
                }
                if self.reach.job_hop()
                    && let Some(why) = crate::pvserver::hop_failure(&tail)
                {
                    return reverse_two_hop::failed(&why, self.login_host).into();
                }
                // pvserver's own early exit is the job's failure, told below with its error.
                if self.reach.owned()
                    && let Some(why) = crate::pvserver::node_failure(&tail)
                    && !why.starts_with("pvserver exited")
                {
                    return crate::recipe::node_failed(&why, self.login_host).into();
                }
                let mut what = if plan.forward() {
                    two_hop::never_listened(job.as_str(), &state)
                } else {
                    format!("job {job} ended ({state}) before pvserver connected")
                };
                if let Ok(Some(out)) = job::read_output(master, plan).await
                    && let Some(e) = crate::pvserver::first_error(&out)
                {
                    what.push_str(": ");
                    what.push_str(&e);
                }
                Failure::JobEnded { what }.into()
            }
            Finish::Handshake => {
                handshake_failed(held.master.as_ref().expect("alive while following"), plan)
                    .await
                    .into()
            }
            Finish::ConnectionClosed => {
                // A client pvlaunch started (a pvpython script) finishes its own work.
                let client = match held.client.as_mut() {
                    Some(c) => match tokio::time::timeout(CLIENT_EXIT_GRACE, c.wait()).await {
                        Ok(Ok(status)) => {
                            held.client = None;
                            Some((status.success(), status.to_string()))
                        }
                        _ => None,
                    },
                    None => None,
                };
                let state = self.settled_state(held).await;
                follow::settle(job.as_str(), client, state.as_ref())
            }
            Finish::ClientExited { success, status } => {
                let state = self.settled_state(held).await;
                follow::settle(job.as_str(), Some((success, status)), state.as_ref())
            }
        }
    }

    /// The job's state once it had a moment to reach a final one (a wall-time end, a cancel
    /// or a lost node first closes pvserver's connection, then shows in the scheduler).
    async fn settled_state(&self, held: &mut Held) -> Option<JobState> {
        let master = held.master.as_ref()?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut pause = Duration::from_millis(300);
        loop {
            let state = job::query_state(master, self.scheduler, self.job)
                .await
                .ok();
            let transitional = match &state {
                Some(JobState::Finished { state, .. }) => {
                    matches!(
                        state.split_whitespace().next(),
                        Some("COMPLETING" | "STAGE_OUT" | "E")
                    )
                }
                Some(JobState::Running { .. }) => true,
                _ => false,
            };
            if !transitional || Instant::now() + pause > deadline {
                if matches!(state, Some(JobState::Finished { .. })) {
                    held.job = None;
                }
                return state;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Two-hop: pvserver listens on `host:port`: open the tunnel to it, put the local relay in
    /// front, and start the client. Returns the node the tunnel goes to.
    async fn open_tunnel(
        &mut self,
        held: &mut Held,
        reporter: &mut Reporter,
        nodes: &[String],
        host: &str,
        port: u16,
    ) -> Result<String, Failure> {
        let plan = self.plan;
        let master = held.master.as_ref().expect("alive while following");
        let node = two_hop::target_node(nodes, host);
        let local = two_hop::open_tunnel(master, &node, port).await?;
        if let Some(secret) = self.secret.clone() {
            self.join_tunnel(held, reporter, &node, port, local, secret)
                .await?;
            return Ok(node);
        }
        let to: Target = std::net::SocketAddr::from(([127, 0, 0, 1], local)).into();
        // The client must be this user's; the node agent must prove the key (owned hops).
        let lock = Lock {
            accept_key: None,
            same_user: SAME_USER_CHECK,
            connect_key: self.secret.clone(),
            resume: None,
        };
        let started = start_relay(
            held,
            vec![(ListenAddr::loopback(plan.client_port), to, lock)],
        )
        .await
        .map(|(ports, events)| (ports[0], events));
        let (relay_port, events) = started.map_err(|f| {
            if plan.client_port != 0 {
                Failure::client(
                    format!("{f} (the client's port {})", plan.client_port),
                    Some("free the port, or choose another one with --port"),
                )
            } else {
                f
            }
        })?;
        self.events = Some(events);
        let url = client::url(false, relay_port);
        tunnel_opened(plan, held, reporter, &node, port, &url, relay_port)?;
        Ok(node)
    }
}

impl Follower<'_> {
    /// Owned two-hop: pvserver reverse-connected to the node agent, so the client's end must
    /// accept too (ParaView's handshake needs one connecting and one accepting side). The
    /// client listens (`csrc://`), and the workstation connects to both: to the tunnel, proving
    /// the session's key to the node agent, then to the client. Nothing listens on the
    /// workstation but the client.
    async fn join_tunnel(
        &mut self,
        held: &mut Held,
        reporter: &mut Reporter,
        node: &str,
        port: u16,
        tunnel: u16,
        secret: Arc<Secret>,
    ) -> Result<(), Failure> {
        let plan = self.plan;
        let client_port = if plan.client_port != 0 {
            plan.client_port
        } else {
            two_hop::free_local_port()
                .map_err(|e| Failure::internal(format!("no free local port: {e}")))?
        };
        let url = client::url(true, client_port);
        tunnel_opened(plan, held, reporter, node, port, &url, client_port)?;
        let wait = if plan.client == Mode::Wait {
            plan.connect_timeout
        } else {
            CLIENT_START_TIMEOUT
        };
        if let Err(e) = client::wait_listening(client_port, held.client.as_mut(), wait).await {
            return Err(Failure::Client {
                message: e,
                hint: Some(format!(
                    "the client must listen on {url} (File > Connect, a server with that resource)"
                )),
            });
        }
        client_is_ours(client_port)?;
        reporter.emit(Event::ClientListening {
            port: client_port,
            mode: plan.client.name().into(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(rx);
        held.join = Some(tokio::spawn(join(tunnel, client_port, secret, tx)));
        Ok(())
    }
}

/// The tunnel to `node:port` is open: say where the client goes (`url`, on local `client_port`),
/// and start the client pvlaunch runs.
fn tunnel_opened(
    plan: &Plan,
    held: &mut Held,
    reporter: &mut Reporter,
    node: &str,
    port: u16,
    url: &str,
    client_port: u16,
) -> Result<(), Failure> {
    reporter.emit(Event::TunnelOpened {
        node: node.to_string(),
        port,
        url: url.to_string(),
    });
    if plan.client == Mode::Wait {
        reporter.emit(Event::WaitingForClient {
            url: url.to_string(),
            connect_id: plan.connect_id,
        });
    }
    if let Some(argv) = plan.client_argv_for(url) {
        let env = client_env(plan, url, client_port, plan.connect_timeout);
        match client::start(&argv, &env) {
            Ok(c) => held.client = Some(c),
            Err(e) => return Err(Failure::client(e.to_string(), Some(e.hint()))),
        }
    }
    Ok(())
}

/// The job reached its wall time: the client pvlaunch started is not stopped (ParaView offers
/// to save its state when its server goes); wait for it to exit, at most
/// [`CLIENT_WALLTIME_WAIT`]. Cleanup stops it only after that.
async fn wait_client_after_walltime(ending: &Ending, held: &mut Held, reporter: &mut Reporter) {
    let (Ending::Failed(Failure::Walltime { job }), Some(client)) = (ending, held.client.as_mut())
    else {
        return;
    };
    reporter.emit(Event::Warning {
        message: format!(
            "job {job} reached its wall time; pvlaunch leaves the client running so that you can save your work, and waits up to {} min for it to exit",
            CLIENT_WALLTIME_WAIT.as_secs() / 60
        ),
    });
    if let Ok(Ok(_)) = tokio::time::timeout(CLIENT_WALLTIME_WAIT, client.wait()).await {
        held.client = None;
    }
}

/// Connect to the tunnel (proving the key to the node agent) and to the listening client, and
/// carry the stream between them, reporting as the relay does.
async fn join(tunnel: u16, client_port: u16, secret: Arc<Secret>, events: relay::EventSender) {
    use tokio::net::TcpStream;
    let started = Instant::now();
    let tunnel_addr = std::net::SocketAddr::from(([127, 0, 0, 1], tunnel));
    let client_addr = std::net::SocketAddr::from(([127, 0, 0, 1], client_port));
    let failed = |error: String| {
        let _ = events.send(RelayEvent::ConnectFailed {
            id: 1,
            peer: relay::Peer::Tcp(client_addr),
            listen: ListenAddr::loopback(client_port),
            error,
        });
    };
    let mut upstream = match TcpStream::connect(tunnel_addr).await {
        Ok(s) => s,
        Err(e) => return failed(format!("connect to the tunnel: {e}")),
    };
    if let Err(e) = crate::hop::preamble::connect_within(&mut upstream, &secret).await {
        return failed(format!("the node agent: {e}"));
    }
    let client = match TcpStream::connect(client_addr).await {
        Ok(s) => s,
        Err(e) => return failed(format!("connect to the client on {client_addr}: {e}")),
    };
    let _ = events.send(RelayEvent::Opened {
        id: 1,
        peer: relay::Peer::Tcp(client_addr),
        listen: ListenAddr::loopback(client_port),
        to: tunnel_addr.to_string(),
    });
    let moved = relay::bridge(
        relay::Stream::Tcp(upstream),
        relay::Stream::Tcp(client),
        relay::CopyMode::Auto,
    )
    .await;
    let (to_client, to_server, error) = match moved {
        Ok((a, b)) => (a, b, None),
        Err(e) => (0, 0, Some(e.to_string())),
    };
    let _ = events.send(RelayEvent::Closed {
        id: 1,
        peer: relay::Peer::Tcp(client_addr),
        to: tunnel_addr.to_string(),
        bytes_from_peer: to_server,
        bytes_to_peer: to_client,
        duration: started.elapsed(),
        reason: if error.is_some() {
            relay::CloseReason::Error
        } else {
            relay::CloseReason::Done
        },
        error,
    });
}

/// The next relay event, or never when there is no relay yet.
async fn recv(events: &mut Option<mpsc::UnboundedReceiver<RelayEvent>>) -> Option<RelayEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn wait_master(master: &mut Option<Master>) {
    match master {
        Some(m) => m.wait().await,
        None => std::future::pending().await,
    }
}

/// Why this session's path cannot survive a lost link.
fn not_resumable_why(plan: &Plan, owned: bool, master: Option<&Master>) -> String {
    if !owned {
        "pvlaunch does not run on the cluster, so it holds only the workstation's end of the link: a dropped link ends the session".into()
    } else if master.is_some_and(Master::channelled) {
        "the login node allows one ssh session per connection: pvlaunch's channel, and every command in it, ends with the link".into()
    } else {
        format!(
            "the {} recipe's link to the login node is ssh's own, not pvlaunch's on both ends: a dropped link ends the session (recipe=\"relay\" resumes)",
            plan::recipe_name(plan.recipe)
        )
    }
}

/// A connection that closed in the handshake: pvserver's log says why, when it can.
async fn handshake_failed(master: &Master, plan: &Plan) -> Failure {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Ok(Some(out)) = job::read_output(master, plan).await
            && let Some(refusal) = crate::pvserver::handshake_refusal(&out)
        {
            let detail = if refusal == crate::pvserver::Refusal::ConnectId {
                match plan.connect_id {
                    Some(id) => format!(" (pvserver expects {id})"),
                    None => " (pvserver expects none)".into(),
                }
            } else {
                String::new()
            };
            return Failure::Handshake { refusal, detail };
        }
    }
    Failure::ClosedEarly
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn cleanup(plan: &Plan, scheduler: &dyn Scheduler, held: &mut Held, reporter: &mut Reporter) {
    if let Some(mut c) = held.client.take() {
        crate::process::stop_group(&mut c, CLIENT_STOP_GRACE).await;
        reporter.emit(Event::Cleanup {
            step: "client stopped".into(),
            ok: true,
            detail: None,
        });
    }
    if let (Some(r), Some(m)) = (&held.resumable, &held.master) {
        // The login relay outlives its ssh session while the lease is fresh: end it.
        reconnect::end_lease(m, r).await;
        reporter.emit(Event::Cleanup {
            step: "lease ended: the relay on the login node stops".into(),
            ok: true,
            detail: None,
        });
    }
    settle_job(plan, scheduler, held, reporter).await;
    for mut r in held.remote.drain(..) {
        // Closing its ssh session ends the login node's relay (--stop-on-stdin-eof).
        let exited_on_its_own = matches!(r.try_wait(), Ok(Some(_)));
        crate::process::stop(&mut r, HELPER_STOP_GRACE).await;
        reporter.emit(Event::Cleanup {
            step: "relay on the login node stopped".into(),
            ok: !exited_on_its_own,
            detail: exited_on_its_own
                .then(|| "its ssh session had already ended before cleanup".to_string()),
        });
    }
    if let Some(join) = held.join.take() {
        join.abort();
        let _ = join.await;
        reporter.emit(Event::Cleanup {
            step: "connection to the client closed".into(),
            ok: true,
            detail: None,
        });
    }
    if let Some(stop) = held.relay_stop.take() {
        let _ = stop.send(());
        let stopped = match held.relay_task.take() {
            Some(task) => tokio::time::timeout(RELAY_STOP_GRACE, task).await.is_ok(),
            None => true,
        };
        reporter.emit(Event::Cleanup {
            step: "local relay closed".into(),
            ok: stopped,
            detail: (!stopped).then(|| {
                format!(
                    "its connections did not close within {} s",
                    RELAY_STOP_GRACE.as_secs()
                )
            }),
        });
    }
    if let Some(mut m) = held.master.take() {
        let was_alive = m.alive();
        m.stop().await;
        let step = match m.owner() {
            ssh::Owner::Session => "ssh connection and forwards closed",
            ssh::Owner::Kept => {
                "forwards closed; the ssh login stays for later sessions (`pvlaunch logout PROFILE` ends it)"
            }
            ssh::Owner::User => "forwards closed; your own ssh master stays",
        };
        reporter.emit(Event::Cleanup {
            step: step.into(),
            ok: was_alive,
            detail: (!was_alive).then(|| "the ssh connection had already dropped".to_string()),
        });
    }
    held.private_dir.take();
}

/// The session's master: the user's own when they run one for the host (`reuse-master`), else
/// one pvlaunch kept from an earlier session, else a new login (kept after the session with
/// `persist`). Only a new login may ask anything.
async fn open_master(
    target: ssh::Target,
    launch: &Launch,
    asker: &auth::Asker,
    dir: &std::path::Path,
    reporter: &mut Reporter,
) -> Result<Master, ssh::SshError> {
    use crate::profile::settings::Multiplex;
    let binary = std::env::current_exe().map_err(|source| ssh::SshError::Spawn {
        program: "pvlaunch".into(),
        source,
    })?;
    if launch.multiplex == Multiplex::No {
        return Master::start_single(target, asker, &binary, dir).await;
    }
    let master = shared_master(target, launch, asker).await?;
    if launch.multiplex == Multiplex::Auto && master.sessions_limited().await {
        reporter.emit(Event::Warning {
            message: "the login node allows one session per ssh connection (MaxSessions 1): \
                      this session's commands and forwards go through pvlaunch's own channel in \
                      that one session"
                .into(),
        });
        return master.into_channel(&binary, dir).await;
    }
    Ok(master)
}

/// A master with ssh's connection sharing: see [`open_master`].
async fn shared_master(
    target: ssh::Target,
    launch: &Launch,
    asker: &auth::Asker,
) -> Result<Master, ssh::SshError> {
    if launch.reuse_master
        && let Some(m) = Master::users(&target).await
    {
        tracing::info!("using your ssh master for {}", target.destination);
        return Ok(m);
    }
    let kept = ssh::kept_control_path(&target);
    if let Ok(path) = &kept
        && let Some(m) = Master::adopt(target.through(path.clone()), ssh::Owner::Kept).await
    {
        tracing::info!("using the ssh master kept from an earlier session");
        return Ok(m);
    }
    match (launch.persist, kept) {
        (Some(persist), Ok(path)) => {
            // A socket left by a master that died would make ssh refuse to listen there.
            let _ = std::fs::remove_file(&path);
            Master::start_kept(target.through(path), asker, persist).await
        }
        (Some(_), Err(e)) => {
            crate::say_err!("pvlaunch: cannot keep the ssh master after the session: {e}");
            Master::start(target, asker).await
        }
        (None, _) => Master::start(target, asker).await,
    }
}

/// The job at the end of a session: kept (`--keep-job`), or cancelled by the guard (by its id
/// and by the session's tag, so also a job whose submit never answered), or, without a guard,
/// directly. Every cleanup event says what really happened.
async fn settle_job(
    plan: &Plan,
    scheduler: &dyn Scheduler,
    held: &mut Held,
    reporter: &mut Reporter,
) {
    let job = held.job.take();
    let what = match &job {
        Some(j) => format!("job {j}"),
        None => "any job of this session".to_string(),
    };
    match held.guard.take() {
        // Nothing was submitted: the guard only removes the session's files on the cluster.
        Some(guard) if !held.submit_sent => {
            let _ = guard.cancel(GUARD_CANCEL_WAIT).await;
        }
        Some(guard)
            if plan.keep_job
                && job.is_some()
                && crate::keep::still_there(held.master.as_ref(), scheduler, job.as_ref())
                    .await =>
        {
            let kept = guard.keep().await;
            let job = job.as_ref().expect("matched");
            let (step, _, detail) = crate::keep::kept_step(job.as_str(), None);
            crate::keep::remember(plan, job);
            reporter.emit(Event::Cleanup {
                step,
                ok: kept.is_ok(),
                detail: match kept {
                    Ok(()) => detail,
                    Err(e) => Some(format!("the guard did not confirm: {e}")),
                },
            });
        }
        Some(guard) => {
            let report = guard.cancel(GUARD_CANCEL_WAIT).await;
            let jobs = |ids: &[String]| match ids {
                [one] => format!("job {one}"),
                many => format!("jobs {}", many.join(", ")),
            };
            let (step, ok, detail) = match &report {
                job::GuardReport::NoneLeft { cancelled } | job::GuardReport::Cancelled { ids: cancelled }
                    if !cancelled.is_empty() =>
                {
                    (format!("{} cancelled", jobs(cancelled)), true, None)
                }
                job::GuardReport::NoneLeft { .. } | job::GuardReport::Cancelled { .. } => {
                    // Nothing was left to cancel: the job had ended, or none was ever made.
                    match &job {
                        Some(_) if plan.keep_job => {
                            (format!("{what} had already ended: nothing kept"), true, None)
                        }
                        Some(_) => (format!("{what} had already ended"), true, None),
                        None => return,
                    }
                }
                job::GuardReport::StillRetrying { reason } => (
                    format!("{what} not cancelled yet"),
                    false,
                    Some(format!(
                        "the scheduler did not take the cancel yet ({reason}); the guard on the login node keeps trying for {} min",
                        job::GUARD_DEADLINE.as_secs() / 60
                    )),
                ),
                job::GuardReport::GaveUp { reason } => (
                    format!("{what} not cancelled"),
                    false,
                    Some(format!("the guard gave up: {reason}; cancel it by hand")),
                ),
                job::GuardReport::Unknown => (
                    format!("{what} not cancelled yet"),
                    false,
                    Some(
                        "the guard's ssh session is gone: the guard on the login node cancels once it notices, at the latest when the workstation's heartbeat has been silent for 20 s".into(),
                    ),
                ),
            };
            reporter.emit(Event::Cleanup { step, ok, detail });
        }
        None => {
            let Some(job) = job else { return };
            if plan.keep_job {
                let state = match held.master.as_ref() {
                    Some(m) => job::query_state(m, scheduler, &job).await.ok(),
                    None => None,
                };
                let (step, ok, detail) = crate::keep::kept_step(job.as_str(), state.as_ref());
                if ok {
                    crate::keep::remember(plan, &job);
                }
                reporter.emit(Event::Cleanup { step, ok, detail });
                return;
            }
            let usable = held.master.as_mut().is_some_and(|m| m.alive());
            let master = held.master.as_ref().filter(|_| usable);
            let result = job::cancel(master, scheduler, &job).await;
            reporter.emit(Event::Cleanup {
                step: match &result {
                    Ok(_) => format!("job {job} cancelled"),
                    Err(_) => format!("job {job} not cancelled by this session"),
                },
                ok: result.is_ok(),
                detail: result.err().map(|e| match e {
                    job::JobError::NoConnection
                    | job::JobError::Ssh(ssh::SshError::MasterGone { .. }) => {
                        format!("{e}: cancel job {job} by hand")
                    }
                    e => e.to_string(),
                }),
            });
        }
    }
}

/// Second signal: kill what is local now; the login node's guard cancels the job.
async fn hard_stop(held: &mut Held) {
    if let Some(join) = held.join.take() {
        join.abort();
    }
    if let Some(mut c) = held.client.take() {
        crate::process::stop_group(&mut c, Duration::from_millis(200)).await;
    }
    // Told to cancel, it cancels by itself on the login node (dropped without a word, it would
    // wait the grace for the session to come back).
    if let Some(guard) = held.guard.take() {
        let _ = guard.cancel(Duration::from_millis(500)).await;
    }
    if let Some(mut m) = held.master.take() {
        m.stop().await;
    }
}
