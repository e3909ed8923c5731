//! `connect` before a session starts, without root or a cluster: every early end says why, with
//! the exit code of its kind, and under `--json` ends with the same `error` and `done` events as
//! a session does.

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
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Every stdout line is one JSON object; returns them.
fn ndjson(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON: {l:?}: {e}")))
        .collect()
}

fn profile(home: &Path, body: &str) -> String {
    let path = home.join("p.pvsc");
    std::fs::write(&path, format!("<Servers>{body}</Servers>")).unwrap();
    path.display().to_string()
}

const CLUSTER: &str = r#"<Server name="c" resource="csrc://"><CommandStartup><Command exec="pvlaunch"/></CommandStartup>
  <PVLaunch><Login host="login.invalid"/><Job scheduler="slurm"/></PVLaunch></Server>"#;

#[test]
fn an_unknown_profile_ends_with_done_under_json() {
    let home = tempfile::tempdir().unwrap();
    let f = profile(home.path(), CLUSTER);
    let out = pvlaunch(home.path(), &["-f", &f, "--json", "connect", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let events = ndjson(&out);
    let last = events.last().expect("a done event");
    assert_eq!(last["event"], "done");
    assert_eq!(last["exit_code"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn a_script_with_another_client_is_a_usage_error_not_ignored() {
    let home = tempfile::tempdir().unwrap();
    let f = profile(home.path(), CLUSTER);
    let script = home.path().join("s.py");
    std::fs::write(&script, "print(1)\n").unwrap();
    let s = script.to_str().unwrap();
    for client in ["wait", "paraview", "none"] {
        let out = pvlaunch(
            home.path(),
            &[
                "-f", &f, "--json", "connect", "c", "--client", client, "--script", s,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "--client {client}");
        let events = ndjson(&out);
        assert_eq!(events[0]["event"], "error");
        assert!(
            events[0]["message"].as_str().unwrap().contains("--script"),
            "{events:?}"
        );
        assert_eq!(events.last().unwrap()["event"], "done");
    }
    // Arguments for a script without the script.
    let out = pvlaunch(
        home.path(),
        &["-f", &f, "connect", "c", "--client", "wait", "--", "x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --script"));
}

#[test]
fn a_script_alone_means_pvpython() {
    let home = tempfile::tempdir().unwrap();
    let f = profile(home.path(), CLUSTER);
    let script = home.path().join("s.py");
    std::fs::write(&script, "print(1)\n").unwrap();
    // An empty PATH: pvpython cannot be found, which proves it was the client asked for.
    let out = Command::new(env!("CARGO_BIN_EXE_pvlaunch"))
        .args(["-f", &f, "--json", "connect", "c", "--script"])
        .arg(&script)
        .env_clear()
        .env("PATH", home.path())
        .env("HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    let events = ndjson(&out);
    assert!(
        events[0]["message"].as_str().unwrap().contains("pvpython"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["exit_code"], 8);
}
