//! Coming back after a lost link (docs/resilience.md).
//!
//! A session whose path is pvlaunch's own on both ends of the network (the relay recipe with
//! owned hops: the workstation's relay in front of the client, the relay on the login node in
//! front of pvserver's agent) survives a dropped link. What stays on the login node while the
//! workstation is gone:
//!
//! - the guard ([`crate::job`]), which waits the grace before it cancels, unless another
//!   guard of the session refreshes the lease first ("handed over");
//! - the login relay (`pvlaunch relay --lease`), which lives while the lease is fresh, and
//!   whose connection to the workstation resumes over the next forward (`crate::resume`).
//!
//! When the session's ssh connection ends, the session logs in again (the same way as the
//! first time: one prompt per attempt, never a storm), and [`restore`] puts back what the
//! session needs there: a new guard (which takes the job over from the old one), and the
//! forward of the login node's private socket to the workstation's relay.

use std::time::Duration;

use crate::job::{self, Guard};
use crate::quote;
use crate::scheduler::{JobId, Scheduler};
use crate::ssh::{self, Master};

/// The first pause between attempts to log in again; it doubles up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(15);
/// How long one attempt may take to reach the login node (ssh's `ConnectTimeout`): a link
/// still down fails the attempt rather than waiting for the kernel's own timeout.
pub const CONNECT_TIMEOUT_SECS: u64 = 15;

/// What a session needs to come back.
#[derive(Debug, Clone)]
pub struct Resumable {
    /// The login node's own name at the first login: a load-balanced login name may land
    /// elsewhere, where this session's relay is not.
    pub login_host: String,
    /// The session's key file and run folder (the new guard removes them at the end).
    pub key_file: String,
    pub run_dir: String,
    /// The lease file in the run folder.
    pub lease: String,
    /// The login node's end of the forward to the workstation's relay.
    pub forward_socket: String,
    /// The workstation's relay, where the forward goes.
    pub relay_port: u16,
    /// How long after the loss the session tries.
    pub grace: Duration,
}

/// The pauses between attempts: 1, 2, 4, 8, 15, 15, ... seconds.
pub fn pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_PAUSE), |p| Some((*p * 2).min(MAX_PAUSE)))
}

/// The login target for an attempt: the same as the first, with a connect timeout (the
/// command line's `-o` comes before the user's ssh_config, so it wins) and, when the first
/// attempt landed on another login node, that node's own name.
pub fn target_for_attempt(first: &ssh::Target, host: Option<&str>) -> ssh::Target {
    let mut t = first.clone();
    t.extra_options
        .insert(0, format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
    if let Some(h) = host {
        t.extra_options.insert(0, format!("HostName={h}"));
    }
    t
}

/// Why an attempt did not bring the session back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The login name led to another login node.
    #[error("the login name led to {found}, not {wanted}, where this session's relay runs")]
    OtherLoginNode { found: String, wanted: String },
    /// Something on the login node failed.
    #[error("{0}")]
    Failed(String),
}

/// Put back what the session needs on the login node over a new `master`: check that it is
/// the same login node, start a new guard that knows the job, the paths and the lease (the
/// old guard, waiting its grace, sees the lease refreshed and hands the job over), and forward
/// the private socket again to the workstation's relay (the old socket file, left by the
/// dead connection, is removed first: sshd does not replace it).
pub async fn restore(
    master: &Master,
    r: &Resumable,
    scheduler: &dyn Scheduler,
    tag: &str,
    job: &JobId,
) -> Result<Guard, RestoreError> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| RestoreError::Failed(format!("{what}: {e}"));
    let out = master
        .exec("hostname", None, ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| failed("`hostname` on the login node", &e))?;
    let found = out.stdout.trim();
    if !out.success() || found.is_empty() {
        return Err(failed("`hostname` on the login node", &out.stderr.trim()));
    }
    if found != r.login_host {
        return Err(RestoreError::OtherLoginNode {
            found: found.to_string(),
            wanted: r.login_host.clone(),
        });
    }
    let mut guard = job::start_guard(master, scheduler, tag, r.grace)
        .await
        .map_err(|e| failed("the guard", &e))?;
    let told = async {
        guard.job_known(job).await?;
        guard.remove_at_end(&r.key_file).await?;
        guard.remove_at_end(&r.run_dir).await?;
        guard.lease(&r.lease).await
    };
    told.await.map_err(|e| failed("the guard", &e))?;
    let socket = quote::quote(&r.forward_socket).map_err(|e| failed("the socket", &e))?;
    master
        .exec(&format!("rm -f {socket}"), None, ssh::COMMAND_TIMEOUT)
        .await
        .map_err(|e| failed("removing the old socket", &e))?;
    master
        .forward_remote_socket(&r.forward_socket, r.relay_port)
        .await
        .map_err(|e| failed("the forward to the workstation", &e))?;
    Ok(guard)
}

/// End the lease (at the end of the session): the login relay stops within a second.
pub async fn end_lease(master: &Master, r: &Resumable) {
    if let Ok(lease) = quote::quote(&r.lease) {
        let _ = master
            .exec(&format!("rm -f {lease}"), None, ssh::COMMAND_TIMEOUT)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest() {
        let p: Vec<u64> = pauses().take(7).map(|d| d.as_secs()).collect();
        assert_eq!(p, [1, 2, 4, 8, 15, 15, 15]);
    }

    #[test]
    fn an_attempt_has_a_connect_timeout_and_may_name_the_login_node() {
        let first = ssh::Target {
            program: "ssh".into(),
            destination: "cluster".into(),
            user: None,
            port: None,
            jump_hosts: vec![],
            control_path: "/tmp/x/cm".into(),
            extra_options: vec!["UserKnownHostsFile=/k".into()],
        };
        let t = target_for_attempt(&first, None);
        assert_eq!(
            t.extra_options,
            ["ConnectTimeout=15", "UserKnownHostsFile=/k"]
        );
        let t = target_for_attempt(&first, Some("login3"));
        assert_eq!(t.extra_options[0], "HostName=login3");
        assert_eq!(t.destination, "cluster");
    }
}
