//! TLS and bearer tokens through the real `switchyard-cp` binary on 127.0.0.1, as a user meets
//! them: kubectl with the written kubeconfig works; without a token or with a wrong one kubectl
//! and curl get `401 Unauthorized`; the server is verified with the generated CA and not without
//! it; the certificate names what in-cluster clients dial (`kubernetes.default.svc`, 10.96.0.1, the
//! advertised address), and one an older version left without them is re-issued by the same CA;
//! a restart keeps the CA and the token, so existing kubeconfigs keep working; a broken token
//! file stops the start with the line named. Needs kubectl, curl and openssl (no root).
mod harness;

use std::process::Command;

use switchyard_cp::kubeconfig;

use harness::{ca_file, free_port, kubectl, kubectl_cold, run, Cp, Scratch, BINARY, TOKEN};

/// `openssl x509 -fingerprint -sha256` of a certificate file.
fn fingerprint(path: &std::path::Path) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path);
    run(cmd, None, "openssl x509".into())
        .ok()
        .trim()
        .to_string()
}

/// The CA a TLS client is handed when it asks the server (`openssl s_client -showcerts`), as
/// the issuer of the serving certificate.
fn served_issuer(port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("i:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

const UNAUTHORIZED: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;

#[test]
fn tokens_and_tls_as_kubectl_and_curl_see_them() {
    let dir = Scratch::new("auth");
    let port = free_port();
    let mut cp = Cp::start_in(&dir.0, port);

    // The written kubeconfig: HTTPS, the CA, the token.
    let kc = std::fs::read_to_string(&cp.kubeconfig).expect("kubeconfig");
    assert!(
        kc.contains(&format!("server: https://127.0.0.1:{port}")),
        "{kc}"
    );
    assert!(
        kc.contains("certificate-authority-data: ") && kc.contains(TOKEN),
        "{kc}"
    );

    let out = cp.kubectl(&["get", "namespaces"]).ok();
    assert!(
        out.contains("default") && out.contains("kube-system"),
        "{out}"
    );
    let out = cp.kubectl(&["get", "nodes"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.success && all.contains("No resources found"), "{all}");

    // kubectl without a token, and with a wrong one. Without any credentials kubectl asks for a
    // user name (stdin is empty here, so it stops there); with a user name but no token, or
    // with a wrong token, the server answers 401 and kubectl says so. Its message depends on
    // whether discovery is cached (warm after the successful calls above), as with
    // kube-apiserver: "(Unauthorized)" from the Status, or client-go's generic wording.
    let no_token = dir.0.join("no-token.kubeconfig");
    let ca = std::fs::read_to_string(ca_file(&cp.data)).unwrap();
    std::fs::write(&no_token, kubeconfig::render(&cp.url, Some(&ca), None)).unwrap();
    let out = kubectl(&no_token, &["get", "namespaces"]);
    assert!(!out.success && !out.stdout.contains("default"));
    for (what, args) in [
        (
            "a wrong token",
            vec!["get", "namespaces", "--token", "not-the-token"],
        ),
        (
            "a user name but no token",
            vec!["get", "namespaces", "--username", "nobody"],
        ),
    ] {
        let err = kubectl(&no_token, &args).fails();
        assert!(
            err.contains("error: You must be logged in to the server (Unauthorized)"),
            "kubectl with {what} printed: {err}"
        );
    }
    let err = kubectl_cold(&no_token, &["get", "pods", "--token", "wrong"]).fails();
    assert!(
        err.contains("error: You must be logged in to the server (the server has asked for the client to provide credentials)"),
        "kubectl with a wrong token and no discovery cache printed: {err}"
    );

    // curl: no token, a wrong token, the right one; health checks stay open.
    let url = format!("{}/api/v1/namespaces", cp.url);
    for extra in [
        vec![],
        vec!["-H", "Authorization: Bearer wrong"],
        vec!["-H", "Authorization: Basic abc"],
    ] {
        let mut args = extra.clone();
        args.extend(["-w", "\n%{http_code}", url.as_str()]);
        let out = cp.curl(&args).stdout;
        let (body, code) = out.rsplit_once('\n').unwrap();
        assert_eq!(code, "401", "{extra:?}: {out}");
        let got: serde_json::Value = serde_json::from_str(body).unwrap();
        let want: serde_json::Value = serde_json::from_str(UNAUTHORIZED).unwrap();
        assert_eq!(got, want, "{extra:?}");
    }
    let (code, body) = cp.request("GET", "/api/v1/namespaces", None);
    assert_eq!(code, 200, "{body}");
    for open in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(cp.curl(&["-f", &format!("{}{open}", cp.url)]).ok(), "ok");
    }

    // Verified with the CA (above); without it curl refuses the server.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &format!("{}/healthz", cp.url)])
        .output()
        .expect("curl");
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl without the CA: {:?}",
        out
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"));
    // The certificate names 127.0.0.1 and localhost.
    cp.curl(&[
        "-f",
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/healthz"),
    ])
    .ok();

    // A restart keeps the CA; the old kubeconfig (old CA, same token) keeps working.
    let saved = dir.0.join("saved.kubeconfig");
    std::fs::copy(&cp.kubeconfig, &saved).unwrap();
    let before = fingerprint(&ca_file(&cp.data));
    let issuer = served_issuer(port);
    assert!(issuer.contains("switchyard-cp CA"), "{issuer}");
    cp.restart();
    assert_eq!(
        fingerprint(&ca_file(&cp.data)),
        before,
        "the CA changed on restart"
    );
    assert_eq!(served_issuer(port), issuer);
    let out = kubectl(&saved, &["get", "namespaces"]).ok();
    assert!(out.contains("default"), "{out}");
    let log = cp.log();
    assert_eq!(log.matches("generated a new CA").count(), 1, "{log}");
}

#[test]
fn a_broken_token_file_stops_the_start_naming_the_line() {
    let dir = Scratch::new("badtokens");
    let tokens = dir.0.join("tokens.csv");
    std::fs::write(&tokens, "good,admin,1\nonly-a-token\n").unwrap();
    let mut cmd = Command::new(BINARY);
    cmd.args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--token-file")
        .arg(&tokens);
    let err = run(cmd, None, "switchyard-cp with a broken token file".into()).fails();
    assert!(
        err.contains(&format!("token file {}, line 2:", tokens.display())),
        "{err}"
    );
}

#[test]
fn a_watch_streams_over_tls_and_sigterm_ends_it_promptly() {
    let mut cp = Cp::start();
    let mut watch = cp.kubectl_spawn(&["get", "namespaces", "-w", "--output-watch-events"]);
    let stdout = watch.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, body) = cp.request(
        "POST",
        "/api/v1/namespaces",
        Some(r#"{"metadata":{"name":"seen-by-the-watch"}}"#),
    );
    assert_eq!(code, 201, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let start = std::time::Instant::now();
    cp.stop();
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "switchyard-cp took {took:?} to stop with a watch open"
    );
    // kubectl retries a closed watch; it gives up soon with the server gone.
    let _ = watch.kill();
    let _ = watch.wait();
    let lines = lines.join().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ADDED") && l.contains("seen-by-the-watch")),
        "{lines:?}"
    );
}

/// curl, verified with the CA in `data`, of `https://HOST:PORT/healthz` where HOST is `host`,
/// connecting to 127.0.0.1:`port` whatever `host` resolves to (nothing leaves the machine).
fn healthz_as(data: &std::path::Path, host: &str, port: u16) -> harness::Out {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca_file(data))
        .args(["--connect-to", &format!("{host}:{port}:127.0.0.1:{port}")]);
    let url = format!("https://{host}:{port}/healthz");
    cmd.arg(&url);
    run(cmd, None, format!("curl {url}"))
}

#[test]
fn in_cluster_names_of_the_api_server_verify_against_the_ca() {
    let cp = Cp::start_with(&["--advertise-address", "198.18.0.1"]);
    let port: u16 = cp.url.rsplit(':').next().unwrap().parse().unwrap();
    for host in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
        "198.18.0.1",
    ] {
        assert_eq!(healthz_as(&cp.data, host, port).ok(), "ok", "{host}");
    }
    let err = healthz_as(&cp.data, "elsewhere.example", port).fails();
    assert!(err.contains("SSL"), "a name not in the certificate: {err}");
}

#[test]
fn a_data_dir_with_an_old_certificate_gets_the_new_names_from_the_same_ca() {
    let scratch = Scratch::new("old-pki");
    let pki = scratch.0.join("data").join("pki");
    // What an older switchyard-cp left: a CA and a certificate for 127.0.0.1 and localhost.
    let old = switchyard_cp::tls::Pki::load_or_create(
        &pki,
        &["127.0.0.1".to_string(), "localhost".to_string()],
    )
    .unwrap();
    let port = free_port();
    let before = fingerprint(&pki.join("ca.crt"));
    let old_server = fingerprint(&pki.join("server.crt"));
    let cp = Cp::start_in(&scratch.0, port);
    assert_eq!(fingerprint(&pki.join("ca.crt")), before, "the CA is kept");
    assert_ne!(fingerprint(&pki.join("server.crt")), old_server);
    assert_eq!(
        std::fs::read_to_string(ca_file(&cp.data)).unwrap(),
        old.ca_pem
    );
    assert_eq!(
        healthz_as(&cp.data, "kubernetes.default.svc", port).ok(),
        "ok"
    );
    // A kubeconfig holding the old CA still works.
    kubectl(&cp.kubeconfig, &["get", "ns", "default"]).ok();
}
