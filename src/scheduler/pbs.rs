//! PBS: OpenPBS / PBS Professional and Torque (`qsub`, `qstat -f`, `qdel`).
//!
//! - Submit: the script on `qsub`'s stdin; it prints the job id, `123.server`.
//! - State: `qstat -f ID`, with `-x` on OpenPBS so finished jobs stay visible while the
//!   server keeps job history (Torque keeps them as `C` for `keep_completed` seconds; its
//!   `-x` means XML, so it is not used there). The full format is `Job Id: ID` then
//!   `    name = value` lines; long values continue on lines that start with a tab, and are
//!   joined back as printed (qstat breaks at commas or mid-value). Read: `job_state`,
//!   `exec_host` (`n1/0*4+n2/0*4`), `comment` (why a job waits),
//!   `estimated.start_time`, `Exit_status` (Torque: `exit_status`; over 256 means killed by
//!   signal N - 256).
//! - States: `Q`/`H`/`W`/`T` queued, `R` running, `E` exiting and `F`/`X`/`C` finished,
//!   `S`/`U` suspended and anything else unknown. An unknown job is `Unknown Job Id` (or,
//!   without `-x`, `Job has finished`) on stderr: gone.
//! - Cancel: `qdel ID`.
//! - The session's tag: the job is named `NAME-TAG` (`-N`), shortened to PBS Professional's
//!   236 characters, and to 15 on Torque (POSIX qsub's limit, which older Torque servers
//!   enforce); the name part is cut, never the tag. `qselect -N` needs the whole name, so the
//!   tagged jobs are found with `qselect -u USER` and the names in `qstat -f`. Jobs are
//!   submitted with `-r n` (not rerunnable).
//!
//! Directive values must be plain words: qsub's own splitting of `#PBS` lines is not relied
//! on for anything else.

use super::{
    Cancel, CommandOutput, JobId, JobSpec, JobState, Kind, ParseError, SCRIPT_SHELL, Scheduler,
    ScriptError, argv, check_spec, hostlist, lines, non_empty, plain_value, script_body,
};

/// Which PBS: they differ in resource syntax and in `qstat -x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbsFlavor {
    /// OpenPBS / PBS Professional: `-l select=N:ncpus=R:mpiprocs=R`, `qstat -x`.
    OpenPbs,
    /// Torque: `-l nodes=N:ppn=R`, finished jobs as state `C`.
    Torque,
}

/// The PBS adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pbs {
    flavor: PbsFlavor,
}

impl Pbs {
    /// A PBS adapter of this flavour.
    pub fn new(flavor: PbsFlavor) -> Self {
        Pbs { flavor }
    }

    /// Its flavour.
    pub fn flavor(&self) -> PbsFlavor {
        self.flavor
    }
}

/// Lists this user's unfinished jobs named `*-$1` as `ID STATE` (`qstat -f` attributes,
/// continuation lines joined).
const TAGGED: &str = r#"u=$(id -un) || exit
ids=$(qselect -u "$u") || exit
[ -n "$ids" ] || exit 0
set -f
out=$(qstat -f $ids 2>&1); rc=$?
case $out in *"Job Id:"*) ;; *) [ "$rc" -eq 0 ] && exit 0; printf '%s\n' "$out" >&2; exit "$rc" ;; esac
printf '%s\n' "$out" | awk -v tag="-$1" '
function flush() {
  n = length(name); t = length(tag)
  if (id != "" && n >= t && substr(name, n - t + 1) == tag && state !~ /^(C|E|F|X)$/) print id, state
  id = ""; name = ""; state = ""
}
/^Job Id:/ { flush(); id = $3; last = ""; next }
/^\t/ { if (last == "name") { sub(/^\t/, ""); name = name $0 }; next }
/^ *Job_Name = / { sub(/^ *Job_Name = /, ""); name = $0; last = "name"; next }
/^ *job_state = / { state = $3; last = ""; next }
{ last = "" }
END { flush() }'"#;

/// `digits` or `digits.server.domain`.
fn valid_id(id: &str) -> bool {
    let (number, server) = match id.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (id, None),
    };
    let digits =
        !number.is_empty() && number.len() <= 20 && number.bytes().all(|b| b.is_ascii_digit());
    let server_ok = server.is_none_or(|s| {
        !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !s.starts_with(['-', '.'])
            && !s.ends_with('.')
    });
    digits && server_ok
}

/// The attributes of the first job in `qstat -f` output, continuation lines joined.
fn attributes(stdout: &str) -> Result<Option<Vec<(String, String)>>, ParseError> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut in_job = false;
    for raw in stdout.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            if in_job && !attrs.is_empty() {
                break;
            }
            continue;
        }
        if let Some(_id) = line.strip_prefix("Job Id:") {
            if in_job {
                break;
            }
            in_job = true;
            continue;
        }
        if !in_job {
            return Err(ParseError::unexpected(
                "`Job Id:` first in qstat -f output",
                stdout,
            ));
        }
        if let Some(more) = line.strip_prefix('\t') {
            let Some((_, value)) = attrs.last_mut() else {
                return Err(ParseError::unexpected(
                    "an attribute before a continuation line",
                    stdout,
                ));
            };
            value.push_str(more);
            continue;
        }
        let Some((name, value)) = line.trim_start().split_once(" = ") else {
            // `name =` with an empty value.
            if let Some(name) = line.trim().strip_suffix(" =") {
                attrs.push((name.to_owned(), String::new()));
                continue;
            }
            return Err(ParseError::unexpected(
                "`name = value` lines in qstat -f output",
                stdout,
            ));
        };
        attrs.push((name.trim().to_owned(), value.to_owned()));
    }
    Ok(if in_job { Some(attrs) } else { None })
}

fn get<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// One job from its `qstat -f` attributes.
fn classify(attrs: &[(String, String)], output: &str) -> Result<JobState, ParseError> {
    let state = get(attrs, "job_state")
        .ok_or_else(|| ParseError::unexpected("a job_state attribute", output))?;
    let nodes = || -> Result<Vec<String>, ParseError> {
        Ok(hostlist::expand_pbs_exec_host(
            get(attrs, "exec_host").unwrap_or(""),
        )?)
    };
    let comment = get(attrs, "comment").and_then(non_empty);
    let queued = |default: &str| JobState::Queued {
        reason: comment.clone().or_else(|| non_empty(default)),
        estimated_start: get(attrs, "estimated.start_time").and_then(non_empty),
    };
    Ok(match state {
        "Q" => queued(""),
        "H" => queued("held (H)"),
        "W" => queued("waiting for its start time (W)"),
        "T" => queued("being moved to another server (T)"),
        "R" => JobState::Running { nodes: nodes()? },
        "E" | "F" | "X" | "C" => {
            let status = get(attrs, "Exit_status")
                .map(|s| {
                    s.parse::<i32>()
                        .map_err(|_| ParseError::unexpected("a number in Exit_status", output))
                })
                .transpose()?;
            let (exit_code, signal) = match status {
                Some(s) if s > 256 => (None, Some(s - 256)),
                other => (other, None),
            };
            let name = match state {
                "E" => "EXITING",
                "C" => "COMPLETED",
                _ => "FINISHED",
            };
            JobState::Finished {
                state: name.to_owned(),
                exit_code,
                signal,
                nodes: nodes()?,
            }
        }
        other => JobState::Unknown {
            state: other.to_owned(),
        },
    })
}

/// Whether stderr says the server does not (or no longer) know the job.
fn job_gone(stderr: &str) -> bool {
    stderr.contains("Unknown Job Id") || stderr.contains("Job has finished")
}

impl Scheduler for Pbs {
    fn kind(&self) -> Kind {
        match self.flavor {
            PbsFlavor::OpenPbs => Kind::Pbs,
            PbsFlavor::Torque => Kind::Torque,
        }
    }

    fn render_script(&self, spec: &JobSpec) -> Result<String, ScriptError> {
        check_spec(spec)?;
        let kind = self.kind();
        let mut s = format!("#!{SCRIPT_SHELL}\n");
        let mut dir = |text: &str| {
            s.push_str("#PBS ");
            s.push_str(text);
            s.push('\n');
        };
        let max_name = match self.flavor {
            PbsFlavor::OpenPbs => 236,
            PbsFlavor::Torque => 15,
        };
        plain_value(kind, "job name", &spec.name)?;
        let name = super::queue_name(spec, kind, max_name)?;
        dir(&format!("-N {name}"));
        dir("-r n");
        dir(&format!("-S {SCRIPT_SHELL}"));
        let (n, r) = (spec.nodes, spec.ranks_per_node);
        match self.flavor {
            PbsFlavor::OpenPbs => {
                dir(&format!("-l select={n}:ncpus={r}:mpiprocs={r}"));
                dir("-l place=scatter");
            }
            PbsFlavor::Torque => dir(&format!("-l nodes={n}:ppn={r}")),
        }
        if let Some(w) = spec.walltime {
            dir(&format!("-l walltime={}", w.hms()));
        }
        if let Some(q) = &spec.queue {
            dir(&format!("-q {}", plain_value(kind, "queue", q)?));
        }
        if let Some(a) = &spec.account {
            dir(&format!("-A {}", plain_value(kind, "account", a)?));
        }
        if let Some(o) = &spec.output_path {
            let o = plain_value(kind, "output path", o)?;
            if o.contains(':') {
                // qsub reads `host:path`.
                return Err(ScriptError::Unrepresentable {
                    kind,
                    field: "output path",
                    value: o.to_owned(),
                });
            }
            dir(&format!("-o {o}"));
        }
        dir("-j oe");
        for extra in &spec.extra_directives {
            dir(extra);
        }
        script_body(&mut s, spec, &[])?;
        Ok(s)
    }

    fn submit_command(&self) -> Vec<String> {
        argv(&["qsub"])
    }

    fn parse_submit(&self, out: &CommandOutput) -> Result<JobId, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        let line = lines(&out.stdout)
            .last()
            .ok_or_else(|| ParseError::unexpected("a job id from qsub", &out.stdout))?;
        JobId::checked(line, valid_id(line))
    }

    fn job_id(&self, id: &str) -> Result<JobId, ParseError> {
        let id = id.trim();
        JobId::checked(id, valid_id(id))
    }

    fn state_command(&self, id: &JobId) -> Vec<String> {
        match self.flavor {
            PbsFlavor::OpenPbs => argv(&["qstat", "-x", "-f", id.as_str()]),
            PbsFlavor::Torque => argv(&["qstat", "-f", id.as_str()]),
        }
    }

    fn parse_state(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        if job_gone(&out.stderr) && out.stdout.trim().is_empty() {
            return Ok(None);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        match attributes(&out.stdout)? {
            None => Ok(None),
            Some(attrs) => classify(&attrs, &out.stdout).map(Some),
        }
    }

    fn finished_command(&self, id: &JobId) -> Vec<String> {
        self.state_command(id)
    }

    fn parse_finished(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        self.parse_state(out)
    }

    fn cancel_command(&self, id: &JobId) -> Vec<String> {
        argv(&["qdel", id.as_str()])
    }

    fn tagged_jobs_command(&self, tag: &str) -> Vec<String> {
        argv(&["sh", "-c", TAGGED, "pvlaunch-tagged", tag])
    }

    fn cancel_id_prefix(&self) -> Vec<String> {
        argv(&["qdel"])
    }

    fn parse_cancel(&self, out: &CommandOutput) -> Result<Cancel, ParseError> {
        if job_gone(&out.stderr) || out.stderr.contains("Invalid state for job - COMPLETE") {
            return Ok(Cancel::AlreadyGone);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        Ok(Cancel::Requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Walltime;
    use crate::scheduler::test_support::{fixture, fixture_table};

    const OPENPBS: Pbs = Pbs {
        flavor: PbsFlavor::OpenPbs,
    };
    const TORQUE: Pbs = Pbs {
        flavor: PbsFlavor::Torque,
    };

    fn spec() -> JobSpec {
        JobSpec {
            nodes: 2,
            ranks_per_node: 4,
            walltime: Some(Walltime::from_secs(5400)),
            queue: Some("workq".into()),
            account: Some("proj42".into()),
            output_path: Some("/home/u/pvlaunch.out".into()),
            extra_directives: vec!["-l mem=16gb".into()],
            setup_lines: vec!["module load paraview".into()],
            command: [
                "mpiexec",
                "pvserver",
                "--connect-id=817",
                "--data=/scratch/my data",
            ]
            .map(String::from)
            .to_vec(),
            tag: Some("1a2b3c4d".into()),
            ..JobSpec::new("pvserver")
        }
    }

    #[test]
    fn script_openpbs() {
        insta::assert_snapshot!(OPENPBS.render_script(&spec()).unwrap());
    }

    #[test]
    fn script_torque() {
        insta::assert_snapshot!(TORQUE.render_script(&spec()).unwrap());
    }

    #[test]
    fn script_rejects_unplain_directive_values() {
        for (field, spec) in [
            (
                "queue",
                JobSpec {
                    queue: Some("work q".into()),
                    ..spec()
                },
            ),
            (
                "job name",
                JobSpec {
                    name: "a\"b".into(),
                    ..spec()
                },
            ),
            (
                "output path",
                JobSpec {
                    output_path: Some("host:/x".into()),
                    ..spec()
                },
            ),
        ] {
            match OPENPBS.render_script(&spec) {
                Err(ScriptError::Unrepresentable { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let spec = JobSpec {
            account: Some("p\n#PBS -u root".into()),
            ..spec()
        };
        assert!(matches!(
            OPENPBS.render_script(&spec),
            Err(ScriptError::LineBreak { .. })
        ));
    }

    #[test]
    fn commands() {
        let id = OPENPBS.job_id("123.pbs01").unwrap();
        assert_eq!(OPENPBS.submit_command(), ["qsub"]);
        assert_eq!(
            OPENPBS.state_command(&id),
            ["qstat", "-x", "-f", "123.pbs01"]
        );
        assert_eq!(TORQUE.state_command(&id), ["qstat", "-f", "123.pbs01"]);
        assert_eq!(OPENPBS.finished_command(&id), OPENPBS.state_command(&id));
        assert_eq!(OPENPBS.cancel_command(&id), ["qdel", "123.pbs01"]);
    }

    #[test]
    fn job_ids_are_validated() {
        for good in ["123", "123.pbs01", "4567.head.cluster.example.org"] {
            assert!(OPENPBS.job_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "abc",
            "123.",
            "123.-x",
            "123..x",
            "123[].server",
            "12 3",
            "123.srv;id",
            "$(id)",
        ] {
            assert!(OPENPBS.job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn submit_outputs() {
        assert_eq!(
            OPENPBS
                .parse_submit(&fixture("pbs", "submit"))
                .unwrap()
                .as_str(),
            "8812.pbs01"
        );
        assert_eq!(
            TORQUE
                .parse_submit(&fixture("pbs", "submit_torque"))
                .unwrap()
                .as_str(),
            "5512.torque-head.cluster.example"
        );
        assert!(matches!(
            OPENPBS.parse_submit(&fixture("pbs", "submit_rejected")),
            Err(ParseError::CommandFailed { .. })
        ));
    }

    #[test]
    fn state_queued_with_comment_and_estimate() {
        assert_eq!(
            OPENPBS
                .parse_state(&fixture("pbs", "state_queued"))
                .unwrap(),
            Some(JobState::Queued {
                reason: Some(
                    "Not Running: Insufficient amount of resource: ncpus (R: 8 A: 4 T: 128)".into()
                ),
                estimated_start: Some("Mon May  4 11:20:00 2026".into())
            })
        );
    }

    #[test]
    fn state_running_joins_continuation_lines() {
        assert_eq!(
            OPENPBS
                .parse_state(&fixture("pbs", "state_running"))
                .unwrap(),
            Some(JobState::Running {
                nodes: vec!["cn0101".into(), "cn0102".into()]
            })
        );
        let long = fixture("pbs", "state_running_long_exec_host");
        let Some(JobState::Running { nodes }) = OPENPBS.parse_state(&long).unwrap() else {
            panic!("running");
        };
        assert_eq!(nodes.len(), 12);
        assert_eq!(nodes[0], "compute-node-0001");
        assert_eq!(nodes[11], "compute-node-0012");
    }

    #[test]
    fn state_finished_and_gone() {
        assert_eq!(
            OPENPBS
                .parse_state(&fixture("pbs", "finished_history"))
                .unwrap(),
            Some(JobState::Finished {
                state: "FINISHED".into(),
                exit_code: None,
                signal: Some(15),
                nodes: vec!["cn0101".into(), "cn0102".into()]
            })
        );
        assert_eq!(
            OPENPBS
                .parse_state(&fixture("pbs", "state_unknown_job"))
                .unwrap(),
            None
        );
        assert_eq!(
            OPENPBS
                .parse_state(&fixture("pbs", "state_history_hint"))
                .unwrap(),
            None
        );
        assert_eq!(
            OPENPBS.parse_state(&CommandOutput::success("")).unwrap(),
            None
        );
    }

    #[test]
    fn state_garbage() {
        for garbage in [
            "garbage",
            "Job Id: 1.s\n    Job_Name = x\n",
            "Job Id: 1.s\nno equals sign\n",
            "Job Id: 1.s\n    job_state = F\n    Exit_status = x\n",
            "\tcontinuation first\n",
        ] {
            assert!(
                OPENPBS
                    .parse_state(&CommandOutput::success(garbage))
                    .is_err(),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            OPENPBS.parse_state(&CommandOutput::failure(
                2,
                "qstat: cannot connect to server pbs01 (errno=111)"
            )),
            Err(ParseError::CommandFailed { .. })
        ));
    }

    #[test]
    fn cancel_outputs() {
        assert_eq!(
            OPENPBS.parse_cancel(&CommandOutput::success("")).unwrap(),
            Cancel::Requested
        );
        for name in [
            "cancel_unknown",
            "cancel_finished",
            "cancel_torque_complete",
        ] {
            assert_eq!(
                OPENPBS.parse_cancel(&fixture("pbs", name)).unwrap(),
                Cancel::AlreadyGone,
                "{name}"
            );
        }
        assert!(
            OPENPBS
                .parse_cancel(&CommandOutput::failure(
                    159,
                    "qdel: Unauthorized Request  8812.pbs01"
                ))
                .is_err()
        );
    }

    #[test]
    fn every_fixture() {
        insta::assert_snapshot!(fixture_table("pbs", &OPENPBS));
    }

    fn tagged(flavor: Pbs, qselect: &str) -> (CommandOutput, String) {
        use crate::scheduler::test_support::{fake_printing, run_with_fakes};
        run_with_fakes(
            &flavor.tagged_jobs_command("1a2b3c4d"),
            &[
                ("qselect", &fake_printing("qselect", "pbs", qselect)),
                ("qstat", &fake_printing("qstat", "pbs", "listing_qstat")),
            ],
        )
    }

    #[test]
    fn tagged_jobs_are_found_by_the_end_of_their_name() {
        for flavor in [OPENPBS, TORQUE] {
            let (out, log) = tagged(flavor, "listing_qselect");
            let jobs: Vec<String> = flavor
                .parse_tagged_jobs(&out)
                .unwrap()
                .into_iter()
                .map(|j| format!("{} {}", j.id, j.state))
                .collect();
            // 104 is exiting (E); 103's long name is continued on a second line.
            assert_eq!(jobs, ["101.pbs01 R", "103.pbs01 H"]);
            let user = std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap();
            let user = String::from_utf8_lossy(&user.stdout);
            assert_eq!(
                log,
                format!(
                    "qselect -u {}\nqstat -f 101.pbs01 102.pbs01 103.pbs01 104.pbs01\n",
                    user.trim()
                )
            );
        }
    }

    #[test]
    fn tagged_jobs_fail_when_the_server_is_down_and_are_none_without_jobs() {
        let (out, _) = tagged(OPENPBS, "state_server_down");
        assert!(!out.ok());
        assert!(OPENPBS.parse_tagged_jobs(&out).is_err());
        use crate::scheduler::test_support::run_with_fakes;
        let (out, log) = run_with_fakes(
            &OPENPBS.tagged_jobs_command("1a2b3c4d"),
            &[
                ("qselect", "true"),
                ("qstat", "echo qstat >> \"$FAKE_LOG\""),
            ],
        );
        assert_eq!(OPENPBS.parse_tagged_jobs(&out), Ok(vec![]));
        assert_eq!(log, "", "no qstat without jobs");
    }

    #[test]
    fn jobs_carry_the_tag_within_the_name_limits_and_are_not_rerun() {
        let spec = JobSpec {
            tag: Some("1a2b3c4d".into()),
            ..spec()
        };
        let long = JobSpec {
            name: "n".repeat(300),
            ..spec.clone()
        };
        for (flavor, max) in [(OPENPBS, 236), (TORQUE, 15)] {
            let script = flavor.render_script(&long).unwrap();
            let name = script
                .lines()
                .find_map(|l| l.strip_prefix("#PBS -N "))
                .unwrap();
            assert_eq!(name.len(), max);
            assert!(name.ends_with("-1a2b3c4d"));
            assert!(script.contains("\n#PBS -r n\n"));
        }
        assert!(
            OPENPBS
                .render_script(&spec)
                .unwrap()
                .contains("#PBS -N pvserver-1a2b3c4d\n")
        );
        assert_eq!(OPENPBS.cancel_id_prefix(), ["qdel"]);
    }
}
