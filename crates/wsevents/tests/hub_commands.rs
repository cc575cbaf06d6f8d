//! Commands to every node and history pages (issue 25, the server API's library
//! side), on a real Redis: two hubs on one Redis answer one command, a hub without
//! Redis answers none, and a history page reads what was stored without subscribing.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/redis.rs"]
mod redis_server;

use std::time::Duration;

use redis_server::RedisServer;
use serde_json::json;
use wsevents::Error;
use wsevents::hub::{BackendStatus, History, Hub, RedisBackend, RedisConfig};

fn config() -> RedisConfig {
    RedisConfig {
        backoff_max: Duration::from_millis(200),
        ..RedisConfig::default()
    }
}

async fn node(redis: &RedisServer, name: &'static str) -> Hub {
    let hub = Hub::builder()
        .history(History::default())
        .backend(RedisBackend::with_config(&redis.url(), config()).unwrap())
        .build();
    hub.on_command(move |_, command| json!({"node": name, "got": command}));
    tokio::time::timeout(Duration::from_secs(10), async {
        while hub.backend_status() != BackendStatus::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    hub
}

/// The command, sent until both control connections are up (they connect on their
/// own, beside the publisher and the subscriber).
async fn command_reaching(hub: &Hub, nodes: usize) -> wsevents::hub::Answers {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(got) = hub.command(json!("count"), Duration::from_secs(2)).await
                && got.reached == nodes
            {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the command never reached every node")
}

#[tokio::test]
async fn a_command_reaches_every_node_and_each_answers() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let got = command_reaching(&b, 2).await;
    let mut names: Vec<_> = got.answers.iter().map(|a| a["node"].clone()).collect();
    names.sort_by_key(ToString::to_string);
    assert_eq!(names, [json!("a"), json!("b")]);
    assert!(got.answers.iter().all(|a| a["got"] == "count"));
    // A third hub on another prefix is another hub: not reached.
    let other = Hub::builder()
        .backend(
            RedisBackend::with_config(
                &redis.url(),
                RedisConfig {
                    prefix: "other:".into(),
                    ..config()
                },
            )
            .unwrap(),
        )
        .build();
    let alone = command_reaching(&other, 1).await;
    assert_eq!(alone.answers, [json!(null)]);
    drop(a);
}

// b's handler blocks its thread: a needs another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_in_time_is_not_waited_for() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    command_reaching(&a, 2).await;
    // b's handler takes longer than the wait.
    b.on_command(|_, _| {
        std::thread::sleep(Duration::from_millis(600));
        json!("late")
    });
    let started = std::time::Instant::now();
    let got = a
        .command(json!("count"), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(got.reached, 2);
    assert_eq!(got.answers, [json!({"node": "a", "got": "count"})]);
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn without_redis_a_command_is_unavailable() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "a").await;
    command_reaching(&a, 1).await;
    redis.kill();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match a.command(json!("count"), Duration::from_secs(1)).await {
                Err(error) => return error,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");
}

#[tokio::test]
async fn a_history_page_is_read_from_redis_without_subscribing() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let empty = b.read_history("news", None, 10).await.unwrap();
    assert_eq!((empty.position, empty.publications.len()), (None, 0));
    let mut at = Vec::new();
    for n in 1..=5 {
        at.push(
            a.publish_confirmed("news", format!("n{n}"), None)
                .await
                .unwrap(),
        );
    }
    // From the oldest, a page of two; then on from its last.
    let first = b.read_history("news", None, 2).await.unwrap();
    let texts = |page: &wsevents::hub::HistoryPage| -> Vec<String> {
        page.publications
            .iter()
            .map(|p| match &p.message {
                wsevents::Message::Text(t) => t.to_string(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(texts(&first), ["n1", "n2"]);
    assert!(first.more && !first.gap);
    assert_eq!(first.position.as_ref(), Some(&at[4]));
    let next = b
        .read_history("news", Some(&first.publications[1].position), 10)
        .await
        .unwrap();
    assert_eq!(texts(&next), ["n3", "n4", "n5"]);
    assert!(!next.more && !next.gap);
    // From the latest: nothing, no gap. From another epoch: a gap, from the oldest.
    let latest = b.read_history("news", Some(&at[4]), 10).await.unwrap();
    assert!(latest.publications.is_empty() && !latest.gap);
    let elsewhere = "zz9:3".parse().unwrap();
    let gap = b.read_history("news", Some(&elsewhere), 10).await.unwrap();
    assert!(gap.gap);
    assert_eq!(texts(&gap), ["n1", "n2", "n3", "n4", "n5"]);
    // Nothing was subscribed on Redis for it.
    assert!(
        redis.channels().await.is_empty(),
        "{:?}",
        redis.channels().await
    );
}

#[tokio::test]
async fn an_in_process_history_page_reads_the_ring() {
    let hub = Hub::builder()
        .history(History {
            size: 3,
            ..History::default()
        })
        .build();
    let mut at = Vec::new();
    for n in 1..=5 {
        at.push(
            hub.publish_confirmed("t", format!("{n}"), None)
                .await
                .unwrap(),
        );
    }
    let all = hub.read_history("t", None, 100).await.unwrap();
    let offsets: Vec<u64> = all
        .publications
        .iter()
        .map(|p| p.position.offset())
        .collect();
    assert_eq!(offsets, [3, 4, 5]);
    // Since 1: 2 was trimmed, a gap.
    let trimmed = hub.read_history("t", Some(&at[0]), 100).await.unwrap();
    assert!(trimmed.gap);
    let after_three = hub.read_history("t", Some(&at[2]), 1).await.unwrap();
    assert!(!after_three.gap && after_three.more);
    assert_eq!(after_three.publications[0].position, at[3]);
    let none = hub.read_history("never", None, 10).await.unwrap();
    assert_eq!(none.position, None);
    let no_history = Hub::new().read_history("t", None, 1).await;
    assert!(matches!(no_history, Err(Error::InvalidAccess(_))));
}

#[tokio::test]
async fn on_a_redis_cluster_commands_and_history_pages_work_too() {
    let cluster = redis_cluster::RedisCluster::start().await;
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let node = |name: &'static str| {
        let hub = Hub::builder()
            .history(History::default())
            .backend(RedisBackend::cluster_with_config(&urls, config()).unwrap())
            .build();
        hub.on_command(move |_, command| json!({"node": name, "got": command}));
        hub
    };
    let (a, b) = (node("a"), node("b"));
    let got = command_reaching(&b, 2).await;
    let mut names: Vec<_> = got.answers.iter().map(|a| a["node"].to_string()).collect();
    names.sort();
    assert_eq!(names, ["\"a\"", "\"b\""]);
    // Topics on several masters: each page read where its topic lives.
    for topic in ["news", "sport", "weather", "x"] {
        let at = a.publish_confirmed(topic, topic, None).await.unwrap();
        let page = b.read_history(topic, None, 10).await.unwrap();
        assert_eq!(page.position, Some(at));
        assert_eq!(page.publications.len(), 1);
    }
}

#[tokio::test]
async fn an_in_process_read_that_trims_gives_the_bytes_back_to_the_budget() {
    let hub = Hub::builder()
        .history(History {
            ttl: Duration::from_millis(20),
            ..History::default()
        })
        .build();
    for _ in 0..3 {
        hub.publish_confirmed("t", "x".repeat(10_000), None)
            .await
            .unwrap();
    }
    let before = hub.stats().history_bytes;
    assert!(before >= 30_000, "{before}");
    // Past the age: the read trims them all, and the budget is told.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let page = hub.read_history("t", None, 10).await.unwrap();
    assert!(page.publications.is_empty());
    let after = hub.stats().history_bytes;
    assert!(after < before - 30_000, "{before} -> {after}");
}
