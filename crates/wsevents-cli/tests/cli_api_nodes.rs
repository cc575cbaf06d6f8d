//! `POST /api/disconnect` and `/api/unsubscribe` across two `wsevents serve` processes
//! on a real Redis, end to end: users are the `sub` of real HS256 tokens (signed here)
//! given by wsevents.v1 clients in `connect`; the API of one node acts on the user's
//! connections on both, and says how many.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsevents::pubsub::wire::{Reply, Request};

mod support;

#[path = "../../wsevents/tests/support/tokens.rs"]
mod tokens;
#[path = "../../wsevents/tests/support/v1.rs"]
mod v1;

use support::{Redis, Serve};
use tokens::{SECRET, claims, hs256};
use v1::Peer;

const KEY: &str = "nodes-test-key-0123456789abcdef";
const TIMEOUT: Duration = Duration::from_secs(20);

/// A file of the test's own, removed on drop.
struct File(std::path::PathBuf);

impl File {
    fn new(name: &str, contents: &[u8]) -> File {
        let path =
            std::env::temp_dir().join(format!("wsevents-nodes-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        File(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `method path` with the key and a JSON `body`: the status and the JSON answer.
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let json = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// A v1 connection of `user` on `serve`, subscribed to `news`.
async fn user(serve: &Serve, user: &str) -> Peer {
    let mut peer = Peer::connect(&serve.url("/pubsub")).await;
    peer.send(&Request::Connect {
        id: 1,
        token: hs256(&claims(user, &["news"], &[])),
    })
    .await;
    assert!(matches!(peer.reply().await, Reply::Connected { .. }));
    peer.subscribe("news", None).await;
    peer
}

// The blocking HTTP calls take a worker; the clients need another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_unsubscribe_through_one_node_act_on_both() {
    let redis = Redis::start();
    let url = redis.url();
    let keys = File::new("keys", KEY.as_bytes());
    let mut secret = SECRET.to_vec();
    secret.push(b'\n');
    let secret = File::new("secret", &secret);
    let args = [
        "--redis",
        &url,
        "--api-key-file",
        keys.path(),
        "--jwt-secret-file",
        secret.path(),
    ];
    let (a, b) = (Serve::start(&args), Serve::start(&args));
    // Both nodes ready (connected to Redis), and their control channels up.
    for node in [&a, &b] {
        let start = Instant::now();
        while call(&node.addr, "GET", "/readyz", None).0 != 200 {
            assert!(start.elapsed() < TIMEOUT, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let start = Instant::now();
    loop {
        let (status, info) = call(&b.addr, "GET", "/api/info", None);
        if status == 200 && info["nodes"] == 2 && info["answered"] == 2 {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "never two nodes: {status} {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut alice_a = user(&a, "alice").await;
    let mut alice_b = user(&b, "alice").await;
    let mut bob_a = user(&a, "bob").await;

    let unsubscribe = json!({"user": "alice", "topic": "news"});
    let (status, answer) = call(&b.addr, "POST", "/api/unsubscribe", Some(&unsubscribe));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"connections": 2, "nodes": 2, "answered": 2}));
    for peer in [&mut alice_a, &mut alice_b] {
        match peer.reply().await {
            Reply::Unsubscribed { id: None, topic } => assert_eq!(topic, "news"),
            other => panic!("{other:?}"),
        }
    }

    let (status, answer) = call(
        &a.addr,
        "POST",
        "/api/disconnect",
        Some(&json!({"user": "alice"})),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"connections": 2, "nodes": 2, "answered": 2}));
    for peer in [&mut alice_a, &mut alice_b] {
        while peer.next().await.is_some() {}
        assert_eq!(peer.ws.closure().unwrap().code().as_u16(), 4009);
    }
    // Bob stays, and gets what b's API publishes.
    let (status, _) = call(
        &b.addr,
        "POST",
        "/api/publish",
        Some(&json!({"topic": "news", "data": "still here"})),
    );
    assert_eq!(status, 200);
    match bob_a.reply().await {
        Reply::Pub { topic, publication } => {
            assert_eq!(topic, "news");
            assert_eq!(publication.message, wsevents::Message::text("still here"));
        }
        other => panic!("{other:?}"),
    }
    let (_, info) = call(&b.addr, "GET", "/api/info", None);
    assert_eq!(info["connections"], 1, "{info}");
}
