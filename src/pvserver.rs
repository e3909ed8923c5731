//! pvserver as pure data: the job's command (pvserver's argv, and the reverse-two-hop script
//! around it) and what pvserver's output means (where it listens, why it refused a client, the
//! first error of a failed job, the hop script's markers). Nothing here runs anything; the plan,
//! the recipes, the follow state machine and the session read from here.

use crate::profile::settings::Launch;

/// How pvserver meets the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd<'a> {
    /// Connect back to `client_host:port`.
    Reverse { client_host: &'a str, port: &'a str },
    /// Connect back to `client_host`; whoever runs the argv appends `--server-port`.
    ReverseNoPort { client_host: &'a str },
    /// Listen on `port` (0: pvserver picks a free one and prints it).
    Listen { port: u16 },
}

/// The pvserver argv (launcher first).
pub fn argv(launch: &Launch, end: ServerEnd<'_>, connect_id: Option<u32>) -> Vec<String> {
    let mut argv = launch.launcher.clone();
    argv.push(launch.pvserver.clone());
    match end {
        ServerEnd::Reverse { client_host, port } => {
            argv.push("--reverse-connection".into());
            argv.push(format!("--client-host={client_host}"));
            argv.push(format!("--server-port={port}"));
        }
        ServerEnd::ReverseNoPort { client_host } => {
            argv.push("--reverse-connection".into());
            argv.push(format!("--client-host={client_host}"));
        }
        ServerEnd::Listen { port } => argv.push(format!("--server-port={port}")),
    }
    if let Some(id) = connect_id {
        argv.push(format!("--connect-id={id}"));
    }
    argv.extend(timeout_args(launch.walltime, cfg!(windows)));
    argv.extend(launch.pvserver_args.iter().cloned());
    argv
}

/// What pvserver's `--timeout-command` runs: the whole minutes left until the job's end, which
/// the job script recorded at the job's start ([`crate::scheduler::JOB_END_VAR`]); never below
/// 0, and a failure (the client keeps its own count) when the variable is missing.
///
/// Fast (one `sh`, one `date`) and without the scheduler: ParaView kills it after 0.3 s and,
/// before 6.1, runs it on every MPI rank. Free of `'`, `\` and `"` inside its one quoted
/// argument, so it means the same whether ParaView splits it itself (5.11: a program, then
/// words or `"..."` groups) or hands it to `sh -c` (newer releases): the outer shell then
/// expands the arithmetic, with the same result.
pub const TIMEOUT_COMMAND: &str = "sh -c \"echo $(( ($(date +%s) < ${PVLAUNCH_JOB_END:?}) * (${PVLAUNCH_JOB_END:?} - $(date +%s)) / 60 ))\"";

/// pvserver's walltime countdown for the ParaView client: `--timeout=MINUTES` (the whole wall
/// time, ParaView's first value) and `--timeout-command` ([`TIMEOUT_COMMAND`]), which ParaView
/// runs at connect and every minute after. A Windows client prefixes `cmd.exe /c` to the
/// command, so it gets `--timeout` alone (ParaView then counts down from the connection).
/// Nothing without a wall time: the site's default is not known here.
pub fn timeout_args(
    walltime: Option<crate::scheduler::Walltime>,
    windows_client: bool,
) -> Vec<String> {
    let Some(w) = walltime else {
        return Vec::new();
    };
    let minutes = (w.as_secs() / 60).max(1);
    let mut args = vec![format!("--timeout={minutes}")];
    if !windows_client {
        args.push(format!("--timeout-command={TIMEOUT_COMMAND}"));
    }
    args
}

/// The reverse-two-hop job command: the hop script around a pvserver that connects back to
/// the compute node's own end of the hop.
pub fn hop_command(
    launch: &Launch,
    login_host: &str,
    forward_port: &str,
    connect_id: Option<u32>,
) -> Vec<String> {
    hop_argv(
        login_host,
        forward_port,
        argv(
            launch,
            ServerEnd::ReverseNoPort {
                client_host: "localhost",
            },
            connect_id,
        ),
    )
}

/// The marker the hop script prints before a line that says why the hop failed.
pub const FAILURE_MARKER: &str = "pvlaunch-hop: error:";
/// The marker of the line that says the hop is open.
pub const OPEN_MARKER: &str = "pvlaunch-hop: open:";
/// The exit status of the hop script when the hop cannot be opened.
pub const FAILURE_STATUS: i32 = 97;

/// The part both hop scripts share: the job's own ssh master from the compute node to the
/// login node (`$login`, `$node` set before), in a private folder `$dir` removed on exit, and
/// the wait until it answers (at most 60 s, or until ssh exits).
macro_rules! hop_login {
    () => {
        r#"dir=$(mktemp -d "${TMPDIR:-/tmp}/pvlaunch-hop.XXXXXX") || exit 97
ssh -M -N -S "$dir/cm" -o BatchMode=yes -o ControlPersist=no -o ExitOnForwardFailure=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o ConnectTimeout=30 -- "$login" 2> "$dir/err" < /dev/null &
pid=$!
trap 'ssh -S "$dir/cm" -O exit -- "$login" > /dev/null 2>&1; kill "$pid" 2> /dev/null; rm -rf "$dir"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
n=0
until ssh -S "$dir/cm" -O check -- "$login" > /dev/null 2>&1; do
  if ! kill -0 "$pid" 2> /dev/null || [ "$n" -ge 600 ]; then
    echo "pvlaunch-hop: error: $node cannot ssh to $login: $(tr '\n' ' ' < "$dir/err")" >&2
    exit 97
  fi
  n=$((n + 1))
  sleep 0.1
done
"#
    };
}

/// The hop: `$1` login node, `$2` the forward's port on its loopback, then pvserver's argv
/// (without `--server-port`, which the script appends).
pub const HOP: &str = concat!(
    r#"login=$1 fwd=$2
shift 2
node=$(uname -n)
"#,
    hop_login!(),
    r#"n=0
while :; do
  port=$(( $(od -An -N2 -tu2 /dev/urandom) % 30000 + 20000 ))
  ssh -S "$dir/cm" -O forward -L "127.0.0.1:$port:localhost:$fwd" -- "$login" > /dev/null 2> "$dir/err" && break
  n=$((n + 1))
  if [ "$n" -ge 20 ]; then
    echo "pvlaunch-hop: error: $login refused a forward from $node: $(tr '\n' ' ' < "$dir/err")" >&2
    exit 97
  fi
done
echo "pvlaunch-hop: open: $node:$port -> $login:localhost:$fwd"
"$@" "--server-port=$port""#
);

/// The job's command: the hop script around pvserver's argv. `forward_port` is text so that
/// the dry run can show a placeholder.
pub fn hop_argv(login_host: &str, forward_port: &str, pvserver: Vec<String>) -> Vec<String> {
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        HOP.into(),
        "sh".into(),
        login_host.into(),
        forward_port.into(),
    ];
    argv.extend(pvserver);
    argv
}

/// Why the hop failed, from the job's output (the hop script's error line).
pub fn hop_failure(output: &[String]) -> Option<String> {
    output.iter().rev().find_map(|l| {
        l.split_once(FAILURE_MARKER)
            .map(|(_, why)| why.trim().to_string())
    })
}

/// The hop the job opened (`node1:40123 -> login:localhost:38211`), from its output.
pub fn hop_opened(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .find_map(|l| l.split_once(OPEN_MARKER).map(|(_, s)| s.trim().to_string()))
}

/// Where the node agent (`pvlaunch node`, beside pvserver on the compute node) meets the rest
/// of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeLink<'a> {
    /// Connect to this endpoint (`HOST:PORT` or `unix:PATH`) and prove the session's key.
    To(&'a str),
    /// Listen on this port (0: any) for a connection that proves the key (two-hop).
    Listen(u16),
}

/// The markers of the node agent's lines in the job's output.
pub const NODE_LISTENING: &str = "pvlaunch-node: listening:";
pub const NODE_OPEN: &str = "pvlaunch-node: open:";
pub const NODE_ERROR: &str = "pvlaunch-node: error:";
/// The node agent's exit status when it cannot reach or authenticate the session.
pub const NODE_FAILURE_STATUS: i32 = 97;

/// The job's command with owned hops: the node agent, then pvserver reverse-connecting to it on
/// `localhost` (the agent appends `--server-port`). Only paths are in the argv: the key is in
/// the 0600 file `key_file`.
pub fn node_argv(
    agent: &str,
    key_file: &str,
    link: NodeLink<'_>,
    launch: &Launch,
    connect_id: Option<u32>,
) -> Vec<String> {
    let mut a = vec![
        agent.to_string(),
        "node".into(),
        "--key-file".into(),
        key_file.into(),
    ];
    match link {
        NodeLink::To(endpoint) => {
            a.push("--to".into());
            a.push(endpoint.into());
        }
        NodeLink::Listen(port) => {
            a.push("--listen".into());
            a.push(port.to_string());
        }
    }
    a.push("--".into());
    a.extend(argv(
        launch,
        ServerEnd::ReverseNoPort {
            client_host: "localhost",
        },
        connect_id,
    ));
    a
}

/// The owned reverse two-hop: `$1` login node, `$2` the forward's Unix socket on it, `$3` the
/// node agent, `$4` the key file, then pvserver's argv. The job's own ssh connection forwards a
/// Unix socket in a private folder on the compute node to the login node's socket (no TCP port
/// on either host), and the node agent connects through it.
pub const HOP_OWNED: &str = concat!(
    r#"login=$1 sock=$2 agent=$3 key=$4
shift 4
node=$(uname -n)
umask 077
"#,
    hop_login!(),
    r#"if ! ssh -S "$dir/cm" -O forward -L "$dir/hop.sock:$sock" -- "$login" > /dev/null 2> "$dir/err"; then
  echo "pvlaunch-hop: error: $login refused a forward from $node: $(tr '\n' ' ' < "$dir/err")" >&2
  exit 97
fi
echo "pvlaunch-hop: open: $node:$dir/hop.sock -> $login:$sock"
"$agent" node --key-file "$key" --to "unix:$dir/hop.sock" -- "$@""#
);

/// The owned reverse-two-hop job command.
pub fn hop_owned_argv(
    login_host: &str,
    login_socket: &str,
    agent: &str,
    key_file: &str,
    launch: &Launch,
    connect_id: Option<u32>,
) -> Vec<String> {
    let mut a = vec![
        "sh".to_string(),
        "-c".into(),
        HOP_OWNED.into(),
        "sh".into(),
        login_host.into(),
        login_socket.into(),
        agent.into(),
        key_file.into(),
    ];
    a.extend(argv(
        launch,
        ServerEnd::ReverseNoPort {
            client_host: "localhost",
        },
        connect_id,
    ));
    a
}

/// Where the node agent listens (two-hop): its `listening` line, printed once pvserver has
/// connected to it, so the line also means the session can be joined.
pub fn node_listening(output: &str) -> Option<(String, u16)> {
    output.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once(NODE_LISTENING)?;
        let (host, port) = rest.trim().rsplit_once(':')?;
        let port: u16 = port.trim().parse().ok().filter(|&p| p != 0)?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| (host.to_string(), port))
    })
}

/// Why the node agent failed, from the job's output.
pub fn node_failure(output: &[String]) -> Option<String> {
    output.iter().rev().find_map(|l| {
        l.split_once(NODE_ERROR)
            .map(|(_, why)| why.trim().to_string())
    })
}

/// Where pvserver accepts connections, from its output: the last
/// `Accepting connection(s): HOST:PORT` line (with the real port when it was asked for 0).
pub fn accepting(output: &str) -> Option<(String, u16)> {
    output.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once("Accepting connection(s):")?;
        let rest = strip_ansi(rest);
        let (host, port) = rest.trim().rsplit_once(':')?;
        let port: u16 = port.trim().parse().ok().filter(|&p| p != 0)?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| (host.to_string(), port))
    })
}

/// Text without ANSI colour sequences (ParaView colours its log lines on some builds).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Why pvserver refused a client in the handshake, as its log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ConnectId,
    Version,
    RenderingBackend,
    Dropped,
}

impl Refusal {
    /// The session's message.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::ConnectId => {
                "the ParaView handshake failed: client and pvserver have different connect-ids"
            }
            Refusal::Version => {
                "the ParaView handshake failed: client and pvserver are different ParaView versions"
            }
            Refusal::RenderingBackend => {
                "the ParaView handshake failed: client and pvserver use different rendering backends"
            }
            Refusal::Dropped => {
                "the ParaView handshake failed: the connection dropped during the handshake"
            }
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Refusal::ConnectId => {
                "the client must use the session's connect-id (PVLAUNCH_CONNECT_ID, or --connect-id=N for paraview and pvpython); <Connection connect-id=\"none\"/> turns it off"
            }
            Refusal::Version | Refusal::RenderingBackend => {
                "use a client of the same ParaView major.minor version and build as pvserver on the cluster (<PVServer exec> or the <Setup> lines choose it)"
            }
            Refusal::Dropped => "see the job's output on the login node",
        }
    }
}

/// The handshake failure pvserver logged last, if any.
pub fn handshake_refusal(output: &str) -> Option<Refusal> {
    output.lines().rev().find_map(|l| {
        if l.contains("different connection id") || l.contains("connection ids do not match") {
            Some(Refusal::ConnectId)
        } else if l.contains("different ParaView version")
            || l.contains("likely a different version of ParaView")
            || l.contains("likely different versions of ParaView")
            || l.contains("GetVersion()")
            || l.contains("returns different values on the two connecting processes")
        {
            Some(Refusal::Version)
        } else if l.contains("different rendering backend") {
            Some(Refusal::RenderingBackend)
        } else if l.contains("dropped during the handshake") {
            Some(Refusal::Dropped)
        } else {
            None
        }
    })
}

/// The first line of a job's output that reports an error (pvserver's refusal of an argument,
/// a missing program or module, a line of ParaView's log at level ERR), trimmed of colour.
pub fn first_error(output: &str) -> Option<String> {
    const MARKS: [&str; 6] = [
        "ERR|",
        "was not expected",
        "command not found",
        "No such file or directory",
        "error:",
        "Error:",
    ];
    output
        .lines()
        .find(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(|l| {
            let l = l.replace("\u{1b}[0m", "").replace("\u{1b}[31m", "");
            let l = l.trim();
            // ParaView's log prefix: `(   0.3s) [pvserver.0 ]file:line   ERR| message`
            l.rsplit_once("ERR| ")
                .map_or(l, |(_, m)| m)
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ParaView 5.11's split of a timeout command (`vtkExecutableRunner`): a program, then
    /// words or `"..."` groups.
    fn paraview_split(command: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = command.trim_start();
        while !rest.is_empty() {
            if let Some(quoted) = rest.strip_prefix('"') {
                let end = quoted.find('"').expect("a closing quote");
                out.push(quoted[..end].to_string());
                rest = quoted[end + 1..].trim_start();
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
        }
        out
    }

    fn minutes_from(argv: &[String], end: i64) -> std::process::Output {
        std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env(crate::scheduler::JOB_END_VAR, end.to_string())
            .output()
            .unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn the_timeout_command_prints_the_minutes_left_however_paraview_runs_it() {
        let split = paraview_split(TIMEOUT_COMMAND);
        assert_eq!(split.len(), 3, "{split:?}");
        assert_eq!(&split[..2], ["sh", "-c"]);
        // Newer releases run the whole string with `sh -c`.
        let shell = vec!["sh".to_string(), "-c".into(), TIMEOUT_COMMAND.to_string()];
        for argv in [&split, &shell] {
            let out = minutes_from(argv, now() + 150);
            assert!(out.status.success(), "{out:?}");
            // A bare integer: 5.11 reads it with atoi.
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{argv:?}");
            let out = minutes_from(argv, now() - 500);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "0",
                "never negative"
            );
            // No end recorded: a failure, so that the client keeps its own count.
            let out = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env_remove(crate::scheduler::JOB_END_VAR)
                .output()
                .unwrap();
            assert!(!out.status.success());
        }
    }

    #[test]
    fn pvserver_gets_the_countdown_only_with_a_wall_time() {
        let mut launch = Launch::for_tests();
        let end = ServerEnd::Listen { port: 0 };
        assert!(
            !argv(&launch, end, None)
                .iter()
                .any(|a| a.starts_with("--timeout"))
        );
        launch.walltime = Some(crate::scheduler::Walltime::from_secs(7200));
        let a = argv(&launch, end, None);
        assert!(a.contains(&"--timeout=120".to_string()), "{a:?}");
        assert_eq!(
            timeout_args(launch.walltime, false)[1],
            format!("--timeout-command={TIMEOUT_COMMAND}")
        );
        // Windows clients wrap the command in cmd.exe: the count alone for them.
        assert_eq!(timeout_args(launch.walltime, true), ["--timeout=120"]);
        // At least one minute.
        assert_eq!(
            timeout_args(Some(crate::scheduler::Walltime::from_secs(30)), true),
            ["--timeout=1"]
        );
    }

    #[test]
    fn reads_the_port_pvserver_picked() {
        let out = "Waiting for client...\nConnection URL: cs://node1:0\nAccepting connection(s): node1:43345\n";
        assert_eq!(accepting(out), Some(("node1".into(), 43345)));
    }

    #[test]
    fn reads_the_last_line_of_several_and_ignores_colours_and_prefixes() {
        let out = "Accepting connection(s): node1:1000\n\
                   (  0.2s) [pvserver.0 ] Accepting connection(s): node2.cluster:2000\u{1b}[0m\n\
                   Client connected.\n";
        assert_eq!(accepting(out), Some(("node2.cluster".into(), 2000)));
        assert_eq!(
            accepting("Accepting connection(s): [fe80::1]:11111"),
            Some(("fe80::1".into(), 11111))
        );
    }

    #[test]
    fn nothing_until_pvserver_listens() {
        assert_eq!(accepting(""), None);
        assert_eq!(
            accepting("Waiting for client...\nConnection URL: cs://node1:0\n"),
            None
        );
        assert_eq!(accepting("Accepting connection(s): node1:0"), None);
        assert_eq!(accepting("Accepting connection(s): node1:"), None);
        assert_eq!(accepting("Accepting connection(s): :11111"), None);
        assert_eq!(accepting("Accepting connection(s): node1:99999"), None);
    }

    #[test]
    fn the_job_command_keeps_every_value_an_argument() {
        let argv = hop_argv(
            "login;rm -rf ~",
            "4711",
            vec!["mpiexec".into(), "pvserver".into(), "--x=$(id)".into()],
        );
        assert_eq!(argv[..2], ["sh", "-c"]);
        assert_eq!(argv[2], HOP);
        assert_eq!(
            argv[3..],
            [
                "sh",
                "login;rm -rf ~",
                "4711",
                "mpiexec",
                "pvserver",
                "--x=$(id)"
            ]
        );
        let line = crate::quote::join(&argv).unwrap();
        assert!(line.contains("'login;rm -rf ~'"), "{line}");
        assert!(line.contains("'--x=$(id)'"), "{line}");
    }

    #[test]
    fn the_hop_script_is_posix_sh() {
        // `sh -n` parses without running.
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", HOP])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(HOP.ends_with(r#""$@" "--server-port=$port""#));
        assert!(!HOP.contains("ssh -f"), "the inner ssh stays in the job");
    }

    #[test]
    fn the_owned_job_commands_carry_paths_never_the_key() {
        let launch = crate::profile::settings::Launch::for_tests();
        let a = node_argv(
            "/home/u/.cache/pvlaunch/bin/pvlaunch-x",
            "/home/u/.cache/pvlaunch/keys/t.key",
            NodeLink::To("login:4711"),
            &launch,
            Some(5),
        );
        assert_eq!(
            a[..7],
            [
                "/home/u/.cache/pvlaunch/bin/pvlaunch-x",
                "node",
                "--key-file",
                "/home/u/.cache/pvlaunch/keys/t.key",
                "--to",
                "login:4711",
                "--"
            ]
        );
        assert!(a.contains(&"--reverse-connection".to_string()));
        assert!(a.contains(&"--client-host=localhost".to_string()));
        assert!(a.contains(&"--connect-id=5".to_string()));
        assert!(!a.iter().any(|w| w.starts_with("--server-port")));
        let l = node_argv("a", "k", NodeLink::Listen(0), &launch, None);
        assert_eq!(l[4..7], ["--listen", "0", "--"]);
        let h = hop_owned_argv("login", "/tmp/pvlaunch.x/fwd.sock", "a", "k", &launch, None);
        assert_eq!(h[2], HOP_OWNED);
        assert_eq!(h[4..8], ["login", "/tmp/pvlaunch.x/fwd.sock", "a", "k"]);
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", HOP_OWNED])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn the_node_agent_lines() {
        assert_eq!(
            node_listening("x\npvlaunch-node: listening: node1:40111\n"),
            Some(("node1".into(), 40111))
        );
        assert_eq!(node_listening("pvlaunch-node: listening: node1:0"), None);
        assert_eq!(
            node_failure(&["pvlaunch-node: error: cannot reach login:1: refused".into()]).unwrap(),
            "cannot reach login:1: refused"
        );
        assert_eq!(
            node_failure(&["pvlaunch-hop: error: node1 cannot ssh".into()]),
            None
        );
    }

    #[test]
    fn the_first_error_of_a_job() {
        let out = "The following argument was not expected: --no-such-option\nUsage: pvserver [OPTIONS]\n\n[General Guidelines]\nerror: later\n";
        assert_eq!(
            first_error(out).unwrap(),
            "The following argument was not expected: --no-such-option"
        );
        let log = "\u{1b}[0m\u{1b}[31m(   0.315s) [pvserver.0      ]vtkSocketCommunicator.c:786    ERR| vtkSocketCommunicator (0x55): Could not receive tag. 1\u{1b}[0m\n";
        assert_eq!(
            first_error(log).unwrap(),
            "vtkSocketCommunicator (0x55): Could not receive tag. 1"
        );
        assert_eq!(
            first_error(
                "loading\n/var/spool/slurmd/job1/slurm_script: line 9: module: command not found\n"
            )
            .unwrap(),
            "/var/spool/slurmd/job1/slurm_script: line 9: module: command not found"
        );
        assert_eq!(first_error("Waiting for client...\nExiting...\n"), None);
    }

    #[test]
    fn handshake_refusals_from_pvserver_5_11() {
        let id = "(   6.355s) [pvserver.0 ]vtkTCPNetworkAccessMana:572    ERR| vtkTCPNetworkAccessManager (0x56): Client and server connection ids do not match\n\
                  (   6.355s) [pvserver.0 ]vtkTCPNetworkAccessMana:343   WARN| vtkTCPNetworkAccessManager (0x56): \n Connection failed during handshake. The server has a different \n connection id than the client.\n";
        assert_eq!(handshake_refusal(id), Some(Refusal::ConnectId));
        let version = " Connection failed during handshake.  The server has a different ParaView version than the client.\n";
        assert_eq!(handshake_refusal(version), Some(Refusal::Version));
        let version = "ERR| vtkTCPNetworkAccessManager (0x1): Client and server are different ParaView versions. Client reports version: 5.10 but server is version 5.11\n";
        assert_eq!(handshake_refusal(version), Some(Refusal::Version));
        let unparsed = "ERR| Client Handshake didn't parse.  The client is likely a different version of ParaView.\n";
        assert_eq!(handshake_refusal(unparsed), Some(Refusal::Version));
        let comm = "Connection failed during handshake. vtkSocketCommunicator::GetVersion()\n returns different values on the two connecting processes\n";
        assert_eq!(handshake_refusal(comm), Some(Refusal::Version));
        assert_eq!(
            handshake_refusal(" The server has a different rendering backend from the client."),
            Some(Refusal::RenderingBackend)
        );
        assert_eq!(
            handshake_refusal("Accepting connection(s): node1:1\nClient connected.\n"),
            None
        );
        assert!(Refusal::ConnectId.hint().contains("connect-id"));
    }
}
