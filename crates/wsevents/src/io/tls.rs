//! TLS for `wss://`, on rustls (with the *ring* provider): client configurations with
//! the Mozilla roots (webpki-roots), the operating system's roots, or a caller's own
//! CA; client certificates; server configurations from PEM files, optionally requiring
//! client certificates signed by a CA (mutual TLS); and the transport that is either
//! plain TCP or TLS over it (or TLS over TLS to an `https://` proxy).
//!
//! This module does not decide *when* TLS is used (the URL's scheme does, in
//! `io/client.rs`) and does not touch WebSocket bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream as ClientTls;

use crate::error::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that trusts the Mozilla root CAs (the `webpki-roots` crate),
/// the default for `wss://`.
///
/// ```
/// let config = wsevents::tls::webpki_client_config().unwrap();
/// assert!(config.alpn_protocols.is_empty());
/// ```
pub fn webpki_client_config() -> Result<Arc<ClientConfig>> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    client_config(roots)
}

/// A client configuration that trusts the operating system's root CAs.
///
/// ```no_run
/// let config = wsevents::tls::native_client_config().unwrap();
/// ```
pub fn native_client_config() -> Result<Arc<ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Tls(
            "no usable root certificate found on this system".into(),
        ));
    }
    client_config(roots)
}

/// A client configuration that trusts only the CA certificates in `pem` (for a private
/// CA, or a test's self-signed one).
///
/// ```
/// assert!(wsevents::tls::client_config_with_ca(b"not a certificate").is_err());
/// ```
pub fn client_config_with_ca(pem: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("bad CA PEM: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("no CA certificate in the PEM".into()));
    }
    client_config(roots)
}

/// A server configuration from a PEM certificate chain and a PEM private key.
///
/// ```
/// assert!(wsevents::tls::server_config_from_pem(b"", b"").is_err());
/// ```
pub fn server_config_from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>> {
    let (certs, key) = (certificates(cert_chain)?, private_key(key)?);
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A server configuration (PEM certificate chain and key) that requires every client
/// to present a certificate signed by one of the CA certificates in `client_ca_pem`
/// (mutual TLS, rustls' `WebPkiClientVerifier`). A client without one, or with
/// another CA's, fails the TLS handshake.
///
/// ```
/// # fn demo(cert: &[u8], key: &[u8], ca: &[u8]) -> wsevents::Result<()> {
/// let tls = wsevents::tls::server_config_with_client_ca(cert, key, ca)?;
/// let server = wsevents::Server::builder(wsevents::Acceptor::new()).tls(tls);
/// # let _ = server; Ok(()) }
/// assert!(wsevents::tls::server_config_with_client_ca(b"", b"", b"").is_err());
/// ```
pub fn server_config_with_client_ca(
    cert_chain: &[u8],
    key: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<ServerConfig>> {
    let (certs, key) = (certificates(cert_chain)?, private_key(key)?);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("bad client CA PEM: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("no client CA certificate in the PEM".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
        .build()
        .map_err(|e| Error::Tls(format!("client certificate verifier: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// A client certificate (PEM chain, PEM key), checked to parse and to match.
pub(crate) fn client_certificate(cert_chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>> {
    let certified =
        CertifiedKey::from_der(certificates(cert_chain)?, private_key(key)?, &provider())?;
    Ok(Arc::new(certified))
}

/// `config` presenting `certified` to servers that ask for a client certificate.
pub(crate) fn with_client_certificate(
    config: &ClientConfig,
    certified: Arc<CertifiedKey>,
) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.client_auth_cert_resolver = Arc::new(SingleCertAndKey::from(certified));
    Arc::new(config)
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in the PEM".into()));
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Tls(format!("bad key PEM: {e}")))
}

/// A TCP stream, with or without TLS: the transport of `ws://` and `wss://`.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://` (or `ws://` through an `https://` proxy: TLS to the proxy).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// `wss://` through an `https://` proxy: TLS to the target inside TLS to the proxy.
    TlsInTls(Box<ClientTls<ClientTls<TcpStream>>>),
}

impl MaybeTlsStream {
    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Tls(tls) => tls.get_ref().0,
            MaybeTlsStream::TlsInTls(tls) => tls.get_ref().0.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTlsStream::TlsInTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTlsStream::TlsInTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            MaybeTlsStream::TlsInTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
            MaybeTlsStream::TlsInTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTlsStream::TlsInTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTlsStream::TlsInTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
