//! The system `ssh`, driven through one ControlMaster per session: one authentication (password,
//! 2FA, agent) for every later step. Argv building is pure; [`Master`] runs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Child;

use crate::process::{self, Kind};

/// How long a person may take to answer a password or 2FA prompt.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one multiplexed command may take (scheduler queries, forwards).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the master checks that the link is alive; three misses drop it.
pub const ALIVE_INTERVAL_SECS: u32 = 5;

/// Where and how to reach the login node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The ssh program (normally `ssh` from PATH).
    pub program: String,
    pub destination: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub jump_hosts: Vec<String>,
    /// The ControlMaster socket, in a private 0700 folder.
    pub control_path: PathBuf,
    /// Extra `-o` options (tests point ssh at their own config and known_hosts).
    pub extra_options: Vec<String>,
}

impl Target {
    fn base(&self) -> Vec<String> {
        vec![
            self.program.clone(),
            "-S".into(),
            self.control_path.display().to_string(),
        ]
    }

    fn common_options(&self, out: &mut Vec<String>) {
        self.login_options(out);
        if !self.jump_hosts.is_empty() {
            out.push("-J".into());
            out.push(self.jump_hosts.join(","));
        }
    }

    /// `-o` extras, `-l` and `-p`: everything but the route to the host.
    fn login_options(&self, out: &mut Vec<String>) {
        for o in &self.extra_options {
            out.push("-o".into());
            out.push(o.clone());
        }
        if let Some(u) = &self.user {
            out.push("-l".into());
            out.push(u.clone());
        }
        if let Some(p) = self.port {
            out.push("-p".into());
            out.push(p.to_string());
        }
    }

    /// The master: authenticates once, runs no command, holds the forwards.
    pub fn master_argv(&self, batch_mode: bool) -> Vec<String> {
        self.master_argv_persisting(batch_mode, None)
    }

    /// [`Target::master_argv`]; with `persist`, ssh goes to the background once logged in and
    /// the master outlives the session by that long once unused (`ControlPersist`).
    pub fn master_argv_persisting(
        &self,
        batch_mode: bool,
        persist: Option<Duration>,
    ) -> Vec<String> {
        let mut a = self.base();
        a.extend(["-M", "-N", "-T"].map(String::from));
        let persist = match persist {
            Some(d) => format!("ControlPersist={}s", d.as_secs().max(1)),
            None => "ControlPersist=no".to_string(),
        };
        a.push("-o".into());
        a.push(persist);
        self.login_connection_options(&mut a, &["ExitOnForwardFailure=yes"], batch_mode);
        a.push("--".into());
        a.push(self.destination.clone());
        a
    }

    /// What every connection that logs in gets: keep-alives, `extra`, one prompt per
    /// question, `BatchMode` when nobody can answer, then the user's options and route.
    fn login_connection_options(&self, a: &mut Vec<String>, extra: &[&str], batch_mode: bool) {
        let alive = [
            format!("ServerAliveInterval={ALIVE_INTERVAL_SECS}"),
            "ServerAliveCountMax=3".into(),
        ];
        let extra = extra.iter().map(|o| o.to_string());
        // A refused code or password is not asked again: sites lock accounts after failed
        // one-time codes, and the person decides whether to try again.
        let prompts = std::iter::once("NumberOfPasswordPrompts=1".to_string());
        for o in alive.into_iter().chain(extra).chain(prompts) {
            a.push("-o".into());
            a.push(o);
        }
        if batch_mode {
            a.push("-o".into());
            a.push("BatchMode=yes".into());
        }
        self.common_options(a);
    }

    /// A control request (`check`, `exit`, `forward`, `cancel`) to the master.
    fn control(&self, op: &str, forward: Option<(&str, String)>) -> Vec<String> {
        let mut a = self.base();
        a.push("-O".into());
        a.push(op.into());
        if let Some((flag, spec)) = forward {
            a.push(flag.into());
            a.push(spec);
        }
        self.common_options(&mut a);
        a.push("--".into());
        a.push(self.destination.clone());
        a
    }

    pub fn check_argv(&self) -> Vec<String> {
        self.control("check", None)
    }

    /// One connection, no master, running `command` in its one session: the carrier of
    /// [`Master::start_single`].
    pub fn single_argv(&self, batch_mode: bool, command: &RemoteCommand) -> Vec<String> {
        let mut a = vec![self.program.clone(), "-T".into()];
        for o in ["ControlMaster=no", "ControlPath=none"] {
            a.push("-o".into());
            a.push(o.into());
        }
        self.login_connection_options(&mut a, &[], batch_mode);
        a.push("--".into());
        a.push(self.destination.clone());
        a.push(command.wire().into());
        a
    }

    /// `ssh -G`: the configuration ssh would use for this destination (to find the user's own
    /// `ControlPath`).
    pub fn config_argv(&self) -> Vec<String> {
        let mut a = vec![self.program.clone(), "-G".into()];
        self.common_options(&mut a);
        a.push("--".into());
        a.push(self.destination.clone());
        a
    }

    /// The same target through another master socket.
    pub fn through(&self, control_path: PathBuf) -> Target {
        Target {
            control_path,
            ..self.clone()
        }
    }

    pub fn exit_argv(&self) -> Vec<String> {
        self.control("exit", None)
    }

    /// `-R [bind:]remote:localhost:local`; remote 0 lets sshd choose (ssh prints the port).
    pub fn remote_forward_argv(&self, bind: Option<&str>, remote: u16, local: u16) -> Vec<String> {
        self.control("forward", Some(("-R", remote_spec(bind, remote, local))))
    }

    /// `-R PATH:localhost:local`: a Unix socket on the login node (sshd creates it with its
    /// `StreamLocalBindMask`, 0177 by default: only the user can connect).
    pub fn remote_socket_forward_argv(&self, path: &str, local: u16) -> Vec<String> {
        self.control("forward", Some(("-R", format!("{path}:localhost:{local}"))))
    }

    pub fn cancel_remote_forward_argv(
        &self,
        bind: Option<&str>,
        remote: u16,
        local: u16,
    ) -> Vec<String> {
        self.control("cancel", Some(("-R", remote_spec(bind, remote, local))))
    }

    /// `-L 127.0.0.1:local:host:port`: only this machine can use the tunnel.
    pub fn local_forward_argv(&self, local: u16, host: &str, port: u16) -> Vec<String> {
        self.control(
            "forward",
            Some(("-L", format!("127.0.0.1:{local}:{host}:{port}"))),
        )
    }

    /// Run one POSIX shell command line on the login node through the master, under
    /// `/bin/sh` whatever the user's login shell (see [`RemoteCommand`]). Values in it must
    /// already be quoted ([`crate::quote`]).
    pub fn remote_argv(&self, command: &str) -> Vec<String> {
        self.remote_command_argv(&RemoteCommand::new(command))
    }

    /// [`Target::remote_argv`] for a command already wrapped.
    ///
    /// Only through the master: when its socket is gone, ssh would quietly open a new login
    /// (a second authentication, or a silent one with an agent). The failing `ProxyCommand`
    /// stops that; it is only consulted when the socket cannot be used, so `-J` is left out
    /// (ssh refuses both together) and a `ProxyJump` in ssh_config loses to it. The error
    /// then carries [`MASTER_GONE`] ([`master_gone`] recognises it).
    pub fn remote_command_argv(&self, command: &RemoteCommand) -> Vec<String> {
        let mut a = self.base();
        a.extend(["-T", "-o", "ControlMaster=no", "-o", "BatchMode=yes"].map(String::from));
        a.push("-o".into());
        a.push(MASTER_ONLY_PROXY.into());
        self.login_options(&mut a);
        a.push("--".into());
        a.push(self.destination.clone());
        a.push(command.wire().into());
        a
    }
}

/// What a command through the master prints when the master is gone.
pub const MASTER_GONE: &str = "pvlaunch: the ssh master is gone";

/// The `ProxyCommand` of every multiplexed command: never a new connection. ssh runs it
/// with the local user's shell (`$SHELL -c "exec ..."`): only characters every shell reads
/// literally, no `%` (ssh's tokens).
const MASTER_ONLY_PROXY: &str =
    "ProxyCommand=/bin/sh -c 'echo pvlaunch: the ssh master is gone >&2; exit 255'";

/// Whether a multiplexed command failed because the master is gone.
pub fn master_gone(out: &Output) -> bool {
    out.code == Some(255) && out.stderr.contains(MASTER_GONE)
}

/// A shell command line for the login node, kept both as written (for messages and traces)
/// and as sent (wrapped for any login shell).
///
/// sshd runs a remote command with the user's login shell (`$SHELL -c STRING`), which may be
/// tcsh or fish; every command pvlaunch writes is POSIX sh. The wire form is read by sh, bash,
/// dash, zsh, csh, tcsh and fish alike as `exec /bin/sh -c SCRIPT`, `SCRIPT` byte for byte
/// ([`crate::quote::for_any_login_shell`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    script: String,
    wire: String,
}

impl RemoteCommand {
    /// Wrap `script`. A NUL byte, which no shell can hold, is left in the wire form, so that
    /// running it fails (as any argument with a NUL does) instead of running something else.
    pub fn new(script: impl Into<String>) -> Self {
        let script = script.into();
        let wire = crate::quote::for_any_login_shell(&script).unwrap_or_else(|_| script.clone());
        RemoteCommand { script, wire }
    }

    /// The POSIX sh script as written.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// What ssh sends: the string for the login shell.
    pub fn wire(&self) -> &str {
        &self.wire
    }
}

impl std::fmt::Display for RemoteCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.script)
    }
}

fn remote_spec(bind: Option<&str>, remote: u16, local: u16) -> String {
    match bind {
        Some(b) if b.contains(':') => format!("[{b}]:{remote}:localhost:{local}"),
        Some(b) => format!("{b}:{remote}:localhost:{local}"),
        None => format!("{remote}:localhost:{local}"),
    }
}

/// The most of a command's stdout [`run`] keeps (the first bytes): scheduler output is small,
/// and a broken command printing garbage must not fill the memory.
pub const STDOUT_LIMIT: usize = 1024 * 1024;
/// The most of a command's stderr [`run`] keeps (the last bytes: errors come at the end).
pub const STDERR_LIMIT: usize = 64 * 1024;

/// What a finished command printed (bounded: see [`STDOUT_LIMIT`] and [`STDERR_LIMIT`]).
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Bytes of stdout read and thrown away after the first [`STDOUT_LIMIT`].
    pub stdout_dropped: u64,
    /// Bytes of stderr read and thrown away before the last [`STDERR_LIMIT`].
    pub stderr_dropped: u64,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Whether either stream was cut.
    pub fn truncated(&self) -> bool {
        self.stdout_dropped > 0 || self.stderr_dropped > 0
    }
}

impl From<&Output> for crate::scheduler::CommandOutput {
    fn from(o: &Output) -> Self {
        crate::scheduler::CommandOutput {
            status: o.code,
            stdout: o.stdout.clone(),
            stderr: o.stderr.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("ssh to {destination} failed{}", tail_text(.stderr))]
    MasterExited { destination: String, stderr: String },
    #[error("ssh to {destination} did not finish authenticating within {} s", .timeout.as_secs())]
    AuthTimeout {
        destination: String,
        timeout: Duration,
    },
    #[error("`{what}` timed out after {} s", .timeout.as_secs())]
    Timeout { what: String, timeout: Duration },
    #[error("the remote forward was refused{}", tail_text(.stderr))]
    ForwardRefused { stderr: String },
    #[error(
        "the ssh master connection to {destination} is gone, so `{what}` was not run (no new login is opened behind its back)"
    )]
    MasterGone { destination: String, what: String },
}

fn tail_text(stderr: &str) -> String {
    let t = process::tail(stderr, 5);
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.join(" / "))
    }
}

/// Run an argv to completion with an optional stdin and a timeout. The output is untrusted
/// (a broken `squeue` may print megabytes): the first [`STDOUT_LIMIT`] bytes of stdout and the
/// last [`STDERR_LIMIT`] of stderr are kept, the rest is read and dropped (so the command never
/// blocks on a full pipe) and counted in [`Output::stdout_dropped`] / [`Output::stderr_dropped`].
///
/// Logged: each command with its exit status and duration under `-v`, its argv under `-vv`.
pub async fn run(
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, SshError> {
    run_labelled(argv, &short_form(argv), stdin, timeout).await
}

/// [`run`], logged as `short` (a remote command's script rather than its wire form).
async fn run_labelled(
    argv: &[String],
    short: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, SshError> {
    tracing::debug!(?argv, "running `{short}`");
    let started = std::time::Instant::now();
    let mut cmd = process::command(argv, Kind::Helper);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|source| SshError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        let data = data.to_vec();
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
            let _ = pipe.shutdown().await;
        });
    }
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let what = argv.last().cloned().unwrap_or_default();
    let finished = async {
        let (out, err, status) = tokio::join!(
            read_bounded(stdout, STDOUT_LIMIT, Keep::Head),
            read_bounded(stderr, STDERR_LIMIT, Keep::Tail),
            child.wait()
        );
        Ok::<_, std::io::Error>((out?, err?, status?))
    };
    let result = tokio::time::timeout(timeout, finished).await;
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(((stdout, stdout_dropped), (stderr, stderr_dropped), status))) => {
            tracing::info!("`{short}`: {status} after {ms} ms");
            if stdout_dropped > 0 || stderr_dropped > 0 {
                tracing::warn!(
                    "`{short}` printed too much: dropped {stdout_dropped} bytes of stdout \
                     (kept the first {STDOUT_LIMIT}) and {stderr_dropped} bytes of stderr \
                     (kept the last {STDERR_LIMIT})"
                );
            }
            Ok(Output {
                code: status.code(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                stdout_dropped,
                stderr_dropped,
            })
        }
        Ok(Err(source)) => {
            tracing::info!("`{short}`: failed after {ms} ms: {source}");
            Err(SshError::Spawn {
                program: argv[0].clone(),
                source,
            })
        }
        Err(_) => {
            tracing::info!("`{short}`: timed out after {ms} ms");
            Err(SshError::Timeout { what, timeout })
        }
    }
}

/// The longest line of ssh's login output passed on (a hostile banner may have no newline).
const LOGIN_LINE_MAX: usize = 4096;

/// ssh's stderr while it logs in: each line passed on to stderr while `echo` is set (cleaned of
/// escapes), the last [`STDERR_LIMIT`] bytes kept for the failure message.
async fn read_login_stderr(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    echo: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let show = |line: &[u8]| {
        if echo.load(std::sync::atomic::Ordering::SeqCst) {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            crate::say_err!("{}", crate::term::sanitize(text));
        }
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        kept.extend_from_slice(chunk);
        if kept.len() > 2 * STDERR_LIMIT {
            let extra = kept.len() - STDERR_LIMIT;
            kept.drain(..extra);
        }
        for &b in chunk {
            line.push(b);
            if b == b'\n' || line.len() >= LOGIN_LINE_MAX {
                show(&line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        show(&line);
    }
    if kept.len() > STDERR_LIMIT {
        let extra = kept.len() - STDERR_LIMIT;
        kept.drain(..extra);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Which part of a stream [`read_bounded`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Head,
    Tail,
}

/// Read a stream to its end, keeping at most `limit` bytes (its first or its last ones);
/// returns them and how many bytes were dropped.
async fn read_bounded(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
    keep: Keep,
) -> std::io::Result<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        match keep {
            Keep::Head => {
                let room = limit - kept.len();
                let take = room.min(n);
                kept.extend_from_slice(&chunk[..take]);
                dropped += (n - take) as u64;
            }
            Keep::Tail => {
                kept.extend_from_slice(chunk);
                // Compact when twice the limit: each byte is moved at most once or twice.
                if kept.len() > 2 * limit {
                    let extra = kept.len() - limit;
                    kept.drain(..extra);
                    dropped += extra as u64;
                }
            }
        }
    }
    if keep == Keep::Tail && kept.len() > limit {
        let extra = kept.len() - limit;
        kept.drain(..extra);
        dropped += extra as u64;
    }
    Ok((kept, dropped))
}

/// A command in a few words for the log: `ssh -O check`, or the remote command line.
/// The longest command shown in the log.
const SHORT_FORM_MAX: usize = 120;

fn short_form(argv: &[String]) -> String {
    let program = argv
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default();
    let text = if let Some(i) = argv.iter().position(|a| a == "-O") {
        let mut s = format!("{program} -O {}", argv.get(i + 1).map_or("", |s| s));
        if let Some(spec) = argv.get(i + 2).filter(|a| *a == "-R" || *a == "-L") {
            s.push_str(&format!(" {spec} {}", argv.get(i + 3).map_or("", |s| s)));
        }
        s
    } else if argv.iter().any(|a| a == "-M") {
        format!("{program} -M {}", argv.last().map_or("", |s| s))
    } else if let Some(i) = argv.iter().position(|a| a == "--")
        && argv.len() > i + 2
    {
        argv[i + 2..].join(" ")
    } else {
        argv.join(" ")
    };
    script_label(&text)
}

/// A script (or any text) as one bounded, printable line for the log.
fn script_label(text: &str) -> String {
    let clean = crate::term::sanitize(text).replace('\n', " ");
    crate::term::clip(&clean, SHORT_FORM_MAX).into_owned()
}

/// Whose the master is, which decides what the end of the session does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Started for this session, ended with it (`-O exit`).
    Session,
    /// pvlaunch's own, kept after sessions (`<Login persist>`): the session cancels its
    /// forwards and leaves it.
    Kept,
    /// The user's own (their ssh config's `ControlMaster`): the session cancels its forwards
    /// and leaves it.
    User,
}

/// A running ControlMaster.
pub struct Master {
    pub target: Target,
    owner: Owner,
    /// The ssh process when this session started it in the foreground.
    child: Option<Child>,
    /// The master's process when it runs in the background (kept or the user's).
    daemon: Option<u32>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    /// Forwards this session opened (`-R`/`-L` and their spec), cancelled at the end on a
    /// master that stays.
    opened: std::sync::Mutex<Vec<(&'static str, String)>>,
    /// Whether this session logged in (rather than finding a master running).
    logged_in: bool,
    /// Every command and forward goes through pvlaunch's own multiplexer over one ssh session
    /// (`crate::channel`) when the site allows no connection sharing.
    channel: Option<ChannelLink>,
}

/// The session's channel ([`Master::start_single`], [`Master::into_channel`]).
pub struct ChannelLink {
    pub channel: crate::channel::Channel,
    /// The local socket `pvlaunch channel exec` uses.
    pub socket: PathBuf,
    /// This program, run as `channel exec`.
    pub program: String,
    /// The ssh process whose session carries the channel.
    carrier: Child,
}

/// A login's ssh, its stderr passed on while `echo` is set (see [`read_login_stderr`]).
type Login = (
    Child,
    tokio::task::JoinHandle<String>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

fn spawn_login(argv: &[String], kind: Kind, asker: &crate::auth::Asker) -> Result<Login, SshError> {
    let mut cmd = process::command(argv, kind);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(asker.env());
    tracing::debug!("login: {}", asker.describe());
    let mut child = cmd.spawn().map_err(|source| SshError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let pipe = child.stderr.take().expect("piped");
    let echo = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    // Untrusted and unbounded (a banner, a hostile server): its last lines are kept.
    let stderr = tokio::spawn(read_login_stderr(pipe, std::sync::Arc::clone(&echo)));
    Ok((child, stderr, echo))
}

/// The command that starts `pvlaunch channel serve` on the login node, reading `binary` from
/// its stdin first when no copy of this version is there.
async fn bootstrap_command(binary: &Path) -> Result<RemoteCommand, SshError> {
    let (bytes, sum) = crate::remote::read_and_hash(binary.to_path_buf())
        .await
        .map_err(|source| SshError::Spawn {
            program: binary.display().to_string(),
            source,
        })?;
    Ok(RemoteCommand::new(crate::channel::bootstrap_script(
        env!("CARGO_PKG_VERSION"),
        &sum,
        bytes.len() as u64,
    )))
}

/// The words of an sshd that allows no further session on a connection (`MaxSessions`).
fn session_refused(stderr: &str) -> bool {
    stderr.contains("Session open refused")
        || stderr.contains("administratively prohibited")
        || stderr.contains("open failed")
}

fn forward_refused(e: crate::channel::ChannelError) -> SshError {
    SshError::ForwardRefused {
        stderr: e.to_string(),
    }
}

/// Run the channel's bootstrap with `argv` (an ssh whose session runs it), upload `binary`
/// when the login node lacks it, and serve `channel exec` clients from `dir`. With `echo`,
/// ssh's stderr is passed on while it logs in.
async fn open_channel(
    argv: &[String],
    binary: &Path,
    dir: &Path,
    destination: &str,
    login: Option<&crate::auth::Asker>,
) -> Result<ChannelLink, SshError> {
    let mut cmd = process::command(argv, Kind::Helper);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(asker) = login {
        cmd.envs(asker.env());
    }
    let mut carrier = cmd.spawn().map_err(|source| SshError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let reader = carrier.stdout.take().expect("piped");
    let writer = carrier.stdin.take().expect("piped");
    let pipe = carrier.stderr.take().expect("piped");
    let echo = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(login.is_some()));
    let stderr = tokio::spawn(read_login_stderr(pipe, std::sync::Arc::clone(&echo)));
    let started =
        crate::channel::Channel::start_bootstrapped(reader, writer, binary, AUTH_TIMEOUT).await;
    echo.store(false, std::sync::atomic::Ordering::SeqCst);
    let channel = match started {
        Ok(c) => c,
        Err(e) => {
            let _ = carrier.start_kill();
            let _ = carrier.wait().await;
            let said = tokio::time::timeout(Duration::from_secs(2), stderr)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(SshError::MasterExited {
                destination: destination.to_string(),
                stderr: if said.trim().is_empty() {
                    e.to_string()
                } else {
                    said
                },
            });
        }
    };
    let socket = channel
        .serve_clients(dir)
        .map_err(|e| SshError::MasterExited {
            destination: destination.to_string(),
            stderr: e.to_string(),
        })?;
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pvlaunch".into());
    Ok(ChannelLink {
        channel,
        socket,
        program,
        carrier,
    })
}

/// The pid in `-O check`'s `Master running (pid=N)`.
fn check_pid(stderr: &str) -> Option<u32> {
    let at = stderr.find("pid=")?;
    let digits: String = stderr[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

use process::exists as process_exists;

/// The `controlpath` line of `ssh -G` (none when it is `none` or missing).
pub fn configured_control_path(config: &str) -> Option<PathBuf> {
    config.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key.eq_ignore_ascii_case("controlpath")
            && value.trim() != "none"
            && !value.trim().is_empty())
        .then(|| PathBuf::from(value.trim()))
    })
}

/// Where pvlaunch keeps a master for `target` between sessions: a 0700 folder of this user's
/// (`$XDG_RUNTIME_DIR/pvlaunch-masters`, else `/tmp/pvlaunch-masters-UID`), one socket per
/// destination, user, port and jump hosts.
pub fn kept_control_path(target: &Target) -> std::io::Result<PathBuf> {
    use sha2::Digest;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = crate::relay::effective_uid();
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir() && p.as_os_str().len() < 40)
        .map(|p| p.join("pvlaunch-masters"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("pvlaunch-masters-{uid}")));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private folder of this user (mode 0700): remove it",
            dir.display()
        )));
    }
    let key = format!(
        "{}\0{}\0{}\0{}\0{}",
        target.program,
        target.destination,
        target.user.as_deref().unwrap_or(""),
        target.port.map(|p| p.to_string()).unwrap_or_default(),
        target.jump_hosts.join(",")
    );
    let digest = sha2::Sha256::digest(key.as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(dir.join(name))
}

impl Master {
    /// Start the master and wait until it accepts requests (the user may be typing a password).
    /// `asker` says who answers ssh's questions ([`crate::auth`]). What ssh says while it logs
    /// in (a site's banner, a one-time code's instructions, a host key warning) is passed on to
    /// stderr, cleaned of terminal escapes; after that only its last lines are kept.
    pub async fn start(target: Target, asker: &crate::auth::Asker) -> Result<Master, SshError> {
        let argv = target.master_argv(asker.batch_mode());
        let (child, stderr, echo) = spawn_login(&argv, Kind::Helper, asker)?;
        let mut master = Master {
            target,
            owner: Owner::Session,
            child: Some(child),
            daemon: None,
            stderr: Some(stderr),
            opened: Default::default(),
            logged_in: true,
            channel: None,
        };
        let started = master.wait_ready().await;
        echo.store(false, std::sync::atomic::Ordering::SeqCst);
        started.map(|()| master)
    }

    /// One ssh connection with no connection sharing (`<Login multiplex="no">`, Windows'
    /// OpenSSH): its one session runs pvlaunch's channel (uploaded when missing), which carries
    /// every command and forward. One login, as with a master.
    pub async fn start_single(
        target: Target,
        asker: &crate::auth::Asker,
        binary: &Path,
        dir: &Path,
    ) -> Result<Master, SshError> {
        let argv = target.single_argv(asker.batch_mode(), &bootstrap_command(binary).await?);
        let link = open_channel(&argv, binary, dir, &target.destination, Some(asker)).await?;
        Ok(Master {
            target,
            owner: Owner::Session,
            child: None,
            daemon: None,
            stderr: None,
            opened: Default::default(),
            logged_in: true,
            channel: Some(link),
        })
    }

    /// Log in and keep the master in the background for `persist` once unused
    /// ([`Owner::Kept`]): the next session with the same target finds it ([`Master::adopt`])
    /// and needs no login.
    pub async fn start_kept(
        target: Target,
        asker: &crate::auth::Asker,
        persist: Duration,
    ) -> Result<Master, SshError> {
        let argv = target.master_argv_persisting(asker.batch_mode(), Some(persist));
        // The master must outlive pvlaunch.
        let (mut child, stderr, echo) = spawn_login(&argv, Kind::Detached, asker)?;
        // ssh forks once logged in (ControlPersist): the foreground process exits 0 then.
        let status = tokio::time::timeout(AUTH_TIMEOUT, child.wait()).await;
        echo.store(false, std::sync::atomic::Ordering::SeqCst);
        match status {
            Ok(Ok(status)) if status.success() => {}
            Ok(_) => {
                return Err(SshError::MasterExited {
                    destination: target.destination.clone(),
                    stderr: stderr.await.unwrap_or_default(),
                });
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(SshError::AuthTimeout {
                    destination: target.destination.clone(),
                    timeout: AUTH_TIMEOUT,
                });
            }
        }
        let destination = target.destination.clone();
        Master::adopt(target, Owner::Kept)
            .await
            .map(|m| Master {
                logged_in: true,
                ..m
            })
            .ok_or(SshError::MasterExited {
                destination,
                stderr: "the master went to the background but does not answer `ssh -O check`"
                    .into(),
            })
    }

    /// A master already running for `target` (its socket answers `-O check`), or `None`.
    pub async fn adopt(target: Target, owner: Owner) -> Option<Master> {
        if !target.control_path.exists() {
            return None;
        }
        let out = run(&target.check_argv(), None, COMMAND_TIMEOUT)
            .await
            .ok()?;
        if !out.success() {
            return None;
        }
        let pid = check_pid(&out.stderr)?;
        Some(Master {
            target,
            owner,
            child: None,
            daemon: Some(pid),
            stderr: None,
            opened: Default::default(),
            logged_in: false,
            channel: None,
        })
    }

    /// The user's own master for `target`, from their ssh configuration (`ssh -G`'s
    /// `controlpath`), when it is running.
    pub async fn users(target: &Target) -> Option<Master> {
        let out = run(&target.config_argv(), None, COMMAND_TIMEOUT)
            .await
            .ok()?;
        if !out.success() {
            return None;
        }
        let path = configured_control_path(&out.stdout)?;
        Master::adopt(target.through(path), Owner::User).await
    }

    /// Whether commands and forwards go through pvlaunch's channel.
    pub fn channelled(&self) -> bool {
        self.channel.is_some()
    }

    /// The argv that runs `command` (POSIX sh, quoted) on the login node as a local child
    /// process with its own stdin and stdout (the guard, the login relay): through the master,
    /// or through the channel.
    pub fn remote_argv(&self, command: &str) -> Vec<String> {
        match &self.channel {
            Some(link) => crate::channel::exec_argv(
                &link.program,
                &link.socket,
                RemoteCommand::new(command).wire(),
            ),
            None => self.target.remote_argv(command),
        }
    }

    /// Whether the login node refuses a second session on one connection (`MaxSessions 1`):
    /// one session is held open while another is tried.
    pub async fn sessions_limited(&self) -> bool {
        // It ends when its input does: nothing stays on the login node.
        let hold = self.target.remote_argv("echo up; exec cat > /dev/null");
        let mut cmd = process::command(&hold, Kind::Helper);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let Ok(mut holder) = cmd.spawn() else {
            return false;
        };
        let mut out = holder.stdout.take().expect("piped");
        let mut buf = [0u8; 3];
        let up = tokio::time::timeout(COMMAND_TIMEOUT, out.read_exact(&mut buf)).await;
        let limited = match up {
            Ok(Ok(_)) => match run(&self.target.remote_argv("true"), None, COMMAND_TIMEOUT).await {
                Ok(o) => !o.success() && session_refused(&o.stderr),
                Err(_) => false,
            },
            // The first session itself was refused or failed: nothing to learn here.
            _ => false,
        };
        drop(holder.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), holder.wait())
            .await
            .is_err()
        {
            let _ = holder.start_kill();
            let _ = holder.wait().await;
        }
        limited
    }

    /// Carry every later command and forward through a channel in one session over this
    /// master (for `MaxSessions 1`): `pvlaunch channel serve` on the login node, put there
    /// when missing. `dir` holds the local socket for `channel exec`.
    pub async fn into_channel(mut self, binary: &Path, dir: &Path) -> Result<Master, SshError> {
        let argv = self
            .target
            .remote_command_argv(&bootstrap_command(binary).await?);
        let link = open_channel(&argv, binary, dir, &self.target.destination, None).await?;
        self.channel = Some(link);
        Ok(self)
    }

    /// Whose the master is.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Whether this session logged in (a new master), rather than finding one running.
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// Until the master answers `-O check`, it exits, or [`AUTH_TIMEOUT`] passes.
    async fn wait_ready(&mut self) -> Result<(), SshError> {
        let master = self;
        let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            let exited = master
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                let stderr = match master.stderr.as_mut() {
                    Some(h) => h.await.unwrap_or_default(),
                    None => String::new(),
                };
                return Err(SshError::MasterExited {
                    destination: master.target.destination.clone(),
                    stderr,
                });
            }
            if master.target.control_path.exists() {
                let out = run(&master.target.check_argv(), None, COMMAND_TIMEOUT).await?;
                if out.success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                master.stop().await;
                return Err(SshError::AuthTimeout {
                    destination: master.target.destination.clone(),
                    timeout: AUTH_TIMEOUT,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The master's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id).or(self.daemon)
    }

    /// Whether the master is still running.
    pub fn alive(&mut self) -> bool {
        if let Some(link) = &mut self.channel {
            if !link.channel.alive() || !matches!(link.carrier.try_wait(), Ok(None)) {
                return false;
            }
            if self.child.is_none() && self.daemon.is_none() {
                // One connection and no master: the carrier is the connection.
                return true;
            }
        }
        match (&mut self.child, self.daemon) {
            (Some(child), _) => matches!(child.try_wait(), Ok(None)),
            (None, Some(pid)) => process_exists(pid),
            (None, None) => false,
        }
    }

    /// Wait until the master exits (the link dropped).
    pub async fn wait(&mut self) {
        if let Some(link) = &mut self.channel {
            tokio::select! {
                _ = link.channel.closed() => {}
                _ = link.carrier.wait() => {}
            }
            return;
        }
        match (&mut self.child, self.daemon) {
            (Some(child), _) => {
                let _ = child.wait().await;
            }
            (None, Some(pid)) => {
                while process_exists(pid) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            (None, None) => {}
        }
    }

    fn remember(&self, flag: &'static str, spec: String) {
        if let Ok(mut opened) = self.opened.lock() {
            opened.push((flag, spec));
        }
    }

    fn forget(&self, flag: &'static str, spec: &str) {
        if let Ok(mut opened) = self.opened.lock() {
            opened.retain(|(f, s)| !(*f == flag && s == spec));
        }
    }

    /// Run a (quoted) POSIX shell command line on the login node, under `/bin/sh`.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        self.exec_command(&RemoteCommand::new(command), stdin, timeout)
            .await
    }

    /// [`Master::exec`] for a command already wrapped. Errors name the script as written;
    /// a gone master is [`SshError::MasterGone`].
    pub async fn exec_command(
        &self,
        command: &RemoteCommand,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        if let Some(link) = &self.channel {
            return link
                .channel
                .exec_command(command, stdin, timeout)
                .await
                .map_err(|e| e.into_ssh(&self.target.destination));
        }
        let out = run_labelled(
            &self.target.remote_command_argv(command),
            &script_label(command.script()),
            stdin,
            timeout,
        )
        .await
        .map_err(|e| match e {
            SshError::Timeout { timeout, .. } => SshError::Timeout {
                what: command.script().to_owned(),
                timeout,
            },
            e => e,
        })?;
        if master_gone(&out) {
            return Err(SshError::MasterGone {
                destination: self.target.destination.clone(),
                what: command.script().to_owned(),
            });
        }
        Ok(out)
    }

    /// Open `-R [bind:]remote:localhost:local`; returns the port sshd bound.
    pub async fn forward_remote(
        &self,
        bind: Option<&str>,
        remote: u16,
        local: u16,
    ) -> Result<u16, SshError> {
        if let Some(link) = &self.channel {
            return link
                .channel
                .forward_remote_tcp(bind, remote, local)
                .await
                .map_err(forward_refused);
        }
        let out = run(
            &self.target.remote_forward_argv(bind, remote, local),
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
        if !out.success() {
            return Err(SshError::ForwardRefused { stderr: out.stderr });
        }
        let port = if remote != 0 {
            remote
        } else {
            out.stdout
                .trim()
                .parse::<u16>()
                .map_err(|_| SshError::ForwardRefused {
                    stderr: format!("ssh printed no port: {:?} {:?}", out.stdout, out.stderr),
                })?
        };
        self.remember("-R", remote_spec(bind, port, local));
        Ok(port)
    }

    /// Close a forward opened by [`Master::forward_remote`].
    pub async fn cancel_forward_remote(
        &self,
        bind: Option<&str>,
        remote: u16,
        local: u16,
    ) -> Result<(), SshError> {
        if let Some(link) = &self.channel {
            let forward = crate::channel::Forward::RemoteTcp {
                bind: bind.map(str::to_string),
                port: remote,
            };
            return link.channel.cancel(&forward).await.map_err(forward_refused);
        }
        forward_request(&self.target.cancel_remote_forward_argv(bind, remote, local)).await?;
        self.forget("-R", &remote_spec(bind, remote, local));
        Ok(())
    }

    /// Open `-R PATH:localhost:local`, a Unix socket on the login node.
    pub async fn forward_remote_socket(&self, path: &str, local: u16) -> Result<(), SshError> {
        if let Some(link) = &self.channel {
            return link
                .channel
                .forward_remote_unix(path, local)
                .await
                .map_err(forward_refused);
        }
        forward_request(&self.target.remote_socket_forward_argv(path, local)).await?;
        self.remember("-R", format!("{path}:localhost:{local}"));
        Ok(())
    }

    /// Open `-L 127.0.0.1:local:host:port`.
    pub async fn forward_local(&self, local: u16, host: &str, port: u16) -> Result<(), SshError> {
        if let Some(link) = &self.channel {
            return link
                .channel
                .forward_local(local, host, port)
                .await
                .map(|_| ())
                .map_err(forward_refused);
        }
        forward_request(&self.target.local_forward_argv(local, host, port)).await?;
        self.remember("-L", format!("127.0.0.1:{local}:{host}:{port}"));
        Ok(())
    }

    /// The end of the session. A master of this session is closed (and with it every forward
    /// and session): `-O exit`, then signals. A master that stays (kept, or the user's) only
    /// loses the forwards this session opened.
    pub async fn stop(&mut self) {
        if let Some(mut link) = self.channel.take() {
            // The channel's end: the login node's server hangs up every command it ran and
            // closes every listener; then its session ends.
            let _ = tokio::time::timeout(Duration::from_secs(5), link.channel.close()).await;
            let _ = std::fs::remove_file(&link.socket);
            if tokio::time::timeout(Duration::from_secs(5), link.carrier.wait())
                .await
                .is_err()
            {
                process::stop(&mut link.carrier, Duration::from_secs(2)).await;
            }
        }
        if self.owner != Owner::Session {
            let opened = self.opened.lock().map(|o| o.clone()).unwrap_or_default();
            for (flag, spec) in opened {
                let argv = self.target.control("cancel", Some((flag, spec.clone())));
                if let Err(e) = forward_request(&argv).await {
                    tracing::warn!("cancel the forward {flag} {spec}: {e}");
                }
            }
            if let Ok(mut o) = self.opened.lock() {
                o.clear();
            }
            return;
        }
        if self.alive()
            && let Some(child) = self.child.as_mut()
        {
            let _ = run(&self.target.exit_argv(), None, Duration::from_secs(5)).await;
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                process::stop(child, Duration::from_secs(2)).await;
            }
        }
        let _ = std::fs::remove_file(&self.target.control_path);
    }
}

/// A private folder (mode 0700) for the control socket; short, because socket paths are
/// limited to about 100 bytes.
/// A forward request (`-O forward` or `-O cancel`) to the master: refused unless ssh says yes.
async fn forward_request(argv: &[String]) -> Result<(), SshError> {
    let out = run(argv, None, COMMAND_TIMEOUT).await?;
    if out.success() {
        Ok(())
    } else {
        Err(SshError::ForwardRefused { stderr: out.stderr })
    }
}

pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir() && p.as_os_str().len() < 40)
        .unwrap_or_else(std::env::temp_dir);
    use std::os::unix::fs::PermissionsExt;
    // Created with this mode (whatever the umask): nobody else may see or use the socket.
    tempfile::Builder::new()
        .prefix("pvlaunch-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

/// The socket path inside a private folder.
pub fn control_path(dir: &Path) -> PathBuf {
    dir.join("cm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_masters_pid_and_the_users_control_path_are_read() {
        assert_eq!(check_pid("Master running (pid=4242)\r\n"), Some(4242));
        assert_eq!(check_pid("Control socket connect(x): No such file"), None);
        let config = "user pvtest\ncontrolmaster auto\ncontrolpath /home/u/.ssh/cm-ab12\n";
        assert_eq!(
            configured_control_path(config),
            Some(PathBuf::from("/home/u/.ssh/cm-ab12"))
        );
        assert_eq!(configured_control_path("controlpath none\n"), None);
        assert_eq!(configured_control_path("user u\n"), None);
    }

    #[test]
    fn a_kept_master_persists_for_the_time_asked() {
        let a = target().master_argv_persisting(false, Some(Duration::from_secs(8 * 3600)));
        assert!(a.contains(&"ControlPersist=28800s".to_string()), "{a:?}");
        let b = target().master_argv(true);
        assert!(b.contains(&"ControlPersist=no".to_string()), "{b:?}");
        assert!(
            b.contains(&"NumberOfPasswordPrompts=1".to_string()),
            "{b:?}"
        );
    }

    #[test]
    fn the_private_dir_is_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = private_dir().unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    fn target() -> Target {
        Target {
            program: "ssh".into(),
            destination: "cluster".into(),
            user: Some("alice".into()),
            port: None,
            jump_hosts: vec!["gate1".into(), "gate2".into()],
            control_path: "/run/user/1/pvlaunch-x/cm".into(),
            extra_options: vec![],
        }
    }

    #[test]
    fn master_options() {
        let a = target().master_argv(true).join(" ");
        assert_eq!(
            a,
            "ssh -S /run/user/1/pvlaunch-x/cm -M -N -T -o ControlPersist=no -o ServerAliveInterval=5 \
             -o ServerAliveCountMax=3 -o ExitOnForwardFailure=yes -o NumberOfPasswordPrompts=1 -o BatchMode=yes -l alice -J gate1,gate2 -- cluster"
        );
        assert!(!target().master_argv(false).join(" ").contains("BatchMode"));
    }

    #[test]
    fn forwards_and_remote_commands() {
        let t = target();
        assert_eq!(
            t.remote_forward_argv(None, 0, 40000)[3..7].join(" "),
            "-O forward -R 0:localhost:40000"
        );
        assert_eq!(
            t.remote_forward_argv(Some("0.0.0.0"), 0, 1)[6],
            "0.0.0.0:0:localhost:1"
        );
        assert_eq!(
            t.remote_forward_argv(Some("::"), 5, 1)[6],
            "[::]:5:localhost:1"
        );
        assert_eq!(
            t.local_forward_argv(5000, "node1", 11111)[6],
            "127.0.0.1:5000:node1:11111"
        );
        let r = t.remote_argv("squeue -h -j 42");
        assert_eq!(
            r.last().unwrap(),
            &crate::quote::for_any_login_shell("squeue -h -j 42").unwrap()
        );
        assert_eq!(r[r.len() - 3], "--");
        assert!(r.contains(&"BatchMode=yes".to_string()));
    }

    #[test]
    fn short_forms_for_the_log() {
        let t = target();
        assert_eq!(short_form(&t.check_argv()), "ssh -O check");
        assert_eq!(
            short_form(&t.remote_forward_argv(None, 0, 40000)),
            "ssh -O forward -R 0:localhost:40000"
        );
        // Remote commands are logged by their script, not by the wire form sent to the shell.
        assert_eq!(script_label("squeue -h -j 42\n"), "squeue -h -j 42 ");
        assert_eq!(short_form(&t.master_argv(false)), "ssh -M cluster");
        let long = script_label(&"x".repeat(500));
        assert!(long.len() <= 120 && long.ends_with(" […]"), "{long}");
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_is_bounded_and_the_command_never_blocks() {
        // 50 MB on stdout, 50 MB then a last line on stderr.
        let out = run(
            &sh("head -c 50000000 /dev/zero | tr '\\0' a; \
                 head -c 50000000 /dev/zero >&2; echo the-end >&2; exit 3"),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout.len(), STDOUT_LIMIT);
        assert!(out.stdout.bytes().all(|b| b == b'a'));
        assert_eq!(out.stdout_dropped, 50_000_000 - STDOUT_LIMIT as u64);
        assert_eq!(out.stderr.len(), STDERR_LIMIT);
        assert!(out.stderr.ends_with("the-end\n"));
        assert_eq!(out.stderr_dropped, 50_000_008 - STDERR_LIMIT as u64);
        assert!(out.truncated());

        let small = run(&sh("echo hi; echo oops >&2"), None, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            (small.stdout.as_str(), small.stderr.as_str()),
            ("hi\n", "oops\n")
        );
        assert!(!small.truncated());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_is_fed_and_timeouts_fire() {
        let out = run(
            &sh("wc -c"),
            Some(&[b'x'; 300_000]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.stdout.trim(), "300000");
        let err = run(&sh("sleep 5"), None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, SshError::Timeout { .. }), "{err}");
    }

    #[test]
    fn multiplexed_commands_never_route_a_new_login() {
        let r = target().remote_argv("hostname").join(" ");
        assert_eq!(
            r,
            format!(
                "ssh -S /run/user/1/pvlaunch-x/cm -T -o ControlMaster=no -o BatchMode=yes \
                 -o {MASTER_ONLY_PROXY} -l alice -- cluster {}",
                crate::quote::for_any_login_shell("hostname").unwrap()
            )
        );
        // The master itself still goes through the jump hosts.
        assert!(target().master_argv(true).contains(&"-J".to_string()));
    }

    #[test]
    fn remote_command_keeps_the_script_for_messages() {
        let c = RemoteCommand::new("echo 'a b'");
        assert_eq!(c.script(), "echo 'a b'");
        assert_eq!(c.to_string(), "echo 'a b'");
        assert_ne!(c.wire(), c.script());
        // A NUL stays in the wire form: spawning it fails instead of running another script.
        assert!(RemoteCommand::new("a\0b").wire().contains('\0'));
    }

    /// sshd runs the command string with the login shell (`$SHELL -c STRING`): a POSIX loop
    /// like the guard's must work under tcsh and fish too.
    #[test]
    fn remote_commands_run_under_sh_whatever_the_login_shell() {
        use std::io::Write as _;
        let script = "while IFS= read -r line; do [ \"$line\" = keep ] && exit 3; \
                      printf 'got %s\\n' \"$line\"; done; echo end";
        let wire = target().remote_argv(script).pop().unwrap();
        let mut tried = 0;
        for shell in ["sh", "bash", "dash", "zsh", "csh", "tcsh", "fish"] {
            let Ok(path) = which::which(shell) else {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{shell} is missing (scripts/install-deps installs it)"
                );
                eprintln!("SKIPPED for {shell}: not installed (scripts/install-deps installs it)");
                continue;
            };
            tried += 1;
            for (input, code, stdout) in [
                ("a b\n$HOME\n", 0, "got a b\ngot $HOME\nend\n"),
                ("x\nkeep\ny\n", 3, "got x\n"),
            ] {
                let mut child = std::process::Command::new(&path)
                    .arg("-c")
                    .arg(&wire)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                assert_eq!(
                    (
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout).as_ref()
                    ),
                    (Some(code), stdout),
                    "{shell}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        assert!(tried > 0);
    }

    /// With the master's socket gone (never made, or left stale), a multiplexed command fails
    /// at once and says so, without connecting anywhere: not to the host, not to a jump host,
    /// not to a ProxyJump from ssh_config.
    #[tokio::test]
    async fn without_the_master_a_command_fails_fast_and_opens_no_login() {
        if which::which("ssh").is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "ssh is missing"
            );
            eprintln!("SKIPPED: no ssh");
            return;
        }
        // Loopback listeners that would see any connection ssh tried.
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let jump = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg_jump = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for l in [&host, &jump, &cfg_jump] {
            l.set_nonblocking(true).unwrap();
        }
        let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            format!(
                "Host cluster\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump 127.0.0.1:{}\n",
                port(&host),
                port(&cfg_jump)
            ),
        )
        .unwrap();
        let stale = dir.path().join("stale");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        for (control_path, destination, jumps) in [
            (dir.path().join("missing"), "127.0.0.1".to_string(), vec![]),
            (
                stale.clone(),
                "127.0.0.1".to_string(),
                vec![format!("127.0.0.1:{}", port(&jump))],
            ),
            (stale, "cluster".to_string(), vec![]),
        ] {
            let t = Target {
                program: "ssh".into(),
                destination,
                user: None,
                port: Some(port(&host)),
                jump_hosts: jumps,
                control_path,
                extra_options: vec![
                    format!("UserKnownHostsFile={}", dir.path().join("kh").display()),
                    "ConnectTimeout=5".into(),
                ],
            };
            let mut argv = t.remote_argv("echo hi");
            argv.splice(1..1, ["-F".to_string(), config.display().to_string()]);
            let started = std::time::Instant::now();
            let out = run(&argv, None, Duration::from_secs(20)).await.unwrap();
            assert!(master_gone(&out), "{argv:?}: {out:?}");
            assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
            for l in [&host, &jump, &cfg_jump] {
                assert!(
                    l.accept().is_err(),
                    "ssh connected to port {} for {argv:?}",
                    port(l)
                );
            }
        }
    }
}
