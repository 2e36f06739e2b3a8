//! Running `deploy/`'s DaemonSet on the lab's nodes ([`crate::LabOptions::from_daemonset`]):
//! each node runs the DaemonSet's init containers to completion and then its agent container,
//! as processes in the node's network namespace built by [`crate::deploy`] from the manifests.
//!
//! Each process sees what a pod of the DaemonSet sees: no kubeconfig, but the in-cluster
//! configuration — the service account's token, `ca.crt` and `namespace` bind-mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount` inside a mount namespace of its own (a
//! slave of the host's, as the lab kubelet's containers get: nothing mounted there reaches the
//! host), and `KUBERNETES_SERVICE_HOST`/`_PORT` naming controlplane-lite. The token is
//! `system:serviceaccount:kube-system:switchyard`'s, so controlplane-lite's rules for that
//! account — the ClusterRole of `deploy/` — decide what the agent may do.
//!
//! Invariant: the only values not taken from `deploy/` are [`overrides`] (each logged at the
//! top of the process's log with the manifests' value) and the path mapping of
//! [`crate::deploy::Host`]; the process inherits no environment of the lab's own.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::deploy::{self, Host, Launch, Manifests};
use crate::procs::{self, Dirs};
use crate::{topology, LabError};

/// The DaemonSet's namespace and name in `deploy/`.
pub const DAEMONSET: (&str, &str) = ("kube-system", "switchyard");

/// Its agent container.
pub const AGENT_CONTAINER: &str = "switchyard";

/// Its init container that installs the CNI plugin; the lab kubelet of the node uses what it
/// installed.
pub const INSTALL_CNI_CONTAINER: &str = "install-cni";

/// Where a pod finds its service account's credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long an init container may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The lab's values for settings `deploy/` leaves to the user or sets for a kubeadm cluster,
/// where the lab differs:
/// - `KUBERNETES_SERVICE_HOST`/`_PORT`: the API server is controlplane-lite at 198.18.0.1:6443
///   (its serving certificate covers that address); `deploy/` has a placeholder for the user's.
/// - `SWITCHYARD_SERVICE_CIDR`: the lab's Service network ([`topology::SERVICE_CIDR`], given
///   to controlplane-lite); `deploy/` has kubeadm's default, 10.96.0.0/12.
pub fn overrides() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("KUBERNETES_SERVICE_HOST".into(), topology::CP_ADDR.into()),
        ("KUBERNETES_SERVICE_PORT".into(), topology::CP_PORT.into()),
        (
            "SWITCHYARD_SERVICE_CIDR".into(),
            topology::SERVICE_CIDR.into(),
        ),
    ])
}

/// Host paths the lab's processes share with the machine, as the agents do in the ordinary lab
/// mode; every other `hostPath` of the DaemonSet is redirected under the lab directory.
pub const SHARED_HOST_PATHS: [&str; 4] = [
    "/sys/fs/bpf",
    "/run/switchyard",
    "/sys/fs/cgroup",
    "/run/xtables.lock",
];

/// The DaemonSet, ready to run on the lab's nodes.
#[derive(Clone, Debug)]
pub struct DaemonSetRun {
    manifests: Manifests,
    bin_dir: PathBuf,
    lab_dir: PathBuf,
    service_account_dir: PathBuf,
}

/// The service-account directory the processes get: `target/lab/serviceaccount-switchyard`.
pub fn service_account_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("serviceaccount-switchyard")
}

/// The redirected host directories: `target/lab/host`.
pub fn host_root(lab_dir: &Path) -> PathBuf {
    lab_dir.join("host")
}

impl DaemonSetRun {
    /// Loads `deploy/` from the workspace `root` and writes the service-account directory
    /// (token `agent_token`, CA from `ca_file`, namespace `kube-system`).
    pub fn prepare(
        root: &Path,
        bin_dir: &Path,
        lab_dir: &Path,
        agent_token: &str,
        ca_file: &Path,
    ) -> Result<DaemonSetRun, LabError> {
        let manifests = Manifests::load(&deploy::deploy_dir(root))?;
        manifests.daemon_set(DAEMONSET.0, DAEMONSET.1)?;
        let dir = service_account_dir(lab_dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.clone(), e))?;
        let ca = std::fs::read(ca_file).map_err(|e| LabError::Io(ca_file.to_path_buf(), e))?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca).map_err(|e| LabError::Io(ca_path, e))?;
        crate::kube::write_private(&dir.join("token"), agent_token)?;
        let ns_path = dir.join("namespace");
        std::fs::write(&ns_path, DAEMONSET.0).map_err(|e| LabError::Io(ns_path, e))?;
        Ok(DaemonSetRun {
            manifests,
            bin_dir: bin_dir.to_path_buf(),
            lab_dir: lab_dir.to_path_buf(),
            service_account_dir: dir,
        })
    }

    /// Lab node `n` as the DaemonSet's pods there see it.
    pub fn host(&self, n: usize) -> Host {
        let node = topology::node_name(n);
        Host {
            redirect_root: host_root(&self.lab_dir).join(&node),
            node,
            bin_dir: self.bin_dir.clone(),
            shared: SHARED_HOST_PATHS.iter().map(PathBuf::from).collect(),
            overrides: overrides(),
        }
    }

    /// Container `container` on node `n`.
    pub fn launch(&self, n: usize, container: &str) -> Result<Launch, LabError> {
        let ds = self.manifests.daemon_set(DAEMONSET.0, DAEMONSET.1)?;
        Ok(self.manifests.launch(ds, container, &self.host(n))?)
    }

    /// The names of the init containers, in order.
    pub fn init_containers(&self) -> Result<Vec<String>, LabError> {
        let ds = self.manifests.daemon_set(DAEMONSET.0, DAEMONSET.1)?;
        Ok(ds
            .spec
            .template
            .spec
            .iter()
            .flat_map(|p| p.init_containers.iter().flatten())
            .map(|c| c.name.clone())
            .collect())
    }

    /// Where install-cni puts node `n`'s plugin executable and configuration directory (its
    /// `--bin-dir`/`--conf-dir`, mapped to the lab): what the node's kubelet runs and reads.
    pub fn cni_paths(&self, n: usize) -> Result<(PathBuf, PathBuf), LabError> {
        let l = self.launch(n, INSTALL_CNI_CONTAINER)?;
        let opt = |flag: &str| {
            l.option(flag).map(PathBuf::from).ok_or_else(|| {
                LabError::Unexpected(format!(
                    "deploy/'s {INSTALL_CNI_CONTAINER} container has no {flag}"
                ))
            })
        };
        Ok((opt("--bin-dir")?.join("switchyard"), opt("--conf-dir")?))
    }

    /// The command line running `launch` as a pod's container: a mount namespace of its own
    /// with the service account at [`SERVICE_ACCOUNT_MOUNT`], exactly `launch.env` plus the
    /// image's `PATH`. (The caller enters the node's network namespace.)
    pub fn command(&self, launch: &Launch) -> Vec<String> {
        let mut argv: Vec<String> = [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            "mount --bind -o ro \"$1\" \"$2\" && shift 2 && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec();
        argv.push(self.service_account_dir.to_string_lossy().into_owned());
        argv.push(SERVICE_ACCOUNT_MOUNT.into());
        argv.extend(["env".to_string(), "-i".to_string()]);
        argv.push(format!("PATH={}", deploy::IMAGE_PATH));
        argv.extend(launch.env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(launch.argv.iter().cloned());
        argv
    }

    /// Creates what the kubelet would for `launch` before starting it: its redirected host
    /// directories and the (empty) service-account mount point, which `lab down` removes.
    pub fn make_dirs(&self, launch: &Launch) -> Result<(), LabError> {
        for d in launch
            .host_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new(SERVICE_ACCOUNT_MOUNT)])
        {
            std::fs::create_dir_all(d).map_err(|e| LabError::Io(d.to_path_buf(), e))?;
        }
        Ok(())
    }

    /// Runs node `n`'s init containers one after the other, each to a successful exit; logs
    /// in `target/lab/logs/<container>-<node>.log`.
    pub fn run_init(&self, dirs: &Dirs, n: usize) -> Result<(), LabError> {
        for name in self.init_containers()? {
            let launch = self.launch(n, &name)?;
            self.make_dirs(&launch)?;
            let argv = self.command(&launch);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let log = format!("{name}-{}", topology::node_name(n));
            procs::run_to_completion(
                dirs,
                &log,
                Some(&topology::node_ns(n)),
                &launch.describe_overrides(),
                &argv,
                INIT_TIMEOUT,
            )?;
        }
        Ok(())
    }
}
