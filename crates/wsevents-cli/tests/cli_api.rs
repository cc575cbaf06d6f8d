//! `wsevents serve --api-key-file`: the server HTTP API (docs/api.md) end to end, on
//! `serve` children on free 127.0.0.1 ports and, for the cross-node cases, a real
//! `redis-server` of the test's own (killed for the 503s). Every endpoint and every
//! error status, over plain TCP with a few lines of HTTP/1.1 (the server closes each
//! connection after its answer). Subscribers are `wsevents sub` children.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

use support::{BIN, Redis, Serve};

const TIMEOUT: Duration = Duration::from_secs(20);
const KEY: &str = "test-key-0123456789abcdef";
const OTHER_KEY: &str = "second-key-0123456789abcdef";

/// A file of API keys, removed on drop.
struct KeyFile(std::path::PathBuf);

impl KeyFile {
    fn new(text: &str) -> KeyFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "wsevents-api-keys-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        KeyFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The error body's code, checking its shape.
    fn error_code(&self) -> String {
        let body = self.json();
        assert!(body["error"]["message"].is_string(), "{body}");
        body["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// Send `request` as it is and read the whole answer (the server closes after it).
fn raw(addr: &str, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `method path` with `key` (Bearer) and a JSON `body`.
fn call(addr: &str, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(key) = key {
        request += &format!("Authorization: Bearer {key}\r\n");
    }
    if let Some(body) = body {
        request += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        request += "\r\n";
    }
    raw(addr, request.as_bytes())
}

fn post(addr: &str, path: &str, body: &Value) -> Answer {
    call(addr, "POST", path, Some(KEY), Some(&body.to_string()))
}

fn get(addr: &str, path: &str) -> Answer {
    call(addr, "GET", path, Some(KEY), None)
}

/// A `wsevents sub --positions` child, its stdout lines collected; killed on drop.
struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn start(url: &str, topic: &str) -> Sub {
        let mut child = Command::new(BIN)
            .args(["sub", url, topic, "--positions"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = collect(child.stdout.take().unwrap());
        let notes = collect(child.stderr.take().unwrap());
        let sub = Sub {
            child,
            lines,
            notes,
        };
        sub.until("subscribed", |_, notes| {
            notes.iter().any(|n| n.contains("subscribed"))
        });
        sub
    }

    fn until(&self, what: &str, f: impl Fn(&[String], &[String]) -> bool) {
        let start = Instant::now();
        loop {
            let (lines, notes) = (
                self.lines.lock().unwrap().clone(),
                self.notes.lock().unwrap().clone(),
            );
            if f(&lines, &notes) {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}: {lines:?} {notes:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for `n` lines; them.
    fn lines(&self, n: usize) -> Vec<String> {
        self.until(&format!("{n} lines"), |lines, _| lines.len() >= n);
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let to = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            to.lock().unwrap().push(line);
        }
    });
    lines
}

/// `EPOCH:OFFSET` of an answer that has them.
fn position(answer: &Value) -> String {
    format!("{}:{}", answer["epoch"].as_str().unwrap(), answer["offset"])
}

#[test]
fn publish_broadcast_and_history_reach_subscribers_with_positions() {
    let keys = KeyFile::new(&format!("# two keys\n{KEY}\n{OTHER_KEY}\n"));
    let serve = Serve::start(&["--api-key-file", keys.path()]);
    let addr = serve.addr.as_str();
    let news = Sub::start(&serve.url("/pubsub"), "news");

    let first = post(
        addr,
        "/api/publish",
        &json!({"topic": "news", "data": "hello"}),
    );
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("content-type"), Some("application/json"));
    let first = first.json();
    assert_eq!(first["offset"], 1);
    // Binary, as base64; any other JSON value is published as its text.
    let binary = post(
        addr,
        "/api/publish",
        &json!({"topic": "news", "data": "AAEC/w==", "binary": true}),
    );
    assert_eq!(binary.status, 200, "{binary:?}");
    let object = post(
        addr,
        "/api/publish",
        &json!({"topic": "news", "data": {"n": 1}}),
    );
    // The other key works as well.
    let other = call(
        addr,
        "POST",
        "/api/publish",
        Some(OTHER_KEY),
        Some(r#"{"topic":"news","data":"by the other key"}"#),
    );
    assert_eq!(other.status, 200, "{other:?}");
    assert_eq!(
        news.lines(4),
        [
            format!("{} hello", position(&first)),
            format!("{} 000102ff", position(&binary.json())),
            format!("{} {{\"n\":1}}", position(&object.json())),
            format!("{} by the other key", position(&other.json())),
        ]
    );

    // The idempotency key: stored once, the same position twice, delivered once.
    let keyed = json!({"topic": "news", "data": "once", "key": "k-1"});
    let once = post(addr, "/api/publish", &keyed).json();
    let again = post(addr, "/api/publish", &keyed).json();
    assert_eq!(once, again);
    let after = post(
        addr,
        "/api/publish",
        &json!({"topic": "news", "data": "after"}),
    )
    .json();
    let lines = news.lines(6);
    assert_eq!(
        lines[4..],
        [
            format!("{} once", position(&once)),
            format!("{} after", position(&after))
        ]
    );

    // Broadcast: a position per topic, in the order asked.
    let sports = Sub::start(&serve.url("/pubsub"), "sports");
    let both = post(
        addr,
        "/api/broadcast",
        &json!({"topics": ["sports", "news"], "data": "everywhere"}),
    );
    assert_eq!(both.status, 200, "{both:?}");
    let positions = both.json()["positions"].clone();
    assert_eq!(positions[0]["topic"], "sports");
    assert_eq!(positions[1]["topic"], "news");
    assert_eq!(
        sports.lines(1),
        [format!("{} everywhere", position(&positions[0]))]
    );
    assert_eq!(
        news.lines(7)[6],
        format!("{} everywhere", position(&positions[1]))
    );

    // History: pages with positions, from the oldest, then on from a position.
    let page = get(addr, "/api/history?topic=news&limit=2");
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.json();
    assert_eq!(page["topic"], "news");
    assert_eq!(page["offset"], 7);
    assert_eq!(page["more"], true);
    assert_eq!(page["gap"], false);
    let published = &page["publications"];
    assert_eq!(published[0]["data"], "hello");
    assert_eq!(published[0]["offset"], 1);
    assert_eq!(published[1]["data"], "AAEC/w==");
    assert_eq!(published[1]["binary"], true);
    let rest = get(
        addr,
        &format!("/api/history?topic=news&since={}", position(&published[1])),
    )
    .json();
    let texts: Vec<_> = rest["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "{\"n\":1}",
            "by the other key",
            "once",
            "after",
            "everywhere"
        ]
    );
    assert_eq!(rest["more"], false);
    // A topic never published: no position, nothing.
    let never = get(addr, "/api/history?topic=never").json();
    assert_eq!(
        (never["epoch"].clone(), never["publications"].clone()),
        (Value::Null, json!([]))
    );

    // Info: this node, its connections (the two subscribers).
    let info = get(addr, "/api/info").json();
    assert_eq!(info["backend"], "in_process");
    assert_eq!(
        (info["nodes"].clone(), info["answered"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(info["connections"], 2, "{info}");
    // Health, without a key.
    let health = call(addr, "GET", "/healthz", None, None);
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = call(addr, "GET", "/readyz", None, None);
    assert_eq!(
        (ready.status, ready.json()["backend"].clone()),
        (200, json!("in_process"))
    );
}

#[test]
fn every_refusal_has_its_status_and_a_json_error() {
    let keys = KeyFile::new(KEY);
    let serve = Serve::start(&["--api-key-file", keys.path(), "--max-publication", "1000"]);
    let addr = serve.addr.as_str();
    let publish = r#"{"topic":"news","data":"x"}"#;

    // 401: no key, a wrong key, another scheme; with WWW-Authenticate.
    for key in [None, Some("wrong-key-0123456789abcdef"), Some("")] {
        let refused = call(addr, "POST", "/api/publish", key, Some(publish));
        assert_eq!(refused.status, 401, "{key:?}: {refused:?}");
        assert_eq!(refused.error_code(), "unauthorized");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"wsevents\"")
        );
    }
    let basic = raw(
        addr,
        format!("GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {KEY}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(basic.status, 401);
    // A refused key opens nothing: even unknown paths answer 401 first.
    assert_eq!(call(addr, "GET", "/api/nope", None, None).status, 401);

    // 400: bad JSON, a missing or unknown field, a bad topic, key, data, query.
    for (body, code) in [
        ("{not json", "bad_request"),
        (r#"{"topic":"news"}"#, "bad_request"),
        (r#"{"topic":"news","data":"x","extra":1}"#, "bad_request"),
        (r#"{"topic":"","data":"x"}"#, "bad_topic"),
        (
            &format!(r#"{{"topic":"{}","data":"x"}}"#, "t".repeat(257)),
            "bad_topic",
        ),
        (
            &format!(r#"{{"topic":"n","data":"x","key":"{}"}}"#, "k".repeat(129)),
            "bad_request",
        ),
        (
            r#"{"topic":"n","data":"not base64!","binary":true}"#,
            "bad_request",
        ),
        (r#"{"topic":"n","data":null}"#, "bad_request"),
    ] {
        let refused = call(addr, "POST", "/api/publish", Some(KEY), Some(body));
        assert_eq!(refused.status, 400, "{body}: {refused:?}");
        assert_eq!(refused.error_code(), code, "{body}");
    }
    for body in [
        json!({"topics": [], "data": "x"}),
        json!({"topics": ["a", "a"], "data": "x"}),
        json!({"topics": ["a", ""], "data": "x"}),
        json!({"topics": vec!["t"; 1001], "data": "x"}),
    ] {
        assert_eq!(post(addr, "/api/broadcast", &body).status, 400, "{body}");
    }
    for query in [
        "",
        "?topic=",
        "?topic=n&limit=0",
        "?topic=n&limit=1001",
        "?topic=n&limit=x",
        "?topic=n&since=nocolon",
        "?topic=n&other=1",
    ] {
        let refused = get(addr, &format!("/api/history{query}"));
        assert_eq!(refused.status, 400, "{query}: {refused:?}");
        refused.error_code();
    }

    // 404 and 405 (with Allow).
    let missing = get(addr, "/api/nope");
    assert_eq!(
        (missing.status, missing.error_code()),
        (404, "not_found".into())
    );
    let wrong = get(addr, "/api/publish");
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (405, "method_not_allowed".into())
    );
    assert_eq!(wrong.header("allow"), Some("POST"));
    let wrong = call(addr, "DELETE", "/api/history?topic=n", Some(KEY), None);
    assert_eq!(
        (wrong.status, wrong.header("allow")),
        (405, Some("GET, HEAD"))
    );
    let wrong = call(addr, "POST", "/healthz", None, Some("{}"));
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (405, "method_not_allowed".into())
    );

    // 413: a body past the limit, refused by its Content-Length before it is read
    // (none is sent here), and data past --max-publication in a body within it.
    let declared = raw(
        addr,
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100000000\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        (declared.status, declared.error_code()),
        (413, "too_large".into())
    );
    let large = post(
        addr,
        "/api/publish",
        &json!({"topic": "n", "data": "x".repeat(1001)}),
    );
    assert_eq!(
        (large.status, large.error_code()),
        (413, "too_large".into())
    );
    let fits = post(
        addr,
        "/api/publish",
        &json!({"topic": "n", "data": "x".repeat(1000)}),
    );
    assert_eq!(fits.status, 200, "{fits:?}");
    // A chunked body that grows past the limit as it arrives.
    let mut chunked = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = "x".repeat(60_000);
    for _ in 0..2 {
        chunked += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
    }
    chunked += "0\r\n\r\n";
    let streamed = raw(addr, chunked.as_bytes());
    assert_eq!(
        (streamed.status, streamed.error_code()),
        (413, "too_large".into())
    );

    // Without tokens every connection is anonymous: no user has any.
    let nobody = post(addr, "/api/disconnect", &json!({"user": "alice"}));
    assert_eq!(nobody.status, 200, "{nobody:?}");
    assert_eq!(
        nobody.json(),
        json!({"connections": 0, "nodes": 1, "answered": 1})
    );
    let nobody = post(
        addr,
        "/api/unsubscribe",
        &json!({"user": "alice", "topic": "news"}),
    );
    assert_eq!(nobody.json()["connections"], 0);
    for body in [json!({"user": ""}), json!({"user": "a", "topic": "x"})] {
        assert_eq!(post(addr, "/api/disconnect", &body).status, 400, "{body}");
    }
    let bad_topic = post(addr, "/api/unsubscribe", &json!({"user": "a", "topic": ""}));
    assert_eq!(
        (bad_topic.status, bad_topic.error_code()),
        (400, "bad_topic".into())
    );
    // The server goes on.
    assert_eq!(get(addr, "/api/info").status, 200);
}

#[test]
fn without_a_key_file_there_is_no_api_but_health() {
    let serve = Serve::start(&[]);
    let addr = serve.addr.as_str();
    assert_eq!(
        call(addr, "POST", "/api/publish", Some(KEY), Some("{}")).status,
        405
    );
    assert_eq!(call(addr, "GET", "/api/info", Some(KEY), None).status, 404);
    assert_eq!(call(addr, "GET", "/healthz", None, None).status, 200);
    assert_eq!(call(addr, "GET", "/readyz", None, None).status, 200);
}

#[test]
fn a_bad_key_file_stops_serve_with_its_line() {
    let keys = KeyFile::new("0123456789abcdef0123\nshort\n");
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key-file",
            keys.path(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--api-key-file")
            && stderr.contains("line 2: an API key is at least 16 bytes"),
        "{stderr}"
    );
}

#[test]
fn on_redis_a_publish_through_one_node_reaches_the_other_and_503_while_redis_is_away() {
    let mut redis = Redis::start();
    let keys = KeyFile::new(KEY);
    let url = redis.url();
    let args = ["--api-key-file", keys.path(), "--redis", &url];
    let a = Serve::start(&args);
    let b = Serve::start(&args);
    // Ready once connected to Redis (as an orchestrator would wait).
    for node in [&a, &b] {
        let start = Instant::now();
        while call(&node.addr, "GET", "/readyz", None, None).status != 200 {
            assert!(start.elapsed() < TIMEOUT, "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let on_a = Sub::start(&a.url("/pubsub"), "news");
    // Both nodes' control channels are up once info through b counts two.
    let start = Instant::now();
    let info = loop {
        let info = get(&b.addr, "/api/info");
        if info.status == 200 && info.json()["nodes"] == 2 && info.json()["answered"] == 2 {
            break info.json();
        }
        assert!(start.elapsed() < TIMEOUT, "never two nodes: {info:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(info["backend"], "redis");
    assert_eq!(info["connections"], 1, "{info}");
    let ready = call(&b.addr, "GET", "/readyz", None, None);
    assert_eq!(
        (ready.status, ready.json()["backend"].clone()),
        (200, json!("redis"))
    );

    let through_b = post(
        &b.addr,
        "/api/publish",
        &json!({"topic": "news", "data": "from b"}),
    );
    assert_eq!(through_b.status, 200, "{through_b:?}");
    assert_eq!(
        on_a.lines(1),
        [format!("{} from b", position(&through_b.json()))]
    );
    // The key holds across nodes: a retry through a is the same publication.
    let keyed = json!({"topic": "news", "data": "keyed", "key": "retry-1"});
    let first = post(&b.addr, "/api/publish", &keyed).json();
    let retry = post(&a.addr, "/api/publish", &keyed).json();
    assert_eq!(first, retry);
    // History through a reads what b stored.
    let page = get(&a.addr, "/api/history?topic=news").json();
    assert_eq!(page["publications"][0]["data"], "from b");
    assert_eq!(page["publications"][1]["data"], "keyed");
    assert_eq!(page["publications"].as_array().unwrap().len(), 2);

    redis.kill();
    let start = Instant::now();
    let refused = loop {
        let refused = post(
            &b.addr,
            "/api/publish",
            &json!({"topic": "news", "data": "lost"}),
        );
        if refused.status == 503 {
            break refused;
        }
        assert!(start.elapsed() < TIMEOUT, "never 503: {refused:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.error_code(), "unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let not_ready = call(&b.addr, "GET", "/readyz", None, None);
    assert_eq!(
        (not_ready.status, not_ready.header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(not_ready.error_code(), "unavailable");
    for (path, body) in [
        (
            "/api/broadcast",
            json!({"topics": ["news"], "data": "lost"}),
        ),
        ("/api/history?topic=news", Value::Null),
        ("/api/info", Value::Null),
    ] {
        let answer = if body.is_null() {
            get(&b.addr, path)
        } else {
            post(&b.addr, path, &body)
        };
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    // Alive all along.
    assert_eq!(call(&b.addr, "GET", "/healthz", None, None).status, 200);
}

/// `wsevents ARGS` with `stdin`; its exit code, stdout and stderr.
fn wsevents(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn pub_publishes_through_the_api() {
    let keys = KeyFile::new(&format!("# the key\n{KEY}\n"));
    let serve = Serve::start(&["--api-key-file", keys.path()]);
    let api = format!("http://{}", serve.addr);
    let news = Sub::start(&serve.url("/pubsub"), "news");
    let base = [
        "pub",
        "--api",
        &api,
        "--api-key-file",
        keys.path(),
        "--positions",
    ];

    let (code, out, err) = wsevents(&[&base[..], &["news", "one"]].concat(), "");
    assert_eq!(code, Some(0), "{err}");
    let first = out.trim().to_owned();
    assert!(first.ends_with(":1"), "{out}");
    // Each line of stdin, in order.
    let (code, out, err) = wsevents(&[&base[..], &["news"]].concat(), "two\nthree\n");
    assert_eq!(code, Some(0), "{err}");
    let positions: Vec<&str> = out.lines().collect();
    assert_eq!(
        news.lines(3),
        [
            format!("{first} one"),
            format!("{} two", positions[0]),
            format!("{} three", positions[1])
        ]
    );

    // Refusals stop at once, with the server's word.
    let (code, _, err) = wsevents(&[&base[..], &["", "x"]].concat(), "");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("400 Bad Request bad_topic"), "{err}");
    let wrong = KeyFile::new("wrong-key-0123456789abcdef");
    let (code, _, err) = wsevents(
        &[
            "pub",
            "--api",
            &api,
            "--api-key-file",
            wrong.path(),
            "news",
            "x",
        ],
        "",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401 Unauthorized unauthorized"), "{err}");
    // A bad command line: exit 2.
    let (code, _, err) = wsevents(&base, "");
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = wsevents(&[&base[..], &["a", "b", "c"]].concat(), "");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("with --api, give TOPIC [MESSAGE]"), "{err}");
    let (code, _, err) = wsevents(&["pub", "--api", &api, "news", "x"], "");
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn pub_through_the_api_sends_again_until_redis_is_back_and_stores_once() {
    let mut redis = Redis::start();
    let keys = KeyFile::new(KEY);
    let url = redis.url();
    let serve = Serve::start(&["--api-key-file", keys.path(), "--redis", &url]);
    let api = format!("http://{}", serve.addr);
    redis.kill();
    // Wait until the server knows Redis is gone (a publish is refused at once).
    let start = Instant::now();
    while post(
        &serve.addr,
        "/api/publish",
        &json!({"topic": "probe", "data": "x"}),
    )
    .status
        != 503
    {
        assert!(start.elapsed() < TIMEOUT, "Redis never missed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut child = Command::new(BIN)
        .args([
            "pub",
            "--api",
            &api,
            "--api-key-file",
            keys.path(),
            "--positions",
            "news",
            "kept",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let notes = collect(child.stderr.take().unwrap());
    let start = Instant::now();
    while !notes
        .lock()
        .unwrap()
        .iter()
        .any(|n| n.contains("503 Service Unavailable unavailable"))
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "no retry: {:?}",
            notes.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    redis.restart();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{:?}", notes.lock().unwrap());
    let position = String::from_utf8(output.stdout).unwrap();
    // Stored once (the history Redis has since its restart).
    let page = get(&serve.addr, "/api/history?topic=news").json();
    let texts: Vec<_> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(texts, [json!("kept")], "{page}");
    assert_eq!(
        position.trim(),
        format!("{}:1", page["epoch"].as_str().unwrap())
    );
}
