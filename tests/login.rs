//! End to end: how pvlaunch logs in (docs/authentication.md) on the sandbox cluster's real sshd.
//! A kept login serves later sessions, the user's own master is used and left running.
//! Needs root (see tests/sandbox.rs); skipped loudly without it, failing under CI=true.

mod common;

use std::time::Duration;

use common::sandbox::{self, Host, Sandbox, SiteConfig};

const SESSION_TIMEOUT: Duration = Duration::from_secs(240);

/// This build's pvlaunch, the two-hop profiles and the fetch script in desk's home.
fn install(sb: &Sandbox) {
    let home = sb.desk_home();
    std::fs::create_dir_all(home.join("bin")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), home.join("bin/pvlaunch")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (from, to) in [
        ("tests/fixtures/e2e/two-hop.pvsc", "two-hop.pvsc"),
        ("tests/fixtures/e2e/fetch.py", "fetch.py"),
    ] {
        std::fs::copy(root.join(from), home.join(to)).unwrap();
    }
    let owner = format!("{}:{}", sandbox::TEST_USER, sandbox::TEST_USER);
    let status = std::process::Command::new("chown")
        .args(["-R", &owner])
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    evs.iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {evs:?}"))
}

/// Logins from desk that sshd on `host` accepted so far, of any method (a batch job's own ssh
/// from a compute node is not the person's login).
fn logins(sb: &Sandbox, host: Host) -> usize {
    let log = sb.state_dir().join(format!("log/sshd-{host}.log"));
    let from_desk = format!(" from {} ", Host::Desk.addr());
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Accepted ") && l.contains(" for pvtest") && l.contains(&from_desk))
        .count()
}

/// A reverse-two-hop session on desk with the fetch script; `extra` more arguments.
fn session(sb: &Sandbox, extra: &str) -> sandbox::Output {
    let out = sb.run_timeout(
        Host::Desk,
        &format!(
            "bin/pvlaunch -f two-hop.pvsc --json connect reverse-two-hop --client pvpython --script fetch.py {extra}"
        ),
        SESSION_TIMEOUT,
    );
    sandbox::report(&format!(
        "session {extra}: exit {:?} after {:.1?}",
        out.code, out.elapsed
    ));
    out
}

/// ssh processes of the test user on desk (a master left behind shows here).
fn desk_ssh(sb: &Sandbox) -> String {
    sb.run(Host::Desk, "pgrep -a -u pvtest -x ssh || true")
        .stdout
        .trim()
        .to_string()
}

/// Like [`Sandbox::assert_no_leaks`], but a master left on purpose (on desk, and its sshd
/// session on login) is not a leak.
#[track_caller]
fn no_leaks_but_the_master(sb: &Sandbox) {
    let master = |l: &String| {
        (l.contains("desk")
            && l.contains("ssh")
            && (l.contains(" -M ") || l.contains("ControlMaster=yes")))
            || (l.contains("login") && l.contains("sshd"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<String> = sb.leaks().into_iter().filter(|l| !master(l)).collect();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("the test left things behind:\n{}", left.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Ends a kept login whatever the test's outcome.
struct Logout<'a>(&'a Sandbox);

impl Drop for Logout<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(
            Host::Desk,
            "bin/pvlaunch -f two-hop.pvsc logout reverse-two-hop",
        );
    }
}

#[test]
fn a_kept_login_serves_the_next_session_and_logout_ends_it() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let _logout = Logout(sb);

    let before = logins(sb, Host::Login);
    let first = session(sb, "--persist 10m");
    assert_eq!(first.code, Some(0), "{first}");
    let evs = events(&first.stdout);
    assert_eq!(event(&evs, "ssh_connected")["master"], "new", "{first}");
    assert_eq!(
        logins(sb, Host::Login) - before,
        1,
        "the first session logs in once"
    );
    let kept = desk_ssh(sb);
    assert!(
        kept.contains("ControlPersist=600s"),
        "the login is kept after the session: {kept:?}"
    );

    let second = session(sb, "");
    assert_eq!(second.code, Some(0), "{second}");
    let evs = events(&second.stdout);
    assert_eq!(event(&evs, "ssh_connected")["master"], "kept", "{second}");
    assert_eq!(
        logins(sb, Host::Login) - before,
        1,
        "the second session needs no login of its own"
    );
    assert!(
        evs.iter().any(|e| e["event"] == "cleanup"
            && e["step"]
                .as_str()
                .unwrap_or("")
                .contains("stays for later sessions")),
        "{second}"
    );
    // The session's forwards are gone from the kept master: its private socket on login too.
    no_leaks_but_the_master(sb);

    let out = sb
        .run(
            Host::Desk,
            "bin/pvlaunch -f two-hop.pvsc logout reverse-two-hop",
        )
        .assert_success();
    assert!(out.stdout.contains("ended the ssh login"), "{out}");
    let left = desk_ssh(sb);
    assert!(left.is_empty(), "logout ends the kept master: {left:?}");
    let again = sb
        .run(
            Host::Desk,
            "bin/pvlaunch -f two-hop.pvsc logout reverse-two-hop",
        )
        .assert_success();
    assert!(again.stdout.contains("no ssh login was kept"), "{again}");
    sb.assert_no_leaks();
}

#[test]
fn the_users_own_master_is_used_and_left_running() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let config = sb.desk_home().join(".ssh/config");
    let saved = std::fs::read(&config).ok();
    struct Restore(std::path::PathBuf, Option<Vec<u8>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            match &self.1 {
                Some(bytes) => {
                    let _ = std::fs::write(&self.0, bytes);
                }
                None => {
                    let _ = std::fs::remove_file(&self.0);
                }
            }
        }
    }
    let _restore = Restore(config.clone(), saved.clone());
    let mut text = String::from_utf8(saved.unwrap_or_default()).unwrap();
    text.push_str("\nHost login\n  ControlPath ~/.ssh/cm-%C\n");
    sb.write_file(Host::Desk, ".ssh/config", &text);
    sb.run(Host::Desk, "chmod 600 .ssh/config").assert_success();
    sb.run(
        Host::Desk,
        "ssh -o ControlMaster=yes -o ControlPersist=yes -N -f login && ssh -O check login",
    )
    .assert_success();
    struct ExitMaster<'a>(&'a Sandbox);
    impl Drop for ExitMaster<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(Host::Desk, "ssh -O exit login");
        }
    }
    let _master = ExitMaster(sb);

    let before = logins(sb, Host::Login);
    let out = session(sb, "");
    assert_eq!(out.code, Some(0), "{out}");
    let evs = events(&out.stdout);
    assert_eq!(event(&evs, "ssh_connected")["master"], "user", "{out}");
    assert_eq!(
        logins(sb, Host::Login),
        before,
        "no login of pvlaunch's own"
    );
    let check = sb.run(Host::Desk, "ssh -O check login");
    assert!(
        check.success(),
        "the user's master is left running: {check}"
    );
    no_leaks_but_the_master(sb);
}
