//! The session's effects without root or a cluster: the real pvlaunch binary against a fake
//! `ssh` and a fake Slurm (`tests/fake/bin`), so that signals, hung commands, a dead controller
//! and the order of the steps can be tested anywhere. The fakes keep their state in files; the
//! end-to-end tests (tests/connect.rs) run the same paths against the real sshd and Slurm.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("state/home")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let f = Fake { dir };
        f.profile(
            r#"<Server name="c" resource="cs://localhost:11111"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="cluster"/><Job scheduler="slurm" queue-timeout="600"/>
  <Connection recipe="two-hop" connect-id="none"/></PVLaunch></Server>"#,
        );
        f
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn profile(&self, body: &str) {
        std::fs::write(
            self.dir.path().join("p.pvsc"),
            format!("<Servers>{body}</Servers>"),
        )
        .unwrap();
    }

    fn touch(&self, name: &str, text: &str) {
        std::fs::write(self.state().join(name), text).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/bin");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvlaunch"));
        c.arg("-f")
            .arg(self.dir.path().join("p.pvsc"))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("FAKE_STATE", self.state())
            .env("FAKE_BIN", &bin)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).spawn().unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.state().join(name)).unwrap_or_default()
    }

    fn job_state(&self, id: &str) -> String {
        self.read(&format!("jobs/{id}.state")).trim().to_string()
    }

    /// Wait until the scheduler log has a line containing `needle`.
    fn wait_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.read("scheduler.log").contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "no `{needle}` in the scheduler log within {timeout:?}: {}",
                self.read("scheduler.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until job `id` is in a state starting with `prefix`.
    fn wait_job(&self, id: &str, prefix: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.job_state(id).starts_with(prefix) {
            assert!(
                start.elapsed() < timeout,
                "job {id} is {:?}, not {prefix}, after {timeout:?}; log: {}",
                self.job_state(id),
                self.read("scheduler.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// No process of this fake cluster is left (the master, a guard, a remote command).
    fn assert_nothing_left(&self) {
        let marker = self.state().display().to_string();
        let start = Instant::now();
        loop {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter_map(|e| {
                    std::fs::read(e.path().join("environ"))
                        .ok()
                        .map(|env| (e, env))
                })
                .filter(|(_, env)| {
                    env.split(|&b| b == 0)
                        .any(|v| v == format!("FAKE_STATE={marker}").as_bytes())
                })
                .map(|(e, _)| {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                })
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "left running: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Fake {
    /// A guard may sweep on for a while by design (on a real login node it would); the test's
    /// copies go with the test.
    fn drop(&mut self) {
        for pid in fake_processes(&self.state()) {
            // SAFETY: signalling a process of this test's fake cluster.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Processes whose environment names this fake cluster's state folder.
fn fake_processes(state: &Path) -> Vec<u32> {
    let marker = format!("FAKE_STATE={}", state.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON: {l:?}: {e}")))
        .collect()
}

fn last_event(out: &Output) -> serde_json::Value {
    events(out).pop().expect("at least one event")
}

#[test]
fn ctrl_c_while_queued_cancels_the_job_and_leaves_nothing() {
    let f = Fake::new();
    let child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    f.wait_log("squeue 101", Duration::from_secs(20));
    signal(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(last_event(&out)["event"], "done");
    f.wait_job("101", "CANCELLED", Duration::from_secs(10));
    assert_eq!(f.read("fresh-logins"), "");
    f.assert_nothing_left();
}

#[test]
fn sigkill_while_queued_is_cleaned_up_by_the_guard() {
    let f = Fake::new();
    let mut child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    f.wait_log("squeue 101", Duration::from_secs(20));
    // The guard starts right after the submit answers; give it a moment to be there.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    f.wait_job("101", "CANCELLED", Duration::from_secs(15));
    f.assert_nothing_left();
}

#[test]
fn a_login_that_fails_starts_no_client() {
    let f = Fake::new();
    f.touch("ssh-login-fails", "");
    // A reverse recipe starts its client before the job: never before the login worked.
    let out = reverse_session_with_fake_pvpython(&f, 11111);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !f.state().join("client-started").exists(),
        "the client was started before the login failed"
    );
    let done = last_event(&out);
    assert_eq!(done["event"], "done");
    f.assert_nothing_left();
}

#[test]
fn a_requeued_job_ends_the_session_and_is_cancelled() {
    let f = Fake::new();
    std::fs::create_dir_all(f.state().join("jobs")).unwrap();
    f.touch("jobs/101.states", "RUNNING\nRUNNING\nPENDING\n");
    let child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let error = evs
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error");
    assert!(
        error["message"].as_str().unwrap().contains("requeued"),
        "{error}"
    );
    f.wait_job("101", "CANCELLED", Duration::from_secs(10));
    f.assert_nothing_left();
}

#[test]
fn a_job_cancelled_outside_says_so() {
    let f = Fake::new();
    std::fs::create_dir_all(f.state().join("jobs")).unwrap();
    f.touch("jobs/101.states", "PENDING\nCANCELLED by 0\n");
    let out = finish(f.spawn(&["--json", "connect", "c", "--client", "wait"]));
    assert_eq!(out.status.code(), Some(5));
    let done = last_event(&out);
    assert!(
        done["reason"].as_str().unwrap().contains("CANCELLED"),
        "{done}"
    );
    f.assert_nothing_left();
}

/// A fake `pvpython` that records that it ran, prints to stdout (as pvpython's
/// `Accepting connection(s)` does) and listens on `$PVLAUNCH_PORT` until killed.
fn fake_pvpython(f: &Fake) -> PathBuf {
    let bin = f.dir.path().join("clientbin");
    std::fs::create_dir_all(&bin).unwrap();
    let pvpython = bin.join("pvpython");
    std::fs::write(
        &pvpython,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'paraview version 5.11.0'; exit 0; }}\ntouch {}\necho 'Accepting connection(s): desk:'$PVLAUNCH_PORT\nexec python3 -c 'import os,socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", int(os.environ[\"PVLAUNCH_PORT\"]))); s.listen(); time.sleep(60)'\n",
            f.state().join("client-started").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &pvpython,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    bin
}

/// `connect --json` of a reverse-recipe profile whose client listens on `port`, with the fake
/// pvpython as the client.
fn reverse_session_with_fake_pvpython(f: &Fake, port: u16) -> Output {
    f.profile(&format!(
        r#"<Server name="c" resource="csrc://"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="cluster"/><Job scheduler="slurm"/>
  <Connection recipe="reverse" client-port="{port}"/></PVLaunch></Server>"#
    ));
    let bin = fake_pvpython(f);
    let script = f.dir.path().join("s.py");
    std::fs::write(&script, "").unwrap();
    let mut c = f.command(&[
        "--json",
        "connect",
        "c",
        "--script",
        script.to_str().unwrap(),
    ]);
    with_path_first(&mut c, &bin);
    c.output().unwrap()
}

fn with_path_first(c: &mut Command, dir: &Path) {
    let path = c
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    c.env("PATH", format!("{}:{path}", dir.display()));
}

#[test]
fn a_client_port_taken_by_another_program_is_refused_before_any_job() {
    let f = Fake::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = reverse_session_with_fake_pvpython(&f, port);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let error = evs.iter().find(|e| e["event"] == "error").unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&port.to_string()),
        "{error}"
    );
    assert!(!f.state().join("client-started").exists());
    assert!(
        !f.read("scheduler.log").contains("sbatch"),
        "a job was submitted"
    );
    drop(taken);
    f.assert_nothing_left();
}

#[test]
fn under_json_stdout_has_events_only_even_when_the_client_prints() {
    let f = Fake::new();
    // The reverse recipe starts the client before the job; the fake forward is not
    // compute-facing, so the session ends after the client ran: enough to see its output.
    let port = free_port();
    let out = reverse_session_with_fake_pvpython(&f, port);
    // Whatever the end, every stdout line is an event, and the client's line went to stderr.
    let evs = events(&out);
    assert_eq!(evs.last().unwrap()["event"], "done");
    assert!(f.state().join("client-started").exists(), "{evs:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Accepting connection(s)"));
    f.assert_nothing_left();
}

#[test]
fn ctrl_c_while_the_submit_hangs_still_cancels_the_job_it_made() {
    let f = Fake::new();
    // sbatch makes the job, then takes its time to answer.
    f.touch("sbatch-hangs", "8");
    let child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    f.wait_log("sbatch 101", Duration::from_secs(20));
    signal(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No job id ever reached pvlaunch: the guard finds the job by the session's tag.
    f.wait_job("101", "CANCELLED", Duration::from_secs(30));
}

#[test]
fn a_cancel_while_the_controller_is_down_is_retried_by_the_guard() {
    let f = Fake::new();
    let child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    f.wait_log("squeue 101", Duration::from_secs(20));
    f.touch("controller-down", "");
    signal(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(out.status.code(), Some(130));
    let evs = events(&out);
    let cleanup = evs
        .iter()
        .find(|e| e["event"] == "cleanup" && e["step"].as_str().unwrap().contains("101"))
        .expect("a cleanup step for the job");
    // The truth: not cancelled yet, and who goes on trying.
    assert_eq!(cleanup["ok"], false, "{cleanup}");
    assert!(
        cleanup["detail"].as_str().unwrap().contains("keeps trying"),
        "{cleanup}"
    );
    assert_eq!(f.job_state("101"), "PENDING");
    std::fs::remove_file(f.state().join("controller-down")).unwrap();
    f.wait_job("101", "CANCELLED", Duration::from_secs(60));
}

#[test]
fn a_closed_stderr_does_not_abort_the_cleanup() {
    let f = Fake::new();
    // As `pvlaunch ... 2>&1 | head -5` once head has exited: every write fails with EPIPE.
    let mut child = f.spawn(&["connect", "c", "--client", "wait"]);
    drop(child.stdout.take());
    drop(child.stderr.take());
    f.wait_log("squeue 101", Duration::from_secs(20));
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "killed by a signal: {status:?}");
    assert_eq!(status.code(), Some(130));
    f.wait_job("101", "CANCELLED", Duration::from_secs(10));
    f.assert_nothing_left();
}

#[test]
fn client_wait_says_where_to_point_the_client_then_goes_on_once_it_listens() {
    use std::io::BufRead;
    let f = Fake::new();
    let port = free_port();
    f.profile(&format!(
        r#"<Server name="c" resource="csrc://"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="cluster"/><Job scheduler="slurm"/>
  <Connection recipe="reverse" client-port="{port}" connect-id="none"/></PVLaunch></Server>"#
    ));
    let mut child = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = stdout.lines();
    let mut seen = vec![];
    let waiting = loop {
        let line = lines.next().expect("an event").unwrap();
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(ev["event"].as_str().unwrap().to_string());
        if ev["event"] == "waiting_for_client" {
            break ev;
        }
        assert_ne!(ev["event"], "done", "{seen:?}");
    };
    assert_eq!(waiting["url"], format!("csrc://localhost:{port}"));
    // The person's client starts listening.
    let _client = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert!(
        rest.iter().any(|e| e["event"] == "client_listening"),
        "{rest:?}"
    );
    // The fake forward faces no compute node: the reverse recipe stops there, as designed.
    assert_eq!(status.code(), Some(6), "{rest:?}");
    f.assert_nothing_left();
}

/// Two sessions on one client port: the second refuses at once, before it logs in, instead of
/// reaching the first one's client.
#[test]
fn a_second_session_on_the_same_client_port_refuses() {
    use std::io::BufRead;
    let f = Fake::new();
    let port = free_port();
    f.profile(&format!(
        r#"<Server name="c" resource="csrc://"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="cluster"/><Job scheduler="slurm"/>
  <Connection recipe="reverse" client-port="{port}"/></PVLaunch></Server>"#
    ));
    let mut first = f.spawn(&["--json", "connect", "c", "--client", "wait"]);
    let mut lines = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("an event").unwrap();
        let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
        if ev["event"] == "waiting_for_client" {
            break;
        }
        assert_ne!(ev["event"], "done", "{ev}");
    }
    let second = f
        .command(&["--json", "connect", "c", "--client", "wait"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(8), "{out}");
    assert!(
        out.contains(&format!(
            "port {port} is in use by another pvlaunch session"
        )),
        "{out}"
    );
    assert!(
        !out.contains("ssh_connecting"),
        "refused before the login: {out}"
    );
    signal(&first, libc::SIGTERM);
    let _ = first.wait();
    f.assert_nothing_left();
}

/// A login node pvlaunch cannot run on: the session takes the plain path and says that other
/// users could reach it; under `owned-hops="required"` it refuses instead, before any job.
#[test]
fn without_pvlaunch_on_the_cluster_the_plain_path_is_said_or_refused() {
    let f = Fake::new();
    f.touch("uname", "Linux sparc64\n");
    let port = free_port();
    // The person's client listens already (`--client wait`).
    let _client = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for (policy, code) in [("preferred", 6), ("required", 6)] {
        f.profile(&format!(
            r#"<Server name="c" resource="csrc://"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="cluster"/><Job scheduler="slurm"/>
  <Connection recipe="reverse" client-port="{port}" owned-hops="{policy}"/></PVLaunch></Server>"#
        ));
        let out = f
            .command(&["--json", "connect", "c", "--client", "wait"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{policy}: {text}");
        assert!(
            text.contains("sparc64"),
            "{policy}: names the machine: {text}"
        );
        if policy == "preferred" {
            // It goes on (the fake forward faces no compute node, so the reverse recipe stops
            // there), having said that the path is not its own.
            assert!(
                text.contains("other users of the cluster could reach"),
                "{text}"
            );
            assert!(text.contains("forward_opened"), "{text}");
        } else {
            assert!(text.contains("requires owned hops"), "{text}");
            assert!(!text.contains("forward_opened"), "{text}");
        }
        assert!(
            !f.read("scheduler.log").contains("sbatch"),
            "no job: {text}"
        );
    }
    f.assert_nothing_left();
}

// The guard's heartbeat and cleanup, and the session's files on the cluster (src/remote.rs),
// against the same fakes: the library's parts through a real `Master` over the fake ssh.

use pvlaunch::job::{self, GuardError, GuardReport, GuardTimings};
use pvlaunch::remote::{self, RemoteError};
use pvlaunch::scheduler::Kind;
use pvlaunch::ssh::{Master, Target};

/// The session tag of the guards below.
const TAG: &str = "5e551011";

impl Fake {
    /// Job `id` of this session's tag in the fake Slurm, in `state`.
    fn tagged_job(&self, id: &str, state: &str) {
        std::fs::create_dir_all(self.state().join("jobs")).unwrap();
        self.touch(&format!("jobs/{id}.state"), &format!("{state}\n"));
        self.touch(&format!("jobs/{id}.name"), &format!("pvserver-{TAG}\n"));
    }

    /// An `ssh` program for [`Master`]: the fake one with this cluster's state, `remote_path`
    /// first on the login node's PATH and `tmpdir` as its TMPDIR.
    fn ssh_program(&self, remote_path: Option<&Path>, tmpdir: Option<&Path>) -> PathBuf {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/bin");
        let mut path = "/usr/bin:/bin".to_string();
        if let Some(p) = remote_path {
            path = format!("{}:{path}", p.display());
        }
        let tmp = tmpdir.map_or(String::new(), |t| format!("TMPDIR='{}' ", t.display()));
        let wrapper = self.dir.path().join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nFAKE_STATE='{}' FAKE_BIN='{}' PATH='{path}' {tmp}exec '{}' \"$@\"\n",
                self.state().display(),
                bin.display(),
                bin.join("ssh").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        wrapper
    }

    /// The session's master over the fake ssh.
    async fn master(&self, remote_path: Option<&Path>, tmpdir: Option<&Path>) -> Master {
        let target = Target {
            program: self.ssh_program(remote_path, tmpdir).display().to_string(),
            destination: "cluster".into(),
            user: None,
            port: None,
            jump_hosts: vec![],
            control_path: self.dir.path().join("cm"),
            extra_options: vec![],
        };
        Master::start(
            target,
            &pvlaunch::auth::Asker::Nobody {
                why: pvlaunch::auth::Nobody::NoTerminalNoDisplay,
            },
        )
        .await
        .unwrap()
    }

    fn home(&self) -> PathBuf {
        self.state().join("home")
    }
}

/// Guard timings for tests: a dead link after `limit` seconds, a beat every second, a poll
/// every second, a short sweep.
fn fast(limit: u64) -> GuardTimings {
    GuardTimings {
        deadline: Duration::from_secs(30),
        sweep_window: Duration::from_secs(1),
        first_pause: Duration::from_secs(1),
        max_pause: Duration::from_secs(2),
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_limit: Duration::from_secs(limit),
        poll: Duration::from_secs(1),
        grace: Duration::ZERO,
    }
}

/// The guard's script run here by `sh`, with the fake Slurm first on PATH: a child of this
/// test, or of `parent` (a shell run as `parent -c 'sh -c GUARD; echo parent-survived'`).
/// Its stdin stays open until the test drops it; its lines arrive on the channel.
fn raw_guard(
    f: &Fake,
    timings: GuardTimings,
    parent: Option<&Path>,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let line = job::guard_command(Kind::Slurm.scheduler().as_ref(), TAG, timings).unwrap();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake/bin/cluster");
    let mut c = match parent {
        Some(p) => {
            let mut c = Command::new(p);
            c.args(["-c", "sh -c \"$1\"; echo parent-survived", "sshd", &line]);
            c
        }
        None => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", &line]);
            c
        }
    };
    let mut child = c
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("FAKE_STATE", f.state())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The lines up to and including the first that starts with `last` (or all of them when the
/// output ends first), within `timeout`.
fn lines_until(
    rx: &std::sync::mpsc::Receiver<String>,
    last: &str,
    timeout: Duration,
) -> Vec<String> {
    let end = Instant::now() + timeout;
    let mut lines = vec![];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = l.starts_with(last);
                lines.push(l);
                if done {
                    return lines;
                }
            }
            Err(_) => break,
        }
    }
    lines
}

fn send(child: &mut Child, text: &str) {
    use std::io::Write;
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

#[test]
fn a_guard_that_hears_nothing_cancels_after_the_limit_and_spares_a_parent_that_is_not_sshd() {
    let f = Fake::new();
    f.tagged_job("101", "RUNNING");
    let (mut guard, rx) = raw_guard(&f, fast(3), None);
    assert_eq!(
        lines_until(&rx, "ready", Duration::from_secs(10)),
        ["ready"]
    );
    let started = Instant::now();
    // Its input stays open, but nothing more comes: a link that dropped silently.
    send(&mut guard, "job 101\n");
    let lines = lines_until(&rx, "none left", Duration::from_secs(20));
    let took = started.elapsed();
    // Its parent is this test process: not an sshd, so it is left alone (this test runs on).
    let me = std::process::id();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "link lost");
    assert!(
        lines[1].starts_with(&format!("left the ssh connection alone: parent {me} is "))
            && lines[1].ends_with(", not sshd"),
        "{lines:?}"
    );
    assert_eq!(lines[2..], ["cancelled 101", "none left"]);
    assert!(f.job_state("101").starts_with("CANCELLED"));
    // `date +%s` is whole seconds: the 3 s limit lasts 2 to 3 s, plus up to a poll.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(guard.wait().unwrap().code(), Some(0));
}

#[test]
fn on_a_lost_link_the_guard_ends_its_parent_sshd_of_this_user_then_cancels() {
    use std::os::unix::process::ExitStatusExt;
    let f = Fake::new();
    f.tagged_job("101", "RUNNING");
    // A shell whose process name is `sshd`, standing for the sshd session process.
    let sshd = f.dir.path().join("sshd");
    std::os::unix::fs::symlink("/bin/sh", &sshd).unwrap();
    let (mut parent, rx) = raw_guard(&f, fast(2), Some(&sshd));
    assert_eq!(
        lines_until(&rx, "ready", Duration::from_secs(10)),
        ["ready"]
    );
    send(&mut parent, "job 101\n");
    let lines = lines_until(&rx, "none left", Duration::from_secs(20));
    assert_eq!(
        lines,
        [
            "link lost".to_string(),
            format!("closed the ssh connection (sshd {})", parent.id()),
            "cancelled 101".into(),
            "none left".into()
        ]
    );
    let status = parent.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    // The output ends with the guard: the parent never went on to say it survived.
    assert!(
        lines_until(&rx, "parent-survived", Duration::from_secs(5)).is_empty(),
        "the parent survived"
    );
    assert!(f.job_state("101").starts_with("CANCELLED"));
}

#[tokio::test]
async fn beats_keep_the_guard_alive_past_the_limit() {
    let f = Fake::new();
    f.tagged_job("101", "RUNNING");
    let mut master = f.master(None, None).await;
    let slurm = Kind::Slurm.scheduler();
    let mut guard = job::start_guard_with(&master, slurm.as_ref(), TAG, fast(3))
        .await
        .unwrap();
    guard.start_heartbeat();
    guard
        .job_known(&slurm.job_id("101").unwrap())
        .await
        .unwrap();
    // More than twice the limit.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(f.job_state("101"), "RUNNING");
    assert!(
        !f.read("scheduler.log").contains("scancel"),
        "{}",
        f.read("scheduler.log")
    );
    assert_eq!(
        guard.cancel(Duration::from_secs(20)).await,
        GuardReport::NoneLeft {
            cancelled: vec!["101".into()]
        }
    );
    master.stop().await;
    assert_eq!(f.read("fresh-logins"), "");
}

/// Wait until none of `paths` exists.
async fn wait_gone(paths: &[&Path], what: &str) {
    let end = Instant::now() + Duration::from_secs(15);
    while paths.iter().any(|p| p.symlink_metadata().is_ok()) {
        assert!(Instant::now() < end, "{what}: still there: {paths:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_guard_removes_its_paths_however_it_ends() {
    for ending in ["cancel", "keep", "lost link"] {
        let f = Fake::new();
        f.tagged_job("101", "RUNNING");
        let mut master = f.master(None, None).await;
        let slurm = Kind::Slurm.scheduler();
        let mut guard = job::start_guard_with(&master, slurm.as_ref(), TAG, fast(2))
            .await
            .unwrap();
        if ending != "lost link" {
            guard.start_heartbeat();
        }
        guard
            .job_known(&slurm.job_id("101").unwrap())
            .await
            .unwrap();
        let key = f.dir.path().join("with space.key");
        std::fs::write(&key, "k").unwrap();
        let run = f.dir.path().join("run");
        std::fs::create_dir_all(run.join("sub")).unwrap();
        std::fs::write(run.join("sub/fwd.sock"), "").unwrap();
        for p in [&key, &run] {
            guard.remove_at_end(p.to_str().unwrap()).await.unwrap();
        }
        for bad in ["relative/path", "/", "//", "/a\nb", ""] {
            assert!(
                matches!(guard.remove_at_end(bad).await, Err(GuardError::BadPath(_))),
                "{bad:?}"
            );
        }
        // Still there while the guard runs.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(key.exists() && run.exists(), "{ending}");
        match ending {
            "cancel" => {
                guard.cancel(Duration::from_secs(20)).await;
            }
            "keep" => guard.keep().await.unwrap(),
            _ => {
                // No beats: the guard ends by itself; its session stays open meanwhile.
                wait_gone(&[&key, &run], ending).await;
                drop(guard);
            }
        }
        wait_gone(&[&key, &run], ending).await;
        let cancelled = f.job_state("101").starts_with("CANCELLED");
        assert_eq!(cancelled, ending != "keep", "{ending}");
        master.stop().await;
    }
}

#[tokio::test]
async fn the_session_key_and_the_run_folder_through_the_master() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fake::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut master = f.master(None, Some(tmp.path())).await;
    let home = remote::prepare_home(&master).await.unwrap();
    assert_eq!(home.home, f.home().display().to_string());
    let secret = pvlaunch::hop::Secret::generate();
    let key = home.write_key(&master, TAG, &secret).await.unwrap();
    assert_eq!(
        key,
        format!("{}/.cache/pvlaunch/keys/{TAG}.key", f.home().display())
    );
    // What the node agent will read back: the user's, 0600, the same secret.
    assert_eq!(
        pvlaunch::hop::Secret::read_file(Path::new(&key)).unwrap(),
        secret
    );
    // The secret never was in a command line.
    assert!(!f.read("ssh.log").contains(&secret.to_hex()));
    assert!(matches!(
        home.write_key(&master, TAG, &secret).await,
        Err(RemoteError::KeyExists(_))
    ));
    assert!(matches!(
        home.write_key(&master, "../x", &secret).await,
        Err(RemoteError::InvalidTag(_))
    ));
    // A key a killed guard left two days ago goes at the next session; a fresh one stays.
    let keys = f.home().join(".cache/pvlaunch/keys");
    std::fs::write(keys.join("old.key"), "x").unwrap();
    let status = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(keys.join("old.key"))
        .status()
        .unwrap();
    assert!(status.success());
    remote::prepare_home(&master).await.unwrap();
    assert!(!keys.join("old.key").exists(), "a stale key is swept");
    assert!(Path::new(&key).exists(), "this session's key stays");
    let run = home.make_run_dir(&master).await.unwrap();
    assert!(run.starts_with(&format!("{}/pvlaunch.", tmp.path().display())));
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    master.stop().await;

    // A TMPDIR too long for a socket path: refused, and nothing left there.
    let f = Fake::new();
    let deep = tmp.path().join("d".repeat(90));
    std::fs::create_dir_all(&deep).unwrap();
    let mut master = f.master(None, Some(&deep)).await;
    let home = remote::prepare_home(&master).await.unwrap();
    match home.make_run_dir(&master).await {
        Err(RemoteError::RunDirTooLong { path, .. }) => {
            assert!(path.starts_with(deep.to_str().unwrap()), "{path}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&deep).unwrap().count(), 0);
    master.stop().await;
}

/// Eight sessions copying pvlaunch to a fresh home at the same time all end with the one
/// intact copy (each uploads to its own temporary name, then renames). A 4 MiB stand-in for
/// the binary keeps it quick (this debug build is tens of MiB; the upload path is the same).
#[tokio::test]
async fn eight_concurrent_copies_to_a_fresh_home_all_succeed() {
    use sha2::Digest;
    use std::os::unix::fs::PermissionsExt;
    let f = Fake::new();
    let program = f.dir.path().join("pvlaunch-local");
    let bytes: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&program, &bytes).unwrap();
    let mut master = f.master(None, None).await;
    let (m, p) = (&master, &program);
    let place = || async move {
        let home = remote::prepare_home(m).await?;
        let mut warned = 0;
        let path = home
            .place_program(m, p, &mut |_: String| warned += 1)
            .await?;
        Ok::<_, RemoteError>((path, warned))
    };
    let results = tokio::join!(
        place(),
        place(),
        place(),
        place(),
        place(),
        place(),
        place(),
        place()
    );
    let results = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ];
    let mine = bytes;
    let sum = format!("{:x}", sha2::Sha256::digest(&mine));
    let expected = format!(
        "{}/.cache/pvlaunch/bin/{}",
        f.home().display(),
        remote::binary_name(&sum)
    );
    for r in results {
        let (path, warned) = r.unwrap();
        assert_eq!(path, expected);
        assert!(warned <= 1);
    }
    assert!(
        std::fs::read(&expected).unwrap() == mine,
        "the copy is intact"
    );
    let mode = std::fs::metadata(&expected).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(f.home().join(".cache/pvlaunch/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // A later session uses the copy without copying again.
    let home = remote::prepare_home(&master).await.unwrap();
    let mut warned = vec![];
    let again = home
        .place_program(&master, &program, &mut |w: String| warned.push(w))
        .await
        .unwrap();
    assert_eq!((again, warned), (expected, vec![]));
    master.stop().await;
}

#[tokio::test]
async fn a_pvlaunch_on_path_is_used_only_when_it_is_this_version() {
    let f = Fake::new();
    let bin = f.dir.path().join("remotebin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("pvlaunch");
    let write = |version: &str| {
        std::fs::write(
            &fake,
            format!("#!/bin/sh\n[ \"$1\" = --version ] && echo '{version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    };
    write(&remote::version_line());
    let mut master = f.master(Some(&bin), None).await;
    let home = remote::prepare_home(&master).await.unwrap();
    let mut warned = vec![];
    let found = home
        .place_binary(&master, &mut |w: String| warned.push(w))
        .await
        .unwrap();
    assert_eq!((found.as_str(), warned.len()), (fake.to_str().unwrap(), 0));

    // Another version: this one is copied, and the warning says why.
    write("pvlaunch 0.0.1-old");
    let placed = home
        .place_binary(&master, &mut |w: String| warned.push(w))
        .await
        .unwrap();
    assert!(
        placed.starts_with(&format!(
            "{}/.cache/pvlaunch/bin/pvlaunch-",
            f.home().display()
        )),
        "{placed}"
    );
    assert_eq!(warned.len(), 1);
    assert!(
        warned[0].contains("`pvlaunch 0.0.1-old`") && warned[0].contains(&placed),
        "{warned:?}"
    );
    master.stop().await;
}

#[test]
fn the_jobs_output_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let f = Fake::new();
    let mut c = f.command(&["--json", "connect", "c", "--client", "wait"]);
    // The usual umask, which would leave the output world-readable.
    // SAFETY: umask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    };
    let child = c.spawn().unwrap();
    f.wait_log("squeue 101", Duration::from_secs(20));
    signal(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(out.status.code(), Some(130));
    let dir = f.home().join(".cache/pvlaunch");
    let outputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let mode = std::fs::metadata(&outputs[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", outputs[0].display());
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    f.assert_nothing_left();
}
