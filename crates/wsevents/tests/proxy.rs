//! The client through real proxies on 127.0.0.1: tinyproxy for HTTP CONNECT (and, behind
//! a TLS front, as an `https://` proxy), microsocks for SOCKS5; `ws://` and `wss://`
//! (a test CA), with and without credentials, and each hop's failure as its typed
//! error. The binaries come from `scripts/proxies`.
#![allow(clippy::unwrap_used)]

#[path = "support/proxies.rs"]
mod proxies;

use std::net::SocketAddr;

use proxies::{Pki, echo, echo_server, free_port, microsocks, tinyproxy, tls_front};
use wsevents::{ClientBuilder, Error, MaybeTlsStream, Proxy, ProxyError, WebSocketStream};

/// Connect to `url` through `proxy`, trusting the test CA.
async fn through(
    url: &str,
    proxy: &str,
    pki: &Pki,
) -> Result<WebSocketStream<MaybeTlsStream>, Error> {
    ClientBuilder::new(url)
        .unwrap()
        .tls_config(pki.client_config())
        .proxy(Proxy::parse(proxy).unwrap())
        .connect()
        .await
}

/// The connection's TCP peer: the proxy's address when it went through the proxy.
fn peer(ws: &WebSocketStream<MaybeTlsStream>) -> SocketAddr {
    ws.get_ref().tcp().peer_addr().unwrap()
}

/// Echo servers, plain and TLS; their ports.
async fn servers(pki: &Pki) -> (u16, u16) {
    (
        echo_server(None).await,
        echo_server(Some(pki.server_config())).await,
    )
}

#[tokio::test]
async fn ws_and_wss_through_http_connect() {
    let pki = Pki::new();
    let (ws_port, wss_port) = servers(&pki).await;
    let proxy = tinyproxy(&[ws_port, wss_port], None);
    let via = format!("http://127.0.0.1:{}", proxy.port);

    let mut ws = through(&format!("ws://127.0.0.1:{ws_port}/"), &via, &pki)
        .await
        .unwrap();
    assert_eq!(peer(&ws), proxy.addr());
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Plain(_)));
    echo(&mut ws, "plain through CONNECT").await;

    for host in ["localhost", "127.0.0.1"] {
        let mut wss = through(&format!("wss://{host}:{wss_port}/"), &via, &pki)
            .await
            .unwrap();
        assert_eq!(peer(&wss), proxy.addr());
        assert!(matches!(wss.get_ref(), MaybeTlsStream::Tls(_)));
        echo(&mut wss, "TLS through CONNECT").await;
    }
}

#[tokio::test]
async fn http_connect_with_basic_auth() {
    let pki = Pki::new();
    let (ws_port, wss_port) = servers(&pki).await;
    let proxy = tinyproxy(&[ws_port, wss_port], Some(("user", "s3cret")));
    let port = proxy.port;

    let mut ws = through(
        &format!("ws://127.0.0.1:{ws_port}/"),
        &format!("http://user:s3cret@127.0.0.1:{port}"),
        &pki,
    )
    .await
    .unwrap();
    echo(&mut ws, "authenticated").await;
    let mut wss = through(
        &format!("wss://localhost:{wss_port}/"),
        &format!("http://user:s3cret@127.0.0.1:{port}"),
        &pki,
    )
    .await
    .unwrap();
    echo(&mut wss, "authenticated TLS").await;

    let url = format!("ws://127.0.0.1:{ws_port}/");
    match through(&url, &format!("http://127.0.0.1:{port}"), &pki).await {
        Err(Error::Proxy(ProxyError::AuthRequired {
            credentials_sent: false,
            proxy,
        })) => assert_eq!(proxy, format!("http://127.0.0.1:{port}")),
        other => panic!("expected AuthRequired without credentials, got {other:?}"),
    }
    match through(&url, &format!("http://user:wrong@127.0.0.1:{port}"), &pki).await {
        Err(Error::Proxy(ProxyError::AuthRequired {
            credentials_sent: true,
            proxy,
        })) => {
            assert_eq!(
                proxy,
                format!("http://user@127.0.0.1:{port}"),
                "no password"
            );
        }
        other => panic!("expected AuthRequired for a wrong password, got {other:?}"),
    }
}

#[tokio::test]
async fn http_connect_refusals_carry_the_status() {
    let pki = Pki::new();
    let ws_port = echo_server(None).await;
    let dead_port = free_port();
    let proxy = tinyproxy(&[ws_port, dead_port], None);
    let via = format!("http://127.0.0.1:{}", proxy.port);

    // A port tinyproxy may not CONNECT to: 403.
    let forbidden = free_port();
    match through(&format!("ws://127.0.0.1:{forbidden}/"), &via, &pki).await {
        Err(Error::Proxy(ProxyError::Refused { status: 403, .. })) => {}
        other => panic!("expected Refused 403, got {other:?}"),
    }
    // A target nobody listens on: tinyproxy's 500 "Unable to connect".
    let refused = through(&format!("ws://127.0.0.1:{dead_port}/"), &via, &pki).await;
    match refused {
        Err(Error::Proxy(ProxyError::Refused { status: 500, .. })) => {}
        other => panic!("expected Refused 500, got {other:?}"),
    }
}

#[tokio::test]
async fn https_proxy_then_tunnel_then_tls_to_the_target() {
    let pki = Pki::new();
    let (ws_port, wss_port) = servers(&pki).await;
    let proxy = tinyproxy(&[ws_port, wss_port], Some(("user", "pw")));
    let front = tls_front(proxy.addr(), pki.server_config()).await;
    let via = format!("https://user:pw@localhost:{front}");

    let mut ws = through(&format!("ws://127.0.0.1:{ws_port}/"), &via, &pki)
        .await
        .unwrap();
    assert_eq!(peer(&ws).port(), front);
    assert!(
        matches!(ws.get_ref(), MaybeTlsStream::Tls(_)),
        "TLS to the proxy"
    );
    echo(&mut ws, "ws inside TLS to the proxy").await;

    let mut wss = through(&format!("wss://localhost:{wss_port}/"), &via, &pki)
        .await
        .unwrap();
    assert!(matches!(wss.get_ref(), MaybeTlsStream::TlsInTls(_)));
    echo(&mut wss, "TLS inside TLS").await;

    // Credentials travel inside the TLS to the proxy, and are still checked.
    let wrong = format!("https://user:nope@localhost:{front}");
    let refused = through(&format!("ws://127.0.0.1:{ws_port}/"), &wrong, &pki).await;
    assert!(
        matches!(
            refused,
            Err(Error::Proxy(ProxyError::AuthRequired {
                credentials_sent: true,
                ..
            }))
        ),
        "{refused:?}"
    );

    // A proxy whose certificate the client does not trust (the proxy's own TLS
    // configuration, the Mozilla roots, wins over the builder's): the TLS hop fails.
    let untrusted = ClientBuilder::new(&format!("ws://127.0.0.1:{ws_port}/"))
        .unwrap()
        .tls_config(pki.client_config())
        .proxy(
            Proxy::parse(&via)
                .unwrap()
                .tls_config(wsevents::tls::webpki_client_config().unwrap()),
        )
        .connect()
        .await;
    match untrusted {
        Err(Error::Proxy(ProxyError::Tls { proxy, message })) => {
            assert_eq!(proxy, format!("https://user@localhost:{front}"));
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected the proxy's TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn ws_and_wss_through_socks5() {
    let pki = Pki::new();
    let (ws_port, wss_port) = servers(&pki).await;
    let proxy = microsocks(None);
    for scheme in ["socks5", "socks5h"] {
        let via = format!("{scheme}://127.0.0.1:{}", proxy.port);
        for host in ["127.0.0.1", "localhost"] {
            let mut ws = through(&format!("ws://{host}:{ws_port}/"), &via, &pki)
                .await
                .unwrap();
            assert_eq!(peer(&ws), proxy.addr());
            echo(&mut ws, "through SOCKS5").await;
            let mut wss = through(&format!("wss://{host}:{wss_port}/"), &via, &pki)
                .await
                .unwrap();
            assert_eq!(peer(&wss), proxy.addr());
            echo(&mut wss, "TLS through SOCKS5").await;
        }
    }
}

#[tokio::test]
async fn socks5h_leaves_dns_to_the_proxy_socks5_resolves_here() {
    let pki = Pki::new();
    let proxy = microsocks(None);
    // A name that resolves nowhere (RFC 6761): the resolver that fails tells who
    // resolved it. socks5h://: the proxy, which reports a SOCKS failure.
    let url = "ws://no-such-host.invalid:9/";
    let remote = through(url, &format!("socks5h://127.0.0.1:{}", proxy.port), &pki).await;
    assert!(
        matches!(remote, Err(Error::Proxy(ProxyError::Socks { .. }))),
        "{remote:?}"
    );
    // socks5://: this host's resolver fails before the proxy is asked.
    let local = through(url, &format!("socks5://127.0.0.1:{}", proxy.port), &pki).await;
    assert!(matches!(local, Err(Error::Io(_))), "{local:?}");
    // A target nobody listens on: the proxy's "connection refused" reply.
    let dead = format!("ws://127.0.0.1:{}/", free_port());
    match through(&dead, &format!("socks5://127.0.0.1:{}", proxy.port), &pki).await {
        Err(Error::Proxy(e @ ProxyError::Socks { reply: 0x05, .. })) => {
            assert!(e.to_string().contains("connection refused"), "{e}");
        }
        other => panic!("expected SOCKS reply 5, got {other:?}"),
    }
}

#[tokio::test]
async fn socks5_with_user_and_password() {
    let pki = Pki::new();
    let (ws_port, wss_port) = servers(&pki).await;
    let proxy = microsocks(Some(("user", "s3cret")));
    let port = proxy.port;

    let good = format!("socks5h://user:s3cret@127.0.0.1:{port}");
    let mut ws = through(&format!("ws://localhost:{ws_port}/"), &good, &pki)
        .await
        .unwrap();
    echo(&mut ws, "authenticated SOCKS5").await;
    let mut wss = through(&format!("wss://localhost:{wss_port}/"), &good, &pki)
        .await
        .unwrap();
    echo(&mut wss, "authenticated SOCKS5 TLS").await;

    let url = format!("ws://127.0.0.1:{ws_port}/");
    let none = through(&url, &format!("socks5://127.0.0.1:{port}"), &pki).await;
    assert!(
        matches!(
            none,
            Err(Error::Proxy(ProxyError::AuthRequired {
                credentials_sent: false,
                ..
            }))
        ),
        "{none:?}"
    );
    let wrong = through(&url, &format!("socks5://user:nope@127.0.0.1:{port}"), &pki).await;
    assert!(
        matches!(
            wrong,
            Err(Error::Proxy(ProxyError::AuthRequired {
                credentials_sent: true,
                ..
            }))
        ),
        "{wrong:?}"
    );
}

#[tokio::test]
async fn a_proxy_nobody_listens_on_is_a_connect_error_naming_it() {
    let pki = Pki::new();
    let ws_port = echo_server(None).await;
    let url = format!("ws://127.0.0.1:{ws_port}/");
    for scheme in ["http", "https", "socks5", "socks5h"] {
        let dead = format!("{scheme}://127.0.0.1:{}", free_port());
        match through(&url, &dead, &pki).await {
            Err(Error::Proxy(e @ ProxyError::Connect { .. })) => {
                assert!(e.to_string().contains(&dead), "{e}");
                let ProxyError::Connect { source, .. } = e else {
                    unreachable!()
                };
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            other => panic!("{scheme}: expected a connect error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_connect_timeout_covers_a_proxy_that_never_answers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    for scheme in ["http", "socks5"] {
        let started = std::time::Instant::now();
        let result = ClientBuilder::new("ws://127.0.0.1:9/")
            .unwrap()
            .proxy(Proxy::parse(&format!("{scheme}://127.0.0.1:{port}")).unwrap())
            .connect_timeout(std::time::Duration::from_millis(300))
            .connect()
            .await;
        match result {
            Err(Error::Timeout(why)) => assert!(
                why.contains(&format!("through the proxy {scheme}://127.0.0.1:{port}")),
                "{why}"
            ),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[tokio::test]
async fn the_environment_picks_a_real_proxy_and_no_proxy_skips_it() {
    let pki = Pki::new();
    let ws_port = echo_server(None).await;
    let proxy = microsocks(None);
    let all_proxy = format!("socks5h://127.0.0.1:{}", proxy.port);
    let url = format!("ws://127.0.0.1:{ws_port}/");
    let env = |no_proxy: &'static str| {
        let all_proxy = all_proxy.clone();
        move |name: &str| match name {
            "ALL_PROXY" => Some(all_proxy.clone()),
            "NO_PROXY" => Some(no_proxy.to_string()),
            _ => None,
        }
    };

    let chosen = Proxy::from_vars(&url, env("")).unwrap().unwrap();
    assert_eq!(chosen, Proxy::parse(&all_proxy).unwrap());
    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .proxy(chosen)
        .connect()
        .await
        .unwrap();
    assert_eq!(peer(&ws), proxy.addr());
    echo(&mut ws, "from ALL_PROXY").await;

    for listed in ["127.0.0.1", "127.0.0.0/8", "*", "example.com,127.0.0.1"] {
        assert_eq!(
            Proxy::from_vars(&url, env(listed)).unwrap(),
            None,
            "{listed}"
        );
    }
    assert!(
        Proxy::from_vars(&url, env("localhost")).unwrap().is_some(),
        "a name does not match an address"
    );
    let _ = pki;
}

/// A scripted peer on the proxy's port (a hostile proxy, not a stand-in for a real
/// one): reads what the client sends, answers `reply` once, then holds the connection
/// open (or, with `then_close`, closes it).
async fn hostile_proxy(reply: Vec<u8>, then_close: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(&reply).await;
                if !then_close {
                    let _ = tcp.read(&mut buf).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn hostile_proxy_replies_are_bad_replies_not_panics() {
    let mut endless_head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while endless_head.len() <= wsevents::MAX_PROXY_REPLY_HEAD {
        // Long lines: the head's size runs out before the header count does.
        endless_head.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("http", endless_head, false, "over 16384 bytes"),
        (
            "http",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            false,
            "not an HTTP reply",
        ),
        (
            "http",
            b"HTTP/1.1 200 OK\r\n".to_vec(),
            true,
            "closed the connection",
        ),
        (
            "http",
            b"HTTP/1.1 200 OK\r\n\r\nearly bytes".to_vec(),
            false,
            "bytes arrived after the reply",
        ),
        ("socks5", b"\x04\x5a".to_vec(), false, "not a SOCKS5 reply"),
        ("socks5", b"\x05\x02".to_vec(), false, "not offered"),
        (
            "socks5",
            b"\x05\x00\x05\x00\x00\x07".to_vec(),
            false,
            "address type",
        ),
    ];
    for (scheme, reply, then_close, expected) in cases {
        let port = hostile_proxy(reply, then_close).await;
        let result = ClientBuilder::new("ws://127.0.0.1:9/")
            .unwrap()
            .proxy(Proxy::parse(&format!("{scheme}://127.0.0.1:{port}")).unwrap())
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await;
        match result {
            Err(Error::Proxy(e @ ProxyError::BadReply { .. })) => {
                assert!(e.to_string().contains(expected), "{expected:?} in {e}");
            }
            other => panic!("{expected}: expected BadReply, got {other:?}"),
        }
    }
    // A SOCKS5 reply cut short is an I/O error of the proxy hop.
    let port = hostile_proxy(b"\x05\x00\x05\x00".to_vec(), true).await;
    let result = ClientBuilder::new("ws://127.0.0.1:9/")
        .unwrap()
        .proxy(Proxy::parse(&format!("socks5://127.0.0.1:{port}")).unwrap())
        .connect()
        .await;
    assert!(
        matches!(result, Err(Error::Proxy(ProxyError::Io { .. }))),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_event_api_goes_through_the_proxy_too() {
    use wsevents::{Data, Event, WebSocket};
    let pki = Pki::new();
    let wss_port = echo_server(Some(pki.server_config())).await;
    let proxy = microsocks(Some(("user", "pw")));
    let builder = |password: &str| {
        ClientBuilder::new(&format!("wss://localhost:{wss_port}/"))
            .unwrap()
            .tls_config(pki.client_config())
            .proxy(
                Proxy::parse(&format!(
                    "socks5h://user:{password}@127.0.0.1:{}",
                    proxy.port
                ))
                .unwrap(),
            )
    };

    let ws = WebSocket::connecting(builder("pw"));
    let next = || async {
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.next_event())
            .await
            .expect("an event within 10 s")
    };
    assert!(matches!(next().await, Some(Event::Open)));
    ws.send("through SOCKS5, by event").unwrap();
    match next().await {
        Some(Event::Message(m)) => {
            assert_eq!(m.data, Data::Text("through SOCKS5, by event".into()));
        }
        other => panic!("expected the echo, got {other:?}"),
    }

    let refused = WebSocket::connecting(builder("wrong"));
    match refused.next_event().await {
        Some(Event::Error(e)) => assert!(
            matches!(
                e.error(),
                Some(Error::Proxy(ProxyError::AuthRequired {
                    credentials_sent: true,
                    ..
                }))
            ),
            "{e:?}"
        ),
        other => panic!("expected an error event, got {other:?}"),
    }
    match refused.next_event().await {
        Some(Event::Close(close)) => assert_eq!((close.code, close.was_clean), (1006, false)),
        other => panic!("expected the close event, got {other:?}"),
    }
}
