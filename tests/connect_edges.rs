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

/// The plan of `profile` with `--set`s, as `connect --dry-run --json` prints it.
fn dry_plan(home: &Path, body: &str, sets: &[String]) -> (Option<i32>, serde_json::Value, String) {
    let f = profile(home, body);
    let mut args = vec![
        "-f",
        &f,
        "--json",
        "connect",
        "c",
        "--client",
        "wait",
        "--dry-run",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = pvlaunch(home, &args);
    let plan = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        plan,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HOSTILE: &str = r#"x'"$(touch${IFS}pwned1)`touch${IFS}pwned2`;*|&>pwned3 \"#;

/// The rule of docs/profile-format.md ("Values in commands"): a value is one literal word
/// wherever its `$NAME$` lands: unquoted, inside double quotes or inside single quotes of a
/// `<Setup>` line, in the launcher, in an `<Arg>`; a `<Directive>` refuses a value with blanks.
#[test]
fn option_values_are_one_literal_word_in_setup_lines_and_the_launcher() {
    let home = tempfile::tempdir().unwrap();
    let body = r#"<Server name="c" resource="csrc://"><CommandStartup><Options>
  <Option name="V" label="v"><String default="plain"/></Option></Options></CommandStartup>
  <PVLaunch><Login host="login"/><Job scheduler="slurm">
    <Setup line="printf '[%s]\n' $V$ &quot;in double $V$&quot; 'in single $V$' pre$V$post"/>
  </Job>
  <PVServer exec="pvserver" launcher="mpiexec -n $PVLAUNCH_RANKS$ --tag $V$"/></PVLaunch></Server>"#;
    let (code, plan, err) = dry_plan(home.path(), body, &[format!("V={HOSTILE}")]);
    assert_eq!(code, Some(0), "{err}");
    let script = plan["job_script"].as_str().unwrap();
    let setup = script
        .lines()
        .find(|l| l.starts_with("printf"))
        .unwrap_or_else(|| panic!("no setup line in\n{script}"));
    // Run the line as the job would, in an empty folder.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", setup])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{setup}: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("[{HOSTILE}]\n[in double {HOSTILE}]\n[in single {HOSTILE}]\n[pre{HOSTILE}post]\n"),
        "{setup}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the value ran as code: {setup}"
    );
    // The launcher keeps the value one argument.
    let argv: Vec<String> = serde_json::from_value(plan["job"]["command"].clone()).unwrap();
    let i = argv.iter().position(|a| a == "--tag").unwrap();
    assert_eq!(argv[i + 1], HOSTILE, "{argv:?}");
}

#[test]
fn a_directive_value_with_blanks_is_refused_and_a_raw_setup_line_is_pasted() {
    let home = tempfile::tempdir().unwrap();
    let body = r#"<Server name="c" resource="csrc://"><CommandStartup><Options>
  <Option name="GRES" label="g"><String default="gpu:1"/></Option></Options></CommandStartup>
  <PVLaunch><Login host="login"/><Job scheduler="slurm">
    <Directive value="--gres=$GRES$"/>
    <Setup line="$GRES$ ok" raw="true"/>
  </Job></PVLaunch></Server>"#;
    let (code, plan, err) = dry_plan(home.path(), body, &["GRES=echo".to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let script = plan["job_script"].as_str().unwrap();
    assert!(script.contains("#SBATCH --gres=echo\n"), "{script}");
    assert!(
        script.contains("\necho ok\n"),
        "raw lines are pasted: {script}"
    );
    let (code, _, err) = dry_plan(
        home.path(),
        body,
        &["GRES=x --job-name=INJECTED".to_string()],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("$GRES$"), "{err}");
    assert!(err.contains("one word"), "{err}");
}
