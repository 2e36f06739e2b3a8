//! Readiness probes: `tcpSocket` (connect) and `httpGet` (a 2xx/3xx answer), run from the node
//! against the pod address. `exec` and `grpc` probes are not supported and count as passing.
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A readiness check the kubelet can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// No probe (or an unsupported kind): ready once running.
    None,
    /// TCP connect to the port.
    Tcp {
        /// Port.
        port: u16,
    },
    /// HTTP GET on the port and path; 200..=399 passes.
    Http {
        /// Port.
        port: u16,
        /// Request path.
        path: String,
    },
}

/// Readiness check of a container, with its initial delay and period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// What to check.
    pub check: Check,
    /// Wait this long after the container started before the first check.
    pub initial_delay: Duration,
    /// Timeout of one check.
    pub timeout: Duration,
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The readiness check of `container`.
pub fn readiness(container: &Container) -> Readiness {
    let probe: Option<&Probe> = container.readiness_probe.as_ref();
    let secs = |v: Option<i32>, default: u64| {
        Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
    };
    let check = match probe {
        Some(p) if p.tcp_socket.is_some() => p
            .tcp_socket
            .as_ref()
            .and_then(|t| resolve_port(&t.port, container))
            .map_or(Check::None, |port| Check::Tcp { port }),
        Some(p) if p.http_get.is_some() => p
            .http_get
            .as_ref()
            .and_then(|h| {
                Some(Check::Http {
                    port: resolve_port(&h.port, container)?,
                    path: h.path.clone().unwrap_or_else(|| "/".into()),
                })
            })
            .unwrap_or(Check::None),
        Some(_) => {
            tracing::debug!(container = %container.name, "exec/grpc readiness probes are not supported; treating as passing");
            Check::None
        }
        None => Check::None,
    };
    Readiness {
        check,
        initial_delay: secs(probe.and_then(|p| p.initial_delay_seconds), 0),
        timeout: secs(probe.and_then(|p| p.timeout_seconds), 1),
    }
}

/// Runs one check against `ip`.
pub async fn run(check: &Check, ip: Ipv4Addr, timeout: Duration) -> bool {
    let attempt = async {
        match check {
            Check::None => true,
            Check::Tcp { port } => TcpStream::connect(SocketAddr::from((ip, *port)))
                .await
                .is_ok(),
            Check::Http { port, path } => {
                let Ok(mut s) = TcpStream::connect(SocketAddr::from((ip, *port))).await else {
                    return false;
                };
                let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: switchyard-probe\r\nConnection: close\r\n\r\n");
                if s.write_all(req.as_bytes()).await.is_err() {
                    return false;
                }
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).await.is_err() {
                    return false;
                }
                http_ok(&head)
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(false)
}

/// Whether the start of an HTTP response (`HTTP/1.1 200`) has a 2xx or 3xx status.
fn http_ok(head: &[u8]) -> bool {
    std::str::from_utf8(head)
        .ok()
        .and_then(|h| h.strip_prefix("HTTP/"))
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|code| code.get(..3)?.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(probe: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "echo",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": probe,
        }))
        .unwrap()
    }

    #[test]
    fn understands_tcp_http_and_named_ports() {
        let r = readiness(&container(
            serde_json::json!({"tcpSocket": {"port": 9000}, "initialDelaySeconds": 2}),
        ));
        assert_eq!(r.check, Check::Tcp { port: 9000 });
        assert_eq!(r.initial_delay, Duration::from_secs(2));
        let r = readiness(&container(
            serde_json::json!({"httpGet": {"port": "http", "path": "/healthz"}}),
        ));
        assert_eq!(
            r.check,
            Check::Http {
                port: 8080,
                path: "/healthz".into()
            }
        );
        let r = readiness(&container(
            serde_json::json!({"exec": {"command": ["true"]}}),
        ));
        assert_eq!(r.check, Check::None);
    }

    #[test]
    fn http_status_classes() {
        assert!(http_ok(b"HTTP/1.1 200"));
        assert!(http_ok(b"HTTP/1.0 302"));
        assert!(!http_ok(b"HTTP/1.1 503"));
        assert!(!http_ok(b"pod=x peer=y"));
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let udp = tokio::net::UdpSocket::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(crate::echo::serve(l, udp, "p".into()));
        let lo = Ipv4Addr::LOCALHOST;
        let t = Duration::from_secs(2);
        assert!(run(&Check::Tcp { port }, lo, t).await);
        assert!(
            run(
                &Check::Http {
                    port,
                    path: "/".into()
                },
                lo,
                t
            )
            .await
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!run(&Check::Tcp { port: closed }, lo, t).await);
    }
}
