//! Resumable streams: one local byte stream carried over a sequence of carriers.
//!
//! The ParaView stream between the workstation and the login node crosses the network inside
//! an ssh forward; when the link drops, ssh dies and so does the forwarded connection. pvlaunch
//! owns both ends of that hop, so each end runs [`carry`]: it numbers the bytes of its local
//! stream, keeps those the peer has not acknowledged (at most [`Options::buffer`]), and when a
//! carrier dies, both ends exchange their positions on the next carrier and replay what the
//! other has not received. The local stream never sees the gap. (Designs compared: Eternal
//! Terminal's "Eternal TCP" and Teleport's RFD 0150 resumable connections.)
//!
//! The carrier is authenticated by the caller before `carry` sees it (the hop preamble,
//! [`crate::hop::preamble`]); the [`Token`] only names the stream, so an acceptor can route a
//! new carrier to the stream it resumes ([`read_hello`]).
//!
//! The wire format and the state machine are in [`proto`] (sans I/O); the driver here moves
//! bytes between the engine's buffers and the sockets, and keeps the timers.

pub mod proto;

mod carry;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use carry::carry;

/// Unacknowledged bytes kept per direction.
pub const DEFAULT_BUFFER: usize = 16 << 20;

/// Names one resumable stream; random.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Token(pub [u8; 16]);

impl Token {
    /// A fresh random token.
    pub fn generate() -> Token {
        let mut t = [0u8; 16];
        rand::fill(&mut t);
        Token(t)
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The inverse of [`to_hex`](Self::to_hex) (either case); `None` unless exactly 32 hex
    /// digits.
    pub fn from_hex(s: &str) -> Option<Token> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut t = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            t[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Token(t))
    }
}

/// How [`carry`] behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Unacknowledged bytes kept per direction; when full, the local stream is not read.
    pub buffer: usize,
    /// Send a Ping when nothing was sent for this long.
    pub heartbeat: Duration,
    /// A carrier from which nothing was received for this long is dead.
    pub dead_after: Duration,
    /// How long after losing a carrier a new one may come.
    pub grace: Duration,
    /// How long the hellos on a new carrier may take.
    pub handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            buffer: DEFAULT_BUFFER,
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(6),
            grace: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The hello each side sends first on every carrier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub token: Token,
    /// Positions of the peer's stream this side has taken from carriers (its end counts one).
    pub received: u64,
}

/// Read the peer's hello (an acceptor routes carriers by its token before [`carry`]).
/// Exactly the hello's bytes are read.
pub async fn read_hello<C: AsyncRead + Unpin>(c: &mut C) -> io::Result<Hello> {
    let mut bytes = [0u8; proto::HELLO_LEN];
    c.read_exact(&mut bytes).await?;
    proto::decode_hello(&bytes).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the peer does not speak pvlaunch's resumable stream protocol",
        )
    })
}

/// A connection that can carry the stream; `peer` is its hello when already read.
pub struct Carrier<C> {
    pub stream: C,
    pub peer: Option<Hello>,
}

impl<C> Carrier<C> {
    /// A carrier whose hello has not been read.
    pub fn new(stream: C) -> Carrier<C> {
        Carrier { stream, peer: None }
    }
}

/// What happened to the carriers, as it happens.
#[derive(Debug)]
pub enum ResumeEvent {
    /// A carrier died (an error, its end, a malformed frame, or nothing for `dead_after`).
    LinkLost { why: String },
    /// A new carrier took over; `replayed` bytes were sent again from our buffer.
    LinkRestored { gap: Duration, replayed: u64 },
    /// A carrier whose hello was refused (another stream's token, or an impossible position).
    Refused { why: String },
}

/// What a finished [`carry`] moved.
#[derive(Debug, Default)]
pub struct Summary {
    /// Bytes read from the local stream.
    pub sent: u64,
    /// Bytes of the peer's stream taken from carriers (all delivered when `carry` is `Ok`).
    pub received: u64,
    /// Carriers that took over after a loss.
    pub resumes: u32,
}

/// How carrying ended other than normally.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("no new connection within the grace ({0:?})")]
    GraceExpired(Duration),
    #[error("the peer's position cannot be resumed: {0}")]
    Refused(String),
    #[error("the local connection failed: {0}")]
    Local(io::Error),
    /// The far end's local connection failed (its reason); our local stream was shut down.
    #[error("the far end's local connection failed: {0}")]
    PeerAborted(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_through_hex_and_bad_hex_is_refused() {
        let t = Token::generate();
        assert_eq!(Token::from_hex(&t.to_hex()), Some(t));
        assert_eq!(Token::from_hex(&t.to_hex().to_uppercase()), Some(t));
        assert_ne!(Token::generate(), t);
        assert_eq!(Token([0xab; 16]).to_hex(), "ab".repeat(16));
        for bad in [
            "",
            "ab",
            &"g".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
            &"é".repeat(16),
        ] {
            assert_eq!(Token::from_hex(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn read_hello_takes_exactly_the_hello_and_refuses_other_protocols() {
        use tokio::io::AsyncWriteExt;
        let hello = Hello {
            token: Token([3; 16]),
            received: 0x0102_0304_0506_0708,
        };
        let (mut a, mut b) = tokio::io::duplex(256);
        a.write_all(&proto::encode_hello(&hello)).await.unwrap();
        a.write_all(b"next").await.unwrap();
        assert_eq!(read_hello(&mut b).await.unwrap(), hello);
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"next");

        let mut other = proto::encode_hello(&hello);
        other[6] = b'9';
        a.write_all(&other).await.unwrap();
        let err = read_hello(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        assert!(read_hello(&mut b).await.is_err());
    }
}
