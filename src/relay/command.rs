//! `pvlaunch relay`: the relay in the foreground, stopped by SIGINT, SIGTERM or SIGHUP.
//!
//! Output, for people and for programs reading it over ssh:
//! - stdout, one line per listener once all are bound: `listening on ADDR -> TARGET[, TARGET]`
//!   (with `--json`: one JSON object per event, `{"event":"listening","listen":ADDR,...}`,
//!   then every connection event);
//! - stderr: the log (tracing), one line per connection opened, closed (peer, bytes each way,
//!   duration) or refused.
//!
//! A first signal stops gracefully (see [`Limits::grace`]); a second one stops at once.

use std::path::PathBuf;

use tokio::sync::{mpsc, watch};

use super::{
    AllowList, AllowSpec, CopyMode, Forward, Limits, ListenAddr, Relay, RelayConfig, RelayError,
    RelayEvent, Target, portfwd, raise_fd_limit,
};
use crate::exit::Code;

/// `pvlaunch relay` as the command line asked for it.
#[derive(Debug, Clone)]
pub struct RelayRequest {
    /// Paired with `to`, position by position.
    pub listen: Vec<ListenAddr>,
    pub to: Vec<Target>,
    /// A portfwd configuration file.
    pub config: Option<PathBuf>,
    pub allow: Vec<AllowSpec>,
    pub limits: Limits,
    pub copy: CopyMode,
    /// Stop when standard input reaches end of file (the ssh connection that started it died).
    pub stop_on_stdin_eof: bool,
}

impl RelayRequest {
    /// The relay configuration: `--listen`/`--to` pairs first, then the file's forwards.
    pub fn config(&self) -> Result<RelayConfig, RelayError> {
        if self.listen.len() != self.to.len() {
            return Err(RelayError::Unpaired {
                listen: self.listen.len(),
                to: self.to.len(),
            });
        }
        let mut forwards: Vec<Forward> = self
            .listen
            .iter()
            .zip(&self.to)
            .map(|(listen, to)| Forward::new(listen.clone(), to.clone()))
            .collect();
        if let Some(path) = &self.config {
            let file = portfwd::load(path, &portfwd::SystemLookup::default())?;
            if !file.forwards.is_empty() && !file.listen_given {
                tracing::warn!(
                    "{} sets no listen-on: listening on 127.0.0.1 only (portfwd would listen on every \
                     interface); add `listen-on 0.0.0.0` to accept other hosts",
                    path.display()
                );
            }
            forwards.extend(file.forwards);
        }
        if forwards.is_empty() {
            return Err(RelayError::NoForwards);
        }
        let mut nets = Vec::new();
        for spec in &self.allow {
            nets.extend(spec.resolve()?);
        }
        Ok(RelayConfig {
            forwards,
            allow: AllowList::new(nets),
            limits: self.limits.clone(),
            copy: self.copy,
        })
    }
}

/// Run `pvlaunch relay` to the end and return its exit code; errors are printed on stderr.
pub fn main(request: RelayRequest, json: bool, verbose: u8) -> Code {
    // Each connection is logged (info) by default; -v debug, -vv trace.
    crate::term::init_tracing(verbose, tracing::Level::INFO);
    // One thread: the kernel moves the bytes, and a single thread avoids waking a second one
    // for every message (measured: lower latency, the same throughput; docs/benchmarks.md).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return report(RelayError::Runtime(err)),
    };
    match runtime.block_on(run(request, json)) {
        Ok(code) => code,
        Err(err) => report(err),
    }
}

fn report(err: RelayError) -> Code {
    crate::say_err!("error: failed to {err}");
    if err.is_usage() {
        Code::Usage
    } else {
        Code::Failure
    }
}

/// Signals received so far: the first one's number and how many.
#[derive(Debug, Clone, Copy, Default)]
struct SignalCount {
    first: Option<i32>,
    count: u32,
}

async fn run(request: RelayRequest, json: bool) -> Result<Code, RelayError> {
    let config = request.config()?;
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!("open file limit: {limit}"),
        Err(err) => tracing::debug!("cannot raise the open file limit: {err}"),
    }
    let signals = watch_signals(request.stop_on_stdin_eof)?;
    let relay = Relay::bind(config).await?;

    let (events, mut rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_event(&event, json);
        }
    });
    let mut first = signals.clone();
    let shutdown = async move {
        let _ = first.wait_for(|s| s.count >= 1).await;
    };
    let mut second = signals.clone();
    tokio::select! {
        summary = relay.run(shutdown, Some(events)) => {
            tracing::info!(
                connections = summary.connections,
                refused = summary.refused,
                bytes_from_peers = summary.bytes_from_peers,
                bytes_to_peers = summary.bytes_to_peers,
                "stopped"
            );
        }
        _ = second.wait_for(|s| s.count >= 2) => tracing::warn!("second signal: stopping now"),
    }
    let _ = printer.await;
    Ok(match signals.borrow().first {
        Some(n) => Code::Signal(n),
        None => Code::Success,
    })
}

fn print_event(event: &RelayEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            crate::say!("{line}");
        }
    } else if let RelayEvent::Listening { listen, to } = event {
        let to: Vec<String> = to.iter().map(|t| t.to_string()).collect();
        crate::say!("listening on {listen} -> {}", to.join(", "));
    }
}

/// Count SIGINT, SIGTERM and SIGHUP (and end of standard input, if asked) in a watch channel.
fn watch_signals(stdin_eof: bool) -> Result<watch::Receiver<SignalCount>, RelayError> {
    let mut signals = crate::process::Signals::try_new().map_err(RelayError::Runtime)?;
    let (tx, rx) = watch::channel(SignalCount::default());
    let (eof_tx, mut eof_rx) = mpsc::channel::<()>(1);
    if stdin_eof {
        // A plain thread: tokio's stdin reader would keep the runtime from shutting down.
        std::thread::spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = std::io::stdin().lock();
            while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
            let _ = eof_tx.blocking_send(());
        });
    }
    tokio::spawn(async move {
        loop {
            let n = tokio::select! {
                n = signals.next() => n,
                Some(()) = eof_rx.recv() => {
                    tracing::info!("standard input closed");
                    0
                }
            };
            tx.send_modify(|s| {
                if n != 0 {
                    s.first.get_or_insert(n);
                }
                s.count += 1;
            });
        }
    });
    Ok(rx)
}
