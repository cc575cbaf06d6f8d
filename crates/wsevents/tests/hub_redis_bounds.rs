//! The Redis backend's queues are bounded in bytes, on a real Redis (issue 24): the
//! publisher's queue (`RedisConfig::max_pending_bytes`: past it a publication is
//! refused, or a publish not carried and counted, and the bytes come back once Redis
//! has answered) and the subscriber's inbound queue (`RedisConfig::max_inbound_bytes`:
//! past it a message is not queued, and the node catches up from the history, or
//! counts the loss on a hub without one). Each test starts its own `redis-server`.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis_server::RedisServer;
use tokio::sync::mpsc::UnboundedReceiver;
use wsevents::hub::{BackendStatus, History, Hub, RedisBackend, RedisConfig};
use wsevents::{Error, Message, Server, WebSocket};

async fn connected(hub: &Hub) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while hub.backend_status() != BackendStatus::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not connected: {:?}", hub.backend_status());
}

/// A hub on `redis` (with `history` if given) and its backend, kept to read its
/// counters.
async fn node(
    redis: &RedisServer,
    history: Option<History>,
    config: RedisConfig,
) -> (Hub, Arc<RedisBackend>) {
    let backend = Arc::new(RedisBackend::with_config(&redis.url(), config).unwrap());
    let mut builder = Hub::builder().backend(backend.clone());
    if let Some(history) = history {
        builder = builder.history(history);
    }
    let hub = builder.build();
    connected(&hub).await;
    (hub, backend)
}

/// A client subscribed to `topic` on `hub` through a real socket: what it receives.
async fn subscriber(hub: &Hub, topic: &str) -> (UnboundedReceiver<String>, WebSocket) {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let mut client = wsevents::connect(&format!("ws://{}/", server.local_addr()))
        .await
        .unwrap();
    let ws = server.accept().await.unwrap();
    hub.subscribe(&ws, topic).unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _server = server;
        while let Some(Ok(Message::Text(text))) = client.next().await {
            if tx.send(text.as_str().to_owned()).is_err() {
                break;
            }
        }
    });
    (rx, ws)
}

async fn next(rx: &mut UnboundedReceiver<String>, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

/// Redis stopped (SIGSTOP), so that what is queued waits: a publication that would
/// take the queue past 1,000 bytes is refused at once with `unavailable`, a smaller
/// one that fits is queued; once Redis answers, both queued ones are stored in order,
/// the bytes are given back, and a publication as large as the refused one fits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_past_the_publisher_byte_bound_is_refused_and_the_bytes_come_back() {
    let redis = RedisServer::start();
    let config = RedisConfig {
        max_pending_bytes: 1000,
        // Longer than the pause: the stalled batch is answered, not timed out.
        timeout: Duration::from_secs(60),
        ..RedisConfig::default()
    };
    let (hub, backend) = node(&redis, Some(History::default()), config).await;
    redis.pause();
    let first = hub.publish_confirmed("t", "a".repeat(600), Some("k1"));
    assert_eq!(backend.pending_bytes(), "t".len() + 600 + "k1".len());
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        hub.publish_confirmed("t", "b".repeat(600), Some("k2")),
    )
    .await
    .expect("refused at once, not queued");
    assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
    let small = hub.publish_confirmed("t", "c".repeat(100), Some("k3"));
    assert_eq!(backend.pending_bytes(), 603 + 103, "the small one fits");
    redis.resume();
    assert_eq!(first.await.unwrap().offset(), 1);
    assert_eq!(small.await.unwrap().offset(), 2);
    assert_eq!(backend.pending_bytes(), 0, "given back once answered");
    let retried = hub
        .publish_confirmed("t", "b".repeat(600), Some("k2"))
        .await
        .unwrap();
    assert_eq!(retried.offset(), 3, "the refused one was stored nowhere");
}

/// The same bound on a hub without history: a publish past it is not carried to the
/// other node (counted as dropped) while local subscribers get every publish; the ones
/// that fit reach the other node, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_past_the_publisher_byte_bound_is_not_carried_and_is_counted() {
    let redis = RedisServer::start();
    let tiny = RedisConfig {
        max_pending_bytes: 1000,
        timeout: Duration::from_secs(60),
        ..RedisConfig::default()
    };
    let (a, backend_a) = node(&redis, None, tiny).await;
    let (b, _) = node(&redis, None, RedisConfig::default()).await;
    let (mut local, _ws_a) = subscriber(&a, "t").await;
    let (mut remote, _ws_b) = subscriber(&b, "t").await;
    let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
        while redis.numsub("wsevents:t").await != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(subscribed.is_ok(), "both nodes subscribed in Redis");
    let publications = [
        format!("1{}", "a".repeat(600)),
        format!("2{}", "b".repeat(600)),
        format!("3{}", "c".repeat(100)),
    ];
    redis.pause();
    for text in &publications {
        assert_eq!(a.publish("t", text.as_str()), 1);
    }
    assert_eq!(backend_a.dropped(), 1, "the second one did not fit");
    redis.resume();
    for text in &publications {
        assert_eq!(
            next(&mut local, Duration::from_secs(10)).await.as_ref(),
            Some(text)
        );
    }
    for text in [&publications[0], &publications[2]] {
        assert_eq!(
            next(&mut remote, Duration::from_secs(10)).await.as_ref(),
            Some(text)
        );
    }
    assert_eq!(next(&mut remote, Duration::from_millis(300)).await, None);
    assert_eq!(backend_a.pending_bytes(), 0);
}
