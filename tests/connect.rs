//! `pvlaunch connect` end to end in the sandbox cluster: the real sshd, Slurm, pvserver under
//! MPI and pvpython (and the GUI under Xvfb), across the sandbox's firewalls. Every test ends
//! with the leak check: no job, no ssh, no listener, no client left on any host.

mod common;

use std::time::Duration;

use common::sandbox::{self, Background, Host, Sandbox, SiteConfig, shell_quote};

const SESSION_TIMEOUT: Duration = Duration::from_secs(240);
/// The issue's bound: after pvlaunch is stopped, the job is gone from the queue within 15 s.
const JOB_GONE: Duration = Duration::from_secs(15);

/// Put this build's pvlaunch, the profiles and the client scripts into desk's home.
fn install(sb: &Sandbox) {
    let home = sb.desk_home();
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (from, to) in [
        ("pvsc/sandbox.pvsc", "sandbox.pvsc"),
        ("tests/fixtures/e2e/variants.pvsc", "variants.pvsc"),
        ("scripts/demo-render.py", "demo-render.py"),
        ("tests/fixtures/e2e/hold.py", "hold.py"),
        ("tests/fixtures/e2e/fetch.py", "fetch.py"),
        ("tests/fixtures/e2e/plain.pvsc", "plain.pvsc"),
    ] {
        std::fs::copy(root.join(from), home.join(to)).unwrap();
    }
    // A first start of the GUI shows a modal welcome dialog that would hold the connection
    // back; a person closes it once, the test says "do not show again" up front.
    let config = home.join(".config/ParaView");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("ParaView5.11.0.ini"),
        "[General]\nGeneralSettings.ShowWelcomeDialog=0\n",
    )
    .unwrap();
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

fn gateway_ports_open() -> SiteConfig {
    SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified")
}

/// Run pvlaunch on desk in the background; `echo $$` records its pid for signals.
fn spawn_pvlaunch(sb: &Sandbox, args: &str) -> Background {
    sb.spawn(Host::Desk, &format!("echo $$ > pvlaunch.pid; exec bin/pvlaunch -f sandbox.pvsc -f variants.pvsc --json {args}"))
}

fn signal_pvlaunch(sb: &Sandbox, signal: &str) {
    sb.run(Host::Desk, &format!("kill -{signal} $(cat pvlaunch.pid)"))
        .assert_success();
}

fn queue(sb: &Sandbox) -> String {
    sb.run(Host::Login, "squeue -h -o '%i %T %j'")
        .assert_success()
        .stdout
}

#[track_caller]
fn assert_job_gone_soon(sb: &Sandbox) {
    let gone = sandbox::try_wait_for(JOB_GONE, || queue(sb).trim().is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "a job is still queued {JOB_GONE:?} after pvlaunch stopped:\n{}",
        queue(sb)
    );
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn has_event(stdout: &str, name: &str) -> bool {
    events(stdout).iter().any(|e| e["event"] == name)
}

/// The demo's session on desk (a pvpython client rendering from a 2-rank pvserver): it succeeds,
/// with data from both ranks; returns its events.
#[track_caller]
fn demo_session(sb: &Sandbox) -> Vec<serde_json::Value> {
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f sandbox.pvsc --json connect sandbox --client pvpython --script demo-render.py -- demo.png",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("demo: data from server ranks 0 1"),
        "{}",
        out.stdout
    );
    events(&out.stdout)
}

#[test]
fn reverse_recipe_session_reads_data_from_both_ranks() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let evs = demo_session(sb);
    let names: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    for expected in [
        "plan",
        "client_listening",
        "ssh_connected",
        "forward_opened",
        "job_submitted",
        "server_connected",
        "session_ended",
        "done",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected} event in {names:?}"
        );
    }
    let forward = evs.iter().find(|e| e["event"] == "forward_opened").unwrap();
    assert_eq!(forward["compute_facing"], true);
    let ended = evs.iter().find(|e| e["event"] == "session_ended").unwrap();
    assert!(
        ended["bytes_to_client"].as_u64().unwrap() > 10_000,
        "pvserver sent data: {ended}"
    );
    let png = std::fs::read(sb.desk_home().join("demo.png")).expect("the PNG exists on desk");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 1000,
        "a PNG was written"
    );
    sb.assert_no_leaks();
}

#[test]
fn gateway_ports_no_fails_fast_and_points_to_the_relay() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f sandbox.pvsc connect sandbox --client pvpython --script hold.py",
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stderr.contains("GatewayPorts no"), "{}", out.stderr);
    assert!(
        out.stderr.contains("relay"),
        "the hint names the relay recipe: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("submitted"),
        "nothing was submitted: {}",
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(30),
        "fails fast: {:?}",
        out.elapsed
    );
    sb.assert_no_leaks();
}

#[test]
fn a_job_that_fails_at_once_ends_the_command_with_its_output() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f variants.pvsc connect bad-setup --client pvpython --script hold.py",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(
        out.stderr.contains("ended") && out.stderr.contains("before pvserver connected"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("loading the environment"),
        "the job's output tail is shown: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("module"),
        "the failing line's error is shown: {}",
        out.stderr
    );
    sb.assert_no_leaks();
}

fn interrupt_in_phase(profile: &str, wait_for: &str, signal: &str, client: &str) {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mut bg = spawn_pvlaunch(
        sb,
        &format!("connect {profile} --client pvpython --script {client}"),
    );
    bg.wait_for_output(wait_for, SESSION_TIMEOUT);
    assert!(
        !queue(sb).trim().is_empty(),
        "the job is in the queue before the signal"
    );
    signal_pvlaunch(sb, signal);
    let out = bg.wait(Duration::from_secs(60));
    let expected = match signal {
        "INT" => Some(130),
        "TERM" => Some(143),
        "HUP" => Some(129),
        _ => None,
    };
    if expected.is_some() {
        assert_eq!(out.code, expected, "{out:?}");
        assert!(has_event(&out.stdout, "cleanup"), "{}", out.stdout);
    }
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

#[test]
fn ctrl_c_while_queued_cancels_the_job() {
    interrupt_in_phase("queued", "\"job_queued\"", "INT", "hold.py");
}

#[test]
fn ctrl_c_while_running_but_not_connected_cancels_the_job() {
    interrupt_in_phase("stuck", "\"job_running\"", "INT", "hold.py");
}

#[test]
fn ctrl_c_while_connected_cancels_the_job() {
    interrupt_in_phase("sandbox", "\"server_connected\"", "INT", "hold.py");
}

#[test]
fn sigterm_while_connected_cancels_the_job() {
    interrupt_in_phase("sandbox", "\"server_connected\"", "TERM", "hold.py");
}

/// ParaView 6 SIGKILLs the command it started: nothing can clean up locally, so the guard on
/// the login node cancels the job when the ssh link drops, and every child dies with pvlaunch.
#[test]
fn sigkill_while_connected_still_cancels_the_job() {
    interrupt_in_phase("sandbox", "\"server_connected\"", "KILL", "hold.py");
}

#[test]
fn hostile_option_values_reach_the_job_as_literal_text() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mark = r#"x'"$(touch${IFS}pwned1)`touch${IFS}pwned2`;*|&>pwned3"#;
    let mut bg = spawn_pvlaunch(
        sb,
        &format!(
            "connect hostile --set {} --client pvpython --script hold.py",
            shell_quote(&format!("MARK={mark}"))
        ),
    );
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    // The job's name, as Slurm stored it.
    let names = sb
        .run(Host::Login, "squeue -h -o '%j'")
        .assert_success()
        .stdout;
    let name = names.trim();
    assert!(
        name.starts_with(&format!("pv{mark}-")) && name.len() == format!("pv{mark}-").len() + 8,
        "the job name is literal, with the session's tag: {name}"
    );
    // Submitted without requeue: a requeued pvserver would start long after its session.
    let job = sb
        .run(Host::Login, "scontrol -o show job")
        .assert_success()
        .stdout;
    assert!(job.contains(" Requeue=0 "), "{job}");
    // A <Setup> line of the job script, run by bash on the compute node under Slurm, got the
    // value as one literal word, unquoted and inside double quotes.
    let written = sb
        .run(Host::Login, "cat ~/.cache/pvlaunch/hostile-mark.txt")
        .assert_success()
        .stdout;
    assert_eq!(
        written,
        format!("{mark}\n{mark}\n"),
        "the setup line's output"
    );
    // pvserver's own argv on the compute node.
    let args = sb
        .run_root(
            Host::Node1,
            "for p in $(pgrep -u pvtest -x pvserver); do tr '\\0' '\\n' < /proc/$p/cmdline; done",
        )
        .assert_success()
        .stdout;
    assert!(
        args.lines().any(|l| l == format!("--hostname={mark}")),
        "pvserver got the value as one argument:\n{args}"
    );
    signal_pvlaunch(sb, "INT");
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out:?}");
    for host in [Host::Desk, Host::Login, Host::Node1] {
        let found = sb
            .run_root(
                host,
                "ls /home/pvtest/pwned* /tmp/pwned* 2>/dev/null | wc -l",
            )
            .stdout;
        assert_eq!(found.trim(), "0", "no command in the value ran on {host:?}");
    }
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

#[test]
fn the_paraview_gui_connects_under_xvfb() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mut bg = spawn_pvlaunch(sb, "connect sandbox --client paraview");
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    // The GUI received the server: ParaView prints the connection on its terminal, and the
    // screenshot is kept for a person to look at.
    // Let the GUI draw the connected session, then keep a screenshot for a person to look at.
    std::thread::sleep(Duration::from_secs(15));
    let shot = sb.run(
        Host::Desk,
        "xwd -root -silent -display :0 | xwdtopnm 2>/dev/null | pnmtopng > paraview-gui.png",
    );
    assert!(shot.success(), "screenshot: {shot:?}");
    let dest = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("paraview-gui.png");
    std::fs::copy(sb.desk_home().join("paraview-gui.png"), &dest).unwrap();
    eprintln!("screenshot of the GUI session: {}", dest.display());
    signal_pvlaunch(sb, "INT");
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out:?}");
    let evs = events(&out.stdout);
    let listening = evs
        .iter()
        .find(|e| e["event"] == "client_listening")
        .expect("the GUI listened");
    assert_eq!(listening["mode"], "paraview");
    assert!(has_event(&out.stdout, "server_connected"));
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// A site's own `.pvsc` without pvlaunch settings: its command runs exactly as ParaView runs it
/// (here a local 2-rank pvserver that connects back), with the client listening first.
#[test]
fn a_plain_pvsc_server_runs_its_command_as_paraview_would() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f plain.pvsc --json connect plain-local --client pvpython --script fetch.py",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{}", out.stdout);
    assert!(has_event(&out.stdout, "client_listening"));
    // The server command's and the client's output go to stderr: stdout is events only.
    for line in out.stdout.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not an event on stdout: {line:?}"
        );
    }
    sb.assert_no_leaks();
}

/// The wiki's third recipe by hand, with `pvlaunch relay` in portfwd's place: a loopback-only
/// forward on login (`GatewayPorts no`), the relay reading a portfwd file, pvserver in a Slurm
/// job connecting to `login:PORT`.
#[test]
fn relay_by_hand_with_a_portfwd_file() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let bin = sb.cluster_home().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    std::process::Command::new("chown")
        .args(["-R", "pvtest:pvtest"])
        .arg(&bin)
        .status()
        .unwrap();
    sb.write_file(
        Host::Login,
        "fwd.cfg",
        "# portfwd's syntax: compute nodes -> login:11144 -> the ssh tunnel on login:11133\nlisten-on 0.0.0.0\ntcp { 11144 { node1, node2 => localhost:11133 } }\n",
    );
    let client = sb.spawn(
        Host::Desk,
        "PVLAUNCH_URL=csrc://localhost:11133 PVLAUNCH_TIMEOUT=120 exec pvpython fetch.py",
    );
    sandbox::wait_for("the client listens", Duration::from_secs(60), || {
        sb.listening(Host::Desk, 11133).then_some(())
    });
    let mut tunnel = sb.spawn(
        Host::Desk,
        "exec ssh -N -o ExitOnForwardFailure=yes -R 11133:localhost:11133 login",
    );
    sandbox::wait_for("the forward on login", Duration::from_secs(30), || {
        sb.listening(Host::Login, 11133).then_some(())
    });
    let mut relay = sb.spawn(Host::Login, "exec bin/pvlaunch relay --config fwd.cfg");
    relay.wait_for_output("listening on", Duration::from_secs(30));
    sb.run_stdin(
        Host::Login,
        "sbatch --parsable",
        b"#!/bin/bash\n#SBATCH --ntasks=2 --time=5\nmpiexec -n 2 pvserver --reverse-connection --client-host=login --server-port=11144\n",
    )
    .assert_success();
    let out = client.wait(SESSION_TIMEOUT);
    assert!(out.stdout.contains("fetch: ranks 0 1"), "{out:?}");
    let _ = tunnel.running();
    drop(relay);
    drop(tunnel);
    sb.run(Host::Login, "scancel -u pvtest").assert_success();
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// `GatewayPorts no` and `recipe auto`: pvlaunch keeps the loopback forward, copies itself to
/// the login node (it is not installed there) and runs its relay in front of the forward.
#[test]
fn auto_chooses_the_relay_when_gateway_ports_is_no() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f sandbox.pvsc --json connect sandbox --recipe auto --client pvpython --script fetch.py",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{}", out.stdout);
    let evs = events(&out.stdout);
    let chosen = evs
        .iter()
        .find(|e| e["event"] == "recipe_chosen")
        .expect("auto says what it chose");
    assert_eq!(chosen["recipe"], "relay");
    assert!(
        chosen["reason"]
            .as_str()
            .unwrap()
            .contains("GatewayPorts no")
    );
    let relay = evs
        .iter()
        .find(|e| e["event"] == "relay_started")
        .expect("a relay on login");
    assert_eq!(relay["allowed"], serde_json::json!(["node1", "node2"]));
    // The relay is gone with the session.
    let left = sb
        .run_root(Host::Login, "pgrep -u pvtest -f 'pvlaunch.* relay' || true")
        .stdout;
    assert!(left.trim().is_empty(), "relay left on login: {left}");
    sb.assert_no_leaks();
}

// --- two hops: the client connects through the login node, or the job opens its own hop ------

/// Everything `install` puts on desk, and the two-hop profiles.
fn install_two_hop(sb: &Sandbox) {
    install(sb);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let to = sb.desk_home().join("two-hop.pvsc");
    std::fs::copy(root.join("tests/fixtures/e2e/two-hop.pvsc"), &to).unwrap();
    std::process::Command::new("chown")
        .arg(format!("{}:{}", sandbox::TEST_USER, sandbox::TEST_USER))
        .arg(&to)
        .status()
        .unwrap();
}

/// A whole session with the pvpython client that reads data from every rank.
fn two_hop_fetch(sb: &Sandbox, args: &str) -> sandbox::Output {
    let out = sb.run_timeout(
        Host::Desk,
        &format!(
            "bin/pvlaunch -f two-hop.pvsc --json connect {args} --client pvpython --script fetch.py"
        ),
        SESSION_TIMEOUT,
    );
    sandbox::report(&format!(
        "connect {args}: exit {:?} after {:.1?}",
        out.code, out.elapsed
    ));
    out
}

/// No warning that the session's path is not pvlaunch's own.
#[track_caller]
fn assert_owned(evs: &[serde_json::Value]) {
    for e in evs.iter().filter(|e| e["event"] == "warning") {
        assert!(
            !e["message"].as_str().unwrap_or("").contains("could reach"),
            "the session fell back to a path other users could reach: {e}"
        );
    }
}

fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    evs.iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {evs:#?}"))
}

/// The forward recipe's events, in order, and data from both ranks through the tunnel to node1.
#[track_caller]
fn assert_forward_session(out: &sandbox::Output) {
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{out}");
    let evs = events(&out.stdout);
    let names: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    let order = [
        "plan",
        "ssh_connected",
        "job_submitted",
        "job_running",
        "server_listening",
        "tunnel_opened",
        "server_connected",
        "session_ended",
        "done",
    ];
    let mut at = 0;
    for name in order {
        at += names[at..]
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} after {:?} in {names:?}", &names[..at]));
    }
    // Owned hops: pvserver reverse-connected to the node agent, so the client listens and
    // the workstation joins it to the tunnel; nothing is forwarded back to the login node.
    assert!(
        names.contains(&"client_listening") && !names.contains(&"forward_opened"),
        "the client listens, nothing is forwarded back: {names:?}"
    );
    assert_owned(&evs);
    assert_eq!(event(&evs, "plan")["recipe"], "two-hop");
    let listening = event(&evs, "server_listening");
    assert_eq!(listening["host"], "node1");
    let port = listening["port"].as_u64().unwrap();
    assert!(port > 0, "pvserver picked a port: {listening}");
    let tunnel = event(&evs, "tunnel_opened");
    assert_eq!(tunnel["node"], "node1");
    assert_eq!(tunnel["port"].as_u64(), Some(port));
    assert!(
        tunnel["url"]
            .as_str()
            .unwrap()
            .starts_with("csrc://localhost:"),
        "{tunnel}"
    );
    let ended = event(&evs, "session_ended");
    assert!(
        ended["bytes_to_client"].as_u64().unwrap() > 10_000,
        "pvserver sent data: {ended}"
    );
}

/// `Accepted publickey` lines in a host's sshd log: one per authentication.
fn logins(sb: &Sandbox, host: Host) -> usize {
    let log = sb.state_dir().join(format!("log/sshd-{host}.log"));
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Accepted publickey for pvtest"))
        .count()
}

#[test]
fn two_hop_forward_session_reads_data_from_both_ranks() {
    let Some(sb) = sandbox::shared() else { return };
    // Nothing from GatewayPorts: OpenSSH's defaults.
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let out = two_hop_fetch(sb, "two-hop");
    assert_forward_session(&out);
    sb.assert_no_leaks();
}

/// desk reaches only gate; the profile names it (`ssh -J gate`). One authentication on each
/// hop for the whole session.
#[test]
fn two_hop_through_the_gateway_named_in_the_profile() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().firewall(sandbox::Firewall::Gate));
    install_two_hop(sb);
    sb.run(
        Host::Desk,
        "ssh -o BatchMode=yes -o ConnectTimeout=5 login true",
    )
    .assert_failure();
    let (gate, login) = (logins(sb, Host::Gate), logins(sb, Host::Login));
    let out = two_hop_fetch(sb, "two-hop-gate");
    assert_forward_session(&out);
    assert_eq!(logins(sb, Host::Gate) - gate, 1, "one login on gate");
    assert_eq!(logins(sb, Host::Login) - login, 1, "one login on login");
    sb.assert_no_leaks();
}

/// Removes a file from desk's home when dropped (also when the test fails).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A host alias with ProxyJump in the user's own ~/.ssh/config: pvlaunch keeps it working, for
/// the forward recipe (chosen by auto for the cs:// resource) and the reverse two-hop one.
#[test]
fn two_hop_and_reverse_two_hop_through_a_proxyjump_alias_in_ssh_config() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default().firewall(sandbox::Firewall::Gate));
    install_two_hop(sb);
    let config = sb.desk_home().join(".ssh/config");
    assert!(!config.exists(), "desk has no ssh config of its own");
    sb.write_file(
        Host::Desk,
        ".ssh/config",
        "Host cluster\n  HostName login\n  ProxyJump gate\n",
    );
    let _config = RemoveOnDrop(config);
    sb.run(Host::Desk, "chmod 600 .ssh/config").assert_success();

    let (gate, login) = (logins(sb, Host::Gate), logins(sb, Host::Login));
    let out = two_hop_fetch(sb, "two-hop-alias");
    assert_forward_session(&out);
    let evs = events(&out.stdout);
    let chosen = event(&evs, "recipe_chosen");
    assert_eq!(chosen["recipe"], "two-hop", "{chosen}");
    assert_eq!(event(&evs, "ssh_connected")["login_host"], "login");
    assert_eq!(logins(sb, Host::Gate) - gate, 1, "one login on gate");
    assert_eq!(logins(sb, Host::Login) - login, 1, "one login on login");
    sb.assert_no_leaks();

    // The reverse two-hop recipe through the same alias: the job's hop is inside the site.
    let (gate, login) = (logins(sb, Host::Gate), logins(sb, Host::Login));
    let out = two_hop_fetch(sb, "two-hop-alias --recipe reverse-two-hop");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{out}");
    assert_eq!(logins(sb, Host::Gate) - gate, 1, "one login on gate");
    assert_eq!(
        logins(sb, Host::Login) - login,
        2,
        "one login from desk, one by the job's hop from node1"
    );
    sb.assert_no_leaks();
}

/// The job's output file of the newest session, as the login node sees it.
fn newest_job_output(sb: &Sandbox) -> String {
    sb.run(
        Host::Login,
        "cat \"$(ls -t .cache/pvlaunch/pvserver-*.out | head -n 1)\"",
    )
    .assert_success()
    .stdout
}

/// `GatewayPorts no` and no pvlaunch on the login node at first (a copy is placed): the forward
/// is a Unix socket in the session's private folder on login, and the job's own ssh from node1
/// forwards a private socket of its own to it.
#[test]
fn reverse_two_hop_with_gateway_ports_no_and_no_relay() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    // No pvlaunch anywhere in the cluster's home (other tests put one there).
    sb.run(Host::Login, "rm -rf bin/pvlaunch .cache/pvlaunch/bin")
        .assert_success();
    let out = two_hop_fetch(sb, "reverse-two-hop");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{out}");
    let evs = events(&out.stdout);
    assert_eq!(event(&evs, "plan")["recipe"], "reverse-two-hop");
    let forward = event(&evs, "forward_opened");
    assert_eq!(forward["compute_facing"], false, "{forward}");
    let socket = forward["bind_address"].as_str().unwrap();
    let socket = socket
        .strip_prefix("unix:/tmp/pvlaunch.")
        .map(|_| &socket["unix:".len()..])
        .unwrap_or_else(|| panic!("a private socket on login: {forward}"));
    assert!(
        !has_event(&out.stdout, "relay_started"),
        "no relay: {}",
        out.stdout
    );
    assert_owned(&evs);
    let job = newest_job_output(sb);
    assert!(
        job.contains("pvlaunch-hop: open: node1:/tmp/pvlaunch-hop.")
            && job.contains(&format!("login:{socket}")),
        "the job opened its hop to the forward:\n{job}"
    );
    assert!(job.contains("pvlaunch-node: open:"), "{job}");
    assert!(job.contains("Client connected."), "{job}");
    sb.assert_no_leaks();
}

/// `auto` where the profile names a pvlaunch for the cluster that does not run there: a copy of
/// this one takes its place (with a warning), and the relay in front of the login node's private
/// socket carries the session.
#[test]
fn a_relay_program_that_does_not_run_is_replaced_by_a_copy() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let out = two_hop_fetch(sb, "auto-no-relay");
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("fetch: ranks 0 1"), "{out}");
    let chosen: Vec<String> = events(&out.stdout)
        .iter()
        .filter(|e| e["event"] == "recipe_chosen")
        .map(|e| e["recipe"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chosen, ["relay"], "{}", out.stdout);
    let evs = events(&out.stdout);
    assert!(
        evs.iter().any(|e| e["event"] == "warning"
            && e["message"].as_str().unwrap_or("").contains("does not run")),
        "{}",
        out.stdout
    );
    assert!(has_event(&out.stdout, "relay_started"), "{}", out.stdout);
    assert_owned(&evs);
    sb.assert_no_leaks();
}

/// Moves the cluster's private key away until dropped: compute nodes can no longer ssh to
/// login, while desk (its own key) still can.
struct HideClusterKey(std::path::PathBuf);

impl HideClusterKey {
    fn new(sb: &Sandbox) -> HideClusterKey {
        let key = sb.cluster_home().join(".ssh/id_ed25519");
        std::fs::rename(&key, key.with_extension("hidden")).unwrap();
        HideClusterKey(key)
    }
}

impl Drop for HideClusterKey {
    fn drop(&mut self) {
        let _ = std::fs::rename(self.0.with_extension("hidden"), &self.0);
    }
}

#[test]
fn reverse_two_hop_says_when_the_compute_node_cannot_ssh_to_login() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let key = HideClusterKey::new(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f two-hop.pvsc connect reverse-two-hop --client pvpython --script hold.py",
        SESSION_TIMEOUT,
    );
    drop(key);
    assert_eq!(out.code, Some(6), "{out}");
    assert!(
        out.stderr.contains(
            "could not open its ssh hop back to the login node: node1 cannot ssh to login"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("Permission denied"), "{out}");
    assert!(out.stderr.contains("known_hosts"), "the hint: {out}");
    sb.assert_no_leaks();
}

#[test]
fn two_hop_job_whose_pvserver_fails_ends_with_its_output() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f two-hop.pvsc connect two-hop-bad-pvserver --client pvpython --script fetch.py",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(5), "{out}");
    assert!(
        out.stderr.contains("before pvserver listened"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("The following argument was not expected: --no-such-option"),
        "pvserver's own error: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("last lines of the job's output"),
        "the output tail: {}",
        out.stderr
    );
    sb.assert_no_leaks();
}

/// A client started by hand with a connect-id the session does not use (`--client wait` tells
/// the person the session's own id): pvlaunch says so, from pvserver's log.
#[test]
fn two_hop_names_a_connect_id_mismatch() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let mut bg = sb.spawn(
        Host::Desk,
        "exec bin/pvlaunch -f two-hop.pvsc --json connect two-hop --client wait",
    );
    bg.wait_for_output("\"tunnel_opened\"", SESSION_TIMEOUT);
    let url = events(&bg.stdout())
        .iter()
        .find(|e| e["event"] == "tunnel_opened")
        .and_then(|e| e["url"].as_str().map(str::to_string))
        .unwrap();
    let client = sb.run_timeout(
        Host::Desk,
        &format!("PVLAUNCH_URL={url} PVLAUNCH_TIMEOUT=20 pvpython --connect-id=17 fetch.py"),
        Duration::from_secs(60),
    );
    assert!(!client.success(), "{client}");
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(8), "{out}");
    let evs = events(&out.stdout);
    let id = event(&evs, "waiting_for_client")["connect_id"]
        .as_u64()
        .expect("the session tells its connect-id");
    assert_ne!(id, 17);
    // pvserver reverse-connects to the node agent: the client is the side that refuses, and
    // says so itself; the session names the handshake and the connect-id as a likely cause.
    let last = evs.last().unwrap();
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("ParaView handshake"),
        "{last}"
    );
    let error = event(&evs, "error");
    assert!(
        error["hint"].as_str().unwrap_or("").contains("connect-id"),
        "{error}"
    );
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

fn interrupt_two_hop(profile: &str, signal: &str, code: i32) {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let mut bg = sb.spawn(
        Host::Desk,
        &format!("echo $$ > pvlaunch.pid; exec bin/pvlaunch -f two-hop.pvsc --json connect {profile} --client pvpython --script hold.py"),
    );
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    assert!(!queue(sb).trim().is_empty(), "the job runs");
    signal_pvlaunch(sb, signal);
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(code), "{out}");
    assert!(has_event(&out.stdout, "cleanup"), "{}", out.stdout);
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

#[test]
fn ctrl_c_during_a_two_hop_session_cancels_the_job() {
    interrupt_two_hop("two-hop", "INT", 130);
}

/// The job's own ssh on node1 ends with the job (the leak check looks at every host).
#[test]
fn sigterm_during_a_reverse_two_hop_session_stops_the_jobs_hop() {
    interrupt_two_hop("reverse-two-hop", "TERM", 143);
}

/// The plans, without a cluster.
fn dry_run(args: &[&str]) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::process::Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .current_dir(root)
        .env_remove("PV_CONNECTION_URI")
        .env_remove("PV_CONNECTION_SCHEME")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn two_hop_plans_show_the_listening_pvserver_and_the_hop() {
    let out = dry_run(&[
        "-f",
        "pvsc/cluster-two-hop.pvsc",
        "connect",
        "cluster-two-hop",
        "--client",
        "none",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("(two-hop recipe, lsf job)"), "{text}");
    assert!(text.contains("-J gateway.example.org"), "{text}");
    assert!(text.contains("pvserver --server-port=0"), "{text}");
    assert!(text.contains("Accepting connection(s)"), "{text}");
    assert!(
        text.contains("connects to cs://localhost:11111"),
        "ParaView connects to its resource's port: {text}"
    );

    let out = dry_run(&[
        "-f",
        "tests/fixtures/e2e/two-hop.pvsc",
        "connect",
        "reverse-two-hop",
        "--client",
        "wait",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("sh -c 'login=$1 sock=$2 agent=$3 key=$4"),
        "{text}"
    );
    assert!(
        text.contains("'<pvlaunch on the cluster>'")
            && text.contains("mpiexec -n 2 pvserver --reverse-connection --client-host=localhost"),
        "{text}"
    );
}

#[test]
fn a_resource_that_contradicts_the_recipe_under_paraview_is_a_usage_error() {
    // ParaView listens (csrc://) but two-hop needs it to connect.
    let out = dry_run(&[
        "-f",
        "pvsc/sandbox.pvsc",
        "connect",
        "sandbox",
        "--recipe",
        "two-hop",
        "--client",
        "none",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("csrc://"),
        "{out:?}"
    );
    // ParaView connects (cs://) but a reverse recipe needs it to listen.
    let out = dry_run(&[
        "-f",
        "pvsc/cluster-two-hop.pvsc",
        "connect",
        "cluster-two-hop",
        "--recipe",
        "reverse",
        "--client",
        "none",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("two-hop"),
        "{out:?}"
    );
    // A client pvlaunch starts is told the URL: any recipe goes.
    let out = dry_run(&[
        "-f",
        "tests/fixtures/e2e/two-hop.pvsc",
        "connect",
        "two-hop",
        "--recipe",
        "reverse-two-hop",
        "--client",
        "wait",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{out:?}");
}

/// The GUI as the two-hop client: `paraview --url=cs://localhost:PORT` connects through the
/// tunnel.
#[test]
fn the_paraview_gui_connects_through_a_two_hop_tunnel() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let mut bg = sb.spawn(
        Host::Desk,
        "echo $$ > pvlaunch.pid; exec bin/pvlaunch -f two-hop.pvsc --json connect two-hop --client paraview",
    );
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    std::thread::sleep(Duration::from_secs(2));
    signal_pvlaunch(sb, "INT");
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out:?}");
    let evs = events(&out.stdout);
    assert_eq!(event(&evs, "plan")["client"], "paraview");
    assert!(has_event(&out.stdout, "tunnel_opened"));
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// `--keep-job`: pvlaunch leaves, the job stays (and the guard does not cancel it either).
#[test]
fn keep_job_leaves_the_job_running() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mut bg = spawn_pvlaunch(
        sb,
        "connect stuck --keep-job --client pvpython --script hold.py",
    );
    bg.wait_for_output("\"job_running\"", SESSION_TIMEOUT);
    signal_pvlaunch(sb, "INT");
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out:?}");
    assert!(out.stdout.contains("kept (--keep-job)"), "{}", out.stdout);
    // Longer than the guard needs to cancel a job: it is still there.
    std::thread::sleep(Duration::from_secs(5));
    let q = queue(sb);
    assert!(q.contains("RUNNING"), "the job still runs:\n{q}");
    sb.run(Host::Login, "scancel -u pvtest").assert_success();
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// The profile's own `<CommandStartup>` run by the real ParaView GUI: ParaView shows the options
/// dialog, listens, and runs `pvlaunch connect sandbox --set=RANKS=...` with its `PV_*` variables
/// in the environment; pvlaunch sees it runs under ParaView (client `none`, ParaView's port) and
/// pvserver's connection reaches the GUI. Closing ParaView kills pvlaunch outright (as ParaView 6
/// does on disconnect): the login node's guard still cancels the job.
#[test]
fn paraview_runs_pvlaunch_from_the_pvsc() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    // ParaView runs `pvlaunch connect sandbox`: pvlaunch finds the profile where profiles live
    // (its config folder here; ParaView's own servers.pvsc when imported with Load Servers).
    sb.run(
        Host::Desk,
        "mkdir -p .config/pvlaunch && cp sandbox.pvsc .config/pvlaunch/",
    )
    .assert_success();
    let before = job_outputs(sb);
    let gui = sb.spawn(
        Host::Desk,
        "PATH=$HOME/bin:$PATH paraview --servers-file=sandbox.pvsc --server=sandbox > gui-pvsc.log 2>&1 & \
         for i in $(seq 300); do \
           w=$(xdotool search --name 'Connection Options' 2>/dev/null | head -1); \
           if [ -n \"$w\" ]; then xdotool windowfocus \"$w\"; xdotool key Return; echo accepted; break; fi; \
           sleep 0.2; \
         done; wait",
    );
    // This session's job output (earlier tests' files also say "Client connected.").
    let connected = new_job_output_containing(sb, &before, "Client connected.");
    let log = sb
        .read_file(Host::Desk, "/home/pvtest/gui-pvsc.log")
        .unwrap_or_default();
    assert!(
        connected.is_some(),
        "pvserver never reached ParaView; ParaView's log:\n{log}\nqueue:\n{}",
        queue(sb)
    );
    assert!(
        !queue(sb).trim().is_empty(),
        "the job runs while ParaView is connected"
    );
    drop(gui); // ParaView closes; pvlaunch is killed with it
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// The job output files on the login node.
fn job_outputs(sb: &Sandbox) -> Vec<String> {
    sb.run(Host::Login, "ls .cache/pvlaunch/pvserver-*.out 2>/dev/null")
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

/// Wait for a job output file that is not in `before` to contain `needle`; returns its text.
fn new_job_output_containing(sb: &Sandbox, before: &[String], needle: &str) -> Option<String> {
    sandbox::try_wait_for(SESSION_TIMEOUT, || {
        job_outputs(sb)
            .into_iter()
            .filter(|f| !before.contains(f))
            .map(|f| {
                sb.run(Host::Login, &format!("cat {}", shell_quote(&f)))
                    .stdout
            })
            .find(|log| log.contains(needle))
    })
}

/// ParaView's Connect dialog with a `cs://` server whose command is pvlaunch: ParaView runs it
/// (pvlaunch sees it runs under ParaView: client `none`), then keeps trying localhost:11111,
/// where pvlaunch's end of the tunnel appears once pvserver listens on node1. Closing ParaView
/// kills pvlaunch outright: the login node's guard cancels the job.
#[test]
fn paraview_runs_a_two_hop_pvsc_and_connects_through_the_tunnel() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(SiteConfig::default());
    install_two_hop(sb);
    let before = job_outputs(sb);
    let gui = sb.spawn(
        Host::Desk,
        "PATH=$HOME/bin:$PATH exec paraview --servers-file=two-hop.pvsc --server=two-hop-gui > gui-two-hop.log 2>&1",
    );
    let connected = new_job_output_containing(sb, &before, "Client connected.");
    let log = sb
        .read_file(Host::Desk, "/home/pvtest/gui-two-hop.log")
        .unwrap_or_default();
    assert!(
        connected.is_some(),
        "pvserver never saw ParaView; ParaView's log:\n{log}\nqueue:\n{}",
        queue(sb)
    );
    assert!(
        log.contains("tunnel open to node1"),
        "pvlaunch's lines in ParaView's log:\n{log}"
    );
    assert!(!queue(sb).trim().is_empty(), "the job runs while connected");
    drop(gui);
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// A second Ctrl-C during the cleanup stops at once; the login node's guard still cancels the
/// job, and nothing is left behind.
#[test]
fn a_second_ctrl_c_stops_at_once_and_still_leaves_nothing() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mut bg = spawn_pvlaunch(sb, "connect sandbox --client pvpython --script hold.py");
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    sb.run(
        Host::Desk,
        "p=$(cat pvlaunch.pid); kill -INT $p; sleep 0.01; kill -INT $p 2>/dev/null || true",
    )
    .assert_success();
    let out = bg.wait(Duration::from_secs(60));
    assert_eq!(out.code, Some(130), "{out:?}");
    assert!(
        out.stdout.contains("again: stopping now"),
        "the second signal cut the cleanup short:\n{}",
        out.stdout
    );
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// sshd runs a remote command with the user's login shell (`$SHELL -c STRING`): with tcsh or
/// fish on the login node, every command pvlaunch sends (guard, submit, queries, forwards'
/// checks) must still run as POSIX sh.
fn login_shell_or_skip(shell: &str) -> bool {
    if std::path::Path::new(shell).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{shell} is missing (scripts/install-deps installs it)"
    );
    sandbox::report(&format!("SKIPPED: {shell} is not installed"));
    false
}

#[track_caller]
fn assert_login_shell(sb: &Sandbox, shell: &str) {
    let out = sb
        .run(Host::Desk, "ssh login getent passwd pvtest")
        .assert_success();
    assert!(out.stdout.trim().ends_with(&format!(":{shell}")), "{out:?}");
}

fn reverse_session_with_login_shell(shell: &str) {
    let Some(sb) = sandbox::shared() else { return };
    if !login_shell_or_skip(shell) {
        return;
    }
    let _site = sb.configure(gateway_ports_open().login_shell(Host::Login, shell));
    install(sb);
    assert_login_shell(sb, shell);
    let evs = demo_session(sb);
    let warnings: Vec<&serde_json::Value> =
        evs.iter().filter(|e| e["event"] == "warning").collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let forward = evs.iter().find(|e| e["event"] == "forward_opened").unwrap();
    assert_eq!(forward["compute_facing"], true, "{forward}");
    sb.assert_no_leaks();
}

#[test]
fn reverse_recipe_session_with_tcsh_as_login_shell() {
    reverse_session_with_login_shell("/usr/bin/tcsh");
}

#[test]
fn reverse_recipe_session_with_fish_as_login_shell() {
    reverse_session_with_login_shell("/usr/bin/fish");
}

/// The guard on the login node is a POSIX sh loop: under tcsh it used to die at once
/// (`while: Expression Syntax`), and nothing cancelled the job after a SIGKILL.
#[test]
fn sigkill_with_tcsh_as_login_shell_still_cancels_the_job() {
    let shell = "/usr/bin/tcsh";
    let Some(sb) = sandbox::shared() else { return };
    if !login_shell_or_skip(shell) {
        return;
    }
    let _site = sb.configure(gateway_ports_open().login_shell(Host::Login, shell));
    install(sb);
    assert_login_shell(sb, shell);
    let mut bg = spawn_pvlaunch(sb, "connect sandbox --client pvpython --script hold.py");
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    assert!(
        !queue(sb).trim().is_empty(),
        "the job is in the queue before the signal"
    );
    signal_pvlaunch(sb, "KILL");
    let _ = bg.wait(Duration::from_secs(60));
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// The guard script against the real sshd (tcsh as login shell) and the real Slurm: its input
/// ends, it cancels the job by id, and checks that none with the tag is left.
fn run_guard_on_login(sb: &Sandbox, tag: &str, input: &str, window_secs: u64) -> sandbox::Output {
    use pvlaunch::job::{GuardTimings, guard_command};
    let timings = GuardTimings {
        deadline: Duration::from_secs(60),
        sweep_window: Duration::from_secs(window_secs),
        first_pause: Duration::from_secs(1),
        max_pause: Duration::from_secs(2),
        ..GuardTimings::default()
    };
    let slurm = pvlaunch::scheduler::Kind::Slurm.scheduler();
    let line = guard_command(slurm.as_ref(), tag, timings).unwrap();
    let wire = pvlaunch::ssh::RemoteCommand::new(line);
    sb.run_stdin(
        Host::Desk,
        &format!("ssh -T login {}", shell_quote(wire.wire())),
        input.as_bytes(),
    )
}

fn fresh_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:08x}")
}

fn submit_tagged(sb: &Sandbox, tag: &str) -> String {
    sb.run(
        Host::Login,
        &format!("sbatch --parsable -J pvserver-{tag} --wrap 'sleep 300'"),
    )
    .assert_success()
    .stdout
    .trim()
    .to_string()
}

#[test]
fn the_guard_cancels_a_real_job_by_id_under_tcsh() {
    let shell = "/usr/bin/tcsh";
    let Some(sb) = sandbox::shared() else { return };
    if !login_shell_or_skip(shell) {
        return;
    }
    let _site = sb.configure(gateway_ports_open().login_shell(Host::Login, shell));
    let tag = fresh_tag();
    let id = submit_tagged(sb, &tag);
    let other = sb
        .run(Host::Login, "sbatch --parsable -J other --wrap 'sleep 300'")
        .assert_success()
        .stdout
        .trim()
        .to_string();
    let out = run_guard_on_login(sb, &tag, &format!("submitting\njob {id}\n"), 30);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            Some(0),
            format!("ready\ncancelled {id}\nnone left\n").as_str()
        ),
        "{out:?}"
    );
    let left = queue(sb);
    assert!(!left.contains(&format!("pvserver-{tag}")), "{left}");
    assert!(left.contains("other"), "another job stays: {left}");
    sb.run(Host::Login, &format!("scancel {other}"))
        .assert_success();
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

#[test]
fn the_guard_sweeps_up_a_real_submit_that_lands_after_the_session_ended() {
    let shell = "/usr/bin/tcsh";
    let Some(sb) = sandbox::shared() else { return };
    if !login_shell_or_skip(shell) {
        return;
    }
    let _site = sb.configure(gateway_ports_open().login_shell(Host::Login, shell));
    let tag = fresh_tag();
    let (out, id) = std::thread::scope(|s| {
        let late = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            submit_tagged(sb, &tag)
        });
        let out = run_guard_on_login(sb, &tag, "submitting\n", 10);
        (out, late.join().unwrap())
    });
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            Some(0),
            format!("ready\nnone left\ncancelled {id}\nnone left\n").as_str()
        ),
        "{out:?}"
    );
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// Stops slurmctld (SIGSTOP: it hangs as an overloaded controller does, commands time out) until
/// dropped.
struct ControllerHung {
    pid: String,
}

impl ControllerHung {
    fn new(sb: &Sandbox) -> ControllerHung {
        let record = std::fs::read_to_string(sb.state_dir().join("pids/slurmctld"))
            .expect("slurmctld's pid record");
        let pid = record.split_whitespace().next().unwrap().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not stop slurmctld ({pid})");
        ControllerHung { pid }
    }
}

impl Drop for ControllerHung {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.pid])
            .status();
    }
}

/// Three nodes on the sandbox's two-node partition: the real Slurm's pending reason says the job
/// can never start, and pvlaunch ends at once (not at the queue timeout) with what to change.
#[test]
fn a_job_that_can_never_start_ends_the_command_at_once() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let started = std::time::Instant::now();
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f sandbox.pvsc -f variants.pvsc --json connect too-many-nodes --client pvpython --script hold.py",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(5), "{out}");
    let evs = events(&out.stdout);
    let error = event(&evs, "error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("will never start"),
        "{error}"
    );
    assert!(
        error["hint"].as_str().unwrap_or("").contains("<Job"),
        "{error}"
    );
    // Far below the queue timeout (24 h by default).
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}

/// Ctrl-C while the real controller hangs: the cancel cannot get through, cleanup says so (not
/// "cancelled"), and the guard on the login node cancels the job once slurmctld answers again.
#[test]
fn a_cancel_while_slurmctld_hangs_is_finished_by_the_guard() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let mut bg = spawn_pvlaunch(sb, "connect queued --client pvpython --script hold.py");
    bg.wait_for_output("\"job_queued\"", SESSION_TIMEOUT);
    let hung = ControllerHung::new(sb);
    signal_pvlaunch(sb, "INT");
    let out = bg.wait(Duration::from_secs(90));
    assert_eq!(out.code, Some(130), "{out:?}");
    let evs = events(&out.stdout);
    let step = evs
        .iter()
        .find(|e| e["event"] == "cleanup" && e["step"].as_str().is_some_and(|s| s.contains("job")))
        .unwrap_or_else(|| panic!("a cleanup step for the job: {}", out.stdout));
    assert_eq!(step["ok"], false, "{step}");
    assert!(
        step["detail"]
            .as_str()
            .unwrap_or("")
            .contains("keeps trying"),
        "{step}"
    );
    drop(hung);
    // The guard's back-off is at most 30 s between attempts.
    assert_job_gone_soon(sb);
    sb.assert_no_leaks();
}
