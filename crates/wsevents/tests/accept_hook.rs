//! The accept hook, subprotocol selection and per-route acceptors on a `Server` over
//! 127.0.0.1, and the request and peer address every server connection keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsevents::{Accept, Acceptor, ClientBuilder, CloseCode, Config, Message, Server};

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

async fn raw_head(addr: SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a head: {head:?}");
        head.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A server whose hook checks a token in the query (slowly: it is async), and whose
/// connections say what they know of their request, then echo.
async fn hooked_server() -> SocketAddr {
    let acceptor = Acceptor::new()
        .protocols(&["v1", "v2"])
        .on_request(|request| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let peer_known = request.peer_addr().is_some_and(|a| a.ip().is_loopback());
            match request.query() {
                Some("token=secret") if peer_known => Ok(Accept::new()
                    .header(SET_COOKIE, HeaderValue::from_static("a=1"))
                    .header(SET_COOKIE, HeaderValue::from_static("b=2"))),
                Some("token=v2") => Ok(Accept::new().protocol("v2")),
                Some("token=wrong-protocol") => Ok(Accept::new().protocol("v9")),
                _ => Err(http::Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(WWW_AUTHENTICATE, "Bearer")
                    .header("content-type", "application/json")
                    .body("{\"error\":\"token\"}".to_owned())
                    .unwrap()),
            }
        });
    let server = Server::builder(acceptor).bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            tokio::spawn(async move {
                let request = ws.request().unwrap();
                let greeting = format!(
                    "{} user={} peer={}",
                    request.uri(),
                    wsevents::cookie(request.headers(), "user").unwrap_or("-"),
                    ws.peer_addr().is_some_and(|a| a.ip().is_loopback()),
                );
                let echo = ws.clone();
                ws.on_open(move |_| {
                    let _ = echo.send(greeting.as_str());
                });
                ws.run().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_async_hook_accepts_with_headers_and_the_connection_keeps_its_request() {
    let addr = hooked_server().await;
    let mut ws = ClientBuilder::new(&format!("ws://{addr}/room?token=secret"))
        .unwrap()
        .protocols(&["v2", "v1"])
        .unwrap()
        .header("Cookie", "user=ada")
        .connect()
        .await
        .unwrap();
    // No choice from the hook: the first offered that the server speaks.
    assert_eq!(ws.protocol(), Some("v2"));
    let response = ws.response().unwrap();
    let cookies: Vec<_> = response.headers().get_all(SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    match ws.next().await {
        Some(Ok(Message::Text(text))) => {
            assert_eq!(text.as_str(), "/room?token=secret user=ada peer=true");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_hook_chooses_the_protocol_or_refuses_with_its_own_response() {
    let addr = hooked_server().await;
    let ws = ClientBuilder::new(&format!("ws://{addr}/?token=v2"))
        .unwrap()
        .protocols(&["v1", "v2"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        ws.protocol(),
        Some("v2"),
        "the hook's choice over the order"
    );

    let head = raw_head(
        addr,
        &format!("GET /?token=no HTTP/1.1\r\nHost: h\r\n{UPGRADE}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert!(head.contains("www-authenticate: Bearer\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(!head.contains("text/plain"), "one content type: {head}");

    // A hook that picks a protocol the client did not offer is the server's bug: 500.
    let head = raw_head(
        addr,
        &format!(
            "GET /?token=wrong-protocol HTTP/1.1\r\nHost: h\r\n{UPGRADE}Sec-WebSocket-Protocol: v1\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
}

#[tokio::test]
async fn select_protocol_sees_the_offers_and_the_request() {
    let acceptor = Acceptor::new().select_protocol(|offered, request| {
        let newest = offered.iter().filter(|p| p.starts_with("game.v")).max();
        match request.uri().query() {
            Some("legacy") => offered.first().cloned(),
            _ => newest.cloned(),
        }
    });
    let server = Server::builder(acceptor).bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some((ws, _)) = server.accept_stream().await {
            drop(ws);
        }
    });
    let connect = |query: &'static str| async move {
        ClientBuilder::new(&format!("ws://{addr}/{query}"))
            .unwrap()
            .protocols(&["game.v1", "game.v3", "game.v2"])
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    assert_eq!(connect("").await.protocol(), Some("game.v3"));
    assert_eq!(connect("?legacy").await.protocol(), Some("game.v1"));
}

#[tokio::test]
async fn each_route_runs_with_its_own_acceptor() {
    let acceptor = Acceptor::new()
        .at(
            "/small",
            Acceptor::new()
                .config(Config {
                    max_message_size: 1024,
                    ..Config::default()
                })
                .deflate(None)
                .protocols(&["small"]),
        )
        .at(
            "/private",
            Acceptor::new().allow_origin(|origin| origin == Some("https://ok.example")),
        )
        .route("/big");
    let server = Server::builder(acceptor).bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let connect = |path: &'static str| {
        ClientBuilder::new(&format!("ws://{addr}{path}"))
            .unwrap()
            .protocols(&["small"])
            .unwrap()
            .connect()
    };

    // /small: its protocol, no deflate, and its 1 KiB limit (1009 past it).
    let mut small = connect("/small").await.unwrap();
    assert_eq!(small.protocol(), Some("small"));
    assert_eq!(small.extensions(), "");
    small.send(Message::binary(vec![7u8; 2048])).await.unwrap();
    assert!(small.next().await.is_none_or(|m| m.is_err()));
    let closure = small.closure().unwrap();
    assert_eq!(closure.code(), CloseCode::MESSAGE_TOO_BIG);

    // /big: the top acceptor (deflate on, default limits, no protocol of its own).
    let mut big = connect("/big").await.unwrap();
    assert_eq!(big.protocol(), None);
    assert!(big.extensions().starts_with("permessage-deflate"));
    big.send(Message::binary(vec![7u8; 2048])).await.unwrap();
    assert!(matches!(big.next().await, Some(Ok(Message::Binary(b))) if b.len() == 2048));

    // /private: its origin rule; elsewhere: 404.
    let head = raw_head(
        addr,
        &format!(
            "GET /private HTTP/1.1\r\nHost: h\r\n{UPGRADE}Origin: https://evil.example\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let ok = ClientBuilder::new(&format!("ws://{addr}/private"))
        .unwrap()
        .origin("https://ok.example")
        .connect()
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let head = raw_head(
        addr,
        &format!("GET /elsewhere HTTP/1.1\r\nHost: h\r\n{UPGRADE}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test]
async fn stream_connections_keep_request_and_peer() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr();
    let client = tokio::spawn(async move {
        ClientBuilder::new(&format!("ws://{addr}/path?q=1"))
            .unwrap()
            .header("X-Trace", "abc")
            .connect()
            .await
            .unwrap()
    });
    let (ws, request) = server.accept_stream().await.unwrap();
    let client = client.await.unwrap();
    assert_eq!(request.uri(), "/path?q=1");
    assert_eq!(ws.request().unwrap().headers()["x-trace"], "abc");
    assert_eq!(
        ws.peer_addr(),
        Some(client.get_ref().tcp().local_addr().unwrap())
    );
    assert!(client.request().is_none(), "clients have no server request");
}
