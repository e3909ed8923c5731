//! How a session ends, as data: [`Ending`] and the typed [`Failure`] that owns its exit code and
//! its hint. Recipes, the job layer and the follow state machine return these; the edge
//! ([`crate::session::run`], [`crate::connect`]) turns one into the `error` and `done` events and
//! the exit code, once. Nothing here runs anything.

use crate::exit::Code;
use crate::pvserver::Refusal;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A normal end: the ParaView connection closed, or the client finished its work.
    Finished(String),
    /// Something went wrong: [`Failure::code`] is the exit code.
    Failed(Failure),
    /// Stopped by signal N (exit 128 + N).
    Signal(i32),
}

impl Ending {
    pub fn code(&self) -> Code {
        match self {
            Ending::Finished(_) => Code::Success,
            Ending::Failed(f) => f.code(),
            Ending::Signal(n) => Code::Signal(*n),
        }
    }

    /// One line that says how the session ended (the `done` event's reason).
    pub fn reason(&self) -> String {
        match self {
            Ending::Finished(r) => r.clone(),
            Ending::Failed(f) => f.to_string(),
            Ending::Signal(n) => format!("stopped by signal {n}"),
        }
    }
}

impl From<Failure> for Ending {
    fn from(f: Failure) -> Ending {
        Ending::Failed(f)
    }
}

/// Everything that can make a session fail. Each variant owns its exit code and its hint; the
/// variants that code branches on (the auto recipe's fallback, the endings of a job) are their
/// own, the others carry the words of the step that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The command line or the plan cannot run (a value, a port).
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// The profile cannot be turned into commands.
    #[error("{message}")]
    Profile { message: String },
    /// Logging in to the login node failed.
    #[error("{message}")]
    SshLogin {
        message: String,
        /// What to do ([`crate::auth::diagnose`]); a general check when `None`.
        hint: Option<String>,
    },
    /// A command over the session's ssh connection failed or could not run.
    #[error("{message}")]
    Ssh {
        message: String,
        hint: Option<String>,
    },
    /// The ssh connection (the master) ended while the session ran.
    #[error("the ssh connection to the login node dropped")]
    SshDropped {
        /// The job the guard on the login node still has to cancel.
        job: Option<String>,
    },
    /// The link dropped and the session could not log in again within the grace.
    #[error(
        "the link to the login node did not come back within {grace_secs} s ({attempts} attempts to log in again)"
    )]
    LinkLost { grace_secs: u64, attempts: u32 },
    /// The site does not allow what the recipe needs (forwards, a relay, the job's hop).
    #[error("{message}")]
    Site {
        message: String,
        hint: Option<String>,
    },
    /// No relay can run on the login node: `auto` falls back to the job's own hop.
    #[error("{message}")]
    NoRelay {
        message: String,
        hint: Option<String>,
    },
    /// The submit command failed.
    #[error("submitting the job failed: {message}")]
    SubmitFailed { message: String },
    /// The submit command did not answer in time: a job may exist; the guard sweeps by tag.
    #[error("the submit command did not finish within {secs} s")]
    SubmitHung { secs: u64 },
    /// The job ended before pvserver connected (or listened, in two-hop).
    #[error("{what}")]
    JobEnded {
        /// `job N ended (STATE) before pvserver connected: first error`.
        what: String,
    },
    /// The scheduler put the running job back into the queue: its pvserver is gone.
    #[error("job {job} was requeued by the scheduler (its node failed or it was preempted)")]
    Requeued { job: String },
    /// Someone cancelled the job outside pvlaunch.
    #[error("job {job} was cancelled outside pvlaunch ({state})")]
    CancelledOutside { job: String, state: String },
    /// The job reached its wall-time limit.
    #[error("job {job} reached its wall-time limit")]
    Walltime { job: String },
    /// A node of the job failed.
    #[error("job {job} ended because a node failed ({state})")]
    NodeFailed { job: String, state: String },
    /// The job ended on its own while the session ran, not successfully.
    #[error("job {job} ended ({state}) during the session")]
    JobFailedDuringSession { job: String, state: String },
    /// The job waited longer than `<Job queue-timeout>`.
    #[error("job {job} still queued after {secs} s")]
    QueueTimeout { job: String, secs: u64 },
    /// pvserver did not connect, listen, or the client did not connect, in time.
    #[error("{message}")]
    ConnectTimeout {
        message: String,
        hint: Option<String>,
    },
    /// The scheduler did not answer for too long.
    #[error(
        "the scheduler did not answer {failures} queries about job {job} over {secs} s: {last}"
    )]
    SchedulerUnreachable {
        job: String,
        failures: u32,
        secs: u64,
        last: String,
    },
    /// The job stayed in a state pvlaunch does not interpret for too long.
    #[error("job {job} stayed in state {state} for {secs} s")]
    StuckInState {
        job: String,
        state: String,
        secs: u64,
    },
    /// The client could not be found, started, or did not listen; or another problem of it.
    #[error("{message}")]
    Client {
        message: String,
        hint: Option<String>,
    },
    /// The client pvlaunch started exited with a failure.
    #[error("the client exited with {status}")]
    ClientExited { status: String },
    /// pvserver refused the client in the ParaView handshake.
    #[error("{}{detail}", .refusal.message())]
    Handshake { refusal: Refusal, detail: String },
    /// The connection closed at once and nobody said why.
    #[error("the connection closed before the ParaView handshake completed")]
    ClosedEarly,
    /// The scheduler's pending reason says the job can never start.
    #[error("job {job} will never start: {why} (the scheduler says {reason})")]
    NeverStarts {
        job: String,
        reason: String,
        why: &'static str,
        change: &'static str,
    },
    /// A bug, or an error without a more precise kind.
    #[error("{message}")]
    Internal { message: String },
}

impl Failure {
    pub fn code(&self) -> Code {
        use Failure::*;
        match self {
            Usage { .. } => Code::Usage,
            Profile { .. } => Code::InvalidProfile,
            SshLogin { .. } | Ssh { .. } | SshDropped { .. } | LinkLost { .. } => Code::Ssh,
            Site { .. } | NoRelay { .. } => Code::Site,
            SubmitFailed { .. }
            | SubmitHung { .. }
            | JobEnded { .. }
            | Requeued { .. }
            | CancelledOutside { .. }
            | NodeFailed { .. }
            | JobFailedDuringSession { .. }
            | NeverStarts { .. } => Code::Job,
            QueueTimeout { .. }
            | ConnectTimeout { .. }
            | SchedulerUnreachable { .. }
            | StuckInState { .. } => Code::Timeout,
            Client { .. } | ClientExited { .. } | Handshake { .. } | ClosedEarly => Code::Client,
            Walltime { .. } => Code::Walltime,
            Internal { .. } => Code::Failure,
        }
    }

    /// What to do next, in words.
    pub fn hint(&self) -> Option<String> {
        use Failure::*;
        let s = |t: &str| Some(t.to_string());
        match self {
            Usage { hint, .. }
            | Ssh { hint, .. }
            | Site { hint, .. }
            | ConnectTimeout { hint, .. }
            | Client { hint, .. }
            | NoRelay { hint, .. } => hint.clone(),
            Profile { .. } => s("`pvlaunch validate FILE` shows every problem with its line"),
            SshLogin { hint: Some(h), .. } => Some(h.clone()),
            SshLogin { hint: None, .. } => {
                s("check that `ssh HOST` works in a terminal (host alias, keys, known_hosts)")
            }
            SshDropped { job: Some(job) } => Some(format!(
                "the guard on the login node cancels job {job} once the login node notices the link is gone; check with the scheduler (e.g. squeue --me) after reconnecting"
            )),
            SshDropped { job: None } => s("check the network, then connect again"),
            LinkLost { .. } => s(
                "the guard on the login node cancels the job once its own grace ends; check the network, then connect again (a longer --grace waits longer)",
            ),
            SubmitFailed { .. } => s("run the submit command by hand on the login node to see why"),
            SubmitHung { .. } => s(
                "the scheduler's controller may be overloaded; the guard on the login node cancels any job this session made",
            ),
            JobEnded { .. } => s("the job's output above says why"),
            NeverStarts { change, .. } => s(change),
            Requeued { .. } => s(
                "connect again: the requeued job was cancelled (a new pvserver would not find this client)",
            ),
            CancelledOutside { .. } => s("ask whoever cancelled it, or check the scheduler's log"),
            Walltime { .. } => s(
                "ask for a longer wall time (<Job walltime>, or --set when the profile's walltime is an option)",
            ),
            NodeFailed { .. } => s("connect again; tell the site if it repeats"),
            JobFailedDuringSession { .. } => s("the job's output on the login node says why"),
            QueueTimeout { .. } => s("raise <Job queue-timeout>, or pick another partition"),
            SchedulerUnreachable { .. } => s(
                "the scheduler's controller is down or overloaded; try again later (the guard on the login node cancels the job)",
            ),
            StuckInState { .. } => {
                s("check the job with the scheduler (e.g. scontrol show job ID)")
            }
            ClientExited { .. } => s("the client's own output above says why"),
            Handshake { refusal, .. } => s(refusal.hint()),
            ClosedEarly => s(
                "something connected and closed at once; if it repeats, check the versions and the connect-id of client and pvserver",
            ),
            Internal { .. } => None,
        }
    }

    /// A failure of a step over ssh, with the words of that step.
    pub fn ssh(message: impl Into<String>) -> Failure {
        Failure::Ssh {
            message: message.into(),
            hint: None,
        }
    }

    pub fn site(message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure::Site {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn client(message: impl Into<String>, hint: Option<&str>) -> Failure {
        Failure::Client {
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::Internal {
            message: message.into(),
        }
    }
}

/// How a job's final scheduler state reads, for the ending of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalState {
    Completed,
    Cancelled,
    Walltime,
    NodeFailure,
    /// Preempted, out of memory, failed, or something else that is not a success.
    Failed,
    /// Accounting did not say.
    Unknown,
}

/// Classify a scheduler's final state string (`COMPLETED`, `CANCELLED by 1000`, `TIMEOUT`,
/// `NODE_FAIL`, PBS `F` with an exit status, LSF `DONE`/`EXIT`, ...).
pub fn final_state(state: &str, exit_code: Option<i32>) -> FinalState {
    let s = state.trim().to_ascii_uppercase();
    let word = s.split_whitespace().next().unwrap_or("");
    match word {
        "COMPLETED" | "DONE" | "FINISHED" if exit_code.is_none_or(|c| c == 0) => {
            FinalState::Completed
        }
        "CANCELLED" | "CANCELED" | "DELETED" | "KILLED" => FinalState::Cancelled,
        "TIMEOUT" | "DEADLINE" => FinalState::Walltime,
        "NODE_FAIL" | "BOOT_FAIL" => FinalState::NodeFailure,
        w if w.starts_with("UNKNOWN") => FinalState::Unknown,
        _ => FinalState::Failed,
    }
}

/// The ending when the job left the queue while the ParaView session was connected (or right
/// after it closed): a job that completed is a normal end, anything else is named.
pub fn job_ended_during_session(job: &str, state: &str, exit_code: Option<i32>) -> Ending {
    match final_state(state, exit_code) {
        FinalState::Completed | FinalState::Unknown => {
            Ending::Finished(format!("the job ended ({state})"))
        }
        FinalState::Cancelled => Failure::CancelledOutside {
            job: job.into(),
            state: state.into(),
        }
        .into(),
        FinalState::Walltime => Failure::Walltime { job: job.into() }.into(),
        FinalState::NodeFailure => Failure::NodeFailed {
            job: job.into(),
            state: state.into(),
        }
        .into(),
        FinalState::Failed => Failure::JobFailedDuringSession {
            job: job.into(),
            state: state.into(),
        }
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_owns_a_code_and_most_a_hint() {
        let f = Failure::SchedulerUnreachable {
            job: "7".into(),
            failures: 10,
            secs: 300,
            last: "slurm_load_jobs error".into(),
        };
        assert_eq!(f.code(), Code::Timeout);
        assert!(f.to_string().contains("job 7"));
        assert!(f.hint().is_some());
        assert_eq!(
            Failure::SshDropped { job: None }.code().as_i32(),
            Code::Ssh.as_i32()
        );
        // The guard is only promised when there is a job for it.
        assert!(
            !Failure::SshDropped { job: None }
                .hint()
                .unwrap()
                .contains("guard")
        );
        assert!(
            Failure::SshDropped {
                job: Some("7".into())
            }
            .hint()
            .unwrap()
            .contains("job 7")
        );
        let h = Failure::Handshake {
            refusal: Refusal::ConnectId,
            detail: " (pvserver expects 3)".into(),
        };
        assert!(h.to_string().ends_with("(pvserver expects 3)"));
        assert_eq!(h.code(), Code::Client);
    }

    #[test]
    fn final_states_are_named() {
        assert_eq!(final_state("COMPLETED", Some(0)), FinalState::Completed);
        assert_eq!(
            final_state("CANCELLED by 1000", None),
            FinalState::Cancelled
        );
        assert_eq!(final_state("TIMEOUT", Some(0)), FinalState::Walltime);
        assert_eq!(final_state("NODE_FAIL", None), FinalState::NodeFailure);
        assert_eq!(final_state("FAILED", Some(1)), FinalState::Failed);
        assert_eq!(final_state("DONE", Some(3)), FinalState::Failed);
        assert_eq!(
            final_state("UNKNOWN (left the queue)", None),
            FinalState::Unknown
        );
        // A job that hit its wall time is not a success, and has its own code.
        assert_eq!(
            job_ended_during_session("5", "TIMEOUT", None).code(),
            Code::Walltime
        );
        assert_eq!(Code::Walltime.as_i32(), 9);
        assert_eq!(
            job_ended_during_session("5", "COMPLETED", Some(0)).code(),
            Code::Success
        );
        assert!(
            job_ended_during_session("5", "CANCELLED by 0", None)
                .reason()
                .contains("cancelled outside pvlaunch")
        );
    }
}
