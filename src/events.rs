//! What a session reports, as data. One [`Event`] type; three ways to show it:
//! progress for a person (stderr, a spinner with the phase and elapsed time), NDJSON for scripts
//! (`--json`, one object per line on stdout), and plain lines on stdout when ParaView runs
//! pvlaunch (ParaView shows a command's stderr as errors, so nothing routine goes there).
//! The NDJSON schema is documented in docs/session.md.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Everything a session can report. Serialised with `"event": "<snake_case name>"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan is ready.
    Plan {
        profile: String,
        recipe: String,
        scheduler: String,
        login: String,
        client: String,
    },
    /// The local client was started (or is awaited) and listens.
    ClientListening {
        port: u16,
        mode: String,
    },
    /// `--client wait`: pvlaunch waits for a client the person starts, listening on `url`.
    WaitingForClient {
        url: String,
        /// The connect-id the client must use (`--connect-id=N`), when the session has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        connect_id: Option<u32>,
    },
    /// Authenticating to the login node (a password or 2FA prompt may follow).
    SshConnecting {
        destination: String,
    },
    SshConnected {
        destination: String,
        login_host: String,
        /// Whose master carries the session: `new` (this session's login), `kept` (pvlaunch's,
        /// from an earlier session: no login), `user` (the user's own: no login).
        master: &'static str,
    },
    /// The remote forward is open on the login node.
    ForwardOpened {
        remote_port: u16,
        bind_address: String,
        compute_facing: bool,
    },
    /// The relay on the login node listens where compute nodes reach it.
    RelayStarted {
        host: String,
        port: u16,
        allowed: Vec<String>,
    },
    /// `auto` decided which recipe to use.
    RecipeChosen {
        recipe: String,
        reason: String,
    },
    JobSubmitted {
        job_id: String,
        scheduler: String,
        /// The job's output file on the login node, relative to the home directory.
        output: String,
    },
    JobQueued {
        job_id: String,
        reason: Option<String>,
        estimated_start: Option<String>,
    },
    JobRunning {
        job_id: String,
        nodes: Vec<String>,
    },
    /// Two-hop: pvserver listens on a compute node (`host` as pvserver printed it).
    ServerListening {
        host: String,
        port: u16,
    },
    /// Two-hop: the tunnel to pvserver is open; the client connects to `url`.
    TunnelOpened {
        node: String,
        port: u16,
        url: String,
    },
    /// pvserver reached the client through the tunnel (two-hop: the client reached pvserver).
    ServerConnected {
        peer: String,
    },
    /// The ParaView connection closed.
    SessionEnded {
        bytes_to_client: u64,
        bytes_to_server: u64,
        seconds: f64,
    },
    /// The job left the queue.
    JobFinished {
        job_id: String,
        state: String,
        exit_code: Option<i32>,
        output_tail: Vec<String>,
    },
    /// A cleanup step ran.
    Cleanup {
        step: String,
        ok: bool,
        detail: Option<String>,
    },
    /// Whether this session survives a dropped link, and why.
    Resumable {
        resumable: bool,
        why: String,
    },
    /// The link to the login node is gone (the ssh connection ended or stopped answering);
    /// the session tries to come back for `grace_secs`, the job staying where it is.
    LinkLost {
        why: String,
        grace_secs: u64,
    },
    /// Logging in again: attempt `attempt`; `grace_left_secs` until the session gives up.
    Reconnecting {
        attempt: u32,
        grace_left_secs: u64,
    },
    /// The session is back: `gap_secs` after the link was lost, in `attempts` attempts.
    LinkRestored {
        gap_secs: u64,
        attempts: u32,
    },
    /// ParaView's stream went on over the new link: `replayed` bytes were sent again.
    StreamResumed {
        replayed: u64,
    },
    Warning {
        message: String,
    },
    Error {
        message: String,
        hint: Option<String>,
    },
    /// The last event: the exit code pvlaunch returns.
    Done {
        exit_code: i32,
        reason: String,
    },
    /// The job reaches its wall time in about `minutes_left` minutes (`<Job warn-before>`).
    WalltimeWarning {
        job_id: String,
        minutes_left: u64,
    },
}

impl Event {
    /// The phase a person sees in the spinner.
    fn phase(&self) -> Option<String> {
        Some(match self {
            Event::ClientListening { port, .. } => format!("client listening on port {port}"),
            Event::WaitingForClient { url, .. } => {
                format!("waiting for your client on {url}")
            }
            Event::SshConnecting { destination } => format!("connecting to {destination}"),
            Event::JobSubmitted { job_id, .. } => format!("job {job_id} submitted"),
            Event::JobQueued {
                job_id,
                reason,
                estimated_start,
            } => {
                let mut s = format!("job {job_id} queued");
                if let Some(r) = reason {
                    s.push_str(&format!(" ({r})"));
                }
                if let Some(e) = estimated_start {
                    s.push_str(&format!(", estimated start {e}"));
                }
                s
            }
            Event::JobRunning { job_id, nodes } => {
                format!("job {job_id} running on {}", nodes.join(","))
            }
            Event::ServerListening { host, port } => {
                format!("pvserver listens on {host}:{port}: opening the tunnel")
            }
            Event::TunnelOpened { url, .. } => {
                format!("waiting for the client to connect to {url}")
            }
            Event::ServerConnected { .. } => {
                "connected: ParaView session running (Ctrl-C ends it)".into()
            }
            Event::LinkLost { grace_secs, .. } => {
                format!("link lost: coming back within {}", clock(*grace_secs))
            }
            Event::Reconnecting {
                attempt,
                grace_left_secs,
            } => format!(
                "link lost: logging in again (attempt {attempt}, {} left)",
                clock(*grace_left_secs)
            ),
            _ => return None,
        })
    }

    /// One line for a person or for ParaView's log.
    pub fn line(&self) -> String {
        match self {
            Event::Plan {
                profile,
                recipe,
                scheduler,
                login,
                client,
            } => {
                format!("{profile}: {recipe} recipe, {scheduler} job via {login}, client: {client}")
            }
            Event::ClientListening { port, mode } => {
                format!("client ({mode}) listening on port {port}")
            }
            Event::WaitingForClient { url, connect_id } => match connect_id {
                Some(id) => format!(
                    "start your ParaView client now with --connect-id={id}: File > Connect, a server with resource {url} (pvlaunch waits for it)"
                ),
                None => format!(
                    "start your ParaView client now: File > Connect, a server with resource {url} (pvlaunch waits for it)"
                ),
            },
            Event::SshConnecting { destination } => {
                format!("connecting to {destination} (answer any prompt once)")
            }
            Event::SshConnected {
                destination,
                login_host,
                master,
            } => match *master {
                "kept" => format!(
                    "connected to {destination} ({login_host}) through the ssh login kept from an earlier session"
                ),
                "user" => {
                    format!("connected to {destination} ({login_host}) through your own ssh master")
                }
                _ => format!("connected to {destination} ({login_host})"),
            },
            Event::ForwardOpened {
                remote_port,
                bind_address,
                compute_facing,
            } => format!(
                "remote forward open on {bind_address}:{remote_port}{}",
                if *compute_facing {
                    ""
                } else {
                    " (login node only)"
                }
            ),
            Event::RecipeChosen { recipe, reason } => format!("recipe {recipe}: {reason}"),
            Event::RelayStarted {
                host,
                port,
                allowed,
            } => format!(
                "relay listening on {host}:{port}{}",
                if allowed.is_empty() {
                    String::new()
                } else {
                    format!(" (accepts {})", allowed.join(", "))
                }
            ),
            Event::JobSubmitted {
                job_id,
                scheduler,
                output,
            } => {
                format!("submitted {scheduler} job {job_id} (output: ~/{output})")
            }
            Event::JobQueued { .. } | Event::JobRunning { .. } => self.phase().unwrap_or_default(),
            Event::ServerListening { host, port } => {
                format!("pvserver accepts connections on {host}:{port}")
            }
            Event::TunnelOpened { node, port, url } => {
                format!(
                    "tunnel open to {node}:{port} through the login node: connect the client to {url}"
                )
            }
            Event::ServerConnected { peer } => format!("pvserver connected (through {peer})"),
            Event::SessionEnded {
                bytes_to_client,
                bytes_to_server,
                seconds,
            } => format!(
                "session ended after {seconds:.1} s ({} to the client, {} to the server)",
                human_bytes(*bytes_to_client),
                human_bytes(*bytes_to_server)
            ),
            Event::JobFinished {
                job_id,
                state,
                exit_code,
                output_tail,
            } => {
                let mut s = format!("job {job_id} finished: {state}");
                if let Some(c) = exit_code {
                    s.push_str(&format!(" (exit code {c})"));
                }
                if !output_tail.is_empty() {
                    s.push_str("\n  last lines of the job's output:");
                    for l in output_tail {
                        s.push_str(&format!("\n  | {l}"));
                    }
                }
                s
            }
            Event::Cleanup { step, ok, detail } => format!(
                "cleanup: {step}{}{}",
                if *ok { "" } else { " FAILED" },
                detail
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            Event::Resumable { resumable, why } => {
                format!(
                    "{}: {why}",
                    if *resumable {
                        "resumable"
                    } else {
                        "not resumable"
                    }
                )
            }
            Event::LinkLost { why, grace_secs } => format!(
                "link lost: {why}; the job stays, and pvlaunch logs in again for up to {} (--grace)",
                clock(*grace_secs)
            ),
            Event::Reconnecting {
                attempt,
                grace_left_secs,
            } => format!(
                "logging in again (attempt {attempt}; {} of the grace left)",
                clock(*grace_left_secs)
            ),
            Event::LinkRestored { gap_secs, attempts } => format!(
                "link restored after {} ({attempts} attempt{}): the session goes on",
                clock(*gap_secs),
                if *attempts == 1 { "" } else { "s" }
            ),
            Event::StreamResumed { replayed } => format!(
                "ParaView's stream resumed ({} sent again)",
                human_bytes(*replayed)
            ),
            Event::Warning { message } => format!("warning: {message}"),
            Event::Error { message, hint } => {
                format!(
                    "error: {message}{}",
                    hint.as_ref()
                        .map(|h| format!("\n  hint: {h}"))
                        .unwrap_or_default()
                )
            }
            Event::Done { exit_code, reason } => format!("done: {reason} (exit code {exit_code})"),
            Event::WalltimeWarning {
                job_id,
                minutes_left,
            } => format!(
                "job {job_id} reaches its wall time in about {minutes_left} min: save your work (File > Save State); the scheduler then ends pvserver"
            ),
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `90` -> `1:30`, `3600` -> `1:00:00`: a countdown for a person.
fn clock(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// The longest text field an event keeps (bytes); longer ones are cut, marked ` […]`.
pub const MAX_TEXT: usize = 4096;
/// The longest item of a list field (a node name, a line of output) an event keeps (bytes).
pub const MAX_ITEM: usize = 512;
/// The most lines of a job's output an event keeps (the last ones).
pub const MAX_TAIL_LINES: usize = 20;
/// The most items of another list field (nodes, allowed networks) an event keeps; a last
/// item says how many were left out.
pub const MAX_ITEMS: usize = 100;
/// The most events [`Reporter::history`] keeps (the last ones), and the most it holds back
/// while ssh has the terminal.
pub const HISTORY_LIMIT: usize = 1000;

impl Event {
    /// Visit every text field and every list field.
    fn visit(
        &mut self,
        text: &mut dyn FnMut(&mut String),
        list: &mut dyn FnMut(&mut Vec<String>, bool),
    ) {
        match self {
            Event::Plan {
                profile,
                recipe,
                scheduler,
                login,
                client,
            } => [profile, recipe, scheduler, login, client]
                .into_iter()
                .for_each(text),
            Event::ClientListening { port: _, mode } => text(mode),
            Event::WaitingForClient { url, .. } => text(url),
            Event::SshConnecting { destination } => text(destination),
            Event::SshConnected {
                destination,
                login_host,
                ..
            } => [destination, login_host].into_iter().for_each(text),
            Event::ForwardOpened { bind_address, .. } => text(bind_address),
            Event::RelayStarted { host, allowed, .. } => {
                text(host);
                list(allowed, false);
            }
            Event::RecipeChosen { recipe, reason } => [recipe, reason].into_iter().for_each(text),
            Event::JobSubmitted {
                job_id,
                scheduler,
                output,
            } => [job_id, scheduler, output].into_iter().for_each(text),
            Event::JobQueued {
                job_id,
                reason,
                estimated_start,
            } => {
                text(job_id);
                reason.iter_mut().chain(estimated_start).for_each(text);
            }
            Event::JobRunning { job_id, nodes } => {
                text(job_id);
                list(nodes, false);
            }
            Event::ServerListening { host, .. } => text(host),
            Event::TunnelOpened { node, url, .. } => [node, url].into_iter().for_each(text),
            Event::ServerConnected { peer } => text(peer),
            Event::SessionEnded { .. } => {}
            Event::JobFinished {
                job_id,
                state,
                output_tail,
                ..
            } => {
                [job_id, state].into_iter().for_each(&mut *text);
                list(output_tail, true);
            }
            Event::Cleanup { step, detail, .. } => {
                text(step);
                detail.iter_mut().for_each(text);
            }
            Event::LinkLost { why, .. } | Event::Resumable { why, .. } => text(why),
            Event::Reconnecting { .. }
            | Event::LinkRestored { .. }
            | Event::StreamResumed { .. } => {}
            Event::Warning { message } => text(message),
            Event::Error { message, hint } => {
                text(message);
                hint.iter_mut().for_each(text);
            }
            Event::Done { reason, .. } => text(reason),
            Event::WalltimeWarning { job_id, .. } => text(job_id),
        }
    }

    /// The event as it may be shown and kept: control characters and escape sequences
    /// stripped from every string (they may come from remote commands), every text cut to
    /// [`MAX_TEXT`] bytes, list items to [`MAX_ITEM`], the output tail to its last
    /// [`MAX_TAIL_LINES`] lines and other lists to [`MAX_ITEMS`] items.
    pub fn bounded(mut self) -> Event {
        fn fix(s: &mut String, max: usize) {
            let clean = crate::term::sanitize(s);
            let clipped = crate::term::clip(&clean, max);
            if clipped.len() != s.len() || clipped != s.as_str() {
                *s = clipped.into_owned();
            }
        }
        self.visit(&mut |s| fix(s, MAX_TEXT), &mut |items, is_tail| {
            if is_tail {
                let extra = items.len().saturating_sub(MAX_TAIL_LINES);
                items.drain(..extra);
            } else if items.len() > MAX_ITEMS {
                let more = items.len() - (MAX_ITEMS - 1);
                items.truncate(MAX_ITEMS - 1);
                items.push(format!("(and {more} more)"));
            }
            for item in items.iter_mut() {
                fix(item, MAX_ITEM);
            }
        });
        self
    }
}

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A person at a terminal: progress on stderr.
    Human,
    /// NDJSON on stdout.
    Json,
    /// Plain lines on stdout (run by ParaView).
    Plain,
}

/// Where a [`Reporter`] writes.
enum Sink {
    Stdout,
    Stderr,
    /// Tests read what would have been printed.
    #[cfg(test)]
    Memory(Vec<u8>),
}

impl Sink {
    /// The terminal bell, on no line of its own.
    fn bell(&mut self) {
        use std::io::Write as _;
        match self {
            Sink::Stdout => {
                let _ = std::io::stdout().write_all(b"\x07");
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(b"\x07");
            }
            #[cfg(test)]
            Sink::Memory(buf) => buf.push(0x07),
        }
    }

    fn write(&mut self, text: &str) {
        use crate::term::Stream;
        match self {
            Sink::Stdout => crate::term::write_line(Stream::Stdout, format_args!("{text}")),
            Sink::Stderr => crate::term::write_line(Stream::Stderr, format_args!("{text}")),
            #[cfg(test)]
            Sink::Memory(buf) => {
                buf.extend_from_slice(text.as_bytes());
                buf.push(b'\n');
            }
        }
    }
}

/// Shows events in one [`Style`]. Owned by the session's coordinator.
///
/// While ssh may prompt (a passphrase, a password, an unknown host key), the terminal belongs
/// to ssh: [`Reporter::hand_over_terminal`] stops and clears the spinner and holds back every
/// event that would be printed on the terminal; [`Reporter::take_back_terminal`] prints them
/// and restarts the spinner. Output that goes to a pipe or a file is never held back.
pub struct Reporter {
    style: Style,
    start: Instant,
    sink: Sink,
    /// Whether `sink` is a terminal (a person sees it, and so would ssh's prompt).
    terminal: bool,
    spinner: Option<indicatif::ProgressBar>,
    /// The spinner's message, to restore it after a hand-over.
    phase: Option<String>,
    /// ssh has the terminal: events wait in `held` (with the time they happened).
    handed_over: bool,
    held: Vec<(Event, Duration)>,
    /// Events dropped from `held` because it was full.
    held_dropped: usize,
    /// The last [`HISTORY_LIMIT`] events, in order, as shown ([`Event::bounded`]); the last
    /// one is always the newest (the session reads the final reason from it).
    pub history: Vec<Event>,
}

impl Reporter {
    /// How this reporter shows events.
    pub fn style(&self) -> Style {
        self.style
    }

    pub fn new(style: Style) -> Reporter {
        let (sink, terminal) = match style {
            Style::Human => (Sink::Stderr, std::io::stderr().is_terminal()),
            Style::Json | Style::Plain => (Sink::Stdout, std::io::stdout().is_terminal()),
        };
        let mut r = Reporter {
            style,
            start: Instant::now(),
            sink,
            terminal,
            spinner: None,
            phase: None,
            handed_over: false,
            held: Vec::new(),
            held_dropped: 0,
            history: Vec::new(),
        };
        r.start_spinner();
        r
    }

    fn start_spinner(&mut self) {
        if self.style != Style::Human || !self.terminal || !matches!(self.sink, Sink::Stderr) {
            return;
        }
        let pb = indicatif::ProgressBar::new_spinner().with_elapsed(self.start.elapsed());
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        if let Some(phase) = &self.phase {
            pb.set_message(phase.clone());
        }
        pb.enable_steady_tick(SPINNER_TICK);
        self.spinner = Some(pb);
    }

    /// Show an event (or hold it back while ssh has the terminal) and keep it in `history`.
    pub fn emit(&mut self, event: Event) {
        let event = event.bounded();
        let at = self.start.elapsed();
        if self.handed_over && self.terminal {
            if self.held.len() >= HISTORY_LIMIT {
                self.held.remove(0);
                self.held_dropped += 1;
            }
            self.held.push((event.clone(), at));
        } else {
            self.show(&event, at);
        }
        if self.history.len() >= HISTORY_LIMIT {
            let extra = self.history.len() + 1 - HISTORY_LIMIT;
            self.history.drain(..extra);
        }
        self.history.push(event);
    }

    /// Give the terminal to a child that may prompt on it (ssh): stop the spinner, clear its
    /// line, and print nothing on the terminal until [`Reporter::take_back_terminal`].
    /// Calling it again while handed over does nothing.
    pub fn hand_over_terminal(&mut self) {
        if self.handed_over {
            return;
        }
        self.handed_over = true;
        if let Some(pb) = self.spinner.take() {
            pb.disable_steady_tick();
            pb.finish_and_clear();
        }
    }

    /// Take the terminal back: print what was held back, in order, and restart the spinner.
    /// Calling it without a hand-over does nothing.
    pub fn take_back_terminal(&mut self) {
        if !self.handed_over {
            return;
        }
        self.handed_over = false;
        let done = self
            .history
            .last()
            .is_some_and(|e| matches!(e, Event::Done { .. }));
        if !done {
            self.start_spinner();
        }
        if self.held_dropped > 0 {
            let note = Event::Warning {
                message: format!(
                    "{} earlier events were not shown while ssh had the terminal",
                    self.held_dropped
                ),
            };
            self.held_dropped = 0;
            self.show(&note, self.start.elapsed());
        }
        for (event, at) in std::mem::take(&mut self.held) {
            self.show(&event, at);
        }
    }

    /// Whether ssh has the terminal (see [`Reporter::hand_over_terminal`]).
    pub fn terminal_handed_over(&self) -> bool {
        self.handed_over
    }

    fn show(&mut self, event: &Event, at: Duration) {
        match self.style {
            Style::Json => {
                let mut value = serde_json::to_value(event).expect("events serialise");
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("elapsed_ms".into(), (at.as_millis() as u64).into());
                }
                self.sink.write(&value.to_string());
            }
            Style::Plain => self.sink.write(&format!("pvlaunch: {}", event.line())),
            Style::Human => {
                let line = event.line();
                if self.terminal && matches!(event, Event::WalltimeWarning { .. }) {
                    // The terminal bell: a person may be looking at ParaView, not at pvlaunch.
                    self.sink.bell();
                }
                if let Some(phase) = event.phase() {
                    self.phase = Some(phase);
                }
                match &self.spinner {
                    Some(pb) => {
                        pb.println(line);
                        if let Some(phase) = &self.phase {
                            pb.set_message(phase.clone());
                        }
                        if matches!(event, Event::Done { .. }) {
                            pb.finish_and_clear();
                            self.spinner = None;
                        }
                    }
                    None => {
                        let secs = at.as_secs_f64();
                        self.sink.write(&format!("[{secs:7.1}s] {line}"));
                    }
                }
            }
        }
    }
}

impl Drop for Reporter {
    /// Nothing held back is lost, even when the session ends while ssh has the terminal.
    fn drop(&mut self) {
        self.take_back_terminal();
        if let Some(pb) = self.spinner.take() {
            pb.finish_and_clear();
        }
    }
}

/// How often the spinner turns.
const SPINNER_TICK: Duration = Duration::from_millis(120);

#[cfg(test)]
mod tests {
    use super::*;

    impl Reporter {
        /// A reporter that writes to memory, as if its output were (or were not) a terminal.
        fn in_memory(style: Style, terminal: bool) -> Reporter {
            let mut r = Reporter::new(style);
            r.sink = Sink::Memory(Vec::new());
            r.terminal = terminal;
            r.spinner = None;
            r
        }

        fn printed(&self) -> String {
            match &self.sink {
                Sink::Memory(buf) => String::from_utf8_lossy(buf).into_owned(),
                _ => unreachable!(),
            }
        }
    }

    fn warning(m: &str) -> Event {
        Event::Warning { message: m.into() }
    }

    #[test]
    fn events_are_sanitised_and_bounded() {
        let e = Event::Error {
            message: format!("\x1b[2J\x1b]0;title\x07squeue: {}", "x".repeat(10_000)),
            hint: Some("bell\x07\r\n".into()),
        }
        .bounded();
        let Event::Error { message, hint } = &e else {
            unreachable!()
        };
        assert!(message.starts_with("squeue: xxx"), "{message:.40}");
        assert!(message.len() <= MAX_TEXT && message.ends_with(" […]"));
        assert_eq!(hint.as_deref(), Some("bell\n"));

        let tail: Vec<String> = (0..100).map(|i| format!("line {i}\x1b[0m")).collect();
        let Event::JobFinished { output_tail, .. } = (Event::JobFinished {
            job_id: "1".into(),
            state: "FAILED".into(),
            exit_code: None,
            output_tail: tail,
        })
        .bounded() else {
            unreachable!()
        };
        assert_eq!(output_tail.len(), MAX_TAIL_LINES);
        assert_eq!(output_tail[0], "line 80");
        assert_eq!(output_tail.last().unwrap(), "line 99");

        let Event::JobRunning { nodes, .. } = (Event::JobRunning {
            job_id: "1".into(),
            nodes: (0..5000).map(|i| format!("cn{i:04}")).collect(),
        })
        .bounded() else {
            unreachable!()
        };
        assert_eq!(nodes.len(), MAX_ITEMS);
        assert_eq!(nodes[MAX_ITEMS - 2], format!("cn{:04}", MAX_ITEMS - 2));
        assert_eq!(nodes.last().unwrap(), "(and 4901 more)");
    }

    #[test]
    fn every_style_strips_control_characters() {
        for style in [Style::Human, Style::Plain, Style::Json] {
            let mut r = Reporter::in_memory(style, false);
            r.emit(warning(
                "evil\x1b]52;c;Zm9v\x07 \x1b[1mbold\x1b[0m\u{9b}31m",
            ));
            let out = r.printed();
            assert!(out.contains("evil bold"), "{style:?}: {out}");
            assert!(
                !out.chars().any(|c| c.is_control() && c != '\n'),
                "{style:?}: {out:?}"
            );
        }
    }

    #[test]
    fn history_keeps_the_last_events() {
        let mut r = Reporter::in_memory(Style::Plain, false);
        for i in 0..HISTORY_LIMIT + 500 {
            r.emit(warning(&format!("w{i}")));
        }
        r.emit(Event::Done {
            exit_code: 0,
            reason: "finished".into(),
        });
        assert_eq!(r.history.len(), HISTORY_LIMIT);
        assert_eq!(r.history[0], warning("w501"));
        assert!(matches!(r.history.last(), Some(Event::Done { .. })));
    }

    #[test]
    fn events_wait_while_ssh_has_the_terminal() {
        let mut r = Reporter::in_memory(Style::Human, true);
        r.emit(warning("before"));
        r.hand_over_terminal();
        assert!(r.terminal_handed_over());
        r.hand_over_terminal(); // twice is harmless
        r.emit(warning("during 1"));
        r.emit(warning("during 2"));
        assert!(r.printed().contains("before"));
        assert!(!r.printed().contains("during"), "{}", r.printed());
        // Kept in history at once: the session's logic does not wait for the terminal.
        assert_eq!(r.history.len(), 3);
        r.take_back_terminal();
        assert!(!r.terminal_handed_over());
        let out = r.printed();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].ends_with("warning: before"));
        assert!(lines[1].ends_with("warning: during 1"));
        assert!(lines[2].ends_with("warning: during 2"));
        r.take_back_terminal(); // twice is harmless
        assert_eq!(r.printed().lines().count(), 3);
    }

    #[test]
    fn json_keeps_its_time_when_held_back() {
        let mut r = Reporter::in_memory(Style::Json, true);
        r.hand_over_terminal();
        r.emit(warning("held"));
        let at = r.held[0].1;
        std::thread::sleep(Duration::from_millis(30));
        r.take_back_terminal();
        let v: serde_json::Value = serde_json::from_str(r.printed().trim()).unwrap();
        assert_eq!(v["message"], "held");
        assert_eq!(v["elapsed_ms"].as_u64(), Some(at.as_millis() as u64));
    }

    #[test]
    fn output_to_a_pipe_is_never_held_back() {
        let mut r = Reporter::in_memory(Style::Json, false);
        r.hand_over_terminal();
        r.emit(warning("now"));
        assert!(r.printed().contains("\"now\""));
    }

    #[test]
    fn a_full_hold_back_says_what_it_dropped() {
        let mut r = Reporter::in_memory(Style::Plain, true);
        r.hand_over_terminal();
        for i in 0..HISTORY_LIMIT + 3 {
            r.emit(warning(&format!("w{i}")));
        }
        r.take_back_terminal();
        let out = r.printed();
        let first = out.lines().next().unwrap();
        assert_eq!(
            first,
            "pvlaunch: warning: 3 earlier events were not shown while ssh had the terminal"
        );
        assert_eq!(out.lines().nth(1).unwrap(), "pvlaunch: warning: w3");
        assert_eq!(out.lines().count(), HISTORY_LIMIT + 1);
    }

    #[test]
    fn events_serialise_with_a_tag() {
        let e = Event::JobQueued {
            job_id: "42".into(),
            reason: Some("Priority".into()),
            estimated_start: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"job_queued","job_id":"42","reason":"Priority","estimated_start":null}"#
        );
        assert_eq!(e.line(), "job 42 queued (Priority)");
    }

    #[test]
    fn job_failure_shows_the_output_tail() {
        let e = Event::JobFinished {
            job_id: "7".into(),
            state: "FAILED".into(),
            exit_code: Some(127),
            output_tail: vec!["module: command not found".into()],
        };
        assert_eq!(
            e.line(),
            "job 7 finished: FAILED (exit code 127)\n  last lines of the job's output:\n  | module: command not found"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
