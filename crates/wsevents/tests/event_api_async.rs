//! Handlers that await, over real sockets on 127.0.0.1 (issue 26, items 1, 2 and 6):
//! with `on_message_async` under `run`, and with a `next_event` loop that awaits, the
//! events of a connection are handled one at a time, in order, while the connection
//! stays driven (pongs, a client's keepalive, a clone's and the hub's sends, the
//! peer's close); reading pauses once `max_queue` messages wait; a handler that
//! panics is reported with `error`, then the close (1011).
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use wsevents::hub::Hub;
use wsevents::{
    ClientBuilder, CloseCode, CloseEvent, Config, Event, EventType, Message, Server, WebSocket,
};

const TIMEOUT: Duration = Duration::from_secs(10);
const LOOKUP: Duration = Duration::from_millis(50);
const SLOW: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);
const TICKS: usize = 10;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: impl Into<String>) {
    log.lock().unwrap().push(entry.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A server that sets up every socket it accepts with `setup`, then runs it (`run`);
/// the close events come out of the receiver.
async fn serve(
    setup: impl Fn(&WebSocket) + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<CloseEvent>) {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let (closes, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            setup(&ws);
            let closes = closes.clone();
            tokio::spawn(async move {
                let _ = closes.send(ws.run().await);
            });
        }
    });
    (url, closed)
}

/// A lookup in another service: 50 ms.
async fn lookup(question: &str) -> String {
    tokio::time::sleep(LOOKUP).await;
    format!("answer:{question}")
}

async fn next_text<S>(ws: &mut wsevents::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The first table: five 50 ms lookups on one connection with an async
/// handler come back in order, one at a time (never faster than five lookups), and in
/// about that time.
#[tokio::test]
async fn five_lookups_are_answered_in_order_one_at_a_time() {
    let (url, _closed) = serve(|ws| {
        let reply = ws.clone();
        ws.on_message_async(move |e| {
            let reply = reply.clone();
            async move {
                let answer = lookup(e.data.as_text().unwrap()).await;
                reply.send(answer).unwrap();
            }
        });
    })
    .await;
    let mut client = wsevents::connect(&url).await.unwrap();
    let start = Instant::now();
    for q in 0..5 {
        client.feed(Message::text(format!("q{q}"))).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(next_text(&mut client).await);
    }
    let took = start.elapsed();
    assert_eq!(
        answers,
        [
            "answer:q0",
            "answer:q1",
            "answer:q2",
            "answer:q3",
            "answer:q4"
        ]
    );
    assert!(took >= LOOKUP * 5, "one at a time: {took:?}");
    assert!(took < LOOKUP * 5 + Duration::from_secs(3), "{took:?}");
    client.close(CloseCode::NORMAL, "").await.unwrap();
}

/// How the server of the slow scenario is written.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// `on_message_async` under `run`.
    AsyncHandler,
    /// `while let Some(e) = ws.next_event().await { … .await … }`.
    NextEventLoop,
}

/// What sends the ticks while the handler awaits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ticks {
    None,
    /// Another clone of the socket, in another task.
    Clone,
    /// The hub, to the topic the socket is subscribed to.
    Hub,
}

/// The scenario: on "slow", the server's handler awaits 1 s, then answers
/// "done"; meanwhile (with `ticks`) ten ticks go to the client, one every 100 ms, from
/// another task.
async fn slow_server(style: Style, ticks: Ticks) -> String {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let hub = Hub::new();
    tokio::spawn(async move {
        let ws = server.accept().await.unwrap();
        hub.subscribe(&ws, "ticks").unwrap();
        let start_ticking = Arc::new(Notify::new());
        if ticks != Ticks::None {
            let (ticker, hub, start) = (ws.clone(), hub.clone(), start_ticking.clone());
            tokio::spawn(async move {
                start.notified().await;
                let mut interval = tokio::time::interval(TICK);
                for n in 0..TICKS {
                    interval.tick().await;
                    let tick = format!("tick {n}");
                    match ticks {
                        Ticks::Hub => assert_eq!(hub.publish("ticks", tick), 1),
                        _ => ticker.send(tick).unwrap(),
                    }
                }
            });
        }
        match style {
            Style::AsyncHandler => {
                let reply = ws.clone();
                ws.on_message_async(move |e| {
                    let (reply, start) = (reply.clone(), start_ticking.clone());
                    async move {
                        if e.data.as_text() == Some("slow") {
                            start.notify_one();
                            tokio::time::sleep(SLOW).await;
                            reply.send("done").unwrap();
                        }
                    }
                });
                ws.run().await;
            }
            Style::NextEventLoop => {
                while let Some(event) = ws.next_event().await {
                    if let Event::Message(e) = event
                        && e.data.as_text() == Some("slow")
                    {
                        start_ticking.notify_one();
                        tokio::time::sleep(SLOW).await;
                        ws.send("done").unwrap();
                    }
                }
            }
        }
    });
    url
}

/// What the client of the slow scenario saw.
#[derive(Debug, Default)]
struct Seen {
    /// Ticks, with when each arrived.
    ticks: Vec<(String, Instant)>,
    done: Option<Instant>,
    /// Pongs that answered this client's keepalive pings.
    keepalive_pongs: usize,
}

/// A browser-like client with a 300 ms keepalive (a ping after 300 ms of silence,
/// dropped 300 ms later without an answer): it sends "slow", waits for "done", closes.
async fn slow_client(url: &str) -> (CloseEvent, Seen) {
    let config = Config {
        ping_interval: Some(Duration::from_millis(300)),
        pong_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let ws = WebSocket::connecting(ClientBuilder::new(url).unwrap().config(config));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sender = ws.clone();
    ws.on_open(move |_| sender.send("slow").unwrap());
    let (s, closer) = (seen.clone(), ws.clone());
    ws.on_message(move |e| {
        let text = e.data.as_text().unwrap().to_owned();
        let mut seen = s.lock().unwrap();
        if text == "done" {
            seen.done = Some(Instant::now());
            closer.close_with(1000, "thanks").unwrap();
        } else {
            seen.ticks.push((text, Instant::now()));
        }
    });
    let s = seen.clone();
    ws.on_pong(move |e| {
        if e.rtt.is_some() {
            s.lock().unwrap().keepalive_pongs += 1;
        }
    });
    let closed = tokio::time::timeout(TIMEOUT, ws.run()).await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (closed, seen)
}

/// The client kept its connection (closed it itself, cleanly, after "done").
#[track_caller]
fn assert_stayed_connected(closed: &CloseEvent, seen: &Seen) {
    assert!(seen.done.is_some(), "no answer: {closed:?}");
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.was_clean),
        (1000, "thanks", true)
    );
}

/// Ten ticks, in order, all before "done", spread over the second rather than in one
/// burst at its end (on time: the first and the last 900 ms apart; a burst, 0).
#[track_caller]
fn assert_ticks_on_time(seen: &Seen) {
    let names: Vec<&str> = seen.ticks.iter().map(|(t, _)| t.as_str()).collect();
    let expected: Vec<String> = (0..TICKS).map(|n| format!("tick {n}")).collect();
    assert_eq!(names, expected);
    let (first, last) = (seen.ticks[0].1, seen.ticks[TICKS - 1].1);
    let done = seen.done.unwrap();
    assert!(last <= done, "every tick before the answer");
    let spread = last - first;
    assert!(
        spread >= TICK * (TICKS as u32 - 1) / 2,
        "the ticks came in a burst: {spread:?} from the first to the last"
    );
}

/// While the handler awaits 1 s in silence, the client's keepalive pings (every
/// 300 ms of silence) are answered, so it stays connected.
#[tokio::test]
async fn pongs_are_answered_while_an_async_handler_awaits() {
    let url = slow_server(Style::AsyncHandler, Ticks::None).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert!(seen.keepalive_pongs >= 2, "{seen:?}");
}

/// While the handler awaits 1 s, a clone's ticks (every 100 ms) go out on time.
#[tokio::test]
async fn a_clones_sends_go_out_on_time_while_an_async_handler_awaits() {
    let url = slow_server(Style::AsyncHandler, Ticks::Clone).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert_ticks_on_time(&seen);
}

/// The same with the hub's publications.
#[tokio::test]
async fn hub_publications_go_out_on_time_while_an_async_handler_awaits() {
    let url = slow_server(Style::AsyncHandler, Ticks::Hub).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert_ticks_on_time(&seen);
}

/// Item 2: a `next_event` loop that awaits 1 s keeps the connection driven too: the
/// client's keepalive is answered (before: unanswered, it dropped the connection with
/// 1011 at about 850 ms).
#[tokio::test]
async fn pongs_are_answered_while_a_next_event_loop_awaits() {
    let url = slow_server(Style::NextEventLoop, Ticks::None).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert!(seen.keepalive_pongs >= 2, "{seen:?}");
}

/// Item 2: a clone's ticks go out on time while a `next_event` loop awaits (before:
/// all ten in one burst after the second).
#[tokio::test]
async fn a_clones_sends_go_out_on_time_while_a_next_event_loop_awaits() {
    let url = slow_server(Style::NextEventLoop, Ticks::Clone).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert_ticks_on_time(&seen);
}

/// Item 2, with the hub.
#[tokio::test]
async fn hub_publications_go_out_on_time_while_a_next_event_loop_awaits() {
    let url = slow_server(Style::NextEventLoop, Ticks::Hub).await;
    let (closed, seen) = slow_client(&url).await;
    assert_stayed_connected(&closed, &seen);
    assert_ticks_on_time(&seen);
}

/// A handler and listeners of the same event run one after the other, the listener
/// after the handler's work is done, and the next message only then; `close` last.
#[tokio::test]
async fn an_async_handler_and_listeners_keep_the_order_of_events() {
    let log: Log = Arc::default();
    let l = log.clone();
    let (url, mut closed) = serve(move |ws| {
        let l2 = l.clone();
        ws.on_message_async(move |e| {
            let l = l2.clone();
            async move {
                let text = e.data.as_text().unwrap().to_owned();
                push(&l, format!("handler {text}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                push(&l, format!("handled {text}"));
            }
        });
        let l2 = l.clone();
        ws.add_event_listener(EventType::Message, move |e| {
            let text = e.as_message().unwrap().data.as_text().unwrap();
            push(&l2, format!("listener {text}"));
        });
        let l2 = l.clone();
        ws.on_close(move |e| push(&l2, format!("close {}", e.code)));
    })
    .await;
    let mut client = wsevents::connect(&url).await.unwrap();
    for text in ["a", "b", "c"] {
        client.feed(Message::text(text)).await.unwrap();
    }
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let close = tokio::time::timeout(TIMEOUT, closed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(close.code, 1000);
    assert_eq!(
        entries(&log),
        [
            "handler a",
            "handled a",
            "listener a",
            "handler b",
            "handled b",
            "listener b",
            "handler c",
            "handled c",
            "listener c",
            "close 1000"
        ]
    );
}

/// The peer's close is answered while the handler awaits: the client's close
/// handshake completes while the handler is still held (it is released only after);
/// the handler's late `send` is an invalid state, and the close event comes after
/// the message's handling.
#[tokio::test]
async fn the_peers_close_is_answered_while_a_handler_awaits() {
    let gate = Arc::new(Notify::new());
    let log: Log = Arc::default();
    let (g, l) = (gate.clone(), log.clone());
    let (url, mut closed) = serve(move |ws| {
        let (g, l2, reply) = (g.clone(), l.clone(), ws.clone());
        ws.on_message_async(move |_| {
            let (g, l, reply) = (g.clone(), l2.clone(), reply.clone());
            async move {
                g.notified().await;
                let late = reply.send("too late");
                push(&l, format!("late send: {late:?}"));
            }
        });
        let l2 = l.clone();
        ws.on_close(move |e| push(&l2, format!("close {} {}", e.code, e.was_clean)));
    })
    .await;
    let mut client = wsevents::connect(&url).await.unwrap();
    client.send(Message::text("hold")).await.unwrap();
    let closure = tokio::time::timeout(TIMEOUT, client.close(CloseCode::NORMAL, "bye"))
        .await
        .expect("the close handshake completes while the handler awaits")
        .unwrap();
    assert!(closure.was_clean());
    assert!(entries(&log).is_empty(), "the handler is still held");
    gate.notify_one();
    let close = tokio::time::timeout(TIMEOUT, closed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((close.code, close.was_clean), (1000, true));
    assert_eq!(
        entries(&log),
        ["late send: Err(InvalidState)", "close 1000 true"]
    );
}

/// A handler that panics: an `error` event says so, then the connection closes with
/// 1011, which the client receives; the server keeps serving others.
#[tokio::test]
async fn a_panicking_async_handler_is_reported_and_closes_with_1011() {
    let log: Log = Arc::default();
    let l = log.clone();
    let (url, mut closed) = serve(move |ws| {
        let reply = ws.clone();
        ws.on_message_async(move |e| {
            let reply = reply.clone();
            async move {
                tokio::task::yield_now().await;
                if e.data.as_text() == Some("boom") {
                    panic!("the lookup exploded");
                }
                reply.send("fine").unwrap();
            }
        });
        let l2 = l.clone();
        ws.on_error(move |e| push(&l2, format!("error: {}", e.message())));
        let l2 = l.clone();
        ws.on_close(move |e| push(&l2, format!("close {}", e.code)));
    })
    .await;
    for _ in 0..2 {
        let mut client = wsevents::connect(&url).await.unwrap();
        client.send(Message::text("ok")).await.unwrap();
        assert_eq!(next_text(&mut client).await, "fine");
        client.send(Message::text("boom")).await.unwrap();
        let end = tokio::time::timeout(TIMEOUT, client.next()).await.unwrap();
        assert!(end.is_none(), "{end:?}");
        let closure = client.closure().unwrap();
        assert_eq!(closure.code(), CloseCode::INTERNAL_ERROR);
        let close = tokio::time::timeout(TIMEOUT, closed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(close.code, 1011);
    }
    let log = entries(&log);
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[0].starts_with("error: an event handler panicked: the lookup exploded"));
    assert_eq!(log[1], "close 1011");
}

/// Incompressible payloads of `size` bytes whose first 8 bytes are `n`.
fn numbered(n: u64, size: usize) -> Message {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ n;
    let mut data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    data[..8].copy_from_slice(&n.to_be_bytes());
    Message::binary(data)
}

/// Until `count` stops moving for 300 ms (bounded): a flooding peer that is held back.
async fn until_stalled(count: &AtomicUsize) -> usize {
    tokio::time::timeout(TIMEOUT, async {
        let mut last = count.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = count.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the flooding peer was never held back")
}

/// Item 1's bound, with an async handler or a `next_event` loop: while the first
/// message is being handled (held until the test lets it go), at most `max_queue`
/// more are read, then the socket is not: a flooding peer is held back by TCP
/// instead of growing this side's memory. Let go, every message is handled, in order.
async fn reading_pauses_once_max_queue_messages_wait(style: Style) {
    const SIZE: usize = 16 * 1024;
    const COUNT: usize = 2000; // 32 MiB: more than the kernel's buffers hold
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let gate = Arc::new(Notify::new());
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (g, h) = (gate.clone(), handled.clone());
    tokio::spawn(async move {
        let ws = server.accept().await.unwrap();
        ws.set_max_queue(4);
        assert_eq!(ws.max_queue(), 4);
        let handle = move |data: &[u8]| {
            let n = u64::from_be_bytes(data[..8].try_into().unwrap());
            let (g, h) = (g.clone(), h.clone());
            async move {
                if n == 0 {
                    g.notified().await;
                }
                h.lock().unwrap().push(n);
            }
        };
        match style {
            Style::AsyncHandler => {
                ws.on_message_async(move |e| handle(e.data.as_bytes()));
                ws.run().await;
            }
            Style::NextEventLoop => {
                while let Some(event) = ws.next_event().await {
                    if let Event::Message(e) = event {
                        handle(e.data.as_bytes()).await;
                    }
                }
            }
        }
    });
    let client = ClientBuilder::new(&url)
        .unwrap()
        .deflate(None)
        .connect()
        .await
        .unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let flood = tokio::spawn(async move {
        let mut client = client;
        for n in 0..COUNT as u64 {
            client.send(numbered(n, SIZE)).await.unwrap();
            s.fetch_add(1, Ordering::SeqCst);
        }
        client
    });
    let held_at = until_stalled(&sent).await;
    assert!(held_at < COUNT, "the peer was not held back");
    assert!(handled.lock().unwrap().is_empty());
    gate.notify_one();
    let mut client = tokio::time::timeout(TIMEOUT * 3, flood)
        .await
        .unwrap()
        .unwrap();
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled, (0..COUNT as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_pauses_once_max_queue_messages_wait_for_an_async_handler() {
    reading_pauses_once_max_queue_messages_wait(Style::AsyncHandler).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_pauses_once_max_queue_messages_wait_for_a_next_event_loop() {
    reading_pauses_once_max_queue_messages_wait(Style::NextEventLoop).await;
}

/// `next_event`'s task holds the socket weakly: dropping every clone after a first
/// `next_event` still drops the connection (the client's stream ends).
#[tokio::test]
async fn dropping_a_socket_that_next_event_drove_drops_the_connection() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    assert!(matches!(ws.next_event().await, Some(Event::Open)));
    drop(ws);
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match client.next().await {
                Some(Ok(_)) => continue,
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    })
    .await
    .expect("the connection was dropped");
    assert!(!matches!(end, Some(Ok(()))));
}

/// `run` after `next_event` takes the rest of the events from `next_event`'s task,
/// dispatches them (an async handler included) and returns the close event.
#[tokio::test]
async fn run_after_next_event_dispatches_the_rest() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    assert!(matches!(ws.next_event().await, Some(Event::Open)));
    let reply = ws.clone();
    ws.on_message_async(move |e| {
        let reply = reply.clone();
        async move {
            let answer = lookup(e.data.as_text().unwrap()).await;
            reply.send(answer).unwrap();
        }
    });
    let run = tokio::spawn(async move { ws.run().await });
    client.send(Message::text("q")).await.unwrap();
    assert_eq!(next_text(&mut client).await, "answer:q");
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let close = tokio::time::timeout(TIMEOUT, run).await.unwrap().unwrap();
    assert_eq!((close.code, close.was_clean), (1000, true));
}

/// While reading is paused at the bound, the silence is this end's, not the peer's:
/// a server with a 200 ms keepalive whose handler holds the queue full for a second
/// neither pings nor drops a client it does not read (the client answers pings, but
/// the answers would wait unread behind the held messages).
#[tokio::test]
async fn a_paused_server_does_not_take_its_own_silence_for_a_dead_peer() {
    let config = Config {
        ping_interval: Some(Duration::from_millis(200)),
        pong_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let server = Server::builder(wsevents::Acceptor::new().config(config))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let server_closed = tokio::spawn(async move {
        let ws = server.accept().await.unwrap();
        ws.set_max_queue(1);
        let reply = ws.clone();
        ws.on_message_async(move |e| {
            let reply = reply.clone();
            async move {
                let text = e.data.as_text().unwrap().to_owned();
                if text == "m0" {
                    tokio::time::sleep(SLOW).await;
                }
                reply.send(format!("done {text}")).unwrap();
            }
        });
        ws.run().await
    });
    let ws = WebSocket::new(&url).unwrap();
    let sender = ws.clone();
    ws.on_open(move |_| {
        for n in 0..4 {
            sender.send(format!("m{n}")).unwrap();
        }
    });
    let answers: Log = Arc::default();
    let (a, closer) = (answers.clone(), ws.clone());
    ws.on_message(move |e| {
        push(&a, e.data.as_text().unwrap());
        if a.lock().unwrap().len() == 4 {
            closer.close_with(1000, "all answered").unwrap();
        }
    });
    let closed = tokio::time::timeout(TIMEOUT, ws.run()).await.unwrap();
    assert_eq!(
        entries(&answers),
        ["done m0", "done m1", "done m2", "done m3"]
    );
    assert_eq!((closed.code, closed.was_clean), (1000, true), "{closed:?}");
    let server_closed = tokio::time::timeout(TIMEOUT, server_closed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server_closed.code, 1000);
}
