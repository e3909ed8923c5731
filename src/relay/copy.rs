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
//! cost little. A direction whose reads return at least half a buffer is carrying bulk data; in
//! [`CopyMode::Auto`] it then switches to `splice(2)`, and goes back to the buffer (releasing
//! the pipe) after a second without data. Pipes count against the user's pipe allowance
//! (`fs.pipe-user-pages-soft`), which is one more reason not to keep idle ones.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::config::CopyMode;
use super::sock::Stream;

/// The user-space buffer of one direction while data flows.
pub(crate) const BUFFER_SIZE: usize = 64 * 1024;
/// A read at least this large means bulk data: [`CopyMode::Auto`] switches to splice. (A read
/// from loopback returns one 64 KiB segment at a time, less its headers.)
#[cfg(target_os = "linux")]
const BULK_READ: usize = BUFFER_SIZE / 2;
/// How long a direction in [`CopyMode::Auto`] keeps its pipe without data.
#[cfg(target_os = "linux")]
const PIPE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);
/// The pipe size asked for when splicing (the kernel may give less). Measured on loopback:
/// 1 MiB costs the relay about 200 ms of CPU per GB, 256 KiB 250 ms, 64 KiB 330 ms.
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
    src: &Stream,
    dst: &Stream,
    mut mode: CopyMode,
    progress: &Progress,
) -> io::Result<()> {
    if cfg!(not(target_os = "linux")) {
        mode = CopyMode::Buffered;
    }
    loop {
        if mode != CopyMode::Splice && buffered(src, dst, mode, progress).await? == Buffered::Ended
        {
            return dst.shutdown_write();
        }
        #[cfg(target_os = "linux")]
        match spliced(src, dst, mode, progress).await? {
            Spliced::Ended => return dst.shutdown_write(),
            Spliced::Idle => tracing::trace!("idle, splice pipe released"),
            Spliced::Unavailable => mode = CopyMode::Buffered,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Buffered {
    /// End of stream from `src`.
    Ended,
    /// Bulk data in [`CopyMode::Auto`]: time to splice.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Bulk,
}

async fn buffered(
    src: &Stream,
    dst: &Stream,
    mode: CopyMode,
    progress: &Progress,
) -> io::Result<Buffered> {
    loop {
        src.readable().await?;
        // Taken when data is ready, freed when the source runs dry.
        let mut buf: Vec<u8> = Vec::with_capacity(BUFFER_SIZE);
        loop {
            buf.clear();
            let n = match src.try_read_buf(&mut buf) {
                Ok(0) => return Ok(Buffered::Ended),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            write_all(dst, &buf[..n]).await?;
            progress.moved(n);
            #[cfg(target_os = "linux")]
            if n >= BULK_READ && mode == CopyMode::Auto {
                tracing::trace!("bulk data, switching to splice");
                return Ok(Buffered::Bulk);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = mode;
        }
    }
}

async fn write_all(dst: &Stream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
#[derive(Debug, PartialEq, Eq)]
enum Spliced {
    /// End of stream from `src`.
    Ended,
    /// No data for [`PIPE_IDLE`] ([`CopyMode::Auto`] only): the pipe is released.
    Idle,
    /// No pipe, or these sockets cannot splice; nothing was moved.
    Unavailable,
}

/// The zero-copy loop: fill the (empty) pipe from `src`, drain it completely into `dst`, again.
///
/// The pipe is always empty when filling starts, so `WouldBlock` while filling can only mean
/// that `src` has no data, and `WouldBlock` while draining only that `dst` is full: tokio's
/// readiness tracking never mistakes a full pipe for an idle socket.
#[cfg(target_os = "linux")]
async fn spliced(
    src: &Stream,
    dst: &Stream,
    mode: CopyMode,
    progress: &Progress,
) -> io::Result<Spliced> {
    use std::os::fd::AsFd;
    use tokio::io::Interest;

    let pipe = match super::sys::Pipe::new(PIPE_SIZE) {
        Ok(pipe) => pipe,
        Err(err) => {
            // Out of descriptors, most likely: carry on without the pipe.
            tracing::debug!("no pipe for splice ({err}), copying through a buffer");
            return Ok(Spliced::Unavailable);
        }
    };
    let chunk = pipe.capacity();
    let mut first = true;
    loop {
        if mode == CopyMode::Auto {
            // Keep the pipe while data flows; give it back when the direction goes quiet.
            tokio::select! {
                biased;
                ready = src.readable() => ready?,
                () = tokio::time::sleep(PIPE_IDLE) => return Ok(Spliced::Idle),
            }
        } else {
            src.readable().await?;
        }
        let n = match src.try_io(Interest::READABLE, || pipe.fill_from(src.as_fd(), chunk)) {
            Ok(0) => return Ok(Spliced::Ended),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if first && e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("these sockets cannot splice, copying through a buffer");
                return Ok(Spliced::Unavailable);
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// `src` and `dst` for the copy functions, and the far ends of both.
    fn sockets() -> (UnixStream, Stream, Stream, UnixStream) {
        let (writer, src) = UnixStream::pair().unwrap();
        let (dst, reader) = UnixStream::pair().unwrap();
        (writer, Stream::Unix(src), Stream::Unix(dst), reader)
    }

    #[tokio::test]
    async fn auto_switches_to_splice_on_bulk_data_and_buffered_does_not() {
        let (mut writer, src, dst, mut reader) = sockets();
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = data.clone();
        // More than the socket buffers hold: write while the copy runs.
        tokio::spawn(async move { writer.write_all(&sent).await.unwrap() });
        let progress = Progress::new(Instant::now());
        let step = buffered(&src, &dst, CopyMode::Auto, &progress)
            .await
            .unwrap();
        assert_eq!(step, Buffered::Bulk);
        assert!(progress.bytes() >= BULK_READ as u64);
        // The rest, spliced, to the end; nothing lost or reordered.
        let mut got = Vec::new();
        let copy = async {
            let step = spliced(&src, &dst, CopyMode::Auto, &progress).await;
            dst.shutdown_write().unwrap();
            step
        };
        let (step, read) = tokio::join!(copy, reader.read_to_end(&mut got));
        assert_eq!(step.unwrap(), Spliced::Ended);
        read.unwrap();
        assert_eq!(progress.bytes(), data.len() as u64);
        assert!(got == data);

        let (mut writer, src, dst, mut reader) = sockets();
        let sent = data.clone();
        tokio::spawn(async move { writer.write_all(&sent).await.unwrap() });
        let progress = Progress::new(Instant::now());
        let mut got = Vec::new();
        let copy = async {
            let step = buffered(&src, &dst, CopyMode::Buffered, &progress).await;
            dst.shutdown_write().unwrap();
            step
        };
        let (step, read) = tokio::join!(copy, reader.read_to_end(&mut got));
        assert_eq!(step.unwrap(), Buffered::Ended);
        read.unwrap();
        assert!(got == data);
    }

    /// With the clock paused, tokio moves it forward as soon as everything waits: the pipe's
    /// idle timer fires without the test sleeping.
    #[tokio::test(start_paused = true)]
    async fn auto_gives_the_pipe_back_when_idle_but_forced_splice_keeps_it() {
        let (mut writer, src, dst, mut reader) = sockets();
        writer.write_all(&[9u8; 100_000]).await.unwrap();
        let progress = Progress::new(Instant::now());
        let step = spliced(&src, &dst, CopyMode::Auto, &progress)
            .await
            .unwrap();
        assert_eq!(step, Spliced::Idle);
        assert_eq!(progress.bytes(), 100_000);
        let mut got = vec![0u8; 100_000];
        reader.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|&b| b == 9));

        let forced = spliced(&src, &dst, CopyMode::Splice, &progress);
        let waited = tokio::time::timeout(PIPE_IDLE * 10, forced).await;
        assert!(waited.is_err(), "forced splice returned: {waited:?}");
    }
}
