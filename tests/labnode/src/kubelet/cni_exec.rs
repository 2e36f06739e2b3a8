//! Running the CNI plugin as a separate process, the way a container runtime does.
use super::error::Error;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use switchyard::cni::result::CniResult;
use switchyard::cni::Subnet;
use tokio::io::AsyncWriteExt;

/// How long one plugin invocation may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI plugin of this node: an executable and the network configuration to give it.
#[derive(Clone, Debug)]
pub struct CniRunner {
    exe: PathBuf,
    conf: String,
}

/// The pod a CNI call is about.
#[derive(Clone, Copy, Debug)]
pub struct PodRef<'a> {
    /// Pod namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// CNI container id.
    pub container_id: &'a str,
}

/// The network configuration the kubelet hands the plugin (see docs/architecture.md).
pub fn network_config(node: &str, subnet: Subnet, gateway: Ipv4Addr) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "switchyard",
        "type": "switchyard",
        "node": node,
        "bridge": switchyard::paths::BRIDGE,
        "ipam": {"type": "host-local", "subnet": subnet.to_string(), "gateway": gateway.to_string()},
    })
    .to_string()
}

/// The plugin configuration a container runtime derives from its configuration directory
/// `dir`, as libcni does: the first file in name order ending in `.conflist`, `.conf` or
/// `.json`; of a list, its first plugin with the list's `cniVersion` and `name`
/// ([`switchyard::cni::conflist::plugin_config`]); a single plugin's configuration as it is.
/// `None` while the directory holds none (a runtime reports the network not ready then).
pub fn config_from_dir(dir: &Path) -> Result<Option<String>, Error> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(dir)(e)),
    };
    files.retain(|p| {
        p.extension()
            .is_some_and(|x| x == "conflist" || x == "conf" || x == "json")
    });
    files.sort();
    let Some(first) = files.first() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(first).map_err(Error::io(first))?;
    let unusable = |msg: String| Error::Io {
        path: first.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
    if first.extension().is_some_and(|x| x == "conflist") {
        let plugin = switchyard::cni::conflist::plugin_config(&value)
            .map_err(|e| unusable(e.to_string()))?;
        Ok(Some(plugin.to_string()))
    } else {
        Ok(Some(value.to_string()))
    }
}

impl CniRunner {
    /// A runner for `exe` (normally the `switchyard` executable) with configuration `conf`.
    pub fn new(exe: PathBuf, conf: String) -> CniRunner {
        CniRunner { exe, conf }
    }

    async fn invoke(
        &self,
        command: &'static str,
        pod: PodRef<'_>,
        netns: Option<&Path>,
    ) -> Result<String, Error> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", pod.container_id)
            .env("CNI_IFNAME", switchyard::paths::POD_IFNAME)
            .env(
                "CNI_PATH",
                self.exe.parent().map(Path::to_path_buf).unwrap_or_default(),
            )
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                    pod.namespace, pod.name
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match netns {
            Some(p) => cmd.env("CNI_NETNS", p),
            None => cmd.env_remove("CNI_NETNS"),
        };
        let cni_err = |code: u32, msg: String| Error::Cni {
            command,
            container_id: pod.container_id.to_string(),
            code,
            msg,
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| cni_err(0, format!("cannot run {}: {e}", self.exe.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.conf.as_bytes())
                .await
                .map_err(|e| cni_err(0, format!("cannot write the configuration: {e}")))?;
        }
        let out = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| cni_err(0, format!("no answer within {PLUGIN_TIMEOUT:?}")))?
            .map_err(|e| cni_err(0, e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            return Ok(stdout);
        }
        let parsed: Option<serde_json::Value> = serde_json::from_str(&stdout).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("code")?.as_u64())
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0);
        let msg = match &parsed {
            Some(v) => format!(
                "{} {}",
                v.get("msg").and_then(|m| m.as_str()).unwrap_or(""),
                v.get("details").and_then(|m| m.as_str()).unwrap_or("")
            )
            .trim()
            .to_string(),
            None => format!("{stdout} {}", String::from_utf8_lossy(&out.stderr).trim()),
        };
        Err(cni_err(code, msg))
    }

    /// CNI ADD: wires `netns` and returns the plugin's result.
    pub async fn add(&self, pod: PodRef<'_>, netns: &Path) -> Result<CniResult, Error> {
        let out = self.invoke("ADD", pod, Some(netns)).await?;
        serde_json::from_str(&out).map_err(|e| Error::Cni {
            command: "ADD",
            container_id: pod.container_id.to_string(),
            code: 0,
            msg: format!("unreadable result {out:?}: {e}"),
        })
    }

    /// CNI DEL: unwires the container (the namespace may already be gone).
    pub async fn del(&self, pod: PodRef<'_>, netns: Option<&Path>) -> Result<(), Error> {
        let netns = netns.filter(|p| p.exists());
        self.invoke("DEL", pod, netns).await.map(|_| ())
    }
}

/// The pod address from an ADD result.
pub fn pod_ip(result: &CniResult) -> Option<Ipv4Addr> {
    result
        .ips
        .first()
        .and_then(|ip| ip.address.split('/').next())
        .and_then(|a| a.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_install_cni_writes_gives_the_plugin_exactly_the_kubelets_own_config() {
        let subnet: Subnet = "10.244.2.0/24".parse().unwrap();
        let list = switchyard::cni::conflist::for_node("n2", subnet).unwrap();
        let dir = std::env::temp_dir().join(format!("sy-cni-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(config_from_dir(&dir).unwrap(), None, "nothing yet");
        std::fs::write(
            dir.join(switchyard::cni::conflist::FILE_NAME),
            list.to_string(),
        )
        .unwrap();
        // Another network's list sorts after it and is not used.
        std::fs::write(dir.join("10-flannel.conflist"), "{}").unwrap();
        std::fs::write(dir.join("README"), "not a configuration").unwrap();
        let derived = config_from_dir(&dir).unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let derived: serde_json::Value = serde_json::from_str(&derived).unwrap();
        let own: serde_json::Value =
            serde_json::from_str(&network_config("n2", subnet, Ipv4Addr::new(10, 244, 2, 1)))
                .unwrap();
        assert_eq!(derived, own);
    }

    #[test]
    fn config_matches_the_contract() {
        let subnet: Subnet = "10.244.1.0/24".parse().unwrap();
        let conf = network_config("n1", subnet, Ipv4Addr::new(10, 244, 1, 1));
        let parsed = switchyard::cni::NetConf::parse(conf.as_bytes()).unwrap();
        assert_eq!(parsed.node, "n1");
        assert_eq!(parsed.bridge, "cbr0");
        assert_eq!(
            parsed.mtu, None,
            "the pods follow cbr0, whose MTU follows the uplink"
        );
        assert_eq!(parsed.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(parsed.ipam.subnet, subnet);
    }
}
