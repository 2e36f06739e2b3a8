//! The Python `kubernetes` client (PyPI) against controlplane-lite, as a user's script would use
//! it: see `python_client.py`. The server serves HTTPS with its generated CA and requires a bearer
//! token; the kubeconfig carries both. It is restarted once before the script runs, so its watch
//! history is gone and a watch from an old resourceVersion must get 410 Gone.
//!
//! Needs `pip install kubernetes` (done by `cargo xtask setup`): run with `cargo xtask test`.
mod harness;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_cp::auth::Tokens;
use switchyard_cp::{admission::Ranges, kubeconfig, tls, Config};

use harness::{python, Client, Scratch, TOKEN};

/// Serves HTTPS with the CA in `data/pki` and [`TOKEN`]; returns the address, the CA (PEM), a
/// stop handle and the task.
async fn serve(
    data: &Path,
) -> (
    String,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pki = tls::Pki::load_or_create(
        &data.join("pki"),
        &tls::sans(
            tls::ServerNames {
                listen: addr.ip(),
                advertise: None,
                service_ip: Ranges::default().first_service_ip().into(),
            },
            &[],
        ),
    )
    .expect("pki");
    let tokens = Tokens::parse(&format!("{TOKEN},py,1\n"), Path::new("tokens")).expect("tokens");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        data_dir: Some(data.to_path_buf()),
        ranges: Ranges::default(),
        node_monitor_grace: Duration::from_secs(40),
        tls: Some(pki.server_config),
        tokens: Some(Arc::new(tokens)),
        ..Config::default()
    };
    let task = tokio::spawn(async move {
        switchyard_cp::run(listener, config, async move {
            let _ = rx.await;
        })
        .await
        .expect("server");
    });
    (addr.to_string(), pki.ca_pem, tx, task)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the Python kubernetes client: run with cargo xtask test"]
async fn the_python_client_lists_creates_watches_and_resumes() {
    let scratch = Scratch::new("py");
    let dir = scratch.0.clone();
    // First life: some history, then a restart that forgets it.
    let (addr, _, stop, task) = serve(&dir).await;
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"history"}}"#;
    let client = Client::new(&format!("https://{addr}"), &dir);
    let (code, body) =
        tokio::task::spawn_blocking(move || client.request("POST", "/api/v1/namespaces", Some(ns)))
            .await
            .expect("join");
    assert_eq!(code, 201, "create a namespace over HTTPS: {body}");
    let _ = stop.send(());
    let _ = task.await;

    let (addr, ca, stop, task) = serve(&dir).await;
    let kubeconfig = dir.join("kubeconfig");
    let text = kubeconfig::render(&format!("https://{addr}"), Some(&ca), Some(TOKEN));
    std::fs::write(&kubeconfig, text).expect("kubeconfig");
    let script = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python_client.py"
    ));
    let out = tokio::task::spawn_blocking(move || python(&kubeconfig, script, &[]))
        .await
        .expect("join");
    let _ = stop.send(());
    let _ = task.await;
    let stdout = out.ok();
    assert!(
        stdout.contains("PASS"),
        "python client script printed no PASS:\n{stdout}"
    );
}
