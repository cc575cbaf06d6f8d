//! wsevents.v1 on the Redis hub (issue 15): positions agreed by every node, history
//! that outlives the node a client was on, recovery across nodes with a clean seam
//! while publishing goes on, idempotent publishes across nodes, and Redis restarted
//! without its data: publishes refused while it is down, and every subscriber told the
//! truth about what it recovered afterwards. Each test has its own `redis-server`.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/v1.rs"]
mod v1;

use std::time::Duration;

use redis_server::RedisServer;
use v1::{Peer, offsets};
use wsevents::hub::{BackendStatus, History, Hub, Position, RedisBackend, RedisConfig};
use wsevents::pubsub::wire::{ErrorCode, Reply};
use wsevents::pubsub::{MAX_PENDING_PUBLISHES, PubsubServer};

/// A node: wsevents.v1 on a hub with history on `redis`; its URL.
async fn node(redis: &RedisServer, history: History) -> (String, Hub) {
    let config = RedisConfig {
        backoff_max: Duration::from_millis(200),
        ..RedisConfig::default()
    };
    node_with(redis, history, config).await
}

async fn node_with(redis: &RedisServer, history: History, config: RedisConfig) -> (String, Hub) {
    let backend = RedisBackend::with_config(&redis.url(), config).unwrap();
    let hub = Hub::builder().history(history).backend(backend).build();
    // No publish rate: these tests publish in bursts (pubsub_rate.rs tests the rate).
    let url = v1::serve(PubsubServer::new(hub.clone()).publish_rate(None)).await;
    connected(&hub).await;
    (url, hub)
}

async fn connected(hub: &Hub) {
    for _ in 0..3000 {
        if hub.backend_status() == BackendStatus::Connected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not connected to Redis: {:?}", hub.backend_status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_sees_one_order_of_positions_whoever_published() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis, History::default()).await;
    let (b, _) = node(&redis, History::default()).await;
    let mut on_a = Peer::connect(&a).await;
    let mut on_b = Peer::connect(&b).await;
    let (_, start_a) = on_a.subscribe("t", None).await;
    let (_, start_b) = on_b.subscribe("t", None).await;
    assert_eq!(start_a, start_b, "one epoch, one offset, in Redis");
    let mut pa = Peer::connect(&a).await;
    let mut pb = Peer::connect(&b).await;
    for i in 0..200 {
        let (publisher, name) = if i % 2 == 0 {
            (&mut pa, "a")
        } else {
            (&mut pb, "b")
        };
        publisher
            .publish_later("t", &format!("{name}{i}"), None)
            .await;
    }
    let seen_a = on_a.pubs(200).await;
    let seen_b = on_b.pubs(200).await;
    assert_eq!(
        seen_a, seen_b,
        "the same publications at the same positions"
    );
    assert_eq!(offsets(&seen_a), (1..=200).collect::<Vec<_>>());
    // Each publisher's own publications keep their order.
    for name in ["a", "b"] {
        let mine: Vec<u32> = seen_a
            .iter()
            .filter_map(|(_, t)| t.strip_prefix(name)?.parse().ok())
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{name}: {mine:?}");
        assert_eq!(mine.len(), 100);
    }
}

/// A subscriber leaves node A and comes back on node B while a publisher on A goes
/// on: recovered true, everything missed, then live, no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_with_a_clean_seam() {
    const TOTAL: u64 = 3000;
    let redis = RedisServer::start();
    let (a, _) = node(&redis, History::default()).await;
    let (b, _) = node(&redis, History::default()).await;
    let mut sub = Peer::connect(&a).await;
    sub.subscribe("t", None).await;
    let publisher = tokio::spawn({
        let a = a.clone();
        async move {
            let mut p = Peer::connect(&a).await;
            for i in 1..=TOTAL {
                p.publish("t", &i.to_string(), Some(&format!("k{i}"))).await;
            }
        }
    });
    let first = sub.pubs(300).await;
    let last = first.last().unwrap().0.clone();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut back = Peer::connect(&b).await;
    let (recovered, at) = back.subscribe("t", Some(last.clone())).await;
    assert!(recovered, "the history is in Redis");
    assert!(at.offset() >= last.offset());
    let rest = back.pubs((TOTAL - last.offset()) as usize).await;
    assert_eq!(
        offsets(&rest),
        (last.offset() + 1..=TOTAL).collect::<Vec<_>>()
    );
    assert!(rest.iter().all(|(p, t)| *t == p.offset().to_string()));
    back.nothing_for(Duration::from_millis(200)).await;
    publisher.await.unwrap();
}

/// A node's subscription to Redis is lost (Redis drops its pub/sub connections) while
/// another node publishes, and nothing is published after that: once resubscribed,
/// the node reads what its subscribers missed from the history and delivers it, in
/// order, with no hole. (Without it, the subscriber would wait for ever: no later
/// publication shows it the gap.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_subscription_catches_up_from_the_history() {
    let redis = RedisServer::start();
    // A comes back slowly (up to a second), so that B's publications fall into its
    // outage.
    let slow = RedisConfig {
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(1),
        ..RedisConfig::default()
    };
    let (a, hub_a) = node_with(&redis, History::default(), slow).await;
    let (b, _) = node(&redis, History::default()).await;
    let mut sub = Peer::connect(&a).await;
    sub.subscribe("t", None).await;
    let mut publisher = Peer::connect(&b).await;
    publisher.publish("t", "1", None).await;
    assert_eq!(offsets(&sub.pubs(1).await), [1]);
    let mut expected = 1;
    let mut missed_by_a = 0;
    for _ in 0..20 {
        let mut conn = redis.connection().await;
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .unwrap();
        for _ in 0..500 {
            if hub_a.backend_status() != BackendStatus::Connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut published = Vec::new();
        for _ in 0..3 {
            expected += 1;
            published.push(publisher.publish("t", &expected.to_string(), None).await);
        }
        // A was down before the first and still is after the last: all three were
        // stored and sent on the channel while it was not subscribed.
        if matches!(hub_a.backend_status(), BackendStatus::Reconnecting { .. }) {
            let got = sub.pubs(3).await;
            assert_eq!(
                got.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
                published,
                "in order, each once"
            );
            assert!(got.iter().all(|(p, t)| *t == p.offset().to_string()));
            missed_by_a = 3;
            break;
        }
        // A came back in the middle: some live, some caught up (this raw client does
        // not recover a hole); start again.
        connected(&hub_a).await;
        sub.drain(Duration::from_millis(300)).await;
    }
    assert_eq!(
        missed_by_a, 3,
        "the publications never fell into A's outage"
    );
    connected(&hub_a).await;
    sub.nothing_for(Duration::from_millis(300)).await;
    // And live again after the catch-up.
    expected += 1;
    let at = publisher.publish("t", &expected.to_string(), None).await;
    assert_eq!(sub.pubs(1).await[0].0, at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_on_another_node_with_its_key_is_stored_once() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis, History::default()).await;
    let (b, _) = node(&redis, History::default()).await;
    let mut sub = Peer::connect(&b).await;
    sub.subscribe("t", None).await;
    let first = Peer::connect(&a)
        .await
        .publish("t", "once", Some("k-1"))
        .await;
    let again = Peer::connect(&b)
        .await
        .publish("t", "once", Some("k-1"))
        .await;
    assert_eq!(first, again);
    let next = Peer::connect(&b).await.publish("t", "next", None).await;
    assert_eq!(next.offset(), first.offset() + 1);
    let pubs = sub.pubs(2).await;
    assert_eq!(
        pubs.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        ["once", "next"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_past_the_history_in_redis_recovers_nothing() {
    let redis = RedisServer::start();
    let history = History {
        size: 10,
        ttl: Duration::from_secs(60),
        ..History::default()
    };
    let (a, _) = node(&redis, history).await;
    let mut p = Peer::connect(&a).await;
    let first = p.publish("t", "1", None).await;
    for i in 2..=50 {
        p.publish("t", &i.to_string(), None).await;
    }
    let mut back = Peer::connect(&a).await;
    let (recovered, at) = back.subscribe("t", Some(first.clone())).await;
    assert!(!recovered);
    assert_eq!(at.offset(), 50);
    back.nothing_for(Duration::from_millis(200)).await;
    let (recovered, _) = back
        .subscribe("t", Some(Position::new(first.epoch(), 45).unwrap()))
        .await;
    assert!(recovered, "45 is within the 10 kept");
    assert_eq!(offsets(&back.pubs(5).await), [46, 47, 48, 49, 50]);
    // Bytes: 4 KiB of history, 1 KiB publications: the latest 4 kept.
    let light = History {
        max_bytes: 4096,
        ..History::default()
    };
    let (d, _) = node(&redis, light).await;
    let mut p = Peer::connect(&d).await;
    let mut positions = Vec::new();
    for _ in 0..10 {
        positions.push(p.publish("heavy", &"x".repeat(1024), None).await);
    }
    let mut back = Peer::connect(&d).await;
    let (recovered, _) = back.subscribe("heavy", Some(positions[4].clone())).await;
    assert!(!recovered, "6 of 1 KiB do not fit in 4 KiB");
    let (recovered, _) = back.subscribe("heavy", Some(positions[5].clone())).await;
    assert!(recovered, "the latest 4 do");
    assert_eq!(offsets(&back.pubs(4).await), [7, 8, 9, 10]);
    // Age: a history of 1 s, a client back after 1.5 s.
    let aged = History {
        size: 100,
        ttl: Duration::from_secs(1),
        ..History::default()
    };
    let (c, _) = node(&redis, aged).await;
    let mut p = Peer::connect(&c).await;
    let since = p.publish("aging", "1", None).await;
    p.publish("aging", "2", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut back = Peer::connect(&c).await;
    let (recovered, _) = back.subscribe("aging", Some(since)).await;
    assert!(!recovered, "older than the history's age");
}

/// Redis killed (it keeps nothing) and restarted while a publisher publishes with
/// keys and retries: while it is down every publish is refused `unavailable` (never a
/// position without a store); afterwards the topic has a new epoch, a subscriber from
/// before is told `recovered: false`, and one within the new epoch `true` with all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_data_tells_every_subscriber_the_truth() {
    let mut redis = RedisServer::start();
    let (a, hub) = node(&redis, History::default()).await;
    let mut p = Peer::connect(&a).await;
    let mut sub = Peer::connect(&a).await;
    sub.subscribe("t", None).await;
    let before = p.publish("t", "before", Some("k0")).await;
    assert_eq!(sub.pubs(1).await[0].0, before);
    redis.kill();
    let mut refused = 0;
    for i in 0.. {
        let id = p.publish_later("t", "during", Some(&format!("d{i}"))).await;
        match p.reply().await {
            Reply::Error {
                id: Some(got),
                code,
                ..
            } if got == id => {
                assert_eq!(code, ErrorCode::Unavailable);
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            Reply::Published { .. } => {} // sent before the kill was seen
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.restart();
    connected(&hub).await;
    let after = loop {
        let id = p.publish_later("t", "after", Some("k1")).await;
        match p.reply().await {
            Reply::Published {
                id: got, position, ..
            } if got == id => break position,
            Reply::Error {
                code: ErrorCode::Unavailable,
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_ne!(
        after.epoch(),
        before.epoch(),
        "Redis lost the history: a new epoch"
    );
    assert_eq!(after.offset(), 1);
    let mut back = Peer::connect(&a).await;
    let (recovered, at) = back.subscribe("t", Some(before.clone())).await;
    assert!(
        !recovered,
        "what was before the restart cannot be vouched for"
    );
    assert_eq!(at, after);
    let mut within = Peer::connect(&a).await;
    let (recovered, _) = within
        .subscribe("t", Some(Position::new(after.epoch(), 0).unwrap()))
        .await;
    assert!(recovered);
    assert_eq!(within.pubs(1).await[0].1, "after");
}

/// Publishes wait for Redis in the connection's own task (no task each), any number at
/// once up to `MAX_PENDING_PUBLISHES`; past it a publish is refused for now
/// (`too_many_requests`, temporary: nothing was stored), and every one that waited is
/// answered once Redis takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_past_what_may_wait_for_redis_are_refused_for_now() {
    const EXTRA: usize = 5;
    let redis = RedisServer::start();
    // Patient: nothing times out while Redis holds the writes.
    let config = RedisConfig {
        timeout: Duration::from_secs(30),
        ..RedisConfig::default()
    };
    let (url, _) = node_with(&redis, History::default(), config).await;
    let mut peer = Peer::connect(&url).await;
    let mut conn = redis.connection().await;
    // Writes (the store script among them) wait; other commands go on.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..MAX_PENDING_PUBLISHES + EXTRA {
        let key = format!("k{i}");
        ids.push(peer.publish_later("t", &i.to_string(), Some(&key)).await);
    }
    let mut refused = Vec::new();
    for _ in 0..EXTRA {
        match peer.reply().await {
            Reply::Error {
                id: Some(id),
                code: ErrorCode::TooManyRequests,
                ..
            } => refused.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, ids[MAX_PENDING_PUBLISHES..]);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut stored = std::collections::BTreeMap::new();
    for _ in 0..MAX_PENDING_PUBLISHES {
        match peer.reply().await {
            Reply::Published { id, position, .. } => {
                assert!(
                    stored.insert(id, position.offset()).is_none(),
                    "twice: {id}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let offsets: Vec<u64> = stored.values().copied().collect();
    assert_eq!(
        offsets,
        (1..=MAX_PENDING_PUBLISHES as u64).collect::<Vec<_>>(),
        "stored in the order they came"
    );
    // The refused ones, sent again, are stored.
    let at = peer.publish("t", "again", Some("k1024")).await;
    assert_eq!(at.offset(), MAX_PENDING_PUBLISHES as u64 + 1);
}
