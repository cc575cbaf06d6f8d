//! `wsevents::pubsub::Client` over real sockets on 127.0.0.1: against the library's
//! own `PubsubServer` on a hub with history (recovery across a server's death), and
//! against a scripted server for the publish retries (a connection lost before the
//! answer, a temporary error).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use wsevents::hub::{History, Hub, Position};
use wsevents::pubsub::wire::{ErrorCode, PROTOCOL, Reply, Request};
use wsevents::pubsub::{Client, DEFAULT_MAX_TOPICS, PubsubServer};
use wsevents::{Acceptor, Backpressure, ClientBuilder, Data, Error, Message, Reconnect, WebSocket};

const TIMEOUT: Duration = Duration::from_secs(10);

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Accepts wsevents.v1 connections on `listener` and hands each socket to `serve`;
/// dropping it (aborting) kills every connection at once, like a crashed process.
struct Node {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Replies a scripted connection sends (JSON text), from the test.
type Replies = mpsc::UnboundedSender<String>;

impl Node {
    /// `serve` sees each socket (its connection's number, 0 first) and the sender of
    /// its replies. No handler may hold the socket itself: killing the node must drop
    /// it, and with it the TCP connection.
    fn start(
        listener: TcpListener,
        serve: impl Fn(usize, &WebSocket, Replies) + Send + 'static,
    ) -> Node {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let acceptor = Arc::new(Acceptor::new().protocols(&[PROTOCOL]));
            for n in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok((stream, _)) = acceptor.accept(tcp).await else {
                    continue;
                };
                let ws = WebSocket::from_stream(stream, "ws://client/");
                let (replies, mut queued) = mpsc::unbounded_channel::<String>();
                serve(n, &ws, replies);
                connections.spawn(async move {
                    let sender = ws.clone();
                    tokio::select! {
                        _ = ws.run() => {}
                        () = async {
                            while let Some(reply) = queued.recv().await {
                                let _ = sender.send(reply);
                            }
                            std::future::pending::<()>().await;
                        } => {}
                    }
                });
            }
        });
        Node { addr, task }
    }

    fn url(&self) -> String {
        format!("ws://{}/pubsub", self.addr)
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn listen(addr: &str) -> TcpListener {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr}");
}

/// A node serving `pubsub`.
async fn pubsub_node(addr: &str, pubsub: &PubsubServer) -> Node {
    let pubsub = pubsub.clone();
    Node::start(listen(addr).await, move |_, ws, _| pubsub.serve(ws))
}

fn fast() -> Reconnect {
    Reconnect::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(100))
}

fn client(url: &str) -> Client {
    let builder = ClientBuilder::new(url).unwrap().no_proxy();
    Client::with_options(builder, fast()).unwrap()
}

/// `client`, driven, with its publications logged as `OFFSET:DATA` and its
/// subscriptions as `subscribed:RECOVERED`.
fn logged(url: &str) -> (Client, Log, JoinHandle<()>) {
    let c = client(url);
    let log: Log = Arc::default();
    let l = log.clone();
    c.on_publication(move |p| {
        let data = match &p.data {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => format!("{b:?}"),
        };
        l.lock()
            .unwrap()
            .push(format!("{}:{data}", p.position.offset()));
    });
    let l = log.clone();
    c.on_subscribed(move |s| {
        l.lock()
            .unwrap()
            .push(format!("subscribed:{}", s.recovered));
    });
    let driver = c.clone();
    let run = tokio::spawn(async move {
        driver.run().await;
    });
    (c, log, run)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// No publish rate: these tests publish in bursts to test other things (the rate and
/// the client: pubsub_rate.rs).
fn history_hub() -> PubsubServer {
    PubsubServer::new(Hub::builder().history(History::default()).build()).publish_rate(None)
}

#[tokio::test]
async fn client_subscribes_publishes_and_receives_its_publication() {
    let pubsub = history_hub();
    let node = pubsub_node("127.0.0.1:0", &pubsub).await;
    let (c, log, _run) = logged(&node.url());
    c.subscribe("news", None).unwrap();
    until("subscribed", || entries(&log) == ["subscribed:false"]).await;
    let position = tokio::time::timeout(TIMEOUT, c.publish("news", "hello"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(position.offset(), 1);
    until("the publication", || entries(&log).len() == 2).await;
    assert_eq!(entries(&log), ["subscribed:false", "1:hello"]);
    assert_eq!(c.positions()["news"], position);
    let binary = c.publish("news", vec![0u8, 1, 2]).await.unwrap();
    assert_eq!(binary.offset(), 2);
    until("the binary one", || entries(&log).len() == 3).await;
    assert_eq!(entries(&log)[2], "2:b\"\\0\\x01\\x02\"");
    c.close().unwrap();
}

#[tokio::test]
async fn client_recovers_what_it_missed_while_its_server_was_down() {
    let pubsub = history_hub();
    let node = pubsub_node("127.0.0.1:0", &pubsub).await;
    let addr = node.addr.to_string();
    // A second node on the same hub, for the publisher.
    let other = pubsub_node("127.0.0.1:0", &pubsub).await;
    let (subscriber, log, _run) = logged(&node.url());
    subscriber.subscribe("news", None).unwrap();
    until("subscribed", || entries(&log).len() == 1).await;
    let publisher = client(&other.url());
    let driver = publisher.clone();
    tokio::spawn(async move { driver.run().await });
    for i in 1..=3 {
        publisher.publish("news", format!("m{i}")).await.unwrap();
    }
    until("three", || entries(&log).len() == 4).await;

    node.kill().await;
    until("the loss", || {
        !subscriber
            .socket()
            .ready_state()
            .eq(&wsevents::ReadyState::Open)
    })
    .await;
    for i in 4..=6 {
        publisher.publish("news", format!("m{i}")).await.unwrap();
    }
    let _node = pubsub_node(&addr, &pubsub).await;
    until("the recovery", || entries(&log).len() == 8).await;
    assert_eq!(
        entries(&log),
        [
            "subscribed:false",
            "1:m1",
            "2:m2",
            "3:m3",
            "subscribed:true",
            "4:m4",
            "5:m5",
            "6:m6"
        ]
    );
    // Live again after the recovery, no repeat.
    publisher.publish("news", "m7").await.unwrap();
    until("live", || entries(&log).len() == 9).await;
    assert_eq!(entries(&log)[8], "7:m7");
    assert_eq!(subscriber.positions()["news"].offset(), 7);
}

#[tokio::test]
async fn client_subscribes_since_a_kept_position() {
    let pubsub = history_hub();
    let node = pubsub_node("127.0.0.1:0", &pubsub).await;
    let publisher = client(&node.url());
    let driver = publisher.clone();
    tokio::spawn(async move { driver.run().await });
    let mut first = None;
    for i in 1..=4 {
        let p = publisher.publish("t", format!("m{i}")).await.unwrap();
        first.get_or_insert(p);
    }
    // From 2: gets 3 and 4, recovered.
    let since = Position::new(first.unwrap().epoch(), 2).unwrap();
    let (c, log, _run) = logged(&node.url());
    c.subscribe("t", Some(since)).unwrap();
    until("recovered", || entries(&log).len() == 3).await;
    assert_eq!(entries(&log), ["subscribed:true", "3:m3", "4:m4"]);
    // From another epoch: not recovered, nothing of the past: the first publication
    // to come after the answer is the next live one.
    let (c, log, _run) = logged(&node.url());
    c.subscribe("t", Some(Position::new("gone", 2).unwrap()))
        .unwrap();
    until("answered", || !entries(&log).is_empty()).await;
    assert_eq!(c.positions()["t"].offset(), 4);
    publisher.publish("t", "m5").await.unwrap();
    until("the live publication", || entries(&log).len() >= 2).await;
    assert_eq!(entries(&log), ["subscribed:false", "5:m5"]);
}

/// A scripted server: every request, with the sender of replies of the connection it came on and the number of
/// its connection (0 first), goes to the test.
fn scripted(listener: TcpListener) -> (Node, mpsc::UnboundedReceiver<(usize, Replies, Request)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let node = Node::start(listener, move |n, ws, replies| {
        let tx = tx.clone();
        ws.on_message(move |e| {
            if let Data::Text(text) = &e.data {
                let request = Request::parse(text.as_str()).unwrap();
                let _ = tx.send((n, replies.clone(), request));
            }
        });
    });
    (node, rx)
}

/// The next publish the scripted server got: (connection, socket, id, key).
async fn next_publish(
    rx: &mut mpsc::UnboundedReceiver<(usize, Replies, Request)>,
) -> (usize, Replies, u64, String) {
    loop {
        let (n, ws, request) = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let Request::Publish { id, key, .. } = request {
            return (n, ws, id, key.unwrap());
        }
    }
}

fn published(id: u64, offset: u64) -> String {
    Reply::Published {
        id,
        topic: "t".into(),
        position: Position::new("e1", offset).unwrap(),
    }
    .to_json()
}

#[tokio::test]
async fn a_publish_is_resent_with_its_key_after_the_connection_is_lost_unanswered() {
    let listener = listen("127.0.0.1:0").await;
    let addr = listener.local_addr().unwrap().to_string();
    let (node, mut rx) = scripted(listener);
    let c = client(&node.url());
    let driver = c.clone();
    tokio::spawn(async move { driver.run().await });
    let answer = tokio::spawn(c.publish("t", "once"));
    let (n, _, _, first_key) = next_publish(&mut rx).await;
    assert_eq!(n, 0);
    // Stored, perhaps, but the server dies before answering.
    node.kill().await;
    let (node, mut rx) = scripted(listen(&addr).await);
    let (n, ws, id, key) = next_publish(&mut rx).await;
    assert_eq!(
        (n, &key),
        (0, &first_key),
        "the same key on the new connection"
    );
    ws.send(published(id, 1)).unwrap();
    let position = tokio::time::timeout(TIMEOUT, answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(position.unwrap().offset(), 1);
    assert_eq!(c.pending(), 0);
    drop(node);
}

#[tokio::test]
async fn a_publish_is_retried_with_its_key_after_a_temporary_error() {
    let (node, mut rx) = scripted(listen("127.0.0.1:0").await);
    let c = client(&node.url());
    let driver = c.clone();
    tokio::spawn(async move { driver.run().await });
    let first = tokio::spawn(c.publish("t", "a"));
    let second = tokio::spawn(c.publish("t", "b"));
    let (_, ws, id_a, key_a) = next_publish(&mut rx).await;
    let (_, _, id_b, key_b) = next_publish(&mut rx).await;
    assert_ne!(key_a, key_b);
    let unavailable = Reply::Error {
        id: Some(id_a),
        code: ErrorCode::Unavailable,
        message: "Redis is unreachable".into(),
        retry_after: None,
    };
    ws.send(unavailable.to_json()).unwrap();
    // Too large: refused for good.
    let too_large = Reply::Error {
        id: Some(id_b),
        code: ErrorCode::TooLarge,
        message: "over 1 bytes".into(),
        retry_after: None,
    };
    ws.send(too_large.to_json()).unwrap();
    let (_, ws, id, key) = next_publish(&mut rx).await;
    assert_eq!((id, &key), (id_a, &key_a));
    ws.send(published(id, 9)).unwrap();
    assert_eq!(first.await.unwrap().unwrap().offset(), 9);
    match second.await.unwrap() {
        Err(Error::Rejected(e)) => assert_eq!(e.code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pending_publishes_fail_when_the_client_is_closed_for_good() {
    let listener = listen("127.0.0.1:0").await;
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    drop(listener);
    let c = client(&url);
    let answer = c.publish("t", "never");
    assert_eq!(c.pending(), 1);
    c.close().unwrap();
    tokio::time::timeout(TIMEOUT, c.run()).await.unwrap();
    assert!(matches!(answer.await, Err(Error::Closed)));
    assert!(matches!(c.publish("t", "late").await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_subscription_is_retried_after_a_temporary_error_and_dropped_after_a_final_one() {
    let (node, mut rx) = scripted(listen("127.0.0.1:0").await);
    let (c, log, _run) = logged(&node.url());
    let errors: Log = Arc::default();
    let e2 = errors.clone();
    c.on_error(move |e| e2.lock().unwrap().push(e.message().to_owned()));
    c.subscribe("flaky", None).unwrap();
    c.subscribe("bad", None).unwrap();
    let mut next_subscribe = async || loop {
        let (_, replies, request) = tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let Request::Subscribe { id, topic, .. } = request {
            return (replies, id, topic);
        }
    };
    let mut asked = std::collections::HashMap::new();
    for _ in 0..2 {
        let (replies, id, topic) = next_subscribe().await;
        asked.insert(topic, (replies, id));
    }
    let (replies, id) = asked.remove("bad").unwrap();
    let refused = Reply::Error {
        id: Some(id),
        code: ErrorCode::BadTopic,
        message: "no such topic here".into(),
        retry_after: None,
    };
    replies.send(refused.to_json()).unwrap();
    let (replies, id) = asked.remove("flaky").unwrap();
    let unavailable = Reply::Error {
        id: Some(id),
        code: ErrorCode::Unavailable,
        message: "Redis is unreachable".into(),
        retry_after: None,
    };
    replies.send(unavailable.to_json()).unwrap();
    // Asked again, after a wait, on the same connection.
    let (replies, id, topic) = next_subscribe().await;
    assert_eq!(topic, "flaky");
    let answer = Reply::Subscribed {
        id,
        topic: "flaky".into(),
        recovered: false,
        position: Position::new("e1", 0).unwrap(),
    };
    replies.send(answer.to_json()).unwrap();
    until("subscribed", || entries(&log) == ["subscribed:false"]).await;
    let errors = entries(&errors);
    assert!(
        errors.len() == 1 && errors[0].contains("bad_topic"),
        "{errors:?}"
    );
    let positions = c.positions();
    assert!(positions.contains_key("flaky") && !positions.contains_key("bad"));
}

#[tokio::test]
async fn a_server_that_does_not_speak_wsevents_v1_ends_it() {
    // A plain echo server: it selects no subprotocol.
    let server = wsevents::Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            tokio::spawn(async move { ws.run().await });
        }
    });
    let c = client(&url);
    let errors: Log = Arc::default();
    let e2 = errors.clone();
    c.on_error(move |e| e2.lock().unwrap().push(e.message().to_owned()));
    let last = tokio::time::timeout(TIMEOUT, c.run()).await.unwrap();
    assert!(!last.will_reconnect());
    assert!(
        entries(&errors)[0].contains("wsevents.v1"),
        "{:?}",
        entries(&errors)
    );
}

#[tokio::test]
async fn publishes_refused_together_are_retried_together_in_order() {
    let (node, mut rx) = scripted(listen("127.0.0.1:0").await);
    let c = client(&node.url());
    let driver = c.clone();
    tokio::spawn(async move { driver.run().await });
    let answers: Vec<_> = (0..20)
        .map(|i| tokio::spawn(c.publish("t", format!("m{i}"))))
        .collect();
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(next_publish(&mut rx).await);
    }
    // The broker is down for all of them.
    for (_, replies, id, _) in first.iter().rev() {
        let unavailable = Reply::Error {
            id: Some(*id),
            code: ErrorCode::Unavailable,
            message: "Redis is unreachable".into(),
            retry_after: None,
        };
        replies.send(unavailable.to_json()).unwrap();
    }
    let mut again = Vec::new();
    for _ in 0..20 {
        again.push(next_publish(&mut rx).await);
    }
    let ids = |list: &[(usize, Replies, u64, String)]| -> Vec<u64> {
        list.iter().map(|(_, _, id, _)| *id).collect()
    };
    assert_eq!(
        ids(&again),
        ids(&first),
        "one retry, in the order of the calls"
    );
    for (offset, (_, replies, id, _)) in again.iter().enumerate() {
        replies.send(published(*id, offset as u64 + 1)).unwrap();
    }
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.await.unwrap().unwrap().offset(), i as u64 + 1);
    }
}

/// Issue 24: a reconnect with many topics lost subscriptions for good. The client sent
/// its 1,024 resubscribes at once, the server kept 256 waiting and refused the rest
/// with a permanent `bad_request`, and the client forgot those topics. Now every one
/// comes back, and its publications arrive.
#[tokio::test]
async fn a_client_with_1024_topics_gets_every_one_back_after_a_reconnect() {
    const TOPICS: usize = DEFAULT_MAX_TOPICS;
    let pubsub = history_hub();
    let node = pubsub_node("127.0.0.1:0", &pubsub).await;
    let addr = node.addr.to_string();
    let c = client(&node.url());
    let subscribed: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let s = subscribed.clone();
    c.on_subscribed(move |e| *s.lock().unwrap().entry(e.topic.clone()).or_default() += 1);
    let (received, errors): (Log, Log) = (Arc::default(), Arc::default());
    let r = received.clone();
    c.on_publication(move |p| {
        let data = p.data.as_text().unwrap_or_default();
        r.lock().unwrap().push(format!("{}:{data}", p.topic));
    });
    let e = errors.clone();
    // The server's refusals (the connection's own errors, its loss, are expected).
    c.on_error(move |error| {
        if let Some(Error::Rejected(refused)) = error.error() {
            e.lock().unwrap().push(refused.to_string());
        }
    });
    let driver = c.clone();
    tokio::spawn(async move { driver.run().await });
    let times = |n: usize| {
        let subscribed = subscribed.clone();
        move || {
            let subscribed = subscribed.lock().unwrap();
            subscribed.len() == TOPICS && subscribed.values().all(|&count| count == n)
        }
    };
    // Subscribed while connected, some at a time, as an application adds them.
    for batch in (0..TOPICS).collect::<Vec<_>>().chunks(64) {
        for i in batch {
            c.subscribe(&format!("t{i}"), None).unwrap();
        }
        let last = format!("t{}", batch[batch.len() - 1]);
        until("a batch", || subscribed.lock().unwrap().contains_key(&last)).await;
    }
    until("every topic subscribed", times(1)).await;

    node.kill().await;
    until("the loss", || {
        c.socket().ready_state() != wsevents::ReadyState::Open
    })
    .await;
    let node = pubsub_node(&addr, &pubsub).await;
    until("every topic subscribed again", times(2)).await;
    assert_eq!(c.positions().len(), TOPICS);
    assert!(entries(&errors).is_empty(), "{:?}", entries(&errors));

    let publisher = client(&node.url());
    let driver = publisher.clone();
    tokio::spawn(async move { driver.run().await });
    let sample: Vec<String> = (0..TOPICS).step_by(97).map(|i| format!("t{i}")).collect();
    for topic in &sample {
        publisher.publish(topic, topic.clone()).await.unwrap();
    }
    until("the sample's publications", || {
        entries(&received).len() == sample.len()
    })
    .await;
    let expected: Vec<String> = sample.iter().map(|t| format!("{t}:{t}")).collect();
    let mut got = entries(&received);
    got.sort_by_key(|e| e[1..e.find(':').unwrap()].parse::<usize>().unwrap());
    assert_eq!(got, expected);
}

/// Issue 24: a request the connection's send buffer refused was dropped, and its
/// answer awaited for ever. Now it waits, first in line, until the buffer has room:
/// a client that publishes far more than its buffer and the kernels hold, to a server
/// that reads nothing for a while, gets every publish stored, once, in the order of
/// the calls, on the same connection.
#[tokio::test]
async fn requests_that_do_not_fit_the_send_buffer_wait_for_room_and_none_is_lost() {
    const PUBLISHES: usize = 1000;
    let listener = listen("127.0.0.1:0").await;
    let url = format!("ws://{}/pubsub", listener.local_addr().unwrap());
    let (read, reading) = tokio::sync::oneshot::channel::<()>();
    let pubsub = history_hub();
    tokio::spawn(async move {
        let acceptor = Acceptor::new().protocols(&[PROTOCOL]);
        let (tcp, _) = listener.accept().await.unwrap();
        let (stream, _) = acceptor.accept(tcp).await.unwrap();
        // Open, and reading nothing until the test says so.
        let _ = reading.await;
        let ws = WebSocket::from_stream(stream, "ws://client/");
        pubsub.serve(&ws);
        ws.run().await;
    });
    let builder = ClientBuilder::new(&url)
        .unwrap()
        .no_proxy()
        .deflate(None)
        .backpressure(Backpressure::error(256 << 10))
        .unwrap();
    let c = Client::with_options(builder, fast()).unwrap();
    let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let o = opens.clone();
    c.on_open(move |_| {
        o.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let (log, _run) = {
        let log: Log = Arc::default();
        let l = log.clone();
        c.on_subscribed(move |s| l.lock().unwrap().push(s.topic.clone()));
        let driver = c.clone();
        (log, tokio::spawn(async move { driver.run().await }))
    };
    until("open", || {
        opens.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    // 8 MB, incompressible: more than the 256 KiB buffer and both kernels take.
    let mut seed = 0x2545f4914f6cdd1du64;
    let answers: Vec<_> = (0..PUBLISHES)
        .map(|_| {
            let data: Vec<u8> = (0..8192)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            c.publish("t", data)
        })
        .collect();
    c.subscribe("late", None).unwrap();
    read.send(()).unwrap();
    let mut offsets = Vec::new();
    for answer in answers {
        let position = tokio::time::timeout(TIMEOUT, answer)
            .await
            .expect("a publish never answered")
            .unwrap();
        offsets.push(position.offset());
    }
    assert_eq!(offsets, (1..=PUBLISHES as u64).collect::<Vec<_>>());
    until("the subscription", || entries(&log) == ["late"]).await;
    assert_eq!(c.pending(), 0);
    assert_eq!(
        opens.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "paced on one connection, not reconnected"
    );
}
