//! `wsevents::pubsub::Client` with tokens (issue 25, item 6), against the library's
//! `PubsubServer` verifying real HS256 tokens over 127.0.0.1: the token provider on
//! connect and before expiry, `forbidden` failing one request only, `unauthorized` and
//! the operator's disconnect ending the client, an expired token bringing it back with
//! a new one and its positions, a topic taken away by the server.
#![allow(clippy::unwrap_used)]

#[path = "support/tokens.rs"]
mod tokens;
#[path = "support/v1.rs"]
mod v1;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokens::{SECRET, claims, hs256, now};
use tokio::sync::mpsc;
use v1::Peer;
use wsevents::hub::{History, Hub};
use wsevents::pubsub::auth::{Access, JwtKey, JwtVerifier};
use wsevents::pubsub::wire::{ErrorCode, Request};
use wsevents::pubsub::{Client, PubsubServer};
use wsevents::{ClientBuilder, Error, Reconnect};

const TIMEOUT: Duration = Duration::from_secs(20);

fn server() -> PubsubServer {
    let hub = Hub::builder().history(History::default()).build();
    let access = Access::open().tokens(JwtVerifier::new().key(JwtKey::hs256(SECRET).unwrap()));
    PubsubServer::new(hub)
        .access(access)
        .expiry_grace(Duration::ZERO)
}

/// A client that reconnects at once (a few ms of backoff).
fn client(url: &str) -> Client {
    let options = Reconnect::new().initial_delay(Duration::from_millis(20));
    Client::with_options(ClientBuilder::new(url).unwrap(), options).unwrap()
}

/// What the client's handlers saw, in order.
#[derive(Debug)]
enum Seen {
    Open,
    Close { code: u16, again: bool },
    Subscribed { topic: String, recovered: bool },
    Publication(String),
    Unsubscribed(String),
    Error(String),
}

fn watch(client: &Client) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    let t = tx.clone();
    client.on_open(move |_| {
        let _ = t.send(Seen::Open);
    });
    let t = tx.clone();
    client.on_close(move |e| {
        let _ = t.send(Seen::Close {
            code: e.code,
            again: e.will_reconnect(),
        });
    });
    let t = tx.clone();
    client.on_subscribed(move |s| {
        let _ = t.send(Seen::Subscribed {
            topic: s.topic.clone(),
            recovered: s.recovered,
        });
    });
    let t = tx.clone();
    client.on_publication(move |p| {
        let _ = t.send(Seen::Publication(
            p.data.as_text().unwrap_or("?").to_owned(),
        ));
    });
    let t = tx.clone();
    client.on_unsubscribed(move |topic| {
        let _ = t.send(Seen::Unsubscribed(topic.to_owned()));
    });
    client.on_error(move |e| {
        let _ = tx.send(Seen::Error(e.message().to_owned()));
    });
    rx
}

/// The next event that `f` accepts (others skipped).
async fn until<T>(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
    mut f: impl FnMut(&Seen) -> Option<T>,
) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = seen.recv().await.expect("the client ended");
            if let Some(out) = f(&event) {
                return out;
            }
        }
    })
    .await
    .expect("not seen within 20 s")
}

fn drive(client: &Client) -> tokio::task::JoinHandle<wsevents::ReconnectCloseEvent> {
    let driver = client.clone();
    tokio::spawn(async move { driver.run().await })
}

#[tokio::test]
async fn forbidden_fails_the_request_and_the_connection_goes_on() {
    let url = v1::serve(server()).await;
    let client = client(&url);
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    client.token_provider(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, String>(hs256(&claims("alice", &["news"], &["news"]))) }
    });
    let mut seen = watch(&client);
    client.subscribe("admin", None).unwrap();
    client.subscribe("news", None).unwrap();
    let driver = drive(&client);
    // The forbidden subscription is reported and forgotten; news goes ahead.
    let error = until(&mut seen, |e| match e {
        Seen::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("forbidden"), "{error}");
    until(&mut seen, |e| {
        matches!(e, Seen::Subscribed { topic, .. } if topic == "news").then_some(())
    })
    .await;
    assert!(!client.positions().contains_key("admin"));
    match client.publish("elsewhere", "x").await {
        Err(Error::Rejected(e)) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("{other:?}"),
    }
    let position = client.publish("news", "allowed").await.unwrap();
    assert_eq!(position.offset(), 1);
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one connection, one token");
    client.close().unwrap();
    driver.await.unwrap();
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires_and_the_connection_stays() {
    let url = v1::serve(server()).await;
    let client = client(&url);
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let short = |user: &str, secs: u64| {
        let mut c = claims(user, &["news"], &["news"]);
        c["exp"] = json!(now() + secs);
        hs256(&c)
    };
    client.token_provider(move || {
        count.fetch_add(1, Ordering::SeqCst);
        let token = short("alice", 3);
        async move { Ok::<_, String>(token) }
    });
    let mut seen = watch(&client);
    client.subscribe("news", None).unwrap();
    let driver = drive(&client);
    until(&mut seen, |e| {
        matches!(e, Seen::Subscribed { .. }).then_some(())
    })
    .await;
    // A peer with the same lifetime and no refresh: its close marks the first exp.
    let mut witness = Peer::connect(&url).await;
    witness
        .send(&Request::Connect {
            id: 1,
            token: short("bob", 3),
        })
        .await;
    witness.reply().await;
    while witness.next().await.is_some() {}
    assert_eq!(witness.ws.closure().unwrap().code().as_u16(), 4003);
    // The client refreshed meanwhile: still its first connection.
    client.publish("news", "after the first exp").await.unwrap();
    until(&mut seen, |e| {
        matches!(e, Seen::Publication(_)).then_some(())
    })
    .await;
    assert!(asked.load(Ordering::SeqCst) >= 2, "asked again before exp");
    client.close().unwrap();
    driver.await.unwrap();
    while let Ok(event) = seen.try_recv() {
        assert!(
            !matches!(event, Seen::Close { again: true, .. } | Seen::Error(_)),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_brings_the_client_back_with_a_new_one_and_its_positions() {
    let pubsub = server();
    let url = v1::serve(pubsub).await;
    let client = client(&url);
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    client.token_provider(move || {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let mut c = claims("alice", &["news"], &["news"]);
        c["exp"] = json!(now() + if n == 0 { 2 } else { 3600 });
        let token = hs256(&c);
        async move {
            // The refresh of the first token fails: it expires unrefreshed.
            if n == 1 {
                Err("the token service is down".to_owned())
            } else {
                Ok(token)
            }
        }
    });
    let mut seen = watch(&client);
    client.subscribe("news", None).unwrap();
    let driver = drive(&client);
    until(&mut seen, |e| {
        matches!(e, Seen::Subscribed { .. }).then_some(())
    })
    .await;
    client.publish("news", "before").await.unwrap();
    let error = until(&mut seen, |e| match e {
        Seen::Error(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("the token service is down"), "{error}");
    let close = until(&mut seen, |e| match e {
        Seen::Close { code, again } => Some((*code, *again)),
        _ => None,
    })
    .await;
    assert_eq!(close, (4003, true));
    // Published while it is away (or just back): it gets it, once, in order.
    let mut other = Peer::connect(&url).await;
    other
        .send(&Request::Connect {
            id: 1,
            token: hs256(&claims("ops", &[], &["news"])),
        })
        .await;
    other.reply().await;
    other.publish("news", "while away", None).await;
    let recovered = until(&mut seen, |e| match e {
        Seen::Subscribed { recovered, .. } => Some(*recovered),
        _ => None,
    })
    .await;
    assert!(recovered, "resubscribed from its position");
    let texts = until(&mut seen, |e| match e {
        Seen::Publication(text) if text != "before" => Some(text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(texts, "while away");
    assert_eq!(client.positions()["news"].offset(), 2);
    assert!(asked.load(Ordering::SeqCst) >= 3);
    client.close().unwrap();
    driver.await.unwrap();
}

#[tokio::test]
async fn unauthorized_and_a_server_disconnect_end_the_client_and_a_topic_taken_away_is_forgotten() {
    let pubsub = server();
    let url = v1::serve(pubsub.clone()).await;

    // A bad token: 4001, final; pending publishes fail.
    let refused = client(&url);
    refused.token("not.a.token");
    let publishing = refused.publish("news", "never");
    let close = drive(&refused).await.unwrap();
    assert_eq!((close.code, close.will_reconnect()), (4001, false));
    assert!(matches!(publishing.await, Err(Error::Closed)));

    // A good one; the operator takes news away, then disconnects the user.
    let alice = client(&url);
    alice.token(hs256(&claims("alice", &["news", "sport"], &[])));
    let mut seen = watch(&alice);
    alice.subscribe("news", None).unwrap();
    alice.subscribe("sport", None).unwrap();
    let driver = drive(&alice);
    for _ in 0..2 {
        until(&mut seen, |e| {
            matches!(e, Seen::Subscribed { .. }).then_some(())
        })
        .await;
    }
    assert_eq!(pubsub.unsubscribe_user("alice", "news"), 1);
    let topic = until(&mut seen, |e| match e {
        Seen::Unsubscribed(topic) => Some(topic.clone()),
        _ => None,
    })
    .await;
    assert_eq!(topic, "news");
    assert!(!alice.positions().contains_key("news"));
    assert!(alice.positions().contains_key("sport"));
    assert_eq!(pubsub.disconnect_user("alice"), 1);
    let close = driver.await.unwrap();
    assert_eq!((close.code, close.will_reconnect()), (4009, false));
}
