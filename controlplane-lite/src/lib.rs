//! # controlplane-lite
//!
//! A small server speaking a real subset of the Kubernetes API — namespaces, nodes, pods,
//! services, endpoints and endpointslices — so that kubectl, kube-rs and other clients can drive
//! a switchyard lab as they would a cluster.
//!
//! # Layout
//! - [`store`]: objects, the resourceVersion sequence, watch history, the on-disk log.
//! - [`api`]: HTTP routing and the verbs; [`watch`]: watch streams; [`table`]: `kubectl get` tables.
//! - [`admission`]: server-set metadata, defaults, validation, ClusterIP/NodePort/podCIDR allocation.
//! - [`controllers`]: scheduler, EndpointSlice/Endpoints, node and pod lifecycle.
//! - [`resources`]: what is served and the discovery/OpenAPI documents.
//! - [`selectors`], [`patch`], [`validate`], [`status`], [`clock`]: the pieces they share.
//! - [`serve`]: the connection loop (TLS or plain HTTP); [`tls`]: the generated CA and serving
//!   certificate; [`auth`]: bearer tokens from a token file; [`kubeconfig`]: the file clients use.
pub mod admission;
pub mod api;
pub mod auth;
pub mod clock;
pub mod controllers;
pub mod kubeconfig;
pub mod openapi;
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
pub mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

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
    /// Require one of these bearer tokens (except for health checks); `None` lets everyone in.
    pub tokens: Option<Arc<auth::Tokens>>,
}

impl Default for Config {
    /// In memory, default ranges, 40 s node grace, plain HTTP, no authentication (tests).
    fn default() -> Self {
        Config {
            data_dir: None,
            ranges: admission::Ranges::default(),
            node_monitor_grace: Duration::from_secs(40),
            tls: None,
            tokens: None,
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

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = match &config.data_dir {
        Some(dir) => store::Store::open(dir)?,
        None => store::Store::in_memory(),
    };
    for ns in ["default", "kube-system", "kube-public"] {
        let key = store::Key {
            resource: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        if store.get(&key).is_none() {
            let mut obj = json!({"metadata": {"name": ns}});
            let res = resources::find("", "v1", "namespaces").expect("namespaces are served");
            if admission::on_create(res, "", &mut obj, &store, &config.ranges).is_ok() {
                let _ = store.create(key, obj);
            }
        }
    }
    let controllers = controllers::spawn_all(&store, config.node_monitor_grace);
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let api = Arc::new(api::Api {
        store,
        ranges: config.ranges,
        address: address.clone(),
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
    serve::serve(listener, app, config.tls.clone(), shutdown).await;
    controllers.iter().for_each(|c| c.abort());
    Ok(())
}
