//! The lab's cluster DNS: `switchyard-labnode dns`, run as a pod behind the `kube-system/kube-dns`
//! Service (ClusterIP `10.96.0.10`), which the lab starts once its nodes are Ready. A lab
//! component, not part of the product — what CoreDNS with its `kubernetes` plugin is to a real
//! cluster.
//!
//! `switchyard-labnode dns --cluster-domain cluster.local [--listen 0.0.0.0:53]`:
//! 1. reaches the API with the in-cluster configuration the kubelet gives every pod (the
//!    service-account token and CA at `/var/run/secrets/kubernetes.io/serviceaccount`, the
//!    `KUBERNETES_SERVICE_HOST`/`_PORT` variables), or `--kubeconfig` when run by hand;
//! 2. watches every Service and EndpointSlice ([`watch`]) and, once both are listed, serves
//!    UDP and TCP on `--listen` with hickory's server ([`handler`]);
//! 3. answers each query from the objects of that moment ([`snapshot`], [`lookup`]): names of
//!    the cluster domain authoritatively, any other name with REFUSED — it forwards nothing.
pub mod handler;
pub mod lookup;
pub mod snapshot;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line options of `switchyard-labnode dns`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The cluster domain this server answers for.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Address to serve DNS on, over UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,
    /// Kubeconfig to reach the API with (default: the pod's in-cluster configuration).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// What can stop the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No in-cluster configuration (not run in a pod with a service-account token?).
    #[error("no in-cluster API configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    /// The kubeconfig given is unusable.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[source] switchyard::kubeclient::KubeconfigError),
    /// The API client could not be built.
    #[error("cannot build the API client: {0}")]
    Client(#[source] kube::Error),
    /// A watch ended before its first list.
    #[error("the Service or EndpointSlice watch ended before its first list")]
    WatchEnded,
    /// The address to serve on cannot be bound.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// `UDP` or `TCP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("DNS server: {0}")]
    Serve(#[source] hickory_server::net::NetError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// How long a TCP connection may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

async fn client(opts: &Options) -> Result<kube::Client, Error> {
    match &opts.kubeconfig {
        Some(path) => switchyard::kubeclient::client_from_kubeconfig(path)
            .await
            .map_err(Error::Kubeconfig),
        None => {
            let config = kube::Config::incluster().map_err(Error::InCluster)?;
            kube::Client::try_from(config).map_err(Error::Client)
        }
    }
}

/// Runs the DNS server until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> Result<(), Error> {
    let zone = lookup::Zone::new(&opts.cluster_domain);
    let client = client(&opts).await?;
    let (stores, watches) = watch::Stores::watch(client);
    let serve = async {
        stores
            .wait_until_ready()
            .await
            .map_err(|_| Error::WatchEnded)?;
        let bind_err = |what| {
            move |source| Error::Bind {
                what,
                addr: opts.listen,
                source,
            }
        };
        let udp = tokio::net::UdpSocket::bind(opts.listen)
            .await
            .map_err(bind_err("UDP"))?;
        let tcp = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(bind_err("TCP"))?;
        let mut server = hickory_server::Server::new(handler::Handler::new(zone.clone(), stores));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 32);
        tracing::info!(zone = zone.origin(), listen = %opts.listen, "serving DNS over UDP and TCP");
        server.block_until_done().await.map_err(Error::Serve)
    };
    let result = tokio::select! {
        r = serve => r,
        r = switchyard::signals::shutdown() => r.map_err(Error::Signals),
    };
    for w in watches {
        w.abort();
    }
    result
}
