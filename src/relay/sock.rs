//! One stream socket of either kind, so the copy loops need not care.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::hop::Secret;
use crate::hop::preamble::{self, PreambleError};

/// A connected stream socket, TCP or Unix: what [`bridge`](super::bridge) joins.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream::Unix(s)
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl Stream {
    /// Prove the session key to the peer (the connecting side of the hop preamble, bounded by
    /// its timeout), before any other byte is exchanged.
    pub(crate) async fn prove(&mut self, secret: &Secret) -> Result<(), PreambleError> {
        both!(self, s => preamble::connect_within(s, secret).await)
    }

    /// Make the peer prove the session key (the accepting side of the preamble, bounded).
    pub(crate) async fn challenge(&mut self, secret: &Secret) -> Result<(), PreambleError> {
        both!(self, s => preamble::accept_within(s, secret).await)
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        both!(self, s => s.readable().await)
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        both!(self, s => s.writable().await)
    }

    /// Read into the spare capacity of `buf` (no zeroing); `WouldBlock` when nothing is ready.
    pub(crate) fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        both!(self, s => s.try_read_buf(buf))
    }

    pub(crate) fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        both!(self, s => s.try_write(data))
    }

    /// Run a non-blocking operation on the descriptor if tokio thinks the socket is ready;
    /// `WouldBlock` from `f` clears that readiness.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        both!(self, s => s.try_io(interest, f))
    }

    /// Send end-of-stream to the peer (TCP FIN), keeping the receiving side open.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(Shutdown::Write)
    }

    /// TCP only: send small messages at once (ParaView's interactive traffic), and notice dead
    /// peers on connections that stay idle for hours.
    pub(crate) fn tune(&self) -> io::Result<()> {
        if let Stream::Tcp(s) = self {
            s.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL);
            socket2::SockRef::from(s).set_tcp_keepalive(&keepalive)?;
        }
        Ok(())
    }
}

/// Idle time before the first TCP keepalive probe.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        both!(self, s => s.as_fd())
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
