//! The hub against a backend that keeps the history (issue 24), driven through its
//! `Backend` trait by a backend of the test's own, so that the test decides when the
//! channel delivers and when the history read answers; the subscriber is a real socket.
//!
//! - A catch-up after a lost backend subscription: what the backend delivers live while
//!   the history is read waits until what was missed is delivered, so a subscriber
//!   without positions gets every publication once, in order, with no hole (before,
//!   the live one went first and the missed ones were skipped).
//! - This node's own publication reaches its subscribers when its store is answered,
//!   if it is the topic's next, without waiting for the channel; the channel's copy is
//!   then skipped.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use wsevents::hub::{
    Backend, BackendStatus, History, Hub, Inbound, Pending, Position, Publication, Recovery,
};
use wsevents::{Message, Server};

const EPOCH: &str = "e1";

fn publication(offset: u64) -> Publication {
    Publication {
        position: Position::new(EPOCH, offset).unwrap(),
        message: Message::text(format!("m{offset}")),
    }
}

/// A backend that keeps the history elsewhere: the test hands publications in as
/// another node would, and answers the history read when it chooses.
#[derive(Clone, Default)]
struct HeldHistory {
    inbound: Arc<Mutex<Option<Inbound>>>,
    reads: Arc<Mutex<Vec<oneshot::Sender<Recovery>>>>,
    /// The offset the next store gets (the channel's copy is the test's to send).
    stored: Arc<AtomicU64>,
}

impl Backend for HeldHistory {
    fn start(&self, inbound: Inbound) {
        *self.inbound.lock().unwrap() = Some(inbound);
    }
    fn subscribe(&self, _: &str) {}
    fn unsubscribe(&self, _: &str) {}
    fn publish(&self, _: &str, _: &Message) {}
    fn status(&self) -> BackendStatus {
        BackendStatus::Connected
    }
    fn stores_history(&self) -> bool {
        true
    }
    fn store(&self, _: &str, _: &Message, _: Option<&str>) -> Pending<Position> {
        let offset = self.stored.fetch_add(1, Ordering::SeqCst) + 1;
        Pending::ready(Position::new(EPOCH, offset))
    }
    fn recover(&self, _: &str, _: Option<&Position>) -> Pending<Recovery> {
        let (answer, read) = oneshot::channel();
        self.reads.lock().unwrap().push(answer);
        Pending::new(async move { read.await.map_err(|_| wsevents::Error::Closed) })
    }
}

#[tokio::test]
async fn what_arrives_live_during_a_catch_up_waits_for_the_missed_publications() {
    let backend = HeldHistory::default();
    let hub = Hub::builder()
        .history(History::default())
        .backend(backend.clone())
        .build();
    let inbound = backend.inbound.lock().unwrap().clone().unwrap();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    // A subscriber without positions, given 1 and 2.
    hub.subscribe(&ws, "t").unwrap();
    assert_eq!(inbound.deliver_at("t", &publication(1)), 1);
    assert_eq!(inbound.deliver_at("t", &publication(2)), 1);

    // The subscription is lost and back: 3 and 4 were stored meanwhile. While the
    // history is read, 5 arrives live.
    inbound.resubscribed("t");
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(read) = backend.reads.lock().unwrap().pop() {
                return read;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the catch-up reads the history");
    assert_eq!(inbound.deliver_at("t", &publication(5)), 0, "held back");
    read.send(Recovery {
        position: Position::new(EPOCH, 5).unwrap(),
        publications: Some((3..=5).map(publication).collect()),
    })
    .unwrap();

    let mut received = Vec::new();
    while received.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => received.push(text.as_str().to_owned()),
            other => panic!("after {received:?}: {other:?}"),
        }
    }
    assert_eq!(received, ["m1", "m2", "m3", "m4", "m5"]);
    // And live again afterwards.
    assert_eq!(inbound.deliver_at("t", &publication(6)), 1);
    match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), "m6"),
        other => panic!("{other:?}"),
    }
}

async fn next_text(client: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_own_publication_is_delivered_when_stored_if_it_is_the_next() {
    let backend = HeldHistory::default();
    let hub = Hub::builder()
        .history(History::default())
        .backend(backend.clone())
        .build();
    let inbound = backend.inbound.lock().unwrap().clone().unwrap();
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let mut client = wsevents::connect(&url).await.unwrap();
    let ws = server.accept().await.unwrap();
    tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    hub.subscribe(&ws, "t").unwrap();
    // Another node's publication 1 comes on the channel.
    backend.stored.store(1, Ordering::SeqCst);
    assert_eq!(inbound.deliver_at("t", &publication(1)), 1);
    assert_eq!(next_text(&mut client).await, "m1");

    // This node's 2: delivered when the store answers, the channel holding its copy.
    let at = hub.publish_confirmed("t", "m2", None).await.unwrap();
    assert_eq!(at.offset(), 2);
    assert_eq!(next_text(&mut client).await, "m2");
    assert_eq!(
        inbound.deliver_at("t", &publication(2)),
        0,
        "the channel's copy"
    );

    // Another node stored 3 meanwhile, not yet on the channel: this node's 4 is not
    // the next one, so it waits for the channel, which brings 3 then 4.
    backend.stored.fetch_add(1, Ordering::SeqCst);
    let at = hub.publish_confirmed("t", "m4", None).await.unwrap();
    assert_eq!(at.offset(), 4);
    assert_eq!(inbound.deliver_at("t", &publication(3)), 1);
    assert_eq!(inbound.deliver_at("t", &publication(4)), 1);
    assert_eq!(next_text(&mut client).await, "m3");
    assert_eq!(next_text(&mut client).await, "m4");
    assert_eq!(hub.stats().delivered, 4);
}
