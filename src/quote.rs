//! POSIX shell quoting: the one way any value becomes part of a shell command line.
//!
//! Every value pvlaunch puts into a remote command or a job script goes through [`quote`]
//! (or [`join`] for a whole argv), so that the remote shell sees exactly one word with exactly
//! the bytes given, whatever they contain: spaces, quotes, `$(...)`, backticks, globs, `~`,
//! newlines, non-ASCII text.
//!
//! Words made only of characters that no POSIX shell treats specially pass bare (so a job
//! script stays readable); anything else is wrapped in single quotes, inside which a shell
//! interprets nothing, and a single quote itself is written as `'\''`. The empty string
//! becomes `''`.
//!
//! A NUL byte cannot be part of an argument (argv is a list of C strings) nor of a shell
//! script, so [`quote`] and [`join`] **reject** it with [`NulError`] instead of silently
//! truncating or dropping it.

#![warn(missing_docs)]

use std::borrow::Cow;

/// The value contained a NUL byte, which no command argument can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a value contains a NUL byte, which cannot be passed to a command: {value:?}")]
pub struct NulError {
    /// The offending value.
    pub value: String,
}

/// Characters that never need quoting anywhere in a word.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '-' | '.' | '/' | ',' | ':' | '@' | '%' | '+' | '=')
}

/// `NAME=...` at the start of a command is an assignment, not a word: quote those.
fn looks_like_assignment(s: &str) -> bool {
    let Some((name, _)) = s.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quote one value so that a POSIX shell reads it back as exactly one word, byte for byte.
///
/// ```
/// use pvlaunch::quote::quote;
/// assert_eq!(quote("--server-port=11111").unwrap(), "--server-port=11111");
/// assert_eq!(quote("my data").unwrap(), "'my data'");
/// assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
/// assert_eq!(quote("").unwrap(), "''");
/// assert!(quote("a\0b").is_err());
/// ```
pub fn quote(s: &str) -> Result<Cow<'_, str>, NulError> {
    if s.contains('\0') {
        return Err(NulError {
            value: s.to_owned(),
        });
    }
    if s.is_empty() {
        return Ok(Cow::Borrowed("''"));
    }
    if s.chars().all(is_safe) && !looks_like_assignment(s) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str(r"'\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(Cow::Owned(out))
}

/// Quote every element of `argv` and join them with single spaces: one shell command line
/// that runs exactly that argv.
///
/// ```
/// use pvlaunch::quote::join;
/// assert_eq!(join(["scancel", "123"]).unwrap(), "scancel 123");
/// assert_eq!(join(["echo", "$(id)", "a b"]).unwrap(), "echo '$(id)' 'a b'");
/// ```
pub fn join<I, S>(argv: I) -> Result<String, NulError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, arg) in argv.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&quote(arg.as_ref())?);
    }
    Ok(out)
}

/// The interpreter every remote command runs under, whatever the user's login shell.
pub const REMOTE_SHELL: &str = "/bin/sh";

/// Bytes written as themselves in [`for_any_login_shell`]: literal inside single quotes in sh,
/// bash, dash, zsh, csh, tcsh and fish, inside double quotes in sh, and in a `printf` format.
fn is_wire_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b',' | b'.' | b'_' | b'+' | b':' | b'@' | b'/' | b'='
        )
}

/// A command string that any common login shell (sh, bash, dash, zsh, csh, tcsh, fish) turns
/// into `exec /bin/sh -c SCRIPT`, with `SCRIPT` byte for byte as given.
///
/// sshd runs a remote command as `$SHELL -c STRING` with the user's login shell, and those
/// shells disagree on nearly every quoting rule (csh expands `!` inside single quotes and
/// rejects a newline there, fish treats `\\` there specially). The string built here uses only
/// what they all agree on: one single-quoted word made of letters, digits, ` ,._+:@/=-`, `$`,
/// `(`, `)`, `"`, `;`, `{`, `}`, `%` and backslashes before digits, which reads
///
/// ```text
/// exec /bin/sh -c 's=$(printf "ENCODED"; printf x); exec /bin/sh -c -- "${s%x}"'
/// ```
///
/// where `ENCODED` is the script with every byte outside the safe set written as a three-digit
/// octal escape (`%` too, which printf would read as a format, and `-`, which it could read as
/// an option). The trailing `x` keeps the
/// script's trailing newlines, which command substitution would drop; `--` keeps a script that
/// starts with `-` from being read as an option.
///
/// A script is at most about 32 KiB of arbitrary bytes (130 KiB of plain words): Linux limits
/// one argument to 128 KiB.
///
/// ```
/// use pvlaunch::quote::for_any_login_shell;
/// assert_eq!(
///     for_any_login_shell("echo 'a b'").unwrap(),
///     r#"exec /bin/sh -c 's=$(printf "echo \047a b\047"; printf x); exec /bin/sh -c -- "${s%x}"'"#
/// );
/// assert!(for_any_login_shell("a\0b").is_err());
/// ```
pub fn for_any_login_shell(script: &str) -> Result<String, NulError> {
    if script.contains('\0') {
        return Err(NulError {
            value: script.to_owned(),
        });
    }
    Ok(wrap_for_login_shell(script.as_bytes(), REMOTE_SHELL))
}

/// [`for_any_login_shell`] for any bytes but NUL, with another interpreter for the script
/// (tests put a recorder there).
fn wrap_for_login_shell(script: &[u8], interpreter: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(script.len() * 2);
    for &b in script {
        if is_wire_safe(b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "\\{b:03o}");
        }
    }
    format!(
        "exec {REMOTE_SHELL} -c 's=$(printf \"{encoded}\"; printf x); exec {interpreter} -c -- \"${{s%x}}\"'"
    )
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    /// Values that break naive quoting.
    const HOSTILE: &[&str] = &[
        "'; rm -rf ~ #",
        "$(id)",
        "`id`",
        "${HOME}",
        "$HOME",
        "\"",
        "\"'\"'",
        "'",
        "''",
        "\\",
        "\\'",
        "a\nb",
        "\n",
        "line1\r\nline2",
        "*",
        "?",
        "[a-z]*",
        "~",
        "~root",
        "{a,b}",
        "!!",
        "#comment",
        "a;b",
        "a|b",
        "a&b",
        "a>b",
        "<x",
        "(sub)",
        "FOO=bar",
        "PATH=/tmp",
        "-n",
        "-e",
        "--",
        " leading and trailing ",
        "\t",
        "",
        "é",
        "データ",
        "naïve 🎉",
        "\u{202e}rtl",
        "%s\\0",
        "=x",
        "x=",
    ];

    /// Run `printf '%s\0' <quoted...>` through `shell -c` and return the NUL-separated words.
    fn through_shell(shell: &str, quoted_line: &str) -> Vec<Vec<u8>> {
        let script = format!("printf '%s\\0' {quoted_line}");
        let out = Command::new(shell)
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run a shell");
        assert!(
            out.status.success(),
            "{shell} failed on {script:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut words: Vec<Vec<u8>> = out.stdout.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
        assert_eq!(words.pop(), Some(Vec::new()), "output ends with a NUL");
        words
    }

    fn shells() -> Vec<&'static str> {
        ["/bin/sh", "/bin/bash", "/bin/dash"]
            .into_iter()
            .filter(|p| std::path::Path::new(p).exists())
            .collect()
    }

    fn assert_round_trip(value: &str) {
        let quoted = quote(value).unwrap();
        for shell in shells() {
            let words = through_shell(shell, &quoted);
            assert_eq!(
                words.len(),
                1,
                "{shell}: {value:?} quoted as {quoted} split into {words:?}"
            );
            assert_eq!(
                words[0],
                value.as_bytes(),
                "{shell}: {value:?} quoted as {quoted}"
            );
        }
    }

    #[test]
    fn safe_words_pass_bare() {
        for s in [
            "pvserver",
            "--server-port=11111",
            "/opt/pv/bin/pvserver",
            "a,b:c@d%e+f",
        ] {
            let q = quote(s).unwrap();
            assert!(matches!(q, Cow::Borrowed(_)), "{s}");
            assert_eq!(q, s);
        }
        assert_eq!(quote("node[1-3]").unwrap(), "'node[1-3]'");
    }

    #[test]
    fn assignments_are_quoted() {
        assert_eq!(quote("FOO=bar").unwrap(), "'FOO=bar'");
        assert_eq!(quote("--x=1").unwrap(), "--x=1");
        assert_eq!(quote("=x").unwrap(), "=x");
    }

    #[test]
    fn single_quotes_are_escaped() {
        assert_eq!(quote("'; rm -rf ~ #").unwrap(), r"''\''; rm -rf ~ #'");
        assert_eq!(quote("'").unwrap(), r"''\'''");
    }

    #[test]
    fn nul_is_rejected() {
        assert_eq!(
            quote("a\0b"),
            Err(NulError {
                value: "a\0b".into()
            })
        );
        assert!(join(["ok", "bad\0"]).is_err());
    }

    #[test]
    fn hostile_values_round_trip_through_real_shells() {
        for value in HOSTILE {
            assert_round_trip(value);
        }
    }

    #[test]
    fn join_keeps_every_argument_separate() {
        let line = join(HOSTILE).unwrap();
        for shell in shells() {
            let words = through_shell(shell, &line);
            let expected: Vec<Vec<u8>> = HOSTILE.iter().map(|s| s.as_bytes().to_vec()).collect();
            assert_eq!(words, expected, "{shell}");
        }
    }

    /// Login shells a remote command may meet; a missing one is skipped loudly, or fails the
    /// test under `CI=true`.
    fn login_shells() -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for name in ["sh", "bash", "dash", "zsh", "csh", "tcsh", "fish"] {
            match which::which(name) {
                Ok(p) => found.push(p),
                Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                    panic!("login shell {name} is missing (scripts/install-deps installs it)")
                }
                Err(_) => eprintln!(
                    "SKIPPED for {name}: not installed (scripts/install-deps installs it)"
                ),
            }
        }
        found
    }

    /// Run `wire` as sshd would (`SHELL -c WIRE`) with a recorder as the script's interpreter,
    /// and return the script the recorder was given.
    fn recorded_script(shell: &std::path::Path, script: &[u8]) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::Builder::new().prefix("pvq").tempdir().unwrap();
        let recorder = dir.path().join("record");
        std::fs::write(
            &recorder,
            "#!/bin/sh\n[ \"$1 $2\" = '-c --' ] || exit 9\nprintf '%s' \"$3\" > \"$(dirname \"$0\")/got\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wire = wrap_for_login_shell(script, recorder.to_str().unwrap());
        let out = Command::new(shell)
            .arg("-c")
            .arg(&wire)
            .env_remove("ENV")
            .output()
            .expect("run a login shell");
        assert!(
            out.status.success(),
            "{}: {}",
            shell.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(dir.path().join("got")).expect("the recorder ran")
    }

    #[test]
    fn every_login_shell_hands_sh_the_script_byte_for_byte() {
        let all: Vec<u8> = (1..=255u8).collect();
        let mut scripts: Vec<Vec<u8>> = vec![
            all.clone(),
            all.iter().rev().copied().collect(),
            b"echo 'it'\\''s' \"$HOME\" `id` !! !$ ~ * %s %% \\0 \\\\ \\' \n\n".to_vec(),
            b"\n".to_vec(),
            b"x\n\n\n".to_vec(),
            b"".to_vec(),
            b"plain words only".to_vec(),
        ];
        scripts.extend(HOSTILE.iter().map(|h| h.as_bytes().to_vec()));
        for shell in login_shells() {
            for script in &scripts {
                assert_eq!(
                    recorded_script(&shell, script),
                    *script,
                    "{}: {:?}",
                    shell.display(),
                    String::from_utf8_lossy(script)
                );
            }
        }
    }

    #[test]
    fn every_login_shell_runs_the_script_under_sh_with_stdin_and_status() {
        let script = "read -r line; printf '%s|%s\\n' \"$line\" \"$(printf '%s' 'a!b')\"; \
                      while IFS= read -r l; do :; done; exit 7";
        let wire = for_any_login_shell(script).unwrap();
        for shell in login_shells() {
            let mut child = Command::new(&shell)
                .arg("-c")
                .arg(&wire)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"hello 'there' $x\nmore\n")
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(7), "{}", shell.display());
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "hello 'there' $x|a!b\n",
                "{}",
                shell.display()
            );
        }
    }

    #[test]
    fn the_wire_uses_only_characters_every_shell_reads_literally_in_single_quotes() {
        let all: String = (1..=127u8).map(char::from).collect::<String>() + "é データ";
        let wire = for_any_login_shell(&all).unwrap();
        let inner = wire
            .strip_prefix("exec /bin/sh -c '")
            .and_then(|w| w.strip_suffix('\''))
            .unwrap();
        for c in inner.chars() {
            assert!(
                c.is_ascii_alphanumeric() || " ,._+:@/=-$()\";{}%\\".contains(c),
                "{c:?} in {inner}"
            );
        }
        // A backslash is always followed by three octal digits (fish reads `\\` and `\'`).
        for (i, _) in inner.match_indices('\\') {
            assert!(
                inner[i + 1..i + 4]
                    .bytes()
                    .all(|b| (b'0'..=b'7').contains(&b))
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_string_round_trips_as_one_word(value in "[^\u{0}]*") {
            assert_round_trip(&value);
        }

        #[test]
        fn ascii_soup_round_trips(value in "[ -~\t\n]{0,40}") {
            assert_round_trip(&value);
        }
    }
}
