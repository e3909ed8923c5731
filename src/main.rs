//! Thin entry point: parse, set up the log, run, map the outcome to an exit code.
//!
//! Nothing here may abort on a closed stdout or stderr (`pvlaunch ... | head`): errors and
//! panic reports are printed with write errors ignored.

use std::io::Write;
use std::process::ExitCode;

use pvlaunch::cli::Command;

fn main() -> ExitCode {
    // Run by ssh as its askpass (macOS): the prompt is the one argument.
    if std::env::var_os(pvlaunch::auth::BUILTIN_ASKPASS_ENV).is_some_and(|v| v == "1")
        && std::env::var_os("SSH_ASKPASS_REQUIRE").is_some()
    {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let [prompt] = args.as_slice() {
            return ExitCode::from(pvlaunch::auth::builtin_askpass(prompt) as u8);
        }
    }
    install_hooks();
    let cli = <pvlaunch::cli::Cli as clap::Parser>::parse();
    // The relay logs each connection by default; the other commands only warnings.
    let base = match cli.command {
        Command::Relay(_) => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    pvlaunch::term::init_tracing(cli.verbose, base);
    match pvlaunch::run(cli) {
        Ok(code) => code.into(),
        // The reader of our output went away: nothing left to say, and nobody to say it to.
        Err(err) if err.chain().any(pvlaunch::term::is_broken_pipe) => {
            pvlaunch::exit::Code::Success.into()
        }
        Err(err) => {
            let report = format!("{err:?}");
            pvlaunch::say_err!("error: {}", pvlaunch::term::sanitize(&report));
            pvlaunch::exit::Code::Failure.into()
        }
    }
}

/// color-eyre's reports, with a panic hook that cannot panic itself (its default prints with
/// `eprintln!`, and a second panic while panicking aborts).
fn install_hooks() {
    let (panic_hook, eyre_hook) = color_eyre::config::HookBuilder::default().into_hooks();
    let _ = eyre_hook.install();
    std::panic::set_hook(Box::new(move |info| {
        let report = panic_hook.panic_report(info).to_string();
        let _ = writeln!(std::io::stderr().lock(), "{report}");
    }));
}
