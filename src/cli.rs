//! The command line, as clap types only. `lib.rs` turns these into domain requests.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Open a ParaView session on an HPC cluster from one command.
///
/// pvlaunch reads ParaView server profiles (`.pvsc` files), submits pvserver as a batch job,
/// builds the ssh tunnel the site needs and starts or waits for the local ParaView client.
#[derive(Debug, Parser)]
#[command(
    name = "pvlaunch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_long_help = "Examples:
  pvlaunch list                         profiles from every source, and where each comes from
  pvlaunch show cluster-a               resolved options, variables and the command ParaView runs
  pvlaunch show cluster-a --set NODES=4 the same with an option changed
  pvlaunch validate site.pvsc           check a file for a site administrator
  pvlaunch -f pvsc/cluster-a.pvsc list  read an extra profile file")]
pub struct Cli {
    /// Read profiles from FILE as well (repeatable; later files win).
    #[arg(short = 'f', long = "profiles", value_name = "FILE", global = true)]
    pub profiles: Vec<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (repeat for more); also RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every profile pvlaunch can see, with the file it came from.
    ///
    /// Sources, later ones winning for the same name: ParaView's own servers.pvsc, every
    /// *.pvsc in pvlaunch's config folder, the files in PVLAUNCH_PROFILES, then each -f FILE.
    #[command(after_long_help = "Examples:
  pvlaunch list
  pvlaunch list --json | jq -r '.[].name'
  PVLAUNCH_PROFILES=site.pvsc:mine.pvsc pvlaunch list")]
    List,

    /// Show one profile resolved: options, variables, endpoint and the exact argv.
    #[command(after_long_help = "Examples:
  pvlaunch show cluster-a
  pvlaunch show cluster-a --set NODES=4 --set PARTITION=debug
  pvlaunch show 'ORNL andes' --json")]
    Show(ShowArgs),

    /// Check profile files: every error and warning at once; non-zero exit on any error.
    #[command(after_long_help = "Examples:
  pvlaunch validate /etc/paraview/site.pvsc
  pvlaunch validate pvsc/*.pvsc --json")]
    Validate(ValidateArgs),

    /// Print a shell completion script.
    #[command(after_long_help = "Examples:
  pvlaunch completions bash > ~/.local/share/bash-completion/completions/pvlaunch
  pvlaunch completions zsh > ~/.zfunc/_pvlaunch")]
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout.
    #[command(after_long_help = "Examples:
  pvlaunch man > pvlaunch.1 && man ./pvlaunch.1")]
    Man,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile's name (the `name` attribute of its <Server>).
    pub name: String,

    /// Set an option, as ParaView's dialog would (repeatable).
    #[arg(long = "set", value_name = "OPTION=VALUE")]
    pub set: Vec<String>,

    /// Treat an unknown $NAME$ in the command as an error instead of ParaView's bare NAME.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}
