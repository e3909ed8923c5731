//! The relay's configuration, as the rest of the program builds it: from `--listen`/`--to`
//! pairs, from a portfwd file, or directly (the session code).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::hop::Secret;

use super::allow::{AllowList, SourceFilter};
use super::endpoint::{ListenAddr, Target};

/// How long connecting to a target may take before the client's connection is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections may be open at once; more are refused (closed at once, and logged).
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections per listener that may be waiting to pass its [`Lock`] at once (each for at most
/// [`PREAMBLE_TIMEOUT`](crate::hop::preamble::PREAMBLE_TIMEOUT)). When one more arrives, the
/// one that has waited longest is closed, so connections that never authenticate cannot keep a
/// peer that does out. They never count against [`Limits::max_connections`].
pub const MAX_PENDING: usize = 64;
/// How long a graceful stop waits for open connections to finish on their own.
pub const GRACE: Duration = Duration::ZERO;

/// Everything one relay does.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// One listener each.
    pub forwards: Vec<Forward>,
    /// Sources every TCP listener accepts (empty: any). Unix listeners accept only this user.
    pub allow: AllowList,
    pub limits: Limits,
    pub copy: CopyMode,
}

impl RelayConfig {
    /// A relay with the default limits and no allow-list.
    pub fn new(forwards: Vec<Forward>) -> RelayConfig {
        RelayConfig {
            forwards,
            allow: AllowList::any(),
            limits: Limits::default(),
            copy: CopyMode::default(),
        }
    }
}

/// Limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, over all listeners.
    pub max_connections: usize,
    /// Connecting to a target (every address it resolves to, in turn) takes at most this long.
    pub connect_timeout: Duration,
    /// Close a connection after this long without data in either direction. `None`: never (an
    /// interactive ParaView session can sit idle for hours).
    pub idle_timeout: Option<Duration>,
    /// After a stop is asked for, how long open connections may still run before they are closed.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: MAX_CONNECTIONS,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: None,
            grace: GRACE,
        }
    }
}

/// How bytes are moved between the two sockets of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CopyMode {
    /// Copy through a user-space buffer; on Linux switch a direction to `splice(2)` once it
    /// carries bulk data (a read fills the whole buffer).
    #[default]
    Auto,
    /// Always copy through a user-space buffer.
    Buffered,
    /// Always `splice(2)` through a pipe (Linux only; elsewhere the same as `Buffered`).
    Splice,
}

/// One listener and where its connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub listen: ListenAddr,
    /// Tried in order; the first rule whose `from` filters match the peer wins. A peer that
    /// matches no rule is refused.
    pub rules: Vec<Rule>,
    /// Local address for outgoing TCP connections (portfwd's `source-address`).
    pub source: Option<IpAddr>,
    /// Who may use this listener, and what it proves to its target. Default: nothing.
    pub lock: Lock,
}

/// What a forward checks on both of its sides, beyond the allow-list and the rules.
///
/// Checks on accept run in a task of their own per connection, at most [`MAX_PENDING`] per
/// listener at once; a connection is handed on (and counts against the connection limit) only
/// once it has passed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// An accepted connection must prove this key (the accepting side of
    /// [`hop::preamble`](crate::hop::preamble)) before anything is forwarded; one that fails, says
    /// nothing for [`PREAMBLE_TIMEOUT`](crate::hop::preamble::PREAMBLE_TIMEOUT) or closes is
    /// refused as [`RefuseReason::NotAuthenticated`](super::RefuseReason::NotAuthenticated).
    pub accept_key: Option<Arc<Secret>>,
    /// Accept a TCP peer only if the kernel names this process's effective uid as the owner of
    /// its socket ([`hop::peer::owner`](crate::hop::peer::owner); loopback peers only, any other
    /// peer's owner is unknown and refused as [`RefuseReason::OtherUser`](super::RefuseReason::OtherUser)).
    /// Unix-socket peers are always checked by their credentials.
    pub same_user: bool,
    /// Prove this key to the target (the connecting side of the preamble) right after
    /// connecting, before any byte of the peer's is sent; failing is a `connect_failed` event.
    pub connect_key: Option<Arc<Secret>>,
    /// Carry the forwarded stream over links that may be lost and come back
    /// ([`crate::resume`]); `None`: a plain copy.
    pub resume: Option<ResumeSide>,
}

/// Which side of a resumable stream ([`crate::resume`]) a forward is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeSide {
    /// The connections this forward makes to its target are the links: a lost one is made
    /// again (and the key proved again) until `grace` has passed since the loss.
    Dial { grace: Duration },
    /// The connections it accepts are the links, routed by the token of their hello: a new
    /// token opens a connection to the target, a known one resumes that connection.
    Accept { grace: Duration },
}

impl Lock {
    /// Whether an accepted connection has anything to pass before it is handed on.
    pub(crate) fn checks_on_accept(&self) -> bool {
        self.accept_key.is_some()
            || self.same_user
            || matches!(self.resume, Some(ResumeSide::Accept { .. }))
    }
}

impl Forward {
    /// Every connection to `listen` goes to `to`.
    pub fn new(listen: ListenAddr, to: Target) -> Forward {
        Forward {
            listen,
            rules: vec![Rule {
                from: Vec::new(),
                to: vec![to],
            }],
            source: None,
            lock: Lock::default(),
        }
    }

    /// The targets of every rule, for display.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.rules.iter().flat_map(|rule| rule.to.iter())
    }
}

/// Sources and the targets they go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Empty: every source.
    pub from: Vec<SourceFilter>,
    /// Used in turn for successive connections; when one cannot be reached, the next is tried.
    pub to: Vec<Target>,
}

impl Rule {
    pub fn matches(&self, peer: Option<std::net::SocketAddr>) -> bool {
        match peer {
            Some(peer) => self.from.is_empty() || self.from.iter().any(|f| f.matches(peer)),
            // A Unix socket peer has no address: only unfiltered rules apply.
            None => self.from.is_empty(),
        }
    }
}

/// Parse `250ms`, `30s`, `10m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 30s, 10m, 2h)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
