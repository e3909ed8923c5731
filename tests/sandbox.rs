//! The sandbox cluster itself (docs/sandbox.md): its firewalls, the wiki's first recipe done by
//! hand inside it (the reference for pvlaunch's end-to-end tests), and its life cycle.
//!
//! Needs root and network namespaces; otherwise every test prints SKIPPED (with `CI=true` they
//! fail instead).

mod common;

use std::time::{Duration, Instant};

use common::sandbox::{
    self, Firewall, Host, Sandbox, SiteConfig, instance_id, netns_inodes, residue,
};

/// A TCP port with a listener on every host during the matrix test.
const PROBE_PORT: u16 = 7000;

/// Whether `src` may open a connection to `dst:port` in firewall mode `mode`.
fn allowed(mode: Firewall, src: Host, dst: Host, port: u16) -> bool {
    use Host::*;
    match (src, mode) {
        (Desk, Firewall::Direct | Firewall::Isolated) => matches!(dst, Login | Gate) && port == 22,
        (Desk, Firewall::Gate) => dst == Gate && port == 22,
        (Gate, _) => dst == Login,
        (Login, Firewall::Direct | Firewall::Isolated) => true,
        (Login, Firewall::Gate) => dst != Desk,
        (Node1 | Node2, Firewall::Isolated) => {
            matches!(dst, Node1 | Node2) || (dst == Login && port == 6817)
        }
        (Node1 | Node2, _) => matches!(dst, Login | Node1 | Node2),
    }
}

/// Probe every (host, port) pair from every host; return the mismatches with the expectation.
fn check_matrix(sb: &Sandbox, mode: Firewall) -> Vec<String> {
    let mut wrong = Vec::new();
    for src in Host::ALL {
        let targets: Vec<String> = Host::ALL
            .iter()
            .filter(|d| **d != src)
            .flat_map(|d| [format!("{d}:22"), format!("{d}:{PROBE_PORT}")])
            .collect();
        let out = sb
            .run(
                src,
                &format!(
                    "/usr/bin/python3 sandbox/probe.py connect --timeout 2 {}",
                    targets.join(" ")
                ),
            )
            .assert_success();
        for line in out.stdout.lines() {
            let (target, result) = line.split_once(' ').expect("probe line");
            let (dst, port) = target.split_once(':').unwrap();
            let dst = *Host::ALL.iter().find(|h| h.name() == dst).unwrap();
            let port: u16 = port.parse().unwrap();
            // A connection the firewall lets through is accepted, or refused when nothing
            // listens (desk has no sshd); a blocked one fails as unreachable or times out.
            let reached = matches!(result, "open" | "refused");
            let blocked = matches!(result, "unreachable" | "timeout");
            let want = allowed(mode, src, dst, port);
            if (want && !reached) || (!want && !blocked) {
                wrong.push(format!(
                    "{mode:?}: {src} -> {target}: {result}, expected {}",
                    if want { "reachable" } else { "blocked" }
                ));
            }
        }
    }
    wrong
}

fn ssh(sb: &Sandbox, args: &str) -> common::sandbox::Output {
    sb.run_timeout(
        Host::Desk,
        &format!("ssh -o BatchMode=yes -o ConnectTimeout=3 {args}"),
        Duration::from_secs(30),
    )
}

#[test]
fn firewall_matrix_allows_exactly_the_wiki_paths() {
    let Some(sb) = sandbox::shared() else { return };
    let t0 = Instant::now();

    // Nothing routes out: every host knows only the sandbox's own network.
    for host in Host::ALL {
        let routes = sb
            .run_root(host, "ip -4 route; ip -6 route")
            .assert_success();
        let lines: Vec<&str> = routes.stdout.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("10.77.0.0/24 dev eth0"),
            "{host} has other routes:\n{}",
            routes.stdout
        );
    }

    let mut site = sb.configure(SiteConfig::default());
    let mut listeners: Vec<_> = Host::ALL
        .iter()
        .map(|h| {
            sb.spawn(
                *h,
                &format!(
                    "exec /usr/bin/python3 sandbox/probe.py listen --seconds 120 {PROBE_PORT}"
                ),
            )
        })
        .collect();
    for l in &mut listeners {
        l.wait_for_output("listening", Duration::from_secs(20));
    }

    let wrong = check_matrix(sb, Firewall::Direct);
    assert!(wrong.is_empty(), "firewall (direct):\n{}", wrong.join("\n"));
    let login = ssh(sb, "login hostname").assert_success();
    assert_eq!(login.stdout.trim(), "login");
    let jump = ssh(sb, "-J gate login hostname").assert_success();
    assert_eq!(jump.stdout.trim(), "login");
    let node = ssh(sb, "node1 true").assert_failure();
    assert!(
        node.stderr.contains("No route to host") || node.stderr.contains("timed out"),
        "{node}"
    );
    // Inside the site, ssh goes on from login to the nodes with the shared home's key.
    let hop = sb
        .run(Host::Login, "ssh -o BatchMode=yes node2 hostname")
        .assert_success();
    assert_eq!(hop.stdout.trim(), "node2");

    site.set(SiteConfig::default().firewall(Firewall::Gate));
    let wrong = check_matrix(sb, Firewall::Gate);
    assert!(wrong.is_empty(), "firewall (gate):\n{}", wrong.join("\n"));
    ssh(sb, "login true").assert_failure();
    let jump = ssh(sb, "-J gate login hostname").assert_success();
    assert_eq!(jump.stdout.trim(), "login");
    site.set(SiteConfig::default());

    for l in listeners {
        l.kill();
    }
    sb.assert_no_leaks();
    sandbox::report(&format!("firewall matrix: {:.1?}", t0.elapsed()));
}

/// The wiki's first recipe, typed by hand: pvpython on desk waits for a reverse connection,
/// `ssh -R` carries login's port to it (login's sshd has `GatewayPorts clientspecified`), and a
/// Slurm job on node1 runs `mpiexec -np 2 pvserver --reverse-connection` against login.
#[test]
fn reverse_connection_recipe_by_hand_reaches_both_ranks() {
    let Some(sb) = sandbox::shared() else { return };
    let _site =
        sb.configure(SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified"));
    let port = 11111;
    let t0 = Instant::now();

    sb.write_file(
        Host::Desk,
        "recipe1-job.sh",
        include_str!("sandbox/recipe1-job.sh"),
    );
    let mut client = sb.spawn(
        Host::Desk,
        &format!(
            "exec pvpython sandbox/reverse_client.py --port {port} --timeout 120 --expect-ranks 2"
        ),
    );
    client.wait_for_output("Accepting connection(s)", Duration::from_secs(60));
    let listening = t0.elapsed();

    // One ssh session holds the tunnel while the job runs, as in `ssh -R ... login submit.sh`.
    let remote = format!(
        "set -e; id=$(sbatch --parsable -N1 -n2 -w node1 -o recipe1-%j.out \
         --export=ALL,PV_CLIENT_HOST=login,PV_SERVER_PORT={port}); \
         echo job=$id; \
         while [ -n \"$(squeue -h -j $id)\" ]; do sleep 0.2; done; \
         echo sacct=$(sacct -c -j $id -X -n -P -o State,NodeList,ExitCode); \
         cat recipe1-$id.out; rm -f recipe1-$id.out"
    );
    let submit = sb
        .run_timeout(
            Host::Desk,
            &format!(
                "ssh -o BatchMode=yes -o ExitOnForwardFailure=yes \
                 -R 0.0.0.0:{port}:localhost:{port} login {} < recipe1-job.sh",
                sandbox::shell_quote(&remote)
            ),
            Duration::from_secs(180),
        )
        .assert_success();
    let done = t0.elapsed();
    let client = client.wait(Duration::from_secs(60));
    assert!(
        client.success(),
        "pvpython on desk:\n{client}\n\njob:\n{submit}"
    );
    assert!(
        client.stdout.contains("reverse_client: ranks 2"),
        "{client}"
    );
    assert!(
        client.stdout.contains("reverse_client: process ids 0 1"),
        "{client}"
    );
    assert!(
        submit.stdout.contains("sacct=COMPLETED|node1|0:0"),
        "{submit}"
    );
    assert!(submit.stdout.contains("Client connected."), "{submit}");
    sb.run(Host::Desk, "rm -f recipe1-job.sh").assert_success();
    sb.assert_no_leaks();
    sandbox::report(&format!(
        "reverse recipe: client listening after {listening:.1?}, job done after {done:.1?}, \
         total {:.1?}",
        t0.elapsed()
    ));
}

/// login's sshd starts with OpenSSH's defaults and `sshd-set` restarts it with the settings the
/// pvlaunch caveat tests need.
#[test]
fn login_sshd_starts_with_defaults_and_restarts_with_other_settings() {
    let Some(sb) = sandbox::shared() else { return };
    let mut site = sb.configure(SiteConfig::default());
    let t0 = Instant::now();
    let port = 12000;
    let bound = |gateway: &str| {
        let mut fwd = sb.spawn(
            Host::Desk,
            &format!(
                "exec ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -N \
                 -R 0.0.0.0:{port}:localhost:9 login"
            ),
        );
        let ss = sandbox::wait_for(
            &format!("the remote forward on login ({gateway})"),
            Duration::from_secs(20),
            || {
                assert!(fwd.running(), "ssh -R ended: {}", fwd.stderr());
                let out = sb.run_root(Host::Login, &format!("ss -Hltn 'sport = :{port}'"));
                (!out.stdout.trim().is_empty()).then_some(out.stdout)
            },
        );
        fwd.kill();
        ss
    };

    // GatewayPorts no: a remote forward binds login's loopback whatever the client asks for.
    let ss = bound("GatewayPorts no");
    assert!(ss.contains(&format!("127.0.0.1:{port}")), "{ss}");
    assert!(!ss.contains(&format!("0.0.0.0:{port}")), "{ss}");

    site.set(SiteConfig::default().sshd(Host::Login, "GatewayPorts", "clientspecified"));
    let ss = bound("GatewayPorts clientspecified");
    assert!(ss.contains(&format!("0.0.0.0:{port}")), "{ss}");

    site.set(SiteConfig::default().sshd(Host::Login, "AllowTcpForwarding", "no"));
    let refused = sb
        .run_timeout(
            Host::Desk,
            &format!(
                "ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -R {port}:localhost:9 login true"
            ),
            Duration::from_secs(30),
        )
        .assert_failure();
    assert!(
        refused.stderr.contains("remote port forwarding failed"),
        "{refused}"
    );

    site.set(SiteConfig::default().sshd(Host::Login, "AllowStreamLocalForwarding", "no"));
    let refused = sb
        .run_timeout(
            Host::Desk,
            "ssh -o BatchMode=yes -o ExitOnForwardFailure=yes -R /tmp/pvtest.sock:localhost:9 login true",
            Duration::from_secs(30),
        )
        .assert_failure();
    assert!(
        refused.stderr.contains("remote port forwarding failed"),
        "{refused}"
    );

    site.set(SiteConfig::default());
    sb.assert_no_leaks();
    sandbox::report(&format!("login sshd settings: {:.1?}", t0.elapsed()));
}

/// `up`, `health` and `down` of an instance of its own; afterwards nothing of it remains.
#[test]
fn up_health_down_leaves_nothing_behind() {
    if !sandbox::prerequisites_or_skip("the sandbox life cycle test") {
        return;
    }
    let id = instance_id('l');
    let t0 = Instant::now();
    let sb = Sandbox::start_fresh(&id);
    let up = t0.elapsed();

    let health = sb.health();
    assert!(health.success(), "{health}");
    sandbox::report(health.stdout.trim_end());
    let inodes = netns_inodes(&id);
    assert_eq!(inodes.len(), 6, "five hosts and the bridge");

    let t1 = Instant::now();
    let down = sb.down();
    assert!(down.success(), "{down}");
    let down_time = t1.elapsed();
    let left = residue(&id, &inodes);
    assert!(left.is_empty(), "after down:\n{}", left.join("\n"));
    sandbox::report(&format!(
        "life cycle: up {up:.1?}, health {:.1?}, down {down_time:.1?}",
        health.elapsed
    ));
}

/// A failing step stops `up`, names the step, shows the daemon's log and removes what was built.
#[test]
fn failed_up_names_the_step_and_cleans_up() {
    if !sandbox::prerequisites_or_skip("the failed-up test") {
        return;
    }
    let id = instance_id('f');
    let out = sandbox::sandbox_cmd_env(
        &id,
        &["up"],
        &[("PVSANDBOX_SLURM_CONF_EXTRA", "NoSuchOption=1")],
        Duration::from_secs(1800),
    );
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains("up FAILED at step \"slurmctld on login\""),
        "{out}"
    );
    assert!(out.stderr.contains("NoSuchOption"), "{out}");
    let left = residue(&id, &[]);
    assert!(left.is_empty(), "after a failed up:\n{}", left.join("\n"));
}
