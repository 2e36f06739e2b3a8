//! `switchyard agent`: the node agent's main loop. (Stub: being written.)

/// Command-line options of `switchyard agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Node name (e.g. `n1`).
    #[arg(long)]
    pub node: String,
    /// Kubeconfig used to reach controlplane-lite.
    #[arg(long)]
    pub kubeconfig: std::path::PathBuf,
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("switchyard agent is not implemented yet")
}
