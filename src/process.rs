//! Supervision of child processes, with one written policy:
//!
//! - Every child gets a parent-death signal (SIGTERM for ssh, SIGKILL for clients), so nothing
//!   outlives pvlaunch, even when
//!   pvlaunch itself is SIGKILLed (ParaView 6 does that when the user disconnects). The signal
//!   is tied to the spawning thread, which is why sessions run on a current-thread runtime.
//! - ssh children stay in pvlaunch's process group, because ssh may prompt on the terminal
//!   (a background group would be stopped by SIGTTIN). They ignore SIGINT and SIGQUIT, so a
//!   Ctrl-C reaches pvlaunch alone, which then cleans up through them in order.
//! - Local clients (ParaView, pvpython) get their own process group and are stopped as a
//!   group: SIGTERM, a grace period, then SIGKILL.
//! - `kill_on_drop` is a last safety net only.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How a child relates to the terminal and to Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stays in pvlaunch's group, ignores SIGINT/SIGQUIT (ssh).
    Helper,
    /// Its own process group (local clients).
    Group,
}

/// A command ready to spawn with the policy applied.
pub fn command(argv: &[String], kind: Kind) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).kill_on_drop(true).stdin(Stdio::null());
    #[cfg(target_os = "linux")]
    {
        let ignore_interrupts = kind == Kind::Helper;
        // ssh exits cleanly on SIGTERM (closing its channels, which the login node's guard
        // notices); a client gets SIGKILL, because GUI toolkits may linger in their handlers.
        let death_signal = if kind == Kind::Helper {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        // SAFETY: only async-signal-safe calls (prctl, signal, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if ignore_interrupts {
                    libc::signal(libc::SIGINT, libc::SIG_IGN);
                    libc::signal(libc::SIGQUIT, libc::SIG_IGN);
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    if kind == Kind::Group {
        cmd.process_group(0);
    }
    cmd
}

/// Stop a child's process group: SIGTERM, wait up to `grace`, then SIGKILL. Reaps the child.
pub async fn stop_group(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let pgid = pid as libc::pid_t;
    // SAFETY: signalling a process group we created; ESRCH is harmless.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait().await;
    }
    // Stragglers in the group (e.g. a GUI's helpers) go too.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Stop one child: SIGTERM, wait up to `grace`, then SIGKILL. Reaps it.
pub async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The last `n` non-empty lines of a text.
pub fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
