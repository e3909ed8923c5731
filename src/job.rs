//! The batch job on the login node, through the session's ssh master: the guard that cancels
//! it when the session ends or the link drops, its state, and the tail of its output.
//!
//! # The guard
//!
//! One fixed POSIX sh script ([`GUARD`]) in its own ssh session, started **before** the job is
//! submitted and knowing the session's tag ([`crate::scheduler::JobSpec::tag`]), is the one
//! canceller of the session's job. It prints `ready` once it runs, then reads its stdin:
//!
//! - `beat`: the session is alive ([`Guard::start_heartbeat`] writes one every
//!   [`HEARTBEAT_INTERVAL`]); any line counts as one;
//! - `submitting`: a submit is under way (its result may never arrive);
//! - `job ID`: the job's id;
//! - `remove PATH`: an absolute path (the session's key file, its run folder) the guard
//!   removes (`rm -rf`) when it exits, whatever the ending (cancel, keep, give up);
//! - `keep`: leave the job; the guard prints `kept` and exits 0;
//! - `lease PATH`: the session's lease file (in its run folder), which the guard creates and
//!   touches with every line it reads ([`Guard::lease`]);
//! - `cancel`: the session ends: cancel (then the end of input);
//! - end of input without `cancel` (pvlaunch or the link died, even by SIGKILL): the link is
//!   lost; with a grace ([`GuardTimings::grace`]), a submitted job and a lease, the guard says
//!   `waiting Ns for the session to come back` and looks at the lease every poll: refreshed
//!   by another guard (the session came back and started it), it says `handed over` and exits
//!   0, leaving the job and the paths to that guard; after the grace it says `no session came
//!   back` and cancels. Without a grace it cancels at once;
//! - no line at all for [`HEARTBEAT_LIMIT`] while the input stays open (a link that dropped
//!   without the login node noticing): it prints `link lost`, ends the sshd session process
//!   that carries the session's connection (its parent, only when that is `sshd` or
//!   `sshd-session` of this user: every forward and channel of the session goes with it), then
//!   goes on as on end of input.
//!
//! To cancel, it cancels by id (when known) and by tag, then checks that no unfinished job
//! with the tag is left. A scheduler that cannot be reached (controller down) is retried with
//! back-off until [`GUARD_DEADLINE`]. Without an id (or with a submit still under way) it
//! keeps sweeping by tag for [`GUARD_SWEEP_WINDOW`], long enough for a submit that was still
//! in flight to land and be cancelled.
//!
//! A POSIX sh `read` cannot time out, so a reader subshell takes the input: it notes each line
//! (a `beat` file; the other lines are appended to a command file) and wakes the main loop
//! with SIGUSR1, which interrupts its `wait`; otherwise the main loop looks every
//! [`GUARD_POLL`]. A dead link is thus noticed within [`HEARTBEAT_LIMIT`] plus a poll.
//!
//! It ignores SIGHUP and SIGPIPE (the ssh session that started it may be gone) and reports on
//! its stdout, while anyone still reads it: `cancelled ID`, `retry: REASON`, `none left`,
//! `gave up: REASON`, `link lost` (then `closed the ssh connection (sshd PID)` or `left the ssh
//! connection alone: WHY`). [`Guard::cancel`] reads those lines for a while and returns a
//! [`GuardReport`].

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::plan::{self, Plan};
use crate::quote;
use crate::scheduler::{self, CommandOutput, JobId, JobState, Scheduler};
use crate::ssh::{self, Master};

/// How many bytes of the job's output are read when looking for pvserver's lines.
pub const OUTPUT_WINDOW: usize = 64 * 1024;
/// Lines of the job's output shown when it fails.
pub const TAIL_LINES: usize = 20;

/// How long the guard keeps trying to cancel when the scheduler cannot be reached.
pub const GUARD_DEADLINE: Duration = Duration::from_secs(600);
/// How long the guard keeps sweeping by tag when it never learnt the job's id: a submit still
/// in flight ends within [`ssh::COMMAND_TIMEOUT`] (after which the session gives up on it),
/// plus a margin for the scheduler to register the job.
pub const GUARD_SWEEP_WINDOW: Duration = Duration::from_secs(ssh::COMMAND_TIMEOUT.as_secs() + 30);
/// The guard's first pause between attempts (and between sweeps); it doubles after each
/// failure up to [`GUARD_MAX_PAUSE`].
pub const GUARD_FIRST_PAUSE: Duration = Duration::from_secs(2);
/// The guard's longest pause between attempts.
pub const GUARD_MAX_PAUSE: Duration = Duration::from_secs(30);
/// How long the guard may take to say `ready` (or `kept`), and the longest a line to it may
/// take to be written.
pub const GUARD_REPLY_TIMEOUT: Duration = ssh::COMMAND_TIMEOUT;
/// How often the session writes `beat` to the guard ([`Guard::start_heartbeat`]), and how
/// long the guard waits without any line before it treats the link as dead: the session's one
/// heartbeat, shared with the relay on the login node.
pub use crate::hop::{HEARTBEAT_INTERVAL, HEARTBEAT_LIMIT};
/// How often the guard looks at its input's notes when nothing woke it.
pub const GUARD_POLL: Duration = Duration::from_secs(2);

/// How many times an ended job's accounting record is asked for, and the pause between
/// (accounting may lag a little behind the queue): at most
/// `ACCOUNTING_TRIES * ACCOUNTING_PAUSE` of waiting in [`query_state`].
pub const ACCOUNTING_TRIES: u32 = 5;
/// See [`ACCOUNTING_TRIES`].
pub const ACCOUNTING_PAUSE: Duration = Duration::from_secs(1);

/// The guard. Arguments: deadline, sweep window, first and longest pause (whole seconds),
/// then three command lines: list the tagged jobs (`ID STATE` lines), cancel the tagged jobs
/// (prints the ids cancelled), and the cancel to which a job id is appended; then the
/// heartbeat limit and the poll (whole seconds).
pub const GUARD: &str = r#"trap '' HUP PIPE
deadline=$1 window=$2 pause=$3 max_pause=$4 list=$5 cancel_tagged=$6 cancel_id=$7 limit=$8 poll=$9
grace=${10:-0}
first_pause=$pause handed=
say() { printf '%s\n' "$*" 2> /dev/null; }
slept=0
now() { t=$(date +%s 2> /dev/null); case $t in ''|*[!0-9]*) t=$slept ;; esac; }
box=$(mktemp -d 2> /dev/null) || { echo "pvlaunch-guard: cannot make a temporary folder" >&2; exit 1; }
err=$box/err reader=
finish() {
  [ -n "$reader" ] && [ ! -e "$box/eof" ] && kill "$reader" 2> /dev/null
  if [ -z "$handed" ] && [ -s "$box/in" ]; then
    while IFS= read -r line; do
      case $line in "remove /"?*) rm -rf -- "${line#remove }" 2> /dev/null ;; esac
    done < "$box/in"
  fi
  rm -rf -- "$box"
}
trap finish EXIT
trap 'exit 143' TERM
reason_of() {
  reason=$(sed -n '$p' "$err" 2> /dev/null)
  [ -n "$reason" ] || reason="exit status $1"
}
parent_is_our_sshd() {
  if [ -r "/proc/$$/status" ]; then
    pp=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$$/status")
    uid=$(sed -n 's/^Uid:[[:space:]]*[0-9]*[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$PPID/status" 2> /dev/null)
    comm=$(cat "/proc/$PPID/comm" 2> /dev/null)
  else
    pp=$(ps -o ppid= -p $$ 2> /dev/null)
    uid=$(ps -o uid= -p "$PPID" 2> /dev/null)
    comm=$(ps -o comm= -p "$PPID" 2> /dev/null)
  fi
  pp=$(echo $pp) uid=$(echo $uid) comm=$(echo $comm)
  comm=${comm##*/}
  if [ "$pp" != "$PPID" ]; then why="parent $PPID is gone"; return 1; fi
  if [ "$uid" != "$(id -u)" ]; then why="parent $PPID belongs to uid $uid"; return 1; fi
  case $comm in sshd|sshd-session) return 0 ;; esac
  why="parent $PPID is ${comm:-unknown}, not sshd"; return 1
}
trap 'woke=1' USR1
exec 3<&0
(
  lease=
  while IFS= read -r line; do
    : > "$box/beat"
    case $line in
      beat) ;;
      "lease /"?*) lease=${line#lease }; : >> "$lease" 2> /dev/null; printf '%s\n' "$line" >> "$box/in" ;;
      *) printf '%s\n' "$line" >> "$box/in"; kill -USR1 $$ ;;
    esac
    [ -n "$lease" ] && [ -e "$lease" ] && touch "$lease" 2> /dev/null
  done
  : > "$box/eof"; kill -USR1 $$
) <&3 3<&- > /dev/null 2>&1 &
reader=$!
exec 3<&- 0< /dev/null
say ready
now; last=$t
id= pending=0
# What the session said so far (read again whole each time).
parse() {
  id= pending=0 kept= asked= told= lease=
  # The reader's wake-up would cut a `read` short (and lines with it): not while parsing; a
  # wake-up lost here costs one poll at most.
  trap '' USR1
  if [ -s "$box/in" ]; then
    while IFS= read -r line; do
      case $line in
        keep) kept=1 ;;
        cancel) told=1 ;;
        "lease /"?*) lease=${line#lease } ;;
        submitting) pending=1 asked=1 ;;
        "job "*)
          id=${line#job }; pending=0 asked=1
          case $id in ''|*[!A-Za-z0-9._\;-]*) id= ;; esac ;;
      esac
    done < "$box/in"
  fi
  trap 'woke=1' USR1
}
lost=
while :; do
  woke=
  parse
  if [ -n "$kept" ]; then say kept; exit 0; fi
  [ -n "$told" ] && break
  now
  if [ -z "$lost" ]; then
    if [ -e "$box/eof" ]; then
      lost=$t
    else
      if [ -e "$box/beat" ]; then rm -f "$box/beat"; last=$t; fi
      if [ $((t - last)) -ge "$limit" ]; then
        say "link lost"
        if parent_is_our_sshd; then
          kill "$PPID" 2> /dev/null && say "closed the ssh connection (sshd $PPID)"
        else
          say "left the ssh connection alone: $why"
        fi
        lost=$t
      fi
    fi
    if [ -n "$lost" ]; then
      # No grace (or nothing submitted, so nothing a session could come back to): cancel now.
      [ "$grace" -gt 0 ] && [ -n "$asked" ] && [ -n "$lease" ] || break
      : > "$box/lost"
      say "waiting ${grace}s for the session to come back"
    fi
  fi
  if [ -n "$lost" ]; then
    # Another guard of this session refreshed the lease after this one lost its input: the
    # session came back, and that guard is the canceller now.
    if [ -n "$(find "$lease" -newer "$box/lost" 2> /dev/null)" ]; then
      say "handed over"; handed=1; exit 0
    fi
    if [ $((t - lost)) -ge "$grace" ]; then say "no session came back"; break; fi
  fi
  sleep "$poll" < /dev/null > /dev/null 2>&1 &
  [ -n "$woke" ] || wait $! 2> /dev/null
  slept=$((slept + poll))
done
# The input may have ended right after the last look: everything it said counts.
parse
# Nothing was ever submitted: nothing to cancel (the paths to remove go on exit).
[ -n "$asked" ] || exit 0
now; start=$t; end=$((start + deadline)); sweep_end=$start
if [ -z "$id" ] || [ "$pending" = 1 ]; then sweep_end=$((start + window)); fi
said=" " none=
set -f
while :; do
  reason=
  if [ -n "$id" ]; then
    case $said in *" $id "*) ;; *)
      if eval "$cancel_id \"\$id\"" > /dev/null 2> "$err"; then say "cancelled $id"; said="$said$id "; fi ;;
    esac
  fi
  if cancelled=$(eval "$cancel_tagged" 2> "$err"); then :; else reason_of $?; fi
  for c in $cancelled; do
    case $said in *" $c "*) ;; *) say "cancelled $c"; said="$said$c "; none= ;; esac
  done
  if left=$(eval "$list" 2> "$err"); then
    if [ -z "$left" ]; then
      [ -n "$none" ] || { say "none left"; none=1; }
      now
      [ "$t" -lt "$sweep_end" ] || exit 0
      pause=$first_pause
      sleep "$pause"; slept=$((slept + pause))
      continue
    fi
    none=
    reason="still there: $(printf '%s' "$left" | tr '\n' ' ')"
  else
    none=
    reason_of $?
  fi
  now
  if [ $((t + pause)) -gt "$end" ]; then say "gave up: $reason"; exit 1; fi
  say "retry: $reason"
  sleep "$pause"; slept=$((slept + pause))
  pause=$((pause * 2)); [ "$pause" -le "$max_pause" ] || pause=$max_pause
done"#;

/// The guard's timings (whole seconds); [`GuardTimings::default`] is the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardTimings {
    /// [`GUARD_DEADLINE`].
    pub deadline: Duration,
    /// [`GUARD_SWEEP_WINDOW`].
    pub sweep_window: Duration,
    /// [`GUARD_FIRST_PAUSE`].
    pub first_pause: Duration,
    /// [`GUARD_MAX_PAUSE`].
    pub max_pause: Duration,
    /// [`HEARTBEAT_INTERVAL`] (the session's side).
    pub heartbeat_interval: Duration,
    /// [`HEARTBEAT_LIMIT`].
    pub heartbeat_limit: Duration,
    /// [`GUARD_POLL`].
    pub poll: Duration,
    /// How long a guard whose session's link was lost waits for the session to come back
    /// (another guard refreshing the lease, [`Guard::lease`]) before it cancels; zero (the
    /// default here): at once. The session's comes from its plan (`--grace`, `--no-grace`).
    pub grace: Duration,
}

impl Default for GuardTimings {
    fn default() -> Self {
        GuardTimings {
            deadline: GUARD_DEADLINE,
            sweep_window: GUARD_SWEEP_WINDOW,
            first_pause: GUARD_FIRST_PAUSE,
            max_pause: GUARD_MAX_PAUSE,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            heartbeat_limit: HEARTBEAT_LIMIT,
            poll: GUARD_POLL,
            grace: Duration::ZERO,
        }
    }
}

/// Why the job's state could not be learnt (the follow loop retries and bounds it).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A command with a NUL byte.
    #[error(transparent)]
    Nul(#[from] quote::NulError),
    /// The command through the master failed or timed out, or the master is gone.
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    /// The scheduler's answer makes no sense (or says it failed).
    #[error(transparent)]
    Parse(#[from] crate::scheduler::ParseError),
    /// There is no ssh connection to ask through.
    #[error("the ssh connection is gone")]
    NoConnection,
}

/// Why the guard could not be started or told something.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The tag is not a session tag ([`scheduler::valid_tag`]).
    #[error("invalid session tag {0:?} (expected letters and digits)")]
    InvalidTag(String),
    /// A command with a NUL byte.
    #[error(transparent)]
    Nul(#[from] quote::NulError),
    /// ssh could not be run.
    #[error("cannot run ssh for the guard: {0}")]
    Spawn(std::io::Error),
    /// The guard did not say `ready` on the login node.
    #[error("the guard did not start on the login node{}", tail(.stderr))]
    NotStarted {
        /// What ssh printed.
        stderr: String,
    },
    /// The guard's ssh session has ended: it is cancelling (or has cancelled) the job.
    #[error("the guard on the login node is gone (its ssh session ended)")]
    Gone,
    /// A path for `remove` that is not absolute, is `/`, or holds a newline or NUL.
    #[error("refusing to have the guard remove {0:?}: not an absolute path on one line")]
    BadPath(String),
}

fn tail(stderr: &str) -> String {
    let t = crate::process::tail(stderr, 3);
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.join(" / "))
    }
}

/// What the guard said after it was told to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardReport {
    /// No unfinished job with the session's tag is left; these were cancelled on the way.
    /// (Without a job id the guard goes on sweeping for a late submit after saying so.)
    NoneLeft {
        /// The ids whose cancel the scheduler accepted.
        cancelled: Vec<String>,
    },
    /// The scheduler accepted these cancels; the guard had not yet confirmed that none is
    /// left when the wait ended.
    Cancelled {
        /// The ids.
        ids: Vec<String>,
    },
    /// The guard is still trying (e.g. the controller is down) and goes on after the session.
    StillRetrying {
        /// Its last reason.
        reason: String,
    },
    /// The guard gave up after [`GUARD_DEADLINE`].
    GaveUp {
        /// Its last reason.
        reason: String,
    },
    /// The guard said nothing that tells (its ssh session or the link is gone).
    Unknown,
}

/// The command line that runs the guard (before the login-shell wrapper).
pub fn guard_command(
    scheduler: &dyn Scheduler,
    tag: &str,
    timings: GuardTimings,
) -> Result<String, GuardError> {
    if !scheduler::valid_tag(tag) {
        return Err(GuardError::InvalidTag(tag.to_owned()));
    }
    let secs = |d: Duration| d.as_secs().max(1).to_string();
    let list = quote::join(scheduler.tagged_jobs_command(tag))?;
    let cancel_tagged = quote::join(scheduler.cancel_tagged_command(tag))?;
    let cancel_id = quote::join(scheduler.cancel_id_prefix())?;
    Ok(quote::join([
        "exec",
        "sh",
        "-c",
        GUARD,
        "pvlaunch-guard",
        &secs(timings.deadline),
        &secs(timings.sweep_window),
        &secs(timings.first_pause),
        &secs(timings.max_pause),
        &list,
        &cancel_tagged,
        &cancel_id,
        &secs(timings.heartbeat_limit),
        &secs(timings.poll),
        &timings.grace.as_secs().to_string(),
    ])?)
}

/// Start the guard on the login node, before anything is submitted, wait until it runs, and
/// start its heartbeat ([`Guard::start_heartbeat`]).
pub async fn start_guard(
    master: &Master,
    scheduler: &dyn Scheduler,
    tag: &str,
    grace: Duration,
) -> Result<Guard, GuardError> {
    let timings = GuardTimings {
        grace,
        ..GuardTimings::default()
    };
    let mut guard = start_guard_with(master, scheduler, tag, timings).await?;
    guard.start_heartbeat();
    Ok(guard)
}

/// [`start_guard`] with other timings, and **without** the heartbeat: unless the caller
/// starts it ([`Guard::start_heartbeat`]) or writes lines itself, the guard cancels after
/// `timings.heartbeat_limit`.
pub async fn start_guard_with(
    master: &Master,
    scheduler: &dyn Scheduler,
    tag: &str,
    timings: GuardTimings,
) -> Result<Guard, GuardError> {
    let command = guard_command(scheduler, tag, timings)?;
    Guard::spawn(&master.remote_argv(&command), timings.heartbeat_interval).await
}

/// The guard's stdin, shared by the heartbeat and the session's own lines (each line is
/// written whole under the lock). `None` once closed.
type SharedStdin = std::sync::Arc<tokio::sync::Mutex<Option<ChildStdin>>>;

/// Write one line to the guard, within [`GUARD_REPLY_TIMEOUT`].
async fn write_line(stdin: &SharedStdin, line: &str) -> Result<(), GuardError> {
    let write = async {
        let mut pipe = stdin.lock().await;
        let pipe = pipe.as_mut().ok_or(GuardError::Gone)?;
        pipe.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|_| GuardError::Gone)?;
        pipe.flush().await.map_err(|_| GuardError::Gone)
    };
    tokio::time::timeout(GUARD_REPLY_TIMEOUT, write)
        .await
        .unwrap_or(Err(GuardError::Gone))
}

/// The running guard: its ssh session, its stdin and its report lines. Dropping it kills the
/// local ssh, which ends the guard's input: it cancels.
pub struct Guard {
    child: Child,
    stdin: SharedStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    heartbeat_interval: Duration,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

impl Guard {
    /// Run the guard's argv (ssh, or a local shell in tests) and wait for its `ready`.
    pub(crate) async fn spawn(
        argv: &[String],
        heartbeat_interval: Duration,
    ) -> Result<Guard, GuardError> {
        let mut cmd = crate::process::command(argv, crate::process::Kind::Helper);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(GuardError::Spawn)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let stderr = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        let mut guard = Guard {
            child,
            stdin: std::sync::Arc::new(tokio::sync::Mutex::new(stdin)),
            lines: BufReader::new(stdout).lines(),
            stderr,
            heartbeat_interval,
            heartbeat: None,
        };
        match tokio::time::timeout(GUARD_REPLY_TIMEOUT, guard.lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => Ok(guard),
            _ => {
                let _ = guard.child.start_kill();
                let _ = guard.child.wait().await;
                let stderr = tokio::time::timeout(Duration::from_secs(2), &mut guard.stderr)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                Err(GuardError::NotStarted { stderr })
            }
        }
    }

    /// The local ssh's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Write `beat` every [`GuardTimings::heartbeat_interval`] from now on, in a task of its
    /// own (until the guard's input is closed or can no longer be written). Started once;
    /// again is a no-op.
    pub fn start_heartbeat(&mut self) {
        if self.heartbeat.is_some() {
            return;
        }
        let stdin = self.stdin.clone();
        let every = self.heartbeat_interval;
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if write_line(&stdin, "beat").await.is_err() {
                    break;
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// Close the guard's input (after the heartbeat stopped), within [`GUARD_REPLY_TIMEOUT`].
    async fn close_input(&mut self) {
        self.stop_heartbeat();
        let _ = tokio::time::timeout(GUARD_REPLY_TIMEOUT, async {
            if let Some(mut stdin) = self.stdin.lock().await.take() {
                let _ = stdin.shutdown().await;
            }
        })
        .await;
    }

    async fn tell(&mut self, line: &str) -> Result<(), GuardError> {
        write_line(&self.stdin, line).await
    }

    /// Have the guard remove `path` (`rm -rf`) when it exits, however it ends. Only an
    /// absolute path on one line (not `/`) is taken.
    pub async fn remove_at_end(&mut self, path: &str) -> Result<(), GuardError> {
        if !removable(path) {
            return Err(GuardError::BadPath(path.to_owned()));
        }
        self.tell(&format!("remove {path}")).await
    }

    /// The session's lease file (an absolute path on one line, in the session's run folder):
    /// this guard creates it and refreshes its modification time with every line it reads.
    /// After a lost link, the guard waits [`GuardTimings::grace`] for another guard of the
    /// session (started by the session once it came back) to refresh it, and then leaves the
    /// job to that one ("handed over", removing nothing); otherwise it cancels. The login
    /// relay lives while the lease is fresh (`pvlaunch relay --lease`).
    pub async fn lease(&mut self, path: &str) -> Result<(), GuardError> {
        if !removable(path) {
            return Err(GuardError::BadPath(path.to_owned()));
        }
        self.tell(&format!("lease {path}")).await
    }

    /// A submit is about to run: if its result never arrives, the guard sweeps by tag.
    pub async fn submitting(&mut self) -> Result<(), GuardError> {
        self.tell("submitting").await
    }

    /// The job's id, once the submit printed it.
    pub async fn job_known(&mut self, id: &JobId) -> Result<(), GuardError> {
        self.tell(&format!("job {id}")).await
    }

    /// Leave the job running (`--keep-job`): the guard exits without cancelling.
    pub async fn keep(mut self) -> Result<(), GuardError> {
        self.stop_heartbeat();
        self.tell("keep").await?;
        self.close_input().await;
        let said = tokio::time::timeout(GUARD_REPLY_TIMEOUT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if line == "kept" {
                    return true;
                }
            }
            false
        })
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        match said {
            Ok(true) => Ok(()),
            _ => Err(GuardError::Gone),
        }
    }

    /// Tell the guard to cancel (close its input), and read what it says for up to `wait`:
    /// until it reports none left, gives up, or exits. It goes on by itself on the login node
    /// after this returns (retrying, or sweeping for a late submit).
    pub async fn cancel(mut self, wait: Duration) -> GuardReport {
        // Said, so that the end of input is not taken for a lost link (and its grace).
        self.stop_heartbeat();
        let _ = self.tell("cancel").await;
        self.close_input().await;
        let mut cancelled = Vec::new();
        let mut last: Option<String> = None;
        let waited = tokio::time::timeout(wait, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if let Some(id) = line.strip_prefix("cancelled ") {
                    cancelled.push(id.to_owned());
                    last = None;
                } else if line == "none left" || line.starts_with("gave up: ") {
                    last = Some(line);
                    break;
                } else if line.starts_with("retry: ") {
                    last = Some(line);
                }
            }
        })
        .await;
        // Still running and silent when the wait ended: its scheduler commands are slow (a hung
        // controller makes each one wait for its own timeout), not its session gone.
        let still_there = waited.is_err() && matches!(self.child.try_wait(), Ok(None));
        match last.as_deref() {
            None if still_there && cancelled.is_empty() => GuardReport::StillRetrying {
                reason: "the scheduler has not answered yet".into(),
            },
            Some("none left") => GuardReport::NoneLeft { cancelled },
            Some(l) if l.starts_with("gave up: ") => GuardReport::GaveUp {
                reason: l["gave up: ".len()..].to_owned(),
            },
            Some(l) if l.starts_with("retry: ") => GuardReport::StillRetrying {
                reason: l["retry: ".len()..].to_owned(),
            },
            _ if !cancelled.is_empty() => GuardReport::Cancelled { ids: cancelled },
            _ => GuardReport::Unknown,
        }
    }
}

/// Whether the guard takes `path` for `remove`: absolute, on one line, not `/`.
fn removable(path: &str) -> bool {
    path.starts_with('/') && !path.trim_matches('/').is_empty() && !path.contains(['\n', '\0'])
}

/// Where the job is; once it left the queue, how it ended (accounting may lag a little).
pub async fn query_state(
    master: &Master,
    scheduler: &dyn Scheduler,
    job: &JobId,
) -> Result<JobState, JobError> {
    let cmd = quote::join(scheduler.state_command(job))?;
    let out = master.exec(&cmd, None, ssh::COMMAND_TIMEOUT).await?;
    if let Some(state) = scheduler.parse_state(&CommandOutput::from(&out))? {
        return Ok(state);
    }
    // Out of the queue: ask accounting, which may lag a little.
    for attempt in 1..=ACCOUNTING_TRIES {
        let cmd = quote::join(scheduler.finished_command(job))?;
        let out = master.exec(&cmd, None, ssh::COMMAND_TIMEOUT).await?;
        if let Some(state) = scheduler.parse_finished(&CommandOutput::from(&out))? {
            return Ok(state);
        }
        if attempt < ACCOUNTING_TRIES {
            tokio::time::sleep(ACCOUNTING_PAUSE).await;
        }
    }
    Ok(JobState::Finished {
        state: "UNKNOWN (left the queue)".into(),
        exit_code: None,
        signal: None,
        nodes: vec![],
    })
}

/// The end of the job's output on the login node (`None` while the file does not exist): its
/// last [`OUTPUT_WINDOW`] bytes, where pvserver's lines are.
pub async fn read_output(master: &Master, plan: &Plan) -> Result<Option<String>, JobError> {
    let path = format!(
        "{}/{}",
        plan::REMOTE_DIR,
        plan::output_path(&plan.session_tag)
    );
    let q = quote::quote(&path)?;
    let out = master
        .exec(
            &format!("tail -c {OUTPUT_WINDOW} {q} 2>/dev/null"),
            None,
            ssh::COMMAND_TIMEOUT,
        )
        .await?;
    Ok(out.success().then_some(out.stdout))
}

/// Cancel `job` directly through the master (when no guard could be started).
pub async fn cancel(
    master: Option<&Master>,
    scheduler: &dyn Scheduler,
    job: &JobId,
) -> Result<crate::scheduler::Cancel, JobError> {
    let master = master.ok_or(JobError::NoConnection)?;
    let cmd = quote::join(scheduler.cancel_command(job))?;
    let out = master.exec(&cmd, None, ssh::COMMAND_TIMEOUT).await?;
    Ok(scheduler.parse_cancel(&CommandOutput::from(&out))?)
}

/// The last lines of the job's output file (empty when it cannot be read).
pub async fn output_tail(master: &Master, plan: &Plan) -> Vec<String> {
    let path = format!(
        "{}/{}",
        plan::REMOTE_DIR,
        plan::output_path(&plan.session_tag)
    );
    let Ok(q) = quote::quote(&path) else {
        return vec![];
    };
    match master
        .exec(
            &format!("tail -n {TAIL_LINES} {q}"),
            None,
            ssh::COMMAND_TIMEOUT,
        )
        .await
    {
        Ok(o) if o.success() => crate::process::tail(&o.stdout, TAIL_LINES),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, Write as _};
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use super::*;
    use crate::scheduler::Kind;

    const TAG: &str = "1a2b3c4d";

    /// A fake Slurm controller in a folder: `jobs` (`ID|STATE|NAME` lines, what squeue -o
    /// '%i|%T|%j' prints), `fail` (how many more calls fail as if the controller were down),
    /// and `log` (every call).
    struct FakeSlurm {
        dir: tempfile::TempDir,
    }

    impl FakeSlurm {
        fn new(jobs: &str, failures: u32) -> FakeSlurm {
            let dir = tempfile::tempdir().unwrap();
            let down = r#"n=$(cat "$FAKE_DIR/fail"); if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$FAKE_DIR/fail"; echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1; fi"#;
            let squeue =
                format!("echo \"squeue $*\" >> \"$FAKE_DIR/log\"\n{down}\ncat \"$FAKE_DIR/jobs\"");
            let scancel = format!(
                "echo \"scancel $*\" >> \"$FAKE_DIR/log\"\n{down}\n\
                 grep -q \"^$1|\" \"$FAKE_DIR/jobs\" || {{ echo \"scancel: error: Kill job error on job id $1: Invalid job id specified\" >&2; exit 1; }}\n\
                 sed -i \"s/^$1|[^|]*|/$1|CANCELLED|/\" \"$FAKE_DIR/jobs\""
            );
            std::fs::create_dir(dir.path().join("bin")).unwrap();
            for (name, body) in [("squeue", squeue), ("scancel", scancel)] {
                let p = dir.path().join("bin").join(name);
                std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let fake = FakeSlurm { dir };
            fake.set_jobs(jobs);
            std::fs::write(fake.path("fail"), failures.to_string()).unwrap();
            std::fs::write(fake.path("log"), "").unwrap();
            fake
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn set_jobs(&self, jobs: &str) {
            std::fs::write(self.path("jobs"), jobs).unwrap();
        }

        fn jobs(&self) -> String {
            std::fs::read_to_string(self.path("jobs")).unwrap()
        }

        /// The guard's command line, run with this controller's programs first on PATH.
        fn argv(&self, shell: &Path, timings: GuardTimings) -> Vec<String> {
            let line = guard_command(Kind::Slurm.scheduler().as_ref(), TAG, timings).unwrap();
            let wire = crate::ssh::RemoteCommand::new(line).wire().to_owned();
            vec![
                "env".into(),
                format!("PATH={}:/usr/bin:/bin", self.path("bin").display()),
                format!("FAKE_DIR={}", self.dir.path().display()),
                shell.display().to_string(),
                "-c".into(),
                wire,
            ]
        }
    }

    fn timings(deadline: u64, window: u64) -> GuardTimings {
        GuardTimings {
            deadline: Duration::from_secs(deadline),
            sweep_window: Duration::from_secs(window),
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(2),
            ..GuardTimings::default()
        }
    }

    /// Run the guard as a process group, feed it `input`, then end its input (after
    /// `before_eof`), and collect every line it printed until it exits.
    fn run_raw(
        argv: &[String],
        input: &str,
        before_eof: impl FnOnce(u32),
    ) -> (Vec<String>, Option<i32>, Duration) {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first, "ready\n");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        before_eof(child.id());
        let started = Instant::now();
        drop(stdin);
        let lines: Vec<String> = out.lines().map(Result::unwrap).collect();
        let status = child.wait().unwrap();
        (lines, status.code(), started.elapsed())
    }

    fn sh() -> PathBuf {
        PathBuf::from("/bin/sh")
    }

    #[test]
    fn the_guard_retries_while_the_controller_is_down_then_cancels_by_id() {
        let jobs = format!("5|RUNNING|pvserver-{TAG}\n6|RUNNING|other\n7|PENDING|x-ffff0000\n");
        let mut shells = vec![sh()];
        for name in ["tcsh", "fish"] {
            match which::which(name) {
                Ok(p) => shells.push(p),
                Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("{name} is missing (scripts/install-deps installs it)")
                }
                Err(_) => eprintln!("SKIPPED for {name}: not installed"),
            }
        }
        for shell in shells {
            // Each round asks three times (cancel by id, cancel by tag, list): two rounds fail.
            let fake = FakeSlurm::new(&jobs, 6);
            let (lines, code, _) = run_raw(
                &fake.argv(&shell, timings(60, 30)),
                "submitting\njob 5\n",
                |_| {},
            );
            let down =
                "slurm_load_jobs error: Unable to contact slurm controller (connect failure)";
            assert_eq!(
                lines,
                [
                    format!("retry: {down}"),
                    format!("retry: {down}"),
                    "cancelled 5".into(),
                    "none left".into()
                ],
                "{}",
                shell.display()
            );
            assert_eq!(code, Some(0));
            assert_eq!(
                fake.jobs(),
                format!("5|CANCELLED|pvserver-{TAG}\n6|RUNNING|other\n7|PENDING|x-ffff0000\n")
            );
        }
    }

    #[test]
    fn a_submit_that_lands_after_the_end_is_swept_up() {
        let fake = FakeSlurm::new("6|RUNNING|other\n", 0);
        let jobs = fake.path("jobs");
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2000));
            let mut f = std::fs::OpenOptions::new().append(true).open(jobs).unwrap();
            f.write_all(format!("9|PENDING|pvserver-{TAG}\n").as_bytes())
                .unwrap();
        });
        let (lines, code, took) =
            run_raw(&fake.argv(&sh(), timings(60, 5)), "submitting\n", |_| {});
        late.join().unwrap();
        assert_eq!(lines, ["none left", "cancelled 9", "none left"]);
        assert_eq!(code, Some(0));
        // The guard's clock is `date +%s`: whole seconds, so the 5 s window lasts 4 to 5 s.
        assert!(
            took >= Duration::from_secs(4),
            "swept for the whole window: {took:?}"
        );
        assert!(fake.jobs().contains(&format!("9|CANCELLED|pvserver-{TAG}")));
    }

    #[test]
    fn with_the_id_known_the_guard_does_not_wait_for_late_submits() {
        let fake = FakeSlurm::new(&format!("5|PENDING|pvserver-{TAG}\n"), 0);
        let (lines, code, took) = run_raw(&fake.argv(&sh(), timings(60, 30)), "job 5\n", |_| {});
        assert_eq!(lines, ["cancelled 5", "none left"]);
        assert_eq!(code, Some(0));
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn the_guard_gives_up_at_its_deadline() {
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 1000);
        let (lines, code, took) = run_raw(&fake.argv(&sh(), timings(3, 1)), "job 5\n", |_| {});
        assert_eq!(code, Some(1));
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("gave up: slurm_load_jobs error"),
            "{lines:?}"
        );
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("retry: "))
        );
        assert!(took < Duration::from_secs(8), "{took:?}");
        assert!(fake.jobs().contains("5|RUNNING|"));
    }

    #[test]
    fn the_guard_ignores_hangup_and_still_cancels() {
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 0);
        let (lines, code, _) = run_raw(&fake.argv(&sh(), timings(60, 30)), "job 5\n", |pid| {
            // What a closing ssh session may send to its process group.
            let _ = std::process::Command::new("kill")
                .args(["-s", "HUP", "--", &format!("-{pid}")])
                .status();
            std::thread::sleep(Duration::from_millis(200));
        });
        assert_eq!(lines, ["cancelled 5", "none left"]);
        assert_eq!(code, Some(0));
    }

    #[test]
    fn keep_leaves_the_job() {
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 0);
        let (lines, code, _) = run_raw(&fake.argv(&sh(), timings(60, 30)), "job 5\nkeep\n", |_| {});
        assert_eq!((lines, code), (vec!["kept".to_string()], Some(0)));
        assert!(fake.jobs().contains("5|RUNNING|"));
        assert_eq!(std::fs::read_to_string(fake.path("log")).unwrap(), "");
    }

    #[tokio::test]
    async fn guard_reports_what_the_login_node_said() {
        // Cancelled and confirmed.
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 1);
        let mut g = Guard::spawn(&fake.argv(&sh(), timings(60, 30)), HEARTBEAT_INTERVAL)
            .await
            .unwrap();
        g.submitting().await.unwrap();
        g.job_known(&Kind::Slurm.scheduler().job_id("5").unwrap())
            .await
            .unwrap();
        assert_eq!(
            g.cancel(Duration::from_secs(20)).await,
            GuardReport::NoneLeft {
                cancelled: vec!["5".into()]
            }
        );

        // The controller stays down past the wait: the guard goes on by itself.
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 1000);
        let mut g = Guard::spawn(&fake.argv(&sh(), timings(4, 1)), HEARTBEAT_INTERVAL)
            .await
            .unwrap();
        g.job_known(&Kind::Slurm.scheduler().job_id("5").unwrap())
            .await
            .unwrap();
        match g.cancel(Duration::from_millis(1500)).await {
            GuardReport::StillRetrying { reason } => {
                assert!(reason.contains("Unable to contact"), "{reason}")
            }
            other => panic!("{other:?}"),
        }

        // Kept.
        let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 0);
        let g = Guard::spawn(&fake.argv(&sh(), timings(60, 30)), HEARTBEAT_INTERVAL)
            .await
            .unwrap();
        g.keep().await.unwrap();
        assert!(fake.jobs().contains("5|RUNNING|"));

        // A guard that never starts.
        let err = Guard::spawn(
            &["sh".into(), "-c".into(), "echo nope >&2; exit 255".into()],
            HEARTBEAT_INTERVAL,
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// The guard is POSIX sh: the same under dash and bash as the login node's `sh`, both
    /// for an input that ends and for one that stays open and silent.
    #[test]
    fn the_guard_behaves_the_same_under_dash_and_bash() {
        for name in ["dash", "bash"] {
            let Ok(real) = which::which(name) else {
                eprintln!("SKIPPED for {name}: not installed");
                continue;
            };
            let fake = FakeSlurm::new(&format!("5|RUNNING|pvserver-{TAG}\n"), 0);
            std::os::unix::fs::symlink(&real, fake.path("bin").join("sh")).unwrap();
            let gone = fake.path("gone");
            std::fs::create_dir(&gone).unwrap();
            let t = GuardTimings {
                heartbeat_limit: Duration::from_secs(2),
                poll: Duration::from_secs(1),
                ..timings(60, 1)
            };
            let input = format!("beat\njob 5\nremove {}\nbeat\n", gone.display());
            let (lines, code, _) = run_raw(&fake.argv(&sh(), t), &input, |_| {});
            assert_eq!(
                (lines, code),
                (vec!["cancelled 5".to_string(), "none left".into()], Some(0)),
                "{name}"
            );
            assert!(!gone.exists(), "{name}");

            // Open and silent: the link is lost; the parent (this test) is no sshd.
            fake.set_jobs(&format!("6|RUNNING|pvserver-{TAG}\n"));
            let mut child = Command::new("env")
                .args(&fake.argv(&sh(), t)[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"job 6\n").unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            let lines: Vec<String> = out
                .lines()
                .map(Result::unwrap)
                .take_while(|l| l != "none left")
                .collect();
            assert_eq!(lines[..2], ["ready", "link lost"], "{name}");
            assert!(
                lines[2].starts_with("left the ssh connection alone: "),
                "{name}: {lines:?}"
            );
            assert_eq!(lines[3..], ["cancelled 6"], "{name}");
            drop(stdin);
            assert_eq!(child.wait().unwrap().code(), Some(0), "{name}");
        }
    }

    /// Start a guard with a grace, tell it `input`, end its input without `cancel`; returns
    /// the child and its stdout lines as they come.
    fn lost_guard(
        fake: &FakeSlurm,
        grace: u64,
        input: &str,
    ) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
        let t = GuardTimings {
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(grace),
            ..timings(60, 1)
        };
        let argv = fake.argv(&sh(), t);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "ready");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        (child, rx)
    }

    fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(15))
            .expect("the guard said nothing more")
    }

    #[test]
    fn after_a_lost_link_a_refreshed_lease_hands_the_job_over() {
        let fake = FakeSlurm::new(&format!("5|PENDING|pvserver-{TAG}\n"), 0);
        let run = fake.path("run");
        std::fs::create_dir(&run).unwrap();
        let lease = run.join("lease");
        let input = format!(
            "job 5\nlease {}\nremove {}\n",
            lease.display(),
            run.display()
        );
        let (mut child, rx) = lost_guard(&fake, 30, &input);
        assert_eq!(next_line(&rx), "waiting 30s for the session to come back");
        assert!(lease.exists(), "the guard makes the lease");
        std::thread::sleep(Duration::from_millis(1100));
        // The session came back: its new guard touches the lease.
        std::fs::File::options()
            .append(true)
            .open(&lease)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(next_line(&rx), "handed over");
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(fake.jobs().contains("5|PENDING|"), "{}", fake.jobs());
        assert!(run.exists(), "the paths are the new guard's to remove");
    }

    #[test]
    fn after_a_lost_link_with_no_one_back_the_grace_ends_in_a_cancel() {
        let fake = FakeSlurm::new(&format!("5|PENDING|pvserver-{TAG}\n"), 0);
        let run = fake.path("run");
        std::fs::create_dir(&run).unwrap();
        let input = format!(
            "job 5\nlease {}/lease\nremove {}\n",
            run.display(),
            run.display()
        );
        let start = Instant::now();
        let (mut child, rx) = lost_guard(&fake, 2, &input);
        assert_eq!(next_line(&rx), "waiting 2s for the session to come back");
        assert_eq!(next_line(&rx), "no session came back");
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert_eq!(next_line(&rx), "cancelled 5");
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(fake.jobs().contains("5|CANCELLED|"), "{}", fake.jobs());
        assert!(!run.exists());
    }

    #[test]
    fn a_told_cancel_does_not_wait_for_the_grace() {
        let fake = FakeSlurm::new(&format!("5|PENDING|pvserver-{TAG}\n"), 0);
        let lease = fake.path("lease");
        let input = format!("job 5\nlease {}\ncancel\n", lease.display());
        let start = Instant::now();
        let (mut child, rx) = lost_guard(&fake, 60, &input);
        assert_eq!(next_line(&rx), "cancelled 5");
        assert_eq!(child.wait().unwrap().code(), Some(0));
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(fake.jobs().contains("5|CANCELLED|"));
    }

    #[test]
    fn guard_command_checks_the_tag() {
        let s = Kind::Slurm.scheduler();
        assert!(matches!(
            guard_command(s.as_ref(), "a'b", GuardTimings::default()),
            Err(GuardError::InvalidTag(_))
        ));
        let line = guard_command(s.as_ref(), TAG, GuardTimings::default()).unwrap();
        assert!(line.contains(" pvlaunch-guard 600 90 2 30 "), "{line}");
        assert!(line.ends_with(" 20 2 0"), "{line}");
    }
}
