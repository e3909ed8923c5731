//! A TCP and Unix-socket relay: `pvlaunch relay`, and the relay the session starts on a login
//! node so that compute nodes reach a client they cannot reach directly.
//!
//! Embedding it:
//!
//! ```no_run
//! # async fn example() -> Result<(), pvlaunch::relay::RelayError> {
//! use pvlaunch::relay::{Forward, ListenAddr, Relay, RelayConfig};
//!
//! let to = "127.0.0.1:11111".parse().unwrap();
//! let config = RelayConfig::new(vec![Forward::new(ListenAddr::loopback(0), to)]);
//! let relay = Relay::bind(config).await?;
//! println!("listening on {}", relay.listeners()[0].addr); // the port the system chose
//! let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(relay.run(async { let _ = stopped.await; }, Some(events)));
//! // The session's coordinator selects over `rx` with its other work; here, the first event:
//! if let Some(event) = rx.recv().await {
//!     println!("{}", serde_json::to_string(&event).unwrap());
//! }
//! let _ = stop.send(()); // stop gracefully: listeners first, then connections
//! let summary = task.await.unwrap();
//! println!("{} connections", summary.connections);
//! # Ok(()) }
//! ```
//!
//! Structure: one task per listener accepts, checks the allow-list and the rules, and hands the
//! connection to the coordinator ([`Relay::run`]), which applies the connection limit and owns
//! one task per connection (in a `JoinSet`: dropping the `run` future aborts them all). Each
//! connection runs both directions in one task (`copy`), with its own tracing span.
//!
//! A forward with a [`Lock`] that checks accepted connections (a session key, the same user)
//! runs those checks in a task per connection owned by its listener's task, at most
//! [`MAX_PENDING`] at once (a newcomer closes the connection that has waited longest); only a
//! connection that passed reaches the coordinator, so connections that never authenticate
//! neither use a slot of the connection limit nor delay one that does.
//!
//! [`bridge`] joins two streams with the same copy engine, for callers that have their own
//! sockets (the node agent).

#![deny(unsafe_code)] // only `sys` may use it

mod allow;
mod config;
mod conn;
mod copy;
mod endpoint;
mod events;
mod listener;
pub mod portfwd;
mod sock;
#[allow(unsafe_code)]
mod sys;

pub mod command;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use allow::{AllowError, AllowList, AllowSpec, IpNet, SourceFilter};
pub use config::{
    CONNECT_TIMEOUT, CopyMode, Forward, GRACE, Limits, Lock, MAX_CONNECTIONS, MAX_PENDING,
    RelayConfig, ResumeSide, Rule, parse_duration,
};
pub use conn::bridge;

/// Connect to `target` (every address of a host name in turn), as the relay does.
pub(crate) async fn connect_target(target: &Target) -> std::io::Result<Stream> {
    conn::connect(target, None).await.map(|(stream, _)| stream)
}
pub use endpoint::{EndpointError, Host, ListenAddr, Target};
pub use events::{CloseReason, EventSender, Peer, RefuseReason, RelayEvent};
pub use portfwd::ConfigError;
pub use sys::{effective_uid, raise_fd_limit};

use crate::hop::Secret;
use conn::{ConnSetup, Link, Moved, RuleState};
pub(crate) use listener::Listener;
pub use sock::Stream;

/// What can stop a relay from starting.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("start a relay: nothing to forward (give --listen and --to, or --config)")]
    NoForwards,
    #[error("start a relay: {listen} --listen but {to} --to (each --listen needs its --to)")]
    Unpaired { listen: usize, to: usize },
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("listen on unix:{}: the file exists and is not a socket (remove it or pick another path)", path.display())]
    NotASocket { path: PathBuf },
    #[error("listen on unix:{}: the socket belongs to uid {uid}, not to this user", path.display())]
    NotOurs { path: PathBuf, uid: u32 },
    #[error("listen on unix:{}: another process accepts connections there", path.display())]
    InUse { path: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("read --allow {0}")]
    Allow(#[from] AllowError),
    #[error("start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// Options that do not go together (the command line or a [`command::RelayRequest`]).
    #[error("start a relay: {0}")]
    Options(&'static str),
    #[error("start a relay: {0}")]
    Key(#[from] crate::hop::SecretError),
}

impl RelayError {
    /// Whether the command line or a file is at fault (rather than the system).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RelayError::NoForwards
                | RelayError::Unpaired { .. }
                | RelayError::Config(_)
                | RelayError::Allow(_)
                | RelayError::Options(_)
                | RelayError::Key(_)
        )
    }
}

/// A bound socket and what its connections need.
#[derive(Debug)]
struct Serving {
    socket: Listener,
    rules: Arc<Vec<Arc<RuleState>>>,
    source: Option<std::net::IpAddr>,
    lock: Lock,
}

/// A bound listener: where it listens (the actual address) and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    /// The address bound, with the port the system picked when the configuration said 0.
    pub addr: ListenAddr,
    /// The targets of its rules, in order.
    pub to: Vec<Target>,
}

/// What a relay did over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelaySummary {
    /// Connections accepted and forwarded (or attempted).
    pub connections: u64,
    /// Connections refused (allow-list, rules, limit, other user, not authenticated).
    pub refused: u64,
    pub bytes_from_peers: u64,
    pub bytes_to_peers: u64,
}

/// A relay whose listeners are bound; [`Relay::run`] serves them.
#[derive(Debug)]
pub struct Relay {
    listeners: Vec<BoundListener>,
    sockets: Vec<Serving>,
    allow: Arc<AllowList>,
    limits: Limits,
    copy: CopyMode,
}

impl Relay {
    /// Bind every listener of `config` (inside a tokio runtime). Fails, binding nothing, if any
    /// listener cannot be bound.
    pub async fn bind(config: RelayConfig) -> Result<Relay, RelayError> {
        if config.forwards.is_empty() {
            return Err(RelayError::NoForwards);
        }
        let mut listeners = Vec::new();
        let mut sockets = Vec::new();
        for forward in &config.forwards {
            let socket = Listener::bind(&forward.listen).await?;
            let addr = socket.local_addr().map_err(|source| RelayError::Bind {
                addr: forward.listen.clone(),
                source,
            })?;
            if !addr.is_local_only() && !config.allow.is_restricted() {
                warn!(listen = %addr, "accepting connections from any host; restrict them with --allow");
            }
            let rules = forward
                .rules
                .iter()
                .cloned()
                .map(RuleState::new)
                .map(Arc::new)
                .collect();
            listeners.push(BoundListener {
                addr,
                to: forward.targets().cloned().collect(),
            });
            sockets.push(Serving {
                socket,
                rules: Arc::new(rules),
                source: forward.source,
                lock: forward.lock.clone(),
            });
        }
        Ok(Relay {
            listeners,
            sockets,
            allow: Arc::new(config.allow),
            limits: config.limits,
            copy: config.copy,
        })
    }

    /// The bound listeners, in the order of the configuration's forwards.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// Serve until `shutdown` resolves, then stop in order: close the listeners (and remove
    /// Unix socket files), let open connections run for the grace period, close the rest
    /// (end-of-stream to both sides), and return what was done.
    ///
    /// Events go to `events` (a closed channel is fine). Dropping the returned future instead
    /// stops everything at once: the listeners and every connection task are owned by it.
    pub async fn run<F>(self, shutdown: F, events: Option<EventSender>) -> RelaySummary
    where
        F: Future<Output = ()>,
    {
        let emit = |event| {
            if let Some(tx) = &events {
                let _ = tx.send(event);
            }
        };
        let (accepted_tx, mut accepted_rx) = mpsc::channel::<FromAcceptor>(64);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut acceptors = JoinSet::new();
        for (
            Serving {
                socket,
                rules,
                source,
                lock,
            },
            bound,
        ) in self.sockets.into_iter().zip(&self.listeners)
        {
            info!(
                listen = %bound.addr,
                to = %Targets(&bound.to),
                accept_key = lock.accept_key.is_some(),
                same_user = lock.same_user,
                connect_key = lock.connect_key.is_some(),
                "listening"
            );
            emit(RelayEvent::Listening {
                listen: bound.addr.clone(),
                to: bound.to.clone(),
            });
            let accept = AcceptLoop {
                socket,
                listen: bound.addr.clone(),
                rules,
                source,
                lock,
                allow: Arc::clone(&self.allow),
                accepted: accepted_tx.clone(),
                events: events.clone(),
            };
            acceptors.spawn(accept.run());
        }
        drop(accepted_tx);

        let mut summary = RelaySummary::default();
        let mut conns: JoinSet<Moved> = JoinSet::new();
        let add = |summary: &mut RelaySummary, moved: Result<Moved, _>| {
            if let Ok(moved) = moved {
                summary.bytes_from_peers += moved.from_peer;
                summary.bytes_to_peers += moved.to_peer;
            }
        };
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next_id = 0u64;
        // Resumable connections by their token: a link that comes back goes to its connection.
        let mut resumable: HashMap<crate::resume::Token, mpsc::Sender<Link>> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(moved) = conns.join_next(), if !conns.is_empty() => add(&mut summary, moved),
                message = accepted_rx.recv() => {
                    let accepted = match message {
                        Some(FromAcceptor::Accepted(accepted)) => *accepted,
                        Some(FromAcceptor::Refused) => {
                            summary.refused += 1;
                            continue;
                        }
                        // Acceptors never end on their own; be safe anyway.
                        None => break,
                    };
                    while let Some(moved) = conns.try_join_next() {
                        add(&mut summary, moved);
                    }
                    resumable.retain(|_, tx| !tx.is_closed());
                    let mut accepted = accepted;
                    if let Some(hello) = &accepted.hello
                        && let Some(tx) = resumable.get(&hello.token)
                    {
                        let link = crate::resume::Carrier { stream: accepted.sock, peer: accepted.hello };
                        // Its connection takes it (or it is dropped if that one just ended).
                        let _ = tx.try_send(link);
                        continue;
                    }
                    let links = accepted.hello.take().map(|hello| {
                        let (tx, rx) = mpsc::channel(4);
                        resumable.insert(hello.token, tx);
                        conn::Links { hello, rx }
                    });
                    if conns.len() >= self.limits.max_connections {
                        summary.refused += 1;
                        let reason = RefuseReason::Limit;
                        info!(peer = %accepted.peer, listen = %accepted.listen, %reason, "refused");
                        emit(RelayEvent::Refused { peer: accepted.peer, listen: accepted.listen, reason });
                        continue;
                    }
                    next_id += 1;
                    summary.connections += 1;
                    let setup = ConnSetup {
                        id: next_id,
                        peer: accepted.peer,
                        listen: accepted.listen,
                        rule: accepted.rule,
                        source: accepted.source,
                        connect_key: accepted.connect_key,
                        resume: accepted.resume,
                        links,
                        limits: self.limits.clone(),
                        copy: self.copy,
                        events: events.clone(),
                    };
                    conns.spawn(conn::serve(setup, accepted.sock, stop_rx.clone()));
                }
            }
        }

        // Stop accepting: listeners close, Unix socket files go away.
        acceptors.shutdown().await;
        drop(accepted_rx);
        info!(open = conns.len(), grace = ?self.limits.grace, "stopping");
        emit(RelayEvent::Stopping { open: conns.len() });
        if !conns.is_empty() && !self.limits.grace.is_zero() {
            let drain = async {
                while let Some(moved) = conns.join_next().await {
                    add(&mut summary, moved);
                }
            };
            let _ = tokio::time::timeout(self.limits.grace, drain).await;
        }
        let _ = stop_tx.send(true);
        while let Some(moved) = conns.join_next().await {
            add(&mut summary, moved);
        }
        summary
    }
}

/// What an acceptor tells the coordinator.
enum FromAcceptor {
    /// A connection to forward.
    Accepted(Box<Accepted>),
    /// A connection refused and already closed (the coordinator keeps the count).
    Refused,
}

struct Accepted {
    sock: Stream,
    peer: Peer,
    listen: ListenAddr,
    rule: Arc<RuleState>,
    source: Option<std::net::IpAddr>,
    connect_key: Option<Arc<Secret>>,
    resume: Option<ResumeSide>,
    /// A resumable link's hello (read once the key was proved).
    hello: Option<crate::resume::Hello>,
}

struct AcceptLoop {
    socket: Listener,
    listen: ListenAddr,
    rules: Arc<Vec<Arc<RuleState>>>,
    source: Option<std::net::IpAddr>,
    lock: Lock,
    allow: Arc<AllowList>,
    accepted: mpsc::Sender<FromAcceptor>,
    events: Option<EventSender>,
}

/// The connections of one listener still being checked against its lock, each in its own task.
/// Dropping this (the listener's task ends) aborts them and closes their sockets.
struct Pending {
    tasks: JoinSet<()>,
    /// One per connection still waiting, oldest first; a send tells it to give up. Its
    /// receiver is dropped once the connection has passed or failed, which closes the sender.
    waiting: VecDeque<oneshot::Sender<()>>,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            tasks: JoinSet::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Check `accepted` in a task of its own, making room first if [`MAX_PENDING`] wait already.
    fn admit(&mut self, accepted: Accepted, check: Check) {
        while self.tasks.try_join_next().is_some() {}
        self.waiting.retain(|waiting| !waiting.is_closed());
        if self.waiting.len() >= MAX_PENDING
            && let Some(oldest) = self.waiting.pop_front()
        {
            let _ = oldest.send(());
        }
        let (evict, evicted) = oneshot::channel();
        self.waiting.push_back(evict);
        self.tasks.spawn(check.run(accepted, evicted));
    }
}

/// What a pending connection's task needs.
struct Check {
    lock: Lock,
    me: u32,
    accepted: mpsc::Sender<FromAcceptor>,
    events: Option<EventSender>,
}

impl Check {
    async fn run(self, mut accepted: Accepted, evicted: oneshot::Receiver<()>) {
        let checked = tokio::select! {
            result = self.pass(&mut accepted) => result,
            Ok(()) = evicted => Err((
                RefuseReason::NotAuthenticated,
                format!("more than {MAX_PENDING} connections waiting to authenticate; this one waited longest"),
            )),
        };
        // No longer waiting: the receiver is gone, and `Pending` no longer counts this one.
        let message = match checked {
            Ok(()) => FromAcceptor::Accepted(Box::new(accepted)),
            Err((reason, detail)) => {
                let Accepted {
                    sock, peer, listen, ..
                } = accepted;
                drop(sock);
                info!(%peer, %listen, %reason, %detail, "refused");
                if let Some(tx) = &self.events {
                    let _ = tx.send(RelayEvent::Refused {
                        peer,
                        listen,
                        reason,
                    });
                }
                FromAcceptor::Refused
            }
        };
        let _ = self.accepted.send(message).await;
    }

    /// Same user first (nothing is sent to another user's process), then the key.
    async fn pass(&self, accepted: &mut Accepted) -> Result<(), (RefuseReason, String)> {
        if self.lock.same_user
            && let (Peer::Tcp(peer), Stream::Tcp(stream)) = (&accepted.peer, &accepted.sock)
        {
            let other = |detail: String| (RefuseReason::OtherUser, detail);
            let peer = *peer;
            let local = stream
                .local_addr()
                .map_err(|e| other(format!("no local address: {e}")))?;
            // The kernel's table can be large on a busy host: read it off the runtime's thread.
            let owner = tokio::task::spawn_blocking(move || crate::hop::peer::owner(peer, local))
                .await
                .map_err(|e| other(format!("cannot look up the owner: {e}")))?;
            match owner {
                Ok(Some(uid)) if uid == self.me => {}
                Ok(Some(uid)) => return Err(other(format!("its socket belongs to uid {uid}"))),
                Ok(None) => return Err(other("the owner of its socket is unknown".into())),
                Err(e) => return Err(other(format!("cannot read the kernel's TCP table: {e}"))),
            }
        }
        if let Some(key) = &self.lock.accept_key {
            accepted
                .sock
                .challenge(key)
                .await
                .map_err(|e| (RefuseReason::NotAuthenticated, e.to_string()))?;
        }
        if let Some(ResumeSide::Accept { .. }) = self.lock.resume {
            let timeout = crate::resume::Options::default().handshake_timeout;
            let hello =
                tokio::time::timeout(timeout, crate::resume::read_hello(&mut accepted.sock))
                    .await
                    .map_err(|_| {
                        (
                            RefuseReason::NotAuthenticated,
                            format!("no resumable hello within {timeout:?}"),
                        )
                    })?
                    .map_err(|e| (RefuseReason::NotAuthenticated, format!("its hello: {e}")))?;
            accepted.hello = Some(hello);
        }
        Ok(())
    }
}

/// How long to pause accepting after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl AcceptLoop {
    async fn run(self) {
        let me = sys::effective_uid();
        let mut pending = Pending::new();
        loop {
            let (sock, peer) = match self.socket.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: the listener is fine, the process is out of something.
                    warn!(listen = %self.listen, "accept failed: {err}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let message = match self.check(&peer, me) {
                Ok(rule) => {
                    let accepted = Accepted {
                        sock,
                        peer,
                        listen: self.listen.clone(),
                        rule,
                        source: self.source,
                        connect_key: self.lock.connect_key.clone(),
                        resume: self.lock.resume,
                        hello: None,
                    };
                    if self.lock.checks_on_accept() {
                        let check = Check {
                            lock: self.lock.clone(),
                            me,
                            accepted: self.accepted.clone(),
                            events: self.events.clone(),
                        };
                        pending.admit(accepted, check);
                        continue;
                    }
                    FromAcceptor::Accepted(Box::new(accepted))
                }
                Err(reason) => {
                    drop(sock);
                    info!(%peer, listen = %self.listen, %reason, "refused");
                    if let Some(tx) = &self.events {
                        let listen = self.listen.clone();
                        let _ = tx.send(RelayEvent::Refused {
                            peer,
                            listen,
                            reason,
                        });
                    }
                    FromAcceptor::Refused
                }
            };
            if self.accepted.send(message).await.is_err() {
                return;
            }
        }
    }

    /// The rule for `peer`, or why it is refused.
    fn check(&self, peer: &Peer, me: u32) -> Result<Arc<RuleState>, RefuseReason> {
        match peer {
            Peer::Tcp(addr) if !self.allow.permits(addr.ip()) => {
                return Err(RefuseReason::NotAllowed);
            }
            Peer::Unix { uid, .. } if *uid != me && *uid != 0 => {
                return Err(RefuseReason::OtherUser);
            }
            _ => {}
        }
        self.rules
            .iter()
            .find(|r| r.rule.matches(peer.socket_addr()))
            .cloned()
            .ok_or(RefuseReason::NoRule)
    }
}

/// `a:1, b:2` for logs.
struct Targets<'a>(&'a [Target]);

impl std::fmt::Display for Targets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}
