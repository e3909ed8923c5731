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
