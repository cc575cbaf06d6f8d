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
#[path = "support/v1.rs"]
mod v1;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis_server::RedisServer;
use tokio::sync::mpsc::UnboundedReceiver;
use v1::{Peer, offsets};
use wsevents::hub::{BackendStatus, History, Hub, Position, RedisBackend, RedisConfig};
use wsevents::pubsub::PubsubServer;
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
    let given_back = tokio::time::timeout(Duration::from_secs(10), async {
        while backend_a.pending_bytes() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        given_back.is_ok(),
        "the bytes are given back once Redis answered"
    );
}

/// Node B, on a thread and runtime of its own, so that it publishes while the test's
/// thread (node A's, a current-thread runtime) is blocked: each batch of texts it is
/// sent is published to "t" at once with `publish_confirmed` (one pipeline), and
/// answered with the positions once Redis has stored them all.
struct OtherNode {
    batches: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
    stored: std::sync::mpsc::Receiver<Vec<Position>>,
}

impl OtherNode {
    fn start(url: String) -> OtherNode {
        let (batches, mut to_publish) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
        let (answer, stored) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let hub = Hub::builder()
                    .history(History::default())
                    .backend(RedisBackend::new(&url).unwrap())
                    .build();
                connected(&hub).await;
                while let Some(texts) = to_publish.recv().await {
                    let pending: Vec<_> = texts
                        .into_iter()
                        .map(|text| hub.publish_confirmed("t", text, None))
                        .collect();
                    let mut positions = Vec::new();
                    for position in pending {
                        positions.push(position.await.unwrap());
                    }
                    if answer.send(positions).is_err() {
                        break;
                    }
                }
            });
        });
        OtherNode { batches, stored }
    }

    /// Publish `texts` and wait, blocking this thread, until Redis stored them all.
    fn publish_blocking(&self, texts: Vec<String>) -> Vec<Position> {
        self.batches.send(texts).unwrap();
        self.stored
            .recv_timeout(Duration::from_secs(30))
            .expect("node B stored the burst")
    }
}

/// Wait, blocking this thread, for a round trip to Redis after the burst: whatever
/// Redis wrote to node A's connection for the burst went out before the burst's last
/// answer, so by this answer it is all in A's socket.
fn fence(redis: &RedisServer) {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}

/// Node A's inbound queue holds one message (1 byte: each message alone); node B
/// publishes a burst of 100 while A's thread is blocked, so that the whole burst is in
/// A's socket when A reads it: A's reader queues the first, the others do not fit
/// (counted), and the topic is caught up from the history once the queue has room. A
/// real wsevents.v1 subscriber on A gets every publication once, in order, then live
/// ones again.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_past_the_inbound_bound_is_caught_up_from_the_history() {
    const BURST: usize = 100;
    let redis = RedisServer::start();
    let config = RedisConfig {
        max_inbound_bytes: 1,
        ..RedisConfig::default()
    };
    let backend = Arc::new(RedisBackend::with_config(&redis.url(), config).unwrap());
    let hub = Hub::builder()
        .history(History::default())
        .backend(backend.clone())
        .build();
    connected(&hub).await;
    let url = v1::serve(PubsubServer::new(hub.clone())).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;
    let b = OtherNode::start(redis.url());
    b.batches.send(vec!["1".into()]).unwrap();
    assert_eq!(
        sub.pubs(1).await,
        [(b.stored.recv().unwrap()[0].clone(), "1".into())]
    );

    let burst: Vec<String> = (2..=BURST + 1).map(|i| i.to_string()).collect();
    let positions = b.publish_blocking(burst.clone());
    fence(&redis);
    let got = sub.pubs(BURST).await;
    assert_eq!(
        got,
        positions.into_iter().zip(burst).collect::<Vec<_>>(),
        "every publication once, in order"
    );
    assert_eq!(offsets(&got), (2..=BURST as u64 + 1).collect::<Vec<_>>());
    sub.nothing_for(Duration::from_millis(300)).await;
    assert_eq!(
        backend.inbound_dropped(),
        BURST as u64 - 1,
        "all but the first of the burst were past the bound"
    );
    assert_eq!(backend.inbound_bytes(), 0);
    // Live again.
    b.batches.send(vec!["after".into()]).unwrap();
    let live = sub.pubs(1).await;
    assert_eq!(live[0].1, "after");
    assert_eq!(live[0].0.offset(), BURST as u64 + 2);
}

/// The same on a hub without history: what does not fit is lost for this node's
/// subscribers and counted (in `dropped`, what `BackendStatus` reports); the queue takes
/// messages again once delivered. The burst is another program's `PUBLISH`es of
/// `wse1` envelopes, in one pipeline while A's thread is blocked.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_past_the_inbound_bound_without_history_is_counted() {
    const BURST: usize = 50;
    let redis = RedisServer::start();
    let config = RedisConfig {
        max_inbound_bytes: 1,
        ..RedisConfig::default()
    };
    let (hub, backend) = node(&redis, None, config).await;
    let (mut rx, _ws) = subscriber(&hub, "t").await;
    let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
        while redis.numsub("wsevents:t").await != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(subscribed.is_ok(), "subscribed in Redis");
    // Another node's envelope (docs on RedisBackend): "wse1", its id, 0x01 (text).
    let other = !backend.node_id();
    let envelope = |text: &str| {
        let mut envelope = b"wse1".to_vec();
        envelope.extend_from_slice(&other.to_be_bytes());
        envelope.push(0x01);
        envelope.extend_from_slice(text.as_bytes());
        envelope
    };
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut pipe = redis::pipe();
    for i in 1..=BURST {
        pipe.cmd("PUBLISH")
            .arg("wsevents:t")
            .arg(envelope(&format!("m{i}")))
            .ignore();
    }
    let () = pipe.query(&mut conn).unwrap();
    fence(&redis);
    assert_eq!(
        next(&mut rx, Duration::from_secs(10)).await.as_deref(),
        Some("m1")
    );
    let received: u64 = redis::cmd("PUBLISH")
        .arg("wsevents:t")
        .arg(envelope("after"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(received, 1);
    assert_eq!(
        next(&mut rx, Duration::from_secs(10)).await.as_deref(),
        Some("after"),
        "the rest of the burst is lost; the queue takes messages again"
    );
    assert_eq!(backend.inbound_dropped(), BURST as u64 - 1);
    assert_eq!(backend.dropped(), BURST as u64 - 1);
}
