//! kubectl against the lab: the kubeconfig, commands, and the waits tests need.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{output, run};
use crate::LabError;

/// A kubectl bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    /// The kubeconfig path.
    pub kubeconfig: PathBuf,
}

/// Writes a token file (kube-apiserver's CSV: `token,user,uid,"groups"`) for user `admin` with
/// a fresh random token to `path`, readable by root only.
pub fn write_token_file(path: &Path) -> Result<(), LabError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| LabError::Io(path.to_path_buf(), e);
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{token},admin,admin,\"system:masters\"").map_err(io)
}

impl Kubectl {
    /// Runs kubectl with `args`; stdout on success.
    pub fn run(&self, args: &[&str]) -> Result<String, LabError> {
        let kc = self.kubeconfig.to_string_lossy().into_owned();
        let mut argv = vec!["kubectl", "--kubeconfig", kc.as_str()];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// `kubectl apply -f` of a file.
    pub fn apply_file(&self, path: &Path) -> Result<String, LabError> {
        self.run(&["apply", "-f", &path.to_string_lossy()])
    }

    /// An object as JSON.
    pub fn get_json(&self, args: &[&str]) -> Result<Value, LabError> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        let out = self.run(&a)?;
        serde_json::from_str(&out)
            .map_err(|e| LabError::Unexpected(format!("kubectl printed no JSON: {e}")))
    }

    /// Whether `kubectl get` finds the object (false on NotFound).
    pub fn exists(&self, args: &[&str]) -> Result<bool, LabError> {
        let kc = self.kubeconfig.to_string_lossy().into_owned();
        let mut argv = vec!["kubectl", "--kubeconfig", kc.as_str(), "get"];
        argv.extend_from_slice(args);
        let out = output(&argv)?;
        Ok(out.status.success())
    }

    /// The ClusterIP of service `name`.
    pub fn cluster_ip(&self, name: &str) -> Result<String, LabError> {
        let svc = self.get_json(&["service", name])?;
        svc.pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| LabError::Unexpected(format!("service {name} has no clusterIP")))
    }

    /// Waits until every pod matching `selector` (at least `count`) is Ready.
    pub fn wait_pods_ready(
        &self,
        selector: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), LabError> {
        wait(
            &format!("{count} Ready pods matching {selector:?}"),
            timeout,
            Some("see target/lab/logs/kubelet-n*.log"),
            || {
                let list = self.get_json(&["pods", "-l", selector])?;
                let ready = list["items"].as_array().map_or(0, |items| {
                    items
                        .iter()
                        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                        .filter(|p| {
                            p.pointer("/status/conditions")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                        .count()
                });
                Ok(ready >= count)
            },
        )
    }

    /// Waits until node `name` is Ready.
    pub fn wait_node_ready(&self, name: &str, timeout: Duration) -> Result<(), LabError> {
        wait(
            &format!("node {name} to be Ready"),
            timeout,
            Some("see target/lab/logs/kubelet-*.log and agent-*.log"),
            || {
                let Ok(node) = self.get_json(&["node", name]) else {
                    return Ok(false);
                };
                Ok(node
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"))
            },
        )
    }
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub fn wait(
    what: &str,
    timeout: Duration,
    hint: Option<&str>,
    mut check: impl FnMut() -> Result<bool, LabError>,
) -> Result<(), LabError> {
    let start = Instant::now();
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(LabError::Timeout {
                what: what.into(),
                secs: timeout.as_secs(),
                hint: hint.map(str::to_string),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
