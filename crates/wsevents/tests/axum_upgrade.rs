//! wsevents inside a real axum 0.8 app (`axum::serve` on 127.0.0.1), driven by real
//! clients: wsevents' own over HTTP/1.1, raw bytes for the refusals, and hyper's
//! HTTP/2 client with RFC 8441's extended CONNECT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use futures_util::{SinkExt, StreamExt};
use http::header::{SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsevents::axum::WebSocketUpgrade;
use wsevents::{Accept, Acceptor, ClientBuilder, Config, DeflateConfig, Message, Role};

/// The policy of `/chat`: subprotocol `chat`, deflate with a 10-bit server window,
/// and a hook that wants the cookie `session=good` (else 401 with
/// `WWW-Authenticate`) and sets another one.
fn chat_acceptor() -> Acceptor {
    Acceptor::new()
        .protocols(&["chat"])
        .deflate(Some(DeflateConfig {
            server_max_window_bits: Some(10),
            ..DeflateConfig::default()
        }))
        .on_request(|request| async move {
            match request.cookie("session") {
                Some("good") => {
                    Ok(Accept::new()
                        .header(SET_COOKIE, HeaderValue::from_static("seen=1; HttpOnly")))
                }
                _ => Err(http::Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(WWW_AUTHENTICATE, "Bearer realm=\"chat\"")
                    .body("log in first\n".to_owned())
                    .unwrap()),
            }
        })
}

/// `/chat`: greets with what the connection knows of its request (the cookie, the
/// HTTP version, whether the peer's address is known), then echoes. Its policy is the
/// acceptor the route's layer put in the request (`Extension`), negotiated during the
/// extraction; the handler is written as axum's own are.
async fn chat(ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.on_upgrade(|socket| async move {
        let request = socket.request().expect("a server socket keeps its request");
        let greeting = format!(
            "session={} version={:?} peer={}",
            wsevents::cookie(request.headers(), "session").unwrap_or("-"),
            request.version(),
            socket.peer_addr().is_some_and(|a| a.ip().is_loopback()),
        );
        let echo = socket.clone();
        socket.on_open(move |_| {
            let _ = echo.send(greeting.as_str());
        });
        let echo = socket.clone();
        socket.on_message(move |e| {
            let _ = echo.send(&e.data);
        });
        socket.run().await;
    })
}

/// `/stream`: the stream API, echoing.
async fn stream(ws: WebSocketUpgrade) -> Response {
    ws.protocols(["echo"])
        .on_upgrade_stream(|mut ws| async move {
            while let Some(Ok(message)) = ws.next().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        })
}

/// `/own`: a handler that picks its acceptor itself (the hook runs then).
async fn own(ws: WebSocketUpgrade) -> Response {
    ws.acceptor(chat_acceptor())
        .await
        .on_upgrade(|socket| async move {
            let _ = socket.send(format!("protocol={}", socket.protocol()));
            socket.run().await;
        })
}

async fn start() -> SocketAddr {
    let app = Router::new()
        .route("/chat", any(chat).layer(Extension(chat_acceptor())))
        .route("/stream", any(stream))
        .route("/own", any(own))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn next_text(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    match ws.next().await {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test]
async fn http1_upgrade_negotiates_deflate_parameters_protocol_and_reads_the_cookie() {
    let addr = start().await;
    let mut ws = ClientBuilder::new(&format!("ws://{addr}/chat"))
        .unwrap()
        .protocols(&["superchat", "chat"])
        .unwrap()
        .header("Cookie", "theme=dark; session=good")
        .deflate(Some(DeflateConfig {
            client_max_window_bits: Some(12),
            ..DeflateConfig::default()
        }))
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    let extensions = ws.extensions().to_owned();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    assert!(
        extensions.contains("server_max_window_bits=10"),
        "{extensions}"
    );
    assert!(
        extensions.contains("client_max_window_bits=12"),
        "{extensions}"
    );
    let response = ws.response().unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[SET_COOKIE], "seen=1; HttpOnly");

    assert_eq!(
        next_text(&mut ws).await,
        "session=good version=HTTP/1.1 peer=true"
    );
    // Compressible enough that deflate is exercised both ways.
    let long = "wsevents inside axum ".repeat(200);
    ws.send(Message::text(long.clone())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, long);
    ws.close(wsevents::CloseCode::NORMAL, "bye").await.unwrap();
}

/// Reads a response head from a raw socket.
async fn raw_response(addr: SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a head: {response:?}");
        response.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[tokio::test]
async fn the_hook_refuses_with_401_and_www_authenticate() {
    let addr = start().await;
    let head = raw_response(
        addr,
        &format!("GET /chat HTTP/1.1\r\nHost: {addr}\r\n{UPGRADE}Cookie: session=bad\r\n\r\n"),
    )
    .await
    .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(
        head.contains("www-authenticate: bearer realm=\"chat\"\r\n"),
        "{head}"
    );

    // wsevents' client sees the status as a typed error.
    let refused = ClientBuilder::new(&format!("ws://{addr}/chat"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            wsevents::Error::Handshake(wsevents_proto::HandshakeError::UnexpectedStatus {
                status: 401,
                ..
            })
        ),
        "{refused:?}"
    );
}

/// A handler that negotiates with an acceptor of its own (`ws.acceptor(..).await`):
/// its hook runs then, its refusal is the answer, its subprotocol the choice.
#[tokio::test]
async fn a_handlers_own_acceptor_decides() {
    let addr = start().await;
    let ws = ClientBuilder::new(&format!("ws://{addr}/own"))
        .unwrap()
        .protocols(&["chat"])
        .unwrap()
        .header("Cookie", "session=good")
        .connect()
        .await;
    let mut ws = ws.unwrap();
    assert_eq!(next_text(&mut ws).await, "protocol=chat");
    ws.close(wsevents::CloseCode::NORMAL, "").await.unwrap();
    let head = raw_response(
        addr,
        &format!("GET /own HTTP/1.1\r\nHost: {addr}\r\n{UPGRADE}Cookie: session=bad\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// `on_failed_upgrade`: a client that resets its connection once the handler has its
/// request (before the answer) makes the hand-over fail; the callback hears of it.
#[tokio::test]
async fn a_failed_hand_over_goes_to_on_failed_upgrade() {
    use std::sync::Arc;
    use tokio::sync::{Notify, mpsc};
    let extracted = Arc::new(Notify::new());
    let answer = Arc::new(Notify::new());
    let (failures, mut failed) = mpsc::unbounded_channel();
    let handler = {
        let (extracted, answer) = (extracted.clone(), answer.clone());
        move |ws: WebSocketUpgrade| async move {
            extracted.notify_one();
            answer.notified().await;
            ws.on_failed_upgrade(move |error| {
                let _ = failures.send(error.to_string());
            })
            .on_upgrade(|_socket| async move { panic!("no connection to hand over") })
        }
    };
    let app = Router::new().route("/ws", any(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tcp = tcp;
    tcp.write_all(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{UPGRADE}\r\n").as_bytes())
        .await
        .unwrap();
    extracted.notified().await;
    // Reset, not a clean end: the server's write of the answer fails.
    tcp.set_zero_linger().unwrap();
    drop(tcp);
    answer.notify_one();
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), failed.recv())
        .await
        .expect("on_failed_upgrade was called")
        .unwrap();
    assert!(!error.is_empty());
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_the_cores_statuses() {
    let addr = start().await;
    // No Upgrade header: 400.
    let head = raw_response(
        addr,
        &format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Version 8: 426 with the version we speak.
    let old = UPGRADE.replace("Version: 13", "Version: 8");
    let head = raw_response(
        addr,
        &format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\n{old}\r\n"),
    )
    .await
    .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("sec-websocket-version: 13\r\n"), "{head}");
    // POST: 405.
    let head = raw_response(
        addr,
        &format!("POST /stream HTTP/1.1\r\nHost: {addr}\r\n{UPGRADE}Content-Length: 0\r\n\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
}

#[tokio::test]
async fn stream_api_upgrade_echoes_with_the_chosen_protocol() {
    let addr = start().await;
    let mut ws = ClientBuilder::new(&format!("ws://{addr}/stream"))
        .unwrap()
        .protocols(&["echo"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("echo"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], [1, 2, 3]),
        other => panic!("{other:?}"),
    }
}

/// An HTTP/2 connection (cleartext, prior knowledge) with hyper's client; the first
/// request is an ordinary GET, so the server's SETTINGS (with
/// SETTINGS_ENABLE_CONNECT_PROTOCOL) have arrived before the CONNECT.
async fn http2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let health = http::Request::get(format!("http://{addr}/health"))
        .body(String::new())
        .unwrap();
    let response = sender.send_request(health).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    sender
}

fn extended_connect(addr: SocketAddr, path: &str, cookie: &str) -> http::Request<String> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .header("cookie", cookie)
        .body(String::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    request
}

#[tokio::test]
async fn http2_extended_connect_opens_a_websocket() {
    let addr = start().await;
    let mut sender = http2_client(addr).await;
    let response = sender
        .send_request(extended_connect(addr, "/chat", "session=good"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert_eq!(response.headers()[SET_COOKIE], "seen=1; HttpOnly");
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut ws = wsevents::WebSocketStream::from_upgraded(
        TokioIo::new(upgraded),
        Role::Client,
        Config::default(),
    );
    match ws.next().await {
        Some(Ok(Message::Text(text))) => {
            assert_eq!(text.as_str(), "session=good version=HTTP/2.0 peer=true");
        }
        other => panic!("{other:?}"),
    }
    ws.send(Message::text("over HTTP/2")).await.unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "over HTTP/2"),
        other => panic!("{other:?}"),
    }
    ws.close(wsevents::CloseCode::NORMAL, "").await.unwrap();

    // The hook's refusal, on HTTP/2 too.
    let refused = sender
        .send_request(extended_connect(addr, "/chat", "session=bad"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()[WWW_AUTHENTICATE], "Bearer realm=\"chat\"");
}
