//! `connect` for a server without pvlaunch settings: do what ParaView does with it. The client
//! listens (reverse resources) before the command runs, the command runs exactly as ParaView
//! runs it (the same argv, the option values in its environment, `delay`), and everything is
//! stopped at the end. `process_wait` is read but not used: pvlaunch does not wait for the
//! command to start before connecting.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;

use crate::client::{self, Mode};
use crate::events::{Event, Reporter};
use crate::exit::Code;
use crate::process::{self, Kind};
use crate::profile::resolve::{Resolved, ResolvedCommand};
use crate::profile::resource::Endpoint;

/// Run a plain server's session. `connect_id` is the `PV_CONNECT_ID` the file declares.
pub async fn run(resolved: &Resolved, mode: &Mode, reporter: &mut Reporter) -> Code {
    let mut client: Option<Child> = None;
    let mut command: Option<Child> = None;
    let mut signals = crate::process::Signals::new();
    let outcome = tokio::select! {
        code = drive(resolved, mode, &mut client, &mut command, reporter) => code,
        n = signals.next() => Err((Code::Signal(n), format!("stopped by signal {n}"))),
    };
    if let Some(mut c) = command.take() {
        process::stop_group(&mut c, Duration::from_secs(5)).await;
        reporter.emit(Event::Cleanup {
            step: "server command stopped".into(),
            ok: true,
            detail: None,
        });
    }
    if let Some(mut c) = client.take() {
        process::stop_group(&mut c, Duration::from_secs(5)).await;
        reporter.emit(Event::Cleanup {
            step: "client stopped".into(),
            ok: true,
            detail: None,
        });
    }
    let (code, reason) = match outcome {
        Ok(reason) => (Code::Success, reason),
        Err((code, reason)) => {
            if !matches!(code, Code::Signal(_)) {
                reporter.emit(Event::Error {
                    message: reason.clone(),
                    hint: None,
                });
            }
            (code, reason)
        }
    };
    reporter.emit(Event::Done {
        exit_code: code.as_i32(),
        reason,
    });
    code
}

async fn drive(
    resolved: &Resolved,
    mode: &Mode,
    client: &mut Option<Child>,
    command: &mut Option<Child>,
    reporter: &mut Reporter,
) -> Result<String, (Code, String)> {
    let (reverse, url, port) = match &resolved.endpoint {
        Endpoint::Listen { port } => (true, client::url(true, *port), *port),
        Endpoint::Connect { host, port } => (false, format!("cs://{host}:{port}"), *port),
        other => {
            return Err((
                Code::Usage,
                format!("pvlaunch connects only cs:// and csrc:// servers, not {other}"),
            ));
        }
    };
    let connect_id = resolved.connect_id.and_then(|i| u32::try_from(i).ok());
    let client_argv = client::argv(mode, &url, connect_id);
    let env = vec![
        ("PVLAUNCH_URL".to_string(), url.clone()),
        ("PVLAUNCH_PORT".to_string(), port.to_string()),
    ];
    if reverse {
        if let Some(argv) = &client_argv {
            *client = Some(client::start(argv, &env).map_err(|e| (Code::Client, e.to_string()))?);
        }
        client::wait_listening(port, client.as_mut(), crate::session::CLIENT_START_TIMEOUT)
            .await
            .map_err(|e| (Code::Client, e))?;
        reporter.emit(Event::ClientListening {
            port,
            mode: mode.name().into(),
        });
    }
    if let Some(cmd) = &resolved.command {
        *command = Some(
            start_command(cmd, &resolved.all_variables, reporter.style())
                .map_err(|e| (Code::Failure, e))?,
        );
        settle(cmd, command.as_mut().expect("started"))
            .await
            .map_err(|e| (Code::Job, e))?;
    }
    if !reverse && let Some(argv) = &client_argv {
        *client = Some(client::start(argv, &env).map_err(|e| (Code::Client, e.to_string()))?);
    }
    // The session lasts as long as the client (or, without one, the command).
    tokio::select! {
        status = wait(client) => match status {
            Ok(s) if s.success() => Ok("the client finished".into()),
            Ok(s) => Err((Code::Client, format!("the client exited with {s}"))),
            Err(e) => Err((Code::Client, e.to_string())),
        },
        status = wait(command), if client.is_none() => match status {
            Ok(s) if s.success() => Ok("the server command finished".into()),
            Ok(s) => Err((Code::Job, format!("the server command exited with {s}"))),
            Err(e) => Err((Code::Job, e.to_string())),
        },
    }
}

async fn wait(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => {
            let status = c.wait().await;
            *child = None;
            status
        }
        None => std::future::pending().await,
    }
}

/// Start the command as ParaView does: no shell, option values in the environment.
/// Start the server's command. Its stdout goes to pvlaunch's stdout only under ParaView (which
/// shows a command's stdout as its debug output); otherwise to stderr, so that `--json` stdout
/// carries events only.
fn start_command(
    cmd: &ResolvedCommand,
    variables: &BTreeMap<String, String>,
    style: crate::events::Style,
) -> Result<Child, String> {
    if cmd.argv.is_empty() {
        return Err("the server's command is empty".into());
    }
    let mut c = process::command(&cmd.argv, Kind::Group);
    c.env_clear()
        .envs(variables)
        .stdout(if style == crate::events::Style::Plain {
            Stdio::inherit()
        } else {
            Stdio::from(std::io::stderr())
        })
        .stderr(Stdio::inherit());
    c.spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", cmd.argv[0]))
}

/// ParaView's `delay`: -1 waits for the command to end; otherwise wait that long, and a
/// command that has already failed by then aborts the connection.
async fn settle(cmd: &ResolvedCommand, child: &mut Child) -> Result<(), String> {
    if cmd.delay < 0.0 {
        let status = child.wait().await.map_err(|e| e.to_string())?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("the server command failed ({status})"))
        };
    }
    tokio::time::sleep(Duration::from_secs_f64(cmd.delay)).await;
    match child.try_wait() {
        Ok(Some(status)) if !status.success() => {
            Err(format!("the server command failed ({status})"))
        }
        _ => Ok(()),
    }
}
