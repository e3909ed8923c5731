//! The command line as a user meets it: the real binary, real files, exit codes and output.

use std::path::Path;
use std::process::{Command, Output};

fn pvlaunch(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn server(name: &str, resource: &str) -> String {
    format!(r#"<Server name="{name}" resource="{resource}"><ManualStartup/></Server>"#)
}

#[test]
fn list_follows_the_discovery_order_and_notes_overrides() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join(".config/ParaView")).unwrap();
    std::fs::create_dir_all(h.join(".config/pvlaunch")).unwrap();
    let write = |p: &str, body: String| {
        std::fs::write(h.join(p), format!("<Servers>{body}</Servers>")).unwrap()
    };
    write(
        ".config/ParaView/servers.pvsc",
        server("alpha", "cs://pv:1") + &server("beta", "cs://pv:2"),
    );
    write(
        ".config/pvlaunch/site.pvsc",
        server("beta", "cs://cfg:2") + &server("gamma", "cs://cfg:3"),
    );
    write("env.pvsc", server("gamma", "cs://env:3"));
    write("cli.pvsc", server("alpha", "cs://cli:1"));

    let out = Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .args(["-f", h.join("cli.pvsc").to_str().unwrap(), "list", "--json"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", h)
        .env("XDG_CONFIG_HOME", h.join(".config"))
        .env("PVLAUNCH_PROFILES", h.join("env.pvsc"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, String, String, usize)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["resource"].as_str().unwrap().to_string(),
                r["origin"].as_str().unwrap().to_string(),
                r["overrides"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "alpha".into(),
                "cs://cli:1".into(),
                "command-line".into(),
                1
            ),
            ("beta".into(), "cs://cfg:2".into(), "config-dir".into(), 1),
            ("gamma".into(), "cs://env:3".into(), "env-var".into(), 1),
        ]
    );
}

#[test]
fn show_resolves_and_rejects_bad_set_values_with_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let ok = pvlaunch(
        home.path(),
        &[
            "-f",
            "pvsc/cluster-a.pvsc",
            "show",
            "cluster-a",
            "--set",
            "NODES=3",
            "--json",
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(doc["name"], "cluster-a");
    assert_eq!(doc["endpoint"]["mode"], "listen");
    assert_eq!(doc["endpoint"]["port"], 11111);
    assert_eq!(doc["pvlaunch"]["nodes"], 3);
    assert_eq!(
        doc["pvlaunch"]["launcher"],
        serde_json::json!(["mpiexec", "-n", "12"])
    );
    let argv: Vec<String> = serde_json::from_value(doc["command"]["argv"].clone()).unwrap();
    assert_eq!(argv[..3], ["pvlaunch", "connect", "cluster-a"]);
    assert!(argv.contains(&"--set=NODES=3".to_string()));

    let bad = pvlaunch(
        home.path(),
        &[
            "-f",
            "pvsc/cluster-a.pvsc",
            "show",
            "cluster-a",
            "--set",
            "NODES=0",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("allowed a whole number from 1 to 64"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn unknown_profile_suggests_the_nearest_name() {
    let home = tempfile::tempdir().unwrap();
    let out = pvlaunch(
        home.path(),
        &["-f", "pvsc/cluster-a.pvsc", "show", "cluster-b"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: no profile named `cluster-b` (did you mean `cluster-a`?)"
    );
}

#[test]
fn validate_reports_every_file_and_exits_3_on_errors() {
    let home = tempfile::tempdir().unwrap();
    let out = pvlaunch(
        home.path(),
        &[
            "validate",
            "pvsc/cluster-a.pvsc",
            "tests/fixtures/invalid/pvlaunch-unknown.pvsc",
            "tests/fixtures/invalid/malformed.pvsc",
            "missing.pvsc",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let o = text(&out.stdout);
    assert!(o.contains("ok: pvsc/cluster-a.pvsc"), "{o}");
    assert!(
        o.contains("tests/fixtures/invalid/pvlaunch-unknown.pvsc:6:30"),
        "{o}"
    );
    assert!(
        o.contains("tests/fixtures/invalid/malformed.pvsc:4:3"),
        "{o}"
    );
    assert!(o.contains("cannot read missing.pvsc"), "{o}");
    assert!(o.contains("9 error(s)"), "{o}");

    let json = pvlaunch(
        home.path(),
        &[
            "validate",
            "--json",
            "tests/fixtures/invalid/malformed.pvsc",
        ],
    );
    assert_eq!(json.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let d = &doc[0]["diagnostics"][0];
    assert_eq!(
        (
            d["location"]["line"].as_u64(),
            d["location"]["column"].as_u64()
        ),
        (Some(4), Some(3))
    );
    assert_eq!(d["severity"], "error");
}

#[test]
fn help_has_examples_and_docs_are_generated() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["show", "--help"],
        &["validate", "--help"],
        &["list", "--help"],
    ] {
        let out = pvlaunch(home.path(), args);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Examples:"), "{args:?}");
    }
    let man = pvlaunch(home.path(), &["man"]);
    assert!(text(&man.stdout).starts_with(".ie"), "roff output");
    for shell in ["bash", "zsh", "fish"] {
        let out = pvlaunch(home.path(), &["completions", shell]);
        assert!(
            out.status.success() && text(&out.stdout).contains("pvlaunch"),
            "{shell}"
        );
    }
}

/// Run pvlaunch with stdout and stderr on pipes whose read ends are already closed (the reader
/// of `pvlaunch ... 2>&1 | head -5` went away); return how it ended.
fn pvlaunch_into_closed_pipes(home: &Path, args: &[&str]) -> std::process::ExitStatus {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .args(args)
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    child.wait().unwrap()
}

#[test]
fn a_closed_stdout_or_stderr_does_not_abort() {
    use std::os::unix::process::ExitStatusExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Far more output than a pipe holds (64 KiB), so writes must fail with EPIPE.
    let many: String = (0..3000)
        .map(|i| server(&format!("server-{i}"), &format!("cs://host-{i}:11111")))
        .collect();
    std::fs::write(h.join("big.pvsc"), format!("<Servers>{many}</Servers>")).unwrap();
    let bad: String = (0..1500)
        .map(|i| server(&format!("bad-{i}"), &format!("no-scheme-{i}")))
        .collect();
    std::fs::write(h.join("bad.pvsc"), format!("<Servers>{bad}</Servers>")).unwrap();
    for (args, normal) in [
        (&["-f", "big.pvsc", "list"][..], 0),
        (&["-f", "big.pvsc", "list", "--json"], 0),
        (&["-f", "bad.pvsc", "list"], 3),
        (&["validate", "bad.pvsc", "big.pvsc"], 3),
        (&["validate", "--json", "bad.pvsc"], 3),
        (&["man"], 0),
        (&["completions", "bash"], 0),
    ] {
        let status = pvlaunch_into_closed_pipes(h, args);
        assert_eq!(status.signal(), None, "{args:?}: killed by a signal");
        assert_eq!(status.code(), Some(normal), "{args:?}");
    }
}

/// Run as pid 1 by `children_start_when_pvlaunch_is_pid_1` (this test binary re-executed in a
/// new pid namespace): spawn children through pvlaunch's supervision and exit with failure if
/// one of them does not run. Does nothing in a normal test run.
#[test]
fn helper_spawns_children_as_pid_1() {
    if std::env::var_os("PVLAUNCH_TEST_PID1").is_none() {
        return;
    }
    assert_eq!(std::process::id(), 1, "not pid 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for kind in [
            pvlaunch::process::Kind::Helper,
            pvlaunch::process::Kind::Group,
        ] {
            let argv = vec!["sh".to_string(), "-c".into(), "exit 7".into()];
            let status = pvlaunch::process::command(&argv, kind)
                .status()
                .await
                .unwrap();
            assert_eq!(status.code(), Some(7), "{kind:?}: the child did not run");
        }
    });
    println!("pid 1: children ran");
}

#[test]
fn children_start_when_pvlaunch_is_pid_1() {
    use std::os::unix::fs::MetadataExt;
    let skip = |why: &str| {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot run under CI: {why}"
        );
        eprintln!("SKIPPED children_start_when_pvlaunch_is_pid_1: {why}");
    };
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return skip("needs root (a new pid namespace)");
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(&exe)
        .args([
            "--exact",
            "helper_spawns_children_as_pid_1",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PVLAUNCH_TEST_PID1", "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return skip(&format!("cannot run unshare: {e}")),
    };
    if !out.status.success() && text(&out.stderr).contains("unshare failed") {
        return skip(&format!("unshare failed: {}", text(&out.stderr)));
    }
    assert!(
        out.status.success() && text(&out.stdout).contains("pid 1: children ran"),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `-v` logs every remote command with its exit status and duration, `-vv` its argv too; the
/// log goes to stderr, and with `--json` stdout stays NDJSON.
#[test]
fn verbose_logs_remote_commands_on_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bin = h.join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A fake ssh: the master writes its pid where the control socket would be, `-O exit`
    // stops it, other control requests succeed, remote commands fail.
    std::fs::write(
        bin.join("ssh"),
        r#"#!/bin/sh
case " $* " in
  *" -M "*) echo $$ > "$2"; exec sleep 30 ;;
  *" -O exit "*) kill "$(cat "$2")"; exit 0 ;;
  *" -O "*) exit 0 ;;
  *) echo "fake ssh: no remote commands here" >&2; exit 255 ;;
esac
"#,
    )
    .unwrap();
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // `--client=none`: the client (this listener) already listens.
    let client = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = client.local_addr().unwrap().port().to_string();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |verbose: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
            .args(["-f", "pvsc/cluster-a.pvsc", "--json"])
            .args(verbose)
            .args(["connect", "cluster-a", "--client=none", "--port", &port])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", &path)
            .env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join(".config"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for (verbose, logged, argv) in [
        (&[][..], false, false),
        (&["-v"], true, false),
        (&["-vv"], true, true),
    ] {
        let out = run(verbose);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(4), "{verbose:?}: {stdout}{stderr}");
        for line in stdout.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{verbose:?}: not JSON ({e}): {line}"));
        }
        assert_eq!(
            stderr.contains("`hostname`: exit status: 255 after"),
            logged,
            "{verbose:?}: {stderr}"
        );
        assert_eq!(
            stderr.contains("`ssh -O check`: exit status: 0 after"),
            logged,
            "{verbose:?}: {stderr}"
        );
        assert_eq!(
            stderr.contains(r#"argv=["ssh", "-S""#),
            argv,
            "{verbose:?}: {stderr}"
        );
    }
}

/// A profile whose definition has errors is not "missing": `show` and `connect` say it is
/// invalid (exit 3) and show its positioned errors, also when a later file's broken definition
/// replaces a good one.
#[test]
fn a_profile_with_errors_is_reported_invalid_with_its_errors() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let good = r#"<Server name="good" resource="csrc://localhost:11111"><CommandStartup><Command exec="x"/></CommandStartup>
  <PVLaunch version="1"><Login host="login"/></PVLaunch></Server>"#;
    let typos = r#"<Server name="typos" resource="csrc://localhost:11111"><CommandStartup><Command exec="x"/></CommandStartup>
  <PVLaunch version="1"><Login host="login"/><Job nodse="2"/></PVLaunch></Server>"#;
    std::fs::write(
        h.join("f.pvsc"),
        format!("<Servers>\n{good}\n{typos}\n</Servers>\n"),
    )
    .unwrap();
    let f = h.join("f.pvsc");
    let f = f.to_str().unwrap();
    for args in [
        &["-f", f, "show", "typos"][..],
        &["-f", f, "connect", "typos", "--dry-run", "--client=wait"],
    ] {
        let out = pvlaunch(h, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}: {err}", args[2]);
        assert!(err.contains("profile `typos` is invalid"), "{err}");
        assert!(err.contains("f.pvsc:5:51"), "{err}");
        assert!(err.contains("did you mean `nodes`?"), "{err}");
        assert!(!err.contains("no profile named"), "{err}");
    }
    let ok = pvlaunch(h, &["-f", f, "show", "good"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    // A later, broken definition of `good` replaces the first one.
    std::fs::write(
        h.join("g.pvsc"),
        format!(
            "<Servers>\n{}\n</Servers>\n",
            typos.replace("typos", "good")
        ),
    )
    .unwrap();
    let g = h.join("g.pvsc");
    let out = pvlaunch(h, &["-f", f, "-f", g.to_str().unwrap(), "show", "good"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("g.pvsc:3:51"),
        "{}",
        text(&out.stderr)
    );
}

/// `PV_VERSION*` follow the client pvlaunch will use, and `show` says where they came from:
/// ParaView's environment, else the local client's `--version`, else the built-in default.
#[cfg(unix)]
#[test]
fn show_takes_the_paraview_version_from_paraview_or_the_local_client() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let bin = h.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pvpython = bin.join("pvpython");
    std::fs::write(&pvpython, "#!/bin/sh\necho 'paraview version 5.10.1'\n").unwrap();
    std::fs::set_permissions(&pvpython, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        h.join("v.pvsc"),
        r#"<Servers><Server name="v" resource="csrc://localhost:11111"><CommandStartup><Command exec="x"/></CommandStartup>
<PVLaunch version="1"><Login host="login"/><Job><Setup line="module load paraview/$PV_VERSION$"/></Job></PVLaunch></Server></Servers>"#,
    )
    .unwrap();
    let show = |path: &std::ffi::OsStr, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvlaunch"));
        c.args(["-f", h.join("v.pvsc").to_str().unwrap(), "show", "v"])
            .env_clear()
            .env("PATH", path)
            .env("HOME", h)
            .env("XDG_CONFIG_HOME", h.join(".config"));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    let (o, _) = show(bin.as_os_str(), &[("PV_VERSION_FULL", "5.11.0")]);
    assert!(o.contains("paraview   5.11.0 (from ParaView"), "{o}");
    assert!(o.contains("module load paraview/5.11"), "{o}");

    let (o, _) = show(bin.as_os_str(), &[]);
    assert!(
        o.contains(&format!("paraview   5.10.1 (from `{}", pvpython.display())),
        "{o}"
    );
    assert!(o.contains("module load paraview/5.10"), "{o}");

    let empty = h.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (o, e) = show(empty.as_os_str(), &[]);
    assert!(o.contains("paraview   6.0.1 (built in"), "{o}");
    assert!(
        e.contains("warning: the local ParaView's version is unknown"),
        "{e}"
    );
}
