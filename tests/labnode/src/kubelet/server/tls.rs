//! TLS of the node runtime's API, as the kubelet's: a serving certificate made at start (the
//! kubelet's self-signed one when it is given no `--tls-cert-file`) and client certificates
//! verified against `--client-ca-file`.
//!
//! Invariant: a connection either presents a client certificate that chains to the client CA
//! and is meant for client authentication (checked during the handshake, which fails otherwise),
//! or none at all; [`Peer::authenticated`] tells the two apart, and the API answers every request
//! of the latter with 401 ([`super::require_client_certificate`]).
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

/// Errors preparing the API's TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The client CA file could not be read or holds no certificate.
    #[error("--client-ca-file {path}: {message}")]
    ClientCa {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Generating the serving certificate failed.
    #[error("generating the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// It presented a client certificate issued by the client CA.
    pub authenticated: bool,
}

/// The server configuration: a self-signed certificate for `names` (IP addresses or DNS names)
/// and, with `client_ca`, client certificates verified against it (optional in the handshake).
/// Without a client CA no client can authenticate.
pub fn server_config(
    names: &[String],
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut params = rcgen::CertificateParams::new(
        names
            .iter()
            .filter(|n| n.parse::<IpAddr>().is_err())
            .cloned()
            .collect::<Vec<_>>(),
    )?;
    params.subject_alt_names.extend(
        names
            .iter()
            .filter_map(|n| n.parse::<IpAddr>().ok())
            .map(rcgen::SanType::IpAddress),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard-labnode");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(path) => {
            let bad = |message: String| TlsError::ClientCa {
                path: path.display().to_string(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = builder.with_single_cert(vec![cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The peer of an accepted TLS connection.
pub fn peer(conn: &rustls::ServerConnection) -> Peer {
    Peer {
        authenticated: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
    }
}
