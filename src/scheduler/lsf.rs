//! IBM Spectrum LSF: `bsub`, `bjobs -o`, `bkill`.
//!
//! - Submit: the script on `bsub`'s stdin (only then does bsub read the `#BSUB` lines); it
//!   prints `Job <123> is submitted to queue <normal>.` (or `... to default queue <normal>.`).
//! - State: `bjobs -o "jobid stat exec_host exit_code pend_reason delimiter='|'" -noheader ID`
//!   (custom output exists since LSF 9.1.1; `-json` would need 10.1.0.2): one line
//!   `123|RUN|4*n1:4*n2|-|-`; `-` is LSF's empty field. The pending reason comes last, so a
//!   reason that happens to contain the delimiter stays whole. `exec_host` is one entry per
//!   slot, `N*host` or repeated (`n1:n1:n2`).
//! - States: `PEND`/`PSUSP`/`WAIT` queued, `RUN` running, `DONE` (exit 0) and `EXIT` (exit
//!   code) finished, `USUSP`/`SSUSP`/`UNKWN`/`ZOMBI` unknown. Finished jobs stay in bjobs for
//!   `CLEAN_PERIOD` (an hour by default), so the same query serves for the finished state.
//!   An unknown job is `Job <123> is not found` on stderr: gone.
//! - Cancel: `bkill ID`; `Job has already finished` means gone.
//! - The session's tag: the job is named `NAME-TAG` (`-J`; LSF allows 4094 characters). The
//!   tagged jobs are this user's unfinished jobs (`bjobs` without `-a`) whose name ends in
//!   `-TAG`, selected in the script rather than with a `-J` wildcard, whose placement rules
//!   differ between LSF versions. `No unfinished job found` means none. Jobs are submitted
//!   with `-rn` (not rerunnable).
//!
//! Directive values must be plain words.

use super::{
    Cancel, CommandOutput, JobId, JobSpec, JobState, Kind, ParseError, SCRIPT_SHELL, Scheduler,
    ScriptError, argv, check_spec, hostlist, lines, non_empty, plain_value, script_body,
};

/// The LSF adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lsf;

/// `bjobs -o` fields, `|`-delimited, the pending reason last.
const BJOBS_FORMAT: &str = "jobid stat exec_host exit_code pend_reason delimiter='|'";

/// LSF's limit on job names.
const MAX_JOB_NAME: usize = 4094;

/// Lists this user's unfinished jobs named `*-$1` as `ID STATE`.
const TAGGED: &str = r#"out=$(bjobs -noheader -o "jobid stat job_name delimiter='|'" 2>&1); rc=$?
case $out in *"No unfinished job found"*|*"No matching job found"*) exit 0 ;; esac
[ "$rc" -eq 0 ] || { printf '%s\n' "$out" >&2; exit "$rc"; }
printf '%s\n' "$out" | while IFS='|' read -r id state name; do
  case $id in ''|*[!0-9]*) continue ;; esac
  case $name in *-"$1") ;; *) continue ;; esac
  case $state in ''|DONE|EXIT) continue ;; esac
  printf '%s %s\n' "$id" "$state"
done"#;

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The number in `Job <123> is submitted ...`.
fn submitted_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("Job <")?;
    let (id, tail) = rest.split_once('>')?;
    tail.trim_start().starts_with("is submitted").then_some(id)
}

/// Whether stderr says LSF does not (or no longer) know the job.
fn job_gone(stderr: &str) -> bool {
    stderr.contains("is not found") || stderr.contains("No matching job found")
}

fn classify(
    stat: &str,
    exec_host: &str,
    exit: &str,
    reason: &str,
    line: &str,
) -> Result<JobState, ParseError> {
    let nodes =
        || -> Result<Vec<String>, ParseError> { Ok(hostlist::expand_lsf_exec_host(exec_host)?) };
    let reason = non_empty(reason).map(|r| r.trim_end_matches(';').trim().to_owned());
    Ok(match stat {
        "PEND" | "WAIT" => JobState::Queued {
            reason,
            estimated_start: None,
        },
        "PSUSP" => JobState::Queued {
            reason: Some(reason.unwrap_or_else(|| "suspended while pending (PSUSP)".to_owned())),
            estimated_start: None,
        },
        "RUN" => JobState::Running { nodes: nodes()? },
        "DONE" | "EXIT" => {
            let exit_code = match non_empty(exit) {
                Some(code) => Some(
                    code.parse::<i32>()
                        .map_err(|_| ParseError::unexpected("a number in exit_code", line))?,
                ),
                None if stat == "DONE" => Some(0),
                None => None,
            };
            JobState::Finished {
                state: stat.to_owned(),
                exit_code,
                signal: None,
                nodes: nodes()?,
            }
        }
        "" => return Err(ParseError::unexpected("a job state from bjobs", line)),
        other => JobState::Unknown {
            state: other.to_owned(),
        },
    })
}

impl Scheduler for Lsf {
    fn kind(&self) -> Kind {
        Kind::Lsf
    }

    fn render_script(&self, spec: &JobSpec) -> Result<String, ScriptError> {
        check_spec(spec)?;
        let kind = Kind::Lsf;
        let mut s = format!("#!{SCRIPT_SHELL}\n");
        let mut dir = |text: &str| {
            s.push_str("#BSUB ");
            s.push_str(text);
            s.push('\n');
        };
        plain_value(kind, "job name", &spec.name)?;
        dir(&format!(
            "-J {}",
            super::queue_name(spec, kind, MAX_JOB_NAME)?
        ));
        dir("-rn");
        let total = u64::from(spec.nodes) * u64::from(spec.ranks_per_node);
        dir(&format!("-n {total}"));
        dir(&format!("-R \"span[ptile={}]\"", spec.ranks_per_node));
        if let Some(w) = spec.walltime {
            dir(&format!("-W {}", w.hm_ceil()));
        }
        if let Some(q) = &spec.queue {
            dir(&format!("-q {}", plain_value(kind, "queue", q)?));
        }
        if let Some(a) = &spec.account {
            dir(&format!("-P {}", plain_value(kind, "project", a)?));
        }
        if let Some(o) = &spec.output_path {
            dir(&format!("-o {}", plain_value(kind, "output path", o)?));
        }
        for extra in &spec.extra_directives {
            dir(extra);
        }
        script_body(&mut s, spec, &[])?;
        Ok(s)
    }

    fn submit_command(&self) -> Vec<String> {
        argv(&["bsub"])
    }

    fn parse_submit(&self, out: &CommandOutput) -> Result<JobId, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        let id = lines(&out.stdout).find_map(submitted_id).ok_or_else(|| {
            ParseError::unexpected("`Job <ID> is submitted ...` from bsub", &out.stdout)
        })?;
        JobId::checked(id, valid_id(id))
    }

    fn job_id(&self, id: &str) -> Result<JobId, ParseError> {
        let id = id.trim();
        JobId::checked(id, valid_id(id))
    }

    fn state_command(&self, id: &JobId) -> Vec<String> {
        argv(&["bjobs", "-o", BJOBS_FORMAT, "-noheader", id.as_str()])
    }

    fn parse_state(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        if job_gone(&out.stderr) && out.stdout.trim().is_empty() {
            return Ok(None);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        let mut all = lines(&out.stdout);
        let Some(line) = all.next() else {
            return Ok(None);
        };
        let fields: Vec<&str> = line.splitn(5, '|').collect();
        let [jobid, stat, exec_host, exit, reason] = fields.as_slice() else {
            return Err(ParseError::unexpected(
                "JOBID|STAT|EXEC_HOST|EXIT_CODE|PEND_REASON from bjobs",
                line,
            ));
        };
        if !valid_id(jobid.trim()) {
            return Err(ParseError::unexpected(
                "a job id first in bjobs output",
                line,
            ));
        }
        // A long pending reason may run on over further lines.
        let mut reason = reason.trim().to_owned();
        for more in all {
            reason.push(' ');
            reason.push_str(more);
        }
        classify(stat.trim(), exec_host, exit, &reason, line).map(Some)
    }

    fn finished_command(&self, id: &JobId) -> Vec<String> {
        self.state_command(id)
    }

    fn parse_finished(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        self.parse_state(out)
    }

    fn cancel_command(&self, id: &JobId) -> Vec<String> {
        argv(&["bkill", id.as_str()])
    }

    fn tagged_jobs_command(&self, tag: &str) -> Vec<String> {
        argv(&["sh", "-c", TAGGED, "pvlaunch-tagged", tag])
    }

    fn cancel_id_prefix(&self) -> Vec<String> {
        argv(&["bkill"])
    }

    fn parse_cancel(&self, out: &CommandOutput) -> Result<Cancel, ParseError> {
        let all = format!("{}\n{}", out.stdout, out.stderr);
        if all.contains("Job has already finished") || job_gone(&all) {
            return Ok(Cancel::AlreadyGone);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        if out.stdout.contains("is being terminated") || out.stdout.contains("is being signaled") {
            Ok(Cancel::Requested)
        } else {
            Err(ParseError::unexpected(
                "`Job <ID> is being terminated` from bkill",
                &all,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Walltime;
    use crate::scheduler::test_support::{fixture, fixture_table};

    #[test]
    fn script() {
        let spec = JobSpec {
            nodes: 2,
            ranks_per_node: 4,
            walltime: Some(Walltime::from_secs(5430)),
            queue: Some("normal".into()),
            account: Some("proj42".into()),
            output_path: Some("pvlaunch-%J.out".into()),
            extra_directives: vec!["-R \"rusage[mem=4000]\"".into()],
            setup_lines: vec!["module load paraview".into()],
            command: ["mpirun", "pvserver", "--connect-id=817", "it's"]
                .map(String::from)
                .to_vec(),
            tag: Some("1a2b3c4d".into()),
            ..JobSpec::new("pvserver")
        };
        insta::assert_snapshot!(Lsf.render_script(&spec).unwrap());
    }

    #[test]
    fn commands() {
        let id = Lsf.job_id("31337").unwrap();
        assert_eq!(Lsf.submit_command(), ["bsub"]);
        assert_eq!(
            Lsf.state_command(&id),
            [
                "bjobs",
                "-o",
                "jobid stat exec_host exit_code pend_reason delimiter='|'",
                "-noheader",
                "31337"
            ]
        );
        assert_eq!(Lsf.cancel_command(&id), ["bkill", "31337"]);
        for bad in ["", "31337[1]", "1.2", "-1", "x"] {
            assert!(Lsf.job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn submit_outputs() {
        assert_eq!(
            Lsf.parse_submit(&fixture("lsf", "submit"))
                .unwrap()
                .as_str(),
            "31337"
        );
        assert_eq!(
            Lsf.parse_submit(&fixture("lsf", "submit_default_queue"))
                .unwrap()
                .as_str(),
            "31338"
        );
        assert!(matches!(
            Lsf.parse_submit(&fixture("lsf", "submit_rejected")),
            Err(ParseError::CommandFailed { .. })
        ));
        assert!(
            Lsf.parse_submit(&CommandOutput::success(
                "Job <abc> is submitted to queue <q>."
            ))
            .is_err()
        );
        assert!(
            Lsf.parse_submit(&CommandOutput::success("garbage"))
                .is_err()
        );
    }

    #[test]
    fn states() {
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "state_pending")).unwrap(),
            Some(JobState::Queued {
                reason: Some("New job is waiting for scheduling".into()),
                estimated_start: None
            })
        );
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "state_running")).unwrap(),
            Some(JobState::Running {
                nodes: vec!["cn101".into(), "cn102".into()]
            })
        );
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "state_running_repeated"))
                .unwrap(),
            Some(JobState::Running {
                nodes: vec!["cn101".into(), "cn102".into()]
            })
        );
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "finished_exit")).unwrap(),
            Some(JobState::Finished {
                state: "EXIT".into(),
                exit_code: Some(127),
                signal: None,
                nodes: vec!["cn101".into()]
            })
        );
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "finished_done")).unwrap(),
            Some(JobState::Finished {
                state: "DONE".into(),
                exit_code: Some(0),
                signal: None,
                nodes: vec!["cn101".into(), "cn102".into()]
            })
        );
        assert_eq!(
            Lsf.parse_state(&fixture("lsf", "state_not_found")).unwrap(),
            None
        );
        assert_eq!(Lsf.parse_state(&CommandOutput::success("")).unwrap(), None);
        for garbage in [
            "garbage",
            "31337|RUN|cn1",
            "x|RUN|cn1|-|-",
            "31337|EXIT|cn1|x|-",
            "31337||cn1|-|-",
        ] {
            assert!(
                Lsf.parse_state(&CommandOutput::success(garbage)).is_err(),
                "{garbage}"
            );
        }
        assert!(matches!(
            Lsf.parse_state(&fixture("lsf", "state_lim_down")),
            Err(ParseError::CommandFailed { .. })
        ));
    }

    #[test]
    fn cancel_outputs() {
        assert_eq!(
            Lsf.parse_cancel(&fixture("lsf", "cancel")).unwrap(),
            Cancel::Requested
        );
        assert_eq!(
            Lsf.parse_cancel(&fixture("lsf", "cancel_finished"))
                .unwrap(),
            Cancel::AlreadyGone
        );
        assert!(
            Lsf.parse_cancel(&CommandOutput::failure(255, "Job <1>: Permission denied"))
                .is_err()
        );
    }

    #[test]
    fn every_fixture() {
        insta::assert_snapshot!(fixture_table("lsf", &Lsf));
    }

    fn tagged(fixture_name: &str) -> (CommandOutput, String) {
        use crate::scheduler::test_support::{fake_printing, run_with_fakes};
        run_with_fakes(
            &Lsf.tagged_jobs_command("1a2b3c4d"),
            &[("bjobs", &fake_printing("bjobs", "lsf", fixture_name))],
        )
    }

    #[test]
    fn tagged_jobs_are_unfinished_jobs_named_with_the_tag() {
        let (out, log) = tagged("listing_bjobs");
        let jobs: Vec<String> = Lsf
            .parse_tagged_jobs(&out)
            .unwrap()
            .into_iter()
            .map(|j| format!("{} {}", j.id, j.state))
            .collect();
        assert_eq!(jobs, ["201 RUN", "203 PSUSP"]);
        assert_eq!(
            log,
            "bjobs -noheader -o jobid stat job_name delimiter='|'\n"
        );
        let (out, _) = tagged("listing_none");
        assert_eq!(Lsf.parse_tagged_jobs(&out), Ok(vec![]));
        let (out, _) = tagged("listing_down");
        assert_eq!(out.status, Some(255));
        assert!(out.stderr.contains("LSF is down"));
    }

    #[test]
    fn jobs_carry_the_tag_and_are_not_rerun() {
        let spec = JobSpec {
            tag: Some("1a2b3c4d".into()),
            command: vec!["pvserver".into()],
            ..JobSpec::new("pvserver")
        };
        let script = Lsf.render_script(&spec).unwrap();
        assert!(script.contains("#BSUB -J pvserver-1a2b3c4d\n#BSUB -rn\n"));
        assert_eq!(Lsf.cancel_id_prefix(), ["bkill"]);
    }
}
