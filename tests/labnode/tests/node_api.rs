//! The node runtime's API as the API server calls it, in-process in the scratch namespace
//! `sy-t-node-api`: a "container" (a process in that namespace, with a record and a log as the
//! kubelet keeps them), a client certificate from a CA the API trusts, and the protocols kubectl
//! ends up speaking — plain HTTPS for logs, WebSocket `v5.channel.k8s.io` for exec, SPDY/3.1 for
//! port-forward, plain and tunnelled in a WebSocket. Callers without the certificate get 401.
//!
//! Needs root; skipped otherwise. Run under the lab lock. The namespace, the process and the
//! node's state directory are removed also when an assertion fails.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard::paths;
use switchyard_lab::netns::{self, Scratch};
use switchyard_labnode::kubelet::logs::{self, cri};
use switchyard_labnode::kubelet::server::spdy::{self, Decoder, Encoder, Frame};
use switchyard_labnode::kubelet::server::{self, ApiOptions};
use switchyard_labnode::kubelet::{process, state};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const NODE: &str = "sy-t-node-api";
const UID: &str = "0b5e-api-test";

/// A CA trusted by the API, and a client configuration presenting a certificate it issued.
fn identities(dir: &Path) -> (PathBuf, Arc<rustls::ClientConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &Issuer::new(ca, &ca_key)).unwrap();
    let config = switchyard_cp::kubelet::credentials::client_config(
        vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    (ca_file, config)
}

/// The pod `default/web` with container `app` (process `pid`, in its second run), its log
/// files and its record.
fn pod(pid: i32) {
    let line = |t: &str, stream, text: &str| {
        cri::encode(t.parse().unwrap(), stream, false, text.as_bytes())
    };
    let first = logs::container_log(NODE, "default", "web", UID, "app", 0);
    std::fs::create_dir_all(first.parent().unwrap()).unwrap();
    std::fs::write(
        &first,
        line("2026-12-02T01:00:00Z", cri::Stream::Stdout, "first run"),
    )
    .unwrap();
    let mut now = line("2026-12-02T01:00:10Z", cri::Stream::Stdout, "one");
    now.extend(line("2026-12-02T01:00:11Z", cri::Stream::Stderr, "two"));
    now.extend(line("2026-12-02T01:00:12Z", cri::Stream::Stdout, "three"));
    std::fs::write(
        logs::container_log(NODE, "default", "web", UID, "app", 1),
        now,
    )
    .unwrap();
    let exit = process::Exit {
        code: 1,
        signal: None,
    };
    let rec = state::PodRecord {
        uid: UID.into(),
        namespace: "default".into(),
        name: "web".into(),
        container_id: "default-web-0b5e".into(),
        netns: NODE.into(),
        pod_ip: Some("10.244.1.9".parse().unwrap()),
        start_time: "2026-12-02T01:00:00Z".into(),
        containers: vec![state::ContainerRecord {
            name: "app".into(),
            image: "x".into(),
            pid: Some(pid),
            start_ticks: process::start_ticks_of(pid),
            started_at: Some("2026-12-02T01:00:10Z".into()),
            exit: None,
            finished_at: None,
            error: None,
            restart_count: 1,
            last: Some(state::LastRun {
                exit,
                started_at: None,
                finished_at: None,
            }),
        }],
    };
    state::save(NODE, &rec).unwrap();
}

#[test]
fn the_node_api_serves_logs_exec_and_port_forward_to_holders_of_a_client_certificate_only() {
    if !switchyard_lab::lab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut scratch = Scratch::default();
    scratch.netns(NODE);
    scratch.dir(paths::state_dir(NODE));
    let dir = paths::state_dir(NODE).join("test");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_file, tls) = identities(&dir);
    let container = Command::new("nsenter")
        .arg(format!("--net={}", netns::path(NODE).display()))
        .args(["--", "sleep", "600"])
        .env("SY_TEST_MARK", "from-the-container")
        .stdin(Stdio::null())
        .spawn()
        .expect("a container process");
    pod(container.id() as i32);
    scratch.child(container);
    netns::run_in(NODE, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario(ca_file, tls))
    })
    .expect("the test, run in the node namespace");
}

/// One request on a connection of its own; the response.
async fn send(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    req: hyper::Request<Empty<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await.unwrap()
}

async fn get(tls: &Arc<rustls::ClientConfig>, addr: SocketAddr, target: &str) -> (u16, String) {
    let req = hyper::Request::get(target).body(Empty::new()).unwrap();
    let resp = send(tls, addr, req).await;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

async fn scenario(ca_file: PathBuf, tls: Arc<rustls::ClientConfig>) {
    let opts = ApiOptions {
        port: 0,
        client_ca_file: Some(ca_file),
    };
    let (server, port) = server::start(&opts, NODE, &["127.0.0.1".into()])
        .await
        .expect("the API starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Without a client certificate (curl sends none): 401, whatever the path.
    for path in [
        "/containerLogs/default/web/app",
        "/exec/default/web/app",
        "/nope",
    ] {
        let out = tokio::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://{addr}{path}"))
            .output()
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{path}");
    }

    let logs = "/containerLogs/default/web/app";
    assert_eq!(
        get(&tls, addr, logs).await,
        (200, "one\ntwo\nthree\n".into())
    );
    assert_eq!(
        get(&tls, addr, &format!("{logs}?tailLines=1&timestamps=true")).await,
        (200, "2026-12-02T01:00:12.000000000Z three\n".into())
    );
    assert_eq!(
        get(
            &tls,
            addr,
            &format!("{logs}?sinceTime=2026-12-02T01:00:11Z&limitBytes=6")
        )
        .await,
        (200, "two\nth".into())
    );
    assert_eq!(
        get(&tls, addr, &format!("{logs}?previous=true")).await,
        (200, "first run\n".into())
    );
    assert_eq!(
        get(&tls, addr, "/containerLogs/default/web/nope").await,
        (404, "container \"nope\" not found in pod \"web\"".into())
    );
    assert_eq!(
        get(&tls, addr, "/containerLogs/default/gone/app").await,
        (404, "pod \"gone\" does not exist".into())
    );

    exec(&tls, addr).await;

    // Port-forward to a server inside the pod's namespace (this runtime's threads are there).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pod_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let answer = format!("pong:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let req = hyper::Request::post("/portForward/default/web")
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", "portforward.k8s.io")
        .body(Empty::new())
        .unwrap();
    let mut resp = send(&tls, addr, req).await;
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(
        resp.headers()["x-stream-protocol-version"],
        "portforward.k8s.io"
    );
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    forward_once(TokioIo::new(upgraded), pod_port).await;

    let ws = websocket(
        &tls,
        addr,
        "/portForward/default/web",
        "SPDY/3.1+portforward.k8s.io",
    )
    .await;
    forward_once(bytes_of(ws), pod_port).await;
    server.abort();
}

/// A WebSocket to `target` with sub-protocol `protocol`.
async fn websocket(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    target: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let mut req = format!("wss://{addr}{target}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// `sh` in the container over `v5.channel.k8s.io`: output, input and its end, exit code.
async fn exec(tls: &Arc<rustls::ClientConfig>, addr: SocketAddr) {
    let target = "/exec/default/web/app?command=sh&command=-c&command=echo+%24SY_TEST_MARK+out%3B+echo+err+%3E%262%3B+read+x%3B+echo+got+%24x%3B+cat%3B+exit+3&stdin=true&stdout=true&stderr=true";
    let mut ws = websocket(tls, addr, target, "v5.channel.k8s.io").await;
    ws.send(Message::Binary(Bytes::from_static(b"\x00hello\n")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
        .await
        .unwrap();
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Binary(b) = msg else {
            continue;
        };
        match b.first() {
            Some(1) => stdout.extend_from_slice(&b[1..]),
            Some(2) => stderr.extend_from_slice(&b[1..]),
            Some(3) => status.extend_from_slice(&b[1..]),
            _ => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "from-the-container out\ngot hello\n",
        "the container's environment; stdin read, then its end"
    );
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");
    let status: serde_json::Value = serde_json::from_slice(&status).expect("a Status");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

/// The byte stream inside a WebSocket's binary messages.
fn bytes_of<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(Message::Binary(b))) = source.next().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0
                || sink
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    theirs
}

/// One forwarded connection, as client-go makes it: error and data streams for `port`, a ping,
/// data out, the pod's answer back, then both streams finished by the server.
async fn forward_once(io: impl AsyncRead + AsyncWrite + Send + 'static, port: u16) {
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut enc = Encoder::new();
    let headers = |kind: &str| {
        vec![
            ("streamType".to_string(), kind.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestID".to_string(), "0".to_string()),
        ]
    };
    let frames = [
        Frame::SynStream {
            stream_id: 1,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: headers("error"),
        },
        Frame::Data {
            stream_id: 1,
            flags: spdy::FLAG_FIN,
            data: Bytes::new(),
        },
        Frame::SynStream {
            stream_id: 3,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: headers("data"),
        },
        Frame::Ping { id: 1 },
        Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::from_static(b"ping"),
        },
    ];
    for f in &frames {
        wr.write_all(&enc.encode(f).unwrap()).await.unwrap();
    }
    let mut dec = Decoder::new();
    let mut buf = BytesMut::new();
    let (mut replies, mut pong, mut data, mut finished) = (0, false, Vec::new(), Vec::new());
    let read = async {
        while finished.len() < 2 {
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                match f {
                    Frame::SynReply { .. } => replies += 1,
                    Frame::Ping { id: 1 } => pong = true,
                    Frame::Data {
                        stream_id,
                        flags,
                        data: d,
                    } => {
                        if stream_id == 3 {
                            data.extend_from_slice(&d);
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            finished.push(stream_id);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if finished.len() < 2 && rd.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the forwarded connection ends");
    assert_eq!(replies, 2, "both streams accepted");
    assert!(pong, "the ping is answered");
    assert_eq!(String::from_utf8_lossy(&data), "pong:ping");
    assert_eq!(
        finished,
        vec![3, 1],
        "data finished before the error stream"
    );
}
