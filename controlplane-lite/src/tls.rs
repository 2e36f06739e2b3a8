//! The server's TLS material: a CA and a serving certificate signed by it, generated on first
//! start into `<data-dir>/pki/` (`ca.crt`, `ca.key`, `server.crt`, `server.key`; keys mode 0600)
//! and reused afterwards, so clients holding the CA keep trusting the server across restarts;
//! and the client certificate the server presents to kubelets ([`crate::kubelet::credentials`]).
//!
//! The serving certificate covers the SANs it was asked for — with [`sans`], also every name an
//! in-cluster client dials (the `kubernetes` Service's ClusterIP and DNS names, the advertised
//! address). When a later start asks for others (a new `--tls-san`, another listen address), or
//! the certificate on disk does not verify against the CA for every one of them (one written by
//! an older version), it is re-issued by the same CA, so existing kubeconfigs stay valid.
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::kubelet::credentials;

/// Errors preparing TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of the PKI directory could not be read or written.
    #[error("{0}: {1} (remove {2} to generate a new CA and certificate)")]
    Io(PathBuf, std::io::Error, PathBuf),
    /// A key or certificate on disk is not what it should be.
    #[error("{0} is not a usable PEM file: {1} (remove {2} to generate a new CA and certificate)")]
    Pem(PathBuf, String, PathBuf),
    /// Generating a key or certificate failed.
    #[error("generating the {0}: {1}")]
    Generate(&'static str, rcgen::Error),
    /// A `--tls-san` is neither an IP address nor a DNS name.
    #[error("--tls-san {0:?} is neither an IP address nor a DNS name")]
    San(String),
    /// rustls refused the certificate or key.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The CA and serving certificate in use.
pub struct Pki {
    /// The CA certificate (PEM), for clients' `certificate-authority-data`.
    pub ca_pem: String,
    /// The server side of TLS, ready for an acceptor.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The client side towards kubelets, with the kubelet client certificate
    /// ([`crate::kubelet::credentials`]).
    pub kubelet_client: Arc<rustls::ClientConfig>,
    /// The PKI directory.
    pub dir: PathBuf,
}

/// File names inside the PKI directory.
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CRT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
/// The SANs `server.crt` was issued for, one per line (to know when to re-issue it).
const SERVER_SANS: &str = "server.sans";

/// The DNS names in-cluster clients dial for the API server (the `kubernetes` Service's).
pub const SERVICE_NAMES: [&str; 4] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// What the serving certificate must name besides the `--tls-san` extras.
#[derive(Clone, Copy, Debug)]
pub struct ServerNames {
    /// The listen IP (left out when unspecified).
    pub listen: IpAddr,
    /// The address the `kubernetes` Service publishes, if given.
    pub advertise: Option<IpAddr>,
    /// The `kubernetes` Service's ClusterIP (the first address of the service CIDR).
    pub service_ip: IpAddr,
}

/// The SANs of the serving certificate: the listen IP (unless unspecified), 127.0.0.1,
/// localhost, the advertised address, the `kubernetes` Service's ClusterIP and its DNS names
/// ([`SERVICE_NAMES`]), then every extra name; without duplicates, in that order.
pub fn sans(names: ServerNames, extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if !names.listen.is_unspecified() {
        add(names.listen.to_string());
    }
    add("127.0.0.1".into());
    add("localhost".into());
    if let Some(ip) = names.advertise.filter(|ip| !ip.is_unspecified()) {
        add(ip.to_string());
    }
    add(names.service_ip.to_string());
    SERVICE_NAMES
        .iter()
        .map(|n| n.to_string())
        .for_each(&mut add);
    extra.iter().cloned().for_each(&mut add);
    out
}

/// Whether `cert` (PEM) chains to `ca` (PEM) and is valid, now, for every name of `sans`.
fn covers(ca: &str, cert: &str, sans: &[String]) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    let (Ok(ca), Ok(cert)) = (
        CertificateDer::from_pem_slice(ca.as_bytes()),
        CertificateDer::from_pem_slice(cert.as_bytes()),
    ) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    sans.iter().all(|name| {
        ServerName::try_from(name.as_str()).is_ok_and(|server| {
            verifier
                .verify_server_cert(&cert, &[], &server, &[], UnixTime::now())
                .is_ok()
        })
    })
}

/// The CA's parameters. Deterministic, so an issuer rebuilt from them and the stored CA key signs
/// certificates that chain to the stored `ca.crt` (same subject, same key identifier).
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "switchyard-cp CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    p
}

/// A host name: dot-separated labels of letters, digits and `-` (a leading `*.` for wildcards).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn server_params(sans: &[String]) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) if !is_dns_name(s) => Err(TlsError::San(s.clone())),
            Err(_) => s
                .clone()
                .try_into()
                .map(rcgen::SanType::DnsName)
                .map_err(|_| TlsError::San(s.clone())),
        })
        .collect::<Result<_, _>>()?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "switchyard-cp");
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename) with file mode `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Pki {
    /// Loads the CA and serving certificate from `dir`, generating what is missing, and
    /// re-issuing the serving certificate when it does not cover exactly `sans`.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, TlsError> {
        let io = |p: &Path| {
            let (p, d) = (p.to_path_buf(), dir.to_path_buf());
            move |e| TlsError::Io(p, e, d)
        };
        let pem = |p: &Path| {
            let (p, d) = (p.to_path_buf(), dir.to_path_buf());
            move |e: String| TlsError::Pem(p, e, d)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (ca_crt, ca_key) = (dir.join(CA_CRT), dir.join(CA_KEY));
        let (srv_crt, srv_key, srv_sans) = (
            dir.join(SERVER_CRT),
            dir.join(SERVER_KEY),
            dir.join(SERVER_SANS),
        );
        let mut new_ca = false;
        let (ca_pem, ca_keypair) = if ca_crt.exists() && ca_key.exists() {
            let cert = std::fs::read_to_string(&ca_crt).map_err(io(&ca_crt))?;
            let key = std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?;
            CertificateDer::from_pem_slice(cert.as_bytes())
                .map_err(|e| pem(&ca_crt)(e.to_string()))?;
            let key = KeyPair::from_pem(&key).map_err(|e| pem(&ca_key)(e.to_string()))?;
            (cert, key)
        } else {
            let key = KeyPair::generate().map_err(|e| TlsError::Generate("CA key", e))?;
            let cert = ca_params()
                .self_signed(&key)
                .map_err(|e| TlsError::Generate("CA certificate", e))?;
            write_file(&ca_key, &key.serialize_pem(), 0o600).map_err(io(&ca_key))?;
            write_file(&ca_crt, &cert.pem(), 0o644).map_err(io(&ca_crt))?;
            tracing::info!(path = %ca_crt.display(), "generated a new CA");
            new_ca = true;
            (cert.pem(), key)
        };
        let wanted = sans.join("\n");
        let current = std::fs::read_to_string(&srv_sans).unwrap_or_default();
        let reuse = !new_ca
            && srv_key.exists()
            && current.trim() == wanted
            && std::fs::read_to_string(&srv_crt).is_ok_and(|crt| covers(&ca_pem, &crt, sans));
        let issuer = Issuer::new(ca_params(), &ca_keypair);
        if !reuse {
            let key = KeyPair::generate().map_err(|e| TlsError::Generate("server key", e))?;
            let cert = server_params(sans)?
                .signed_by(&key, &issuer)
                .map_err(|e| TlsError::Generate("serving certificate", e))?;
            write_file(&srv_key, &key.serialize_pem(), 0o600).map_err(io(&srv_key))?;
            write_file(&srv_crt, &cert.pem(), 0o644).map_err(io(&srv_crt))?;
            write_file(&srv_sans, &wanted, 0o644).map_err(io(&srv_sans))?;
            tracing::info!(path = %srv_crt.display(), sans = ?sans, "issued a serving certificate");
        }
        let (client_cert, client_key) =
            credentials::load_or_issue(dir, &issuer, new_ca, write_file)
                .map_err(|e| pem(&dir.join(credentials::CERT))(e))?;
        let kubelet_client = credentials::client_config(client_cert, client_key)?;
        let cert =
            CertificateDer::from_pem_file(&srv_crt).map_err(|e| pem(&srv_crt)(e.to_string()))?;
        let key =
            PrivateKeyDer::from_pem_file(&srv_key).map_err(|e| pem(&srv_key)(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Pki {
            ca_pem,
            server_config: Arc::new(config),
            kubelet_client,
            dir: dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(listen: &str, advertise: Option<&str>) -> ServerNames {
        ServerNames {
            listen: listen.parse().unwrap(),
            advertise: advertise.map(|a| a.parse().unwrap()),
            service_ip: "10.96.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn sans_cover_the_listen_address_loopback_the_service_names_and_extras_once() {
        let in_cluster = [
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let mut want = vec!["198.18.0.1", "127.0.0.1", "localhost"];
        want.extend(in_cluster);
        want.push("cp.lab");
        assert_eq!(
            sans(
                names("198.18.0.1", Some("198.18.0.1")),
                &["cp.lab".into(), "127.0.0.1".into()]
            ),
            want
        );
        let mut want = vec!["127.0.0.1", "localhost", "192.0.2.9"];
        want.extend(in_cluster);
        assert_eq!(sans(names("0.0.0.0", Some("192.0.2.9")), &[]), want);
    }

    #[test]
    fn a_certificate_lacking_a_required_name_is_reissued_by_the_same_ca() {
        let dir = std::env::temp_dir().join(format!("sy-cp-pki-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let old_names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let old = Pki::load_or_create(&dir, &old_names).unwrap();
        let old_crt = std::fs::read_to_string(dir.join(SERVER_CRT)).unwrap();
        let required = sans(names("127.0.0.1", None), &[]);
        assert!(!covers(&old.ca_pem, &old_crt, &required));
        // Even a SAN record claiming the new names does not save a certificate lacking them.
        std::fs::write(dir.join(SERVER_SANS), required.join("\n")).unwrap();
        let new = Pki::load_or_create(&dir, &required).unwrap();
        let new_crt = std::fs::read_to_string(dir.join(SERVER_CRT)).unwrap();
        assert_eq!(old.ca_pem, new.ca_pem, "the CA is kept");
        assert!(covers(&new.ca_pem, &new_crt, &required));
        assert!(!covers(&new.ca_pem, &new_crt, &["other.example".into()]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_ca_is_kept_and_the_serving_certificate_reissued_for_new_sans() {
        let dir = std::env::temp_dir().join(format!("sy-cp-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Pki::load_or_create(&dir, &["127.0.0.1".into()]).unwrap();
        let srv1 = std::fs::read_to_string(dir.join(SERVER_CRT)).unwrap();
        for key in [CA_KEY, SERVER_KEY] {
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} is private");
        }
        let b = Pki::load_or_create(&dir, &["127.0.0.1".into()]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem, "the CA survives a restart");
        assert_eq!(srv1, std::fs::read_to_string(dir.join(SERVER_CRT)).unwrap());
        let c = Pki::load_or_create(&dir, &["127.0.0.1".into(), "cp.lab".into()]).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(srv1, std::fs::read_to_string(dir.join(SERVER_CRT)).unwrap());
        assert!(matches!(
            Pki::load_or_create(&dir, &["not a name!".into()]),
            Err(TlsError::San(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
