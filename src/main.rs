//! Thin entry point: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let _ = color_eyre::install();
    let cli = <pvlaunch::cli::Cli as clap::Parser>::parse();
    match pvlaunch::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("error: {err:?}");
            pvlaunch::exit::Code::Failure.into()
        }
    }
}
