//! `kubectl logs` and `kubectl exec` through controlplane-lite to a kubelet: a fake one here,
//! serving HTTPS on loopback and answering as the lab's node runtime would, which records what
//! reached it. Shows that the server checks and defaults before asking the kubelet, reaches it at
//! the Node's InternalIP and `daemonEndpoints` port with its client certificate, streams the log
//! back, turns the kubelet's refusals into Statuses, and splices an upgraded exec connection so
//! that kubectl's WebSocket protocol gets through unchanged.
mod harness;

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use harness::{ca_file, Cp};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What reached the fake kubelet.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    client_certificate: bool,
}

/// A kubelet on 127.0.0.1 trusting client certificates of the CA at `ca`.
struct FakeKubelet {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

const STATUS_EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

/// A WebSocket frame from a server (unmasked).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A binary message on a `v5.channel.k8s.io` channel.
fn on_channel(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = vec![channel];
    payload.extend_from_slice(data);
    frame(0x2, &payload)
}

fn answer(req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let text = |code: StatusCode, body: &str| {
        Response::builder()
            .status(code)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    match path {
        "/containerLogs/default/web/app" | "/containerLogs/default/pair/first" => {
            text(StatusCode::OK, "hello from the kubelet\nsecond line\n")
        }
        "/containerLogs/default/waiting/app" => text(
            StatusCode::BAD_REQUEST,
            "container \"app\" in pod \"waiting\" is waiting to start: ContainerCreating",
        ),
        "/exec/default/web/app" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default();
            let mut input = key;
            input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
            let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .header("sec-websocket-protocol", "v5.channel.k8s.io")
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

impl FakeKubelet {
    fn start(ca: &Path) -> FakeKubelet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).expect("the server's CA"))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(cert.signing_key.serialize_pem().as_bytes()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client_certificate = tls.get_ref().1.peer_certificates().is_some();
                    let service = hyper::service::service_fn(move |mut req| {
                        let record = record.clone();
                        async move {
                            record.lock().unwrap().push(Seen {
                                method: req.method().to_string(),
                                target: req.uri().to_string(),
                                client_certificate,
                            });
                            let resp = answer(&req);
                            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                                let upgrade = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let Ok(io) = upgrade.await else { return };
                                    let mut io = TokioIo::new(io);
                                    let mut out = on_channel(1, b"");
                                    out.extend(on_channel(1, b"out\n"));
                                    out.extend(on_channel(2, b"err\n"));
                                    out.extend(on_channel(3, STATUS_EXIT_3.as_bytes()));
                                    out.extend(frame(0x8, &1000u16.to_be_bytes()));
                                    let _ = io.write_all(&out).await;
                                    let mut sink = vec![0u8; 4096];
                                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                                });
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeKubelet {
            port,
            seen,
            _runtime: runtime,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Node `name` whose kubelet is at 127.0.0.1:`port`, and pods bound to it.
fn node_and_pods(cp: &Cp, name: &str, port: u16, pods: &[(&str, &[&str])]) {
    cp.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"
    ));
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}},{{"type":"Hostname","address":"{name}"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    cp.kubectl(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ])
    .ok();
    for (pod, containers) in pods {
        let list: String = containers
            .iter()
            .map(|c| format!("  - {{name: {c}, image: x}}\n"))
            .collect();
        cp.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\nspec:\n  nodeName: {name}\n  containers:\n{list}"
        ));
    }
}

#[test]
fn kubectl_logs_and_exec_reach_the_kubelet_of_the_pods_node_with_the_servers_certificate() {
    let cp = Cp::start();
    let kubelet = FakeKubelet::start(&ca_file(&cp.data));
    node_and_pods(
        &cp,
        "n1",
        kubelet.port,
        &[
            ("web", &["app"]),
            ("pair", &["first", "second"]),
            ("waiting", &["app"]),
        ],
    );

    assert_eq!(
        cp.kubectl(&["logs", "web", "--tail=3", "--timestamps"])
            .ok(),
        "hello from the kubelet\nsecond line\n"
    );
    let log = kubelet.seen().pop().expect("the kubelet was asked");
    assert_eq!(log.method, "GET");
    assert!(
        log.target.starts_with("/containerLogs/default/web/app?")
            && log.target.contains("tailLines=3")
            && log.target.contains("timestamps=true"),
        "{log:?}"
    );
    assert!(
        log.client_certificate,
        "the server presents its kubelet client certificate"
    );

    // kubectl picks the first of several containers; the API itself wants a name.
    cp.kubectl(&["logs", "pair"]).ok();
    assert!(kubelet
        .seen()
        .pop()
        .unwrap()
        .target
        .starts_with("/containerLogs/default/pair/first?"));
    let asked = kubelet.seen().len();
    assert!(cp
        .kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"])
        .fails()
        .contains(
            "a container name must be specified for pod pair, choose one of: [first second]"
        ));
    assert!(cp
        .kubectl(&["logs", "web", "-c", "nope"])
        .fails()
        .contains("container nope is not valid for pod web"));
    assert_eq!(
        kubelet.seen().len(),
        asked,
        "refused before reaching the kubelet"
    );

    assert_eq!(
        cp.kubectl(&["logs", "waiting"]).fails().trim(),
        "Error from server (BadRequest): container \"app\" in pod \"waiting\" is waiting to start: ContainerCreating"
    );

    let exec = cp.kubectl(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(exec.stdout, "out\n");
    assert!(exec.stderr.starts_with("err\n"), "{}", exec.stderr);
    assert!(!exec.success);
    let upgraded = kubelet.seen().pop().unwrap();
    assert_eq!(upgraded.method, "GET", "kubectl tries WebSockets first");
    assert!(
        upgraded.target.starts_with("/exec/default/web/app?")
            && upgraded.target.contains("command=sh")
            && upgraded.target.contains("command=-c"),
        "{upgraded:?}"
    );
}

#[test]
fn kubectl_exit_codes_and_errors_come_back_from_the_kubelet() {
    let cp = Cp::start();
    let kubelet = FakeKubelet::start(&ca_file(&cp.data));
    node_and_pods(&cp, "n1", kubelet.port, &[("web", &["app"])]);
    let status = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["exec", "web", "--", "false"])
        .output()
        .unwrap()
        .status;
    assert_eq!(
        status.code(),
        Some(3),
        "kubectl exits with the command's code"
    );

    // A node whose kubelet does not listen: kube-apiserver's words for a failed dial.
    let closed = harness::free_port();
    node_and_pods(&cp, "n2", closed, &[("lost", &["app"])]);
    let err = cp.kubectl(&["logs", "lost"]).fails();
    assert!(
        err.contains(&format!(
            "Get \"https://127.0.0.1:{closed}/containerLogs/default/lost/app"
        )) && err.contains("Connection refused"),
        "{err}"
    );
    // A pod bound to no node has no log yet and nothing to exec in.
    cp.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: nowhere\nspec:\n  containers:\n  - {name: app, image: x}\n");
    assert_eq!(cp.kubectl(&["logs", "nowhere"]).ok(), "");
    assert!(cp
        .kubectl(&["exec", "nowhere", "--", "true"])
        .fails()
        .contains("pod nowhere does not have a host assigned"));
}
