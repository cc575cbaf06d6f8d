//! wsevents inside an axum application: axum serves HTTP and answers the upgrade
//! request, hyper hands over the upgraded connection, and wsevents speaks WebSocket on
//! it (`WebSocketStream::from_upgraded`).
//!
//! ```text
//! cargo run -p wsevents --example axum                # serve ws://127.0.0.1:3000/ws
//! cargo run -p wsevents --example axum -- --check     # serve on a free port, echo once through it, exit
//! ```
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use wsevents::{Config, Message, Role, WebSocketStream};
use wsevents_proto::handshake::{accept_key, has_token};

/// The `Sec-WebSocket-Accept` for a valid upgrade request, or why it is not one.
fn check_upgrade(headers: &HeaderMap) -> Result<String, &'static str> {
    let has = |name, token| {
        headers
            .get_all(name)
            .iter()
            .any(|v| has_token(v.as_bytes(), token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err("not a WebSocket upgrade");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err("only WebSocket version 13");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("no Sec-WebSocket-Key")?;
    Ok(accept_key(key.as_bytes()))
}

async fn websocket(mut request: Request) -> Response {
    let accept = match check_upgrade(request.headers()) {
        Ok(accept) => accept,
        Err(why) => {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Body::from(why))
                .unwrap();
        }
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_upgraded(TokioIo::new(upgraded), Role::Server, Config::default());
        while let Some(Ok(message)) = ws.next().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = std::env::args().any(|a| a == "--check");
    let app = Router::new().route("/ws", get(websocket));
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
    let mut ws = wsevents::connect(&format!("ws://{addr}/ws")).await?;
    ws.send(Message::text("through axum")).await?;
    let echoed = ws.next().await.ok_or("no echo")??;
    assert_eq!(echoed, Message::text("through axum"));
    let closure = ws.close(wsevents::CloseCode::NORMAL, "done").await?;
    println!(
        "echoed {echoed:?} through axum; closed cleanly: {}",
        closure.was_clean()
    );
    Ok(())
}
