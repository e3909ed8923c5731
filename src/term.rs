//! Writing to the terminal (or whatever stdout and stderr are) without ever aborting, and making
//! untrusted text safe to show.
//!
//! - [`say!`](crate::say) and [`say_err!`](crate::say_err) print a line on stdout / stderr and
//!   ignore write errors: `println!` panics when the reader went away (`pvlaunch ... | head`),
//!   and a panic while printing the panic message aborts (exit 134).
//! - [`stdout()`] is a writer for longer output that treats a closed pipe as "nobody reads":
//!   the rest is discarded, the command finishes and returns its normal exit code.
//! - [`sanitize`] strips what a terminal would interpret (escape sequences, carriage returns,
//!   bells, C1 controls, bidirectional overrides) from text that came from elsewhere: scheduler
//!   output, the job's log, error messages of remote commands.
//! - [`init_tracing`] sets up the log on stderr for every command (`-v`, `-vv`, `RUST_LOG`).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Print a line on stdout; errors (a closed pipe) are ignored.
#[macro_export]
macro_rules! say {
    () => { $crate::term::write_line($crate::term::Stream::Stdout, format_args!("")) };
    ($($arg:tt)*) => { $crate::term::write_line($crate::term::Stream::Stdout, format_args!($($arg)*)) };
}

/// Print a line on stderr; errors (a closed pipe) are ignored.
#[macro_export]
macro_rules! say_err {
    () => { $crate::term::write_line($crate::term::Stream::Stderr, format_args!("")) };
    ($($arg:tt)*) => { $crate::term::write_line($crate::term::Stream::Stderr, format_args!($($arg)*)) };
}

/// One of the two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Write one line (the text and a newline, in one write) and ignore any error. Used by
/// [`say!`](crate::say) and [`say_err!`](crate::say_err).
pub fn write_line(stream: Stream, args: fmt::Arguments<'_>) {
    let mut line = fmt::format(args);
    line.push('\n');
    let _ = match stream {
        Stream::Stdout => {
            if STDOUT_CLOSED.load(Ordering::Relaxed) {
                return;
            }
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Stderr => {
            let mut err = io::stderr().lock();
            err.write_all(line.as_bytes()).and_then(|()| err.flush())
        }
    };
}

/// Set once a write to stdout found the pipe closed: later writes are skipped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// stdout, locked, for output that may be cut short by its reader: once the pipe is closed,
/// every write "succeeds" and is discarded. Other write errors are returned.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// See [`stdout()`].
pub struct Stdout(io::StdoutLock<'static>);

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match self.0.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(())
            }
            other => other,
        }
    }
}

/// Whether an error (or anything in its chain of causes) is a closed pipe.
pub fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Remove what a terminal would act on from untrusted text: ANSI/VT escape sequences (CSI, OSC,
/// DCS and the other string sequences, two-character escapes), C0 controls except `\n` and
/// `\t`, DEL, C1 controls (U+0080..U+009F, including the 8-bit CSI and OSC introducers, whose
/// parameters go too), and the Unicode bidirectional overrides and isolates, which can make
/// text read differently from what it is. `\r\n` becomes `\n`; a lone `\r` goes.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_work) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // A two-character escape (ESC 7, ESC c, ...): the second one goes too.
                Some(_) | None => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\n' | '\t' => out.push(c),
            c if needs_work(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_work(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Parameters and intermediates up to and including the final byte (0x40..=0x7E). A sequence
/// cut short by a newline ends before it (the newline stays).
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            return;
        }
        chars.next();
        if ('\x40'..='\x7e').contains(&c) {
            return;
        }
    }
}

/// A string sequence (OSC, DCS, ...) up to BEL, ST (`ESC \` or U+009C), or the end of the
/// line (the newline stays).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            return;
        }
        chars.next();
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// Cut `text` to at most `max` bytes (at a character boundary), marking the cut with ` […]`.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    const MARK: &str = " […]";
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &text[..end]))
}

/// The log on stderr, for every command. `base` is the level without `-v`; each `-v` shows one
/// level more (`-v` info and `-vv` debug for most commands). `RUST_LOG` wins over both. Write
/// errors are ignored (the log is never worth aborting for). Calling it twice is harmless.
pub fn init_tracing(verbose: u8, base: tracing::Level) {
    use tracing::Level;
    const LEVELS: [Level; 5] = [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ];
    let from = LEVELS.iter().position(|l| *l == base).unwrap_or(1);
    let level = LEVELS[(from + verbose as usize).min(LEVELS.len() - 1)];
    let default = format!("pvlaunch={}", level.as_str().to_ascii_lowercase());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let color =
        io::IsTerminal::is_terminal(&io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .with_writer(io::stderr)
        .with_target(false)
        .log_internal_errors(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_what_a_terminal_acts_on() {
        assert!(matches!(sanitize("plain text\tok\n"), Cow::Borrowed(_)));
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize("a\x1b]0;pwned title\x07b"), "ab");
        assert_eq!(
            sanitize("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b"),
            "alinkb"
        );
        assert_eq!(sanitize("line\r\nnext\rover"), "line\nnextover");
        assert_eq!(sanitize("bell\x07 nul\0 del\x7f"), "bell nul del");
        assert_eq!(sanitize("c1 \u{9b}2Jcsi \u{85}nel"), "c1 csi nel");
        assert_eq!(sanitize("\u{9d}0;t\u{9c}after"), "after");
        assert_eq!(sanitize("x\u{202e}gnp.exe"), "xgnp.exe");
        assert_eq!(sanitize("esc at end\x1b"), "esc at end");
        assert_eq!(sanitize("\x1bcreset"), "reset");
        assert_eq!(sanitize("cut \x1b[12\nnext"), "cut \nnext");
        assert_eq!(sanitize("title \x1b]0;unterminated\nnext"), "title \nnext");
        assert_eq!(sanitize("grüße ✓"), "grüße ✓");
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(100);
        let c = clip(&long, 21);
        assert!(c.len() <= 21, "{}", c.len());
        assert!(c.ends_with(" […]"));
        assert!(c.starts_with("éééé"));
    }

    #[test]
    fn broken_pipe_is_found_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] io::Error);
        let e = Wrapped(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&e));
        let other = Wrapped(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }
}
