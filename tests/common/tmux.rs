//! A terminal for a test to drive: a command in a tmux session on a sandbox host, as the test
//! user, the way a person at a terminal would answer ssh's prompts (one-time codes, key
//! passphrases, unknown host keys).
//!
//! ```ignore
//! let term = Tmux::start(sb, Host::Desk, "ssh login echo in");
//! term.wait_for_screen(sandbox::OTP_PROMPT, Duration::from_secs(30));
//! term.send_line(&sb.otp_code(Host::Login));
//! term.wait_for_screen("in", Duration::from_secs(30));
//! assert_eq!(term.wait_exit(Duration::from_secs(10)), 0);
//! ```
//!
//! Each `Tmux` has its own tmux server (`tmux -L NAME`) on the host, with `remain-on-exit on`
//! so the screen stays readable after the command ends. The exit status is written by the
//! pane's shell to `/tmp/NAME.status` on the host: tmux 3.3 sometimes leaves an exited command
//! unreaped (a zombie, `#{pane_dead_status}` empty for good; seen with ssh), so its own record
//! cannot be relied on. Dropping a `Tmux` kills that server, which hangs up on the command.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::sandbox::{Host, Output, Sandbox, shell_quote, try_wait_for};

/// The terminal's size.
pub const COLUMNS: u16 = 200;
pub const ROWS: u16 = 50;

/// How long one tmux command may take.
const TMUX_TIMEOUT: Duration = Duration::from_secs(30);
/// After the command has ended, how long its last output may take to reach the screen.
const SCREEN_SETTLE: Duration = Duration::from_secs(1);
/// Between the exit status and the screen in [`Tmux::poll`]'s output.
const SEPARATOR: &str = "--pvtest-tmux-screen--";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A command running in a terminal on a sandbox host.
pub struct Tmux<'a> {
    sb: &'a Sandbox,
    host: Host,
    socket: String,
    cmd: String,
}

impl<'a> Tmux<'a> {
    /// Start the shell command line `cmd` as the test user on `host` (from its home, with
    /// `scripts/sandbox exec`'s clean environment: no ssh agent) in a new terminal.
    #[track_caller]
    pub fn start(sb: &'a Sandbox, host: Host, cmd: &str) -> Tmux<'a> {
        let socket = format!(
            "pvt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let term = Tmux {
            sb,
            host,
            socket,
            cmd: cmd.to_string(),
        };
        // The pane's shell records the status (bash reports a signal as 128 + N).
        let pane = format!(
            "bash -c {}; echo $? > {status}.new && mv {status}.new {status}",
            shell_quote(cmd),
            status = term.status_file()
        );
        // One command sequence: the option is set before the session's command can end.
        let out = term.tmux(&format!(
            "-f /dev/null start-server \\; set-option -g remain-on-exit on \\; \
             set-option -g history-limit 10000 \\; \
             new-session -d -s main -x {COLUMNS} -y {ROWS} {}",
            shell_quote(&pane)
        ));
        assert!(
            out.success(),
            "starting {cmd:?} in tmux on {host} failed:\n{out}"
        );
        term
    }

    /// Run `tmux -L SOCKET ARGS` on the host (ARGS is shell text).
    pub fn tmux(&self, args: &str) -> Output {
        self.sb.run_timeout(
            self.host,
            &format!("tmux -L {} {args}", self.socket),
            TMUX_TIMEOUT,
        )
    }

    /// What the terminal shows, scrollback included, wrapped lines joined.
    #[track_caller]
    pub fn screen(&self) -> String {
        let out = self.tmux("capture-pane -p -J -S - -t main");
        assert!(out.success(), "reading the terminal failed:\n{out}");
        out.stdout.trim_end().to_string()
    }

    /// Wait until the screen contains `needle`; returns the screen. Panics with the screen on
    /// timeout, or when the command ended without showing it.
    #[track_caller]
    pub fn wait_for_screen(&self, needle: &str, timeout: Duration) -> String {
        self.wait_until(&format!("{needle:?}"), timeout, |s| s.contains(needle))
    }

    /// Wait until `needle` shows `n` times on the screen (a prompt asked again).
    #[track_caller]
    pub fn wait_for_screen_count(&self, needle: &str, n: usize, timeout: Duration) -> String {
        self.wait_until(&format!("{needle:?} {n} times"), timeout, |s| {
            s.matches(needle).count() >= n
        })
    }

    /// Wait until `done(screen)` holds; returns the screen. Panics naming `what` with the
    /// screen on timeout, or when the command ended first.
    #[track_caller]
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let mut ended: Option<(i32, Instant)> = None;
        let found = try_wait_for(timeout, || {
            let (status, screen) = self.poll();
            last = screen;
            if done(&last) {
                return Some(true);
            }
            match (status, ended) {
                (Some(code), None) => ended = Some((code, Instant::now())),
                (Some(_), Some((_, since))) if since.elapsed() >= SCREEN_SETTLE => {
                    return Some(false);
                }
                _ => {}
            }
            None
        });
        match found {
            Some(true) => last,
            Some(false) => panic!(
                "{} ended (exit {}) without showing {what}; the terminal:\n{last}",
                self.what(),
                ended.map_or(-1, |(c, _)| c)
            ),
            None => panic!(
                "{} did not show {what} within {timeout:?}; the terminal:\n{last}",
                self.what()
            ),
        }
    }

    /// The exit status (if the command ended) and the screen, read at once (status first, so
    /// a screen read after an exit has all but the last moment's output).
    fn poll(&self) -> (Option<i32>, String) {
        let out = self.sb.run_timeout(
            self.host,
            &format!(
                "cat {} 2>/dev/null; echo {SEPARATOR}; tmux -L {} capture-pane -p -J -S - -t main",
                self.status_file(),
                self.socket
            ),
            TMUX_TIMEOUT,
        );
        assert!(out.success(), "reading the terminal failed:\n{out}");
        let (status, screen) = out
            .stdout
            .split_once(&format!("{SEPARATOR}\n"))
            .unwrap_or(("", &out.stdout));
        (status.trim().parse().ok(), screen.trim_end().to_string())
    }

    /// Type `text` and Enter.
    #[track_caller]
    pub fn send_line(&self, text: &str) {
        let out = self.tmux(&format!(
            "send-keys -t main -l {} \\; send-keys -t main Enter",
            shell_quote(text)
        ));
        assert!(out.success(), "typing into the terminal failed:\n{out}");
    }

    /// Press keys by tmux's names, e.g. `["C-c"]`, `["Escape", "q"]`.
    #[track_caller]
    pub fn send_keys(&self, keys: &[&str]) {
        let keys: Vec<String> = keys.iter().map(|k| shell_quote(k)).collect();
        let out = self.tmux(&format!("send-keys -t main {}", keys.join(" ")));
        assert!(
            out.success(),
            "pressing keys in the terminal failed:\n{out}"
        );
    }

    /// The command's exit status once it has ended (`None` while it runs; a signal shows as
    /// 128 + N, as in a shell).
    pub fn exit_status(&self) -> Option<i32> {
        let out = self.sb.run_timeout(
            self.host,
            &format!("cat {} 2>/dev/null", self.status_file()),
            TMUX_TIMEOUT,
        );
        out.stdout.trim().parse().ok()
    }

    /// Wait for the command to end; returns its exit status. Panics with the screen on timeout.
    #[track_caller]
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        match try_wait_for(timeout, || self.exit_status()) {
            Some(code) => code,
            None => panic!(
                "{} still runs after {timeout:?}; the terminal:\n{}",
                self.what(),
                self.screen()
            ),
        }
    }

    /// The tmux server's name (`tmux -L NAME` on the host).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Where the pane's shell writes the command's exit status, on the host.
    fn status_file(&self) -> String {
        format!("/tmp/{}.status", self.socket)
    }

    fn what(&self) -> String {
        format!(
            "[{}@{}] {} (tmux)",
            super::sandbox::TEST_USER,
            self.host,
            self.cmd
        )
    }
}

impl Drop for Tmux<'_> {
    fn drop(&mut self) {
        let out = self.tmux(&format!(
            "kill-server; rm -f {status} {status}.new",
            status = self.status_file()
        ));
        if !out.success() && !out.stderr.contains("no server running") {
            eprintln!(
                "killing tmux {} on {} failed:\n{out}",
                self.socket, self.host
            );
        }
    }
}
