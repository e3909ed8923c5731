//! The sandbox cluster from a test: hosts `desk`, `gate`, `login`, `node1`, `node2` built by
//! `tests/sandbox/sandbox.sh` (see docs/sandbox.md).
//!
//! ```ignore
//! mod common;
//! use common::sandbox::{self, Host, SiteConfig};
//!
//! #[test]
//! fn something_end_to_end() {
//!     let Some(sb) = sandbox::shared() else { return }; // skipped loudly without root
//!     let _site = sb.configure(SiteConfig::default()); // login's sshd and firewalls as needed
//!     let out = sb.run(Host::Desk, "ssh login hostname").assert_success();
//!     assert_eq!(out.stdout.trim(), "login");
//!     sb.assert_no_leaks(); // every end-to-end test ends with this
//! }
//! ```
//!
//! One instance is shared by all tests of a test binary: brought up fresh on first use and torn
//! down when the binary exits. `PVLAUNCH_SANDBOX=ID` reuses an instance that a developer brought
//! up with `scripts/sandbox --id ID up` (never torn down by the tests);
//! `PVLAUNCH_SANDBOX_KEEP=1` leaves the binary's own instance up for inspection.
//!
//! Without root or network namespaces the tests print a loud SKIPPED line and return; with
//! `CI=true` they panic instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default limit for one command run on a host.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `assert_no_leaks` lets leftovers exit before it complains.
pub const LEAK_GRACE: Duration = Duration::from_secs(15);
/// Where every instance keeps its state (`/run/pvsandbox/ID`).
pub const STATE_ROOT: &str = "/run/pvsandbox";
/// The unprivileged user that runs everything on every host.
pub const TEST_USER: &str = "pvtest";
/// The test user's home directory on every host (desk has its own, the others share one).
pub const HOME: &str = "/home/pvtest";
/// The second unprivileged user, on login, node1 and node2 only: another user of the cluster,
/// for the attack suite (tests/attack.rs).
pub const ATTACK_USER: &str = "pvattack";
/// The second user's home on login, node1 and node2 (one folder, shared by them).
pub const ATTACK_HOME: &str = "/home/pvattack";
/// One-time codes after the key: what most sites ask (`AuthenticationMethods` at sshd).
pub const OTP_AFTER_KEY: &str = "publickey,keyboard-interactive";
/// One-time codes instead of the key, like a site that asks for a password and a code.
pub const OTP_ONLY: &str = "keyboard-interactive";
/// The length of a one-time code's time step (TOTP, RFC 6238).
pub const OTP_STEP_SECS: u64 = 30;
/// How many steps before or after the current one pam_oath accepts (`window=` in
/// tests/sandbox/otp.sh): [`Sandbox::otp_code`] never hands out a step further ahead.
pub const OTP_WINDOW: u64 = 60;
/// The prompt of pam_oath at sshd, as ssh shows it: `(pvtest@login) One-time password (OATH)
/// for `pvtest':`.
pub const OTP_PROMPT: &str = "One-time password (OATH) for";

/// A host of the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    /// The scientist's workstation: ParaView client, pvpython, Xvfb (`DISPLAY=:0`), ssh.
    Desk,
    /// An ssh gateway in front of login (ProxyJump, two hops).
    Gate,
    /// The cluster's front end: sshd, slurmctld, sbatch/squeue/scancel/sacct.
    Login,
    /// Compute node: slurmd, pvserver, mpiexec.
    Node1,
    /// Compute node: slurmd, pvserver, mpiexec.
    Node2,
}

impl Host {
    pub const ALL: [Host; 5] = [
        Host::Desk,
        Host::Gate,
        Host::Login,
        Host::Node1,
        Host::Node2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Host::Desk => "desk",
            Host::Gate => "gate",
            Host::Login => "login",
            Host::Node1 => "node1",
            Host::Node2 => "node2",
        }
    }

    /// The host's address on the sandbox's network (also in every host's /etc/hosts).
    pub fn addr(self) -> &'static str {
        match self {
            Host::Desk => "10.77.0.10",
            Host::Gate => "10.77.0.11",
            Host::Login => "10.77.0.12",
            Host::Node1 => "10.77.0.21",
            Host::Node2 => "10.77.0.22",
        }
    }

    /// Whether an sshd runs there.
    pub fn has_sshd(self) -> bool {
        self != Host::Desk
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a command printed and how it ended.
#[derive(Clone, Debug)]
pub struct Output {
    /// What ran, for messages.
    pub what: String,
    /// Exit code; `None` when killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything the command printed unless it exited 0.
    #[track_caller]
    pub fn assert_success(self) -> Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics unless the command ran to completion and exited non-zero.
    #[track_caller]
    pub fn assert_failure(self) -> Self {
        assert!(
            !self.success() && !self.timed_out,
            "expected a failure:\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.timed_out {
            "timed out".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            }
        };
        writeln!(f, "$ {}\n  ({how} after {:.2?})", self.what, self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Print a line straight to the test binary's stderr, past libtest's output capture, so timings
/// show in CI logs even for passing tests.
pub fn report(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

/// POSIX shell quoting: `'...'` with embedded quotes escaped.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Poll `f` until it returns `Some`, for at most `timeout`; panics naming `what` on timeout.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    match try_wait_for(timeout, f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Poll `f` until it returns `Some` or `timeout` passes (then `None`).
pub fn try_wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Firewall mode of the site (see docs/sandbox.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Firewall {
    /// desk reaches login:22 and gate:22; login reaches desk.
    #[default]
    Direct,
    /// desk reaches gate:22 only; gate reaches login; login does not reach desk.
    Gate,
    /// As [`Firewall::Direct`], but compute nodes reach login on slurmctld's port (6817)
    /// only: no ssh, forward or relay port of login from the nodes.
    Isolated,
}

impl Firewall {
    fn name(self) -> &'static str {
        match self {
            Firewall::Direct => "direct",
            Firewall::Gate => "gate",
            Firewall::Isolated => "isolated",
        }
    }
}

/// The part of the site a test depends on: firewall mode and sshd settings that differ from
/// OpenSSH's defaults. Tests holding equal configurations run side by side; a test that needs a
/// different one waits until they are done (sshd restarts would break their connections).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteConfig {
    pub firewall: Firewall,
    pub sshd: BTreeMap<Host, BTreeMap<String, String>>,
    /// The test user's login shell per host, where it is not /bin/bash.
    pub login_shell: BTreeMap<Host, String>,
    /// One-time codes at sshd (login, gate): the host's `AuthenticationMethods`
    /// ([`OTP_AFTER_KEY`] or [`OTP_ONLY`]). Compute nodes reach login with the key alone.
    pub otp: BTreeMap<Host, String>,
    /// desk's key pair of the test user encrypted with this passphrase (no agent runs).
    pub key_passphrase: Option<String>,
    /// Hosts whose host keys desk's `known_hosts` lacks.
    pub forget_host_keys: BTreeSet<Host>,
}

impl SiteConfig {
    /// Set one sshd option on `host`, e.g. `(Host::Login, "GatewayPorts", "clientspecified")`.
    /// Known keys: GatewayPorts, AllowTcpForwarding, AllowStreamLocalForwarding, PermitOpen,
    /// PermitListen, ClientAliveInterval, MaxSessions, MaxStartups.
    pub fn sshd(mut self, host: Host, key: &str, value: &str) -> Self {
        self.sshd
            .entry(host)
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// The test user's login shell on `host` (what sshd runs remote commands with), e.g.
    /// `(Host::Login, "/usr/bin/tcsh")`.
    pub fn login_shell(mut self, host: Host, shell: &str) -> Self {
        self.login_shell.insert(host, shell.to_string());
        self
    }

    pub fn firewall(mut self, mode: Firewall) -> Self {
        self.firewall = mode;
        self
    }

    /// One-time codes at `host`'s sshd (`Host::Login` or `Host::Gate`): pam_oath asks for a
    /// TOTP code (get one with [`Sandbox::otp_code`]) after the key (`methods` `None` or
    /// [`OTP_AFTER_KEY`]) or instead of it ([`OTP_ONLY`]).
    #[track_caller]
    pub fn otp(mut self, host: Host, methods: Option<&str>) -> Self {
        assert!(
            matches!(host, Host::Login | Host::Gate),
            "one-time codes exist on login and gate only, not on {host}"
        );
        let methods = methods.unwrap_or(OTP_AFTER_KEY);
        assert!(
            methods == OTP_AFTER_KEY || methods == OTP_ONLY,
            "methods {methods:?} are neither {OTP_AFTER_KEY:?} nor {OTP_ONLY:?}"
        );
        self.otp.insert(host, methods.to_string());
        self
    }

    /// desk's `~/.ssh/id_ed25519` encrypted with `passphrase` (the same key pair; no agent), so
    /// ssh asks `Enter passphrase for key '/home/pvtest/.ssh/id_ed25519':`.
    #[track_caller]
    pub fn key_passphrase(mut self, passphrase: &str) -> Self {
        assert!(
            !passphrase.is_empty(),
            "an empty passphrase is no passphrase"
        );
        self.key_passphrase = Some(passphrase.to_string());
        self
    }

    /// desk's `~/.ssh/known_hosts` without `host`'s key, so ssh asks `The authenticity of host
    /// 'login (10.77.0.12)' can't be established.`
    #[track_caller]
    pub fn forget_host_key(mut self, host: Host) -> Self {
        assert!(host.has_sshd(), "{host} has no sshd, hence no host key");
        self.forget_host_keys.insert(host);
        self
    }
}

struct SiteState {
    /// `None` while unknown (a change failed half way, or somebody else's instance).
    current: Option<SiteConfig>,
    busy: bool,
}

impl SiteState {
    fn new(current: Option<SiteConfig>) -> (Mutex<SiteState>, Condvar) {
        (
            Mutex::new(SiteState {
                current,
                busy: false,
            }),
            Condvar::new(),
        )
    }
}

/// A test's exclusive use of the sandbox, configured as asked, until dropped. If the test
/// panics, dropping it also kills the test user's processes and jobs (`scripts/sandbox reset`),
/// so one failure does not cascade into the next test's leak check.
pub struct SiteGuard<'a> {
    sb: &'a Sandbox,
}

impl SiteGuard<'_> {
    /// Change the configuration while keeping the sandbox.
    pub fn set(&mut self, cfg: SiteConfig) {
        self.sb.change_site(cfg);
    }
}

impl Drop for SiteGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = sandbox_cmd(&self.sb.id, &["reset"], Duration::from_secs(120));
            if !out.success() {
                eprintln!(
                    "sandbox {}: reset after a failed test failed:\n{out}",
                    self.sb.id
                );
            }
        }
        let mut st = self.sb.site.0.lock().unwrap_or_else(|e| e.into_inner());
        st.busy = false;
        self.sb.site.1.notify_all();
    }
}

/// A command still running on a host; its output is collected as it comes. Dropping it kills
/// the command's process group.
pub struct Background {
    what: String,
    child: Option<Child>,
    started: Instant,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Whether the command is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Wait until stdout or stderr contains `needle`; panics (with the output so far) on timeout
    /// or if the command ends first.
    #[track_caller]
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let found = try_wait_for(timeout, || {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Some(true);
            }
            if !self.running() {
                return Some(false);
            }
            None
        });
        match found {
            Some(true) => {}
            Some(false) => panic!(
                "{} ended before printing {needle:?}:\n{}",
                self.what,
                self.snapshot(None, false)
            ),
            None => panic!(
                "{} did not print {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.snapshot(None, true)
            ),
        }
    }

    /// Wait for the command to end (killing it after `timeout`) and return its output.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let mut child = self.child.take().expect("child");
        let status = wait_child(&mut child, timeout);
        let timed_out = status.is_none();
        if timed_out {
            kill_group(&child);
            let _ = child.wait();
        }
        let code = status.and_then(|s| s.code());
        self.finish(code, timed_out)
    }

    /// Kill the command's process group and return what it printed.
    pub fn kill(mut self) -> Output {
        let mut child = self.child.take().expect("child");
        kill_group(&child);
        let status = child.wait().ok();
        self.finish(status.and_then(|s| s.code()), false)
    }

    fn finish(&mut self, code: Option<i32>, timed_out: bool) -> Output {
        join_readers(std::mem::take(&mut self.readers));
        Output {
            what: self.what.clone(),
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out,
            elapsed: self.started.elapsed(),
        }
    }

    fn snapshot(&self, code: Option<i32>, timed_out: bool) -> Output {
        Output {
            what: self.what.clone(),
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
            timed_out,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// One sandbox instance.
pub struct Sandbox {
    id: String,
    owned: bool,
    site: (Mutex<SiteState>, Condvar),
    /// Per host, the last one-time-code step handed out by [`Sandbox::otp_code`].
    otp_steps: Mutex<BTreeMap<Host, u64>>,
    _lock: Option<File>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("owned", &self.owned)
            .finish()
    }
}

/// `Err` keeps the first failure, so the other tests report it instead of trying again.
static SHARED: OnceLock<Result<Option<Sandbox>, String>> = OnceLock::new();

/// The instance shared by every test of this binary, up and healthy; `None` (after a loud
/// SKIPPED line) when this machine cannot run it. Panics under `CI=true` instead of skipping,
/// and when bringing it up fails.
#[track_caller]
pub fn shared() -> Option<&'static Sandbox> {
    let state = SHARED.get_or_init(|| {
        std::panic::catch_unwind(|| {
            if !prerequisites_or_skip("the sandbox cluster") {
                return None;
            }
            Some(match std::env::var("PVLAUNCH_SANDBOX") {
                Ok(id) if !id.is_empty() => Sandbox::reuse(&id),
                _ => {
                    let sb = Sandbox::start_fresh(&instance_id('t'));
                    if std::env::var("PVLAUNCH_SANDBOX_KEEP").as_deref() == Ok("1") {
                        report(&format!(
                            "sandbox {id}: PVLAUNCH_SANDBOX_KEEP=1, left up; remove it with: \
                             scripts/sandbox --id {id} down",
                            id = sb.id
                        ));
                    } else {
                        register_teardown(&sb.id);
                    }
                    sb
                }
            })
        })
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "bringing up the sandbox panicked".to_string())
        })
    });
    match state {
        Ok(sb) => sb.as_ref(),
        Err(msg) => panic!("{msg}"),
    }
}

/// Whether this machine can run a sandbox (root, network namespaces, nsenter/unshare). When it
/// cannot, prints a loud SKIPPED line naming `what` and returns false; under `CI=true` panics.
pub fn prerequisites_or_skip(what: &str) -> bool {
    let Err(reason) = prerequisites() else {
        return true;
    };
    let msg = format!("SKIPPED: {what} needs {reason}");
    let bar = "!".repeat(msg.len().min(100));
    // Past libtest's capture: a skipped test passes, and its reason must still show.
    report(&format!("\n{bar}\n{msg}\n{bar}\n"));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}; CI=true makes this a failure");
    }
    false
}

fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("root (network namespaces, nftables, sshd and Slurm daemons)".into());
    }
    let ok = Command::new("unshare")
        .args(["--net", "--uts", "--mount", "--pid", "--fork", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err("network, UTS, mount and pid namespaces (`unshare --net --uts --mount --pid --fork true` failed)".into());
    }
    Ok(())
}

/// A stable instance id for this test binary in this checkout: `prefix` + 6 hex digits.
pub fn instance_id(prefix: char) -> String {
    let mut h = DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut h);
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .split('-')
        .next()
        .unwrap_or_default()
        .hash(&mut h);
    format!("{prefix}{:06x}", h.finish() & 0xff_ffff)
}

/// The driver script (`scripts/sandbox` forwards to it).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox/sandbox.sh")
}

/// Run `sandbox.sh --id ID ARGS...` with a time limit.
pub fn sandbox_cmd(id: &str, args: &[&str], timeout: Duration) -> Output {
    sandbox_cmd_env(id, args, &[], timeout)
}

/// [`sandbox_cmd`] with extra environment variables (e.g. `PVSANDBOX_SLURM_CONF_EXTRA`).
pub fn sandbox_cmd_env(id: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg("--id").arg(id).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(
        cmd,
        format!("scripts/sandbox --id {id} {}", args.join(" ")),
        None,
        timeout,
    )
}

static TEARDOWN_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn teardown_at_exit() {
    let ids = TEARDOWN_IDS.lock().map(|v| v.clone()).unwrap_or_default();
    for id in ids {
        let out = sandbox_cmd(&id, &["down"], Duration::from_secs(120));
        if !out.success() {
            eprintln!("sandbox {id}: teardown failed:\n{out}");
        }
    }
}

fn register_teardown(id: &str) {
    let mut ids = TEARDOWN_IDS.lock().unwrap();
    if ids.is_empty() {
        // SAFETY: registers a plain extern "C" function; it runs once at process exit.
        unsafe {
            libc::atexit(teardown_at_exit);
        }
    }
    ids.push(id.to_string());
}

/// Hold an exclusive lock on `CARGO_TARGET_TMPDIR/sandbox-ID.lock` for the life of the process,
/// so two runs of the same test binary never share (and tear down) one instance.
fn process_lock(id: &str) -> File {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
    let path = dir.join(format!("sandbox-{id}.lock"));
    let f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "sandbox {id}: another run of this test binary holds {}; waiting",
            path.display()
        );
        // SAFETY: as above, blocking this time.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    }
    f
}

impl Sandbox {
    /// Tear down any old instance `id` and bring up a new one; panics (with the failing step
    /// and the daemon's log tail) if that fails. Not torn down on drop: call [`Sandbox::down`].
    pub fn start_fresh(id: &str) -> Sandbox {
        let lock = process_lock(id);
        let down = sandbox_cmd(id, &["down"], Duration::from_secs(120));
        assert!(
            down.success(),
            "removing an old sandbox {id} failed:\n{down}"
        );
        let up = sandbox_cmd(id, &["up"], Duration::from_secs(1800));
        assert!(up.success(), "sandbox {id} did not come up:\n{up}");
        let steps: String = up
            .stderr
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| format!("{l}\n"))
            .collect();
        report(&format!("sandbox {id} up:\n{}", steps.trim_end()));
        Sandbox {
            id: id.to_string(),
            owned: true,
            site: SiteState::new(Some(SiteConfig::default())),
            otp_steps: Mutex::new(BTreeMap::new()),
            _lock: Some(lock),
        }
    }

    /// Use an instance somebody else brought up (`up` is idempotent: it is built if missing).
    pub fn reuse(id: &str) -> Sandbox {
        let up = sandbox_cmd(id, &["up"], Duration::from_secs(1800));
        assert!(up.success(), "sandbox {id} is not usable:\n{up}");
        // The site's configuration is unknown: the first `configure` sets all of it.
        Sandbox {
            id: id.to_string(),
            owned: false,
            site: SiteState::new(None),
            otp_steps: Mutex::new(BTreeMap::new()),
            _lock: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `/run/pvsandbox/ID`: logs in `log/`, homes in `home/desk` and `home/cluster`.
    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.id)
    }

    /// Where the cluster's shared home (`/home/pvtest` on gate, login and nodes) lives on this
    /// machine.
    pub fn cluster_home(&self) -> PathBuf {
        self.state_dir().join("home/cluster")
    }

    /// Where desk's `/home/pvtest` lives on this machine.
    pub fn desk_home(&self) -> PathBuf {
        self.state_dir().join("home/desk")
    }

    /// Run a shell command line as the test user on `host` (from its home, clean environment,
    /// `DISPLAY=:0` on desk), with [`RUN_TIMEOUT`].
    pub fn run(&self, host: Host, cmd: &str) -> Output {
        self.run_with(host, cmd, false, None, RUN_TIMEOUT)
    }

    /// [`Sandbox::run`] with a time limit; on timeout the command's process group is killed.
    pub fn run_timeout(&self, host: Host, cmd: &str, timeout: Duration) -> Output {
        self.run_with(host, cmd, false, None, timeout)
    }

    /// Run a shell command line as root on `host`.
    pub fn run_root(&self, host: Host, cmd: &str) -> Output {
        self.run_with(host, cmd, true, None, RUN_TIMEOUT)
    }

    /// Run with `stdin` fed to the command.
    pub fn run_stdin(&self, host: Host, cmd: &str, stdin: &[u8]) -> Output {
        self.run_with(host, cmd, false, Some(stdin), RUN_TIMEOUT)
    }

    fn exec_command(&self, host: Host, cmd: &str, root: bool) -> Command {
        let mut c = Command::new("bash");
        c.arg(script()).arg("--id").arg(&self.id).arg("exec");
        if root {
            c.arg("--root");
        }
        c.arg(host.name()).arg("--").arg(cmd);
        c
    }

    fn exec_as_command(&self, user: &str, host: Host, cmd: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .arg("--id")
            .arg(&self.id)
            .arg("exec")
            .arg("--user")
            .arg(user)
            .arg(host.name())
            .arg("--")
            .arg(cmd);
        c
    }

    /// Run a shell command line as `user` ([`TEST_USER`] or [`ATTACK_USER`], the latter on
    /// login, node1 and node2 only) on `host`, from that user's home, with [`RUN_TIMEOUT`].
    pub fn run_as(&self, user: &str, host: Host, cmd: &str) -> Output {
        run_command(
            self.exec_as_command(user, host, cmd),
            format!("[{user}@{host}] {cmd}"),
            None,
            RUN_TIMEOUT,
        )
    }

    /// Start a shell command line as `user` on `host` and return at once (see [`Sandbox::run_as`]).
    pub fn spawn_as(&self, user: &str, host: Host, cmd: &str) -> Background {
        spawn_command(
            self.exec_as_command(user, host, cmd),
            format!("[{user}@{host}] {cmd} &"),
        )
    }

    /// Where the second user's home (`/home/pvattack` on login and the nodes) lives on this
    /// machine.
    pub fn attack_home(&self) -> PathBuf {
        self.state_dir().join("home/attack")
    }

    fn run_with(
        &self,
        host: Host,
        cmd: &str,
        root: bool,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Output {
        let who = if root { "root" } else { TEST_USER };
        run_command(
            self.exec_command(host, cmd, root),
            format!("[{who}@{host}] {cmd}"),
            stdin,
            timeout,
        )
    }

    /// Start a shell command line as the test user on `host` and return at once.
    pub fn spawn(&self, host: Host, cmd: &str) -> Background {
        spawn_command(
            self.exec_command(host, cmd, false),
            format!("[{TEST_USER}@{host}] {cmd} &"),
        )
    }

    /// A file's contents as `host` sees it (its own /tmp, its home); `None` if it cannot be read.
    pub fn read_file(&self, host: Host, path: &str) -> Option<String> {
        let out = self.run_root(host, &format!("cat -- {}", shell_quote(path)));
        out.success().then_some(out.stdout)
    }

    /// Write a file as the test user on `host` (relative paths are in its home).
    #[track_caller]
    pub fn write_file(&self, host: Host, path: &str, contents: &str) {
        self.run_stdin(
            host,
            &format!("cat > {}", shell_quote(path)),
            contents.as_bytes(),
        )
        .assert_success();
    }

    /// Whether something listens on TCP `port` on `host`.
    pub fn listening(&self, host: Host, port: u16) -> bool {
        let out = self.run_root(host, &format!("ss -Hltn 'sport = :{port}'"));
        out.success() && !out.stdout.trim().is_empty()
    }

    /// Leftovers right now: test-user processes on every host, jobs in the queue, listening
    /// sockets other than the sandbox's own daemons. One line each.
    pub fn leaks(&self) -> Vec<String> {
        let out = sandbox_cmd(&self.id, &["leaks"], Duration::from_secs(60));
        out.stdout.lines().map(str::to_string).collect()
    }

    /// The end of every end-to-end test: waits up to [`LEAK_GRACE`] for leftovers to exit, then
    /// panics listing what remains.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        let grace = LEAK_GRACE.as_secs().to_string();
        let out = sandbox_cmd(
            &self.id,
            &["leaks", "--wait", &grace],
            LEAK_GRACE + Duration::from_secs(60),
        );
        assert!(
            out.success(),
            "the test left things behind in sandbox {}:\n{}{}",
            self.id,
            out.stdout,
            out.stderr
        );
    }

    /// `scripts/sandbox health`.
    pub fn health(&self) -> Output {
        sandbox_cmd(&self.id, &["health"], Duration::from_secs(300))
    }

    /// Take the sandbox for this test alone, configured as `cfg` says, until the guard drops.
    /// Every end-to-end test holds one for its whole body, up to and including
    /// [`Sandbox::assert_no_leaks`]: tests of one binary then take turns, so an sshd restart
    /// never hits another test's connection and a leak check sees only its own test's leftovers.
    pub fn configure(&self, cfg: SiteConfig) -> SiteGuard<'_> {
        let (lock, cv) = &self.site;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        while st.busy {
            st = cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.busy = true;
        drop(st);
        let guard = SiteGuard { sb: self };
        self.change_site(cfg);
        guard
    }

    fn change_site(&self, cfg: SiteConfig) {
        let prev = self
            .site
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .take();
        match prev {
            Some(prev) if prev == cfg => {}
            Some(prev) => self.apply_from(&prev, &cfg),
            None => self.apply(&cfg),
        }
        self.site
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current = Some(cfg);
    }

    /// Put the site into `cfg` whatever it was before.
    fn apply(&self, cfg: &SiteConfig) {
        let out = sandbox_cmd(
            &self.id,
            &["firewall", cfg.firewall.name()],
            Duration::from_secs(60),
        );
        assert!(out.success(), "setting the firewall failed:\n{out}");
        for host in Host::ALL.into_iter().filter(|h| h.has_sshd()) {
            self.sshd_set(host, cfg.sshd.get(&host));
            self.login_shell_set(host, cfg.login_shell.get(&host));
        }
        for host in OTP_HOSTS {
            self.otp_set(host, cfg.otp.get(&host));
        }
        self.desk_key_set(cfg.key_passphrase.as_deref());
        self.host_keys_set(&cfg.forget_host_keys);
    }

    fn otp_set(&self, host: Host, methods: Option<&String>) {
        let mut args = vec!["otp", host.name()];
        match methods {
            Some(m) => args.extend(["on", "--methods", m]),
            None => args.push("off"),
        }
        let out = sandbox_cmd(&self.id, &args, Duration::from_secs(600));
        assert!(
            out.success(),
            "turning one-time codes on {host} {} failed:\n{out}",
            if methods.is_some() { "on" } else { "off" }
        );
    }

    fn desk_key_set(&self, passphrase: Option<&str>) {
        let args = match passphrase {
            Some(p) => vec!["desk-key", "--passphrase", p],
            None => vec!["desk-key", "--plain"],
        };
        let out = sandbox_cmd(&self.id, &args, Duration::from_secs(60));
        assert!(out.success(), "setting desk's key failed:\n{out}");
    }

    fn host_keys_set(&self, forget: &BTreeSet<Host>) {
        let mut args = vec!["forget-host-key"];
        args.extend(forget.iter().map(|h| h.name()));
        let out = sandbox_cmd(&self.id, &args, Duration::from_secs(60));
        assert!(out.success(), "setting desk's known_hosts failed:\n{out}");
    }

    fn login_shell_set(&self, host: Host, shell: Option<&String>) {
        let shell = shell.map_or("--default", String::as_str);
        let out = sandbox_cmd(
            &self.id,
            &["login-shell", host.name(), shell],
            Duration::from_secs(60),
        );
        assert!(
            out.success(),
            "setting the login shell on {host} failed:\n{out}"
        );
    }

    fn sshd_set(&self, host: Host, settings: Option<&BTreeMap<String, String>>) {
        let mut args = vec![
            "sshd-set".to_string(),
            host.name().to_string(),
            "--defaults".to_string(),
        ];
        args.extend(
            settings
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}")),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sandbox_cmd(&self.id, &args, Duration::from_secs(60));
        assert!(out.success(), "restarting sshd on {host} failed:\n{out}");
    }

    fn apply_from(&self, prev: &SiteConfig, cfg: &SiteConfig) {
        if prev.firewall != cfg.firewall {
            let out = sandbox_cmd(
                &self.id,
                &["firewall", cfg.firewall.name()],
                Duration::from_secs(60),
            );
            assert!(out.success(), "setting the firewall failed:\n{out}");
        }
        for host in Host::ALL.into_iter().filter(|h| h.has_sshd()) {
            let old = prev.sshd.get(&host).filter(|m| !m.is_empty());
            let new = cfg.sshd.get(&host).filter(|m| !m.is_empty());
            if old != new {
                self.sshd_set(host, new);
            }
            let (old, new) = (prev.login_shell.get(&host), cfg.login_shell.get(&host));
            if old != new {
                self.login_shell_set(host, new);
            }
        }
        for host in OTP_HOSTS {
            let (old, new) = (prev.otp.get(&host), cfg.otp.get(&host));
            if old != new {
                self.otp_set(host, new);
            }
        }
        if prev.key_passphrase != cfg.key_passphrase {
            self.desk_key_set(cfg.key_passphrase.as_deref());
        }
        if prev.forget_host_keys != cfg.forget_host_keys {
            self.host_keys_set(&cfg.forget_host_keys);
        }
    }

    /// A one-time code for the test user at `host` (login or gate, with
    /// [`SiteConfig::otp`]), for a login that is about to ask for it. Never the same or an
    /// earlier time step twice, in this process or after a code pam_oath already accepted: each
    /// call gives the next unused step from now on (pam_oath refuses a step at or before the
    /// last one it accepted). Waits when that step would be more than [`OTP_WINDOW`] ahead.
    pub fn otp_code(&self, host: Host) -> String {
        assert!(
            OTP_HOSTS.contains(&host),
            "one-time codes exist on login and gate only, not on {host}"
        );
        let mut steps = self.otp_steps.lock().unwrap_or_else(|e| e.into_inner());
        let used = self.otp_last_used(host);
        let step = [
            Some(otp_now_step()),
            steps.get(&host).map(|s| s + 1),
            used.map(|s| s + 1),
        ]
        .into_iter()
        .flatten()
        .max()
        .expect("now");
        // Keep two steps of the window in reserve for the time the code takes to be typed.
        let ahead = OTP_WINDOW - 2;
        while step > otp_now_step() + ahead {
            let secs = unix_now().as_secs();
            std::thread::sleep(Duration::from_secs(OTP_STEP_SECS - secs % OTP_STEP_SECS));
        }
        steps.insert(host, step);
        let counter = step.to_string();
        let out = sandbox_cmd(
            &self.id,
            &["otp-code", host.name(), "--counter", &counter],
            Duration::from_secs(30),
        );
        assert!(out.success(), "computing a one-time code failed:\n{out}");
        let code = out.stdout.trim().to_string();
        assert!(
            code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
            "otp-code printed {code:?}, not 6 digits:\n{out}"
        );
        code
    }

    /// The time step of the last code pam_oath accepted on `host`, if any.
    fn otp_last_used(&self, host: Host) -> Option<u64> {
        let out = sandbox_cmd(
            &self.id,
            &["otp-code", host.name(), "--last-used"],
            Duration::from_secs(30),
        );
        assert!(
            out.success(),
            "reading the last one-time code used on {host} failed:\n{out}"
        );
        let s = out.stdout.trim();
        (!s.is_empty()).then(|| {
            s.parse()
                .unwrap_or_else(|_| panic!("otp-code --last-used printed {s:?}:\n{out}"))
        })
    }

    /// Everything `host`'s sshd logged since the instance came up (`log/sshd-HOST.log`, log
    /// level VERBOSE: `Accepted publickey for ...`, `Partial publickey ...`, `Accepted
    /// keyboard-interactive/pam ...`).
    pub fn sshd_log(&self, host: Host) -> String {
        assert!(host.has_sshd(), "{host} has no sshd");
        let path = self.state_dir().join(format!("log/sshd-{host}.log"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// How many lines of `host`'s sshd log contain `needle`.
    pub fn sshd_log_count(&self, host: Host, needle: &str) -> usize {
        self.sshd_log(host)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// How many logins `host`'s sshd let in with a one-time code (`Accepted
    /// keyboard-interactive` lines of its log) since the instance came up.
    pub fn otp_logins(&self, host: Host) -> usize {
        self.sshd_log_count(host, "Accepted keyboard-interactive")
    }

    /// Tear the instance down (`scripts/sandbox down`); returns the command's output.
    pub fn down(&self) -> Output {
        sandbox_cmd(&self.id, &["down"], Duration::from_secs(120))
    }
}

/// The hosts whose sshd can ask for one-time codes.
const OTP_HOSTS: [Host; 2] = [Host::Gate, Host::Login];

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// The current TOTP time step (seconds since the epoch / 30).
fn otp_now_step() -> u64 {
    unix_now().as_secs() / OTP_STEP_SECS
}

/// What is left of instance `id` on this machine: network namespaces, the state folder and
/// lock file, processes inside `netns_inodes` (recorded while it was up, see
/// [`netns_inodes`]) or whose command line, working directory or open files mention its state
/// folder. Empty when it is completely gone.
pub fn residue(id: &str, netns_inodes: &[u64]) -> Vec<String> {
    let mut found = Vec::new();
    let prefix = format!("pvsb-{id}-");
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                found.push(format!("network namespace {name}"));
            }
        }
    }
    let dir = Path::new(STATE_ROOT).join(id);
    if dir.exists() {
        found.push(format!("state folder {}", dir.display()));
    }
    let lock = Path::new(STATE_ROOT).join(format!("{id}.lock"));
    if lock.exists() {
        found.push(format!("lock file {}", lock.display()));
    }
    let dir_s = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let base = p.path();
            let cmdline = std::fs::read(base.join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let mut why = None;
            if let Ok(link) = std::fs::read_link(base.join("ns/net")) {
                let link = link.to_string_lossy().into_owned();
                if netns_inodes.iter().any(|i| link == format!("net:[{i}]")) {
                    why = Some("inside a network namespace of the instance".to_string());
                }
            }
            if why.is_none() && cmdline.contains(&dir_s) {
                why = Some("command line names the state folder".to_string());
            }
            if why.is_none()
                && std::fs::read_link(base.join("cwd"))
                    .map(|c| c.starts_with(&dir))
                    .unwrap_or(false)
            {
                why = Some("works in the state folder".to_string());
            }
            if why.is_none() {
                let open = std::fs::read_dir(base.join("fd"))
                    .map(|fds| {
                        fds.flatten().any(|fd| {
                            std::fs::read_link(fd.path())
                                .map(|t| t.starts_with(&dir))
                                .unwrap_or(false)
                        })
                    })
                    .unwrap_or(false);
                if open {
                    why = Some("has a file of the state folder open".to_string());
                }
            }
            if let Some(why) = why {
                found.push(format!("process {pid} ({why}): {}", cmdline.trim()));
            }
        }
    }
    found
}

/// Inode numbers of instance `id`'s network namespaces (for [`residue`]).
pub fn netns_inodes(id: &str) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("pvsb-{id}-");
    let mut v = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            if let Ok(m) = std::fs::metadata(e.path()) {
                v.push(m.ino());
            }
        }
    }
    v
}

// --- running processes ------------------------------------------------------------------------

/// A started command whose stdout and stderr are collected by reader threads.
struct Started {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Start `cmd` in its own process group with stdout and stderr collected.
fn start_collecting(mut cmd: Command, what: &str, stdin: Stdio) -> Started {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        reader(child.stdout.take().expect("stdout"), stdout.clone()),
        reader(child.stderr.take().expect("stderr"), stderr.clone()),
    ];
    Started {
        child,
        stdout,
        stderr,
        readers,
    }
}

fn spawn_command(cmd: Command, what: String) -> Background {
    let Started {
        child,
        stdout,
        stderr,
        readers,
    } = start_collecting(cmd, &what, Stdio::null());
    Background {
        what,
        child: Some(child),
        started: Instant::now(),
        stdout,
        stderr,
        readers,
    }
}

fn run_command(cmd: Command, what: String, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let started = Instant::now();
    let piped = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let Started {
        mut child,
        stdout,
        stderr,
        readers,
    } = start_collecting(cmd, &what, piped);
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let status = wait_child(&mut child, timeout);
    let timed_out = status.is_none();
    if timed_out {
        kill_group(&child);
        let _ = child.wait();
    }
    join_readers(readers);
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    Output {
        what,
        code: status.and_then(|s| s.code()),
        stdout: text(&stdout),
        stderr: text(&stderr),
        timed_out,
        elapsed: started.elapsed(),
    }
}

fn reader(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Wait for the readers, but not forever: a background process started by the command may
/// keep the pipes open (the leak check will name it).
fn join_readers(readers: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for r in readers {
        while !r.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if r.is_finished() {
            let _ = r.join();
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    }
}

fn kill_group(child: &Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: signals the process group we created with process_group(0).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
