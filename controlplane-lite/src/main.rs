//! `switchyard-cp`: controlplane-lite's server.
//!
//! `switchyard-cp --listen ADDR --data-dir DIR [--token-file FILE] [--tls-san IP_OR_DNS ...]
//! [--max-connections N] [--header-timeout 10s] [--write-timeout 60s]
//! [--write-kubeconfig PATH] [--advertise-address IP] [--insecure-plain-http]`: serves HTTPS with a CA and certificate
//! generated into `DIR/pki/` on first start, bearer tokens from a kube-apiserver token file.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use switchyard_cp::admission::Ranges;
use switchyard_cp::auth::Tokens;
use switchyard_cp::controllers::loadbalancer::Pool;
use switchyard_cp::{kubeconfig, tls};

#[derive(Parser)]
#[command(
    name = "switchyard-cp",
    version,
    about = "A small Kubernetes-API-compatible server for switchyard labs"
)]
struct Cli {
    /// Address to listen on (IP:port; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory of the persistent store and of the TLS material in DIR/pki (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Static token file as kube-apiserver's: CSV lines `token,user,uid[,"group1,group2"]`.
    /// With it, requests without a listed bearer token get 401 (health checks stay open).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Extra names (IP addresses or DNS names) for the serving certificate: several after one
    /// flag, repeated, or comma-separated. The listen IP, 127.0.0.1, localhost, the advertise
    /// address and the `kubernetes` Service's ClusterIP and DNS names are always in.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    tls_san: Vec<String>,
    /// Write a kubeconfig for this server (URL, CA, the token file's first token) to PATH.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (anything on the network can read and forge requests).
    #[arg(long)]
    insecure_plain_http: bool,
    /// Service CIDR for ClusterIPs.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Cluster pod CIDR; nodes get /24s from it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The address the `kubernetes` Service's Endpoints and EndpointSlice publish (pods reach
    /// the API there). Default: the listen IP (127.0.0.1 for a wildcard listen address; a
    /// loopback address is published with a warning).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Address pools for LoadBalancer Services (IPv4 CIDRs, e.g. 198.18.100.0/24): repeated or
    /// comma-separated. Without one, LoadBalancer Services stay pending.
    #[arg(long, value_delimiter = ',')]
    loadbalancer_pool: Vec<String>,
    /// How long an Event is kept after its last write, as kube-apiserver's --event-ttl
    /// (e.g. 1h, 30m, 90s, 1h30m).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
    /// Seconds without a heartbeat before a node is NotReady.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace: u64,
    /// Connections served at once; further ones wait in the listen backlog until one closes.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Time a client has for its TLS handshake and for each request's headers; an idle
    /// keep-alive connection is closed after it too (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time a response may wait for its client to read before the connection is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Tests only: keep at most this many events in the watch history.
    #[arg(long, hide = true, default_value_t = switchyard_cp::store::HISTORY)]
    test_history_events: usize,
    /// Tests only: sleep this long before every fsync of the log (a slow disk).
    #[arg(long, hide = true, default_value = "0s", value_parser = parse_duration)]
    test_fsync_delay: Duration,
}

fn cidr(flag: &str, s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let parsed = s
        .split_once('/')
        .and_then(|(a, p)| Some((a.parse().ok()?, p.parse::<u8>().ok().filter(|p| *p <= 32)?)));
    parsed.ok_or_else(|| anyhow::anyhow!("--{flag} {s:?} is not an IPv4 CIDR like 10.96.0.0/16"))
}

/// A Go-style duration: whole numbers with units h, m, s or ms, e.g. `1h30m`, `90s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 1h, 30m, 90s or 1h30m");
    let (mut total, mut rest) = (Duration::ZERO, s.trim());
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let secs = |unit: u64| n.checked_mul(unit).map(Duration::from_secs).ok_or_else(bad);
        rest = &rest[digits..];
        let (unit, len) = [("ms", 2), ("h", 1), ("m", 1), ("s", 1)]
            .into_iter()
            .find(|(u, _)| rest.starts_with(u))
            .ok_or_else(bad)?;
        rest = &rest[len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "h" => secs(3600)?,
            "m" => secs(60)?,
            _ => secs(1)?,
        };
        total = total.checked_add(d).ok_or_else(bad)?;
    }
    Ok(total)
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
    let tokens = match &cli.token_file {
        Some(path) => Some(Arc::new(Tokens::load(path)?)),
        None => {
            tracing::warn!("no --token-file: every request is served without authentication");
            None
        }
    };
    let pki = if cli.insecure_plain_http {
        tracing::warn!(
            "--insecure-plain-http: serving PLAIN HTTP WITHOUT TLS; anyone on the network can read \
             the traffic (bearer tokens included) and tamper with it"
        );
        None
    } else {
        let names = tls::ServerNames {
            listen: cli.listen.ip(),
            advertise: cli.advertise_address,
            service_ip: ranges.first_service_ip().into(),
        };
        let sans = tls::sans(names, &cli.tls_san);
        Some(tls::Pki::load_or_create(&cli.data_dir.join("pki"), &sans)?)
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.listen))?;
    if let Some(path) = &cli.write_kubeconfig {
        let addr = listener.local_addr()?;
        let url = kubeconfig::server_url(addr, pki.is_some());
        let text = kubeconfig::render(
            &url,
            pki.as_ref().map(|p| p.ca_pem.as_str()),
            tokens.as_ref().map(|t| t.first()),
        );
        kubeconfig::write(path, &text)
            .map_err(|e| anyhow::anyhow!("writing the kubeconfig {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), server = %url, "wrote a kubeconfig");
    }
    let config = switchyard_cp::Config {
        data_dir: Some(cli.data_dir),
        ranges,
        node_monitor_grace: Duration::from_secs(cli.node_monitor_grace),
        kubelet_tls: pki.as_ref().map(|p| p.kubelet_client.clone()),
        tls: pki.map(|p| p.server_config),
        tokens,
        advertise_address: cli.advertise_address,
        loadbalancer_pool: Pool(
            cli.loadbalancer_pool
                .iter()
                .map(|p| cidr("loadbalancer-pool", p))
                .collect::<anyhow::Result<_>>()?,
        ),
        event_ttl: cli.event_ttl,
        serve: switchyard_cp::serve::Limits {
            max_connections: cli.max_connections.max(1),
            header_timeout: cli.header_timeout,
            write_timeout: cli.write_timeout,
        },
        store: switchyard_cp::store::Limits {
            fsync_delay: cli.test_fsync_delay,
            history_events: cli.test_history_events,
            ..Default::default()
        },
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
