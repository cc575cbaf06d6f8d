//! The hub on a real Redis (issue 14): three nodes as one hub, exactly once and in
//! order; Redis killed and restarted while publishing; Redis subscriptions that follow
//! the local subscribers. Each test starts its own `redis-server` on a free loopback
//! port (`scripts/redis install` puts it on the machine) and kills it by PID.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;

use std::time::Duration;

use redis_server::RedisServer;

use futures_util::StreamExt;
use wsevents::hub::{BackendStatus, Hub, RedisBackend, RedisConfig};
use wsevents::{Message, Server, WebSocket};

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// A node: a server and its hub on `redis`.
struct Node {
    server: Server,
    hub: Hub,
}

impl Node {
    async fn start(redis: &RedisServer) -> Node {
        let config = RedisConfig {
            // Quick reconnects, for the restart test.
            backoff_max: Duration::from_millis(200),
            ..RedisConfig::default()
        };
        let backend = RedisBackend::with_config(&redis.url(), config).unwrap();
        let hub = Hub::builder().backend(backend).build();
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let node = Node { server, hub };
        wait_until("the node is connected to Redis", async || {
            node.hub.backend_status() == BackendStatus::Connected
        })
        .await;
        node
    }

    /// A client subscribed to `topic` on this node; its messages arrive on the
    /// returned channel, and its server socket is returned too.
    async fn subscriber(
        &self,
        topic: &str,
    ) -> (tokio::sync::mpsc::UnboundedReceiver<String>, WebSocket) {
        let url = format!("ws://{}/", self.server.local_addr());
        let mut client = wsevents::connect(&url).await.unwrap();
        let ws = self.server.accept().await.unwrap();
        self.hub.subscribe(&ws, topic).unwrap();
        tokio::spawn({
            let ws = ws.clone();
            async move { ws.run().await }
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = client.next().await {
                if tx.send(text.as_str().to_owned()).is_err() {
                    break;
                }
            }
        });
        (rx, ws)
    }
}

/// The next message, or None after `wait` with nothing.
async fn next(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wait: Duration,
) -> Option<String> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

/// Three nodes on one Redis, two subscribers each: 10,000 messages published on one
/// node reach all six subscribers exactly once, in publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_each_message_to_every_subscriber_once_in_order() {
    const N: usize = 10_000;
    let redis = RedisServer::start();
    let nodes = [
        Node::start(&redis).await,
        Node::start(&redis).await,
        Node::start(&redis).await,
    ];
    let mut subscribers = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            subscribers.push(node.subscriber("feed").await.0);
        }
    }
    wait_until("three nodes subscribed in Redis", async || {
        redis.numsub("wsevents:feed").await == 3
    })
    .await;
    for i in 0..N {
        assert_eq!(nodes[0].hub.publish("feed", format!("m{i}")), 2);
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (k, rx) in subscribers.iter_mut().enumerate() {
        for i in 0..N {
            let got = next(rx, Duration::from_secs(20)).await;
            assert_eq!(got.as_deref(), Some(&*format!("m{i}")), "subscriber {k}");
        }
    }
    // Exactly once: nothing more comes (no echo of node 0's own messages either).
    for rx in &mut subscribers {
        assert_eq!(next(rx, Duration::from_millis(300)).await, None);
    }
    for node in &nodes {
        assert_eq!(node.hub.stats().delivered, 2 * N as u64);
    }
}

/// Publish `count` messages on `node`, numbered from `*i` on, a millisecond apart.
async fn publish(node: &Node, i: &mut usize, count: usize) {
    for _ in 0..count {
        node.hub.publish("t", i.to_string());
        *i += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Redis is killed while node A publishes and restarted later: A's own subscriber gets
/// every message in order throughout; A reports the loss; both nodes reconnect and
/// resubscribe; later messages reach node B again, and B never sees a duplicate or a
/// message out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_delivering_locally_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start();
    let a = Node::start(&redis).await;
    let b = Node::start(&redis).await;
    let (mut local, _ws_a) = a.subscriber("t").await;
    let (mut remote, _ws_b) = b.subscriber("t").await;
    wait_until("both subscribed", async || {
        redis.numsub("wsevents:t").await == 2
    })
    .await;

    let mut i = 0;
    publish(&a, &mut i, 200).await;
    // B has them all before Redis dies (what is in flight when it dies is lost).
    for k in 0..200 {
        assert_eq!(
            next(&mut remote, Duration::from_secs(10)).await,
            Some(k.to_string())
        );
    }
    redis.kill();
    publish(&a, &mut i, 300).await;
    wait_until("A says Redis is gone", async || {
        matches!(a.hub.backend_status(), BackendStatus::Reconnecting { .. })
    })
    .await;
    publish(&a, &mut i, 100).await;
    wait_until("A counts the publishes it could not carry", async || {
        matches!(a.hub.backend_status(), BackendStatus::Reconnecting { dropped, .. } if dropped > 0)
    })
    .await;
    redis.restart();
    wait_until("both reconnected", async || {
        a.hub.backend_status() == BackendStatus::Connected
            && b.hub.backend_status() == BackendStatus::Connected
    })
    .await;
    wait_until("both resubscribed", async || {
        redis.numsub("wsevents:t").await == 2
    })
    .await;
    let before_after = i;
    publish(&a, &mut i, 200).await;
    let total = i;

    // A's own subscriber: everything, in order, the outage notwithstanding.
    for k in 0..total {
        assert_eq!(
            next(&mut local, Duration::from_secs(10)).await,
            Some(k.to_string())
        );
    }
    // B, after the first 200: increasing, no duplicate, the last 200 all there.
    let mut seen = vec![199];
    while let Some(m) = next(&mut remote, Duration::from_millis(500)).await {
        seen.push(m.parse::<usize>().unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {seen:?}"
    );
    assert!(
        (before_after..total).all(|k| seen.contains(&k)),
        "after the recovery"
    );
}

/// A node holds a Redis subscription exactly for the topics with local subscribers:
/// subscribed on the first, unsubscribed after the last (by unsubscribe or close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_follow_the_local_subscribers() {
    let redis = RedisServer::start();
    let node = Node::start(&redis).await;
    let expect = async |channels: &[&str]| {
        let want: Vec<String> = channels.iter().map(|c| format!("wsevents:{c}")).collect();
        wait_until(&format!("PUBSUB CHANNELS is {want:?}"), async || {
            redis.channels().await == want
        })
        .await;
    };
    expect(&[]).await;
    let (_one, ws1) = node.subscriber("a").await;
    expect(&["a"]).await;
    let (_two, ws2) = node.subscriber("a").await;
    node.hub.subscribe(&ws2, "b").unwrap();
    expect(&["a", "b"]).await;
    assert!(node.hub.unsubscribe(&ws1, "a"));
    expect(&["a", "b"]).await;
    assert_eq!(
        redis.numsub("wsevents:a").await,
        1,
        "one SUBSCRIBE per node"
    );
    ws2.close().unwrap();
    expect(&[]).await;
    node.hub.subscribe(&ws1, "c").unwrap();
    expect(&["c"]).await;
    assert_eq!(node.hub.stats().topics, 1);
}
