//! wsevents.v1 with real processes (issue 15): `wsevents serve` nodes on a real Redis,
//! `wsevents sub` and `wsevents pub` as the clients, and failures made for real: a
//! subscriber's server killed with SIGKILL at a random moment while 10,000 numbered
//! messages are published at a steady rate, Redis killed and restarted (without its
//! data) under a publisher, a subscriber away longer than the history, a recovery
//! followed by live publications. Each test prints its figures (`--nocapture`).
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{BIN, Redis, Serve};

/// A `wsevents sub` or `pub` child whose output lines are collected as they come
/// (stdout and stderr apart, each with the time it arrived); killed on drop.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
}

type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

impl Client {
    fn start(args: &[&str]) -> Client {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    fn out(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    fn err(&self) -> Vec<(Instant, String)> {
        self.stderr.lock().unwrap().clone()
    }

    /// Until stdout has `n` lines (or `within` passed).
    fn wait_lines(&self, n: usize, within: Duration) -> Vec<String> {
        let started = Instant::now();
        while self.stdout.lock().unwrap().len() < n && started.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.out()
    }

    /// Until stderr has a line containing `what`.
    fn wait_err(&self, what: &str, within: Duration) -> Option<(Instant, String)> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(line) = self.err().into_iter().find(|(_, l)| l.contains(what)) {
                return Some(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Close stdin and wait for the exit (at most `within`); the exit code.
    fn finish(&mut self, within: Duration) -> Option<i32> {
        drop(self.stdin.take());
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let into = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push((Instant::now(), line));
        }
    });
    lines
}

/// `EPOCH:OFFSET DATA` (the `--positions` format) as (epoch, offset, data).
fn parse(line: &str) -> (String, u64, String) {
    let (position, data) = line.split_once(' ').unwrap_or((line, ""));
    let (epoch, offset) = position
        .split_once(':')
        .unwrap_or_else(|| panic!("not EPOCH:OFFSET DATA: {line:?}"));
    (epoch.to_owned(), offset.parse().unwrap(), data.to_owned())
}

/// The position of a `wsevents: subscribed TOPIC at EPOCH:OFFSET recovered B` notice.
fn notice_position(line: &str) -> (String, u64) {
    let position = line
        .split_whitespace()
        .skip_while(|w| *w != "at")
        .nth(1)
        .unwrap_or_else(|| panic!("not a subscribed notice: {line:?}"));
    let (epoch, offset, _) = parse(position);
    (epoch, offset)
}

/// Publish `1..=count` through `publisher`'s stdin at `rate` per second (in batches
/// every 5 ms); calls `during(i)` after each batch.
fn publish_numbers(publisher: &mut Client, count: u64, rate: u64, mut during: impl FnMut(u64)) {
    let per_batch = (rate / 200).max(1);
    let stdin = publisher.stdin.as_mut().unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < count {
        let mut batch = String::new();
        for _ in 0..per_batch.min(count - i) {
            i += 1;
            batch += &format!("{i}\n");
        }
        stdin.write_all(batch.as_bytes()).unwrap();
        stdin.flush().unwrap();
        during(i);
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// A moment from the clock's low bits: random enough to move the kill around from run
/// to run, printed so that a failing run can be told apart.
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos) % n
}

async fn until_subscribed(redis: &Redis, channel: &str, n: u64) {
    let started = Instant::now();
    while redis.numsub(channel).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{channel}: never {n} subscribers in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 10,000 numbered messages at 2,000/s through server B; the subscriber is on server A,
/// which is killed with SIGKILL at a random moment; it reconnects to B and recovers:
/// every message once, in order, at contiguous positions of one epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_rides_out_its_server_killed_with_sigkill() {
    const COUNT: u64 = 10_000;
    const RATE: u64 = 2_000;
    let redis = Redis::start();
    assert_eq!(redis.numsub("wsevents:chaos").await, 0);
    // Thousands of publishes a second on one connection: no publish rate
    // (cli_limits.rs tests it).
    let mut a = Serve::start(&["--redis", &redis.url(), "--publish-rate", "0"]);
    let b = Serve::start(&["--redis", &redis.url(), "--publish-rate", "0"]);
    let sub = Client::start(&[
        "sub",
        &a.url("/pubsub"),
        "chaos",
        "--server",
        &b.url("/pubsub"),
        "--positions",
    ]);
    until_subscribed(&redis, "wsevents:chaos", 1).await;
    let mut publisher = Client::start(&["pub", &b.url("/pubsub"), "chaos"]);
    let kill_at = COUNT / 10 + random_below(COUNT * 7 / 10);
    let mut killed = None;
    publish_numbers(&mut publisher, COUNT, RATE, |i| {
        if killed.is_none() && i >= kill_at {
            a.child.kill().unwrap();
            killed = Some((Instant::now(), i));
        }
    });
    let (killed_at, killed_after) = killed.unwrap();
    assert_eq!(
        publisher.finish(Duration::from_secs(60)),
        Some(0),
        "pub: {:?}",
        publisher.err()
    );
    let lines = sub.wait_lines(COUNT as usize, Duration::from_secs(60));
    let parsed: Vec<_> = lines.iter().map(|l| parse(l)).collect();
    let numbers: Vec<u64> = parsed.iter().map(|(_, _, n)| n.parse().unwrap()).collect();
    let expected: Vec<u64> = (1..=COUNT).collect();
    let lost = expected.iter().filter(|n| !numbers.contains(n)).count();
    let duplicated = numbers.len() - {
        let mut unique = numbers.clone();
        unique.dedup();
        unique.len()
    };
    assert_eq!(
        numbers,
        expected,
        "lost {lost}, duplicated {duplicated}; stderr {:?}",
        sub.err()
    );
    let epoch = &parsed[0].0;
    assert!(parsed.iter().all(|(e, _, _)| e == epoch), "one epoch");
    let first = parsed[0].1;
    assert!(
        parsed
            .iter()
            .enumerate()
            .all(|(i, (_, o, _))| *o == first + i as u64),
        "contiguous offsets"
    );
    let back = sub
        .err()
        .into_iter()
        .find(|(t, l)| *t > killed_at && l.contains("recovered"));
    let reconnect = back.as_ref().map(|(t, _)| t.duration_since(killed_at));
    assert!(
        back.as_ref()
            .is_some_and(|(_, l)| l.contains("recovered true")),
        "the resubscription after the kill: {back:?}"
    );
    println!(
        "chaos sigkill: {COUNT} published at {RATE}/s; serve A killed after message {killed_after}; \
         the subscriber got {} (0 lost, 0 duplicated, in order, one epoch); back {:?} after the kill: {:?}",
        numbers.len(),
        reconnect,
        back.map(|(_, l)| l)
    );
}

/// Redis killed and restarted without its data while a publisher publishes through
/// the subscriber's own server: the publisher retries refused publishes until they
/// are stored; the subscriber's output is true to what it was told: within an epoch
/// every publication once, in order; an epoch change only with a `recovered false`
/// notice; and what it received after the notice is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_under_publishers_every_subscriber_is_told_the_truth() {
    const COUNT: u64 = 4_000;
    const RATE: u64 = 1_000;
    let mut redis = Redis::start();
    assert_eq!(redis.numsub("wsevents:news").await, 0);
    // A thousand publishes a second on one connection: no publish rate.
    let a = Serve::start(&["--redis", &redis.url(), "--publish-rate", "0"]);
    let sub = Client::start(&["sub", &a.url("/pubsub"), "news", "--positions"]);
    until_subscribed(&redis, "wsevents:news", 1).await;
    let mut publisher = Client::start(&["pub", &a.url("/pubsub"), "news"]);
    let mut down: Option<Instant> = None;
    let mut downtime = None;
    publish_numbers(&mut publisher, COUNT, RATE, |i| {
        if i == COUNT / 4 {
            redis.kill();
            down = Some(Instant::now());
        }
        if i == COUNT / 2 {
            redis.restart();
            downtime = down.map(|d| d.elapsed());
        }
    });
    assert_eq!(
        publisher.finish(Duration::from_secs(90)),
        Some(0),
        "pub: {:?}",
        publisher.err()
    );
    // Everything is stored. The topic's last position, as a new subscriber is told it:
    let probe = Client::start(&["sub", &a.url("/pubsub"), "news", "--positions"]);
    let top = notice_position(
        &probe
            .wait_err("subscribed", Duration::from_secs(20))
            .expect("a new subscriber is told the position")
            .1,
    );
    drop(probe);
    // The subscriber gets there: its last line is the last publication, or (when its
    // server's subscription to Redis came back only after the publisher was done, and
    // its catch-up showed it the new epoch) it was told `recovered false` at it.
    let started = Instant::now();
    loop {
        let last_line = sub.out().last().map(|l| parse(l));
        let at_top = last_line
            .as_ref()
            .is_some_and(|(e, o, n)| (e, *o) == (&top.0, top.1) && *n == COUNT.to_string());
        let told_top = sub
            .err()
            .iter()
            .rev()
            .find(|(_, l)| l.contains("subscribed"))
            .is_some_and(|(_, l)| notice_position(l) == top);
        if at_top || told_top {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the subscriber never got to {top:?}: its last line {:?}; its stderr: {:?}; serve's log: {}",
            sub.out().last(),
            sub.err(),
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let parsed: Vec<_> = sub.out().iter().map(|l| parse(l)).collect();
    let mut epochs = 1;
    for pair in parsed.windows(2) {
        let ((e1, o1, _), (e2, o2, _)) = (&pair[0], &pair[1]);
        if e1 == e2 {
            assert_eq!(*o2, o1 + 1, "a hole within an epoch");
        } else {
            epochs += 1;
        }
    }
    // No repeat within an epoch. (The order of one publisher's messages is kept except
    // for those it had to retry: a retry is stored when it succeeds.)
    for epoch in parsed
        .iter()
        .map(|(e, _, _)| e)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let mut numbers: Vec<&String> = parsed
            .iter()
            .filter(|(e, _, _)| e == epoch)
            .map(|(_, _, n)| n)
            .collect();
        let all = numbers.len();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), all, "a message twice in epoch {epoch}");
    }
    // Redis lost its data once: one new epoch (printed, or only told, when the
    // subscriber got to it after the publisher was done).
    if parsed.last().is_some_and(|(e, _, _)| *e != top.0) {
        epochs += 1;
    }
    assert_eq!(epochs, 2, "Redis lost its data once: one new epoch");
    let told = sub
        .err()
        .iter()
        .filter(|(_, l)| l.contains("recovered") && l.contains("false"))
        .count();
    assert!(
        told >= 1,
        "an epoch change without being told: {:?}",
        sub.err()
    );
    // After the change, what it printed of the new epoch is complete up to the end.
    let new_epoch = &top.0;
    let in_new: Vec<&(String, u64, String)> =
        parsed.iter().filter(|(e, _, _)| e == new_epoch).collect();
    if let Some(last) = in_new.last() {
        assert_eq!(last.1, top.1, "the new epoch to its end");
    }
    let last_offset = top.1;
    let received = parsed.len();
    let missed = (COUNT as usize).saturating_sub(received);
    // A fresh subscriber from a position of the old epoch: told false; from the new
    // epoch's start: told true, and given all of it.
    let (old_epoch, old_offset, _) = &parsed[0];
    let stale = Client::start(&[
        "sub",
        &a.url("/pubsub"),
        "news",
        "--positions",
        "--since",
        &format!("{old_epoch}:{old_offset}"),
    ]);
    let told_stale = stale
        .wait_err("recovered", Duration::from_secs(20))
        .unwrap()
        .1;
    assert!(told_stale.contains("false"), "{told_stale}");
    let fresh = Client::start(&[
        "sub",
        &a.url("/pubsub"),
        "news",
        "--positions",
        "--since",
        &format!("{new_epoch}:0"),
    ]);
    let recovered = fresh.wait_lines(last_offset as usize, Duration::from_secs(20));
    let told_fresh = fresh
        .wait_err("recovered", Duration::from_secs(5))
        .unwrap()
        .1;
    assert!(told_fresh.contains("true"), "{told_fresh}");
    assert_eq!(recovered.len(), last_offset as usize);
    assert!(
        recovered
            .iter()
            .enumerate()
            .all(|(i, l)| parse(l).1 == i as u64 + 1)
    );
    println!(
        "chaos redis restart: {COUNT} published at {RATE}/s, Redis down from message {} to {} ({:?}); \
         the subscriber got {received} in 2 epochs ({missed} published between the restart and its \
         resubscription, told recovered false); new epoch complete to offset {last_offset}; \
         a subscriber from the old epoch told false, one from the new epoch's start recovered {}",
        COUNT / 4,
        COUNT / 2,
        downtime.unwrap_or_default(),
        recovered.len()
    );
}

/// Away longer than the history: `recovered false`, nothing of what it missed, then
/// live; within it: everything after its position, then live, no gap, no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_past_the_history_nothing_within_it_everything_then_live() {
    let a = Serve::start(&["--history-size", "100"]);
    let mut publisher = Client::start(&["pub", &a.url("/pubsub"), "t"]);
    publish_numbers(&mut publisher, 500, 5_000, |_| {});
    assert_eq!(publisher.finish(Duration::from_secs(30)), Some(0));
    // The epoch, from a subscriber that starts now.
    let probe = Client::start(&["sub", &a.url("/pubsub"), "t", "--positions"]);
    let told = probe
        .wait_err("recovered", Duration::from_secs(20))
        .unwrap()
        .1;
    let epoch = told
        .split_whitespace()
        .find_map(|w| {
            w.split_once(':')
                .filter(|(e, o)| o.parse::<u64>().is_ok() && !e.is_empty())
                .map(|(e, _)| e.to_owned())
        })
        .unwrap_or_else(|| panic!("no EPOCH:OFFSET in {told:?}"));
    drop(probe);
    let far = Client::start(&[
        "sub",
        &a.url("/pubsub"),
        "t",
        "--positions",
        "--since",
        &format!("{epoch}:1"),
    ]);
    let near = Client::start(&[
        "sub",
        &a.url("/pubsub"),
        "t",
        "--positions",
        "--since",
        &format!("{epoch}:450"),
    ]);
    assert!(
        far.wait_err("recovered", Duration::from_secs(20))
            .unwrap()
            .1
            .contains("false")
    );
    assert!(
        near.wait_err("recovered", Duration::from_secs(20))
            .unwrap()
            .1
            .contains("true")
    );
    let mut live = Client::start(&["pub", &a.url("/pubsub"), "t"]);
    publish_numbers(&mut live, 20, 1_000, |_| {});
    assert_eq!(live.finish(Duration::from_secs(30)), Some(0));
    let far_lines = far.wait_lines(20, Duration::from_secs(20));
    assert_eq!(
        far_lines.iter().map(|l| parse(l).1).collect::<Vec<_>>(),
        (501..=520).collect::<Vec<_>>(),
        "nothing partial, then live"
    );
    let near_lines = near.wait_lines(70, Duration::from_secs(20));
    assert_eq!(
        near_lines.iter().map(|l| parse(l).1).collect::<Vec<_>>(),
        (451..=520).collect::<Vec<_>>(),
        "the seam"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(near.out().len(), 70, "no repeat");
    println!(
        "chaos window: history 100 of 500; from 1: recovered false, then the 20 live; from 450: 50 recovered + 20 live, contiguous"
    );
}

/// `/pubsub` answers wsevents.v1 to a client that offers it, and 400 to one that does
/// not.
#[tokio::test]
async fn pubsub_speaks_its_subprotocol_only() {
    let a = Serve::start(&[]);
    let ws = wsevents::ClientBuilder::new(&a.url("/pubsub"))
        .unwrap()
        .protocols(&["wsevents.v1"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("wsevents.v1"));
    match wsevents::connect(&a.url("/pubsub")).await {
        Err(e) => assert!(e.to_string().contains("400"), "{e}"),
        Ok(_) => panic!("accepted without wsevents.v1"),
    }
}
