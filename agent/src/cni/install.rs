//! `switchyard install-cni`: puts the CNI plugin on a node, as the DaemonSet's init container
//! does — this very executable copied into the runtime's plugin directory as `switchyard`, and
//! the node's configuration list ([`super::conflist`]) into its configuration directory.
//!
//! Invariant: a container runtime never sees a half-written plugin or configuration. Each file
//! is written to a temporary name in its target directory and renamed over the old one, so a
//! runtime executing the old plugin keeps its file and the next one gets the new file whole.
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::{conflist, Subnet};
use crate::kubeclient::KubeconfigError;

/// Options of `switchyard install-cni`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Where the container runtime finds CNI plugins (in the DaemonSet: the host's
    /// `/opt/cni/bin`, mounted at `/host/opt/cni/bin`).
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// Where the container runtime reads network configurations (in the DaemonSet: the host's
    /// `/etc/cni/net.d`, mounted at `/host/etc/cni/net.d`).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// This node's name; in a DaemonSet, from the downward API (`spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// Kubeconfig to read the node's podCIDR with; without it, the in-cluster configuration.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's podCIDR; default: read from its Node (no API access when given).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// How long to wait for the Node to exist and have a podCIDR.
    #[arg(long, default_value_t = 300)]
    pub wait_seconds: u64,
}

/// What `install-cni` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The plugin executable.
    pub plugin: PathBuf,
    /// The configuration list.
    pub conflist: PathBuf,
}

/// Why the plugin could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The running executable cannot be found to copy it.
    #[error("cannot find this executable to install it as the CNI plugin")]
    CurrentExe(#[source] std::io::Error),
    /// A target directory is missing.
    #[error("{0} does not exist: mount the host's CNI directory there (see deploy/03-daemonset.yaml) or pass --bin-dir/--conf-dir")]
    NoDirectory(PathBuf),
    /// Reading or writing a file failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// No API client.
    #[error("cannot reach the API server to read node {node}'s podCIDR")]
    Client {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: KubeconfigError,
    },
    /// The Node has no usable podCIDR in time.
    #[error("node {node} has no podCIDR after {secs}s ({last}): kube-controller-manager assigns them with --allocate-node-cidrs and --cluster-cidr (kubeadm: --pod-network-cidr), or pass --pod-cidr")]
    NoPodCidr {
        /// The node.
        node: String,
        /// How long it waited.
        secs: u64,
        /// What the last attempt saw.
        last: String,
    },
    /// A podCIDR that is not an IPv4 CIDR.
    #[error("podCIDR {0:?} is not an IPv4 CIDR (switchyard's pods are IPv4)")]
    BadPodCidr(String),
    /// The configuration list cannot be made.
    #[error(transparent)]
    ConfList(#[from] conflist::ConfListError),
}

/// Installs the plugin for `opts.node`: finds its podCIDR ([`pod_cidr`], unless given), then
/// [`install`]s this executable and the node's configuration list.
pub async fn run(opts: &Options) -> Result<Installed, InstallError> {
    let subnet = match &opts.pod_cidr {
        Some(cidr) => parse_pod_cidr(cidr)?,
        None => {
            let client = match &opts.kubeconfig {
                Some(path) => crate::kubeclient::client_from_kubeconfig(path).await,
                None => crate::kubeclient::in_cluster().await,
            }
            .map_err(|source| InstallError::Client {
                node: opts.node.clone(),
                source,
            })?;
            pod_cidr(&client, &opts.node, Duration::from_secs(opts.wait_seconds)).await?
        }
    };
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    let list = conflist::for_node(&opts.node, subnet)?;
    install(&exe, &opts.bin_dir, &opts.conf_dir, &list)
}

fn parse_pod_cidr(cidr: &str) -> Result<Subnet, InstallError> {
    cidr.parse()
        .map_err(|_| InstallError::BadPodCidr(cidr.to_string()))
}

/// The podCIDR of node `node` (its first IPv4 one), waiting up to `wait` for the Node to exist
/// and have one: the init container may run before kube-controller-manager assigned it.
pub async fn pod_cidr(
    client: &kube::Client,
    node: &str,
    wait: Duration,
) -> Result<Subnet, InstallError> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let start = Instant::now();
    loop {
        let last = match nodes.get(node).await {
            Ok(n) => {
                let spec = n.spec.unwrap_or_default();
                let cidrs = spec
                    .pod_cidrs
                    .unwrap_or_default()
                    .into_iter()
                    .chain(spec.pod_cidr);
                let mut seen = Vec::new();
                for cidr in cidrs {
                    match parse_pod_cidr(&cidr) {
                        Ok(subnet) => return Ok(subnet),
                        Err(_) => seen.push(cidr),
                    }
                }
                if seen.is_empty() {
                    "no podCIDR yet".to_string()
                } else {
                    format!("only non-IPv4 podCIDRs {seen:?}")
                }
            }
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= wait {
            return Err(InstallError::NoPodCidr {
                node: node.to_string(),
                secs: wait.as_secs(),
                last,
            });
        }
        tracing::info!(node, state = %last, "waiting for the node's podCIDR");
        tokio::time::sleep(Duration::from_secs(2).min(wait)).await;
    }
}

/// Copies `exe` to `bin_dir/switchyard` (mode 0755) and writes `list` to
/// `conf_dir/05-switchyard.conflist`, each atomically. Both directories must exist.
pub fn install(
    exe: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    list: &Value,
) -> Result<Installed, InstallError> {
    for dir in [bin_dir, conf_dir] {
        if !dir.is_dir() {
            return Err(InstallError::NoDirectory(dir.to_path_buf()));
        }
    }
    let binary = std::fs::read(exe).map_err(|source| InstallError::Io {
        action: "reading",
        path: exe.to_path_buf(),
        source,
    })?;
    let plugin = bin_dir.join(conflist::NETWORK);
    write_atomically(&plugin, &binary, 0o755)?;
    let conf = conf_dir.join(conflist::FILE_NAME);
    let mut text = serde_json::to_string_pretty(list).unwrap_or_else(|_| list.to_string());
    text.push('\n');
    write_atomically(&conf, text.as_bytes(), 0o644)?;
    Ok(Installed {
        plugin,
        conflist: conf,
    })
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`; the temporary file is removed on failure.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |action, source| InstallError::Io {
        action,
        path: tmp.clone(),
        source,
    };
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        f.write_all(bytes).map_err(|e| io("writing", e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("setting the mode of", e))?;
        f.sync_all().map_err(|e| io("flushing", e))?;
        std::fs::rename(&tmp, path).map_err(|source| InstallError::Io {
            action: "renaming a temporary file to",
            path: path.to_path_buf(),
            source,
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "sy-install-cni-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn dir(&self, name: &str) -> PathBuf {
            let d = self.0.join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn list() -> Value {
        conflist::for_node("n1", "10.244.1.0/24".parse().unwrap()).unwrap()
    }

    #[test]
    fn installs_an_executable_copy_and_the_nodes_list_and_leaves_no_temporary_files() {
        let t = TempDir::new("fresh");
        let (bin, conf) = (t.dir("bin"), t.dir("net.d"));
        let exe = t.0.join("switchyard-build");
        std::fs::write(&exe, b"\x7fELF pretend binary").unwrap();
        std::fs::write(conf.join("10-flannel.conflist"), "{}").unwrap();
        let done = install(&exe, &bin, &conf, &list()).unwrap();
        assert_eq!(done.plugin, bin.join("switchyard"));
        assert_eq!(done.conflist, conf.join("05-switchyard.conflist"));
        assert_eq!(
            std::fs::read(&done.plugin).unwrap(),
            b"\x7fELF pretend binary"
        );
        let mode = std::fs::metadata(&done.plugin)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&done.conflist).unwrap()).unwrap();
        assert_eq!(written, list());
        let mut names: Vec<String> = std::fs::read_dir(&conf)
            .unwrap()
            .chain(std::fs::read_dir(&bin).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "05-switchyard.conflist",
                "10-flannel.conflist",
                "switchyard"
            ],
            "another network's file stays; no temporary file is left"
        );
    }

    #[test]
    fn a_second_install_replaces_the_files_by_rename_so_a_running_plugin_keeps_its_own() {
        let t = TempDir::new("again");
        let (bin, conf) = (t.dir("bin"), t.dir("net.d"));
        let exe = t.0.join("new");
        std::fs::write(&exe, b"new").unwrap();
        std::fs::write(bin.join("switchyard"), b"old").unwrap();
        // A runtime executing the old plugin holds it open.
        let held = std::fs::File::open(bin.join("switchyard")).unwrap();
        install(&exe, &bin, &conf, &list()).unwrap();
        assert_eq!(std::fs::read(bin.join("switchyard")).unwrap(), b"new");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old", "the open file was replaced, not rewritten");
    }

    #[test]
    fn a_missing_directory_is_named_and_nothing_is_written() {
        let t = TempDir::new("missing");
        let bin = t.dir("bin");
        let exe = t.0.join("exe");
        std::fs::write(&exe, b"x").unwrap();
        let err = install(&exe, &bin, &t.0.join("net.d"), &list()).unwrap_err();
        assert!(matches!(&err, InstallError::NoDirectory(p) if p.ends_with("net.d")));
        assert!(
            err.to_string().contains("mount the host's CNI directory"),
            "{err}"
        );
        assert!(!bin.join("switchyard").exists());
        assert!(matches!(
            parse_pod_cidr("fd00::/64"),
            Err(InstallError::BadPodCidr(_))
        ));
    }
}
