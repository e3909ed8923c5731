//! Sessions that survive a dropped network, end to end in the sandbox (docs/resilience.md):
//! the real sshd, Slurm, a 2-rank pvserver across both nodes and pvpython, with desk's link cut
//! by nftables (every packet dropped, nothing reset). Every test ends with the leak check.

mod common;

use std::time::{Duration, Instant};

use common::sandbox::{self, Background, Host, Sandbox, SiteConfig};
use rand::Rng;

const SESSION_TIMEOUT: Duration = Duration::from_secs(240);

/// This build's pvlaunch, the profiles and the client script in desk's home.
fn install(sb: &Sandbox) {
    let home = sb.desk_home();
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (from, to) in [
        ("tests/fixtures/e2e/resilience.pvsc", "resilience.pvsc"),
        ("tests/fixtures/e2e/stream.py", "stream.py"),
        ("tests/fixtures/e2e/hold.py", "hold.py"),
    ] {
        std::fs::copy(root.join(from), home.join(to)).unwrap();
    }
    let _ = std::fs::remove_file(home.join("stream.stop"));
    let _ = std::fs::remove_file(home.join("stream.progress"));
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{0}:{0}", sandbox::TEST_USER)])
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
}

fn spawn_pvlaunch(sb: &Sandbox, args: &str) -> Background {
    sb.spawn(
        Host::Desk,
        &format!(
            "echo $$ > pvlaunch.pid; STREAM_STOP=$HOME/stream.stop STREAM_PROGRESS=$HOME/stream.progress exec bin/pvlaunch -f resilience.pvsc --json {args}"
        ),
    )
}

/// Cut desk's link (`down`) or give it back (`up`).
fn link(sb: &Sandbox, state: &str) {
    let out = sandbox::sandbox_cmd(sb.id(), &["link", state], Duration::from_secs(30));
    assert!(out.success(), "link {state}: {out:?}");
}

/// Gives desk its link back however the test ends.
struct LinkBack<'a>(&'a Sandbox);

impl Drop for LinkBack<'_> {
    fn drop(&mut self) {
        let _ = sandbox::sandbox_cmd(self.0.id(), &["link", "up"], Duration::from_secs(30));
    }
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn count(stdout: &str, event: &str) -> usize {
    events(stdout)
        .iter()
        .filter(|e| e["event"] == event)
        .count()
}

fn queue(sb: &Sandbox) -> String {
    sb.run(Host::Login, "squeue -h -o '%i %T %j'")
        .assert_success()
        .stdout
}

/// How many fetches the client has made (its progress file: pvpython holds its output back
/// while the script runs).
fn fetches(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.desk_home().join("stream.progress"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Wait until the client has made `n` fetches (pvlaunch still running).
fn wait_fetches(sb: &Sandbox, bg: &mut Background, n: usize, what: &str) {
    sandbox::wait_for(what, SESSION_TIMEOUT, || {
        assert!(
            bg.running(),
            "pvlaunch ended ({what}): {}\n{}",
            bg.stdout(),
            bg.stderr()
        );
        (fetches(sb) >= n).then_some(())
    });
}

/// The drops: how many and how long, from the environment for the long run
/// (`PVLAUNCH_DROPS=10 PVLAUNCH_DROP_MAX=60` is the long run), 3 drops of 5-20 s by default.
fn drops() -> (usize, u64) {
    let n = std::env::var("PVLAUNCH_DROPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let max = std::env::var("PVLAUNCH_DROP_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    (n, max)
}

/// A pvpython client streams data from both ranks while desk's link is cut again and again
/// for 5 s to a few tens of seconds (long enough for ssh to die and pvlaunch to log in again,
/// or short enough for the old connection to come back): the client never sees a disconnect,
/// every fetch's checksum is the first's, the session ends normally, nothing is left.
#[test]
fn drops_while_connected_resume_the_stream() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let _back = LinkBack(sb);
    let mut bg = spawn_pvlaunch(sb, "connect resumable --client pvpython --script stream.py");
    wait_fetches(sb, &mut bg, 1, "the first fetch");
    assert!(
        bg.stdout().contains("\"resumable\":true"),
        "the session says it is resumable: {}",
        bg.stdout()
    );
    let (n, max) = drops();
    let mut rng = rand::rng();
    let mut timeline = Vec::new();
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..4000)));
        let before = fetches(sb);
        // The last one outlasts ssh's keep-alives (3 x 5 s): at least one new login.
        let secs = if i + 1 == n {
            25
        } else {
            rng.random_range(5..=max)
        };
        link(sb, "down");
        std::thread::sleep(Duration::from_secs(secs));
        link(sb, "up");
        let back = Instant::now();
        // The stream goes on before the next drop.
        wait_fetches(
            sb,
            &mut bg,
            before + 2,
            &format!("the stream to go on after drop {}", i + 1),
        );
        timeline.push(format!(
            "drop {}: {secs} s, stream going again {:.1} s after the link came back",
            i + 1,
            back.elapsed().as_secs_f64()
        ));
    }
    sb.write_file(Host::Desk, "stream.stop", "");
    let out = bg.wait(Duration::from_secs(120));
    for line in &timeline {
        eprintln!("{line}");
    }
    eprintln!(
        "logins again: {}, streams resumed: {}, links lost: {}",
        count(&out.stdout, "link_restored"),
        count(&out.stdout, "stream_resumed"),
        count(&out.stdout, "link_lost"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("stream: ok "), "{said}");
    assert!(!said.contains("differs"), "{said}");
    assert!(said.contains("ranks [0, 1]"), "{said}");
    assert!(
        count(&out.stdout, "link_restored") >= 1,
        "pvlaunch logged in again at least once: {}",
        out.stdout
    );
    assert!(
        count(&out.stdout, "stream_resumed") >= 1,
        "the stream was resumed at least once: {}",
        out.stdout
    );
    sb.assert_no_leaks();
}

/// A drop while the job waits in the queue: the job stays, pvlaunch logs in again, and the
/// session connects once the job starts.
#[test]
fn a_drop_while_queued_keeps_the_job_and_connects_later() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let _back = LinkBack(sb);
    sb.write_file(Host::Desk, "stream.stop", "");
    let mut bg = spawn_pvlaunch(
        sb,
        "connect resumable-later --client pvpython --script stream.py",
    );
    bg.wait_for_output("\"job_queued\"", SESSION_TIMEOUT);
    let job = queue(sb);
    link(sb, "down");
    // Longer than ssh's keep-alives (3 x 5 s) and the guard's heartbeat limit (20 s).
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(
        queue(sb),
        job,
        "the job stays queued while the link is down"
    );
    link(sb, "up");
    bg.wait_for_output("\"link_restored\"", Duration::from_secs(120));
    let out = bg.wait(SESSION_TIMEOUT);
    assert_eq!(out.code, Some(0), "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("ranks [0, 1]"), "{said}");
    sb.assert_no_leaks();
}

/// A drop longer than the grace: pvlaunch gives up at its grace (exit 4, the reason said),
/// the guard on the login node cancels the job after its own, nothing is left anywhere.
#[test]
fn a_drop_longer_than_the_grace_ends_cleanly() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let _back = LinkBack(sb);
    let mut bg = spawn_pvlaunch(
        sb,
        "connect resumable --grace 20s --client pvpython --script stream.py",
    );
    wait_fetches(sb, &mut bg, 1, "the first fetch");
    let cut = Instant::now();
    link(sb, "down");
    let out = bg.wait(Duration::from_secs(120));
    let gave_up = cut.elapsed();
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(
        out.stdout.contains("did not come back within 20 s"),
        "{}",
        out.stdout
    );
    // The guard noticed (its heartbeat limit) and waited its grace: the job goes then.
    let gone = sandbox::try_wait_for(Duration::from_secs(90), || {
        queue(sb).trim().is_empty().then_some(())
    });
    let cancelled = cut.elapsed();
    link(sb, "up");
    assert!(gone.is_some(), "the job is still there: {}", queue(sb));
    eprintln!(
        "pvlaunch gave up {:.1} s after the cut; the job was gone {:.1} s after it",
        gave_up.as_secs_f64(),
        cancelled.as_secs_f64()
    );
    sb.assert_no_leaks();
}

/// SIGKILL of pvlaunch while connected: nothing cleans up on the workstation; the guard on
/// the login node cancels the job once its grace has passed (measured), not before.
#[test]
fn sigkill_while_connected_is_cancelled_after_the_grace() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let mut bg = spawn_pvlaunch(
        sb,
        "connect resumable --grace 30s --client pvpython --script hold.py",
    );
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    let killed = Instant::now();
    sb.run(Host::Desk, "kill -KILL $(cat pvlaunch.pid)")
        .assert_success();
    let _ = bg.wait(Duration::from_secs(30));
    // Still there within the grace.
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        !queue(sb).trim().is_empty(),
        "the job was cancelled before the grace ended"
    );
    let gone = sandbox::try_wait_for(Duration::from_secs(90), || {
        queue(sb).trim().is_empty().then_some(())
    });
    assert!(gone.is_some(), "the job is still there: {}", queue(sb));
    let after = killed.elapsed();
    eprintln!(
        "SIGKILL: the job was gone {:.1} s after it (grace 30 s)",
        after.as_secs_f64()
    );
    assert!(after >= Duration::from_secs(30), "{after:?}");
    // The job's processes go with Slurm's own clean-up of the cancelled job (SIGTERM, then
    // SIGKILL after KillWait); once, a rank on node1 took longer than the leak check's 15 s.
    let clean = Instant::now();
    let left = sandbox::try_wait_for(Duration::from_secs(60), || {
        sb.leaks().is_empty().then_some(())
    });
    eprintln!(
        "SIGKILL: nothing left on any host {:.1} s after the job left the queue{}",
        clean.elapsed().as_secs_f64(),
        if left.is_some() {
            ""
        } else {
            " (not within 60 s)"
        }
    );
    sb.assert_no_leaks();
}
