//! wsevents.v1 on the in-process hub, over real sockets on 127.0.0.1 (issue 15):
//! positions, recovery true with everything or false with nothing, the seam between
//! recovered and live publications, idempotent publishes, the same topics as plain
//! hub subscribers, and the errors of docs/protocol.md.
#![allow(clippy::unwrap_used)]

#[path = "support/v1.rs"]
mod v1;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::timeout;
use v1::{Peer, offsets};
use wsevents::hub::{History, Hub, Position};
use wsevents::pubsub::wire::{
    ErrorCode, MAX_TOPIC_LEN, PROTOCOL, Reply, Request, max_publication_in,
};
use wsevents::pubsub::{
    DEFAULT_MAX_PUBLICATION, MIN_WAITING_SUBSCRIPTIONS, PubsubServer, SLOW_CLOSE_CODE,
    SLOW_CLOSE_REASON,
};
use wsevents::{Message, Server};

/// A server of wsevents.v1 on a hub with `history` (at most 3 topics per
/// connection, no publish rate: pubsub_rate.rs tests it); its URL and the hub.
async fn start(history: History) -> (String, Hub) {
    let hub = Hub::builder().history(history).build();
    let url = v1::serve(
        PubsubServer::new(hub.clone())
            .max_topics(3)
            .publish_rate(None),
    )
    .await;
    (url, hub)
}

/// Long enough for anything here on a loaded machine; a hang fails instead of
/// blocking.
const LIMIT: Duration = Duration::from_secs(10);

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
/// publisher keeps publishing through the resubscription (it stops only 500
/// publications after the answer).
#[tokio::test]
async fn a_client_that_comes_back_recovers_everything_then_goes_on_live() {
    /// Publications after the resubscription's answer.
    const AFTER: u64 = 500;
    /// At most this many in all, within the history's 10,000.
    const CAP: u64 = 9_000;
    let (url, _) = start(History::default()).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;
    let (progress, mut published) = watch::channel(0u64);
    let (resubscribed, answered) = watch::channel(false);
    let publisher = tokio::spawn({
        let url = url.clone();
        async move {
            let mut p = Peer::connect(&url).await;
            let mut last = CAP;
            for i in 1..=CAP {
                p.publish("t", &i.to_string(), None).await;
                progress.send_replace(i);
                if *answered.borrow() {
                    last = last.min(i + AFTER);
                }
                if i == last {
                    break;
                }
            }
            last
        }
    });
    let first = sub.pubs(200).await;
    let last = first.last().unwrap().0.clone();
    drop(sub);
    // Away while at least 100 publications go by.
    let away = published.wait_for(|&n| n >= last.offset() + 100);
    drop(timeout(LIMIT, away).await.unwrap().unwrap());
    let mut back = Peer::connect(&url).await;
    let (recovered, at) = back.subscribe("t", Some(last.clone())).await;
    resubscribed.send_replace(true);
    assert!(recovered, "within the history");
    assert!(at.offset() > last.offset());
    let total = timeout(LIMIT, publisher).await.unwrap().unwrap();
    assert!(
        at.offset() + AFTER <= total && total < CAP,
        "publishing went on through the resubscription (answered at {}, {total} in all)",
        at.offset()
    );
    let rest = back.pubs((total - last.offset()) as usize).await;
    let expected: Vec<u64> = (last.offset() + 1..=total).collect();
    assert_eq!(offsets(&rest), expected, "no gap, no repeat at the seam");
    assert!(rest.iter().all(|(p, text)| *text == p.offset().to_string()));
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
        // The first publication to come is the live one: nothing missed came before.
        publisher.publish("t", "live", None).await;
        let live = back.pubs(1).await;
        assert_eq!(
            (live[0].0.offset(), live[0].1.as_str()),
            (at.offset() + 1, "live")
        );
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
    // The server subscribes a plain socket before it drives it: a pong means it is
    // subscribed.
    plain.ping("subscribed?").unwrap();
    plain.flush().await.unwrap();
    match timeout(LIMIT, plain.next_event()).await.unwrap() {
        Some(Ok(wsevents::StreamEvent::Pong { .. })) => {}
        other => panic!("expected the pong, got {other:?}"),
    }
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("plain", None).await;
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
        Reply::Unsubscribed { id: Some(12), .. }
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

/// Issue 24: `too_large` could not be reached (the 16 MiB limit was the frame's, and
/// the envelope and base64 took a publication at it past the frame: 1009). At the
/// default limit, text and binary, to the byte: answered `published`; one byte more:
/// `too_large`, and the connection goes on.
#[tokio::test]
async fn a_publication_at_the_limit_is_stored_and_one_byte_past_it_is_too_large() {
    let (url, _) = start(History::default()).await;
    let limit = DEFAULT_MAX_PUBLICATION;
    // Frames as they are: permessage-deflate would shrink them under the frame limit.
    let plain = wsevents::ClientBuilder::new(&url).unwrap().deflate(None);
    let mut peer = Peer::connect_with(plain).await;
    let text = |len: usize| Message::text("x".repeat(len));
    let binary = |len: usize| Message::binary(vec![0xa5u8; len]);
    for (kind, data) in [("text", text(limit)), ("binary", binary(limit))] {
        let reply = peer.publish_data("t", data).await;
        assert!(
            matches!(reply, Reply::Published { .. }),
            "{kind}: {reply:?}"
        );
    }
    for (kind, data) in [("text", text(limit + 1)), ("binary", binary(limit + 1))] {
        match peer.publish_data("t", data).await {
            Reply::Error { code, .. } => assert_eq!(code, ErrorCode::TooLarge, "{kind}"),
            other => panic!("{kind}: {other:?}"),
        }
    }
    // Still open, and serving.
    let at = peer.publish("t", "small", None).await;
    assert_eq!(at.offset(), 3);
    peer.subscribe("t", None).await;
}

/// A socket whose frames cannot carry the server's largest publication is served with
/// the largest they can (and a warning), so a publication past it is still answered
/// `too_large` rather than failing the connection with 1009.
#[tokio::test]
async fn a_socket_with_smaller_frames_gets_the_publication_limit_they_can_carry() {
    let frame = 1 << 20;
    let config = wsevents::Config {
        max_frame_size: frame,
        ..wsevents::Config::default()
    };
    let hub = Hub::builder().history(History::default()).build();
    let acceptor = wsevents::Acceptor::new()
        .protocols(&[PROTOCOL])
        .config(config);
    let url = v1::serve_with(Server::builder(acceptor), PubsubServer::new(hub)).await;
    let limit = max_publication_in(frame);
    assert!(limit < DEFAULT_MAX_PUBLICATION);
    let plain = wsevents::ClientBuilder::new(&url).unwrap().deflate(None);
    let mut peer = Peer::connect_with(plain).await;
    let reply = peer
        .publish_data("t", Message::binary(vec![1u8; limit]))
        .await;
    assert!(matches!(reply, Reply::Published { .. }), "{reply:?}");
    match peer
        .publish_data("t", Message::binary(vec![1u8; limit + 1]))
        .await
    {
        Reply::Error { code, .. } => assert_eq!(code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
    peer.publish("t", "still open", None).await;
}

/// Issue 24: subscriptions past the 256 a connection may have waiting were refused
/// with a permanent `bad_request`. Now at least `max(max_topics, 256)` wait, the rest
/// are refused `too_many_requests`, which is temporary, and each subscription is made
/// only once the socket is within the hub's backlog bound: a client that reads nothing
/// gets its answers as it reads, after the refusals.
#[tokio::test]
async fn subscriptions_past_what_waits_are_refused_for_now_and_made_as_the_client_reads() {
    const SENT: u64 = 300;
    // The hub's own bound out of the way: only the server's pacing (1 MiB) holds.
    let hub = Hub::builder()
        .history(History::default())
        .max_backlog(64 << 20)
        .build();
    let pubsub = PubsubServer::new(hub.clone())
        .max_topics(3)
        .max_backlog(wsevents::hub::DEFAULT_MAX_BACKLOG);
    let url = v1::serve(pubsub).await;
    let mut peer = Peer::connect(&url).await;
    peer.subscribe("big", None).await;
    // 12 MiB for the peer, which reads nothing yet: the server's socket holds what
    // the two kernels do not take (a few MiB), far over 1 MiB.
    for _ in 0..6 {
        hub.publish_confirmed("big", "x".repeat(2 << 20), None)
            .await
            .unwrap();
    }
    for id in 1000..1000 + SENT {
        let subscribe = Request::Subscribe {
            id,
            topic: "a".into(),
            since: None,
        };
        peer.send(&subscribe).await;
    }
    assert_eq!(peer.pubs(6).await.len(), 6);
    let (mut refused, mut subscribed) = (Vec::new(), Vec::new());
    while (refused.len() + subscribed.len()) < SENT as usize {
        match peer.reply().await {
            Reply::Error {
                id: Some(id),
                code: ErrorCode::TooManyRequests,
                ..
            } => {
                assert!(subscribed.is_empty(), "a subscription made before the read");
                refused.push(id);
            }
            Reply::Subscribed { id, .. } => subscribed.push(id),
            other => panic!("{other:?}"),
        }
    }
    assert!(ErrorCode::TooManyRequests.is_temporary());
    assert!(
        subscribed.len() >= MIN_WAITING_SUBSCRIPTIONS && !refused.is_empty(),
        "{} made, {} refused",
        subscribed.len(),
        refused.len()
    );
    assert!(subscribed.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(refused.iter().all(|id| !subscribed.contains(id)));
    // Retried, now that the client reads: made.
    for _ in &refused {
        peer.subscribe("a", None).await;
    }
}

/// Issue 24: an answer the socket could not take was dropped, and its client waited
/// for ever. Now a client that publishes and reads none of the answers is closed
/// with 1008 "slow client" once they fill its send buffer, and when it comes back it
/// recovers everything that was stored.
#[tokio::test]
async fn a_client_that_does_not_read_its_answers_is_closed_with_1008_and_recovers() {
    const SENT: u64 = 40_000;
    let history = History {
        size: 100_000,
        ..History::default()
    };
    let hub = Hub::builder().history(history).build();
    let builder = Server::builder(wsevents::Acceptor::new().protocols(&[PROTOCOL]))
        .backpressure(wsevents::Backpressure::error(256 << 10))
        .unwrap();
    // 40,000 publishes as fast as they go: the publish rate out of the way.
    let url = v1::serve_with(builder, PubsubServer::new(hub).publish_rate(None)).await;
    let plain = || wsevents::ClientBuilder::new(&url).unwrap().deflate(None);
    // Long topics, long answers (uncompressed): they fill the kernels' buffers and the
    // socket's 256 KiB within a few thousand.
    let topic = "t".repeat(MAX_TOPIC_LEN);
    let mut peer = Peer::connect_with(plain()).await;
    let (_, before) = peer.subscribe(&topic, None).await;
    peer.nothing_for(Duration::from_millis(1)).await;
    // The publications come back to it too: the flood is stopped by the answers'
    // bound (the socket's 256 KiB), not the hub's for the publications (1 MiB).
    peer.send(&Request::Unsubscribe {
        id: 1,
        topic: topic.clone(),
    })
    .await;
    assert!(matches!(peer.reply().await, Reply::Unsubscribed { .. }));
    for id in 10..10 + SENT {
        let publish = Request::Publish {
            id,
            topic: topic.clone(),
            data: Message::text(format!("m{id}")),
            key: None,
        };
        // Refused once the server gave up on this connection.
        if peer
            .ws
            .feed(Message::text(publish.to_json()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = peer.ws.flush().await;
    let mut answered = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(20), peer.ws.next())
        .await
        .expect("neither an answer nor the close within 20 s")
    {
        match frame {
            Ok(Message::Text(text)) => {
                assert!(matches!(
                    Reply::parse(text.as_str()),
                    Ok(Reply::Published { .. })
                ));
                answered += 1;
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => break,
        }
    }
    let closure = peer.ws.closure().expect("closed by the server").clone();
    assert_eq!(
        (closure.code(), closure.reason()),
        (SLOW_CLOSE_CODE, SLOW_CLOSE_REASON)
    );
    assert!(
        answered < SENT,
        "{answered} answered: the buffer never filled"
    );

    // Back: everything stored since, recovered, in order.
    let mut back = Peer::connect_with(plain()).await;
    let (recovered, latest) = back.subscribe(&topic, Some(before.clone())).await;
    assert!(recovered);
    assert!(
        latest.offset() >= answered,
        "at least what was answered was stored"
    );
    let missed = back
        .pubs((latest.offset() - before.offset()) as usize)
        .await;
    let expected: Vec<u64> = (before.offset() + 1..=latest.offset()).collect();
    assert_eq!(offsets(&missed), expected);
    assert_eq!(missed[0].1, "m10");
}
