//! `/portForward/{namespace}/{pod}`: the Kubernetes port-forward protocol over SPDY/3.1
//! ([`super::spdy`]), reached by a plain `Upgrade: SPDY/3.1` (`X-Stream-Protocol-Version:
//! portforward.k8s.io`) or tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! [`super::tunnel`]), as the kubelet serves it.
//!
//! For each forwarded connection the client opens two streams with the headers `streamType:
//! error` / `data`, `port: N` and `requestID: K`; once both of a request are there the node
//! runtime connects to `localhost:N` inside the pod's network namespace and copies the data
//! stream to and from that connection; a failure is written, as text, on the error stream.
//! Invariants: every stream the client opens gets a SYN_REPLY or, when its headers are not
//! valid, a RST_STREAM; a pair's error stream is closed (FIN) only after its data stream, so the
//! client has read all data when it learns the outcome; pings are answered.
use super::exec::is_websocket;
use super::spdy::{self, Decoder, Encoder, Frame, FLAG_FIN};
use super::{pods, tunnel, ApiError, State};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The sub-protocol (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket sub-protocol of the tunnelled variant.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// How long the other direction of a forwarded connection may go on after the pod's side ended.
const LINGER: Duration = Duration::from_secs(1);
/// How long connecting inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where forwarded connections go.
#[derive(Clone, Debug)]
pub struct Pod {
    /// `namespace/name`, for messages.
    pub name: String,
    /// Its UID, for messages.
    pub uid: String,
    /// Its network namespace.
    pub netns: PathBuf,
}

/// The handler.
pub async fn handle(
    axum::extract::State(state): axum::extract::State<State>,
    Path((namespace, name)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let record = pods::find_pod(&state.node, &namespace, &name)?;
    if record.pod_ip.is_none() {
        return Err(ApiError::bad_request(format!(
            "pod {name:?} has no network yet"
        )));
    }
    let pod = Pod {
        name: format!("{namespace}/{name}"),
        uid: record.uid.clone(),
        netns: if record.netns.is_empty() {
            PathBuf::from("/proc/self/ns/net")
        } else {
            crate::kubelet::netns::path(&record.netns)
        },
    };
    let (mut parts, _) = req.into_parts();
    if is_websocket(&parts.headers) {
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?
            .protocols([TUNNEL_PROTOCOL]);
        if ws.selected_protocol().is_none() {
            return Err(ApiError::bad_request(format!(
                "requested protocol(s) are not supported; supports [{TUNNEL_PROTOCOL}]"
            )));
        }
        return Ok(ws
            .on_upgrade(move |socket| serve(tunnel::bytes_over(socket), pod))
            .into_response());
    }
    let spdy = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let offered = parts
        .headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == PROTOCOL);
    if !spdy {
        return Err(ApiError::bad_request(
            "port forwarding needs an upgrade to SPDY/3.1 or a WebSocket",
        ));
    }
    if !offered {
        return Err(ApiError::forbidden(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {:?}, server supports [{PROTOCOL}]",
            parts.headers.get_all("x-stream-protocol-version").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>()
        )));
    }
    let upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("the connection cannot be upgraded"))?;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(TokioIo::new(io), pod).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::UPGRADE, HeaderValue::from_static("SPDY/3.1")),
            (
                header::HeaderName::from_static("x-stream-protocol-version"),
                HeaderValue::from_static(PROTOCOL),
            ),
        ],
    )
        .into_response())
}

/// The validated headers of a stream the client opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// `error` or `data`.
    pub data: bool,
    /// The pod's port.
    pub port: u16,
    /// Pairs the two streams of one connection.
    pub request_id: String,
}

/// Checks a new stream's headers as the kubelet does; the message says what is wrong.
pub fn stream_request(headers: &[(String, String)]) -> Result<StreamRequest, String> {
    let port = spdy::header(headers, "port").ok_or("\"port\" header is required")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let data = match spdy::header(headers, "streamtype") {
        Some("data") => true,
        Some("error") => false,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    Ok(StreamRequest {
        data,
        port,
        request_id: spdy::header(headers, "requestid").unwrap_or("").to_string(),
    })
}

/// One connection's streams, waiting for their pair.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, u16, mpsc::Receiver<Bytes>)>,
}

/// Serves the port-forward protocol on `io` until the client goes away.
pub async fn serve<S>(io: S, pod: Pod)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (frames, mut to_send) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut encoder = Encoder::new();
        while let Some(frame) = to_send.recv().await {
            let Ok(bytes) = encoder.encode(&frame) else {
                break;
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    'session: loop {
        loop {
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "port-forward: not SPDY/3.1");
                    let _ = frames
                        .send(Frame::GoAway {
                            last_good: 0,
                            status: 1,
                        })
                        .await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => match stream_request(&headers) {
                    Err(why) => {
                        tracing::debug!(stream_id, %why, "port-forward stream refused");
                        let _ = frames
                            .send(Frame::RstStream {
                                stream_id,
                                status: spdy::CANCEL,
                            })
                            .await;
                    }
                    Ok(req) => {
                        let _ = frames
                            .send(Frame::SynReply {
                                stream_id,
                                flags: 0,
                                headers: Vec::new(),
                            })
                            .await;
                        let pair = pairs.entry(req.request_id.clone()).or_default();
                        if req.data {
                            let (tx, rx) = mpsc::channel(16);
                            inbound.insert(stream_id, tx);
                            pair.data = Some((stream_id, req.port, rx));
                        } else {
                            pair.error = Some(stream_id);
                        }
                        if pair.error.is_some() && pair.data.is_some() {
                            if let Some(Pair {
                                error: Some(error),
                                data: Some((data, port, rx)),
                            }) = pairs.remove(&req.request_id)
                            {
                                let streams = Streams {
                                    data,
                                    error,
                                    frames: frames.clone(),
                                };
                                forwards.spawn(forward(pod.clone(), port, streams, rx));
                            }
                        }
                    }
                },
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inbound.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            inbound.remove(&stream_id);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        inbound.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    inbound.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = frames.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                _ => {}
            }
        }
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    forwards.abort_all();
    drop(frames);
    let _ = writer.await;
}

/// The two streams of a forwarded connection and the way to the client.
struct Streams {
    data: u32,
    error: u32,
    frames: mpsc::Sender<Frame>,
}

impl Streams {
    async fn send(&self, stream_id: u32, flags: u8, data: Bytes) -> bool {
        let frame = Frame::Data {
            stream_id,
            flags,
            data,
        };
        self.frames.send(frame).await.is_ok()
    }
}

/// Connects to `127.0.0.1:port` inside the network namespace at `netns`: on a thread of its own
/// that enters the namespace, so no other task ever runs there.
pub async fn connect_in(netns: PathBuf, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| {
            let ns = std::fs::File::open(&netns)?;
            // SAFETY: setns on this thread only, with a descriptor we own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })();
        let _ = tx.send(connected);
    });
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread died"))??;
    tokio::net::TcpStream::from_std(stream)
}

/// Forwards one connection: pod port ↔ data stream; a failure goes to the error stream.
async fn forward(pod: Pod, port: u16, streams: Streams, mut from_client: mpsc::Receiver<Bytes>) {
    match connect_in(pod.netns.clone(), port).await {
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: failed to connect to localhost:{port} inside namespace {:?}: {e}",
                pod.name, pod.uid, pod.netns
            );
            tracing::info!(%message, "port-forward failed");
            streams
                .send(streams.error, 0, Bytes::from(message.into_bytes()))
                .await;
        }
        Ok(tcp) => {
            let (mut tcp_rd, mut tcp_wr) = tcp.into_split();
            let up = async {
                while let Some(chunk) = from_client.recv().await {
                    if tcp_wr.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = tcp_wr.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match tcp_rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = Bytes::copy_from_slice(&buf[..n]);
                            if !streams.send(streams.data, 0, chunk).await {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::pin!(up, down);
            tokio::select! {
                _ = &mut down => {
                    let _ = tokio::time::timeout(LINGER, &mut up).await;
                }
                _ = &mut up => down.await,
            }
        }
    }
    streams.send(streams.data, FLAG_FIN, Bytes::new()).await;
    streams.send(streams.error, FLAG_FIN, Bytes::new()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn streams_need_a_port_and_a_stream_type_as_the_kubelet_checks() {
        assert_eq!(
            stream_request(&h(&[
                ("streamtype", "data"),
                ("port", "8080"),
                ("requestid", "7")
            ])),
            Ok(StreamRequest {
                data: true,
                port: 8080,
                request_id: "7".into()
            })
        );
        assert_eq!(
            stream_request(&h(&[("streamtype", "data")])),
            Err("\"port\" header is required".into())
        );
        assert_eq!(
            stream_request(&h(&[("port", "0"), ("streamtype", "data")])),
            Err("port \"0\" must be > 0".into())
        );
        assert_eq!(
            stream_request(&h(&[("port", "80"), ("streamtype", "stdin")])),
            Err("invalid stream type \"stdin\"".into())
        );
    }
}
