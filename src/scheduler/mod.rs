//! Batch schedulers as data: what to run on the login node, and what its output means.
//!
//! Nothing here runs a process. A [`Scheduler`] turns a [`JobSpec`] into a job script and
//! gives, for each step of a job's life, the **argv** to run on the login node (submit, query
//! the state, query the finished state, cancel) and a **pure parser** for what that command
//! printed. The session runs the argv through its ssh connection (joined with
//! [`crate::quote::join`]) and hands the result back as a [`CommandOutput`].
//!
//! One file per scheduler: [`Slurm`], [`Pbs`] (OpenPBS / PBS Pro and Torque), [`Lsf`], and
//! [`Direct`] (no scheduler: run on the login node itself). [`hostlist`] expands the node
//! lists they print.
//!
//! ```
//! use pvlaunch::quote;
//! use pvlaunch::scheduler::{CommandOutput, JobSpec, JobState, Kind};
//!
//! let slurm = Kind::Slurm.scheduler();
//! let spec = JobSpec {
//!     nodes: 2,
//!     ranks_per_node: 4,
//!     command: vec!["mpiexec".into(), "pvserver".into(), "--server-port=11111".into()],
//!     ..JobSpec::new("pvserver")
//! };
//! let script = slurm.render_script(&spec).unwrap();
//! assert!(script.contains("#SBATCH --nodes=2\n"));
//!
//! // The script goes on the submit command's stdin.
//! let submit = quote::join(slurm.submit_command()).unwrap();
//! assert_eq!(submit, "sbatch --parsable");
//! let id = slurm.parse_submit(&CommandOutput::success("4242\n")).unwrap();
//!
//! let query = quote::join(slurm.state_command(&id)).unwrap();
//! assert_eq!(query, "squeue -h -t all -j 4242 -o '%T|%N|%R|%S'");
//! let state = slurm.parse_state(&CommandOutput::success("RUNNING|node[1-2]|node[1-2]|2026-05-04T10:00:00\n"));
//! assert_eq!(
//!     state.unwrap(),
//!     Some(JobState::Running { nodes: vec!["node1".into(), "node2".into()] })
//! );
//! ```

#![warn(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

use crate::quote::NulError;

pub mod hostlist;
pub mod listing;
mod lsf;
pub mod nodes;
mod none;
mod pbs;
mod slurm;

pub use hostlist::HostlistError;
pub use lsf::Lsf;
pub use none::Direct;
pub use pbs::{Pbs, PbsFlavor};
pub use slurm::Slurm;

/// The interpreter every rendered job script starts with.
pub const SCRIPT_SHELL: &str = "/bin/bash";

/// Which scheduler a cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Slurm (`sbatch`, `squeue`, `sacct`, `scancel`).
    Slurm,
    /// OpenPBS / PBS Professional (`qsub`, `qstat -x`, `qdel`; `-l select=`).
    Pbs,
    /// Torque (`qsub`, `qstat`, `qdel`; `-l nodes=N:ppn=R`).
    Torque,
    /// IBM Spectrum LSF (`bsub`, `bjobs`, `bkill`).
    Lsf,
    /// No scheduler: the job runs on the login node itself, detached from the ssh session.
    None,
}

/// One scheduler's facts: adding a scheduler is its file, its [`Kind`] variant and one line
/// here.
struct Entry {
    kind: Kind,
    /// The name in profiles and on the command line.
    name: &'static str,
    /// Other names accepted when parsing.
    aliases: &'static [&'static str],
    /// The adapter.
    make: fn() -> Box<dyn Scheduler>,
}

/// Every scheduler, in the order they are documented.
const REGISTRY: &[Entry] = &[
    Entry {
        kind: Kind::Slurm,
        name: "slurm",
        aliases: &[],
        make: || Box::new(Slurm),
    },
    Entry {
        kind: Kind::Pbs,
        name: "pbs",
        aliases: &["openpbs", "pbspro"],
        make: || Box::new(Pbs::new(PbsFlavor::OpenPbs)),
    },
    Entry {
        kind: Kind::Torque,
        name: "torque",
        aliases: &[],
        make: || Box::new(Pbs::new(PbsFlavor::Torque)),
    },
    Entry {
        kind: Kind::Lsf,
        name: "lsf",
        aliases: &[],
        make: || Box::new(Lsf),
    },
    Entry {
        kind: Kind::None,
        name: "none",
        aliases: &[],
        make: || Box::new(Direct),
    },
];

impl Kind {
    /// Every kind, in the order they are documented.
    pub const ALL: [Kind; REGISTRY.len()] = {
        let mut all = [Kind::None; REGISTRY.len()];
        let mut i = 0;
        while i < REGISTRY.len() {
            all[i] = REGISTRY[i].kind;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static Entry {
        REGISTRY
            .iter()
            .find(|e| e.kind == self)
            .expect("every kind has a registry entry")
    }

    /// The name used in profiles and on the command line.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// The scheduler adapter for this kind.
    pub fn scheduler(self) -> Box<dyn Scheduler> {
        (self.entry().make)()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name that pvlaunch does not know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown scheduler {:?} (expected one of: {})", .0, known_names())]
pub struct UnknownKind(pub String);

fn known_names() -> String {
    REGISTRY
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        REGISTRY
            .iter()
            .find(|e| e.name == lower || e.aliases.contains(&lower.as_str()))
            .map(|e| e.kind)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A wall-clock limit for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Walltime {
    seconds: u64,
}

/// A wall-clock limit that is not `MINUTES`, `H:MM:SS` or `D-H:MM:SS`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "invalid wall time {0:?} (expected minutes like `90`, `H:MM:SS` like `1:30:00`, or `D-H:MM:SS`)"
)]
pub struct WalltimeError(pub String);

impl Walltime {
    /// A limit of `seconds` seconds.
    pub fn from_secs(seconds: u64) -> Self {
        Walltime { seconds }
    }

    /// The limit in seconds.
    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    /// `HH:MM:SS`, hours not wrapped at 24 (`36:00:00`): Slurm's and PBS's form.
    pub fn hms(self) -> String {
        let s = self.seconds;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// `H:MM`, rounded up to whole minutes: LSF's `-W` form.
    pub fn hm_ceil(self) -> String {
        let m = self.seconds.div_ceil(60);
        format!("{}:{:02}", m / 60, m % 60)
    }
}

impl FromStr for Walltime {
    type Err = WalltimeError;

    /// `MINUTES`, `H:MM:SS` or `D-H:MM:SS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WalltimeError(s.to_owned());
        let num = |p: &str| -> Result<u64, WalltimeError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            p.parse().map_err(|_| err())
        };
        let t = s.trim();
        let (days, rest) = match t.split_once('-') {
            Some((d, rest)) => (num(d)?, rest),
            None => (0, t),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let seconds = match parts.as_slice() {
            [m] if days == 0 => num(m)?.checked_mul(60).ok_or_else(err)?,
            [h, m, sec] => {
                let (h, m, sec) = (num(h)?, num(m)?, num(sec)?);
                if m >= 60 || sec >= 60 {
                    return Err(err());
                }
                h.checked_mul(3600)
                    .and_then(|h| h.checked_add(m * 60 + sec))
                    .ok_or_else(err)?
            }
            _ => return Err(err()),
        };
        let total = days
            .checked_mul(86_400)
            .and_then(|d| d.checked_add(seconds))
            .ok_or_else(err)?;
        if total == 0 {
            return Err(err());
        }
        Ok(Walltime { seconds: total })
    }
}

/// What to run, and with which resources: everything a job script is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSpec {
    /// The job's name in the queue.
    pub name: String,
    /// How many nodes.
    pub nodes: u32,
    /// MPI ranks per node.
    pub ranks_per_node: u32,
    /// Wall-clock limit; the site's default when `None`.
    pub walltime: Option<Walltime>,
    /// Slurm partition, PBS or LSF queue; the site's default when `None`.
    pub queue: Option<String>,
    /// Account / project to charge; the site's default when `None`.
    pub account: Option<String>,
    /// Where the job's stdout and stderr go (one file); the scheduler's default when `None`.
    /// Written as given: Slurm expands `%j`, LSF `%J`; PBS takes it literally.
    pub output_path: Option<String>,
    /// Extra directive arguments from the site's profile, one per line, written after the
    /// scheduler's own prefix as given (e.g. `--gres=gpu:1` becomes `#SBATCH --gres=gpu:1`).
    pub extra_directives: Vec<String>,
    /// The site's shell lines run before the command (`module load paraview`), verbatim.
    pub setup_lines: Vec<String>,
    /// The command's argv (`mpiexec -n 8 pvserver ...`); every element is quoted.
    pub command: Vec<String>,
    /// The session's tag (8 hex characters): the job's queue name becomes `NAME-TAG`
    /// ([`queue_name`]), so that the session's guard can find and cancel it even when its id
    /// never arrived ([`Scheduler::tagged_jobs_command`]). `None`: the name as given.
    pub tag: Option<String>,
}

impl JobSpec {
    /// A one-node, one-rank job named `name` with no command yet.
    pub fn new(name: impl Into<String>) -> Self {
        JobSpec {
            name: name.into(),
            nodes: 1,
            ranks_per_node: 1,
            walltime: None,
            queue: None,
            account: None,
            output_path: None,
            extra_directives: Vec::new(),
            setup_lines: Vec::new(),
            command: Vec::new(),
            tag: None,
        }
    }
}

/// Whether `tag` can be a session tag: 1 to 16 ASCII letters and digits (pvlaunch draws 8 hex
/// characters), so it is a plain word in every scheduler's job name and in every command.
pub fn valid_tag(tag: &str) -> bool {
    (1..=16).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The job's name in the queue: `NAME-TAG` with a tag, the name part shortened so that the
/// whole fits in `max_len` characters (the tag is never cut: it is what the guard looks for).
pub fn queue_name(spec: &JobSpec, kind: Kind, max_len: usize) -> Result<String, ScriptError> {
    let Some(tag) = checked_tag(spec, kind)? else {
        return Ok(spec.name.clone());
    };
    let room = max_len.saturating_sub(tag.len() + 1);
    let name: String = spec.name.chars().take(room).collect();
    Ok(format!("{name}-{tag}"))
}

/// The spec's tag, checked with [`valid_tag`].
fn checked_tag(spec: &JobSpec, kind: Kind) -> Result<Option<&str>, ScriptError> {
    match &spec.tag {
        None => Ok(None),
        Some(tag) if valid_tag(tag) => Ok(Some(tag)),
        Some(tag) => Err(ScriptError::Unrepresentable {
            kind,
            field: "session tag",
            value: tag.clone(),
        }),
    }
}

/// One unfinished job that carries the session's tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaggedJob {
    /// Its id.
    pub id: JobId,
    /// Its state as the scheduler printed it (`PENDING`, `R`, `RUN`, ...).
    pub state: String,
}

/// A job id as the scheduler gave it, checked to be safe to put into a command.
///
/// Only the scheduler adapters make these ([`Scheduler::parse_submit`],
/// [`Scheduler::job_id`]), each with its own rule: digits for Slurm (`digits;cluster` for a
/// federated submission) and LSF, `digits[.server]` for PBS, a short alphanumeric token for
/// [`Direct`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Build one after the caller has validated `id`.
    fn checked(id: &str, valid: bool) -> Result<JobId, ParseError> {
        if valid {
            Ok(JobId(id.to_owned()))
        } else {
            Err(ParseError::InvalidJobId(id.to_owned()))
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a queued job will never start, as the scheduler's pending reason says, and what to
/// change: waiting on it would only end at the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeverStarts {
    /// The reason in words.
    pub why: &'static str,
    /// What the user can change.
    pub change: &'static str,
}

/// Slurm's pending reasons (`squeue %r`) that waiting cannot resolve. Reasons that can pass on
/// their own (`Resources`, `Priority`, `ReqNodeNotAvail` for nodes that may come back, limits
/// shared with other jobs) are not here.
const NEVER_STARTS: &[(&str, NeverStarts)] = &[
    (
        "PartitionNodeLimit",
        NeverStarts {
            why: "the job asks for more nodes than the partition allows",
            change: "ask for fewer nodes (<Job nodes>), or choose a larger partition (<Job partition>)",
        },
    ),
    (
        "PartitionTimeLimit",
        NeverStarts {
            why: "the job's wall time is longer than the partition allows",
            change: "ask for a shorter wall time (<Job walltime>), or choose another partition",
        },
    ),
    (
        "PartitionConfig",
        NeverStarts {
            why: "the partition's configuration can never run this job (nodes, cores or memory asked for)",
            change: "ask for less (<Job nodes>, <Job ranks-per-node>, memory directives) or choose another partition (<Job partition>); `sinfo -p PARTITION` shows what it has",
        },
    ),
    (
        "InvalidAccount",
        NeverStarts {
            why: "the job's account is not valid for you",
            change: "set <Job account> to an account of yours (`sacctmgr show assoc user=$USER`)",
        },
    ),
    (
        "InvalidQOS",
        NeverStarts {
            why: "the job's QOS is not valid for you",
            change: "choose a QOS you may use (`sacctmgr show assoc user=$USER format=qos`)",
        },
    ),
    (
        "BadConstraints",
        NeverStarts {
            why: "no node has the features the job asks for",
            change: "check the job's constraints (<Directive value=\"--constraint=...\"/>) against `sinfo -o %f`",
        },
    ),
    (
        "DependencyNeverSatisfied",
        NeverStarts {
            why: "the job depends on a job that will never end the way it asks",
            change: "remove the dependency from the job's directives",
        },
    ),
];

/// A Slurm limit of the job's association or QOS that the job alone breaks: `*PerJob*`
/// maxima (`QOSMaxNodePerJobLimit`, `AssocMaxWallDurationPerJobLimit`, `QOSMaxCpuPerJobLimit`,
/// `QOSMaxTRESPerJob`, ...) and `QOSMin*` minima. Group limits (`AssocGrp*`, `QOSGrp*`) and
/// per-user or per-account ones are shared with the user's other jobs and pass when those end.
const PER_JOB_LIMIT: NeverStarts = NeverStarts {
    why: "the job alone breaks a limit of its account or QOS (nodes, cores, memory or wall time per job)",
    change: "ask for less (<Job nodes>, <Job ranks-per-node>, <Job walltime>) or use another QOS or account; `sacctmgr show assoc user=$USER` and `sacctmgr show qos` list the limits",
};

/// PBS Pro's comment for a job its scheduler found can never run
/// (`Can Never Run: Insufficient amount of resource: ncpus (R: 8 A: 4 T: 4)`).
const PBS_NEVER: NeverStarts = NeverStarts {
    why: "PBS's scheduler says the job can never run (it asks for more than the queue or the complex has)",
    change: "ask for fewer nodes or cores (<Job nodes>, <Job ranks-per-node>) or another queue (<Job partition>); `pbsnodes -aS` and `qstat -Qf QUEUE` show what there is",
};

/// Whether a queued job's pending `reason` means it will never start ([`NEVER_STARTS`],
/// per-job limits, PBS's `Can Never Run`); the reason's first word counts (Slurm may append
/// details in parentheses).
pub fn never_starts(reason: &str) -> Option<NeverStarts> {
    if reason.trim_start().starts_with("Can Never Run") {
        return Some(PBS_NEVER);
    }
    let word = reason
        .split(|c: char| c == '(' || c == ',' || c.is_whitespace())
        .next()
        .unwrap_or("");
    if (word.starts_with("Assoc") || word.starts_with("QOS"))
        && (word.contains("PerJob") || word.starts_with("QOSMin"))
    {
        return Some(PER_JOB_LIMIT);
    }
    NEVER_STARTS
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, n)| *n)
}

/// Where a job is in its life, as far as the scheduler says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to start (pending, held, nodes being configured, ...).
    Queued {
        /// The scheduler's reason, e.g. `Priority`, `Resources`, a PBS comment.
        reason: Option<String>,
        /// The scheduler's estimate of the start time, as it printed it.
        estimated_start: Option<String>,
    },
    /// Running on these nodes (the first one runs the batch script and rank 0).
    Running {
        /// Node names, expanded and in the scheduler's order.
        nodes: Vec<String>,
    },
    /// The job's script has ended (or is ending: Slurm `COMPLETING`, PBS `E`).
    Finished {
        /// The scheduler's final state: `COMPLETED`, `FAILED`, `CANCELLED by 1000`,
        /// `TIMEOUT`, `DONE`, `EXIT`, `FINISHED`, ...
        state: String,
        /// The exit code of the job's script, when known.
        exit_code: Option<i32>,
        /// The signal that ended it, when known.
        signal: Option<i32>,
        /// The nodes it ran on, when known.
        nodes: Vec<String>,
    },
    /// A state pvlaunch does not interpret (suspended, ...): the job still exists; poll again.
    Unknown {
        /// The scheduler's state, as it printed it.
        state: String,
    },
}

impl JobState {
    /// Whether the job has ended (no need to poll its state again, only its details).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Finished { .. })
    }
}

/// What a remote command printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// The exit status; `None` when it was killed by a signal. Over ssh, 255 means ssh itself
    /// failed.
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// A command that exited 0 after printing `stdout`.
    pub fn success(stdout: impl Into<String>) -> Self {
        CommandOutput {
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// A command that exited with `status` after printing `stderr`.
    pub fn failure(status: i32, stderr: impl Into<String>) -> Self {
        CommandOutput {
            status: Some(status),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    /// Whether the command exited 0.
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// The error for a command that failed in a way the parser does not recognise.
    fn failed(&self) -> ParseError {
        ParseError::CommandFailed {
            status: self.status,
            stderr: self.stderr.trim().to_owned(),
        }
    }
}

impl From<std::process::Output> for CommandOutput {
    fn from(out: std::process::Output) -> Self {
        CommandOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a cancel command achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cancel {
    /// The scheduler accepted the cancellation.
    Requested,
    /// The job had already ended or is unknown to the scheduler: nothing left to cancel.
    AlreadyGone,
}

/// A job script that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScriptError {
    /// A directive value with a line break would end the directive and start a new line.
    #[error(
        "{field} contains a line break, which would start a new line in the job script: {value:?}"
    )]
    LineBreak {
        /// Which value (`queue`, `extra directive`, ...).
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A directive value this scheduler cannot parse back as one value.
    #[error(
        "{field} {value:?} cannot be written as a {kind} directive (hint: use only letters, digits and `_-.,:/@%+=`)"
    )]
    Unrepresentable {
        /// The scheduler.
        kind: Kind,
        /// Which value.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// An empty value where the scheduler needs one.
    #[error("{field} is empty")]
    Empty {
        /// Which value.
        field: &'static str,
    },
    /// Zero nodes or zero ranks per node.
    #[error(
        "a job needs at least one node and one rank per node (got {nodes} nodes, {ranks_per_node} ranks per node)"
    )]
    NoResources {
        /// Requested nodes.
        nodes: u32,
        /// Requested ranks per node.
        ranks_per_node: u32,
    },
    /// No command to run.
    #[error("the job has no command to run")]
    NoCommand,
    /// A setting this scheduler has no way to honour.
    #[error("{setting} is not supported with scheduler `{kind}` ({hint})")]
    Unsupported {
        /// The scheduler.
        kind: Kind,
        /// The setting.
        setting: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A NUL byte in a value.
    #[error(transparent)]
    Nul(#[from] NulError),
}

/// Output that does not say what the parser expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The command failed, and not in a way that means "that job is gone".
    #[error("the scheduler command failed (exit status {}): {stderr}", status.map_or_else(|| "signal".to_owned(), |s| s.to_string()))]
    CommandFailed {
        /// Its exit status.
        status: Option<i32>,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Output in a shape the parser does not know.
    #[error("unexpected scheduler output ({what}): {output:?}")]
    Unexpected {
        /// What was expected.
        what: &'static str,
        /// The output.
        output: String,
    },
    /// A job id that is not of the scheduler's form.
    #[error("invalid job id {0:?}")]
    InvalidJobId(String),
    /// A node list that cannot be expanded.
    #[error(transparent)]
    Hostlist(#[from] HostlistError),
}

impl ParseError {
    fn unexpected(what: &'static str, output: &str) -> Self {
        ParseError::Unexpected {
            what,
            output: output.trim().to_owned(),
        }
    }
}

/// One batch scheduler: job scripts, the commands to run, and parsers for their output.
///
/// Every command is an argv for the login node; join it with [`crate::quote::join`] for ssh.
/// Commands take the job script on **stdin** ([`Scheduler::submit_command`]); to submit a
/// script file already on the login node, append `< path` (quoted) to the joined command.
pub trait Scheduler: fmt::Debug + Send + Sync {
    /// Which scheduler this is.
    fn kind(&self) -> Kind;

    /// The whole job script: shebang, directives, set-up lines, then the quoted command.
    fn render_script(&self, spec: &JobSpec) -> Result<String, ScriptError>;

    /// The command that submits the script given on its stdin and prints the job id.
    fn submit_command(&self) -> Vec<String>;

    /// The job id from the submit command's output.
    fn parse_submit(&self, out: &CommandOutput) -> Result<JobId, ParseError>;

    /// Check a job id given by hand (e.g. to follow a job submitted earlier).
    fn job_id(&self, id: &str) -> Result<JobId, ParseError>;

    /// The command that asks where the job is.
    fn state_command(&self, id: &JobId) -> Vec<String>;

    /// Where the job is; `None` when the scheduler no longer knows the job (left the queue:
    /// ask [`Scheduler::finished_command`] what became of it).
    fn parse_state(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError>;

    /// The command that asks how an ended job ended (accounting / history).
    fn finished_command(&self, id: &JobId) -> Vec<String>;

    /// How the job ended (or where it is, if it has not ended after all); `None` when the
    /// scheduler has no record of it (yet: accounting may lag a few seconds).
    fn parse_finished(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError>;

    /// The command that cancels the job.
    fn cancel_command(&self, id: &JobId) -> Vec<String>;

    /// Whether the cancel worked; a job that had already ended is not an error.
    fn parse_cancel(&self, out: &CommandOutput) -> Result<Cancel, ParseError>;

    /// The command that lists this user's unfinished jobs carrying `tag` (see
    /// [`JobSpec::tag`]): one `ID STATE` line each, nothing when there are none; a non-zero
    /// exit status when the scheduler could not be asked (controller down). Read it with
    /// [`Scheduler::parse_tagged_jobs`].
    fn tagged_jobs_command(&self, tag: &str) -> Vec<String>;

    /// The jobs [`Scheduler::tagged_jobs_command`] printed.
    fn parse_tagged_jobs(&self, out: &CommandOutput) -> Result<Vec<TaggedJob>, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        lines(&out.stdout)
            .map(|line| {
                let (id, state) = line
                    .split_once(' ')
                    .ok_or_else(|| ParseError::unexpected("`ID STATE` lines", line))?;
                Ok(TaggedJob {
                    id: self.job_id(id)?,
                    state: state.trim().to_owned(),
                })
            })
            .collect()
    }

    /// The argv that cancels one job when its id is appended as one more argument: the
    /// cancel for a script that learns the id at run time (the guard).
    fn cancel_id_prefix(&self) -> Vec<String>;

    /// The command that cancels every job [`Scheduler::tagged_jobs_command`] lists, printing
    /// the id of each job whose cancel the scheduler accepted; exit status 0 when the listing
    /// and every cancel worked (also when there was nothing to cancel).
    fn cancel_tagged_command(&self, tag: &str) -> Vec<String> {
        let (Ok(list), Ok(cancel)) = (
            crate::quote::join(self.tagged_jobs_command(tag)),
            crate::quote::join(self.cancel_id_prefix()),
        ) else {
            return argv(&[
                "sh",
                "-c",
                "echo 'pvlaunch: invalid session tag' >&2; exit 2",
            ]);
        };
        let mut cmd = argv(&["sh", "-c", CANCEL_TAGGED, "pvlaunch-cancel-tagged"]);
        cmd.push(list);
        cmd.push(cancel);
        cmd
    }
}

/// Cancels every job the listing `$1` prints with the cancel prefix `$2`; prints the ids it
/// cancelled.
const CANCEL_TAGGED: &str = r#"set -f
jobs=$(eval "$1") || exit
rc=0
for id in $(printf '%s\n' "$jobs" | cut -d ' ' -f 1); do
  if eval "$2 \"\$id\"" > /dev/null; then printf '%s\n' "$id"; else rc=1; fi
done
exit "$rc""#;

/// Convert a list of `&str` into an argv.
fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// Reject values that would break out of their line (or cannot be passed at all).
fn one_line<'a>(field: &'static str, value: &'a str) -> Result<&'a str, ScriptError> {
    if value.contains('\0') {
        return Err(NulError {
            value: value.to_owned(),
        }
        .into());
    }
    if value.contains(['\n', '\r']) {
        return Err(ScriptError::LineBreak {
            field,
            value: value.to_owned(),
        });
    }
    Ok(value)
}

/// Characters every scheduler reads back as part of one directive value, unquoted.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '-' | '.' | ',' | ':' | '/' | '@' | '%' | '+' | '=')
}

/// A directive value for schedulers whose directive quoting pvlaunch does not rely on
/// (PBS, LSF): plain characters only, otherwise a typed error.
fn plain_value<'a>(
    kind: Kind,
    field: &'static str,
    value: &'a str,
) -> Result<&'a str, ScriptError> {
    one_line(field, value)?;
    if value.is_empty() {
        return Err(ScriptError::Empty { field });
    }
    if !value.chars().all(is_plain) {
        return Err(ScriptError::Unrepresentable {
            kind,
            field,
            value: value.to_owned(),
        });
    }
    Ok(value)
}

/// Checks shared by every scheduler before rendering.
fn check_spec(spec: &JobSpec) -> Result<(), ScriptError> {
    if spec.nodes == 0 || spec.ranks_per_node == 0 {
        return Err(ScriptError::NoResources {
            nodes: spec.nodes,
            ranks_per_node: spec.ranks_per_node,
        });
    }
    if spec.command.is_empty() {
        return Err(ScriptError::NoCommand);
    }
    for d in &spec.extra_directives {
        one_line("extra directive", d)?;
    }
    for line in &spec.setup_lines {
        if line.contains('\0') {
            return Err(NulError {
                value: line.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// The part after the directives: set-up lines verbatim, a blank line (so a set-up line
/// ending in `\` cannot swallow the command), then the quoted command line.
fn script_body(
    out: &mut String,
    spec: &JobSpec,
    command_prefix: &[Cow<'_, str>],
) -> Result<(), ScriptError> {
    if let Some(w) = spec.walltime {
        // The job's end, from its real start (the script's first line after the directives),
        // for pvserver's `--timeout-command` ([`crate::pvserver::TIMEOUT_COMMAND`]): the
        // command runs on every rank every minute and must not ask the scheduler.
        out.push_str(&job_end_line(w));
    }
    if !spec.setup_lines.is_empty() {
        // A failing set-up line (a missing module) ends the job with its status, instead of
        // starting pvserver in a broken environment.
        out.push_str("\n# set-up\nset -e\n");
        for line in &spec.setup_lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("set +e\n");
    }
    out.push('\n');
    let prefix = command_prefix.iter().map(|c| c.as_ref());
    let command = spec.command.iter().map(String::as_str);
    out.push_str(&crate::quote::join(prefix.chain(command))?);
    out.push('\n');
    Ok(())
}

/// The environment variable the job script sets to the job's end (seconds since the epoch).
pub const JOB_END_VAR: &str = "PVLAUNCH_JOB_END";

/// The job script's line that records the job's end: its start plus the wall time.
pub fn job_end_line(walltime: Walltime) -> String {
    format!(
        "\n# the job's end (its start + the wall time), for pvserver's timeout command\n{JOB_END_VAR}=$(( $(date +%s) + {} )); export {JOB_END_VAR}\n",
        walltime.as_secs()
    )
}

/// Whole minutes left until `end` at `now` (both in seconds since the epoch), never below 0:
/// what pvserver's timeout command prints (ParaView reads a bare integer of minutes).
pub fn minutes_left(end: u64, now: u64) -> u64 {
    end.saturating_sub(now) / 60
}

/// Lines of `s`, trimmed, without empty ones.
fn lines(s: &str) -> impl Iterator<Item = &str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// `Some(s)` unless `s` is empty or one of the placeholders schedulers print for "nothing".
fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    match s {
        "" | "-" | "N/A" | "(null)" | "None" | "Unknown" => None,
        _ => Some(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pending_reasons_that_never_resolve() {
        assert!(super::never_starts("PartitionNodeLimit").is_some());
        assert!(
            super::never_starts("PartitionTimeLimit")
                .unwrap()
                .change
                .contains("walltime")
        );
        assert!(super::never_starts("InvalidAccount").is_some());
        // Slurm may add details after the reason's name.
        assert!(super::never_starts("BadConstraints (a, b)").is_some());
        // Recorded from the sandbox's Slurm 22.05: three nodes on its two-node partition, then
        // two nodes with node2 drained (the second form comes with `--nodelist` or later).
        let reason = |name: &str| match super::Kind::Slurm
            .scheduler()
            .parse_state(&super::test_support::fixture("slurm", name))
            .unwrap()
        {
            Some(super::JobState::Queued {
                reason: Some(r), ..
            }) => r,
            other => panic!("{name}: {other:?}"),
        };
        let never = super::never_starts(&reason("state_pending_partition_node_limit_recorded"));
        assert!(never.unwrap().why.contains("more nodes"));
        for waited in [
            "state_pending_nodes_drained_recorded",
            "state_pending_reqnodenotavail_recorded",
            "state_pending_begin_time_recorded",
        ] {
            assert!(super::never_starts(&reason(waited)).is_none(), "{waited}");
        }
        // Limits the job alone breaks.
        for per_job in [
            "QOSMaxNodePerJobLimit",
            "AssocMaxWallDurationPerJobLimit",
            "QOSMaxCpuPerJobLimit",
            "QOSMaxTRESPerJob",
            "QOSMinCpuNotSatisfied",
        ] {
            let n = super::never_starts(per_job).unwrap_or_else(|| panic!("{per_job}"));
            assert!(n.change.contains("sacctmgr"));
        }
        assert!(
            super::never_starts(
                "Can Never Run: Insufficient amount of resource: ncpus (R: 8 A: 4 T: 4)"
            )
            .is_some()
        );
        for transient in [
            "Priority",
            "Resources",
            "ReqNodeNotAvail, UnavailableNodes:node3",
            "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions",
            "AssocGrpNodeLimit",
            "QOSGrpCpuLimit",
            "QOSMaxJobsPerUserLimit",
            "AssocMaxJobsLimit",
            "BeginTime",
            "Not Running: Insufficient amount of resource: ncpus",
            "None",
            "",
            "PartitionNodeLimitX",
        ] {
            assert!(super::never_starts(transient).is_none(), "{transient}");
        }
    }

    use super::*;

    #[test]
    fn every_kind_round_trips_through_the_registry() {
        assert_eq!(Kind::ALL.len(), REGISTRY.len());
        for (i, e) in REGISTRY.iter().enumerate() {
            assert_eq!(Kind::ALL[i], e.kind);
            assert_eq!(
                REGISTRY.iter().filter(|o| o.kind == e.kind).count(),
                1,
                "{} is registered once",
                e.name
            );
            assert_eq!(e.kind.name(), e.name);
            assert_eq!(e.name.parse::<Kind>(), Ok(e.kind));
            assert_eq!(e.name.to_uppercase().parse::<Kind>(), Ok(e.kind));
            for alias in e.aliases {
                assert_eq!(alias.parse::<Kind>(), Ok(e.kind));
            }
            assert_eq!(e.kind.scheduler().kind(), e.kind);
            assert!(UnknownKind("x".into()).to_string().contains(e.name));
        }
        // Every variant is listed: this match stops compiling when one is added.
        for kind in Kind::ALL {
            match kind {
                Kind::Slurm | Kind::Pbs | Kind::Torque | Kind::Lsf | Kind::None => {}
            }
        }
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.name());
            assert_eq!(kind.scheduler().kind(), kind);
        }
        assert_eq!("PBSPro".parse::<Kind>().unwrap(), Kind::Pbs);
        assert!("sge".parse::<Kind>().is_err());
    }

    #[test]
    fn walltime_forms() {
        let w = |s: &str| s.parse::<Walltime>().map(Walltime::as_secs);
        assert_eq!(w("90"), Ok(5400));
        assert_eq!(w("1:30:00"), Ok(5400));
        assert_eq!(w("01:00:01"), Ok(3601));
        assert_eq!(w("2-00:00:00"), Ok(172_800));
        assert_eq!(w("48:00:00"), Ok(172_800));
        for bad in [
            "",
            "0",
            "1:30",
            "1:60:00",
            "1:00:60",
            "-1",
            "a",
            "1-30",
            "1:2:3:4",
            "99999999999999999999",
        ] {
            assert!(w(bad).is_err(), "{bad:?}");
        }
        let t: Walltime = "36:00:30".parse().unwrap();
        assert_eq!(t.hms(), "36:00:30");
        assert_eq!(t.hm_ceil(), "36:01");
        assert_eq!(Walltime::from_secs(60).hm_ceil(), "0:01");
    }

    #[test]
    fn directive_values_cannot_add_lines() {
        assert!(matches!(
            one_line("queue", "a\nb"),
            Err(ScriptError::LineBreak { .. })
        ));
        assert!(matches!(
            one_line("queue", "a\rb"),
            Err(ScriptError::LineBreak { .. })
        ));
        assert!(matches!(
            one_line("queue", "a\0b"),
            Err(ScriptError::Nul(_))
        ));
        assert!(matches!(
            plain_value(Kind::Pbs, "queue", "a b"),
            Err(ScriptError::Unrepresentable { .. })
        ));
        assert!(matches!(
            plain_value(Kind::Pbs, "queue", ""),
            Err(ScriptError::Empty { .. })
        ));
        assert_eq!(plain_value(Kind::Pbs, "queue", "work_q-1"), Ok("work_q-1"));
    }

    /// The two-hop recipe forwards to the first node the scheduler names: every scheduler's
    /// way of writing two nodes gives `node1` first, ranges expanded.
    #[test]
    fn running_jobs_name_their_nodes_in_order_with_ranges_expanded() {
        let two = Some(JobState::Running {
            nodes: vec!["node1".into(), "node2".into()],
        });
        let state = |kind: Kind, stdout: &str| {
            kind.scheduler()
                .parse_state(&CommandOutput::success(stdout))
                .unwrap()
        };
        assert_eq!(state(Kind::Slurm, "RUNNING|node[1-2]|node[1-2]|N/A\n"), two);
        assert_eq!(
            state(Kind::Slurm, "RUNNING|node1,node2|node1,node2|N/A\n"),
            two
        );
        assert_eq!(
            state(Kind::Slurm, "RUNNING|gpu[08-10]|gpu[08-10]|N/A\n"),
            Some(JobState::Running {
                nodes: vec!["gpu08".into(), "gpu09".into(), "gpu10".into()]
            })
        );
        let pbs = |exec_host: &str| {
            format!("Job Id: 42.pbs01\n    job_state = R\n    exec_host = {exec_host}\n")
        };
        assert_eq!(state(Kind::Pbs, &pbs("node1/0*2+node2/0*2")), two);
        assert_eq!(state(Kind::Torque, &pbs("node1/0-1+node2/0-1")), two);
        assert_eq!(state(Kind::Torque, &pbs("node1/0+node1/1+node2/0")), two);
        assert_eq!(state(Kind::Lsf, "42|RUN|2*node1:2*node2|-|-\n"), two);
        assert_eq!(state(Kind::Lsf, "42|RUN|node1:node1:node2|-|-\n"), two);
    }

    #[test]
    fn the_job_script_records_its_end_for_the_timeout_command() {
        let spec = JobSpec {
            walltime: Some(Walltime::from_secs(120)),
            setup_lines: vec!["module load paraview".into()],
            command: vec!["pvserver".into()],
            ..JobSpec::new("pvserver")
        };
        for kind in Kind::ALL {
            let script = kind.scheduler().render_script(&spec).unwrap();
            let line = script
                .lines()
                .position(|l| l.starts_with("PVLAUNCH_JOB_END="))
                .unwrap_or_else(|| panic!("{kind}: no end line in\n{script}"));
            let setup = script
                .lines()
                .position(|l| l == "module load paraview")
                .unwrap();
            assert!(
                line < setup,
                "{kind}: the end is taken before the set-up runs"
            );
        }
        // Run the line: the end is the start plus the wall time.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{}echo $PVLAUNCH_JOB_END $(date +%s)",
                job_end_line(Walltime::from_secs(120))
            ))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<u64> = text
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert!((119..=120).contains(&(v[0] - v[1])), "{text}");
        let none = Kind::Slurm
            .scheduler()
            .render_script(&JobSpec {
                walltime: None,
                ..spec.clone()
            })
            .unwrap();
        assert!(!none.contains(JOB_END_VAR));
    }

    #[test]
    fn minutes_left_are_whole_and_never_negative() {
        assert_eq!(minutes_left(1000, 1000), 0);
        assert_eq!(minutes_left(1000, 2000), 0);
        assert_eq!(minutes_left(1119, 1000), 1);
        assert_eq!(minutes_left(1120, 1000), 2);
        assert_eq!(minutes_left(1000 + 7200, 1000), 120);
    }

    #[test]
    fn job_state_serializes_with_a_tag() {
        let s = serde_json::to_string(&JobState::Running {
            nodes: vec!["n1".into()],
        })
        .unwrap();
        assert_eq!(s, r#"{"phase":"running","nodes":["n1"]}"#);
    }
}

/// Recorded command outputs under `tests/fixtures/scheduler/<kind>/`.
///
/// A fixture `NAME` is `NAME.stdout`, optionally `NAME.stderr` and `NAME.status` (the exit
/// status, 0 when absent). The name's first word says which parser reads it: `submit_`,
/// `state_`, `finished_` or `cancel_`.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::{CommandOutput, Scheduler};

    fn dir(kind: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/scheduler")
            .join(kind)
    }

    /// Load one fixture.
    pub(crate) fn fixture(kind: &str, name: &str) -> CommandOutput {
        let base = dir(kind).join(name);
        let read = |ext: &str| std::fs::read_to_string(base.with_extension(ext)).ok();
        let stdout = read("stdout");
        let stderr = read("stderr");
        assert!(
            stdout.is_some() || stderr.is_some(),
            "no fixture {name} in {}",
            dir(kind).display()
        );
        let status = read("status").map_or(0, |s| s.trim().parse().expect("a number in .status"));
        CommandOutput {
            status: Some(status),
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        }
    }

    /// Every fixture of `kind` through its parser, one line each: a snapshot of what the
    /// parsers make of all recorded outputs.
    pub(crate) fn fixture_table(kind: &str, scheduler: &dyn Scheduler) -> String {
        let names: BTreeSet<String> = std::fs::read_dir(dir(kind))
            .expect("fixture folder")
            .filter_map(|e| {
                let path = e.ok()?.path();
                Some(path.file_stem()?.to_str()?.to_owned())
            })
            .collect();
        let mut table = String::new();
        for name in names {
            let out = fixture(kind, &name);
            if name.starts_with("listing_") || name.starts_with("nodes_") {
                // Raw listings, read by the tagged-jobs scripts (see `run_with_fakes`), and
                // node lists, read by `nodes`'s own tests.
                continue;
            }
            let parsed = match name.split('_').next() {
                Some("submit") => format!("{:?}", scheduler.parse_submit(&out)),
                Some("state") => format!("{:?}", scheduler.parse_state(&out)),
                Some("finished") => format!("{:?}", scheduler.parse_finished(&out)),
                Some("cancel") => format!("{:?}", scheduler.parse_cancel(&out)),
                _ => panic!(
                    "fixture {name} does not start with submit_, state_, finished_ or cancel_"
                ),
            };
            writeln!(table, "{name}: {parsed}").unwrap();
        }
        table
    }

    /// The path of a fixture file.
    pub(crate) fn fixture_path(kind: &str, file: &str) -> PathBuf {
        dir(kind).join(file)
    }

    /// Run an argv locally as the login node would, with fake scheduler programs first on
    /// PATH: each `(name, body)` becomes an executable `sh` script. Each fake may append its
    /// arguments to `$FAKE_LOG` (one line per call, `name args...`).
    pub(crate) fn run_with_fakes(
        cmd: &[String],
        fakes: &[(&str, &str)],
    ) -> (CommandOutput, String) {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = tempfile::tempdir().unwrap();
        for (name, body) in fakes {
            let path = bin.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let log = bin.path().join("log");
        std::fs::write(&log, "").unwrap();
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
            .env("FAKE_LOG", &log)
            .env("TMPDIR", bin.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.into(), std::fs::read_to_string(&log).unwrap())
    }

    /// A fake that logs its call and prints a fixture (with its status).
    pub(crate) fn fake_printing(name: &str, kind: &str, fixture_name: &str) -> String {
        let stdout = fixture_path(kind, &format!("{fixture_name}.stdout"));
        let stderr = fixture_path(kind, &format!("{fixture_name}.stderr"));
        let status = std::fs::read_to_string(fixture_path(kind, &format!("{fixture_name}.status")))
            .map_or(0, |s| s.trim().parse().unwrap());
        format!(
            "echo \"{name} $*\" >> \"$FAKE_LOG\"\n[ -f '{o}' ] && cat '{o}'\n[ -f '{e}' ] && cat '{e}' >&2\nexit {status}",
            o = stdout.display(),
            e = stderr.display()
        )
    }
}
