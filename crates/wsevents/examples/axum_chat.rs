//! A chat in an axum application, on wsevents' hub: the hub lives in axum's `State`,
//! every room is a topic, and plain HTTP beside the WebSocket route publishes to a
//! room (the application's backend announcing something).
//!
//! ```text
//! cargo run -p wsevents --features axum --example axum_chat              # ws://127.0.0.1:3000/chat/{room}
//! cargo run -p wsevents --features axum --example axum_chat -- --check   # two clients and an announcement, then exit
//! ```
//!
//! The WebSocket handler is written as axum's own are (`ws.on_upgrade(|socket| async
//! move { .. })` returned as `impl IntoResponse`), with the event API inside: the
//! socket joins its room's topic, and what it says is published there, to everyone in
//! the room (itself included). The hub writes each publication once and shares the
//! bytes with every subscriber; a subscriber that stops reading is closed with 1008
//! once 1 MiB waits for it (the hub's bound), so one slow client never holds the room.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsevents::axum::WebSocketUpgrade;
use wsevents::hub::Hub;
use wsevents::{CloseCode, Message};

/// What every handler shares: the hub (a cheap clone, one set of topics).
#[derive(Clone)]
struct AppState {
    hub: Hub,
}

/// `/chat/{room}`: join the room, say things to it.
async fn chat(
    ws: WebSocketUpgrade,
    Path(room): Path<String>,
    State(state): State<AppState>,
) -> impl IntoResponse {
    ws.on_upgrade(move |socket| async move {
        if let Err(error) = state.hub.subscribe(&socket, &room) {
            eprintln!("cannot join {room}: {error}");
            return;
        }
        let hub = state.hub.clone();
        let topic = room.clone();
        // The message's own bytes, shared: text stays text, binary binary.
        socket.on_message(move |e| {
            hub.publish(&topic, &e.data);
        });
        let closed = socket.run().await;
        println!("left {room}: {} {:?}", closed.code, closed.reason);
    })
}

/// `POST /rooms/{room}`: the backend's announcement to a room; answers how many
/// subscribers it reached in this process.
async fn announce(Path(room): Path<String>, State(state): State<AppState>, text: String) -> String {
    let reached = state.hub.publish(&room, format!("announcement: {text}"));
    format!("{reached}\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = std::env::args().any(|a| a == "--check");
    let state = AppState { hub: Hub::new() };
    // `any`: HTTP/2 WebSockets (RFC 8441) arrive as CONNECT, HTTP/1.1 ones as GET.
    let app = Router::new()
        .route("/chat/{room}", any(chat))
        .route("/rooms/{room}", post(announce))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(if check {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    })
    .await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "axum chat on ws://{addr}/chat/{{room}}, announcements: POST http://{addr}/rooms/{{room}}"
    );
    if !check {
        server.await??;
        return Ok(());
    }

    // Two clients in the lobby; each joins, then one speaks, then the backend.
    let mut ann = joined(&format!("ws://{addr}/chat/lobby"), "ann here").await?;
    let mut bob = joined(&format!("ws://{addr}/chat/lobby"), "bob here").await?;
    assert_eq!(next_text(&mut ann).await?, "bob here");
    ann.send(Message::text("hello, bob")).await?;
    assert_eq!(next_text(&mut ann).await?, "hello, bob");
    assert_eq!(next_text(&mut bob).await?, "hello, bob");
    let reached = post_text(addr, "/rooms/lobby", "tea at five").await?;
    assert_eq!(reached.trim(), "2");
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next_text(ws).await?, "announcement: tea at five");
    }
    for mut ws in [ann, bob] {
        ws.close(CloseCode::NORMAL, "bye").await?;
    }
    println!("two clients chatted in the lobby through axum, and heard the announcement");
    Ok(())
}

type Client = wsevents::WebSocketStream<wsevents::MaybeTlsStream>;

/// Connect and say `hello` until it comes back: in the room.
async fn joined(url: &str, hello: &str) -> Result<Client, Box<dyn std::error::Error>> {
    let mut ws = wsevents::connect(url).await?;
    ws.send(Message::text(hello.to_owned())).await?;
    assert_eq!(next_text(&mut ws).await?, hello);
    Ok(ws)
}

async fn next_text(ws: &mut Client) -> Result<String, Box<dyn std::error::Error>> {
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await?;
    match next {
        Some(Ok(Message::Text(text))) => Ok(text.as_str().to_owned()),
        other => Err(format!("expected a text message, got {other:?}").into()),
    }
}

/// A plain HTTP/1.1 POST, its response body.
async fn post_text(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("POST answered {head}").into());
    }
    Ok(body.to_owned())
}
