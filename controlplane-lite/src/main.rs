//! `switchyard-cp`: controlplane-lite's server.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use switchyard_cp::admission::Ranges;

#[derive(Parser)]
#[command(
    name = "switchyard-cp",
    version,
    about = "A small Kubernetes-API-compatible server for switchyard labs"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Directory of the persistent store (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Service CIDR for ClusterIPs.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Cluster pod CIDR; nodes get /24s from it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Seconds without a heartbeat before a node is NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace: u64,
}

fn cidr(flag: &str, s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let parsed = s
        .split_once('/')
        .and_then(|(a, p)| Some((a.parse().ok()?, p.parse::<u8>().ok().filter(|p| *p <= 32)?)));
    parsed.ok_or_else(|| anyhow::anyhow!("--{flag} {s:?} is not an IPv4 CIDR like 10.96.0.0/16"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let ranges = Ranges {
        service_cidr: cidr("service-cidr", &cli.service_cidr)?,
        cluster_cidr: cidr("cluster-cidr", &cli.cluster_cidr)?,
        ..Ranges::default()
    };
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.listen))?;
    let config = switchyard_cp::Config {
        data_dir: Some(cli.data_dir),
        ranges,
        node_monitor_grace: Duration::from_secs(cli.node_monitor_grace),
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    switchyard_cp::run(listener, config, async move {
        tokio::select! { _ = shutdown => {}, _ = term => {} }
    })
    .await?;
    Ok(())
}
