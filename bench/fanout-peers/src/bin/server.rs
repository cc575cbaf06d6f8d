//! The fan-out servers of `bench/fanout` and `bench/topics`, built like the echo peers
//! of `bench/peers`: a tokio multi-threaded runtime with as many workers as the cores
//! the process may run on (`taskset` pins it), or `--workers N`, `TCP_NODELAY` on every
//! accepted socket, one task per connection. Every server has the same paths, and
//! passes binary messages on as they are (the load tool stamps its publish time, a
//! sequence number, the topic and the publisher into them):
//!
//! - `/sub` receives every message published to the one topic of `bench/fanout`, and
//!   `/pub` publishes every message it sends to it;
//! - `/sub/NAME` receives the messages of topic `NAME` (`bench/topics`: `0` to `63`),
//!   and `/pub/tagged` publishes each binary message it sends to the topic its payload
//!   names: bytes 16 and 17, a little-endian `u16`, in decimal (a message too short to
//!   name one is dropped).
//!
//! The servers:
//!
//! - `wsevents`: `wsevents::Server` and `wsevents::hub::Hub`: subscribers are
//!   `WebSocket`s subscribed to one topic, the publisher's messages go to
//!   `Hub::publish` (the frame built once, the same bytes queued to every subscriber).
//! - `tungstenite`: the pattern tokio-tungstenite users write, a
//!   `tokio::sync::broadcast` channel per topic and a task per subscriber that receives
//!   from it and `send`s to its socket (`Lagged` skipped, as the usual examples do).
//!   With many topics, the channels are in a `Mutex<HashMap<topic, Sender>>` (the
//!   rooms of axum's chat example): a subscriber takes its topic's channel, created on
//!   first use, and the publisher looks the topic of each message up there and sends
//!   outside the lock.
//!
//! ```text
//! fanout-server wsevents|tungstenite 127.0.0.1:PORT [--workers N]
//! fanout-server wsevents 127.0.0.1:PORT --redis redis://127.0.0.1:6379
//! ```
//!
//! With `--redis` the wsevents server's hub runs on `RedisBackend`: several such
//! processes on one Redis are one hub (a publish on one node reaches the subscribers
//! of all).

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message as TungsteniteMessage;

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The broadcast channel's capacity in the tokio-tungstenite server. The load tool
/// keeps fewer messages than this outstanding, so no subscriber lags in a steady run.
const CHANNEL: usize = 1024;

fn main() -> Result {
    let usage = "usage: fanout-server wsevents|tungstenite ADDR [--workers N] [--redis URL]";
    let mut args = std::env::args().skip(1);
    let kind = args.next().ok_or(usage)?;
    let addr = args.next().ok_or(usage)?;
    let mut redis = None;
    let mut workers = None;
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--redis", Some(url)) => redis = Some(url),
            ("--workers", Some(n)) => workers = Some(n.parse::<usize>()?),
            _ => return Err(usage.into()),
        }
    }
    // Without --workers, tokio's default: one worker per core this process may use.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = workers {
        if n == 0 {
            return Err("--workers must be at least 1".into());
        }
        runtime.worker_threads(n);
    }
    let runtime = runtime.build()?;
    runtime.block_on(async {
        match kind.as_str() {
            "wsevents" => wsevents_server(&addr, redis.as_deref()).await,
            "tungstenite" if redis.is_none() => tungstenite_server(&addr).await,
            _ => Err(usage.into()),
        }
    })
}

/// The one topic of `bench/fanout` (`/pub`, `/sub`).
const TOPIC: &str = "bench";

/// The path that publishes each message to the topic its payload names.
const TAGGED_PUB: &str = "/pub/tagged";

/// The topic a `/pub/tagged` message is for: bytes 16 and 17 of its payload, a
/// little-endian `u16`, in decimal; `None` for a message too short to name one.
fn tagged_topic(payload: &[u8]) -> Option<String> {
    let tag = payload.get(16..18)?;
    Some(u16::from_le_bytes([tag[0], tag[1]]).to_string())
}

/// The topic a subscriber's path names: `/sub/NAME` is `NAME`, anything else the one
/// topic of `bench/fanout`.
fn subscribed_topic(path: &str) -> &str {
    match path.strip_prefix("/sub/") {
        Some(name) if !name.is_empty() => name,
        _ => TOPIC,
    }
}

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
            let path = request.uri().path();
            if path == "/pub" {
                // The publisher as a stream: each message read goes to the hub, which
                // frames it once and queues it on every subscriber. Messages read
                // together are published one after the other before any subscriber's
                // driver runs, so each subscriber writes them in one go.
                let mut stream = stream;
                while let Some(Ok(message)) = stream.next().await {
                    hub.publish(TOPIC, message);
                }
            } else if path == TAGGED_PUB {
                let mut stream = stream;
                while let Some(Ok(message)) = stream.next().await {
                    if let Some(topic) = tagged_topic(message.payload()) {
                        hub.publish(&topic, message);
                    }
                }
            } else {
                let host = request
                    .headers()
                    .get(tokio_tungstenite::tungstenite::http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                let url = format!("ws://{host}{}", request.uri());
                let ws = wsevents::WebSocket::from_stream(stream, url);
                if let Err(error) = hub.subscribe(&ws, subscribed_topic(path)) {
                    eprintln!("subscribe: {error}");
                    return;
                }
                ws.run().await;
            }
        });
    }
    Ok(())
}

/// The channels of the many-topic paths, by topic name, created by the first
/// subscriber of each (the rooms of axum's chat example).
type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<TungsteniteMessage>>>>;

async fn tungstenite_server(addr: &str) -> Result {
    let listener = TcpListener::bind(addr).await?;
    println!("tungstenite fan-out on {}", listener.local_addr()?);
    // The one topic of `bench/fanout`, and the many of `bench/topics`.
    let (tx, _) = broadcast::channel::<TungsteniteMessage>(CHANNEL);
    let topics = Topics::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let tx = tx.clone();
        let topics = topics.clone();
        tokio::spawn(async move {
            if let Err(error) = tungstenite_connection(tcp, tx, topics).await {
                eprintln!("connection: {error}");
            }
        });
    }
}

// The handshake callback's error type is tungstenite's (an HTTP response).
#[allow(clippy::result_large_err)]
async fn tungstenite_connection(
    tcp: TcpStream,
    tx: broadcast::Sender<TungsteniteMessage>,
    topics: Topics,
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
    if path == TAGGED_PUB {
        while let Some(message) = read.next().await {
            let message = message?;
            let TungsteniteMessage::Binary(data) = &message else {
                continue;
            };
            let Some(topic) = tagged_topic(data) else {
                continue;
            };
            let sender = topics
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&topic)
                .cloned();
            if let Some(sender) = sender {
                let _ = sender.send(message);
            }
        }
        return Ok(());
    }
    // A subscriber: what users write (the axum chat example, tokio-tungstenite's
    // issues): a task that takes each message from the channel and sends it, and the
    // read side polled only to notice the close.
    let mut rx = if path == "/sub" {
        tx.subscribe()
    } else {
        topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subscribed_topic(&path).to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL).0)
            .subscribe()
    };
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
