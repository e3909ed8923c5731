//! Diagnostics: every problem found in a profile file, with its place, collected before failing.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::xml::line_col;

/// A file's text, kept so that diagnostics can quote the offending line.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The place of a byte offset in this file.
    pub fn locate(&self, offset: usize) -> Location {
        let (line, column) = line_col(&self.text, offset);
        Location {
            file: self.path.clone(),
            line,
            column,
        }
    }
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
    /// The offending source line, for rendering.
    #[serde(skip)]
    pub line_text: String,
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
            let shown: String = self.line_text.replace('\t', " ");
            let caret_at = self.location.column.saturating_sub(1);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{number} | {shown}");
            let _ = writeln!(out, "{pad} | {}^", " ".repeat(caret_at));
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "   = hint: {hint}");
        }
        out
    }
}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Collector<'s> {
    pub source: &'s Source,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'s> Collector<'s> {
    pub fn new(source: &'s Source) -> Collector<'s> {
        Collector {
            source,
            diagnostics: Vec::new(),
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
        let location = self.source.locate(offset);
        let line_text = self
            .source
            .text
            .lines()
            .nth(location.line.saturating_sub(1))
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string();
        self.diagnostics.push(Diagnostic {
            severity,
            location,
            path: path.to_string(),
            message: message.into(),
            hint,
            line_text,
        });
    }

    /// How many errors (not warnings) were collected so far.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
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

/// Display a path relative to the current directory when that is shorter.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}
