//! The server's lifecycle over real sockets on 127.0.0.1: the cap on open connections
//! (503 with Retry-After), the handshake timeout against slowloris (plain and TLS), and
//! the graceful shutdown (1001 after every queued message, for the event API and the
//! stream API alike; a peer that never reads forced after the grace period; the
//! report).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsevents::{
    Acceptor, CancellationToken, CloseCode, Config, Lifecycle, Message, SHUTDOWN_REASON, Server,
    ServerBuilder, ServerLimits,
};

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Start `builder` on a free port and echo on every connection (stream API), each in
/// a task of its own.
async fn echo_server(builder: ServerBuilder) -> (std::sync::Arc<Server>, String) {
    let server = std::sync::Arc::new(builder.bind("127.0.0.1:0").await.unwrap());
    let url = format!("ws://{}/", server.local_addr());
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
    (server, url)
}

async fn assert_echoes(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text(text.to_owned())
    );
}

/// Read a whole HTTP response head and what follows until the server closes.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Wait (bounded) until `condition` holds.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ----- the cap on open connections -----

#[tokio::test]
async fn past_the_cap_an_upgrade_gets_503_with_retry_after_while_open_connections_echo() {
    let builder = Server::builder(Acceptor::new())
        .max_connections(2)
        .retry_after(Duration::from_secs(7));
    let (server, url) = echo_server(builder).await;
    let mut a = wsevents::connect(&url).await.unwrap();
    let mut b = wsevents::connect(&url).await.unwrap();
    assert_echoes(&mut a, "a").await;
    assert_echoes(&mut b, "b").await;
    assert_eq!(server.lifecycle().open_connections(), 2);

    let mut third = TcpStream::connect(server.local_addr()).await.unwrap();
    third.write_all(UPGRADE.as_bytes()).await.unwrap();
    let response = read_to_close(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response:?}");
    assert!(response.contains("\r\nRetry-After: 7\r\n"), "{response:?}");
    assert_eq!(server.lifecycle().refused(), 1);
    // The open connections did not notice.
    assert_echoes(&mut a, "a again").await;
    assert_echoes(&mut b, "b again").await;

    // Once one closes (and its teardown is over), there is room again.
    assert!(a.close(CloseCode::NORMAL, "").await.unwrap().was_clean());
    eventually(|| server.lifecycle().open_connections() == 1).await;
    let mut c = wsevents::connect(&url).await.unwrap();
    assert_echoes(&mut c, "c").await;
}

// ----- handshakes: the timeout against slowloris -----

#[tokio::test]
async fn a_slowloris_is_closed_at_the_handshake_timeout_while_a_client_echoes() {
    let timeout = Duration::from_millis(800);
    let config = Config {
        handshake_timeout: Some(timeout),
        ..Config::default()
    };
    let (server, url) = echo_server(Server::builder(Acceptor::new().config(config))).await;
    let start = Instant::now();
    let slow = TcpStream::connect(server.local_addr()).await.unwrap();
    let (mut slow_read, mut slow_write) = slow.into_split();
    // One byte every 100 ms: the request would take 15 s.
    let trickle = tokio::spawn(async move {
        for byte in UPGRADE.bytes() {
            if slow_write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Meanwhile a normal client opens and echoes.
    let mut ws = wsevents::connect(&url).await.unwrap();
    assert_echoes(&mut ws, "not held up").await;

    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), slow_read.read(&mut buf)).await;
    let closed_after = start.elapsed();
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(
        closed_after >= timeout && closed_after < timeout + Duration::from_millis(700),
        "closed after {closed_after:?}"
    );
    assert_echoes(&mut ws, "still here").await;
    trickle.abort();
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_closed_at_the_handshake_timeout() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = wsevents::tls::server_config_from_pem(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let timeout = Duration::from_millis(500);
    let config = Config {
        handshake_timeout: Some(timeout),
        ..Config::default()
    };
    let builder = Server::builder(Acceptor::new().config(config)).tls(tls);
    let (server, _url) = echo_server(builder).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let closed_after = start.elapsed();
    assert!(
        closed_after >= timeout && closed_after < timeout + Duration::from_millis(700),
        "closed after {closed_after:?}"
    );
}

// ----- graceful shutdown -----

/// How many messages each connection has queued when the shutdown comes: far more
/// than the socket buffers hold, so most are still in the core's queue.
const QUEUED: usize = 2000;

fn numbered(i: usize) -> String {
    format!("{i:05} {}", "q".repeat(4000))
}

/// A client with a small receive buffer (so that the server's messages stay queued
/// while it does not read), its handshake done by hand.
async fn small_buffer_client(addr: std::net::SocketAddr) -> wsevents::WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    wsevents::WebSocketStream::from_upgraded(tcp, wsevents::Role::Client, Config::default())
}

/// A client reads every message in order, then the close: 1001, the reason, clean.
async fn assert_all_then_going_away(mut ws: wsevents::WebSocketStream<TcpStream>) {
    for i in 0..QUEUED {
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.as_text(), Some(numbered(i).as_str()), "message {i}");
    }
    assert!(ws.next().await.is_none(), "the close comes right after");
    let closure = ws.closure().unwrap();
    assert_eq!(closure.code(), CloseCode::GOING_AWAY);
    assert_eq!(closure.reason(), SHUTDOWN_REASON);
    assert!(closure.was_clean());
}

#[tokio::test]
async fn shutdown_closes_event_and_stream_connections_with_1001_after_everything_queued() {
    let server = Server::builder(Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();

    // Event API: the server queues every message with `send`, then drives.
    let event_client = small_buffer_client(server.local_addr()).await;
    let ws = server.accept().await.unwrap();
    for i in 0..QUEUED {
        ws.send(numbered(i)).unwrap();
    }
    let probe = ws.clone();
    let event_side = tokio::spawn(async move { ws.run().await });

    // Stream API: the server feeds every message (no write limit), then reads on.
    let stream_client = small_buffer_client(server.local_addr()).await;
    let (mut stream, _) = server.accept_stream().await.unwrap();
    stream.set_write_limit(usize::MAX);
    for i in 0..QUEUED {
        stream.feed(Message::text(numbered(i))).await.unwrap();
    }
    let stream_side = tokio::spawn(async move {
        while stream.next().await.is_some() {}
        stream.closure().cloned()
    });

    // Neither client has read anything yet, and what the sockets hold is written: the
    // rest is still queued in the cores when the shutdown comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(probe.buffered_amount() > QUEUED as u64 / 2 * 4000);
    let shutdown = tokio::spawn(async move {
        let report = server.shutdown(Duration::from_secs(10)).await;
        (report, server.accept().await.is_none())
    });
    tokio::join!(
        assert_all_then_going_away(event_client),
        assert_all_then_going_away(stream_client)
    );

    let (report, stopped) = shutdown.await.unwrap();
    assert_eq!((report.clean, report.forced), (2, 0), "{report}");
    assert!(stopped, "accept returns None after the shutdown");
    let close = event_side.await.unwrap();
    assert_eq!(close.code, 1001);
    assert!(close.was_clean);
    assert!(stream_side.await.unwrap().unwrap().was_clean());
}

#[tokio::test]
async fn peers_that_never_read_are_forced_after_the_grace_period() {
    let server = Server::builder(Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    // Two clients that read, one that never does.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut client = wsevents::connect(&url).await.unwrap();
        readers.push(tokio::spawn(async move {
            while client.next().await.is_some() {}
            client.closure().cloned()
        }));
        let ws = server.accept().await.unwrap();
        tokio::spawn(async move { ws.run().await });
    }
    let _deaf = small_buffer_client(server.local_addr()).await;
    let ws = server.accept().await.unwrap();
    // Far more than the socket buffers hold: the close frame can never be written.
    for i in 0..QUEUED {
        ws.send(numbered(i)).unwrap();
    }
    let deaf_side = tokio::spawn(async move { ws.run().await });
    // And one on the stream API, whose server task waits in `send` for room.
    let _deaf_too = small_buffer_client(server.local_addr()).await;
    let (mut stream, _) = server.accept_stream().await.unwrap();
    let blocked_sender = tokio::spawn(async move {
        for i in 0..QUEUED {
            if let Err(error) = stream.send(Message::text(numbered(i))).await {
                return Some(error);
            }
        }
        None
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let grace = Duration::from_millis(500);
    let start = Instant::now();
    let report = server.shutdown(grace).await;
    let took = start.elapsed();
    assert_eq!((report.clean, report.forced), (2, 2), "{report}");
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "{took:?}"
    );
    let forced = deaf_side.await.unwrap();
    assert_eq!(forced.code, 1006);
    assert!(!forced.was_clean);
    // The sender's wait ended with the connection.
    assert!(blocked_sender.await.unwrap().is_some());
    for reader in readers {
        let closure = reader.await.unwrap().unwrap();
        assert_eq!(closure.code(), CloseCode::GOING_AWAY);
    }
}

#[tokio::test]
async fn cancelling_the_shutdown_token_shuts_the_server_down_from_another_task() {
    let stop = CancellationToken::new();
    let server = Server::builder(Acceptor::new())
        .shutdown_token(stop.clone())
        .grace(Duration::from_secs(5))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    let side = tokio::spawn(async move { ws.run().await });

    stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(matches!(end, Ok(None)), "closed at once");
    assert_eq!(client.closure().unwrap().code(), CloseCode::GOING_AWAY);
    assert_eq!(side.await.unwrap().code, 1001);
    assert!(server.accept().await.is_none());
    // The report of that shutdown, whatever grace is asked here.
    let report = server.shutdown(Duration::ZERO).await;
    assert_eq!((report.clean, report.forced), (1, 0), "{report}");
    // No new connection once it is over.
    assert!(wsevents::connect(&url).await.is_err());
}

#[tokio::test]
async fn an_accept_loop_of_ones_own_closes_its_connections_when_the_token_is_cancelled() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let lifecycle = Lifecycle::new(ServerLimits::default(), stop.clone());
    let tracked = lifecycle.clone();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut ws, _) = tracked.accept(&Acceptor::new(), tcp).await.unwrap();
        while ws.next().await.is_some() {}
        ws.closure().cloned()
    });
    let mut client = wsevents::connect(&format!("ws://{addr}/")).await.unwrap();
    eventually(|| lifecycle.open_connections() == 1).await;
    // The server side is idle (waiting for input) when the token is cancelled, and
    // nobody calls `shutdown`: the token alone closes it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
    assert!(matches!(end, Ok(None)), "closed at once");
    assert_eq!(client.closure().unwrap().code(), CloseCode::GOING_AWAY);
    assert!(server_side.await.unwrap().unwrap().was_clean());
    eventually(|| lifecycle.open_connections() == 0).await;
    let report = lifecycle.shutdown(Duration::from_secs(1)).await;
    assert_eq!((report.clean, report.forced), (1, 0), "{report}");
}
