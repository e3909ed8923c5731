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

#[test]
fn reverse_recipe_session_reads_data_from_both_ranks() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f sandbox.pvsc --json connect sandbox --client pvpython --script demo-render.py -- demo.png",
        SESSION_TIMEOUT,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("demo: data from server ranks 0 1"),
        "{}",
        out.stdout
    );
    let evs = events(&out.stdout);
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
    assert_eq!(names.trim(), format!("pv{mark}"), "the job name is literal");
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
    assert!(out.stdout.contains("fetch: ranks 0 1"), "{}", out.stdout);
    assert!(has_event(&out.stdout, "client_listening"));
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
    assert!(out.stdout.contains("fetch: ranks 0 1"), "{}", out.stdout);
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
    let gui = sb.spawn(
        Host::Desk,
        "PATH=$HOME/bin:$PATH paraview --servers-file=sandbox.pvsc --server=sandbox > gui-pvsc.log 2>&1 & \
         for i in $(seq 300); do \
           w=$(xdotool search --name 'Connection Options' 2>/dev/null | head -1); \
           if [ -n \"$w\" ]; then xdotool windowfocus \"$w\"; xdotool key Return; echo accepted; break; fi; \
           sleep 0.2; \
         done; wait",
    );
    let connected = sandbox::try_wait_for(SESSION_TIMEOUT, || {
        let log = sb
            .run(
                Host::Login,
                "cat $(ls -t .cache/pvlaunch/pvserver-*.out 2>/dev/null | head -1) 2>/dev/null",
            )
            .stdout;
        log.contains("Client connected.").then_some(log)
    });
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
