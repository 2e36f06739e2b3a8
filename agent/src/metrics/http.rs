//! The agent's HTTP endpoint: `/metrics` (OpenMetrics or the Prometheus text format, as the
//! client's `Accept` asks: [`super::exposition`]), `/healthz` (the loop turns:
//! 200, or 503 after 60 s without a turn) and `/readyz` (200 once the first full sync is
//! written and while the API server is reachable; 503 with the reason otherwise) — the
//! DaemonSet's probes.
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::{exposition, Agent};

/// The endpoint's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics and probes on {addr} (--metrics-address, SWITCHYARD_METRICS_ADDRESS): {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds the endpoint's address (so that a taken port fails the agent's start, not a task).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves the endpoint on `listener` until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    agent: Agent,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics, healthz and readyz served");
    }
    let (a1, a2) = (agent.clone(), agent);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry)
                    {
                        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
                    }
                    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                    if exposition::wants_openmetrics(accept) {
                        ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], text).into_response()
                    } else {
                        (
                            [(header::CONTENT_TYPE, exposition::TEXT_004)],
                            exposition::to_text_004(&text),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                let age = super::now() - a1.heartbeat.load(Ordering::Relaxed);
                if age <= 60 {
                    (StatusCode::OK, "ok\n".to_string())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the agent's loop has not turned for {age} s\n"),
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                let why = a2
                    .not_ready
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if why.is_empty() {
                    (StatusCode::OK, "ok\n".to_string())
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    )
                }
            }),
        );
    axum::serve(listener, app).await
}
