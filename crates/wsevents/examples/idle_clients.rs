//! Open many WebSocket connections and hold them idle: the load side of the
//! idle-connection capacity check (`scripts/idle-connections`).
//!
//! ```text
//! idle_clients URL COUNT HOLD_SECONDS
//! ```
//! Prints `open N` once all are open, holds them, then checks each one still echoes
//! and prints `echoed N`. Exits non-zero if any connection failed.
//!
//! A server on 127.0.0.1 is reached from 250 loopback addresses (127.0.0.2 to
//! 127.0.0.251, 40 connections each at 10,000), as many clients would be: a server's
//! default caps per peer address (64 handshakes in progress, 1,000 connections) hold.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use wsevents::{ClientBuilder, Message, WebSocketStream};

/// The loopback addresses the connections come from, in turn.
const SOURCES: u8 = 250;

/// Connection `i` to a server on 127.0.0.1, from 127.0.0.(2 + i % 250).
async fn connect_from(
    url: &str,
    server: std::net::SocketAddr,
    i: usize,
) -> Result<WebSocketStream<TcpStream>, Box<dyn std::error::Error>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 2 + (i % usize::from(SOURCES)) as u8], 0).into())?;
    let tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    Ok(ClientBuilder::new(url)?.handshake(tcp).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: idle_clients URL COUNT HOLD_SECONDS")?;
    let count: usize = args.next().ok_or("missing COUNT")?.parse()?;
    let hold: u64 = args.next().ok_or("missing HOLD_SECONDS")?.parse()?;

    let server: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .map_err(|_| "the URL must be ws://127.0.0.1:PORT/")?;
    if server.ip() != std::net::Ipv4Addr::LOCALHOST {
        return Err("the server must listen on 127.0.0.1".into());
    }
    let mut conns = Vec::with_capacity(count);
    // Open in batches so the listen backlog is never overrun.
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let opening = batch.iter().map(|&i| connect_from(&url, server, i));
        for result in futures_util::future::join_all(opening).await {
            conns.push(result?);
        }
    }
    println!("open {}", conns.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;

    let mut echoed = 0;
    for ws in &mut conns {
        ws.send(Message::text("still there?")).await?;
        match ws.next().await {
            Some(Ok(m)) if m.as_text() == Some("still there?") => echoed += 1,
            other => return Err(format!("connection lost: {other:?}").into()),
        }
    }
    println!("echoed {echoed}");
    Ok(())
}
