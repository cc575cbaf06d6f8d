//! The in-process hub over real sockets on 127.0.0.1 (issue 14): order per topic and
//! between `send` and `publish`, exactly once, the slow-subscriber rule, no leak, and
//! what the shared frame costs on a permessage-deflate connection.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use wsevents::hub::{DEFAULT_MAX_BACKLOG, Hub, SLOW_CLOSE_CODE, SLOW_CLOSE_REASON};
use wsevents::{ClientBuilder, CloseCode, Error, Message, ReadyState, Server, WebSocket};

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// A server whose accepted sockets run in the background.
async fn server() -> (Server, String) {
    // 100 clients connect at once from 127.0.0.1: over the cap per address on
    // handshakes (64; peer_limits.rs tests it).
    let server = Server::builder(wsevents::Acceptor::new())
        .max_handshakes_per_ip(usize::MAX)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    (server, url)
}

/// The next accepted socket, driven in the background.
async fn accept_running(server: &Server) -> WebSocket {
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    ws
}

/// The next `n` text messages a client receives.
async fn texts<S>(client: &mut wsevents::WebSocketStream<S>, n: usize) -> Vec<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {} of {n} messages", out.len()));
        match next {
            Some(Ok(Message::Text(text))) => out.push(text.as_str().to_owned()),
            other => panic!("after {} messages: {other:?}", out.len()),
        }
    }
    out
}

/// Five subscribers, two topics, three of them in both: each gets every message of its
/// topics once, in publish order, whatever the interleaving of the topics.
#[tokio::test]
async fn every_subscriber_gets_each_message_of_its_topics_once_in_publish_order() {
    const N: usize = 2000;
    let (server, url) = server().await;
    let hub = Hub::new();
    let mut clients = Vec::new();
    for i in 0..5 {
        let client = wsevents::connect(&url).await.unwrap();
        let ws = accept_running(&server).await;
        let topics: &[&str] = match i {
            0 => &["a"],
            1 => &["b"],
            _ => &["a", "b"],
        };
        for topic in topics {
            assert!(hub.subscribe(&ws, topic).unwrap());
        }
        assert!(!hub.subscribe(&ws, topics[0]).unwrap(), "already in");
        assert_eq!(hub.topics(&ws), topics);
        clients.push((client, topics));
    }
    assert_eq!(hub.subscriber_count("a"), 4);
    assert_eq!(hub.subscriber_count("b"), 4);
    let mut expected_queued = 0;
    for i in 0..N {
        // An irregular interleaving of the two topics.
        let topic = if (i * 7) % 3 == 0 { "a" } else { "b" };
        assert_eq!(hub.publish(topic, format!("{topic}{i}")), 4);
        expected_queued += 4;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (client, topics) in &mut clients {
        let expected: Vec<String> = (0..N)
            .map(|i| (if (i * 7) % 3 == 0 { "a" } else { "b" }, i))
            .filter(|(topic, _)| topics.contains(topic))
            .map(|(topic, i)| format!("{topic}{i}"))
            .collect();
        let got = texts(client, expected.len()).await;
        assert_eq!(got, expected, "subscriber of {topics:?}");
    }
    // Nothing more: each exactly once.
    for (client, _) in &mut clients {
        let more = tokio::time::timeout(Duration::from_millis(100), client.next()).await;
        assert!(more.is_err(), "an extra message: {more:?}");
    }
    let stats = hub.stats();
    assert_eq!(stats.published, N as u64);
    assert_eq!(stats.delivered, expected_queued);
    assert_eq!(stats.dropped_slow, 0);
    assert_eq!((stats.topics, stats.subscribers), (2, 5));
}

/// A socket's own `send`s and the hub's publishes to it arrive in program order: one
/// transmit queue.
#[tokio::test]
async fn send_and_publish_to_one_socket_keep_program_order() {
    let (server, url) = server().await;
    let hub = Hub::new();
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = accept_running(&server).await;
    hub.subscribe(&ws, "t").unwrap();
    let mut expected = Vec::new();
    for i in 0..3000 {
        // Runs of different lengths, short and long messages (the long ones queue as
        // chunks of their own, the short ones coalesce).
        let long = "x".repeat(if i % 5 == 0 { 5000 } else { 3 });
        if (i / 3) % 2 == 0 {
            ws.send(format!("send {i} {long}")).unwrap();
            expected.push(format!("send {i} {long}"));
        } else {
            assert_eq!(hub.publish("t", format!("publish {i} {long}")), 1);
            expected.push(format!("publish {i} {long}"));
        }
        if i % 250 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(texts(&mut client, expected.len()).await, expected);
}

/// How each cycle of the leak test ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The client closes with a handshake.
    ClientCloses,
    /// The server socket closes with a handshake.
    ServerCloses,
    /// The client's TCP connection is dropped (the server's close event says 1006).
    ClientVanishes,
}

/// A client that does the opening handshake by hand, to drop its TCP connection
/// without a close frame.
async fn raw_client(url: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("ws://").trim_end_matches('/');
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "response cut short");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tcp
}

/// 10,000 connect / subscribe / close cycles, ending three ways, leave no subscriber
/// and empty maps: a socket leaves its topics when it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_closed_subscribers_leave_nothing_behind() {
    const CYCLES: usize = 10_000;
    const AT_ONCE: usize = 100;
    let (server, url) = server().await;
    let hub = Hub::new();
    let mut abnormal = 0;
    for batch in 0..CYCLES / AT_ONCE {
        // The clients, each ending its own way ...
        let mut clients = Vec::new();
        for j in 0..AT_ONCE {
            let url = url.clone();
            let end = [End::ClientCloses, End::ServerCloses, End::ClientVanishes][j % 3];
            clients.push(tokio::spawn(async move {
                match end {
                    End::ClientVanishes => drop(raw_client(&url).await),
                    End::ClientCloses => {
                        let mut client = wsevents::connect(&url).await.unwrap();
                        client.close(CloseCode::NORMAL, "bye").await.unwrap();
                    }
                    End::ServerCloses => {
                        let mut client = wsevents::connect(&url).await.unwrap();
                        client.send(Message::text("close me")).await.unwrap();
                        while client.next().await.is_some() {}
                    }
                }
            }));
        }
        // ... and the server's sockets, in whatever order they are accepted: each is
        // subscribed to three topics and closes when its client asks.
        let mut sockets = Vec::new();
        for j in 0..AT_ONCE {
            let ws = server.accept().await.unwrap();
            for topic in ["all", &format!("own{}", j % 10), &format!("t{batch}")] {
                hub.subscribe(&ws, topic).unwrap();
            }
            let me = ws.clone();
            ws.on_message(move |_| me.close().unwrap());
            let hub = hub.clone();
            sockets.push(tokio::spawn(async move {
                let closed = ws.run().await;
                assert!(hub.topics(&ws).is_empty(), "{closed:?}: left its topics");
                closed.code
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
        for socket in sockets {
            if socket.await.unwrap() == CloseCode::ABNORMAL.as_u16() {
                abnormal += 1;
            }
        }
    }
    assert_eq!(
        abnormal,
        (0..CYCLES).filter(|j| j % AT_ONCE % 3 == 2).count()
    );
    let stats = hub.stats();
    assert_eq!(hub.subscriber_count("all"), 0);
    assert_eq!((stats.topics, stats.subscribers), (0, 0), "{stats:?}");
    assert_eq!(hub.publish("all", "anyone?"), 0);
}

/// A socket dropped without ever reaching its close event (nobody drove it) is
/// dropped from the maps at the next publish: the hub holds it weakly.
#[tokio::test]
async fn a_socket_dropped_undriven_is_forgotten_at_the_next_publish() {
    let (server, url) = server().await;
    let hub = Hub::new();
    let _client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    hub.subscribe(&ws, "t").unwrap();
    hub.subscribe(&ws, "u").unwrap();
    assert_eq!(hub.stats().subscribers, 1);
    drop(ws);
    assert_eq!(hub.publish("t", "gone?"), 0);
    let stats = hub.stats();
    assert_eq!((stats.topics, stats.subscribers), (0, 0), "{stats:?}");
}

/// Subscribing needs an open server socket: a client's is refused (its frames are
/// masked), and so is a closed one.
#[tokio::test]
async fn only_open_server_sockets_subscribe() {
    let (server, url) = server().await;
    let hub = Hub::new();
    let client = WebSocket::new(&url).unwrap();
    assert!(matches!(
        hub.subscribe(&client, "t"),
        Err(Error::InvalidState)
    ));
    let running = tokio::spawn({
        let client = client.clone();
        async move { client.run().await }
    });
    let ws = accept_running(&server).await;
    wait_until("open", || client.ready_state() == ReadyState::Open).await;
    assert!(matches!(
        hub.subscribe(&client, "t"),
        Err(Error::InvalidAccess(_))
    ));
    ws.close().unwrap();
    running.await.unwrap();
    wait_until("closed", || ws.ready_state() == ReadyState::Closed).await;
    assert!(matches!(hub.subscribe(&ws, "t"), Err(Error::InvalidState)));
    assert_eq!(hub.stats().subscribers, 0);
}

/// A server whose sockets have small kernel send buffers, so that a peer that stops
/// reading fills them with a few KiB.
async fn small_buffer_server() -> (Server, String) {
    let socket = TcpSocket::new_v4().unwrap();
    // Set before listen: accepted sockets inherit it.
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let server = Server::builder(wsevents::Acceptor::new()).serve(listener);
    let url = format!("ws://{}/", server.local_addr());
    (server, url)
}

/// A client whose kernel buffers are small, for a peer that stops reading.
async fn stalled_client(url: &str) -> wsevents::WebSocketStream<TcpStream> {
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    ClientBuilder::new(url)
        .unwrap()
        .deflate(None)
        .handshake(tcp)
        .await
        .unwrap()
}

/// One subscriber never reads: once its backlog would pass the bound, it is closed
/// with 1008 and counted, its backlog never passes the bound, the publisher never
/// waits, and the other subscribers get every message, in order. When the stalled
/// client reads at last, it finds a prefix of the messages, in order, then the close.
#[tokio::test]
async fn a_subscriber_that_never_reads_is_closed_and_the_others_get_everything() {
    const BOUND: usize = 64 * 1024;
    const N: usize = 2000;
    let (server, url) = server().await;
    let (small, small_url) = small_buffer_server().await;
    let hub = Hub::builder().max_backlog(BOUND).build();
    let mut stalled = stalled_client(&small_url).await;
    let slow = accept_running(&small).await;
    hub.subscribe(&slow, "feed").unwrap();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let client = wsevents::connect(&url).await.unwrap();
        let ws = accept_running(&server).await;
        hub.subscribe(&ws, "feed").unwrap();
        readers.push(tokio::spawn(async move {
            let mut client = client;
            texts(&mut client, N).await
        }));
    }
    let payload = "j".repeat(1024);
    let mut closed_at = None;
    for i in 0..N {
        let started = std::time::Instant::now();
        let queued = hub.publish("feed", format!("{i:06} {payload}"));
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "publish {i} waited"
        );
        assert!(
            slow.buffered_amount() <= BOUND as u64,
            "backlog {} over the bound",
            slow.buffered_amount()
        );
        match (queued, closed_at) {
            (4, None) => {}
            (3, None) => closed_at = Some(i),
            (3, Some(_)) => {}
            other => panic!("publish {i}: {other:?}"),
        }
        // Let the drivers write (the readers keep up, the stalled one cannot).
        tokio::task::yield_now().await;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let closed_at = closed_at.expect("the stalled subscriber was never closed");
    assert!(closed_at > 10, "closed at once ({closed_at})");
    assert_eq!(hub.stats().dropped_slow, 1);
    assert_ne!(slow.ready_state(), ReadyState::Open);
    for reader in readers {
        let got = reader.await.unwrap();
        let expected: Vec<String> = (0..N).map(|i| format!("{i:06} {payload}")).collect();
        assert!(got == expected, "a reader missed or reordered messages");
    }
    // The stalled client reads at last: messages 0..closed_at in order, then 1008.
    let mut next = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                assert_eq!(text.as_str(), format!("{next:06} {payload}"));
                next += 1;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(other))) => panic!("{other:?}"),
            Err(_) => panic!("the stalled client never saw the close"),
        }
    }
    assert_eq!(
        next, closed_at,
        "everything queued before the close, nothing after"
    );
    let closure = stalled.closure().expect("a close frame");
    assert_eq!(closure.code(), SLOW_CLOSE_CODE);
    assert_eq!(closure.reason(), SLOW_CLOSE_REASON);
    assert_eq!(DEFAULT_MAX_BACKLOG, 1 << 20);
}

/// A transport that counts the bytes it reads.
#[derive(Debug)]
struct Counting {
    tcp: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A 1 KiB JSON-like message, as a chat or a price feed sends.
fn json_like(seed: u64) -> String {
    let mut out = String::from("[");
    let mut i = seed * 1000;
    while out.len() < 1023 {
        out.push_str(&format!(
            r#"{{"id":{i},"user":"user{}","text":"hello number {i}","ts":{}}},"#,
            i % 7,
            1_700_000_000 + i * 13
        ));
        i += 1;
    }
    out.truncate(1023);
    out.push(']');
    out
}

/// The deflate rule, measured: a publish reaches a permessage-deflate subscriber as the
/// shared, uncompressed frame (and is read correctly), where a `send` to it is
/// compressed for it alone. Prints both sizes.
#[tokio::test]
async fn deflate_subscribers_get_the_frame_uncompressed() {
    const ROUNDS: u64 = 50;
    let (server, url) = server().await;
    let hub = Hub::new();
    let addr = server.local_addr();
    let read = Arc::new(AtomicU64::new(0));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut client = ClientBuilder::new(&url)
        .unwrap()
        .handshake(Counting {
            tcp,
            read: read.clone(),
        })
        .await
        .unwrap();
    let ws = accept_running(&server).await;
    assert!(ws.extensions().contains("permessage-deflate"), "negotiated");
    hub.subscribe(&ws, "t").unwrap();
    let messages: Vec<String> = (0..ROUNDS).map(json_like).collect();
    assert!(messages.iter().all(|m| m.len() == 1024));

    let count = |read: &AtomicU64| read.load(Ordering::Relaxed);
    let start = count(&read);
    for message in &messages {
        hub.publish("t", message.as_str());
    }
    assert_eq!(texts(&mut client, messages.len()).await, messages);
    let published = (count(&read) - start) / ROUNDS;

    // The first message compressed on a fresh context, then the rest (context
    // takeover: later messages refer back to earlier ones).
    let start = count(&read);
    ws.send(messages[0].as_str()).unwrap();
    assert_eq!(texts(&mut client, 1).await, messages[..1]);
    let first = count(&read) - start;
    let start = count(&read);
    for message in &messages[1..] {
        ws.send(message.as_str()).unwrap();
    }
    assert_eq!(texts(&mut client, messages.len() - 1).await, messages[1..]);
    let sent = (count(&read) - start) / (ROUNDS - 1);
    println!(
        "1 KiB JSON-like message on a deflate connection: {published} B per publish (shared, \
         uncompressed); a send compressed for this subscriber alone: {first} B the first, \
         {sent} B on average after it (context takeover)"
    );
    assert_eq!(published, 1024 + 4, "header + payload, as it is");
    assert!(first < published / 2, "{first} B compressed");
    assert!(sent <= first, "{sent} B compressed with takeover");
}
