//! What a running relay reports: listeners, connections opened and closed, refusals.
//!
//! Events go to an unbounded channel (they are small and few: two per connection), so a slow
//! reader never slows the relay down. They serialize to one JSON object each, tagged by
//! `event`, for `pvlaunch --json relay`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

use super::endpoint::{ListenAddr, Target};

/// Where events go.
pub type EventSender = mpsc::UnboundedSender<RelayEvent>;

/// Who connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix socket client, identified by its credentials.
    Unix {
        uid: u32,
        pid: Option<i32>,
    },
}

impl Peer {
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Tcp(addr) => Some(*addr),
            Peer::Unix { .. } => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "unix:uid={uid},pid={pid}"),
            Peer::Unix { uid, pid: None } => write!(f, "unix:uid={uid}"),
        }
    }
}

/// Why a connection was closed without being forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseReason {
    /// The source is not on the allow-list.
    NotAllowed,
    /// No rule of a portfwd file matches the source.
    NoRule,
    /// The connection limit was reached.
    Limit,
    /// A client running as another user: a Unix-socket client (its credentials), or a TCP peer
    /// of a same-user forward whose socket another user owns (or whose owner is unknown).
    OtherUser,
    /// The client did not prove the session key: a wrong key, another protocol, silence for the
    /// preamble's timeout, a close, or too many others waiting to authenticate.
    NotAuthenticated,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefuseReason::NotAllowed => "source not allowed",
            RefuseReason::NoRule => "no rule matches the source",
            RefuseReason::Limit => "connection limit reached",
            RefuseReason::OtherUser => "peer runs as another user",
            RefuseReason::NotAuthenticated => "peer did not prove the session key",
        })
    }
}

/// Why a forwarded connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Both sides finished (end of stream both ways).
    Done,
    /// No data either way for the idle timeout.
    Idle,
    /// The relay was stopped.
    Shutdown,
    /// A socket error, e.g. a reset.
    Error,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Done => "done",
            CloseReason::Idle => "idle timeout",
            CloseReason::Shutdown => "relay stopped",
            CloseReason::Error => "error",
        })
    }
}

/// Something the relay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RelayEvent {
    /// A listener is ready; `listen` is the bound address (the actual port when 0 was asked).
    Listening {
        #[serde(serialize_with = "display")]
        listen: ListenAddr,
        #[serde(serialize_with = "display_all")]
        to: Vec<Target>,
    },
    /// A connection was accepted and closed at once.
    Refused {
        #[serde(serialize_with = "display")]
        peer: Peer,
        #[serde(serialize_with = "display")]
        listen: ListenAddr,
        reason: RefuseReason,
    },
    /// A connection was accepted but no target could be reached.
    ConnectFailed {
        id: u64,
        #[serde(serialize_with = "display")]
        peer: Peer,
        #[serde(serialize_with = "display")]
        listen: ListenAddr,
        error: String,
    },
    /// A connection is being forwarded; `to` is the address actually connected to.
    Opened {
        id: u64,
        #[serde(serialize_with = "display")]
        peer: Peer,
        #[serde(serialize_with = "display")]
        listen: ListenAddr,
        to: String,
    },
    /// A forwarded connection ended.
    Closed {
        id: u64,
        #[serde(serialize_with = "display")]
        peer: Peer,
        to: String,
        /// Bytes from the peer to the target.
        bytes_from_peer: u64,
        /// Bytes from the target to the peer.
        bytes_to_peer: u64,
        #[serde(rename = "duration_s", serialize_with = "seconds")]
        duration: Duration,
        reason: CloseReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Listeners are closed; `open` connections are still running (grace period) or closing.
    Stopping { open: usize },
    /// A resumable connection's link (its carrier) was lost; it waits for the next one.
    LinkLost { id: u64, why: String },
    /// A resumable connection goes on over a new link; `replayed` bytes were sent again.
    Resumed {
        id: u64,
        #[serde(rename = "gap_s", serialize_with = "seconds")]
        gap: Duration,
        replayed: u64,
    },
    /// A link that was refused for a resumable connection (another stream's, or a position
    /// that cannot be resumed).
    ResumeRefused { id: u64, why: String },
}

fn display<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_all<T: fmt::Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(|v| v.to_string()))
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_tagged_json() {
        let closed = RelayEvent::Closed {
            id: 3,
            peer: Peer::Tcp("10.0.0.11:40000".parse().unwrap()),
            to: "127.0.0.1:11111".into(),
            bytes_from_peer: 10,
            bytes_to_peer: 20,
            duration: Duration::from_millis(1500),
            reason: CloseReason::Done,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&closed).unwrap(),
            r#"{"event":"closed","id":3,"peer":"10.0.0.11:40000","to":"127.0.0.1:11111","bytes_from_peer":10,"bytes_to_peer":20,"duration_s":1.5,"reason":"done"}"#
        );
        let listening = RelayEvent::Listening {
            listen: ListenAddr::loopback(4000),
            to: vec!["unix:/tmp/s".parse().unwrap()],
        };
        assert_eq!(
            serde_json::to_string(&listening).unwrap(),
            r#"{"event":"listening","listen":"127.0.0.1:4000","to":["unix:/tmp/s"]}"#
        );
        let refused = RelayEvent::Refused {
            peer: Peer::Unix { uid: 7, pid: None },
            listen: ListenAddr::Unix("/s".into()),
            reason: RefuseReason::OtherUser,
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"event":"refused","peer":"unix:uid=7","listen":"unix:/s","reason":"other_user"}"#
        );
        let refused = RelayEvent::Refused {
            peer: Peer::Tcp("127.0.0.1:5".parse().unwrap()),
            listen: ListenAddr::loopback(4000),
            reason: RefuseReason::NotAuthenticated,
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"event":"refused","peer":"127.0.0.1:5","listen":"127.0.0.1:4000","reason":"not_authenticated"}"#
        );
    }
}
