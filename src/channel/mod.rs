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
//! // `ssh login BOOTSTRAP` with piped stdin and stdout (see `bootstrap_script`;
//! // `Channel::start_bootstrapped` when the script may ask for a copy).
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

/// What [`bootstrap_script`] prints on stdout, followed by the version and a newline, when
/// the login node has no pvlaunch of the version asked: it then reads the copy from stdin.
pub const MISSING_MARKER: &str = "pvlaunch:channel:missing:";
/// What [`bootstrap_script`] prints on stdout, followed by the reason and a newline, when it
/// cannot start a server (it then exits 3).
pub const FAILED_MARKER: &str = "pvlaunch:channel:failed:";

/// A POSIX sh script for `ssh login 'exec /bin/sh -c SCRIPT'` (wrap it with
/// [`crate::ssh::RemoteCommand`]) that execs `pvlaunch channel serve` of `version`, for
/// [`Channel::start_bootstrapped`] (`sha256_hex` and `size` are the copy's, as
/// [`crate::remote::read_and_hash`] gives them):
///
/// 1. a copy in `~/.cache/pvlaunch/bin` named `pvlaunch-VERSION-*` (a regular file of this
///    user's, not writable by others, in a folder of this user's not writable by others), else
///    the `pvlaunch` on PATH if its `--version` is `pvlaunch VERSION`;
/// 2. otherwise it creates (or checks) `~/.cache/pvlaunch` and its `bin/` as
///    [`crate::remote::prepare_home`] does (mode 0700, no symbolic link, the user's, nobody
///    else may write there), makes a private temporary file there, prints
///    [`MISSING_MARKER`]`VERSION`, reads exactly `size` bytes from stdin into it, checks their
///    SHA-256 against `sha256_hex` (`sha256sum`, else `shasum -a 256`, else `openssl dgst
///    -sha256`), makes it executable, renames it onto the name [`crate::remote::binary_name`]
///    gives (`pvlaunch-VERSION-` and the first 16 hex digits) and execs it.
///
/// When something fails it prints [`FAILED_MARKER`]`REASON` and exits 3. Nothing else in the
/// script reads stdin, and the session's end sends nothing after the copy until the server's
/// hello, so `head -c` cannot take a byte that belongs to the channel.
pub fn bootstrap_script(version: &str, sha256_hex: &str, size: u64) -> String {
    // Versions are `1.2.3`, `1.2.3-rc.1+build`: anything else is left out of the script, and
    // so is anything but hex digits from the sum.
    let v: String = version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .collect();
    let sum: String = sha256_hex
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!(
        r#"v='{v}' sum='{sum}' size={size} n='pvlaunch-{v}-{short}'
umask 077
c=${{HOME%/}}/{dir}
d=$c/bin
fail() {{ printf '{FAILED_MARKER}%s\n' "$*"; exit 3; }}
private() {{
  w=$(find "$1" -prune \( -perm -020 -o -perm -002 \) -print 2> /dev/null) && [ -z "$w" ]
}}
ok() {{ [ -f "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] && [ -x "$1" ] && private "$1"; }}
if [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && private "$d"; then
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
case $HOME in /*) ;; *) fail "\$HOME is not an absolute path" ;; esac
for p in "$c" "$d"; do
  if [ ! -e "$p" ] && [ ! -L "$p" ]; then
    e=$(mkdir -p -m 700 -- "$p" 2>&1) || fail "cannot create $p: $e"
  fi
  [ -L "$p" ] && fail "$p is a symbolic link"
  [ -d "$p" ] || fail "$p is not a folder"
  [ -O "$p" ] || fail "$p is not owned by you"
  chmod 700 -- "$p" 2> /dev/null
  private "$p" || fail "$p is writable by the group or others (or cannot be checked)"
done
f=$d/$n
if [ -d "$f" ] && [ ! -L "$f" ]; then fail "$f is a folder"; fi
t=$(mktemp "$d/.$n.XXXXXXXX" 2> /dev/null) || {{
  t=$d/.$n.$$
  ( set -C; : > "$t" ) 2> /dev/null || fail "cannot create a file in $d"
}}
printf '{MISSING_MARKER}%s\n' "$v"
head -c "$size" > "$t" 2> /dev/null
got=$(wc -c < "$t" | tr -d ' ')
if [ "$got" != "$size" ]; then rm -f -- "$t"; fail "received $got of $size bytes"; fi
s=$( (sha256sum || shasum -a 256 || openssl dgst -sha256) < "$t" 2> /dev/null)
s=${{s##*= }}; s=${{s%% *}}
if [ "$s" != "$sum" ]; then rm -f -- "$t"; fail "the copy's SHA-256 is ${{s:-unknown (no sha256sum, shasum or openssl)}}, not $sum"; fi
chmod 700 -- "$t" && mv -f -- "$t" "$f" || {{ rm -f -- "$t"; fail "cannot move the copy to $f"; }}
exec "$f" channel serve"#,
        short = &sum[..sum.len().min(16)],
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
        run_bootstrap_with(home, path, "0", b"")
    }

    /// The script for a copy `input` that claims `sum`, fed `input` on stdin.
    fn run_bootstrap_with(
        home: &std::path::Path,
        path: &str,
        sum: &str,
        input: &[u8],
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(bootstrap_script("9.8.7", sum, input.len() as u64))
            .env("HOME", home)
            .env("PATH", path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        format!("{:x}", Sha256::digest(bytes))
    }

    /// With only `openssl` to hash (no `sha256sum`, no `shasum`), the copy is checked, made
    /// executable, renamed onto its versioned name and run with `channel serve`.
    #[test]
    fn the_bootstrap_checks_the_copy_with_whatever_hashes_there() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let tools = home.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        let mut found_openssl = false;
        for tool in [
            "find", "mkdir", "chmod", "mktemp", "head", "wc", "tr", "mv", "rm", "sed", "openssl",
        ] {
            let Some(p) = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(tool))
                .find(|p| p.exists())
            else {
                continue;
            };
            found_openssl |= tool == "openssl";
            std::os::unix::fs::symlink(p, tools.join(tool)).unwrap();
        }
        if !found_openssl {
            eprintln!("no openssl here: skipped");
            return;
        }
        let copy = b"#!/bin/sh\necho \"served by $0 $*\"\n";
        let sum = sha256_hex(copy);
        let path = tools.display().to_string();
        let out = run_bootstrap_with(home.path(), &path, &sum, copy);
        let name = format!("pvlaunch-9.8.7-{}", &sum[..16]);
        let placed = home.path().join(".cache/pvlaunch/bin").join(&name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "{MISSING_MARKER}9.8.7\nserved by {} channel serve\n",
                placed.display()
            ),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::metadata(&placed).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // One byte off: refused, and nothing is left.
        let home = tempfile::tempdir().unwrap();
        let out = run_bootstrap_with(
            home.path(),
            &path,
            &sum,
            b"#!/bin/sh\necho \"served by $0 $*\"\r",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(FAILED_MARKER) && stdout.contains("SHA-256"),
            "{stdout}"
        );
        assert_eq!(out.status.code(), Some(3));
        let bin = home.path().join(".cache/pvlaunch/bin");
        assert_eq!(std::fs::read_dir(bin).unwrap().count(), 0);
    }

    #[test]
    fn the_copy_is_named_as_the_session_names_it() {
        let sum = "ab".repeat(32);
        let s = bootstrap_script(env!("CARGO_PKG_VERSION"), &sum, 1);
        assert!(
            s.contains(&format!("n='{}'", crate::remote::binary_name(&sum))),
            "{s}"
        );
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
            format!(
                "{MISSING_MARKER}9.8.7\n{FAILED_MARKER}the copy's SHA-256 is {}, not 0\n",
                sha256_hex(b"")
            )
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
        let s = bootstrap_script("1.0'; rm -rf /; '", "ab'; rm -rf /; 'cd", 3);
        assert!(
            s.starts_with("v='1.0rm-rf' sum='abfcd' size=3 n='pvlaunch-1.0rm-rf-abfcd'\n"),
            "{s}"
        );
    }
}
