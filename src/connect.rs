//! `pvlaunch connect`: profile -> plan -> session.

use std::collections::BTreeMap;
use std::io::Write;

use color_eyre::Result;

use crate::cli::{ClientChoice, ConnectArgs};
use crate::client;
use crate::commands::pick;
use crate::events::{Event, Reporter, Style};
use crate::exit::Code;
use crate::outcome::Failure;
use crate::plan::{self, Overrides};
use crate::profile::{self};
use crate::ssh;

pub fn connect(cli_files: Vec<std::path::PathBuf>, json: bool, args: &ConnectArgs) -> Result<Code> {
    let picked = match pick(cli_files, &args.name, &args.set, false) {
        Ok(p) => p,
        Err(code) => {
            // The problems are on stderr already; scripts still get the last event.
            let reason = match code {
                Code::InvalidProfile => format!("profile `{}` is invalid", args.name),
                _ => format!("profile `{}` cannot be used", args.name),
            };
            return Ok(early_end(json, code, reason, None));
        }
    };
    let (resolved, environment) = (&picked.resolved, &picked.environment);
    let request = match client_request(args) {
        Ok(r) => r,
        Err(f) => return Ok(fail_early(json, f)),
    };
    let Some(mut launch) = picked.launch.clone() else {
        return plain(resolved, environment, json, args, &request);
    };
    if args.no_multiplex {
        launch.multiplex = crate::profile::settings::Multiplex::No;
    }
    if let Some(text) = &args.persist {
        match crate::profile::settings::parse_persist(text) {
            Ok(persist) => launch.persist = persist,
            Err((message, hint)) => {
                return Ok(fail_early(
                    json,
                    Failure::Usage {
                        message: format!("--persist: {message}"),
                        hint,
                    },
                ));
            }
        }
    }
    if args.no_grace {
        launch.grace = std::time::Duration::ZERO;
    }
    if let Some(text) = &args.grace {
        match crate::profile::settings::parse_grace(text) {
            Ok(grace) => launch.grace = grace,
            Err((message, hint)) => {
                return Ok(fail_early(
                    json,
                    Failure::Usage {
                        message: format!("--grace: {message}"),
                        hint,
                    },
                ));
            }
        }
    }
    let mode = match decide_mode(&request, environment) {
        Ok(m) => m,
        Err(f) => return Ok(fail_early(json, f)),
    };
    let style = style_for(json, &mode, environment);
    let private_dir = ssh::private_dir()?;
    let target = ssh_target(&launch, ssh::control_path(private_dir.path()));
    // Under ParaView, the port it listens on is in the environment.
    let port = args.port.or_else(|| {
        (mode == client::Mode::None)
            .then(|| {
                environment
                    .get("PV_SERVER_PORT")
                    .and_then(|p| p.parse().ok())
            })
            .flatten()
    });
    let overrides = Overrides {
        client_port: port,
        recipe: args.recipe,
        connect_id: connect_id_override(&mode, environment, resolved.connect_id),
        keep_job: args.keep_job,
        queue_timeout: args.queue_timeout,
        warn_before: args.warn_before.map(|w| w.0),
    };
    let batch = crate::auth::choose(&crate::auth::Surroundings::here(launch.askpass.as_deref()))
        .batch_mode();
    let plan = match plan::build(
        resolved,
        &launch,
        mode,
        &overrides,
        &target,
        batch,
        plan::Fresh::draw(),
    ) {
        Ok(p) => p,
        Err(e) => {
            let failure = match e {
                plan::PlanError::ForwardResource(_) | plan::PlanError::ReverseResource(_) => {
                    Failure::Usage {
                        message: e.to_string(),
                        hint: Some("the resource of the server in ParaView's Connect dialog decides who connects: cs:// needs recipe two-hop, csrc:// a reverse recipe".into()),
                    }
                }
                _ => Failure::Profile {
                    message: e.to_string(),
                },
            };
            return Ok(fail_early(json, failure));
        }
    };
    if args.dry_run {
        if json {
            crate::say!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            let _ = write!(crate::term::stdout(), "{}", plan.render());
        }
        return Ok(Code::Success);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reporter = Reporter::new(style);
    let code = runtime.block_on(crate::session::run(
        plan,
        launch,
        target,
        private_dir,
        &mut reporter,
    ));
    if code != Code::Success && style == Style::Plain {
        // ParaView shows stderr as errors: the reason belongs there.
        if let Some(Event::Done { reason, .. }) = reporter.history.last() {
            crate::say_err!("pvlaunch: {reason}");
        }
    }
    Ok(code)
}

/// How ssh reaches the profile's login node, through the master socket `control_path`.
fn ssh_target(launch: &profile::settings::Launch, control_path: std::path::PathBuf) -> ssh::Target {
    ssh::Target {
        program: "ssh".into(),
        destination: launch.login_host.clone(),
        user: launch.login_user.clone(),
        port: launch.login_port,
        jump_hosts: launch.jump_hosts.clone(),
        control_path,
        extra_options: vec![],
    }
}

/// `pvlaunch logout NAME`: end the ssh master kept for the profile's login (`persist`).
pub fn logout(cli_files: Vec<std::path::PathBuf>, args: &crate::cli::LogoutArgs) -> Result<Code> {
    let picked = match pick(cli_files, &args.name, &args.set, false) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let Some(launch) = picked.launch.clone() else {
        crate::say_err!(
            "pvlaunch: profile `{}` has no <PVLaunch> login: nothing to end",
            args.name
        );
        return Ok(Code::Success);
    };
    let path = ssh::kept_control_path(&ssh_target(&launch, Default::default()))?;
    let target = ssh_target(&launch, path.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ended = runtime.block_on(async {
        match ssh::Master::adopt(target.clone(), ssh::Owner::Kept).await {
            None => false,
            Some(_) => {
                let out = ssh::run(&target.exit_argv(), None, ssh::COMMAND_TIMEOUT).await;
                out.is_ok_and(|o| o.success())
            }
        }
    });
    let _ = std::fs::remove_file(&path);
    if ended {
        crate::say!("ended the ssh login kept for {}", launch.login_host);
    } else {
        crate::say!("no ssh login was kept for {}", launch.login_host);
    }
    Ok(Code::Success)
}

/// The client the command line asks for. `--script` means pvpython: given alone it picks it,
/// with another client it is a usage error rather than silently ignored.
fn client_request(args: &ConnectArgs) -> Result<client::Request, Failure> {
    let pvpython = |script: &std::path::Path| {
        client::Request::Pvpython(script.to_path_buf(), args.script_args.clone())
    };
    match (args.client, &args.script) {
        (ClientChoice::Auto | ClientChoice::Pvpython, Some(script)) => Ok(pvpython(script)),
        (ClientChoice::Pvpython, None) => Err(Failure::Usage {
            message: "--client pvpython needs --script FILE".into(),
            hint: None,
        }),
        (other, Some(_)) => Err(Failure::Usage {
            message: format!(
                "--script runs a pvpython script: it cannot be used with --client {}",
                client_name(other)
            ),
            hint: Some("drop --client, or use --client pvpython".into()),
        }),
        (_, None) if !args.script_args.is_empty() => Err(Failure::Usage {
            message: format!(
                "arguments after `--` ({}) are for a pvpython script, but there is no --script",
                args.script_args.join(" ")
            ),
            hint: Some("add --script FILE".into()),
        }),
        (ClientChoice::Auto, None) => Ok(client::Request::Auto),
        (ClientChoice::Paraview, None) => Ok(client::Request::Paraview),
        (ClientChoice::Wait, None) => Ok(client::Request::Wait),
        (ClientChoice::None, None) => Ok(client::Request::None),
    }
}

fn client_name(c: ClientChoice) -> &'static str {
    match c {
        ClientChoice::Auto => "auto",
        ClientChoice::Paraview => "paraview",
        ClientChoice::Pvpython => "pvpython",
        ClientChoice::Wait => "wait",
        ClientChoice::None => "none",
    }
}

fn decide_mode(
    request: &client::Request,
    environment: &BTreeMap<String, String>,
) -> Result<client::Mode, Failure> {
    client::decide(request, environment, |p| {
        which::which(p).ok().map(|p| p.display().to_string())
    })
    .map_err(|e| Failure::client(e.to_string(), Some(e.hint())))
}

/// A failure before the session started: the same `error` and `done` events as any other end
/// under `--json`, the error and its hint on stderr otherwise.
fn fail_early(json: bool, failure: Failure) -> Code {
    let code = failure.code();
    let message = failure.to_string();
    early_end(json, code, message, Some((failure.hint(), true)))
}

/// End before a session: `error` (when it is not printed already) and `done`.
fn early_end(
    json: bool,
    code: Code,
    reason: String,
    error: Option<(Option<String>, bool)>,
) -> Code {
    if json {
        let mut reporter = Reporter::new(Style::Json);
        if let Some((hint, _)) = &error {
            reporter.emit(Event::Error {
                message: reason.clone(),
                hint: hint.clone(),
            });
        }
        reporter.emit(Event::Done {
            exit_code: code.as_i32(),
            reason,
        });
    } else if let Some((hint, _)) = error {
        let mut text = format!("error: {reason}");
        if let Some(h) = hint {
            text.push_str(&format!("\n  hint: {h}"));
        }
        crate::say_err!("{text}");
    }
    code
}

fn style_for(json: bool, mode: &client::Mode, environment: &BTreeMap<String, String>) -> Style {
    if json {
        Style::Json
    } else if *mode == client::Mode::None && client::started_by_paraview(environment) {
        Style::Plain
    } else {
        Style::Human
    }
}

/// A server without `<PVLaunch>`: run its command as ParaView would.
fn plain(
    resolved: &crate::profile::resolve::Resolved,
    environment: &BTreeMap<String, String>,
    json: bool,
    args: &ConnectArgs,
    request: &client::Request,
) -> Result<Code> {
    let mode = match decide_mode(request, environment) {
        Ok(m) => m,
        Err(f) => return Ok(fail_early(json, f)),
    };
    if args.dry_run {
        let url = match &resolved.endpoint {
            crate::profile::resource::Endpoint::Connect { host, port } => {
                format!("cs://{host}:{port}")
            }
            crate::profile::resource::Endpoint::Listen { port } => client::url(true, *port),
            other => other.to_string(),
        };
        let client_argv = client::argv(
            &mode,
            &url,
            resolved.connect_id.and_then(|i| u32::try_from(i).ok()),
        );
        let plan = serde_json::json!({
            "profile": resolved.name,
            "kind": "plain ParaView server (no <PVLaunch> settings): its command runs as ParaView runs it",
            "endpoint": resolved.endpoint,
            "client": mode,
            "client_argv": client_argv,
            "command": resolved.command,
        });
        if json {
            crate::say!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            crate::say!(
                "plan for {} (a plain ParaView server: its command runs as ParaView runs it)",
                resolved.name
            );
            crate::say!("  endpoint  {}", resolved.endpoint);
            if let Some(a) = &client_argv {
                crate::say!("  client    {}", crate::quote::join(a).unwrap_or_default());
            }
            if let Some(c) = &resolved.command {
                crate::say!(
                    "  command   {} (delay {} s)",
                    crate::quote::join(&c.argv).unwrap_or_default(),
                    c.delay
                );
            }
        }
        return Ok(Code::Success);
    }
    let style = style_for(json, &mode, environment);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reporter = Reporter::new(style);
    Ok(runtime.block_on(crate::plain::run(resolved, &mode, &mut reporter)))
}

/// The connect-id when something else decides it. A client pvlaunch does not start cannot learn
/// a random id under ParaView: there the id is ParaView's own (`PV_CONNECT_ID` in the
/// environment or the file) or none at all. With `--client wait` the person is told the id.
fn connect_id_override(
    mode: &client::Mode,
    environment: &BTreeMap<String, String>,
    declared: Option<i64>,
) -> Option<profile::settings::ConnectId> {
    use profile::settings::ConnectId;
    let fixed = |id: i64| {
        u32::try_from(id)
            .ok()
            .filter(|&i| i > 0)
            .map(ConnectId::Fixed)
    };
    match mode {
        client::Mode::Paraview { .. } | client::Mode::Pvpython { .. } => declared.and_then(fixed),
        // The person starts the client: the id is the profile's, or the profile's policy (a
        // fresh random one by default, which `waiting_for_client` tells them).
        client::Mode::Wait => environment
            .get("PV_CONNECT_ID")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .or(declared)
            .and_then(fixed),
        // ParaView's Connect dialog passes only an id the profile declares.
        client::Mode::None => {
            let from_paraview = environment
                .get("PV_CONNECT_ID")
                .and_then(|v| v.trim().parse::<i64>().ok());
            Some(
                from_paraview
                    .or(declared)
                    .and_then(fixed)
                    .unwrap_or(ConnectId::None),
            )
        }
    }
}
