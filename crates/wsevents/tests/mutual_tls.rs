//! Mutual TLS over 127.0.0.1: a server built with
//! `tls::server_config_with_client_ca` accepts a client whose certificate its CA
//! signed, and refuses one without a certificate or with another CA's, which the
//! client sees as `Error::Tls`.
#![allow(clippy::unwrap_used)]

#[path = "support/proxies.rs"]
mod proxies;

use proxies::{Pki, echo, echo_server, tinyproxy, tls_front_recording};
use rustls_pki_types::pem::PemObject;
use wsevents::{ClientBuilder, Error};

#[tokio::test]
async fn a_server_requiring_client_certificates_checks_them() {
    let server_pki = Pki::new();
    let client_pki = Pki::new();
    let tls = wsevents::tls::server_config_with_client_ca(
        server_pki.cert_pem.as_bytes(),
        server_pki.key_pem.as_bytes(),
        client_pki.ca_pem.as_bytes(),
    )
    .unwrap();
    let port = echo_server(Some(tls)).await;
    let url = format!("wss://localhost:{port}/");
    let (cert, key) = client_pki.sign(vec!["client.example".into()]);

    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .tls_config(server_pki.client_config())
        .client_certificate(cert.as_bytes(), key.as_bytes())
        .unwrap()
        .connect()
        .await
        .unwrap();
    echo(&mut ws, "with a client certificate").await;

    let without = ClientBuilder::new(&url)
        .unwrap()
        .tls_config(server_pki.client_config())
        .connect()
        .await;
    match without {
        Err(Error::Tls(why)) => assert!(why.contains("CertificateRequired"), "{why}"),
        other => panic!("expected a TLS error without a certificate, got {other:?}"),
    }

    // A certificate from a CA the server does not trust.
    let (other_cert, other_key) = Pki::new().sign(vec!["client.example".into()]);
    let untrusted = ClientBuilder::new(&url)
        .unwrap()
        .tls_config(server_pki.client_config())
        .client_certificate(other_cert.as_bytes(), other_key.as_bytes())
        .unwrap()
        .connect()
        .await;
    assert!(matches!(untrusted, Err(Error::Tls(_))), "{untrusted:?}");
}

#[test]
fn a_client_certificate_must_parse_and_match_its_key() {
    let pki = Pki::new();
    let (_, other_key) = pki.sign(vec!["other".into()]);
    let builder = || ClientBuilder::new("wss://localhost/").unwrap();
    assert!(
        builder()
            .client_certificate(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
            .is_ok()
    );
    for (cert, key) in [
        (b"junk".as_slice(), pki.key_pem.as_bytes()),
        (pki.cert_pem.as_bytes(), b"junk".as_slice()),
        (pki.cert_pem.as_bytes(), other_key.as_bytes()),
    ] {
        let result = builder().client_certificate(cert, key);
        assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
    }
    assert!(matches!(
        wsevents::tls::server_config_with_client_ca(
            pki.cert_pem.as_bytes(),
            pki.key_pem.as_bytes(),
            b"no CA here"
        ),
        Err(Error::Tls(_))
    ));
}

#[tokio::test]
async fn the_event_api_presents_the_client_certificate() {
    use wsevents::{Event, WebSocket};
    let server_pki = Pki::new();
    let client_pki = Pki::new();
    let tls = wsevents::tls::server_config_with_client_ca(
        server_pki.cert_pem.as_bytes(),
        server_pki.key_pem.as_bytes(),
        client_pki.ca_pem.as_bytes(),
    )
    .unwrap();
    let port = echo_server(Some(tls)).await;
    let builder = || {
        ClientBuilder::new(&format!("wss://localhost:{port}/"))
            .unwrap()
            .tls_config(server_pki.client_config())
    };
    let (cert, key) = client_pki.sign(vec!["client.example".into()]);
    let ws = WebSocket::connecting(
        builder()
            .client_certificate(cert.as_bytes(), key.as_bytes())
            .unwrap(),
    );
    assert!(matches!(ws.next_event().await, Some(Event::Open)));

    // Without one: an error event, then close 1006. (The stream API reports
    // Error::Tls; the event API's error is still the core's UnexpectedEof, its driver's
    // I/O error, which carries the TLS alert, not consulted yet.)
    let refused = WebSocket::connecting(builder());
    assert!(
        matches!(refused.next_event().await, Some(Event::Error(_))),
        "an error event"
    );
    match refused.next_event().await {
        Some(Event::Close(close)) => assert_eq!((close.code, close.was_clean), (1006, false)),
        other => panic!("expected the close event, got {other:?}"),
    }
}

#[tokio::test]
async fn the_client_certificate_goes_to_the_server_not_to_an_https_proxy() {
    let server_pki = Pki::new();
    let client_pki = Pki::new();
    let tls = wsevents::tls::server_config_with_client_ca(
        server_pki.cert_pem.as_bytes(),
        server_pki.key_pem.as_bytes(),
        client_pki.ca_pem.as_bytes(),
    )
    .unwrap();
    let port = echo_server(Some(tls)).await;
    let proxy = tinyproxy(&[port], None);
    // The proxy's TLS front asks for a client certificate but does not require one.
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(client_pki.ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.into(),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let front_tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_client_cert_verifier(verifier)
    .with_single_cert(
        rustls_pki_types::CertificateDer::pem_slice_iter(server_pki.cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect(),
        rustls_pki_types::PrivateKeyDer::from_pem_slice(server_pki.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let (front, presented) = tls_front_recording(proxy.addr(), front_tls.into()).await;

    let (cert, key) = client_pki.sign(vec!["client.example".into()]);
    let mut ws = ClientBuilder::new(&format!("wss://localhost:{port}/"))
        .unwrap()
        .tls_config(server_pki.client_config())
        .client_certificate(cert.as_bytes(), key.as_bytes())
        .unwrap()
        .proxy(wsevents::Proxy::parse(&format!("https://localhost:{front}")).unwrap())
        .connect()
        .await
        .unwrap();
    echo(&mut ws, "mutual TLS inside TLS to the proxy").await;
    assert_eq!(
        *presented.lock().unwrap(),
        [false],
        "no certificate to the proxy"
    );
}
