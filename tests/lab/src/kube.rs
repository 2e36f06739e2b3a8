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

/// The identity of the token pods get (the kubelet's `--service-account-token-file`).
pub const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:default:default";
/// The identity of the cluster DNS's token ([`crate::dns::SERVICE_ACCOUNT`]).
pub const DNS_USER: &str = "system:serviceaccount:kube-system:kube-dns";
/// The groups of [`DNS_USER`]: besides its service-account groups, `switchyard:agents`, whose
/// read-only rules (get/list/watch Services, EndpointSlices, Nodes, Pods) are what CoreDNS's
/// ClusterRole `system:coredns` grants — controlplane-lite has no RBAC objects to bind one.
pub const DNS_GROUPS: &str =
    "system:serviceaccounts,system:serviceaccounts:kube-system,switchyard:agents";

/// The identity of `deploy/`'s ServiceAccount `kube-system/switchyard`, which the agents run as
/// when the lab starts them from the DaemonSet ([`crate::LabOptions::from_daemonset`]).
pub const AGENT_ACCOUNT_USER: &str = "system:serviceaccount:kube-system:switchyard";

/// The bearer tokens of a lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// User `admin` (group `system:masters`): kubectl, the agents and the kubelets.
    pub admin: String,
    /// [`SERVICE_ACCOUNT_USER`] (groups `system:serviceaccounts`,
    /// `system:serviceaccounts:default`, and `switchyard:viewers`, which reads everything, as a
    /// binding to the `view` ClusterRole would): what every pod finds at
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub service_account: String,
    /// [`DNS_USER`]: what the cluster DNS pod finds there instead.
    pub dns: String,
    /// [`AGENT_ACCOUNT_USER`] (groups `system:serviceaccounts` and
    /// `system:serviceaccounts:kube-system` only, as a real token has): controlplane-lite grants
    /// it exactly what `deploy/`'s ClusterRole does, nothing through a group.
    pub agent: String,
}

/// A fresh random token (48 hex digits).
fn random_token() -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path`, readable by root only.
pub fn write_private(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| LabError::Io(path.to_path_buf(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// The token file text (kube-apiserver's CSV: `token,user,uid,"groups"`): `admin` first (the
/// token switchyard-cp writes into its kubeconfig), then the pods' service account, then the
/// cluster DNS's and the agents'.
pub fn token_file_text(tokens: &Tokens) -> String {
    format!(
        "{},admin,admin,\"system:masters\"\n\
         {},{SERVICE_ACCOUNT_USER},serviceaccount-default-default,\"system:serviceaccounts,system:serviceaccounts:default,switchyard:viewers\"\n\
         {},{DNS_USER},serviceaccount-kube-system-kube-dns,\"{DNS_GROUPS}\"\n\
         {},{AGENT_ACCOUNT_USER},serviceaccount-kube-system-switchyard,\"system:serviceaccounts,system:serviceaccounts:kube-system\"\n",
        tokens.admin, tokens.service_account, tokens.dns, tokens.agent
    )
}

/// Writes a token file with fresh random tokens for `admin`, the pods' service account, the
/// cluster DNS and the agents ([`token_file_text`]) to `path`, readable by root only; returns the
/// tokens.
pub fn write_token_file(path: &Path) -> Result<Tokens, LabError> {
    let io = |e| LabError::Io(path.to_path_buf(), e);
    let tokens = Tokens {
        admin: random_token().map_err(io)?,
        service_account: random_token().map_err(io)?,
        dns: random_token().map_err(io)?,
        agent: random_token().map_err(io)?,
    };
    write_private(path, &token_file_text(&tokens))?;
    Ok(tokens)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lists_admin_first_then_the_service_accounts() {
        let text = token_file_text(&Tokens {
            admin: "a1".into(),
            service_account: "s2".into(),
            dns: "d3".into(),
            agent: "s3".into(),
        });
        assert_eq!(
            text,
            "a1,admin,admin,\"system:masters\"\n\
             s2,system:serviceaccount:default:default,serviceaccount-default-default,\"system:serviceaccounts,system:serviceaccounts:default,switchyard:viewers\"\n\
             d3,system:serviceaccount:kube-system:kube-dns,serviceaccount-kube-system-kube-dns,\"system:serviceaccounts,system:serviceaccounts:kube-system,switchyard:agents\"\n\
             s3,system:serviceaccount:kube-system:switchyard,serviceaccount-kube-system-switchyard,\"system:serviceaccounts,system:serviceaccounts:kube-system\"\n"
        );
        let t = random_token().unwrap();
        assert_eq!(t.len(), 48);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
