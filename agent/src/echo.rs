//! A tiny TCP/UDP/HTTP echo server used as the demo and test workload. (Stub: being written.)

/// Command-line options of `switchyard echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Port to listen on (TCP and UDP).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

/// Serves until killed.
pub async fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("switchyard echo is not implemented yet")
}
