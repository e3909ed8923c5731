//! The batch job on the login node, through the session's ssh master: the guard that cancels
//! it when the link drops, its state, and the tail of its output.

use std::time::Duration;

use tokio::process::Child;

use crate::plan::{self, Plan};
use crate::quote;
use crate::scheduler::{CommandOutput, JobId, JobState, Scheduler};
use crate::ssh::{self, Master};

/// Lines of the job's output shown when it fails.
pub const TAIL_LINES: usize = 20;

/// The remote guard: reads its stdin until the session ends; EOF (the link dropped) cancels
/// the job, the line `keep` leaves it.
pub fn start_guard(
    master: &Master,
    scheduler: &dyn Scheduler,
    job: &JobId,
) -> Result<Child, String> {
    let cancel = quote::join(scheduler.cancel_command(job)).map_err(|e| e.to_string())?;
    let guard = format!(
        "while IFS= read -r line; do [ \"$line\" = keep ] && exit 0; done; {cancel} >/dev/null 2>&1"
    );
    let argv = master.target.remote_argv(&guard);
    let mut cmd = crate::process::command(&argv, crate::process::Kind::Helper);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn().map_err(|e| e.to_string())
}

/// Where the job is; once it left the queue, how it ended (accounting may lag a little).
pub async fn query_state(
    master: &Master,
    scheduler: &dyn Scheduler,
    job: &JobId,
) -> Result<JobState, String> {
    let cmd = quote::join(scheduler.state_command(job)).map_err(|e| e.to_string())?;
    let out = master
        .exec(&cmd, None, ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(state) = scheduler
        .parse_state(&CommandOutput::from(&out))
        .map_err(|e| e.to_string())?
    {
        return Ok(state);
    }
    // Out of the queue: ask accounting, which may lag a little.
    for _ in 0..5 {
        let cmd = quote::join(scheduler.finished_command(job)).map_err(|e| e.to_string())?;
        let out = master
            .exec(&cmd, None, ssh::COMMAND_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(state) = scheduler
            .parse_finished(&CommandOutput::from(&out))
            .map_err(|e| e.to_string())?
        {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(JobState::Finished {
        state: "UNKNOWN (left the queue)".into(),
        exit_code: None,
        signal: None,
        nodes: vec![],
    })
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
