//! Kept allocations: the node agent's `--serve-again` mode, the real binary beside the fake
//! pvserver (tests/fixtures/fake-pvserver.py) on real loopback sockets. No sleeps: every wait
//! is for a line, a connection or a process; timeouts only turn a hang into a failure.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use pvlaunch::hop::node::{AGAIN_MARKER, IDLE_MARKER, OPEN_MARKER, parse_listening};
use pvlaunch::hop::{Secret, preamble};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{ChildStdout, Command};

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn until(lines: &mut Lines<BufReader<ChildStdout>>, what: &str, prefix: &str) -> String {
    within(what, async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(line) if line.starts_with(prefix) => return line,
                Some(line) => eprintln!("[stdout] {line}"),
                None => panic!("output ended before {what}"),
            }
        }
    })
    .await
}

/// Attach as a client would: connect, prove the key, read the fake's greeting, echo a few
/// bytes and close; the fake pvserver exits after that.
async fn attach(port: u16, secret: &Secret) {
    let mut stream = within("connect", TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    within("the preamble", preamble::connect(&mut stream, secret))
        .await
        .expect("the agent takes the key");
    let mut hello = [0u8; 14];
    within("the greeting", stream.read_exact(&mut hello))
        .await
        .unwrap();
    assert_eq!(&hello, b"FAKE-PVSERVER\n");
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("the echo", stream.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, b"ping");
}

#[tokio::test]
async fn serve_again_serves_one_attach_after_another_then_stops_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let secret = Secret::generate();
    let key = dir.path().join("session.key");
    secret.write_new(&key).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .arg("node")
        .arg("--key-file")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0", "--serve-again", "--idle", "3s"])
        .arg("--")
        .arg("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-pvserver.py"))
        .arg("--client-host=localhost")
        .arg("--reverse-connection")
        .arg(format!("--state-dir={}", state.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = until(
        &mut lines,
        "the listening line",
        "pvlaunch-node: listening: ",
    )
    .await;
    let (_, port) = parse_listening(&listening).unwrap();

    attach(port, &secret).await;
    until(&mut lines, "the first open line", OPEN_MARKER).await;
    // A wrong key is refused, and the next attach still works.
    let again = until(&mut lines, "a fresh pvserver", AGAIN_MARKER).await;
    assert_eq!(again, format!("{AGAIN_MARKER}2"));
    let mut wrong = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(
        preamble::connect(&mut wrong, &Secret::generate())
            .await
            .is_err()
    );
    attach(port, &secret).await;
    until(&mut lines, "the second open line", OPEN_MARKER).await;
    until(&mut lines, "the third pvserver", AGAIN_MARKER).await;

    // Nobody attaches within --idle: the agent stops pvserver and exits 0.
    let idle = until(&mut lines, "the idle line", IDLE_MARKER).await;
    assert!(idle.contains("3 s"), "{idle}");
    let status = within("the agent's exit", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}
