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
