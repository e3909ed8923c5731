//! The resumable stream's wire format and state machine, sans I/O (no tokio, no clock).
//!
//! ```text
//! hello   MAGIC (8 bytes "PVLRSM1\n"), token (16), received (u64)
//! frame   u8 kind, u32 payload length, payload
//!   Data  1   the next bytes of the sender's stream (1..=MAX_DATA bytes)
//!   Ack   2   u64: positions of the receiver's stream the sender has taken from carriers
//!   Ping  3   empty: the carrier is alive
//!   Fin   4   u64: the sender's stream ends at this position (its length in bytes)
//! ```
//!
//! Integers are big-endian. Positions count the bytes of one direction's stream from 0; the
//! end of a stream (its Fin) takes one more position, as TCP's FIN takes a sequence number,
//! so that acknowledging it is an ordinary Ack. Data frames carry no position: on each carrier
//! the sender starts at the position the receiver named in its hello, and every Data frame
//! follows the previous one.
//!
//! [`Engine`] is one end of one stream: a ring of the bytes read from the local stream and not
//! yet acknowledged (at most the buffer size: then it takes no more, which is back-pressure),
//! what goes on the current carrier, and the bytes taken from carriers that wait for the local
//! stream. The driver (`super::carry`) moves bytes between its buffers and the sockets.
//!
//! A malformed frame (unknown kind, wrong or oversized length, an Ack outside what was sent, a
//! Fin at the wrong position, data after the Fin) is a [`FrameError`]: that carrier is dead, the
//! stream is not. A hello is refused with a [`Fault`]: a wrong token refuses that carrier, a
//! position outside `[acked, sent]` the whole stream.

use std::io::IoSlice;
use std::ops::Range;

use super::{Hello, Token};

/// The first bytes of every hello: the protocol and its version.
pub const MAGIC: &[u8; 8] = b"PVLRSM1\n";
/// A hello's length on the wire.
pub const HELLO_LEN: usize = MAGIC.len() + 16 + 8;
/// A frame header: kind, payload length.
pub const HEADER: usize = 5;
/// The longest Data payload.
pub const MAX_DATA: usize = 64 * 1024;
/// An Ack goes out at least every this many bytes received (or every heartbeat).
pub const ACK_EVERY: u64 = 64 * 1024;
/// Bytes read from a carrier at once.
pub const RX_BUFFER: usize = 256 * 1024;

const DATA: u8 = 1;
const ACK: u8 = 2;
const PING: u8 = 3;
const FIN: u8 = 4;

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

/// What to write on the carrier next, in order (some parts may be empty).
pub struct Transmit<'a> {
    pub parts: [&'a [u8]; 3],
}

impl<'a> Transmit<'a> {
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.is_empty())
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn io_slices(&self) -> [IoSlice<'a>; 3] {
        self.parts.map(IoSlice::new)
    }
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
    /// Frames waiting to be written, the current data header last (written from `head_off`).
    head: Vec<u8>,
    head_off: usize,
    /// Payload bytes of the data frame whose header ends `head`, not yet written.
    payload_left: usize,
    /// `head` ends with our Fin.
    fin_in_head: bool,
    /// The Ack value in `head`, if any (told to the peer once `head` is written).
    ack_in_head: Option<u64>,
    /// Control frames queued while a data frame is in flight.
    pending: Vec<u8>,
    ack_pending: Option<u64>,
    // --- the peer's stream (carrier -> local) ---
    rx: Box<[u8]>,
    filled: usize,
    /// Parsed up to here.
    pos: usize,
    /// Data for the local stream, inside `rx` before `pos`.
    deliver: Range<usize>,
    /// Payload bytes left in the data frame being parsed.
    in_data: usize,
    /// Positions of the peer's stream taken from carriers (its Fin counts one).
    received: u64,
    peer_fin: bool,
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
            head: Vec::with_capacity(64),
            head_off: 0,
            payload_left: 0,
            fin_in_head: false,
            ack_in_head: None,
            pending: Vec::with_capacity(64),
            ack_pending: None,
            rx: vec![0u8; RX_BUFFER].into_boxed_slice(),
            filled: 0,
            pos: 0,
            deliver: 0..0,
            in_data: 0,
            received: 0,
            peer_fin: false,
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
        let keep = self.deliver.len();
        self.rx.copy_within(self.deliver.clone(), 0);
        self.deliver = 0..keep;
        self.filled = keep;
        self.pos = keep;
        self.in_data = 0;
    }

    fn clear_tx(&mut self) {
        self.head.clear();
        self.head_off = 0;
        self.payload_left = 0;
        self.fin_in_head = false;
        self.ack_in_head = None;
        self.pending.clear();
        self.ack_pending = None;
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

    /// The next bytes to write on the carrier (empty: nothing to send, or no carrier).
    pub fn transmit(&mut self) -> Transmit<'_> {
        if !self.live {
            return Transmit { parts: [&[]; 3] };
        }
        if self.head_off == self.head.len() && self.payload_left == 0 {
            self.head.clear();
            self.head_off = 0;
            self.head.append(&mut self.pending);
            self.ack_in_head = self.ack_pending.take();
            if self.sent < self.end {
                // Piggyback an Ack on data when the peer's stream moved.
                if self.received > self.ack_queued {
                    push_frame(&mut self.head, ACK, Some(self.received));
                    self.ack_queued = self.received;
                    self.ack_in_head = Some(self.received);
                }
                let len = (self.end - self.sent).min(MAX_DATA as u64) as usize;
                self.head.extend_from_slice(&frame_header(DATA, len));
                self.payload_left = len;
            } else if self.local_eof && self.sent == self.end {
                push_frame(&mut self.head, FIN, Some(self.end));
                self.fin_in_head = true;
            }
        }
        let cap = self.ring.len();
        let at = (self.sent % cap as u64) as usize;
        let first = self.payload_left.min(cap - at);
        let second = self.payload_left - first;
        Transmit {
            parts: [
                &self.head[self.head_off..],
                &self.ring[at..at + first],
                &self.ring[..second],
            ],
        }
    }

    /// `n` bytes of [`transmit`](Self::transmit)'s parts were written.
    pub fn transmitted(&mut self, mut n: usize) {
        let h = n.min(self.head.len() - self.head_off);
        self.head_off += h;
        n -= h;
        if self.head_off == self.head.len() {
            if let Some(ack) = self.ack_in_head.take() {
                self.told = self.told.max(ack);
            }
            if self.fin_in_head {
                self.fin_in_head = false;
                self.sent = self.end + 1;
            }
        }
        debug_assert!(n <= self.payload_left);
        let p = n.min(self.payload_left);
        self.payload_left -= p;
        self.sent += p as u64;
        self.sent_max = self.sent_max.max(self.sent);
    }

    /// Nothing waits to be written on the carrier now (control frames included).
    pub fn tx_idle(&self) -> bool {
        self.head_off == self.head.len()
            && self.payload_left == 0
            && self.pending.is_empty()
            && !(self.live && (self.sent < self.end || (self.local_eof && self.sent == self.end)))
    }

    fn queue(&mut self, kind: u8, value: Option<u64>) {
        push_frame(&mut self.pending, kind, value);
        if kind == ACK {
            self.ack_pending = value;
            self.ack_queued = value.unwrap_or(self.ack_queued);
        }
    }

    /// Nothing was sent for a heartbeat: an Ack if the peer's stream moved, else a Ping.
    pub fn on_idle(&mut self) {
        if !self.live || !self.pending.is_empty() {
            return;
        }
        if self.received > self.ack_queued {
            self.queue(ACK, Some(self.received));
        } else {
            self.queue(PING, None);
        }
    }

    // --- carrier -> local -------------------------------------------------------------------

    /// Where to read the carrier into; empty while data waits for the local stream and the
    /// buffer is full.
    pub fn carrier_read_buf(&mut self) -> &mut [u8] {
        if self.deliver.is_empty() && self.pos > 0 && self.rx.len() - self.filled < MAX_DATA {
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

    /// The next bytes for the local stream.
    pub fn deliverable(&self) -> &[u8] {
        &self.rx[self.deliver.clone()]
    }

    /// `n` bytes of [`deliverable`](Self::deliverable) were written to the local stream.
    pub fn delivered(&mut self, n: usize) -> Result<(), FrameError> {
        self.deliver.start += n;
        if self.deliver.is_empty() {
            self.deliver = 0..0;
            self.parse()
        } else {
            Ok(())
        }
    }

    /// The peer's stream has ended and every byte of it was delivered: shut the local
    /// stream's writing side now (once).
    pub fn should_shutdown_local(&self) -> bool {
        self.peer_fin && self.deliver.is_empty() && !self.local_shut
    }

    /// The local stream's writing side was shut.
    pub fn local_shut(&mut self) {
        self.local_shut = true;
    }

    fn parse(&mut self) -> Result<(), FrameError> {
        while self.deliver.is_empty() && self.pos < self.filled {
            if self.in_data > 0 {
                let k = self.in_data.min(self.filled - self.pos);
                self.deliver = self.pos..self.pos + k;
                self.pos += k;
                self.in_data -= k;
                self.received += k as u64;
                if self.received - self.ack_queued >= self.ack_every {
                    self.queue(ACK, Some(self.received));
                }
                break;
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
                PING => {
                    if len != 0 {
                        return Err(bad);
                    }
                    self.pos += HEADER;
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
        if self.deliver.is_empty() && self.pos == self.filled {
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
        self.queue(ACK, Some(self.received));
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

    /// Nothing more can come from the peer and the peer knows it has everything of ours: a
    /// carrier closing now is the end, not a loss.
    pub fn finished_receiving(&self) -> bool {
        self.peer_fin && self.local_eof && self.acked == self.end + 1 && self.told == self.received
    }

    /// Both directions have ended: the peer acknowledged our Fin, we delivered its stream,
    /// shut the local stream's writing side and told the peer we have its Fin.
    pub fn is_done(&self) -> bool {
        self.finished_receiving() && self.local_shut
    }
}

#[cfg(test)]
mod tests;
