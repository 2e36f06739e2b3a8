//! The API server's identity towards kubelets: a client certificate issued by the server's CA
//! (`<data-dir>/pki/kubelet-client.crt`, key `kubelet-client.key`, mode 0600), user
//! `kube-apiserver-kubelet-client` in group `system:masters` as kubeadm names it. Kubelets trust
//! it by trusting the CA (`--client-ca-file <data-dir>/pki/ca.crt`).
//!
//! Invariant: the certificate on disk is issued by the current CA — it is issued anew whenever
//! the CA is new or the files are missing or unreadable.
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The client certificate's file.
pub const CERT: &str = "kubelet-client.crt";
/// Its key's file.
pub const KEY: &str = "kubelet-client.key";
/// The user the certificate names.
pub const USER: &str = "kube-apiserver-kubelet-client";

/// The certificate's parameters.
fn params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, USER);
    p.distinguished_name
        .push(DnType::OrganizationName, crate::authz::MASTERS);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    p
}

/// Issues (when `renew`, or when missing) and loads the client certificate in `dir`, signed by
/// `issuer`; `write` stores a file with a mode.
pub fn load_or_issue(
    dir: &Path,
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    renew: bool,
    write: impl Fn(&Path, &str, u32) -> std::io::Result<()>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let (crt, key) = (dir.join(CERT), dir.join(KEY));
    let load = || -> Option<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
        Some((
            CertificateDer::from_pem_file(&crt).ok()?,
            PrivateKeyDer::from_pem_file(&key).ok()?,
        ))
    };
    if !renew {
        if let Some((c, k)) = load() {
            return Ok((vec![c], k));
        }
    }
    let pair = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params()
        .signed_by(&pair, issuer)
        .map_err(|e| e.to_string())?;
    write(&key, &pair.serialize_pem(), 0o600).map_err(|e| format!("{}: {e}", key.display()))?;
    write(&crt, &cert.pem(), 0o644).map_err(|e| format!("{}: {e}", crt.display()))?;
    tracing::info!(path = %crt.display(), "issued the kubelet client certificate");
    let (c, k) = load().ok_or_else(|| format!("{} cannot be read back", crt.display()))?;
    Ok((vec![c], k))
}

/// A TLS client configuration presenting `cert`/`key` and accepting any kubelet serving
/// certificate whose handshake signatures verify.
pub fn client_config(
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKubelet(provider)))
        .with_client_auth_cert(cert, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts every serving certificate, as kube-apiserver does without
/// `--kubelet-certificate-authority`; the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyKubelet(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyKubelet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
