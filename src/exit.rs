//! The exit codes pvlaunch returns, in one table (documented in README.md, "Exit codes", and
//! docs/session.md).

use std::process::ExitCode;

/// What a pvlaunch command ended with. Signals map to 128 + N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything went as asked.
    Success,
    /// An unexpected failure (a bug, or an error without a more precise code).
    Failure,
    /// The command line or a profile is invalid (usage or validation error).
    Usage,
    /// A profile file is malformed or invalid (`validate`, or any command reading it).
    InvalidProfile,
    /// ssh failed: authentication, the connection, or the link dropped.
    Ssh,
    /// The job failed, or ended before pvserver connected.
    Job,
    /// The site does not allow the recipe (sshd refused or restricted the forward).
    Site,
    /// The job waited too long in the queue, or pvserver did not connect in time.
    Timeout,
    /// The local client could not be found or started, or it never listened.
    Client,
    /// The job reached its wall-time limit (the session ran until the scheduler ended it).
    Walltime,
    /// Killed or stopped by signal N.
    Signal(i32),
    /// The exit status of the program pvlaunch stands in for (`pvlaunch node`: pvserver's).
    Child(u8),
}

impl Code {
    pub fn as_i32(self) -> i32 {
        match self {
            Code::Success => 0,
            Code::Failure => 1,
            Code::Usage => 2,
            Code::InvalidProfile => 3,
            Code::Ssh => 4,
            Code::Job => 5,
            Code::Site => 6,
            Code::Timeout => 7,
            Code::Client => 8,
            Code::Walltime => 9,
            Code::Signal(n) => 128 + n,
            Code::Child(status) => i32::from(status),
        }
    }
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> ExitCode {
        ExitCode::from(code.as_i32().clamp(0, 255) as u8)
    }
}
