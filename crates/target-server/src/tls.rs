//! TLS to targets, through rustls (ring provider). `disable` sends nothing encrypted;
//! `require` encrypts without checking the server's certificate (libpq's meaning);
//! `verify-full` checks the certificate chain against the CA given at registration and the
//! host name (or IP address) pgplane connects to. Over TLS, channel binding is required: the
//! SCRAM exchange is bound to the TLS session (`tls-server-end-point`, the hash of the
//! certificate the server presented), so a server or relay that asks for anything else, or
//! presents another certificate than the real server's, gets nothing usable.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::TargetError;

/// The sslmode values pgplane accepts for target connections.
pub const SUPPORTED_SSLMODES: &[&str] = &["disable", "require", "verify-full"];

/// What tokio-postgres is told to do for an sslmode.
pub(crate) fn ssl_mode(sslmode: &str) -> SslMode {
    match sslmode {
        "disable" => SslMode::Disable,
        _ => SslMode::Require,
    }
}

/// Channel binding for an sslmode: required over TLS, so that tokio-postgres refuses a server
/// asking for a cleartext or MD5 password, or for SCRAM without binding, before sending anything
/// (tokio-postgres-rustls gives the `tls-server-end-point` binding).
pub(crate) fn channel_binding(sslmode: &str) -> ChannelBinding {
    match sslmode {
        "disable" => ChannelBinding::Disable,
        _ => ChannelBinding::Require,
    }
}

/// The rustls connector for an sslmode (and, for `verify-full`, the CA certificate in PEM).
pub fn connector(sslmode: &str, ca_pem: Option<&str>) -> Result<MakeRustlsConnect, TargetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Tls(e.to_string()))?;
    let config = match sslmode {
        "verify-full" => {
            let pem = ca_pem.filter(|p| !p.trim().is_empty()).ok_or_else(|| {
                TargetError::Tls("sslmode verify-full needs the CA certificate (ca_certificate, PEM)".into())
            })?;
            builder.with_root_certificates(root_store(pem)?).with_no_client_auth()
        }
        "require" => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        _ => builder.with_root_certificates(RootCertStore::empty()).with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of a PEM bundle, as trust anchors.
fn root_store(pem: &str) -> Result<RootCertStore, TargetError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TargetError::Tls(format!("the CA certificate is not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| TargetError::Tls(format!("the CA certificate is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TargetError::Tls("the CA certificate holds no certificate".into()));
    }
    Ok(roots)
}

/// `sslmode=require`: encryption without authentication of the server, as libpq does it.
/// Signatures are still checked, so the session is encrypted to whoever holds the key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_needs_a_usable_ca() {
        assert!(connector("verify-full", None).is_err());
        assert!(connector("verify-full", Some("not a certificate")).is_err());
        assert!(connector("require", None).is_ok());
        assert!(connector("disable", None).is_ok());
    }
}
