//! `pvlaunch node`, the real binary, beside a fake pvserver (tests/fixtures/fake-pvserver.py) on
//! real loopback sockets. No sleeps: every wait is for a line, a connection or a process;
//! timeouts only turn a hang into a failure.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use pvlaunch::hop::node::{
    ERROR_MARKER, EXIT_UNREACHABLE, LISTENING_MARKER, OPEN_MARKER, REFUSED_MARKER, parse_listening,
};
use pvlaunch::hop::{Secret, preamble};
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Longest any single step may take before the test fails (the agent's own timeouts are 10 s
/// and 30 s; none of them should be reached here).
const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn fake_pvserver() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fake-pvserver.py")
        .display()
        .to_string()
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

/// A session key in a private file.
fn key_file(dir: &Path) -> (Secret, PathBuf) {
    let secret = Secret::generate();
    let path = dir.join("session.key");
    secret.write_new(&path).unwrap();
    (secret, path)
}

/// The lines of one output stream, as they arrive (also copied to the test's stderr).
struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn read(stream: impl AsyncRead + Unpin + Send + 'static, label: &'static str) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{label}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (seen before or arriving now) that `pred` accepts.
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        within(what, async {
            loop {
                match self.rx.recv().await {
                    Some(line) => {
                        self.seen.push(line.clone());
                        if pred(&line) {
                            return line;
                        }
                    }
                    None => panic!("output ended before {what}; saw {:#?}", self.seen),
                }
            }
        })
        .await
    }

    /// Every line up to the end of the stream.
    async fn rest(&mut self) -> &[String] {
        within("the end of the output", async {
            while let Some(line) = self.rx.recv().await {
                self.seen.push(line);
            }
        })
        .await;
        &self.seen
    }
}

/// The agent, running, with its output.
struct Agent {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    state: tempfile::TempDir,
}

impl Agent {
    /// `pvlaunch node --key-file KEY HOP... -- python3 FAKE --client-host=localhost
    /// --reverse-connection --state-dir=DIR FAKE_ARGS...`.
    fn start(key: &Path, hop: &[&str], fake_args: &[&str]) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvlaunch"));
        cmd.arg("node")
            .arg("--key-file")
            .arg(key)
            .args(hop)
            .arg("--")
            .arg("python3")
            .arg(fake_pvserver())
            .arg("--client-host=localhost")
            .arg("--reverse-connection")
            .arg(format!("--state-dir={}", state.path().display()))
            .args(fake_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start pvlaunch node");
        let stdout = Lines::read(child.stdout.take().unwrap(), "stdout");
        let stderr = Lines::read(child.stderr.take().unwrap(), "stderr");
        Agent {
            child,
            stdout,
            stderr,
            state,
        }
    }

    async fn wait(&mut self) -> ExitStatus {
        within("the agent's exit", self.child.wait()).await.unwrap()
    }

    /// The fake pvserver's pid and its helper's (written before it connects).
    fn fake_pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.state.path().join("pids")).expect("pids file");
        text.lines().map(|l| l.parse().unwrap()).collect()
    }

    fn fake_done(&self) -> Option<String> {
        std::fs::read_to_string(self.state.path().join("done")).ok()
    }
}

/// Wait until a process has exited (it may stay a zombie if nobody reaps it): its pidfd turns
/// readable. A signalled process dies a moment after kill(2) returns.
async fn gone(pid: u32) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ESRCH),
            "pidfd_open({pid}): {err}"
        );
        return;
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the descriptor is owned by the AsyncFd alone and closed only when it is dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .unwrap();
    let what = format!("process {pid} of pvserver's group to exit");
    let _ = within(&what, fd.readable()).await.unwrap();
}

/// Read the fake pvserver's greeting, echo `len` random bytes through it both ways, half-close
/// and see the end of its stream.
async fn echo_through<S>(stream: &mut S, len: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut hello = [0u8; 14];
    within(
        "the fake pvserver's greeting",
        stream.read_exact(&mut hello),
    )
    .await
    .unwrap();
    assert_eq!(&hello, b"FAKE-PVSERVER\n");
    let data = random(len);
    let (mut r, mut w) = tokio::io::split(stream);
    let sent = data.clone();
    let writer = async move {
        w.write_all(&sent).await.unwrap();
        // Half-close: the fake sees the end, finishes echoing and closes its side.
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = within("the echo", async { tokio::join!(writer, reader) }).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echo differs");
}

/// An acceptor for `--to`: accepts one connection and runs the preamble with `secret`.
async fn accept_one(listener: &TcpListener, secret: &Secret) -> (TcpStream, Result<(), String>) {
    let (mut stream, _) = within("the agent's connection", listener.accept())
        .await
        .unwrap();
    let proved = within("the preamble", preamble::accept(&mut stream, secret))
        .await
        .map_err(|e| e.to_string());
    (stream, proved)
}

#[tokio::test]
async fn to_carries_the_stream_both_ways_and_exits_with_pvserver() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = key_file(dir.path());
    let acceptor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = acceptor.local_addr().unwrap().to_string();
    let mut agent = Agent::start(&key, &["--to", &to], &[]);

    let (mut stream, proved) = accept_one(&acceptor, &secret).await;
    proved.expect("the agent proves the key");
    echo_through(&mut stream, 300_000).await;

    let status = agent.wait().await;
    assert_eq!(status.code(), Some(0), "pvserver's status");
    let open = agent
        .stdout
        .until("the open line", |l| l.starts_with(OPEN_MARKER))
        .await;
    assert_eq!(open, format!("{OPEN_MARKER}pvserver <-> {to}"));
    assert_eq!(agent.fake_done().as_deref(), Some("echoed 300000\n"));
    // The fake saw its own port as the last word.
    agent
        .stdout
        .until("the fake's port", |l| l.starts_with("fake-pvserver: port "))
        .await;
}

#[tokio::test]
async fn to_a_unix_socket_carries_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = key_file(dir.path());
    let path = dir.path().join("hop.sock");
    let acceptor = tokio::net::UnixListener::bind(&path).unwrap();
    let to = format!("unix:{}", path.display());
    let mut agent = Agent::start(&key, &["--to", &to], &[]);

    let (mut stream, _) = within("the agent's connection", acceptor.accept())
        .await
        .unwrap();
    within("the preamble", preamble::accept(&mut stream, &secret))
        .await
        .expect("the agent proves the key");
    echo_through(&mut stream, 50_000).await;
    assert_eq!(agent.wait().await.code(), Some(0));
    let open = agent
        .stdout
        .until("the open line", |l| l.starts_with(OPEN_MARKER))
        .await;
    assert_eq!(open, format!("{OPEN_MARKER}pvserver <-> {to}"));
}

#[tokio::test]
async fn to_an_endpoint_with_another_key_is_an_error_and_stops_pvserver() {
    let dir = tempfile::tempdir().unwrap();
    let (_secret, key) = key_file(dir.path());
    let acceptor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = acceptor.local_addr().unwrap().to_string();
    let mut agent = Agent::start(&key, &["--to", &to], &["--with-child"]);

    let (stream, proved) = accept_one(&acceptor, &Secret::generate()).await;
    assert!(proved.is_err(), "the agent's key is not this acceptor's");
    drop(stream);

    let status = agent.wait().await;
    assert_eq!(status.code(), Some(i32::from(EXIT_UNREACHABLE)));
    let error = agent
        .stderr
        .until("the error line", |l| l.starts_with(ERROR_MARKER))
        .await;
    assert!(
        error.contains(&to) && error.contains("authenticate"),
        "{error}"
    );
    assert!(
        !agent
            .stdout
            .rest()
            .await
            .iter()
            .any(|l| l.starts_with(OPEN_MARKER))
    );
    let pids = agent.fake_pids();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        gone(pid).await;
    }
    assert_eq!(agent.fake_done(), None);
}

#[tokio::test]
async fn to_an_endpoint_nobody_listens_on_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_secret, key) = key_file(dir.path());
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut agent = Agent::start(&key, &["--to", &to], &[]);
    let status = agent.wait().await;
    assert_eq!(status.code(), Some(i32::from(EXIT_UNREACHABLE)));
    let error = agent
        .stderr
        .until("the error line", |l| l.starts_with(ERROR_MARKER))
        .await;
    assert!(
        error.contains(&format!("cannot connect to {to}")),
        "{error}"
    );
    for pid in agent.fake_pids() {
        gone(pid).await;
    }
}

#[tokio::test]
async fn listen_accepts_only_the_key_and_a_silent_probe_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = key_file(dir.path());
    let mut agent = Agent::start(&key, &["--listen", "0"], &["--exit-code=5"]);

    let line = agent
        .stdout
        .until("the listening line", |l| l.starts_with(LISTENING_MARKER))
        .await;
    let (host, port) = parse_listening(&line).expect("HOST:PORT");
    assert_eq!(
        host,
        pvlaunch::profile::hostname(),
        "every interface: the node's name"
    );
    assert_ne!(port, 0);
    let addr = format!("127.0.0.1:{port}");

    // A probe that connects and then says nothing: the agent greets it and waits.
    let mut probe = TcpStream::connect(&addr).await.unwrap();
    let mut greeting = [0u8; preamble::GREETING_LEN];
    within("the probe's greeting", probe.read_exact(&mut greeting))
        .await
        .unwrap();

    // Another key: refused, and logged.
    let mut wrong = TcpStream::connect(&addr).await.unwrap();
    let refused = within(
        "the wrong key's preamble",
        preamble::connect(&mut wrong, &Secret::generate()),
    )
    .await;
    assert!(refused.is_err());
    agent
        .stderr
        .until("the refusal", |l| {
            l.starts_with("pvlaunch-node: refused 127.0.0.1:") && l.contains("key")
        })
        .await;

    // The right key gets pvserver's stream, while the probe still holds its connection.
    let mut right = TcpStream::connect(&addr).await.unwrap();
    within("the preamble", preamble::connect(&mut right, &secret))
        .await
        .expect("the agent proves the key");
    let open = agent
        .stdout
        .until("the open line", |l| l.starts_with(OPEN_MARKER))
        .await;
    assert_eq!(
        open,
        format!("{OPEN_MARKER}pvserver <-> {}", right.local_addr().unwrap())
    );
    // The listener is closed and the probe dropped once one connection proved the key.
    assert!(TcpStream::connect(&addr).await.is_err());
    let mut rest = Vec::new();
    let _ = within("the probe's end", probe.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());

    echo_through(&mut right, 100_000).await;
    let status = agent.wait().await;
    assert_eq!(status.code(), Some(5), "pvserver's status passes through");
}

#[tokio::test]
async fn another_users_connection_to_the_loopback_port_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "\n*** SKIPPED another_users_connection_to_the_loopback_port_is_refused: needs root to connect as another uid ***\n"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test must run (as root) in CI"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = key_file(dir.path());
    let fifo = dir.path().join("go");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let acceptor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = acceptor.local_addr().unwrap().to_string();
    let go = format!("--go-fifo={}", fifo.display());
    let mut agent = Agent::start(&key, &["--to", &to], &[&go]);

    // The fake names the port, then waits for the go.
    let line = agent
        .stdout
        .until("the fake's port", |l| l.starts_with("fake-pvserver: port "))
        .await;
    let port: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();

    // uid 65534 connects first: closed at once.
    let intruder = Command::new("python3")
        .arg("-c")
        .arg(
            // Everything imported before the uid changes (root's Python may be unreadable), the
            // socket made after it (its owner is its creator).
            "import encodings.idna, os, socket, sys\n\
             os.setgroups([]); os.setgid(65534); os.setuid(65534)\n\
             s = socket.socket()\n\
             s.connect((b'127.0.0.1', int(sys.argv[1])))\n\
             print('connected', flush=True)\n\
             try:\n    d = s.recv(1)\nexcept ConnectionResetError:\n    d = b''\n\
             print('closed' if not d else 'data', flush=True)\n",
        )
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = within("the intruder", intruder).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "connected\nclosed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent
        .stderr
        .until("the refusal", |l| l == format!("{REFUSED_MARKER}65534"))
        .await;

    // Now the real pvserver connects and gets through.
    let fifo_path = fifo.clone();
    tokio::task::spawn_blocking(move || std::fs::write(fifo_path, b"go\n"))
        .await
        .unwrap()
        .unwrap();
    let (mut stream, proved) = accept_one(&acceptor, &secret).await;
    proved.unwrap();
    echo_through(&mut stream, 10_000).await;
    assert_eq!(agent.wait().await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_stops_pvserver_and_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, key) = key_file(dir.path());
    let acceptor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = acceptor.local_addr().unwrap().to_string();
    let mut agent = Agent::start(&key, &["--to", &to], &["--with-child"]);
    let (_stream, proved) = accept_one(&acceptor, &secret).await;
    proved.unwrap();
    agent
        .stdout
        .until("the open line", |l| l.starts_with(OPEN_MARKER))
        .await;

    let pids = agent.fake_pids();
    let pid = agent.child.id().unwrap() as libc::pid_t;
    // SAFETY: signalling our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = agent.wait().await;
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    for pid in pids {
        gone(pid).await;
    }
}

#[tokio::test]
async fn pvserver_exiting_before_it_connects_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_secret, key) = key_file(dir.path());
    let acceptor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = acceptor.local_addr().unwrap().to_string();
    for (fail, code) in [(4, 4), (0, i32::from(EXIT_UNREACHABLE))] {
        let fail_arg = format!("--fail={fail}");
        let mut agent = Agent::start(&key, &["--to", &to], &[&fail_arg]);
        assert_eq!(agent.wait().await.code(), Some(code));
        agent
            .stderr
            .until("the error line", |l| {
                l == format!("{ERROR_MARKER}pvserver exited (status {fail}) before it connected")
            })
            .await;
    }
}

#[tokio::test]
async fn an_exposed_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_secret, key) = key_file(dir.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut agent = Agent::start(&key, &["--to", "127.0.0.1:9"], &[]);
    assert_eq!(agent.wait().await.code(), Some(2));
    let error = agent
        .stderr
        .until("the error line", |l| l.starts_with(ERROR_MARKER))
        .await;
    assert!(error.contains("readable or writable by others"), "{error}");
    assert!(
        !agent.state.path().join("pids").exists(),
        "pvserver must not start"
    );
}
