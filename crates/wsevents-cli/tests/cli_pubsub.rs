//! `wsevents sub` and `wsevents pub` against `wsevents serve`'s `/pubsub` (children on
//! free 127.0.0.1 ports): publish lines, receive them with their positions, start from
//! a position, ride out a killed server onto another one (on one Redis, recovering
//! what was missed), and stop at once on a refusal that is final.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{BIN, Redis, Serve};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A `wsevents sub` or `pub` child whose stdout and stderr lines are collected as they
/// come; killed on drop.
struct Client {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn spawn(args: &[&str], stdin: Option<&str>) -> Client {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let input = input.to_owned();
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Client {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until `f` holds for (stdout, stderr).
    fn until(&self, what: &str, f: impl Fn(&[String], &[String]) -> bool) {
        let start = Instant::now();
        while !f(&self.stdout(), &self.stderr()) {
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}: stdout {:?}, stderr {:?}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its exit code, waiting at most [`TIMEOUT`].
    fn exit_code(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader threads may be a moment behind the exit.
                std::thread::sleep(Duration::from_millis(50));
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "still running: stdout {:?}, stderr {:?}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            out.lock().unwrap().push(line);
        }
    });
    lines
}

fn subscribed(stderr: &[String]) -> usize {
    stderr
        .iter()
        .filter(|l| l.starts_with("wsevents: subscribed "))
        .count()
}

/// `wsevents pub URL TOPIC` of `lines`, which must exit 0; its --positions output.
fn publish(url: &str, topic: &str, lines: &[String], extra: &[&str]) -> Vec<String> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut args = vec!["pub", url, topic, "--positions"];
    args.extend_from_slice(extra);
    let mut publisher = Client::spawn(&args, Some(&input));
    assert_eq!(publisher.exit_code(), 0, "{:?}", publisher.stderr());
    publisher.stdout()
}

/// (epoch, offset) of `EPOCH:OFFSET`.
fn position(text: &str) -> (String, u64) {
    let (epoch, offset) = text.split_once(':').unwrap();
    (epoch.to_owned(), offset.parse().unwrap())
}

#[test]
fn sub_prints_what_pub_publishes_with_positions() {
    let serve = Serve::start(&[]);
    let url = serve.url("/pubsub");
    let mut sub = Client::spawn(&["sub", &url, "news", "--positions", "-n", "3"], None);
    sub.until("subscribed", |_, err| subscribed(err) == 1);
    assert!(
        sub.stderr()[0].ends_with(" recovered false"),
        "{:?}",
        sub.stderr()
    );
    let lines: Vec<String> = ["one", "two words", "three"].map(String::from).into();
    let positions = publish(&url, "news", &lines, &[]);
    assert_eq!(positions.len(), 3);
    let (epoch, first) = position(&positions[0]);
    assert_eq!(first, 1);
    assert_eq!(sub.exit_code(), 0, "{:?}", sub.stderr());
    assert_eq!(
        sub.stdout(),
        [
            format!("{epoch}:1 one"),
            format!("{epoch}:2 two words"),
            format!("{epoch}:3 three"),
        ]
    );
    // One MESSAGE on the command line; plain output without --positions.
    let mut sub = Client::spawn(&["sub", &url, "news", "-n", "1"], None);
    sub.until("subscribed", |_, err| subscribed(err) == 1);
    let mut one = Client::spawn(&["pub", &url, "news", "single"], None);
    assert_eq!(one.exit_code(), 0, "{:?}", one.stderr());
    assert_eq!(sub.exit_code(), 0);
    assert_eq!(sub.stdout(), ["single"]);
}

#[test]
fn sub_since_a_position_gets_what_was_published_after_it() {
    let serve = Serve::start(&[]);
    let url = serve.url("/pubsub");
    let lines: Vec<String> = (1..=5).map(|i| format!("m{i}")).collect();
    // One at a time, each waiting for its answer.
    let positions = publish(&url, "t", &lines, &["--pipeline", "1"]);
    let offsets: Vec<u64> = positions.iter().map(|p| position(p).1).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5]);
    let (epoch, _) = position(&positions[0]);
    let since = format!("{epoch}:3");
    let mut sub = Client::spawn(&["sub", &url, "t", "--since", &since, "-n", "2"], None);
    assert_eq!(sub.exit_code(), 0, "{:?}", sub.stderr());
    assert_eq!(sub.stdout(), ["m4", "m5"]);
    assert!(
        sub.stderr()[0].ends_with(" recovered true"),
        "{:?}",
        sub.stderr()
    );
    // From an epoch the server never had: told, and given nothing of the past.
    let mut sub = Client::spawn(&["sub", &url, "t", "--since", "gone:3", "-n", "1"], None);
    sub.until("subscribed", |_, err| subscribed(err) == 1);
    assert!(
        sub.stderr()[0].ends_with(" recovered false"),
        "{:?}",
        sub.stderr()
    );
    publish(&url, "t", &["m6".to_owned()], &[]);
    assert_eq!(sub.exit_code(), 0);
    assert_eq!(sub.stdout(), ["m6"]);
}

#[test]
fn sub_rides_out_a_killed_server_onto_another_on_the_same_redis() {
    let redis = Redis::start();
    let redis_url = redis.url();
    let mut a = Serve::start(&["--redis", &redis_url]);
    let b = Serve::start(&["--redis", &redis_url]);
    let (url_a, url_b) = (a.url("/pubsub"), b.url("/pubsub"));
    let sub = Client::spawn(
        &[
            "sub",
            &url_a,
            "news",
            "--server",
            &url_b,
            "--positions",
            "--max-delay",
            "0.2",
        ],
        None,
    );
    sub.until("subscribed", |_, err| subscribed(err) == 1);
    let first: Vec<String> = (1..=5).map(|i| format!("message {i}")).collect();
    publish(&url_b, "news", &first, &[]);
    sub.until("five", |out, _| out.len() == 5);

    // SIGKILL: no close frame, the connection just ends.
    let _ = a.child.kill();
    let _ = a.child.wait();
    sub.until("the loss", |_, err| {
        err.iter()
            .any(|l| l.contains("lost") && l.contains("reconnecting"))
    });
    let second: Vec<String> = (6..=10).map(|i| format!("message {i}")).collect();
    publish(&url_b, "news", &second, &[]);
    sub.until("ten", |out, _| out.len() >= 10);
    std::thread::sleep(Duration::from_millis(200));
    let out = sub.stdout();
    let data: Vec<&str> = out.iter().map(|l| l.split_once(' ').unwrap().1).collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("message {i}")).collect();
    assert_eq!(data, expected, "once each, in order: {:?}", sub.stderr());
    let offsets: Vec<u64> = out
        .iter()
        .map(|l| position(l.split_once(' ').unwrap().0).1)
        .collect();
    assert_eq!(offsets, (1..=10).collect::<Vec<u64>>());
    let err = sub.stderr();
    assert!(err.iter().any(|l| l.contains("reconnected to")), "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.starts_with("wsevents: subscribed news") && l.ends_with("recovered true")),
        "{err:?}"
    );
    drop(b);
}

#[test]
fn pub_delivers_every_line_once_across_a_killed_server() {
    let redis = Redis::start();
    let redis_url = redis.url();
    let mut a = Serve::start(&["--redis", &redis_url]);
    let b = Serve::start(&["--redis", &redis_url]);
    let (url_a, url_b) = (a.url("/pubsub"), b.url("/pubsub"));
    let mut sub = Client::spawn(&["sub", &url_b, "log", "-n", "400"], None);
    sub.until("subscribed", |_, err| subscribed(err) == 1);
    // A publisher on A, killed under it halfway: it carries on through B.
    let lines: String = (1..=400).map(|i| format!("line {i}\n")).collect();
    let mut publisher = Command::new(BIN)
        .args([
            "pub",
            &url_a,
            "log",
            "--server",
            &url_b,
            "--max-delay",
            "0.2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let (head, tail) = lines.split_at(lines.find("line 201\n").unwrap());
    stdin.write_all(head.as_bytes()).unwrap();
    stdin.flush().unwrap();
    sub.until("some lines", |out, _| out.len() >= 50);
    let _ = a.child.kill();
    let _ = a.child.wait();
    stdin.write_all(tail.as_bytes()).unwrap();
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = publisher.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < TIMEOUT, "pub still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert_eq!(sub.exit_code(), 0, "{:?}", sub.stderr());
    let expected: Vec<String> = (1..=400).map(|i| format!("line {i}")).collect();
    assert_eq!(sub.stdout(), expected);
    drop(b);
}

#[test]
fn sub_stops_at_once_on_a_final_refusal() {
    let serve = Serve::start(&[]);
    // Not an endpoint: 404, a refusal that will not change.
    let url = serve.url("/nowhere");
    let started = Instant::now();
    let mut sub = Client::spawn(&["sub", &url, "news"], None);
    assert_eq!(sub.exit_code(), 1);
    // Not the close timeout (5 s) spent waiting for the server to end its connection.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let err = sub.stderr();
    assert!(err.iter().any(|l| l.contains("404")), "{err:?}");
    assert!(err.last().unwrap().contains("closed for good"), "{err:?}");
}
