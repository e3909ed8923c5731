//! `pvlaunch channel serve`, the real binary, over its own stdio (no ssh needed), driven by
//! [`Channel`] in this process and by `pvlaunch channel exec` children. Every wait is bounded:
//! a timeout turns a hang into a failure.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pvlaunch::channel::proto::{self, Frame, Kind, MAX_PAYLOAD};
use pvlaunch::channel::{Channel, ChannelError, EXIT_GONE, Forward, bootstrap_script, exec_argv};
use pvlaunch::ssh::{MASTER_GONE, RemoteCommand, STDOUT_LIMIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_pvlaunch");
const STEP: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(20);

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn serve_cmd(linger: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["channel", "serve", "--linger", linger])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The server as a child, and a channel over its stdio. Its stderr (the log) is collected.
async fn start(linger: &str) -> (Child, Channel, tokio::task::JoinHandle<String>) {
    let mut child = serve_cmd(linger).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s).await;
        s
    });
    let ch = within(
        "the hello",
        Channel::start(child.stdout.take().unwrap(), child.stdin.take().unwrap()),
    )
    .await
    .unwrap();
    (child, ch, log)
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .chars()
                .next();
            state != Some('Z')
        }
        Err(_) => false,
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_pid(path: &Path) -> u32 {
    wait_until("the command wrote its pid", STEP, || {
        std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_feeds_stdin_and_returns_output_and_status() {
    let (_child, ch, _log) = start("2s").await;
    assert_eq!(ch.peer_version(), env!("CARGO_PKG_VERSION"));
    let out = ch
        .exec("cat; echo oops >&2; exit 3", Some(b"hello\n"), T)
        .await
        .unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(3), "hello\n", "oops\n")
    );
    // Quoting survives: the wire form is what the login node's shell reads.
    let out = ch
        .exec("printf '%s|' 'a b' \"$HOME\"", None, T)
        .await
        .unwrap();
    assert_eq!(
        out.stdout,
        format!("a b|{}|", std::env::var("HOME").unwrap())
    );
    // No stdin: end of input at once.
    assert_eq!(ch.exec("wc -c", None, T).await.unwrap().stdout.trim(), "0");
    // Several windows' worth of stdin and stdout.
    let big = vec![b'x'; 3_000_000];
    assert_eq!(
        ch.exec("wc -c", Some(&big), T).await.unwrap().stdout.trim(),
        "3000000"
    );
    let out = ch.exec("head -c 5000000 /dev/zero", None, T).await.unwrap();
    assert_eq!(out.stdout.len(), STDOUT_LIMIT);
    assert_eq!(out.stdout_dropped, 5_000_000 - STDOUT_LIMIT as u64);
    // Killed by a signal: no code.
    let out = ch.exec("kill -9 $$", None, T).await.unwrap();
    assert_eq!(out.code, None);
    // A timeout stops the command.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pidfile.display());
    let err = ch
        .exec(&script, None, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Timeout { .. }), "{err}");
    let pid = read_pid(&pidfile).await;
    wait_until("the timed-out command was stopped", STEP, || !alive(pid)).await;
    // The same RemoteCommand as the master's.
    let rc = RemoteCommand::new("echo $((6 * 7))");
    assert_eq!(ch.exec_command(&rc, None, T).await.unwrap().stdout, "42\n");
    // Too long for one frame: refused here, and the channel lives on.
    let long = format!(": {}", "x".repeat(MAX_PAYLOAD));
    let err = ch.exec(&long, None, T).await.unwrap_err();
    assert!(matches!(err, ChannelError::Refused { .. }), "{err}");
    assert_eq!(
        ch.exec("echo still", None, T).await.unwrap().stdout,
        "still\n"
    );
    ch.close().await;
    assert!(!ch.alive());
    let err = ch.exec("true", None, T).await.unwrap_err();
    assert!(matches!(err, ChannelError::Gone { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_running_commands_run_at_the_same_time() {
    let (_child, ch, _log) = start("2s").await;
    let started = Instant::now();
    let run = |n: u32| {
        let ch = ch.clone();
        async move {
            ch.exec(&format!("sleep 2; echo {n}"), None, T)
                .await
                .unwrap()
        }
    };
    let (a, b, c) = tokio::join!(run(1), run(2), run(3));
    assert_eq!(
        [a.stdout, b.stdout, c.stdout],
        ["1\n".to_string(), "2\n".into(), "3\n".into()]
    );
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// 64 MiB through a local forward (to a listener the login node reaches) while a heartbeat
/// goes through `pvlaunch channel exec` to a remote `cat` and back: every beat comes back
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_transfer_does_not_hold_up_the_heartbeat() {
    const TOTAL: usize = 64 * 1024 * 1024;
    let (_child, ch, _log) = start("2s").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = ch.serve_clients(dir.path()).unwrap();

    let argv = exec_argv(BIN, &socket, RemoteCommand::new("cat").wire());
    let mut beat = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut beat_in = beat.stdin.take().unwrap();
    let mut beat_out = BufReader::new(beat.stdout.take().unwrap()).lines();
    beat_in.write_all(b"first\n").await.unwrap();
    assert_eq!(
        within("the first beat", beat_out.next_line())
            .await
            .unwrap(),
        Some("first".into())
    );

    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let received = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            let got = s.read(&mut buf).await.unwrap();
            if got == 0 {
                break;
            }
            for (k, b) in buf[..got].iter().enumerate() {
                assert_eq!(*b, pattern(n + k), "byte {}", n + k);
            }
            n += got;
        }
        n
    });
    let local = ch.forward_local(0, "127.0.0.1", sink_port).await.unwrap();
    let sender = tokio::spawn(async move {
        let mut s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        let mut sent = 0;
        while sent < TOTAL {
            let c: Vec<u8> = (sent..sent + 1024 * 1024).map(pattern).collect();
            s.write_all(&c).await.unwrap();
            sent += c.len();
        }
        s.shutdown().await.unwrap();
        sent
    });

    let mut worst = Duration::ZERO;
    let mut beats_during = 0;
    let started = Instant::now();
    while !sender.is_finished() {
        let t = Instant::now();
        beat_in.write_all(b"beat\n").await.unwrap();
        let line = within("a beat", beat_out.next_line()).await.unwrap();
        assert_eq!(line.as_deref(), Some("beat"));
        worst = worst.max(t.elapsed());
        beats_during += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(within("the sender", sender).await.unwrap(), TOTAL);
    assert_eq!(within("the sink", received).await.unwrap(), TOTAL);
    eprintln!(
        "64 MiB in {:?}; {beats_during} beats, the slowest {worst:?}",
        started.elapsed()
    );
    assert!(beats_during >= 1);
    assert!(worst < Duration::from_secs(1), "a beat took {worst:?}");
    drop(beat_in);
    let status = within("the heartbeat command", beat.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forwards_carry_connections_to_a_local_port() {
    let (_child, ch, _log) = start("2s").await;
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_port = local.local_addr().unwrap().port();
    let echo = tokio::spawn(async move {
        loop {
            let (mut s, _) = local.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    // TCP, a port the login node picks.
    let port = ch.forward_remote_tcp(None, 0, local_port).await.unwrap();
    assert_ne!(port, 0);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"over tcp").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = String::new();
    within("the echo", s.read_to_string(&mut back))
        .await
        .unwrap();
    assert_eq!(back, "over tcp");

    // A Unix socket, mode 0600.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fwd.sock");
    let p = path.to_str().unwrap();
    ch.forward_remote_unix(p, local_port).await.unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut u = UnixStream::connect(&path).await.unwrap();
    u.write_all(b"over unix").await.unwrap();
    u.shutdown().await.unwrap();
    let mut back = String::new();
    within("the echo", u.read_to_string(&mut back))
        .await
        .unwrap();
    assert_eq!(back, "over unix");

    // A path that exists and is not a socket is refused, and left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, "keep").unwrap();
    let err = ch
        .forward_remote_unix(file.to_str().unwrap(), local_port)
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::Refused { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

    // Cancelled: the socket file goes, the port closes.
    ch.cancel(&Forward::RemoteUnix { path: p.into() })
        .await
        .unwrap();
    ch.cancel(&Forward::RemoteTcp { bind: None, port })
        .await
        .unwrap();
    wait_until("the socket file was removed", STEP, || !path.exists()).await;
    wait_until("the port was closed", STEP, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;

    // A local forward whose target the login node cannot reach closes each connection; a
    // cancelled one stops listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let lport = ch.forward_local(0, "127.0.0.1", closed_port).await.unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", lport)).await.unwrap();
    let mut buf = Vec::new();
    let n = within("the refused connection closes", c.read_to_end(&mut buf)).await;
    assert!(n.is_err() || buf.is_empty(), "{n:?} {buf:?}");
    ch.cancel(&Forward::Local { port: lport }).await.unwrap();
    wait_until("the local forward stopped listening", STEP, || {
        std::net::TcpStream::connect(("127.0.0.1", lport)).is_err()
    })
    .await;
    echo.abort();
}

/// Commands, listeners and sockets of a channel that ends: after a clean close, after the
/// server's SIGTERM, and after its SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_channel_leaves_no_process_and_no_socket() {
    for ending in ["close", "sigterm", "sigkill"] {
        let (mut child, ch, log) = start("2s").await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // A plain long command; and (not for SIGKILL, which only the command itself hears)
        // a background process of a command, and a command that ignores the hangup and does
        // not read its input: it is stopped after the linger time.
        let mut scripts = vec![format!("echo $$ > '{d}/sleep'; exec sleep 1000")];
        if ending != "sigkill" {
            scripts.push(format!("sleep 1000 & echo $! > '{d}/bg'; wait"));
            scripts.push(format!(
                "trap '' HUP; echo $$ > '{d}/stubborn'; exec sleep 1000"
            ));
        }
        let mut running = vec![];
        for s in &scripts {
            let ch = ch.clone();
            let s = s.clone();
            running.push(tokio::spawn(async move {
                ch.exec(&s, None, Duration::from_secs(3600)).await
            }));
        }
        let mut pids = vec![read_pid(&dir.path().join("sleep")).await];
        if ending != "sigkill" {
            pids.push(read_pid(&dir.path().join("bg")).await);
            pids.push(read_pid(&dir.path().join("stubborn")).await);
        }
        let sock = dir.path().join("fwd.sock");
        ch.forward_remote_unix(sock.to_str().unwrap(), 9)
            .await
            .unwrap();
        let port = ch.forward_remote_tcp(None, 0, 9).await.unwrap();
        assert!(sock.exists());
        for pid in &pids {
            assert!(alive(*pid), "{ending}: {pid} is not running yet");
        }

        let started = Instant::now();
        match ending {
            "close" => ch.close().await,
            "sigterm" => {
                let pid = child.id().unwrap();
                std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .unwrap();
            }
            _ => child.start_kill().unwrap(),
        }
        within("the channel's end is noticed", ch.closed()).await;
        for r in running {
            let r = within("the exec returns", r).await.unwrap();
            assert!(
                matches!(r, Err(ChannelError::Gone { .. })),
                "{ending}: {r:?}"
            );
        }
        for pid in &pids {
            wait_until(&format!("{ending}: process {pid} survived"), STEP, || {
                !alive(*pid)
            })
            .await;
        }
        let status = within("the server exits", child.wait()).await.unwrap();
        let log = log.await.unwrap();
        eprintln!("{ending}: everything gone after {:?}", started.elapsed());
        if ending == "sigkill" {
            // Nothing can remove it: a stale socket, replaced by the next listener there.
            continue;
        }
        assert!(status.success(), "{ending}: {status:?}\n{log}");
        assert!(!sock.exists(), "{ending}: the socket file is left\n{log}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{ending}: the port is still open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_exec_behaves_like_ssh_through_a_master() {
    let (_child, ch, _log) = start("2s").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = ch.serve_clients(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let run = |script: &str, input: &'static [u8], socket: &Path| {
        let argv = exec_argv(BIN, socket, RemoteCommand::new(script).wire());
        async move {
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            tokio::spawn(async move {
                let _ = stdin.write_all(input).await;
            });
            let out = within("channel exec", child.wait_with_output())
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    assert_eq!(
        run("tr a-z A-Z; echo warn >&2; exit 7", b"abc\n", &socket).await,
        (Some(7), "ABC\n".into(), "warn\n".into())
    );
    assert_eq!(run("exit 0", b"", &socket).await.0, Some(0));
    assert_eq!(run("kill -TERM $$", b"", &socket).await.0, Some(128 + 15));
    // 2 MB each way.
    static BIG: [u8; 2_000_000] = [b'y'; 2_000_000];
    let (code, out, _) = run("cat", &BIG, &socket).await;
    assert_eq!((code, out.len()), (Some(0), BIG.len()));

    // A socket with nobody behind it, and a channel that is gone: 255 and ssh's words.
    let nowhere = dir.path().join("nowhere.sock");
    let (code, _, err) = run("true", b"", &nowhere).await;
    assert_eq!(code, Some(i32::from(EXIT_GONE)));
    assert!(err.contains(MASTER_GONE), "{err}");
    ch.close().await;
    wait_until("the client socket is removed", STEP, || !socket.exists()).await;
    let (code, _, err) = run("true", b"", &socket).await;
    assert_eq!(code, Some(255));
    assert!(err.contains(MASTER_GONE), "{err}");
}

/// A `channel exec` that goes away (ssh killed, in today's terms) closes its command's
/// pipes: a command reading stdin sees its end, as the guard does when its ssh dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_dies_ends_its_commands_input() {
    let (_child, ch, _log) = start("2s").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = ch.serve_clients(dir.path()).unwrap();
    let done = dir.path().join("done");
    let script = format!("cat > /dev/null; echo eof > '{}'", done.display());
    let argv = exec_argv(BIN, &socket, RemoteCommand::new(&script).wire());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _keep_stdin_open = child.stdin.take().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!done.exists());
    child.start_kill().unwrap();
    let _ = child.wait().await;
    wait_until("the command saw the end of its input", STEP, || {
        done.exists()
    })
    .await;
    // The channel itself lives on.
    assert_eq!(ch.exec("echo ok", None, T).await.unwrap().stdout, "ok\n");
}

/// The server refuses what is not its protocol and says so on stderr, printing nothing but
/// its hello on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_refused_with_an_error() {
    let bad_frames: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not a hello",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            "channel protocol",
        ),
        (
            "unknown kind",
            [proto::hello("x"), vec![99]].concat(),
            "unknown frame kind 99",
        ),
        (
            "oversized",
            {
                let mut b = proto::hello("x");
                b.extend_from_slice(&[Kind::Data as u8, 0, 0, 0, 1]);
                b.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
                b
            },
            "the limit is",
        ),
        (
            "a server's stream id",
            [
                proto::hello("x"),
                Frame::Exec {
                    id: proto::SERVER_IDS,
                    script: "true".into(),
                }
                .to_bytes(),
            ]
            .concat(),
            "not its own",
        ),
        (
            "beyond the window",
            {
                let mut b = proto::hello("x");
                b.extend(
                    Frame::Exec {
                        id: 1,
                        script: "sleep 5".into(),
                    }
                    .to_bytes(),
                );
                for _ in 0..5 {
                    b.extend(
                        Frame::Stdin {
                            id: 1,
                            data: vec![0; MAX_PAYLOAD],
                        }
                        .to_bytes(),
                    );
                }
                b
            },
            "more than the window",
        ),
    ];
    for (what, bytes, says) in bad_frames {
        let mut child = serve_cmd("1s").spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&bytes).await.unwrap();
        // Left open: the refusal must come from the bytes, not from the end of input.
        let out = within(what, child.wait_with_output()).await.unwrap();
        drop(stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!(
            out.stdout,
            proto::hello(env!("CARGO_PKG_VERSION")),
            "{what}"
        );
    }
}

/// The session's end skips a login banner before the hello, and refuses a peer that is not a
/// channel server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_skips_a_banner_and_refuses_other_peers() {
    let spawn = |script: String| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut c = spawn(format!(
        "echo 'Welcome to the cluster'; exec '{BIN}' channel serve"
    ));
    let ch = within(
        "the hello",
        Channel::start(c.stdout.take().unwrap(), c.stdin.take().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(ch.exec("echo hi", None, T).await.unwrap().stdout, "hi\n");
    ch.close().await;

    // One that has closed its input and exited before the hello is written: what it said is
    // the error, not the broken pipe.
    let mut c = spawn("exec 0<&-; echo 'pvlaunch: command not found'".into());
    let (out, input) = (c.stdout.take().unwrap(), c.stdin.take().unwrap());
    let _ = within("the peer exits", c.wait()).await;
    let err = within("the refusal", Channel::start(out, input))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("command not found"), "{err}");
}

/// One `pvlaunch channel exec` of `wire` through `socket`, fed `input`: its exit status,
/// stdout and stderr.
async fn channel_exec(
    socket: &Path,
    wire: &str,
    input: Vec<u8>,
) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    let argv = exec_argv(BIN, socket, wire);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("channel exec timed out")
        .unwrap();
    (out.status.code(), out.stdout, out.stderr)
}

/// Many `channel exec` runs, eight at a time, beside the other tests: 2 MB each way (a
/// pattern, so a lost or reordered chunk shows), stderr beside stdout, exit codes and
/// signals. A finished command is never reported as a gone channel, and no byte is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channel_execs_at_once_lose_no_byte_and_no_status() {
    const RUNS: usize = 120;
    const AT_ONCE: usize = 8;
    const BIG: usize = 2_000_000;
    let (_child, ch, _log) = start("2s").await;
    let dir = tempfile::tempdir().unwrap();
    let socket = ch.serve_clients(dir.path()).unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..RUNS {
        let socket = socket.clone();
        let gate = std::sync::Arc::clone(&gate);
        runs.spawn(async move {
            let _turn = gate.acquire_owned().await.unwrap();
            let big: Vec<u8> = (0..BIG).map(|k| pattern(k + i)).collect();
            // (script, stdin, expected code, stdout, stderr)
            let (script, input, code, out, err): (&str, Vec<u8>, i32, Vec<u8>, &str) = match i % 6 {
                0 => ("cat", big.clone(), 0, big, ""),
                1 => (
                    "cat; echo done >&2; exit 42",
                    big.clone(),
                    42,
                    big,
                    "done\n",
                ),
                2 => (
                    "tr a-z A-Z; echo warn >&2; exit 7",
                    b"abc\n".to_vec(),
                    7,
                    b"ABC\n".to_vec(),
                    "warn\n",
                ),
                3 => ("kill -TERM $$", Vec::new(), 128 + 15, Vec::new(), ""),
                4 => (
                    "cat >&2; exit 3",
                    big[..300_000].to_vec(),
                    3,
                    Vec::new(),
                    "",
                ),
                _ => ("echo ok", Vec::new(), 0, b"ok\n".to_vec(), ""),
            };
            let wire = RemoteCommand::new(script).wire().to_owned();
            let (got_code, got_out, raw_err) = channel_exec(&socket, &wire, input.clone()).await;
            let got_err = String::from_utf8_lossy(&raw_err);
            assert_eq!(
                got_code,
                Some(code),
                "run {i} `{script}`: stderr {got_err:?}"
            );
            assert!(
                got_out == out,
                "run {i} `{script}`: stdout {} bytes, {} expected, first difference at {:?}; \
                 stderr {got_err:?}",
                got_out.len(),
                out.len(),
                got_out.iter().zip(&out).position(|(a, b)| a != b)
            );
            if i % 6 == 4 {
                assert!(raw_err == input, "run {i}: stderr {} bytes", raw_err.len());
            } else {
                assert_eq!(got_err, err, "run {i} `{script}`");
            }
        });
    }
    while let Some(r) = runs.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    assert_eq!(
        ch.exec("echo alive", None, T).await.unwrap().stdout,
        "alive\n"
    );
}

/// `/bin/sh -c BOOTSTRAP` as the login node's end (no ssh), with `home` as its HOME and no
/// pvlaunch on its PATH, and a channel started over it with `binary` as the copy to send.
async fn bootstrap(
    home: &Path,
    sum: &str,
    size: u64,
    binary: &Path,
) -> (Child, Result<Channel, ChannelError>) {
    let script = bootstrap_script(env!("CARGO_PKG_VERSION"), sum, size);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ch = within(
        "the bootstrap",
        Channel::start_bootstrapped(
            child.stdout.take().unwrap(),
            child.stdin.take().unwrap(),
            binary,
            STEP,
        ),
    )
    .await;
    (child, ch)
}

/// The first start finds no pvlaunch and sends this one over the session's stdin (a private
/// file, checked, renamed onto the versioned name); the second finds that copy and sends
/// nothing. A copy that does not match its checksum, and a folder that is a symbolic link,
/// are refused with the script's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_uploads_a_missing_pvlaunch_once() {
    let home = tempfile::tempdir().unwrap();
    let (bytes, sum) = pvlaunch::remote::read_and_hash(BIN.into()).await.unwrap();
    let size = bytes.len() as u64;
    let bin = home.path().join(".cache/pvlaunch/bin");
    let copy = bin.join(pvlaunch::remote::binary_name(&sum));

    // A wrong checksum: nothing is kept.
    let small = home.path().join("small");
    std::fs::write(&small, b"not pvlaunch\n").unwrap();
    let (mut child, err) = bootstrap(home.path(), &"0".repeat(64), 13, &small).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, ChannelError::Refused { message, .. } if message.contains("SHA-256")),
        "{err}"
    );
    assert_eq!(child.wait().await.unwrap().code(), Some(3));
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 0, "left behind");
    for p in [home.path().join(".cache/pvlaunch"), bin.clone()] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700,
            "{}",
            p.display()
        );
    }

    // The upload.
    let (_child, ch) = bootstrap(home.path(), &sum, size, Path::new(BIN)).await;
    let ch = ch.unwrap();
    assert_eq!(ch.peer_version(), env!("CARGO_PKG_VERSION"));
    let meta = std::fs::symlink_metadata(&copy).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes, "the copy is intact");
    assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 1, "one file");
    // The server is the copy.
    let out = ch.exec("readlink /proc/$PPID/exe", None, T).await.unwrap();
    assert_eq!(out.stdout.trim(), copy.display().to_string());
    ch.close().await;

    // The copy is found: nothing is sent (the file given does not even exist).
    let before = std::fs::metadata(&copy).unwrap().modified().unwrap();
    let (_child, ch) = bootstrap(home.path(), &sum, size, Path::new("/nonexistent")).await;
    let ch = ch.unwrap();
    assert_eq!(
        ch.exec("echo again", None, T).await.unwrap().stdout,
        "again\n"
    );
    ch.close().await;
    assert_eq!(
        std::fs::metadata(&copy).unwrap().modified().unwrap(),
        before
    );

    // A `bin` folder that is a symbolic link is not used, and not written to.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(other.path().join(".cache/pvlaunch")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), other.path().join(".cache/pvlaunch/bin")).unwrap();
    let (_child, err) = bootstrap(other.path(), &sum, size, Path::new("/nonexistent")).await;
    let err = err.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}
