//! The seed's event API over real sockets on 127.0.0.1, rule by rule (issue: "The
//! seed's event API"), client side and server side.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use wsevents::{
    BinaryType, Blob, CloseEvent, Data, Error, Event, EventType, Message, ReadyState, Server,
    WebSocket,
};

/// Long enough for anything here on a loaded machine; a hang fails instead of
/// blocking.
const LIMIT: Duration = Duration::from_secs(10);

/// What handlers saw, in order; a test can wait for an entry ([`wait_for`]).
type Log = Arc<watch::Sender<Vec<String>>>;

fn log() -> Log {
    Arc::new(watch::Sender::new(Vec::new()))
}

fn push(log: &Log, entry: impl Into<String>) {
    let entry = entry.into();
    log.send_modify(|entries| entries.push(entry));
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// Wait (at most [`LIMIT`]) until `log` holds an entry starting with `prefix`.
async fn wait_for(log: &Log, prefix: &str) {
    let mut seen = log.subscribe();
    let found = seen.wait_for(|entries| entries.iter().any(|e| e.starts_with(prefix)));
    match timeout(LIMIT, found).await {
        Ok(found) => drop(found.unwrap()),
        Err(_) => panic!("no {prefix:?} within {LIMIT:?}: {:?}", entries(log)),
    }
}

fn describe(data: &Data) -> String {
    match data {
        Data::Text(t) => format!("text:{t}"),
        Data::Blob(b) => format!("blob:{}", b.size()),
        Data::ArrayBuffer(a) => format!("arraybuffer:{}", a.len()),
        _ => "other".into(),
    }
}

/// An event-API echo server: every accepted socket echoes; server-side events are
/// logged into `log` with an `s:` prefix.
async fn echo_server(log: Log) -> String {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let echo = ws.clone();
                let l = log.clone();
                ws.on_open(move |_| push(&l, "s:open"));
                let l = log.clone();
                ws.on_message(move |e| {
                    push(&l, format!("s:message:{}", describe(&e.data)));
                    let _ = match &e.data {
                        Data::Text(t) if t == "close-4000" => echo.close_with(4000, "custom"),
                        Data::Text(t) if t == "close-empty" => echo.close(),
                        Data::Text(t) => echo.send(t.as_str()),
                        other => echo.send(other.as_bytes().to_vec()),
                    };
                });
                let l = log.clone();
                ws.on_close(move |e| {
                    push(
                        &l,
                        format!("s:close:{}:{}:{}", e.code, e.reason, e.was_clean),
                    )
                });
                ws.run().await;
            });
        }
    });
    url
}

/// Rule 1 and 2: `new` returns at once in CONNECTING, `open` fires once, handlers set
/// before `run` see every event, in order, `close` last.
#[tokio::test]
async fn open_fires_once_and_events_come_in_order() {
    let server_log = log();
    let url = echo_server(server_log.clone()).await;
    let ws = WebSocket::new(&format!("{url}/chat")).unwrap();
    assert_eq!(ws.ready_state(), ReadyState::Connecting);
    assert_eq!(ws.url(), format!("{url}/chat"));
    let log = log();
    let (l, sender) = (log.clone(), ws.clone());
    ws.on_open(move |_| {
        push(&l, "open");
        sender.send("a").unwrap();
        sender.send("b").unwrap();
        sender.send("close-4000").unwrap();
    });
    let l = log.clone();
    ws.on_message(move |e| push(&l, format!("message:{}", describe(&e.data))));
    let l = log.clone();
    ws.on_close(move |e| push(&l, format!("close:{}", e.code)));
    let closed = ws.run().await;
    assert_eq!(closed.code, 4000);
    assert_eq!(
        entries(&log),
        ["open", "message:text:a", "message:text:b", "close:4000"]
    );
    assert_eq!(ws.ready_state(), ReadyState::Closed);
    wait_for(&server_log, "s:close:").await;
    let server = entries(&server_log);
    assert_eq!(
        server.first().map(String::as_str),
        Some("s:open"),
        "{server:?}"
    );
    assert_eq!(server.iter().filter(|e| *e == "s:open").count(), 1);
    assert_eq!(
        server.last().map(String::as_str),
        Some("s:close:4000:custom:true"),
        "{server:?}"
    );
}

/// Rule 2: listeners of a type run in the order added; `on_x` replaces `on_x` but not
/// listeners; removed listeners stop.
#[tokio::test]
async fn listeners_run_in_order_and_on_x_replaces_only_itself() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    let log = log();
    let l = log.clone();
    ws.add_event_listener(EventType::Message, move |_| push(&l, "listener-1"));
    let l = log.clone();
    ws.on_message(move |_| push(&l, "first on_message"));
    let l = log.clone();
    let removed = ws.add_event_listener(EventType::Message, move |_| push(&l, "removed"));
    let l = log.clone();
    ws.add_event_listener(EventType::Message, move |e| {
        assert_eq!(e.event_type(), EventType::Message);
        push(&l, "listener-2");
    });
    let l = log.clone();
    ws.on_message(move |_| push(&l, "second on_message"));
    assert!(ws.remove_event_listener(removed));
    let sender = ws.clone();
    ws.on_open(move |_| sender.send("x").unwrap());
    let closer = ws.clone();
    let l = log.clone();
    ws.add_event_listener(EventType::Message, move |_| {
        push(&l, "listener-3");
        closer.close().unwrap();
    });
    ws.run().await;
    assert_eq!(
        entries(&log),
        [
            "listener-1",
            "second on_message",
            "listener-2",
            "listener-3"
        ]
    );
}

/// Rule 3: `send` while CONNECTING, CLOSING or CLOSED is an invalid state, and
/// `buffered_amount` counts queued bytes until they are written.
#[tokio::test]
async fn send_outside_open_is_invalid_state_and_buffered_amount_drains() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    assert!(matches!(ws.send("early"), Err(Error::InvalidState)));
    let seen = log();
    let (l, sender) = (seen.clone(), ws.clone());
    ws.on_open(move |_| {
        sender.send(vec![7u8; 10_000]).unwrap();
        // Still on the driving task: nothing was written yet.
        push(&l, format!("queued:{}", sender.buffered_amount() >= 10_000));
    });
    let (l, sender) = (seen.clone(), ws.clone());
    ws.on_message(move |_| {
        push(&l, format!("after-echo:{}", sender.buffered_amount()));
        sender.close_with(1000, "done").unwrap();
        push(&l, format!("closing:{:?}", sender.ready_state()));
        push(
            &l,
            format!(
                "send-while-closing:{}",
                matches!(sender.send("late"), Err(Error::InvalidState))
            ),
        );
    });
    ws.run().await;
    assert_eq!(
        entries(&seen),
        [
            "queued:true",
            "after-echo:0",
            "closing:Closing",
            "send-while-closing:true"
        ]
    );
    assert!(matches!(ws.send("after"), Err(Error::InvalidState)));
    assert_eq!(ws.buffered_amount(), 0);
}

/// Rule 4: close codes and reasons are checked; closing twice does nothing.
#[tokio::test]
async fn close_checks_code_and_reason_and_is_idempotent() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    for code in [0, 999, 1001, 1005, 1006, 2999, 5000] {
        assert!(
            matches!(ws.close_with(code, ""), Err(Error::InvalidAccess(_))),
            "{code}"
        );
    }
    assert!(matches!(
        ws.close_with(1000, &"x".repeat(124)),
        Err(Error::Syntax(_))
    ));
    assert!(matches!(
        ws.close_with(3000, "κόσμε".repeat(13).as_str()),
        Err(Error::Syntax(_))
    ));
    let closer = ws.clone();
    ws.on_open(move |_| {
        closer.close_with(4999, &"r".repeat(123)).unwrap();
        closer.close_with(1000, "again").unwrap();
        closer.close().unwrap();
    });
    let closed = ws.run().await;
    assert!(closed.was_clean);
    assert_eq!(closed.code, 4999, "the server echoes our code");
    ws.close().unwrap();
    ws.close_with(1000, "closed already").unwrap();
}

/// Rule 4: `close` while connecting fails the connection: error, then close 1006.
#[tokio::test]
async fn close_while_connecting_fails_the_connection() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    let seen = log();
    let l = seen.clone();
    ws.on_open(move |_| push(&l, "open"));
    let l = seen.clone();
    ws.on_error(move |e| push(&l, format!("error:{}", e.error().is_some())));
    ws.close().unwrap();
    let closed = ws.run().await;
    assert_eq!((closed.code, closed.was_clean), (1006, false));
    assert_eq!(entries(&seen), ["error:true"]);
}

/// Rule 5: the peer's code and reason; 1005 for a close frame without a code.
#[tokio::test]
async fn close_event_reports_the_peers_code_or_1005() {
    let url = echo_server(log()).await;
    for (trigger, code, reason) in [("close-4000", 4000, "custom"), ("close-empty", 1005, "")] {
        let ws = WebSocket::new(&url).unwrap();
        let sender = ws.clone();
        ws.on_open(move |_| sender.send(trigger).unwrap());
        let closed = ws.run().await;
        assert_eq!(
            closed,
            CloseEvent {
                code,
                reason: reason.into(),
                was_clean: true
            }
        );
    }
}

/// Rule 5: a TCP connection that ends without a close handshake is 1006, unclean, and
/// an error event comes first.
#[tokio::test]
async fn vanished_peer_is_error_then_close_1006() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).to_string();
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_owned();
        let accept = wsevents_proto::handshake::accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        tcp.write_all(response.as_bytes()).await.unwrap();
        tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        // Vanish without a close frame.
    });
    let ws = WebSocket::new(&url).unwrap();
    let seen = log();
    let l = seen.clone();
    ws.add_event_listener(EventType::Open, move |_| push(&l, "open"));
    let l = seen.clone();
    ws.add_event_listener(EventType::Message, move |e| {
        push(&l, describe(&e.as_message().unwrap().data))
    });
    let l = seen.clone();
    ws.add_event_listener(EventType::Error, move |_| push(&l, "error"));
    let l = seen.clone();
    ws.add_event_listener(EventType::Close, move |e| {
        let c = e.as_close().unwrap();
        push(&l, format!("close:{}:{}", c.code, c.was_clean));
    });
    ws.run().await;
    assert_eq!(
        entries(&seen),
        ["open", "text:hi", "error", "close:1006:false"]
    );
}

/// Rule 6: `binary_type` at dispatch time decides Blob or ArrayBuffer; text is text.
#[tokio::test]
async fn binary_type_applies_at_dispatch() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    assert_eq!(ws.binary_type(), BinaryType::Blob);
    let seen = log();
    let sender = ws.clone();
    ws.on_open(move |_| {
        sender.send(Blob::from("blob contents")).unwrap();
        sender.send(&[1u8, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        sender.send("text").unwrap();
        sender.send(bytes::Bytes::from_static(b"bytes")).unwrap();
    });
    let (l, ws2) = (seen.clone(), ws.clone());
    ws.on_message(move |e| {
        push(&l, describe(&e.data));
        ws2.set_binary_type(BinaryType::ArrayBuffer);
        if let Data::Blob(blob) = &e.data {
            push(&l, blob.text());
        }
        if e.data.as_bytes() == b"bytes" {
            ws2.close().unwrap();
        }
    });
    ws.run().await;
    assert_eq!(
        entries(&seen),
        [
            "blob:13",
            "blob contents",
            "arraybuffer:8",
            "text:text",
            "arraybuffer:5"
        ]
    );
}

/// Rule 7: a panicking handler is reported as an error event; the connection and
/// dispatch go on.
#[tokio::test]
async fn panicking_handler_is_reported_and_dispatch_goes_on() {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    let seen = log();
    let sender = ws.clone();
    ws.on_open(move |_| {
        sender.send("boom").unwrap();
        sender.send("fine").unwrap();
    });
    let (l, closer) = (seen.clone(), ws.clone());
    ws.on_message(move |e| {
        if e.data.as_text() == Some("boom") {
            panic!("handler exploded");
        }
        push(&l, describe(&e.data));
        closer.close().unwrap();
    });
    let l = seen.clone();
    ws.on_error(move |e| {
        push(
            &l,
            format!("error:{}", e.message().contains("handler exploded")),
        )
    });
    let closed = ws.run().await;
    assert!(closed.was_clean);
    assert_eq!(entries(&seen), ["error:true", "text:fine"]);
}

/// Rule 7, server side: a server handler that panics does not take the server down.
#[tokio::test]
async fn panicking_server_handler_leaves_the_server_up() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            tokio::spawn(async move {
                let echo = ws.clone();
                ws.on_message(move |e| {
                    if e.data.as_text() == Some("boom") {
                        panic!("server handler exploded");
                    }
                    echo.send(e.data.as_bytes().to_vec()).unwrap();
                });
                ws.run().await;
            });
        }
    });
    for _ in 0..2 {
        let mut ws = wsevents::connect(&url).await.unwrap();
        ws.send(Message::text("boom")).await.unwrap();
        ws.send(Message::text("ok")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(b"ok".to_vec())
        );
        ws.close(wsevents::CloseCode::NORMAL, "").await.unwrap();
    }
}

/// Rule 8: a slow handler slows reading: a peer flooding a connection whose handler
/// takes 50 ms a message is held back by TCP. Measured each time the handler takes a
/// message, how far the peer's sends are ahead of what the handler took is bounded
/// both ways: at most what the buffers between them hold (16 MiB; without
/// backpressure the peer would be hundreds of MiB ahead), and at least one message
/// (the peer really outpaces the handler, so what caps it is backpressure, not a slow
/// peer or a stalled connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_applies_backpressure() {
    const MESSAGE: usize = 64 * 1024;
    const TAKEN: usize = 20;
    const BUFFERS: usize = 16 << 20;
    let sent = Arc::new(AtomicUsize::new(0));
    let server = wsevents::Server::builder(wsevents::Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}", server.local_addr());
    let counter = sent.clone();
    let flood = tokio::spawn(async move {
        let (mut ws, _) = server.accept_stream().await.unwrap();
        // Incompressible (xorshift noise), so permessage-deflate cannot shrink what
        // TCP has to carry.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..MESSAGE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let payload = bytes::Bytes::from(noise);
        // Flood: 10,000 x 64 KiB = 640 MiB, far more than any buffer.
        for _ in 0..10_000 {
            if ws.send(Message::Binary(payload.clone())).await.is_err() {
                break;
            }
            counter.fetch_add(MESSAGE, Ordering::SeqCst);
        }
    });
    let ws = WebSocket::new(&url).unwrap();
    // (messages taken, how far ahead the peer was at each: least, most).
    let (report, mut reported) = watch::channel((0, usize::MAX, 0));
    let closer = ws.clone();
    ws.on_message(move |_| {
        // The slow work: this blocks the driving task, as a slow handler does.
        std::thread::sleep(Duration::from_millis(50));
        let ahead = sent.load(Ordering::SeqCst);
        report.send_modify(|(taken, least, most)| {
            *taken += 1;
            let ahead = ahead.saturating_sub(*taken * MESSAGE);
            *least = (*least).min(ahead);
            *most = (*most).max(ahead);
        });
        if report.borrow().0 == TAKEN {
            closer.close().unwrap();
        }
    });
    let run = tokio::spawn(async move { ws.run().await });
    let done = reported.wait_for(|(taken, ..)| *taken >= TAKEN);
    let (taken, least, most) = *timeout(LIMIT, done)
        .await
        .expect("the slow handler took its messages")
        .unwrap();
    eprintln!("after {taken} messages the flooding peer was {least}..={most} bytes ahead");
    assert!(
        most <= BUFFERS,
        "the flooding peer got {most} bytes ahead of a handler that took {taken} messages"
    );
    assert!(
        least >= MESSAGE,
        "the peer was only {least} bytes ahead: it did not outpace the handler"
    );
    run.abort();
    flood.abort();
}
/// The server side is the same type: its socket reports open, protocol, url, and
/// `send` outside OPEN is an invalid state there too.
#[tokio::test]
async fn server_side_socket_has_the_same_api() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    let checks = log();
    let c = checks.clone();
    tokio::spawn(async move {
        let ws = server.accept().await.unwrap();
        push(&c, format!("state:{:?}", ws.ready_state()));
        push(&c, format!("url:{}", ws.url().ends_with("/room?x=1")));
        let sender = ws.clone();
        ws.on_message(move |e| {
            sender
                .send(format!("echo {}", e.data.as_text().unwrap_or("")))
                .unwrap();
        });
        let closed = ws.run().await;
        push(&c, format!("closed:{}:{}", closed.code, closed.reason));
        push(
            &c,
            format!(
                "late-send:{}",
                matches!(ws.send("x"), Err(Error::InvalidState))
            ),
        );
    });
    let mut client = wsevents::connect(&format!("{url}/room?x=1")).await.unwrap();
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text("echo hi")
    );
    client
        .close(wsevents::CloseCode::from(3001), "bye")
        .await
        .unwrap();
    wait_for(&checks, "late-send:").await;
    assert_eq!(
        entries(&checks),
        [
            "state:Open",
            "url:true",
            "closed:3001:bye",
            "late-send:true"
        ]
    );
}

/// `WebSocket` is `Clone + Send + Sync`, and URL and protocol errors come at once.
#[test]
fn constructor_errors_are_syntax_errors() {
    fn assert_send_sync<T: Clone + Send + Sync>() {}
    assert_send_sync::<WebSocket>();
    for bad in ["ftp://x/", "ws://x/#frag", "nonsense"] {
        assert!(
            matches!(WebSocket::new(bad), Err(Error::Syntax(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        WebSocket::with_protocols("ws://x/", &["chat", "CHAT"]),
        Err(Error::Syntax(_))
    ));
    assert!(matches!(
        WebSocket::with_protocols("ws://x/", &["bad token"]),
        Err(Error::Syntax(_))
    ));
    assert_eq!(
        WebSocket::new("http://example.com/x").unwrap().url(),
        "ws://example.com/x"
    );
    let _unused: Option<Event> = None;
}

/// A `send` from another task reaches the socket while the driving task waits for
/// input: the driver is parked, and the send must wake it (a handler's own send does
/// not need to). On a runtime of one thread this task runs only while the driver is
/// not running, so every send here finds it parked (or already woken): a send that
/// did not wake it would leave its echo unsent.
#[tokio::test(flavor = "current_thread")]
async fn a_send_from_another_task_wakes_the_parked_driver() {
    sends_from_another_task_reach_the_peer(100).await;
}

/// The same on two workers, so sender and driver race on different threads: one
/// round trip at a time, each send landing somewhere in the driver's way to parking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_from_another_thread_wakes_the_driver() {
    sends_from_another_task_reach_the_peer(500).await;
}

/// Open a socket to the echo server, then from this task send `rounds` messages one
/// round trip at a time, each awaited with a bounded timeout.
async fn sends_from_another_task_reach_the_peer(rounds: u32) {
    let url = echo_server(log()).await;
    let ws = WebSocket::new(&url).unwrap();
    ws.set_binary_type(BinaryType::ArrayBuffer);
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let opened_tx = Mutex::new(Some(opened_tx));
    ws.on_open(move |_| {
        if let Some(tx) = opened_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    });
    let (echoed_tx, mut echoed) = tokio::sync::mpsc::unbounded_channel();
    ws.on_message(move |e| {
        let _ = echoed_tx.send(e.data.clone());
    });
    let driver = ws.clone();
    let run = tokio::spawn(async move { driver.run().await });
    timeout(LIMIT, opened).await.unwrap().unwrap();
    ws.send("first").unwrap();
    let got = timeout(LIMIT, echoed.recv()).await;
    let got = got.unwrap_or_else(|_| panic!("the first echo never came: the driver slept"));
    assert_eq!(got, Some(Data::Text("first".into())));
    for i in 0..rounds {
        ws.send(bytes::Bytes::from(i.to_be_bytes().to_vec()))
            .unwrap();
        let got = timeout(LIMIT, echoed.recv()).await;
        let got = got.unwrap_or_else(|_| panic!("echo {i} never came: the driver slept"));
        assert_eq!(
            got.map(|d| d.to_bytes()),
            Some(i.to_be_bytes().to_vec().into())
        );
    }
    ws.close_with(1000, "done").unwrap();
    let closed = timeout(LIMIT, run).await;
    assert_eq!(closed.unwrap().unwrap().code, 1000);
}
