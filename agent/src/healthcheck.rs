//! `healthCheckNodePort`s: the contract external load balancers use to send traffic of an
//! `externalTrafficPolicy: Local` Service only to nodes that have one of its endpoints. Each port
//! answers any HTTP request with 200 and the count of local endpoints when there is one, 503
//! otherwise, in kube-proxy's body and headers, so an existing load balancer configuration keeps
//! working when switchyard replaces kube-proxy.
//!
//! Invariant: a port is served exactly while the desired state has it; its answer is read from
//! the latest desired state on every request.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::model::HealthCheck;

type State = Arc<RwLock<BTreeMap<u16, HealthCheck>>>;

/// The health check listeners of one node.
pub struct HealthChecks {
    bind: Ipv4Addr,
    state: State,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

impl HealthChecks {
    /// Listeners bound to `bind` (kube-proxy binds every node address: `0.0.0.0`).
    pub fn new(bind: Ipv4Addr) -> Self {
        HealthChecks {
            bind,
            state: State::default(),
            listeners: BTreeMap::new(),
        }
    }

    /// Serves exactly the ports of `checks`, answering from them. A port that cannot be bound is
    /// logged and tried again on the next call. Must run inside a tokio runtime.
    pub fn sync(&mut self, checks: &BTreeMap<u16, HealthCheck>) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = checks.clone();
        self.listeners.retain(|port, task| {
            let keep = checks.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(port, "health check port closed");
            }
            keep
        });
        for (port, hc) in checks {
            if self.listeners.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::from((self.bind, *port));
            match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(listener) => {
                    tracing::info!(port, service = %format!("{}/{}", hc.namespace, hc.name), "health check port open");
                    self.listeners.insert(
                        *port,
                        tokio::spawn(serve(listener, *port, self.state.clone())),
                    );
                }
                Err(e) => tracing::warn!(
                    port,
                    service = %format!("{}/{}", hc.namespace, hc.name),
                    error = %e,
                    "cannot open the health check port; retrying"
                ),
            }
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.listeners.values().for_each(JoinHandle::abort);
    }
}

async fn serve(listener: tokio::net::TcpListener, port: u16, state: State) {
    let app = axum::Router::new().fallback(move || {
        let state = state.clone();
        async move {
            let hc = state
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&port)
                .cloned();
            answer(hc.as_ref())
        }
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(port, error = %e, "health check port failed");
    }
}

/// kube-proxy's answer: status, headers and body.
pub fn answer(hc: Option<&HealthCheck>) -> Response {
    let (ns, name, count) = hc.map_or(("", "", 0), |h| {
        (h.namespace.as_str(), h.name.as_str(), h.local_endpoints)
    });
    let status = if count > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": true\n}}",
        serde_json::Value::from(ns),
        serde_json::Value::from(name)
    );
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "X-Load-Balancing-Endpoint-Weight",
        HeaderValue::from(count as u64),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(n: usize) -> HealthCheck {
        HealthCheck {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: n,
        }
    }

    async fn get(port: u16) -> (u16, String, String) {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-D",
                "-",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{port}/healthz"),
            ])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    #[tokio::test]
    async fn a_port_answers_200_with_local_endpoints_and_503_without() {
        let port = free_port();
        let mut hc = HealthChecks::new(Ipv4Addr::LOCALHOST);
        hc.sync(&[(port, check(2))].into());
        let (status, head, body) = get(port).await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-load-balancing-endpoint-weight: 2"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["service"]["name"], "web");
        assert_eq!(json["localEndpoints"], 2);
        hc.sync(&[(port, check(0))].into());
        assert_eq!(get(port).await.0, 503);
        hc.sync(&BTreeMap::new());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(get(port).await.0, 0, "closed: nothing answers");
    }
}
