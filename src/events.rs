//! What a session reports, as data. One [`Event`] type; three ways to show it:
//! progress for a person (stderr, a spinner with the phase and elapsed time), NDJSON for scripts
//! (`--json`, one object per line on stdout), and plain lines on stdout when ParaView runs
//! pvlaunch (ParaView shows a command's stderr as errors, so nothing routine goes there).
//! The NDJSON schema is documented in docs/session.md.

use std::io::{IsTerminal, Write};
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
    /// Authenticating to the login node (a password or 2FA prompt may follow).
    SshConnecting {
        destination: String,
    },
    SshConnected {
        destination: String,
        login_host: String,
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
}

impl Event {
    /// The phase a person sees in the spinner.
    fn phase(&self) -> Option<String> {
        Some(match self {
            Event::ClientListening { port, .. } => format!("client listening on port {port}"),
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
            Event::SshConnecting { destination } => {
                format!("connecting to {destination} (answer any prompt once)")
            }
            Event::SshConnected {
                destination,
                login_host,
            } => format!("connected to {destination} ({login_host})"),
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

/// Shows events in one [`Style`]. Owned by the session's coordinator.
pub struct Reporter {
    style: Style,
    start: Instant,
    spinner: Option<indicatif::ProgressBar>,
    /// Every event, in order (for tests and for the final summary).
    pub history: Vec<Event>,
}

impl Reporter {
    pub fn new(style: Style) -> Reporter {
        let spinner = (style == Style::Human && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            pb.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Reporter {
            style,
            start: Instant::now(),
            spinner,
            history: Vec::new(),
        }
    }

    pub fn emit(&mut self, event: Event) {
        match self.style {
            Style::Json => {
                let mut value = serde_json::to_value(&event).expect("events serialise");
                if let Some(obj) = value.as_object_mut() {
                    obj.insert(
                        "elapsed_ms".into(),
                        (self.start.elapsed().as_millis() as u64).into(),
                    );
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{value}");
                let _ = out.flush();
            }
            Style::Plain => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "pvlaunch: {}", event.line());
                let _ = out.flush();
            }
            Style::Human => {
                let line = event.line();
                match &self.spinner {
                    Some(pb) => {
                        pb.println(line);
                        if let Some(phase) = event.phase() {
                            pb.set_message(phase);
                        }
                        if matches!(event, Event::Done { .. }) {
                            pb.finish_and_clear();
                        }
                    }
                    None => {
                        let secs = self.start.elapsed().as_secs_f64();
                        eprintln!("[{secs:7.1}s] {line}");
                    }
                }
            }
        }
        self.history.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
