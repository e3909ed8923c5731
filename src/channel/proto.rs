//! The channel's wire format, sans I/O: a hello each way, then frames.
//!
//! ```text
//! hello   MAGIC (8 bytes "PVLCHAN1"), u8 n, n bytes of the sender's pvlaunch version
//! frame   u8 kind, u32 stream id, u32 payload length, payload (at most MAX_PAYLOAD bytes)
//! ```
//!
//! Integers are big-endian. A frame of an unknown kind, a payload longer than
//! [`MAX_PAYLOAD`] or a payload that does not fit its kind is an error as soon as its header
//! (or its payload) is read: the decoder never buffers more than one frame.
//!
//! Stream ids: the local end (the session) opens streams with ids below [`SERVER_IDS`], the
//! server (accepted connections) at or above it, so the two never collide.

use std::fmt;

/// The first bytes of each side's hello: the protocol and its version.
pub const MAGIC: &[u8; 8] = b"PVLCHAN1";
/// The longest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// A frame's header: kind, stream id, length.
pub const HEADER: usize = 9;
/// How many bytes a sender may have in flight on one stream and direction before the
/// receiver gives credit back ([`Frame::Window`]).
pub const WINDOW: usize = 1024 * 1024;
/// The most bytes of data one frame carries when a pump reads a stream.
pub const CHUNK: usize = 64 * 1024;
/// Stream ids from here up are opened by the server.
pub const SERVER_IDS: u32 = 1 << 31;
/// The longest version string a hello may carry.
pub const VERSION_MAX: usize = 64;

/// How a remote command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// One frame. Data-carrying frames (`Stdin`, `Stdout`, `Stderr`, `Data`) count against the
/// stream's window.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// Run `/bin/sh -c SCRIPT` (the wire form of a [`crate::ssh::RemoteCommand`]).
    Exec {
        id: u32,
        script: String,
    },
    Stdin {
        id: u32,
        data: Vec<u8>,
    },
    StdinEof {
        id: u32,
    },
    Stdout {
        id: u32,
        data: Vec<u8>,
    },
    Stderr {
        id: u32,
        data: Vec<u8>,
    },
    Exit {
        id: u32,
        status: ExitStatus,
    },
    /// SIGTERM to the command's process group, SIGKILL after a grace period.
    Kill {
        id: u32,
    },
    /// Listen on a Unix socket (mode 0600) on the server's side.
    ListenUnix {
        id: u32,
        path: String,
    },
    /// Listen on TCP on the server's side; port 0 picks a free one.
    ListenTcp {
        id: u32,
        bind: String,
        port: u16,
    },
    Listening {
        id: u32,
        port: u16,
    },
    /// A listener accepted a connection, now stream `stream`.
    Accepted {
        listener: u32,
        stream: u32,
    },
    /// Connect to `HOST:PORT` or `unix:/path` from the server's side.
    Connect {
        id: u32,
        target: String,
    },
    Connected {
        id: u32,
    },
    /// A request (exec, listen, connect) failed.
    Failed {
        id: u32,
        message: String,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    /// The sender will send no more data on the stream.
    Eof {
        id: u32,
    },
    /// Abandon the stream (a socket, a listener, or a command whose caller went away).
    Close {
        id: u32,
    },
    /// The receiver consumed `credit` more bytes of the stream: the sender may send them.
    Window {
        id: u32,
        credit: u32,
    },
}

impl fmt::Debug for Frame {
    // Data payloads as their length: a log line must not carry megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.kind().name();
        match self {
            Frame::Stdin { id, data }
            | Frame::Stdout { id, data }
            | Frame::Stderr { id, data }
            | Frame::Data { id, data } => write!(f, "{name}{{{id}, {} bytes}}", data.len()),
            Frame::Exec { id, script } => write!(f, "{name}{{{id}, {} bytes}}", script.len()),
            Frame::Exit { id, status } => write!(f, "{name}{{{id}, {status:?}}}"),
            Frame::ListenUnix { id, path } => write!(f, "{name}{{{id}, {path:?}}}"),
            Frame::ListenTcp { id, bind, port } => write!(f, "{name}{{{id}, {bind:?}, {port}}}"),
            Frame::Listening { id, port } => write!(f, "{name}{{{id}, {port}}}"),
            Frame::Accepted { listener, stream } => write!(f, "{name}{{{listener}, {stream}}}"),
            Frame::Connect { id, target } => write!(f, "{name}{{{id}, {target:?}}}"),
            Frame::Failed { id, message } => write!(f, "{name}{{{id}, {message:?}}}"),
            Frame::Window { id, credit } => write!(f, "{name}{{{id}, {credit}}}"),
            _ => write!(f, "{name}{{{}}}", self.id()),
        }
    }
}

/// Frame kinds as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Exec = 1,
    Stdin = 2,
    StdinEof = 3,
    Stdout = 4,
    Stderr = 5,
    Exit = 6,
    Kill = 7,
    ListenUnix = 8,
    ListenTcp = 9,
    Listening = 10,
    Accepted = 11,
    Connect = 12,
    Connected = 13,
    Failed = 14,
    Data = 15,
    Eof = 16,
    Close = 17,
    Window = 18,
}

impl Kind {
    const ALL: [Kind; 18] = [
        Kind::Exec,
        Kind::Stdin,
        Kind::StdinEof,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Kill,
        Kind::ListenUnix,
        Kind::ListenTcp,
        Kind::Listening,
        Kind::Accepted,
        Kind::Connect,
        Kind::Connected,
        Kind::Failed,
        Kind::Data,
        Kind::Eof,
        Kind::Close,
        Kind::Window,
    ];

    fn from_byte(b: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == b)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exec => "Exec",
            Kind::Stdin => "Stdin",
            Kind::StdinEof => "StdinEof",
            Kind::Stdout => "Stdout",
            Kind::Stderr => "Stderr",
            Kind::Exit => "Exit",
            Kind::Kill => "Kill",
            Kind::ListenUnix => "ListenUnix",
            Kind::ListenTcp => "ListenTcp",
            Kind::Listening => "Listening",
            Kind::Accepted => "Accepted",
            Kind::Connect => "Connect",
            Kind::Connected => "Connected",
            Kind::Failed => "Failed",
            Kind::Data => "Data",
            Kind::Eof => "Eof",
            Kind::Close => "Close",
            Kind::Window => "Window",
        }
    }

    /// The payload length this kind allows: `(min, max)`.
    fn payload_range(self) -> (usize, usize) {
        match self {
            Kind::StdinEof | Kind::Kill | Kind::Connected | Kind::Eof | Kind::Close => (0, 0),
            Kind::Exit => (5, 5),
            Kind::Listening => (2, 2),
            Kind::Accepted | Kind::Window => (4, 4),
            Kind::ListenTcp => (2, MAX_PAYLOAD),
            Kind::Exec
            | Kind::Stdin
            | Kind::Stdout
            | Kind::Stderr
            | Kind::ListenUnix
            | Kind::Connect
            | Kind::Failed
            | Kind::Data => (0, MAX_PAYLOAD),
        }
    }
}

/// Why bytes are not a valid hello or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("the peer does not speak pvlaunch's channel protocol (it sent {0:?})")]
    NotAChannel(String),
    #[error("the peer's hello carries an invalid version")]
    BadVersion,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("a {kind} frame of {len} bytes (the limit is {MAX_PAYLOAD})")]
    Oversized { kind: &'static str, len: usize },
    #[error("a malformed {kind} frame: {why}")]
    Malformed {
        kind: &'static str,
        why: &'static str,
    },
    #[error("the peer sent more than the window allows on stream {0}")]
    WindowExceeded(u32),
    #[error("the peer used stream id {0}, which is not its own or already in use")]
    BadStreamId(u32),
    #[error("an unexpected {kind} frame on stream {id}")]
    Unexpected { kind: &'static str, id: u32 },
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Exec { .. } => Kind::Exec,
            Frame::Stdin { .. } => Kind::Stdin,
            Frame::StdinEof { .. } => Kind::StdinEof,
            Frame::Stdout { .. } => Kind::Stdout,
            Frame::Stderr { .. } => Kind::Stderr,
            Frame::Exit { .. } => Kind::Exit,
            Frame::Kill { .. } => Kind::Kill,
            Frame::ListenUnix { .. } => Kind::ListenUnix,
            Frame::ListenTcp { .. } => Kind::ListenTcp,
            Frame::Listening { .. } => Kind::Listening,
            Frame::Accepted { .. } => Kind::Accepted,
            Frame::Connect { .. } => Kind::Connect,
            Frame::Connected { .. } => Kind::Connected,
            Frame::Failed { .. } => Kind::Failed,
            Frame::Data { .. } => Kind::Data,
            Frame::Eof { .. } => Kind::Eof,
            Frame::Close { .. } => Kind::Close,
            Frame::Window { .. } => Kind::Window,
        }
    }

    /// The id in the frame's header (for `Accepted`, the listener's).
    pub fn id(&self) -> u32 {
        match self {
            Frame::Exec { id, .. }
            | Frame::Stdin { id, .. }
            | Frame::StdinEof { id }
            | Frame::Stdout { id, .. }
            | Frame::Stderr { id, .. }
            | Frame::Exit { id, .. }
            | Frame::Kill { id }
            | Frame::ListenUnix { id, .. }
            | Frame::ListenTcp { id, .. }
            | Frame::Listening { id, .. }
            | Frame::Connect { id, .. }
            | Frame::Connected { id }
            | Frame::Failed { id, .. }
            | Frame::Data { id, .. }
            | Frame::Eof { id }
            | Frame::Close { id }
            | Frame::Window { id, .. } => *id,
            Frame::Accepted { listener, .. } => *listener,
        }
    }

    /// The stream whose order this frame must keep: its own, or for `Accepted` the stream it
    /// opens (which must reach the peer before that stream's data). `Window` keeps no order.
    pub fn stream(&self) -> Option<u32> {
        match self {
            Frame::Window { .. } => None,
            Frame::Accepted { stream, .. } => Some(*stream),
            f => Some(f.id()),
        }
    }

    /// The bytes of a data-carrying frame (those that count against a window).
    pub fn data(&self) -> Option<&[u8]> {
        match self {
            Frame::Stdin { data, .. }
            | Frame::Stdout { data, .. }
            | Frame::Stderr { data, .. }
            | Frame::Data { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The same frame on stream `id` (the exec client's proxy renumbers streams).
    pub fn with_id(mut self, new: u32) -> Frame {
        match &mut self {
            Frame::Exec { id, .. }
            | Frame::Stdin { id, .. }
            | Frame::StdinEof { id }
            | Frame::Stdout { id, .. }
            | Frame::Stderr { id, .. }
            | Frame::Exit { id, .. }
            | Frame::Kill { id }
            | Frame::ListenUnix { id, .. }
            | Frame::ListenTcp { id, .. }
            | Frame::Listening { id, .. }
            | Frame::Connect { id, .. }
            | Frame::Connected { id }
            | Frame::Failed { id, .. }
            | Frame::Data { id, .. }
            | Frame::Eof { id }
            | Frame::Close { id }
            | Frame::Window { id, .. } => *id = new,
            Frame::Accepted { listener, .. } => *listener = new,
        }
        self
    }

    /// Append the frame's bytes to `out`. Payloads longer than [`MAX_PAYLOAD`] are a bug of
    /// the caller (pumps send at most [`CHUNK`]; strings are checked where they are made).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.kind() as u8);
        out.extend_from_slice(&self.id().to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        match self {
            Frame::Exec { script: s, .. }
            | Frame::ListenUnix { path: s, .. }
            | Frame::Connect { target: s, .. }
            | Frame::Failed { message: s, .. } => out.extend_from_slice(s.as_bytes()),
            Frame::Stdin { data, .. }
            | Frame::Stdout { data, .. }
            | Frame::Stderr { data, .. }
            | Frame::Data { data, .. } => out.extend_from_slice(data),
            Frame::Exit { status, .. } => {
                let (tag, value) = match status {
                    ExitStatus::Code(c) => (0u8, *c),
                    ExitStatus::Signal(s) => (1u8, *s),
                };
                out.push(tag);
                out.extend_from_slice(&value.to_be_bytes());
            }
            Frame::ListenTcp { bind, port, .. } => {
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(bind.as_bytes());
            }
            Frame::Listening { port, .. } => out.extend_from_slice(&port.to_be_bytes()),
            Frame::Accepted { stream, .. } => out.extend_from_slice(&stream.to_be_bytes()),
            Frame::Window { credit, .. } => out.extend_from_slice(&credit.to_be_bytes()),
            Frame::StdinEof { .. }
            | Frame::Kill { .. }
            | Frame::Connected { .. }
            | Frame::Eof { .. }
            | Frame::Close { .. } => {}
        }
        let len = (out.len() - start - HEADER) as u32;
        out[start + 5..start + 9].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    fn parse(kind: Kind, id: u32, payload: &[u8]) -> Result<Frame, ProtoError> {
        let malformed = |why| ProtoError::Malformed {
            kind: kind.name(),
            why,
        };
        let text = |p: &[u8]| {
            String::from_utf8(p.to_vec()).map_err(|_| malformed("its text is not UTF-8"))
        };
        let u32_at = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let data = payload.to_vec();
        Ok(match kind {
            Kind::Exec => Frame::Exec {
                id,
                script: text(payload)?,
            },
            Kind::Stdin => Frame::Stdin { id, data },
            Kind::StdinEof => Frame::StdinEof { id },
            Kind::Stdout => Frame::Stdout { id, data },
            Kind::Stderr => Frame::Stderr { id, data },
            Kind::Exit => {
                let value = u32_at(&payload[1..]) as i32;
                let status = match payload[0] {
                    0 => ExitStatus::Code(value),
                    1 => ExitStatus::Signal(value),
                    _ => return Err(malformed("unknown exit status tag")),
                };
                Frame::Exit { id, status }
            }
            Kind::Kill => Frame::Kill { id },
            Kind::ListenUnix => Frame::ListenUnix {
                id,
                path: text(payload)?,
            },
            Kind::ListenTcp => Frame::ListenTcp {
                id,
                port: u16::from_be_bytes([payload[0], payload[1]]),
                bind: text(&payload[2..])?,
            },
            Kind::Listening => Frame::Listening {
                id,
                port: u16::from_be_bytes([payload[0], payload[1]]),
            },
            Kind::Accepted => Frame::Accepted {
                listener: id,
                stream: u32_at(payload),
            },
            Kind::Connect => Frame::Connect {
                id,
                target: text(payload)?,
            },
            Kind::Connected => Frame::Connected { id },
            Kind::Failed => Frame::Failed {
                id,
                message: text(payload)?,
            },
            Kind::Data => Frame::Data { id, data },
            Kind::Eof => Frame::Eof { id },
            Kind::Close => Frame::Close { id },
            Kind::Window => Frame::Window {
                id,
                credit: u32_at(payload),
            },
        })
    }
}

/// The hello this end sends.
pub fn hello(version: &str) -> Vec<u8> {
    let version = &version.as_bytes()[..version.len().min(VERSION_MAX)];
    let mut out = MAGIC.to_vec();
    out.push(version.len() as u8);
    out.extend_from_slice(version);
    out
}

/// Look for the peer's hello at the start of `buf`, after at most `junk` bytes of something
/// else (a login script that prints on stdout before the server starts). `Ok(None)`: more
/// bytes are needed. `Ok(Some((version, skipped, used)))`: the version, the bytes before the
/// hello, and how many bytes of `buf` the hello ended at.
pub fn find_hello(buf: &[u8], junk: usize) -> Result<Option<(String, usize, usize)>, ProtoError> {
    let not_a_channel =
        || ProtoError::NotAChannel(String::from_utf8_lossy(&buf[..buf.len().min(80)]).into());
    let Some(at) = find(buf, MAGIC) else {
        // The magic may still be arriving: only the tail that could start it is kept in mind.
        let could_start = (1..MAGIC.len())
            .rev()
            .find(|n| buf.len() >= *n && buf.ends_with(&MAGIC[..*n]))
            .unwrap_or(0);
        if buf.len() - could_start > junk {
            return Err(not_a_channel());
        }
        return Ok(None);
    };
    if at > junk {
        return Err(not_a_channel());
    }
    let rest = &buf[at + MAGIC.len()..];
    let Some(&n) = rest.first() else {
        return Ok(None);
    };
    let n = n as usize;
    if n > VERSION_MAX {
        return Err(ProtoError::BadVersion);
    }
    if rest.len() < 1 + n {
        return Ok(None);
    }
    let version = std::str::from_utf8(&rest[1..1 + n]).map_err(|_| ProtoError::BadVersion)?;
    if !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProtoError::BadVersion);
    }
    Ok(Some((version.to_owned(), at, at + MAGIC.len() + 1 + n)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Incremental frame decoder: [`Decoder::push`] bytes as they come, then take frames with
/// [`Decoder::next_frame`] until it says `None`. Holds at most one frame's bytes plus the last push.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    at: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed. After an error the stream is
    /// unusable (the caller ends the channel).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        let b = &self.buf[self.at..];
        let Some(&kind) = b.first() else {
            return Ok(None);
        };
        let kind = Kind::from_byte(kind).ok_or(ProtoError::UnknownKind(kind))?;
        if b.len() < HEADER {
            return Ok(None);
        }
        let id = u32::from_be_bytes([b[1], b[2], b[3], b[4]]);
        let len = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize;
        let (min, max) = kind.payload_range();
        if len > MAX_PAYLOAD {
            return Err(ProtoError::Oversized {
                kind: kind.name(),
                len,
            });
        }
        if len < min || len > max {
            return Err(ProtoError::Malformed {
                kind: kind.name(),
                why: "its payload has the wrong length",
            });
        }
        if b.len() < HEADER + len {
            return Ok(None);
        }
        let frame = Frame::parse(kind, id, &b[HEADER..HEADER + len])?;
        self.at += HEADER + len;
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Exec {
                id: 1,
                script: "exec /bin/sh -c 'echo hi'".into(),
            },
            Frame::Stdin {
                id: 1,
                data: b"beat\n".to_vec(),
            },
            Frame::StdinEof { id: 1 },
            Frame::Stdout {
                id: 1,
                data: vec![0, 255, 10],
            },
            Frame::Stderr {
                id: 1,
                data: vec![],
            },
            Frame::Exit {
                id: 1,
                status: ExitStatus::Code(-1),
            },
            Frame::Exit {
                id: 7,
                status: ExitStatus::Signal(9),
            },
            Frame::Kill { id: 2 },
            Frame::ListenUnix {
                id: 3,
                path: "/tmp/p v/fwd.sock".into(),
            },
            Frame::ListenTcp {
                id: 4,
                bind: "0.0.0.0".into(),
                port: 0,
            },
            Frame::ListenTcp {
                id: 4,
                bind: String::new(),
                port: 65535,
            },
            Frame::Listening { id: 4, port: 40123 },
            Frame::Accepted {
                listener: 4,
                stream: SERVER_IDS | 5,
            },
            Frame::Connect {
                id: 6,
                target: "node1:11111".into(),
            },
            Frame::Connected { id: 6 },
            Frame::Failed {
                id: 6,
                message: "connection refused".into(),
            },
            Frame::Data {
                id: 6,
                data: vec![7; MAX_PAYLOAD],
            },
            Frame::Eof { id: 6 },
            Frame::Close { id: u32::MAX },
            Frame::Window {
                id: 6,
                credit: u32::MAX,
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        let mut d = Decoder::new();
        for f in samples() {
            d.push(&f.to_bytes());
            assert_eq!(d.next_frame().unwrap(), Some(f));
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let all: Vec<u8> = samples().iter().flat_map(Frame::to_bytes).collect();
        for step in [1, 2, 3, 8, 9, 10, 1000, 65536] {
            let mut d = Decoder::new();
            let mut got = vec![];
            for chunk in all.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
                // Never more than one frame and one push held.
                assert!(d.buffered() <= HEADER + MAX_PAYLOAD + step, "{step}");
            }
            assert_eq!(got, samples(), "step {step}");
        }
    }

    #[test]
    fn unknown_kinds_are_refused_from_their_first_byte() {
        for kind in [0u8, 19, 200, 255] {
            let mut d = Decoder::new();
            d.push(&[kind]);
            assert_eq!(d.next_frame(), Err(ProtoError::UnknownKind(kind)));
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_their_header() {
        let mut d = Decoder::new();
        let mut header = vec![Kind::Data as u8, 0, 0, 0, 1];
        header.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        d.push(&header);
        assert!(
            matches!(d.next_frame(), Err(ProtoError::Oversized { len, .. }) if len == MAX_PAYLOAD + 1)
        );
        let mut d = Decoder::new();
        let mut header = vec![Kind::Exec as u8, 0, 0, 0, 1];
        header.extend_from_slice(&u32::MAX.to_be_bytes());
        d.push(&header);
        assert!(matches!(d.next_frame(), Err(ProtoError::Oversized { .. })));
        // Exactly the limit is fine (seen in the samples).
    }

    #[test]
    fn payloads_that_do_not_fit_their_kind_are_refused() {
        let frame = |kind: Kind, payload: &[u8]| {
            let mut b = vec![kind as u8, 0, 0, 0, 1];
            b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            b.extend_from_slice(payload);
            let mut d = Decoder::new();
            d.push(&b);
            d.next_frame()
        };
        assert!(matches!(
            frame(Kind::Eof, b"x"),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            frame(Kind::Window, b"abc"),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            frame(Kind::Exit, &[2, 0, 0, 0, 0]),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            frame(Kind::ListenTcp, b"\0"),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            frame(Kind::Exec, &[0xff, 0xfe]),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(frame(Kind::Exec, b"").unwrap().is_some());
    }

    #[test]
    fn hellos_are_found_after_a_login_banner_only_within_the_limit() {
        let h = hello("0.1.0");
        assert_eq!(find_hello(&h, 0), Ok(Some(("0.1.0".into(), 0, h.len()))));
        let mut banner = b"Welcome to the cluster\n".to_vec();
        banner.extend_from_slice(&h);
        banner.extend_from_slice(b"rest");
        assert_eq!(
            find_hello(&banner, 1024),
            Ok(Some(("0.1.0".into(), 23, banner.len() - 4)))
        );
        assert!(matches!(
            find_hello(&banner, 10),
            Err(ProtoError::NotAChannel(_))
        ));
        // Partial hellos ask for more, whatever the split.
        for cut in 0..h.len() {
            assert_eq!(find_hello(&h[..cut], 0), Ok(None), "cut {cut}");
        }
        // Garbage beyond the limit, with no magic in sight, is refused without waiting.
        assert!(matches!(
            find_hello(b"SSH-2.0-OpenSSH_9.6\r\n", 4),
            Err(ProtoError::NotAChannel(_))
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[3, b'a', b' ', b'b']);
        assert_eq!(find_hello(&bad, 0), Err(ProtoError::BadVersion));
        let mut long = MAGIC.to_vec();
        long.push(200);
        assert_eq!(find_hello(&long, 0), Err(ProtoError::BadVersion));
    }

    #[test]
    fn renumbering_keeps_everything_else() {
        for f in samples() {
            let g = f.clone().with_id(42);
            assert_eq!(g.id(), 42);
            assert_eq!(g.kind(), f.kind());
            assert_eq!(g.with_id(f.id()), f);
        }
    }

    proptest! {
        /// Random bytes never panic the decoder, and it never holds more than a frame's worth.
        #[test]
        fn random_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)) {
            let mut d = Decoder::new();
            'outer: for c in &chunks {
                d.push(c);
                loop {
                    match d.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
                prop_assert!(d.buffered() <= HEADER + MAX_PAYLOAD + 64);
            }
        }

        #[test]
        fn data_frames_round_trip(id in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let f = Frame::Data { id, data };
            let mut d = Decoder::new();
            d.push(&f.to_bytes());
            prop_assert_eq!(d.next_frame().unwrap(), Some(f));
        }
    }
}
