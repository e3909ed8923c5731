//! `pvlaunch node`: the process the batch job runs beside pvserver on the compute node, so that
//! pvserver never listens on a network port and talks only to pvlaunch.
//!
//! 1. Read the session key ([`Secret::read_file`]: this user's, mode 0600).
//! 2. Bind `127.0.0.1:0` for pvserver; with `--listen`, bind the public listener too (and print
//!    [`LISTENING_MARKER`]`HOST:PORT` once pvserver has connected: the session joins then).
//! 3. Run the launcher's argv with `--server-port=L` appended ([`server_argv`]), in its own
//!    process group (stopped as a group on SIGTERM, SIGINT or SIGHUP; the scheduler can still
//!    kill it, and a parent-death SIGKILL takes it down if this process is killed).
//! 4. Accept exactly one loopback connection whose peer socket belongs to this user
//!    ([`super::peer::owner`]); others are closed at once ([`REFUSED_MARKER`]). Say how long
//!    that took ([`STARTED_MARKER`]: MPI's own start-up is in it).
//! 5. `--to`: connect to the endpoint and prove the key ([`preamble::connect_within`]);
//!    `--listen`: accept connections until one proves the key ([`preamble::accept_within`],
//!    [`MAX_PENDING`] at once), then close the listener. Then [`OPEN_MARKER`].
//! 6. Bridge the two streams both ways; exit with pvserver's status ([`status_code`]).
//! 7. `--listen --serve-again` (a kept allocation): instead of exiting, start a fresh pvserver
//!    on a fresh loopback port ([`AGAIN_MARKER`]) and accept the next attach on the same public
//!    listener, until a signal or `--idle` with nobody attached ([`IDLE_MARKER`], exit 0).
//!
//! Failures print [`ERROR_MARKER`] on stderr. Exit codes: pvserver's own status (128+N when a
//! signal ended it); [`EXIT_UNREACHABLE`] (97) when the path could not be opened (a socket could
//! not be bound, the `--to` endpoint could not be reached or did not prove the key), or when
//! pvserver exited with status 0 before it connected; 2 for a key file that is refused; 128+N
//! when signal N stopped the agent; 126/127 when the launcher could not be started.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::str::FromStr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;
use tokio::task::JoinSet;

use super::{Secret, peer, preamble};
use crate::exit::Code;
use crate::process::{self, Signals};
use crate::relay::{CopyMode, EndpointError, Host, ListenAddr, Stream, Target};

/// Printed on stdout (flushed) once the public listener is bound and pvserver has connected to
/// the agent: `MARKER HOST:PORT`.
pub const LISTENING_MARKER: &str = "pvlaunch-node: listening: ";
/// Printed on stdout once pvserver's stream is joined to the other hop: `MARKER WHAT`.
pub const OPEN_MARKER: &str = "pvlaunch-node: open: ";
/// Starts every error line on stderr.
pub const ERROR_MARKER: &str = "pvlaunch-node: error: ";
/// Printed on stderr when pvserver has connected to the agent: `MARKER SECONDS s`, the time
/// from starting the launcher (MPI's own start-up included).
pub const STARTED_MARKER: &str = "pvlaunch-node: pvserver connected after ";
/// Printed on stderr for a loopback connection of another user: `MARKER UID` or
/// `MARKER unknown`.
pub const REFUSED_MARKER: &str = "pvlaunch-node: refused a connection from uid ";
/// Exit status when the path could not be opened (see the module's documentation).
pub const EXIT_UNREACHABLE: u8 = 97;
/// The option appended to the launcher's argv, followed by the loopback port.
pub const SERVER_PORT_OPTION: &str = "--server-port=";
/// How long connecting to the `--to` endpoint may take (every address of a host name together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// After SIGTERM, how long pvserver's group has before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// After pvserver exits, how long the bridge may take to deliver what is still in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// With `--listen`, how many connections may be authenticating at once; more wait in the
/// kernel's backlog.
pub const MAX_PENDING: usize = 64;
/// With `--serve-again`: printed on stdout when a fresh pvserver is ready for the next attach
/// (`MARKER N`, the attach's number, from 2), after the previous one ended.
pub const AGAIN_MARKER: &str = "pvlaunch-node: ready again: ";
/// With `--serve-again`: printed on stdout when nobody attached within `--idle`; the agent
/// then stops pvserver and exits 0.
pub const IDLE_MARKER: &str = "pvlaunch-node: idle for ";

/// `pvlaunch node` as the command line asked for it.
#[derive(Debug, Clone)]
pub struct NodeRequest {
    pub key_file: PathBuf,
    pub peer: Hop,
    /// The launcher's argv (pvserver and its arguments at the end); never empty.
    pub command: Vec<String>,
    /// With [`Hop::Listen`]: after pvserver exits, start a fresh one and accept the next
    /// attach, until a signal or `idle` (a kept allocation, `--keep-job`).
    pub again: Option<Again>,
}

/// `--serve-again`: how a kept allocation serves one attach after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Again {
    /// With nobody attached this long (from pvserver being ready), stop and exit 0.
    pub idle: Option<Duration>,
}

/// The other hop: where pvserver's stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    /// Connect out and prove the key (`--to HOST:PORT` or `--to unix:/path`).
    To(Target),
    /// Accept one connection that proves the key (`--listen [ADDR:]PORT`).
    Listen(PublicAddr),
}

/// `--listen`'s address: `PORT` (every interface, unlike the relay's loopback default),
/// `ADDR:PORT` or `[IPV6]:PORT`. Port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicAddr {
    pub host: Host,
    pub port: u16,
}

/// A malformed `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicAddrError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("`{0}`: the node listens on TCP only (expected [ADDR:]PORT)")]
    Unix(String),
}

impl FromStr for PublicAddr {
    type Err = PublicAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = text.parse::<u16>() {
            return Ok(PublicAddr {
                host: Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port,
            });
        }
        match text.parse::<ListenAddr>()? {
            ListenAddr::Tcp { host, port } => Ok(PublicAddr { host, port }),
            ListenAddr::Unix(_) => Err(PublicAddrError::Unix(text.to_string())),
        }
    }
}

/// The launcher's argv with `--server-port=PORT` appended as the last word.
pub fn server_argv(command: &[String], port: u16) -> Vec<String> {
    let mut argv = command.to_vec();
    argv.push(format!("{SERVER_PORT_OPTION}{port}"));
    argv
}

/// The line announcing the public listener.
pub fn listening_line(host: &str, port: u16) -> String {
    format!("{LISTENING_MARKER}{host}:{port}")
}

/// Read [`listening_line`]'s host and port back from a line of the job's output (surrounding
/// blanks and a carriage return allowed).
pub fn parse_listening(line: &str) -> Option<(String, u16)> {
    let rest = line.trim().strip_prefix(LISTENING_MARKER)?;
    let (host, port) = rest.rsplit_once(':')?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The host named in the listening line: this machine's name when every interface listens,
/// else the address bound.
pub fn shown_host(bound: IpAddr, hostname: &str) -> String {
    if bound.is_unspecified() {
        hostname.to_string()
    } else {
        Host::Ip(bound).to_string()
    }
}

/// The exit status standing for a child's: its code, or 128+N for signal N.
pub fn status_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// The exit status when pvserver exited before it connected: its own, or
/// [`EXIT_UNREACHABLE`] if that was 0 (which would read as success).
pub fn early_exit_code(status: ExitStatus) -> u8 {
    match status_code(status) {
        0 => EXIT_UNREACHABLE,
        code => code,
    }
}

/// `status 3` or `signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// A shell's convention when a command cannot be run: 127 not found, 126 otherwise.
pub fn spawn_failure_code(err: &io::Error) -> u8 {
    if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Why the `--to` endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("cannot connect to {target}: {source}")]
    Connect { target: Target, source: io::Error },
    #[error("{target} did not answer within {CONNECT_TIMEOUT:?}")]
    Timeout { target: Target },
    #[error("{target} did not authenticate: {source}")]
    Auth {
        target: Target,
        source: preamble::PreambleError,
    },
}

/// Run `pvlaunch node` to the end and return its exit code.
pub fn main(request: NodeRequest) -> Code {
    let secret = match Secret::read_file(&request.key_file) {
        Ok(secret) => secret,
        Err(err) => {
            crate::say_err!("{ERROR_MARKER}{err}");
            return Code::Usage;
        }
    };
    // One thread: the parent-death signal of pvserver's launcher is tied to the thread that
    // spawned it, which must live as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            crate::say_err!("{ERROR_MARKER}cannot start the runtime: {err}");
            return Code::Failure;
        }
    };
    runtime.block_on(run(request, secret))
}

/// Print an error line and return [`EXIT_UNREACHABLE`].
fn failed(what: impl std::fmt::Display) -> Code {
    crate::say_err!("{ERROR_MARKER}{what}");
    Code::Child(EXIT_UNREACHABLE)
}

fn accept_failed(err: io::Error) -> String {
    format!("cannot accept connections: {err}")
}

/// The other hop, once bound.
enum Next<'a> {
    To(&'a Target),
    Listen(TcpListener),
}

/// Run `work` unless pvserver exits first (its early exit's code) or a signal arrives
/// (pvserver stopped, 128+N).
async fn supervise<T>(
    work: impl std::future::Future<Output = T>,
    child: &mut Child,
    signals: &mut Signals,
) -> Result<T, Code> {
    tokio::select! {
        value = work => Ok(value),
        status = child.wait() => Err(exited_early(status)),
        n = signals.next() => Err(stopped(child, n).await),
    }
}

/// pvserver's own connection on the loopback listener, and how long pvserver (MPI's start-up
/// included) took to make it: [`STARTED_MARKER`] on stderr.
async fn own_server(
    loopback: TcpListener,
    child: &mut Child,
    signals: &mut Signals,
) -> Result<TcpStream, Code> {
    let started = std::time::Instant::now();
    match supervise(accept_own(loopback), child, signals).await {
        Ok(Ok(server)) => {
            crate::say_err!("{STARTED_MARKER}{:.1} s", started.elapsed().as_secs_f64());
            Ok(server)
        }
        Ok(Err(err)) => Err(abandon(child, accept_failed(err)).await),
        Err(code) => Err(code),
    }
}

/// The path cannot be opened: say why, stop pvserver, [`EXIT_UNREACHABLE`].
async fn abandon(child: &mut Child, why: impl std::fmt::Display) -> Code {
    let code = failed(why);
    process::stop_group(child, STOP_GRACE).await;
    code
}

async fn run(request: NodeRequest, secret: Secret) -> Code {
    let mut signals = match Signals::try_new() {
        Ok(signals) => signals,
        Err(err) => return failed(format!("cannot receive signals: {err}")),
    };
    let loopback = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
        Ok(listener) => listener,
        Err(err) => return failed(format!("cannot listen on 127.0.0.1: {err}")),
    };
    let port = match loopback.local_addr() {
        Ok(addr) => addr.port(),
        Err(err) => return failed(format!("cannot listen on 127.0.0.1: {err}")),
    };
    let next = match &request.peer {
        Hop::To(target) => Next::To(target),
        Hop::Listen(addr) => match bind_public(addr).await {
            Ok(listener) => Next::Listen(listener),
            Err(err) => {
                return failed(format!(
                    "cannot listen on {}:{}: {err}",
                    addr.host, addr.port
                ));
            }
        },
    };
    // With --listen, the line that says where to join is printed once pvserver has connected
    // (below): like pvserver's own `Accepting connection(s)`, it means the session can be
    // joined now.
    let listening = match &next {
        Next::Listen(listener) => match listener.local_addr() {
            Ok(bound) => Some(listening_line(
                &shown_host(bound.ip(), &crate::profile::hostname()),
                bound.port(),
            )),
            Err(err) => return failed(format!("cannot listen: {err}")),
        },
        Next::To(_) => None,
    };

    let argv = server_argv(&request.command, port);
    let mut child = match process::command(&argv, process::Kind::Group).spawn() {
        Ok(child) => child,
        Err(err) => {
            crate::say_err!("{ERROR_MARKER}cannot start {}: {err}", argv[0]);
            return Code::Child(spawn_failure_code(&err));
        }
    };

    let (server, outer, what) = match next {
        Next::To(target) => {
            let server = match own_server(loopback, &mut child, &mut signals).await {
                Ok(server) => server,
                Err(code) => return code,
            };
            match supervise(reach(target, &secret), &mut child, &mut signals).await {
                Ok(Ok(outer)) => (server, outer, format!("pvserver <-> {target}")),
                Ok(Err(err)) => {
                    // pvserver is stopped while its connection is still open: it sees a
                    // stop, not a reset.
                    let code = abandon(&mut child, err).await;
                    drop(server);
                    return code;
                }
                Err(code) => return code,
            }
        }
        Next::Listen(public) => {
            let server = match own_server(loopback, &mut child, &mut signals).await {
                Ok(server) => server,
                Err(code) => return code,
            };
            if let Some(line) = &listening {
                crate::say!("{line}");
            }
            if let Some(again) = request.again {
                return serve_again(&request, &secret, again, public, server, child, signals).await;
            }
            match supervise(
                accept_authenticated(&public, &secret),
                &mut child,
                &mut signals,
            )
            .await
            {
                Ok(Ok((outer, from))) => {
                    drop(public);
                    (server, Stream::Tcp(outer), format!("pvserver <-> {from}"))
                }
                Ok(Err(err)) => return abandon(&mut child, accept_failed(err)).await,
                Err(code) => return code,
            }
        }
    };
    crate::say!("{OPEN_MARKER}{what}");
    serve_one(server, outer, &mut child, &mut signals).await
}

/// Bridge pvserver's stream and the other hop's until pvserver exits; its status, or 128+N
/// when signal N stopped it.
async fn serve_one(
    server: TcpStream,
    outer: Outer,
    child: &mut Child,
    signals: &mut Signals,
) -> Code {
    let bridged = bridge(server, outer);
    tokio::pin!(bridged);
    let status = tokio::select! {
        moved = &mut bridged => {
            report_bridge(moved);
            tokio::select! {
                status = child.wait() => status,
                n = signals.next() => return stopped(child, n).await,
            }
        }
        status = child.wait() => {
            tokio::select! {
                drained = tokio::time::timeout(DRAIN_TIMEOUT, &mut bridged) => match drained {
                    Ok(moved) => report_bridge(moved),
                    Err(_) => crate::say_err!(
                        "pvlaunch-node: pvserver exited; the other side did not close within {DRAIN_TIMEOUT:?}"
                    ),
                },
                // pvserver is gone already: nothing left to stop.
                n = signals.next() => return Code::Signal(n),
            }
            status
        }
        n = signals.next() => return stopped(child, n).await,
    };
    match status {
        Ok(status) => Code::Child(status_code(status)),
        Err(err) => {
            crate::say_err!("{ERROR_MARKER}cannot wait for pvserver: {err}");
            Code::Failure
        }
    }
}

/// `--serve-again`: serve one attach after another on the same public listener, a fresh
/// pvserver for each, until a signal (128+N), `idle` with nobody attached (0), or a pvserver
/// that cannot start again (its code).
async fn serve_again(
    request: &NodeRequest,
    secret: &Secret,
    again: Again,
    public: TcpListener,
    mut server: TcpStream,
    mut child: Child,
    mut signals: Signals,
) -> Code {
    let mut round = 1u64;
    loop {
        let attach = supervise(
            accept_authenticated(&public, secret),
            &mut child,
            &mut signals,
        );
        let accepted = match again.idle {
            Some(idle) => match tokio::time::timeout(idle, attach).await {
                Ok(accepted) => accepted,
                Err(_) => {
                    crate::say!("{IDLE_MARKER}{} s: stopping", idle.as_secs());
                    drop(server);
                    process::stop_group(&mut child, STOP_GRACE).await;
                    return Code::Success;
                }
            },
            None => attach.await,
        };
        let (outer, from) = match accepted {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(err)) => return abandon(&mut child, accept_failed(err)).await,
            Err(code) => return code,
        };
        crate::say!("{OPEN_MARKER}pvserver <-> {from}");
        match serve_one(server, Stream::Tcp(outer), &mut child, &mut signals).await {
            Code::Signal(n) => return Code::Signal(n),
            Code::Child(code) => crate::say_err!(
                "pvlaunch-node: pvserver exited (status {code}); starting a fresh one"
            ),
            other => return other,
        }
        round += 1;
        // A fresh pvserver on a fresh loopback port; the public listener stays.
        let loopback = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(listener) => listener,
            Err(err) => return failed(format!("cannot listen on 127.0.0.1: {err}")),
        };
        let port = match loopback.local_addr() {
            Ok(addr) => addr.port(),
            Err(err) => return failed(format!("cannot listen on 127.0.0.1: {err}")),
        };
        let argv = server_argv(&request.command, port);
        child = match process::command(&argv, process::Kind::Group).spawn() {
            Ok(child) => child,
            Err(err) => {
                crate::say_err!("{ERROR_MARKER}cannot start {}: {err}", argv[0]);
                return Code::Child(spawn_failure_code(&err));
            }
        };
        server = match own_server(loopback, &mut child, &mut signals).await {
            Ok(server) => server,
            Err(code) => return code,
        };
        crate::say!("{AGAIN_MARKER}{round}");
    }
}

fn exited_early(status: io::Result<ExitStatus>) -> Code {
    match status {
        Ok(status) => {
            crate::say_err!(
                "{ERROR_MARKER}pvserver exited ({}) before it connected",
                describe(status)
            );
            Code::Child(early_exit_code(status))
        }
        Err(err) => failed(format!("cannot wait for pvserver: {err}")),
    }
}

/// Signal `n` arrived: stop pvserver's group and return 128+n.
async fn stopped(child: &mut Child, n: i32) -> Code {
    crate::say_err!("pvlaunch-node: stopped by signal {n}: stopping pvserver");
    process::stop_group(child, STOP_GRACE).await;
    Code::Signal(n)
}

fn report_bridge(moved: io::Result<(u64, u64)>) {
    match moved {
        Ok((from_server, to_server)) => crate::say_err!(
            "pvlaunch-node: closed: {from_server} bytes from pvserver, {to_server} bytes to pvserver"
        ),
        Err(err) => crate::say_err!("pvlaunch-node: the connection ended: {err}"),
    }
}

/// Any stream the other hop may be.
type Outer = Stream;

/// Whether an accept error concerns one connection only (accept again) rather than the listener.
fn transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The first loopback connection whose peer socket belongs to this user; others are closed at
/// once. The listener is closed on return.
async fn accept_own(listener: TcpListener) -> io::Result<TcpStream> {
    let me = crate::relay::effective_uid();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) if transient(&err) => continue,
            Err(err) => return Err(err),
        };
        let owner = stream
            .local_addr()
            .and_then(|local| peer::owner(from, local))
            .ok()
            .flatten();
        match owner {
            Some(uid) if uid == me => return Ok(stream),
            Some(uid) => crate::say_err!("{REFUSED_MARKER}{uid}"),
            None => crate::say_err!("{REFUSED_MARKER}unknown"),
        }
    }
}

/// The first connection on the public listener that proves the key. Each one authenticates in
/// its own task, at most [`MAX_PENDING`] at once; failures are closed and logged. On return the
/// connections still authenticating are dropped (the caller closes the listener, or keeps it
/// for the next attach).
async fn accept_authenticated(
    listener: &TcpListener,
    secret: &Secret,
) -> io::Result<(TcpStream, SocketAddr)> {
    let mut pending = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if pending.len() < MAX_PENDING => match accepted {
                Ok((mut stream, from)) => {
                    let secret = secret.clone();
                    pending.spawn(async move {
                        let proved = preamble::accept_within(&mut stream, &secret).await;
                        (stream, from, proved)
                    });
                }
                Err(err) if transient(&err) => {}
                Err(err) => return Err(err),
            },
            Some(done) = pending.join_next() => match done {
                Ok((stream, from, Ok(()))) => return Ok((stream, from)),
                Ok((_, from, Err(err))) => {
                    crate::say_err!("pvlaunch-node: refused {from}: {err}");
                }
                Err(err) => crate::say_err!("pvlaunch-node: a connection's check failed: {err}"),
            },
        }
    }
}

async fn bind_public(addr: &PublicAddr) -> io::Result<TcpListener> {
    let ip = match &addr.host {
        Host::Ip(ip) => *ip,
        Host::Name(name) if name == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Host::Name(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), addr.port))
                .await?
                .collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .map(SocketAddr::ip)
                .ok_or_else(|| io::Error::other(format!("{name} resolves to no address")))?
        }
    };
    TcpListener::bind(SocketAddr::new(ip, addr.port)).await
}

/// Connect to the `--to` endpoint and prove the key.
async fn reach(target: &Target, secret: &Secret) -> Result<Outer, ReachError> {
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, crate::relay::connect_target(target)).await;
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(ReachError::Connect {
                target: target.clone(),
                source,
            });
        }
        Err(_) => {
            return Err(ReachError::Timeout {
                target: target.clone(),
            });
        }
    };
    let proved = match &mut stream {
        Stream::Tcp(s) => preamble::connect_within(s, secret).await,
        Stream::Unix(s) => preamble::connect_within(s, secret).await,
    };
    proved.map_err(|source| ReachError::Auth {
        target: target.clone(),
        source,
    })?;
    Ok(stream)
}

/// Join pvserver's stream and the other hop's, both ways, each direction's end passed on as a
/// half-close. Returns the bytes moved (from pvserver, to pvserver). The one place to swap in
/// the relay's zero-copy bridge.
async fn bridge(server: TcpStream, outer: Outer) -> io::Result<(u64, u64)> {
    crate::relay::bridge(Stream::Tcp(server), outer, CopyMode::Auto).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn killed(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    #[test]
    fn the_port_is_the_last_word() {
        let command: Vec<String> = ["srun", "-n", "4", "pvserver", "--reverse-connection"]
            .map(String::from)
            .to_vec();
        let argv = server_argv(&command, 40123);
        assert_eq!(argv[..5], command[..]);
        assert_eq!(argv.last().unwrap(), "--server-port=40123");
        assert_eq!(argv.len(), 6);
    }

    #[test]
    fn public_addresses_default_to_every_interface() {
        assert_eq!(
            "11111".parse(),
            Ok(PublicAddr {
                host: Host::Ip(Ipv4Addr::UNSPECIFIED.into()),
                port: 11111
            })
        );
        assert_eq!(
            "0".parse::<PublicAddr>().unwrap().port,
            0,
            "port 0: any free port"
        );
        assert_eq!(
            "127.0.0.1:5".parse(),
            Ok(PublicAddr {
                host: Host::Ip(Ipv4Addr::LOCALHOST.into()),
                port: 5
            })
        );
        assert_eq!(
            "*:7".parse::<PublicAddr>().unwrap().host,
            Host::Ip(Ipv4Addr::UNSPECIFIED.into())
        );
        assert_eq!(
            "unix:/tmp/x".parse::<PublicAddr>(),
            Err(PublicAddrError::Unix("unix:/tmp/x".into()))
        );
        assert!(matches!(
            "node:x".parse::<PublicAddr>(),
            Err(PublicAddrError::Endpoint(EndpointError::BadPort(_)))
        ));
    }

    #[test]
    fn targets_are_the_relays() {
        assert_eq!(
            "login-1:2222".parse::<Target>().unwrap().to_string(),
            "login-1:2222"
        );
        assert_eq!(
            "unix:/tmp/pvlaunch.x/hop.sock".parse::<Target>(),
            Ok(Target::Unix("/tmp/pvlaunch.x/hop.sock".into()))
        );
    }

    #[test]
    fn the_session_reads_the_agents_lines() {
        assert_eq!(
            crate::pvserver::node_listening(&listening_line("node-7", 40999)),
            Some(("node-7".into(), 40999))
        );
        let error = format!("{ERROR_MARKER}cannot reach login:1");
        assert_eq!(
            crate::pvserver::node_failure(&[error]).as_deref(),
            Some("cannot reach login:1")
        );
        assert_eq!(
            i32::from(EXIT_UNREACHABLE),
            crate::pvserver::NODE_FAILURE_STATUS
        );
    }

    #[test]
    fn the_listening_line_round_trips() {
        let line = listening_line("node-7", 40999);
        assert_eq!(line, "pvlaunch-node: listening: node-7:40999");
        assert_eq!(parse_listening(&line), Some(("node-7".into(), 40999)));
        assert_eq!(
            parse_listening(&format!("{line}\r")),
            Some(("node-7".into(), 40999))
        );
        assert_eq!(
            parse_listening("pvlaunch-node: listening: [::1]:5"),
            Some(("[::1]".into(), 5))
        );
        assert_eq!(parse_listening("pvlaunch-node: listening: node"), None);
        assert_eq!(parse_listening("pvlaunch-node: listening: :5"), None);
        assert_eq!(parse_listening("Accepting connection(s): node:5"), None);
        assert_eq!(shown_host(Ipv4Addr::UNSPECIFIED.into(), "node-7"), "node-7");
        assert_eq!(
            shown_host(Ipv4Addr::LOCALHOST.into(), "node-7"),
            "127.0.0.1"
        );
        assert_eq!(
            shown_host("::1".parse().unwrap(), "node-7"),
            "[::1]",
            "an IPv6 address in brackets, as HOST:PORT needs"
        );
    }

    #[test]
    fn exit_statuses_map_to_ours() {
        assert_eq!(status_code(exited(0)), 0);
        assert_eq!(status_code(exited(3)), 3);
        assert_eq!(status_code(killed(9)), 137);
        assert_eq!(status_code(killed(15)), 143);
        assert_eq!(early_exit_code(exited(0)), EXIT_UNREACHABLE);
        assert_eq!(early_exit_code(exited(1)), 1);
        assert_eq!(early_exit_code(killed(9)), 137);
        assert_eq!(describe(exited(3)), "status 3");
        assert_eq!(describe(killed(9)), "signal 9");
        assert_eq!(
            spawn_failure_code(&io::Error::from(io::ErrorKind::NotFound)),
            127
        );
        assert_eq!(
            spawn_failure_code(&io::Error::from(io::ErrorKind::PermissionDenied)),
            126
        );
    }
}
