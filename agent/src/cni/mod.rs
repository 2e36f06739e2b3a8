//! CNI 1.0 plugin (ADD/DEL/CHECK/VERSION) with host-local IPAM from the node's podCIDR.
//!
//! The kubelet runs the `switchyard` executable with `CNI_COMMAND` set and the network
//! configuration on stdin; [`run_from_env`] answers on stdout as the CNI spec says.
//! - [`config`]: stdin configuration and `CNI_*` environment.
//! - [`ipam`]: host-local address allocation with a file lock.
//! - [`plugin`]: the ADD/DEL/CHECK operations on the kernel.
//! - [`result`] and [`error`]: what goes back on stdout.
//! - [`conflist`]: the configuration list a container runtime reads, and what it derives from it.
//! - [`install`]: `switchyard install-cni`, putting the plugin and its list on a node.
pub mod config;
pub mod conflist;
pub mod error;
pub mod install;
pub mod ipam;
pub mod plugin;
mod record;
pub mod result;
pub mod subnet;

pub use config::{Command, Invocation, NetConf};
pub use error::CniError;
pub use record::{read_records, EndpointRecord};
pub use subnet::Subnet;

use std::io::Read;

/// Runs the plugin as a container runtime invokes it (`CNI_COMMAND` and friends in the
/// environment, network configuration on stdin); prints the result or a CNI error JSON on
/// stdout and returns the process exit code.
pub fn run_from_env() -> i32 {
    let mut stdin = Vec::new();
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let stdin_read = if command == "VERSION" {
        // VERSION may come with or without a configuration; never block on a terminal.
        Ok(0)
    } else {
        std::io::stdin().read_to_end(&mut stdin)
    };
    let (out, code) = match stdin_read {
        Ok(_) => run(&command, &stdin, |k| std::env::var(k).ok()),
        Err(e) => {
            let err = CniError::new(
                error::code::IO,
                "cannot read the network configuration from stdin",
            )
            .with_details(e.to_string());
            (err.to_json("1.0.0"), 1)
        }
    };
    println!("{out}");
    code
}

/// One invocation with explicit inputs: returns what to print on stdout and the exit code.
pub fn run(command: &str, stdin: &[u8], env: impl Fn(&str) -> Option<String>) -> (String, i32) {
    // Errors are tagged with the configuration's version when it can be read.
    let version = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "1.0.0".to_string());
    match dispatch(command, stdin, env) {
        Ok(out) => (out, 0),
        Err(e) => (e.to_json(&version), 1),
    }
}

fn dispatch(
    command: &str,
    stdin: &[u8],
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, CniError> {
    let command = Command::parse(command)?;
    if command == Command::Version {
        return Ok(result::version_json());
    }
    let conf = NetConf::parse(stdin)?;
    let inv = Invocation::from_lookup(command, env)?;
    match command {
        Command::Add => {
            let res = plugin::add(&conf, &inv)?;
            serde_json::to_string(&res).map_err(|e| {
                CniError::new(error::code::IO, "cannot encode the result")
                    .with_details(e.to_string())
            })
        }
        Command::Del => plugin::del(&conf, &inv).map(|()| String::new()),
        Command::Check => plugin::check(&conf, &inv).map(|()| String::new()),
        Command::Version => Ok(result::version_json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_needs_no_config() {
        let (out, code) = run("VERSION", b"", |_| None);
        assert_eq!(code, 0);
        assert!(out.contains("supportedVersions"));
    }

    #[test]
    fn unknown_commands_and_bad_configs_are_cni_errors() {
        let (out, code) = run("FROB", b"", |_| None);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["code"], error::code::INVALID_ENV);
        let (out, code) = run("ADD", br#"{"cniVersion":"0.4.0"}"#, |_| None);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["code"], error::code::DECODE);
        assert_eq!(v["cniVersion"], "0.4.0");
    }
}
