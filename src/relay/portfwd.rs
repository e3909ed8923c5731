//! portfwd's configuration files, read into relay [`Forward`]s.
//!
//! The grammar is portfwd 0.29's (`doc/conf.txt`, `src/conf.y`):
//!
//! ```text
//! file      := stmt*
//! stmt      := ("user" | "group" | "listen-on" | "bind-address" | "source-address") NAME
//!            | ["fragile"] ("tcp" | "udp") "{" map (";" map)* "}"
//! map       := port ("," port)* [("ftp-active-mode-on" | "ftp-passive-mode-on") NAME]*
//!              "{" host_map (";" host_map)* "}"
//! host_map  := from ("," from)* "=>" dst ("," dst)*
//! from      := [NAME ["/" MASK]] [":" port_range]           (empty: any source)
//! port_range:= PORT | PORT "+" | "+" PORT | PORT "+" PORT
//! dst       := NAME ":" PORT | "[" director command "]"
//! ```
//!
//! Comments are `/* ... */` (nested, as in portfwd); pvlaunch also takes `#` to the end of the
//! line, a `;` before a closing `}` and IPv6 destinations as `[ADDR]:PORT`. Ports are numbers
//! or names from /etc/services.
//!
//! Supported: `tcp` sections, several ports per map, source filters with masks and port ranges,
//! several rules per port, several destinations (used in turn, the next one tried when one is
//! down), `listen-on` (and its old name `bind-address`) and `source-address`.
//! Not supported, each an error naming its line: `udp`, `fragile`, the FTP modes, external
//! directors and `user`/`group`.
//!
//! One deliberate difference: portfwd listens on every interface unless `listen-on` says
//! otherwise; pvlaunch listens on 127.0.0.1 unless the file says `listen-on`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::allow::{IpNet, SourceFilter, resolve_host};
use super::config::{Forward, Lock, Rule};
use super::endpoint::{Host, ListenAddr, Target};

/// A portfwd file that could not be read or used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(path, diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

/// One problem in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column (in characters).
    pub line: usize,
    pub col: usize,
    /// How many characters to underline.
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The offending line, for the message.
    pub text: String,
}

fn render(path: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.render(path));
    }
    out
}

impl Diagnostic {
    /// `file:line:col: message`, the line, a caret under the culprit and a hint.
    pub fn render(&self, path: &Path) -> String {
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let mut out = format!(
            "{}:{}:{}: {}\n{pad} |\n{number} | {}\n{pad} | {}{}",
            path.display(),
            self.line,
            self.col,
            self.message,
            self.text.replace('\t', " "),
            " ".repeat(self.col.saturating_sub(1)),
            "^".repeat(self.len.max(1)),
        );
        if let Some(hint) = &self.hint {
            out.push_str(&format!("\n{pad} = hint: {hint}"));
        }
        out
    }
}

/// Names the file may use: host names and /etc/services port names.
pub trait Lookup {
    /// Every address of `name`.
    fn host(&self, name: &str) -> std::io::Result<Vec<IpAddr>>;
    /// The TCP port called `name`.
    fn service(&self, name: &str) -> Option<u16>;
}

/// The system resolver and /etc/services.
#[derive(Debug, Default)]
pub struct SystemLookup {
    services: std::sync::OnceLock<String>,
}

impl Lookup for SystemLookup {
    fn host(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
        resolve_host(name)
    }

    fn service(&self, name: &str) -> Option<u16> {
        let text = self
            .services
            .get_or_init(|| std::fs::read_to_string("/etc/services").unwrap_or_default());
        service_port(text, name)
    }
}

/// The TCP port of `name` (or an alias) in /etc/services syntax.
pub fn service_port(services: &str, name: &str) -> Option<u16> {
    services.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let primary = words.next()?;
        let (port, proto) = words.next()?.split_once('/')?;
        let aliases: Vec<&str> = words.collect();
        (proto == "tcp" && (primary == name || aliases.contains(&name)))
            .then(|| port.parse().ok())
            .flatten()
    })
}

/// A checked portfwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortfwdFile {
    /// In the file's order; a map with several ports gives one forward per port.
    pub forwards: Vec<Forward>,
    /// Whether the file says where to listen (`listen-on`, `bind-address`); if not, the
    /// forwards listen on 127.0.0.1.
    pub listen_given: bool,
}

/// Read and check a portfwd file.
pub fn load(path: &Path, lookup: &dyn Lookup) -> Result<PortfwdFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, lookup)
}

/// Check a portfwd file's text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str, lookup: &dyn Lookup) -> Result<PortfwdFile, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        path: path.to_path_buf(),
        diagnostics,
    };
    let tokens = lex(text).map_err(|d| invalid(vec![d.with_text(text)]))?;
    let stmts = Parser {
        tokens: &tokens,
        at: 0,
    }
    .file()
    .map_err(|d| invalid(vec![d.with_text(text)]))?;
    let mut lower = Lower {
        lookup,
        diagnostics: Vec::new(),
        forwards: Vec::new(),
        seen: HashMap::new(),
    };
    lower.file(&stmts);
    let listen_given = stmts.iter().any(
        |s| matches!(s, Stmt::Global { key, .. } if key.text == "listen-on" || key.text == "bind-address"),
    );
    if lower.diagnostics.is_empty() {
        Ok(PortfwdFile {
            forwards: lower.forwards,
            listen_given,
        })
    } else {
        Err(invalid(
            lower
                .diagnostics
                .into_iter()
                .map(|d| d.with_text(text))
                .collect(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    col: usize,
    len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Name(String),
    /// A bracketed external director command.
    Director(String),
    LBrace,
    RBrace,
    Semi,
    Comma,
    Colon,
    Slash,
    Plus,
    Arrow,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Name(name) => write!(f, "`{name}`"),
            Tok::Director(_) => f.write_str("a `[...]` director"),
            Tok::LBrace => f.write_str("`{`"),
            Tok::RBrace => f.write_str("`}`"),
            Tok::Semi => f.write_str("`;`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Colon => f.write_str("`:`"),
            Tok::Slash => f.write_str("`/`"),
            Tok::Plus => f.write_str("`+`"),
            Tok::Arrow => f.write_str("`=>`"),
            Tok::Eof => f.write_str("the end of the file"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: Pos,
}

/// A diagnostic before the offending line's text is attached.
#[derive(Debug)]
struct Problem {
    pos: Pos,
    message: String,
    hint: Option<String>,
}

impl Problem {
    fn new(pos: Pos, message: impl Into<String>) -> Problem {
        Problem {
            pos,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }

    fn with_text(self, source: &str) -> Diagnostic {
        let text = source
            .lines()
            .nth(self.pos.line - 1)
            .unwrap_or("")
            .to_string();
        let len = self
            .pos
            .len
            .min(text.chars().count().saturating_sub(self.pos.col - 1))
            .max(1);
        Diagnostic {
            line: self.pos.line,
            col: self.pos.col,
            len,
            message: self.message,
            hint: self.hint,
            text,
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn lex(text: &str) -> Result<Vec<Token>, Problem> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    // Advance over `n` characters, keeping line and column.
    let step = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize| {
        for _ in 0..n {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let start = Pos { line, col, len: 1 };
        let next = chars.get(i + 1).copied();
        let single = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            ';' => Some(Tok::Semi),
            ',' => Some(Tok::Comma),
            ':' => Some(Tok::Colon),
            '+' => Some(Tok::Plus),
            '/' if next != Some('*') => Some(Tok::Slash),
            _ => None,
        };
        if let Some(tok) = single {
            tokens.push(Token { tok, pos: start });
            step(&mut i, &mut line, &mut col, 1);
        } else if c.is_whitespace() {
            step(&mut i, &mut line, &mut col, 1);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                step(&mut i, &mut line, &mut col, 1);
            }
        } else if c == '/' {
            // A comment; portfwd's nest.
            let mut depth = 0usize;
            loop {
                if i >= chars.len() {
                    return Err(
                        Problem::new(Pos { len: 2, ..start }, "unterminated comment").hint(
                            "close it with `*/` (comments nest: each `/*` needs its own `*/`)",
                        ),
                    );
                }
                match (chars[i], chars.get(i + 1)) {
                    ('/', Some('*')) => {
                        depth += 1;
                        step(&mut i, &mut line, &mut col, 2);
                    }
                    ('*', Some('/')) => {
                        depth -= 1;
                        step(&mut i, &mut line, &mut col, 2);
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => step(&mut i, &mut line, &mut col, 1),
                }
            }
        } else if c == '=' && next == Some('>') {
            tokens.push(Token {
                tok: Tok::Arrow,
                pos: Pos { len: 2, ..start },
            });
            step(&mut i, &mut line, &mut col, 2);
        } else if c == '[' {
            let Some(end) = chars[i..].iter().position(|&c| c == ']') else {
                return Err(Problem::new(start, "unterminated `[`")
                    .hint("portfwd's `[...]` names an external director program"));
            };
            let command: String = chars[i + 1..i + end].iter().collect();
            tokens.push(Token {
                tok: Tok::Director(command),
                pos: Pos {
                    len: end + 1,
                    ..start
                },
            });
            step(&mut i, &mut line, &mut col, end + 1);
        } else if is_name_start(c) {
            let len = chars[i..].iter().take_while(|&&c| is_name_char(c)).count();
            let name: String = chars[i..i + len].iter().collect();
            tokens.push(Token {
                tok: Tok::Name(name),
                pos: Pos { len, ..start },
            });
            step(&mut i, &mut line, &mut col, len);
        } else {
            let mut problem = Problem::new(start, format!("unexpected character `{c}`"));
            if c == '=' {
                problem = problem.hint("the arrow is `=>`");
            } else if c == '[' || c == ']' || c == '"' {
                problem = problem.hint("names are letters, digits, `_`, `.` and `-`");
            }
            return Err(problem);
        }
    }
    tokens.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col, len: 1 },
    });
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Parser: tokens to statements, syntax only.

#[derive(Debug, Clone)]
struct Word {
    text: String,
    pos: Pos,
}

#[derive(Debug)]
enum Stmt {
    Global {
        key: Word,
        value: Word,
    },
    Section {
        fragile: Option<Pos>,
        proto: Word,
        maps: Vec<Map>,
    },
}

#[derive(Debug)]
struct Map {
    ports: Vec<Word>,
    ftp: Vec<Word>,
    rules: Vec<HostMap>,
}

#[derive(Debug)]
struct HostMap {
    from: Vec<From>,
    to: Vec<Dst>,
}

#[derive(Debug)]
struct From {
    host: Option<(Word, Option<Word>)>,
    ports: Option<PortRange>,
}

#[derive(Debug)]
struct PortRange {
    low: Option<Word>,
    plus: Option<Pos>,
    high: Option<Word>,
}

#[derive(Debug)]
enum Dst {
    Addr { host: Word, port: Word },
    Director(Pos),
}

const GLOBALS: [&str; 5] = [
    "user",
    "group",
    "listen-on",
    "bind-address",
    "source-address",
];
const FTP_MODES: [&str; 2] = ["ftp-active-mode-on", "ftp-passive-mode-on"];

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.at]
    }

    fn peek_is(&self, tok: &Tok) -> bool {
        &self.peek().tok == tok
    }

    fn peek_name(&self, name: &str) -> bool {
        matches!(&self.peek().tok, Tok::Name(n) if n == name)
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if token.tok != Tok::Eof {
            self.at += 1;
        }
        token
    }

    fn unexpected(&self, expected: &str) -> Problem {
        let token = self.peek();
        Problem::new(
            token.pos,
            format!("expected {expected}, found {}", token.tok),
        )
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<Pos, Problem> {
        if self.peek_is(&tok) {
            Ok(self.bump().pos)
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn name(&mut self, expected: &str) -> Result<Word, Problem> {
        match &self.peek().tok {
            Tok::Name(text) => {
                let text = text.clone();
                Ok(Word {
                    text,
                    pos: self.bump().pos,
                })
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn file(mut self) -> Result<Vec<Stmt>, Problem> {
        let mut stmts = Vec::new();
        while !self.peek_is(&Tok::Eof) {
            stmts.push(self.stmt()?);
        }
        Ok(stmts)
    }

    fn stmt(&mut self) -> Result<Stmt, Problem> {
        let fragile = if self.peek_name("fragile") {
            Some(self.bump().pos)
        } else {
            None
        };
        if let Tok::Name(name) = &self.peek().tok {
            if name == "tcp" || name == "udp" {
                let proto = self.name("`tcp`")?;
                self.expect(Tok::LBrace, &format!("`{{` after `{}`", proto.text))?;
                let maps = self.separated(Tok::RBrace, Self::map)?;
                return Ok(Stmt::Section {
                    fragile,
                    proto,
                    maps,
                });
            }
            if fragile.is_none() && GLOBALS.contains(&name.as_str()) {
                let key = self.name("an option")?;
                let value = self.name(&format!("a value after `{}`", key.text))?;
                return Ok(Stmt::Global { key, value });
            }
        }
        if fragile.is_some() {
            return Err(self.unexpected("`tcp` after `fragile`"));
        }
        let mut problem = self.unexpected(
            "`tcp`, `udp`, `listen-on`, `source-address`, `bind-address`, `user` or `group`",
        );
        if let Tok::Name(name) = &self.peek().tok {
            let known = ["tcp", "udp", "fragile"].into_iter().chain(GLOBALS);
            if let Some(best) = known.min_by_key(|k| strsim::levenshtein(k, name))
                && strsim::levenshtein(best, name) <= 2
            {
                problem = problem.hint(format!("did you mean `{best}`?"));
            }
        }
        Err(problem)
    }

    /// `item (";" item)* [";"] <close>`: portfwd separates with `;`; a `;` before the closing
    /// brace is tolerated.
    fn separated<T>(
        &mut self,
        close: Tok,
        mut item: impl FnMut(&mut Self) -> Result<T, Problem>,
    ) -> Result<Vec<T>, Problem> {
        let mut items = vec![item(self)?];
        loop {
            if self.peek_is(&close) {
                self.bump();
                return Ok(items);
            }
            self.expect(Tok::Semi, &format!("`;` or {close}"))?;
            if self.peek_is(&close) {
                self.bump();
                return Ok(items);
            }
            items.push(item(self)?);
        }
    }

    fn map(&mut self) -> Result<Map, Problem> {
        let mut ports = vec![self.name("a port number or name")?];
        while self.peek_is(&Tok::Comma) {
            self.bump();
            ports.push(self.name("a port after `,`")?);
        }
        let mut ftp = Vec::new();
        while FTP_MODES.iter().any(|mode| self.peek_name(mode)) {
            ftp.push(self.name("an FTP mode")?);
            self.name("an address after the FTP mode")?;
        }
        self.expect(Tok::LBrace, "`{` (or `,` and another port)")?;
        let rules = self.separated(Tok::RBrace, Self::host_map)?;
        Ok(Map { ports, ftp, rules })
    }

    fn host_map(&mut self) -> Result<HostMap, Problem> {
        let mut from = vec![self.from()?];
        while self.peek_is(&Tok::Comma) {
            self.bump();
            from.push(self.from()?);
        }
        self.expect(Tok::Arrow, "`=>` (or `,` and another source)")?;
        let mut to = vec![self.dst()?];
        while self.peek_is(&Tok::Comma) {
            self.bump();
            to.push(self.dst()?);
        }
        Ok(HostMap { from, to })
    }

    fn from(&mut self) -> Result<From, Problem> {
        let host = if matches!(self.peek().tok, Tok::Name(_)) {
            let name = self.name("a source")?;
            let mask = if self.peek_is(&Tok::Slash) {
                self.bump();
                Some(self.name("a mask length after `/`")?)
            } else {
                None
            };
            Some((name, mask))
        } else {
            None
        };
        let ports = if self.peek_is(&Tok::Colon) {
            self.bump();
            Some(self.port_range()?)
        } else {
            None
        };
        Ok(From { host, ports })
    }

    fn port_range(&mut self) -> Result<PortRange, Problem> {
        let low = if matches!(self.peek().tok, Tok::Name(_)) {
            Some(self.name("")?)
        } else {
            None
        };
        let plus = if self.peek_is(&Tok::Plus) {
            Some(self.bump().pos)
        } else {
            None
        };
        let high = if plus.is_some() && matches!(self.peek().tok, Tok::Name(_)) {
            Some(self.name("")?)
        } else {
            None
        };
        if low.is_none() && high.is_none() {
            return Err(
                self.unexpected("a source port or range (`1024`, `1024+`, `+1023`, `1+99`)")
            );
        }
        Ok(PortRange { low, plus, high })
    }

    fn dst(&mut self) -> Result<Dst, Problem> {
        if let Tok::Director(text) = &self.peek().tok {
            // pvlaunch's extension: `[IPV6]:PORT`; portfwd's `[command]` is a director.
            let is_v6 = text.parse::<std::net::Ipv6Addr>().is_ok();
            let host = Word {
                text: text.clone(),
                pos: self.bump().pos,
            };
            if is_v6 && self.peek_is(&Tok::Colon) {
                self.bump();
                let port = self.name("a destination port")?;
                return Ok(Dst::Addr { host, port });
            }
            return Ok(Dst::Director(host.pos));
        }
        let host = self.name("a destination `host:port`")?;
        self.expect(Tok::Colon, &format!("`:` and a port after `{}`", host.text))?;
        let port = self.name("a destination port")?;
        Ok(Dst::Addr { host, port })
    }
}

// ---------------------------------------------------------------------------------------------
// Lowering: statements to forwards, collecting every problem.

struct Lower<'a> {
    lookup: &'a dyn Lookup,
    diagnostics: Vec<Problem>,
    forwards: Vec<Forward>,
    /// Listening port -> the line that first forwards it.
    seen: HashMap<(Host, u16), usize>,
}

impl Lower<'_> {
    fn file(&mut self, stmts: &[Stmt]) {
        let mut listen = Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut source: Option<IpAddr> = None;
        for stmt in stmts {
            match stmt {
                Stmt::Global { key, value } => match key.text.as_str() {
                    "listen-on" | "bind-address" => listen = Host::parse(&value.text),
                    "source-address" => source = self.address(value),
                    "user" | "group" => self.problem(
                        Problem::new(key.pos, format!("`{}` is not supported", key.text)).hint(
                            "pvlaunch relay never switches users: start it as the user it should run as",
                        ),
                    ),
                    _ => unreachable!("the parser only accepts known options"),
                },
                Stmt::Section { fragile, proto, maps } => {
                    if proto.text == "udp" {
                        self.problem(
                            Problem::new(proto.pos, "udp forwarding is not supported")
                                .hint("pvlaunch relay forwards TCP only; ParaView needs nothing else"),
                        );
                    }
                    if let Some(pos) = fragile {
                        self.problem(
                            Problem::new(*pos, "`fragile` is not supported").hint(
                                "pvlaunch closes a connection whose destination cannot be reached; remove `fragile`",
                            ),
                        );
                    }
                    for map in maps {
                        self.map(map, &listen, source, proto.text == "tcp" && fragile.is_none());
                    }
                }
            }
        }
    }

    fn problem(&mut self, problem: Problem) {
        self.diagnostics.push(problem);
    }

    fn map(&mut self, map: &Map, listen: &Host, source: Option<IpAddr>, keep: bool) {
        for mode in &map.ftp {
            self.problem(
                Problem::new(mode.pos, format!("`{}` is not supported", mode.text)).hint(
                    "pvlaunch relay does not rewrite FTP commands; forward the port without it",
                ),
            );
        }
        let rules: Vec<Rule> = map
            .rules
            .iter()
            .filter_map(|rule| self.rule(rule))
            .collect();
        let ports: Vec<(u16, &Word)> = map
            .ports
            .iter()
            .filter_map(|word| Some((self.port(word)?, word)))
            .collect();
        if !keep || !map.ftp.is_empty() || rules.len() != map.rules.len() {
            return;
        }
        for (port, word) in ports {
            if port != 0 {
                if let Some(line) = self.seen.get(&(listen.clone(), port)) {
                    let line = *line;
                    self.problem(
                        Problem::new(word.pos, format!("port {port} is already forwarded")).hint(
                            format!("line {line} forwards it first; merge the rules into one map"),
                        ),
                    );
                    continue;
                }
                self.seen.insert((listen.clone(), port), word.pos.line);
            }
            self.forwards.push(Forward {
                listen: ListenAddr::Tcp {
                    host: listen.clone(),
                    port,
                },
                rules: rules.clone(),
                source,
                lock: Lock::default(),
            });
        }
    }

    fn rule(&mut self, rule: &HostMap) -> Option<Rule> {
        let before = self.diagnostics.len();
        let mut from = Vec::new();
        for f in &rule.from {
            from.extend(self.from(f));
        }
        let mut to = Vec::new();
        for dst in &rule.to {
            match dst {
                Dst::Director(pos) => self.problem(
                    Problem::new(*pos, "external directors are not supported")
                        .hint("name the destination as `host:port`"),
                ),
                Dst::Addr { host, port } => {
                    if let Some(port) = self.port(port) {
                        if port == 0 {
                            self.problem(Problem::new(host.pos, "destination port 0 is not valid"));
                        } else {
                            to.push(Target::Tcp {
                                host: Host::parse(&host.text),
                                port,
                            });
                        }
                    }
                }
            }
        }
        // An empty source (`=> host:port`) accepts everyone: no filter.
        if rule
            .from
            .iter()
            .any(|f| f.host.is_none() && f.ports.is_none())
        {
            from.clear();
        }
        (self.diagnostics.len() == before).then_some(Rule { from, to })
    }

    fn from(&mut self, from: &From) -> Vec<SourceFilter> {
        let ports = match &from.ports {
            None => 0..=u16::MAX,
            Some(range) => {
                let low = range.low.as_ref().map(|w| self.port(w));
                let high = range.high.as_ref().map(|w| self.port(w));
                let (low, high) = match (low, range.plus, high) {
                    (Some(Some(low)), None, None) => (low, low),
                    (Some(Some(low)), Some(_), None) => (low, u16::MAX),
                    (None, Some(_), Some(Some(high))) => (0, high),
                    (Some(Some(low)), Some(_), Some(Some(high))) => (low, high),
                    _ => return Vec::new(), // a bad port, already reported
                };
                if low > high {
                    let pos = range.low.as_ref().map(|w| w.pos).unwrap_or(Pos {
                        line: 1,
                        col: 1,
                        len: 1,
                    });
                    self.problem(Problem::new(
                        pos,
                        format!("port range {low}+{high} is empty"),
                    ));
                    return Vec::new();
                }
                low..=high
            }
        };
        let Some((name, mask)) = &from.host else {
            return vec![SourceFilter { net: None, ports }];
        };
        let addrs = match name.text.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match self.lookup.host(&name.text) {
                Ok(addrs) if !addrs.is_empty() => addrs,
                Ok(_) => {
                    self.problem(Problem::new(
                        name.pos,
                        format!("`{}` resolves to no address", name.text),
                    ));
                    return Vec::new();
                }
                Err(err) => {
                    self.problem(Problem::new(
                        name.pos,
                        format!("cannot resolve `{}`: {err}", name.text),
                    ));
                    return Vec::new();
                }
            },
        };
        let mut filters = Vec::new();
        for addr in addrs {
            let net = match mask {
                None => IpNet::host(addr),
                Some(mask) => {
                    let max = if addr.to_canonical().is_ipv4() {
                        32
                    } else {
                        128
                    };
                    match mask
                        .text
                        .parse::<u8>()
                        .ok()
                        .and_then(|len| IpNet::new(addr, len))
                    {
                        Some(net) => net,
                        None => {
                            self.problem(
                                Problem::new(
                                    mask.pos,
                                    format!("`{}` is not a mask length", mask.text),
                                )
                                .hint(format!("a mask length is a number from 0 to {max}")),
                            );
                            return Vec::new();
                        }
                    }
                }
            };
            filters.push(SourceFilter {
                net: Some(net),
                ports: ports.clone(),
            });
        }
        filters
    }

    fn port(&mut self, word: &Word) -> Option<u16> {
        if word.text.bytes().all(|b| b.is_ascii_digit()) {
            let port = word.text.parse::<u16>().ok();
            if port.is_none() {
                self.problem(
                    Problem::new(word.pos, format!("port {} is out of range", word.text))
                        .hint("ports are 0 to 65535"),
                );
            }
            return port;
        }
        let port = self.lookup.service(&word.text);
        if port.is_none() {
            self.problem(
                Problem::new(word.pos, format!("unknown port name `{}`", word.text))
                    .hint("use a number, or a TCP service name from /etc/services"),
            );
        }
        port
    }

    fn address(&mut self, word: &Word) -> Option<IpAddr> {
        if let Ok(ip) = word.text.parse::<IpAddr>() {
            return Some(ip);
        }
        match self.lookup.host(&word.text) {
            Ok(addrs) => {
                let first = addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(addrs.first())
                    .copied();
                if first.is_none() {
                    self.problem(Problem::new(
                        word.pos,
                        format!("`{}` resolves to no address", word.text),
                    ));
                }
                first
            }
            Err(err) => {
                self.problem(Problem::new(
                    word.pos,
                    format!("cannot resolve `{}`: {err}", word.text),
                ));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed names, so tests do not depend on the machine's resolver or /etc/services.
    struct FakeLookup;

    impl Lookup for FakeLookup {
        fn host(&self, name: &str) -> std::io::Result<Vec<IpAddr>> {
            match name {
                "localhost" => Ok(vec![IpAddr::from([127, 0, 0, 1])]),
                "node1" => Ok(vec![IpAddr::from([10, 0, 0, 11])]),
                "dual" => Ok(vec![
                    IpAddr::from([10, 0, 0, 12]),
                    "fd00::12".parse().unwrap(),
                ]),
                _ => Err(std::io::Error::other("name not known")),
            }
        }

        fn service(&self, name: &str) -> Option<u16> {
            service_port(SERVICES, name)
        }
    }

    const SERVICES: &str = "\
# comment
telnet\t\t23/tcp
http\t\t80/tcp\t\twww\t# WorldWideWeb HTTP
syslog\t\t514/udp
";

    fn ok(text: &str) -> Vec<Forward> {
        match parse(Path::new("fwd.cfg"), text, &FakeLookup) {
            Ok(file) => file.forwards,
            Err(err) => panic!("{err}"),
        }
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(Path::new("fwd.cfg"), text, &FakeLookup) {
            Ok(file) => panic!("expected an error, got {file:?}"),
            Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics,
            Err(err) => panic!("{err}"),
        }
    }

    fn first_error(text: &str) -> String {
        errors(text)[0].render(Path::new("fwd.cfg"))
    }

    fn target(host: &str, port: u16) -> Target {
        Target::Tcp {
            host: Host::parse(host),
            port,
        }
    }

    #[test]
    fn the_wiki_recipe() {
        let forwards = ok("tcp { 11111 { => client_host:11111 } }");
        assert_eq!(
            forwards,
            vec![Forward::new(
                ListenAddr::loopback(11111),
                target("client_host", 11111)
            )]
        );
    }

    #[test]
    fn several_ports_rules_filters_and_comments() {
        let text = String::from(
            "/* portfwd1.cfg, /* nested */ still a comment */
listen-on 0.0.0.0   # pvlaunch also takes hash comments
tcp
{
        12000 {
                localhost/24:+5000  => 127.0.0.1:23;
                node1, dual:1024+   => 127.0.0.1:www;
                /* anything else */ => 127.0.0.1:80, backup:8080
        };
        11000, telnet { localhost => 127.0.0.1:23 };
}
source-address 10.0.0.1
tcp { 0 { node1:1+99 => [::1]:7, [/bin/director] } }
",
        );
        let diags = errors(&text);
        assert_eq!(diags.len(), 1);
        assert_eq!(
            (diags[0].line, diags[0].message.as_str()),
            (13, "external directors are not supported")
        );
        let forwards = ok(&text.replace(", [/bin/director]", ""));
        assert_eq!(forwards.len(), 4);
        let any = Host::Ip(Ipv4Addr::UNSPECIFIED.into());
        assert_eq!(
            forwards[0].listen,
            ListenAddr::Tcp {
                host: any.clone(),
                port: 12000
            }
        );
        assert_eq!(
            forwards[1].listen,
            ListenAddr::Tcp {
                host: any.clone(),
                port: 11000
            }
        );
        assert_eq!(
            forwards[2].listen,
            ListenAddr::Tcp {
                host: any.clone(),
                port: 23
            }
        );
        assert_eq!(forwards[3].listen, ListenAddr::Tcp { host: any, port: 0 });
        let rules = &forwards[0].rules;
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0].from,
            vec![SourceFilter {
                net: IpNet::new([127, 0, 0, 0].into(), 24),
                ports: 0..=5000
            }]
        );
        assert_eq!(rules[1].from.len(), 3); // node1, and both addresses of dual
        assert_eq!(rules[1].from[2].ports, 1024..=u16::MAX);
        assert_eq!(rules[1].to, vec![target("127.0.0.1", 80)]);
        assert!(rules[2].from.is_empty());
        assert_eq!(
            rules[2].to,
            vec![target("127.0.0.1", 80), target("backup", 8080)]
        );
        assert!(rules[0].matches(Some("127.0.0.9:4000".parse().unwrap())));
        assert!(!rules[0].matches(Some("127.0.0.9:6000".parse().unwrap())));
        assert_eq!(forwards[0].source, None);
        assert_eq!(forwards[3].source, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(forwards[3].rules[0].from[0].ports, 1..=99);
        assert_eq!(forwards[3].rules[0].to, vec![target("::1", 7)]);
    }

    #[test]
    fn empty_files_and_old_bind_address() {
        assert!(ok("").is_empty());
        assert!(ok("/* nothing */\n# at all\n").is_empty());
        let file = parse(
            Path::new("f"),
            "bind-address 127.0.0.2\ntcp { 1 { => a:2 } ; }",
            &FakeLookup,
        );
        let file = file.unwrap();
        assert_eq!(file.forwards[0].listen.to_string(), "127.0.0.2:1");
        assert!(file.listen_given);
        assert!(
            !parse(Path::new("f"), "tcp { 1 { => a:2 } }", &FakeLookup)
                .unwrap()
                .listen_given
        );
    }

    #[test]
    fn unsupported_parts_name_their_line() {
        let diags = errors("tcp { 10000 { => a:1 } }\n\nudp {\n  10000 { => a:2 }\n}\n");
        assert_eq!(diags.len(), 1);
        assert_eq!((diags[0].line, diags[0].col), (3, 1));
        assert_eq!(diags[0].message, "udp forwarding is not supported");

        let text = "user nobody\nfragile tcp { 1 { => a:1 } }\ntcp {\n  2 ftp-passive-mode-on 127.0.0.1 { => a:21 };\n  3 { => [/usr/bin/director] }\n}\n";
        let diags = errors(text);
        let found: Vec<(usize, &str)> =
            diags.iter().map(|d| (d.line, d.message.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (1, "`user` is not supported"),
                (2, "`fragile` is not supported"),
                (4, "`ftp-passive-mode-on` is not supported"),
                (5, "external directors are not supported"),
            ]
        );
    }

    #[test]
    fn syntax_errors_show_the_line_and_a_caret() {
        assert_eq!(
            first_error("tcp {\n  11111 { => client_host 11111 }\n}\n"),
            "fwd.cfg:2:26: expected `:` and a port after `client_host`, found `11111`
  |
2 |   11111 { => client_host 11111 }
  |                          ^^^^^"
        );
        assert_eq!(
            first_error("tpc { 1 { => a:1 } }"),
            "fwd.cfg:1:1: expected `tcp`, `udp`, `listen-on`, `source-address`, `bind-address`, `user` or `group`, found `tpc`
  |
1 | tpc { 1 { => a:1 } }
  | ^^^
  = hint: did you mean `tcp`?"
        );
        let diags = errors("tcp { 1 { => a:1 }\n");
        assert_eq!(
            diags[0].message,
            "expected `;` or `}`, found the end of the file"
        );
        assert_eq!(diags[0].line, 2);
        let diags = errors("tcp { 1 { = a:1 } }");
        assert_eq!(diags[0].message, "unexpected character `=`");
        assert_eq!(diags[0].hint.as_deref(), Some("the arrow is `=>`"));
        let diags = errors("\n\n/* open /* nested */\ntcp { 1 { => a:1 } }");
        assert_eq!(
            (diags[0].line, diags[0].message.as_str()),
            (3, "unterminated comment")
        );
        let diags = errors("tcp { 1 { => a:1 } ; ; }");
        assert_eq!(
            diags[0].message,
            "expected a port number or name, found `;`"
        );
        let diags = errors("tcp { 1 { node1: => a:1 } }");
        assert!(
            diags[0]
                .message
                .starts_with("expected a source port or range")
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let text = "tcp {\n  70000 { => a:1 };\n  2 { node1/33 => a:1 };\n  3 { nowhere => a:1 };\n  4 { => a:gopherx };\n  5 { :9+8 => a:1 };\n  6 { => a:0 }\n}\n";
        let found: Vec<(usize, String)> = errors(text)
            .into_iter()
            .map(|d| (d.line, d.message))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, "port 70000 is out of range".to_string()),
                (3, "`33` is not a mask length".to_string()),
                (4, "cannot resolve `nowhere`: name not known".to_string()),
                (5, "unknown port name `gopherx`".to_string()),
                (6, "port range 9+8 is empty".to_string()),
                (7, "destination port 0 is not valid".to_string()),
            ]
        );
    }

    #[test]
    fn a_port_forwarded_twice_is_an_error() {
        let diags = errors("tcp { 1 { => a:1 } }\ntcp { 2, 1 { => b:1 } }\n");
        assert_eq!((diags[0].line, diags[0].col), (2, 10));
        assert_eq!(diags[0].message, "port 1 is already forwarded");
        // The same port on another listen address is fine, and so is port 0.
        ok(
            "tcp { 1 { => a:1 } }\nlisten-on 10.0.0.1\ntcp { 1 { => b:1 }; 0 { => c:1 }; 0 { => d:1 } }",
        );
    }

    #[test]
    fn services_file() {
        assert_eq!(service_port(SERVICES, "telnet"), Some(23));
        assert_eq!(service_port(SERVICES, "www"), Some(80));
        assert_eq!(service_port(SERVICES, "syslog"), None);
        assert_eq!(service_port(SERVICES, "comment"), None);
    }

    #[test]
    fn a_missing_file_says_which() {
        let err = load(Path::new("/nonexistent/fwd.cfg"), &FakeLookup).unwrap_err();
        assert!(
            err.to_string().starts_with("read /nonexistent/fwd.cfg: "),
            "{err}"
        );
    }
}
