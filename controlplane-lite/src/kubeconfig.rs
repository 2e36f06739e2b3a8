//! The kubeconfig `--write-kubeconfig` writes: the server URL, the CA clients verify the server
//! with (`certificate-authority-data`) and the bearer token they send.
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;

/// The URL clients reach a server listening on `listen` at: a wildcard address becomes loopback.
pub fn server_url(listen: SocketAddr, tls: bool) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, listen.port()))
}

/// The kubeconfig text for `server`, trusting `ca_pem` (if TLS) and sending `token` (if any).
pub fn render(server: &str, ca_pem: Option<&str>, token: Option<&str>) -> String {
    let ca = ca_pem.map_or(String::new(), |pem| {
        format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        )
    });
    // JSON strings are valid YAML scalars: no quoting surprises whatever the token holds.
    let user = token.map_or("{}".to_string(), |t| {
        format!("\n    token: {}", serde_json::Value::String(t.to_string()))
    });
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: switchyard\n  cluster:\n    server: {server}\n{ca}users:\n- name: admin\n  user: {user}\ncontexts:\n- name: switchyard\n  context:\n    cluster: switchyard\n    user: admin\n    namespace: default\ncurrent-context: switchyard\n"
    )
}

/// Writes `text` to `path` (mode 0600: it may hold a token), atomically.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            server_url("0.0.0.0:6443".parse().unwrap(), true),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            server_url("198.18.0.1:6443".parse().unwrap(), false),
            "http://198.18.0.1:6443"
        );
        assert_eq!(
            server_url("[::]:6443".parse().unwrap(), true),
            "https://[::1]:6443"
        );
    }

    #[test]
    fn the_kubeconfig_carries_the_ca_and_the_token() {
        let text = render("https://127.0.0.1:6443", Some("PEM"), Some("t0k"));
        let v: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let cluster = &v["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:6443");
        assert_eq!(cluster["certificate-authority-data"], "UEVN");
        assert_eq!(v["users"][0]["user"]["token"], "t0k");
        let plain: serde_json::Value =
            serde_yaml::from_str(&render("http://x:1", None, None)).unwrap();
        assert!(plain["users"][0]["user"].as_object().unwrap().is_empty());
    }
}
