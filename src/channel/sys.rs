//! The channel server's only `unsafe` code: the commands' hangup signal.

/// Give the command SIGHUP when the server dies (a terminal's hangup: the guard ignores it
/// and cancels on end of input; a plain command ends). The signal is tied to the spawning
/// thread: the server runs on one thread. A command whose server died before the signal was
/// armed exits at once.
pub(crate) fn hang_up_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// SIGHUP to the process group `pgid`, whose leader is our child and not yet reaped (so the
/// group id is still its own).
pub(crate) fn hang_up_group(pgid: u32) {
    // SAFETY: kill(2) touches no memory; ESRCH is harmless.
    unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGHUP) };
}

/// Point descriptors 0 and 1 at /dev/null, once the channel has its own duplicates of them:
/// closing those then ends the channel for the peer, and nothing printed by mistake on
/// stdout can reach it.
pub(crate) fn stdio_to_null() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        // SAFETY: dup2(2) on a descriptor we own onto a standard descriptor; touches no memory.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
