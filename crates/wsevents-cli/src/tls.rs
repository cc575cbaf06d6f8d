//! TLS options of the command line: the server's certificate (`serve --tls-cert
//! --tls-key`) and the clients it requires (`--client-ca`), the client's trust
//! (`connect`/`bench` `--ca`, `--insecure`) and its own certificate (`connect --cert
//! --key`).
//!
//! The library builds the configurations from PEM; this module reads the files, with
//! their names in the errors, and adds the one thing a library should not offer
//! lightly: `--insecure`, a verifier that accepts any certificate (but still checks
//! the handshake signatures, so the connection is encrypted, just not authenticated),
//! like `curl --insecure`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::Result;

/// The server configuration from a PEM certificate chain and key file.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    Ok(wsevents::tls::server_config_from_pem(&cert_pem, &key_pem)?)
}

/// `connect --cert FILE --key FILE`: the PEM client certificate chain and its key, read.
pub(crate) fn client_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((read(cert, "client certificate")?, read(key, "client key")?))
}

/// `serve --client-ca FILE`: the server configuration that requires a client
/// certificate signed by a CA in FILE (mutual TLS).
pub(crate) fn server_config_with_client_ca(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>> {
    let (cert_pem, key_pem) = (read(cert, "certificate")?, read(key, "key")?);
    let ca_pem = read(client_ca, "client CA certificate")?;
    Ok(wsevents::tls::server_config_with_client_ca(
        &cert_pem, &key_pem, &ca_pem,
    )?)
}

/// The client configuration the flags ask for: `None` for the default (the Mozilla
/// roots), the CA in `ca`, or no verification at all with `insecure`.
pub(crate) fn client_config(
    ca: Option<&Path>,
    insecure: bool,
) -> Result<Option<Arc<ClientConfig>>> {
    if insecure {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        return Ok(Some(Arc::new(config)));
    }
    match ca {
        Some(path) => {
            let pem = read(path, "CA certificate")?;
            Ok(Some(wsevents::tls::client_config_with_ca(&pem)?))
        }
        None => Ok(None),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()).into())
}

/// `--insecure`: any certificate is taken as valid; signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
