//! Kept allocations and the questions the session asks the scheduler beyond its job's state.
//!
//! [`nodes_finding`]: the one look at a partition's nodes when a pending reason says nodes
//! are unavailable ([`crate::scheduler::nodes`]).

use crate::plan::Plan;
use crate::scheduler::{Kind, nodes};
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
