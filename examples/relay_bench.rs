//! Helpers for `scripts/bench-relay`: an echo server, a request-reply latency client and a
//! many-connections client. Plain blocking std sockets, so the helpers add as little as possible
//! to what is measured.
//!
//! ```text
//! relay_bench echo [ADDR]                 echo server; prints `listening on ADDR` when ready
//! relay_bench rr ADDR [COUNT] [SIZE]      COUNT round trips of SIZE bytes; prints JSON (µs)
//! relay_bench hold ADDR COUNT             open COUNT connections, check each with a round
//!                                         trip, print JSON, hold them until stdin closes
//! relay_bench wait PORT [SECONDS]         wait until something listens on loopback PORT
//!                                         (reads /proc/net/tcp: connects to nothing)
//! relay_bench free-port                   print a free loopback port
//! ```

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let result = match arg(0) {
        Some("echo") => echo(arg(1).unwrap_or("127.0.0.1:0")),
        Some("rr") => rr(
            arg(1).expect("rr ADDR"),
            arg(2).map_or(20_000, |n| n.parse().expect("COUNT")),
            arg(3).map_or(64, |n| n.parse().expect("SIZE")),
        ),
        Some("hold") => hold(
            arg(1).expect("hold ADDR"),
            arg(2).expect("COUNT").parse().expect("COUNT"),
        ),
        Some("wait") => wait(
            arg(1).expect("wait PORT").parse().expect("PORT"),
            arg(2).map_or(10.0, |s| s.parse().expect("SECONDS")),
        ),
        Some("free-port") => TcpListener::bind("127.0.0.1:0").map(|l| {
            println!("{}", l.local_addr().unwrap().port());
        }),
        _ => {
            eprintln!("usage: relay_bench echo|rr|hold|wait|free-port ... (see the source)");
            std::process::exit(2);
        }
    };
    if let Err(err) = result {
        eprintln!("relay_bench: {err}");
        std::process::exit(1);
    }
}

fn addr(text: &str) -> io::Result<SocketAddr> {
    text.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {text}")))
}

/// One thread per connection, with small stacks: thousands of connections are fine.
fn echo(listen: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr(listen)?)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_nodelay(true);
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            })?;
    }
    Ok(())
}

/// Round trips on one connection; prints percentiles in microseconds.
fn rr(to: &str, count: usize, size: usize) -> io::Result<()> {
    let mut conn = TcpStream::connect(addr(to)?)?;
    conn.set_nodelay(true)?;
    let message = vec![7u8; size];
    let mut reply = vec![0u8; size];
    let mut times = Vec::with_capacity(count);
    let warmup = count / 10;
    for i in 0..count + warmup {
        let start = Instant::now();
        conn.write_all(&message)?;
        conn.read_exact(&mut reply)?;
        if i >= warmup {
            times.push(start.elapsed());
        }
    }
    times.sort();
    let us = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len() as f64;
    println!(
        "{{\"count\":{},\"size\":{size},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"mean_us\":{mean:.1}}}",
        times.len(),
        us(0.5),
        us(0.9),
        us(0.99)
    );
    Ok(())
}

/// Open `count` connections and check each with a round trip; all stay open until stdin closes.
fn hold(to: &str, count: usize) -> io::Result<()> {
    let to = addr(to)?;
    let mut open = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut first_error = String::new();
    let start = Instant::now();
    for i in 0..count {
        let attempt = (|| -> io::Result<TcpStream> {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let ping = (i as u32).to_be_bytes();
            conn.write_all(&ping)?;
            let mut pong = [0u8; 4];
            conn.read_exact(&mut pong)?;
            if pong != ping {
                return Err(io::Error::other("wrong echo"));
            }
            Ok(conn)
        })();
        match attempt {
            Ok(conn) => open.push(conn),
            Err(err) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = err.to_string();
                }
            }
        }
    }
    println!(
        "{{\"ok\":{},\"failed\":{failed},\"first_error\":\"{}\",\"seconds\":{:.3}}}",
        open.len(),
        first_error.replace('"', "'"),
        start.elapsed().as_secs_f64()
    );
    io::stdout().flush()?;
    // Hold until the caller closes our stdin.
    let mut line = String::new();
    while io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    // Every connection still works at the end.
    let mut dead = 0;
    for conn in &mut open {
        let alive = conn
            .write_all(b"ping")
            .and_then(|()| conn.read_exact(&mut [0u8; 4]));
        dead += usize::from(alive.is_err());
    }
    println!("{{\"still_open\":{},\"dead\":{dead}}}", open.len() - dead);
    Ok(())
}

/// Wait for a listening socket on `port`, without connecting (a probe connection would upset
/// servers such as iperf3).
fn wait(port: u16, seconds: f64) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    // /proc/net/tcp: `sl local_address rem_address st ...`, addresses as HEXIP:HEXPORT, and
    // state 0A is LISTEN.
    let listening = || {
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && fields[3] == "0A"
                        && fields[1]
                            .rsplit(':')
                            .next()
                            .and_then(|p| u16::from_str_radix(p, 16).ok())
                            == Some(port)
                })
        })
    };
    while !listening() {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on port {port}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
