//! The caps per peer address (issue 25, item 5): handshakes in progress and open
//! connections per address. Past the first, the address's next TCP connection is
//! closed at once, unread; past the second, an upgrade is answered 429 with
//! Retry-After; other addresses are served as usual, the server goes on, and an
//! address gets its slots back as its connections end. Over real sockets, with
//! clients bound to 127.0.0.2, 127.0.0.3, … as their source addresses (all of
//! 127.0.0.0/8 is loopback on Linux).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wsevents::{Acceptor, ClientBuilder, CloseCode, Message, Server, ServerBuilder};

const TIMEOUT: Duration = Duration::from_secs(10);

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `server` from 127.0.0.`last`.
async fn tcp_from(last: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(last), 0)).unwrap();
    socket.connect(server).await.unwrap()
}

/// A WebSocket client of `server` from 127.0.0.`last`.
async fn client_from(
    last: u8,
    server: SocketAddr,
) -> wsevents::Result<wsevents::WebSocketStream<TcpStream>> {
    let tcp = tcp_from(last, server).await;
    ClientBuilder::new(&format!("ws://{server}/"))?
        .handshake(tcp)
        .await
}

/// Start `builder` on a free port and echo on every connection, each in a task.
async fn echo_server(builder: ServerBuilder) -> Arc<Server> {
    let server = Arc::new(builder.bind("127.0.0.1:0").await.unwrap());
    let accepting = server.clone();
    tokio::spawn(async move {
        while let Some((mut ws, _)) = accepting.accept_stream().await {
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    server
}

async fn assert_echoes<S>(ws: &mut wsevents::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_owned())).await.unwrap();
    let echoed = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text(text.to_owned()));
}

/// Wait (bounded) until `condition` holds: for the server to notice a close.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < TIMEOUT, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything the server sends until it closes, and whether it closed (EOF or reset)
/// within the timeout.
async fn until_closed(tcp: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(TIMEOUT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (got, read.is_ok())
}

#[tokio::test]
async fn past_its_handshake_cap_an_address_is_closed_at_once_and_others_are_served() {
    let server = echo_server(
        Server::builder(Acceptor::new())
            .max_handshakes(16)
            .max_handshakes_per_ip(3),
    )
    .await;
    let addr = server.local_addr();
    let lifecycle = server.lifecycle();

    // Three handshakes from 127.0.0.2 that never finish their request.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut tcp = tcp_from(2, addr).await;
        tcp.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(tcp);
    }
    eventually(|| lifecycle.peer_load(ip(2)).handshakes == 3).await;

    // The fourth is closed at once, without a byte of answer.
    let started = Instant::now();
    let mut fourth = tcp_from(2, addr).await;
    let _ = fourth.write_all(UPGRADE.as_bytes()).await;
    let (answer, closed) = until_closed(&mut fourth).await;
    assert!(closed, "the fourth from 127.0.0.2 was not closed");
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}, not at once",
        started.elapsed()
    );
    assert_eq!(lifecycle.refused_per_ip(), 1);
    assert_eq!(lifecycle.peer_load(ip(2)).handshakes, 3);

    // Another address is served as usual, meanwhile.
    let mut other = client_from(3, addr).await.unwrap();
    assert_echoes(&mut other, "from 127.0.0.3").await;

    // The slow ones go away: the address gets its slots back.
    drop(slow);
    eventually(|| lifecycle.peer_load(ip(2)).handshakes == 0).await;
    let mut again = client_from(2, addr).await.unwrap();
    assert_echoes(&mut again, "from 127.0.0.2 again").await;
    assert_eq!(lifecycle.refused_per_ip(), 1);
    // A handshake's count ends with it; the connection counts as open instead.
    assert_eq!(lifecycle.peer_load(ip(2)).handshakes, 0);
    assert_eq!(lifecycle.peer_load(ip(2)).connections, 1);
    assert_echoes(&mut other, "still from 127.0.0.3").await;
}

#[tokio::test]
async fn past_its_connection_cap_an_address_gets_429_with_retry_after() {
    let server = echo_server(
        Server::builder(Acceptor::new())
            .max_connections_per_ip(2)
            .retry_after(Duration::from_secs(3)),
    )
    .await;
    let addr = server.local_addr();
    let lifecycle = server.lifecycle();
    let mut a = client_from(4, addr).await.unwrap();
    let mut b = client_from(4, addr).await.unwrap();
    assert_eq!(lifecycle.peer_load(ip(4)).connections, 2);

    let mut third = tcp_from(4, addr).await;
    third.write_all(UPGRADE.as_bytes()).await.unwrap();
    let (answer, closed) = until_closed(&mut third).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer:?}");
    assert!(answer.contains("\r\nRetry-After: 3\r\n"), "{answer:?}");
    assert_eq!(lifecycle.refused_per_ip(), 1);
    assert_eq!(lifecycle.refused(), 0, "not the server-wide 503");
    // The client library sees the status (and its reconnecting client retries it).
    match client_from(4, addr).await {
        Err(wsevents::Error::Handshake(wsevents_proto::HandshakeError::UnexpectedStatus {
            status,
            ..
        })) => assert_eq!(status, 429),
        other => panic!("{:?}", other.map(|_| ())),
    }

    // Another address, and the open ones, go on.
    let mut other = client_from(5, addr).await.unwrap();
    assert_echoes(&mut other, "from 127.0.0.5").await;
    assert_echoes(&mut a, "a").await;
    assert_echoes(&mut b, "b").await;

    // One closes: once its teardown is over, the address has room again.
    assert!(a.close(CloseCode::NORMAL, "").await.unwrap().was_clean());
    eventually(|| lifecycle.peer_load(ip(4)).connections == 1).await;
    let mut c = client_from(4, addr).await.unwrap();
    assert_echoes(&mut c, "c").await;
    assert_eq!(lifecycle.peer_load(ip(4)).connections, 2);
}

/// The scenario, small: slowloris sockets from one address past the
/// server-wide handshake cap no longer make a client from another address wait for
/// the handshake timeout.
#[tokio::test]
async fn slowloris_from_one_address_does_not_hold_every_handshake_slot() {
    let config = wsevents::Config {
        handshake_timeout: Some(Duration::from_secs(30)),
        ..wsevents::Config::default()
    };
    let server = echo_server(
        Server::builder(Acceptor::new().config(config))
            .max_handshakes(8)
            .max_handshakes_per_ip(4),
    )
    .await;
    let addr = server.local_addr();
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut tcp = tcp_from(6, addr).await;
        let _ = tcp.write_all(b"G").await;
        slow.push(tcp);
    }
    eventually(|| server.lifecycle().refused_per_ip() == 36).await;
    assert_eq!(server.lifecycle().peer_load(ip(6)).handshakes, 4);
    let started = Instant::now();
    let mut fresh = client_from(7, addr).await.unwrap();
    assert_echoes(&mut fresh, "not kept waiting").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connected in {:?}",
        started.elapsed()
    );
}
