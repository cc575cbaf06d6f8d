//! Permissions and connection tokens of wsevents.v1 (issue 25), with real JWTs signed
//! here (HS256, and ES256 with a key pair made here) over real sockets on 127.0.0.1:
//! anonymous rules, `news` + `chat:*`, `forbidden` leaving the connection usable,
//! every refused token, refresh and the expiry close, the hook's order, and the
//! operator's disconnect and unsubscribe.
#![allow(clippy::unwrap_used)]

#[path = "support/tokens.rs"]
mod tokens;
#[path = "support/v1.rs"]
mod v1;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokens::{EsKey, SECRET, claims, hs256, hs256_with, now};
use v1::Peer;
use wsevents::hub::{History, Hub};
use wsevents::pubsub::PubsubServer;
use wsevents::pubsub::auth::{
    Access, Action, Check, Claims, DISCONNECTED_CLOSE_CODE, JwtKey, JwtVerifier,
    TOKEN_EXPIRED_CLOSE_CODE, TopicPatterns, UNAUTHORIZED_CLOSE_CODE,
};
use wsevents::pubsub::wire::{ErrorCode, Reply, Request};
use wsevents::{ClientBuilder, CloseCode};

fn hub() -> Hub {
    Hub::builder().history(History::default()).build()
}

/// HS256 with [`SECRET`]; anonymous connections may subscribe to `public:*`.
fn hs_access() -> Access {
    Access::open()
        .tokens(JwtVerifier::new().key(JwtKey::hs256(SECRET).unwrap()))
        .anonymous(Claims {
            subscribe: TopicPatterns::parse(["public:*"]).unwrap(),
            ..Claims::nothing()
        })
}

async fn start(pubsub: PubsubServer) -> String {
    v1::serve(pubsub).await
}

/// The answer's error code and id.
fn error(reply: Reply) -> (Option<u64>, ErrorCode) {
    match reply {
        Reply::Error { id, code, .. } => (id, code),
        other => panic!("not an error: {other:?}"),
    }
}

impl Peer {
    /// Send `connect` with `token`; the answer.
    async fn connect_token(&mut self, id: u64, token: &str) -> Reply {
        self.send(&Request::Connect {
            id,
            token: token.into(),
        })
        .await;
        self.reply().await
    }

    /// Publish to a topic the peer may be subscribed to: its position (its own `pub`
    /// may come before the answer).
    async fn publish_own(&mut self, topic: &str, text: &str) -> wsevents::hub::Position {
        let id = self.publish_later(topic, text, None).await;
        loop {
            match self.reply().await {
                Reply::Published {
                    id: got, position, ..
                } if got == id => return position,
                Reply::Pub { .. } => {}
                other => panic!("not the answer to publish {id}: {other:?}"),
            }
        }
    }

    /// The close code the server closed with (after reading what is left).
    async fn closed_with(&mut self) -> CloseCode {
        while self.next().await.is_some() {}
        self.ws.closure().expect("closed by the server").code()
    }
}

#[tokio::test]
async fn anonymous_connections_get_the_anonymous_rules_and_nothing_else() {
    let url = start(PubsubServer::new(hub()).access(hs_access())).await;
    let mut anonymous = Peer::connect(&url).await;
    anonymous.subscribe("public:news", None).await;
    anonymous
        .send_raw(r#"{"id":50,"op":"subscribe","topic":"news"}"#)
        .await;
    assert_eq!(
        error(anonymous.reply().await),
        (Some(50), ErrorCode::Forbidden)
    );
    anonymous
        .send_raw(r#"{"id":51,"op":"publish","topic":"public:news","data":"x"}"#)
        .await;
    assert_eq!(
        error(anonymous.reply().await),
        (Some(51), ErrorCode::Forbidden)
    );
    // With tokens and no anonymous rules, anonymous connections may do nothing.
    let strict = Access::open().tokens(JwtVerifier::new().key(JwtKey::hs256(SECRET).unwrap()));
    let url = start(PubsubServer::new(hub()).access(strict)).await;
    let mut anonymous = Peer::connect(&url).await;
    anonymous
        .send_raw(r#"{"id":1,"op":"subscribe","topic":"public:news"}"#)
        .await;
    assert_eq!(
        error(anonymous.reply().await),
        (Some(1), ErrorCode::Forbidden)
    );
    // Still usable: a connect with a token then works.
    let token = hs256(&claims("alice", &["public:*"], &[]));
    assert!(matches!(
        anonymous.connect_token(2, &token).await,
        Reply::Connected { id: 2, .. }
    ));
    anonymous.subscribe("public:news", None).await;
}

#[tokio::test]
async fn a_token_for_news_and_chat_subscribes_to_both_and_publishes_only_to_chat() {
    let hub = hub();
    let url = start(PubsubServer::new(hub.clone()).access(hs_access())).await;
    let token = hs256(&claims("alice", &["news", "chat:*"], &["chat:*"]));
    let mut alice = Peer::connect(&url).await;
    match alice.connect_token(1, &token).await {
        Reply::Connected {
            id: 1,
            user,
            expires,
            client,
        } => {
            assert_eq!(user.as_deref(), Some("alice"));
            assert!(expires.unwrap() > now());
            assert_eq!(client.len(), 16);
        }
        other => panic!("{other:?}"),
    }
    alice.subscribe("news", None).await;
    alice.subscribe("chat:lobby", None).await;
    // A forbidden subscribe leaves the connection usable.
    alice
        .send_raw(r#"{"id":70,"op":"subscribe","topic":"admin"}"#)
        .await;
    assert_eq!(error(alice.reply().await), (Some(70), ErrorCode::Forbidden));
    alice
        .send_raw(r#"{"id":71,"op":"subscribe","topic":"chat"}"#)
        .await;
    assert_eq!(error(alice.reply().await), (Some(71), ErrorCode::Forbidden));
    // Publishing: to chat:* yes (and it comes back), to news no, nothing stored.
    let position = alice.publish_own("chat:lobby", "hello").await;
    assert_eq!(position.offset(), 1);
    alice
        .send_raw(r#"{"id":72,"op":"publish","topic":"news","data":"rogue"}"#)
        .await;
    assert_eq!(error(alice.reply().await), (Some(72), ErrorCode::Forbidden));
    alice.subscribe("chat:other", None).await;
    let mut watcher = Peer::connect(&start(PubsubServer::new(hub.clone())).await).await;
    let (_, news) = watcher.subscribe("news", None).await;
    assert_eq!(news.offset(), 0, "the forbidden publish was not stored");
    alice.nothing_for(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn an_es256_token_works_in_connect_in_the_authorization_header_and_in_the_query() {
    let key = EsKey::generate();
    let verifier = JwtVerifier::new()
        .key(
            JwtKey::from_pem(key.public_pem.as_bytes())
                .unwrap()
                .with_kid("es-1"),
        )
        .key(JwtKey::hs256(SECRET).unwrap());
    assert_eq!(verifier.keys()[0].algorithm(), "ES256");
    let url = start(PubsubServer::new(hub()).access(Access::open().tokens(verifier))).await;
    let token = key.sign(Some("es-1"), &claims("bob", &["news"], &["news"]));

    let mut in_band = Peer::connect(&url).await;
    assert!(matches!(
        in_band.connect_token(1, &token).await,
        Reply::Connected { .. }
    ));
    in_band.subscribe("news", None).await;

    let header = ClientBuilder::new(&url)
        .unwrap()
        .header("Authorization", format!("Bearer {token}"));
    let mut by_header = Peer::connect_with(header).await;
    by_header.subscribe("news", None).await;
    by_header.publish_own("news", "from the header").await;

    let mut by_query = Peer::connect(&format!("{url}?token={token}")).await;
    by_query.subscribe("news", None).await;

    // A refused handshake token: unauthorized without an id, then 4001.
    let bad = ClientBuilder::new(&url)
        .unwrap()
        .header("Authorization", "Bearer not.a.token");
    let mut refused = Peer::connect_with(bad).await;
    assert_eq!(
        error(refused.reply().await),
        (None, ErrorCode::Unauthorized)
    );
    assert_eq!(refused.closed_with().await, UNAUTHORIZED_CLOSE_CODE);
}

#[tokio::test]
async fn every_bad_token_is_refused_and_closes_the_connection() {
    let key = EsKey::generate();
    let verifier = JwtVerifier::new()
        .key(JwtKey::hs256(SECRET).unwrap())
        .key(JwtKey::from_pem(key.public_pem.as_bytes()).unwrap())
        .audience("wsevents-tests");
    let url = start(PubsubServer::new(hub()).access(Access::open().tokens(verifier))).await;
    let good = || {
        let mut c = claims("eve", &["*"], &["*"]);
        c["aud"] = json!("wsevents-tests");
        c
    };
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good();
        c[field] = value;
        c
    };
    // Good ones first: the same claims, both algorithms.
    for token in [hs256(&good()), key.sign(None, &good())] {
        let mut peer = Peer::connect(&url).await;
        assert!(matches!(
            peer.connect_token(1, &token).await,
            Reply::Connected { .. }
        ));
    }
    let expired = hs256(&with("exp", json!(now() - 60)));
    let not_yet = hs256(&with("nbf", json!(now() + 60)));
    let wrong_key = hs256_with(b"another secret, also 32 bytes long..", None, &good());
    let none = tokens::unsigned(&good());
    let truncated = tokens::truncated(&hs256(&good()));
    // The ES256 public key's PEM as an HS256 secret: algorithm confusion.
    let confused = hs256_with(key.public_pem.as_bytes(), None, &good());
    let unknown_kid = hs256_with(SECRET, Some("nope"), &good());
    let wrong_audience = hs256(&with("aud", json!("someone-else")));
    let no_audience = hs256(&claims("eve", &["*"], &["*"]));
    let bad_claims = hs256(&with("subscribe", json!("news")));
    let cases = [
        ("expired", expired, TOKEN_EXPIRED_CLOSE_CODE),
        ("not yet valid", not_yet, UNAUTHORIZED_CLOSE_CODE),
        ("wrong key", wrong_key, UNAUTHORIZED_CLOSE_CODE),
        ("alg none", none, UNAUTHORIZED_CLOSE_CODE),
        ("truncated", truncated, UNAUTHORIZED_CLOSE_CODE),
        ("algorithm confusion", confused, UNAUTHORIZED_CLOSE_CODE),
        ("unknown kid", unknown_kid, UNAUTHORIZED_CLOSE_CODE),
        ("wrong audience", wrong_audience, UNAUTHORIZED_CLOSE_CODE),
        ("no audience", no_audience, UNAUTHORIZED_CLOSE_CODE),
        ("bad claims", bad_claims, UNAUTHORIZED_CLOSE_CODE),
        ("not a token", "x".into(), UNAUTHORIZED_CLOSE_CODE),
    ];
    for (what, token, code) in cases {
        let mut peer = Peer::connect(&url).await;
        // Pipelined behind the connect: never subscribed.
        peer.send(&Request::Connect { id: 1, token }).await;
        peer.send_raw(r#"{"id":2,"op":"subscribe","topic":"news"}"#)
            .await;
        let reply = peer.reply().await;
        assert!(
            matches!(
                reply,
                Reply::Error {
                    id: Some(1),
                    code: ErrorCode::Unauthorized,
                    ..
                }
            ),
            "{what}: {reply:?}"
        );
        assert_eq!(peer.closed_with().await, code, "{what}");
    }
}

#[tokio::test]
async fn requests_before_connect_get_the_anonymous_rules_and_those_after_it_the_token_s() {
    let url = start(PubsubServer::new(hub()).access(hs_access())).await;
    let mut peer = Peer::connect(&url).await;
    let token = hs256(&claims("alice", &["news"], &[]));
    // All sent at once: decided in order, each under the identity it arrived with.
    peer.send_raw(r#"{"id":1,"op":"subscribe","topic":"news"}"#)
        .await;
    peer.send(&Request::Connect { id: 2, token }).await;
    peer.send_raw(r#"{"id":3,"op":"subscribe","topic":"news"}"#)
        .await;
    // (`connect` is answered as it is read, the subscriptions in their turn.)
    assert!(matches!(peer.reply().await, Reply::Connected { id: 2, .. }));
    assert_eq!(error(peer.reply().await), (Some(1), ErrorCode::Forbidden));
    assert!(matches!(
        peer.reply().await,
        Reply::Subscribed { id: 3, .. }
    ));
    // A second connect is a mistake, not a new identity.
    let other = hs256(&claims("mallory", &["*"], &["*"]));
    peer.send(&Request::Connect {
        id: 4,
        token: other,
    })
    .await;
    assert_eq!(error(peer.reply().await), (Some(4), ErrorCode::BadRequest));
}

#[tokio::test]
async fn a_refreshed_connection_outlives_its_first_token_and_an_unrefreshed_one_is_closed() {
    let url = start(
        PubsubServer::new(hub())
            .access(hs_access())
            .expiry_grace(Duration::ZERO),
    )
    .await;
    let short = |user: &str| {
        let mut c = claims(user, &["news"], &["news"]);
        c["exp"] = json!(now() + 2);
        hs256(&c)
    };
    let mut refreshed = Peer::connect(&url).await;
    let mut unrefreshed = Peer::connect(&url).await;
    assert!(matches!(
        refreshed.connect_token(1, &short("alice")).await,
        Reply::Connected { .. }
    ));
    assert!(matches!(
        unrefreshed.connect_token(1, &short("bob")).await,
        Reply::Connected { .. }
    ));
    refreshed
        .send(&Request::Refresh {
            id: 2,
            token: hs256(&claims("alice", &["news"], &["news"])),
        })
        .await;
    match refreshed.reply().await {
        Reply::Refreshed { id: 2, expires } => assert!(expires.unwrap() > now() + 3000),
        other => panic!("{other:?}"),
    }
    // The unrefreshed one is closed at its exp, with 4003…
    assert_eq!(unrefreshed.closed_with().await, TOKEN_EXPIRED_CLOSE_CODE);
    // …when the refreshed one, whose first token expired as well, goes on.
    refreshed.subscribe("news", None).await;
    refreshed.publish_own("news", "still here").await;

    // A refresh for another user, or with a bad token, is refused and closes.
    let mut peer = Peer::connect(&url).await;
    peer.connect_token(1, &hs256(&claims("alice", &["news"], &[])))
        .await;
    peer.send(&Request::Refresh {
        id: 2,
        token: hs256(&claims("mallory", &["*"], &["*"])),
    })
    .await;
    assert_eq!(
        error(peer.reply().await),
        (Some(2), ErrorCode::Unauthorized)
    );
    assert_eq!(peer.closed_with().await, UNAUTHORIZED_CLOSE_CODE);
    // A refresh without a token first: a mistake, the connection goes on.
    let mut anonymous = Peer::connect(&url).await;
    anonymous
        .send(&Request::Refresh {
            id: 3,
            token: hs256(&claims("alice", &[], &[])),
        })
        .await;
    assert_eq!(
        error(anonymous.reply().await),
        (Some(3), ErrorCode::BadRequest)
    );
    anonymous.subscribe("public:x", None).await;
}

#[tokio::test]
async fn the_hook_sees_who_and_where_and_publishes_keep_their_order_while_it_waits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = {
        let (calls, release, seen) = (calls.clone(), release.clone(), seen.clone());
        move |check: Check| {
            let (calls, release, seen) = (calls.clone(), release.clone(), seen.clone());
            async move {
                seen.lock().unwrap().push((
                    check.action,
                    check.topic.clone(),
                    check.peer.is_some(),
                    check.request.as_ref().map(|r| r.uri().path().to_owned()),
                    check.identity.user().map(str::to_owned),
                ));
                if check.topic == "secret" {
                    return false;
                }
                if check.action == Action::Publish {
                    // The first publish's hook waits for the second's: they answer out
                    // of order.
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        release.notified().await;
                    } else {
                        release.notify_one();
                    }
                }
                true
            }
        }
    };
    let url = start(PubsubServer::new(hub()).access(hs_access().authorize(hook))).await;
    let mut peer = Peer::connect(&url).await;
    peer.connect_token(1, &hs256(&claims("alice", &[], &[])))
        .await;
    // The hook decides, not the claims (which allow nothing).
    peer.subscribe("news", None).await;
    let first = peer.publish_later("news", "first", None).await;
    let second = peer.publish_later("news", "second", None).await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        match peer.reply().await {
            Reply::Published { id, position, .. } => answers.push((id, position.offset())),
            Reply::Pub { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        answers,
        [(first, 1), (second, 2)],
        "stored in the order sent"
    );
    peer.drain(Duration::from_millis(20)).await;
    peer.send_raw(r#"{"id":90,"op":"subscribe","topic":"secret"}"#)
        .await;
    assert_eq!(error(peer.reply().await), (Some(90), ErrorCode::Forbidden));
    peer.send_raw(r#"{"id":91,"op":"publish","topic":"secret","data":"x"}"#)
        .await;
    assert_eq!(error(peer.reply().await), (Some(91), ErrorCode::Forbidden));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert_eq!(
        seen[0],
        (
            Action::Subscribe,
            "news".into(),
            true,
            Some("/pubsub".into()),
            Some("alice".into())
        )
    );
    assert_eq!((seen[1].0, seen[2].0), (Action::Publish, Action::Publish));
}

#[tokio::test]
async fn the_operator_disconnects_a_user_and_takes_a_topic_away() {
    let pubsub = PubsubServer::new(hub()).access(hs_access());
    let url = start(pubsub.clone()).await;
    let token = |user: &str| hs256(&claims(user, &["news", "sport"], &["news"]));
    let mut alice1 = Peer::connect(&url).await;
    let mut alice2 = Peer::connect(&url).await;
    let mut bob = Peer::connect(&url).await;
    for (peer, user) in [
        (&mut alice1, "alice"),
        (&mut alice2, "alice"),
        (&mut bob, "bob"),
    ] {
        peer.connect_token(1, &token(user)).await;
        peer.subscribe("news", None).await;
    }
    alice1.subscribe("sport", None).await;
    assert_eq!(pubsub.connections_of("alice"), 2);
    assert_eq!(pubsub.unsubscribe_user("alice", "sport"), 1);
    assert_eq!(pubsub.unsubscribe_user("alice", "news"), 2);
    assert_eq!(pubsub.unsubscribe_user("nobody", "news"), 0);
    // Told, without an id: alice1 of both topics, alice2 of news; bob of nothing.
    for (peer, expected) in [
        (&mut alice1, vec!["news", "sport"]),
        (&mut alice2, vec!["news"]),
    ] {
        let mut dropped = Vec::new();
        while dropped.len() < expected.len() {
            match peer.reply().await {
                Reply::Unsubscribed { id: None, topic } => dropped.push(topic),
                other => panic!("{other:?}"),
            }
        }
        dropped.sort();
        assert_eq!(dropped, expected);
    }
    bob.publish_own("news", "after").await;
    alice1.nothing_for(Duration::from_millis(50)).await;
    alice2.nothing_for(Duration::from_millis(1)).await;

    assert_eq!(pubsub.disconnect_user("alice"), 2);
    assert_eq!(alice1.closed_with().await, DISCONNECTED_CLOSE_CODE);
    assert_eq!(alice2.closed_with().await, DISCONNECTED_CLOSE_CODE);
    // Gone from the index once closed (on the server's side: bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pubsub.connections_of("alice") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "still indexed");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pubsub.connections_of("bob"), 1);
    bob.publish_own("news", "bob stays").await;
}

#[tokio::test]
async fn publishes_waiting_for_the_hook_are_bounded_and_the_rest_refused_for_now() {
    use wsevents::pubsub::MAX_PENDING_PUBLISHES;
    // A hook that never answers a publish: they all wait.
    let hook = |check: Check| async move {
        if check.action == Action::Publish {
            std::future::pending::<()>().await;
        }
        true
    };
    let url = start(
        PubsubServer::new(hub())
            .access(Access::open().authorize(hook))
            // 1,025 publishes at once: the publish rate is not what this checks.
            .publish_rate(None),
    )
    .await;
    let mut peer = Peer::connect(&url).await;
    let over = MAX_PENDING_PUBLISHES as u64 + 1;
    for _ in 0..over {
        peer.publish_later("news", "x", None).await;
    }
    // Only the one past the bound is answered: for now, retry later.
    assert_eq!(
        error(peer.reply().await),
        (Some(over), ErrorCode::TooManyRequests)
    );
    // Subscriptions do not wait behind publishes.
    peer.subscribe("news", None).await;
}
