//! Talking to the lab's workloads the way the end-to-end tests do: `curl` and Python clients
//! run inside a namespace, and the echo server's answers (`pod=<name> peer=<ip>:<port>…`) read
//! back.
use std::time::Duration;

use serde_json::Value;

use crate::{lab, Lab, LabError, LabOptions};

/// A lab of `nodes` nodes with `examples/<example>` applied and, for each `(selector, count)` of
/// `ready`, that many pods Ready.
pub fn example_lab(nodes: usize, example: &str, ready: &[(&str, usize)]) -> Result<Lab, LabError> {
    example_lab_with(LabOptions::new(nodes), example, ready)
}

/// [`example_lab`] on a lab built with `opts`.
pub fn example_lab_with(
    opts: LabOptions,
    example: &str,
    ready: &[(&str, usize)],
) -> Result<Lab, LabError> {
    let lab = Lab::up(opts)?;
    lab.kubectl
        .apply_file(&lab::workspace_root().join("examples").join(example))?;
    for (selector, count) in ready {
        lab.kubectl
            .wait_pods_ready(selector, *count, Duration::from_secs(60))?;
    }
    Ok(lab)
}

/// Applies the manifest text `yaml` with kubectl (written to a file in the lab directory).
pub fn apply(lab: &Lab, yaml: &str) -> Result<String, LabError> {
    let dir = lab::lab_dir(&lab.opts.root);
    let path = dir.join(format!("apply-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).map_err(|e| LabError::Io(path.clone(), e))?;
    let out = lab.kubectl.apply_file(&path);
    let _ = std::fs::remove_file(&path);
    out
}

/// What an echo server answered: the pod that answered and the address it saw the client at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The answering pod.
    pub pod: String,
    /// The client's address as the pod saw it (without the port).
    pub peer: String,
}

impl Echo {
    /// Parses `pod=<name> peer=<ip>:<port> …`.
    pub fn parse(answer: &str) -> Option<Echo> {
        let field = |key: &str| {
            answer
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let peer = field("peer=")?;
        Some(Echo {
            pod: field("pod=")?,
            peer: peer
                .rsplit_once(':')
                .map_or(peer.clone(), |(ip, _)| ip.to_string()),
        })
    }
}

/// `curl -sS --max-time 2 URL` inside network namespace `netns`: the body, or curl's error.
pub fn curl(lab: &Lab, netns: &str, url: &str) -> Result<String, String> {
    let out = lab
        .exec_in(netns, &["curl", "-sS", "--max-time", "2", url])
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`curl`] of an echo server, parsed.
pub fn echo(lab: &Lab, netns: &str, url: &str) -> Result<Echo, String> {
    let body = curl(lab, netns, url)?;
    Echo::parse(&body).ok_or(body)
}

/// Starts a Python 3 `script` inside `netns` in the background, its stdin and stdout piped (a
/// request loop, a held connection); the caller waits for or kills it.
pub fn spawn_python(netns: &str, script: &str) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 in {netns}: {e}"))
}

/// Runs a Python 3 `script` inside `netns` and returns what it printed (trimmed), or its error.
pub fn python(lab: &Lab, netns: &str, script: &str) -> Result<String, String> {
    let out = lab
        .exec_in(netns, &["python3", "-c", script])
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The network namespace of pod `name` in namespace `default`.
pub fn pod_ns(name: &str) -> String {
    format!("sy-pod-default-{name}")
}

/// The `status.podIP` of pod `name` in namespace `default`.
pub fn pod_ip(lab: &Lab, name: &str) -> Result<String, LabError> {
    let pod = lab.kubectl.get_json(&["pod", name])?;
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| LabError::Unexpected(format!("pod {name} has no podIP yet")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_answer_gives_the_pod_and_the_peer_address() {
        assert_eq!(
            Echo::parse("pod=echo-n2 peer=10.244.1.5:40000 line=x"),
            Some(Echo {
                pod: "echo-n2".into(),
                peer: "10.244.1.5".into()
            })
        );
        assert_eq!(Echo::parse("curl: (7) refused"), None);
    }
}
