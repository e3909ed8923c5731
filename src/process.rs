//! Supervision of child processes, with one written policy:
//!
//! - Every child gets a parent-death signal (SIGTERM for ssh, SIGKILL for clients), so nothing
//!   outlives pvlaunch, even when
//!   pvlaunch itself is SIGKILLed (ParaView 6 does that when the user disconnects). The signal
//!   is tied to the spawning thread, which is why sessions run on a current-thread runtime.
//!   A child whose parent died before the signal was armed exits at once: it compares its
//!   parent with pvlaunch's pid (taken before the fork), not with 1, so pvlaunch may itself be
//!   pid 1 (a container's entrypoint).
//! - ssh children stay in pvlaunch's process group, because ssh may prompt on the terminal
//!   (a background group would be stopped by SIGTTIN). They ignore SIGINT and SIGQUIT, so a
//!   Ctrl-C reaches pvlaunch alone, which then cleans up through them in order.
//! - Local clients (ParaView, pvpython) get their own process group and are stopped as a
//!   group: SIGTERM, a grace period, then SIGKILL. The group is signalled only while its
//!   leader is alive or a zombie not yet reaped: until it is reaped, its pid (the group id)
//!   cannot be given to another process, so a late SIGKILL cannot hit a stranger's group.
//! - SIGINT, SIGTERM and SIGHUP are received in one place, [`Signals`].
//! - `kill_on_drop` is a last safety net only.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// After SIGKILL, how long to wait for a group's leader to die before reaping it anyway
/// (a process in uninterruptible sleep dies only when its system call returns).
pub const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often to look whether a signalled leader has exited: the first look, and the longest
/// pause between looks.
pub const EXIT_POLL_FIRST: Duration = Duration::from_millis(5);
pub const EXIT_POLL_MAX: Duration = Duration::from_millis(100);

/// How a child relates to the terminal and to Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stays in pvlaunch's group, ignores SIGINT/SIGQUIT (ssh).
    Helper,
    /// Its own process group (local clients).
    Group,
    /// Like [`Kind::Helper`], but it may outlive pvlaunch: no death signal, not killed on drop
    /// (an ssh master kept between sessions, which goes to the background itself).
    Detached,
}

/// Whether process `pid` exists and is this user's to signal.
pub fn exists(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks; it touches no memory.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// A command ready to spawn with the policy applied.
pub fn command(argv: &[String], kind: Kind) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .kill_on_drop(kind != Kind::Detached)
        .stdin(Stdio::null());
    #[cfg(target_os = "linux")]
    if kind != Kind::Detached {
        let ignore_interrupts = kind == Kind::Helper;
        // ssh exits cleanly on SIGTERM (closing its channels, which the login node's guard
        // notices); a client gets SIGKILL, because GUI toolkits may linger in their handlers.
        let death_signal = if kind == Kind::Helper {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        // Taken here, in the parent: the child compares its parent with it after arming the
        // death signal.
        let parent = std::process::id() as libc::pid_t;
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
                // The parent may have died before prctl took effect: the child was then
                // reparented (to init or a subreaper).
                if libc::getppid() != parent {
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

/// Stop a child's process group: SIGTERM, wait up to `grace`, then SIGKILL; then SIGKILL to
/// what is left of the group. Reaps the child.
pub async fn stop_group(child: &mut Child, grace: Duration) {
    stop_group_with(child, grace, |pgid, signal| {
        // SAFETY: kill(2) touches no memory; the group is ours and its id is held by the
        // unreaped leader (see `stop_group_with`). ESRCH is harmless.
        unsafe { libc::kill(-pgid, signal) };
    })
    .await;
}

/// [`stop_group`] with the group signal as a parameter (tests watch when it is sent).
async fn stop_group_with(
    child: &mut Child,
    grace: Duration,
    mut kill_group: impl FnMut(libc::pid_t, libc::c_int),
) {
    // `id()` is `None` once tokio has reaped the child: the group id may be reused then.
    let Some(pid) = child.id() else { return };
    let pid = pid as libc::pid_t;
    kill_group(pid, libc::SIGTERM);
    let mut state = wait_exit(pid, grace).await;
    if state == Leader::Running {
        kill_group(pid, libc::SIGKILL);
        state = wait_exit(pid, KILL_WAIT).await;
    }
    // Stragglers in the group (e.g. a GUI's helpers) go too, while the leader, alive or a
    // zombie, still holds the group id.
    if state != Leader::Gone {
        kill_group(pid, libc::SIGKILL);
    }
    let _ = child.wait().await;
}

/// Where a child stands, seen without reaping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Running,
    /// Exited, not yet reaped: its pid is still taken.
    Zombie,
    /// Already reaped (by someone else), or not our child.
    Gone,
}

/// Look at a child without reaping it: `waitid(P_PID, pid, WEXITED | WNOWAIT | WNOHANG)`.
fn peek(pid: libc::pid_t) -> Leader {
    // SAFETY: an all-zero siginfo_t is a valid value; waitid writes at most one siginfo_t into
    // it, and WNOWAIT leaves the child waitable (tokio reaps it later).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        )
    };
    if rc != 0 {
        return if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            Leader::Running
        } else {
            Leader::Gone
        };
    }
    // SAFETY: after a successful waitid, si_pid is set (0 when no child has changed state).
    if unsafe { info.si_pid() } == 0 {
        Leader::Running
    } else {
        Leader::Zombie
    }
}

/// Wait up to `limit` for a child to exit, without reaping it.
async fn wait_exit(pid: libc::pid_t, limit: Duration) -> Leader {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = EXIT_POLL_FIRST;
    loop {
        let state = peek(pid);
        if state != Leader::Running || tokio::time::Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = (pause * 2).min(EXIT_POLL_MAX);
    }
}

/// Stop one child: SIGTERM, wait up to `grace`, then SIGKILL. Reaps it.
pub async fn stop(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    // SAFETY: signalling our own child, not yet reaped (`id()` is `Some`).
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

/// SIGINT, SIGTERM and SIGHUP, received in one place (the session's coordinator and the relay
/// `select!` on [`Signals::next`]).
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Start receiving the three signals. Needs a tokio runtime with signals enabled.
    pub(crate) fn try_new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// [`Signals::try_new`], panicking when the runtime cannot install the handlers (a bug:
    /// the runtime was built without `enable_all`).
    #[allow(dead_code)] // for the session coordinator
    pub(crate) fn new() -> Signals {
        Signals::try_new().expect("signal handler")
    }

    /// The next signal's number.
    pub(crate) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}

/// The processes of a process group and every descendant of `root` (they may have left the
/// group), read from /proc; `root` included. Empty when /proc cannot be read.
pub fn group_and_descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent, group) of every process.
    let table: Vec<(u32, u32, u32)> = dir
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (ppid, pgrp) = parse_stat(&stat)?;
            Some((pid, ppid, pgrp))
        })
        .collect();
    let mut found: Vec<u32> = vec![root];
    found.extend(
        table
            .iter()
            .filter(|(pid, _, g)| *g == root && *pid != root)
            .map(|r| r.0),
    );
    // Descendants: add children of what was found until nothing new turns up.
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid, _) in &table {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found
}

/// The parent and process group from `/proc/PID/stat` (after the parenthesised command name,
/// which may itself contain spaces and parentheses).
fn parse_stat(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat[stat.rfind(')')? + 1..].trim_start().chars().next()
    }

    fn alive_in_group(pgid: u32) -> Vec<u32> {
        group_and_descendants(pgid)
            .into_iter()
            .filter(|p| *p != pgid)
            .filter(|p| {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                parse_stat(&stat).is_some_and(|(_, g)| g == pgid)
                    && !matches!(proc_state(*p as i32), Some('Z') | None)
            })
            .collect()
    }

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        assert_eq!(
            parse_stat("4242 (a) b (c) S 17 4242 4242 0 -1 4194560"),
            Some((17, 4242))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    /// The group is signalled only while its leader is not reaped, and the straggler that
    /// ignores SIGTERM is killed too.
    #[tokio::test(flavor = "current_thread")]
    async fn group_is_killed_while_the_leader_is_unreaped() {
        // The leader exits on SIGTERM; a member ignores it (SIG_IGN survives exec).
        let argv: Vec<String> = ["sh", "-c", "(trap '' TERM; exec sleep 30) & wait"]
            .map(String::from)
            .to_vec();
        let mut child = command(&argv, Kind::Group).spawn().unwrap();
        let pid = child.id().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive_in_group(pid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the member never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut seen = Vec::new();
        stop_group_with(&mut child, Duration::from_secs(2), |pgid, signal| {
            seen.push((signal, proc_state(pgid)));
            unsafe { libc::kill(-pgid, signal) };
        })
        .await;
        assert!(child.id().is_none(), "the leader is reaped at the end");
        assert!(!seen.is_empty());
        for (signal, state) in &seen {
            assert!(
                state.is_some(),
                "signal {signal} sent after the leader was reaped: {seen:?}"
            );
        }
        // The last signal is the SIGKILL for stragglers, sent to a zombie leader.
        assert_eq!(
            seen.last().unwrap(),
            &(libc::SIGKILL, Some('Z')),
            "{seen:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !alive_in_group(pid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a group member survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn peek_does_not_reap() {
        let argv: Vec<String> = vec!["true".into()];
        let mut child = command(&argv, Kind::Group).spawn().unwrap();
        let pid = child.id().unwrap() as libc::pid_t;
        assert_eq!(wait_exit(pid, Duration::from_secs(5)).await, Leader::Zombie);
        assert_eq!(proc_state(pid), Some('Z'));
        assert_eq!(peek(pid), Leader::Zombie);
        assert!(child.wait().await.unwrap().success());
        assert_eq!(peek(pid), Leader::Gone);
    }

    #[test]
    fn group_and_descendants_finds_children() {
        let me = std::process::id();
        let mut c = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = group_and_descendants(me);
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(found[0], me);
        assert!(found.contains(&c.id()), "{found:?}");
    }
}
