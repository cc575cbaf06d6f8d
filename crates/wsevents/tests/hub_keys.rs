//! Idempotency keys are per topic, on both backends (issue 24): topic `a` with key
//! `b:c` and topic `a:b` with key `c` are two publications, each stored at its own
//! topic's offset 1, and a real repeat within one topic is still stored once. (Redis
//! used to make both the key `{prefix}key:a:b:c`: the second publish was not stored and
//! was answered with the other topic's position.)
#![allow(clippy::unwrap_used)]

#[cfg(feature = "redis")]
#[path = "support/redis.rs"]
mod redis_server;

use wsevents::hub::{History, Hub};

/// Publish with keys that would collide if the topic were not delimited, then a repeat
/// and a fresh publication on each topic.
async fn keys_are_per_topic(hub: &Hub) {
    let first = hub
        .publish_confirmed("a", "on a", Some("b:c"))
        .await
        .unwrap();
    let second = hub
        .publish_confirmed("a:b", "on a:b", Some("c"))
        .await
        .unwrap();
    assert_eq!(first.offset(), 1, "{first}");
    assert_eq!(second.offset(), 1, "{second}");
    // Each position is its own topic's: the next publication of each topic comes right
    // after it, in the same epoch (had "a:b" been answered with "a"'s position and not
    // stored, its next one would be offset 1 of another epoch).
    let after_first = hub.publish_confirmed("a", "next", None).await.unwrap();
    let after_second = hub.publish_confirmed("a:b", "next", None).await.unwrap();
    assert_eq!(
        (after_first.epoch(), after_first.offset()),
        (first.epoch(), 2)
    );
    assert_eq!(
        (after_second.epoch(), after_second.offset()),
        (second.epoch(), 2),
        "the publish to \"a:b\" with key \"c\" was stored on \"a:b\""
    );
    // A real repeat within one topic: not stored again, the first one's position.
    let again = hub
        .publish_confirmed("a:b", "on a:b", Some("c"))
        .await
        .unwrap();
    assert_eq!(again, second);
    let again = hub
        .publish_confirmed("a", "on a", Some("b:c"))
        .await
        .unwrap();
    assert_eq!(again, first);
    let last = hub.publish_confirmed("a:b", "last", None).await.unwrap();
    assert_eq!(last.offset(), 3, "the repeat took no offset");
}

#[tokio::test]
async fn keys_are_per_topic_in_process() {
    let hub = Hub::builder().history(History::default()).build();
    keys_are_per_topic(&hub).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_topic_on_redis() {
    use std::time::Duration;
    use wsevents::hub::{BackendStatus, RedisBackend};

    let redis = redis_server::RedisServer::start();
    let hub = Hub::builder()
        .history(History::default())
        .backend(RedisBackend::new(&redis.url()).unwrap())
        .build();
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        while hub.backend_status() != BackendStatus::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(connected.is_ok(), "{:?}", hub.backend_status());
    keys_are_per_topic(&hub).await;
}
