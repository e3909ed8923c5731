//! `pvlaunch check` and `pvlaunch init` end to end in the sandbox, one test per site variant:
//! the verdict and the fix `check` gives, and whether the profile `init` writes then connects
//! (or, where no recipe can work, that `init` writes nothing and says why). Each test ends with
//! the leak check: the test job and every forward of the check are gone.

mod common;

use std::time::Duration;

use common::sandbox::{self, Firewall, Host, Sandbox, SiteConfig};
use serde_json::Value;

const SESSION_TIMEOUT: Duration = Duration::from_secs(240);

/// This build's pvlaunch and the fetching client in desk's home; no profile from earlier.
fn install(sb: &Sandbox) {
    let home = sb.desk_home();
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("tests/fixtures/e2e/fetch.py"),
        home.join("fetch.py"),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(home.join(".config/pvlaunch"));
    let status = std::process::Command::new("chown")
        .args([
            "-R",
            &format!("{}:{}", sandbox::TEST_USER, sandbox::TEST_USER),
        ])
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `pvlaunch --json check ARGS` on desk: the report and the exit code.
fn check(sb: &Sandbox, args: &str) -> (Value, Option<i32>) {
    let out = sb.run_timeout(
        Host::Desk,
        &format!("bin/pvlaunch --json check {args}"),
        Duration::from_secs(200),
    );
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}):\n{out}"));
    sandbox::report(&format!(
        "check {args}: exit {:?} after {:.1?}",
        out.code, out.elapsed
    ));
    (report, out.code)
}

fn row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {report:#}"))
}

#[track_caller]
fn assert_verdict(report: &Value, id: &str, verdict: &str, fix_says: Option<&str>) {
    let r = row(report, id);
    assert_eq!(r["verdict"], verdict, "{id}: {r:#}");
    if let Some(text) = fix_says {
        let fix = r["fix"].as_str().unwrap_or("");
        assert!(
            fix.contains(text),
            "{id}: the fix should say {text:?}: {r:#}"
        );
    }
}

fn works(report: &Value) -> Vec<String> {
    report["recipes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["works"] == true)
        .map(|r| r["recipe"].as_str().unwrap().to_string())
        .collect()
}

/// `init NAME --yes ARGS`, then `connect NAME` with a pvpython client that fetches data from
/// both ranks.
fn init_then_connect(sb: &Sandbox, name: &str, args: &str, recipe: &str) {
    let out = sb.run_timeout(
        Host::Desk,
        &format!("bin/pvlaunch init {name} --yes {args}"),
        Duration::from_secs(200),
    );
    assert!(out.success(), "init failed:\n{out}");
    assert!(
        out.stdout.contains(&format!("(recipe {recipe})")),
        "init chose another recipe:\n{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("next: pvlaunch connect {name}"))
    );
    let file = format!(".config/pvlaunch/{name}.pvsc");
    sb.run(Host::Desk, &format!("bin/pvlaunch validate {file}"))
        .assert_success();
    let session = sb.run_timeout(
        Host::Desk,
        &format!("bin/pvlaunch connect {name} --client pvpython --script fetch.py"),
        SESSION_TIMEOUT,
    );
    assert!(
        session.success(),
        "connect with init's profile failed:\n{session}"
    );
    assert!(
        session.stdout.contains("fetch: ranks 0 1") || session.stderr.contains("fetch: ranks 0 1"),
        "the client did not get data from both ranks:\n{session}"
    );
}

/// `init` where no recipe can work: non-zero, says why, writes nothing.
fn init_refuses(sb: &Sandbox, name: &str, args: &str, code: i32) {
    let out = sb.run_timeout(
        Host::Desk,
        &format!("bin/pvlaunch init {name} --yes {args}"),
        Duration::from_secs(200),
    );
    assert_eq!(out.code, Some(code), "init should refuse:\n{out}");
    assert!(out.stderr.contains("nothing written"), "{out}");
    let exists = sb.run(Host::Desk, &format!("test -e .config/pvlaunch/{name}.pvsc"));
    assert!(!exists.success(), "init wrote a profile anyway");
}

#[test]
fn default_site_gateway_ports_no_takes_the_relay_and_init_connects() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let (r, code) = check(sb, "--login login");
    assert_eq!(code, Some(0), "{r:#}");
    for id in [
        "ssh.resolve",
        "ssh.reach",
        "ssh.host_key",
        "ssh.auth",
        "fwd.remote",
        "fwd.local",
        "fwd.unix",
        "sched.kind",
        "sched.partition",
        "sched.test_only",
        "pv.pvserver",
        "pv.version",
        "path.node_to_login",
        "path.login_to_node",
        "path.node_ssh_login",
    ] {
        assert_verdict(&r, id, "ok", None);
    }
    assert_verdict(&r, "fwd.gateway_ports", "warn", Some("relay"));
    assert_eq!(r["auto"], "relay");
    assert_eq!(works(&r), ["relay", "reverse-two-hop", "two-hop"]);
    assert_eq!(r["site"]["scheduler"], "slurm");
    init_then_connect(sb, "site", "--login login", "relay");
    sb.assert_no_leaks();
}

#[test]
fn gateway_ports_clientspecified_still_prefers_the_resumable_relay_and_init_connects() {
    let Some(sb) = sandbox::shared() else { return };
    let _site =
        sb.configure(SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified"));
    install(sb);
    let (r, code) = check(sb, "--login login");
    assert_eq!(code, Some(0));
    assert_verdict(&r, "fwd.gateway_ports", "ok", None);
    // Reverse works here too, but the relay's sessions survive a dropped network.
    assert_eq!(r["auto"], "relay");
    init_then_connect(sb, "open", "--login login", "relay");
    sb.assert_no_leaks();
}

#[test]
fn allow_tcp_forwarding_no_leaves_no_recipe_and_init_writes_nothing() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().sshd(Host::Login, "AllowTcpForwarding", "no"));
    install(sb);
    let (r, code) = check(sb, "--login login --no-job");
    assert_eq!(code, Some(6), "{r:#}");
    assert_verdict(&r, "fwd.remote", "fail", Some("AllowTcpForwarding"));
    assert_verdict(&r, "fwd.gateway_ports", "skipped", None);
    assert_verdict(&r, "fwd.local", "fail", Some("AllowTcpForwarding"));
    assert!(works(&r).is_empty());
    assert_eq!(r["chosen"], Value::Null);
    init_refuses(sb, "closed", "--login login", 6);
    sb.assert_no_leaks();
}

#[test]
fn allow_tcp_forwarding_local_leaves_two_hop_and_init_connects() {
    let Some(sb) = sandbox::shared() else { return };
    let _site =
        sb.configure(SiteConfig::default().sshd(Host::Login, "AllowTcpForwarding", "local"));
    install(sb);
    let (r, code) = check(sb, "--login login");
    assert_eq!(code, Some(0), "{r:#}");
    assert_verdict(&r, "fwd.remote", "fail", Some("two-hop"));
    assert_verdict(&r, "fwd.local", "ok", None);
    assert_eq!(works(&r), ["two-hop"]);
    assert_eq!(r["auto"], Value::Null);
    assert_eq!(r["chosen"], "two-hop");
    init_then_connect(sb, "local", "--login login", "two-hop");
    sb.assert_no_leaks();
}

#[test]
fn a_firewall_between_nodes_and_login_leaves_two_hop_and_init_connects() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().firewall(Firewall::Isolated));
    install(sb);
    let (r, code) = check(sb, "--login login");
    assert_eq!(code, Some(0), "{r:#}");
    assert_verdict(&r, "path.node_to_login", "fail", Some("firewall"));
    assert_verdict(&r, "path.node_ssh_login", "fail", Some("firewall"));
    assert_verdict(&r, "path.login_to_node", "ok", None);
    assert_eq!(works(&r), ["two-hop"]);
    init_then_connect(sb, "iso", "--login login", "two-hop");
    sb.assert_no_leaks();
}

#[test]
fn the_gate_firewall_needs_a_jump_host() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().firewall(Firewall::Gate));
    install(sb);
    let (r, code) = check(sb, "--login login --no-job");
    assert_eq!(code, Some(4), "{r:#}");
    assert_verdict(&r, "ssh.reach", "fail", Some("--jump"));
    assert_verdict(&r, "fwd.remote", "skipped", None);
    let (r, code) = check(sb, "--login login --jump gate --no-job");
    assert_eq!(code, Some(0), "{r:#}");
    assert_verdict(&r, "ssh.auth", "ok", None);
    assert_verdict(&r, "fwd.remote", "ok", None);
    init_then_connect(sb, "behind-gate", "--login login --jump gate", "relay");
    sb.assert_no_leaks();
}

#[test]
fn a_pvserver_of_another_version_fails_the_version_check() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    // A site module that puts another pvserver first on PATH (a stand-in reporting 5.10).
    sb.run(Host::Login, "mkdir -p pv510").assert_success();
    sb.write_file(
        Host::Login,
        "pv510/pvserver",
        "#!/bin/sh\necho 'paraview version 5.10.1'\n",
    );
    sb.run(Host::Login, "chmod 755 pv510/pvserver")
        .assert_success();
    let setup = "--setup 'export PATH=$HOME/pv510:$PATH'";
    let (r, code) = check(sb, &format!("--login login --no-job {setup}"));
    assert_eq!(code, Some(6), "{r:#}");
    assert_verdict(&r, "pv.version", "fail", Some("5.11"));
    let detail = row(&r, "pv.version")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("5.10.1") && detail.contains("different ParaView versions"));
    init_refuses(sb, "oldpv", &format!("--login login {setup}"), 6);
    sb.run(Host::Login, "rm -rf pv510").assert_success();
    sb.assert_no_leaks();
}

#[test]
fn a_wrong_partition_fails_with_the_ones_there_are() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let (r, code) = check(sb, "--login login --partition bach");
    assert_eq!(code, Some(6), "{r:#}");
    assert_verdict(&r, "sched.partition", "fail", Some("did you mean `batch`?"));
    assert_verdict(&r, "sched.test_only", "fail", None);
    assert_verdict(&r, "path.node_to_login", "skipped", None);
    init_refuses(sb, "typo", "--login login --partition bach", 6);
    sb.assert_no_leaks();
}

#[test]
fn install_paraview_keeps_the_users_other_servers() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let mine = r#"<?xml version="1.0"?>
<Servers>
  <Server name="my-own" resource="cs://elsewhere:11111"><ManualStartup/></Server>
</Servers>
"#;
    sb.run(Host::Desk, "mkdir -p .config/ParaView")
        .assert_success();
    sb.write_file(Host::Desk, ".config/ParaView/servers.pvsc", mine);
    sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch init pv --login login --yes --install-paraview",
        Duration::from_secs(200),
    )
    .assert_success();
    let file = sb
        .read_file(
            Host::Desk,
            &format!("{}/.config/ParaView/servers.pvsc", sandbox::HOME),
        )
        .unwrap();
    assert!(
        file.contains("name=\"my-own\"") && file.contains("cs://elsewhere:11111"),
        "{file}"
    );
    assert!(
        file.contains("name=\"pv\"") && file.contains("<PVLaunch"),
        "{file}"
    );
    let backups = sb.run(Host::Desk, "ls .config/ParaView/").assert_success();
    assert!(
        backups.stdout.contains("servers.pvsc.pvlaunch-backup-"),
        "{backups}"
    );
    // The dialog's definition is pvlaunch's: it lists and resolves.
    sb.run(Host::Desk, "bin/pvlaunch show pv").assert_success();
    sb.run(Host::Desk, "rm -rf .config/ParaView/servers.pvsc*")
        .assert_success();
    sb.assert_no_leaks();
}
