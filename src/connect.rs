//! `pvlaunch connect`: profile -> plan -> session.

use std::collections::BTreeMap;

use color_eyre::Result;

use crate::cli::{ClientChoice, ConnectArgs, RecipeChoice};
use crate::client;
use crate::commands::pick;
use crate::events::{Event, Reporter, Style};
use crate::exit::Code;
use crate::plan::{self, Overrides};
use crate::profile::settings::Recipe;
use crate::profile::{self};
use crate::ssh;

pub fn connect(cli_files: Vec<std::path::PathBuf>, json: bool, args: &ConnectArgs) -> Result<Code> {
    let picked = match pick(cli_files, &args.name, &args.set, false) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let (resolved, environment) = (&picked.resolved, &picked.environment);
    let Some(launch) = picked.launch.clone() else {
        return plain(resolved, environment, json, args);
    };
    let request = client_request(args);
    let mode = match decide_mode(&request, environment) {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let style = style_for(json, &mode, environment);
    let private_dir = ssh::private_dir()?;
    let target = ssh::Target {
        program: "ssh".into(),
        destination: launch.login_host.clone(),
        user: launch.login_user.clone(),
        port: launch.login_port,
        jump_hosts: launch.jump_hosts.clone(),
        control_path: ssh::control_path(private_dir.path()),
        extra_options: vec![],
    };
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
        recipe: args.recipe.map(|r| match r {
            RecipeChoice::Auto => Recipe::Auto,
            RecipeChoice::Reverse => Recipe::Reverse,
            RecipeChoice::Relay => Recipe::Relay,
            RecipeChoice::TwoHop => Recipe::TwoHop,
            RecipeChoice::ReverseTwoHop => Recipe::ReverseTwoHop,
        }),
        connect_id: connect_id_override(&mode, environment, resolved.connect_id),
        keep_job: args.keep_job,
    };
    let batch = !std::io::IsTerminal::is_terminal(&std::io::stdin());
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
            eprintln!("error: {e}");
            return Ok(match e {
                plan::PlanError::ForwardResource(_) | plan::PlanError::ReverseResource(_) => {
                    Code::Usage
                }
                _ => Code::InvalidProfile,
            });
        }
    };
    if args.dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.render());
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
            eprintln!("pvlaunch: {reason}");
        }
    }
    Ok(code)
}

fn client_request(args: &ConnectArgs) -> client::Request {
    match args.client {
        ClientChoice::Auto => client::Request::Auto,
        ClientChoice::Paraview => client::Request::Paraview,
        ClientChoice::Pvpython => client::Request::Pvpython(
            args.script.clone().unwrap_or_default(),
            args.script_args.clone(),
        ),
        ClientChoice::Wait => client::Request::Wait,
        ClientChoice::None => client::Request::None,
    }
}

fn decide_mode(
    request: &client::Request,
    environment: &BTreeMap<String, String>,
) -> Result<client::Mode, Code> {
    client::decide(request, environment, |p| {
        which::which(p).ok().map(|p| p.display().to_string())
    })
    .map_err(|e| {
        eprintln!("error: {e}\n  hint: {}", e.hint());
        Code::Client
    })
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
) -> Result<Code> {
    let mode = match decide_mode(&client_request(args), environment) {
        Ok(m) => m,
        Err(code) => return Ok(code),
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
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "plan for {} (a plain ParaView server: its command runs as ParaView runs it)",
                resolved.name
            );
            println!("  endpoint  {}", resolved.endpoint);
            if let Some(a) = &client_argv {
                println!("  client    {}", crate::quote::join(a).unwrap_or_default());
            }
            if let Some(c) = &resolved.command {
                println!(
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
/// a random id: under ParaView the id is ParaView's own (`PV_CONNECT_ID` in the environment or
/// the file), and with `--client wait` the file's, or none at all.
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
        client::Mode::Wait | client::Mode::None => {
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
