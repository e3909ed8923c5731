//! Who answers what ssh asks at login (a passphrase, a host key question, a one-time code), and
//! what a failed login means in words.
//!
//! Pure: [`choose`] decides from [`Surroundings`] (which [`Surroundings::here`] reads from the
//! process), [`diagnose`] reads ssh's own words. The master ([`crate::ssh::Master`]) applies
//! the choice: [`Asker::batch_mode`] and [`Asker::env`].
//!
//! - A terminal on stdin: ssh asks there itself (the spinner steps aside).
//! - Otherwise, with a display (ParaView's Connect dialog, a desktop launcher): ssh asks through
//!   an askpass program, `SSH_ASKPASS_REQUIRE=force` (OpenSSH 8.4+: every prompt goes to it,
//!   the prompt in argv\[1\], the answer on its stdout, a non-zero exit cancels). The profile's
//!   `askpass`, else the user's `SSH_ASKPASS`, else a common one found on this machine, else on
//!   macOS pvlaunch's own ([`builtin_askpass`], a dialog through `osascript`).
//! - Nobody to ask: `BatchMode=yes`, so ssh fails at once instead of waiting, and the failure
//!   says what was needed.
//!
//! pvlaunch never answers for the person, never accepts a host key and never tries a failed
//! login again: a site may lock the account after failed one-time codes.

use std::ffi::OsString;

/// Set in ssh's environment when pvlaunch is its own askpass: `pvlaunch` run by ssh with this
/// variable shows the prompt in a dialog and prints the answer ([`builtin_askpass`]).
pub const BUILTIN_ASKPASS_ENV: &str = "PVLAUNCH_ASKPASS";

/// Askpass programs looked for, in order, on PATH and in the folders distributions use.
pub const ASKPASS_PROGRAMS: &[&str] = &[
    "ssh-askpass",
    "ksshaskpass",
    "lxqt-openssh-askpass",
    "ssh-askpass-fullscreen",
    "x11-ssh-askpass",
    "gnome-ssh-askpass",
];

/// Folders outside PATH where distributions put askpass programs.
pub const ASKPASS_DIRS: &[&str] = &[
    "/usr/lib/ssh",
    "/usr/libexec/openssh",
    "/usr/libexec",
    "/usr/lib/openssh",
];

/// Where an askpass program came from (said in `-v` logs and in failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskpassFrom {
    /// The profile's `<Login askpass=...>`.
    Profile,
    /// The user's `SSH_ASKPASS`.
    Environment,
    /// Found on this machine.
    Found,
    /// pvlaunch's own (macOS).
    BuiltIn,
}

/// Who answers ssh's questions at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asker {
    /// The person, in the terminal ssh shares with pvlaunch.
    Terminal,
    /// The person, through an askpass program's window.
    Askpass { program: String, from: AskpassFrom },
    /// Nobody: ssh must not wait for an answer.
    Nobody { why: Nobody },
}

/// Why nobody can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nobody {
    /// No terminal on stdin and no display.
    NoTerminalNoDisplay,
    /// A display, but no askpass program to show a prompt on it.
    NoAskpass,
}

/// What decides the [`Asker`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Surroundings {
    pub stdin_terminal: bool,
    /// `DISPLAY` or `WAYLAND_DISPLAY` is set (always true on macOS, which has no variable).
    pub display: bool,
    pub profile_askpass: Option<String>,
    pub env_askpass: Option<String>,
    pub found_askpass: Option<String>,
    pub macos: bool,
    /// This program, to be its own askpass on macOS.
    pub own_program: Option<String>,
}

impl Surroundings {
    /// Read them from this process: stdin, the environment, the askpass programs installed.
    pub fn here(profile_askpass: Option<&str>) -> Surroundings {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        let macos = cfg!(target_os = "macos");
        Surroundings {
            stdin_terminal: std::io::IsTerminal::is_terminal(&std::io::stdin()),
            display: macos || set("DISPLAY") || set("WAYLAND_DISPLAY"),
            profile_askpass: profile_askpass.map(str::to_string),
            env_askpass: std::env::var("SSH_ASKPASS").ok().filter(|v| !v.is_empty()),
            found_askpass: find_askpass(),
            macos,
            own_program: std::env::current_exe()
                .ok()
                .map(|p| p.display().to_string()),
        }
    }
}

/// The first askpass program installed here ([`ASKPASS_PROGRAMS`] on PATH, then in
/// [`ASKPASS_DIRS`]).
pub fn find_askpass() -> Option<String> {
    for name in ASKPASS_PROGRAMS {
        if let Ok(path) = which::which(name) {
            return Some(path.display().to_string());
        }
    }
    for dir in ASKPASS_DIRS {
        for name in ASKPASS_PROGRAMS {
            let path = std::path::Path::new(dir).join(name);
            if is_executable(&path) {
                return Some(path.display().to_string());
            }
        }
    }
    None
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Who answers: a terminal first (the person is there), then an askpass on a display.
pub fn choose(s: &Surroundings) -> Asker {
    if s.stdin_terminal && s.profile_askpass.is_none() {
        return Asker::Terminal;
    }
    if let Some(program) = &s.profile_askpass {
        return Asker::Askpass {
            program: program.clone(),
            from: AskpassFrom::Profile,
        };
    }
    if !s.display {
        return Asker::Nobody {
            why: Nobody::NoTerminalNoDisplay,
        };
    }
    let (program, from) = match (&s.env_askpass, &s.found_askpass, &s.own_program) {
        (Some(p), _, _) => (p.clone(), AskpassFrom::Environment),
        (None, Some(p), _) if !s.macos => (p.clone(), AskpassFrom::Found),
        (None, _, Some(own)) if s.macos => (own.clone(), AskpassFrom::BuiltIn),
        (None, Some(p), _) => (p.clone(), AskpassFrom::Found),
        _ => {
            return Asker::Nobody {
                why: Nobody::NoAskpass,
            };
        }
    };
    Asker::Askpass { program, from }
}

impl Asker {
    /// Whether ssh must not ask anything (`BatchMode=yes`).
    pub fn batch_mode(&self) -> bool {
        matches!(self, Asker::Nobody { .. })
    }

    /// What ssh's environment gets.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        match self {
            Asker::Askpass { program, from } => {
                let mut env = vec![
                    ("SSH_ASKPASS".into(), program.into()),
                    ("SSH_ASKPASS_REQUIRE".into(), "force".into()),
                ];
                if *from == AskpassFrom::BuiltIn {
                    env.push((BUILTIN_ASKPASS_ENV.into(), "1".into()));
                }
                env
            }
            _ => Vec::new(),
        }
    }

    /// In words, for logs and failures.
    pub fn describe(&self) -> String {
        match self {
            Asker::Terminal => "ssh asks in this terminal".into(),
            Asker::Askpass { program, from } => {
                let from = match from {
                    AskpassFrom::Profile => "the profile's askpass",
                    AskpassFrom::Environment => "SSH_ASKPASS",
                    AskpassFrom::Found => "an askpass program",
                    AskpassFrom::BuiltIn => "pvlaunch's own dialog",
                };
                format!("ssh asks through {from} ({program})")
            }
            Asker::Nobody { why } => match why {
                Nobody::NoTerminalNoDisplay => {
                    "nobody can answer ssh: no terminal and no display".into()
                }
                Nobody::NoAskpass => {
                    "nobody can answer ssh: a display but no askpass program".into()
                }
            },
        }
    }
}

/// A failed login in words: ssh's own text (whole, not cut) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailure {
    pub message: String,
    pub hint: String,
}

/// What ssh's stderr says went wrong, for `destination`, given who could answer.
pub fn diagnose(stderr: &str, destination: &str, asker: &Asker) -> LoginFailure {
    let text = crate::term::sanitize(stderr.trim()).into_owned();
    let text = text.replace("\r\n", "\n");
    let said = |s: &str| text.contains(s);
    let base = if text.is_empty() {
        format!("ssh to {destination} failed")
    } else {
        format!("ssh to {destination} failed:\n{}", indent(&text))
    };
    let (message, hint) = if said("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        let remove = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("ssh-keygen ") && l.contains(" -R "))
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "ssh-keygen -R {}",
                    crate::quote::quote(destination)
                        .map(|q| q.into_owned())
                        .unwrap_or_else(|_| destination.to_string())
                )
            });
        (
            base,
            format!(
                "the login node's host key is not the one known for it. Ask your centre whether \
                 it changed (they publish the fingerprints); only then remove the old key with \
                 `{remove}` and connect once from a terminal to check the new one. pvlaunch never \
                 accepts a key for you"
            ),
        )
    } else if said("Host key verification failed") && *asker == Asker::Terminal {
        (
            base,
            "the login node's host key was not accepted. Compare the fingerprint ssh showed \
             with the one your centre publishes, then connect again and answer yes"
                .into(),
        )
    } else if said("Host key verification failed") {
        (
            base,
            format!(
                "the login node's host key is not known yet and nobody could check it here: run \
                 `ssh {destination}` once in a terminal, compare the fingerprint with the one \
                 your centre publishes, and answer yes. pvlaunch never accepts a key for you"
            ),
        )
    } else if let Some(methods) = denied_methods(&text) {
        let asks = methods
            .iter()
            .any(|m| m == "keyboard-interactive" || m == "password");
        match asker {
            Asker::Nobody { why } if asks => (
                format!(
                    "{base}\nThe login node asks for more than a key ({}: a one-time code or a \
                     password), and {}.",
                    methods.join(","),
                    match why {
                        Nobody::NoTerminalNoDisplay =>
                            "nobody can answer here: no terminal, no display",
                        Nobody::NoAskpass =>
                            "there is a display but no askpass program to ask on it",
                    }
                ),
                nobody_hint(*why),
            ),
            Asker::Nobody { .. } => (
                base,
                "no key was accepted and nobody could type a passphrase here: load your key into \
                 ssh-agent (`ssh-add`), or run pvlaunch from a terminal"
                    .into(),
            ),
            _ if asks => (
                format!(
                    "{base}\nThe login node refused the answer to {} (a wrong or already used \
                     one-time code, or a wrong password).",
                    methods.join(",")
                ),
                "pvlaunch does not try again by itself: sites lock accounts after failed codes. \
                 Wait for a new code, then connect again"
                    .into(),
            ),
            _ => (
                base,
                format!(
                    "the login node accepted none of your keys ({}): check `ssh {destination}` in \
                     a terminal, your key (`ssh-add -l`) and the user name",
                    methods.join(",")
                ),
            ),
        }
    } else if said("incorrect passphrase") || said("bad passphrase") {
        (
            base,
            "the key's passphrase was wrong; pvlaunch does not try again by itself".into(),
        )
    } else if said("Could not resolve hostname") {
        (
            base,
            format!(
                "`{destination}` is not a host name this machine knows: check the profile's \
                 <Login host> or your ~/.ssh/config"
            ),
        )
    } else if said("Connection refused") || said("Connection timed out") || said("No route to host")
    {
        (
            base,
            "the login node did not answer on ssh's port: check the network (VPN?) and the \
             host name"
                .into(),
        )
    } else if matches!(asker, Asker::Askpass { .. })
        && (said("ssh_askpass") || said("read_passphrase"))
    {
        (
            base,
            "the askpass program did not ask or was cancelled: check that it runs \
             (`$SSH_ASKPASS \"test\"`) or name another with <Login askpass=...>"
                .into(),
        )
    } else {
        (
            base,
            format!(
                "check that `ssh {destination}` works in a terminal (host alias, keys, known_hosts)"
            ),
        )
    };
    LoginFailure { message, hint }
}

fn nobody_hint(why: Nobody) -> String {
    let ask = match why {
        Nobody::NoTerminalNoDisplay => {
            "run pvlaunch from a terminal, where ssh can ask you, or from a desktop with an \
             askpass program (Debian: apt install ssh-askpass)"
        }
        Nobody::NoAskpass => {
            "install an askpass program (Debian: apt install ssh-askpass; KDE: ksshaskpass), or \
             name one with <Login askpass=...> or SSH_ASKPASS"
        }
    };
    format!(
        "{ask}; or log in once from a terminal with <Login persist=\"8h\"> so later sessions \
         reuse that login; or start your own ssh ControlMaster for the host (pvlaunch uses it)"
    )
}

/// The methods in ssh's `Permission denied (publickey,keyboard-interactive).`
fn denied_methods(text: &str) -> Option<Vec<String>> {
    let at = text.rfind("Permission denied (")?;
    let rest = &text[at + "Permission denied (".len()..];
    let list = &rest[..rest.find(')')?];
    Some(list.split(',').map(|m| m.trim().to_string()).collect())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// pvlaunch as ssh's askpass (macOS): show `prompt` in a dialog, print the answer. Exit code 0
/// with the answer, 1 when cancelled.
pub fn builtin_askpass(prompt: &str) -> i32 {
    let hidden = !prompt.to_ascii_lowercase().contains("(yes/no");
    let script = format!(
        "display dialog {} with title \"pvlaunch\" default answer \"\"{} buttons {{\"Cancel\", \"OK\"}} default button \"OK\"\ntext returned of result",
        applescript_string(prompt),
        if hidden { " with hidden answer" } else { "" }
    );
    match std::process::Command::new("osascript")
        .arg("-e")
        .arg(script)
        .output()
    {
        Ok(out) if out.status.success() => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&out.stdout);
            let _ = stdout.flush();
            0
        }
        _ => 1,
    }
}

/// A string literal for AppleScript: quotes and backslashes escaped, control characters dropped.
fn applescript_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Surroundings {
        Surroundings {
            own_program: Some("/opt/pvlaunch".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_terminal_asks_itself() {
        let s = Surroundings {
            stdin_terminal: true,
            display: true,
            env_askpass: Some("/usr/bin/ssh-askpass".into()),
            ..base()
        };
        assert_eq!(choose(&s), Asker::Terminal);
        assert!(!Asker::Terminal.batch_mode());
        assert!(Asker::Terminal.env().is_empty());
    }

    #[test]
    fn without_a_terminal_a_display_gets_an_askpass_in_order() {
        let mut s = Surroundings {
            display: true,
            found_askpass: Some("/usr/bin/ssh-askpass".into()),
            ..base()
        };
        assert_eq!(
            choose(&s),
            Asker::Askpass {
                program: "/usr/bin/ssh-askpass".into(),
                from: AskpassFrom::Found
            }
        );
        s.env_askpass = Some("/home/u/my-askpass".into());
        assert_eq!(
            choose(&s),
            Asker::Askpass {
                program: "/home/u/my-askpass".into(),
                from: AskpassFrom::Environment
            }
        );
        s.profile_askpass = Some("/site/askpass".into());
        s.stdin_terminal = true;
        let chosen = choose(&s);
        assert_eq!(
            chosen,
            Asker::Askpass {
                program: "/site/askpass".into(),
                from: AskpassFrom::Profile
            }
        );
        let env = chosen.env();
        assert!(env.contains(&("SSH_ASKPASS".into(), "/site/askpass".into())));
        assert!(env.contains(&("SSH_ASKPASS_REQUIRE".into(), "force".into())));
        assert!(!chosen.batch_mode());
    }

    #[test]
    fn macos_uses_its_own_dialog_unless_the_user_set_one() {
        let s = Surroundings {
            display: true,
            macos: true,
            found_askpass: Some("/opt/homebrew/bin/ssh-askpass".into()),
            ..base()
        };
        let chosen = choose(&s);
        assert_eq!(
            chosen,
            Asker::Askpass {
                program: "/opt/pvlaunch".into(),
                from: AskpassFrom::BuiltIn
            }
        );
        assert!(
            chosen
                .env()
                .contains(&(BUILTIN_ASKPASS_ENV.into(), "1".into()))
        );
    }

    #[test]
    fn nobody_means_batch_mode_and_says_why() {
        let none = choose(&base());
        assert_eq!(
            none,
            Asker::Nobody {
                why: Nobody::NoTerminalNoDisplay
            }
        );
        assert!(none.batch_mode());
        let no_askpass = choose(&Surroundings {
            display: true,
            own_program: None,
            ..base()
        });
        assert_eq!(
            no_askpass,
            Asker::Nobody {
                why: Nobody::NoAskpass
            }
        );
    }

    #[test]
    fn a_code_nobody_could_type_is_explained() {
        let f = diagnose(
            "pvtest@login: Permission denied (keyboard-interactive).\n",
            "login",
            &Asker::Nobody {
                why: Nobody::NoTerminalNoDisplay,
            },
        );
        assert!(f.message.contains("one-time code"), "{f:?}");
        assert!(f.message.contains("no terminal, no display"), "{f:?}");
        assert!(
            f.hint.contains("askpass") && f.hint.contains("persist"),
            "{f:?}"
        );
    }

    #[test]
    fn a_refused_code_is_not_retried() {
        let f = diagnose(
            "Permission denied (keyboard-interactive).",
            "login",
            &Asker::Terminal,
        );
        assert!(
            f.message
                .contains("refused the answer to keyboard-interactive")
        );
        assert!(f.hint.contains("does not try again"));
    }

    #[test]
    fn a_changed_host_key_keeps_the_whole_warning_and_the_exact_command() {
        let warning = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n\
Offending ED25519 key in /home/u/.ssh/known_hosts:3\r\n\
  remove with:\r\n\
  ssh-keygen -f \"/home/u/.ssh/known_hosts\" -R \"login\"\r\n\
Host key for login has changed and you have requested strict checking.\r\n\
Host key verification failed.\r\n";
        let f = diagnose(warning, "login", &Asker::Terminal);
        assert!(f.message.contains("\n  IT IS POSSIBLE"), "{}", f.message);
        assert!(!f.message.contains(" / "));
        assert!(!f.message.contains('\r'));
        assert!(
            f.hint
                .contains("`ssh-keygen -f \"/home/u/.ssh/known_hosts\" -R \"login\"`"),
            "{}",
            f.hint
        );
    }

    #[test]
    fn an_unknown_host_key_is_never_accepted_for_the_user() {
        let f = diagnose(
            "Host key verification failed.",
            "login",
            &Asker::Nobody {
                why: Nobody::NoTerminalNoDisplay,
            },
        );
        assert!(f.hint.contains("`ssh login` once in a terminal"));
        assert!(f.hint.contains("never accepts"));
    }

    #[test]
    fn a_host_key_declined_in_the_terminal_says_to_compare_the_fingerprint() {
        let f = diagnose("Host key verification failed.", "login", &Asker::Terminal);
        assert!(f.hint.contains("Compare the fingerprint"), "{f:?}");
    }

    #[test]
    fn escapes_in_what_the_server_says_do_not_reach_the_terminal() {
        let f = diagnose(
            "\x1b]0;owned\x07Permission denied (publickey).",
            "login",
            &Asker::Terminal,
        );
        assert!(!f.message.contains('\x1b'));
    }

    #[test]
    fn applescript_strings_are_quoted() {
        assert_eq!(applescript_string("a\"b\\c\nd\x07"), "\"a\\\"b\\\\c\\nd\"");
    }
}
