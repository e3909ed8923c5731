//! Moving bytes one way, from one socket to the other, until end of stream.
//!
//! Two ways: through a user-space buffer, and on Linux with `splice(2)` through a kernel pipe
//! (the bytes never reach user space). Both wait for readiness, move what is there, then wait
//! again; nothing is read from the source until everything read before has been written, so the
//! relay holds at most one buffer (or pipe) of data per direction and back-pressure passes
//! through: a slow reader slows the writer down, no data is dropped or reordered.
//!
//! Memory: a direction holds no buffer while it waits for data. When data arrives it takes a
//! buffer, moves everything available and frees it again, so thousands of idle connections
//! cost little. A direction that fills its whole buffer in one read is carrying bulk data; in
//! [`CopyMode::Auto`] it then switches to `splice(2)` for the rest of the connection.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::CopyMode;
use super::sock::Sock;

/// The user-space buffer of one direction while data flows.
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;
/// The pipe size asked for when splicing (the kernel may give less).
#[cfg(target_os = "linux")]
pub(crate) const PIPE_SIZE: usize = 1024 * 1024;

/// Bytes moved in one direction and when they last moved (for the idle timeout).
#[derive(Debug)]
pub(crate) struct Progress {
    start: Instant,
    bytes: AtomicU64,
    /// Milliseconds after `start` when data last moved in this direction.
    last_activity: AtomicU64,
}

impl Progress {
    pub(crate) fn new(start: Instant) -> Progress {
        Progress {
            start,
            bytes: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn last_activity(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_activity.load(Ordering::Relaxed))
    }

    fn moved(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_activity.store(ms, Ordering::Relaxed);
    }
}

/// Copy `src` to `dst` until `src` ends, then send end-of-stream to `dst` (half-close).
pub(crate) async fn one_way(
    src: &Sock,
    dst: &Sock,
    mode: CopyMode,
    progress: &Progress,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if mode == CopyMode::Splice {
        return spliced(src, dst, progress).await;
    }
    loop {
        src.readable().await?;
        // Taken when data is ready, freed when the source runs dry.
        let mut buf: Vec<u8> = Vec::with_capacity(BUFFER_SIZE);
        loop {
            buf.clear();
            let n = match src.try_read_buf(&mut buf) {
                Ok(0) => return dst.shutdown_write(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            write_all(dst, &buf[..n]).await?;
            progress.moved(n);
            #[cfg(target_os = "linux")]
            if n == buf.capacity() && mode == CopyMode::Auto {
                tracing::debug!("bulk transfer, switching to splice");
                return spliced(src, dst, progress).await;
            }
        }
    }
}

async fn write_all(dst: &Sock, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The zero-copy loop: fill the (empty) pipe from `src`, drain it completely into `dst`, again.
///
/// The pipe is always empty when filling starts, so `WouldBlock` while filling can only mean
/// that `src` has no data, and `WouldBlock` while draining only that `dst` is full: tokio's
/// readiness tracking never mistakes a full pipe for an idle socket.
#[cfg(target_os = "linux")]
async fn spliced(src: &Sock, dst: &Sock, progress: &Progress) -> io::Result<()> {
    use std::os::fd::AsFd;
    use tokio::io::Interest;

    let pipe = match super::sys::Pipe::new(PIPE_SIZE) {
        Ok(pipe) => pipe,
        Err(err) => {
            // Out of descriptors, most likely: carry on without the pipe.
            tracing::debug!("no pipe for splice ({err}), copying through a buffer");
            return Box::pin(one_way(src, dst, CopyMode::Buffered, progress)).await;
        }
    };
    let chunk = pipe.capacity();
    let mut first = true;
    loop {
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || pipe.fill_from(src.as_fd(), chunk)) {
            Ok(0) => return dst.shutdown_write(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if first && e.raw_os_error() == Some(libc::EINVAL) => {
                // This kind of socket cannot splice; nothing has moved yet.
                tracing::debug!("splice not supported here, copying through a buffer");
                return Box::pin(one_way(src, dst, CopyMode::Buffered, progress)).await;
            }
            Err(e) => return Err(e),
        };
        first = false;
        let mut left = n;
        while left > 0 {
            match dst.try_io(Interest::WRITABLE, || pipe.drain_into(dst.as_fd(), left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        progress.moved(n);
    }
}
