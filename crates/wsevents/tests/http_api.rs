//! The server HTTP API's commands across nodes (issue 25): `disconnect` and
//! `unsubscribe` through one node's API act on a user's connections on every node of a
//! real Redis, with real HS256 tokens naming the users; `info` counts both nodes. The
//! API is called as a hyper server would call it ([`HttpApi::handle`]); the clients
//! are real wsevents.v1 connections on 127.0.0.1. And the API's own bounds: a body
//! that does not arrive (408), requests past the bound in progress (503).
#![cfg(all(feature = "http-api", feature = "redis", feature = "jwt"))]
#![allow(clippy::unwrap_used)]

#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/tokens.rs"]
mod tokens;
#[path = "support/v1.rs"]
mod v1;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use redis_server::RedisServer;
use serde_json::{Value, json};
use tokens::{SECRET, claims, hs256};
use v1::Peer;
use wsevents::http_api::{ApiKeys, HttpApi};
use wsevents::hub::{BackendStatus, History, Hub, RedisBackend, RedisConfig};
use wsevents::pubsub::PubsubServer;
use wsevents::pubsub::auth::{Access, DISCONNECTED_CLOSE_CODE, JwtKey, JwtVerifier};
use wsevents::pubsub::wire::{Reply, Request};

const KEY: &str = "http-api-test-key-0123456789";

/// A node on `redis`: its v1 URL, its server and its API.
async fn node(redis: &RedisServer) -> (String, PubsubServer, HttpApi) {
    let config = RedisConfig {
        backoff_max: Duration::from_millis(200),
        ..RedisConfig::default()
    };
    let hub = Hub::builder()
        .history(History::default())
        .backend(RedisBackend::with_config(&redis.url(), config).unwrap())
        .build();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.backend_status() != BackendStatus::Connected {
        assert!(tokio::time::Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let access = Access::open().tokens(JwtVerifier::new().key(JwtKey::hs256(SECRET).unwrap()));
    let pubsub = PubsubServer::new(hub.clone()).access(access);
    let api = HttpApi::builder(hub, ApiKeys::parse(KEY).unwrap())
        .users(pubsub.clone())
        .build();
    (v1::serve(pubsub.clone()).await, pubsub, api)
}

/// `POST path` with `body` (or `GET` without one) through `api`: status and JSON.
async fn call(api: &HttpApi, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = http::Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let response = api.handle(request).await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// A v1 connection of `user` (a token for `news` and `sport`), subscribed to both.
async fn user(url: &str, user: &str) -> Peer {
    let mut peer = Peer::connect(url).await;
    peer.send(&Request::Connect {
        id: 1,
        token: hs256(&claims(user, &["news", "sport"], &["sport"])),
    })
    .await;
    assert!(matches!(peer.reply().await, Reply::Connected { .. }));
    peer.subscribe("news", None).await;
    peer.subscribe("sport", None).await;
    peer
}

/// `info` through `api` until it counts `nodes` nodes, all answering.
async fn until_nodes(api: &HttpApi, nodes: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, info) = call(api, "/api/info", None).await;
        if status == 200 && info["nodes"] == nodes && info["answered"] == nodes {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn disconnect_and_unsubscribe_reach_a_users_connections_on_every_node() {
    let redis = RedisServer::start();
    let (url_a, pubsub_a, _api_a) = node(&redis).await;
    let (url_b, pubsub_b, api_b) = node(&redis).await;
    until_nodes(&api_b, 2).await;
    let mut alice_a = user(&url_a, "alice").await;
    let mut alice_b = user(&url_b, "alice").await;
    let mut bob_a = user(&url_a, "bob").await;
    assert_eq!(
        (
            pubsub_a.connections_of("alice"),
            pubsub_b.connections_of("alice")
        ),
        (1, 1)
    );

    // Unsubscribe through b: both of alice's connections, on both nodes.
    let (status, answer) = call(
        &api_b,
        "/api/unsubscribe",
        Some(json!({"user": "alice", "topic": "news"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"connections": 2, "nodes": 2, "answered": 2}));
    for peer in [&mut alice_a, &mut alice_b] {
        match peer.reply().await {
            Reply::Unsubscribed { id: None, topic } => assert_eq!(topic, "news"),
            other => panic!("{other:?}"),
        }
    }
    let (_, nobody) = call(
        &api_b,
        "/api/unsubscribe",
        Some(json!({"user": "nobody", "topic": "news"})),
    )
    .await;
    assert_eq!(nobody["connections"], 0);

    // Disconnect through b: alice's two connections are closed, bob stays.
    let (status, answer) = call(&api_b, "/api/disconnect", Some(json!({"user": "alice"}))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"connections": 2, "nodes": 2, "answered": 2}));
    for peer in [&mut alice_a, &mut alice_b] {
        while peer.next().await.is_some() {}
        assert_eq!(peer.ws.closure().unwrap().code(), DISCONNECTED_CLOSE_CODE);
    }
    assert_eq!(pubsub_a.connections_of("bob"), 1);
    // Bob, on a, still gets what is published through b's API.
    let (status, _) = call(
        &api_b,
        "/api/publish",
        Some(json!({"topic": "news", "data": "bob stays"})),
    )
    .await;
    assert_eq!(status, 200);
    match bob_a.reply().await {
        Reply::Pub { topic, publication } => {
            assert_eq!(topic, "news");
            assert_eq!(publication.message, wsevents::Message::text("bob stays"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_user_identities_disconnect_is_not_implemented() {
    let hub = Hub::builder().history(History::default()).build();
    let api = HttpApi::builder(hub, ApiKeys::parse(KEY).unwrap()).build();
    let (status, answer) = call(&api, "/api/disconnect", Some(json!({"user": "alice"}))).await;
    assert_eq!(status, 501);
    assert_eq!(answer["error"]["code"], "not_implemented");
    // Info works: one node, in process.
    let info = until_nodes(&api, 1).await;
    assert_eq!(info["backend"], "in_process");
}

/// A body that says when it is first read, then never ends.
fn endless(
    first_read: tokio::sync::oneshot::Sender<()>,
) -> impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible> {
    let mut first_read = Some(first_read);
    http_body_util::StreamBody::new(futures_util::stream::poll_fn(
        move |_| -> std::task::Poll<
            Option<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>,
        > {
            if let Some(told) = first_read.take() {
                let _ = told.send(());
            }
            std::task::Poll::Pending
        },
    ))
}

fn publish_request<B>(body: B) -> http::Request<B> {
    http::Request::post("/api/publish")
        .header("authorization", format!("Bearer {KEY}"))
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_408_and_requests_past_the_bound_are_503() {
    let hub = Hub::builder().history(History::default()).build();
    let api = HttpApi::builder(hub, ApiKeys::parse(KEY).unwrap())
        .body_timeout(Duration::from_millis(100))
        .max_in_progress(1)
        .build();
    // 408: the body never comes.
    let (told, _) = tokio::sync::oneshot::channel();
    let late = api.handle(publish_request(endless(told))).await;
    assert_eq!(late.status(), 408);
    let body = late.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "timeout");

    // 503: one request is reading its body (the bound is 1), the next is refused.
    let (told, reading) = tokio::sync::oneshot::channel();
    let first = {
        let api = api.clone();
        tokio::spawn(async move { api.handle(publish_request(endless(told))).await })
    };
    reading.await.unwrap();
    let refused = api
        .handle(publish_request(Full::new(Bytes::from(
            r#"{"topic":"t","data":"x"}"#,
        ))))
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Once the first is done (408), the next goes through.
    assert_eq!(first.await.unwrap().status(), 408);
    let (status, _) = call(
        &api,
        "/api/publish",
        Some(json!({"topic": "t", "data": "x"})),
    )
    .await;
    assert_eq!(status, 200);
}
