//! `pvlaunch relay`: the relay in the foreground, stopped by SIGINT, SIGTERM or SIGHUP.
//!
//! Output, for people and for programs reading it over ssh:
//! - stdout, one line per listener once all are bound: `listening on ADDR -> TARGET[, TARGET]`
//!   (with `--json`: one JSON object per event, `{"event":"listening","listen":ADDR,...}`,
//!   then every connection event);
//! - stderr: the log (tracing), one line per connection opened, closed (peer, bytes each way,
//!   duration) or refused.
//!
//! A first signal stops gracefully (see [`Limits::grace`]); a second one stops at once. So do,
//! if asked, the end of standard input and a silence on it longer than the heartbeat.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{
    AllowList, AllowSpec, CopyMode, Forward, Limits, ListenAddr, Lock, Relay, RelayConfig,
    RelayError, RelayEvent, Target, portfwd, raise_fd_limit,
};
use crate::exit::Code;
use crate::hop::Secret;

/// `pvlaunch relay` as the command line asked for it.
#[derive(Debug, Clone)]
pub struct RelayRequest {
    /// Paired with `to`, position by position.
    pub listen: Vec<ListenAddr>,
    pub to: Vec<Target>,
    /// A portfwd configuration file.
    pub config: Option<PathBuf>,
    pub allow: Vec<AllowSpec>,
    pub limits: Limits,
    pub copy: CopyMode,
    /// Stop when standard input reaches end of file (the ssh connection that started it died).
    pub stop_on_stdin_eof: bool,
    /// With `stop_on_stdin_eof`: stop as well when nothing arrives on standard input for this
    /// long (the link died without closing it).
    pub stdin_heartbeat: Option<Duration>,
    /// With `stop_on_stdin_eof`: when standard input ends or goes silent, keep running while
    /// this file's modification time is recent (within the heartbeat plus `lease_grace`): a
    /// session that lost its link and came back refreshes it ([`crate::job`]'s guard does, on
    /// every heartbeat line). Stop once it is older, or gone.
    pub lease: Option<PathBuf>,
    /// See `lease`.
    pub lease_grace: Duration,
    /// Every forward's stream is resumable ([`crate::resume`]), on this side.
    pub resume: Option<super::ResumeSide>,
    /// The session key file ([`Secret::read_file`]), for `accept_key` and `connect_key`.
    pub key_file: Option<PathBuf>,
    /// Every forward accepts only peers that prove the key.
    pub accept_key: bool,
    /// Every forward proves the key to its target.
    pub connect_key: bool,
    /// Every forward accepts only TCP peers of this user (loopback; see [`Lock::same_user`]).
    pub same_user: bool,
}

impl Default for RelayRequest {
    /// Nothing to forward, the default limits, no lock.
    fn default() -> RelayRequest {
        RelayRequest {
            listen: Vec::new(),
            to: Vec::new(),
            config: None,
            allow: Vec::new(),
            limits: Limits::default(),
            copy: CopyMode::default(),
            stop_on_stdin_eof: false,
            stdin_heartbeat: None,
            lease: None,
            lease_grace: Duration::ZERO,
            resume: None,
            key_file: None,
            accept_key: false,
            connect_key: false,
            same_user: false,
        }
    }
}

impl RelayRequest {
    /// The relay configuration: `--listen`/`--to` pairs first, then the file's forwards, each
    /// with the lock asked for (the key file is read here).
    pub fn config(&self) -> Result<RelayConfig, RelayError> {
        let lock = self.lock()?;
        if self.listen.len() != self.to.len() {
            return Err(RelayError::Unpaired {
                listen: self.listen.len(),
                to: self.to.len(),
            });
        }
        let mut forwards: Vec<Forward> = self
            .listen
            .iter()
            .zip(&self.to)
            .map(|(listen, to)| Forward::new(listen.clone(), to.clone()))
            .collect();
        if let Some(path) = &self.config {
            let file = portfwd::load(path, &portfwd::SystemLookup::default())?;
            if !file.forwards.is_empty() && !file.listen_given {
                tracing::warn!(
                    "{} sets no listen-on: listening on 127.0.0.1 only (portfwd would listen on every \
                     interface); add `listen-on 0.0.0.0` to accept other hosts",
                    path.display()
                );
            }
            forwards.extend(file.forwards);
        }
        if forwards.is_empty() {
            return Err(RelayError::NoForwards);
        }
        for forward in &mut forwards {
            forward.lock = lock.clone();
        }
        let mut nets = Vec::new();
        for spec in &self.allow {
            nets.extend(spec.resolve()?);
        }
        Ok(RelayConfig {
            forwards,
            allow: AllowList::new(nets),
            limits: self.limits.clone(),
            copy: self.copy,
        })
    }
}

impl RelayRequest {
    /// The lock every forward gets; checks the options that go together.
    fn lock(&self) -> Result<Lock, RelayError> {
        if self.stdin_heartbeat.is_some() && !self.stop_on_stdin_eof {
            return Err(RelayError::Options(
                "--stdin-heartbeat needs --stop-on-stdin-eof",
            ));
        }
        if self.stdin_heartbeat.is_some_and(|beat| beat.is_zero()) {
            return Err(RelayError::Options(
                "--stdin-heartbeat must be longer than 0 seconds",
            ));
        }
        let key = match (&self.key_file, self.accept_key || self.connect_key) {
            (Some(path), true) => Some(Arc::new(Secret::read_file(path)?)),
            (None, false) => None,
            (None, true) => {
                return Err(RelayError::Options(
                    "--accept-key and --connect-key need --key-file (the session key)",
                ));
            }
            (Some(_), false) => {
                return Err(RelayError::Options(
                    "--key-file is used only with --accept-key or --connect-key",
                ));
            }
        };
        Ok(Lock {
            accept_key: key.clone().filter(|_| self.accept_key),
            same_user: self.same_user,
            connect_key: key.filter(|_| self.connect_key),
            resume: self.resume,
        })
    }
}

/// Run `pvlaunch relay` to the end and return its exit code; errors are printed on stderr.
pub fn main(request: RelayRequest, json: bool, verbose: u8) -> Code {
    // Each connection is logged (info) by default; -v debug, -vv trace.
    crate::term::init_tracing(verbose, tracing::Level::INFO);
    // One thread: the kernel moves the bytes, and a single thread avoids waking a second one
    // for every message (measured: lower latency, the same throughput; docs/benchmarks.md).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return report(RelayError::Runtime(err)),
    };
    match runtime.block_on(run(request, json)) {
        Ok(code) => code,
        Err(err) => report(err),
    }
}

fn report(err: RelayError) -> Code {
    crate::say_err!("error: failed to {err}");
    if err.is_usage() {
        Code::Usage
    } else {
        Code::Failure
    }
}

/// Signals received so far: the first one's number and how many.
#[derive(Debug, Clone, Copy, Default)]
struct SignalCount {
    first: Option<i32>,
    count: u32,
}

async fn run(request: RelayRequest, json: bool) -> Result<Code, RelayError> {
    let config = request.config()?;
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!("open file limit: {limit}"),
        Err(err) => tracing::debug!("cannot raise the open file limit: {err}"),
    }
    let stdin = request.stop_on_stdin_eof.then(|| StdinWatch {
        heartbeat: request.stdin_heartbeat,
        lease: request.lease.clone().map(|path| Lease {
            path,
            limit: request
                .stdin_heartbeat
                .unwrap_or(crate::hop::HEARTBEAT_LIMIT)
                + request.lease_grace,
        }),
    });
    let signals = watch_signals(stdin)?;
    let relay = Relay::bind(config).await?;

    let (events, mut rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_event(&event, json);
        }
    });
    let mut first = signals.clone();
    let shutdown = async move {
        let _ = first.wait_for(|s| s.count >= 1).await;
    };
    let mut second = signals.clone();
    tokio::select! {
        summary = relay.run(shutdown, Some(events)) => {
            tracing::info!(
                connections = summary.connections,
                refused = summary.refused,
                bytes_from_peers = summary.bytes_from_peers,
                bytes_to_peers = summary.bytes_to_peers,
                "stopped"
            );
        }
        _ = second.wait_for(|s| s.count >= 2) => tracing::warn!("second signal: stopping now"),
    }
    let _ = printer.await;
    Ok(match signals.borrow().first {
        Some(n) => Code::Signal(n),
        None => Code::Success,
    })
}

fn print_event(event: &RelayEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            crate::say!("{line}");
        }
    } else if let RelayEvent::Listening { listen, to } = event {
        let to: Vec<String> = to.iter().map(|t| t.to_string()).collect();
        crate::say!("listening on {listen} -> {}", to.join(", "));
    }
}

/// What to watch on standard input.
#[derive(Debug, Clone)]
struct StdinWatch {
    /// Stop also when nothing arrives for this long.
    heartbeat: Option<Duration>,
    /// When standard input ends or goes silent: go on while this is fresh.
    lease: Option<Lease>,
}

/// A file whose modification time says that a session is (again) alive.
#[derive(Debug, Clone)]
struct Lease {
    path: PathBuf,
    /// How old it may be.
    limit: Duration,
}

/// How often a relay that lost its standard input looks at its lease.
const LEASE_POLL: Duration = Duration::from_secs(1);

impl Lease {
    /// Whether the lease still holds now: the file exists and was modified within the limit.
    fn holds(&self) -> bool {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        match modified {
            Ok(at) => at.elapsed().unwrap_or_default() <= self.limit,
            Err(_) => false,
        }
    }

    /// Resolves once the lease no longer holds.
    async fn lapsed(&self) {
        loop {
            if !self.holds() {
                return;
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }
}

/// Count SIGINT, SIGTERM and SIGHUP (and end of standard input, or its silence, if asked) in a
/// watch channel.
fn watch_signals(stdin: Option<StdinWatch>) -> Result<watch::Receiver<SignalCount>, RelayError> {
    let mut signals = crate::process::Signals::try_new().map_err(RelayError::Runtime)?;
    let (tx, rx) = watch::channel(SignalCount::default());
    // `true`: a `stop` line (stop at once); `false`: end of input.
    let (eof_tx, mut eof_rx) = mpsc::channel::<bool>(2);
    // Bumped for every line read.
    let (beat_tx, mut beat_rx) = watch::channel(0u64);
    if stdin.is_some() {
        // A plain thread: tokio's stdin reader would keep the runtime from shutting down.
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut stdin = std::io::stdin().lock();
            loop {
                line.clear();
                // Bounded: a line longer than this counts as several beats.
                let mut limited = std::io::Read::take(&mut stdin, 1024);
                match std::io::BufRead::read_until(&mut limited, b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if line.trim_ascii() == b"stop" {
                    let _ = eof_tx.blocking_send(true);
                }
                beat_tx.send_modify(|n| *n += 1);
            }
            let _ = eof_tx.blocking_send(false);
        });
    }
    let heartbeat = stdin.as_ref().and_then(|watch| watch.heartbeat);
    let lease = stdin.and_then(|watch| watch.lease);
    tokio::spawn(async move {
        // Armed until it fires or standard input ends.
        let mut deadline = heartbeat.map(|beat| tokio::time::Instant::now() + beat);
        // Standard input is gone and the lease holds: the relay lives while it does.
        let mut leased = false;
        loop {
            let n = tokio::select! {
                n = signals.next() => n,
                Some(stop) = eof_rx.recv() => {
                    deadline = None;
                    if stop {
                        tracing::info!("told to stop");
                    } else {
                        tracing::info!("standard input closed");
                        if !leased && lease.as_ref().is_some_and(Lease::holds) {
                            tracing::info!("the session's lease holds: going on while it does");
                            leased = true;
                            continue;
                        }
                        if leased {
                            continue;
                        }
                    }
                    0
                }
                Ok(()) = beat_rx.changed(), if deadline.is_some() => {
                    deadline = heartbeat.map(|beat| tokio::time::Instant::now() + beat);
                    continue;
                }
                () = sleep_until(deadline) => {
                    deadline = None;
                    if lease.as_ref().is_some_and(Lease::holds) {
                        tracing::warn!(
                            "nothing on standard input for {:?} (--stdin-heartbeat): going on while the session's lease holds",
                            heartbeat.unwrap_or_default()
                        );
                        leased = true;
                        continue;
                    }
                    tracing::warn!(
                        "nothing on standard input for {:?} (--stdin-heartbeat): the link is gone, stopping",
                        heartbeat.unwrap_or_default()
                    );
                    0
                }
                () = async { lease.as_ref().expect("leased").lapsed().await }, if leased => {
                    tracing::warn!("the session's lease lapsed (no session came back within its grace): stopping");
                    leased = false;
                    0
                }
            };
            tx.send_modify(|s| {
                if n != 0 {
                    s.first.get_or_insert(n);
                }
                s.count += 1;
            });
        }
    });
    Ok(rx)
}

/// Sleep until `deadline`; never if there is none.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<RelayRequest, clap::Error> {
        let argv = ["pvlaunch", "relay", "--listen", "0", "--to", "127.0.0.1:9"];
        let cli = Cli::try_parse_from(argv.iter().chain(args))?;
        match cli.command {
            Command::Relay(args) => Ok(args.into()),
            other => panic!("not relay: {other:?}"),
        }
    }

    fn key_file(dir: &Path, mode: u32) -> (PathBuf, Secret) {
        let path = dir.join(format!("k{mode:o}"));
        let key = Secret::generate();
        key.write_new(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (path, key)
    }

    #[test]
    fn key_options_need_a_key_file_and_the_other_way_round() {
        use clap::error::ErrorKind;
        for args in [
            &["--accept-key"][..],
            &["--connect-key"],
            &["--key-file", "k"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::MissingRequiredArgument,
                "{args:?}: {err}"
            );
        }
        let both = parse(&["--key-file", "k", "--accept-key", "--connect-key"]).unwrap();
        assert!(both.accept_key && both.connect_key);
        assert_eq!(both.key_file, Some(PathBuf::from("k")));
        assert!(parse(&["--same-user"]).unwrap().same_user);

        // The same rules for a request built in code.
        let request = |accept_key, key_file: Option<&str>| RelayRequest {
            listen: vec![ListenAddr::loopback(0)],
            to: vec!["127.0.0.1:9".parse().unwrap()],
            accept_key,
            key_file: key_file.map(PathBuf::from),
            ..RelayRequest::default()
        };
        for bad in [request(true, None), request(false, Some("k"))] {
            let err = bad.config().unwrap_err();
            assert!(
                matches!(err, RelayError::Options(_)) && err.is_usage(),
                "{err}"
            );
        }
    }

    #[test]
    fn the_heartbeat_needs_stdin_eof_and_a_length() {
        use clap::error::ErrorKind;
        let err = parse(&["--stdin-heartbeat", "20"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
        for zero in ["0", "0s", "0ms"] {
            let err = parse(&["--stop-on-stdin-eof", "--stdin-heartbeat", zero]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{err}");
        }
        let ok = parse(&["--stop-on-stdin-eof", "--stdin-heartbeat", "20"]).unwrap();
        assert_eq!(ok.stdin_heartbeat, Some(Duration::from_secs(20)));
        let ok = parse(&["--stop-on-stdin-eof", "--stdin-heartbeat", "500ms"]).unwrap();
        assert_eq!(ok.stdin_heartbeat, Some(Duration::from_millis(500)));

        let alone = RelayRequest {
            listen: vec![ListenAddr::loopback(0)],
            to: vec!["127.0.0.1:9".parse().unwrap()],
            stdin_heartbeat: Some(Duration::from_secs(1)),
            ..RelayRequest::default()
        };
        assert!(matches!(alone.config(), Err(RelayError::Options(_))));
    }

    #[test]
    fn the_key_file_is_read_checked_and_put_on_every_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (good, key) = key_file(dir.path(), 0o600);
        let (exposed, _) = key_file(dir.path(), 0o644);
        let cfg = dir.path().join("fwd.cfg");
        std::fs::write(&cfg, "tcp { 0 { => 127.0.0.1:7 } }\n").unwrap();
        let path = |p: &Path| p.to_str().unwrap().to_string();

        let request = parse(&[
            "--key-file",
            &path(&good),
            "--accept-key",
            "--same-user",
            "--config",
            &path(&cfg),
        ])
        .unwrap();
        let config = request.config().unwrap();
        assert_eq!(config.forwards.len(), 2, "the pair and the file's forward");
        for forward in &config.forwards {
            assert_eq!(forward.lock.accept_key.as_deref(), Some(&key));
            assert!(forward.lock.same_user);
            assert_eq!(forward.lock.connect_key, None);
        }
        let config = parse(&["--key-file", &path(&good), "--connect-key"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.forwards[0].lock.connect_key.as_deref(), Some(&key));
        assert_eq!(config.forwards[0].lock.accept_key, None);
        assert!(!config.forwards[0].lock.same_user);
        // No lock options: no lock.
        let config = parse(&[]).unwrap().config().unwrap();
        assert_eq!(config.forwards[0].lock, Lock::default());

        // Unreadable, exposed or malformed: usage errors that name the file.
        let missing = dir.path().join("missing.key");
        std::fs::write(dir.path().join("bad.key"), "not a key\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("bad.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        for file in [missing, exposed, dir.path().join("bad.key")] {
            let err = parse(&["--key-file", &path(&file), "--accept-key"])
                .unwrap()
                .config()
                .unwrap_err();
            assert!(matches!(err, RelayError::Key(_)) && err.is_usage(), "{err}");
            assert!(err.to_string().contains(&path(&file)), "{err}");
        }
    }
}
