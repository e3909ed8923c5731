//! One relayed connection: connect to a target (and prove the session key to it, if asked),
//! copy both ways, close, report. Also [`bridge`]: the same copy for two given streams.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, UnixStream};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span};

use super::config::{CopyMode, Limits, ResumeSide, Rule};
use super::copy::{Progress, one_way};
use super::endpoint::{Host, ListenAddr, Target};
use super::events::{CloseReason, EventSender, Peer, RelayEvent};
use super::sock::Stream;
use crate::hop::Secret;

/// A rule and its round-robin position.
#[derive(Debug)]
pub(crate) struct RuleState {
    pub(crate) rule: Rule,
    next: AtomicUsize,
}

impl RuleState {
    pub(crate) fn new(rule: Rule) -> RuleState {
        RuleState {
            rule,
            next: AtomicUsize::new(0),
        }
    }

    /// The targets in the order to try them for the next connection.
    fn rotation(&self) -> impl Iterator<Item = &Target> {
        let n = self.rule.to.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| &self.rule.to[(start + i) % n])
    }
}

/// One link of a resumable stream.
pub(crate) type Link = crate::resume::Carrier<Stream>;

/// The accepting side's links: the first one's hello, then those that come back.
#[derive(Debug)]
pub(crate) struct Links {
    pub(crate) hello: crate::resume::Hello,
    pub(crate) rx: tokio::sync::mpsc::Receiver<Link>,
}

/// The first pause before a lost link is made again; it doubles up to [`REDIAL_MAX_PAUSE`].
const REDIAL_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between attempts to make a lost link again.
const REDIAL_MAX_PAUSE: Duration = Duration::from_secs(2);

/// What the connection needs from its listener and the relay.
#[derive(Debug)]
pub(crate) struct ConnSetup {
    pub(crate) id: u64,
    pub(crate) peer: Peer,
    pub(crate) listen: ListenAddr,
    pub(crate) rule: Arc<RuleState>,
    pub(crate) source: Option<IpAddr>,
    /// Prove this key to the target before copying.
    pub(crate) connect_key: Option<Arc<Secret>>,
    /// Whether the stream is resumable, and which side this is.
    pub(crate) resume: Option<ResumeSide>,
    /// The accepting side: the first link's hello and the links that come back.
    pub(crate) links: Option<Links>,
    pub(crate) limits: Limits,
    pub(crate) copy: CopyMode,
    pub(crate) events: Option<EventSender>,
}

/// Bytes moved by a finished connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Moved {
    pub(crate) from_peer: u64,
    pub(crate) to_peer: u64,
}

pub(crate) async fn serve(
    mut setup: ConnSetup,
    client: Stream,
    stop: watch::Receiver<bool>,
) -> Moved {
    if setup.resume.is_some() {
        let span = info_span!("conn", id = setup.id, peer = %setup.peer, listen = %setup.listen);
        let links = setup.links.take();
        return resumable(setup, client, links, stop).instrument(span).await;
    }
    let span = info_span!("conn", id = setup.id, peer = %setup.peer, listen = %setup.listen);
    relay(setup, client, stop).instrument(span).await
}

fn emit(setup: &ConnSetup, event: RelayEvent) {
    if let Some(tx) = &setup.events {
        let _ = tx.send(event);
    }
}

/// Connect to the target (unless the relay stops first), tune the accepted socket, and report
/// it: `opened`, or `connect_failed` (then `None`).
async fn open_reported(
    setup: &ConnSetup,
    accepted: &Stream,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Stream, String)> {
    let connected = tokio::select! {
        result = open(setup) => result,
        _ = stop.wait_for(|stopped| *stopped) => Err("relay stopped".to_string()),
    };
    let (server, to) = match connected {
        Ok(connected) => connected,
        Err(error) => {
            info!(%error, "connect failed");
            emit(
                setup,
                RelayEvent::ConnectFailed {
                    id: setup.id,
                    peer: setup.peer.clone(),
                    listen: setup.listen.clone(),
                    error,
                },
            );
            return None;
        }
    };
    if let Err(err) = accepted.tune() {
        tracing::debug!("cannot set socket options: {err}");
    }
    info!(%to, "opened");
    emit(
        setup,
        RelayEvent::Opened {
            id: setup.id,
            peer: setup.peer.clone(),
            listen: setup.listen.clone(),
            to: to.clone(),
        },
    );
    Some((server, to))
}

/// Log and report the end of a connection.
fn report_closed(
    setup: &ConnSetup,
    to: String,
    moved: Moved,
    start: Instant,
    reason: CloseReason,
    error: Option<String>,
) -> Moved {
    let duration = start.elapsed();
    info!(
        bytes_from_peer = moved.from_peer,
        bytes_to_peer = moved.to_peer,
        duration = ?duration,
        reason = %reason,
        error = error.as_deref(),
        "closed"
    );
    emit(
        setup,
        RelayEvent::Closed {
            id: setup.id,
            peer: setup.peer.clone(),
            to,
            bytes_from_peer: moved.from_peer,
            bytes_to_peer: moved.to_peer,
            duration,
            reason,
            error,
        },
    );
    moved
}

async fn relay(setup: ConnSetup, client: Stream, mut stop: watch::Receiver<bool>) -> Moved {
    let start = Instant::now();
    let Some((server, to)) = open_reported(&setup, &client, &mut stop).await else {
        return Moved::default();
    };

    let up = Progress::new(start);
    let down = Progress::new(start);
    let both = async {
        tokio::try_join!(
            one_way(&client, &server, setup.copy, &up),
            one_way(&server, &client, setup.copy, &down),
        )
    };
    let (reason, error) = tokio::select! {
        result = both => match result {
            Ok(_) => (CloseReason::Done, None),
            Err(err) => (CloseReason::Error, Some(err.to_string())),
        },
        _ = idle(setup.limits.idle_timeout, &up, &down) => (CloseReason::Idle, None),
        _ = stop.wait_for(|stopped| *stopped) => (CloseReason::Shutdown, None),
    };
    if reason != CloseReason::Done {
        // Let both peers see end-of-stream rather than a reset where possible.
        let _ = client.shutdown_write();
        let _ = server.shutdown_write();
    }
    let moved = Moved {
        from_peer: up.bytes(),
        to_peer: down.bytes(),
    };
    report_closed(&setup, to, moved, start, reason, error)
}

/// Resolves when neither direction has moved data for `timeout`; never when `None`.
async fn idle(timeout: Option<Duration>, up: &Progress, down: &Progress) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let deadline = up.last_activity().max(down.last_activity()) + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Connect to a target within the connect timeout, then prove the key to it if the forward
/// has one. The error is the text of the `connect_failed` event.
async fn open(setup: &ConnSetup) -> Result<(Stream, String), String> {
    let timeout = setup.limits.connect_timeout;
    let connected = match tokio::time::timeout(timeout, connect_any(setup)).await {
        Ok(connected) => connected,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    };
    let (mut server, to) = connected.map_err(|err| {
        let targets: Vec<String> = setup.rule.rule.to.iter().map(|t| t.to_string()).collect();
        format!("connect to {}: {err}", targets.join(", "))
    })?;
    // Before the preamble: its three small messages should not wait for Nagle either.
    if let Err(err) = server.tune() {
        tracing::debug!("cannot set socket options: {err}");
    }
    if let Some(key) = &setup.connect_key {
        // Bounded by the preamble's own timeout: a target that accepts but never answers (a
        // forward into a dead ssh connection) does not hold the connection for ever.
        server
            .prove(key)
            .await
            .map_err(|err| format!("authenticate to {to}: {err}"))?;
    }
    Ok((server, to))
}

/// Join `a` and `b` until both directions have ended, with the relay's copy engine (`splice(2)`
/// for bulk data on Linux in [`CopyMode::Auto`] and [`CopyMode::Splice`]). End of stream on
/// one side is passed on as a half-close, and the other direction keeps going until its own
/// end. Sets `TCP_NODELAY` and keepalive on TCP streams, like relayed connections.
///
/// Returns the bytes moved from `a` to `b` and from `b` to `a`. On an error in either
/// direction both streams get end-of-stream and are closed when dropped.
pub async fn bridge(a: Stream, b: Stream, copy: CopyMode) -> io::Result<(u64, u64)> {
    for stream in [&a, &b] {
        if let Err(err) = stream.tune() {
            tracing::debug!("cannot set socket options: {err}");
        }
    }
    let start = Instant::now();
    let a_to_b = Progress::new(start);
    let b_to_a = Progress::new(start);
    let both = tokio::try_join!(
        one_way(&a, &b, copy, &a_to_b),
        one_way(&b, &a, copy, &b_to_a),
    );
    match both {
        Ok(_) => Ok((a_to_b.bytes(), b_to_a.bytes())),
        Err(err) => {
            let _ = a.shutdown_write();
            let _ = b.shutdown_write();
            Err(err)
        }
    }
}

/// Try the rule's targets in round-robin order; the first that answers wins.
async fn connect_any(setup: &ConnSetup) -> io::Result<(Stream, String)> {
    let mut last = None;
    for target in setup.rule.rotation() {
        match connect(target, setup.source).await {
            Ok(connected) => return Ok(connected),
            Err(err) => {
                tracing::debug!(%target, "cannot connect: {err}");
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no target")))
}

/// Connect to one target (every address of a host name, in turn); returns the socket and the
/// address connected to.
pub(crate) async fn connect(
    target: &Target,
    source: Option<IpAddr>,
) -> io::Result<(Stream, String)> {
    match target {
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).await?;
            Ok((Stream::Unix(stream), target.to_string()))
        }
        Target::Tcp { host, port } => {
            let addrs: Vec<SocketAddr> = match host {
                Host::Ip(ip) => vec![SocketAddr::new(*ip, *port)],
                Host::Name(name) => tokio::net::lookup_host((name.as_str(), *port))
                    .await?
                    .collect(),
            };
            let mut last = None;
            for addr in addrs {
                match connect_tcp(addr, source).await {
                    Ok(stream) => return Ok((stream, addr.to_string())),
                    Err(err) => last = Some(err),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other(format!("{host} resolves to no address"))))
        }
    }
}

async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Stream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    Ok(Stream::Tcp(socket.connect(addr).await?))
}

/// A resumable connection ([`crate::resume`]): connected to its target as any other, then
/// carried over links that may be lost and come back. The dialling side makes a lost link
/// again (connecting and proving the key again) until the grace ends; the accepting side
/// takes the links the relay routes to it by their token.
async fn resumable(
    setup: ConnSetup,
    accepted: Stream,
    links: Option<Links>,
    mut stop: watch::Receiver<bool>,
) -> Moved {
    use crate::resume::{self, Carrier, ResumeEvent};
    let start = Instant::now();
    let side = setup.resume.expect("a resumable connection");
    let Some((target, to)) = open_reported(&setup, &accepted, &mut stop).await else {
        return Moved::default();
    };
    // The stream's own events, as the relay's.
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let id = setup.id;
    let events = setup.events.clone();
    let relay_events = tokio::spawn(async move {
        while let Some(event) = ev_rx.recv().await {
            let event = match event {
                ResumeEvent::LinkLost { why } => {
                    info!(%why, "link lost");
                    RelayEvent::LinkLost { id, why }
                }
                ResumeEvent::LinkRestored { gap, replayed } => {
                    info!(?gap, replayed, "resumed");
                    RelayEvent::Resumed { id, gap, replayed }
                }
                ResumeEvent::Refused { why } => {
                    info!(%why, "link refused");
                    RelayEvent::ResumeRefused { id, why }
                }
            };
            if let Some(tx) = &events {
                let _ = tx.send(event);
            }
        }
    });
    let carried = match (side, links) {
        (ResumeSide::Dial { grace }, _) => {
            let opts = resume::Options {
                grace,
                ..resume::Options::default()
            };
            let setup = &setup;
            let next = move || redial(setup);
            let token = resume::Token::generate();
            let carry = resume::carry(
                accepted,
                Carrier::new(target),
                next,
                token,
                opts,
                Some(ev_tx),
            );
            tokio::select! {
                // The local stream is the accepted peer's: what it sent went out.
                r = carry => r.map(|s| (s.sent, s.received)),
                _ = stop.wait_for(|stopped| *stopped) => Err(resume::End::Local(io::Error::other("relay stopped"))),
            }
        }
        (ResumeSide::Accept { grace }, Some(Links { hello, rx })) => {
            let opts = resume::Options {
                grace,
                ..resume::Options::default()
            };
            let token = hello.token;
            let first = Carrier {
                stream: accepted,
                peer: Some(hello),
            };
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let next = move || {
                let rx = Arc::clone(&rx);
                async move { rx.lock().await.recv().await }
            };
            let carry = resume::carry(target, first, next, token, opts, Some(ev_tx));
            tokio::select! {
                // The local stream is the target's: what came over the links is the peer's.
                r = carry => r.map(|s| (s.received, s.sent)),
                _ = stop.wait_for(|stopped| *stopped) => Err(resume::End::Local(io::Error::other("relay stopped"))),
            }
        }
        (ResumeSide::Accept { .. }, None) => Err(resume::End::Refused(
            "an accepted link without a hello".into(),
        )),
    };
    let _ = relay_events.await;
    let (moved, reason, error) = match carried {
        Ok((from_peer, to_peer)) => (Moved { from_peer, to_peer }, CloseReason::Done, None),
        Err(e) => (Moved::default(), CloseReason::Error, Some(e.to_string())),
    };
    report_closed(&setup, to, moved, start, reason, error)
}

/// Make a lost link again: connect and prove the key, pausing between attempts (the caller
/// bounds the whole by its grace). Each attempt is bounded too: a link into a dead ssh
/// connection never answers the key's challenge ([`open`] bounds both steps).
async fn redial(setup: &ConnSetup) -> Option<Link> {
    let mut pause = REDIAL_FIRST_PAUSE;
    loop {
        match open(setup).await {
            Ok((stream, to)) => {
                info!(%to, "link made again");
                return Some(crate::resume::Carrier::new(stream));
            }
            Err(error) => tracing::debug!(%error, "link not made again yet"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(REDIAL_MAX_PAUSE);
    }
}
