//! Throughput and round-trip time of a resumable stream (`pvlaunch::resume::carry` at both ends
//! of a TCP carrier) against the plain relay copy (`pvlaunch::relay::bridge` at both ends), in
//! the same run, on loopback:
//!
//! ```text
//! client -> [forwarder A] -> carrier (TCP) -> [forwarder B] -> server
//! ```
//!
//! The client and the server are blocking threads; the forwarders run on a 2-thread tokio
//! runtime. The paths take turns (`--repeat` rounds); the figures are medians. Round trips
//! go over both paths at once, one message on each in turn (the order swapped every time), so
//! that the machine's load falls on both alike; p50 and p99 are over all rounds.
//!
//! ```text
//! cargo run --release --example resume_bench -- [--mib N] [--repeat N] [--rr N]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::time::Instant;

use pvlaunch::relay::{CopyMode, Stream, bridge};
use pvlaunch::resume::{Carrier, Options, Token, carry};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Bridge,
    Carry,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let mib = opt("--mib", 2048);
    let repeat = opt("--repeat", 5);
    let rr_count = opt("--rr", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut tput = [vec![], vec![]];
    let mut rtt: [Vec<f64>; 2] = [vec![], vec![]];
    let mut ratios = vec![];
    for round in 0..repeat {
        let mut this = [0.0; 2];
        for (i, path) in [Path::Bridge, Path::Carry].into_iter().enumerate() {
            let gbit = rt.block_on(throughput(path, mib));
            eprintln!("round {round}: {path:?}: {gbit:.2} Gbit/s");
            tput[i].push(gbit);
            this[i] = gbit;
        }
        ratios.push(this[1] / this[0]);
        let [b, c] = rt.block_on(round_trips(rr_count));
        eprintln!(
            "round {round}: round trip p50 bridge {:.1} µs, carry {:.1} µs",
            quantile(&mut b.clone(), 0.5),
            quantile(&mut c.clone(), 0.5)
        );
        rtt[0].extend(b);
        rtt[1].extend(c);
    }
    let (tb, tc) = (quantile(&mut tput[0], 0.5), quantile(&mut tput[1], 0.5));
    let ratio = quantile(&mut ratios, 0.5);
    let [(b50, b99), (c50, c99)] = rtt.map(|mut v| (quantile(&mut v, 0.5), quantile(&mut v, 0.99)));
    println!(
        "resumable stream vs plain relay copy: loopback, {mib} MiB one way per run, \
         {rr_count} round trips of 64 bytes per path and round (interleaved), {repeat} rounds"
    );
    println!(
        "{:<20} {:>10} {:>12} {:>12}",
        "path", "Gbit/s", "RTT p50 µs", "RTT p99 µs"
    );
    println!(
        "{:<20} {tb:>10.2} {b50:>12.1} {b99:>12.1}",
        "bridge -> bridge"
    );
    println!(
        "{:<20} {tc:>10.2} {c50:>12.1} {c99:>12.1}",
        "carry -> carry"
    );
    println!(
        "throughput carry/bridge: median of the rounds' ratios {ratio:.2} (of the medians {:.2}); \
         round trip added by carry: p50 {:+.1} µs, p99 {:+.1} µs",
        tc / tb,
        c50 - b50,
        c99 - b99
    );
}

/// The `q` quantile of `v` (sorts it).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Start the two forwarders for one connection from the client to `server`; returns the
/// address the client connects to.
async fn forwarders(path: Path, server: SocketAddr) -> SocketAddr {
    let entry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (entry_addr, hop_addr) = (entry.local_addr().unwrap(), hop.local_addr().unwrap());
    let token = Token::generate();
    let never = || std::future::pending::<Option<Carrier<TcpStream>>>();
    // A: the client's side.
    tokio::spawn(async move {
        let (client, _) = entry.accept().await.unwrap();
        let carrier = TcpStream::connect(hop_addr).await.unwrap();
        match path {
            Path::Bridge => {
                bridge(client.into(), carrier.into(), CopyMode::Auto)
                    .await
                    .unwrap();
            }
            Path::Carry => {
                client.set_nodelay(true).unwrap();
                carrier.set_nodelay(true).unwrap();
                let c = Carrier::new(carrier);
                carry(client, c, never, token, Options::default(), None)
                    .await
                    .unwrap();
            }
        }
    });
    // B: the server's side.
    tokio::spawn(async move {
        let (carrier, _) = hop.accept().await.unwrap();
        let target = TcpStream::connect(server).await.unwrap();
        match path {
            Path::Bridge => {
                let _: (u64, u64) =
                    bridge(Stream::Tcp(carrier), Stream::Tcp(target), CopyMode::Auto)
                        .await
                        .unwrap();
            }
            Path::Carry => {
                carrier.set_nodelay(true).unwrap();
                target.set_nodelay(true).unwrap();
                let c = Carrier::new(carrier);
                carry(target, c, never, token, Options::default(), None)
                    .await
                    .unwrap();
            }
        }
    });
    entry_addr
}

/// Gbit/s of `mib` MiB from the client to a server that discards them; timed until the end of
/// stream has come back (the server closes after reading everything).
async fn throughput(path: Path, mib: usize) -> f64 {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let server_addr = server.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => total += n as u64,
            }
        }
        total
    });
    let entry = forwarders(path, server_addr).await;
    let bytes = mib << 20;
    let client = std::thread::spawn(move || {
        let mut c = StdStream::connect(entry).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            c.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        start.elapsed()
    });
    let elapsed = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(sink.join().unwrap(), bytes as u64);
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

/// Round trips (µs) of 64-byte messages through an echo server, over both paths at once: one
/// message on each in turn, the order swapped every time.
async fn round_trips(count: usize) -> [Vec<f64>; 2] {
    let mut entries = vec![];
    for path in [Path::Bridge, Path::Carry] {
        let server = StdListener::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        entries.push(forwarders(path, server_addr).await);
    }
    tokio::task::spawn_blocking(move || {
        let mut conns: Vec<StdStream> = entries
            .iter()
            .map(|e| {
                let c = StdStream::connect(e).unwrap();
                c.set_nodelay(true).unwrap();
                c
            })
            .collect();
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        let mut times = [Vec::with_capacity(count), Vec::with_capacity(count)];
        for i in 0..count + count / 10 {
            for k in 0..2 {
                let p = (i + k) % 2;
                let c = &mut conns[p];
                let start = Instant::now();
                c.write_all(&msg).unwrap();
                c.read_exact(&mut back).unwrap();
                if i >= count / 10 {
                    times[p].push(start.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        for c in &mut conns {
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = c.read_to_end(&mut Vec::new());
        }
        times
    })
    .await
    .unwrap()
}
