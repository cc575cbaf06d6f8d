//! `wsevents serve --redis-cluster` (issue 29): two `serve` nodes on a real Redis
//! Cluster of 3 masters and 3 replicas are one set of topics.
#![allow(clippy::unwrap_used)]

mod support;

#[path = "../../wsevents/tests/support/redis_cluster.rs"]
mod redis_cluster;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use redis_cluster::RedisCluster;
use support::Serve;
use wsevents::Message;

/// What a topic connection receives next (text), within 10 s.
async fn next_text(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("no text: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_on_a_cluster_share_a_topic() {
    let cluster = RedisCluster::start().await;
    let urls = cluster.urls();
    let seeds = format!("{},{}", urls[0], urls[1]);
    let a = Serve::start(&["--redis-cluster", &seeds]);
    let b = Serve::start(&["--redis-cluster", &seeds]);
    let mut on_b = wsevents::connect(&b.url("/topic/news")).await.unwrap();
    // Until B holds its SSUBSCRIBE on the topic's master.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    'subscribed: loop {
        for shard in cluster.shards().await {
            let mut conn = cluster.connection(shard.master).await;
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .arg("wsevents:*news")
                .query_async(&mut conn)
                .await
                .unwrap();
            if !channels.is_empty() {
                break 'subscribed;
            }
        }
        assert!(std::time::Instant::now() < deadline, "B never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut on_a = wsevents::connect(&a.url("/topic/news")).await.unwrap();
    on_a.send(Message::text("hello from a")).await.unwrap();
    assert_eq!(next_text(&mut on_b).await, "hello from a");
    assert_eq!(
        next_text(&mut on_a).await,
        "hello from a",
        "itself included"
    );
    assert!(!b.log().contains("ERROR"), "B's log: {}", b.log());
}

/// `--redis` and `--redis-cluster` together are refused.
#[test]
fn redis_and_redis_cluster_are_one_or_the_other() {
    let out = std::process::Command::new(support::BIN)
        .args([
            "serve",
            "--redis",
            "redis://127.0.0.1:1",
            "--redis-cluster",
            "redis://127.0.0.1:2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
