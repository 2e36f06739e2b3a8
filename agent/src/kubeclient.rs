//! The API client the agent (and the lab's node runtime) reach controlplane-lite with, built from
//! a kubeconfig file.
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A kubeconfig that cannot be read or used.
#[derive(Debug, thiserror::Error)]
#[error("kubeconfig {path}: {message}")]
pub struct KubeconfigError {
    /// The file given with `--kubeconfig`.
    pub path: PathBuf,
    /// Why it is unusable.
    pub message: String,
}

/// Builds an API client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, KubeconfigError> {
    let err = |message: String| KubeconfigError {
        path: path.to_path_buf(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// Builds an API client from a pod's in-cluster configuration (service-account token and CA
/// under `/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST`/`_PORT`).
pub async fn in_cluster() -> Result<kube::Client, KubeconfigError> {
    let err = |message: String| KubeconfigError {
        path: PathBuf::from("(in-cluster)"),
        message: format!("{message}; outside a pod pass --kubeconfig (or set KUBECONFIG)"),
    };
    let config = kube::Config::incluster().map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
