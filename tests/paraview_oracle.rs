//! The real ParaView client as the oracle for pvlaunch's command lines.
//!
//! For every server with a command in the `.pvsc` corpus (`../shared/pvsc-corpus/`), in the
//! project's own `pvsc/` folder (when there is one) and in the probe files `tests/paraview-oracle/*.pvsc`,
//! this test runs `paraview --servers-file=F --server=NAME` under a private Xvfb display, with a
//! recording program (`tests/paraview-oracle/record-argv.sh`) first on PATH under the name of the
//! program the command starts. It accepts the "Connection Options" dialog with xdotool, waits for
//! the record, kills ParaView, and compares the argv ParaView started with the one
//! `pvlaunch -f F show NAME --json` prints in the same environment.
//!
//! Options whose default is `random` differ by nature: ParaView's value is read from the
//! command's environment (ParaView exports every option), checked to be a number in
//! `[min, max]`, and where pvlaunch printed its own random value ParaView's is accepted instead.
//! Every variable pvlaunch shows is compared with the command's environment too. For a
//! `cs://localhost:PORT` server the test listens on PORT and compares the delay before ParaView
//! connects with pvlaunch's. `paraview-user-servers.xml` is ParaView's own `servers.pvsc` in every
//! case. Where pvlaunch deliberately does not follow 5.11 (`DELIBERATE_DIFFERENCES`), the listed
//! difference must be the one seen. `PVLAUNCH_ORACLE_ONLY=a|b` runs only the servers whose name
//! contains `a` or `b`.
//!
//! Needs `paraview`, `Xvfb` and `xdotool` (Debian: `paraview xvfb xdotool`) and the corpus beside
//! the project. Without them the test says loudly that it was skipped; with `CI=true` it fails.
//! `docs/paraview-compat.md` explains the method and the known 5.11 / 6.x differences.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pvlaunch::profile::model::{OptionItem, OptionKind, RangeType, Startup};
use serde_json::Value;

/// How long one server may take from starting ParaView to the record (about 2 s is usual).
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// Press Return again if the options dialog is still there after this long.
const DIALOG_RETRY: Duration = Duration::from_millis(1500);
/// How long to wait for a `cs://localhost` probe's connection after its command started.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// How far the measured delay may be from pvlaunch's (the machine is shared and slow).
const DELAY_TOLERANCE: f64 = 1.2;
/// The programs a command may start whose names do not come from the command itself: ParaView
/// looks `ssh` and a terminal up on PATH for `<SSHCommand>` and prefixes `setsid` for
/// `<Askpass/>`. Recorders stand in for all of them, so nothing real ever runs.
const ALWAYS_RECORDED: &[&str] = &["ssh", "x-terminal-emulator", "setsid"];

// ---------------------------------------------------------------------------------------------
// What is known to differ, and why. Each entry is printed on every run.

/// Servers whose command ParaView 5.11 and ParaView 6.x build differently (from ParaView's
/// source; pvlaunch may follow either). `to_6x` turns the argv 5.11 ran into the one 6.x would
/// run; pvlaunch must print one of the two.
struct KnownVersionDifference {
    server: &'static str,
    reason: &'static str,
    to_6x: fn(&[String]) -> Vec<String>,
}

const VERSION_DIFFERENCES: &[KnownVersionDifference] = &[
    KnownVersionDifference {
        server: "probe: ssh reverse with every knob",
        reason: "5.11 ignores <SSHConfig port> and writes `-R LOCAL:localhost:PORT`; 6.x adds \
                 `-p PORT` and writes `-R PORT:localhost:LOCAL` for reverse servers",
        to_6x: |argv| {
            let mut out = swap_forward_ports(argv, "-R");
            if let Some(i) = out.iter().position(|a| a == "my-ssh") {
                out.splice(i + 1..i + 1, ["-p".to_string(), "2222".to_string()]);
            }
            out
        },
    },
    KnownVersionDifference {
        server: "probe: ssh forwarding port as an option",
        reason: "6.x takes the forwarded local port from an option named PV_SSH_PF_SERVER_PORT \
                 (`-R 11115:localhost:22333`); 5.11 only exports it to the environment",
        to_6x: |argv| {
            argv.iter()
                .map(|a| {
                    if a == "11115:localhost:11115" {
                        "11115:localhost:22333".to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect()
        },
    },
];

/// What a deliberate difference is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deliberate {
    /// pvlaunch runs another argv: `to_paraview` turns pvlaunch's argv into ParaView's.
    Argv,
    /// The server is also in ParaView's own `servers.pvsc`: pvlaunch uses the `-f` definition,
    /// ParaView the one `show` names in `paraview_definition` (compared with that one).
    Definition,
}

/// Where pvlaunch deliberately does not follow ParaView 5.11, because following it would be a
/// bug; `show` warns about each. Listed entries must still differ.
struct KnownDeliberateDifference {
    server: &'static str,
    kind: Deliberate,
    reason: &'static str,
    to_paraview: fn(&[String]) -> Vec<String>,
}

/// UTF-8 text read back as Latin-1 and encoded again (what 5.11 does to `<Argument>` text).
fn double_encoded(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

fn double_encode_word(argv: &[String], word: &str) -> Vec<String> {
    argv.iter()
        .map(|a| a.replace(word, &double_encoded(word)))
        .collect()
}

const DELIBERATE_DIFFERENCES: &[KnownDeliberateDifference] = &[
    KnownDeliberateDifference {
        server: "probe: also in the user file",
        kind: Deliberate::Definition,
        reason: "the name is in the -f file and in ParaView's own servers.pvsc: pvlaunch uses \
                 the -f one, `show` names the one ParaView uses",
        to_paraview: |argv| argv.to_vec(),
    },
    KnownDeliberateDifference {
        server: "probe: non-ASCII text",
        kind: Deliberate::Argv,
        reason: "5.11 reads non-ASCII <Argument> text as Latin-1 and encodes it again (café \
                 becomes cafÃ©); pvlaunch keeps the text and `show` warns",
        to_paraview: |argv| double_encode_word(argv, "café"),
    },
    KnownDeliberateDifference {
        server: "probe: latin-1 file",
        kind: Deliberate::Argv,
        reason: "5.11 reads every file as UTF-8 whatever it declares, so each Latin-1 byte \
                 becomes U+FFFD, which expat then reads as Latin-1 again (and <Argument> text \
                 once more); pvlaunch decodes the file as declared and `show` warns",
        to_paraview: |argv| {
            let lost = double_encoded("\u{FFFD}");
            argv.iter()
                .map(|a| {
                    a.replace("café", &format!("caf{}", double_encoded(&lost)))
                        .replace("Köln", &format!("K{lost}ln"))
                })
                .collect()
        },
    },
];

fn deliberate_difference(server: &str) -> Option<&'static KnownDeliberateDifference> {
    DELIBERATE_DIFFERENCES.iter().find(|k| k.server == server)
}

/// Variables (exported to the command's environment) where pvlaunch is known to disagree with
/// ParaView. `server` `None` means every server. Listed entries must still disagree: when one
/// agrees, the test fails and asks for the entry to be removed.
struct KnownVariableDifference {
    server: Option<&'static str>,
    variable: &'static str,
    reason: &'static str,
}

const VARIABLE_DIFFERENCES: &[KnownVariableDifference] = &[KnownVariableDifference {
    server: Some("probe: latin-1 file"),
    variable: "CITY",
    reason: "a <Set> value of a Latin-1 file: 5.11 reads the file as UTF-8 (each Latin-1 byte \
             becomes U+FFFD, read as Latin-1 again by expat); pvlaunch decodes it as declared \
             (a deliberate difference, `show` warns)",
}];

fn version_difference(server: &str) -> Option<&'static KnownVersionDifference> {
    VERSION_DIFFERENCES.iter().find(|k| k.server == server)
}

fn variable_difference(server: &str, variable: &str) -> Option<&'static KnownVariableDifference> {
    VARIABLE_DIFFERENCES
        .iter()
        .find(|k| k.variable == variable && k.server.is_none_or(|s| s == server))
}

/// `-R A:localhost:B` becomes `-R B:localhost:A` (the flag given).
fn swap_forward_ports(argv: &[String], flag: &str) -> Vec<String> {
    let mut out = argv.to_vec();
    for i in 1..out.len() {
        if out[i - 1] == flag {
            let parts: Vec<&str> = out[i].split(':').collect();
            if let [a, host, b] = parts[..] {
                out[i] = format!("{b}:{host}:{a}");
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gates: the corpus and the programs.

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip(msg: &str) {
    if ci() {
        panic!("{msg}; CI=true makes this a failure");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
}

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/pvsc-corpus");
    if dir.is_dir() {
        return Some(dir);
    }
    skip(&format!(
        "the .pvsc corpus is not at {} (it sits beside the project in CI)",
        dir.display()
    ));
    None
}

struct Tools {
    paraview: PathBuf,
    xvfb: PathBuf,
    xdotool: PathBuf,
}

fn tools() -> Option<Tools> {
    let find = |name: &str| which::which(name).ok();
    match (find("paraview"), find("Xvfb"), find("xdotool")) {
        (Some(paraview), Some(xvfb), Some(xdotool)) => Some(Tools {
            paraview,
            xvfb,
            xdotool,
        }),
        (p, x, d) => {
            let missing: Vec<&str> = [("paraview", p), ("Xvfb", x), ("xdotool", d)]
                .into_iter()
                .filter(|(_, found)| found.is_none())
                .map(|(name, _)| name)
                .collect();
            skip(&format!(
                "the ParaView oracle needs {} on PATH (Debian packages: paraview xvfb xdotool)",
                missing.join(", ")
            ));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: each one started in its own process group, killed with the group on drop.

struct Group {
    child: Child,
}

impl Group {
    fn spawn(cmd: &mut Command) -> std::io::Result<Group> {
        cmd.process_group(0).spawn().map(|child| Group { child })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// A private X server on a free display (`-displayfd` lets Xvfb pick it).
struct Xvfb {
    _group: Group,
    display: String,
}

impl Xvfb {
    fn start(program: &Path) -> Xvfb {
        let mut group = Group::spawn(
            Command::new(program)
                .args(["-displayfd", "1", "-screen", "0", "1280x1024x24"])
                .args(["-nolisten", "tcp", "-noreset"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .expect("Xvfb starts");
        let stdout = group.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("Xvfb reports its display within 20 s");
        let number = line.trim();
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "Xvfb did not report a display number (got {line:?})"
        );
        Xvfb {
            _group: group,
            display: format!(":{number}"),
        }
    }
}

/// Run to completion with a deadline; the output, or `None` on a timeout.
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut group = Group::spawn(
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap()),
    )
    .ok()?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = group.exited() {
            break status;
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Some(std::process::Output {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// One server.

struct Case {
    file: PathBuf,
    name: String,
    /// The `resource` attribute as written (empty when not found).
    resource: String,
}

enum Outcome {
    Agree,
    /// A known 5.11 / 6.x difference: pvlaunch printed the 5.11 or the 6.x command.
    KnownVersion {
        follows_6x: bool,
        reason: &'static str,
    },
    /// A listed deliberate difference (pvlaunch does the right thing, `show` warns).
    Deliberate(&'static str),
    Skipped(String),
    Differ(String),
}

/// What one server gave.
struct CaseResult {
    outcome: Outcome,
    notes: Vec<String>,
    /// Listed variable differences seen: the entry, ParaView's value, pvlaunch's.
    known_variables: Vec<(&'static KnownVariableDifference, String, String)>,
}

impl CaseResult {
    fn new() -> CaseResult {
        CaseResult {
            outcome: Outcome::Agree,
            notes: Vec::new(),
            known_variables: Vec::new(),
        }
    }

    fn with(mut self, outcome: Outcome) -> CaseResult {
        self.outcome = outcome;
        self
    }
}

struct Report {
    case: Case,
    result: CaseResult,
    seconds: f64,
}

/// The environment both ParaView and pvlaunch get: nothing from the caller but PATH.
struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new(display: &str, version: Option<&str>) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "home", "tmp", "run"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let p = |sub: &str| dir.path().join(sub).display().to_string();
        let mut path = p("bin");
        if let Ok(inherited) = std::env::var("PATH") {
            path = format!("{path}:{inherited}");
        }
        let mut env = vec![
            ("PATH".to_string(), path),
            ("HOME".to_string(), p("home")),
            ("TMPDIR".to_string(), p("tmp")),
            ("XDG_RUNTIME_DIR".to_string(), p("run")),
            ("DISPLAY".to_string(), display.to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            // Open MPI (ParaView initialises it) would otherwise start an `orted` daemon in a
            // session of its own, out of reach of the process-group kill.
            (
                "OMPI_MCA_ess_singleton_isolated".to_string(),
                "1".to_string(),
            ),
        ];
        if let Some(v) = version {
            env.push(("PVLAUNCH_PARAVIEW_VERSION".to_string(), v.to_string()));
            // No "Welcome to ParaView" dialog: in a fresh home it opens at the first start and,
            // being modal, holds the launcher (it would connect only once it is closed).
            let settings = dir.path().join("home/.config/ParaView");
            fs::create_dir_all(&settings).unwrap();
            fs::write(
                settings.join(format!("ParaView{v}.ini")),
                "[General]\nGeneralSettings.ShowWelcomeDialog=false\n",
            )
            .unwrap();
        }
        Sandbox { dir, env }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
        cmd
    }

    fn install_recorder(&self, name: &str) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/paraview-oracle/record-argv.sh");
        let target = self.path("bin").join(name);
        fs::copy(&script, &target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// ParaView's own user file, `~/.config/ParaView/servers.pvsc`, from
    /// `tests/paraview-oracle/paraview-user-servers.xml`: pvlaunch reads it too.
    fn install_user_file(&self) {
        let dir = self.path("home").join(".config/ParaView");
        fs::create_dir_all(&dir).unwrap();
        fs::copy(
            probe_dir().join("paraview-user-servers.xml"),
            dir.join("servers.pvsc"),
        )
        .unwrap();
    }

    fn search_path(&self) -> &str {
        &self.env.iter().find(|(k, _)| k == "PATH").unwrap().1
    }
}

fn paraview_version(tools: &Tools, display: &str) -> String {
    let sandbox = Sandbox::new(display, None);
    let out = run_with_deadline(
        sandbox.command(&tools.paraview).arg("--version"),
        Duration::from_secs(60),
    )
    .expect("`paraview --version` finishes within 60 s");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("paraview version "))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no version in `paraview --version`: {text}"))
}

fn pvlaunch_show(sandbox: &Sandbox, file: &Path, name: &str) -> Result<Value, String> {
    let out = run_with_deadline(
        sandbox
            .command(Path::new(env!("CARGO_BIN_EXE_pvlaunch")))
            .arg("-f")
            .arg(file)
            .args(["show", name, "--json"]),
        Duration::from_secs(30),
    )
    .ok_or("`pvlaunch show` did not finish within 30 s")?;
    if !out.status.success() {
        return Err(format!(
            "`pvlaunch show` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("`pvlaunch show --json`: {e}"))
}

fn json_argv(show: &Value) -> Result<Vec<String>, String> {
    serde_json::from_value(show["command"]["argv"].clone())
        .map_err(|_| "pvlaunch printed no command argv".to_string())
}

fn run_case(tools: &Tools, display: &str, version: &str, case: &Case) -> CaseResult {
    let mut result = CaseResult::new();
    if case.name.contains(',') {
        return result.with(Outcome::Skipped(
            "ParaView's --server splits its value at commas, so this name cannot be chosen".into(),
        ));
    }
    let sandbox = Sandbox::new(display, Some(version));
    for name in ALWAYS_RECORDED {
        sandbox.install_recorder(name);
    }
    sandbox.install_user_file();
    // A `cs://localhost:PORT` probe: ParaView connects there after the delay; listen and time it.
    let listener = case
        .resource
        .strip_prefix("cs://localhost:")
        .and_then(|p| p.parse::<u16>().ok())
        .and_then(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok());

    // When pvlaunch refuses the server, ParaView's answer is still recorded and reported.
    let refused = |result: CaseResult, why: String, file: &Path| -> CaseResult {
        let theirs = match run_paraview(tools, &sandbox, file, &case.name, listener.as_ref()) {
            Ok(r) => format!(
                "ParaView started {:?}{}",
                r.argv,
                r.delay
                    .map(|d| format!(", connected after {d:.1} s"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("ParaView: {e}"),
        };
        result.with(Outcome::Differ(format!("{why}\n  {theirs}")))
    };

    // Which program does the command start? Put a recorder in its place.
    let mut file = case.file.clone();
    let first = match pvlaunch_show(&sandbox, &file, &case.name).and_then(|s| json_argv(&s)) {
        Ok(argv) => argv,
        Err(e) => return refused(result, e, &file),
    };
    let Some(program) = first.first().cloned() else {
        return result.with(Outcome::Differ("pvlaunch printed an empty argv".into()));
    };
    let bin = sandbox.path("bin");
    if !program.contains('/') {
        sandbox.install_recorder(&program);
    } else if !Path::new(&program).starts_with(&bin) {
        // An absolute path cannot be shadowed through PATH: run a copy of the file in which
        // that path names a recorder instead.
        let text = fs::read_to_string(&file).unwrap();
        let base = program.rsplit('/').next().unwrap_or("program").to_string();
        if base.is_empty() || !text.contains(program.as_str()) {
            return result.with(Outcome::Skipped(format!(
                "the command starts `{program}`, an absolute path that is not written out in the \
                 file, so no recorder can take its place"
            )));
        }
        sandbox.install_recorder(&base);
        let stand_in = bin.join(&base).display().to_string();
        let copy = sandbox.path("servers.pvsc");
        fs::write(&copy, text.replace(program.as_str(), &stand_in)).unwrap();
        result.notes.push(format!(
            "`{program}` is an absolute path: compared on a copy of the file where it reads \
             `<tmp>/bin/{base}`"
        ));
        file = copy;
    }

    // pvlaunch's answer, in exactly the environment ParaView gets.
    let show = match pvlaunch_show(&sandbox, &file, &case.name) {
        Ok(s) => s,
        Err(e) => return refused(result, e, &file),
    };
    let mut pvlaunch_argv = match json_argv(&show) {
        Ok(a) => a,
        Err(e) => return refused(result, e, &file),
    };
    // pvlaunch lets `-f` win over ParaView's own file; `show` says which one ParaView uses.
    let deliberate = deliberate_difference(&case.name);
    if show["paraview_definition"]["same"] == false {
        let other = show["paraview_definition"]["file"]
            .as_str()
            .unwrap_or_default();
        match pvlaunch_show(&sandbox, Path::new(other), &case.name).and_then(|s| json_argv(&s)) {
            Ok(a) => {
                result.notes.push(format!(
                    "pvlaunch shows the -f definition; ParaView's own file has another, which \
                     `show` names: compared with that one ({other})"
                ));
                pvlaunch_argv = a;
            }
            Err(e) => return result.with(Outcome::Differ(e)),
        }
        if deliberate.is_none_or(|d| d.kind != Deliberate::Definition) {
            return result.with(Outcome::Differ(
                "`show` says ParaView uses another definition, and DELIBERATE_DIFFERENCES does \
                 not list this server"
                    .into(),
            ));
        }
    } else if deliberate.is_some_and(|d| d.kind == Deliberate::Definition) {
        return result.with(Outcome::Differ(
            "listed as a deliberate definition difference, but `show` says ParaView uses the \
             same definition"
                .into(),
        ));
    }

    // ParaView's answer.
    let recorded = match run_paraview(tools, &sandbox, &file, &case.name, listener.as_ref()) {
        Ok(r) => r,
        Err(e) => return result.with(Outcome::Differ(e)),
    };
    let (argv, env, dialogs) = (recorded.argv, recorded.env, recorded.presses);
    if dialogs > 0 {
        result.notes.push(format!(
            "accepted the options dialog ({dialogs} key press{})",
            if dialogs == 1 { "" } else { "es" }
        ));
    }
    let mut problems = Vec::new();

    // The delay, where it could be measured.
    if listener.is_some() {
        let ours = show["command"]["delay"].as_f64().unwrap_or(f64::NAN);
        match recorded.delay {
            Some(theirs) => {
                result.notes.push(format!(
                    "delay: ParaView connected {theirs:.1} s after starting the command; pvlaunch \
                     says {ours} s"
                ));
                if (theirs - ours).abs() > DELAY_TOLERANCE {
                    problems.push(format!(
                        "delay: ParaView waited {theirs:.1} s, pvlaunch says {ours} s"
                    ));
                }
            }
            None => problems.push(format!(
                "delay: ParaView did not connect within {} s of starting the command",
                CONNECT_DEADLINE.as_secs()
            )),
        }
    }

    // Random options: ParaView's draw, from the environment, must lie in [min, max].
    let mut pairs = Vec::new();
    let ranges = random_ranges(&file, &case.name);
    for opt in show["options"].as_array().into_iter().flatten() {
        if opt["origin"] != "random" {
            continue;
        }
        let name = opt["name"].as_str().unwrap_or_default();
        let ours = opt["value"].as_str().unwrap_or_default().to_string();
        let Some(theirs) = env.get(name).cloned() else {
            problems.push(format!(
                "random option {name}: not in ParaView's command environment"
            ));
            continue;
        };
        match ranges.get(name) {
            Some(&(number, min, max)) => {
                for (who, v) in [("ParaView", &theirs), ("pvlaunch", &ours)] {
                    if !in_range(v, number, min, max) {
                        problems.push(format!(
                            "random option {name}: {who}'s value `{v}` is not a number in \
                             [{min}, {max}]"
                        ));
                    }
                }
            }
            None => problems.push(format!("random option {name}: not a range in the file")),
        }
        result.notes.push(format!(
            "random {name}: ParaView drew {theirs}, pvlaunch {ours}"
        ));
        // A sign is a run of its own (not a number character): pair the digits.
        pairs.push((
            ours.trim_start_matches('-').to_string(),
            theirs.trim_start_matches('-').to_string(),
        ));
    }

    // Every variable pvlaunch shows is in the command's environment with the same value.
    let mut listed_but_equal = Vec::new();
    for (name, var) in show["variables"].as_object().into_iter().flatten() {
        if var["origin"] == "random" {
            continue;
        }
        let ours = var["value"].as_str().unwrap_or_default();
        let theirs = env.get(name).map(String::as_str);
        let known = variable_difference(&case.name, name);
        match (theirs, known) {
            (Some(t), None) if t == ours => {}
            (Some(t), Some(_)) if t == ours => listed_but_equal.push(name.clone()),
            (t, Some(k)) => result.known_variables.push((
                k,
                t.map_or("(none)".to_string(), |t| format!("`{t}`")),
                format!("`{ours}`"),
            )),
            (None, None) => problems.push(format!(
                "variable {name}: pvlaunch `{ours}`, not in ParaView's command environment"
            )),
            (Some(t), None) => problems.push(format!(
                "variable {name}: ParaView `{t}`, pvlaunch `{ours}`"
            )),
        }
    }
    for name in listed_but_equal {
        problems.push(format!(
            "variable {name} is listed as a known difference but now agrees: remove the entry"
        ));
    }

    // The argv.
    let resolve = |p: &str| -> String {
        if p.contains('/') {
            return p.to_string();
        }
        which::which_in(p, Some(sandbox.search_path()), sandbox.dir.path())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| p.to_string())
    };
    let mut expected = pvlaunch_argv.clone();
    if let Some(first) = expected.first_mut() {
        *first = resolve(first);
    }
    let exact = argv_matches(&argv, &expected, &pairs);
    let outcome = match (deliberate, version_difference(&case.name), exact) {
        (Some(d), ..) => Some(match (d.kind, exact) {
            (Deliberate::Definition, true) => Outcome::Deliberate(d.reason),
            (Deliberate::Argv, true) => Outcome::Differ(
                "listed as a deliberate difference but ParaView now runs what pvlaunch prints: \
                 remove the entry"
                    .into(),
            ),
            (Deliberate::Argv, false) => {
                let theirs = (d.to_paraview)(&expected);
                if argv_matches(&argv, &theirs, &pairs) {
                    Outcome::Deliberate(d.reason)
                } else {
                    Outcome::Differ(format!(
                        "{}\n  (nor with the deliberate difference applied: {theirs:?})",
                        argv_report(&argv, &expected)
                    ))
                }
            }
            (Deliberate::Definition, false) => Outcome::Differ(argv_report(&argv, &expected)),
        }),
        (None, k, exact) => version_outcome(k, exact, &argv, &expected, &pairs),
    };
    let outcome = match (outcome, problems.is_empty()) {
        (Some(Outcome::Differ(msg)), _) => Outcome::Differ(
            [msg]
                .into_iter()
                .chain(problems)
                .collect::<Vec<_>>()
                .join("\n  "),
        ),
        (_, false) => Outcome::Differ(problems.join("\n  ")),
        (Some(o), true) => o,
        (None, true) => Outcome::Agree,
    };
    result.with(outcome)
}

fn version_outcome(
    known: Option<&'static KnownVersionDifference>,
    exact: bool,
    argv: &[String],
    expected: &[String],
    pairs: &[(String, String)],
) -> Option<Outcome> {
    match (known, exact) {
        (None, true) => None,
        (None, false) => Some(Outcome::Differ(argv_report(argv, expected))),
        (Some(k), true) => Some(Outcome::KnownVersion {
            follows_6x: false,
            reason: k.reason,
        }),
        (Some(k), false) => {
            let six = (k.to_6x)(argv);
            if argv_matches(&six, expected, pairs) {
                Some(Outcome::KnownVersion {
                    follows_6x: true,
                    reason: k.reason,
                })
            } else {
                Some(Outcome::Differ(format!(
                    "{}\n  (nor does it match what ParaView 6.x would run: {six:?})",
                    argv_report(argv, expected)
                )))
            }
        }
    }
}

/// What ParaView did for one server.
struct Recorded {
    /// The argv and environment it started the command with.
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    /// How many times the options dialog was answered.
    presses: usize,
    /// Seconds from the command's start to ParaView's connection, where that was measured.
    delay: Option<f64>,
}

fn run_paraview(
    tools: &Tools,
    sandbox: &Sandbox,
    file: &Path,
    name: &str,
    listener: Option<&std::net::TcpListener>,
) -> Result<Recorded, String> {
    let log_path = sandbox.path("paraview.log");
    let log = fs::File::create(&log_path).unwrap();
    let mut paraview = Group::spawn(
        sandbox
            .command(&tools.paraview)
            .arg(format!("--servers-file={}", file.display()))
            .arg(format!("--server={name}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .map_err(|e| format!("cannot start paraview: {e}"))?;
    let record = sandbox.path("record.argv");
    let start = Instant::now();
    let mut last_press: Option<Instant> = None;
    let mut presses = 0;
    let log_tail = || {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n    ")
    };
    while !record.exists() {
        if let Some(status) = paraview.exited() {
            if record.exists() {
                break;
            }
            return Err(format!(
                "ParaView exited ({status}) without starting the command; its log ends:\n    {}",
                log_tail()
            ));
        }
        if start.elapsed() > CASE_DEADLINE {
            return Err(format!(
                "ParaView started no recorded program within {} s ({presses} key presses on the \
                 options dialog); its log ends:\n    {}",
                CASE_DEADLINE.as_secs(),
                log_tail()
            ));
        }
        if last_press.is_none_or(|t| t.elapsed() > DIALOG_RETRY)
            && let Some(window) = find_options_dialog(tools, sandbox)
        {
            // Keys sent to a window (XSendEvent) are ignored by Qt: focus it, then type.
            xdotool(tools, sandbox, &["windowfocus", &window]);
            xdotool(tools, sandbox, &["key", "Return"]);
            last_press = Some(Instant::now());
            presses += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let delay = listener.and_then(|l| {
        l.set_nonblocking(true).ok()?;
        while started.elapsed() < CONNECT_DEADLINE {
            if l.accept().is_ok() {
                return Some(started.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    drop(paraview);
    let split = |bytes: Vec<u8>| -> Vec<String> {
        let mut items: Vec<String> = bytes
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        items.pop(); // after the last NUL
        items
    };
    let argv = split(fs::read(&record).unwrap());
    let env = split(fs::read(sandbox.path("record.env")).unwrap_or_default())
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    Ok(Recorded {
        argv,
        env,
        presses,
        delay,
    })
}

fn xdotool(tools: &Tools, sandbox: &Sandbox, args: &[&str]) -> Option<String> {
    let out = run_with_deadline(
        sandbox.command(&tools.xdotool).args(args),
        Duration::from_secs(10),
    )?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_options_dialog(tools: &Tools, sandbox: &Sandbox) -> Option<String> {
    xdotool(
        tools,
        sandbox,
        &[
            "search",
            "--onlyvisible",
            "--name",
            "^Connection Options for ",
        ],
    )?
    .lines()
    .next()
    .map(|l| l.trim().to_string())
    .filter(|w| !w.is_empty())
}

/// `[min, max]` of every Range option of the server, read with pvlaunch's parser.
fn random_ranges(file: &Path, name: &str) -> BTreeMap<String, (RangeType, f64, f64)> {
    let report = pvlaunch::profile::read_file(file).unwrap();
    let mut out = BTreeMap::new();
    for server in report.servers.iter().filter(|s| s.name == name) {
        for item in server.option_items() {
            if let OptionItem::Option(def) = item
                && let OptionKind::Range {
                    number, min, max, ..
                } = def.kind
            {
                out.insert(def.name.clone(), (number, min, max));
            }
        }
    }
    out
}

fn in_range(value: &str, number: RangeType, min: f64, max: f64) -> bool {
    let v = match number {
        RangeType::Int => value.parse::<i64>().ok().map(|v| v as f64),
        RangeType::Double => value.parse::<f64>().ok(),
    };
    v.is_some_and(|v| min <= v && v <= max)
}

/// Equal, except that a number pvlaunch drew at random may stand where ParaView has its own draw.
fn argv_matches(paraview: &[String], pvlaunch: &[String], random: &[(String, String)]) -> bool {
    paraview.len() == pvlaunch.len()
        && paraview
            .iter()
            .zip(pvlaunch)
            .all(|(p, l)| token_matches(p, l, random))
}

fn token_matches(paraview: &str, pvlaunch: &str, random: &[(String, String)]) -> bool {
    if paraview == pvlaunch {
        return true;
    }
    let (a, b) = (number_runs(paraview), number_runs(pvlaunch));
    a.len() == b.len()
        && a.iter().zip(&b).all(|((pn, p), (ln, l))| {
            p == l || (*pn && *ln && random.iter().any(|(ours, theirs)| ours == l && theirs == p))
        })
}

/// The text cut into runs of number characters (digits and dots) and runs of anything else.
fn number_runs(s: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut kind = None;
    for (i, c) in s.char_indices() {
        let numeric = c.is_ascii_digit() || c == '.';
        if kind.is_some_and(|k| k != numeric) {
            out.push((kind.unwrap(), &s[start..i]));
            start = i;
        }
        kind = Some(numeric);
    }
    if let Some(k) = kind {
        out.push((k, &s[start..]));
    }
    out
}

fn argv_report(paraview: &[String], pvlaunch: &[String]) -> String {
    let list = |argv: &[String]| {
        argv.iter()
            .enumerate()
            .map(|(i, a)| format!("    [{i}] {a:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = paraview
        .iter()
        .zip(pvlaunch)
        .position(|(a, b)| a != b)
        .unwrap_or(paraview.len().min(pvlaunch.len()));
    format!(
        "argv differs (first at [{first}]; {} vs {} items)\n  ParaView started:\n{}\n  pvlaunch prints:\n{}",
        paraview.len(),
        pvlaunch.len(),
        list(paraview),
        list(pvlaunch)
    )
}

// ---------------------------------------------------------------------------------------------

fn pvsc_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pvsc"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `(name, resource)` of every `<Server name="..." resource="...">` tag written with double
/// quotes: the probe files' servers, also where pvlaunch cannot read them (then ParaView's
/// answer is still recorded).
fn server_tags(text: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, key: &str| -> Option<String> {
        let at = tag.find(&format!(" {key}=\""))? + key.len() + 3;
        tag[at..].split('"').next().map(str::to_string)
    };
    text.match_indices("<Server ")
        .filter_map(|(i, _)| {
            let tag = &text[i..i + text[i..].find('>').unwrap_or(text.len() - i)];
            Some((
                attr(tag, "name")?,
                attr(tag, "resource").unwrap_or_default(),
            ))
        })
        .collect()
}

/// The probe files: every `*.pvsc` in `tests/paraview-oracle/`.
fn probe_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/paraview-oracle")
}

/// `PVLAUNCH_ORACLE_ONLY=a|b` runs only the servers whose name contains `a` or `b`.
fn selected(name: &str) -> bool {
    match std::env::var("PVLAUNCH_ORACLE_ONLY") {
        Ok(only) if !only.is_empty() => only.split('|').any(|part| name.contains(part)),
        _ => true,
    }
}

fn cases(corpus: &Path) -> Vec<Case> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = pvsc_files(corpus);
    files.extend(pvsc_files(&root.join("pvsc")));
    let probes = pvsc_files(&probe_dir());
    files.extend(probes.iter().cloned());
    let mut out: Vec<Case> = Vec::new();
    for file in files {
        let report = pvlaunch::profile::read_file(&file).unwrap();
        let text = String::from_utf8_lossy(&fs::read(&file).unwrap()).into_owned();
        let tags = server_tags(&text);
        let resource_of = |name: &str| {
            tags.iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| r.clone())
                .unwrap_or_default()
        };
        let mut names: Vec<String> = Vec::new();
        for server in &report.servers {
            if matches!(server.startup, Startup::Command(_)) && server.command().is_some() {
                names.push(server.name.clone());
            }
        }
        if probes.contains(&file) {
            // Servers pvlaunch refuses are still run in ParaView, to record its answer.
            for (name, _) in &tags {
                let manual = report
                    .servers
                    .iter()
                    .any(|s| &s.name == name && s.command().is_none());
                if !manual && !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        for name in names {
            if out.iter().any(|c| c.file == file && c.name == name) {
                continue;
            }
            out.push(Case {
                file: file.clone(),
                resource: resource_of(&name),
                name,
            });
        }
    }
    out
}

#[test]
fn paraview_starts_the_command_pvlaunch_prints() {
    let Some(corpus) = corpus_dir() else { return };
    let Some(tools) = tools() else { return };
    let started = Instant::now();
    let xvfb = Xvfb::start(&tools.xvfb);
    let version = paraview_version(&tools, &xvfb.display);
    let cases = cases(&corpus);
    assert!(
        cases.len() >= 11,
        "expected the corpus' command servers and the probes, found {}",
        cases.len()
    );
    let cases: Vec<Case> = cases.into_iter().filter(|c| selected(&c.name)).collect();

    let mut reports = Vec::new();
    for case in cases {
        let t = Instant::now();
        let result = run_case(&tools, &xvfb.display, &version, &case);
        reports.push(Report {
            case,
            result,
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    drop(xvfb);

    let mut summary = format!(
        "ParaView {version} as the oracle: {} servers in {:.0} s\n",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for r in &reports {
        let file = r.case.file.file_name().unwrap().to_string_lossy();
        let (word, detail) = match &r.result.outcome {
            Outcome::Agree => ("agree", String::new()),
            Outcome::KnownVersion { follows_6x, reason } => (
                "KNOWN 5.11/6.x DIFFERENCE",
                format!(
                    "pvlaunch prints the {} command; {reason}",
                    if *follows_6x { "6.x" } else { "5.11" }
                ),
            ),
            Outcome::Deliberate(reason) => ("DELIBERATE DIFFERENCE", reason.to_string()),
            Outcome::Skipped(why) => ("SKIPPED", why.clone()),
            Outcome::Differ(msg) => {
                failures.push(format!("{} ({file}):\n  {msg}", r.case.name));
                ("DIFFER", String::new())
            }
        };
        summary.push_str(&format!(
            "  {word:<26} {:<45} {:>5.1} s  {file}\n",
            r.case.name, r.seconds
        ));
        if !detail.is_empty() {
            summary.push_str(&format!("      {detail}\n"));
        }
        for n in &r.result.notes {
            summary.push_str(&format!("      {n}\n"));
        }
    }
    for k in VARIABLE_DIFFERENCES {
        let seen: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.result
                    .known_variables
                    .iter()
                    .filter(|(e, ..)| std::ptr::eq(*e, k))
                    .map(|(_, theirs, ours)| {
                        format!("{}: ParaView {theirs}, pvlaunch {ours}", r.case.name)
                    })
            })
            .collect();
        if seen.is_empty() {
            continue;
        }
        summary.push_str(&format!(
            "  KNOWN VARIABLE DIFFERENCE {} ({} server(s)): {}\n",
            k.variable,
            seen.len(),
            k.reason
        ));
        for line in seen.iter().take(3) {
            summary.push_str(&format!("      {line}\n"));
        }
        if seen.len() > 3 {
            summary.push_str(&format!("      ... and {} more\n", seen.len() - 3));
        }
    }
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{summary}\n{} server(s) where pvlaunch and ParaView {version} disagree:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The comparison itself, without ParaView.

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_random_draw_may_differ_only_where_pvlaunch_drew_one() {
    let drawn = [("4679".to_string(), "46730".to_string())];
    assert!(token_matches(
        "46730:localhost:46730",
        "4679:localhost:4679",
        &drawn
    ));
    assert!(token_matches("--port=46730", "--port=4679", &drawn));
    // Another number, or the draw in a place pvlaunch did not put it, is a difference.
    assert!(!token_matches(
        "46731:localhost:46730",
        "4679:localhost:4679",
        &drawn
    ));
    assert!(!token_matches("46730", "11111", &drawn));
    assert!(!token_matches("46730", "4679", &[]));
    assert!(!token_matches("x46730", "y4679", &drawn));
    assert!(token_matches("5.11.0", "5.11.0", &[]));
    assert!(argv_matches(
        &strings(&["ssh", "-R", "46730:localhost:46730"]),
        &strings(&["ssh", "-R", "4679:localhost:4679"]),
        &drawn
    ));
    assert!(!argv_matches(
        &strings(&["ssh", "-R"]),
        &strings(&["ssh", "-R", "x"]),
        &drawn
    ));
}

#[test]
fn number_runs_split_digits_and_dots_from_the_rest() {
    assert_eq!(
        number_runs("a1.5:b22"),
        vec![(false, "a"), (true, "1.5"), (false, ":b"), (true, "22")]
    );
    assert_eq!(number_runs(""), vec![]);
}

#[test]
fn forward_ports_swap_after_their_flag() {
    assert_eq!(
        swap_forward_ports(
            &strings(&["ssh", "-R", "1:localhost:2", "-L", "3:localhost:4"]),
            "-R"
        ),
        strings(&["ssh", "-R", "2:localhost:1", "-L", "3:localhost:4"])
    );
}

#[test]
fn every_listed_difference_names_a_probe_or_corpus_server() {
    let probes: String = pvsc_files(&probe_dir())
        .iter()
        .map(|f| String::from_utf8_lossy(&fs::read(f).unwrap()).into_owned())
        .collect();
    let names = VERSION_DIFFERENCES
        .iter()
        .map(|k| k.server)
        .chain(DELIBERATE_DIFFERENCES.iter().map(|k| k.server))
        .chain(VARIABLE_DIFFERENCES.iter().filter_map(|k| k.server));
    for name in names {
        assert!(
            probes.contains(&format!("name=\"{name}\"")),
            "`{name}` is not a server in the probe files"
        );
    }
}
