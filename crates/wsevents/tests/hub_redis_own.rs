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
use wsevents::hub::{Framing, History, Hub, Publication, RedisBackend};
use wsevents::{Message, Server};

struct Offsets;

impl Framing for Offsets {
    fn frame(&self, _: &str, publication: &Publication) -> Message {
        Message::text(publication.position.offset().to_string())
    }
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
