//! `wsevents serve` with tokens and permissions (issue 25), end to end: the flags, the
//! startup log, `/topic/NAME` judged at the handshake (401, 403) and per message
//! (1008), `/pubsub` with a bad handshake token (401), a token expiring on a topic
//! route (4003), and the refusals of bad flags and files (exit 2).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use wsevents::{ClientBuilder, Message};
use wsevents_proto::HandshakeError;

mod support;

#[path = "../../wsevents/tests/support/tokens.rs"]
mod tokens;

use support::{BIN, Serve};
use tokens::{EsKey, SECRET, claims, hs256, now};

/// A file of `contents` in a fresh temporary directory (removed with the guard).
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "wsevents-cli-auth-{}-{}",
            std::process::id(),
            wsevents_unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wsevents_unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The secret file, with the newline `echo` adds.
fn secret_file() -> TempFile {
    let mut contents = SECRET.to_vec();
    contents.push(b'\n');
    TempFile::new("secret", &contents)
}

/// The handshake's HTTP status, when it was refused.
async fn refused_with(url: &str) -> Option<u16> {
    match ClientBuilder::new(url).unwrap().connect().await {
        Ok(_) => None,
        Err(wsevents::Error::Handshake(HandshakeError::UnexpectedStatus { status, .. })) => {
            Some(status)
        }
        Err(other) => panic!("{other}"),
    }
}

async fn open(url: &str) -> wsevents::WebSocketStream<wsevents::MaybeTlsStream> {
    ClientBuilder::new(url).unwrap().connect().await.unwrap()
}

/// The close code the server closed `ws` with (reading what comes before).
async fn closed_with(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> u16 {
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "not closed within 20 s");
    ws.closure().expect("closed by the server").code().as_u16()
}

async fn next_text(ws: &mut wsevents::WebSocketStream<wsevents::MaybeTlsStream>) -> String {
    let next = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("nothing within 20 s");
    match next {
        Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn topic_routes_judge_the_token_at_the_handshake_and_each_message_by_publish() {
    let secret = secret_file();
    let serve = Serve::start(&[
        "--jwt-secret-file",
        secret.path(),
        "--anonymous-subscribe",
        "public:*",
    ]);
    let log = serve.log();
    assert!(!log.contains("every client may"), "{log}");
    let topic = |path: &str| serve.url(&format!("/topic/{path}"));
    // Anonymous: public:* only.
    assert_eq!(refused_with(&topic("news")).await, Some(403));
    assert_eq!(refused_with(&topic("public:x")).await, None);
    assert_eq!(refused_with(&serve.url("/chat")).await, Some(403));
    // A bad token: 401, whatever the topic.
    assert_eq!(
        refused_with(&topic("public:x?token=not.a.token")).await,
        Some(401)
    );
    let expired = hs256(&json!({"sub": "a", "exp": now() - 60, "subscribe": ["*"]}));
    assert_eq!(
        refused_with(&topic(&format!("news?token={expired}"))).await,
        Some(401)
    );
    // A reader and a writer of news.
    let reader = hs256(&claims("reader", &["news"], &[]));
    let writer = hs256(&claims("writer", &["news"], &["news"]));
    let mut reads = open(&topic(&format!("news?token={reader}"))).await;
    let mut writes = ClientBuilder::new(&topic("news"))
        .unwrap()
        .header("Authorization", format!("Bearer {writer}"))
        .connect()
        .await
        .unwrap();
    // The reader is subscribed a moment after its handshake: the writer says hello
    // until it hears it (each hello comes back to the writer too).
    let mut said = 0;
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            writes.send(Message::text("hello")).await.unwrap();
            said += 1;
            if let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(100), reads.next()).await
            {
                return text.as_str().to_owned();
            }
        }
    })
    .await
    .expect("the reader heard nothing within 20 s");
    assert_eq!(heard, "hello");
    for _ in 0..said {
        assert_eq!(next_text(&mut writes).await, "hello");
    }
    // The reader may not publish: closed with 1008, nothing published.
    reads.send(Message::text("rogue")).await.unwrap();
    assert_eq!(closed_with(&mut reads).await, 1008);
    writes.send(Message::text("after")).await.unwrap();
    assert_eq!(next_text(&mut writes).await, "after", "not rogue first");
    // /pubsub: a bad handshake token is a 401 too.
    let pubsub = ClientBuilder::new(&serve.url("/pubsub"))
        .unwrap()
        .protocols(&["wsevents.v1"])
        .unwrap()
        .header("Authorization", "Bearer nope")
        .connect()
        .await;
    match pubsub {
        Err(wsevents::Error::Handshake(HandshakeError::UnexpectedStatus { status, .. })) => {
            assert_eq!(status, 401);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn without_auth_flags_everyone_may_do_everything_and_the_log_says_so() {
    let serve = Serve::start(&[]);
    let mut a = open(&serve.url("/topic/news")).await;
    a.send(Message::text("anyone")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "anyone");
    let output = serve.log();
    assert!(
        output.contains("every client may subscribe and publish anywhere"),
        "{output}"
    );
}

#[tokio::test]
async fn an_es256_public_key_verifies_and_a_token_expiring_on_a_topic_route_closes_it() {
    let key = EsKey::generate();
    let pem = TempFile::new("es256.pem", key.public_pem.as_bytes());
    let serve = Serve::start(&[
        "--jwt-public-key",
        pem.path(),
        "--jwt-expiry-grace",
        "0",
        "--jwt-audience",
        "tests",
    ]);
    // With a JWT option and no anonymous rules, anonymous connections may do nothing.
    assert_eq!(refused_with(&serve.url("/topic/x")).await, Some(403));
    let mut good = claims("es", &["news"], &["news"]);
    good["aud"] = json!("tests");
    let token = key.sign(None, &good);
    let mut ws = open(&serve.url(&format!("/topic/news?token={token}"))).await;
    ws.send(Message::text("signed")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "signed");
    // Another audience: 401.
    let mut other = good.clone();
    other["aud"] = json!("someone-else");
    let url = serve.url(&format!("/topic/news?token={}", key.sign(None, &other)));
    assert_eq!(refused_with(&url).await, Some(401));
    // Expiring in a second: closed with 4003 then.
    let mut short = good.clone();
    short["exp"] = json!(now() + 1);
    let url = serve.url(&format!("/topic/news?token={}", key.sign(None, &short)));
    let mut expiring = open(&url).await;
    assert_eq!(closed_with(&mut expiring).await, 4003);
}

/// `wsevents serve ARGS`'s exit code and standard error, for arguments it refuses.
fn refused(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_auth_flags_and_files_are_usage_errors() {
    let short = TempFile::new("short", b"too short\n");
    let private = TempFile::new(
        "private.pem",
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
            .as_bytes(),
    );
    let garbage = TempFile::new("garbage.pem", b"-----BEGIN PUBLIC KEY-----\nnope\n");
    for (args, says) in [
        (
            vec!["--jwt-secret-file", "/nonexistent/secret"],
            "--jwt-secret-file /nonexistent/secret",
        ),
        (vec!["--jwt-secret-file", short.path()], "at least 32 bytes"),
        (vec!["--jwt-public-key", private.path()], "private key"),
        (vec!["--jwt-public-key", garbage.path()], "not a PEM"),
        (vec!["--anonymous-subscribe", "a*b"], "`*` may only end"),
        (vec!["--anonymous-publish", ""], "not empty"),
        (vec!["--jwt-audience", "x"], "--jwt-secret-file"),
    ] {
        let (code, stderr) = refused(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `wsevents ARGS`, to its end: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn sub_and_pub_take_a_token_or_a_token_file() {
    let secret = secret_file();
    let serve = Serve::start(&["--jwt-secret-file", secret.path()]);
    let url = serve.url("/pubsub");
    let reader = hs256(&claims("reader", &["news"], &[]));
    let writer = TempFile::new(
        "token",
        format!("{}\n", hs256(&claims("writer", &[], &["news"]))).as_bytes(),
    );
    let sub = Command::new(BIN)
        .args(["sub", &url, "news", "-n", "1", "--token", &reader])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it is subscribed (its note on stderr), publish.
    let mut sub = sub;
    let stderr = sub.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let note = lines.next().unwrap().unwrap();
    assert!(note.starts_with("wsevents: subscribed news"), "{note}");
    let (code, _, stderr) = run(&["pub", &url, "news", "hello", "--token-file", writer.path()]);
    assert_eq!(code, 0, "{stderr}");
    let output = sub.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");

    // The reader may not publish: that publish fails (exit 1), told why.
    let (code, _, stderr) = run(&["pub", &url, "news", "x", "--token", &reader]);
    assert_eq!(code, 1);
    assert!(stderr.contains("forbidden"), "{stderr}");
    // No token, where anonymous connections may do nothing: forbidden too.
    let (code, _, stderr) = run(&["pub", &url, "news", "x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("forbidden"), "{stderr}");
    // A bad token: refused, closed for good (4001), not retried.
    let (code, _, stderr) = run(&["sub", &url, "news", "--token", "bad.to.ken"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("4001"), "{stderr}");
    // A token file that cannot be read: a usage error.
    let (code, _, stderr) = run(&["pub", &url, "news", "x", "--token-file", "/nonexistent/t"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--token-file /nonexistent/t"), "{stderr}");
}
