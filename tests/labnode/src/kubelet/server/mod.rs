//! The node runtime's HTTPS API on the kubelet port (10250), which the API server calls for
//! `kubectl logs`, `exec` and `port-forward`, as kube-apiserver calls the kubelet's:
//! - `GET /containerLogs/{namespace}/{pod}/{container}` ([`logs`]),
//! - `/exec/{namespace}/{pod}/{container}` over a WebSocket ([`exec`], [`channels`],
//!   [`nsenter`]) and `/attach/{namespace}/{pod}/{container}` ([`attach`]),
//! - `/portForward/{namespace}/{pod}` over SPDY/3.1, plain or in a WebSocket ([`portforward`],
//!   [`spdy`], [`tunnel`]).
//!
//! Invariant: only a caller presenting a client certificate issued by `--client-ca-file` (the
//! API server's) is served; everyone else gets 401 ([`tls`]). Pods are found in the kubelet's
//! records ([`pods`]), so the API keeps working for pods adopted after a kubelet restart.
pub mod attach;
pub mod channels;
pub mod exec;
pub mod logs;
pub mod nsenter;
pub mod pods;
pub mod portforward;
pub mod query;
pub mod spdy;
pub mod tls;
pub mod tunnel;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;

/// The port kubelets serve on, and the one this runtime reports by default.
pub const DEFAULT_PORT: u16 = 10250;

/// Command-line options of the API.
#[derive(Clone, Debug, clap::Args)]
pub struct ApiOptions {
    /// The port of the node runtime's HTTPS API (logs, exec, port-forward), reported in the
    /// Node's `daemonEndpoints`; 0 picks a free one.
    #[arg(long = "port", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// CA whose client certificates may call the API (the API server's, e.g. controlplane-lite's
    /// `<data-dir>/pki/ca.crt`); without it every request gets 401.
    #[arg(long)]
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The port is taken.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Starts serving the API for `node` on all addresses; returns the server task and the port.
/// `names` go into the serving certificate.
pub async fn start(
    opts: &ApiOptions,
    node: &str,
    names: &[String],
) -> Result<(tokio::task::JoinHandle<()>, u16), StartError> {
    let tls = tls::server_config(names, opts.client_ca_file.as_deref())?;
    if opts.client_ca_file.is_none() {
        tracing::warn!("no --client-ca-file: every request to the node runtime's API gets 401");
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], opts.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let port = listener.local_addr().map_or(opts.port, |a| a.port());
    tracing::info!(
        port,
        "serving the node runtime API (logs, exec, port-forward)"
    );
    let app = router(State { node: node.into() });
    Ok((tokio::spawn(serve(listener, tls, app)), port))
}

/// An error answer: the kubelet's plain-text message with an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The text.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message,
        )
            .into_response()
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct State {
    /// This node's name (its records and logs live under `/run/switchyard/<node>`).
    pub node: String,
}

/// The routes, without the authentication layer.
pub fn router(state: State) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::get),
        )
        .route("/exec/{namespace}/{pod}/{container}", any(exec::handle))
        .route("/attach/{namespace}/{pod}/{container}", any(attach::handle))
        .route("/portForward/{namespace}/{pod}", any(portforward::handle))
        .fallback(|| async { ApiError::not_found("404 page not found") })
        .with_state(state)
}

/// Answers 401 to callers without a client certificate from the client CA.
pub async fn require_client_certificate(req: Request, next: Next) -> Response {
    let authenticated = req
        .extensions()
        .get::<tls::Peer>()
        .is_some_and(|p| p.authenticated);
    if !authenticated {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` with `tls` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let who = tls::peer(tls.get_ref().1);
            let app = app
                .layer(axum::middleware::from_fn(require_client_certificate))
                .layer(axum::Extension(who));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
