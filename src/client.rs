//! The local ParaView client: which one, how to start it, and how to know it listens.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

use crate::process::{self, Kind};

/// `--client` as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `none` under ParaView, otherwise `paraview` if installed.
    Auto,
    /// Start the ParaView GUI.
    Paraview,
    /// Run a pvpython script (with its arguments) that uses the connection.
    Pvpython(PathBuf, Vec<String>),
    /// Someone else starts a client; wait until it listens.
    Wait,
    /// ParaView started pvlaunch and already listens.
    None,
}

/// The client mode after `auto` is decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    Paraview {
        program: String,
    },
    Pvpython {
        program: String,
        script: PathBuf,
        args: Vec<String>,
    },
    Wait,
    None,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Paraview { .. } => "paraview",
            Mode::Pvpython { .. } => "pvpython",
            Mode::Wait => "wait",
            Mode::None => "none",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no ParaView client found: `paraview` is not on PATH")]
    NoParaview,
    #[error("`pvpython` is not on PATH")]
    NoPvpython,
    #[error("the pvpython script {0} does not exist")]
    NoScript(PathBuf),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}

impl ClientError {
    pub fn hint(&self) -> &'static str {
        match self {
            ClientError::NoParaview => {
                "install ParaView (e.g. `apt install paraview`), or choose --client=pvpython SCRIPT, --client=wait (start the client yourself) or --client=none (run from ParaView's Connect dialog)"
            }
            ClientError::NoPvpython => {
                "install ParaView's Python (e.g. `apt install python3-paraview`)"
            }
            ClientError::NoScript(_) => {
                "give the path of a Python script that uses paraview.simple"
            }
            ClientError::Spawn { .. } => "check that the client program runs on its own",
        }
    }
}

/// ParaView exports its variables to the command it runs: their presence means pvlaunch runs
/// under ParaView's Connect dialog.
pub fn started_by_paraview(env: &BTreeMap<String, String>) -> bool {
    env.contains_key("PV_CONNECTION_URI") || env.contains_key("PV_CONNECTION_SCHEME")
}

/// Decide the mode. `find` looks a program up on PATH.
pub fn decide(
    request: &Request,
    env: &BTreeMap<String, String>,
    find: impl Fn(&str) -> Option<String>,
) -> Result<Mode, ClientError> {
    match request {
        Request::Auto if started_by_paraview(env) => Ok(Mode::None),
        Request::Auto | Request::Paraview => find("paraview")
            .map(|program| Mode::Paraview { program })
            .ok_or(ClientError::NoParaview),
        Request::Pvpython(script, args) => {
            if !script.is_file() {
                return Err(ClientError::NoScript(script.clone()));
            }
            let program = find("pvpython").ok_or(ClientError::NoPvpython)?;
            Ok(Mode::Pvpython {
                program,
                script: script.clone(),
                args: args.clone(),
            })
        }
        Request::Wait => Ok(Mode::Wait),
        Request::None => Ok(Mode::None),
    }
}

/// The URL the client uses: it listens (`csrc://`) or connects (`cs://`).
pub fn url(reverse: bool, port: u16) -> String {
    if reverse {
        format!("csrc://localhost:{port}")
    } else {
        format!("cs://localhost:{port}")
    }
}

/// The client's argv for a mode, or `None` when pvlaunch starts nothing.
pub fn argv(mode: &Mode, url: &str, connect_id: Option<u32>) -> Option<Vec<String>> {
    let mut a = match mode {
        // The GUI listens (or connects) by itself with --url.
        Mode::Paraview { program } => vec![program.clone(), format!("--url={url}")],
        // pvpython 5.11 ignores --url for reverse connections: the script connects, told
        // where by PVLAUNCH_URL / PVLAUNCH_PORT in its environment.
        Mode::Pvpython { program, .. } => {
            vec![program.clone(), "--force-offscreen-rendering".into()]
        }
        Mode::Wait | Mode::None => return None,
    };
    if let Some(id) = connect_id {
        a.push(format!("--connect-id={id}"));
    }
    if let Mode::Pvpython { script, args, .. } = mode {
        a.push(script.display().to_string());
        a.extend(args.iter().cloned());
    }
    Some(a)
}

/// Where the client's stdout goes. Its stderr always goes to pvlaunch's stderr.
#[derive(Debug)]
pub enum ClientStdout {
    /// pvlaunch's own stdout (fine for a person at a terminal).
    Inherit,
    /// pvlaunch's stderr, so that stdout carries only pvlaunch's output (`--json`: NDJSON
    /// only; pvpython prints `Accepting connection(s)` on its stdout).
    Stderr,
    /// A log file.
    File(std::fs::File),
}

impl ClientStdout {
    fn stdio(self) -> Stdio {
        match self {
            ClientStdout::Inherit => Stdio::inherit(),
            ClientStdout::Stderr => Stdio::from(std::io::stderr()),
            ClientStdout::File(f) => Stdio::from(f),
        }
    }
}

/// Start the client in its own process group; its stdout and stderr go to pvlaunch's
/// stderr (stdout is pvlaunch's own: NDJSON with `--json`).
pub fn start(argv: &[String], env: &[(String, String)]) -> Result<Child, ClientError> {
    start_with_stdout(argv, env, ClientStdout::Stderr)
}

/// [`start`], with the client's stdout going where `stdout` says.
pub fn start_with_stdout(
    argv: &[String],
    env: &[(String, String)],
    stdout: ClientStdout,
) -> Result<Child, ClientError> {
    let mut cmd = process::command(argv, Kind::Group);
    cmd.stdout(stdout.stdio()).stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().map_err(|source| ClientError::Spawn {
        program: argv[0].clone(),
        source,
    })
}

/// Whether a client could listen on TCP `port`: binding it works on every address ParaView
/// may listen on (any and loopback, IPv4 and IPv6; an address family this machine lacks does
/// not count). Check before starting a client: when the port is taken, ParaView listens
/// elsewhere and the other program's socket would look like the client's.
pub fn port_free(port: u16) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
    [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .iter()
    .all(|ip| match TcpListener::bind((*ip, port)) {
        Ok(_) => true,
        Err(e) => {
            e.kind() == std::io::ErrorKind::AddrNotAvailable
                || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
        }
    })
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub address: std::net::IpAddr,
    pub port: u16,
    pub listening: bool,
    /// The socket's inode (0 when the row has none), matched against `/proc/PID/fd` links.
    pub inode: u64,
}

/// Parse `/proc/net/tcp` and `/proc/net/tcp6` text (headers are skipped).
pub fn parse_proc_net_tcp(text: &str) -> Vec<Socket> {
    crate::hop::peer::parse(text)
        .into_iter()
        .map(|r| Socket {
            address: r.local.ip(),
            port: r.local.port(),
            listening: r.listening(),
            inode: r.inode,
        })
        .collect()
}

/// One session's claim on a local port: an exclusive lock on a file in the user's runtime
/// folder, held as long as the value lives (the kernel drops it with the process, even on
/// SIGKILL). A second session of the same user on the same port is refused instead of
/// reaching the first one's client.
#[derive(Debug)]
pub struct PortClaim {
    _file: std::fs::File,
}

/// Claim `port` for this session (`what` names it in the other session's error).
pub fn claim_port(port: u16, what: &str) -> Result<PortClaim, String> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::DirBuilderExt;
    let base = directories::BaseDirs::new()
        .and_then(|b| b.runtime_dir().map(Path::to_path_buf))
        .or_else(|| directories::BaseDirs::new().map(|b| b.cache_dir().to_path_buf()))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("pvlaunch-ports-{}", crate::relay::effective_uid()));
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    let path = dir.join(format!("port-{port}.lock"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot claim port {port} ({}): {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(512).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(if holder.is_empty() {
                format!("port {port} is in use by another pvlaunch session")
            } else {
                format!("port {port} is in use by another pvlaunch session ({holder})")
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!(
                "cannot claim port {port} ({}): {e}",
                path.display()
            ));
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "pid {}, {what}", std::process::id());
    Ok(PortClaim { _file: file })
}

/// The owners (uids) of the sockets listening on TCP `port` on this machine.
pub fn listening_owners(port: u16) -> Vec<u32> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| crate::hop::peer::parse(&t))
        .filter(|r| r.listening() && r.local.port() == port)
        .filter_map(|r| r.uid)
        .collect()
}

/// How often [`wait_listening`] looks.
pub const LISTEN_POLL: Duration = Duration::from_millis(100);

/// The inodes of the sockets listening on TCP `port` on this machine (read from /proc:
/// connecting to find out would be taken by a waiting ParaView client as a server arriving).
pub fn listening_sockets(port: u16) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_proc_net_tcp(&t))
        .filter(|s| s.listening && s.port == port)
        .map(|s| s.inode)
        .collect()
}

/// Whether something on this machine listens on TCP `port`.
pub fn listens_locally(port: u16) -> bool {
    !listening_sockets(port).is_empty()
}

/// Whether one of `inodes` is open in process `pid`, its process group or its descendants.
pub fn owned_by(pid: u32, inodes: &[u64]) -> bool {
    process::group_and_descendants(pid).into_iter().any(|p| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            return false;
        };
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|link| {
                let link = link.to_str()?;
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .any(|inode| inodes.contains(&inode))
    })
}

/// Wait until `port` listens, the client exits, or the deadline passes. With a `child`, the
/// listening socket must be the child's (or its process group's, or a descendant's): another
/// program on the port does not count.
pub async fn wait_listening(
    port: u16,
    child: Option<&mut Child>,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut child = child;
    let mut foreign = false;
    loop {
        let sockets = listening_sockets(port);
        if !sockets.is_empty() {
            match child.as_deref().and_then(Child::id) {
                Some(pid) if !owned_by(pid, &sockets) => foreign = true,
                _ => return Ok(()),
            }
        }
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!(
                "the client exited ({status}) before it listened on port {port}"
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(if foreign {
                format!(
                    "another program listens on port {port}, not the client (after {} s)",
                    timeout.as_secs()
                )
            } else {
                format!(
                    "nothing listens on port {port} after {} s",
                    timeout.as_secs()
                )
            });
        }
        tokio::time::sleep(LISTEN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run by the tests below as a separate process (this test binary, re-executed): listen on
    /// the port in the environment until killed. Does nothing in a normal test run.
    #[test]
    fn helper_listens_when_asked() {
        if let Ok(port) = std::env::var("PVLAUNCH_TEST_LISTEN_PORT") {
            let _l =
                std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
            std::thread::sleep(Duration::from_secs(30));
        }
    }

    fn unused_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_port_in_use_is_not_free() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_free(port));
        drop(l);
        assert!(port_free(port));
        if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
            let port = l6.local_addr().unwrap().port();
            assert!(!port_free(port), "a listener on ::1 only");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn another_programs_listener_is_not_the_client() {
        // This test process listens; the "client" is a sleeping child that never does.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut child = start(&args(&["sleep", "10"]), &[]).unwrap();
        let err = wait_listening(port, Some(&mut child), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(err.contains("another program listens"), "{err}");
        // Without a child to check against (`--client=wait`), any listener counts.
        wait_listening(port, None, Duration::from_millis(500))
            .await
            .unwrap();
        process::stop_group(&mut child, Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_descendants_listener_is_the_client() {
        let port = unused_port();
        let exe = std::env::current_exe().unwrap();
        // A shell that stays (`; :`), running the listener as its child: the socket belongs to
        // a grandchild of pvlaunch, as with a wrapper script that starts ParaView.
        let argv = args(&[
            "sh",
            "-c",
            "\"$@\"; :",
            "sh",
            exe.to_str().unwrap(),
            "--exact",
            "client::tests::helper_listens_when_asked",
            "--test-threads=1",
        ]);
        let env = [("PVLAUNCH_TEST_LISTEN_PORT".to_string(), port.to_string())];
        let quiet = std::fs::File::create("/dev/null").unwrap();
        let mut child = start_with_stdout(&argv, &env, ClientStdout::File(quiet)).unwrap();
        let got = wait_listening(port, Some(&mut child), Duration::from_secs(20)).await;
        process::stop_group(&mut child, Duration::from_secs(1)).await;
        got.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_clients_stdout_goes_where_asked() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = start_with_stdout(
            &args(&["sh", "-c", "echo Accepting connection"]),
            &[],
            ClientStdout::File(log.reopen().unwrap()),
        )
        .unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(
            std::fs::read_to_string(log.path()).unwrap(),
            "Accepting connection\n"
        );
        // By default the client's stdout is pvlaunch's stderr: the same open file.
        let ours = std::fs::metadata("/proc/self/fd/2").unwrap();
        let expect = format!(
            "{}:{}",
            std::os::unix::fs::MetadataExt::dev(&ours),
            std::os::unix::fs::MetadataExt::ino(&ours)
        );
        let mut child = start(
            &args(&[
                "sh",
                "-c",
                "test \"$(stat -L -c %d:%i /proc/$$/fd/1)\" = \"$EXPECT\"",
            ]),
            &[("EXPECT".into(), expect)],
        )
        .unwrap();
        assert!(child.wait().await.unwrap().success());
    }

    #[test]
    fn proc_net_tcp_rows() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9FBF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 00000000:07E8 00000000:0000 0A 0 0 0 0 0 0\n   2: 0100007F:9FBF 0100007F:D2F0 01 0 0 0 0 0 0\n";
        let rows = parse_proc_net_tcp(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            Socket {
                address: "127.0.0.1".parse().unwrap(),
                port: 40895,
                listening: true,
                inode: 1
            }
        );
        assert_eq!(
            rows[1].address,
            "0.0.0.0".parse::<std::net::IpAddr>().unwrap()
        );
        assert!(!rows[2].listening);
        assert_eq!(rows[1].inode, 0, "a row without an inode");
        let v6 = "   0: 00000000000000000000000001000000:2B67 00000000000000000000000000000000:0000 0A 0 0\n";
        assert_eq!(
            parse_proc_net_tcp(v6)[0].address,
            "::1".parse::<std::net::IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_port_is_claimed_by_one_session_at_a_time() {
        // A port number no other test claims.
        let port = 65_001;
        let first = claim_port(port, "profile a").unwrap();
        let second = claim_port(port, "profile b").unwrap_err();
        assert!(
            second.contains("in use by another pvlaunch session"),
            "{second}"
        );
        assert!(second.contains("profile a"), "{second}");
        drop(first);
        let again = claim_port(port, "profile b").unwrap();
        drop(again);
    }

    #[test]
    fn a_listener_names_its_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_owners(port).contains(&crate::relay::effective_uid()));
    }

    #[test]
    fn auto_picks_none_under_paraview_and_explains_a_missing_client() {
        let under = BTreeMap::from([(
            "PV_CONNECTION_URI".to_string(),
            "csrc://localhost:11111".to_string(),
        )]);
        assert_eq!(
            decide(&Request::Auto, &under, |_| None).unwrap(),
            Mode::None
        );
        let plain = BTreeMap::new();
        let e = decide(&Request::Auto, &plain, |_| None).unwrap_err();
        assert!(e.hint().contains("--client=pvpython"));
        assert_eq!(
            decide(&Request::Auto, &plain, |p| Some(format!("/usr/bin/{p}"))).unwrap(),
            Mode::Paraview {
                program: "/usr/bin/paraview".into()
            }
        );
    }

    #[test]
    fn client_argv() {
        let m = Mode::Pvpython {
            program: "pvpython".into(),
            script: "s.py".into(),
            args: vec!["out.png".into()],
        };
        assert_eq!(
            argv(&m, &url(true, 5), Some(9)).unwrap(),
            vec![
                "pvpython",
                "--force-offscreen-rendering",
                "--connect-id=9",
                "s.py",
                "out.png"
            ]
        );
        assert_eq!(argv(&Mode::Wait, "x", None), None);
    }
}
