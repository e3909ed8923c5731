//! The session's end of the channel: [`Channel`], and `pvlaunch channel exec`, which runs one
//! remote command through a [`Channel`] of another process (its Unix socket) the way
//! `ssh -S cm host WIRE` runs one through a ControlMaster.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::link::{self, Link, OnWriteFailure, RouteRx};
use super::proto::{self, CHUNK, ExitStatus, Frame, MAX_PAYLOAD, ProtoError, SERVER_IDS, WINDOW};
use super::server::read_hello;
use crate::exit::Code;
use crate::relay::Stream;
use crate::ssh::{self, Output, RemoteCommand, SshError};

/// How long the server's hello may take: the ssh login before it may ask a person for a
/// password or a second factor.
pub const HELLO_TIMEOUT: Duration = ssh::AUTH_TIMEOUT;
/// How many bytes before the server's hello are skipped (a login script printing a banner).
pub const BANNER_LIMIT: usize = 64 * 1024;
/// How long a listen request may take to be answered.
pub const REQUEST_TIMEOUT: Duration = ssh::COMMAND_TIMEOUT;
/// How long a forwarded connection waits for the other side's connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Channel::close`] waits for the server to close its side.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long `pvlaunch channel exec` and the session's socket wait for each other's hello.
pub const LOCAL_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the session's socket waits for a `pvlaunch channel exec` to read the end of its
/// stream and close its side.
pub const CLIENT_LINGER: Duration = Duration::from_secs(5);
/// The name of the socket [`Channel::serve_clients`] listens on, in the folder it is given.
pub const CLIENT_SOCKET: &str = "chan.sock";

/// Why a channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the channel to the login node is gone, so `{what}` was not done")]
    Gone { what: String },
    #[error("`{what}` timed out after {} s", .timeout.as_secs())]
    Timeout { what: String, timeout: Duration },
    #[error("{what} was refused on the login node: {message}")]
    Refused { what: String, message: String },
    #[error("no channel server answered within {} s", .0.as_secs())]
    HelloTimeout(Duration),
    #[error("the channel failed: {0}")]
    Protocol(#[from] ProtoError),
    #[error("{what}: {source}")]
    Local { what: String, source: io::Error },
}

impl ChannelError {
    /// The same failure as [`Master`](crate::ssh::Master)'s errors say it, for callers that
    /// handle both: a gone channel is a gone master.
    pub fn into_ssh(self, destination: &str) -> SshError {
        match self {
            ChannelError::Gone { what } => SshError::MasterGone {
                destination: destination.to_owned(),
                what,
            },
            ChannelError::Timeout { what, timeout } => SshError::Timeout { what, timeout },
            ChannelError::Refused { message, .. } => SshError::ForwardRefused { stderr: message },
            other => SshError::MasterExited {
                destination: destination.to_owned(),
                stderr: other.to_string(),
            },
        }
    }
}

/// A forward opened through the channel, as [`Channel::cancel`] names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Forward {
    /// A TCP listener on the login node (`bind` as asked; `port` as bound).
    RemoteTcp { bind: Option<String>, port: u16 },
    /// A Unix socket on the login node.
    RemoteUnix { path: String },
    /// A listener on 127.0.0.1 here (`port` as bound).
    Local { port: u16 },
}

/// A remote listener's connections go to 127.0.0.1:`local` here.
struct RemoteForward {
    key: Forward,
    local: u16,
}

struct Shared {
    link: Arc<Link>,
    peer_version: String,
    /// Remote listeners by stream id.
    remote: Mutex<HashMap<u32, RemoteForward>>,
    /// Local listeners, each with its accept task.
    local: Mutex<HashMap<u16, AbortHandle>>,
}

impl Drop for Shared {
    // Every task of the channel ends once it is gone (the client socket's removes its file).
    fn drop(&mut self) {
        self.link.end();
        self.link.set_gone();
    }
}

/// One ssh session's stdio as a channel: remote commands, long-lived commands for local child
/// processes ([`Channel::serve_clients`], [`exec_argv`]), and forwards both ways. Cheap to
/// clone; the channel closes when [`Channel::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer_version", &self.shared.peer_version)
            .field("alive", &self.alive())
            .finish()
    }
}

impl Channel {
    /// Say hello over `writer` (the ssh child's stdin), wait for the server's hello on
    /// `reader` (its stdout; a login banner before it is skipped, up to [`BANNER_LIMIT`]),
    /// within [`HELLO_TIMEOUT`], and start serving. Needs a tokio runtime.
    pub async fn start<R, W>(reader: R, writer: W) -> Result<Channel, ChannelError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Channel::start_within(reader, writer, HELLO_TIMEOUT).await
    }

    /// [`Channel::start`] with another hello timeout.
    pub async fn start_within<R, W>(
        mut reader: R,
        mut writer: W,
        timeout: Duration,
    ) -> Result<Channel, ChannelError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        // A peer that is not a server (no pvlaunch there) may have exited already: what it
        // printed says more than the failed write.
        let wrote = write_hello(&mut writer).await;
        let (decoder, peer_version) =
            match tokio::time::timeout(timeout, read_hello(&mut reader, BANNER_LIMIT)).await {
                Err(_) => return Err(ChannelError::HelloTimeout(timeout)),
                Ok(Err(super::server::ServeError::Proto(p))) => return Err(p.into()),
                Ok(Err(e)) => {
                    return Err(ChannelError::Gone {
                        what: format!("open the channel ({e})"),
                    });
                }
                Ok(Ok(h)) => h,
            };
        wrote.map_err(hello_failed)?;
        Ok(Channel::serve(reader, writer, decoder, peer_version))
    }

    /// Start a channel over an ssh session running [`super::bootstrap_script`]: wait (up to
    /// `timeout`) for the server's hello, or for [`super::MISSING_MARKER`], on which the file
    /// `binary` (this pvlaunch, the copy the script was made for) is written to `writer`
    /// within [`crate::remote::UPLOAD_TIMEOUT`], and then wait (up to `timeout` again) for
    /// the hello of the copy. This end says its own hello only after the server's, so that
    /// nothing but the copy goes to the script's stdin. A login banner before either is
    /// skipped (up to [`BANNER_LIMIT`]); the script's [`super::FAILED_MARKER`] line is
    /// returned as [`ChannelError::Refused`].
    pub async fn start_bootstrapped<R, W>(
        mut reader: R,
        mut writer: W,
        binary: &Path,
        timeout: Duration,
    ) -> Result<Channel, ChannelError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = Vec::new();
        let found = wait_for_server(&mut reader, &mut buf, true, timeout).await?;
        let (decoder, peer_version) = match found {
            Found::Hello(d, v) => (d, v),
            Found::Missing(after) => {
                buf.drain(..after);
                let what = format!("copy {} to the login node", binary.display());
                let local = |source| ChannelError::Local {
                    what: what.clone(),
                    source,
                };
                let file = tokio::fs::File::open(binary).await.map_err(local)?;
                tracing::info!("the login node has no pvlaunch of this version: copying it");
                let sent = tokio::time::timeout(crate::remote::UPLOAD_TIMEOUT, async {
                    let mut file = tokio::io::BufReader::with_capacity(CHUNK, file);
                    tokio::io::copy_buf(&mut file, &mut writer).await?;
                    writer.flush().await
                })
                .await;
                match sent {
                    Err(_) => {
                        return Err(ChannelError::Timeout {
                            what,
                            timeout: crate::remote::UPLOAD_TIMEOUT,
                        });
                    }
                    // The script went away: what it printed says why.
                    Ok(Err(e)) => {
                        let wait = timeout.min(CLOSE_WAIT);
                        return match wait_for_server(&mut reader, &mut buf, false, wait).await {
                            Ok(_) | Err(ChannelError::HelloTimeout(_)) => Err(local(e)),
                            Err(other) => Err(other),
                        };
                    }
                    Ok(Ok(())) => {}
                }
                match wait_for_server(&mut reader, &mut buf, false, timeout).await? {
                    Found::Hello(d, v) => (d, v),
                    // Not looked for the second time.
                    Found::Missing(_) => return Err(ProtoError::BadVersion.into()),
                }
            }
        };
        write_hello(&mut writer).await.map_err(hello_failed)?;
        Ok(Channel::serve(reader, writer, decoder, peer_version))
    }

    /// Serve the channel whose hellos were exchanged (`decoder` holds what followed them).
    fn serve<R, W>(reader: R, writer: W, decoder: proto::Decoder, peer_version: String) -> Channel
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        tracing::info!(server = %peer_version, "channel open");
        let (link, _writer) = Link::new(writer, 1, SERVER_IDS, OnWriteFailure::EndLink);
        let shared = Arc::new(Shared {
            link: Arc::clone(&link),
            peer_version,
            remote: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let read = link::read_loop(reader, decoder, |frame| {
                let Some(opening) = link.dispatch(frame)? else {
                    return Ok(());
                };
                match opening {
                    Frame::Accepted { listener, stream } if stream >= SERVER_IDS => {
                        let local = weak.upgrade().and_then(|s| {
                            s.remote
                                .lock()
                                .expect("remote")
                                .get(&listener)
                                .map(|f| f.local)
                        });
                        let rx = link.open(stream, false)?;
                        match local {
                            Some(port) => {
                                tokio::spawn(bridge_to_local(Arc::clone(&link), rx, port));
                            }
                            None => {
                                link.send(Frame::Close { id: stream });
                                link.close_route(stream);
                            }
                        }
                        Ok(())
                    }
                    Frame::Accepted { stream, .. } => Err(ProtoError::BadStreamId(stream)),
                    other => Err(ProtoError::Unexpected {
                        kind: other.kind().name(),
                        id: other.id(),
                    }),
                }
            });
            tokio::select! {
                r = read => match r {
                    Ok(()) => tracing::info!("the channel's server closed the channel"),
                    Err(e) => tracing::warn!("the channel failed: {e}"),
                },
                () = link.gone() => {}
            }
            link.set_gone();
        });
        Channel { shared }
    }

    /// The server's pvlaunch version, from its hello.
    pub fn peer_version(&self) -> &str {
        &self.shared.peer_version
    }

    /// Whether the channel still works.
    pub fn alive(&self) -> bool {
        !self.shared.link.is_gone()
    }

    /// Resolves when the channel is gone (closed, the server ended, or the link failed).
    pub async fn closed(&self) {
        self.shared.link.gone().await
    }

    /// Close the channel: the server hangs up every command, closes every listener and socket
    /// (see [`super::server`]). Waits up to [`CLOSE_WAIT`] for the server to close its side.
    pub async fn close(&self) {
        let link = &self.shared.link;
        link.end();
        let _ = tokio::time::timeout(CLOSE_WAIT, link.gone()).await;
        link.set_gone();
    }

    fn open(&self, what: &str, forward_windows: bool) -> Result<RouteRx, ChannelError> {
        let gone = || ChannelError::Gone { what: what.into() };
        let link = &self.shared.link;
        if link.is_gone() {
            return Err(gone());
        }
        let id = link.alloc_id().ok_or_else(gone)?;
        Ok(link.open(id, forward_windows)?)
    }

    /// Run one POSIX shell command line on the login node, as [`ssh::Master::exec`] does.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, ChannelError> {
        self.exec_command(&RemoteCommand::new(command), stdin, timeout)
            .await
    }

    /// Run a command already wrapped (`/bin/sh -c WIRE` on the login node), feeding it
    /// `stdin` (none: end of input at once), within `timeout` (after which it is stopped:
    /// SIGTERM to its group, SIGKILL later). Output is bounded as [`ssh::run`]'s: the first
    /// [`ssh::STDOUT_LIMIT`] bytes of stdout, the last [`ssh::STDERR_LIMIT`] of stderr. A
    /// command killed by a signal has `code: None`.
    pub async fn exec_command(
        &self,
        command: &RemoteCommand,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, ChannelError> {
        let what = command.script().to_owned();
        if command.wire().len() > MAX_PAYLOAD {
            return Err(too_long(what, command.wire().len()));
        }
        let link = Arc::clone(&self.shared.link);
        let mut rx = self.open(&what, false)?;
        let id = rx.id;
        let gone = || ChannelError::Gone { what: what.clone() };
        if !link.send(Frame::Exec {
            id,
            script: command.wire().to_owned(),
        }) {
            return Err(gone());
        }
        let started = std::time::Instant::now();
        let credit = Arc::clone(&rx.credit);
        let feed = async {
            for chunk in stdin.unwrap_or_default().chunks(CHUNK) {
                let Ok(p) = credit.acquire_many(chunk.len() as u32).await else {
                    return;
                };
                p.forget();
                link.send(Frame::Stdin {
                    id,
                    data: chunk.to_vec(),
                });
            }
            link.send(Frame::StdinEof { id });
        };
        let collect = async {
            let mut out = Bounded::default();
            loop {
                tokio::select! {
                    f = rx.data.recv() => match f {
                        Some(Frame::Stdout { data, .. }) => {
                            out.stdout(&data);
                            link.ack(id, &rx.inflight, data.len());
                        }
                        Some(Frame::Stderr { data, .. }) => {
                            out.stderr(&data);
                            link.ack(id, &rx.inflight, data.len());
                        }
                        Some(Frame::Exit { status, .. }) => return Ok(out.finish(status)),
                        Some(_) => {}
                        None => return Err(gone()),
                    },
                    c = rx.control.recv() => match c {
                        Some(Frame::Failed { message, .. }) => {
                            return Err(ChannelError::Refused { what: what.clone(), message });
                        }
                        Some(_) => {}
                        None => return Err(gone()),
                    },
                }
            }
        };
        let both = async {
            tokio::pin!(feed);
            tokio::pin!(collect);
            let mut fed = false;
            loop {
                tokio::select! {
                    () = &mut feed, if !fed => fed = true,
                    r = &mut collect => return r,
                }
            }
        };
        let result = tokio::time::timeout(timeout, both).await;
        link.close_route(id);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(Ok(out)) => {
                tracing::info!(
                    "`{}` over the channel: {:?} after {ms} ms",
                    label(&what),
                    out.code
                );
                Ok(out)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::info!(
                    "`{}` over the channel: timed out after {ms} ms",
                    label(&what)
                );
                link.send(Frame::Kill { id });
                Err(ChannelError::Timeout { what, timeout })
            }
        }
    }

    /// Listen on a private Unix socket ([`CLIENT_SOCKET`], mode 0600, in `dir`, which should
    /// be a 0700 folder of this user's) for `pvlaunch channel exec` processes ([`exec_argv`]):
    /// each runs one command through this channel. Connections of other users are refused.
    pub fn serve_clients(&self, dir: &Path) -> Result<PathBuf, ChannelError> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(CLIENT_SOCKET);
        let local = |source| ChannelError::Local {
            what: format!("listen on {}", path.display()),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(local)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(local)?;
        let link = Arc::clone(&self.shared.link);
        let file = path.clone();
        let task = tokio::spawn(async move {
            let me = crate::relay::effective_uid();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((conn, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        match conn.peer_cred() {
                            Ok(cred) if cred.uid() == me => {
                                tokio::spawn(proxy(Arc::clone(&link), conn));
                            }
                            _ => tracing::warn!("refused a channel client of another user"),
                        }
                    }
                    () = link.gone() => break,
                }
            }
            drop(listener);
            let _ = std::fs::remove_file(&file);
        });
        // Keyed by port 0: never a local forward's.
        self.shared
            .local
            .lock()
            .expect("local")
            .insert(0, task.abort_handle());
        Ok(path)
    }

    async fn listen_remote(
        &self,
        what: String,
        key: impl FnOnce(u16) -> Forward,
        request: impl FnOnce(u32) -> Frame,
        local: u16,
    ) -> Result<u16, ChannelError> {
        let mut rx = self.open(&what, false)?;
        let id = rx.id;
        let link = &self.shared.link;
        // Registered first: a connection may be accepted before the reply is read.
        self.shared.remote.lock().expect("remote").insert(
            id,
            RemoteForward {
                key: Forward::Local { port: 0 },
                local,
            },
        );
        link.send(request(id));
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, rx.control.recv()).await;
        link.close_route(id);
        let fail = |e| {
            self.shared.remote.lock().expect("remote").remove(&id);
            Err(e)
        };
        match reply {
            Ok(Some(Frame::Listening { port, .. })) => {
                if let Some(f) = self.shared.remote.lock().expect("remote").get_mut(&id) {
                    f.key = key(port);
                }
                tracing::info!("{what}: listening (port {port})");
                Ok(port)
            }
            Ok(Some(Frame::Failed { message, .. })) => {
                fail(ChannelError::Refused { what, message })
            }
            Ok(_) => fail(ChannelError::Gone { what }),
            Err(_) => {
                link.send(Frame::Close { id });
                fail(ChannelError::Timeout {
                    what,
                    timeout: REQUEST_TIMEOUT,
                })
            }
        }
    }

    /// A TCP listener on the login node (`bind`: loopback when `None`; `port` 0: a free one);
    /// each connection is carried to 127.0.0.1:`local` here. Returns the port bound, as
    /// [`ssh::Master::forward_remote`] does.
    pub async fn forward_remote_tcp(
        &self,
        bind: Option<&str>,
        port: u16,
        local: u16,
    ) -> Result<u16, ChannelError> {
        let b = bind.map(str::to_owned);
        let what = format!("listen on {}:{port}", bind.unwrap_or("localhost"));
        self.listen_remote(
            what,
            |port| Forward::RemoteTcp { bind: b, port },
            |id| Frame::ListenTcp {
                id,
                bind: bind.unwrap_or_default().to_owned(),
                port,
            },
            local,
        )
        .await
    }

    /// A Unix socket on the login node (mode 0600; a stale socket of this user's is replaced,
    /// anything else refused); each connection is carried to 127.0.0.1:`local` here.
    pub async fn forward_remote_unix(&self, path: &str, local: u16) -> Result<(), ChannelError> {
        let p = path.to_owned();
        self.listen_remote(
            format!("listen on unix:{path}"),
            |_| Forward::RemoteUnix { path: p },
            |id| Frame::ListenUnix {
                id,
                path: path.to_owned(),
            },
            local,
        )
        .await
        .map(|_| ())
    }

    /// A listener on 127.0.0.1:`local` here (0: a free port); each connection is carried to
    /// `host:port` as the login node reaches it. Returns the local port bound.
    pub async fn forward_local(
        &self,
        local: u16,
        host: &str,
        port: u16,
    ) -> Result<u16, ChannelError> {
        let what = format!("forward 127.0.0.1:{local} to {host}:{port}");
        if !self.alive() {
            return Err(ChannelError::Gone { what });
        }
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .map_err(|source| ChannelError::Local {
                what: what.clone(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ChannelError::Local {
                what: what.clone(),
                source,
            })?
            .port();
        let target = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let link = Arc::clone(&self.shared.link);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((conn, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        };
                        let Some(id) = link.alloc_id() else { break };
                        let Ok(rx) = link.open(id, false) else { continue };
                        link.send(Frame::Connect { id, target: target.clone() });
                        tokio::spawn(bridge_connected(Arc::clone(&link), rx, conn));
                    }
                    () = link.gone() => break,
                }
            }
        });
        let previous = self
            .shared
            .local
            .lock()
            .expect("local")
            .insert(bound, task.abort_handle());
        if let Some(p) = previous {
            p.abort();
        }
        tracing::info!("{what}: listening on port {bound}");
        Ok(bound)
    }

    /// Close a forward (its open connections run on, as with `ssh -O cancel`). Unknown
    /// forwards are fine.
    pub async fn cancel(&self, forward: &Forward) -> Result<(), ChannelError> {
        if let Forward::Local { port } = forward {
            if *port != 0
                && let Some(task) = self.shared.local.lock().expect("local").remove(port)
            {
                task.abort();
            }
            return Ok(());
        }
        let id = {
            let mut remote = self.shared.remote.lock().expect("remote");
            let id = remote
                .iter()
                .find(|(_, f)| &f.key == forward)
                .map(|(id, _)| *id);
            if let Some(id) = id {
                remote.remove(&id);
            }
            id
        };
        if let Some(id) = id
            && !self.shared.link.send(Frame::Close { id })
        {
            return Err(ChannelError::Gone {
                what: format!("cancel {forward:?}"),
            });
        }
        Ok(())
    }
}

async fn write_hello<W: AsyncWrite + Unpin>(writer: &mut W) -> io::Result<()> {
    writer
        .write_all(&proto::hello(env!("CARGO_PKG_VERSION")))
        .await?;
    writer.flush().await
}

fn hello_failed(source: io::Error) -> ChannelError {
    ChannelError::Local {
        what: "write the channel's hello".into(),
        source,
    }
}

/// What [`wait_for_server`] found.
enum Found {
    /// The server's hello: the decoder holds what followed it.
    Hello(proto::Decoder, String),
    /// The bootstrap script's [`super::MISSING_MARKER`] line, ending at this offset of the
    /// buffer.
    Missing(usize),
}

/// Read from `reader` (into `buf`, which keeps what was read) until the server's hello, or
/// (when `missing` is asked for) the bootstrap script's line saying it waits for a copy, or
/// its failure line, within `timeout`. A banner before them is skipped up to [`BANNER_LIMIT`].
async fn wait_for_server<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    missing: bool,
    timeout: Duration,
) -> Result<Found, ChannelError> {
    use tokio::io::AsyncReadExt;
    let look = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((version, skipped, used)) = proto::find_hello(buf, BANNER_LIMIT)? {
                if skipped > 0 {
                    tracing::info!(
                        "skipped {skipped} bytes before the channel's hello: {:?}",
                        String::from_utf8_lossy(&buf[..skipped])
                    );
                }
                let mut decoder = proto::Decoder::new();
                decoder.push(&buf[used..]);
                return Ok(Found::Hello(decoder, version));
            }
            let mut at = 0;
            for line in buf.split_inclusive(|b| *b == b'\n') {
                at += line.len();
                if !line.ends_with(b"\n") {
                    break;
                }
                let line = String::from_utf8_lossy(line);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(why) = line.strip_prefix(super::FAILED_MARKER) {
                    return Err(ChannelError::Refused {
                        what: "starting pvlaunch on the login node".into(),
                        message: why.to_owned(),
                    });
                }
                if missing && line.starts_with(super::MISSING_MARKER) {
                    return Ok(Found::Missing(at));
                }
            }
            let n = match reader.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) => {
                    return Err(ChannelError::Gone {
                        what: format!("open the channel ({e})"),
                    });
                }
            };
            if n == 0 {
                return Err(ProtoError::NotAChannel(
                    String::from_utf8_lossy(&buf[..buf.len().min(80)]).into(),
                )
                .into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, look)
        .await
        .unwrap_or(Err(ChannelError::HelloTimeout(timeout)))
}

fn too_long(what: String, len: usize) -> ChannelError {
    ChannelError::Refused {
        what,
        message: format!("the command is {len} bytes long, more than the channel's {MAX_PAYLOAD}"),
    }
}

/// A command's output, bounded like [`ssh::run`]'s.
#[derive(Default)]
struct Bounded {
    stdout: Vec<u8>,
    stdout_dropped: u64,
    stderr: std::collections::VecDeque<u8>,
    stderr_dropped: u64,
}

impl Bounded {
    fn stdout(&mut self, data: &[u8]) {
        let take = (ssh::STDOUT_LIMIT - self.stdout.len()).min(data.len());
        self.stdout.extend_from_slice(&data[..take]);
        self.stdout_dropped += (data.len() - take) as u64;
    }

    fn stderr(&mut self, data: &[u8]) {
        self.stderr.extend(data);
        let over = self.stderr.len().saturating_sub(ssh::STDERR_LIMIT);
        self.stderr.drain(..over);
        self.stderr_dropped += over as u64;
    }

    fn finish(self, status: ExitStatus) -> Output {
        let stderr: Vec<u8> = self.stderr.into();
        Output {
            code: match status {
                ExitStatus::Code(c) => Some(c),
                ExitStatus::Signal(_) => None,
            },
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_dropped: self.stdout_dropped,
            stderr_dropped: self.stderr_dropped,
        }
    }
}

/// The script's first line, shortened, for the log.
fn label(script: &str) -> String {
    let line: String = script.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 100 {
        let mut end = 100;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{} […]", &line[..end])
    } else {
        line
    }
}

/// A connection a remote listener accepted: carried to 127.0.0.1:`port` here.
async fn bridge_to_local(link: Arc<Link>, rx: RouteRx, port: u16) {
    let id = rx.id;
    let conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    match conn {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            link::bridge_socket(link, Stream::Tcp(s), rx).await
        }
        _ => {
            tracing::info!(
                id,
                port,
                "cannot connect to the local port: closing the connection"
            );
            link.send(Frame::Close { id });
            link.close_route(id);
        }
    }
}

/// A local connection whose `Connect` was sent: carried once the server connected.
async fn bridge_connected(link: Arc<Link>, mut rx: RouteRx, conn: tokio::net::TcpStream) {
    let id = rx.id;
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, rx.control.recv()).await;
    match reply {
        Ok(Some(Frame::Connected { .. })) => {
            let _ = conn.set_nodelay(true);
            link::bridge_socket(link, Stream::Tcp(conn), rx).await
        }
        Ok(Some(Frame::Failed { message, .. })) => {
            tracing::info!(id, "the login node could not connect: {message}");
            link.close_route(id);
        }
        _ => {
            link.send(Frame::Close { id });
            link.close_route(id);
        }
    }
}

/// One `pvlaunch channel exec` process: its stream 1 is carried as a stream of the channel,
/// windows passed through both ways (its output waits for it to read, its input for the
/// command to read). Its going away without an exit is the caller going away: the command's
/// pipes are closed, as sshd does when an ssh client dies.
async fn proxy(link: Arc<Link>, conn: UnixStream) {
    let (mut r, mut w) = conn.into_split();
    if w.write_all(&proto::hello(env!("CARGO_PKG_VERSION")))
        .await
        .is_err()
    {
        return;
    }
    let decoder = match tokio::time::timeout(LOCAL_HELLO_TIMEOUT, read_hello(&mut r, 0)).await {
        Ok(Ok((d, _))) => d,
        _ => return,
    };
    let Some(rid) = link.alloc_id() else { return };
    let Ok(mut rx) = link.open(rid, true) else {
        return;
    };
    let (ltx, mut lrx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(f) = lrx.recv().await {
            buf.clear();
            f.encode(&mut buf);
            while let Ok(more) = lrx.try_recv() {
                more.encode(&mut buf);
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let stdin_unacked = AtomicUsize::new(0);
    let mut started = false;
    let inflight = Arc::clone(&rx.inflight);
    let local = link::read_loop(r, decoder, |f| {
        match f {
            Frame::Exec { id: 1, script } if !started => {
                started = true;
                link.send(Frame::Exec { id: rid, script });
            }
            Frame::Stdin { id: 1, data } if started => {
                let before = stdin_unacked.fetch_add(data.len(), Ordering::Relaxed);
                if before + data.len() > WINDOW {
                    return Err(ProtoError::WindowExceeded(1));
                }
                link.send(Frame::Stdin { id: rid, data });
            }
            Frame::StdinEof { id: 1 } | Frame::Kill { id: 1 } if started => {
                link.send(f.with_id(rid));
            }
            Frame::Window { id: 1, credit } if started => {
                link.ack(rid, &inflight, credit as usize);
            }
            other => {
                return Err(ProtoError::Unexpected {
                    kind: other.kind().name(),
                    id: other.id(),
                });
            }
        }
        Ok(())
    });
    tokio::pin!(local);
    let mut local_done = false;
    loop {
        tokio::select! {
            f = rx.data.recv() => match f {
                Some(f) => {
                    let exit = matches!(f, Frame::Exit { .. });
                    let _ = ltx.send(f.with_id(1));
                    if exit {
                        break;
                    }
                }
                None => break,
            },
            c = rx.control.recv() => match c {
                Some(Frame::Window { credit, .. }) => {
                    let n = credit as usize;
                    let _ = stdin_unacked.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                        Some(u.saturating_sub(n))
                    });
                    let _ = ltx.send(Frame::Window { id: 1, credit });
                }
                Some(f @ Frame::Failed { .. }) => {
                    let _ = ltx.send(f.with_id(1));
                    break;
                }
                Some(_) => {}
                None => break,
            },
            r = &mut local => {
                if let Err(e) = r {
                    tracing::debug!("a channel client failed: {e}");
                }
                local_done = true;
                // Gone without waiting for the exit: its command's pipes close.
                link.send(Frame::Close { id: rid });
                break;
            }
        }
    }
    link.close_route(rid);
    drop(ltx);
    // The client reads the rest and goes. What it still sends meanwhile (acknowledgements of
    // the output) is read and dropped: a socket closed with unread input resets the peer's.
    let _ = tokio::time::timeout(CLIENT_LINGER, async {
        let _ = writer.await;
        if !local_done {
            let _ = (&mut local).await;
        }
    })
    .await;
}

/// The argv that runs `wire` (a [`RemoteCommand::wire`]) on the login node through the
/// channel serving `socket` ([`Channel::serve_clients`]), for the places that spawn
/// `ssh -S cm host WIRE` today: stdin, stdout and stderr are the command's, the exit status
/// its own (128+N for signal N); 255 with [`ssh::MASTER_GONE`] on stderr when the channel is
/// gone.
pub fn exec_argv(program: &str, socket: &Path, wire: &str) -> Vec<String> {
    vec![
        program.to_owned(),
        "channel".into(),
        "exec".into(),
        "--socket".into(),
        socket.display().to_string(),
        "--".into(),
        wire.to_owned(),
    ]
}

/// What `pvlaunch channel exec` was asked.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub socket: PathBuf,
    pub wire: String,
}

/// The exit status of `pvlaunch channel exec` when the channel is gone (as ssh's).
pub const EXIT_GONE: u8 = 255;

/// `pvlaunch channel exec`: run one command through the session's channel.
pub fn exec_main(request: ExecRequest) -> Code {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::say_err!("pvlaunch channel exec: cannot start the runtime: {e}");
            return Code::Child(EXIT_GONE);
        }
    };
    let code = runtime.block_on(exec_client(request));
    // The stdin reader may be blocked in a read that never returns.
    runtime.shutdown_background();
    code
}

fn master_gone() -> Code {
    crate::say_err!("{}", ssh::MASTER_GONE);
    Code::Child(EXIT_GONE)
}

async fn exec_client(request: ExecRequest) -> Code {
    if request.wire.len() > MAX_PAYLOAD {
        crate::say_err!(
            "pvlaunch: {}",
            too_long("the command".into(), request.wire.len())
        );
        return Code::Child(EXIT_GONE);
    }
    let Ok(conn) = UnixStream::connect(&request.socket).await else {
        return master_gone();
    };
    let (mut r, mut w) = conn.into_split();
    if w.write_all(&proto::hello(env!("CARGO_PKG_VERSION")))
        .await
        .is_err()
    {
        return master_gone();
    }
    let decoder = match tokio::time::timeout(LOCAL_HELLO_TIMEOUT, read_hello(&mut r, 0)).await {
        Ok(Ok((d, _))) => d,
        _ => return master_gone(),
    };
    // The proxy may close the socket once it passed the exit status on, while this end still
    // acknowledges the output before it: the read side decides when the stream is gone.
    let (link, _writer) = Link::new(w, 1, 2, OnWriteFailure::KeepReading);
    let Ok(mut rx) = link.open(1, false) else {
        return master_gone();
    };
    link.send(Frame::Exec {
        id: 1,
        script: request.wire,
    });
    {
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            let r = link::read_loop(r, decoder, |f| match link.dispatch(f)? {
                None => Ok(()),
                Some(other) => Err(ProtoError::Unexpected {
                    kind: other.kind().name(),
                    id: other.id(),
                }),
            })
            .await;
            if let Err(e) = r {
                tracing::debug!("channel exec: {e}");
            }
            link.set_gone();
        });
    }
    let credit = Arc::clone(&rx.credit);
    let feeder = {
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            let Ok(stdin) = super::std_file(0) else {
                link.send(Frame::StdinEof { id: 1 });
                return;
            };
            let r = link::pump_out(&link, 1, stdin, &credit, |id, data| Frame::Stdin {
                id,
                data,
            })
            .await;
            if r.is_ok() {
                link.send(Frame::StdinEof { id: 1 });
            }
        })
    };
    let (Ok(mut stdout), Ok(mut stderr)) = (super::std_file(1), super::std_file(2)) else {
        return master_gone();
    };
    let mut failed: Option<String> = None;
    let mut status = None;
    let mut control_open = true;
    loop {
        tokio::select! {
            biased;
            f = rx.data.recv() => match f {
                Some(Frame::Stdout { data, .. }) => {
                    let _ = async { stdout.write_all(&data).await?; stdout.flush().await }.await;
                    link.ack(1, &rx.inflight, data.len());
                }
                Some(Frame::Stderr { data, .. }) => {
                    let _ = async { stderr.write_all(&data).await?; stderr.flush().await }.await;
                    link.ack(1, &rx.inflight, data.len());
                }
                Some(Frame::Exit { status: s, .. }) => {
                    status = Some(s);
                    break;
                }
                Some(_) => {}
                None => break,
            },
            c = rx.control.recv(), if control_open => match c {
                Some(Frame::Failed { message, .. }) => failed = Some(message),
                Some(_) => {}
                None => control_open = false,
            },
        }
    }
    feeder.abort();
    while let Ok(c) = rx.control.try_recv() {
        if let Frame::Failed { message, .. } = c {
            failed = Some(message);
        }
    }
    match (status, failed) {
        (Some(ExitStatus::Code(c)), _) => Code::Child(c.clamp(0, 255) as u8),
        (Some(ExitStatus::Signal(n)), _) => Code::Signal(n),
        (None, Some(message)) => {
            crate::say_err!("pvlaunch: the login node could not run the command: {message}");
            Code::Child(EXIT_GONE)
        }
        (None, None) => master_gone(),
    }
}
