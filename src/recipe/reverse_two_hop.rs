//! The reverse two-hop recipe, for sites that allow neither `GatewayPorts` nor a relay: the
//! remote forward stays on the login node's loopback, and the job itself opens the second hop
//! from the compute node back to the login node (`ssh -L PORT:localhost:FORWARD login`, with
//! the shared home's keys). pvserver reverse-connects to `localhost:PORT` on its own node.
//!
//! The job's command is `sh -c HOP sh LOGIN FORWARD PVSERVER-ARGV...`: [`HOP`] is fixed text,
//! every value is a positional argument (never parsed as shell code). The inner ssh is a
//! ControlMaster in the job's process tree (not daemonised): the scheduler's signals reach it,
//! and the script's exit closes it (`-O exit`). The local port is picked on the compute node
//! by asking the inner master for forwards on random ports until one binds
//! (`-L 0:` cannot be used: ssh refuses a local forward on port 0).

use super::{Ctx, Reach};
use crate::outcome::Failure;

/// The marker the hop script prints before a line that says why the hop failed.
pub const FAILURE_MARKER: &str = "pvlaunch-hop: error:";
/// The marker of the line that says the hop is open.
pub const OPEN_MARKER: &str = "pvlaunch-hop: open:";
/// The exit status of the hop script when the hop cannot be opened.
pub const FAILURE_STATUS: i32 = 97;

/// The hop: `$1` login node, `$2` the forward's port on its loopback, then pvserver's argv
/// (without `--server-port`, which the script appends).
pub const HOP: &str = r#"login=$1 fwd=$2
shift 2
node=$(uname -n)
dir=$(mktemp -d "${TMPDIR:-/tmp}/pvlaunch-hop.XXXXXX") || exit 97
ssh -M -N -S "$dir/cm" -o BatchMode=yes -o ControlPersist=no -o ExitOnForwardFailure=yes -o ServerAliveInterval=15 -o ConnectTimeout=30 -- "$login" 2> "$dir/err" < /dev/null &
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
n=0
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
"$@" "--server-port=$port""#;

/// The login node's forward stays on its loopback; the job opens the hop to it.
pub async fn prepare(ctx: &mut Ctx<'_>) -> Result<Reach, Failure> {
    let port = super::reverse::open_loopback(ctx).await?;
    Ok(Reach::Hop {
        login_host: ctx.login_host.to_string(),
        port,
    })
}

/// The job's command: the hop script around pvserver's argv. `forward_port` is text so that
/// the dry run can show a placeholder.
pub fn job_command(login_host: &str, forward_port: &str, pvserver: Vec<String>) -> Vec<String> {
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

/// The failure when the compute node could not open the hop.
pub fn failed(why: &str, login_host: &str) -> Failure {
    let hint = if why.contains("cannot ssh") {
        format!(
            "the job's compute node must reach {login_host} with ssh without a prompt: a key in the cluster's shared home (~/.ssh/id_*, listed in ~/.ssh/authorized_keys) and {login_host}'s host key in ~/.ssh/known_hosts; or use the relay recipe"
        )
    } else {
        format!(
            "{login_host}'s sshd must allow local forwards (AllowTcpForwarding yes or local); or use the relay recipe"
        )
    };
    Failure::site(
        format!("the job could not open its ssh hop back to the login node: {why}"),
        hint,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_command_keeps_every_value_an_argument() {
        let argv = job_command(
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
    fn failures_and_the_open_hop_are_read_from_the_output() {
        let tail = vec![
            "loading".to_string(),
            "pvlaunch-hop: error: node1 cannot ssh to login: Permission denied (publickey). "
                .to_string(),
        ];
        assert_eq!(
            hop_failure(&tail).unwrap(),
            "node1 cannot ssh to login: Permission denied (publickey)."
        );
        assert_eq!(hop_failure(&["fine".to_string()]), None);
        let out = "x\npvlaunch-hop: open: node1:40123 -> login:localhost:38211\nWaiting\n";
        assert_eq!(
            hop_opened(out).unwrap(),
            "node1:40123 -> login:localhost:38211"
        );
        let o = failed("node1 cannot ssh to login: Permission denied", "login");
        assert_eq!(o.code(), crate::exit::Code::Site);
        assert!(o.hint().unwrap().contains("known_hosts"));
    }
}
