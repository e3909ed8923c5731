//! The sandbox as a site with two-factor login, proved with plain ssh (no pvlaunch): one-time
//! codes (TOTP, pam_oath) at login's and gate's sshd, typed into a real terminal (tmux) the way
//! a person would; compute nodes still reach login with the key alone; and desk's variants an
//! encrypted key without agent and an unknown host key. See docs/sandbox.md.
//!
//! Needs root and network namespaces; otherwise every test prints SKIPPED (with `CI=true` they
//! fail instead).

mod common;

use std::time::Duration;

use common::sandbox::{self, Host, OTP_ONLY, OTP_PROMPT, Sandbox, SiteConfig};
use common::tmux::Tmux;

/// From starting ssh to its first prompt, and from an answer to the next line.
const PROMPT: Duration = Duration::from_secs(30);

fn otp_on_login() -> SiteConfig {
    SiteConfig::default().otp(Host::Login, None)
}

/// `ssh ARGS` on desk without a terminal and without asking anything.
fn batch_ssh(sb: &Sandbox, args: &str) -> common::sandbox::Output {
    sb.run_timeout(
        Host::Desk,
        &format!("ssh -o BatchMode=yes -o ConnectTimeout=10 {args}"),
        Duration::from_secs(30),
    )
}

/// Log in to login with a code in a terminal; returns the code used.
#[track_caller]
fn login_with_code(sb: &Sandbox, marker: &str) -> String {
    let term = Tmux::start(sb, Host::Desk, &format!("ssh login echo {marker}"));
    let screen = term.wait_for_screen(OTP_PROMPT, PROMPT);
    assert!(
        screen.contains("(pvtest@login) One-time password (OATH) for `pvtest':"),
        "pam_oath's prompt as ssh shows it:\n{screen}"
    );
    let code = sb.otp_code(Host::Login);
    term.send_line(&code);
    term.wait_for_screen(&format!("\n{marker}"), PROMPT);
    assert_eq!(term.wait_exit(PROMPT), 0, "{}", term.screen());
    code
}

#[test]
fn a_code_typed_at_the_prompt_logs_in_once_after_the_key() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(otp_on_login());
    let accepted = sb.otp_logins(Host::Login);
    let partial = sb.sshd_log_count(Host::Login, "Partial publickey for pvtest from 10.77.0.10");
    login_with_code(sb, "otp-login-ok");
    assert_eq!(
        sb.otp_logins(Host::Login),
        accepted + 1,
        "exactly one `Accepted keyboard-interactive` more in login's sshd log:\n{}",
        sb.sshd_log(Host::Login)
    );
    assert_eq!(
        sb.sshd_log_count(Host::Login, "Partial publickey for pvtest from 10.77.0.10"),
        partial + 1,
        "the key came first (`Partial publickey`)"
    );
    sb.assert_no_leaks();
}

#[test]
fn a_code_already_used_is_refused_and_asked_again() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(otp_on_login());
    let code = login_with_code(sb, "first-use-ok");
    let accepted = sb.otp_logins(Host::Login);
    let failed = sb.sshd_log_count(Host::Login, "Failed keyboard-interactive/pam for pvtest");
    let term = Tmux::start(sb, Host::Desk, "ssh login echo replay-got-in");
    term.wait_for_screen(OTP_PROMPT, PROMPT);
    term.send_line(&code);
    let screen = term.wait_for_screen_count(OTP_PROMPT, 2, PROMPT);
    assert!(!screen.contains("replay-got-in"), "{screen}");
    sandbox::wait_for("sshd to log the refused code", PROMPT, || {
        (sb.sshd_log_count(Host::Login, "Failed keyboard-interactive/pam for pvtest") > failed)
            .then_some(())
    });
    assert_eq!(
        sb.otp_logins(Host::Login),
        accepted,
        "the replayed code got in"
    );
    // A fresh code at the second prompt still works: the refusal was the code's, not the site's.
    term.send_line(&sb.otp_code(Host::Login));
    term.wait_for_screen("\nreplay-got-in", PROMPT);
    assert_eq!(term.wait_exit(PROMPT), 0);
    assert_eq!(sb.otp_logins(Host::Login), accepted + 1);
    drop(term);
    sb.assert_no_leaks();
}

#[test]
fn batch_mode_fails_at_once_and_off_restores_key_only_login() {
    let Some(sb) = sandbox::shared() else { return };
    let mut site = sb.configure(otp_on_login());
    let out = batch_ssh(sb, "login true").assert_failure();
    assert!(
        out.stderr
            .contains("Permission denied (keyboard-interactive)"),
        "{out}"
    );
    assert!(out.elapsed < Duration::from_secs(10), "not at once: {out}");
    // A site of password-and-code style: no key step at all, still nothing without a terminal.
    site.set(SiteConfig::default().otp(Host::Login, Some(OTP_ONLY)));
    let out = batch_ssh(sb, "login true").assert_failure();
    assert!(out.stderr.contains("Permission denied"), "{out}");
    site.set(SiteConfig::default());
    batch_ssh(sb, "login true").assert_success();
    let config = std::fs::read_to_string(sb.state_dir().join("hosts/login/sshd_config")).unwrap();
    assert!(config.contains("UsePAM no\n"), "{config}");
    assert!(
        config.contains("AuthenticationMethods publickey\n"),
        "{config}"
    );
    let pam = sb.run_root(Host::Login, "grep -c pam_oath /etc/pam.d/sshd || true");
    assert_eq!(
        pam.stdout.trim(),
        "0",
        "login's own /etc/pam.d/sshd is back:\n{pam}"
    );
    sb.assert_no_leaks();
}

#[test]
fn a_code_only_site_asks_for_the_code_without_the_key() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().otp(Host::Login, Some(OTP_ONLY)));
    let partial = sb.sshd_log_count(Host::Login, "Partial publickey");
    let accepted = sb.otp_logins(Host::Login);
    login_with_code(sb, "code-only-ok");
    assert_eq!(sb.otp_logins(Host::Login), accepted + 1);
    assert_eq!(
        sb.sshd_log_count(Host::Login, "Partial publickey"),
        partial,
        "no key step on a keyboard-interactive-only site"
    );
    sb.assert_no_leaks();
}

#[test]
fn a_jump_through_gate_asks_for_two_codes() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(otp_on_login().otp(Host::Gate, None));
    let (at_gate, at_login) = (sb.otp_logins(Host::Gate), sb.otp_logins(Host::Login));
    let term = Tmux::start(sb, Host::Desk, "ssh -J gate login echo two-hops-ok");
    term.wait_for_screen("(pvtest@gate) One-time password", PROMPT);
    term.send_line(&sb.otp_code(Host::Gate));
    term.wait_for_screen("(pvtest@login) One-time password", PROMPT);
    term.send_line(&sb.otp_code(Host::Login));
    let screen = term.wait_for_screen("\ntwo-hops-ok", PROMPT);
    assert_eq!(screen.matches(OTP_PROMPT).count(), 2, "{screen}");
    assert_eq!(term.wait_exit(PROMPT), 0);
    assert_eq!(sb.otp_logins(Host::Gate), at_gate + 1);
    assert_eq!(sb.otp_logins(Host::Login), at_login + 1);
    drop(term);
    sb.assert_no_leaks();
}

#[test]
fn a_compute_node_reaches_login_with_the_key_alone() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(otp_on_login());
    let accepted = sb.otp_logins(Host::Login);
    let by_key = sb.sshd_log_count(Host::Login, "Accepted publickey for pvtest from 10.77.0.21");
    for node in [Host::Node1, Host::Node2] {
        let out = sb
            .run_timeout(
                node,
                "ssh -o BatchMode=yes -o ConnectTimeout=10 login hostname",
                Duration::from_secs(30),
            )
            .assert_success();
        assert_eq!(out.stdout.trim(), "login");
    }
    assert_eq!(
        sb.sshd_log_count(Host::Login, "Accepted publickey for pvtest from 10.77.0.21"),
        by_key + 1
    );
    assert_eq!(sb.otp_logins(Host::Login), accepted, "no code asked");
    // While desk is asked for one.
    batch_ssh(sb, "login true").assert_failure();
    sb.assert_no_leaks();
}

#[test]
fn otp_and_sshd_settings_coexist() {
    let Some(sb) = sandbox::shared() else { return };
    let mut site =
        sb.configure(otp_on_login().sshd(Host::Login, "GatewayPorts", "clientspecified"));
    let effective = |addr: &str| {
        let conf = sb.state_dir().join("hosts/login/sshd_config");
        sb.run_root(
            Host::Login,
            &format!(
                "/usr/sbin/sshd -T -f {} -C user=pvtest,host=x,addr={addr}",
                conf.display()
            ),
        )
        .assert_success()
        .stdout
    };
    let desk = effective("10.77.0.10");
    for line in [
        "usepam yes",
        "kbdinteractiveauthentication yes",
        "authenticationmethods publickey,keyboard-interactive",
        "gatewayports clientspecified",
    ] {
        assert!(desk.lines().any(|l| l == line), "no {line:?} in:\n{desk}");
    }
    let node = effective("10.77.0.22");
    assert!(
        node.lines().any(|l| l == "authenticationmethods publickey"),
        "{node}"
    );
    site.set(SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified"));
    let desk = effective("10.77.0.10");
    assert!(desk.lines().any(|l| l == "usepam no"), "{desk}");
    assert!(
        desk.lines().any(|l| l == "gatewayports clientspecified"),
        "{desk}"
    );
    sb.assert_no_leaks();
}

#[test]
fn an_encrypted_key_without_agent_asks_for_its_passphrase() {
    let Some(sb) = sandbox::shared() else { return };
    let mut site = sb.configure(SiteConfig::default().key_passphrase("six wooden spoons"));
    let out = batch_ssh(sb, "login true").assert_failure();
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{out}"
    );
    let term = Tmux::start(sb, Host::Desk, "ssh login echo key-ok");
    term.wait_for_screen(
        "Enter passphrase for key '/home/pvtest/.ssh/id_ed25519':",
        PROMPT,
    );
    term.send_line("six wooden spoons");
    term.wait_for_screen("\nkey-ok", PROMPT);
    assert_eq!(term.wait_exit(PROMPT), 0);
    drop(term);
    site.set(SiteConfig::default());
    batch_ssh(sb, "login true").assert_success();
    sb.assert_no_leaks();
}

#[test]
fn an_unknown_host_key_asks_before_connecting() {
    let Some(sb) = sandbox::shared() else { return };
    let mut site = sb.configure(SiteConfig::default().forget_host_key(Host::Login));
    let out = batch_ssh(sb, "login true").assert_failure();
    assert!(out.stderr.contains("Host key verification failed"), "{out}");
    batch_ssh(sb, "gate true").assert_success();
    let term = Tmux::start(sb, Host::Desk, "ssh login echo host-key-ok");
    term.wait_for_screen(
        "The authenticity of host 'login (10.77.0.12)' can't be established",
        PROMPT,
    );
    term.wait_for_screen("Are you sure you want to continue connecting", PROMPT);
    term.send_line("yes");
    term.wait_for_screen("\nhost-key-ok", PROMPT);
    assert_eq!(term.wait_exit(PROMPT), 0);
    drop(term);
    site.set(SiteConfig::default());
    let known = std::fs::read_to_string(sb.desk_home().join(".ssh/known_hosts")).unwrap();
    let site_list = std::fs::read_to_string(sb.state_dir().join("etc/known_hosts")).unwrap();
    assert_eq!(
        known, site_list,
        "desk's known_hosts is the site's list again"
    );
    batch_ssh(sb, "-o StrictHostKeyChecking=yes login true").assert_success();
    sb.assert_no_leaks();
}
