//! The resumable stream's wire format and state machine, sans I/O (no tokio, no clock).
//!
//! ```text
//! hello   MAGIC (8 bytes "PVLRSM2\n"), token (16), received (u64)
//! frame   u8 kind, u32 payload length, payload
//!   Data  1   the next bytes of the sender's stream (1..=MAX_DATA bytes)
//!   Ack   2   u64: positions of the receiver's stream the sender has taken from carriers
//!   Ping  3   empty: the carrier is alive
//!   Fin   4   u64: the sender's stream ends at this position (its length in bytes)
//!   Abort 5   the sender's local stream failed (UTF-8 reason, at most MAX_REASON bytes): the
//!             stream is over, nothing more follows
//!   Close 6   empty: the sender is done (it delivered our stream and its Fin, we acknowledged
//!             its whole stream and Fin): nothing more follows
//! ```
//!
//! Integers are big-endian. Positions count the bytes of one direction's stream from 0; the
//! end of a stream (its Fin) takes one more position, as TCP's FIN takes a sequence number,
//! so that acknowledging it is an ordinary Ack. Data frames carry no position: on each carrier
//! the sender starts at the position the receiver named in its hello, and every Data frame
//! follows the previous one. A sender puts several frames in one write (up to [`MAX_BATCH`]
//! Data frames, control frames first), and a receiver hands several Data payloads to its
//! local stream in one write.
//!
//! Ending: each side's local end of stream travels as a Fin; a side whose Fin the peer
//! acknowledged and that delivered the peer's stream and Fin and told the peer so (an Ack) is
//! *done*: it has every guarantee it needs, and sends Close. A side stops when it is done and
//! has the peer's Close. A done side whose carrier dies before the peer's Close arrives does
//! not know whether its last Ack arrived, so it stays reachable: it takes a new carrier within
//! the grace (its hello tells the peer everything arrived) and ends cleanly even if none comes.
//!
//! [`Engine`] is one end of one stream: a ring of the bytes read from the local stream and not
//! yet acknowledged (at most the buffer size: then it takes no more, which is back-pressure),
//! what goes on the current carrier, and the bytes taken from carriers that wait for the local
//! stream. The driver (`super::carry`) moves bytes between its buffers and the sockets.
//!
//! A malformed frame (unknown kind, wrong or oversized length, an Ack outside what was sent, a
//! Fin at the wrong position, data after the Fin, a Close before the stream ended) is a [`FrameError`]: that carrier is dead, the
//! stream is not. A hello is refused with a [`Fault`]: a wrong token refuses that carrier, a
//! position outside `[acked, sent]` the whole stream.

use std::io::IoSlice;
use std::ops::Range;

use super::{Hello, Token};

/// The first bytes of every hello: the protocol and its version.
pub const MAGIC: &[u8; 8] = b"PVLRSM2\n";
/// A hello's length on the wire.
pub const HELLO_LEN: usize = MAGIC.len() + 16 + 8;
/// A frame header: kind, payload length.
pub const HEADER: usize = 5;
/// The longest Data payload.
pub const MAX_DATA: usize = 64 * 1024;
/// Data frames put in one write on the carrier, at most.
pub const MAX_BATCH: usize = 16;
/// An Ack goes out at least every this many bytes received (or every heartbeat).
pub const ACK_EVERY: u64 = 256 * 1024;
/// The longest reason in an Abort frame.
pub const MAX_REASON: usize = 256;
/// Data payloads handed to the local stream in one write, at most.
pub const MAX_RANGES: usize = 16;
/// Slices in one vectored write, at most (a batch: per Data frame a header run and a payload
/// cut in two where the ring wraps, and a last header run).
pub const MAX_SLICES: usize = 3 * MAX_BATCH + 1;
/// Bytes read from a carrier at once.
pub const RX_BUFFER: usize = 256 * 1024;

const DATA: u8 = 1;
const ACK: u8 = 2;
const PING: u8 = 3;
const FIN: u8 = 4;
const ABORT: u8 = 5;
const CLOSE: u8 = 6;

/// Encode a hello.
pub fn encode_hello(hello: &Hello) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..24].copy_from_slice(&hello.token.0);
    out[24..].copy_from_slice(&hello.received.to_be_bytes());
    out
}

/// Decode a hello; `None` when the magic is not ours (another protocol or version).
pub fn decode_hello(bytes: &[u8; HELLO_LEN]) -> Option<Hello> {
    if &bytes[..8] != MAGIC {
        return None;
    }
    let mut token = [0u8; 16];
    token.copy_from_slice(&bytes[8..24]);
    let mut received = [0u8; 8];
    received.copy_from_slice(&bytes[24..]);
    Some(Hello {
        token: Token(token),
        received: u64::from_be_bytes(received),
    })
}

/// Why a carrier's frames cannot be followed: the carrier is dead, the stream lives on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of kind {kind} with a payload of {len} bytes")]
    BadLength { kind: u8, len: u32 },
    #[error("acknowledgement of position {ack} outside [{acked}, {sent}]")]
    AckOutOfRange { ack: u64, acked: u64, sent: u64 },
    #[error("end of stream at {at}, but {received} bytes were received")]
    FinMismatch { at: u64, received: u64 },
    #[error("data after the end of stream")]
    DataAfterFin,
    #[error("close before the stream ended")]
    EarlyClose,
}

/// Why a peer's hello is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// Another stream's carrier: refuse it, keep waiting for ours.
    #[error("the carrier belongs to another stream")]
    WrongToken,
    /// The peer claims a position we cannot continue from: it lies or lost data.
    #[error("the peer says it received {received}, but only [{acked}, {sent}] is possible")]
    Position {
        received: u64,
        acked: u64,
        sent: u64,
    },
}

fn frame_header(kind: u8, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = kind;
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

fn push_frame(out: &mut Vec<u8>, kind: u8, value: Option<u64>) {
    match value {
        Some(v) => {
            out.extend_from_slice(&frame_header(kind, 8));
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.extend_from_slice(&frame_header(kind, 0)),
    }
}

/// Slices for one vectored write, in order (none: nothing to write).
pub struct Slices<'a> {
    slices: [IoSlice<'a>; MAX_SLICES],
    n: usize,
}

impl<'a> Slices<'a> {
    fn new() -> Slices<'a> {
        Slices {
            slices: [IoSlice::new(&[]); MAX_SLICES],
            n: 0,
        }
    }

    fn push(&mut self, s: &'a [u8]) {
        if !s.is_empty() {
            self.slices[self.n] = IoSlice::new(s);
            self.n += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes in all slices.
    pub fn len(&self) -> usize {
        self.slices().iter().map(|s| s.len()).sum()
    }

    pub fn slices(&self) -> &[IoSlice<'a>] {
        &self.slices[..self.n]
    }

    /// The bytes, copied (for tests).
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }
}

/// One part of a batch: a run of header bytes (control frames and a Data header) and the
/// payload that follows it (0 for the last run).
#[derive(Clone, Copy)]
struct Seg {
    hdr: usize,
    payload: usize,
}

/// One end of a resumable stream.
pub struct Engine {
    token: Token,
    // --- our stream (local -> carrier) ---
    ring: Box<[u8]>,
    /// Bytes read from the local stream (the stream's length so far).
    end: u64,
    /// The local stream ended: a Fin at `end` takes position `end`.
    local_eof: bool,
    /// Positions the peer has acknowledged (may be `end + 1`: the Fin too).
    acked: u64,
    /// The next position to put on the current carrier.
    sent: u64,
    /// The highest position ever put on a carrier.
    sent_max: u64,
    /// The batch being written: header bytes of its frames, in order, written up to `hdr_off`.
    hdrs: Vec<u8>,
    hdr_off: usize,
    /// The batch's parts; `seg` is the one being written, `seg_done` its bytes written.
    segs: Vec<Seg>,
    seg: usize,
    seg_done: usize,
    /// Ends (in `hdrs`) of the batch's Ack (with its value), Fin, Close and Abort frames.
    ack_at: Option<(usize, u64)>,
    fin_at: Option<usize>,
    close_at: Option<usize>,
    abort_at: Option<usize>,
    /// Control frames to put in the next batch.
    ack_wanted: bool,
    ping_wanted: bool,
    /// Our Close was written on the current carrier.
    close_sent: bool,
    /// Our local stream failed: the reason to send (an Abort ends the batches).
    abort: Option<Vec<u8>>,
    abort_sent: bool,
    // --- the peer's stream (carrier -> local) ---
    rx: Box<[u8]>,
    filled: usize,
    /// Parsed up to here.
    pos: usize,
    /// Payloads for the local stream, inside `rx` before `pos`, from `ranges[first]` on.
    ranges: Vec<Range<usize>>,
    first: usize,
    /// Payload bytes left in the data frame being parsed.
    in_data: usize,
    /// Positions of the peer's stream taken from carriers (its Fin counts one).
    received: u64,
    peer_fin: bool,
    /// The peer sent Close: it is done and needs nothing more from us.
    peer_closed: bool,
    /// The peer sent Abort: its reason.
    peer_abort: Option<String>,
    /// The highest `received` written to the peer (in an Ack or a hello).
    told: u64,
    /// The highest `received` put in an Ack (written or not).
    ack_queued: u64,
    ack_every: u64,
    local_shut: bool,
    live: bool,
}

impl Engine {
    /// A fresh end for `token`, keeping at most `buffer` unacknowledged bytes.
    pub fn new(token: Token, buffer: usize) -> Engine {
        let buffer = buffer.max(1);
        Engine {
            token,
            // Zeroed pages are mapped on first touch: an idle stream costs little.
            ring: vec![0u8; buffer].into_boxed_slice(),
            end: 0,
            local_eof: false,
            acked: 0,
            sent: 0,
            sent_max: 0,
            hdrs: Vec::with_capacity(MAX_BATCH * HEADER + 64 + MAX_REASON),
            hdr_off: 0,
            segs: Vec::with_capacity(MAX_BATCH + 1),
            seg: 0,
            seg_done: 0,
            ack_at: None,
            fin_at: None,
            close_at: None,
            abort_at: None,
            ack_wanted: false,
            ping_wanted: false,
            close_sent: false,
            abort: None,
            abort_sent: false,
            rx: vec![0u8; RX_BUFFER].into_boxed_slice(),
            filled: 0,
            pos: 0,
            ranges: Vec::with_capacity(MAX_RANGES),
            first: 0,
            in_data: 0,
            received: 0,
            peer_fin: false,
            peer_closed: false,
            peer_abort: None,
            told: 0,
            ack_queued: 0,
            ack_every: ACK_EVERY.min((buffer as u64 / 4).max(1)),
            local_shut: false,
            live: false,
        }
    }

    /// The hello to send on a new carrier.
    pub fn hello(&self) -> Hello {
        Hello {
            token: self.token,
            received: self.received,
        }
    }

    /// The peer's hello on the current carrier (sent after ours): check it, drop what it has,
    /// and replay the rest. Returns the data bytes replayed (sent again from the buffer).
    pub fn resume(&mut self, peer: &Hello) -> Result<u64, Fault> {
        if peer.token != self.token {
            return Err(Fault::WrongToken);
        }
        if peer.received < self.acked || peer.received > self.sent_max {
            return Err(Fault::Position {
                received: peer.received,
                acked: self.acked,
                sent: self.sent_max,
            });
        }
        self.clear_tx();
        self.acked = peer.received;
        self.sent = peer.received;
        let data_max = self.sent_max.min(self.end);
        let replayed = data_max.saturating_sub(peer.received);
        // Our hello told the peer `received`.
        self.told = self.told.max(self.received);
        self.ack_queued = self.received;
        self.live = true;
        Ok(replayed)
    }

    /// The current carrier is gone: forget what was on its way, keep what the local stream is
    /// owed. Frames of a partly read carrier are dropped (the peer replays them).
    pub fn carrier_lost(&mut self) {
        self.live = false;
        self.clear_tx();
        self.filled = self.pos;
        self.in_data = 0;
        if self.first == self.ranges.len() {
            self.ranges.clear();
            self.first = 0;
            self.pos = 0;
            self.filled = 0;
        }
    }

    fn clear_tx(&mut self) {
        self.hdrs.clear();
        self.hdr_off = 0;
        self.segs.clear();
        self.seg = 0;
        self.seg_done = 0;
        self.ack_at = None;
        self.fin_at = None;
        self.close_at = None;
        self.abort_at = None;
        self.ack_wanted = false;
        self.ping_wanted = false;
        self.close_sent = false;
    }

    /// A carrier is in use (a hello was accepted and it was not lost since).
    pub fn is_live(&self) -> bool {
        self.live
    }

    // --- local -> carrier -------------------------------------------------------------------

    fn held(&self) -> u64 {
        self.end - self.acked.min(self.end)
    }

    /// Where to read the local stream into; empty when the buffer is full (back-pressure) or
    /// the local stream has ended.
    pub fn local_read_buf(&mut self) -> &mut [u8] {
        if self.local_eof {
            return &mut [];
        }
        let cap = self.ring.len();
        let free = cap - self.held() as usize;
        let at = (self.end % cap as u64) as usize;
        let n = free.min(cap - at);
        &mut self.ring[at..at + n]
    }

    /// `n` bytes were read into [`local_read_buf`](Self::local_read_buf); 0 is the local
    /// stream's end.
    pub fn local_read(&mut self, n: usize) {
        if n == 0 {
            self.local_eof = true;
        } else {
            debug_assert!(self.held() as usize + n <= self.ring.len());
            self.end += n as u64;
        }
    }

    fn batch_done(&self) -> bool {
        self.seg == self.segs.len()
    }

    /// The local stream failed: after the frames being written, send an Abort with `reason`
    /// (cut to [`MAX_REASON`] bytes) and nothing more.
    pub fn abort(&mut self, reason: &str) {
        let mut cut = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        self.abort = Some(reason.as_bytes()[..cut].to_vec());
    }

    /// Our Abort was written on the carrier.
    pub fn abort_sent(&self) -> bool {
        self.abort_sent
    }

    /// Plan the next batch (the previous one is written).
    fn plan(&mut self) {
        self.hdrs.clear();
        self.hdr_off = 0;
        self.segs.clear();
        self.seg = 0;
        self.seg_done = 0;
        if let Some(reason) = &self.abort {
            if !self.abort_sent {
                self.hdrs
                    .extend_from_slice(&frame_header(ABORT, reason.len()));
                self.hdrs.extend_from_slice(reason);
                self.abort_at = Some(self.hdrs.len());
                self.segs.push(Seg {
                    hdr: self.hdrs.len(),
                    payload: 0,
                });
            }
            return;
        }
        if self.ping_wanted {
            self.ping_wanted = false;
            push_frame(&mut self.hdrs, PING, None);
        }
        // An Ack when asked for, or piggybacked on data when the peer's stream moved.
        if self.ack_wanted || (self.sent < self.end && self.received > self.ack_queued) {
            self.ack_wanted = false;
            push_frame(&mut self.hdrs, ACK, Some(self.received));
            self.ack_queued = self.received;
            self.ack_at = Some((self.hdrs.len(), self.received));
        }
        let mut start = 0;
        let mut planned = self.sent;
        while planned < self.end && self.segs.len() < MAX_BATCH {
            let len = (self.end - planned).min(MAX_DATA as u64) as usize;
            self.hdrs.extend_from_slice(&frame_header(DATA, len));
            self.segs.push(Seg {
                hdr: self.hdrs.len() - start,
                payload: len,
            });
            start = self.hdrs.len();
            planned += len as u64;
        }
        if self.local_eof && planned == self.end {
            push_frame(&mut self.hdrs, FIN, Some(self.end));
            self.fin_at = Some(self.hdrs.len());
        } else if self.segs.is_empty() && self.close_wanted() {
            push_frame(&mut self.hdrs, CLOSE, None);
            self.close_at = Some(self.hdrs.len());
        }
        if self.hdrs.len() > start {
            self.segs.push(Seg {
                hdr: self.hdrs.len() - start,
                payload: 0,
            });
        }
    }

    fn close_wanted(&self) -> bool {
        self.is_done() && !self.close_sent && self.close_at.is_none()
    }

    /// The next bytes to write on the carrier (empty: nothing to send, or no carrier).
    pub fn transmit(&mut self) -> Slices<'_> {
        let mut out = Slices::new();
        if !self.live {
            return out;
        }
        if self.batch_done() {
            self.plan();
        }
        let cap = self.ring.len();
        let mut h = self.hdr_off;
        let mut p = self.sent;
        let mut done = self.seg_done;
        for s in &self.segs[self.seg..] {
            if done < s.hdr {
                let left = s.hdr - done;
                out.push(&self.hdrs[h..h + left]);
                h += left;
            }
            let written = done.saturating_sub(s.hdr);
            let left = s.payload - written;
            if left > 0 {
                let at = (p % cap as u64) as usize;
                let first = left.min(cap - at);
                out.push(&self.ring[at..at + first]);
                out.push(&self.ring[..left - first]);
                p += left as u64;
            }
            done = 0;
        }
        out
    }

    /// `n` bytes of [`transmit`](Self::transmit)'s slices were written.
    pub fn transmitted(&mut self, mut n: usize) {
        while n > 0 && self.seg < self.segs.len() {
            let s = self.segs[self.seg];
            let take = n.min(s.hdr + s.payload - self.seg_done);
            let hdr = take.min(s.hdr.saturating_sub(self.seg_done));
            self.hdr_off += hdr;
            self.sent += (take - hdr) as u64;
            self.seg_done += take;
            n -= take;
            if self.seg_done == s.hdr + s.payload {
                self.seg += 1;
                self.seg_done = 0;
            }
        }
        debug_assert_eq!(n, 0);
        if let Some((at, ack)) = self.ack_at
            && self.hdr_off >= at
        {
            self.told = self.told.max(ack);
            self.ack_at = None;
        }
        if let Some(at) = self.fin_at
            && self.hdr_off >= at
        {
            self.sent = self.end + 1;
            self.fin_at = None;
        }
        if let Some(at) = self.close_at
            && self.hdr_off >= at
        {
            self.close_sent = true;
            self.close_at = None;
        }
        if let Some(at) = self.abort_at
            && self.hdr_off >= at
        {
            self.abort_sent = true;
            self.abort_at = None;
        }
        self.sent_max = self.sent_max.max(self.sent);
    }

    /// Nothing was sent for a heartbeat: an Ack if the peer's stream moved, else a Ping (none
    /// once we are done: Close is the last frame).
    pub fn on_idle(&mut self) {
        if !self.live || self.is_done() {
            return;
        }
        if self.received > self.ack_queued {
            self.ack_wanted = true;
        } else {
            self.ping_wanted = true;
        }
    }

    // --- carrier -> local -------------------------------------------------------------------

    /// Where to read the carrier into; empty while data waits for the local stream and the
    /// buffer is full.
    pub fn carrier_read_buf(&mut self) -> &mut [u8] {
        if self.ranges.is_empty() && self.pos > 0 && self.rx.len() - self.filled < MAX_DATA {
            // Only part of a header or control frame is left unparsed here.
            self.rx.copy_within(self.pos..self.filled, 0);
            self.filled -= self.pos;
            self.pos = 0;
        }
        let filled = self.filled;
        &mut self.rx[filled..]
    }

    /// `n` (> 0) bytes were read into [`carrier_read_buf`](Self::carrier_read_buf).
    pub fn carrier_read(&mut self, n: usize) -> Result<(), FrameError> {
        self.filled += n;
        self.parse()
    }

    /// The next bytes for the local stream (several payloads).
    pub fn deliverable(&self) -> Slices<'_> {
        let mut out = Slices::new();
        for r in &self.ranges[self.first..] {
            out.push(&self.rx[r.clone()]);
        }
        out
    }

    /// `n` bytes of [`deliverable`](Self::deliverable) were written to the local stream.
    pub fn delivered(&mut self, mut n: usize) -> Result<(), FrameError> {
        while n > 0 {
            let r = &mut self.ranges[self.first];
            let k = n.min(r.len());
            r.start += k;
            n -= k;
            if r.start == r.end {
                self.first += 1;
            }
        }
        if self.first == self.ranges.len() {
            self.ranges.clear();
            self.first = 0;
            self.parse()
        } else {
            Ok(())
        }
    }

    fn nothing_to_deliver(&self) -> bool {
        self.first == self.ranges.len()
    }

    /// The peer's stream has ended and every byte of it was delivered: shut the local
    /// stream's writing side now (once).
    pub fn should_shutdown_local(&self) -> bool {
        self.peer_fin && self.nothing_to_deliver() && !self.local_shut
    }

    /// The local stream's writing side was shut.
    pub fn local_shut(&mut self) {
        self.local_shut = true;
    }

    fn parse(&mut self) -> Result<(), FrameError> {
        while self.ranges.len() < MAX_RANGES && self.pos < self.filled && self.peer_abort.is_none()
        {
            if self.in_data > 0 {
                let k = self.in_data.min(self.filled - self.pos);
                match self.ranges.last_mut() {
                    Some(last) if last.end == self.pos => last.end += k,
                    _ => self.ranges.push(self.pos..self.pos + k),
                }
                self.pos += k;
                self.in_data -= k;
                self.received += k as u64;
                if self.received - self.ack_queued >= self.ack_every {
                    self.ack_wanted = true;
                }
                continue;
            }
            let avail = self.filled - self.pos;
            if avail < HEADER {
                break;
            }
            let h = &self.rx[self.pos..self.pos + HEADER];
            let kind = h[0];
            let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
            let bad = FrameError::BadLength { kind, len };
            match kind {
                DATA => {
                    if len == 0 || len as usize > MAX_DATA {
                        return Err(bad);
                    }
                    if self.peer_fin {
                        return Err(FrameError::DataAfterFin);
                    }
                    self.pos += HEADER;
                    self.in_data = len as usize;
                }
                PING | CLOSE => {
                    if len != 0 {
                        return Err(bad);
                    }
                    if kind == CLOSE {
                        // The peer is done only once it has our Fin and we have its Fin.
                        if !(self.peer_fin && self.local_eof && self.sent_max == self.end + 1) {
                            return Err(FrameError::EarlyClose);
                        }
                        self.peer_closed = true;
                    }
                    self.pos += HEADER;
                }
                ABORT => {
                    if len as usize > MAX_REASON {
                        return Err(bad);
                    }
                    let end = self.pos + HEADER + len as usize;
                    if self.filled < end {
                        break;
                    }
                    let why = String::from_utf8_lossy(&self.rx[self.pos + HEADER..end]);
                    self.peer_abort = Some(why.into_owned());
                    self.pos = end;
                }
                ACK | FIN => {
                    if len != 8 {
                        return Err(bad);
                    }
                    if avail < HEADER + 8 {
                        break;
                    }
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&self.rx[self.pos + HEADER..self.pos + HEADER + 8]);
                    let v = u64::from_be_bytes(v);
                    self.pos += HEADER + 8;
                    if kind == ACK {
                        self.on_ack(v)?;
                    } else {
                        self.on_fin(v)?;
                    }
                }
                other => return Err(FrameError::UnknownKind(other)),
            }
        }
        if self.ranges.is_empty() && self.pos == self.filled {
            self.pos = 0;
            self.filled = 0;
        }
        Ok(())
    }

    fn on_ack(&mut self, ack: u64) -> Result<(), FrameError> {
        if ack < self.acked || ack > self.sent_max {
            return Err(FrameError::AckOutOfRange {
                ack,
                acked: self.acked,
                sent: self.sent_max,
            });
        }
        self.acked = ack;
        Ok(())
    }

    fn on_fin(&mut self, at: u64) -> Result<(), FrameError> {
        if self.peer_fin || at != self.received {
            return Err(FrameError::FinMismatch {
                at,
                received: self.received,
            });
        }
        self.peer_fin = true;
        self.received += 1;
        self.ack_wanted = true;
        Ok(())
    }

    // --- state ------------------------------------------------------------------------------

    /// Bytes of our stream read from the local stream.
    pub fn sent_bytes(&self) -> u64 {
        self.end
    }

    /// Bytes of the peer's stream taken from carriers.
    pub fn received_bytes(&self) -> u64 {
        self.received - u64::from(self.peer_fin)
    }

    /// Positions of the peer's stream taken from carriers (what our hello says).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Positions of our stream the peer has acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest position of our stream put on a carrier.
    pub fn sent_max(&self) -> u64 {
        self.sent_max
    }

    /// Both directions have ended: the peer acknowledged our Fin, we delivered its stream,
    /// shut the local stream's writing side and told the peer we have its Fin. Nothing of
    /// either stream can be lost any more; only the peer may not know it yet (our last Ack).
    pub fn is_done(&self) -> bool {
        self.peer_fin
            && self.local_eof
            && self.acked == self.end + 1
            && self.told == self.received
            && self.local_shut
    }

    /// The peer sent Close: it is done and needs nothing more from us.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Our Close was written on the current carrier.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// We are done, told the peer (Close) on this carrier and have its Close: both know.
    pub fn is_closed(&self) -> bool {
        self.is_done() && self.close_sent && self.peer_closed
    }

    /// The peer's local stream failed (its Abort's reason): the stream is over.
    pub fn peer_aborted(&self) -> Option<&str> {
        self.peer_abort.as_deref()
    }
}

#[cfg(test)]
mod tests;
