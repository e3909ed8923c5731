//! The attack suite (issue 10): another user of the cluster, `pvattack`, runs
//! `tests/sandbox/attack.py` on login, node1 and node2 from before the victim's session starts
//! until after it ends. It reads every world-readable place, probes every port and socket of
//! the victim as soon as it appears (connect-and-close, connect-and-hold), races a hostile
//! pvserver against the real one, connects ParaView clients with every connect-id it found and
//! sends a Programmable Source that writes a marker file wherever it runs.
//!
//! Every case asserts: no marker file anywhere, the attacker never completed a ParaView
//! handshake or a pvlaunch hop preamble, no session secret was visible, the victim's session
//! ran normally (exit 0, its events, data from both ranks of the real pvserver), and nothing is
//! left behind. A last test drops the desk<->login link silently and asserts both ends notice
//! within 30 s and clean up within 60 s.
//!
//! Black box: the tests drive the `pvlaunch` binary as a person would and judge only what a
//! person or another user of the cluster can see.

mod common;

use std::time::{Duration, Instant};

use common::sandbox::{self, Background, Host, Sandbox, SiteConfig, shell_quote};

const SESSION_TIMEOUT: Duration = Duration::from_secs(180);
/// The issue's bound for a job after its session ended.
const JOB_GONE: Duration = Duration::from_secs(15);
/// From the job's start to pvserver reaching the client, at most, not counting the time pvserver
/// took to connect to the node agent (its MPI start-up, which the node agent reports): the rest
/// is pvlaunch's path, a few seconds here; more means something else held the way.
const SLOWED: Duration = Duration::from_secs(20);
/// Where the attacker runs.
const ATTACKED: [Host; 3] = [Host::Login, Host::Node1, Host::Node2];
/// Every host a marker file could appear on.
const ALL_HOSTS: [Host; 4] = [Host::Desk, Host::Login, Host::Node1, Host::Node2];

/// The victim's client: connects, fetches data colored by process id, holds the connection a
/// few seconds, fetches again. It proves it talked to the real 2-rank pvserver both times.
const VICTIM_SCRIPT: &str = r#""""The attack suite's victim client (tests/attack.rs)."""
import os
import sys
import time

from paraview import servermanager as sm
from paraview.modules.vtkRemotingCore import vtkProcessModule
import paraview.simple as simple

session = sm.vtkSMSessionClient()
if not session.Connect(os.environ["PVLAUNCH_URL"], int(os.environ.get("PVLAUNCH_TIMEOUT", "120"))):
    print("victim: no server", flush=True)
    sys.exit(3)
conn = sm.GetConnectionFromId(vtkProcessModule.GetProcessModule().RegisterSession(session))
sm.SetActiveConnection(conn)
simple._initializeSession(conn)


def ranks():
    data = sm.Fetch(simple.ProcessIdScalars(Input=simple.Sphere()))
    arr = data.GetPointData().GetArray("ProcessId")
    return sorted({int(arr.GetValue(i)) for i in range(arr.GetNumberOfTuples())})


first = ranks()
time.sleep(float(os.environ.get("VICTIM_HOLD", "4")))
second = ranks()
print("victim: ranks %s then %s" % (first, second), flush=True)
sm.Disconnect(conn)
if first == second == [0, 1]:
    print("victim: ok ranks 0 1", flush=True)
    sys.exit(0)
print("victim: not the session's pvserver", flush=True)
sys.exit(4)
"#;

/// A client that connects and holds the session until it is stopped.
const HOLD_SCRIPT: &str = r#"import os, time
from paraview import servermanager as sm
session = sm.vtkSMSessionClient()
ok = session.Connect(os.environ["PVLAUNCH_URL"], int(os.environ.get("PVLAUNCH_TIMEOUT", "300")))
print("hold: connected" if ok else "hold: no server", flush=True)
time.sleep(3600)
"#;

/// This build's pvlaunch, the profiles and the victim's scripts on desk; the current attacker
/// in the second user's home; no marker file from an earlier run anywhere.
fn install(sb: &Sandbox) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = sb.desk_home();
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pvlaunch"), bin.join("pvlaunch")).unwrap();
    for (from, to) in [
        ("pvsc/sandbox.pvsc", "sandbox.pvsc"),
        ("tests/fixtures/e2e/two-hop.pvsc", "two-hop.pvsc"),
    ] {
        std::fs::copy(root.join(from), home.join(to)).unwrap();
    }
    std::fs::write(home.join("attack-victim.py"), VICTIM_SCRIPT).unwrap();
    std::fs::write(home.join("attack-hold.py"), HOLD_SCRIPT).unwrap();
    chown(&home, sandbox::TEST_USER);
    let attack = sb.attack_home().join("sandbox");
    std::fs::create_dir_all(&attack).unwrap();
    std::fs::copy(
        root.join("tests/sandbox/attack.py"),
        attack.join("attack.py"),
    )
    .unwrap();
    chown(&attack, sandbox::ATTACK_USER);
    remove_markers(sb);
}

fn chown(path: &std::path::Path, user: &str) {
    let ok = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {}", path.display());
}

/// Where the attack's Programmable Source writes its marker, per host (the cluster's homes are
/// shared: looked at on login only).
fn marker_globs(host: Host) -> &'static str {
    match host {
        Host::Login => "/tmp/pwned-* /home/pvtest/pwned-* /home/pvattack/pwned-*",
        Host::Desk => "/tmp/pwned-* /home/pvtest/pwned-*",
        _ => "/tmp/pwned-*",
    }
}

fn remove_markers(sb: &Sandbox) {
    for host in ALL_HOSTS {
        sb.run_root(host, &format!("rm -f {}", marker_globs(host)))
            .assert_success();
    }
}

/// Marker files the attack's Programmable Source wrote (`ls -ln`: the owner's uid shows whose
/// code wrote it).
fn markers(sb: &Sandbox) -> Vec<String> {
    let mut found = Vec::new();
    for host in ALL_HOSTS {
        let out = sb.run_root(
            host,
            &format!("ls -ln {} 2>/dev/null || true", marker_globs(host)),
        );
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            found.push(format!("{host}: {line}"));
        }
    }
    found
}

// --- the attacker ---------------------------------------------------------------------------

struct Attackers {
    running: Vec<(Host, Background)>,
}

fn stop_file(host: Host) -> String {
    format!("{}/sandbox/stop-{host}", sandbox::ATTACK_HOME)
}

/// Start the attack on login, node1 and node2; returns once each has its ParaView clients
/// ready (so the victim's first socket is attacked the moment it appears).
fn start_attackers(sb: &Sandbox) -> Attackers {
    let mut running = Vec::new();
    if std::env::var("PVLAUNCH_ATTACK").as_deref() == Ok("off") {
        // The control: the same sessions and checks with nobody attacking.
        sandbox::report("PVLAUNCH_ATTACK=off: no attacker (the control run)");
        return Attackers { running };
    }
    for host in ATTACKED {
        let stop = stop_file(host);
        sb.run_as(sandbox::ATTACK_USER, host, &format!("rm -f {stop}"))
            .assert_success();
        let bg = sb.spawn_as(
            sandbox::ATTACK_USER,
            host,
            &format!("exec /usr/bin/python3 sandbox/attack.py --duration 400 --stop-file {stop}"),
        );
        running.push((host, bg));
    }
    for (host, bg) in &mut running {
        let t0 = Instant::now();
        bg.wait_for_output("\"event\": \"ready\"", Duration::from_secs(90));
        sandbox::report(&format!(
            "attacker on {host} ready after {:.1?}",
            t0.elapsed()
        ));
    }
    Attackers { running }
}

/// What one attacker did: its JSON lines.
struct Attack {
    host: Host,
    events: Vec<serde_json::Value>,
    output: sandbox::Output,
}

impl Attackers {
    /// End the attack (stop file, then the attacker ends its own processes) and collect what
    /// each one logged.
    fn stop(self, sb: &Sandbox) -> Vec<Attack> {
        for (host, _) in &self.running {
            let _ = sb.run_as(
                sandbox::ATTACK_USER,
                *host,
                &format!("touch {}", stop_file(*host)),
            );
        }
        self.running
            .into_iter()
            .map(|(host, bg)| {
                let output = bg.wait(Duration::from_secs(30));
                let events = output
                    .stdout
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                Attack {
                    host,
                    events,
                    output,
                }
            })
            .collect()
    }
}

/// The SHA-256 (hex) of the pvlaunch binary under test.
fn binary_sha256() -> &'static str {
    use sha2::Digest;
    static SUM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SUM.get_or_init(|| {
        let bytes = std::fs::read(env!("CARGO_BIN_EXE_pvlaunch")).unwrap();
        format!("{:x}", sha2::Sha256::digest(&bytes))
    })
}

/// Why an attacker event means the session was reached, or `None`.
fn breach(e: &serde_json::Value) -> Option<&'static str> {
    match e["event"].as_str()? {
        "handshake" => Some("completed a ParaView handshake with the victim's session"),
        "code_sent" => Some("ran a Programmable Source on the victim's pvserver"),
        "hop_auth" if e["ok"] == true => Some("passed a pvlaunch hop's key check"),
        // The SHA-256 of pvlaunch's own binary is on the copy's command line: public, not a key.
        "secret" if e["kind"] == "hex64" && e["value"].as_str() != Some(binary_sha256()) => {
            Some("read something that looks like a session key")
        }
        _ => None,
    }
}

/// The attackers' JSON lines and the victim's output in `CARGO_TARGET_TMPDIR/attack/`, for a
/// person to read after a run.
fn keep_logs(case: &str, attacks: &[Attack], victim: &sandbox::Output) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("attack");
    let _ = std::fs::create_dir_all(&dir);
    for a in attacks {
        let _ = std::fs::write(
            dir.join(format!("{case}-{}.jsonl", a.host)),
            &a.output.stdout,
        );
    }
    let _ = std::fs::write(dir.join(format!("{case}-victim.txt")), victim.to_string());
}

fn summarize(attacks: &[Attack]) -> String {
    let mut s = String::new();
    for a in attacks {
        let end = a.events.iter().find(|e| e["event"] == "end");
        s.push_str(&format!(
            "  {}: {} events; end: {}\n",
            a.host,
            a.events.len(),
            end.map_or_else(|| "(none)".to_string(), |e| e.to_string())
        ));
    }
    s
}

// --- the victim -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Recipe {
    Reverse,
    Relay,
    TwoHop,
    ReverseTwoHop,
}

impl Recipe {
    fn site(self) -> SiteConfig {
        match self {
            Recipe::Reverse => {
                SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified")
            }
            _ => SiteConfig::default(),
        }
    }

    /// The profile file and the `connect` arguments.
    fn connect(self) -> &'static str {
        match self {
            Recipe::Reverse => "-f sandbox.pvsc --json connect sandbox --recipe reverse",
            Recipe::Relay => "-f sandbox.pvsc --json connect sandbox --recipe relay",
            Recipe::TwoHop => "-f two-hop.pvsc --json connect two-hop",
            Recipe::ReverseTwoHop => "-f two-hop.pvsc --json connect reverse-two-hop",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    /// pvlaunch starts pvpython with the victim's script.
    Pvpython,
    /// pvlaunch waits; the test starts pvpython once pvlaunch says where.
    Wait,
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn names(evs: &[serde_json::Value]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| e["event"].as_str().map(str::to_string))
        .collect()
}

/// The victim's whole session; returns pvlaunch's output and, in `wait` mode, the client's.
fn victim_session(
    sb: &Sandbox,
    recipe: Recipe,
    client: Client,
) -> (sandbox::Output, Option<sandbox::Output>) {
    match client {
        Client::Pvpython => {
            let out = sb.run_timeout(
                Host::Desk,
                &format!(
                    "bin/pvlaunch {} --client pvpython --script attack-victim.py",
                    recipe.connect()
                ),
                SESSION_TIMEOUT,
            );
            (out, None)
        }
        Client::Wait => {
            let mut bg = sb.spawn(
                Host::Desk,
                &format!("exec bin/pvlaunch {} --client wait", recipe.connect()),
            );
            // Where the person's client goes, and with which connect-id: the reverse recipes
            // say it before anything else (the client listens), two-hop once the tunnel is
            // open.
            let told = sandbox::try_wait_for(SESSION_TIMEOUT, || {
                let evs = events(&bg.stdout());
                let found = evs
                    .iter()
                    .find(|e| e["event"] == "waiting_for_client")
                    .cloned();
                if found.is_none() && !bg.running() {
                    return Some(None);
                }
                found.map(Some)
            })
            .flatten();
            let Some(told) = told else {
                return (bg.wait(Duration::from_secs(10)), None);
            };
            let url = told["url"].as_str().expect("a url").to_string();
            let id = told["connect_id"]
                .as_u64()
                .map(|i| format!(" --connect-id={i}"))
                .unwrap_or_default();
            let person = sb.spawn(
                Host::Desk,
                &format!(
                    "PVLAUNCH_URL={} PVLAUNCH_TIMEOUT=150 exec pvpython --force-offscreen-rendering{id} attack-victim.py",
                    shell_quote(&url)
                ),
            );
            // pvlaunch ends when the client disconnects (or when the session fails: then the
            // client has nobody to wait for).
            let out = bg.wait(SESSION_TIMEOUT);
            let mut person = person;
            let client_out = if sandbox::try_wait_for(Duration::from_secs(15), || {
                (!person.running()).then_some(())
            })
            .is_some()
            {
                person.wait(Duration::from_secs(5))
            } else {
                person.kill()
            };
            (out, Some(client_out))
        }
    }
}

/// How long pvserver took to connect to the node agent, from the job's output (the agent's
/// `pvserver connected after N s` line). Panics when the session submitted a job whose output
/// lacks the line: without it the slow-down check could not tell pvlaunch's share.
fn server_start(sb: &Sandbox, out: &sandbox::Output) -> Option<Duration> {
    let evs = events(&out.stdout);
    let path = evs
        .iter()
        .find(|e| e["event"] == "job_submitted")?
        .get("output")?
        .as_str()?
        .to_string();
    evs.iter().find(|e| e["event"] == "server_connected")?;
    let home = sb.cluster_home();
    let text = std::fs::read_to_string(home.join(&path))
        .unwrap_or_else(|e| panic!("read the job's output {path}: {e}"));
    let line = text
        .lines()
        .find_map(|l| l.split_once("pvlaunch-node: pvserver connected after "))
        .unwrap_or_else(|| panic!("the job's output {path} has no start-up line:\n{text}"));
    let secs: f64 = line
        .1
        .trim()
        .trim_end_matches(" s")
        .parse()
        .unwrap_or_else(|e| panic!("start-up line {:?}: {e}", line.1));
    Some(Duration::from_secs_f64(secs))
}

/// Every way the victim's session shows it was disturbed.
fn check_victim(
    recipe: Recipe,
    client: Client,
    out: &sandbox::Output,
    client_out: Option<&sandbox::Output>,
    server_start: Option<Duration>,
    failures: &mut Vec<String>,
) {
    let evs = events(&out.stdout);
    let names = names(&evs);
    if out.code != Some(0) {
        let done = evs.iter().rev().find(|e| e["event"] == "done");
        failures.push(format!(
            "the victim's session ended with {:?} after {:.1?} ({})",
            out.code,
            out.elapsed,
            done.map_or("no done event".to_string(), |d| d.to_string())
        ));
    }
    for needed in [
        "plan",
        "ssh_connected",
        "job_submitted",
        "server_connected",
        "session_ended",
        "done",
    ] {
        if !names.iter().any(|n| n == needed) {
            failures.push(format!(
                "no {needed} event in the victim's session: {names:?}"
            ));
        }
    }
    let at = |name: &str| {
        evs.iter()
            .find(|e| e["event"] == name)
            .and_then(|e| e["elapsed_ms"].as_u64())
    };
    if let (Some(running), Some(connected)) = (at("job_running"), at("server_connected")) {
        let took = Duration::from_millis(connected.saturating_sub(running));
        // MPI's own start-up is outside pvlaunch's path: other users on the node can hold
        // mpiexec's and the ranks' TCP ports and stall it (docs/security.md, "What pvlaunch
        // cannot own"). The node agent says how long that took.
        let mpi = server_start.unwrap_or_default();
        sandbox::report(&format!(
            "{recipe:?} / {client:?}: pvserver reached the client {took:.1?} after the job started, \
             pvserver's own start-up (MPI included, not counted) took {mpi:.1?}"
        ));
        if took.saturating_sub(mpi) > SLOWED {
            failures.push(format!(
                "the session was slowed: pvserver reached the client {took:.1?} after the job started, \
                 {mpi:.1?} of it pvserver's own start-up (bound {SLOWED:?} for the rest)"
            ));
        }
    }
    let said = match client_out {
        Some(c) => format!("{}{}", c.stdout, c.stderr),
        None => out.stderr.clone(),
    };
    if !said.contains("victim: ok ranks 0 1") {
        let lines: Vec<&str> = said.lines().filter(|l| l.starts_with("victim:")).collect();
        failures.push(format!(
            "the victim's client did not get data from the real pvserver's two ranks ({recipe:?}, {client:?}): {lines:?}"
        ));
    }
}

fn queue(sb: &Sandbox) -> String {
    sb.run_root(Host::Login, "squeue -h -o '%i %u %T %j'")
        .stdout
}

/// The jobs gone and nothing of the victim's (or the attacker's) left, or what is.
fn leftovers(sb: &Sandbox) -> Vec<String> {
    let mut left = Vec::new();
    if sandbox::try_wait_for(JOB_GONE, || queue(sb).trim().is_empty().then_some(())).is_none() {
        left.push(format!(
            "a job is still queued {JOB_GONE:?} after the session:\n{}",
            queue(sb)
        ));
    }
    let clean = sandbox::try_wait_for(sandbox::LEAK_GRACE, || sb.leaks().is_empty().then_some(()));
    if clean.is_none() {
        left.push(format!("left behind:\n{}", sb.leaks().join("\n")));
    }
    left
}

fn attack_case(recipe: Recipe, client: Client) {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(recipe.site());
    install(sb);
    let t0 = Instant::now();
    let attackers = start_attackers(sb);
    let (out, client_out) = victim_session(sb, recipe, client);
    // A moment more of attack: the cleanup is a phase too.
    std::thread::sleep(Duration::from_secs(2));
    let attacks = attackers.stop(sb);
    keep_logs(&format!("{recipe:?}-{client:?}"), &attacks, &out);

    let mut failures = Vec::new();
    for m in markers(sb) {
        failures.push(format!("code ran as the victim: marker {m}"));
    }
    for a in &attacks {
        if !a.events.iter().any(|e| e["event"] == "end") {
            failures.push(format!(
                "the attacker on {} did not end cleanly:\n{}",
                a.host, a.output
            ));
        }
        for e in &a.events {
            if let Some(why) = breach(e) {
                failures.push(format!("attacker on {} {why}: {e}", a.host));
            }
        }
    }
    let server_start = server_start(sb, &out);
    check_victim(
        recipe,
        client,
        &out,
        client_out.as_ref(),
        server_start,
        &mut failures,
    );
    failures.extend(leftovers(sb));
    sandbox::report(&format!(
        "attack on {recipe:?} / {client:?}: {} after {:.1?}; victim exit {:?}\n{}",
        if failures.is_empty() {
            "held"
        } else {
            "BREACHED"
        },
        t0.elapsed(),
        out.code,
        summarize(&attacks)
    ));
    if !failures.is_empty() {
        let mut msg = format!(
            "{recipe:?} with --client {client:?}: {} finding(s)\n- {}\n\nthe victim's pvlaunch:\n{out}",
            failures.len(),
            failures.join("\n- ")
        );
        if let Some(c) = &client_out {
            msg.push_str(&format!("\n\nthe victim's client:\n{c}"));
        }
        msg.push_str(&format!("\n\nthe attack:\n{}", summarize(&attacks)));
        panic!("{msg}");
    }
}

#[test]
fn attack_reverse_with_pvpython() {
    attack_case(Recipe::Reverse, Client::Pvpython);
}

#[test]
fn attack_reverse_with_wait() {
    attack_case(Recipe::Reverse, Client::Wait);
}

#[test]
fn attack_relay_with_pvpython() {
    attack_case(Recipe::Relay, Client::Pvpython);
}

#[test]
fn attack_relay_with_wait() {
    attack_case(Recipe::Relay, Client::Wait);
}

#[test]
fn attack_two_hop_with_pvpython() {
    attack_case(Recipe::TwoHop, Client::Pvpython);
}

#[test]
fn attack_two_hop_with_wait() {
    attack_case(Recipe::TwoHop, Client::Wait);
}

#[test]
fn attack_reverse_two_hop_with_pvpython() {
    attack_case(Recipe::ReverseTwoHop, Client::Pvpython);
}

#[test]
fn attack_reverse_two_hop_with_wait() {
    attack_case(Recipe::ReverseTwoHop, Client::Wait);
}

// --- a silently dropped link ----------------------------------------------------------------

/// Drops every packet between desk and login in desk's namespace (nothing is reset: the link
/// just goes silent) until dropped; then the firewall is whole again.
struct DroppedLink<'a> {
    sb: &'a Sandbox,
}

impl<'a> DroppedLink<'a> {
    fn new(sb: &'a Sandbox) -> DroppedLink<'a> {
        let login = Host::Login.addr();
        sb.run_root(
            Host::Desk,
            &format!(
                "nft insert rule inet pvsandbox output ip daddr {login} drop && \
                 nft insert rule inet pvsandbox input ip saddr {login} drop"
            ),
        )
        .assert_success();
        DroppedLink { sb }
    }
}

impl Drop for DroppedLink<'_> {
    fn drop(&mut self) {
        let out = sandbox::sandbox_cmd(
            self.sb.id(),
            &["firewall", "direct"],
            Duration::from_secs(60),
        );
        if !out.success() {
            eprintln!("restoring the firewall failed:\n{out}");
        }
    }
}

/// The test user's processes on the hosts of a session.
fn victim_processes(sb: &Sandbox) -> Vec<String> {
    let mut found = Vec::new();
    for host in ALL_HOSTS {
        let out = sb.run_root(host, "ps -u pvtest -o pid=,stat=,args= | awk '$2 !~ /^Z/'");
        for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
            found.push(format!("{host}: {}", line.trim()));
        }
    }
    found
}

#[test]
fn a_silently_dropped_link_is_noticed_within_30s_and_nothing_is_left_within_60s() {
    let Some(sb) = sandbox::shared() else { return };
    let _site = sb.configure(Recipe::Reverse.site());
    install(sb);
    let mut bg = sb.spawn(
        Host::Desk,
        "exec bin/pvlaunch -f sandbox.pvsc --json connect sandbox --recipe reverse --client pvpython --script attack-hold.py",
    );
    bg.wait_for_output("\"server_connected\"", SESSION_TIMEOUT);
    assert!(!queue(sb).trim().is_empty(), "the job runs before the drop");
    let link = DroppedLink::new(sb);
    let t0 = Instant::now();
    let mut failures = Vec::new();

    let ended = sandbox::try_wait_for(Duration::from_secs(30), || (!bg.running()).then_some(()));
    let noticed = t0.elapsed();
    if ended.is_none() {
        failures.push(format!(
            "pvlaunch on desk still runs {noticed:.1?} after the link went silent"
        ));
    }
    let clean = sandbox::try_wait_for(Duration::from_secs(60).saturating_sub(t0.elapsed()), || {
        (queue(sb).trim().is_empty() && victim_processes(sb).is_empty()).then_some(())
    });
    if clean.is_none() {
        failures.push(format!(
            "60 s after the link went silent, still there:\njobs:\n{}processes:\n{}",
            queue(sb),
            victim_processes(sb).join("\n")
        ));
    }
    let out = if bg.running() {
        bg.kill()
    } else {
        bg.wait(Duration::from_secs(5))
    };
    if ended.is_some() && out.success() {
        failures.push(format!("pvlaunch exited 0 after the link was lost:\n{out}"));
    }
    sandbox::report(&format!(
        "dropped link: pvlaunch {} after {noticed:.1?} (exit {:?}); clean after 60 s: {}",
        if ended.is_some() {
            "ended"
        } else {
            "still ran"
        },
        out.code,
        clean.is_some()
    ));
    drop(link);
    if !failures.is_empty() {
        panic!("{}\n\npvlaunch:\n{out}", failures.join("\n"));
    }
    sb.assert_no_leaks();
}
