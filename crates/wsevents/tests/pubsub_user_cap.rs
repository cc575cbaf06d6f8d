//! The cap on connections per user (issue 25, item 5): a wsevents.v1 connection that
//! gets a user (a handshake token, or `connect`) past the user's cap on this server is
//! answered `too_many_connections` and closed with 4029; the user's other
//! connections, other users and anonymous connections go on, and the user has room
//! again once one of its connections closes. Over real sockets on 127.0.0.1, with a
//! token verifier of the test's (the JWT verifier is tested with the auth).
#![allow(clippy::unwrap_used)]

#[path = "support/v1.rs"]
mod v1;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use v1::Peer;
use wsevents::CloseCode;
use wsevents::hub::{History, Hub};
use wsevents::pubsub::auth::{Access, Claims, TokenError, VerifyToken};
use wsevents::pubsub::wire::{ErrorCode, Reply, Request};
use wsevents::pubsub::{
    PubsubServer, TOO_MANY_CONNECTIONS_CLOSE_CODE, TOO_MANY_CONNECTIONS_REASON,
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A token is `user:NAME`: that user, who may do anything.
struct UserTokens;

impl VerifyToken for UserTokens {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match token.strip_prefix("user:") {
            Some(user) => Ok(Claims {
                user: Some(user.to_owned()),
                ..Claims::anyone()
            }),
            None => Err(TokenError::Malformed("not user:NAME".into())),
        }
    }
}

async fn server(max_per_user: usize) -> (String, PubsubServer) {
    let pubsub = PubsubServer::new(Hub::builder().history(History::default()).build())
        .access(
            Access::open()
                .tokens(UserTokens)
                .anonymous(Claims::anyone()),
        )
        .max_connections_per_user(max_per_user);
    (v1::serve(pubsub.clone()).await, pubsub)
}

/// Connect with a handshake token.
async fn as_user(url: &str, user: &str) -> Peer {
    Peer::connect(&format!("{url}?token=user:{user}")).await
}

/// The peer can still publish and be answered.
async fn usable(peer: &mut Peer) {
    peer.publish("t", "still here", None).await;
}

/// The next frame must be `too_many_connections` (with `id`), then the close 4029.
async fn refused(peer: &mut Peer, id: Option<u64>) {
    match peer.reply().await {
        Reply::Error {
            id: got,
            code: ErrorCode::TooManyConnections,
            ..
        } => assert_eq!(got, id),
        other => panic!("{other:?}"),
    }
    let end = tokio::time::timeout(TIMEOUT, peer.ws.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    let closure = peer.ws.closure().expect("closed by the server").clone();
    assert_eq!(
        (closure.code(), closure.reason()),
        (TOO_MANY_CONNECTIONS_CLOSE_CODE, TOO_MANY_CONNECTIONS_REASON)
    );
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < TIMEOUT, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn past_its_cap_a_users_new_connection_is_refused_with_4029_and_the_others_go_on() {
    let (url, pubsub) = server(2).await;
    let mut a1 = as_user(&url, "alice").await;
    let mut a2 = as_user(&url, "alice").await;
    usable(&mut a1).await;
    usable(&mut a2).await;
    assert_eq!(pubsub.connections_of("alice"), 2);

    // By a handshake token: refused at once, without an id.
    let mut a3 = as_user(&url, "alice").await;
    refused(&mut a3, None).await;
    // By `connect`: refused with the request's id.
    let mut a4 = Peer::connect(&url).await;
    a4.send(&Request::Connect {
        id: 7,
        token: "user:alice".into(),
    })
    .await;
    refused(&mut a4, Some(7)).await;
    assert_eq!(pubsub.connections_of("alice"), 2);

    // The user's own, another user's and anonymous connections go on.
    usable(&mut a1).await;
    usable(&mut a2).await;
    let mut b = as_user(&url, "bob").await;
    usable(&mut b).await;
    let mut anonymous = Peer::connect(&url).await;
    usable(&mut anonymous).await;

    // One of alice's closes: once the server has seen it, there is room again.
    a1.ws.close(CloseCode::NORMAL, "").await.unwrap();
    eventually(|| pubsub.connections_of("alice") == 1).await;
    let mut a5 = as_user(&url, "alice").await;
    usable(&mut a5).await;
    assert_eq!(pubsub.connections_of("alice"), 2);
}

#[tokio::test]
async fn the_default_cap_is_128_per_user() {
    assert_eq!(wsevents::pubsub::DEFAULT_MAX_CONNECTIONS_PER_USER, 128);
    let (url, pubsub) = server(wsevents::pubsub::DEFAULT_MAX_CONNECTIONS_PER_USER).await;
    let mut open = Vec::new();
    for _ in 0..128 {
        open.push(as_user(&url, "carol").await);
    }
    usable(open.last_mut().unwrap()).await;
    assert_eq!(pubsub.connections_of("carol"), 128);
    let mut one_more = as_user(&url, "carol").await;
    refused(&mut one_more, None).await;
    // A refresh (the same user) at the cap is no new connection of the user.
    let mut again = open.pop().unwrap();
    again
        .send(&Request::Refresh {
            id: 9,
            token: "user:carol".into(),
        })
        .await;
    match again.reply().await {
        Reply::Refreshed { id: 9, .. } => {}
        other => panic!("{other:?}"),
    }
}
