//! End to end: how pvlaunch logs in (docs/authentication.md) on the sandbox cluster's real sshd,
//! with real one-time codes (PAM pam_oath, TOTP) where a site asks for them: in a terminal
//! (tmux), through an askpass window under ParaView, with nobody to answer, a wrong code, a kept
//! login, the user's own master.
//! Needs root (see tests/sandbox.rs); skipped loudly without it, failing under CI=true.

mod common;

use std::time::Duration;

use common::sandbox::{self, Host, OTP_PROMPT, Sandbox, SiteConfig};
use common::tmux::Tmux;

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

const SESSION_CMD: &str =
    "bin/pvlaunch -f two-hop.pvsc connect reverse-two-hop --client pvpython --script fetch.py";

/// A session in a terminal on desk: answer the one-time code prompt once; returns the screen
/// (the terminal is closed).
fn session_in_terminal(sb: &Sandbox, extra: &str, host: Host) -> String {
    let term = Tmux::start(sb, Host::Desk, &format!("{SESSION_CMD} {extra}"));
    term.wait_for_screen(OTP_PROMPT, Duration::from_secs(60));
    term.send_line(&sb.otp_code(host));
    let status = term.wait_exit(SESSION_TIMEOUT);
    let screen = term.screen();
    assert_eq!(status, 0, "the session in the terminal failed:\n{screen}");
    screen
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
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, None));
    install(sb);
    let _logout = Logout(sb);

    // The first session in a terminal: one code.
    let before = logins(sb, Host::Login);
    let codes = sb.otp_logins(Host::Login);
    let screen = session_in_terminal(sb, "--persist 10m", Host::Login);
    assert_eq!(
        screen.matches(OTP_PROMPT).count(),
        1,
        "one prompt:\n{screen}"
    );
    assert_eq!(
        logins(sb, Host::Login) - before,
        1,
        "the first session logs in once"
    );
    assert_eq!(sb.otp_logins(Host::Login) - codes, 1, "with one code");
    let kept = desk_ssh(sb);
    assert!(
        kept.contains("ControlPersist=600s"),
        "the login is kept after the session: {kept:?}"
    );

    // The second one with nobody to answer (no terminal, no display): the kept login serves.
    let second = session_without_terminal(sb, "env -u DISPLAY");
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

/// A reverse-two-hop session with no terminal; `env` first (e.g. `env -u DISPLAY`).
fn session_without_terminal(sb: &Sandbox, env: &str) -> sandbox::Output {
    let out = sb.run_timeout(
        Host::Desk,
        &format!("{env} {SESSION_CMD} --json < /dev/null"),
        SESSION_TIMEOUT,
    );
    sandbox::report(&format!(
        "session without a terminal ({env}): exit {:?} after {:.1?}",
        out.code, out.elapsed
    ));
    out
}

/// In a terminal: ssh's prompt is on the screen (no spinner over it), the person types the
/// code, the session runs on that one login: one code, one `Accepted keyboard-interactive`.
#[test]
fn in_a_terminal_one_code_opens_the_whole_session() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, None));
    install(sb);
    let codes = sb.otp_logins(Host::Login);
    let screen = session_in_terminal(sb, "", Host::Login);
    assert_eq!(
        screen.matches(OTP_PROMPT).count(),
        1,
        "one prompt:\n{screen}"
    );
    assert_eq!(
        sb.otp_logins(Host::Login) - codes,
        1,
        "one code for the whole session"
    );
    sb.assert_no_leaks();
}

/// Through the gateway with codes on both hosts: two prompts, one per hop, none later.
#[test]
fn through_a_gateway_one_code_per_hop() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(
        SiteConfig::default()
            .otp(Host::Gate, None)
            .otp(Host::Login, None),
    );
    install(sb);
    let (gate, login) = (sb.otp_logins(Host::Gate), sb.otp_logins(Host::Login));
    let term = Tmux::start(
        sb,
        Host::Desk,
        "bin/pvlaunch -f two-hop.pvsc connect two-hop-gate --client pvpython --script fetch.py",
    );
    term.wait_for_screen(OTP_PROMPT, Duration::from_secs(60));
    term.send_line(&sb.otp_code(Host::Gate));
    term.wait_for_screen_count(OTP_PROMPT, 2, Duration::from_secs(60));
    term.send_line(&sb.otp_code(Host::Login));
    let status = term.wait_exit(SESSION_TIMEOUT);
    let screen = term.screen();
    assert_eq!(status, 0, "{screen}");
    assert_eq!(
        screen.matches(OTP_PROMPT).count(),
        2,
        "two prompts:\n{screen}"
    );
    assert_eq!(sb.otp_logins(Host::Gate) - gate, 1);
    assert_eq!(sb.otp_logins(Host::Login) - login, 1);
    drop(term);
    sb.assert_no_leaks();
}

/// A wrong code: refused once, not asked again, the method named, nothing left.
#[test]
fn a_wrong_code_fails_once_and_names_the_method() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, None));
    install(sb);
    let codes = sb.otp_logins(Host::Login);
    let term = Tmux::start(sb, Host::Desk, SESSION_CMD);
    term.wait_for_screen(OTP_PROMPT, Duration::from_secs(60));
    term.send_line("000000");
    let status = term.wait_exit(Duration::from_secs(60));
    let screen = term.screen();
    assert_eq!(status, 4, "exit 4 (ssh):\n{screen}");
    assert_eq!(
        screen.matches(OTP_PROMPT).count(),
        1,
        "asked once:\n{screen}"
    );
    assert!(
        screen.contains("refused the answer to keyboard-interactive"),
        "{screen}"
    );
    assert!(screen.contains("does not try again"), "{screen}");
    assert_eq!(sb.otp_logins(Host::Login), codes);
    drop(term);
    sb.assert_no_leaks();
}

/// No terminal and no display: the clear error at once, no code asked for.
#[test]
fn with_nobody_to_answer_the_session_fails_at_once_saying_what_was_needed() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, None));
    install(sb);
    let partial = sb.sshd_log_count(Host::Login, "Partial publickey");
    let out = session_without_terminal(sb, "env -u DISPLAY");
    assert_eq!(out.code, Some(4), "{out}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "at once: {:.1?}",
        out.elapsed
    );
    let evs = events(&out.stdout);
    let error = event(&evs, "error");
    let message = error["message"].as_str().unwrap_or("");
    assert!(message.contains("nobody can answer here"), "{error}");
    assert!(message.contains("one-time code"), "{error}");
    let hint = error["hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("askpass") && hint.contains("persist"),
        "{error}"
    );
    // The key was tried (and accepted as a first step); the code never asked for.
    assert_eq!(
        sb.sshd_log_count(Host::Login, "Partial publickey") - partial,
        1,
        "{}",
        sb.sshd_log(Host::Login)
    );
    sb.assert_no_leaks();
}

/// The real ParaView GUI runs pvlaunch from a profile's `<Command>` (no terminal, a display):
/// ssh asks through the askpass window, the code is typed there, the session connects.
#[test]
fn under_paraview_the_code_is_asked_in_an_askpass_window() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, None));
    install(sb);
    let codes = sb.otp_logins(Host::Login);
    let gui = sb.spawn(
        Host::Desk,
        "PATH=$HOME/bin:$PATH exec paraview --servers-file=two-hop.pvsc --server=two-hop-gui > gui-otp.log 2>&1",
    );
    let log = || {
        sb.read_file(Host::Desk, "/home/pvtest/gui-otp.log")
            .unwrap_or_default()
    };
    let window = sandbox::try_wait_for(Duration::from_secs(90), || {
        let found = sb
            .run(
                Host::Desk,
                "xdotool search --name 'OpenSSH' 2>/dev/null | head -1",
            )
            .stdout;
        let w = found.trim().to_string();
        (!w.is_empty()).then_some(w)
    })
    .unwrap_or_else(|| panic!("no askpass window appeared; ParaView's log:\n{}", log()));
    let code = sb.otp_code(Host::Login);
    sb.run(
        Host::Desk,
        &format!("xdotool windowfocus --sync {window}; xdotool type --delay 50 {code}; xdotool key Return"),
    )
    .assert_success();
    let connected = sandbox::try_wait_for(SESSION_TIMEOUT, || {
        log().contains("tunnel open to node1").then_some(())
    });
    assert!(
        connected.is_some(),
        "the session did not connect; ParaView's log:\n{}",
        log()
    );
    assert_eq!(sb.otp_logins(Host::Login) - codes, 1, "one code");
    drop(gui);
    let gone = sandbox::try_wait_for(Duration::from_secs(30), || {
        sb.run(Host::Login, "squeue -h -u pvtest")
            .stdout
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(gone.is_some(), "the job is cancelled after ParaView closes");
    sb.assert_no_leaks();
}

/// A passphrase-protected key with no agent: ssh's prompt is on the screen, the passphrase is
/// typed there, the session runs.
#[test]
fn a_key_passphrase_is_asked_in_the_terminal() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().key_passphrase("correct horse"));
    install(sb);
    let term = Tmux::start(sb, Host::Desk, SESSION_CMD);
    term.wait_for_screen("Enter passphrase for key", Duration::from_secs(60));
    term.send_line("correct horse");
    let status = term.wait_exit(SESSION_TIMEOUT);
    let screen = term.screen();
    assert_eq!(status, 0, "{screen}");
    assert_eq!(
        screen.matches("Enter passphrase for key").count(),
        1,
        "asked once:\n{screen}"
    );
    drop(term);
    sb.assert_no_leaks();
}

/// A login node whose host key desk does not know: ssh's whole question is on the screen;
/// declined, the session ends with what to check; accepted by the person, it runs. Without a
/// terminal and a display it is refused at once, never accepted for the user.
#[test]
fn an_unknown_host_key_is_the_persons_to_accept() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().forget_host_key(Host::Login));
    install(sb);

    let out = session_without_terminal(sb, "env -u DISPLAY");
    assert_eq!(out.code, Some(4), "{out}");
    let error = event(&events(&out.stdout), "error").clone();
    assert!(
        error["hint"]
            .as_str()
            .unwrap_or("")
            .contains("`ssh login` once in a terminal"),
        "{error}"
    );

    let term = Tmux::start(sb, Host::Desk, SESSION_CMD);
    let screen = term.wait_for_screen("(yes/no", Duration::from_secs(60));
    assert!(
        screen.contains("The authenticity of host 'login (10.77.0.12)' can't be established")
            && screen.contains("key fingerprint is SHA256:"),
        "the whole question:\n{screen}"
    );
    term.send_line("no");
    let status = term.wait_exit(Duration::from_secs(60));
    let screen = term.screen();
    assert_eq!(status, 4, "{screen}");
    assert!(screen.contains("Compare the fingerprint"), "{screen}");
    drop(term);

    let term = Tmux::start(sb, Host::Desk, SESSION_CMD);
    term.wait_for_screen("(yes/no", Duration::from_secs(60));
    term.send_line("yes");
    let status = term.wait_exit(SESSION_TIMEOUT);
    let screen = term.screen();
    assert_eq!(status, 0, "{screen}");
    drop(term);
    sb.assert_no_leaks();
}

/// A site that allows one session per ssh connection (`MaxSessions 1`), with one-time codes:
/// `auto` finds it out and carries the session through pvlaunch's channel in that one session;
/// `--no-multiplex` uses no connection sharing at all. One code each, every recipe's forward.
#[test]
fn with_one_session_per_connection_the_channel_carries_the_session() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(
        SiteConfig::default()
            .sshd(Host::Login, "MaxSessions", "1")
            .otp(Host::Login, None),
    );
    install(sb);

    // auto, in a terminal: one code, the channel over the master.
    let codes = sb.otp_logins(Host::Login);
    let screen = session_in_terminal(sb, "", Host::Login);
    assert!(
        screen.contains("one session per ssh connection"),
        "the switch is said:\n{screen}"
    );
    assert_eq!(sb.otp_logins(Host::Login) - codes, 1, "one code");
    sb.assert_no_leaks();

    // No connection sharing at all, for each recipe (their forwards: -R TCP, -R to a Unix
    // socket, -L), one code each.
    for recipe in ["reverse-two-hop", "relay", "two-hop", "reverse"] {
        let codes = sb.otp_logins(Host::Login);
        let screen = session_in_terminal(
            sb,
            &format!("--no-multiplex --recipe {recipe}"),
            Host::Login,
        );
        assert!(!screen.contains("ControlMaster"), "{screen}");
        assert_eq!(
            sb.otp_logins(Host::Login) - codes,
            1,
            "one code for the {recipe} session"
        );
        sb.assert_no_leaks();
    }
}
