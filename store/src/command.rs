//! Commands run for the user: dump and load programs, a service's stop and start.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// A command: a line for `sh -c`, or an argument vector run directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly: program and arguments.
    Argv(Vec<String>),
}

impl CommandLine {
    /// The command as shown in messages.
    pub fn display(&self) -> String {
        match self {
            CommandLine::Shell(s) => s.clone(),
            CommandLine::Argv(v) => v.join(" "),
        }
    }

    /// A `Command` ready to spawn (standard input closed unless changed).
    pub fn command(&self) -> Result<Command> {
        let mut c = match self {
            CommandLine::Shell(s) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            CommandLine::Argv(v) => {
                let (prog, args) = v
                    .split_first()
                    .ok_or_else(|| Error::Invalid("an empty command".into()))?;
                let mut c = Command::new(prog);
                c.args(args);
                c
            }
        };
        c.stdin(Stdio::null());
        // The repository's password is cairn's, not the dump or load program's.
        for var in [
            "CAIRN_PASSWORD",
            "CAIRN_NEW_PASSWORD",
            "CAIRN_PASSWORD_FILE",
            "CAIRN_NEW_PASSWORD_FILE",
        ] {
            c.env_remove(var);
        }
        // A dump or load program must not outlive cairn: killed midway, cairn can no longer
        // feed or read it, and a load program left running (reading the end of its input)
        // would change the live state after the next state command has put it back.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches only the child's own state.
            unsafe {
                c.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Ok(c)
    }
}

/// "exit status 3" or "killed by signal 9".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}
