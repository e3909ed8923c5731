//! The relay's only `unsafe` code: thin wrappers over a few system calls that std and tokio do
//! not expose.
//!
//! Every function here takes borrowed or owned file descriptors (never raw integers from the
//! caller), checks the return value and turns `-1` into `io::Error::last_os_error()`. Nothing
//! here keeps state or touches memory the kernel could write to: `splice(2)` moves data between
//! two descriptors inside the kernel, `pipe2(2)` fills a two-element array we own, and the
//! `rlimit` calls read and write one struct on our stack.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Raise the soft limit on open files to the hard limit; returns the new soft limit.
///
/// Each relayed connection holds two sockets (and up to two pipes on Linux), so the common
/// default soft limit of 1024 caps the relay at a few hundred connections.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit that lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
    Ok(u64::from(limit.rlim_cur))
}

/// A kernel pipe used as the in-kernel buffer between two `splice(2)` calls. Both ends are
/// non-blocking and close-on-exec; they are closed when the pipe is dropped.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Open a pipe and try to grow it to `want` bytes. Growing may be refused (the per-user pipe
    /// page limit, `fs.pipe-user-pages-soft`, or `fs.pipe-max-size`); the pipe then keeps the
    /// size the kernel gave it, which [`Pipe::capacity`] reports.
    #[cfg(target_os = "linux")]
    pub fn new(want: usize) -> io::Result<Pipe> {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two c_ints, as pipe2(2) requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take an int argument and touch no memory; the
        // descriptor is open for the duration of the calls.
        let capacity = unsafe {
            let _ = libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        if capacity < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity: capacity as usize,
        })
    }

    /// How many bytes the pipe holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Move up to `len` bytes from `from` (a socket) into the pipe without copying them to user
    /// space. `Ok(0)` means end of stream. Non-blocking: `WouldBlock` when `from` has no data
    /// (or, if the pipe is not empty, when the pipe is full).
    #[cfg(target_os = "linux")]
    pub fn fill_from(&self, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(from, self.write.as_fd(), len)
    }

    /// Move up to `len` bytes from the pipe into `to` (a socket). Non-blocking: `WouldBlock`
    /// when `to` cannot take more data (the pipe must not be empty).
    #[cfg(target_os = "linux")]
    pub fn drain_into(&self, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        splice(self.read.as_fd(), to, len)
    }
}

#[cfg(target_os = "linux")]
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: both descriptors are borrowed, hence open for the duration of the call; null
        // offsets are required for pipes and sockets; no user memory is passed.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn splice_moves_bytes_through_a_pipe_and_reports_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        let pipe = Pipe::new(1 << 20).unwrap();
        assert!(pipe.capacity() >= 4096);
        a.write_all(b"hello, pipe").unwrap();
        let n = pipe.fill_from(b.as_fd(), pipe.capacity()).unwrap();
        assert_eq!(n, 11);
        assert_eq!(pipe.drain_into(c.as_fd(), n).unwrap(), 11);
        let mut got = [0u8; 11];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, pipe");
        // No data: WouldBlock (the socket is non-blocking for splice via SPLICE_F_NONBLOCK).
        b.set_nonblocking(true).unwrap();
        let err = pipe.fill_from(b.as_fd(), 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert_eq!(pipe.fill_from(b.as_fd(), 4096).unwrap(), 0);
    }

    #[test]
    fn raising_the_fd_limit_never_lowers_it() {
        let soft = raise_fd_limit().unwrap();
        assert!(soft >= 256);
        assert!(effective_uid() == effective_uid());
    }
}
