//! The lab node runtime ("kubelet"): registers the Node, runs its pods, reports their status.
//! (Stub: being written.)

/// Command-line options of `switchyard kubelet`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Node name (e.g. `n1`).
    #[arg(long)]
    pub node: String,
    /// Kubeconfig used to reach controlplane-lite.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
}

/// Runs the node runtime until SIGTERM/SIGINT.
pub async fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("switchyard kubelet is not implemented yet")
}
