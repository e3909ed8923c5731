//! pvlaunch: open a ParaView session on an HPC cluster from one command.
//!
//! Pure parts (profiles, quoting, parsers) are plain functions over data; effects (processes,
//! sockets) live in their own modules. `run` is the whole program, callable from tests.

// `unsafe` only where a system call has no safe wrapper: `process` (fork/exec hooks, signals,
// waitid), `relay::sys` (allowed in `relay`), and `profile`'s gethostname.
#![deny(unsafe_code)]

pub mod auth;
pub mod channel;
pub mod check;
pub mod cli;
pub mod client;
pub mod commands;
pub mod connect;
pub mod events;
pub mod exit;
pub mod follow;
pub mod hop;
pub mod init;
pub mod job;
pub mod keep;
pub mod outcome;
pub mod plain;
pub mod plan;
#[allow(unsafe_code)]
pub mod process;
#[allow(unsafe_code)] // gethostname() in profile::hostname
pub mod profile;
pub mod pvserver;
pub mod quote;
pub mod recipe;
pub mod reconnect;
pub mod relay;
pub mod remote;
pub mod resume;
pub mod scheduler;
pub mod servers_pvsc;
pub mod session;
pub mod ssh;
pub mod suggest;
pub mod term;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::exit::Code;

/// Run one parsed command line and return the exit code.
pub fn run(cli: Cli) -> color_eyre::Result<Code> {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "pvlaunch", &mut term::stdout());
            Ok(Code::Success)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut term::stdout())?;
            Ok(Code::Success)
        }
        Command::List => commands::list(cli.profiles, cli.json),
        Command::Show(args) => commands::show(cli.profiles, cli.json, &args),
        Command::Validate(args) => commands::validate(&args.files, cli.json),
        Command::Connect(args) => connect::connect(cli.profiles, cli.json, &args),
        Command::Logout(args) => connect::logout(cli.profiles, &args),
        Command::Check(args) => check::command(cli.profiles, cli.json, &args),
        Command::Init(args) => init::command(cli.json, &args),
        Command::InstallParaview(args) => servers_pvsc::command(cli.profiles, &args),
        Command::Relay(args) => Ok(relay::command::main(args.into(), cli.json, cli.verbose)),
        Command::Node(args) => Ok(hop::node::main(args.into())),
        Command::Channel(cli::ChannelCommand::Serve { linger }) => {
            Ok(channel::server::main(channel::ServeRequest { linger }))
        }
        Command::Channel(cli::ChannelCommand::Exec { socket, wire }) => {
            Ok(channel::exec_main(channel::ExecRequest {
                socket,
                wire: wire.join(" "),
            }))
        }
    }
}
