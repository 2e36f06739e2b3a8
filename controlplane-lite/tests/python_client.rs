//! The Python `kubernetes` client (PyPI) against controlplane-lite, as a user's script would use
//! it: see `python_client.py`. The server serves HTTPS with its generated CA and requires a bearer
//! token; the kubeconfig carries both. It is restarted once before the script runs, so its watch
//! history is gone and a watch from an old resourceVersion must get 410 Gone.
//!
//! Needs `pip install kubernetes` (done by `cargo xtask setup`): run with `cargo xtask test`.
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use switchyard_cp::auth::Tokens;
use switchyard_cp::{admission::Ranges, kubeconfig, tls, Config};

const TOKEN: &str = "py-token-0123456789";

/// Serves HTTPS with the CA in `data/pki` and [`TOKEN`]; returns the address, the CA (PEM), a
/// stop handle and the task.
async fn serve(
    data: &std::path::Path,
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
    let pki = tls::Pki::load_or_create(&data.join("pki"), &tls::sans(addr.ip(), &[])).expect("pki");
    let tokens = Tokens::parse(&format!("{TOKEN},py,1\n"), Path::new("tokens")).expect("tokens");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        data_dir: Some(data.to_path_buf()),
        ranges: Ranges::default(),
        node_monitor_grace: Duration::from_secs(40),
        tls: Some(pki.server_config),
        tokens: Some(Arc::new(tokens)),
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
    let dir = std::env::temp_dir().join(format!("sy-cp-py-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // First life: some history, then a restart that forgets it.
    let (addr, ca, stop, task) = serve(&dir).await;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca).expect("ca.crt");
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"history"}}"#;
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "--cacert",
            &ca_file.to_string_lossy(),
            "-d",
            ns,
            &format!("https://{addr}/api/v1/namespaces"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "create a namespace over HTTPS");
    let _ = stop.send(());
    let _ = task.await;

    let (addr, ca, stop, task) = serve(&dir).await;
    let kubeconfig = dir.join("kubeconfig");
    let text = kubeconfig::render(&format!("https://{addr}"), Some(&ca), Some(TOKEN));
    std::fs::write(&kubeconfig, text).expect("kubeconfig");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("KUBECONFIG", &kubeconfig)
            .output()
    })
    .await
    .expect("join")
    .expect("python3");
    let _ = stop.send(());
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "python client script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
