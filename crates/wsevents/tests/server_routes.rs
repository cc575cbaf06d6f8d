//! Routes with handlers on `Server` (issue 26, item 3), over real sockets on
//! 127.0.0.1: `Server::route(path, handler)`, path parameters read from the connection
//! (`/topic/{name}`), a fallback, per-route acceptors, routes without a handler still
//! handed out by `accept`, the accept hook seeing the parameters, and the shutdown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsevents::{Accept, Acceptor, ClientBuilder, CloseCode, Error, Message, Server, WebSocket};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn next_text(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    match tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// A handler that says where the connection came in, then echoes.
async fn describe(ws: WebSocket) {
    let params: Vec<String> = ws.params().map(|(n, v)| format!("{n}={v}")).collect();
    ws.send(format!(
        "route={:?} path={:?} params=[{}]",
        ws.route(),
        ws.path(),
        params.join(",")
    ))
    .unwrap();
    let echo = ws.clone();
    ws.on_message(move |e| {
        let _ = echo.send(&e.data);
    });
    ws.run().await;
}

/// The status line an upgrade request to `path` gets.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Each route's handler gets its connections, with the route, the path and the
/// parameters (percent-decoded) on the socket; other paths are 404, a parameter that
/// is not UTF-8 is 400.
#[tokio::test]
async fn each_route_goes_to_its_handler_with_its_parameters() {
    let server = Server::route("/chat", describe)
        .route("/topic/{name}", describe)
        .route("/room/{room}/user/{user}", describe)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let connect = |path: &str| {
        let url = format!("ws://{addr}{path}");
        async move { wsevents::connect(&url).await }
    };

    let mut chat = connect("/chat").await.unwrap();
    assert_eq!(
        next_text(&mut chat).await,
        r#"route=Some("/chat") path=Some("/chat") params=[]"#
    );
    chat.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut chat).await, "hello");

    let mut topic = connect("/topic/caf%C3%A9?since=3").await.unwrap();
    assert_eq!(
        next_text(&mut topic).await,
        r#"route=Some("/topic/{name}") path=Some("/topic/caf%C3%A9") params=[name=café]"#
    );
    let mut room = connect("/room/7/user/ann").await.unwrap();
    assert_eq!(
        next_text(&mut room).await,
        r#"route=Some("/room/{room}/user/{user}") path=Some("/room/7/user/ann") params=[room=7,user=ann]"#
    );

    assert!(status_of(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    assert!(status_of(addr, "/topic/").await.starts_with("HTTP/1.1 404"));
    assert!(
        status_of(addr, "/topic/%FF")
            .await
            .starts_with("HTTP/1.1 400")
    );
    for mut ws in [chat, topic, room] {
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
}

/// A fallback serves what no route matches (no route, no parameters on the socket);
/// the routes keep theirs.
#[tokio::test]
async fn a_fallback_serves_the_other_paths() {
    let server = Server::route("/chat", describe)
        .fallback(describe)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut other = wsevents::connect(&format!("ws://{addr}/anything/else"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut other).await,
        r#"route=None path=Some("/anything/else") params=[]"#
    );
    let mut chat = wsevents::connect(&format!("ws://{addr}/chat"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut chat).await,
        r#"route=Some("/chat") path=Some("/chat") params=[]"#
    );
}

/// A route's own acceptor decides its connections (subprotocol, a hook that reads
/// the route's parameter); the fallback's acceptor decides the rest.
#[tokio::test]
async fn per_route_acceptors_decide_their_routes() {
    let topics = Acceptor::new()
        .protocols(&["topics.v1"])
        .on_request(|request| async move {
            match request.param("name") {
                Some("secret") => Err(http::Response::builder()
                    .status(403)
                    .body(format!("{} is not for you", request.path()))
                    .unwrap()),
                _ => Ok(Accept::new()),
            }
        });
    let server = Server::builder(Acceptor::new())
        .route_with("/topic/{name}", topics, describe)
        .fallback_with(Acceptor::new().protocols(&["echo"]), describe)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let offer = |path: &str, protocols: &[&str]| {
        ClientBuilder::new(&format!("ws://{addr}{path}"))
            .unwrap()
            .protocols(protocols)
            .unwrap()
            .connect()
    };
    let topic = offer("/topic/news", &["echo", "topics.v1"]).await.unwrap();
    assert_eq!(topic.protocol(), Some("topics.v1"));
    let other = offer("/x", &["echo", "topics.v1"]).await.unwrap();
    assert_eq!(other.protocol(), Some("echo"));
    let refused = offer("/topic/secret", &["topics.v1"]).await;
    assert!(
        matches!(&refused, Err(Error::Handshake(e)) if e.to_string().contains("403")),
        "{refused:?}"
    );
}

/// Routes of the acceptor without a handler still go to `accept` / `accept_stream`,
/// with their parameters.
#[tokio::test]
async fn routes_without_a_handler_are_handed_out_by_accept() {
    let server = Server::builder(Acceptor::new().route("/plain/{id}"))
        .route("/handled", describe)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let client = tokio::spawn(async move {
        wsevents::connect(&format!("ws://{addr}/plain/42"))
            .await
            .unwrap()
    });
    let mut handled = wsevents::connect(&format!("ws://{addr}/handled"))
        .await
        .unwrap();
    assert!(
        next_text(&mut handled)
            .await
            .starts_with(r#"route=Some("/handled")"#)
    );
    let (stream, _request) = tokio::time::timeout(TIMEOUT, server.accept_stream())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.route(), Some("/plain/{id}"));
    assert_eq!(stream.param("id"), Some("42"));
    assert_eq!(stream.path(), Some("/plain/42"));
    drop(client.await.unwrap());
}

/// A routed connection counts under the server and closes with its shutdown (1001).
#[tokio::test]
async fn routed_connections_close_with_the_server() {
    let server = Server::route("/chat", describe)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut chat = wsevents::connect(&format!("ws://{}/chat", server.local_addr()))
        .await
        .unwrap();
    next_text(&mut chat).await;
    assert_eq!(server.lifecycle().open_connections(), 1);
    let (report, ()) = tokio::join!(server.shutdown(TIMEOUT), async {
        while let Some(Ok(_)) = chat.next().await {}
    });
    assert_eq!((report.clean, report.forced), (1, 0));
    assert_eq!(chat.closure().unwrap().code(), CloseCode::GOING_AWAY);
}
