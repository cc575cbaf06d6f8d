//! The fan-out servers of `bench/fanout`, built like the echo peers of `bench/peers`:
//! a tokio multi-threaded runtime with as many workers as the cores the process may run
//! on (`taskset` pins it to one), `TCP_NODELAY` on every accepted socket, one task per
//! connection. Every server has the same two paths: a connection to `/sub` receives
//! every message published, a connection to `/pub` publishes every message it sends
//! (binary, passed on as they are: the load tool stamps its publish time into them).
//!
//! - `wsevents`: `wsevents::Server` and `wsevents::hub::Hub`: subscribers are
//!   `WebSocket`s subscribed to one topic, the publisher's messages go to
//!   `Hub::publish` (the frame built once, the same bytes queued to every subscriber).
//! - `tungstenite`: the pattern tokio-tungstenite users write, a
//!   `tokio::sync::broadcast` channel and a task per subscriber that receives from it
//!   and `send`s to its socket (`Lagged` skipped, as the usual examples do).
//!
//! ```text
//! fanout-server wsevents|tungstenite 127.0.0.1:PORT
//! fanout-server wsevents 127.0.0.1:PORT --redis redis://127.0.0.1:6379
//! ```
//!
//! With `--redis` the wsevents server's hub runs on `RedisBackend`: several such
//! processes on one Redis are one hub (a publish on one node reaches the subscribers
//! of all).

use std::error::Error;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The broadcast channel's capacity in the tokio-tungstenite server. The load tool
/// keeps fewer messages than this outstanding, so no subscriber lags in a steady run.
const CHANNEL: usize = 1024;

#[tokio::main]
async fn main() -> Result {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fanout-server wsevents|tungstenite ADDR [--redis URL]";
    let kind = args.next().ok_or(usage)?;
    let addr = args.next().ok_or(usage)?;
    let redis = match (args.next().as_deref(), args.next()) {
        (Some("--redis"), Some(url)) => Some(url),
        (None, _) => None,
        _ => return Err(usage.into()),
    };
    match kind.as_str() {
        "wsevents" => wsevents_server(&addr, redis.as_deref()).await,
        "tungstenite" if redis.is_none() => tungstenite_server(&addr).await,
        _ => Err(usage.into()),
    }
}

/// The one topic of the benchmark.
const TOPIC: &str = "bench";

async fn wsevents_server(addr: &str, redis: Option<&str>) -> Result {
    let hub = match redis {
        Some(url) => wsevents::hub::Hub::builder()
            .backend(wsevents::hub::RedisBackend::new(url)?)
            .build(),
        None => wsevents::hub::Hub::new(),
    };
    // The server sets TCP_NODELAY on every socket it accepts. Its connection cap
    // (10,000 by default) is raised: the 10,000-subscriber rows have a publisher too.
    let server = wsevents::Server::builder(wsevents::Acceptor::new())
        .max_connections(100_000)
        .bind(addr)
        .await?;
    println!("wsevents fan-out on {}", server.local_addr());
    while let Some((stream, request)) = server.accept_stream().await {
        let hub = hub.clone();
        tokio::spawn(async move {
            if request.uri().path() == "/pub" {
                // The publisher as a stream: each message read goes to the hub, which
                // frames it once and queues it on every subscriber. Messages read
                // together are published one after the other before any subscriber's
                // driver runs, so each subscriber writes them in one go.
                let mut stream = stream;
                while let Some(Ok(message)) = stream.next().await {
                    hub.publish(TOPIC, message);
                }
            } else {
                let host = request
                    .headers()
                    .get(tokio_tungstenite::tungstenite::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                let url = format!("ws://{host}{}", request.uri());
                let ws = wsevents::WebSocket::from_stream(stream, url);
                if let Err(error) = hub.subscribe(&ws, TOPIC) {
                    eprintln!("subscribe: {error}");
                    return;
                }
                ws.run().await;
            }
        });
    }
    Ok(())
}

async fn tungstenite_server(addr: &str) -> Result {
    let listener = TcpListener::bind(addr).await?;
    println!("tungstenite fan-out on {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<tokio_tungstenite::tungstenite::Message>(CHANNEL);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(error) = tungstenite_connection(tcp, tx).await {
                eprintln!("connection: {error}");
            }
        });
    }
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn tungstenite_connection(
    tcp: TcpStream,
    tx: broadcast::Sender<tokio_tungstenite::tungstenite::Message>,
) -> Result {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    })
    .await?;
    let (mut write, mut read) = ws.split();
    if path == "/pub" {
        while let Some(message) = read.next().await {
            let message = message?;
            if message.is_binary() || message.is_text() {
                // No subscriber yet is not an error for a publisher.
                let _ = tx.send(message);
            }
        }
        return Ok(());
    }
    // A subscriber: what users write (the axum chat example, tokio-tungstenite's
    // issues): a task that takes each message from the channel and sends it, and the
    // read side polled only to notice the close.
    let mut rx = tx.subscribe();
    let mut send_task = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(message) => {
                    if write.send(message).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(message)) = read.next().await {
            if message.is_close() {
                break;
            }
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
    Ok(())
}
