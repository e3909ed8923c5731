//! Diagnostics: every problem found in a profile file, with its place, collected before failing.
//!
//! Costs stay linear in the file: a [`Source`] indexes its lines once, a diagnostic keeps a
//! bounded excerpt of its line (not the line), messages and element paths are bounded, a file
//! keeps at most [`KEEP_PER_FILE`] diagnostics (the rest are counted), and printing stops after
//! [`PRINT_LIMIT`] per file.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

/// How many diagnostics of one file are kept; later ones are only counted.
pub const KEEP_PER_FILE: usize = 1000;
/// How many diagnostics of one file are printed before `... and N more`.
pub const PRINT_LIMIT: usize = 50;
/// How many characters of the offending line a diagnostic shows around the column.
pub const EXCERPT_CHARS: usize = 120;
/// Longest message and element path kept (longer ones lose their middle).
pub const MAX_MESSAGE_CHARS: usize = 400;
pub const MAX_PATH_CHARS: usize = 200;

/// Bytes per checkpoint of the character index.
const CHUNK: usize = 1024;

/// A file's text, kept so that diagnostics can quote the offending line.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
    index: Arc<LineIndex>,
}

/// Where lines start, and how many characters precede every [`CHUNK`]-th byte: byte offsets
/// become line and column in O(log n + CHUNK).
#[derive(Debug, Default)]
struct LineIndex {
    starts: Vec<usize>,
    chars: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(memchr_all(bytes));
        let mut chars = Vec::with_capacity(bytes.len() / CHUNK + 1);
        let mut count = 0;
        for chunk in bytes.chunks(CHUNK) {
            chars.push(count);
            count += chunk.iter().filter(|&&b| !is_continuation(b)).count();
        }
        chars.push(count);
        LineIndex { starts, chars }
    }

    /// Characters in `text[..offset]`.
    fn chars_before(&self, bytes: &[u8], offset: usize) -> usize {
        let k = offset / CHUNK;
        let base = self.chars.get(k).copied().unwrap_or(0);
        base + bytes[k * CHUNK..offset]
            .iter()
            .filter(|&&b| !is_continuation(b))
            .count()
    }
}

fn memchr_all(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Source {
        let text = text.into();
        let index = Arc::new(LineIndex::new(&text));
        Source {
            path: path.into(),
            text,
            index,
        }
    }

    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 1-based line and 1-based column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let line = self.index.starts.partition_point(|&s| s <= offset);
        let start = self.index.starts[line - 1];
        let bytes = self.text.as_bytes();
        let column =
            self.index.chars_before(bytes, offset) - self.index.chars_before(bytes, start) + 1;
        (line, column)
    }

    /// The place of a byte offset in this file.
    pub fn locate(&self, offset: usize) -> Location {
        let (line, column) = self.line_col(offset);
        Location {
            file: self.path.clone(),
            line,
            column,
        }
    }

    /// The byte range of 1-based `line`, without its line break.
    fn line_range(&self, line: usize) -> (usize, usize) {
        let starts = &self.index.starts;
        let start = starts[line.clamp(1, starts.len()) - 1];
        let mut end = starts.get(line).map_or(self.text.len(), |&e| e - 1);
        if end > start && self.text.as_bytes()[end - 1] == b'\r' {
            end -= 1;
        }
        (start, end.max(start))
    }

    /// At most [`EXCERPT_CHARS`] characters of the line holding `offset`, around it, and the
    /// caret's character position in that excerpt. A cut end is marked with `…`.
    pub fn excerpt(&self, offset: usize) -> (String, usize) {
        let offset = self.clamp(offset);
        let (line, _) = self.line_col(offset);
        let (start, end) = self.line_range(line);
        let offset = offset.clamp(start, end);
        let text = &self.text[..];
        let after = text[offset..end].chars().take(EXCERPT_CHARS).count();
        let before: Vec<(usize, char)> = text[start..offset]
            .char_indices()
            .rev()
            .take(EXCERPT_CHARS - after.min(EXCERPT_CHARS / 2))
            .collect();
        let from = before.last().map_or(offset, |(i, _)| start + i);
        let room = EXCERPT_CHARS - before.len();
        let to = text[offset..end]
            .char_indices()
            .nth(room)
            .map_or(end, |(i, _)| offset + i);
        let mut shown = String::new();
        let mut caret = before.len();
        if from > start {
            shown.push('…');
            caret += 1;
        }
        shown.extend(
            text[from..to]
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
        if to < end {
            shown.push('…');
        }
        (shown, caret)
    }
}

/// `text` with its middle replaced by ` … ` when it is longer than `max` characters.
pub fn bounded(text: &str, max: usize) -> String {
    let half = max / 2;
    let head_end = match text.char_indices().nth(max) {
        None => return text.to_string(),
        Some(_) => text.char_indices().nth(half).map_or(text.len(), |(i, _)| i),
    };
    let tail_start = text
        .char_indices()
        .rev()
        .nth(half.saturating_sub(1))
        .map_or(0, |(i, _)| i)
        .max(head_end);
    format!("{} … {}", &text[..head_end], &text[tail_start..])
}

/// `file:line:column`, 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: where, what, the element path, and what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Location,
    /// Element path such as `Servers/Server[cluster-a]/PVLaunch/Job@nodes`.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// At most [`EXCERPT_CHARS`] characters of the offending line, for rendering.
    #[serde(skip)]
    pub line_text: String,
    /// Where the caret goes in `line_text` (characters from its start).
    #[serde(skip)]
    pub caret: usize,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Render in the familiar compiler style, with the line and a caret under the column.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{label}: {}", self.message);
        let _ = writeln!(out, "  --> {}", self.location);
        if !self.path.is_empty() {
            let _ = writeln!(out, "   = in {}", self.path);
        }
        if !self.line_text.is_empty() {
            let number = self.location.line.to_string();
            let pad = " ".repeat(number.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {}", self.line_text);
            let _ = writeln!(out, "{pad} | {}^", " ".repeat(self.caret));
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "   = hint: {hint}");
        }
        out
    }
}

/// Collects diagnostics for one file: the first [`KEEP_PER_FILE`] are kept, all are counted.
#[derive(Debug)]
pub struct Collector<'s> {
    pub source: &'s Source,
    pub diagnostics: Vec<Diagnostic>,
    /// Errors and warnings found, kept or not.
    pub errors: usize,
    pub warnings: usize,
}

impl<'s> Collector<'s> {
    pub fn new(source: &'s Source) -> Collector<'s> {
        Collector {
            source,
            diagnostics: Vec::new(),
            errors: 0,
            warnings: 0,
        }
    }

    pub fn push(
        &mut self,
        severity: Severity,
        offset: usize,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        match severity {
            Severity::Error => self.errors += 1,
            Severity::Warning => self.warnings += 1,
        }
        if self.diagnostics.len() >= KEEP_PER_FILE {
            return;
        }
        let location = self.source.locate(offset);
        let (line_text, caret) = self.source.excerpt(offset);
        self.diagnostics.push(Diagnostic {
            severity,
            location,
            path: bounded(path, MAX_PATH_CHARS),
            message: bounded(&message.into(), MAX_MESSAGE_CHARS),
            hint: hint.map(|h| bounded(&h, MAX_MESSAGE_CHARS)),
            line_text,
            caret,
        });
    }

    /// How many errors (not warnings) were found so far, kept or not.
    pub fn error_count(&self) -> usize {
        self.errors
    }

    pub fn error(&mut self, offset: usize, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, offset, path, message, None);
    }

    pub fn error_hint(
        &mut self,
        offset: usize,
        path: &str,
        message: impl Into<String>,
        hint: String,
    ) {
        self.push(Severity::Error, offset, path, message, Some(hint));
    }

    pub fn warning(&mut self, offset: usize, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, offset, path, message, None);
    }

    pub fn warning_hint(
        &mut self,
        offset: usize,
        path: &str,
        message: impl Into<String>,
        hint: String,
    ) {
        self.push(Severity::Warning, offset, path, message, Some(hint));
    }
}

/// Render a list of diagnostics, errors first within each file's order.
pub fn render_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Render at most [`PRINT_LIMIT`] of `shown`, then say how many of `total` were left out.
pub fn render_limited<'a>(shown: impl IntoIterator<Item = &'a Diagnostic>, total: usize) -> String {
    let mut out = String::new();
    let mut printed = 0;
    for d in shown.into_iter().take(PRINT_LIMIT) {
        if printed > 0 {
            out.push('\n');
        }
        out.push_str(&d.render());
        printed += 1;
    }
    if total > printed {
        let _ = writeln!(
            out,
            "{}... and {} more",
            if printed > 0 { "\n" } else { "" },
            total - printed
        );
    }
    out
}

/// Display a path relative to the current directory when that is shorter.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters() {
        let text = "é<A/>\nab\r\ncd";
        let s = Source::new("t", text);
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(2), (1, 2));
        assert_eq!(s.line_col(1), (1, 1), "inside a character: its start");
        assert_eq!(s.line_col(text.find("ab").unwrap() + 1), (2, 2));
        assert_eq!(s.line_col(text.find("cd").unwrap()), (3, 1));
        assert_eq!(s.line_col(10_000), (3, 3));
        // Agrees with the plain scan on a long line with multi-byte characters.
        let long: String = "aé€😀".repeat(2000);
        let s = Source::new("t", format!("x\n{long}"));
        for off in [2, 3, 1025, 4097, 9000, s.text.len()] {
            assert_eq!(
                s.line_col(off),
                super::super::xml::line_col(&s.text, off),
                "{off}"
            );
        }
    }

    #[test]
    fn excerpt_is_bounded_and_the_caret_stays_on_the_column() {
        let line = format!("{}X{}", "a".repeat(5000), "b".repeat(5000));
        let s = Source::new("t", format!("first\n{line}\nlast"));
        let at = s.text.find('X').unwrap();
        let (shown, caret) = s.excerpt(at);
        assert!(shown.chars().count() <= EXCERPT_CHARS + 2, "{shown}");
        assert_eq!(shown.chars().nth(caret), Some('X'));
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        let (short, caret) = s.excerpt(0);
        assert_eq!((short.as_str(), caret), ("first", 0));
    }

    #[test]
    fn long_messages_lose_their_middle() {
        assert_eq!(bounded("short", 10), "short");
        let b = bounded(&"x".repeat(100_000), 20);
        assert_eq!(b, format!("{} … {}", "x".repeat(10), "x".repeat(10)));
    }

    #[test]
    fn the_collector_keeps_a_bounded_number_and_counts_all() {
        let s = Source::new("t", "<A/>");
        let mut c = Collector::new(&s);
        for _ in 0..KEEP_PER_FILE + 5 {
            c.error(0, "A", "bad");
        }
        c.warning(0, "A", "meh");
        assert_eq!(c.diagnostics.len(), KEEP_PER_FILE);
        assert_eq!((c.errors, c.warnings), (KEEP_PER_FILE + 5, 1));
        let out = render_limited(&c.diagnostics, c.errors + c.warnings);
        assert_eq!(out.matches("error: bad").count(), PRINT_LIMIT);
        assert!(out.ends_with(&format!(
            "... and {} more\n",
            KEEP_PER_FILE + 6 - PRINT_LIMIT
        )));
    }
}
