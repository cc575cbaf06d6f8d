//! `wsevents serve`'s abuse bounds (issue 25, item 5), end to end on a `serve` child:
//! `--max-handshakes-per-ip` (past it the address's next connection is closed at once,
//! others served), `--max-connections-per-ip` (429 with Retry-After) and
//! `--publish-rate` / `--publish-burst` (`rate_limited` with `retry_after_ms`). Clients
//! bind 127.0.0.2, 127.0.0.3 … as their source addresses.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wsevents::{ClientBuilder, Message};

mod support;

use support::Serve;

const TIMEOUT: Duration = Duration::from_secs(10);

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

async fn tcp_from(last: u8, serve: &Serve) -> TcpStream {
    let server: SocketAddr = serve.addr.parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, last], 0)))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// What the server sends until it closes (EOF or reset), within the timeout.
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("not closed");
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP response head (hyper keeps the connection open after a refusal).
async fn response_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read_u8().await {
                Ok(byte) => head.push(byte),
                Err(_) => return,
            }
        }
    })
    .await
    .expect("no answer");
    String::from_utf8_lossy(&head).into_owned()
}

/// An echo round trip from 127.0.0.`last`.
async fn echoes_from(last: u8, serve: &Serve) {
    let tcp = tcp_from(last, serve).await;
    let mut ws = ClientBuilder::new(&serve.url("/"))
        .unwrap()
        .handshake(tcp)
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("hi"));
}

#[tokio::test]
async fn serve_closes_an_address_past_its_handshakes_and_serves_the_others() {
    let serve = Serve::start(&["--echo", "--max-handshakes-per-ip", "2"]);
    // Two handshakes from 127.0.0.2 that never finish; the server accepts in order,
    // so the third is accepted after them and meets the cap.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut tcp = tcp_from(2, &serve).await;
        tcp.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(tcp);
    }
    let mut third = tcp_from(2, &serve).await;
    let _ = third.write_all(UPGRADE.as_bytes()).await;
    assert_eq!(
        until_closed(&mut third).await,
        "",
        "closed without an answer"
    );
    echoes_from(3, &serve).await;
    drop(slow);
}

#[tokio::test]
async fn serve_answers_429_past_an_addresss_connections() {
    let serve = Serve::start(&[
        "--echo",
        "--max-connections-per-ip",
        "1",
        "--retry-after",
        "2",
    ]);
    let tcp = tcp_from(4, &serve).await;
    let mut first = ClientBuilder::new(&serve.url("/"))
        .unwrap()
        .handshake(tcp)
        .await
        .unwrap();
    let mut second = tcp_from(4, &serve).await;
    second.write_all(UPGRADE.as_bytes()).await.unwrap();
    let answer = response_head(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 2\r\n"),
        "{answer:?}"
    );
    echoes_from(5, &serve).await;
    first.send(Message::text("still")).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, first.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("still"));
}

#[tokio::test]
async fn serve_rate_limits_pubsub_publishes() {
    let serve = Serve::start(&["--publish-rate", "1", "--publish-burst", "2"]);
    let mut ws = ClientBuilder::new(&serve.url("/pubsub"))
        .unwrap()
        .protocols(&["wsevents.v1"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    for id in 1..=3 {
        let publish = format!(r#"{{"id":{id},"op":"publish","topic":"t","data":"x{id}"}}"#);
        ws.send(Message::text(publish)).await.unwrap();
    }
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let next = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
        let Some(Ok(Message::Text(text))) = next else {
            panic!("{next:?}");
        };
        answers.push(text.as_str().to_owned());
    }
    assert!(answers[0].contains(r#""op":"published""#), "{answers:?}");
    assert!(answers[1].contains(r#""op":"published""#), "{answers:?}");
    let refused: serde_json::Value = serde_json::from_str(&answers[2]).unwrap();
    assert_eq!(refused["code"], "rate_limited", "{answers:?}");
    assert_eq!(refused["temporary"], true);
    let wait = refused["retry_after_ms"].as_u64().unwrap();
    assert!((900..=1000).contains(&wait), "told {wait} ms at 1 a second");
}
