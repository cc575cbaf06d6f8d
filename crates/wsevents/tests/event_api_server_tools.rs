//! What servers and tools need from the event API beyond the browser's:
//! `WebSocket::from_stream` (the event API over a connection accepted by the caller's
//! own acceptor), `close_with_code` (1001 and the other codes browsers keep for
//! themselves) and `ping`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use wsevents::{Acceptor, CloseCode, Data, Error, Message, WebSocket};

/// One connection accepted with `Acceptor::accept` and handed to `from_stream`; the
/// server side runs `serve` on it. Returns the URL to connect to.
async fn one_connection_server(
    serve: impl FnOnce(WebSocket) + Send + 'static,
) -> (String, tokio::task::JoinHandle<wsevents::CloseEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/room", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (stream, request) = Acceptor::new().route("/room").accept(tcp).await.unwrap();
        let ws = WebSocket::from_stream(
            stream,
            format!(
                "ws://{}{}",
                request.headers()["host"].to_str().unwrap(),
                request.uri()
            ),
        );
        serve(ws.clone());
        ws.run().await
    });
    (url, task)
}

#[tokio::test]
async fn from_stream_gives_the_event_api_over_a_stream_the_caller_accepted() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (url, server) = one_connection_server(move |ws| {
        let (echo, l) = (ws.clone(), log.clone());
        ws.on_open(move |_| l.lock().unwrap().push("open".to_owned()));
        let l = log.clone();
        ws.on_message(move |e| {
            l.lock().unwrap().push(format!("message {:?}", e.data));
            if let Data::Text(text) = &e.data {
                echo.send(format!("{text} (from {})", echo.url())).unwrap();
            }
        });
    })
    .await;
    let mut client = wsevents::connect(&url).await.unwrap();
    client.send(Message::text("hello")).await.unwrap();
    let echo = client.next().await.unwrap().unwrap();
    assert_eq!(echo.as_text(), Some(format!("hello (from {url})").as_str()));
    client.close(CloseCode::NORMAL, "done").await.unwrap();
    let closed = server.await.unwrap();
    assert_eq!((closed.code, closed.was_clean), (1000, true));
    assert_eq!(*seen.lock().unwrap(), ["open", "message Text(\"hello\")"]);
}

#[tokio::test]
async fn close_with_code_sends_going_away_which_close_with_refuses() {
    let (url, server) = one_connection_server(|ws| {
        let closer = ws.clone();
        ws.on_open(move |_| {
            // The browser's rule for scripts still holds for close_with...
            assert!(matches!(
                closer.close_with(1001, ""),
                Err(Error::InvalidAccess(_))
            ));
            // ...and close_with_code refuses codes that never go on the wire.
            for code in [999, 1005, 1006, 1015, 2000, 5000] {
                assert!(matches!(
                    closer.close_with_code(CloseCode::from(code), ""),
                    Err(Error::InvalidAccess(_))
                ));
            }
            assert!(matches!(
                closer.close_with_code(CloseCode::GOING_AWAY, &"x".repeat(124)),
                Err(Error::Syntax(_))
            ));
            closer
                .close_with_code(CloseCode::GOING_AWAY, "server shutting down")
                .unwrap();
            // Closing again does nothing.
            closer
                .close_with_code(CloseCode::INTERNAL_ERROR, "")
                .unwrap();
        });
    })
    .await;
    let mut client = wsevents::connect(&url).await.unwrap();
    // A failed assertion in the handler would leave the socket open: bound the wait.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), client.next());
    assert!(end.await.unwrap().is_none());
    let closure = client.closure().unwrap();
    assert_eq!(closure.code(), CloseCode::GOING_AWAY);
    assert_eq!(closure.reason(), "server shutting down");
    assert!(closure.was_clean());
    let closed = server.await.unwrap();
    assert_eq!((closed.code, closed.was_clean), (1001, true));
}

#[tokio::test]
async fn ping_needs_an_open_socket_and_at_most_125_bytes() {
    let (url, server) = one_connection_server(|ws| {
        let echo = ws.clone();
        ws.on_message(move |e| {
            let _ = echo.send(e.data.as_bytes().to_vec());
        });
    })
    .await;
    let ws = WebSocket::new(&url).unwrap();
    assert!(matches!(ws.ping("too early"), Err(Error::InvalidState)));
    let results = Arc::new(Mutex::new(Vec::new()));
    let (sender, r) = (ws.clone(), results.clone());
    ws.on_open(move |_| {
        r.lock()
            .unwrap()
            .push(format!("{:?}", sender.ping("are you there?")));
        let long = sender.ping(vec![0u8; 126]);
        r.lock()
            .unwrap()
            .push(format!("{}", matches!(long, Err(Error::Capacity(_)))));
        sender.send("after the ping").unwrap();
    });
    let closer = ws.clone();
    ws.on_message(move |e| {
        assert_eq!(e.data.as_bytes(), b"after the ping");
        closer.close_with(1000, "").unwrap();
    });
    let closed = ws.run().await;
    assert_eq!((closed.code, closed.was_clean), (1000, true));
    assert_eq!(*results.lock().unwrap(), ["Ok(())", "true"]);
    assert!(matches!(ws.ping(""), Err(Error::InvalidState)));
    server.await.unwrap();
}
