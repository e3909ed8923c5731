//! Slurm: `sbatch --parsable`, `squeue`, `sacct`, `scancel`.
//!
//! - Submit: the script on `sbatch --parsable`'s stdin; it prints `ID` or `ID;CLUSTER`
//!   (federation / `--clusters`). A cluster name is kept in the [`JobId`] and every later
//!   command gets `-M CLUSTER`.
//! - State: `squeue -h -t all -j ID -o '%T|%N|%R|%S'`: state, node list, pending reason in
//!   parentheses (the node list again for other states), start time (expected, for pending
//!   jobs, or `N/A`). `-t all` keeps ended jobs visible while the controller still holds them
//!   (`MinJobAge`); after that squeue fails with `Invalid job id specified`: gone.
//! - Finished: `sacct -j ID -X -n -P -o State,NodeList,ExitCode`: e.g. `FAILED|node1|1:0`,
//!   `CANCELLED by 1000|node[1-2]|0:15` (exit code : signal). A site without accounting
//!   (`Slurm accounting storage is disabled`) has no record: `None`, as for a job not yet
//!   recorded.
//! - Cancel: `scancel ID`.
//! - The session's tag: the job is named `NAME-TAG` (`--job-name`), so `squeue -u USER -o
//!   '%i|%T|%j'` finds it by name without its id, and a person sees which session owns it.
//!   A comment (`--comment`) would keep the name as given, but squeue cannot select by
//!   either, sites rewrite comments in submit plugins, and a name is shown everywhere.
//!   Jobs are submitted with `--no-requeue`: a requeued pvserver would start again long after
//!   its session ended.
//!
//! Directive values that are not plain words are written in double quotes with `\` and `"`
//! escaped by a backslash, which is how sbatch reads `#SBATCH` lines back (its
//! `get_argument`: quotes group, a backslash escapes the next character, an unquoted `#`
//! starts a comment).

use std::borrow::Cow;

use super::{
    CommandOutput, JobId, JobSpec, JobState, Kind, ParseError, SCRIPT_SHELL, Scheduler,
    ScriptError, argv, check_spec, hostlist, is_plain, lines, non_empty, one_line, script_body,
};
use crate::scheduler::Cancel;

/// The Slurm adapter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slurm;

/// `squeue -o` format: state, nodes, reason (or nodes), start time.
const SQUEUE_FORMAT: &str = "%T|%N|%R|%S";
/// `sacct -o` fields.
const SACCT_FIELDS: &str = "State,NodeList,ExitCode";

/// Slurm's limit on job names is far above anything a profile writes; kept as a bound.
const MAX_JOB_NAME: usize = 1024;

/// Lists this user's unfinished jobs named `*-$1` as `ID STATE`.
const TAGGED: &str = r#"out=$(squeue -h -u "$(id -un)" -o '%i|%T|%j') || exit
printf '%s\n' "$out" | while IFS='|' read -r id state name; do
  case $name in *-"$1") ;; *) continue ;; esac
  case $state in ''|COMPLETING|COMPLETED|CANCELLED|FAILED|TIMEOUT|NODE_FAIL|PREEMPTED|BOOT_FAIL|DEADLINE|OUT_OF_MEMORY|REVOKED|STAGE_OUT) continue ;; esac
  printf '%s %s\n' "$id" "$state"
done"#;

/// Cancels the job `$1` (`ID` or `ID;CLUSTER`).
const CANCEL_ID: &str = r#"case $1 in *";"*) exec scancel -M "${1#*;}" "${1%%;*}" ;; esac
exec scancel "$1""#;

/// A value as sbatch reads it back from a `#SBATCH` line.
fn directive_value<'a>(field: &'static str, value: &'a str) -> Result<Cow<'a, str>, ScriptError> {
    one_line(field, value)?;
    if value.is_empty() {
        return Err(ScriptError::Empty { field });
    }
    if value.chars().all(is_plain) {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(Cow::Owned(out))
}

/// `ID` or `ID;CLUSTER`.
fn valid_id(id: &str) -> bool {
    let (number, cluster) = match id.split_once(';') {
        Some((n, c)) => (n, Some(c)),
        None => (id, None),
    };
    let digits =
        !number.is_empty() && number.len() <= 20 && number.bytes().all(|b| b.is_ascii_digit());
    let cluster_ok = cluster.is_none_or(|c| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !c.starts_with('-')
    });
    digits && cluster_ok
}

/// The job number and the `-M CLUSTER` arguments for an id.
fn id_parts(id: &JobId) -> (&str, Vec<String>) {
    match id.as_str().split_once(';') {
        Some((n, c)) => (n, vec!["-M".to_owned(), c.to_owned()]),
        None => (id.as_str(), Vec::new()),
    }
}

/// Slurm's `exit:signal` pair.
fn parse_exit(field: &str, line: &str) -> Result<(Option<i32>, Option<i32>), ParseError> {
    let field = field.trim();
    if field.is_empty() {
        return Ok((None, None));
    }
    let (code, signal) = field
        .split_once(':')
        .ok_or_else(|| ParseError::unexpected("ExitCode as CODE:SIGNAL", line))?;
    let code: i32 = code
        .parse()
        .map_err(|_| ParseError::unexpected("ExitCode as CODE:SIGNAL", line))?;
    let signal: i32 = signal
        .parse()
        .map_err(|_| ParseError::unexpected("ExitCode as CODE:SIGNAL", line))?;
    Ok(if signal != 0 {
        (None, Some(signal))
    } else {
        (Some(code), None)
    })
}

/// One job state from squeue or sacct.
fn classify(
    state: &str,
    nodes: Vec<String>,
    reason: Option<String>,
    estimated_start: Option<String>,
    (exit_code, signal): (Option<i32>, Option<i32>),
) -> JobState {
    let base = state.split_whitespace().next().unwrap_or("");
    match base {
        "PENDING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD"
        | "SPECIAL_EXIT" => JobState::Queued {
            reason,
            estimated_start,
        },
        "CONFIGURING" => JobState::Queued {
            reason: Some("nodes are being configured (CONFIGURING)".to_owned()),
            estimated_start,
        },
        "RUNNING" | "RESIZING" | "SIGNALING" => JobState::Running { nodes },
        "COMPLETING" | "STAGE_OUT" | "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT"
        | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE" | "OUT_OF_MEMORY" | "REVOKED" => {
            JobState::Finished {
                state: state.to_owned(),
                exit_code,
                signal,
                nodes,
            }
        }
        _ => JobState::Unknown {
            state: state.to_owned(),
        },
    }
}

/// `(Priority)` -> `Priority`; `(None)` -> nothing.
fn pending_reason(field: &str) -> Option<String> {
    let field = field.trim();
    let inner = field
        .strip_prefix('(')
        .and_then(|f| f.strip_suffix(')'))
        .unwrap_or(field);
    non_empty(inner)
}

impl Scheduler for Slurm {
    fn kind(&self) -> Kind {
        Kind::Slurm
    }

    fn render_script(&self, spec: &JobSpec) -> Result<String, ScriptError> {
        check_spec(spec)?;
        let mut s = format!("#!{SCRIPT_SHELL}\n");
        let mut dir = |option: &str, value: &str| {
            s.push_str("#SBATCH ");
            s.push_str(option);
            if !value.is_empty() {
                s.push('=');
                s.push_str(value);
            }
            s.push('\n');
        };
        let name = super::queue_name(spec, Kind::Slurm, MAX_JOB_NAME)?;
        dir("--job-name", &directive_value("job name", &name)?);
        dir("--no-requeue", "");
        dir("--nodes", &spec.nodes.to_string());
        dir("--ntasks-per-node", &spec.ranks_per_node.to_string());
        if let Some(w) = spec.walltime {
            dir("--time", &w.hms());
        }
        if let Some(q) = &spec.queue {
            dir("--partition", &directive_value("partition", q)?);
        }
        if let Some(a) = &spec.account {
            dir("--account", &directive_value("account", a)?);
        }
        if let Some(o) = &spec.output_path {
            dir("--output", &directive_value("output path", o)?);
        }
        for extra in &spec.extra_directives {
            s.push_str("#SBATCH ");
            s.push_str(extra);
            s.push('\n');
        }
        script_body(&mut s, spec, &[])?;
        Ok(s)
    }

    fn submit_command(&self) -> Vec<String> {
        argv(&["sbatch", "--parsable"])
    }

    fn parse_submit(&self, out: &CommandOutput) -> Result<JobId, ParseError> {
        if !out.ok() {
            return Err(out.failed());
        }
        let line = lines(&out.stdout).last().ok_or_else(|| {
            ParseError::unexpected("a job id from sbatch --parsable", &out.stdout)
        })?;
        JobId::checked(line, valid_id(line))
    }

    fn job_id(&self, id: &str) -> Result<JobId, ParseError> {
        let id = id.trim();
        JobId::checked(id, valid_id(id))
    }

    fn state_command(&self, id: &JobId) -> Vec<String> {
        let (number, cluster) = id_parts(id);
        let mut cmd = argv(&[
            "squeue",
            "-h",
            "-t",
            "all",
            "-j",
            number,
            "-o",
            SQUEUE_FORMAT,
        ]);
        cmd.extend(cluster);
        cmd
    }

    fn parse_state(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        if out.stderr.contains("Invalid job id specified") {
            return Ok(None);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        let Some(line) = lines(&out.stdout).find(|l| !l.starts_with("CLUSTER: ")) else {
            return Ok(None);
        };
        let mut fields = line.split('|');
        let (Some(state), Some(nodes)) = (fields.next(), fields.next()) else {
            return Err(ParseError::unexpected(
                "STATE|NODES|REASON|START from squeue",
                line,
            ));
        };
        let rest: Vec<&str> = fields.collect();
        let Some((start, reason)) = rest.split_last() else {
            return Err(ParseError::unexpected(
                "STATE|NODES|REASON|START from squeue",
                line,
            ));
        };
        let state = state.trim();
        if state.is_empty() {
            return Err(ParseError::unexpected("a job state from squeue", line));
        }
        let reason = reason.join("|");
        let pending = matches!(
            state,
            "PENDING"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESV_DEL_HOLD"
                | "SPECIAL_EXIT"
        );
        let reason = if pending {
            pending_reason(&reason)
        } else {
            None
        };
        let nodes = hostlist::expand_slurm(nodes)?;
        let start = if pending { non_empty(start) } else { None };
        Ok(Some(classify(state, nodes, reason, start, (None, None))))
    }

    fn finished_command(&self, id: &JobId) -> Vec<String> {
        let (number, cluster) = id_parts(id);
        let mut cmd = argv(&["sacct", "-j", number, "-X", "-n", "-P", "-o", SACCT_FIELDS]);
        cmd.extend(cluster);
        cmd
    }

    fn parse_finished(&self, out: &CommandOutput) -> Result<Option<JobState>, ParseError> {
        if out.stderr.contains("accounting storage is disabled") {
            // The site keeps no accounting: there is no record to be had.
            return Ok(None);
        }
        if !out.ok() {
            return Err(out.failed());
        }
        let Some(line) = lines(&out.stdout).next() else {
            return Ok(None);
        };
        let fields: Vec<&str> = line.split('|').collect();
        let [state, nodes, exit] = fields.as_slice() else {
            return Err(ParseError::unexpected(
                "STATE|NODELIST|EXITCODE from sacct",
                line,
            ));
        };
        let state = state.trim();
        if state.is_empty() {
            return Err(ParseError::unexpected("a job state from sacct", line));
        }
        let nodes = hostlist::expand_slurm(nodes)?;
        let exit = parse_exit(exit, line)?;
        Ok(Some(classify(state, nodes, None, None, exit)))
    }

    fn cancel_command(&self, id: &JobId) -> Vec<String> {
        let (number, cluster) = id_parts(id);
        let mut cmd = argv(&["scancel"]);
        cmd.extend(cluster);
        cmd.push(number.to_owned());
        cmd
    }

    fn tagged_jobs_command(&self, tag: &str) -> Vec<String> {
        argv(&["sh", "-c", TAGGED, "pvlaunch-tagged", tag])
    }

    fn cancel_id_prefix(&self) -> Vec<String> {
        argv(&["sh", "-c", CANCEL_ID, "pvlaunch-cancel"])
    }

    fn parse_cancel(&self, out: &CommandOutput) -> Result<Cancel, ParseError> {
        if out.stderr.contains("already completing or completed")
            || out.stderr.contains("Invalid job id specified")
        {
            return Ok(Cancel::AlreadyGone);
        }
        if !out.ok() || out.stderr.contains("error:") {
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

    fn id(s: &str) -> JobId {
        Slurm.job_id(s).unwrap()
    }

    fn full_spec() -> JobSpec {
        JobSpec {
            nodes: 2,
            ranks_per_node: 4,
            walltime: Some("1:30:00".parse::<Walltime>().unwrap()),
            queue: Some("debug".into()),
            account: Some("proj42".into()),
            output_path: Some("pvlaunch-%j.out".into()),
            extra_directives: vec!["--gres=gpu:1".into(), "--constraint=\"a100&ib\"".into()],
            setup_lines: vec![
                "module load paraview/5.13".into(),
                "export OMP_NUM_THREADS=1".into(),
            ],
            command: [
                "mpiexec",
                "-n",
                "8",
                "pvserver",
                "--reverse-connection",
                "--client-host=login1",
                "--server-port=40123",
                "--connect-id=817",
            ]
            .map(String::from)
            .to_vec(),
            tag: Some("1a2b3c4d".into()),
            ..JobSpec::new("pvserver")
        }
    }

    #[test]
    fn script_full() {
        insta::assert_snapshot!(Slurm.render_script(&full_spec()).unwrap());
    }

    #[test]
    fn script_minimal() {
        let spec = JobSpec {
            command: vec!["pvserver".into()],
            ..JobSpec::new("pv")
        };
        insta::assert_snapshot!(Slurm.render_script(&spec).unwrap());
    }

    #[test]
    fn script_hostile_values_stay_literal() {
        let spec = JobSpec {
            queue: Some("a b\"c\\d#e'f".into()),
            command: vec![
                "pvserver".into(),
                "--x=$(id)".into(),
                "'; rm -rf ~ #".into(),
            ],
            ..JobSpec::new("my job #1")
        };
        insta::assert_snapshot!(Slurm.render_script(&spec).unwrap());
    }

    #[test]
    fn script_rejects_line_breaks_in_directive_values() {
        for spec in [
            JobSpec {
                queue: Some("debug\n#SBATCH --uid=0".into()),
                command: vec!["x".into()],
                ..JobSpec::new("pv")
            },
            JobSpec {
                command: vec!["x".into()],
                ..JobSpec::new("pv\nrm -rf ~")
            },
            JobSpec {
                extra_directives: vec!["--gres=gpu:1\nrm -rf ~".into()],
                command: vec!["x".into()],
                ..JobSpec::new("pv")
            },
            JobSpec {
                output_path: Some("out\r".into()),
                command: vec!["x".into()],
                ..JobSpec::new("pv")
            },
        ] {
            assert!(
                matches!(
                    Slurm.render_script(&spec),
                    Err(ScriptError::LineBreak { .. })
                ),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn script_needs_resources_and_a_command() {
        let no_cmd = JobSpec::new("pv");
        assert_eq!(Slurm.render_script(&no_cmd), Err(ScriptError::NoCommand));
        let zero = JobSpec {
            nodes: 0,
            command: vec!["x".into()],
            ..JobSpec::new("pv")
        };
        assert!(matches!(
            Slurm.render_script(&zero),
            Err(ScriptError::NoResources { .. })
        ));
        let nul = JobSpec {
            command: vec!["a\0b".into()],
            ..JobSpec::new("pv")
        };
        assert!(matches!(
            Slurm.render_script(&nul),
            Err(ScriptError::Nul(_))
        ));
    }

    #[test]
    fn directive_values_quote_like_sbatch_reads_them() {
        assert_eq!(directive_value("x", "debug").unwrap(), "debug");
        assert_eq!(directive_value("x", "a b").unwrap(), "\"a b\"");
        assert_eq!(directive_value("x", r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert_eq!(directive_value("x", "#x").unwrap(), "\"#x\"");
    }

    #[test]
    fn commands() {
        let j = id("4242");
        assert_eq!(Slurm.submit_command(), ["sbatch", "--parsable"]);
        assert_eq!(
            Slurm.state_command(&j),
            [
                "squeue",
                "-h",
                "-t",
                "all",
                "-j",
                "4242",
                "-o",
                "%T|%N|%R|%S"
            ]
        );
        assert_eq!(
            Slurm.finished_command(&j),
            [
                "sacct",
                "-j",
                "4242",
                "-X",
                "-n",
                "-P",
                "-o",
                "State,NodeList,ExitCode"
            ]
        );
        assert_eq!(Slurm.cancel_command(&j), ["scancel", "4242"]);
        let fed = id("77;cluster-b");
        assert_eq!(
            Slurm.cancel_command(&fed),
            ["scancel", "-M", "cluster-b", "77"]
        );
        assert_eq!(Slurm.state_command(&fed)[5], "77");
        assert!(
            Slurm
                .state_command(&fed)
                .ends_with(&["-M".to_owned(), "cluster-b".to_owned()])
        );
    }

    #[test]
    fn job_ids_are_validated() {
        for good in ["1", "4242", "12;c1", "12;my-cluster_2"] {
            assert!(Slurm.job_id(good).is_ok(), "{good}");
        }
        for bad in [
            "", "12a", "-1", "1 2", "12;", ";c", "12;c d", "12;-M", "$(id)", "12_3", "1.2",
        ] {
            assert!(Slurm.job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn submit_outputs() {
        assert_eq!(
            Slurm
                .parse_submit(&fixture("slurm", "submit"))
                .unwrap()
                .as_str(),
            "4242"
        );
        assert_eq!(
            Slurm
                .parse_submit(&fixture("slurm", "submit_cluster"))
                .unwrap()
                .as_str(),
            "4243;cluster-b"
        );
        assert!(matches!(
            Slurm.parse_submit(&fixture("slurm", "submit_rejected")),
            Err(ParseError::CommandFailed {
                status: Some(1),
                ..
            })
        ));
        assert!(matches!(
            Slurm.parse_submit(&CommandOutput::success("")),
            Err(ParseError::Unexpected { .. })
        ));
        assert!(matches!(
            Slurm.parse_submit(&CommandOutput::success("Submitted batch job 12\n")),
            Err(ParseError::InvalidJobId(_))
        ));
    }

    #[test]
    fn state_pending_with_reason_and_start() {
        let s = Slurm
            .parse_state(&fixture("slurm", "state_pending_priority"))
            .unwrap();
        assert_eq!(
            s,
            Some(JobState::Queued {
                reason: Some("Priority".into()),
                estimated_start: Some("2026-05-04T11:20:00".into())
            })
        );
        let s = Slurm
            .parse_state(&fixture("slurm", "state_pending_resources"))
            .unwrap();
        assert_eq!(
            s,
            Some(JobState::Queued {
                reason: Some("Resources".into()),
                estimated_start: None
            })
        );
    }

    #[test]
    fn state_running_expands_ranges() {
        let s = Slurm
            .parse_state(&fixture("slurm", "state_running_range"))
            .unwrap();
        assert_eq!(
            s,
            Some(JobState::Running {
                nodes: vec![
                    "node1".into(),
                    "node2".into(),
                    "node3".into(),
                    "node7".into()
                ]
            })
        );
    }

    #[test]
    fn state_vanished_and_empty() {
        assert_eq!(
            Slurm
                .parse_state(&fixture("slurm", "state_vanished"))
                .unwrap(),
            None
        );
        assert_eq!(
            Slurm.parse_state(&CommandOutput::success("")).unwrap(),
            None
        );
        assert!(matches!(
            Slurm.parse_state(&fixture("slurm", "state_controller_down")),
            Err(ParseError::CommandFailed { .. })
        ));
    }

    #[test]
    fn state_garbage() {
        for garbage in ["garbage", "|node1|node1|N/A", "RUNNING|node[1-|x|N/A"] {
            assert!(
                Slurm.parse_state(&CommandOutput::success(garbage)).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn finished_outputs() {
        assert_eq!(
            Slurm
                .parse_finished(&fixture("slurm", "finished_failed"))
                .unwrap(),
            Some(JobState::Finished {
                state: "FAILED".into(),
                exit_code: Some(1),
                signal: None,
                nodes: vec!["node1".into()]
            })
        );
        assert_eq!(
            Slurm
                .parse_finished(&fixture("slurm", "finished_cancelled"))
                .unwrap(),
            Some(JobState::Finished {
                state: "CANCELLED by 1000".into(),
                exit_code: None,
                signal: Some(15),
                nodes: vec!["node1".into(), "node2".into()]
            })
        );
        assert_eq!(
            Slurm.parse_finished(&CommandOutput::success("\n")).unwrap(),
            None
        );
        assert_eq!(
            Slurm
                .parse_finished(&fixture("slurm", "finished_accounting_disabled_recorded"))
                .unwrap(),
            None
        );
        assert!(
            Slurm
                .parse_finished(&CommandOutput::success("COMPLETED|node1"))
                .is_err()
        );
        assert!(
            Slurm
                .parse_finished(&CommandOutput::success("COMPLETED|node1|x"))
                .is_err()
        );
    }

    #[test]
    fn cancel_outputs() {
        assert_eq!(
            Slurm.parse_cancel(&CommandOutput::success("")).unwrap(),
            Cancel::Requested
        );
        assert_eq!(
            Slurm
                .parse_cancel(&fixture("slurm", "cancel_completed"))
                .unwrap(),
            Cancel::AlreadyGone
        );
        assert_eq!(
            Slurm
                .parse_cancel(&fixture("slurm", "cancel_invalid"))
                .unwrap(),
            Cancel::AlreadyGone
        );
        assert!(
            Slurm
                .parse_cancel(&CommandOutput::failure(
                    1,
                    "scancel: error: Unable to contact slurm controller"
                ))
                .is_err()
        );
    }

    #[test]
    fn every_fixture() {
        insta::assert_snapshot!(fixture_table("slurm", &Slurm));
    }

    /// Through a real sbatch: hostile values in directives and in the command reach the job as
    /// literal text. Runs when `PVLAUNCH_TEST_SLURM` names a command prefix that runs Slurm's
    /// commands on a test cluster sharing this machine's `/tmp` (e.g. an `nsenter` wrapper).
    #[test]
    #[ignore = "needs a Slurm test cluster: set PVLAUNCH_TEST_SLURM"]
    fn live_slurm_keeps_hostile_values_literal() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};

        let prefix = std::env::var("PVLAUNCH_TEST_SLURM").expect("PVLAUNCH_TEST_SLURM");
        let prefix: Vec<&str> = prefix.split_whitespace().collect();
        let run = |cmd: Vec<String>, stdin: &str| -> CommandOutput {
            let mut child = Command::new(prefix[0])
                .args(&prefix[1..])
                .args(&cmd)
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
        };

        let dir = tempfile::Builder::new()
            .prefix("pvlaunch sched ")
            .tempdir_in("/tmp")
            .unwrap();
        let hostile = [
            "'; rm -rf ~ #",
            "$(id)",
            "`id`",
            "a\"b",
            "x\ny",
            "*",
            "~",
            "é",
            "",
        ];
        let name = "pv \"job\" #1 'q' \\z $(id)";
        let mut command: Vec<String> = [
            "sh",
            "-c",
            "printf '[%s]\\n' \"$SLURM_JOB_NAME\" \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec();
        command.extend(hostile.map(String::from));
        let spec = JobSpec {
            nodes: 2,
            output_path: Some(format!("{}/out \"%j\" #x.txt", dir.path().display())),
            setup_lines: vec!["cd /tmp".into()],
            command,
            ..JobSpec::new(name)
        };
        let script = Slurm.render_script(&spec).unwrap();
        let id = Slurm
            .parse_submit(&run(Slurm.submit_command(), &script))
            .unwrap();

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Slurm
                .parse_state(&run(Slurm.state_command(&id), ""))
                .unwrap()
            {
                None | Some(JobState::Finished { .. }) => break,
                Some(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Some(other) => panic!("job still {other:?}"),
            }
        }
        let out = std::fs::read_to_string(dir.path().join(format!("out \"{id}\" #x.txt"))).unwrap();
        let mut expected = format!("[{name}]\n");
        for h in hostile {
            expected.push_str(&format!("[{h}]\n"));
        }
        // The job's own lines come first; a test cluster's slurmstepd may add noise after them.
        assert!(
            out.starts_with(&expected),
            "{out:?}\ndoes not start with\n{expected:?}"
        );
    }

    fn tagged(fixture_name: &str) -> (CommandOutput, String) {
        use crate::scheduler::test_support::{fake_printing, run_with_fakes};
        run_with_fakes(
            &Slurm.tagged_jobs_command("1a2b3c4d"),
            &[("squeue", &fake_printing("squeue", "slurm", fixture_name))],
        )
    }

    fn ids(out: &CommandOutput) -> Vec<String> {
        Slurm
            .parse_tagged_jobs(out)
            .unwrap()
            .into_iter()
            .map(|j| format!("{} {}", j.id, j.state))
            .collect()
    }

    #[test]
    fn tagged_jobs_are_this_users_unfinished_jobs_named_with_the_tag() {
        let (out, log) = tagged("listing_recorded");
        assert_eq!(ids(&out), ["4 PENDING", "3 PENDING", "1 RUNNING"]);
        let user = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(log, format!("squeue -h -u {} -o %i|%T|%j\n", user.trim()));
        let (out, _) = tagged("listing_after_cancel_recorded");
        assert_eq!(ids(&out), ["3 PENDING", "4 RUNNING"]);
        // Completing counts as ended; another tag, or the tag without its dash, is not ours.
        let (out, _) = tagged("listing_completing");
        assert_eq!(ids(&out), ["10 SUSPENDED"]);
    }

    #[test]
    fn tagged_jobs_fail_when_the_controller_is_down() {
        let (out, _) = tagged("state_controller_down");
        assert_eq!(out.status, Some(1));
        assert!(out.stdout.is_empty());
        assert!(matches!(
            Slurm.parse_tagged_jobs(&out),
            Err(ParseError::CommandFailed { .. })
        ));
    }

    #[test]
    fn cancel_tagged_cancels_each_listed_job_and_names_it() {
        use crate::scheduler::test_support::{fake_printing, run_with_fakes};
        let scancel = "echo \"scancel $*\" >> \"$FAKE_LOG\"; [ \"$1\" != 3 ]";
        let (out, log) = run_with_fakes(
            &Slurm.cancel_tagged_command("1a2b3c4d"),
            &[
                (
                    "squeue",
                    &fake_printing("squeue", "slurm", "listing_recorded"),
                ),
                ("scancel", scancel),
            ],
        );
        // 3 fails (say, the controller went away): reported by the status, the others printed.
        assert_eq!((out.status, out.stdout.as_str()), (Some(1), "4\n1\n"));
        assert!(log.ends_with("scancel 4\nscancel 3\nscancel 1\n"), "{log}");
        let (out, _) = run_with_fakes(
            &Slurm.cancel_tagged_command("1a2b3c4d"),
            &[(
                "squeue",
                &fake_printing("squeue", "slurm", "state_controller_down"),
            )],
        );
        assert_eq!(out.status, Some(1));
    }

    #[test]
    fn cancel_by_id_for_scripts_knows_clusters() {
        use crate::scheduler::test_support::run_with_fakes;
        for (id, expected) in [("42", "scancel 42\n"), ("42;alps", "scancel -M alps 42\n")] {
            let mut cmd = Slurm.cancel_id_prefix();
            cmd.push(id.into());
            let (out, log) =
                run_with_fakes(&cmd, &[("scancel", "echo \"scancel $*\" >> \"$FAKE_LOG\"")]);
            assert!(out.ok());
            assert_eq!(log, expected);
            let mut joined = Slurm.cancel_command(&Slurm.job_id(id).unwrap());
            joined.insert(0, "scancel".into());
            assert_eq!(format!("{}\n", joined[1..].join(" ")), expected);
        }
    }

    #[test]
    fn jobs_carry_the_tag_and_are_not_requeued() {
        let spec = JobSpec {
            tag: Some("1a2b3c4d".into()),
            command: vec!["pvserver".into()],
            ..JobSpec::new("pvserver")
        };
        let script = Slurm.render_script(&spec).unwrap();
        assert!(script.contains("#SBATCH --job-name=pvserver-1a2b3c4d\n#SBATCH --no-requeue\n"));
        let bad = JobSpec {
            tag: Some("1a2b'x".into()),
            ..spec
        };
        assert!(matches!(
            Slurm.render_script(&bad),
            Err(ScriptError::Unrepresentable {
                field: "session tag",
                ..
            })
        ));
    }
}
