//! `pvlaunch channel serve`: the login node's end. Frames come on stdin and go on stdout
//! (stdout is the channel: nothing else is printed there; logs go to stderr).
//!
//! Each `Exec` runs `/bin/sh -c SCRIPT` in a process group of its own, with piped stdio and
//! SIGHUP as its parent-death signal. `ListenUnix` binds a socket of mode 0600 (refusing a path
//! that exists and is not a stale socket of this user's), `ListenTcp` a TCP port; `Connect`
//! connects to `HOST:PORT` or `unix:/path`.
//!
//! When the channel ends (end of stdin, a broken stdout, a protocol error, SIGTERM, SIGHUP or
//! SIGINT) the channel is hung up for every command, as a terminal's hangup: its stdin gets
//! end-of-file, its output pipes close, its group gets SIGHUP. The guard ignores SIGHUP and
//! cancels the job on end of input; what ignores all three gets the linger time
//! ([`CHILD_LINGER`] by default, longer than the guard's deadline for cancelling), then
//! SIGTERM and, [`KILL_GRACE`] later, SIGKILL. Listeners close and remove their socket files
//! at once, sockets close. If the server is killed outright, the parent-death signal and the
//! closed pipes still hang every command up.

use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::link::{self, Link, OnWriteFailure, RouteRx};
use super::proto::{self, Decoder, ExitStatus, Frame, ProtoError, SERVER_IDS};
use crate::exit::Code;
use crate::relay::{ListenAddr, Target};

/// How long a command may run on after the channel ended before it is stopped: longer than
/// the guard's deadline for cancelling a job (`job::GUARD_DEADLINE`, 10 minutes).
pub const CHILD_LINGER: Duration = Duration::from_secs(11 * 60);
/// Between SIGTERM and SIGKILL, for `Kill` and after the linger time.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the client's hello may take to arrive.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `Connect` may take.
pub const CONNECT_TIMEOUT: Duration = crate::relay::CONNECT_TIMEOUT;

/// What `pvlaunch channel serve` was asked.
#[derive(Debug, Clone)]
pub struct ServeRequest {
    /// How long commands may run on after the channel ended.
    pub linger: Duration,
}

impl Default for ServeRequest {
    fn default() -> Self {
        ServeRequest {
            linger: CHILD_LINGER,
        }
    }
}

/// `pvlaunch channel serve`: serve stdin/stdout until the channel ends, then clean up.
pub fn main(request: ServeRequest) -> Code {
    // One thread: the commands' parent-death signal is tied to the thread that spawned them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::say_err!("pvlaunch channel: cannot start the runtime: {e}");
            return Code::Failure;
        }
    };
    let code = runtime.block_on(async {
        let mut signals = match crate::process::Signals::try_new() {
            Ok(s) => s,
            Err(e) => {
                crate::say_err!("pvlaunch channel: cannot receive signals: {e}");
                return Code::Failure;
            }
        };
        let stop = async move {
            let n = signals.next().await;
            tracing::info!("signal {n}: ending the channel");
        };
        let (stdin, stdout) = match (super::std_file(0), super::std_file(1)) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => {
                crate::say_err!("pvlaunch channel: cannot use stdin and stdout: {e}");
                return Code::Failure;
            }
        };
        if let Err(e) = super::sys::stdio_to_null() {
            crate::say_err!("pvlaunch channel: cannot detach stdin and stdout: {e}");
            return Code::Failure;
        }
        match serve(stdin, stdout, request, stop).await {
            Ok(()) => Code::Success,
            Err(e) => {
                crate::say_err!("pvlaunch channel: {e}");
                Code::Failure
            }
        }
    });
    // stdin's reader may be blocked in a read that never returns.
    runtime.shutdown_background();
    code
}

/// Why serving ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no hello from the client within {} s", HELLO_TIMEOUT.as_secs())]
    HelloTimeout,
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("reading the channel failed: {0}")]
    Io(#[from] io::Error),
}

/// Serve one channel over `reader`/`writer` until it ends or `stop` resolves, then clean up
/// (see the module's notes). Returns once every command is gone.
pub async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    request: ServeRequest,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    writer
        .write_all(&proto::hello(env!("CARGO_PKG_VERSION")))
        .await?;
    writer.flush().await?;
    let (decoder, version) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut reader, 0))
        .await
        .map_err(|_| ServeError::HelloTimeout)??;
    tracing::info!(client = %version, "channel open");

    let (link, writer_task) = Link::new(writer, SERVER_IDS, u32::MAX, OnWriteFailure::EndLink);
    let (end_tx, end) = watch::channel(false);
    let mut server = Server {
        link: Arc::clone(&link),
        execs: JoinSet::new(),
        others: JoinSet::new(),
        end,
        linger: request.linger,
    };
    let result = {
        let read = link::read_loop(reader, decoder, |frame| {
            if let Some(opening) = link.dispatch(frame)? {
                server.open(opening)?;
            }
            Ok(())
        });
        tokio::select! {
            r = read => r.map_err(|e| match e {
                link::ReadError::Proto(p) => ServeError::Proto(p),
                link::ReadError::Io(e) => ServeError::Io(e),
                link::ReadError::Truncated => ServeError::Io(io::ErrorKind::UnexpectedEof.into()),
            }),
            () = link.gone() => Ok(()),
            () = stop => Ok(()),
        }
    };
    if let Err(e) = &result {
        tracing::warn!("ending the channel: {e}");
    }
    // Hang up: routes go (their tasks end), listeners and sockets close, commands are told.
    link.set_gone();
    let _ = end_tx.send(true);
    server.others.shutdown().await;
    while server.execs.join_next().await.is_some() {}
    let _ = writer_task.await;
    tracing::info!("channel closed");
    result
}

/// Read the peer's hello (after at most `junk` other bytes); the decoder holds what followed.
pub(crate) async fn read_hello<R>(
    reader: &mut R,
    junk: usize,
) -> Result<(Decoder, String), ServeError>
where
    R: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((version, skipped, used)) = proto::find_hello(&buf, junk)? {
            if skipped > 0 {
                tracing::info!(
                    "skipped {skipped} bytes before the channel's hello: {:?}",
                    String::from_utf8_lossy(&buf[..skipped])
                );
            }
            let mut decoder = Decoder::new();
            decoder.push(&buf[used..]);
            return Ok((decoder, version));
        }
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Err(ServeError::Proto(ProtoError::NotAChannel(
                String::from_utf8_lossy(&buf[..buf.len().min(80)]).into(),
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Server {
    link: Arc<Link>,
    /// Commands: waited for at the end.
    execs: JoinSet<()>,
    /// Listeners and sockets: aborted at the end.
    others: JoinSet<()>,
    end: watch::Receiver<bool>,
    linger: Duration,
}

impl Server {
    fn open(&mut self, frame: Frame) -> Result<(), ProtoError> {
        let id = frame.id();
        if id >= SERVER_IDS {
            return Err(ProtoError::BadStreamId(id));
        }
        while self.execs.try_join_next().is_some() {}
        while self.others.try_join_next().is_some() {}
        let link = Arc::clone(&self.link);
        match frame {
            Frame::Exec { id, script } => {
                let rx = link.open(id, false)?;
                let end = self.end.clone();
                let linger = self.linger;
                self.execs.spawn(run_exec(link, rx, script, end, linger));
            }
            Frame::ListenUnix { id, path } => {
                let rx = link.open(id, false)?;
                self.others
                    .spawn(listen(link, rx, ListenAddr::Unix(path.into())));
            }
            Frame::ListenTcp { id, bind, port } => {
                let rx = link.open(id, false)?;
                let addr = if bind.is_empty() {
                    Ok(ListenAddr::loopback(port))
                } else {
                    format!("{}:{port}", bracket(&bind)).parse::<ListenAddr>()
                };
                match addr {
                    Ok(addr) => {
                        self.others.spawn(listen(link, rx, addr));
                    }
                    Err(e) => fail(&link, id, e),
                }
            }
            Frame::Connect { id, target } => {
                let rx = link.open(id, false)?;
                match target.parse::<Target>() {
                    Ok(target) => {
                        self.others.spawn(connect(link, rx, target));
                    }
                    Err(e) => fail(&link, id, e),
                }
            }
            other => {
                return Err(ProtoError::Unexpected {
                    kind: other.kind().name(),
                    id,
                });
            }
        }
        Ok(())
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn fail(link: &Link, id: u32, why: impl std::fmt::Display) {
    link.send(Frame::Failed {
        id,
        message: why.to_string(),
    });
    link.close_route(id);
}

async fn listen(link: Arc<Link>, mut rx: RouteRx, addr: ListenAddr) {
    let id = rx.id;
    let listener = match crate::relay::Listener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => return fail(&link, id, e),
    };
    let port = match listener.local_addr() {
        Ok(ListenAddr::Tcp { port, .. }) => port,
        Ok(ListenAddr::Unix(_)) => 0,
        Err(e) => return fail(&link, id, e),
    };
    tracing::info!(id, listen = %addr, port, "listening");
    link.send(Frame::Listening { id, port });
    let me = crate::relay::effective_uid();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(id, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let crate::relay::Peer::Unix { uid, .. } = peer
                    && uid != me
                {
                    tracing::warn!(id, uid, "refused a connection of another user");
                    continue;
                }
                let Some(new) = link.alloc_id() else {
                    tracing::warn!(id, "out of stream ids");
                    continue;
                };
                let Ok(srx) = link.open(new, false) else { continue };
                tracing::info!(id, stream = new, %peer, "accepted");
                link.send(Frame::Accepted { listener: id, stream: new });
                conns.spawn(link::bridge_socket(Arc::clone(&link), stream, srx));
            }
            () = link::wait_close(&mut rx.control) => break,
            () = link.gone() => break,
        }
    }
    tracing::info!(id, listen = %addr, "listener closed");
    link.close_route(id);
    // Dropping the listener removes its socket file; accepted connections run on.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connect(link: Arc<Link>, rx: RouteRx, target: Target) {
    let id = rx.id;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, crate::relay::connect_target(&target)).await;
    let stream = match stream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(&link, id, format!("connect to {target}: {e}")),
        Err(_) => {
            return fail(
                &link,
                id,
                format!(
                    "connect to {target}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            );
        }
    };
    tracing::info!(id, %target, "connected");
    link.send(Frame::Connected { id });
    link::bridge_socket(link, stream, rx).await;
}

/// What a command's task is told besides its frames.
enum Told {
    Kill,
    /// The caller went away: close its pipes, let it run.
    Detach,
}

async fn run_exec(
    link: Arc<Link>,
    mut rx: RouteRx,
    script: String,
    mut end: watch::Receiver<bool>,
    linger: Duration,
) {
    let id = rx.id;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(home) = std::env::var_os("HOME").filter(|h| std::path::Path::new(h).is_dir()) {
        cmd.current_dir(home);
    }
    super::sys::hang_up_with_parent(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(&link, id, format!("cannot run /bin/sh: {e}")),
    };
    let pid = child.id();
    tracing::info!(id, pid, "command started");
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");

    // Stdin: written by its own task, so a command that does not read cannot hold up the
    // requests about it.
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel::<Frame>();
    let mut stdin_tx = Some(stdin_tx);
    let stdin_task = {
        let link = Arc::clone(&link);
        let inflight = Arc::clone(&rx.inflight);
        tokio::spawn(async move {
            let mut q = stdin_rx;
            let _ = link::pump_in(&link, id, &mut q, &inflight, stdin).await;
        })
    };
    let output = {
        let link = Arc::clone(&link);
        let credit = Arc::clone(&rx.credit);
        tokio::spawn(async move {
            let out = link::pump_out(&link, id, stdout, &credit, |id, data| Frame::Stdout {
                id,
                data,
            });
            let err = link::pump_out(&link, id, stderr, &credit, |id, data| Frame::Stderr {
                id,
                data,
            });
            let _ = tokio::join!(out, err);
        })
    };
    let output_abort = output.abort_handle();
    let mut output = Some(output);
    let (told_tx, mut told) = mpsc::unbounded_channel::<Told>();
    let mut status = None;
    let mut detached = false;
    let mut hung_up = false;
    let mut control_open = true;
    loop {
        if status.is_some() && output.is_none() {
            break;
        }
        tokio::select! {
            frame = rx.data.recv(), if stdin_tx.is_some() => match frame {
                Some(f @ Frame::Stdin { .. }) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(f);
                    }
                }
                Some(f @ Frame::StdinEof { .. }) => {
                    if let Some(tx) = stdin_tx.take() {
                        let _ = tx.send(f);
                    }
                }
                Some(_) => {}
                None => stdin_tx = None,
            },
            frame = rx.control.recv(), if control_open => match frame {
                Some(Frame::Kill { .. }) => { let _ = told_tx.send(Told::Kill); }
                Some(Frame::Close { .. }) => { let _ = told_tx.send(Told::Detach); }
                Some(_) => {}
                // The route is gone (the channel ended): `end` follows.
                None => control_open = false,
            },
            Some(t) = told.recv() => match t {
                Told::Kill if status.is_none() => {
                    tracing::info!(id, pid, "stopping the command (asked)");
                    crate::process::stop_group(&mut child, KILL_GRACE).await;
                    status = child.wait().await.ok();
                }
                Told::Kill => {}
                Told::Detach => {
                    tracing::info!(id, pid, "the caller went away: closing the command's pipes");
                    detached = true;
                    stdin_tx = None;
                    stdin_task.abort();
                    output_abort.abort();
                    link.close_route(id);
                }
            },
            s = child.wait(), if status.is_none() => {
                status = s.ok();
            }
            r = async { output.as_mut().expect("guarded").await }, if output.is_some() => {
                let _ = r;
                output = None;
            }
            () = async { let _ = end.wait_for(|e| *e).await; }, if !hung_up => {
                hung_up = true;
                break;
            }
        }
    }
    if hung_up {
        stdin_task.abort();
        output_abort.abort();
        if status.is_none() {
            tracing::info!(id, pid, "the channel ended: hanging up the command");
            if let Some(pid) = child.id() {
                super::sys::hang_up_group(pid);
            }
            match tokio::time::timeout(linger, child.wait()).await {
                Ok(s) => status = s.ok(),
                Err(_) => {
                    tracing::info!(id, pid, "the command outlived the linger time: stopping it");
                    crate::process::stop_group(&mut child, KILL_GRACE).await;
                    status = child.wait().await.ok();
                }
            }
        }
        tracing::info!(id, pid, ?status, "command ended after the channel");
        return;
    }
    let status = status.and_then(|s| exit_status(&s));
    tracing::info!(id, pid, ?status, "command ended");
    if !detached {
        if let Some(status) = status {
            link.send(Frame::Exit { id, status });
        } else {
            fail(&link, id, "the command's status could not be read");
        }
    }
    link.close_route(id);
}

fn exit_status(s: &std::process::ExitStatus) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    s.code()
        .map(ExitStatus::Code)
        .or_else(|| s.signal().map(ExitStatus::Signal))
}
