//! How ParaView turns a `<Command>` into a process: assemble one string, substitute `$NAME$`,
//! split it the way `QProcess::splitCommand` does. No shell is involved at any step.

use std::collections::BTreeSet;

/// `exec` followed by each argument; an argument containing whitespace is wrapped in `"..."`
/// (inner quotes are not escaped, exactly as ParaView does).
pub fn assemble(exec: &str, arguments: &[String]) -> String {
    let mut out = exec.to_string();
    for arg in arguments {
        out.push(' ');
        if arg.chars().any(char::is_whitespace) {
            out.push('"');
            out.push_str(arg);
            out.push('"');
        } else {
            out.push_str(arg);
        }
    }
    out
}

/// The outcome of `$NAME$` substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    /// Names that had no value and were replaced by the bare name (ParaView's behaviour).
    pub unknown: BTreeSet<String>,
}

/// Substitution cannot finish, or would make a text too long to be a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstitutionError {
    #[error("substitution of `${name}$` does not terminate (a value refers to itself)")]
    Loop { name: String },
    #[error(
        "substituting `${name}$` makes the text longer than {limit} bytes (values that repeat other values grow it at each step)"
    )]
    TooLong { name: String, limit: usize },
}

/// The former name of [`SubstitutionError`].
pub type SubstitutionLoop = SubstitutionError;

/// At most this many `$NAME$` replacements per text (ParaView's loop has no limit; each one
/// rescans the whole text).
pub const MAX_SUBSTITUTIONS: usize = 1_000;
/// The longest text substitution may produce: a command line, a value, a job script line.
pub const MAX_SUBSTITUTED_LEN: usize = 64 * 1024;

/// ParaView's loop: find the first `$X$` (X without `$` or space, possibly empty), replace every
/// occurrence of that exact text with X's value (or X itself when X has none), start over.
/// The result is at most [`MAX_SUBSTITUTED_LEN`] bytes, after at most [`MAX_SUBSTITUTIONS`]
/// replacements; beyond that it is an error, not a 2 GB string.
pub fn substitute(
    command: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstitutionError> {
    let mut text = command.to_string();
    let mut unknown = BTreeSet::new();
    for _ in 0..MAX_SUBSTITUTIONS {
        let Some((start, end)) = first_reference(&text) else {
            return Ok(Substituted { text, unknown });
        };
        let whole = text[start..end].to_string();
        let name = &whole[1..whole.len() - 1];
        let value = match lookup(name) {
            Some(v) => v,
            None => {
                unknown.insert(name.to_string());
                name.to_string()
            }
        };
        let count = text.matches(whole.as_str()).count();
        let grown =
            (text.len() - count * whole.len()).saturating_add(count.saturating_mul(value.len()));
        if grown > MAX_SUBSTITUTED_LEN {
            return Err(SubstitutionError::TooLong {
                name: name.to_string(),
                limit: MAX_SUBSTITUTED_LEN,
            });
        }
        text = text.replace(&whole, &value);
    }
    let name = first_reference(&text)
        .map(|(s, e)| text[s + 1..e - 1].to_string())
        .unwrap_or_default();
    Err(SubstitutionError::Loop { name })
}

/// One pass of `$NAME$` substitution over the text as written: values are inserted verbatim and
/// never scanned again (pvlaunch's own settings; ParaView's command uses [`substitute`]). The
/// result is at most [`MAX_SUBSTITUTED_LEN`] bytes.
pub fn substitute_once(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstitutionError> {
    substitute_once_at(text, |name, _| lookup(name))
}

/// [`substitute_once`], telling `lookup` where in `text` (a byte offset) each reference starts,
/// for values quoted according to their place in the text.
pub fn substitute_once_at(
    text: &str,
    mut lookup: impl FnMut(&str, usize) -> Option<String>,
) -> Result<Substituted, SubstitutionError> {
    let mut out = String::with_capacity(text.len());
    let mut unknown = BTreeSet::new();
    let mut rest = text;
    while let Some((start, end)) = first_reference(rest) {
        out.push_str(&rest[..start]);
        let name = &rest[start + 1..end - 1];
        let at = text.len() - rest.len() + start;
        match lookup(name, at) {
            Some(v) => out.push_str(&v),
            None => {
                unknown.insert(name.to_string());
                out.push_str(name);
            }
        }
        if out.len() > MAX_SUBSTITUTED_LEN {
            return Err(SubstitutionError::TooLong {
                name: name.to_string(),
                limit: MAX_SUBSTITUTED_LEN,
            });
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    if out.len() > MAX_SUBSTITUTED_LEN {
        return Err(SubstitutionError::TooLong {
            name: String::new(),
            limit: MAX_SUBSTITUTED_LEN,
        });
    }
    Ok(Substituted { text: out, unknown })
}

/// The span of the first match of the regular expression `\$([^$ ]*)\$`.
fn first_reference(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'$' && bytes[j] != b' ' {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'$' {
                return Some((i, j + 1));
            }
            // A space broke the candidate: the regex would retry from the next `$`.
            i = if j < bytes.len() { j } else { bytes.len() };
            continue;
        }
        i += 1;
    }
    None
}

/// `QProcess::splitCommand`: whitespace separates, `"` toggles quoting, three consecutive
/// quotes are one literal quote, and empty tokens are dropped.
pub fn split(command: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut token = String::new();
    let mut quote_count = 0;
    let mut in_quote = false;
    for c in command.chars() {
        if c == '"' {
            quote_count += 1;
            if quote_count == 3 {
                quote_count = 0;
                token.push(c);
            }
            continue;
        }
        if quote_count != 0 {
            if quote_count == 1 {
                in_quote = !in_quote;
            }
            quote_count = 0;
        }
        if !in_quote && c.is_whitespace() {
            if !token.is_empty() {
                args.push(std::mem::take(&mut token));
            }
        } else {
            token.push(c);
        }
    }
    if !token.is_empty() {
        args.push(token);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn assemble_quotes_only_arguments_with_whitespace() {
        let args = vec!["-N 1".to_string(), "--x=1".to_string(), "a\tb".to_string()];
        assert_eq!(assemble("srun", &args), "srun \"-N 1\" --x=1 \"a\tb\"");
    }

    #[test]
    fn substitution_replaces_all_and_keeps_unknown_names_bare() {
        let v = vars(&[("PORT", "11111")]);
        let s = substitute("-R $PORT$:localhost:$PORT$ $USER_X$", |n| v.get(n).cloned()).unwrap();
        assert_eq!(s.text, "-R 11111:localhost:11111 USER_X");
        assert_eq!(s.unknown.iter().collect::<Vec<_>>(), vec!["USER_X"]);
    }

    #[test]
    fn substitution_quirks() {
        let v = vars(&[]);
        // `$$` is a reference to the empty name: it disappears.
        assert_eq!(
            substitute("a$$b", |n| v.get(n).cloned()).unwrap().text,
            "ab"
        );
        // A space breaks a reference; the next `$` may start one.
        assert_eq!(
            substitute("$a b$c$", |n| v.get(n).cloned()).unwrap().text,
            "$a bc"
        );
        // Values are substituted again.
        let v = vars(&[("A", "$B$"), ("B", "x")]);
        assert_eq!(substitute("$A$", |n| v.get(n).cloned()).unwrap().text, "x");
        let v = vars(&[("A", "$A$")]);
        assert!(substitute("$A$", |n| v.get(n).cloned()).is_err());
    }

    #[test]
    fn single_pass_keeps_values_verbatim() {
        let v = vars(&[("A", "$(id)$B$"), ("B", "x")]);
        let s = substitute_once("pv$A$-$B$-$C$", |n| v.get(n).cloned()).unwrap();
        assert_eq!(s.text, "pv$(id)$B$-x-C");
        assert_eq!(s.unknown.iter().collect::<Vec<_>>(), vec!["C"]);
    }

    #[test]
    fn a_doubling_chain_is_refused_not_built() {
        // Each value is the previous one twice: 40 steps would make a terabyte.
        let mut v = vars(&[("A0", "xxxxxxxx")]);
        for i in 1..=40 {
            v.insert(format!("A{i}"), format!("$A{}$$A{}$", i - 1, i - 1));
        }
        let e = substitute("run $A40$", |n| v.get(n).cloned()).unwrap_err();
        assert!(matches!(e, SubstitutionError::TooLong { .. }), "{e}");
        // Short chains still work.
        let s = substitute("$A3$", |n| v.get(n).cloned()).unwrap();
        assert_eq!(s.text.len(), 64);
        // One pass: many references to a long value.
        let big = vars(&[("B", &"y".repeat(40_000))]);
        assert!(substitute_once("$B$ $B$", |n| big.get(n).cloned()).is_err());
        assert!(substitute_once("$B$", |n| big.get(n).cloned()).is_ok());
    }

    #[test]
    fn a_long_cycle_stops_at_the_replacement_limit() {
        let mut v = vars(&[]);
        for i in 0..MAX_SUBSTITUTIONS + 10 {
            v.insert(format!("V{i}"), format!("$V{}$", i + 1));
        }
        let e = substitute("$V0$", |n| v.get(n).cloned()).unwrap_err();
        assert!(matches!(e, SubstitutionError::Loop { .. }), "{e}");
    }

    #[test]
    fn split_like_qprocess() {
        assert_eq!(split("a  b\t\"c d\" \"\" e"), vec!["a", "b", "c d", "e"]);
        assert_eq!(split("say \"\"\"hi\"\"\""), vec!["say", "\"hi\""]);
        assert_eq!(split("x\"y z\"w"), vec!["xy zw"]);
        assert_eq!(split("   "), Vec::<String>::new());
        // An argument with a quote and a space is wrapped without escaping: the split differs.
        let cmd = assemble("sh", &["-c".into(), "echo \"a b\"".into()]);
        assert_eq!(split(&cmd), vec!["sh", "-c", "echo a", "b"]);
    }
}
