//! What both ends share: the writer (fair between streams), the routing of received frames to
//! each stream's task, the windows, and the pumps that move bytes between a local stream and
//! the channel.
//!
//! Every stream has a [`Route`]: frames that carry its data in order (data, end-of-data,
//! exit) go to one queue, requests about it (close, kill, replies) to another, so a task busy
//! writing data still sees a `Close` or `Kill`. `Window` frames are applied by the reader at
//! once (the credit of this end's sending direction), never queued behind data.
//!
//! Memory is bounded by the windows: a peer may have at most [`WINDOW`] bytes unacknowledged
//! per stream and direction (more is a protocol error that ends the channel), and a pump reads
//! only what its credit allows.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};

use super::proto::{CHUNK, Decoder, Frame, Kind, ProtoError, WINDOW};
use crate::relay::Stream;

/// How many bytes of frames the writer puts together before one write: small enough that a
/// heartbeat waits behind little, large enough for few system calls.
const BATCH: usize = 64 * 1024;

/// A message to the writer.
enum Out {
    Frame(Frame),
    /// Flush and close the channel's write side.
    End,
}

/// The frames of one stream, as received.
pub(crate) struct RouteRx {
    pub(crate) id: u32,
    /// Data, end of data and exit, in order.
    pub(crate) data: mpsc::UnboundedReceiver<Frame>,
    /// Everything else about the stream (`Window` too when the route forwards windows).
    pub(crate) control: mpsc::UnboundedReceiver<Frame>,
    /// Bytes the peer sent on the stream that this end has not acknowledged yet.
    pub(crate) inflight: Arc<AtomicUsize>,
    /// How many bytes this end may still send on the stream.
    pub(crate) credit: Arc<Semaphore>,
}

struct Route {
    data: mpsc::UnboundedSender<Frame>,
    control: mpsc::UnboundedSender<Frame>,
    inflight: Arc<AtomicUsize>,
    /// `None`: `Window` frames go to `control` (a proxy passes them on).
    credit: Option<Arc<Semaphore>>,
}

/// What a failed write means for a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnWriteFailure {
    /// The channel is gone: every route is dropped at once (the two ends of the ssh session:
    /// a broken pipe to the peer ends the channel).
    EndLink,
    /// Nothing more is sent, but what the peer already sent is still delivered; the read side
    /// decides when the link is gone. A peer that finished may close its socket while this end
    /// still acknowledges output: the exit status behind that output must not be lost.
    KeepReading,
}

/// One end's side of the channel.
pub(crate) struct Link {
    out: mpsc::UnboundedSender<Out>,
    routes: Mutex<HashMap<u32, Route>>,
    next_id: AtomicU32,
    /// Last id this end may open (exclusive).
    id_end: u32,
    /// True once the channel is gone (either direction failed or ended).
    gone: watch::Sender<bool>,
}

impl Link {
    /// A link whose frames go to `writer`; ids this end opens are `first..end`. Returns the
    /// writer's task (it ends when the link does). After a failed write nothing more is sent
    /// ([`Link::send`] returns false); `on_failure` says whether the link is gone too.
    pub(crate) fn new<W>(
        writer: W,
        first: u32,
        end: u32,
        on_failure: OnWriteFailure,
    ) -> (Arc<Link>, tokio::task::JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (gone, _) = watch::channel(false);
        let link = Arc::new(Link {
            out: tx,
            routes: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(first),
            id_end: end,
            gone,
        });
        let l = Arc::clone(&link);
        let task = tokio::spawn(async move {
            // A clean end (asked for) leaves the read side open: the peer answers with its own.
            // Returning drops the queue's receiver: later sends fail.
            if let Err(e) = write_loop(writer, rx).await {
                tracing::debug!("channel write side failed: {e}");
                if on_failure == OnWriteFailure::EndLink {
                    l.set_gone();
                }
            }
        });
        (link, task)
    }

    /// Queue a frame; false when the channel is gone.
    pub(crate) fn send(&self, frame: Frame) -> bool {
        !self.is_gone() && self.out.send(Out::Frame(frame)).is_ok()
    }

    /// Flush what is queued and close the write side.
    pub(crate) fn end(&self) {
        let _ = self.out.send(Out::End);
    }

    pub(crate) fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    /// Resolves once the channel is gone.
    pub(crate) async fn gone(&self) {
        let mut rx = self.gone.subscribe();
        let _ = rx.wait_for(|g| *g).await;
    }

    /// Mark the channel gone and drop every route (their tasks see their queues end).
    pub(crate) fn set_gone(&self) {
        self.gone.send_replace(true);
        self.routes.lock().expect("routes").clear();
        let _ = self.out.send(Out::End);
    }

    /// A fresh stream id of this end's range.
    pub(crate) fn alloc_id(&self) -> Option<u32> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (id < self.id_end).then_some(id)
    }

    /// Register stream `id`; with `forward_windows`, its `Window` frames go to the control
    /// queue instead of its credit. Fails when the id is taken.
    pub(crate) fn open(&self, id: u32, forward_windows: bool) -> Result<RouteRx, ProtoError> {
        let (data_tx, data) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let inflight = Arc::new(AtomicUsize::new(0));
        let credit = Arc::new(Semaphore::new(WINDOW));
        let mut routes = self.routes.lock().expect("routes");
        if routes.contains_key(&id) {
            return Err(ProtoError::BadStreamId(id));
        }
        routes.insert(
            id,
            Route {
                data: data_tx,
                control: control_tx,
                inflight: Arc::clone(&inflight),
                credit: (!forward_windows).then(|| Arc::clone(&credit)),
            },
        );
        Ok(RouteRx {
            id,
            data,
            control,
            inflight,
            credit,
        })
    }

    /// Forget stream `id` (late frames for it are ignored).
    pub(crate) fn close_route(&self, id: u32) {
        self.routes.lock().expect("routes").remove(&id);
    }

    /// Give the peer back `n` bytes of credit on stream `id` (never more than it has in
    /// flight: a confused local client cannot make the peer refuse the whole channel).
    pub(crate) fn ack(&self, id: u32, inflight: &AtomicUsize, n: usize) {
        let mut current = inflight.load(Ordering::Relaxed);
        loop {
            let take = n.min(current);
            if take == 0 {
                return;
            }
            match inflight.compare_exchange(
                current,
                current - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.send(Frame::Window {
                        id,
                        credit: take as u32,
                    });
                    return;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Route one received frame. Frames that open something (exec, listen, connect,
    /// accepted) are returned for the end to handle; frames for unknown streams are dropped
    /// (they crossed a close).
    pub(crate) fn dispatch(&self, frame: Frame) -> Result<Option<Frame>, ProtoError> {
        let kind = frame.kind();
        if matches!(
            kind,
            Kind::Exec | Kind::ListenUnix | Kind::ListenTcp | Kind::Connect | Kind::Accepted
        ) {
            return Ok(Some(frame));
        }
        let routes = self.routes.lock().expect("routes");
        let id = frame.id();
        let Some(route) = routes.get(&id) else {
            tracing::trace!(?frame, "dropped: no such stream");
            return Ok(None);
        };
        match (&frame, &route.credit) {
            (Frame::Window { credit, .. }, Some(sem)) => {
                let credit = *credit as usize;
                if sem.available_permits() + credit > 2 * WINDOW {
                    return Err(ProtoError::WindowExceeded(id));
                }
                sem.add_permits(credit);
                return Ok(None);
            }
            (Frame::Window { .. }, None) => {
                let _ = route.control.send(frame);
                return Ok(None);
            }
            _ => {}
        }
        if let Some(data) = frame.data() {
            let before = route.inflight.fetch_add(data.len(), Ordering::Relaxed);
            if before + data.len() > WINDOW {
                return Err(ProtoError::WindowExceeded(id));
            }
        }
        let queue = match kind {
            Kind::Stdin
            | Kind::StdinEof
            | Kind::Stdout
            | Kind::Stderr
            | Kind::Exit
            | Kind::Data
            | Kind::Eof => &route.data,
            _ => &route.control,
        };
        let _ = queue.send(frame);
        Ok(None)
    }
}

/// Frames waiting to be written: `Window` frames first, then one frame per stream in turn, so
/// a busy stream cannot hold back another's next frame by more than a round.
#[derive(Default)]
struct Fair {
    urgent: VecDeque<Frame>,
    queues: HashMap<u32, VecDeque<Frame>>,
    turn: VecDeque<u32>,
}

impl Fair {
    fn push(&mut self, frame: Frame) {
        match frame.stream() {
            None => self.urgent.push_back(frame),
            Some(id) => {
                let q = self.queues.entry(id).or_default();
                if q.is_empty() {
                    self.turn.push_back(id);
                }
                q.push_back(frame);
            }
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        if let Some(f) = self.urgent.pop_front() {
            return Some(f);
        }
        let id = self.turn.pop_front()?;
        let q = self.queues.get_mut(&id)?;
        let f = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&id);
        } else {
            self.turn.push_back(id);
        }
        f
    }

    fn is_empty(&self) -> bool {
        self.urgent.is_empty() && self.turn.is_empty()
    }
}

async fn write_loop<W>(mut w: W, mut rx: mpsc::UnboundedReceiver<Out>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut fair = Fair::default();
    let mut buf = Vec::with_capacity(BATCH + CHUNK + 64);
    let mut ending = false;
    loop {
        if fair.is_empty() {
            if ending {
                break;
            }
            match rx.recv().await {
                Some(Out::Frame(f)) => fair.push(f),
                Some(Out::End) | None => break,
            }
        }
        while let Ok(out) = rx.try_recv() {
            match out {
                Out::Frame(f) => fair.push(f),
                Out::End => ending = true,
            }
        }
        buf.clear();
        while buf.len() < BATCH
            && let Some(f) = fair.pop()
        {
            f.encode(&mut buf);
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    w.shutdown().await
}

/// Read frames from `reader` into `decoder` and hand each to `each`, until the reader ends
/// (`Ok`) or fails, or `each` or the decoder refuses something (`Err`).
pub(crate) async fn read_loop<R>(
    mut reader: R,
    mut decoder: Decoder,
    mut each: impl FnMut(Frame) -> Result<(), ProtoError>,
) -> Result<(), ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        while let Some(frame) = decoder.next_frame()? {
            each(frame)?;
        }
        let n = reader.read(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return if decoder.buffered() == 0 {
                Ok(())
            } else {
                Err(ReadError::Truncated)
            };
        }
        decoder.push(&buf[..n]);
    }
}

/// Why reading the channel stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("reading the channel failed: {0}")]
    Io(io::Error),
    #[error("the channel ended in the middle of a frame")]
    Truncated,
}

/// Read `source` under the stream's credit and send its bytes as `make(id, bytes)` frames;
/// returns at end of input (sending nothing: the caller says how the stream ends).
pub(crate) async fn pump_out<R>(
    link: &Link,
    id: u32,
    mut source: R,
    credit: &Semaphore,
    make: fn(u32, Vec<u8>) -> Frame,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    loop {
        let permit = credit
            .acquire_many(CHUNK as u32)
            .await
            .map_err(|_| io::Error::other("the stream is closed"))?;
        permit.forget();
        let mut buf = vec![0u8; CHUNK];
        let n = source.read(&mut buf).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                credit.add_permits(CHUNK);
                return Err(e);
            }
        };
        credit.add_permits(CHUNK - n);
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if !link.send(make(id, buf)) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the channel is gone",
            ));
        }
    }
}

/// Write the data frames of a stream to `sink`, acknowledging each; at the stream's end of
/// data, shut `sink` down. Returns at end of data, or `Ok` too when the queue ends (the link
/// is gone or the stream was closed).
pub(crate) async fn pump_in<W>(
    link: &Link,
    id: u32,
    data: &mut mpsc::UnboundedReceiver<Frame>,
    inflight: &AtomicUsize,
    mut sink: W,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while let Some(frame) = data.recv().await {
        match frame {
            Frame::Data { data: bytes, .. }
            | Frame::Stdin { data: bytes, .. }
            | Frame::Stdout { data: bytes, .. }
            | Frame::Stderr { data: bytes, .. } => {
                sink.write_all(&bytes).await?;
                link.ack(id, inflight, bytes.len());
            }
            Frame::Eof { .. } | Frame::StdinEof { .. } => {
                let _ = sink.shutdown().await;
                return Ok(());
            }
            _ => {}
        }
    }
    Ok(())
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

fn split(stream: Stream) -> (BoxRead, BoxWrite) {
    match stream {
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
        Stream::Unix(s) => {
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w))
        }
    }
}

/// Carry a local socket over stream `rx.id` both ways, with half-close (each side's end of
/// input becomes an `Eof`), until both directions ended, the peer closes the stream, or the
/// link goes. The route is closed at the end.
pub(crate) async fn bridge_socket(link: Arc<Link>, stream: Stream, mut rx: RouteRx) {
    let id = rx.id;
    let (read, write) = split(stream);
    let credit = Arc::clone(&rx.credit);
    let out = async {
        let r = pump_out(&link, id, read, &credit, |id, data| Frame::Data {
            id,
            data,
        })
        .await;
        match r {
            Ok(()) => link.send(Frame::Eof { id }),
            Err(e) => {
                tracing::debug!(id, "socket read failed: {e}");
                false
            }
        }
    };
    let inflight = Arc::clone(&rx.inflight);
    let mut data = std::mem::replace(&mut rx.data, mpsc::unbounded_channel().1);
    let into = async {
        match pump_in(&link, id, &mut data, &inflight, write).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(id, "socket write failed: {e}");
                false
            }
        }
    };
    let both = async {
        let (sent_eof, wrote) = tokio::join!(out, into);
        sent_eof && wrote
    };
    tokio::select! {
        clean = both => {
            if !clean {
                link.send(Frame::Close { id });
            }
        }
        _ = wait_close(&mut rx.control) => {}
        () = link.gone() => {}
    }
    link.close_route(id);
    // Dropping the futures closes the socket.
}

/// Resolves on the first `Close` on a control queue, or when the queue ends.
pub(crate) async fn wait_close(control: &mut mpsc::UnboundedReceiver<Frame>) {
    while let Some(f) = control.recv().await {
        if matches!(f, Frame::Close { .. }) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_takes_streams_in_turn_and_windows_first() {
        let mut fair = Fair::default();
        for i in 0..3 {
            fair.push(Frame::Data {
                id: 1,
                data: vec![i],
            });
        }
        fair.push(Frame::Stdin {
            id: 2,
            data: b"beat\n".to_vec(),
        });
        fair.push(Frame::Window { id: 9, credit: 5 });
        let order: Vec<(u32, Kind)> = std::iter::from_fn(|| fair.pop())
            .map(|f| (f.id(), f.kind()))
            .collect();
        assert_eq!(
            order,
            [
                (9, Kind::Window),
                (1, Kind::Data),
                (2, Kind::Stdin),
                (1, Kind::Data),
                (1, Kind::Data)
            ]
        );
        assert!(fair.is_empty());
    }

    #[test]
    fn an_accepted_stream_keeps_its_order_behind_the_accept() {
        let mut fair = Fair::default();
        fair.push(Frame::Accepted {
            listener: 1,
            stream: 7,
        });
        fair.push(Frame::Data {
            id: 7,
            data: vec![1],
        });
        fair.push(Frame::Eof { id: 7 });
        let kinds: Vec<Kind> = std::iter::from_fn(|| fair.pop())
            .map(|f| f.kind())
            .collect();
        assert_eq!(kinds, [Kind::Accepted, Kind::Data, Kind::Eof]);
    }

    #[tokio::test]
    async fn a_peer_beyond_its_window_is_refused() {
        let (link, _w) = Link::new(tokio::io::sink(), 1, 10, OnWriteFailure::EndLink);
        let _rx = link.open(1, false).unwrap();
        for _ in 0..WINDOW / CHUNK {
            assert_eq!(
                link.dispatch(Frame::Data {
                    id: 1,
                    data: vec![0; CHUNK]
                }),
                Ok(None)
            );
        }
        assert_eq!(
            link.dispatch(Frame::Data {
                id: 1,
                data: vec![0]
            }),
            Err(ProtoError::WindowExceeded(1))
        );
        // Credit beyond twice the window is refused too.
        assert_eq!(
            link.dispatch(Frame::Window {
                id: 1,
                credit: u32::MAX
            }),
            Err(ProtoError::WindowExceeded(1))
        );
        // A taken id cannot be opened again; frames for unknown streams are dropped.
        assert!(link.open(1, false).is_err());
        assert_eq!(link.dispatch(Frame::Eof { id: 5 }), Ok(None));
    }

    /// A peer that closed its socket.
    struct Broken;

    impl AsyncWrite for Broken {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// The exec client's race: its peer sent the output and the exit status, then closed;
    /// the client's acknowledgement of the output fails to be written. The exit status, read
    /// after that, still reaches the stream.
    #[tokio::test]
    async fn a_failed_write_keeps_delivering_what_was_received_when_asked() {
        let (link, writer) = Link::new(Broken, 1, 2, OnWriteFailure::KeepReading);
        let mut rx = link.open(1, false).unwrap();
        assert_eq!(
            link.dispatch(Frame::Stdout {
                id: 1,
                data: b"ok\n".to_vec()
            }),
            Ok(None)
        );
        link.ack(1, &rx.inflight, 3);
        writer.await.unwrap();
        assert!(
            !link.send(Frame::StdinEof { id: 1 }),
            "nothing is sent any more"
        );
        assert!(!link.is_gone());
        let exit = Frame::Exit {
            id: 1,
            status: super::super::proto::ExitStatus::Code(7),
        };
        assert_eq!(link.dispatch(exit.clone()), Ok(None));
        assert!(matches!(rx.data.recv().await, Some(Frame::Stdout { .. })));
        assert_eq!(rx.data.recv().await, Some(exit.clone()));

        // The two ends of the ssh session: a broken pipe ends the channel.
        let (link, writer) = Link::new(Broken, 1, 2, OnWriteFailure::EndLink);
        let mut rx = link.open(1, false).unwrap();
        link.send(Frame::StdinEof { id: 1 });
        writer.await.unwrap();
        assert!(link.is_gone());
        assert_eq!(link.dispatch(exit), Ok(None));
        assert_eq!(rx.data.recv().await, None);
    }

    #[tokio::test]
    async fn acks_never_exceed_what_is_in_flight() {
        let (link, _w) = Link::new(tokio::io::sink(), 1, 10, OnWriteFailure::EndLink);
        let inflight = AtomicUsize::new(10);
        link.ack(1, &inflight, 100);
        assert_eq!(inflight.load(Ordering::Relaxed), 0);
    }
}
