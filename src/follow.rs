//! Following a submitted job until its pvserver and the client meet, then until the session
//! ends: a pure state machine, `(state, input, now) -> (state, actions)`.
//!
//! [`Follow::on`] takes what happened (a scheduler answer, the job's output, a connection
//! through pvlaunch's relay, the client's exit, a timer) and returns what to do next
//! ([`Action`]): events to show, a query to run, the tunnel to open, or how the session ends.
//! It never runs anything and never reads a clock: the session (`session.rs`) runs the actions
//! and feeds their results back; tests feed recorded scheduler outputs and a made-up clock.
//!
//! Every wait has a bound: the queue (`queue_timeout`), pvserver's connection or listening
//! once the job runs (`connect_timeout`), a scheduler that does not answer
//! ([`QUERY_FAILURE_LIMIT`] failures in a row over at least [`QUERY_FAILURE_WINDOW`], with
//! back-off up to [`QUERY_BACKOFF_MAX`]), and a state pvlaunch does not interpret
//! ([`UNKNOWN_STATE_LIMIT`]). A job that goes from running back to the queue (a requeue) ends
//! the session: its pvserver is gone, and a second pvserver is never taken into one session.
//!
//! The wall time: once the job runs, its end is known to within a query's pause: the job
//! started after the last answer that had it queued (or after the submit), so [`Follow`]
//! takes that moment plus the wall time as the end, never later than the scheduler's. At
//! `warn_before` before that end it says so once ([`Event::WalltimeWarning`]).

use std::time::{Duration, Instant};

use crate::events::Event;
use crate::outcome::{Ending, Failure};
use crate::scheduler::JobState;

/// How often the job's output is read while pvserver starts (two-hop).
pub const OUTPUT_POLL: Duration = Duration::from_secs(1);
/// The first pause between scheduler queries while queued; it grows to [`POLL_MAX`].
pub const POLL_MIN: Duration = Duration::from_secs(2);
/// The longest pause between scheduler queries while queued.
pub const POLL_MAX: Duration = Duration::from_secs(15);
/// The pause between queries while the job runs and pvserver has not connected yet.
pub const POLL_RUNNING: Duration = Duration::from_secs(3);
/// The pause between queries once pvserver is connected.
pub const POLL_CONNECTED: Duration = Duration::from_secs(10);
/// The longest pause between queries while the scheduler fails to answer.
pub const QUERY_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// After this many failed queries in a row...
pub const QUERY_FAILURE_LIMIT: u32 = 8;
/// ...spread over at least this long, a session that is not connected yet gives up.
pub const QUERY_FAILURE_WINDOW: Duration = Duration::from_secs(120);
/// How long a job may stay in a state pvlaunch does not interpret (suspended, ...).
pub const UNKNOWN_STATE_LIMIT: Duration = Duration::from_secs(600);
/// A ParaView session moves far more than this; a connection that closes with less, within
/// [`HANDSHAKE_WINDOW`], ended in the handshake.
pub const HANDSHAKE_BYTES: u64 = 4096;
pub const HANDSHAKE_WINDOW: Duration = Duration::from_secs(2);

/// What the machine needs to know about the session.
#[derive(Debug, Clone)]
pub struct Config {
    /// The job's id, for messages.
    pub job: String,
    /// Two-hop: pvserver listens and the session opens a tunnel to it once its output says so.
    pub forward: bool,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    /// Nobody but the person connects the client (`--client wait`): says so on a timeout.
    pub client_waited: bool,
    /// The job's output file on the login node (for the hint when pvserver never listens).
    pub output_file: String,
    /// The job's wall time, when the profile asks for one (the site's default is not known).
    pub walltime: Option<Duration>,
    /// How long before the job's end to warn (`None`: no warning).
    pub warn_before: Option<Duration>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The time returned by [`Follow::next_wakeup`] has come.
    Timer,
    /// The answer to [`Action::QueryJob`].
    JobState(Result<JobState, String>),
    /// The answer to [`Action::ReadOutput`]: the job's output so far (`None`: no file yet).
    Output(Result<Option<String>, String>),
    /// The session opened the tunnel asked for by [`Action::OpenTunnel`].
    TunnelOpened { node: String, port: u16 },
    /// A connection through pvlaunch's relay is forwarded (pvserver's in the reverse recipes,
    /// the client's in two-hop).
    ConnectionOpened { id: u64, peer: String },
    ConnectionClosed {
        id: u64,
        bytes_to_client: u64,
        bytes_to_server: u64,
        duration: Duration,
    },
    /// The client pvlaunch started exited.
    ClientExited { success: bool, status: String },
    /// The ssh master ended.
    MasterDied,
    /// The answer to [`Action::QueryNodes`]: the partition's nodes are too few for the job
    /// (the finding in words), or `None` (enough nodes, or nothing could be learnt).
    Nodes(Option<String>),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Emit(Event),
    /// Ask the scheduler for the job's state; answer with [`Input::JobState`].
    QueryJob,
    /// Read the job's output; answer with [`Input::Output`].
    ReadOutput,
    /// Two-hop: pvserver listens on `host:port`; open the tunnel, then answer with
    /// [`Input::TunnelOpened`].
    OpenTunnel {
        host: String,
        port: u16,
    },
    /// A pending reason says nodes are unavailable (down, drained): look once at the
    /// partition's nodes ([`crate::scheduler::nodes`]); answer with [`Input::Nodes`].
    QueryNodes {
        reason: String,
    },
    /// The session ends; some endings need a last look (see [`Finish`]).
    Finish(Finish),
}

/// How the session ends, and what the session must still look at to name it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Now(Ending),
    /// The job left the queue: read its output, then [`crate::outcome`] names the end.
    JobLeft {
        state: String,
        exit_code: Option<i32>,
        connected: bool,
    },
    /// The connection closed within the handshake window: pvserver's log says why.
    Handshake,
    /// The ParaView connection closed: let a client pvlaunch started finish, then [`settle`].
    ConnectionClosed,
    /// The client exited: [`settle`] with the job's state.
    ClientExited {
        success: bool,
        status: String,
    },
}

/// The machine.
#[derive(Debug)]
pub struct Follow {
    cfg: Config,
    started: Instant,
    running_since: Option<Instant>,
    nodes: Vec<String>,
    last_state: Option<JobState>,
    /// When to query next; `None` while a query is out.
    next_poll: Option<Instant>,
    pause: Duration,
    failures: u32,
    failing_since: Option<Instant>,
    unknown_since: Option<Instant>,
    /// Two-hop: when to read the output next while pvserver does not listen yet.
    next_output: Option<Instant>,
    output_error: Option<String>,
    tunnel: Option<(String, u16)>,
    connected: Option<u64>,
    finished: bool,
    /// When the scheduler last said the job was queued: its start is after that.
    last_queued: Option<Instant>,
    /// The job's end by its wall time (earliest estimate), once it runs.
    job_end: Option<Instant>,
    warned: bool,
    /// The pending reason that asked for a look at the partition's nodes (asked once).
    nodes_asked: Option<String>,
}

impl Follow {
    pub fn new(cfg: Config, now: Instant) -> Follow {
        Follow {
            cfg,
            started: now,
            running_since: None,
            nodes: Vec::new(),
            last_state: None,
            next_poll: None,
            pause: POLL_MIN,
            failures: 0,
            failing_since: None,
            unknown_since: None,
            next_output: None,
            output_error: None,
            tunnel: None,
            connected: None,
            finished: false,
            last_queued: None,
            job_end: None,
            warned: false,
            nodes_asked: None,
        }
    }

    /// The job's end by its wall time, once it runs (see the module's documentation).
    pub fn job_end(&self) -> Option<Instant> {
        self.job_end
    }

    /// When to warn of the job's end (`None`: not yet known, no wall time, or warned).
    fn warn_at(&self) -> Option<Instant> {
        let before = self.cfg.warn_before?;
        let end = self.job_end?;
        (!self.warned).then(|| end.checked_sub(before).unwrap_or(end))
    }

    /// The first actions: look at the job at once.
    pub fn start(&mut self) -> Vec<Action> {
        self.next_poll = None;
        vec![Action::QueryJob]
    }

    /// The nodes of the running job, in the scheduler's order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn connected(&self) -> bool {
        self.connected.is_some()
    }

    /// When to feed [`Input::Timer`] next (`None`: only other inputs can move it).
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        [
            self.next_poll,
            self.next_output,
            self.queue_deadline(),
            self.connect_deadline(),
            self.unknown_deadline(),
            self.warn_at(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn queue_deadline(&self) -> Option<Instant> {
        self.running_since
            .is_none()
            .then(|| self.started + self.cfg.queue_timeout)
    }

    fn connect_deadline(&self) -> Option<Instant> {
        match (self.running_since, self.connected) {
            (Some(t), None) => Some(t + self.cfg.connect_timeout),
            _ => None,
        }
    }

    fn unknown_deadline(&self) -> Option<Instant> {
        self.unknown_since.map(|t| t + UNKNOWN_STATE_LIMIT)
    }

    /// Feed one input; get the actions it calls for.
    pub fn on(&mut self, input: Input, now: Instant) -> Vec<Action> {
        if self.finished {
            return vec![];
        }
        let mut out = Vec::new();
        match input {
            Input::Timer => {}
            Input::JobState(Ok(state)) => self.on_state(state, now, &mut out),
            Input::JobState(Err(e)) => self.on_query_error(e, now, &mut out),
            Input::Output(result) => self.on_output(result, now, &mut out),
            Input::TunnelOpened { node, port } => self.tunnel = Some((node, port)),
            Input::ConnectionOpened { id, peer } => {
                if self.connected.is_none() {
                    self.connected = Some(id);
                    let peer = match &self.tunnel {
                        Some((node, port)) => format!("the tunnel to {node}:{port}"),
                        None => peer,
                    };
                    out.push(Action::Emit(Event::ServerConnected { peer }));
                    if self.next_poll.is_some() {
                        self.next_poll = Some(now + POLL_CONNECTED);
                    }
                }
            }
            Input::ConnectionClosed {
                id,
                bytes_to_client,
                bytes_to_server,
                duration,
            } if Some(id) == self.connected => {
                out.push(Action::Emit(Event::SessionEnded {
                    bytes_to_client,
                    bytes_to_server,
                    seconds: duration.as_secs_f64(),
                }));
                let finish = if bytes_to_client < HANDSHAKE_BYTES && duration < HANDSHAKE_WINDOW {
                    Finish::Handshake
                } else {
                    Finish::ConnectionClosed
                };
                self.finish(finish, &mut out);
            }
            Input::ConnectionClosed { .. } => {}
            Input::Nodes(finding) => self.on_nodes(finding, &mut out),
            Input::ClientExited { success, status } => {
                self.finish(Finish::ClientExited { success, status }, &mut out)
            }
            Input::MasterDied => self.finish(
                Finish::Now(
                    Failure::SshDropped {
                        job: Some(self.cfg.job.clone()),
                    }
                    .into(),
                ),
                &mut out,
            ),
        }
        if !self.finished {
            self.check_deadlines(now, &mut out);
        }
        if !self.finished {
            if self.next_poll.is_some_and(|t| t <= now) {
                self.next_poll = None;
                out.push(Action::QueryJob);
            }
            if self.next_output.is_some_and(|t| t <= now) {
                self.next_output = None;
                out.push(Action::ReadOutput);
            }
        }
        out
    }

    fn finish(&mut self, finish: Finish, out: &mut Vec<Action>) {
        self.finished = true;
        out.push(Action::Finish(finish));
    }

    fn on_state(&mut self, state: JobState, now: Instant, out: &mut Vec<Action>) {
        let job = self.cfg.job.clone();
        if self.failures > 0 {
            out.push(Action::Emit(Event::Warning {
                message: format!(
                    "the scheduler answers again (after {} failed queries)",
                    self.failures
                ),
            }));
            self.failures = 0;
            self.failing_since = None;
        }
        let changed = self.last_state.as_ref() != Some(&state);
        if !matches!(state, JobState::Unknown { .. }) {
            self.unknown_since = None;
        }
        let next = match &state {
            JobState::Queued {
                reason,
                estimated_start,
            } => {
                if self.running_since.is_some() {
                    return self.finish(Finish::Now(Failure::Requeued { job }.into()), out);
                }
                self.last_queued = Some(now);
                if changed {
                    out.push(Action::Emit(Event::JobQueued {
                        job_id: job.clone(),
                        reason: reason.clone(),
                        estimated_start: estimated_start.clone(),
                    }));
                }
                // No dead waits: a reason that waiting cannot resolve ends the session now.
                if let Some(r) = reason
                    && let Some(never) = crate::scheduler::never_starts(r)
                {
                    let failure = Failure::NeverStarts {
                        job,
                        reason: r.clone(),
                        why: never.why,
                        change: never.change,
                    };
                    return self.finish(Finish::Now(failure.into()), out);
                }
                if let Some(r) = reason
                    && self.nodes_asked.is_none()
                    && crate::scheduler::nodes::nodes_unavailable(r)
                {
                    self.nodes_asked = Some(r.clone());
                    out.push(Action::QueryNodes { reason: r.clone() });
                }
                let pause = self.pause;
                // Back off only after the first quick look.
                self.pause = self.pause.mul_f32(1.5).min(POLL_MAX);
                pause
            }
            JobState::Running { nodes } => {
                if self.running_since.is_none() {
                    self.running_since = Some(now);
                    if let Some(w) = self.cfg.walltime {
                        self.job_end = Some(self.last_queued.unwrap_or(self.started) + w);
                    }
                    self.nodes = nodes.clone();
                    out.push(Action::Emit(Event::JobRunning {
                        job_id: job,
                        nodes: nodes.clone(),
                    }));
                    if self.cfg.forward {
                        self.next_output = Some(now);
                    }
                }
                if self.connected.is_some() {
                    POLL_CONNECTED
                } else {
                    POLL_RUNNING
                }
            }
            JobState::Finished {
                state, exit_code, ..
            } => {
                return self.finish(
                    Finish::JobLeft {
                        state: state.clone(),
                        exit_code: *exit_code,
                        connected: self.connected.is_some(),
                    },
                    out,
                );
            }
            JobState::Unknown { state: s } => {
                if changed {
                    self.unknown_since = Some(now);
                    out.push(Action::Emit(Event::Warning {
                        message: format!("job {job} is in state {s}"),
                    }));
                }
                self.pause
            }
        };
        self.last_state = Some(state);
        self.next_poll = Some(now + next);
    }

    /// The look at the partition's nodes: too few usable ones end the wait now.
    fn on_nodes(&mut self, finding: Option<String>, out: &mut Vec<Action>) {
        let (Some(finding), Some(reason)) = (finding, self.nodes_asked.clone()) else {
            return;
        };
        let never = crate::scheduler::nodes::NODES_UNAVAILABLE;
        let failure = Failure::NeverStarts {
            job: self.cfg.job.clone(),
            reason: format!("{reason}; {finding}"),
            why: never.why,
            change: never.change,
        };
        self.finish(Finish::Now(failure.into()), out);
    }

    fn on_query_error(&mut self, error: String, now: Instant, out: &mut Vec<Action>) {
        self.failures += 1;
        let since = *self.failing_since.get_or_insert(now);
        let backoff = POLL_MIN
            .saturating_mul(1 << (self.failures - 1).min(6))
            .min(QUERY_BACKOFF_MAX);
        if self.connected.is_none()
            && self.failures >= QUERY_FAILURE_LIMIT
            && now.duration_since(since) >= QUERY_FAILURE_WINDOW
        {
            return self.finish(
                Finish::Now(
                    Failure::SchedulerUnreachable {
                        job: self.cfg.job.clone(),
                        failures: self.failures,
                        secs: now.duration_since(since).as_secs(),
                        last: error,
                    }
                    .into(),
                ),
                out,
            );
        }
        if self.failures == 1 || self.failures.is_power_of_two() {
            out.push(Action::Emit(Event::Warning {
                message: format!(
                    "job query failed ({} in a row, retrying in {} s): {error}",
                    self.failures,
                    backoff.as_secs()
                ),
            }));
        }
        self.next_poll = Some(now + backoff);
    }

    fn on_output(
        &mut self,
        result: Result<Option<String>, String>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.tunnel.is_some() || self.running_since.is_none() {
            return;
        }
        match result {
            Ok(Some(text)) => {
                // The node agent's line (owned hops), else pvserver's own (plain two-hop).
                let listening = crate::pvserver::node_listening(&text)
                    .or_else(|| crate::pvserver::accepting(&text));
                if let Some((host, port)) = listening {
                    out.push(Action::Emit(Event::ServerListening {
                        host: host.clone(),
                        port,
                    }));
                    out.push(Action::OpenTunnel { host, port });
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if self.output_error.as_ref() != Some(&e) {
                    out.push(Action::Emit(Event::Warning {
                        message: format!("reading the job's output failed: {e}"),
                    }));
                    self.output_error = Some(e);
                }
            }
        }
        self.next_output = Some(now + OUTPUT_POLL);
    }

    fn check_deadlines(&mut self, now: Instant, out: &mut Vec<Action>) {
        let job = self.cfg.job.clone();
        if self.warn_at().is_some_and(|t| now >= t)
            && let Some(end) = self.job_end
        {
            self.warned = true;
            out.push(Action::Emit(Event::WalltimeWarning {
                job_id: job.clone(),
                minutes_left: minutes_until(end, now),
            }));
        }
        if self.queue_deadline().is_some_and(|t| now >= t) {
            let secs = self.cfg.queue_timeout.as_secs();
            return self.finish(Finish::Now(Failure::QueueTimeout { job, secs }.into()), out);
        }
        if self.connect_deadline().is_some_and(|t| now >= t) {
            let f = connect_timeout(&self.cfg, self.tunnel.is_some());
            return self.finish(Finish::Now(f.into()), out);
        }
        if let Some(t) = self.unknown_since
            && now >= t + UNKNOWN_STATE_LIMIT
        {
            let state = match &self.last_state {
                Some(JobState::Unknown { state }) => state.clone(),
                _ => "unknown".into(),
            };
            self.finish(
                Finish::Now(
                    Failure::StuckInState {
                        job,
                        state,
                        secs: UNKNOWN_STATE_LIMIT.as_secs(),
                    }
                    .into(),
                ),
                out,
            );
        }
    }
}

/// Whole minutes from `now` to `end`, rounded to the nearest (a warning says "about N min").
pub fn minutes_until(end: Instant, now: Instant) -> u64 {
    (end.saturating_duration_since(now).as_secs() + 30) / 60
}

/// pvserver did not connect (two-hop: listen, or the client did not connect) in time.
fn connect_timeout(cfg: &Config, tunnel_open: bool) -> Failure {
    let secs = cfg.connect_timeout.as_secs();
    let (message, hint) = if !cfg.forward {
        (
            format!("pvserver did not connect within {secs} s of the job starting"),
            format!(
                "see the job's output on the login node: ~/{}",
                cfg.output_file
            ),
        )
    } else if !tunnel_open {
        (
            format!("pvserver did not listen within {secs} s of the job starting"),
            format!(
                "pvlaunch reads pvserver's `Accepting connection(s)` line from ~/{} on the login node while the job runs; see that file (PBS needs `-k oed`, LSF LSB_STDOUT_DIRECT=y, for it to be written before the job ends)",
                cfg.output_file
            ),
        )
    } else {
        (
            format!("the client did not connect within {secs} s of the job starting"),
            if cfg.client_waited {
                "connect your ParaView client to the URL printed above".to_string()
            } else {
                "check that the client starts on its own".to_string()
            },
        )
    };
    Failure::ConnectTimeout {
        message,
        hint: Some(hint),
    }
}

/// How the session ends once the ParaView connection closed or the client exited, given the
/// job's state looked at afterwards (`None`: the scheduler could not say). A job that ended
/// on a wall-time limit, a cancel from outside or a failed node is named, whatever the client
/// did; otherwise the client's exit decides.
pub fn settle(job: &str, client: Option<(bool, String)>, state: Option<&JobState>) -> Ending {
    if let Some(JobState::Finished {
        state, exit_code, ..
    }) = state
    {
        let ended = crate::outcome::job_ended_during_session(job, state, *exit_code);
        if ended.code() != crate::exit::Code::Success {
            return ended;
        }
    }
    match client {
        Some((true, _)) => Ending::Finished("the client finished".into()),
        Some((false, status)) => Failure::ClientExited { status }.into(),
        None => Ending::Finished("the ParaView connection closed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Code;
    use crate::scheduler::Kind;
    use crate::scheduler::test_support::fixture;

    fn cfg(forward: bool) -> Config {
        Config {
            job: "42".into(),
            forward,
            queue_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(120),
            client_waited: false,
            output_file: ".cache/pvlaunch/pvserver-x.out".into(),
            walltime: None,
            warn_before: None,
        }
    }

    /// A machine, a clock, and what it asked for.
    struct Run {
        f: Follow,
        now: Instant,
        log: Vec<Action>,
    }

    impl Run {
        fn new(cfg: Config) -> Run {
            let now = Instant::now();
            let mut f = Follow::new(cfg, now);
            let log = f.start();
            assert_eq!(log, vec![Action::QueryJob]);
            Run { f, now, log }
        }

        fn feed(&mut self, input: Input) -> Vec<Action> {
            let a = self.f.on(input, self.now);
            self.log.extend(a.clone());
            a
        }

        /// Move the clock to the next wake-up and feed the timer.
        fn tick(&mut self) -> Vec<Action> {
            let t = self.f.next_wakeup().expect("a wake-up");
            assert!(t >= self.now, "wake-ups never go back in time");
            self.now = t;
            self.feed(Input::Timer)
        }

        fn state(&mut self, s: JobState) -> Vec<Action> {
            self.feed(Input::JobState(Ok(s)))
        }

        fn ending(&self) -> Option<&Finish> {
            self.log.iter().find_map(|a| match a {
                Action::Finish(f) => Some(f),
                _ => None,
            })
        }
    }

    fn queued() -> JobState {
        JobState::Queued {
            reason: Some("Priority".into()),
            estimated_start: None,
        }
    }

    fn running() -> JobState {
        JobState::Running {
            nodes: vec!["node1".into(), "node2".into()],
        }
    }

    fn emitted(actions: &[Action], name: &str) -> bool {
        actions.iter().any(|a| match a {
            Action::Emit(e) => serde_json::to_value(e).unwrap()["event"] == name,
            _ => false,
        })
    }

    fn failure(f: Option<&Finish>) -> &Failure {
        match f {
            Some(Finish::Now(Ending::Failed(f))) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_reason_waiting_cannot_resolve_ends_the_session_at_once() {
        let mut r = Run::new(cfg(false));
        // A reason that passes on its own is waited on.
        r.state(queued());
        assert!(r.ending().is_none());
        let a = r.state(JobState::Queued {
            reason: Some("PartitionNodeLimit".into()),
            estimated_start: None,
        });
        assert!(
            emitted(&a, "job_queued"),
            "the reason is shown first: {a:?}"
        );
        let f = failure(r.ending());
        assert!(f.to_string().contains("will never start"), "{f}");
        assert!(
            f.to_string().contains("more nodes than the partition"),
            "{f}"
        );
        assert!(f.hint().unwrap().contains("<Job nodes>"));
        assert_eq!(f.code(), Code::Job);
    }

    #[test]
    fn unavailable_nodes_are_looked_at_once_and_too_few_end_the_wait() {
        let mut r = Run::new(cfg(false));
        let drained = || JobState::Queued {
            reason: Some("ReqNodeNotAvail, UnavailableNodes:node2".into()),
            estimated_start: None,
        };
        let a = r.state(drained());
        let asked = Action::QueryNodes {
            reason: "ReqNodeNotAvail, UnavailableNodes:node2".into(),
        };
        assert!(a.contains(&asked), "{a:?}");
        assert!(r.ending().is_none(), "waits while the nodes are looked at");
        // Enough nodes: the wait goes on, and the nodes are not asked again.
        assert!(r.feed(Input::Nodes(None)).is_empty());
        let a = r.state(drained());
        assert!(!a.contains(&asked), "{a:?}");
        assert!(r.ending().is_none());

        let mut r = Run::new(cfg(false));
        r.state(drained());
        r.feed(Input::Nodes(Some(
            "the job needs 2 nodes, the partition has 1 usable of 2 (node2 drained)".into(),
        )));
        let f = failure(r.ending());
        let text = f.to_string();
        assert!(text.contains("will never start"), "{text}");
        assert!(text.contains("node2 drained"), "{text}");
        assert!(text.contains("fewer usable nodes"), "{text}");
        assert!(f.hint().unwrap().contains("<Job nodes>"));
        assert_eq!(f.code(), Code::Job);
    }

    fn warnings(log: &[Action]) -> Vec<u64> {
        log.iter()
            .filter_map(|a| match a {
                Action::Emit(Event::WalltimeWarning { minutes_left, .. }) => Some(*minutes_left),
                _ => None,
            })
            .collect()
    }

    /// Drive a connected session with the scheduler saying "running" until `until`.
    fn run_until(r: &mut Run, until: Instant) {
        while r.f.next_wakeup().is_some_and(|t| t <= until) {
            let a = r.tick();
            if a.contains(&Action::QueryJob) {
                r.state(running());
            }
        }
    }

    #[test]
    fn the_job_end_is_the_last_queued_answer_plus_the_walltime_and_is_warned_of_once() {
        let mut c = cfg(false);
        c.walltime = Some(Duration::from_secs(600));
        c.warn_before = Some(Duration::from_secs(300));
        let mut r = Run::new(c);
        r.now += Duration::from_secs(4);
        r.state(queued());
        let last_queued = r.now;
        assert_eq!(r.f.job_end(), None, "not known while queued");
        r.tick();
        r.state(running());
        // The job started after the last answer that had it queued: never later than that
        // plus the wall time.
        let end = r.f.job_end().unwrap();
        assert_eq!(end, last_queued + Duration::from_secs(600));
        assert!(end < r.now + Duration::from_secs(600));
        r.feed(Input::ConnectionOpened {
            id: 1,
            peer: "p".into(),
        });
        run_until(&mut r, end - Duration::from_secs(301));
        assert!(warnings(&r.log).is_empty(), "not before the lead time");
        run_until(&mut r, end - Duration::from_secs(290));
        assert_eq!(warnings(&r.log), [5]);
        run_until(&mut r, end + Duration::from_secs(60));
        assert_eq!(warnings(&r.log), [5], "once");
        assert_eq!(
            r.ending(),
            None,
            "the scheduler, not the warning, ends the session"
        );
    }

    #[test]
    fn a_job_that_runs_at_once_counts_from_the_submit_and_a_short_walltime_warns_at_once() {
        let mut c = cfg(false);
        c.walltime = Some(Duration::from_secs(120));
        c.warn_before = Some(Duration::from_secs(300));
        let mut r = Run::new(c);
        let submitted = r.now;
        r.now += Duration::from_secs(3);
        let a = r.state(running());
        assert_eq!(r.f.job_end(), Some(submitted + Duration::from_secs(120)));
        assert_eq!(warnings(&a), [2], "{a:?}");
        // Without a wall time nothing is known, nothing is warned.
        let mut r = Run::new(cfg(false));
        r.state(running());
        assert_eq!(r.f.job_end(), None);
        let later = r.now + Duration::from_secs(3600);
        run_until(&mut r, later);
        assert!(warnings(&r.log).is_empty());
        // `warn-before="no"`.
        let mut c = cfg(false);
        c.walltime = Some(Duration::from_secs(120));
        let mut r = Run::new(c);
        r.state(running());
        assert!(r.f.job_end().is_some());
        let later = r.now + Duration::from_secs(3600);
        run_until(&mut r, later);
        assert!(warnings(&r.log).is_empty());
    }

    #[test]
    fn minutes_until_rounds_to_the_nearest_minute() {
        let t = Instant::now();
        assert_eq!(minutes_until(t, t), 0);
        assert_eq!(minutes_until(t, t + Duration::from_secs(5)), 0);
        assert_eq!(minutes_until(t + Duration::from_secs(89), t), 1);
        assert_eq!(minutes_until(t + Duration::from_secs(90), t), 2);
        assert_eq!(minutes_until(t + Duration::from_secs(300), t), 5);
    }

    #[test]
    fn queued_then_running_then_connected_then_closed() {
        let mut r = Run::new(cfg(false));
        let a = r.state(queued());
        assert!(emitted(&a, "job_queued"));
        // The same state again says nothing new; the pause grows.
        let a = r.tick();
        assert_eq!(a, vec![Action::QueryJob]);
        let first_pause = r.f.next_wakeup();
        assert!(r.state(queued()).is_empty());
        let t0 = r.now;
        r.tick();
        assert!(r.now - t0 > POLL_MIN, "backs off after the first look");
        assert!(first_pause.is_some());
        let a = r.state(running());
        assert!(emitted(&a, "job_running"));
        assert_eq!(r.f.nodes(), ["node1", "node2"]);
        let a = r.feed(Input::ConnectionOpened {
            id: 1,
            peer: "10.0.0.3:5000".into(),
        });
        assert!(emitted(&a, "server_connected"));
        // A second connection is not the session's pvserver.
        let a = r.feed(Input::ConnectionOpened {
            id: 2,
            peer: "10.0.0.9:6000".into(),
        });
        assert!(a.is_empty());
        assert!(
            r.feed(Input::ConnectionClosed {
                id: 2,
                bytes_to_client: 0,
                bytes_to_server: 0,
                duration: Duration::from_millis(1)
            })
            .is_empty()
        );
        r.now += Duration::from_secs(600);
        let a = r.feed(Input::ConnectionClosed {
            id: 1,
            bytes_to_client: 1 << 20,
            bytes_to_server: 1 << 16,
            duration: Duration::from_secs(600),
        });
        assert!(emitted(&a, "session_ended"));
        assert_eq!(r.ending(), Some(&Finish::ConnectionClosed));
        assert_eq!(r.f.next_wakeup(), None);
        assert!(r.feed(Input::Timer).is_empty(), "nothing after the end");
    }

    #[test]
    fn a_connection_that_closes_at_once_is_a_handshake_end() {
        let mut r = Run::new(cfg(false));
        r.state(running());
        r.feed(Input::ConnectionOpened {
            id: 7,
            peer: "p".into(),
        });
        r.feed(Input::ConnectionClosed {
            id: 7,
            bytes_to_client: 100,
            bytes_to_server: 100,
            duration: Duration::from_millis(30),
        });
        assert_eq!(r.ending(), Some(&Finish::Handshake));
    }

    #[test]
    fn running_back_to_queued_is_a_requeue_and_ends_the_session() {
        let mut r = Run::new(cfg(false));
        r.state(running());
        r.feed(Input::ConnectionOpened {
            id: 1,
            peer: "p".into(),
        });
        r.tick();
        r.state(queued());
        let f = failure(r.ending());
        assert!(matches!(f, Failure::Requeued { .. }), "{f:?}");
        assert_eq!(f.code(), Code::Job);
        // Also before pvserver connected.
        let mut r = Run::new(cfg(true));
        r.state(running());
        r.tick();
        r.state(queued());
        assert!(matches!(failure(r.ending()), Failure::Requeued { .. }));
    }

    #[test]
    fn a_scheduler_that_stops_answering_is_given_up_on_with_back_off() {
        let mut r = Run::new(cfg(false));
        r.state(queued());
        let message = Kind::Slurm
            .scheduler()
            .parse_state(&fixture("slurm", "state_controller_down"))
            .unwrap_err()
            .to_string();
        let mut warnings = 0;
        let mut pauses = vec![];
        for _ in 0..40 {
            let t0 = r.now;
            let a = r.tick();
            if r.ending().is_some() {
                break;
            }
            if !a.contains(&Action::QueryJob) {
                continue;
            }
            pauses.push(r.now - t0);
            let a = r.feed(Input::JobState(Err(message.clone())));
            warnings += a.iter().filter(|a| matches!(a, Action::Emit(_))).count();
            if r.ending().is_some() {
                break;
            }
        }
        let f = failure(r.ending());
        match f {
            Failure::SchedulerUnreachable { failures, secs, .. } => {
                assert!(*failures >= QUERY_FAILURE_LIMIT);
                assert!(*secs >= QUERY_FAILURE_WINDOW.as_secs());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.code(), Code::Timeout);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert!(pauses.iter().all(|p| *p <= QUERY_BACKOFF_MAX));
        assert!(
            warnings < 8,
            "warnings are not repeated every time: {warnings}"
        );
    }

    #[test]
    fn a_connected_session_survives_a_scheduler_outage() {
        let mut r = Run::new(cfg(false));
        r.state(running());
        r.feed(Input::ConnectionOpened {
            id: 1,
            peer: "p".into(),
        });
        for _ in 0..30 {
            let a = r.tick();
            if a.contains(&Action::QueryJob) {
                r.feed(Input::JobState(Err("slurm_load_jobs error".into())));
            }
        }
        assert_eq!(r.ending(), None);
        let a = r.state(running());
        assert!(emitted(&a, "warning"), "says the scheduler answers again");
    }

    #[test]
    fn the_queue_timeout_ends_the_wait_even_without_answers() {
        let mut c = cfg(false);
        c.queue_timeout = Duration::from_secs(30);
        let mut r = Run::new(c);
        // The first query never answers (it is bounded by the session's command timeout);
        // the timer still fires at the deadline.
        r.tick();
        let f = failure(r.ending());
        assert!(matches!(f, Failure::QueueTimeout { secs: 30, .. }), "{f:?}");
    }

    #[test]
    fn an_unknown_state_has_a_deadline() {
        let mut r = Run::new(cfg(false));
        r.state(running());
        r.feed(Input::ConnectionOpened {
            id: 1,
            peer: "p".into(),
        });
        r.tick();
        let a = r.state(JobState::Unknown {
            state: "SUSPENDED".into(),
        });
        assert!(emitted(&a, "warning"));
        for _ in 0..1000 {
            let a = r.tick();
            if r.ending().is_some() {
                break;
            }
            if a.contains(&Action::QueryJob) {
                r.state(JobState::Unknown {
                    state: "SUSPENDED".into(),
                });
            }
        }
        assert!(matches!(
            failure(r.ending()),
            Failure::StuckInState { state, .. } if state == "SUSPENDED"
        ));
    }

    #[test]
    fn connect_timeouts_say_what_did_not_happen() {
        let mut r = Run::new(cfg(false));
        r.state(running());
        while r.ending().is_none() {
            r.tick();
            if r.log.last() == Some(&Action::QueryJob) {
                r.state(running());
            }
        }
        assert!(failure(r.ending()).to_string().contains("did not connect"));

        let mut r = Run::new(cfg(true));
        r.state(running());
        while r.ending().is_none() {
            let a = r.tick();
            for a in a {
                match a {
                    Action::QueryJob => {
                        r.state(running());
                    }
                    Action::ReadOutput => {
                        r.feed(Input::Output(Ok(Some("Waiting for client...\n".into()))));
                    }
                    _ => {}
                }
            }
        }
        let f = failure(r.ending());
        assert!(f.to_string().contains("did not listen"), "{f}");
        assert_eq!(f.code(), Code::Timeout);
    }

    #[test]
    fn two_hop_reads_the_output_then_opens_the_tunnel() {
        let mut r = Run::new(cfg(true));
        let a = r.state(running());
        assert!(a.contains(&Action::ReadOutput), "reads at once: {a:?}");
        let a = r.feed(Input::Output(Ok(None)));
        assert!(a.is_empty());
        let a = r.tick();
        assert!(a.contains(&Action::ReadOutput));
        let a = r.feed(Input::Output(Ok(Some(
            "Connection URL: cs://node1:0\nAccepting connection(s): node1:40123\n".into(),
        ))));
        assert!(emitted(&a, "server_listening"));
        assert!(a.contains(&Action::OpenTunnel {
            host: "node1".into(),
            port: 40123
        }));
        // The node agent's line is read the same way.
        let mut owned = Run::new(cfg(true));
        owned.state(running());
        let a = owned.feed(Input::Output(Ok(Some(
            "pvlaunch-node: listening: node2:40555\n".into(),
        ))));
        assert!(a.contains(&Action::OpenTunnel {
            host: "node2".into(),
            port: 40555
        }));
        r.feed(Input::TunnelOpened {
            node: "node1".into(),
            port: 40123,
        });
        // No more output reads once the tunnel is open.
        for _ in 0..5 {
            let a = r.tick();
            assert!(!a.contains(&Action::ReadOutput));
            if a.contains(&Action::QueryJob) {
                r.state(running());
            }
        }
        let a = r.feed(Input::ConnectionOpened {
            id: 3,
            peer: "127.0.0.1:5".into(),
        });
        assert!(a.iter().any(|a| matches!(a,
            Action::Emit(Event::ServerConnected { peer }) if peer == "the tunnel to node1:40123")));
    }

    #[test]
    fn the_job_leaving_the_queue_and_the_master_dying_end_the_session() {
        let mut r = Run::new(cfg(false));
        let slurm = Kind::Slurm.scheduler();
        let done = slurm
            .parse_finished(&fixture("slurm", "finished_failed"))
            .unwrap()
            .unwrap();
        r.state(done);
        assert!(matches!(
            r.ending(),
            Some(Finish::JobLeft {
                connected: false,
                ..
            })
        ));
        let mut r = Run::new(cfg(false));
        r.feed(Input::MasterDied);
        let f = failure(r.ending());
        assert_eq!(f.code(), Code::Ssh);
        assert!(f.hint().unwrap().contains("job 42"));
        let mut r = Run::new(cfg(false));
        r.feed(Input::ClientExited {
            success: false,
            status: "exit status: 1".into(),
        });
        assert!(matches!(r.ending(), Some(Finish::ClientExited { .. })));
    }

    #[test]
    fn the_job_state_names_the_end_whatever_the_client_did() {
        let fin = |state: &str| JobState::Finished {
            state: state.into(),
            exit_code: None,
            signal: None,
            nodes: vec![],
        };
        let client_failed = Some((false, "exit status: 1".to_string()));
        assert!(matches!(
            settle("9", client_failed.clone(), Some(&fin("TIMEOUT"))),
            Ending::Failed(Failure::Walltime { .. })
        ));
        assert!(matches!(
            settle("9", client_failed.clone(), Some(&fin("CANCELLED by 1000"))),
            Ending::Failed(Failure::CancelledOutside { .. })
        ));
        assert!(matches!(
            settle("9", client_failed.clone(), Some(&fin("NODE_FAIL"))),
            Ending::Failed(Failure::NodeFailed { .. })
        ));
        assert!(matches!(
            settle("9", client_failed.clone(), Some(&running())),
            Ending::Failed(Failure::ClientExited { .. })
        ));
        assert_eq!(
            settle("9", Some((true, String::new())), Some(&fin("COMPLETED"))).code(),
            Code::Success
        );
        assert_eq!(settle("9", None, None).code(), Code::Success);
    }
}
