//! The job's whole life on the user's side, end to end in the sandbox cluster: ParaView's
//! walltime countdown read from the server connection, pvlaunch's own warning, the end of the
//! wall time (the client is not stopped, exit code 9), and jobs that can never start (no dead
//! waits). Every test ends with the leak check. Run one at a time:
//! `cargo test --test walltime -- --test-threads=1`.

mod common;

use std::time::Duration;

use common::sandbox::{self, Host, Sandbox, SiteConfig};

/// A 2-minute job: its whole life, and a margin for the queue and the end.
const WALLTIME_SESSION: Duration = Duration::from_secs(420);

/// The profiles of these tests.
const PROFILES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Servers>
  <Server name="short" resource="csrc://localhost:11111">
    <ManualStartup/>
    <PVLaunch version="1">
      <Login host="login"/>
      <Job scheduler="slurm" nodes="1" ranks-per-node="2" walltime="2" warn-before="1m"/>
      <Connection recipe="reverse" connect-timeout="120"/>
    </PVLaunch>
  </Server>
  <Server name="three-nodes" resource="csrc://localhost:11111">
    <ManualStartup/>
    <PVLaunch version="1">
      <Login host="login"/>
      <Job scheduler="slurm" nodes="3" ranks-per-node="1" walltime="10"/>
      <Connection recipe="reverse"/>
    </PVLaunch>
  </Server>
</Servers>
"#;

/// A pvpython client that reads the countdown the way ParaView's GUI does (pqServer): the
/// server information's timeout and timeout command, the command run on the server through an
/// ExecutableRunner proxy (0.3 s limit); then it stays until the server goes, and exits 0.
const COUNTDOWN_PY: &str = r#"
import os, sys, time
from paraview import servermanager as sm
from paraview.modules.vtkRemotingCore import vtkProcessModule
from paraview.modules.vtkRemotingServerManager import vtkSMPropertyHelper

port = int(os.environ["PVLAUNCH_PORT"])
session = sm.vtkSMSessionClient()
if not session.Connect("csrc://localhost:%d" % port, int(os.environ.get("PVLAUNCH_TIMEOUT", "300"))):
    print("countdown: no server", flush=True)
    sys.exit(3)
vtkProcessModule.GetProcessModule().RegisterSession(session)
info = session.GetServerInformation()
print("countdown: timeout %d" % info.GetTimeout(), flush=True)
command = info.GetTimeoutCommand()
print("countdown: command %s" % command, flush=True)
runner = session.GetSessionProxyManager().NewProxy("misc", "ExecutableRunner")
vtkSMPropertyHelper(runner, "Command").Set(command)
vtkSMPropertyHelper(runner, "Timeout").Set(0.3)
runner.UpdateVTKObjects()
runner.InvokeCommand("Execute")
runner.UpdatePropertyInformation()
print("countdown: status %d" % vtkSMPropertyHelper(runner, "ReturnValue").GetAsInt(), flush=True)
print("countdown: minutes left %s" % vtkSMPropertyHelper(runner, "StdOut").GetAsString(), flush=True)
from paraview.modules.vtkRemotingServerManager import vtkPVSessionBase
lost = []
session.AddObserver(vtkPVSessionBase.ConnectionLost, lambda *a: lost.append(1))
nam = vtkProcessModule.GetProcessModule().GetNetworkAccessManager()
deadline = time.monotonic() + 200
gone = False
while not lost and time.monotonic() < deadline:
    nam.ProcessEvents(500)
    gone = gone or not session.GetIsAlive()
    if gone:
        break
print("countdown: server gone" if gone or lost else "countdown: gave up", flush=True)
"#;

fn install(sb: &Sandbox) {
    let home = sb.desk_home();
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    std::fs::write(home.join("walltime.pvsc"), PROFILES).unwrap();
    std::fs::write(home.join("countdown.py"), COUNTDOWN_PY).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e/hold.py"),
        home.join("hold.py"),
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

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn gateway_ports_open() -> SiteConfig {
    SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified")
}

#[test]
fn a_two_minute_job_counts_down_warns_and_ends_with_the_walltime_code() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f walltime.pvsc --json connect short --client pvpython --script countdown.py",
        WALLTIME_SESSION,
    );
    let evs = events(&out.stdout);
    let names: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    // ParaView's countdown, read from the server connection.
    assert!(
        out.stdout.contains("countdown: timeout 2") || out.stderr.contains("countdown: timeout 2"),
        "{out:?}"
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("countdown: status 0"), "{text}");
    let minutes: u64 = text
        .lines()
        .find_map(|l| l.split("countdown: minutes left ").nth(1))
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or_else(|| panic!("no minutes left read: {text}"));
    assert!(minutes <= 2, "at most the wall time: {minutes}");
    // pvlaunch's own warning, before the end, while connected.
    let warn = names
        .iter()
        .position(|n| *n == "walltime_warning")
        .unwrap_or_else(|| panic!("no walltime_warning in {names:?}: {text}"));
    let connected = names.iter().position(|n| *n == "server_connected").unwrap();
    let ended = names.iter().position(|n| *n == "session_ended").unwrap();
    assert!(connected < warn && warn < ended, "{names:?}");
    assert!(evs[warn]["minutes_left"].as_u64().unwrap() <= 1);
    // The end: the client ran until its server went (it was not stopped), and the code says
    // why the session ended.
    assert!(text.contains("countdown: server gone"), "{text}");
    assert_eq!(out.code, Some(9), "{out:?}");
    let done = evs.last().unwrap();
    assert_eq!(done["event"], "done");
    assert!(
        done["reason"].as_str().unwrap().contains("wall-time"),
        "{done}"
    );
    sb.assert_no_leaks();
}

#[test]
fn more_nodes_than_the_partition_has_fails_within_seconds_with_the_reason() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(gateway_ports_open());
    install(sb);
    let out = sb.run_timeout(
        Host::Desk,
        "bin/pvlaunch -f walltime.pvsc connect three-nodes --client pvpython --script hold.py",
        Duration::from_secs(120),
    );
    assert_eq!(out.code, Some(5), "{out:?}");
    assert!(out.stderr.contains("will never start"), "{}", out.stderr);
    // Slurm 22.05 first says PartitionConfig for this job, later PartitionNodeLimit.
    assert!(
        out.stderr.contains("PartitionNodeLimit") || out.stderr.contains("PartitionConfig"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("<Job nodes>"),
        "what to change: {}",
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(45),
        "within seconds: {:?}",
        out.elapsed
    );
    let queue = sb
        .run(Host::Login, "squeue -h -o '%i %T'")
        .assert_success()
        .stdout;
    assert!(queue.trim().is_empty(), "the job was cancelled: {queue}");
    sb.assert_no_leaks();
}
