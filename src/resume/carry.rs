//! The async driver of [`Engine`]: one task polls the local stream, the carrier and the timers
//! and moves bytes between them and the engine's buffers (no copy of its own: reads land in the
//! engine's ring, writes go out from it as a header and payload slices).

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{Instant, Sleep};

use super::proto::{Engine, Fault, encode_hello};
use super::{Carrier, End, Hello, Options, ResumeEvent, Summary, Token};

/// Rounds of reads and writes in one poll before yielding to other tasks.
const ROUNDS: usize = 32;

/// Why [`pump`] stopped.
enum Stop {
    /// Both sides are done and know it (with no carrier: we are done and the peer closed).
    Done,
    /// The carrier is dead.
    CarrierDead(String),
    /// The peer's local stream failed (its Abort).
    PeerAborted(String),
    /// The local stream failed.
    Local(io::Error),
}

/// Timers and flags of one carry.
struct Clock {
    heartbeat: Duration,
    dead_after: Duration,
    last_rx: Instant,
    last_tx: Instant,
    timer: Pin<Box<Sleep>>,
    local_eof: bool,
    local_dirty: bool,
    carrier_dirty: bool,
}

impl Clock {
    fn reset(&mut self) {
        let now = Instant::now();
        self.last_rx = now;
        self.last_tx = now;
        self.carrier_dirty = false;
    }
}

/// Carry `local` over `first`, then over each carrier `next()` yields after a loss (called
/// once per loss; `carry` bounds it by `opts.grace` measured from the loss; `None` means no
/// more carriers). Returns when both directions have ended cleanly (each side's local end of
/// stream travels as a Fin and becomes a write shutdown on the far side's local stream once
/// every byte before it was delivered), or with an [`End`].
///
/// What each side knows at the end: `Ok` means the peer acknowledged every byte of our stream
/// and its end, and we delivered every byte of the peer's stream and shut the local stream's
/// writing side. A side that reached that point but lost the carrier before the peer said it
/// is done too (Close) takes a new carrier within the grace, so that a peer still waiting for
/// our last acknowledgement learns from our hello that nothing was lost; it returns `Ok` when
/// the peer closes, or when no carrier comes. When the local stream fails, the peer is told
/// (Abort, on the current carrier or, within the grace, the next one) and ends at once with
/// [`End::PeerAborted`].
pub async fn carry<L, C, F, Fut>(
    mut local: L,
    first: Carrier<C>,
    mut next: F,
    token: Token,
    opts: Options,
    events: Option<UnboundedSender<ResumeEvent>>,
) -> Result<Summary, End>
where
    L: AsyncRead + AsyncWrite + Unpin + Send,
    C: AsyncRead + AsyncWrite + Unpin + Send,
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Option<Carrier<C>>> + Send,
{
    let emit = |event: ResumeEvent| {
        tracing::debug!(?event, "resume");
        if let Some(tx) = &events {
            let _ = tx.send(event);
        }
    };
    let mut eng = Engine::new(token, opts.buffer);
    let mut clock = Clock {
        heartbeat: opts.heartbeat,
        dead_after: opts.dead_after,
        last_rx: Instant::now(),
        last_tx: Instant::now(),
        timer: Box::pin(tokio::time::sleep(opts.heartbeat)),
        local_eof: false,
        local_dirty: false,
        carrier_dirty: false,
    };
    let mut pending = Some(first);
    let mut resumes = 0u32;
    // When the last carrier was lost (None: not lost since the last restore, or the first).
    let mut lost_at: Option<Instant> = None;
    let mut replay_total = 0u64;
    // The local stream failed: the Abort still to be sent.
    let mut failed: Option<io::Error> = None;
    let summary = |eng: &Engine, resumes| Summary {
        sent: eng.sent_bytes(),
        received: eng.received_bytes(),
        resumes,
    };
    // No carrier came in time: a clean end if nothing can be lost any more.
    let no_carrier = |eng: &Engine, failed: Option<io::Error>, resumes| match failed {
        Some(e) => Err(End::Local(e)),
        None if eng.is_done() => Ok(summary(eng, resumes)),
        None => Err(End::GraceExpired(opts.grace)),
    };

    loop {
        if failed.is_none() && eng.peer_closed() {
            // The peer is done (it has our whole stream): deliver the rest of its stream.
            let stop =
                poll_fn(|cx| pump(cx, &mut local, None::<&mut C>, &mut eng, &mut clock)).await;
            return match stop {
                Stop::Local(e) => Err(End::Local(e)),
                _ => Ok(summary(&eng, resumes)),
            };
        }

        // --- get a carrier and exchange hellos, serving the local stream meanwhile ---
        let hello = encode_hello(&eng.hello());
        let deadline = lost_at.map(|t| t + opts.grace);
        let connect = async {
            let carrier = match pending.take() {
                Some(c) => c,
                None => match next().await {
                    Some(c) => c,
                    None => return Err(None),
                },
            };
            handshake(carrier, &hello, opts.handshake_timeout)
                .await
                .map_err(Some)
        };
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let mut connect = std::pin::pin!(connect);
        let mut grace = std::pin::pin!(grace);
        let got = loop {
            tokio::select! {
                got = &mut connect => break got,
                stop = poll_fn(|cx| pump(cx, &mut local, None::<&mut C>, &mut eng, &mut clock)),
                    if failed.is_none() =>
                {
                    match stop {
                        Stop::Local(e) => {
                            // Tell the peer on the next carrier, if one comes in time.
                            eng.abort(&e.to_string());
                            failed = Some(e);
                        }
                        _ => return Ok(summary(&eng, resumes)),
                    }
                }
                () = &mut grace => return no_carrier(&eng, failed, resumes),
            }
        };
        let (mut stream, peer) = match got {
            Ok(pair) => pair,
            Err(None) => return no_carrier(&eng, failed, resumes),
            Err(Some(why)) => {
                emit(ResumeEvent::LinkLost { why });
                lost_at.get_or_insert_with(Instant::now);
                continue;
            }
        };
        match eng.resume(&peer) {
            Ok(replayed) => {
                if let Some(t) = lost_at.take() {
                    resumes += 1;
                    replay_total += replayed;
                    emit(ResumeEvent::LinkRestored {
                        gap: t.elapsed(),
                        replayed,
                    });
                }
            }
            Err(Fault::WrongToken) => {
                emit(ResumeEvent::Refused {
                    why: Fault::WrongToken.to_string(),
                });
                lost_at.get_or_insert_with(Instant::now);
                continue;
            }
            Err(fault) => {
                emit(ResumeEvent::Refused {
                    why: fault.to_string(),
                });
                return Err(match failed {
                    Some(e) => End::Local(e),
                    None => End::Refused(fault.to_string()),
                });
            }
        }
        if let Some(e) = failed {
            send_abort(&mut stream, &mut eng, opts.dead_after).await;
            return Err(End::Local(e));
        }

        // --- carry over this carrier until it ends ---
        clock.reset();
        let stop =
            poll_fn(|cx| pump(cx, &mut local, Some(&mut stream), &mut eng, &mut clock)).await;
        match stop {
            Stop::Done => {
                linger(&mut stream, opts.dead_after).await;
                tracing::debug!(replay_total, "resumable stream done");
                return Ok(summary(&eng, resumes));
            }
            Stop::CarrierDead(why) => {
                eng.carrier_lost();
                drop(stream);
                if !eng.peer_closed() {
                    emit(ResumeEvent::LinkLost { why });
                    lost_at = Some(Instant::now());
                }
            }
            Stop::PeerAborted(why) => {
                drop(stream);
                let _ = tokio::time::timeout(opts.dead_after, local.shutdown()).await;
                return Err(End::PeerAborted(why));
            }
            Stop::Local(e) => {
                eng.abort(&e.to_string());
                send_abort(&mut stream, &mut eng, opts.dead_after).await;
                return Err(End::Local(e));
            }
        }
    }
}

/// Finish the frames being written, then write the Abort the engine was given, and end the
/// carrier; at most `timeout`.
async fn send_abort<C: AsyncWrite + Unpin>(stream: &mut C, eng: &mut Engine, timeout: Duration) {
    let end = async {
        poll_fn(|cx| {
            loop {
                let tx = eng.transmit();
                if tx.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                match Pin::new(&mut *stream).poll_write_vectored(cx, tx.slices()) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => eng.transmitted(n),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(timeout, end).await {
        tracing::debug!(error = %e, "the abort did not reach the carrier");
    }
}

/// Write our hello, then read the peer's (unless the acceptor already did), within `timeout`.
async fn handshake<C: AsyncRead + AsyncWrite + Unpin>(
    carrier: Carrier<C>,
    hello: &[u8],
    timeout: Duration,
) -> Result<(C, Hello), String> {
    let Carrier { mut stream, peer } = carrier;
    let exchange = async {
        stream.write_all(hello).await?;
        stream.flush().await?;
        match peer {
            Some(p) => Ok(p),
            None => super::read_hello(&mut stream).await,
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(peer)) => Ok((stream, peer)),
        Ok(Err(e)) => Err(format!("hello failed: {e}")),
        Err(_) => Err(format!("no hello within {timeout:?}")),
    }
}

/// After both Closes: end the carrier and read it until the peer ends it too (so that closing
/// it does not reset what is still on its way); at most `quiet` without a byte from it.
async fn linger<C: AsyncRead + AsyncWrite + Unpin>(stream: &mut C, quiet: Duration) {
    if tokio::time::timeout(quiet, stream.shutdown())
        .await
        .is_err()
    {
        return;
    }
    let mut sink = [0u8; 512];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

/// Move bytes until something needs the caller: local -> ring -> carrier and
/// carrier -> engine -> local, heartbeats and the dead-carrier timer.
fn pump<L, C>(
    cx: &mut Context<'_>,
    local: &mut L,
    mut carrier: Option<&mut C>,
    eng: &mut Engine,
    clock: &mut Clock,
) -> Poll<Stop>
where
    L: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut rx_moved = false;
    let mut tx_moved = false;
    let mut rx_blocked = false;
    for _ in 0..ROUNDS {
        let mut progress = false;

        // Local stream -> ring.
        if !clock.local_eof {
            let buf = eng.local_read_buf();
            if !buf.is_empty() {
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut *local).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        eng.local_read(n);
                        clock.local_eof = n == 0;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Stop::Local(e)),
                    Poll::Pending => {}
                }
            }
        }

        // Engine -> local stream.
        let data = eng.deliverable();
        if !data.is_empty() {
            match Pin::new(&mut *local).poll_write_vectored(cx, data.slices()) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Stop::Local(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    clock.local_dirty = true;
                    progress = true;
                    if let Err(e) = eng.delivered(n) {
                        return Poll::Ready(Stop::CarrierDead(e.to_string()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Local(e)),
                Poll::Pending => {}
            }
        } else if clock.local_dirty {
            match Pin::new(&mut *local).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    clock.local_dirty = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Local(e)),
                Poll::Pending => {}
            }
        } else if eng.should_shutdown_local() {
            match Pin::new(&mut *local).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    eng.local_shut();
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Local(e)),
                Poll::Pending => {}
            }
        }

        if let Some(c) = carrier.as_deref_mut() {
            // Engine -> carrier.
            let tx = eng.transmit();
            if !tx.is_empty() {
                match Pin::new(&mut *c).poll_write_vectored(cx, tx.slices()) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Stop::CarrierDead("the carrier took no data".into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        eng.transmitted(n);
                        clock.carrier_dirty = true;
                        tx_moved = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Stop::CarrierDead(format!("write failed: {e}")));
                    }
                    Poll::Pending => {}
                }
            } else if clock.carrier_dirty {
                match Pin::new(&mut *c).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        // Look again: the stream may be done now.
                        clock.carrier_dirty = false;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Stop::CarrierDead(format!("flush failed: {e}")));
                    }
                    Poll::Pending => {}
                }
            }

            // Carrier -> engine.
            let buf = eng.carrier_read_buf();
            if buf.is_empty() {
                rx_blocked = true;
            } else {
                let mut rb = ReadBuf::new(buf);
                match Pin::new(&mut *c).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            return Poll::Ready(Stop::CarrierDead("the carrier was closed".into()));
                        }
                        rx_moved = true;
                        progress = true;
                        if let Err(e) = eng.carrier_read(n) {
                            return Poll::Ready(Stop::CarrierDead(e.to_string()));
                        }
                        if let Some(why) = eng.peer_aborted() {
                            return Poll::Ready(Stop::PeerAborted(why.to_string()));
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Stop::CarrierDead(format!("read failed: {e}")));
                    }
                    Poll::Pending => {}
                }
            }
        }

        let done = match carrier {
            Some(_) => eng.is_closed() && !clock.carrier_dirty,
            None => eng.is_done() && eng.peer_closed(),
        };
        if done {
            return Poll::Ready(Stop::Done);
        }
        if !progress {
            return timers(
                cx,
                carrier.is_some(),
                eng,
                clock,
                rx_moved,
                tx_moved,
                rx_blocked,
            );
        }
    }
    // Busy: let other tasks run, then go on.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Nothing more moves now: heartbeats and the dead-carrier check, then wait.
fn timers(
    cx: &mut Context<'_>,
    connected: bool,
    eng: &mut Engine,
    clock: &mut Clock,
    rx_moved: bool,
    tx_moved: bool,
    rx_blocked: bool,
) -> Poll<Stop> {
    if !connected {
        return Poll::Pending;
    }
    let mut now = Instant::now();
    // While the local stream does not take our data we do not read the carrier either: its
    // silence is not the carrier's fault.
    if rx_moved || rx_blocked {
        clock.last_rx = now;
    }
    if tx_moved {
        clock.last_tx = now;
    }
    loop {
        let dead = clock.last_rx + clock.dead_after;
        if now >= dead {
            return Poll::Ready(Stop::CarrierDead(format!(
                "nothing received for {:?}",
                clock.dead_after
            )));
        }
        let beat = clock.last_tx + clock.heartbeat;
        if now >= beat {
            eng.on_idle();
            clock.last_tx = now;
            // Write it at once.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let due = beat.min(dead);
        if clock.timer.is_elapsed() || clock.timer.deadline() > due {
            clock.timer.as_mut().reset(due);
        }
        match clock.timer.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            // Fired already: look again.
            Poll::Ready(()) => now = Instant::now(),
        }
    }
}
