//! The resumable stream's driver over real sockets: a TCP proxy between the two ends stands for
//! the ssh forward, and is killed, frozen or never replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pvlaunch::resume::{
    Carrier, End, Hello, Options, ResumeEvent, Summary, Token, carry, proto, read_hello,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinHandle;

fn opts() -> Options {
    Options {
        buffer: 1 << 20,
        heartbeat: Duration::from_millis(50),
        dead_after: Duration::from_secs(3),
        grace: Duration::from_secs(20),
        handshake_timeout: Duration::from_secs(5),
    }
}

/// The proxy's current connection: kill it, or freeze it (stop forwarding, keep it open).
#[derive(Default)]
struct Current {
    task: Option<JoinHandle<()>>,
    freeze: Option<Arc<Notify>>,
    bytes: Arc<AtomicU64>,
    /// Stop forwarding from the accepting end to the connecting end (keep what it sent).
    hold_back: Arc<AtomicBool>,
}

/// A TCP proxy from its own port to `to`, one connection at a time.
struct Proxy {
    addr: std::net::SocketAddr,
    current: Arc<Mutex<Current>>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let current: Arc<Mutex<Current>> = Arc::default();
        let cur = current.clone();
        tokio::spawn(async move {
            loop {
                let (mut a, _) = listener.accept().await.unwrap();
                let mut b = TcpStream::connect(to).await.unwrap();
                let freeze = Arc::new(Notify::new());
                let bytes = Arc::new(AtomicU64::new(0));
                let hold_back = Arc::new(AtomicBool::new(false));
                let (f, n, h) = (freeze.clone(), bytes.clone(), hold_back.clone());
                let task = tokio::spawn(async move {
                    let (mut ar, mut aw) = a.split();
                    let (mut br, mut bw) = b.split();
                    let never = AtomicBool::new(false);
                    let copy = async {
                        tokio::try_join!(
                            pipe(&mut ar, &mut bw, &n, &never),
                            pipe(&mut br, &mut aw, &n, &h)
                        )
                    };
                    tokio::select! {
                        _ = copy => {}
                        // Silent from now on, both sockets open.
                        _ = f.notified() => std::future::pending::<()>().await,
                    }
                });
                let mut c = cur.lock().await;
                *c = Current {
                    task: Some(task),
                    freeze: Some(freeze),
                    bytes,
                    hold_back,
                };
            }
        });
        Proxy { addr, current }
    }

    /// Kill the current connection if it has carried more than `min` bytes.
    async fn kill_if_used(&self, min: u64) -> bool {
        let mut c = self.current.lock().await;
        if c.bytes.load(Ordering::Relaxed) <= min {
            return false;
        }
        match c.task.take() {
            Some(t) => {
                t.abort();
                let _ = t.await;
                c.bytes = Arc::default();
                true
            }
            None => false,
        }
    }

    /// From now on, what the accepting end sends stays in the proxy.
    async fn hold_back(&self) {
        let c = self.current.lock().await;
        c.hold_back.store(true, Ordering::Relaxed);
    }

    async fn freeze(&self) {
        let c = self.current.lock().await;
        c.freeze.as_ref().unwrap().notify_one();
    }
}

async fn pipe<R, W>(r: &mut R, w: &mut W, n: &AtomicU64, hold: &AtomicBool) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = r.read(&mut buf).await?;
        while hold.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if k == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..k]).await?;
        n.fetch_add(k as u64, Ordering::Relaxed);
    }
}

/// The connecting end's carriers: new connections to `addr`.
fn connector(addr: std::net::SocketAddr) -> impl FnMut() -> futures_next::Next<TcpStream> {
    move || {
        Box::pin(async move {
            for _ in 0..50 {
                if let Ok(s) = TcpStream::connect(addr).await {
                    s.set_nodelay(true).unwrap();
                    return Some(Carrier::new(s));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    }
}

/// The accepting end's carriers: the next connection, its hello read first (as a router
/// would, to find the stream by its token).
fn acceptor(listener: Arc<TcpListener>) -> impl FnMut() -> futures_next::Next<TcpStream> {
    move || {
        let l = listener.clone();
        Box::pin(async move {
            let (mut s, _) = l.accept().await.ok()?;
            s.set_nodelay(true).unwrap();
            let hello = read_hello(&mut s).await.ok()?;
            Some(Carrier {
                stream: s,
                peer: Some(hello),
            })
        })
    }
}

mod futures_next {
    use std::future::Future;
    use std::pin::Pin;

    use pvlaunch::resume::Carrier;

    pub type Next<C> = Pin<Box<dyn Future<Output = Option<Carrier<C>>> + Send>>;
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An application on one end: writes `data` then shuts its writing side, reads to the end;
/// returns the SHA-256 of what it read. `progress` counts bytes read.
fn app(stream: UnixStream, data: Vec<u8>, progress: Arc<AtomicU64>) -> JoinHandle<[u8; 32]> {
    tokio::spawn(async move {
        let (mut r, mut w) = stream.into_split();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(100_000) {
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        writer.await.unwrap();
        hash.finalize().into()
    })
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn collect(mut rx: mpsc::UnboundedReceiver<ResumeEvent>) -> Vec<ResumeEvent> {
    let mut out = vec![];
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_mib_each_way_survive_carriers_killed_at_random_moments() {
    const LEN: usize = 32 << 20;
    const KILLS: usize = 5;
    let token = Token::generate();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;

    let (app_a, local_a) = UnixStream::pair().unwrap();
    let (app_b, local_b) = UnixStream::pair().unwrap();
    let (a_data, b_data) = (pattern(LEN, 1), pattern(LEN, 2));
    let (a_sum, b_sum) = (sha(&a_data), sha(&b_data));
    let got_a = Arc::new(AtomicU64::new(0));
    let got_b = Arc::new(AtomicU64::new(0));
    let app_a = app(app_a, a_data, got_a.clone());
    let app_b = app(app_b, b_data, got_b.clone());

    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let mut next_a = connector(proxy.addr);
    let mut next_b = acceptor(listener.clone());
    let end_a = tokio::spawn(async move {
        let first = next_a().await.unwrap();
        carry(local_a, first, next_a, token, opts(), Some(a_tx)).await
    });
    let end_b = tokio::spawn(async move {
        let first = next_b().await.unwrap();
        carry(local_b, first, next_b, token, opts(), Some(b_tx)).await
    });

    // Kill at random points of the transfer (both directions together).
    let seed: u64 = rand::random();
    eprintln!("kill points from seed {seed}");
    let mut points: Vec<u64> = (0..KILLS)
        .map(|i| {
            let r = u64::from_le_bytes(pattern(8, seed ^ (i as u64) << 32).try_into().unwrap());
            r % (2 * LEN as u64 * 9 / 10)
        })
        .collect();
    points.sort();
    let mut kills = 0;
    for p in points {
        while got_a.load(Ordering::Relaxed) + got_b.load(Ordering::Relaxed) < p {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Only a connection that carried the stream (so that each kill is one resume).
        while !proxy.kill_if_used(proto::HELLO_LEN as u64 * 2).await {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        kills += 1;
    }

    let (ha, hb) = (app_a.await.unwrap(), app_b.await.unwrap());
    assert!(ha == b_sum, "b -> a corrupted");
    assert!(hb == a_sum, "a -> b corrupted");
    let sa: Summary = end_a.await.unwrap().unwrap();
    let sb: Summary = end_b.await.unwrap().unwrap();
    assert_eq!((sa.sent, sa.received), (LEN as u64, LEN as u64));
    assert_eq!((sb.sent, sb.received), (LEN as u64, LEN as u64));
    assert_eq!(sa.resumes as usize, kills, "{:?}", collect(a_rx));
    assert_eq!(sb.resumes as usize, kills);
    let events = collect(b_rx);
    let restored = events
        .iter()
        .filter(|e| matches!(e, ResumeEvent::LinkRestored { .. }))
        .count();
    assert_eq!(restored, kills, "{events:?}");
}

#[tokio::test]
async fn no_new_carrier_within_the_grace_ends_with_grace_expired() {
    let token = Token::generate();
    let (_app, local) = UnixStream::pair().unwrap();
    let (c, far) = UnixStream::pair().unwrap();
    let mut o = opts();
    o.grace = Duration::from_millis(300);
    let (tx, rx) = mpsc::unbounded_channel();
    let far_end = tokio::spawn(async move {
        let mut far = far;
        // The peer's hello, then the carrier breaks.
        let _ = read_hello(&mut far).await.unwrap();
        far.write_all(&proto::encode_hello(&Hello { token, received: 0 }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let start = tokio::time::Instant::now();
    let never = || std::future::pending::<Option<Carrier<UnixStream>>>();
    let end = carry(local, Carrier::new(c), never, token, o.clone(), Some(tx)).await;
    far_end.await.unwrap();
    assert!(
        matches!(end, Err(End::GraceExpired(g)) if g == o.grace),
        "{end:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(400));
    let events = collect(rx);
    assert!(
        matches!(&events[..], [ResumeEvent::LinkLost { .. }]),
        "{events:?}"
    );

    // `None` from next(): no more carriers, the same end without waiting for the grace.
    let (_app, local) = UnixStream::pair().unwrap();
    let (c, far) = UnixStream::pair().unwrap();
    drop(far);
    o.grace = Duration::from_secs(3600);
    let none = || async { None::<Carrier<UnixStream>> };
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        carry(local, Carrier::new(c), none, token, o, None),
    )
    .await
    .unwrap();
    assert!(matches!(end, Err(End::GraceExpired(_))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_carrier_is_found_dead_and_the_stream_resumes() {
    let token = Token::generate();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;
    let mut o = opts();
    o.dead_after = Duration::from_millis(400);

    let (app_a, local_a) = UnixStream::pair().unwrap();
    let (app_b, local_b) = UnixStream::pair().unwrap();
    let (mut app_a, mut app_b) = (app_a, app_b);
    let (a_tx, a_rx) = mpsc::unbounded_channel();
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let mut next_a = connector(proxy.addr);
    let mut next_b = acceptor(listener.clone());
    let oa = o.clone();
    let end_a = tokio::spawn(async move {
        let first = next_a().await.unwrap();
        carry(local_a, first, next_a, token, oa, Some(a_tx)).await
    });
    let end_b = tokio::spawn(async move {
        let first = next_b().await.unwrap();
        carry(local_b, first, next_b, token, o, Some(b_tx)).await
    });
    app_a.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    app_b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before");

    proxy.freeze().await;
    let frozen = tokio::time::Instant::now();
    app_a.write_all(b" after the freeze").await.unwrap();
    app_a.shutdown().await.unwrap();
    let mut rest = Vec::new();
    app_b.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b" after the freeze");
    // Dead `dead_after` after the last byte received, at most a heartbeat before the freeze.
    assert!(frozen.elapsed() >= Duration::from_millis(400 - 50 - 20));
    app_b.shutdown().await.unwrap();
    let mut none = Vec::new();
    app_a.read_to_end(&mut none).await.unwrap();
    assert!(none.is_empty());

    let (sa, sb) = (end_a.await.unwrap().unwrap(), end_b.await.unwrap().unwrap());
    assert_eq!(
        (sa.sent, sb.received, sa.resumes, sb.resumes),
        (23, 23, 1, 1)
    );
    for events in [collect(a_rx), collect(b_rx)] {
        assert!(
            matches!(&events[..], [ResumeEvent::LinkLost { why }, ResumeEvent::LinkRestored { .. }]
                if why.contains("nothing received")),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn both_directions_close_cleanly_in_half_close_order() {
    let token = Token::generate();
    let (c_a, c_b) = UnixStream::pair().unwrap();
    let (mut app_a, local_a) = UnixStream::pair().unwrap();
    let (mut app_b, local_b) = UnixStream::pair().unwrap();
    let never = || std::future::pending::<Option<Carrier<UnixStream>>>();
    let end_a = tokio::spawn(carry(
        local_a,
        Carrier::new(c_a),
        never,
        token,
        opts(),
        None,
    ));
    let end_b = tokio::spawn(carry(
        local_b,
        Carrier::new(c_b),
        never,
        token,
        opts(),
        None,
    ));

    // a asks and closes its side; b reads to the end of the question, then answers and closes.
    app_a.write_all(b"question").await.unwrap();
    app_a.shutdown().await.unwrap();
    let mut q = Vec::new();
    app_b.read_to_end(&mut q).await.unwrap();
    assert_eq!(q, b"question");
    // a's end of stream does not end b -> a.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!end_a.is_finished() && !end_b.is_finished());
    app_b.write_all(b"the answer").await.unwrap();
    app_b.shutdown().await.unwrap();
    let mut answer = Vec::new();
    app_a.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"the answer");

    let sa = tokio::time::timeout(Duration::from_secs(5), end_a)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let sb = end_b.await.unwrap().unwrap();
    assert_eq!((sa.sent, sa.received, sa.resumes), (8, 10, 0));
    assert_eq!((sb.sent, sb.received, sb.resumes), (10, 8, 0));
}

#[tokio::test]
async fn another_streams_carrier_is_refused_and_the_right_one_is_used() {
    let token = Token::generate();
    let (c_a, c_b) = UnixStream::pair().unwrap();
    // The first carrier a gets is another stream's.
    let (stranger, mut other) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let _ = read_hello(&mut other).await;
        let wrong = Hello {
            token: Token::generate(),
            received: 0,
        };
        let _ = other.write_all(&proto::encode_hello(&wrong)).await;
        let _ = other.read_to_end(&mut Vec::new()).await;
    });
    let (mut app_a, local_a) = UnixStream::pair().unwrap();
    let (mut app_b, local_b) = UnixStream::pair().unwrap();
    let mut right = Some(c_a);
    let next_a = move || {
        let c = right.take().map(Carrier::new);
        async move { c }
    };
    let never = || std::future::pending::<Option<Carrier<UnixStream>>>();
    let (tx, rx) = mpsc::unbounded_channel();
    let end_a = tokio::spawn(carry(
        local_a,
        Carrier::new(stranger),
        next_a,
        token,
        opts(),
        Some(tx),
    ));
    let end_b = tokio::spawn(carry(
        local_b,
        Carrier::new(c_b),
        never,
        token,
        opts(),
        None,
    ));
    app_a.write_all(b"ping").await.unwrap();
    app_a.shutdown().await.unwrap();
    app_b.shutdown().await.unwrap();
    let mut got = Vec::new();
    app_b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping");
    app_a.read_to_end(&mut Vec::new()).await.unwrap();
    end_a.await.unwrap().unwrap();
    end_b.await.unwrap().unwrap();
    let events = collect(rx);
    assert!(
        matches!(&events[0], ResumeEvent::Refused { why } if why.contains("another stream")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_peer_claiming_bytes_never_sent_ends_the_stream() {
    let token = Token::generate();
    let (_app, local) = UnixStream::pair().unwrap();
    let (c, mut far) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        let _ = read_hello(&mut far).await;
        let lie = Hello {
            token,
            received: 1000,
        };
        let _ = far.write_all(&proto::encode_hello(&lie)).await;
        let _ = far.read_to_end(&mut Vec::new()).await;
    });
    let never = || std::future::pending::<Option<Carrier<UnixStream>>>();
    let end = carry(local, Carrier::new(c), never, token, opts(), None).await;
    assert!(
        matches!(&end, Err(End::Refused(why)) if why.contains("1000")),
        "{end:?}"
    );
}

/// A local stream whose reads fail (connection reset) once a `!` arrives.
struct Failing(UnixStream);

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(()))) && buf.filled()[before..].contains(&b'!')
        {
            let e = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by the test");
            return std::task::Poll::Ready(Err(e));
        }
        poll
    }
}

impl tokio::io::AsyncWrite for Failing {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_failing_local_stream_ends_the_far_end_at_once_with_its_reason() {
    let token = Token::generate();
    let (c_a, c_b) = UnixStream::pair().unwrap();
    let (mut app_a, local_a) = UnixStream::pair().unwrap();
    let (mut app_b, local_b) = UnixStream::pair().unwrap();
    let never = || std::future::pending::<Option<Carrier<UnixStream>>>();
    // A long grace: without an Abort b would wait all of it.
    let mut o = opts();
    o.grace = Duration::from_secs(60);
    let end_a = tokio::spawn(carry(
        Failing(local_a),
        Carrier::new(c_a),
        never,
        token,
        o.clone(),
        None,
    ));
    let end_b = tokio::spawn(carry(local_b, Carrier::new(c_b), never, token, o, None));
    app_a.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    app_b.read_exact(&mut buf).await.unwrap();
    app_a.write_all(b"!").await.unwrap();

    let end_b = tokio::time::timeout(Duration::from_secs(5), end_b)
        .await
        .expect("the far end waits for the grace")
        .unwrap();
    assert!(
        matches!(&end_b, Err(End::PeerAborted(why)) if why.contains("reset by the test")),
        "{end_b:?}"
    );
    // b's local stream was shut down.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), app_b.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
    let end_a = end_a.await.unwrap();
    assert!(
        matches!(&end_a, Err(End::Local(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{end_a:?}"
    );
    drop(app_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_lost_before_the_last_ack_arrives_still_ends_cleanly_at_both_ends() {
    let token = Token::generate();
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let proxy = Proxy::start(listener.local_addr().unwrap()).await;
    let (mut app_a, local_a) = UnixStream::pair().unwrap();
    let (mut app_b, local_b) = UnixStream::pair().unwrap();
    // a accepts, b connects through the proxy.
    let mut next_a = acceptor(listener.clone());
    let mut next_b = connector(proxy.addr);
    let end_a = tokio::spawn(async move {
        let first = next_a().await.unwrap();
        carry(local_a, first, next_a, token, opts(), None).await
    });
    let (b_tx, b_rx) = mpsc::unbounded_channel();
    let end_b = tokio::spawn(async move {
        let first = next_b().await.unwrap();
        carry(local_b, first, next_b, token, opts(), Some(b_tx)).await
    });

    app_a.write_all(b"question").await.unwrap();
    app_a.shutdown().await.unwrap();
    let mut q = Vec::new();
    app_b.read_to_end(&mut q).await.unwrap();
    assert_eq!(q, b"question");
    // b's acknowledgement of a's end reaches a; from now on nothing from a reaches b.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.hold_back().await;
    app_b.write_all(b"the answer").await.unwrap();
    app_b.shutdown().await.unwrap();
    let mut answer = Vec::new();
    app_a.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"the answer");
    // a is done; its acknowledgement of b's end is in the proxy, which dies now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(proxy.kill_if_used(0).await);

    let sb = tokio::time::timeout(Duration::from_secs(8), end_b)
        .await
        .expect("b waits for the grace")
        .unwrap()
        .unwrap();
    let sa = tokio::time::timeout(Duration::from_secs(8), end_a)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((sa.sent, sa.received), (8, 10));
    assert_eq!((sb.sent, sb.received, sb.resumes), (10, 8, 1));
    let events = collect(b_rx);
    assert!(
        matches!(
            &events[..],
            [
                ResumeEvent::LinkLost { .. },
                ResumeEvent::LinkRestored { replayed: 0, .. }
            ]
        ),
        "{events:?}"
    );
}
