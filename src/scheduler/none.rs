//! No scheduler: the job runs on the login node itself, detached from the ssh session.
//!
//! Each command is `sh -c <fixed script> <name> <args>`: the scripts below are constants and
//! every variable part is a positional argument, so nothing from a profile is ever parsed as
//! shell code by them.
//!
//! - Submit: the job script on stdin is saved as `$TMPDIR/pvlaunch-job.XXXXXXXX/job.sh`
//!   (`mktemp -d`, mode 0700) and started with `setsid` (its own session and process group,
//!   all standard streams redirected, so ssh returns at once and the job outlives it). The
//!   wrapper records the exit status in `exit` next to it; its pid goes to `pid`. The job id
//!   is the random `XXXXXXXX` suffix.
//! - State and finished state: one line, `STARTING`, `RUNNING <host>`, `EXITED <status>`
//!   or `KILLED` (no exit status: the group was signalled); nothing when the folder is gone.
//! - Cancel: SIGTERM to the job's process group.
//!
//! - The session's tag: the job script carries it on its second line (`# pvlaunch-tag: TAG`),
//!   and submit copies it to `tag` in the job's folder; the tagged jobs are the folders with
//!   that tag whose job has not ended (`STARTING` without a pid yet, or `RUNNING`).
//!
//! The job's output goes to `output` in that folder unless the spec names a file. Resources,
//! queue, account and directives mean nothing here and are refused; a wall time is enforced
//! with `timeout`.

use std::borrow::Cow;

use super::{
    Cancel, CommandOutput, JobId, JobSpec, JobState, Kind, ParseError, SCRIPT_SHELL, Scheduler,
    ScriptError, argv, check_spec, lines, one_line, script_body,
};

/// The adapter for running on the login node without a scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Direct;

/// Saves stdin as the job and starts it detached; prints the id.
const SUBMIT: &str = r#"umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/pvlaunch-job.XXXXXXXX") || exit 1
cat > "$d/job.sh" || exit 1
chmod 700 "$d/job.sh" || exit 1
sed -n '2s/^# pvlaunch-tag: \([A-Za-z0-9]*\)$/\1/p' "$d/job.sh" > "$d/tag"
setsid sh -c '"$1/job.sh" > "$1/output" 2>&1 < /dev/null; echo "$?" > "$1/exit.tmp" && mv "$1/exit.tmp" "$1/exit"' pvlaunch-job "$d" > /dev/null 2>&1 < /dev/null &
echo "$!" > "$d/pid"
echo "${d##*/pvlaunch-job.}""#;

/// Prints the job's state (nothing when it is unknown).
const STATE: &str = r#"d="${TMPDIR:-/tmp}/pvlaunch-job.$1"
[ -d "$d" ] || exit 0
if [ -f "$d/exit" ]; then echo "EXITED $(cat "$d/exit")"
elif [ ! -s "$d/pid" ]; then echo STARTING
elif kill -0 "$(cat "$d/pid")" 2>/dev/null; then echo "RUNNING $(uname -n)"
else echo KILLED
fi"#;

/// Lists this user's unfinished jobs tagged `$1` as `ID STATE`.
const TAGGED: &str = r#"for d in "${TMPDIR:-/tmp}"/pvlaunch-job.*; do
  [ -d "$d" ] && [ -r "$d/tag" ] || continue
  [ "$(cat "$d/tag")" = "$1" ] || continue
  [ -f "$d/exit" ] && continue
  id=${d##*/pvlaunch-job.}
  if [ ! -s "$d/pid" ]; then echo "$id STARTING"
  elif kill -0 "$(cat "$d/pid")" 2>/dev/null; then echo "$id RUNNING"
  fi
done
exit 0"#;

/// Signals the job's process group.
const CANCEL: &str = r#"d="${TMPDIR:-/tmp}/pvlaunch-job.$1"
if [ ! -s "$d/pid" ] || [ -f "$d/exit" ]; then echo "pvlaunch: job $1 is not running" >&2; exit 3; fi
kill -s TERM -- "-$(cat "$d/pid")" 2>/dev/null && exit 0
echo "pvlaunch: job $1 is not running" >&2; exit 3"#;

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn unsupported(setting: &'static str, hint: &'static str) -> ScriptError {
    ScriptError::Unsupported {
        kind: Kind::None,
        setting,
        hint,
    }
}

impl Scheduler for Direct {
    fn kind(&self) -> Kind {
        Kind::None
    }

    fn render_script(&self, spec: &JobSpec) -> Result<String, ScriptError> {
        check_spec(spec)?;
        if spec.nodes != 1 {
            return Err(unsupported(
                "more than one node",
                "without a scheduler the job runs on the login node only",
            ));
        }
        if spec.queue.is_some() {
            return Err(unsupported(
                "a queue or partition",
                "remove it, or choose the site's scheduler",
            ));
        }
        if spec.account.is_some() {
            return Err(unsupported(
                "an account",
                "remove it, or choose the site's scheduler",
            ));
        }
        if !spec.extra_directives.is_empty() {
            return Err(unsupported(
                "scheduler directives",
                "remove them, or choose the site's scheduler",
            ));
        }
        let mut s = format!("#!{SCRIPT_SHELL}\n");
        if let Some(tag) = super::checked_tag(spec, Kind::None)? {
            s.push_str("# pvlaunch-tag: ");
            s.push_str(tag);
            s.push('\n');
        }
        if let Some(o) = &spec.output_path {
            one_line("output path", o)?;
            s.push_str("exec > ");
            s.push_str(&crate::quote::quote(o)?);
            s.push_str(" 2>&1\n");
        }
        let prefix: Vec<Cow<'_, str>> = match spec.walltime {
            Some(w) => vec!["timeout".into(), w.as_secs().to_string().into()],
            None => Vec::new(),
        };
        script_body(&mut s, spec, &prefix)?;
        Ok(s)
    }

    fn submit_command(&self) -> Vec<String> {
        argv(&["sh", "-c", SUBMIT, "pvlaunch-submit"])
    }

    fn parse_submit(&self, out: &CommandOutput) -> Result<JobId, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        let line = lines(&out.stdout)
            .last()
            .ok_or_else(|| ParseError::unexpected("a job id from the launcher", &out.stdout))?;
        JobId::checked(line, valid_id(line))
    }

    fn job_id(&self, id: &str) -> Result<JobId, ParseError> {
        let id = id.trim();
        JobId::checked(id, valid_id(id))
    }

    fn state_command(&self, id: &JobId) -> Vec<String> {
        argv(&["sh", "-c", STATE, "pvlaunch-state", id.as_str()])
    }

    fn parse_state(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        let Some(line) = lines(&out.stdout).next() else {
            return Ok(None);
        };
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        Ok(Some(match word {
            "STARTING" => JobState::Queued {
                reason: Some("starting".to_owned()),
                estimated_start: None,
            },
            "RUNNING" if !rest.is_empty() => JobState::Running {
                nodes: vec![rest.to_owned()],
            },
            "EXITED" => {
                let code: i32 = rest
                    .parse()
                    .map_err(|_| ParseError::unexpected("`EXITED <status>`", line))?;
                JobState::Finished {
                    state: "EXITED".to_owned(),
                    exit_code: Some(code),
                    signal: None,
                    nodes: Vec::new(),
                }
            }
            "KILLED" => JobState::Finished {
                state: "KILLED".to_owned(),
                exit_code: None,
                signal: None,
                nodes: Vec::new(),
            },
            _ => {
                return Err(ParseError::unexpected(
                    "STARTING, RUNNING, EXITED or KILLED",
                    line,
                ));
            }
        }))
    }

    fn finished_command(&self, id: &JobId) -> Vec<String> {
        self.state_command(id)
    }

    fn parse_finished(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        self.parse_state(out)
    }

    fn cancel_command(&self, id: &JobId) -> Vec<String> {
        argv(&["sh", "-c", CANCEL, "pvlaunch-cancel", id.as_str()])
    }

    fn tagged_jobs_command(&self, tag: &str) -> Vec<String> {
        argv(&["sh", "-c", TAGGED, "pvlaunch-tagged", tag])
    }

    fn cancel_id_prefix(&self) -> Vec<String> {
        argv(&["sh", "-c", CANCEL, "pvlaunch-cancel"])
    }

    fn parse_cancel(&self, out: &CommandOutput) -> Result<Cancel, ParseError> {
        match out.status {
            Some(0) => Ok(Cancel::Requested),
            Some(3) if out.stderr.contains("is not running") => Ok(Cancel::AlreadyGone),
            _ => Err(out.failed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::scheduler::Walltime;

    /// Run an argv locally, as ssh would run it on the login node (with TMPDIR set).
    fn run(tmp: &std::path::Path, cmd: &[String], stdin: &str) -> CommandOutput {
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("TMPDIR", tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap().into()
    }

    fn wait_for(tmp: &std::path::Path, id: &JobId, done: impl Fn(&JobState) -> bool) -> JobState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = Direct
                .parse_state(&run(tmp, &Direct.state_command(id), ""))
                .unwrap()
                .expect("job known");
            if done(&state) || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn script() {
        let spec = JobSpec {
            walltime: Some(Walltime::from_secs(3600)),
            output_path: Some("pv out.log".into()),
            setup_lines: vec!["export PATH=/opt/pv/bin:$PATH".into()],
            command: ["pvserver", "--server-port=0", "$(id)"]
                .map(String::from)
                .to_vec(),
            ..JobSpec::new("pvserver")
        };
        insta::assert_snapshot!(Direct.render_script(&spec).unwrap());
    }

    #[test]
    fn refuses_scheduler_settings() {
        let base = JobSpec {
            command: vec!["x".into()],
            ..JobSpec::new("pv")
        };
        for spec in [
            JobSpec {
                nodes: 2,
                ..base.clone()
            },
            JobSpec {
                queue: Some("q".into()),
                ..base.clone()
            },
            JobSpec {
                account: Some("a".into()),
                ..base.clone()
            },
            JobSpec {
                extra_directives: vec!["-x".into()],
                ..base.clone()
            },
        ] {
            assert!(matches!(
                Direct.render_script(&spec),
                Err(ScriptError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn parses_states() {
        let p = |s: &str| Direct.parse_state(&CommandOutput::success(s));
        assert_eq!(p("").unwrap(), None);
        assert_eq!(
            p("RUNNING login1\n").unwrap(),
            Some(JobState::Running {
                nodes: vec!["login1".into()]
            })
        );
        assert!(matches!(
            p("EXITED 3").unwrap(),
            Some(JobState::Finished {
                exit_code: Some(3),
                ..
            })
        ));
        assert!(matches!(
            p("KILLED").unwrap(),
            Some(JobState::Finished {
                exit_code: None,
                ..
            })
        ));
        assert!(matches!(
            p("STARTING").unwrap(),
            Some(JobState::Queued { .. })
        ));
        for bad in ["RUNNING", "EXITED x", "garbage"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(Direct.job_id("AbC123xy").is_ok());
        for bad in ["", "../x", "a b", "a;b", "$(id)"] {
            assert!(Direct.job_id(bad).is_err(), "{bad}");
        }
    }

    /// The real thing, with the local shell standing in for the login node's.
    #[test]
    fn lifecycle_on_this_machine() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp = tmp.path();

        // A job that finishes with a status.
        let spec = JobSpec {
            setup_lines: vec!["echo set-up ran".into()],
            command: ["sh", "-c", "echo \"$1\"; exit 7", "sh", "it's $(literal)"]
                .map(String::from)
                .to_vec(),
            ..JobSpec::new("t")
        };
        let out = run(
            tmp,
            &Direct.submit_command(),
            &Direct.render_script(&spec).unwrap(),
        );
        let id = Direct.parse_submit(&out).unwrap();
        let state = wait_for(tmp, &id, JobState::is_finished);
        assert_eq!(
            state,
            JobState::Finished {
                state: "EXITED".into(),
                exit_code: Some(7),
                signal: None,
                nodes: vec![]
            }
        );
        let output =
            std::fs::read_to_string(tmp.join(format!("pvlaunch-job.{id}/output"))).unwrap();
        assert_eq!(output, "set-up ran\nit's $(literal)\n");
        assert_eq!(
            Direct
                .parse_cancel(&run(tmp, &Direct.cancel_command(&id), ""))
                .unwrap(),
            Cancel::AlreadyGone
        );

        // A job that runs until cancelled, with its children.
        let spec = JobSpec {
            command: ["sh", "-c", "sleep 30 & sleep 30; wait"]
                .map(String::from)
                .to_vec(),
            ..JobSpec::new("t")
        };
        let out = run(
            tmp,
            &Direct.submit_command(),
            &Direct.render_script(&spec).unwrap(),
        );
        let id = Direct.parse_submit(&out).unwrap();
        let state = wait_for(tmp, &id, |s| matches!(s, JobState::Running { .. }));
        assert!(
            matches!(state, JobState::Running { ref nodes } if nodes.len() == 1),
            "{state:?}"
        );
        assert_eq!(
            Direct
                .parse_cancel(&run(tmp, &Direct.cancel_command(&id), ""))
                .unwrap(),
            Cancel::Requested
        );
        let state = wait_for(tmp, &id, JobState::is_finished);
        assert!(state.is_finished(), "{state:?}");
        let pgid = std::fs::read_to_string(tmp.join(format!("pvlaunch-job.{id}/pid"))).unwrap();
        let group_alive = || {
            Command::new("sh")
                .args(["-c", &format!("kill -0 -- -{} 2>/dev/null", pgid.trim())])
                .status()
                .unwrap()
                .success()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!group_alive(), "the job's process group is gone");

        // An id nobody knows.
        let gone = Direct.job_id("nosuchjob").unwrap();
        assert_eq!(
            Direct
                .parse_state(&run(tmp, &Direct.state_command(&gone), ""))
                .unwrap(),
            None
        );
        assert_eq!(
            Direct
                .parse_cancel(&run(tmp, &Direct.cancel_command(&gone), ""))
                .unwrap(),
            Cancel::AlreadyGone
        );
    }

    #[test]
    fn tagged_jobs_are_found_in_their_folders_and_cancelled() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp = tmp.path();
        let tagged = |tag: &str| {
            Direct
                .parse_tagged_jobs(&run(tmp, &Direct.tagged_jobs_command(tag), ""))
                .unwrap()
        };
        assert_eq!(tagged("1a2b3c4d"), vec![]);
        let job = |tag: Option<&str>| JobSpec {
            command: ["sleep", "30"].map(String::from).to_vec(),
            tag: tag.map(String::from),
            ..JobSpec::new("t")
        };
        let script = Direct.render_script(&job(Some("1a2b3c4d"))).unwrap();
        assert!(script.starts_with("#!/bin/bash\n# pvlaunch-tag: 1a2b3c4d\n"));
        let ours = Direct
            .parse_submit(&run(tmp, &Direct.submit_command(), &script))
            .unwrap();
        let other = Direct
            .parse_submit(&run(
                tmp,
                &Direct.submit_command(),
                &Direct.render_script(&job(Some("ffff0000"))).unwrap(),
            ))
            .unwrap();
        let untagged = Direct
            .parse_submit(&run(
                tmp,
                &Direct.submit_command(),
                &Direct.render_script(&job(None)).unwrap(),
            ))
            .unwrap();
        wait_for(tmp, &ours, |s| matches!(s, JobState::Running { .. }));
        let found = tagged("1a2b3c4d");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, ours);
        assert_eq!(found[0].state, "RUNNING");

        let out = run(tmp, &Direct.cancel_tagged_command("1a2b3c4d"), "");
        assert_eq!(
            (out.status, out.stdout.clone()),
            (Some(0), format!("{ours}\n"))
        );
        wait_for(tmp, &ours, JobState::is_finished);
        assert_eq!(tagged("1a2b3c4d"), vec![]);
        for id in [&other, &untagged] {
            assert!(matches!(
                wait_for(tmp, id, |_| true),
                JobState::Running { .. } | JobState::Queued { .. }
            ));
            run(tmp, &Direct.cancel_command(id), "");
        }
    }
}
