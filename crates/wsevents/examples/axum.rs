//! wsevents inside an axum application, with the extractor of the `axum` feature:
//! axum routes the request, `wsevents::axum::WebSocketUpgrade` negotiates it the way a
//! wsevents `Server` does (permessage-deflate, subprotocol, the accept hook), and the
//! handler gets the event API.
//!
//! ```text
//! cargo run -p wsevents --features axum --example axum             # serve ws://127.0.0.1:3000/ws
//! cargo run -p wsevents --features axum --example axum -- --check  # serve on a free port, echo once through it, exit
//! ```

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::any;
use futures_util::{SinkExt, StreamExt};
use wsevents::Message;
use wsevents::axum::WebSocketUpgrade;

/// `/ws`: the `chat` subprotocol when offered, then an echo in the event API; written
/// as axum's own WebSocket handlers are.
async fn websocket(ws: WebSocketUpgrade) -> impl IntoResponse {
    ws.protocols(["chat"]).on_upgrade(|socket| async move {
        let echo = socket.clone();
        socket.on_message(move |e| {
            let _ = echo.send(&e.data);
        });
        let closed = socket.run().await;
        println!("closed: {} {:?}", closed.code, closed.reason);
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = std::env::args().any(|a| a == "--check");
    // `any`: HTTP/2 WebSockets (RFC 8441) arrive as CONNECT, HTTP/1.1 ones as GET.
    let app = Router::new().route("/ws", any(websocket));
    let listener = tokio::net::TcpListener::bind(if check {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("axum serving ws://{addr}/ws");
    if !check {
        server.await??;
        return Ok(());
    }
    let mut ws = wsevents::ClientBuilder::new(&format!("ws://{addr}/ws"))?
        .protocols(&["chat"])?
        .connect()
        .await?;
    assert_eq!(ws.protocol(), Some("chat"));
    assert!(ws.extensions().starts_with("permessage-deflate"));
    ws.send(Message::text("through axum")).await?;
    let echoed = ws.next().await.ok_or("no echo")??;
    assert_eq!(echoed, Message::text("through axum"));
    let closure = ws.close(wsevents::CloseCode::NORMAL, "done").await?;
    println!(
        "echoed {echoed:?} through axum (subprotocol chat, {}); closed cleanly: {}",
        ws.extensions(),
        closure.was_clean()
    );
    Ok(())
}
