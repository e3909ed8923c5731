//! Kept allocations and the questions the session asks the scheduler beyond its job's state.
//!
//! [`nodes_finding`]: the one look at a partition's nodes when a pending reason says nodes
//! are unavailable ([`crate::scheduler::nodes`]).
//!
//! `--keep-job`: the job's node agent serves pvserver again after each client
//! ([`serve_again_argv`]: `pvlaunch node --serve-again --idle`), the session key stays on the
//! cluster, the cleanup line says whether the job was really kept ([`kept_step`]: not when it
//! had ended), and the local registry remembers it ([`KeptSession`], one JSON file per kept
//! session in [`registry_dir`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::scheduler::{JobState, Kind, nodes};
use crate::ssh::{self, Master};

/// Whether the partition `plan`'s job asks for has too few usable nodes, in words (`None`:
/// enough, another scheduler than Slurm, or the question could not be answered: the wait goes
/// on, bounded by the queue timeout).
pub async fn nodes_finding(master: &Master, plan: &Plan) -> Option<String> {
    if plan.scheduler != Kind::Slurm {
        return None;
    }
    let cmd = crate::quote::join(nodes::slurm_nodes_command(plan.job.queue.as_deref())).ok()?;
    let out = match master.exec(&cmd, None, ssh::COMMAND_TIMEOUT).await {
        Ok(out) if out.success() => out,
        Ok(out) => {
            tracing::info!("`{cmd}` failed: {}", out.stderr.trim());
            return None;
        }
        Err(err) => {
            tracing::info!("`{cmd}` failed: {err}");
            return None;
        }
    };
    let finding = nodes::too_few_nodes(&out.stdout, plan.job.nodes)?;
    let partition = plan.job.queue.as_deref().unwrap_or("the default partition");
    Some(format!("`{cmd}` ({partition}): {finding}"))
}

/// How long a kept allocation's node agent waits for an attach before it ends the job
/// (`pvlaunch node --serve-again --idle`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);

/// The environment variable that names the registry's folder instead of the XDG state dir.
pub const STATE_DIR_VAR: &str = "PVLAUNCH_STATE_DIR";

/// The job's command for a kept allocation: a node agent that listens (two-hop) serves again
/// and again (`--serve-again --idle`), so that `pvlaunch attach` finds a fresh pvserver. Other
/// commands are returned as they are (`false`: this path cannot serve a second client).
pub fn serve_again_argv(mut command: Vec<String>, idle: Duration) -> (Vec<String>, bool) {
    let end = command
        .iter()
        .position(|w| w == "--")
        .unwrap_or(command.len());
    let agent = command.get(1).is_some_and(|w| w == "node")
        && command[..end].iter().any(|w| w == "--listen");
    if !agent {
        return (command, false);
    }
    let extra = [
        "--serve-again".to_string(),
        "--idle".to_string(),
        format!("{}s", idle.as_secs().max(1)),
    ];
    command.splice(end..end, extra);
    (command, true)
}

/// The cleanup line for a job `--keep-job` would keep: kept only when it has not ended.
/// `state`: the scheduler's last answer (`None`: not known).
pub fn kept_step(job: &str, state: Option<&JobState>) -> (String, bool, Option<String>) {
    match state {
        Some(JobState::Finished { state, .. }) => (
            format!("job {job} had already ended ({state}): nothing kept"),
            false,
            Some("the job's output on the login node says why it ended".into()),
        ),
        _ => (
            format!("job {job} kept (--keep-job)"),
            true,
            Some(format!(
                "`pvlaunch sessions` lists it, `pvlaunch attach {job}` connects a client again, `pvlaunch stop {job}` cancels it"
            )),
        ),
    }
}

/// One kept allocation, as the local registry remembers it (a JSON file per session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSession {
    /// The profile's name.
    pub profile: String,
    /// The login host the session used.
    pub login: String,
    /// The scheduler (`slurm`, `pbs`, ...).
    pub scheduler: String,
    /// The job's id.
    pub job: String,
    /// The session's tag (the job's queue name ends with it).
    pub tag: String,
    /// The recipe it runs.
    pub recipe: String,
    /// The job's output file on the login node, relative to the home folder.
    pub output: String,
    /// The session key's file on the cluster (relative to the home folder), when the hops
    /// are owned.
    pub key_file: Option<String>,
    /// Seconds since the epoch when it was kept.
    pub kept_at: u64,
}

/// The registry's folder: `$PVLAUNCH_STATE_DIR`, else the XDG state dir
/// (`~/.local/state/pvlaunch/sessions`), else the local data dir.
pub fn registry_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(STATE_DIR_VAR).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("sessions"));
    }
    let dirs = directories::ProjectDirs::from("", "", "pvlaunch")?;
    let base = dirs.state_dir().unwrap_or(dirs.data_local_dir());
    Some(base.join("sessions"))
}

/// The file of one session: `LOGIN-JOB.json`, every other character than letters, digits and
/// `.-_` replaced by `_`.
pub fn entry_file(dir: &Path, login: &str, job: &str) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!("{}-{}.json", clean(login), clean(job)))
}

/// Remember a kept session (the file is replaced atomically).
pub fn save(dir: &Path, entry: &KeptSession) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = entry_file(dir, &entry.login, &entry.job);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(entry).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text + "\n")?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Every session the registry remembers, oldest first; unreadable files are skipped (with a
/// log line). A missing folder is an empty registry.
pub fn load_all(dir: &Path) -> Vec<KeptSession> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut all: Vec<KeptSession> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            match serde_json::from_str(&text) {
                Ok(entry) => Some(entry),
                Err(err) => {
                    tracing::info!("skipping {}: {err}", p.display());
                    None
                }
            }
        })
        .collect();
    all.sort_by(|a, b| (a.kept_at, &a.job).cmp(&(b.kept_at, &b.job)));
    all
}

/// Forget a session (no error when it was not remembered).
pub fn forget(dir: &Path, login: &str, job: &str) -> std::io::Result<()> {
    match std::fs::remove_file(entry_file(dir, login, job)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The sessions `NAME|JOB` names: those with this job id, else those of this profile.
pub fn select<'a>(all: &'a [KeptSession], name_or_job: &str) -> Vec<&'a KeptSession> {
    let by_job: Vec<_> = all.iter().filter(|s| s.job == name_or_job).collect();
    if !by_job.is_empty() {
        return by_job;
    }
    all.iter().filter(|s| s.profile == name_or_job).collect()
}

/// `--keep-job`: the job's node agent serves again ([`serve_again_argv`]); when this path
/// cannot (not two-hop with pvlaunch's own hops), say that the kept job takes no second client.
pub fn serve_again(spec: &mut crate::scheduler::JobSpec, reporter: &mut crate::events::Reporter) {
    let (command, again) = serve_again_argv(std::mem::take(&mut spec.command), DEFAULT_IDLE);
    spec.command = command;
    if !again {
        reporter.emit(crate::events::Event::Warning {
            message: "--keep-job keeps the allocation, but only the two-hop recipe with pvlaunch on the cluster serves pvserver again after the client leaves (`--recipe two-hop`): this job takes no second client".into(),
        });
    }
}

/// Whether the job may still be kept: `false` only when the scheduler says it has ended (an
/// unanswered question keeps it: an allocation is the expensive thing to lose).
pub async fn still_there(
    master: Option<&Master>,
    scheduler: &dyn crate::scheduler::Scheduler,
    job: Option<&crate::scheduler::JobId>,
) -> bool {
    let (Some(master), Some(job)) = (master, job) else {
        return true;
    };
    !matches!(
        crate::job::query_state(master, scheduler, job).await,
        Ok(JobState::Finished { .. })
    )
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write the kept session into the local registry (a failure is only logged: the scheduler's
/// own listing finds the job by its tag anyway).
pub fn remember(plan: &Plan, job: &crate::scheduler::JobId) {
    let Some(dir) = registry_dir() else { return };
    let entry = KeptSession {
        profile: plan.profile.clone(),
        login: plan.login.clone(),
        scheduler: plan.scheduler.name().to_string(),
        job: job.as_str().to_string(),
        tag: plan.session_tag.clone(),
        recipe: plan.recipe.name().to_string(),
        output: format!(
            "{}/{}",
            crate::plan::REMOTE_DIR,
            crate::plan::output_path(&plan.session_tag)
        ),
        key_file: Some(format!(
            "{}/keys/{}.key",
            crate::plan::REMOTE_DIR,
            plan.session_tag
        )),
        kept_at: now_secs(),
    };
    if let Err(err) = save(&dir, &entry) {
        tracing::warn!("cannot remember kept job {job} in {}: {err}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(job: &str, profile: &str, at: u64) -> KeptSession {
        KeptSession {
            profile: profile.into(),
            login: "login.example.org".into(),
            scheduler: "slurm".into(),
            job: job.into(),
            tag: "1a2b3c4d".into(),
            recipe: "two-hop".into(),
            output: ".cache/pvlaunch/pvserver-1a2b3c4d.out".into(),
            key_file: Some("/home/u/.cache/pvlaunch/keys/1a2b3c4d.key".into()),
            kept_at: at,
        }
    }

    #[test]
    fn the_registry_remembers_lists_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("sessions");
        assert!(load_all(&reg).is_empty(), "no folder: nothing kept");
        let a = entry("42", "cluster-a", 20);
        let b = entry("7;c2", "cluster-b", 10);
        let path = save(&reg, &a).unwrap();
        assert_eq!(path.file_name().unwrap(), "login_example_org-42.json");
        save(&reg, &b).unwrap();
        std::fs::write(reg.join("junk.json"), "{").unwrap();
        std::fs::write(reg.join("notes.txt"), "x").unwrap();
        assert_eq!(load_all(&reg), vec![b.clone(), a.clone()], "oldest first");
        // Saving again replaces.
        let mut a2 = a.clone();
        a2.recipe = "relay".into();
        save(&reg, &a2).unwrap();
        assert_eq!(load_all(&reg), vec![b.clone(), a2.clone()]);

        let all = load_all(&reg);
        assert_eq!(select(&all, "42"), vec![&a2]);
        assert_eq!(select(&all, "cluster-b"), vec![&b]);
        assert!(select(&all, "nothing").is_empty());

        forget(&reg, &a.login, "42").unwrap();
        forget(&reg, &a.login, "42").unwrap();
        assert_eq!(load_all(&reg), vec![b]);
    }

    #[test]
    fn only_a_listening_node_agent_serves_again() {
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (argv, ok) = serve_again_argv(
            w(&[
                "/p/pvlaunch",
                "node",
                "--key-file",
                "K",
                "--listen",
                "0",
                "--",
                "srun",
                "pvserver",
            ]),
            Duration::from_secs(1800),
        );
        assert!(ok);
        assert_eq!(
            argv,
            w(&[
                "/p/pvlaunch",
                "node",
                "--key-file",
                "K",
                "--listen",
                "0",
                "--serve-again",
                "--idle",
                "1800s",
                "--",
                "srun",
                "pvserver"
            ])
        );
        let to = w(&[
            "/p/pvlaunch",
            "node",
            "--key-file",
            "K",
            "--to",
            "login:1",
            "--",
            "pvserver",
        ]);
        assert_eq!(serve_again_argv(to.clone(), DEFAULT_IDLE), (to, false));
        let plain = w(&["srun", "pvserver", "--listen"]);
        assert_eq!(
            serve_again_argv(plain.clone(), DEFAULT_IDLE),
            (plain, false)
        );
    }

    #[test]
    fn a_job_that_ended_is_not_called_kept() {
        let ended = JobState::Finished {
            state: "COMPLETED".into(),
            exit_code: Some(0),
            signal: None,
            nodes: vec![],
        };
        let (step, ok, _) = kept_step("42", Some(&ended));
        assert_eq!(step, "job 42 had already ended (COMPLETED): nothing kept");
        assert!(!ok);
        let running = JobState::Running {
            nodes: vec!["node1".into()],
        };
        let (step, ok, detail) = kept_step("42", Some(&running));
        assert_eq!(step, "job 42 kept (--keep-job)");
        assert!(ok);
        assert!(detail.unwrap().contains("pvlaunch attach 42"));
    }
}
