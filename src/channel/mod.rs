//! One ssh session channel for everything, for sites without ssh connection sharing
//! (`MaxSessions 1`, Windows' OpenSSH without ControlMaster): pvlaunch on both ends of one
//! byte stream, the ssh session's stdio.
//!
//! - [`proto`]: the wire format, sans I/O (hello, frames, limits).
//! - [`server`]: `pvlaunch channel serve` on the login node (hidden).
//! - [`client`]: [`Channel`], the session's end, and `pvlaunch channel exec` (hidden), which
//!   runs one command through a session's channel the way `ssh -S cm host WIRE` does.
//!
//! ```no_run
//! # async fn example(mut ssh: tokio::process::Child, dir: &std::path::Path) -> Result<(), pvlaunch::channel::ChannelError> {
//! use std::time::Duration;
//! use pvlaunch::channel::{self, Channel};
//!
//! // `ssh login BOOTSTRAP` with piped stdin and stdout (see `bootstrap_script`).
//! let ch = Channel::start(ssh.stdout.take().unwrap(), ssh.stdin.take().unwrap()).await?;
//! let out = ch.exec("squeue -h -j 42", None, Duration::from_secs(60)).await?;
//! let port = ch.forward_remote_tcp(None, 0, 11111).await?;
//! let socket = ch.serve_clients(dir)?;
//! let argv = channel::exec_argv("/path/to/pvlaunch", &socket, "exec /bin/sh -c 'cat'");
//! # let _ = (out, port, argv);
//! ch.close().await;
//! # Ok(()) }
//! ```

#![deny(unsafe_code)] // only `sys` may use it

pub mod client;
mod link;
pub mod proto;
pub mod server;
#[allow(unsafe_code)]
mod sys;

pub use client::{Channel, ChannelError, EXIT_GONE, ExecRequest, Forward, exec_argv, exec_main};
pub use server::{CHILD_LINGER, ServeRequest};

/// Standard stream `fd` (0, 1 or 2) as an async file: a duplicate of the descriptor, read
/// and written on tokio's blocking threads (it may be a pipe, a socket, a terminal or a file).
pub(crate) fn std_file(fd: i32) -> std::io::Result<tokio::fs::File> {
    use std::os::fd::AsFd;
    let owned = match fd {
        0 => std::io::stdin().as_fd().try_clone_to_owned()?,
        1 => std::io::stdout().as_fd().try_clone_to_owned()?,
        _ => std::io::stderr().as_fd().try_clone_to_owned()?,
    };
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// What [`bootstrap_script`] prints on stdout when the login node has no pvlaunch of the
/// version asked, followed by that version.
pub const MISSING_MARKER: &str = "pvlaunch:channel:missing:";

/// A POSIX sh script for `ssh login 'exec /bin/sh -c SCRIPT'` (wrap it with
/// [`crate::ssh::RemoteCommand`]) that execs `pvlaunch channel serve` of `version`: a copy
/// in `~/.cache/pvlaunch/bin` named `pvlaunch-VERSION-*` (a regular file of this user's, not
/// writable by others, in a folder of this user's not writable by others), else the
/// `pvlaunch` on PATH if its `--version` is `pvlaunch VERSION`. Otherwise it prints
/// [`MISSING_MARKER`]`VERSION` on stdout and exits 3: the session then uploads a copy (as
/// `remote::RemoteHome::place_binary` does) and starts again.
pub fn bootstrap_script(version: &str) -> String {
    // Versions are `1.2.3`, `1.2.3-rc.1+build`: anything else is left out of the script.
    let v: String = version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .collect();
    format!(
        r#"v='{v}'
d=${{HOME%/}}/{dir}/bin
ok() {{
  [ -f "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] && [ -x "$1" ] || return 1
  w=$(find "$1" -prune \( -perm -020 -o -perm -002 \) -print 2> /dev/null) && [ -z "$w" ]
}}
if [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] \
  && w=$(find "$d" -prune \( -perm -020 -o -perm -002 \) -print 2> /dev/null) && [ -z "$w" ]; then
  for p in "$d"/pvlaunch-"$v"-*; do
    if ok "$p"; then exec "$p" channel serve; fi
  done
fi
p=$(command -v pvlaunch 2> /dev/null)
case $p in /*)
  if [ "$("$p" --version < /dev/null 2> /dev/null | sed -n 1p)" = "pvlaunch $v" ]; then
    exec "$p" channel serve
  fi ;;
esac
printf '{MISSING_MARKER}%s\n' "$v"
exit 3"#,
        dir = crate::remote::CACHE_DIR,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_outlasts_the_guards_deadline() {
        assert!(CHILD_LINGER > crate::job::GUARD_DEADLINE + server::KILL_GRACE);
    }

    fn run_bootstrap(home: &std::path::Path, path: &str) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(bootstrap_script("9.8.7"))
            .env("HOME", home)
            .env("PATH", path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    #[test]
    fn the_bootstrap_finds_a_safe_copy_of_the_version_or_says_it_is_missing() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join(".cache/pvlaunch/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sys_path = std::env::var("PATH").unwrap_or_default();
        let out = run_bootstrap(home.path(), &sys_path);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{MISSING_MARKER}9.8.7\n")
        );
        // Another version's copy is not used; this version's is, with `channel serve`.
        let write = |name: &str, mode: u32| {
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\necho \"ran $0 $*\"\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        write("pvlaunch-1.0.0-abcd", 0o700);
        assert_eq!(run_bootstrap(home.path(), &sys_path).status.code(), Some(3));
        let writable = write("pvlaunch-9.8.7-0000", 0o722);
        assert_eq!(
            run_bootstrap(home.path(), &sys_path).status.code(),
            Some(3),
            "a copy others may write is not run"
        );
        std::fs::remove_file(writable).unwrap();
        let good = write("pvlaunch-9.8.7-abcd", 0o700);
        let out = run_bootstrap(home.path(), &sys_path);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ran {} channel serve\n", good.display())
        );
        // A pvlaunch on PATH of the same version is used when there is no copy.
        std::fs::remove_file(good).unwrap();
        let on_path = home.path().join("p");
        std::fs::create_dir(&on_path).unwrap();
        let p = on_path.join("pvlaunch");
        std::fs::write(
            &p,
            "#!/bin/sh\ncase $1 in --version) echo 'pvlaunch 9.8.7' ;; *) echo \"path $*\" ;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run_bootstrap(home.path(), &format!("{}:{sys_path}", on_path.display()));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "path channel serve\n");
    }

    #[test]
    fn the_bootstrap_keeps_odd_versions_out_of_the_script() {
        let s = bootstrap_script("1.0'; rm -rf /; '");
        assert!(s.starts_with("v='1.0rm-rf'\n"), "{s}");
    }
}
