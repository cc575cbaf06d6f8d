//! A catch-up after a lost backend subscription (issue 24): what the backend delivers
//! live while the history is read waits until what was missed is delivered, so a
//! subscriber without positions gets every publication once, in order, with no hole
//! (before, the live one went first and the missed ones were skipped). The hub is
//! driven through its `Backend` trait by a backend of the test's own, whose history
//! read the test holds; the subscriber is a real socket.
#![allow(clippy::unwrap_used)]

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
