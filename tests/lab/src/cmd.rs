//! Running commands: checked, with their stderr in the error.
use std::process::{Command, Output, Stdio};

use crate::LabError;

/// Runs `argv`, failing with its stderr if it exits non-zero; returns stdout.
pub fn run(argv: &[&str]) -> Result<String, LabError> {
    let out = output(argv)?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `argv` and returns its output whatever the exit status.
pub fn output(argv: &[&str]) -> Result<Output, LabError> {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: argv.join(" "),
            source,
        })
}

/// Runs `argv`, ignoring failure (for clean-up of things that may not exist).
pub fn quiet(argv: &[&str]) {
    let _ = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
