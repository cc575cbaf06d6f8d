//! wsevents.v1 on the in-process hub, over real sockets on 127.0.0.1 (issue 15):
//! positions, recovery true with everything or false with nothing, the seam between
//! recovered and live publications, idempotent publishes, the same topics as plain
//! hub subscribers, and the errors of docs/protocol.md.
#![allow(clippy::unwrap_used)]

#[path = "support/v1.rs"]
mod v1;

use std::time::Duration;

use futures_util::StreamExt;
use v1::{Peer, offsets};
use wsevents::Message;
use wsevents::hub::{History, Hub, Position};
use wsevents::pubsub::PubsubServer;
use wsevents::pubsub::wire::{ErrorCode, Reply};

/// A server of wsevents.v1 on a hub with `history` (at most 3 topics per
/// connection); its URL and the hub.
async fn start(history: History) -> (String, Hub) {
    let hub = Hub::builder().history(history).build();
    let url = v1::serve(PubsubServer::new(hub.clone()).max_topics(3)).await;
    (url, hub)
}

fn small(size: usize) -> History {
    History {
        size,
        ttl: Duration::from_secs(60),
        ..History::default()
    }
}

#[tokio::test]
async fn publications_carry_contiguous_positions_and_answers_say_where() {
    let (url, _) = start(History::default()).await;
    let mut sub = Peer::connect(&url).await;
    let (recovered, start) = sub.subscribe("news", None).await;
    assert!(!recovered, "nothing asked, nothing recovered");
    assert_eq!(start.offset(), 0);
    let mut publisher = Peer::connect(&url).await;
    for i in 1..=5u64 {
        let at = publisher.publish("news", &format!("m{i}"), None).await;
        assert_eq!((at.epoch(), at.offset()), (start.epoch(), i));
    }
    let pubs = sub.pubs(5).await;
    assert_eq!(offsets(&pubs), [1, 2, 3, 4, 5]);
    assert_eq!(pubs[4].1, "m5");
    // A new subscriber starts at the latest position.
    let mut late = Peer::connect(&url).await;
    let (_, now) = late.subscribe("news", None).await;
    assert_eq!(now.offset(), 5);
}

/// Away and back within the history: recovered true, every missed publication in
/// order, then the live ones with neither a gap nor a repeat at the seam, while a
/// publisher keeps publishing through the resubscription.
#[tokio::test]
async fn a_client_that_comes_back_recovers_everything_then_goes_on_live() {
    const TOTAL: u64 = 3000;
    let (url, _) = start(History::default()).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;
    let publisher = tokio::spawn({
        let url = url.clone();
        async move {
            let mut p = Peer::connect(&url).await;
            for i in 1..=TOTAL {
                p.publish("t", &i.to_string(), None).await;
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    let first = sub.pubs(200).await;
    let last = first.last().unwrap().0.clone();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut back = Peer::connect(&url).await;
    let (recovered, at) = back.subscribe("t", Some(last.clone())).await;
    assert!(recovered, "within the history");
    assert!(at.offset() > last.offset());
    let rest = back.pubs((TOTAL - last.offset()) as usize).await;
    let expected: Vec<u64> = (last.offset() + 1..=TOTAL).collect();
    assert_eq!(offsets(&rest), expected, "no gap, no repeat at the seam");
    assert!(rest.iter().all(|(p, text)| *text == p.offset().to_string()));
    publisher.await.unwrap();
}

/// Away longer than the history holds: recovered false and nothing of what was
/// missed; a future position, another epoch: the same.
#[tokio::test]
async fn past_the_history_nothing_partial_is_recovered() {
    let (url, _) = start(small(5)).await;
    let mut publisher = Peer::connect(&url).await;
    let first = publisher.publish("t", "1", None).await;
    for i in 2..=20 {
        publisher.publish("t", &i.to_string(), None).await;
    }
    for (i, since) in [
        first.clone(),
        Position::new(first.epoch(), 99).unwrap(),
        Position::new("otherepoch", 19).unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut back = Peer::connect(&url).await;
        let (recovered, at) = back.subscribe("t", Some(since.clone())).await;
        assert!(!recovered, "from {since}");
        assert_eq!(at.offset(), 20 + i as u64);
        back.nothing_for(Duration::from_millis(100)).await;
        publisher.publish("t", "live", None).await;
        let live = back.pubs(1).await;
        assert_eq!(live[0].1, "live");
    }
    // Within the 5 kept: recovered.
    let mut back = Peer::connect(&url).await;
    let (recovered, at) = back
        .subscribe("t", Some(Position::new(first.epoch(), 19).unwrap()))
        .await;
    assert!(recovered);
    assert_eq!(at.offset(), 23);
    assert_eq!(offsets(&back.pubs(4).await), [20, 21, 22, 23]);
}

#[tokio::test]
async fn a_retried_publish_with_the_same_key_is_stored_once() {
    let (url, _) = start(History::default()).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;
    let mut publisher = Peer::connect(&url).await;
    let first = publisher.publish("t", "once", Some("k-1")).await;
    let again = publisher.publish("t", "once", Some("k-1")).await;
    assert_eq!(first, again);
    let other = publisher.publish("t", "twice", Some("k-2")).await;
    assert_eq!(other.offset(), first.offset() + 1);
    let pubs = sub.pubs(2).await;
    assert_eq!(
        pubs.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(),
        ["once", "twice"]
    );
}

/// Plain hub subscribers (serve's /topic/NAME) and wsevents.v1 subscribers share the
/// topics: each gets every publication, in its own framing.
#[tokio::test]
async fn plain_and_v1_subscribers_share_a_topic() {
    let (url, hub) = start(History::default()).await;
    let mut plain = wsevents::connect(&url.replace("/pubsub", "/topic/plain"))
        .await
        .unwrap();
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("plain", None).await;
    while hub.subscriber_count("plain") < 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(hub.publish("plain", "from the hub"), 2);
    let mut publisher = Peer::connect(&url).await;
    publisher.publish("plain", "from v1", None).await;
    for want in ["from the hub", "from v1"] {
        let got = tokio::time::timeout(Duration::from_secs(10), plain.next())
            .await
            .unwrap();
        assert!(matches!(got, Some(Ok(Message::Text(t))) if t.as_str() == want));
    }
    assert_eq!(offsets(&sub.pubs(2).await), [1, 2]);
}

#[tokio::test]
async fn bad_requests_get_the_documented_errors_and_the_connection_goes_on() {
    let (url, _) = start(History::default()).await;
    let mut peer = Peer::connect(&url).await;
    let error = |reply: Reply| match reply {
        Reply::Error { id, code, .. } => (id, code),
        other => panic!("not an error: {other:?}"),
    };
    peer.send_raw("not json").await;
    assert_eq!(error(peer.reply().await), (None, ErrorCode::BadRequest));
    peer.send_raw(r#"{"id":9,"op":"dance","topic":"t"}"#).await;
    assert_eq!(error(peer.reply().await), (Some(9), ErrorCode::BadRequest));
    peer.send_raw(r#"{"id":10,"op":"subscribe","topic":""}"#)
        .await;
    assert_eq!(error(peer.reply().await), (Some(10), ErrorCode::BadTopic));
    peer.ws.send_binary_for_test().await;
    assert_eq!(error(peer.reply().await).1, ErrorCode::BadRequest);
    for topic in ["a", "b", "c"] {
        peer.subscribe(topic, None).await;
    }
    peer.send_raw(r#"{"id":11,"op":"subscribe","topic":"d"}"#)
        .await;
    assert_eq!(
        error(peer.reply().await),
        (Some(11), ErrorCode::TooManyTopics)
    );
    // Still serving: a resubscription to one it has is fine, and so is a publish.
    peer.subscribe("a", None).await;
    peer.send_raw(r#"{"id":12,"op":"unsubscribe","topic":"a"}"#)
        .await;
    assert!(matches!(
        peer.reply().await,
        Reply::Unsubscribed { id: 12, .. }
    ));
    peer.subscribe("d", None).await;
}

trait BinaryForTest {
    async fn send_binary_for_test(&mut self);
}

impl BinaryForTest for wsevents::WebSocketStream<wsevents::MaybeTlsStream> {
    async fn send_binary_for_test(&mut self) {
        use futures_util::SinkExt;
        self.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    }
}

#[tokio::test]
async fn a_hub_without_history_refuses_positioned_subscriptions() {
    let hub = Hub::new();
    assert!(hub.publish_confirmed("t", "x", None).await.is_err());
}
