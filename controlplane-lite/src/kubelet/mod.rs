//! Reaching a node's kubelet (in the lab, `switchyard-labnode kubelet`), as kube-apiserver does
//! for `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: HTTPS to the Node's
//! `InternalIP` (then `ExternalIP`, then `Hostname`) at `status.daemonEndpoints.kubeletEndpoint.
//! Port` (10250 when unset), authenticated by the server's kubelet client certificate
//! ([`credentials`]).
//!
//! Invariant: every request to a kubelet carries the client certificate; the kubelet's serving
//! certificate is not verified (kube-apiserver without `--kubelet-certificate-authority`), so the
//! channel is encrypted but the kubelet's identity rests on the node's address.
pub mod credentials;
pub mod proxy;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The kubelet port when a Node reports none.
pub const DEFAULT_PORT: u16 = 10250;
/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a kubelet could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// Connecting failed.
    #[error("dial tcp {addr}: {source}")]
    Connect {
        /// The kubelet.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took too long.
    #[error("dial tcp {0}: i/o timeout")]
    Timeout(SocketAddr),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Where a node's kubelet listens, from its Node object.
pub fn endpoint(node: &Value) -> Option<SocketAddr> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .filter(|a| a["type"] == *kind)
                .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PORT);
    Some(SocketAddr::new(ip, port))
}

/// A client for kubelets.
#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client presenting the identity in `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Client {
        Client { tls }
    }

    /// Sends `req` (origin-form URI: path and query) to the kubelet at `addr` on a connection of
    /// its own that may be upgraded.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, KubeletError> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| KubeletError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .map_err(|source| KubeletError::Connect { addr, source })
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| KubeletError::Timeout(addr))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "kubelet connection ended with an error");
            }
        });
        if let Ok(host) = addr.to_string().parse() {
            req.headers_mut().insert(hyper::header::HOST, host);
        }
        Ok(sender.send_request(req).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_kubelet_is_reached_at_the_internal_ip_and_the_reported_port() {
        let node = json!({"status": {
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "192.0.2.1"},
                {"type": "InternalIP", "address": "198.18.0.11"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}},
        }});
        assert_eq!(endpoint(&node), "198.18.0.11:10255".parse().ok());
        let bare =
            json!({"status": {"addresses": [{"type": "ExternalIP", "address": "192.0.2.1"}]}});
        assert_eq!(endpoint(&bare), "192.0.2.1:10250".parse().ok());
        assert_eq!(endpoint(&json!({"status": {"addresses": []}})), None);
        let named = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(endpoint(&named), None, "host names are not resolved");
    }
}
