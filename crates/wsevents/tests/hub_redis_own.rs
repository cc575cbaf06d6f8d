//! The publishing node's own subscribers on a Redis hub with history (issue 24): each
//! publication reaches them once, in order, whichever comes first, the answer to its
//! store (delivered at once when it is the topic's next) or its copy on the channel
//! (skipped when delivered already). On a real Redis; the early delivery itself is
//! shown deterministically in `tests/hub_backend.rs`, with the channel held back.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis_server::RedisServer;
use wsevents::hub::{BackendStatus, Framing, History, Hub, Publication, RedisBackend};
use wsevents::{Message, Server};

struct Offsets;

impl Framing for Offsets {
    fn frame(&self, _: &str, publication: &Publication) -> Message {
        Message::text(publication.position.offset().to_string())
    }
}

/// Until the hub's backend is connected (at most 30 s): a subscription with history
/// reads it from Redis, and is refused `Unavailable` before.
async fn connected(hub: &Hub) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while hub.backend_status() != BackendStatus::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not connected: {:?}", hub.backend_status());
}

#[tokio::test]
async fn own_publications_reach_local_subscribers_once_in_order() {
    const N: u64 = 200;
    let redis = RedisServer::start();
    let _ = redis.connection().await;
    let hub = Hub::builder()
        .history(History::default())
        .backend(RedisBackend::new(&redis.url()).unwrap())
        .build();
    connected(&hub).await;
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    hub.subscribe_from(&ws, "t", None, Arc::new(Offsets), |_| Message::text("ok"))
        .await
        .unwrap();
    // The first one comes back on the channel (nothing delivered live yet to follow).
    let first = hub.publish_confirmed("t", "0", None).await.unwrap();
    let mut received = Vec::new();
    while received.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => received.push(text.as_str().to_owned()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, ["ok", &first.offset().to_string()]);
    let delivered = hub.stats().delivered;
    for i in 1..=N {
        let position = hub
            .publish_confirmed("t", i.to_string(), None)
            .await
            .unwrap();
        assert_eq!(position.offset(), first.offset() + i);
    }
    // Each once, in order: the channel's copies were skipped.
    for i in 1..=N {
        match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                assert_eq!(text.as_str(), (first.offset() + i).to_string())
            }
            other => panic!("{other:?}"),
        }
    }
    let marker = hub.publish_confirmed("t", "end", None).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), marker.offset().to_string()),
        other => panic!("{other:?}"),
    }
    assert_eq!(hub.stats().delivered, delivered + N + 1);
}

/// More publications in flight at once than one pipeline of the Redis publisher takes
/// (512 per pipeline): 1,200 over 300 topics, all handed to the hub before any is
/// answered, as one busy wsevents.v1 connection does. Each topic's plain subscriber,
/// on the publishing node and on another node of the same Redis, gets every one once,
/// in order: nothing is lost at a pipeline's boundary, whichever comes first on the
/// publishing node, the store's answer or the copy on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_past_one_pipeline_reach_every_subscriber_once_in_order() {
    const TOPICS: usize = 300;
    const EACH: usize = 4;
    let redis = RedisServer::start();
    let _ = redis.connection().await;
    let mut hubs = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let hub = Hub::builder()
            .history(History::default())
            .backend(RedisBackend::new(&redis.url()).unwrap())
            .build();
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let client = wsevents::connect(&url).await.unwrap();
        let ws = server.accept().await.unwrap();
        for topic in 0..TOPICS {
            hub.subscribe(&ws, &topic.to_string()).unwrap();
        }
        tokio::spawn(async move {
            let _server = server;
            ws.run().await
        });
        hubs.push(hub);
        clients.push(client);
    }
    // Both nodes subscribed in Redis to every topic's channel.
    let channels: Vec<String> = (0..TOPICS).map(|t| format!("wsevents:{t}")).collect();
    let mut conn = redis.connection().await;
    let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channels)
                .query_async(&mut conn)
                .await
                .unwrap();
            if counts.iter().all(|(_, n)| *n == 2) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(subscribed.is_ok(), "the nodes never subscribed in Redis");

    // Every publication handed to the hub first (each queues its store at once), then
    // the answers awaited.
    let hub = &hubs[0];
    let pending: Vec<_> = (0..EACH)
        .flat_map(|seq| (0..TOPICS).map(move |topic| (topic, seq)))
        .map(|(topic, seq)| {
            hub.publish_confirmed(&topic.to_string(), format!("{topic}:{seq}"), None)
        })
        .collect();
    let positions = futures_util::future::join_all(pending).await;
    for (i, position) in positions.iter().enumerate() {
        let position = position.as_ref().unwrap();
        assert_eq!(
            position.offset(),
            (i / TOPICS) as u64 + 1,
            "publication {i}"
        );
    }

    for (node, client) in clients.iter_mut().enumerate() {
        let mut next = vec![0usize; TOPICS];
        for _ in 0..TOPICS * EACH {
            let text = match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
                other => panic!("node {node}: {other:?} after {next:?}"),
            };
            let (topic, seq) = text.split_once(':').unwrap();
            let (topic, seq): (usize, usize) = (topic.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(
                seq, next[topic],
                "node {node}, topic {topic}: {text} out of turn"
            );
            next[topic] += 1;
        }
        assert!(next.iter().all(|&n| n == EACH), "node {node}: {next:?}");
    }
    // And nothing twice: the next one each gets is the one published next.
    hub.publish_confirmed("0", "end", None).await.unwrap();
    for (node, client) in clients.iter_mut().enumerate() {
        match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), "end", "node {node}"),
            other => panic!("node {node}: {other:?}"),
        }
    }
}
