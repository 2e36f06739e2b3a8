//! Container logs as the kubelet keeps them: one file per container per run (restart), in the
//! CRI format ([`cri`]), written by a log shim process per container ([`shim`]) and read back
//! for `kubectl logs` ([`read`]).
//!
//! Layout, as the kubelet's `/var/log/pods`: `/run/switchyard/<node>/logs/<ns>_<pod>_<uid>/
//! <container>/<restart>.log`, so the previous run's log stays readable (`--previous`) and a pod
//! of the same name never reads another's. The pod's directory is removed with the pod.
pub mod cri;
pub mod read;
pub mod shim;

use std::path::PathBuf;

/// The directory of a pod's logs.
pub fn pod_dir(node: &str, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    switchyard::paths::state_dir(node)
        .join("logs")
        .join(format!("{namespace}_{pod}_{uid}"))
}

/// The log file of run `restart` (0 for the first) of a container.
pub fn container_log(
    node: &str,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart: u32,
) -> PathBuf {
    pod_dir(node, namespace, pod, uid)
        .join(container)
        .join(format!("{restart}.log"))
}

/// Removes a pod's logs (a missing directory is fine).
pub fn remove_pod(node: &str, namespace: &str, pod: &str, uid: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(pod_dir(node, namespace, pod, uid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
