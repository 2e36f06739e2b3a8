//! # controlplane-lite
//!
//! A small server speaking a real subset of the Kubernetes API — namespaces, nodes, pods,
//! services, endpoints, endpointslices and events — so that kubectl, kube-rs and other clients can drive
//! a switchyard lab as they would a cluster.
//!
//! # Layout
//! - [`store`]: objects, the resourceVersion sequence, watch history, the on-disk log.
//! - [`api`]: HTTP routing and the verbs; [`watch`]: watch streams; [`table`]: `kubectl get` tables.
//! - [`admission`]: server-set metadata, defaults, validation, ClusterIP/NodePort/podCIDR allocation.
//! - [`controllers`]: the `kubernetes` Service, scheduler, EndpointSlice/Endpoints, LoadBalancer
//!   addresses, node and pod lifecycle.
//! - [`events`]: Events in both API versions, the controllers' recorder, their expiry.
//! - [`resources`]: what is served and the discovery/OpenAPI documents.
//! - [`selectors`], [`patch`], [`validate`], [`status`], [`clock`]: the pieces they share;
//!   [`body`]: reading and decoding request bodies within their limits; [`paging`]: chunked
//!   lists; [`versions`]: the resourceVersions clients ask for.
//! - [`serve`]: the connection loop (TLS or plain HTTP); [`tls`]: the generated CA and serving
//!   certificate; [`auth`]: bearer tokens from a token file; [`authz`]: who may do what;
//!   [`kubeconfig`]: the file clients use.
//! - [`kubelet`]: pods' logs, exec, attach and port-forward, passed to the node's kubelet.
pub mod admission;
pub mod api;
pub mod auth;
pub mod authz;
pub mod body;
pub mod clock;
pub mod controllers;
pub mod events;
pub mod kubeconfig;
pub mod kubelet;
pub mod openapi;
pub mod paging;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selectors;
pub mod serve;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod validate;
pub mod versions;
pub mod watch;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the store keeps its log; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Allocation ranges.
    pub ranges: admission::Ranges,
    /// How long a node may stay silent before it is NotReady.
    pub node_monitor_grace: Duration,
    /// Serve HTTPS with this rustls configuration; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The client side towards kubelets (with the server's kubelet client certificate);
    /// `None`: pods' logs, exec and port-forward answer 503.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// Require one of these bearer tokens (except for health checks); `None` lets everyone in.
    pub tokens: Option<Arc<auth::Tokens>>,
    /// The address the `kubernetes` Service's endpoint names; `None`: the listen address (a
    /// loopback one when that is unspecified, with a warning either way).
    pub advertise_address: Option<IpAddr>,
    /// Pools LoadBalancer Services get addresses from (none: they stay pending).
    pub loadbalancer_pool: controllers::loadbalancer::Pool,
    /// How long an Event lives after its last write.
    pub event_ttl: Duration,
    /// Connection cap and timeouts.
    pub serve: serve::Limits,
    /// Watch history and log compaction bounds.
    pub store: store::Limits,
}

impl Default for Config {
    /// In memory, default ranges, 40 s node grace, plain HTTP, no authentication, no
    /// LoadBalancer pool, one hour event TTL (tests).
    fn default() -> Self {
        Config {
            data_dir: None,
            ranges: admission::Ranges::default(),
            node_monitor_grace: Duration::from_secs(40),
            tls: None,
            kubelet_tls: None,
            tokens: None,
            advertise_address: None,
            loadbalancer_pool: controllers::loadbalancer::Pool::default(),
            event_ttl: events::ttl::DEFAULT_TTL,
            serve: serve::Limits::default(),
            store: store::Limits::default(),
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The listener failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The address the `kubernetes` Service publishes: `flag` if given, else the listen IP (a
/// wildcard one becomes 127.0.0.1); a loopback address is published with a warning, since pods
/// cannot reach it.
fn advertised_ip(flag: Option<IpAddr>, listen: IpAddr) -> IpAddr {
    if let Some(ip) = flag {
        return ip;
    }
    let ip = if listen.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        listen
    };
    if ip.is_loopback() {
        tracing::warn!(%ip, "the kubernetes Service's endpoint is a loopback address that pods cannot reach; pass --advertise-address with an address of this host they can reach");
    }
    ip
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = match &config.data_dir {
        Some(dir) => store::Store::open_with(dir, config.store)?,
        None => store::Store::in_memory_with(config.store),
    };
    let local = listener.local_addr()?;
    let api_endpoint = controllers::bootstrap::ApiEndpoint {
        address: SocketAddr::new(
            advertised_ip(config.advertise_address, local.ip()),
            local.port(),
        ),
    };
    let settings = controllers::Settings {
        ranges: config.ranges,
        node_monitor_grace: config.node_monitor_grace,
        api_endpoint,
        loadbalancer_pool: config.loadbalancer_pool.clone(),
        event_ttl: config.event_ttl,
    };
    // The system namespaces and the `kubernetes` Service exist before the first request.
    if let Err(e) = controllers::bootstrap::reconcile(&store, &config.ranges, api_endpoint) {
        tracing::warn!(error = %e, "creating the kubernetes Service failed");
    }
    let controllers = controllers::spawn_all(&store, &settings);
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let api = Arc::new(api::Api {
        store,
        ranges: config.ranges,
        address: address.clone(),
        kubelets: config.kubelet_tls.clone().map(kubelet::Client::new),
    });
    let mut app = axum::Router::new().fallback(api::handle).with_state(api);
    if let Some(tokens) = config.tokens.clone() {
        app = app.layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ));
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%address, scheme, authentication = config.tokens.is_some(), "controlplane-lite serving");
    serve::serve(listener, app, config.tls.clone(), config.serve, shutdown).await;
    controllers.iter().for_each(|c| c.abort());
    Ok(())
}
