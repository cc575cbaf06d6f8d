//! The hub's bounds as a whole (issue 24): the history kept in process stays under its
//! bound however many topics are published to (the least recently published evicted,
//! a recovery from there told `recovered: false`), and a subscription finds no room
//! for its recovery on a socket that does not read. Over real sockets.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wsevents::hub::{DEFAULT_MAX_HISTORY_BYTES, Framing, History, Hub, Position, Publication};
use wsevents::pubsub::PubsubServer;
use wsevents::pubsub::wire::PROTOCOL;
use wsevents::{Acceptor, ClientBuilder, Error, Message, ReadyState, Server, WebSocket};

/// Resident memory of this process, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().unwrap())
}

struct Offsets;

impl Framing for Offsets {
    fn frame(&self, _: &str, publication: &Publication) -> Message {
        Message::text(publication.position.to_string())
    }
}

async fn server_socket(
    server: &Server,
    url: &str,
) -> (
    wsevents::WebSocketStream<wsevents::MaybeTlsStream>,
    WebSocket,
) {
    let client = wsevents::connect(url).await.unwrap();
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    (client, ws)
}

/// 200,000 topics × 1 KiB published through one wsevents.v1 connection with the
/// defaults: every publish is answered, the history stays under its bound (128 MiB)
/// by evicting the oldest topics, and the process grows by less than 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_topics_stays_within_the_history_bound() {
    const WINDOW: usize = 512;
    // FLOOD_TOPICS and FLOOD_BOUND measure other points (the per-topic cost in hub/budget.rs was fitted so).
    let topics: usize = env_or("FLOOD_TOPICS", 200_000);
    let bound: usize = env_or("FLOOD_BOUND", DEFAULT_MAX_HISTORY_BYTES);
    let hub = Hub::builder()
        .history(History::default())
        .max_history_bytes(bound)
        .build();
    // Thousands of publishes as fast as they are answered: the publish rate out of the
    // way (pubsub_rate.rs tests it).
    let pubsub = PubsubServer::new(hub.clone()).publish_rate(None);
    let server = Server::builder(Acceptor::new().protocols(&[PROTOCOL]))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/pubsub", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            pubsub.serve(&ws);
            tokio::spawn(async move { ws.run().await });
        }
    });
    let client = ClientBuilder::new(&url)
        .unwrap()
        .protocols(&[PROTOCOL])
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (mut sink, mut stream) = client.split();
    let data = "x".repeat(1024);
    let publish = |n: usize| {
        Message::text(format!(
            r#"{{"id":{},"op":"publish","topic":"flood-{n}","data":"{data}"}}"#,
            n + 1
        ))
    };
    let mut answered = 0usize;
    let mut sent = 0usize;
    let mut before = None;
    while answered < topics {
        while sent < topics && sent - answered < WINDOW {
            sink.send(publish(sent)).await.unwrap();
            sent += 1;
        }
        let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no answer after {answered} of {topics}"));
        let Some(Ok(Message::Text(text))) = next else {
            panic!("after {answered} answers: {next:?}");
        };
        assert!(
            text.as_str().contains(r#""op":"published""#),
            "publish {answered} answered {text}"
        );
        answered += 1;
        if answered == 1_000 {
            before = Some(rss());
        }
    }
    let grown = rss().saturating_sub(before.unwrap());
    let stats = hub.stats();
    println!(
        "{topics} topics x 1 KiB: history {} of {} bytes, {} topics evicted, RSS grew {} MiB",
        stats.history_bytes,
        bound,
        stats.history_evicted,
        grown >> 20
    );
    assert!(stats.history_bytes <= bound);
    assert!(stats.history_evicted > 0);
    assert!(grown < 256 << 20, "RSS grew by {grown} bytes");

    // Still answering: a subscription to the first topic (evicted) from its position.
    sink.send(Message::text(
        r#"{"id":999999999,"op":"subscribe","topic":"flood-0","since":{"epoch":"gone","offset":1}}"#,
    ))
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap();
    let Some(Ok(Message::Text(text))) = next else {
        panic!("{next:?}")
    };
    assert!(text.as_str().contains(r#""op":"subscribed""#), "{text}");
    assert!(text.as_str().contains(r#""recovered":false"#), "{text}");
}

/// Past the bound, the least recently published topics go first: one without
/// subscribers loses its whole record (a recovery from it is not recovered, and it
/// starts a new epoch), one with a subscriber keeps its epoch and offset and loses its
/// stored publications only.
#[tokio::test]
async fn eviction_takes_the_oldest_topics_and_recoveries_from_them_are_not_recovered() {
    let hub = Hub::builder()
        .history(History::default())
        .max_history_bytes(256 * 1024)
        .build();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let (_kept_client, kept_socket) = server_socket(&server, &url).await;
    hub.subscribe(&kept_socket, "kept").unwrap();
    let old = hub.publish_confirmed("old", "first", None).await.unwrap();
    let kept = hub.publish_confirmed("kept", "first", None).await.unwrap();
    let big = "y".repeat(4096);
    for i in 0..200 {
        hub.publish_confirmed(&format!("other-{i}"), big.as_str(), None)
            .await
            .unwrap();
    }
    let stats = hub.stats();
    assert!(stats.history_bytes <= 256 * 1024, "{stats:?}");
    assert!(stats.history_evicted >= 2, "{stats:?}");

    let (mut client, ws) = server_socket(&server, &url).await;
    let before_old = Position::new(old.epoch(), 0).unwrap();
    let subscribed = hub
        .subscribe_from(&ws, "old", Some(&before_old), Arc::new(Offsets), |_| {
            Message::text("answer")
        })
        .await
        .unwrap();
    assert!(!subscribed.recovered, "the record of 'old' was evicted");
    assert_ne!(subscribed.position.epoch(), old.epoch(), "a new epoch");
    let next = client.next().await;
    assert!(
        matches!(next, Some(Ok(Message::Text(ref t))) if t.as_str() == "answer"),
        "{next:?}"
    );

    // "kept" had a subscriber: same epoch, the next offset, but nothing to recover.
    let again = hub.publish_confirmed("kept", "second", None).await.unwrap();
    assert_eq!((again.epoch(), again.offset()), (kept.epoch(), 2));
    let before_kept = Position::new(kept.epoch(), 0).unwrap();
    let subscribed = hub
        .subscribe_from(&ws, "kept", Some(&before_kept), Arc::new(Offsets), |_| {
            Message::text("answer")
        })
        .await
        .unwrap();
    assert!(!subscribed.recovered);
    assert_eq!(subscribed.position, again);
}

/// A subscription from a position is queued only while the socket's unsent bytes are
/// within the backlog bound: on a socket whose peer does not read, it is closed as
/// slow instead of being handed a recovery on top of what it holds.
#[tokio::test]
async fn a_subscription_with_no_room_for_its_recovery_closes_the_socket_as_slow() {
    const BACKLOG: usize = 64 * 1024;
    let hub = Hub::builder()
        .history(History::default())
        .max_backlog(BACKLOG)
        .build();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    // The client never reads.
    let (_client, ws) = server_socket(&server, &url).await;
    let chunk = vec![7u8; 256 * 1024];
    let filled = tokio::time::timeout(Duration::from_secs(20), async {
        while ws.buffered_amount() <= 4 * BACKLOG as u64 {
            ws.send(chunk.clone()).unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(filled.is_ok(), "the socket never held more than the bound");
    for i in 0..3 {
        hub.publish_confirmed("t", format!("m{i}"), None)
            .await
            .unwrap();
    }
    let subscribed = hub
        .subscribe_from(&ws, "t", None, Arc::new(Offsets), |_| {
            Message::text("answer")
        })
        .await;
    assert!(
        matches!(subscribed, Err(Error::InvalidState)),
        "{subscribed:?}"
    );
    assert_eq!(hub.stats().dropped_slow, 1);
    assert_eq!(hub.subscriber_count("t"), 0);
    assert_eq!(ws.ready_state(), ReadyState::Closing);
}
