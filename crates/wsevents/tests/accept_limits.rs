//! The acceptor carries the bounds of its connections (issue 26, item 5): the event
//! API's send-queue rule (`Backpressure`) and received-event bound (`max_queue`), the
//! stream API's write limit; sockets from a `Server` (handed out or routed), a
//! `Lifecycle`, an acceptor on one's own transport, hyper and axum get them alike, and
//! a route with an acceptor of its own gets that one's. Over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Extension, Router};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wsevents::axum::WebSocketUpgrade;
use wsevents::{
    Acceptor, Backpressure, CancellationToken, CloseCode, Error, Lifecycle, Message, Server,
    ServerLimits, WebSocket,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A socket's bounds as a line: what the tests compare.
fn bounds(ws: &WebSocket) -> String {
    format!("{:?} max_queue={}", ws.backpressure(), ws.max_queue())
}

fn strict() -> Backpressure {
    Backpressure::close(64 * 1024, CloseCode::TRY_AGAIN_LATER)
}

fn acceptor() -> Acceptor {
    Acceptor::new()
        .backpressure(strict())
        .unwrap()
        .max_queue(3)
        .write_limit(4096)
}

fn expected() -> String {
    format!("{:?} max_queue=3", strict())
}

#[tokio::test]
async fn server_sockets_handed_out_routed_and_streamed_take_the_acceptors_bounds() {
    let other = Acceptor::new().max_queue(9);
    let (routed, mut from_route) = mpsc::unbounded_channel();
    let server = Server::builder(acceptor().route("/plain").route("/stream"))
        .route("/routed", move |ws: WebSocket| {
            let routed = routed.clone();
            async move {
                let _ = routed.send(bounds(&ws));
            }
        })
        .route_with("/own", other, |ws: WebSocket| async move {
            let _ = ws.send(bounds(&ws));
            ws.run().await;
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    let url = |path: &str| format!("ws://{addr}{path}");

    let _plain = wsevents::connect(&url("/plain")).await.unwrap();
    let ws = tokio::time::timeout(TIMEOUT, server.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bounds(&ws), expected());

    let _routed = wsevents::connect(&url("/routed")).await.unwrap();
    let seen = tokio::time::timeout(TIMEOUT, from_route.recv())
        .await
        .unwrap();
    assert_eq!(seen.unwrap(), expected());

    let mut own = wsevents::connect(&url("/own")).await.unwrap();
    match tokio::time::timeout(TIMEOUT, own.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => assert_eq!(
            text.as_str(),
            format!("{:?} max_queue=9", Backpressure::default())
        ),
        other => panic!("{other:?}"),
    }

    let _stream = wsevents::connect(&url("/stream")).await.unwrap();
    let (stream, _) = tokio::time::timeout(TIMEOUT, server.accept_stream())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.write_limit(), 4096);
}

/// `ServerBuilder::backpressure` is the server's acceptor's rule.
#[tokio::test]
async fn the_servers_backpressure_is_its_acceptors() {
    let server = Server::builder(Acceptor::new())
        .backpressure(strict())
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let _client = wsevents::connect(&format!("ws://{}/", server.local_addr()))
        .await
        .unwrap();
    let ws = server.accept().await.unwrap();
    assert_eq!(ws.backpressure(), strict());
    assert!(matches!(
        Acceptor::new().backpressure(Backpressure::close(1, CloseCode::ABNORMAL)),
        Err(Error::InvalidAccess(_))
    ));
}

/// An acceptor on one's own listener, with and without a lifecycle: the stream and
/// the event API over it.
#[tokio::test]
async fn an_acceptor_and_a_lifecycle_on_ones_own_listener_give_their_bounds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Lifecycle::new(ServerLimits::default(), CancellationToken::new());
    for tracked in [false, true] {
        let client = tokio::spawn(async move { wsevents::connect(&format!("ws://{addr}/")).await });
        let (tcp, peer) = listener.accept().await.unwrap();
        let (stream, request) = if tracked {
            lifecycle.accept_from(&acceptor(), tcp, peer).await.unwrap()
        } else {
            acceptor().accept_from(tcp, peer).await.unwrap()
        };
        assert_eq!(stream.write_limit(), 4096, "tracked: {tracked}");
        let ws = WebSocket::from_stream(stream, format!("ws://{addr}{}", request.uri()));
        assert_eq!(bounds(&ws), expected(), "tracked: {tracked}");
        drop(client.await.unwrap().unwrap());
    }
}

/// axum (hyper underneath): the acceptor from the request's extensions gives the
/// socket its bounds, and they hold: for a client that does not read, `send` is
/// refused once 64 KiB wait, and the socket closes with the rule's code, which the
/// client reads after everything queued before it.
#[tokio::test]
async fn axum_sockets_take_the_acceptors_bounds_and_obey_them() {
    type Refusals = mpsc::UnboundedSender<String>;
    async fn flood(
        ws: WebSocketUpgrade,
        Extension(refusals): Extension<Refusals>,
    ) -> impl IntoResponse {
        ws.on_upgrade(|socket| async move {
            socket.send(bounds(&socket)).unwrap();
            let driver = socket.clone();
            let run = tokio::spawn(async move { driver.run().await });
            let chunk = vec![0u8; 16 * 1024];
            let refused = loop {
                match socket.send(chunk.clone()) {
                    Ok(()) => tokio::task::yield_now().await,
                    Err(error) => break error,
                }
            };
            let _ = refusals.send(format!("{refused:?}"));
            let _ = run.await;
        })
    }
    let (refusals, mut refused) = mpsc::unbounded_channel::<String>();
    let app = Router::new()
        .route("/flood", any(flood))
        .layer(Extension(acceptor().deflate(None)))
        .layer(Extension(refusals));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut client = wsevents::connect(&format!("ws://{addr}/flood"))
        .await
        .unwrap();
    match tokio::time::timeout(TIMEOUT, client.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), expected()),
        other => panic!("{other:?}"),
    }
    // Not reading: the kernel's buffers fill, then the socket's 64 KiB.
    let refusal = tokio::time::timeout(TIMEOUT, refused.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        refusal.starts_with("BufferFull") && refusal.contains("limit: 65536"),
        "{refusal}"
    );
    // Reading now: what was queued, then the close with the rule's code.
    let end = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(_)) = client.next().await {}
    })
    .await;
    assert!(end.is_ok());
    assert_eq!(client.closure().unwrap().code(), CloseCode::TRY_AGAIN_LATER);
}
