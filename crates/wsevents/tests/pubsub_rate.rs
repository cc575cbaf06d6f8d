//! The publish rate of a wsevents.v1 connection (issue 25, item 5): a token bucket per
//! connection; past it a publish is answered `rate_limited`, temporary, with
//! `retry_after_ms`, nothing is stored and the connection goes on; the library's
//! client waits what it is told and re-sends with the same key, so every publish is
//! stored exactly once, in order. Over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used)]

#[path = "support/v1.rs"]
mod v1;

use std::time::Duration;

use futures_util::StreamExt;
use v1::Peer;
use wsevents::hub::{History, Hub};
use wsevents::pubsub::wire::{ErrorCode, Reply};
use wsevents::pubsub::{Client, PublishRate, PubsubServer};
use wsevents::{ClientBuilder, Message, Reconnect};

const TIMEOUT: Duration = Duration::from_secs(10);

fn server(rate: Option<PublishRate>) -> PubsubServer {
    PubsubServer::new(Hub::builder().history(History::default()).build()).publish_rate(rate)
}

/// The next frame's text, unparsed.
async fn raw(peer: &mut Peer) -> String {
    let next = tokio::time::timeout(TIMEOUT, peer.ws.next()).await.unwrap();
    match next {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("not a text frame: {other:?}"),
    }
}

#[tokio::test]
async fn past_the_burst_publishes_are_rate_limited_with_a_delay_and_nothing_is_stored() {
    let url = v1::serve(server(Some(PublishRate::new(10, 5)))).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;
    let mut p = Peer::connect(&url).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            p.publish_later("t", &format!("m{i}"), Some(&format!("k{i}")))
                .await,
        );
    }
    // The burst passes.
    for id in &ids[..5] {
        match p.reply().await {
            Reply::Published { id: got, .. } => assert_eq!(got, *id),
            other => panic!("{other:?}"),
        }
    }
    // The rest are refused, each told to wait for its share of the refill (at 10 a
    // second: about 100, 200, 300 ms).
    let mut waits = Vec::new();
    for (n, id) in ids[5..].iter().enumerate() {
        let text = raw(&mut p).await;
        assert!(text.contains(r#""code":"rate_limited""#), "{text}");
        assert!(text.contains(r#""temporary":true"#), "{text}");
        assert!(text.contains(r#""retry_after_ms":"#), "{text}");
        match Reply::parse(&text).unwrap() {
            Reply::Error {
                id: Some(got),
                code: ErrorCode::RateLimited,
                retry_after: Some(wait),
                ..
            } => {
                assert_eq!(got, *id);
                let share = Duration::from_millis(100 * (n as u64 + 1));
                assert!(
                    wait <= share && wait + Duration::from_millis(50) >= share,
                    "refusal {n}: told {wait:?}, its share is {share:?}"
                );
                waits.push(wait);
            }
            other => panic!("{other:?}"),
        }
    }
    // Only the burst reached the subscriber.
    let got = sub.pubs(5).await;
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);

    // Waiting as told, the refused ones pass (same keys), and the connection went on
    // all along.
    tokio::time::sleep(*waits.last().unwrap()).await;
    for i in 5..8 {
        p.publish("t", &format!("m{i}"), Some(&format!("k{i}")))
            .await;
    }
    let got = sub.pubs(3).await;
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["m5", "m6", "m7"]);
    assert_eq!(got[2].0.offset(), 8, "stored once each");
}

#[tokio::test]
async fn no_limit_when_turned_off() {
    let url = v1::serve(server(None)).await;
    let mut p = Peer::connect(&url).await;
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for i in 0..500 {
            ids.push(p.publish_later("t", &format!("m{i}"), None).await);
        }
        ids
    };
    for id in ids {
        match p.reply().await {
            Reply::Published { id: got, .. } => assert_eq!(got, id),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_client_waits_as_told_and_stores_every_publish_once_in_order() {
    const COUNT: usize = 60;
    // 50 a second in bursts of 10: 50 refused at first, a burst's worth passing every
    // 200 ms after: about a second in all.
    let url = v1::serve(server(Some(PublishRate::new(50, 10)))).await;
    let mut sub = Peer::connect(&url).await;
    sub.subscribe("t", None).await;

    let client = Client::with_options(
        ClientBuilder::new(&url).unwrap().no_proxy(),
        Reconnect::new(),
    )
    .unwrap();
    let driver = client.clone();
    let run = tokio::spawn(async move { driver.run().await });
    let publishing: Vec<_> = (0..COUNT)
        .map(|i| client.publish("t", format!("m{i}")))
        .collect();
    let mut offsets = Vec::new();
    for p in publishing {
        let position = tokio::time::timeout(TIMEOUT, p).await.unwrap().unwrap();
        offsets.push(position.offset());
    }
    let expected: Vec<u64> = (1..=COUNT as u64).collect();
    assert_eq!(offsets, expected, "stored in the order of the calls");

    let got = sub.pubs(COUNT).await;
    let texts: Vec<String> = got.into_iter().map(|(_, t)| t).collect();
    let sent: Vec<String> = (0..COUNT).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, sent);
    // Exactly once: the next publication is the next publish, not a repeat.
    let last = tokio::time::timeout(TIMEOUT, client.publish("t", "after"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.offset(), COUNT as u64 + 1);
    assert_eq!(sub.pubs(1).await[0].1, "after");
    client.close().unwrap();
    let _ = tokio::time::timeout(TIMEOUT, run).await;
}
