//! The load of `bench/fanout` and `bench/topics`: the publishers and N subscribers in
//! one process, on one thread (so it needs one core and shares nothing through
//! atomics). `bench/fanout` runs one publisher and one topic; `bench/topics` runs
//! `--topics T` topics and `--publishers P` publishers: subscriber `i` subscribes to
//! topic `i % T`, and publisher `p` publishes to topics `p`, `p + P`, `p + 2P`, ...,
//! one message to each in turn.
//!
//! Subscribers are raw TCP connections after a hand-written opening handshake: a
//! subscriber's task waits for its socket to be readable, reads everything there into
//! a buffer shared by all (a connection keeps only a partial frame of its own), and
//! walks the frames: it counts each one and reads the sequence number, the publish
//! time, the topic and the publisher from its first 20 bytes ([`STAMP`]), and checks
//! them: a message of another topic or publisher, or one older than one already
//! received, is an error; a gap in the sequence (per topic) is counted as skipped, a
//! message lost. One clock read per read serves every frame in it.
//! No allocation, no UTF-8 check, no copy of a payload: the work per delivery is a few
//! dozen instructions beside the `recv`, so that the server, not this tool, is what
//! runs out of CPU first (the report has both CPU times to check).
//!
//! A publisher is a WebSocket client on `--pub` (masked frames, as RFC 6455 requires,
//! with the all-zero key so the payload goes out as it is) and runs a closed loop with
//! bounded outstanding per topic, counted in deliveries: for a topic with N
//! subscribers, at most `--window` × N deliveries are in flight (published, and
//! neither received nor skipped by their subscriber; a subscriber that receives `m`
//! after `h` skipped the ones between, as a lagging broadcast receiver does). Counting deliveries rather than waiting for each message
//! to reach everyone keeps the pipeline full whatever order the server serves its
//! subscribers in (a server that sends a subscriber all it has before the next one
//! would otherwise run in lock-step batches), so the server always has about
//! `--window` messages per subscriber to send and nothing piles up that it would have
//! to drop. `--rate R` runs it open loop instead: R messages a second per topic, each stamped
//! with its scheduled time (so a server that falls behind shows it in the latency, not
//! by slowing the publisher down) and sent on the first 1 ms tick at or after it
//! (tokio's timer granularity: up to 1 ms of such a latency is the schedule's).
//!
//! Latency is publish-to-delivery: from the publisher's time stamp (taken just before
//! the write) to the subscriber's read, both on this process's monotonic clock, in an
//! HDR histogram of microseconds. A warm-up (until every subscriber has received a
//! message, and at least `--warmup` seconds) is excluded; then the counters restart
//! for `--duration` seconds, and the CPU times of this process and of every
//! `--server-pid` are taken over that window. With `--drain S`, the publishers then
//! stop and the tool waits up to S seconds for every message published to reach every
//! subscriber of its topic: what is still missing then (`undelivered_after_drain`), a
//! message lost at the end of a topic's stream with nothing after it to show the gap,
//! is reported beside the gaps of the whole run (`skipped_whole_run`).
//!
//! ```text
//! fanout-load --pub ws://127.0.0.1:PORT/pub --sub ws://127.0.0.1:PORT/sub \
//!     -n 10000 -s 20 --window 64 --warmup 1 --duration 3 --server-pid PID
//! ```
//! `--sub` may be given several times: subscribers are spread over the URLs in turn.
//! `{topic}` in a URL is replaced by the subscriber's topic number:
//!
//! ```text
//! fanout-load --pub ws://127.0.0.1:PORT/pub/tagged --sub 'ws://127.0.0.1:PORT/sub/{topic}' \
//!     --topics 64 --publishers 8 -n 1000 -s 20 --window 64 --drain 30 --server-pid PID
//! ```
//! `--pub` may be given several times too: publisher `p` uses URL `p % N`. With
//! `--pub-v1` the publishers speak wsevents.v1 (a server's `/pubsub`, e.g.
//! `wsevents serve`): each message is a `publish` request to the topic's name (its
//! number), the payload base64 with `"binary": true`, so that subscribers of plain
//! topic routes (`/topic/{topic}`) receive the payload's bytes. The answers are read,
//! one frame each: a refused publish is counted by its error code
//! (`refused_by_server`; it also shows as a gap in its topic), and a publisher keeps at
//! most `--max-unanswered` publishes unanswered ([`MAX_UNANSWERED`], 1,024, by
//! default), as wsevents' clients do (the server
//! refuses past it, `too_many_requests`): the window counts deliveries, and on Redis a
//! subscriber may get a publication before its publisher gets the answer (it comes
//! back on the channel before the store's pipeline is answered), so the window alone
//! does not bound what waits for an answer.
//!
//! Prints one JSON object.

use std::cell::RefCell;
use std::error::Error;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// At the start of every payload, little-endian: the sequence number within the topic
/// (`u64`), the publish time (`u64`, nanoseconds on this process's clock), the topic
/// (`u16`, what the servers' `/pub/tagged` path reads) and the publisher (`u16`).
const STAMP: usize = 20;

/// The most publishes a `--pub-v1` publisher leaves unanswered by default
/// (`--max-unanswered`): a wsevents.v1 server's `MAX_PENDING_PUBLISHES` (1,024), the
/// bound of wsevents' own clients (`wsevents pub --pipeline`, the Rust client's and
/// wsevents.js's `max_queued`). Past it the publisher waits for answers.
const MAX_UNANSWERED: u64 = 1024;

struct Args {
    publish: Vec<String>,
    /// Publish as wsevents.v1 `publish` requests rather than raw binary frames.
    publish_v1: bool,
    subscribe: Vec<String>,
    subscribers: usize,
    size: usize,
    window: u64,
    rate: Option<f64>,
    warmup: f64,
    duration: f64,
    server_pids: Vec<u32>,
    /// After the measured window: stop publishing and wait up to this many seconds
    /// for everything published to be delivered (0: do not wait).
    drain: f64,
    topics: usize,
    publishers: usize,
    /// `--pub-v1`: the most publishes a publisher leaves unanswered.
    max_unanswered: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        publish: Vec::new(),
        publish_v1: false,
        subscribe: Vec::new(),
        subscribers: 1000,
        size: 20,
        window: 64,
        rate: None,
        warmup: 1.0,
        duration: 3.0,
        server_pids: Vec::new(),
        drain: 0.0,
        topics: 1,
        publishers: 1,
        max_unanswered: MAX_UNANSWERED,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pub" => args.publish.push(value()?),
            "--pub-v1" => args.publish_v1 = true,
            "--sub" => args.subscribe.push(value()?),
            "-n" | "--subscribers" => args.subscribers = value()?.parse()?,
            "-s" | "--size" => args.size = value()?.parse()?,
            "--window" => args.window = value()?.parse()?,
            "--rate" => args.rate = Some(value()?.parse()?),
            "--warmup" => args.warmup = value()?.parse()?,
            "-d" | "--duration" => args.duration = value()?.parse()?,
            "--server-pid" => args.server_pids.push(value()?.parse()?),
            "--drain" => args.drain = value()?.parse()?,
            "--topics" => args.topics = value()?.parse()?,
            "--publishers" => args.publishers = value()?.parse()?,
            "--max-unanswered" => args.max_unanswered = value()?.parse()?,
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if args.publish.is_empty() || args.subscribe.is_empty() {
        return Err("--pub URL and --sub URL are required".into());
    }
    if args.size < STAMP {
        return Err(format!("--size must be at least {STAMP}").into());
    }
    if args.max_unanswered == 0 {
        return Err("--max-unanswered must be at least 1".into());
    }
    if args.window == 0 {
        return Err("--window must be at least 1".into());
    }
    if args.topics == 0 || args.topics > usize::from(u16::MAX) + 1 {
        return Err("--topics must be from 1 to 65536".into());
    }
    if args.publishers == 0 || args.publishers > args.topics {
        return Err("--publishers must be from 1 to --topics".into());
    }
    if args.subscribers < args.topics {
        return Err("every topic needs a subscriber: -n at least --topics".into());
    }
    Ok(args)
}

/// One topic's closed-loop bookkeeping.
#[derive(Clone, Default)]
struct Topic {
    subscribers: u64,
    /// Messages published to it so far; the next one's sequence number.
    published: u64,
    /// Deliveries accounted for since the start: received, skipped by a subscriber
    /// (it received a later one first), or published before the subscriber's first.
    /// `published * subscribers - accounted` is what is in flight.
    accounted: u64,
    /// Deliveries received in the measured window.
    deliveries: u64,
}

impl Topic {
    /// Deliveries in flight: published to someone and not yet accounted for.
    fn in_flight(&self) -> u64 {
        (self.published * self.subscribers).saturating_sub(self.accounted)
    }

    /// Whether the closed loop may publish another message to it: a whole message's
    /// deliveries (one per subscriber) of room in the window (`window` messages).
    fn has_room(&self, window: u64) -> bool {
        self.in_flight() + self.subscribers <= window * self.subscribers
    }
}

/// What the subscribers and the publishers share (one thread: a `RefCell`).
struct Shared {
    /// Publishes a wsevents.v1 server refused, by error code (`--pub-v1`).
    refused: std::collections::BTreeMap<String, u64>,
    /// Gaps over the whole run, by the subscriber's `--sub` URL (its index).
    skipped_by_sub_url: std::collections::BTreeMap<usize, u64>,
    epoch: Instant,
    subscribers: u64,
    topics: Vec<Topic>,
    /// The closed loop's bound, in messages per topic.
    window: u64,
    /// Per publisher: it has been told that one of its topics has room.
    notified: Vec<bool>,
    /// Per `--pub-v1` publisher: publishes sent and not answered yet.
    unanswered: Vec<u64>,
    /// Per publisher: it stopped at `max_unanswered` and waits for an answer.
    held: Vec<bool>,
    /// `--max-unanswered`.
    max_unanswered: u64,
    /// Subscribers that have received anything.
    started: u64,
    measuring: bool,
    /// The publishers stop (the drain after the measured window).
    stopped: bool,
    deliveries: u64,
    /// Messages a subscriber never got (it received a later one first), in the
    /// measured window, and since the start.
    skipped: u64,
    skipped_all: u64,
    latency: Histogram<u64>,
    /// The same, per `--sub` URL (with several nodes: local and cross-node).
    latency_by_url: Vec<Histogram<u64>>,
    errors: Vec<String>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn published(&self) -> u64 {
        self.topics.iter().map(|t| t.published).sum()
    }

    fn accounted(&self) -> u64 {
        self.topics.iter().map(|t| t.accounted).sum()
    }

    fn in_flight(&self) -> u64 {
        self.topics.iter().map(Topic::in_flight).sum()
    }
}

/// Who a subscriber is: the index of its `--sub` URL, its topic, and the topic's
/// publisher (whose messages are the only ones it may receive).
#[derive(Clone, Copy)]
struct Subscription {
    url: usize,
    topic: usize,
    publisher: usize,
}

fn main() -> Result {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, run(args))?;
    println!("{report}");
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value> {
    let mut topics = vec![Topic::default(); args.topics];
    for i in 0..args.subscribers {
        topics[i % args.topics].subscribers += 1;
    }
    let shared = Rc::new(RefCell::new(Shared {
        refused: Default::default(),
        skipped_by_sub_url: Default::default(),
        epoch: Instant::now(),
        subscribers: args.subscribers as u64,
        topics,
        window: args.window,
        notified: vec![false; args.publishers],
        unanswered: vec![0; args.publishers],
        held: vec![false; args.publishers],
        max_unanswered: args.max_unanswered,
        started: 0,
        measuring: false,
        stopped: false,
        deliveries: 0,
        skipped: 0,
        skipped_all: 0,
        // 1 µs to 100 s, 3 significant digits.
        latency: Histogram::new_with_bounds(1, 100_000_000, 3)?,
        latency_by_url: vec![Histogram::new_with_bounds(1, 100_000_000, 3)?; args.subscribe.len()],
        errors: Vec::new(),
    }));
    // One per publisher: woken when one of its topics has room in the window.
    let progress: Vec<Rc<Notify>> = (0..args.publishers)
        .map(|_| Rc::new(Notify::new()))
        .collect();

    // Connect the subscribers, a few hundred handshakes at a time (listen backlogs
    // are 511 to 1024).
    let connect_start = Instant::now();
    let gate = Rc::new(Semaphore::new(256));
    let mut handshakes = Vec::with_capacity(args.subscribers);
    let args_urls = args.subscribe.len();
    for i in 0..args.subscribers {
        let topic = i % args.topics;
        let subscription = Subscription {
            url: i % args_urls,
            topic,
            publisher: topic % args.publishers,
        };
        let url = args.subscribe[subscription.url].replace("{topic}", &topic.to_string());
        let gate = gate.clone();
        handshakes.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await;
            open(&url, None)
                .await
                .map(|(tcp, rest)| (tcp, rest, subscription))
        }));
    }
    let mut sockets = Vec::with_capacity(args.subscribers);
    for handshake in handshakes {
        sockets.push(handshake.await??);
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    for (tcp, rest, subscription) in sockets {
        let progress = progress[subscription.publisher].clone();
        tokio::task::spawn_local(subscriber(
            tcp,
            rest,
            subscription,
            shared.clone(),
            progress,
        ));
    }

    for (p, progress) in progress.iter().enumerate() {
        let (publisher, rest) = open(
            &args.publish[p % args.publish.len()],
            args.publish_v1.then_some("wsevents.v1"),
        )
        .await?;
        let (pub_read, pub_write) = publisher.into_split();
        tokio::task::spawn_local(drain(pub_read, rest, p, shared.clone(), progress.clone()));
        tokio::task::spawn_local(publish(
            pub_write,
            Publisher {
                id: p,
                topics: (p..args.topics).step_by(args.publishers).collect(),
            },
            args.size,
            args.window,
            args.rate,
            args.publish_v1,
            shared.clone(),
            progress.clone(),
        ));
    }

    // Warm-up: at least `warmup` seconds, and until every subscriber has a message.
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let give_up = Instant::now() + Duration::from_secs_f64(args.warmup + 30.0);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = shared.borrow();
        if let Some(error) = s.errors.first() {
            return Err(error.clone().into());
        }
        if Instant::now() >= warm_until && s.started == s.subscribers {
            break;
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "after {} s only {} of {} subscribers received anything",
                args.warmup + 30.0,
                s.started,
                s.subscribers
            )
            .into());
        }
    }

    // The measured window.
    let cpu_before = cpu_times(&args.server_pids);
    let wait_before = run_queue_waits(&args.server_pids);
    let machine_before = machine_busy();
    let (published_before, accounted_before) = {
        let mut s = shared.borrow_mut();
        s.measuring = true;
        s.deliveries = 0;
        s.skipped = 0;
        s.latency.reset();
        s.latency_by_url.iter_mut().for_each(Histogram::reset);
        s.topics.iter_mut().for_each(|t| t.deliveries = 0);
        (s.published(), s.accounted())
    };
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let mut s = shared.borrow_mut();
    s.measuring = false;
    s.stopped = args.drain > 0.0;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = cpu_times(&args.server_pids);
    let wait_after = run_queue_waits(&args.server_pids);
    let machine = machine_busy() - machine_before;
    let waits: Vec<f64> = wait_after
        .iter()
        .zip(&wait_before)
        .map(|(a, b)| a - b)
        .collect();
    let cpu: Vec<f64> = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| a - b)
        .collect();
    let summary = |l: &Histogram<u64>| {
        serde_json::json!({
            "p50": l.value_at_quantile(0.5), "p90": l.value_at_quantile(0.9),
            "p99": l.value_at_quantile(0.99), "p99_9": l.value_at_quantile(0.999),
            "max": l.max(), "mean": l.mean(), "count": l.len(),
        })
    };
    let by_topic = s.topics.iter().map(|t| t.deliveries);
    let (fewest, most) = (by_topic.clone().min(), by_topic.max());
    let mut report = serde_json::json!({
        "subscribers": args.subscribers,
        "topics": args.topics,
        "publishers": args.publishers,
        "size": args.size,
        "mode": match args.rate { Some(r) => format!("open loop, {r} msg/s per topic"), None => format!("closed loop, window {} per topic", args.window) },
        "connect_s": connect_s,
        "duration_s": seconds,
        "published": s.published() - published_before,
        "accounted": s.accounted() - accounted_before,
        "in_flight_at_end": s.in_flight(),
        "publishes_per_s": (s.published() - published_before) as f64 / seconds,
        "deliveries": s.deliveries,
        // The topics' shares: a server that starves some topics shows it here.
        "deliveries_by_topic": { "min": fewest, "max": most },
        "deliveries_per_s": s.deliveries as f64 / seconds,
        "skipped": s.skipped,
        "latency_us": summary(&s.latency),
        "latency_us_by_sub_url": if s.latency_by_url.len() > 1 {
            s.latency_by_url.iter().map(summary).collect::<Vec<_>>()
        } else {
            Vec::new()
        },
        // [load tool, server pid 1, server pid 2, ...]
        "cpu_s": { "load": cpu[0], "servers": &cpu[1..] },
        // Time runnable but waiting for a CPU (other work on the same core).
        "run_queue_wait_s": { "load": waits[0], "servers": &waits[1..] },
        // CPU time of the whole machine (every core, every process): beyond the load's
        // and the servers', what other work took while this ran.
        "machine_cpu_s": machine,
        "refused_by_server": &s.refused,
        "skipped_by_sub_url": &s.skipped_by_sub_url,
        "errors": s.errors.len(),
        "first_error": s.errors.first(),
    });
    drop(s);
    if args.drain > 0.0 {
        // Everything published is delivered, or counted as skipped, or still in
        // flight when the drain gives up: a message lost at the end of a topic's
        // stream, with nothing after it to show the gap, counts here.
        let drain_start = Instant::now();
        let give_up = drain_start + Duration::from_secs_f64(args.drain);
        while shared.borrow().in_flight() > 0 && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = shared.borrow();
        report["drain_s"] = drain_start.elapsed().as_secs_f64().into();
        report["undelivered_after_drain"] = s.in_flight().into();
        report["skipped_whole_run"] = s.skipped_all.into();
        report["errors"] = s.errors.len().into();
        report["first_error"] = s.errors.first().cloned().into();
    }
    Ok(report)
}

/// Time the threads of this process and of each pid spent runnable but waiting for a
/// CPU, in seconds (the second field of `/proc/PID/task/TID/schedstat`, summed over
/// the threads).
fn run_queue_waits(pids: &[u32]) -> Vec<f64> {
    std::iter::once("self".to_owned())
        .chain(pids.iter().map(u32::to_string))
        .map(|p| {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                return 0.0;
            };
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>() as f64
                / 1e9
        })
        .collect()
}

/// CPU time the whole machine has spent busy since boot, in seconds, summed over the
/// cores (`/proc/stat`'s first line: every field but idle and iowait, in clock ticks
/// of 1/100 s; steal, the time the hypervisor gave to other machines, counts as busy;
/// guest time is already inside user time).
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / 100.0
}

/// utime + stime of this process and of each pid, in seconds (`/proc/PID/stat`,
/// fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_times(pids: &[u32]) -> Vec<f64> {
    std::iter::once("self".to_owned())
        .chain(pids.iter().map(u32::to_string))
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            let f: Vec<&str> = after_name.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (ticks(11) + ticks(12)) as f64 / 100.0
        })
        .collect()
}

/// TCP connect and the opening handshake; returns the socket and any bytes read past
/// the response head.
async fn open(url: &str, protocol: Option<&str>) -> Result<(TcpStream, Vec<u8>)> {
    let rest = url.strip_prefix("ws://").ok_or("ws:// URLs only")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut tcp = TcpStream::connect(host).await?;
    tcp.set_nodelay(true)?;
    let protocol = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    loop {
        tcp.readable().await?;
        let mut buf = [0u8; 4096];
        match tcp.try_read(&mut buf) {
            Ok(0) => return Err("the server closed during the handshake".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
                return Err(format!("handshake refused: {line}").into());
            }
            return Ok((tcp, head.split_off(end + 4)));
        }
    }
}

thread_local! {
    /// One receive buffer for every subscriber of the thread: a read goes here, and
    /// only a partial frame at its end is copied to the connection's own buffer.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 256 * 1024]);
}

/// One subscriber: read, walk the frames, count and time them.
async fn subscriber(
    tcp: TcpStream,
    mut partial: Vec<u8>,
    subscription: Subscription,
    shared: Rc<RefCell<Shared>>,
    progress: Rc<Notify>,
) {
    let mut highest: Option<u64> = None;
    let mut pongs: Vec<u8> = Vec::new();
    let result: Result = async {
        // Bytes read past the handshake's response: walk them first.
        let data = std::mem::take(&mut partial);
        let used = walk(
            &data,
            subscription,
            &shared,
            &progress,
            &mut highest,
            &mut pongs,
        )?;
        partial.extend_from_slice(&data[used..]);
        loop {
            tcp.readable().await?;
            let outcome = SCRATCH.with_borrow_mut(|scratch| -> Result<bool> {
                let mut closed = false;
                loop {
                    // Keep the partial frame at the front, then read after it.
                    let kept = partial.len();
                    if kept > scratch.len() / 2 {
                        scratch.resize(kept * 2, 0);
                    }
                    scratch[..kept].copy_from_slice(&partial);
                    partial.clear();
                    match tcp.try_read(&mut scratch[kept..]) {
                        Ok(0) => closed = true,
                        Ok(n) => {
                            let data = &scratch[..kept + n];
                            let used = walk(
                                data,
                                subscription,
                                &shared,
                                &progress,
                                &mut highest,
                                &mut pongs,
                            )?;
                            partial.extend_from_slice(&data[used..]);
                            if kept + n == scratch.len() {
                                continue;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            partial.extend_from_slice(&scratch[..kept]);
                        }
                        Err(e) => return Err(e.into()),
                    }
                    return Ok(closed);
                }
            })?;
            if !pongs.is_empty() {
                // Rare (a keepalive ping): answer it before reading on.
                write_all(&tcp, &mut pongs).await?;
            }
            if outcome {
                return Err("the server closed a subscriber".into());
            }
        }
    }
    .await;
    if let Err(error) = result {
        shared
            .borrow_mut()
            .errors
            .push(format!("subscriber: {error}"));
        progress.notify_one();
    }
}

async fn write_all(tcp: &TcpStream, out: &mut Vec<u8>) -> Result {
    let mut sent = 0;
    while sent < out.len() {
        tcp.writable().await?;
        match tcp.try_write(&out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.clear();
    Ok(())
}

/// Walk the whole frames at the start of `data`; returns how many bytes they took.
fn walk(
    data: &[u8],
    sub: Subscription,
    shared: &RefCell<Shared>,
    progress: &Notify,
    highest: &mut Option<u64>,
    pongs: &mut Vec<u8>,
) -> Result<usize> {
    let mut at = 0;
    let mut s = shared.borrow_mut();
    let now = s.now_ns();
    while data.len() - at >= 2 {
        let (b0, b1) = (data[at], data[at + 1]);
        if b1 & 0x80 != 0 {
            return Err("a masked frame from the server".into());
        }
        let (header, len) = match b1 & 0x7f {
            126 if data.len() - at >= 4 => {
                (4, u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize)
            }
            127 if data.len() - at >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[at + 2..at + 10]);
                (10, u64::from_be_bytes(b) as usize)
            }
            126 | 127 => break,
            n => (2, n as usize),
        };
        if data.len() - at < header + len {
            break;
        }
        let payload = &data[at + header..at + header + len];
        match b0 & 0x0f {
            0x2 if len >= STAMP => {
                let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                let stamp = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
                let topic = u16::from_le_bytes([payload[16], payload[17]]);
                let publisher = u16::from_le_bytes([payload[18], payload[19]]);
                if usize::from(topic) != sub.topic || usize::from(publisher) != sub.publisher {
                    return Err(format!(
                        "message {seq} of topic {topic} from publisher {publisher} on a \
                         subscriber of topic {} (publisher {})",
                        sub.topic, sub.publisher
                    )
                    .into());
                }
                if highest.is_none() {
                    s.started += 1;
                }
                if let Some(h) = *highest {
                    if seq <= h {
                        return Err(format!("message {seq} after {h}: out of order").into());
                    }
                    if s.measuring {
                        s.skipped += seq - h - 1;
                    }
                    s.skipped_all += seq - h - 1;
                    if seq - h > 1 {
                        *s.skipped_by_sub_url.entry(sub.url).or_default() += seq - h - 1;
                    }
                }
                // This one, and any it skipped (or, for the first, missed by
                // subscribing after they were published).
                let measuring = s.measuring;
                let t = &mut s.topics[sub.topic];
                t.accounted += match *highest {
                    Some(h) => seq - h,
                    None => seq + 1,
                };
                *highest = Some(seq);
                if measuring {
                    t.deliveries += 1;
                    s.deliveries += 1;
                    let us = now.saturating_sub(stamp) / 1000;
                    let _ = s.latency.record(us.max(1));
                    if s.latency_by_url.len() > 1 {
                        let _ = s.latency_by_url[sub.url].record(us.max(1));
                    }
                }
            }
            0x9 => {
                // Pong with the same payload, masked with the zero key.
                pongs.push(0x8a);
                pongs.push(0x80 | len as u8);
                pongs.extend_from_slice(&[0; 4]);
                pongs.extend_from_slice(payload);
            }
            0x8 => return Err("the server sent a close frame".into()),
            0xa => {}
            op => return Err(format!("unexpected frame: opcode {op}, {len} bytes").into()),
        }
        at += header + len;
    }
    if !s.notified[sub.publisher] && s.topics[sub.topic].has_room(s.window) {
        s.notified[sub.publisher] = true;
        progress.notify_one();
    }
    Ok(at)
}

/// The publisher's read side: the server's answers (`--pub-v1`), one frame each: a
/// refusal is counted by its code, and every answer lets the publisher send one more
/// past `--max-unanswered`. Pings are not answered (the publisher sends all the time,
/// which is what a keepalive looks for).
async fn drain(
    read: tokio::net::tcp::OwnedReadHalf,
    rest: Vec<u8>,
    publisher: usize,
    shared: Rc<RefCell<Shared>>,
    progress: Rc<Notify>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = rest;
    loop {
        let mut at = 0;
        let mut answered = 0;
        while let Some((opcode, payload, len)) = server_frame(&frames[at..]) {
            at += len;
            match opcode {
                0x1 => {
                    answered += 1;
                    if let Some(code) = refusal(payload) {
                        *shared.borrow_mut().refused.entry(code).or_default() += 1;
                    }
                }
                0x8 => return,
                _ => {}
            }
        }
        frames.drain(..at);
        if answered > 0 {
            let mut s = shared.borrow_mut();
            let left = &mut s.unanswered[publisher];
            *left = left.saturating_sub(answered);
            if s.held[publisher] && s.unanswered[publisher] < s.max_unanswered {
                s.held[publisher] = false;
                progress.notify_one();
            }
        }
        if read.readable().await.is_err() {
            return;
        }
        match read.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => frames.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The first whole frame from the server in `data` (unmasked): its opcode, payload and
/// length on the wire; `None` until it is all there.
fn server_frame(data: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&b0, &b1) = (data.first()?, data.get(1)?);
    let (header, len): (usize, usize) = match b1 & 0x7f {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])),
        ),
        127 => {
            let bytes: [u8; 8] = data.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(bytes)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    let payload = data.get(header..header.checked_add(len)?)?;
    Some((b0 & 0x0f, payload, header + len))
}

/// The error code of a wsevents.v1 answer that is a refusal (`"op":"error"`, its
/// `"code"` wherever the server put it: it writes `{"op":"error","id":N,"code":…}`);
/// `None` for any other answer.
fn refusal(answer: &[u8]) -> Option<String> {
    const ERROR: &[u8] = b"\"op\":\"error\"";
    const CODE: &[u8] = b"\"code\":\"";
    answer.windows(ERROR.len()).position(|w| w == ERROR)?;
    let start = answer.windows(CODE.len()).position(|w| w == CODE)? + CODE.len();
    let len = answer[start..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&answer[start..start + len]).into_owned())
}

/// A publisher: its number (in every payload) and its topics, published to in turn.
struct Publisher {
    id: usize,
    topics: Vec<usize>,
}

/// A publisher: closed loop (at most `window` messages per topic not yet complete) or
/// open loop at `rate` messages a second per topic.
async fn publish(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    publisher: Publisher,
    size: usize,
    window: u64,
    rate: Option<f64>,
    v1: bool,
    shared: Rc<RefCell<Shared>>,
    progress: Rc<Notify>,
) {
    let filler: Vec<u8> = (0..size - STAMP).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(256 * 1024);
    let mut payload = Vec::with_capacity(size);
    let mut request = Vec::with_capacity(size * 2 + 128);
    let mut next_id = 0u64;
    let mut frame = |out: &mut Vec<u8>, seq: u64, stamp: u64, topic: usize| {
        payload.clear();
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(&stamp.to_le_bytes());
        payload.extend_from_slice(&(topic as u16).to_le_bytes());
        payload.extend_from_slice(&(publisher.id as u16).to_le_bytes());
        payload.extend_from_slice(&filler);
        if v1 {
            next_id += 1;
            request.clear();
            request.extend_from_slice(
                format!("{{\"id\":{next_id},\"op\":\"publish\",\"topic\":\"{topic}\",\"data\":\"")
                    .as_bytes(),
            );
            base64(&payload, &mut request);
            request.extend_from_slice(b"\",\"binary\":true}");
            frame_header(out, 0x81, request.len());
            out.extend_from_slice(&request);
        } else {
            frame_header(out, 0x82, payload.len());
            out.extend_from_slice(&payload);
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start_ns = shared.borrow().now_ns();
    let result: Result = async {
        loop {
            {
                let mut s = shared.borrow_mut();
                if !s.errors.is_empty() || s.stopped {
                    return Ok(());
                }
                let now = s.now_ns();
                match rate {
                    None => {
                        // One message to each topic with room in turn, until none has.
                        let mut any = true;
                        while any {
                            any = false;
                            for &topic in &publisher.topics {
                                if v1 && s.unanswered[publisher.id] >= s.max_unanswered {
                                    s.held[publisher.id] = true;
                                    break;
                                }
                                let t = &mut s.topics[topic];
                                if t.has_room(window) {
                                    frame(&mut out, t.published, now, topic);
                                    t.published += 1;
                                    if v1 {
                                        s.unanswered[publisher.id] += 1;
                                    }
                                    any = true;
                                }
                            }
                        }
                    }
                    Some(r) => {
                        // Message `seq` of each topic is due at `seq / r` seconds.
                        let due = ((now - start_ns) as f64 * r / 1e9) as u64 + 1;
                        // A message held back by the answers' bound goes on a later
                        // tick, late by its stamp (a server that falls behind shows in
                        // the latency).
                        for &topic in &publisher.topics {
                            loop {
                                if v1 && s.unanswered[publisher.id] >= s.max_unanswered {
                                    break;
                                }
                                let t = &mut s.topics[topic];
                                if t.published >= due {
                                    break;
                                }
                                let stamp = start_ns + (t.published as f64 * 1e9 / r) as u64;
                                frame(&mut out, t.published, stamp, topic);
                                t.published += 1;
                                if v1 {
                                    s.unanswered[publisher.id] += 1;
                                }
                            }
                        }
                    }
                }
                s.notified[publisher.id] = false;
            }
            if !out.is_empty() {
                write.write_all(&out).await?;
                out.clear();
            }
            match rate {
                None => progress.notified().await,
                Some(_) => {
                    tick.tick().await;
                }
            }
        }
    }
    .await;
    if let Err(error) = result {
        shared
            .borrow_mut()
            .errors
            .push(format!("publisher {}: {error}", publisher.id));
    }
}

/// A client frame's header for `len` bytes of payload, masked with the key 0 (so the
/// payload goes as it is).
fn frame_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
}

/// Standard base64 with padding (RFC 4648), what wsevents.v1 takes for binary data.
fn base64(bytes: &[u8], out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63]);
        out.push(ALPHABET[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63]
        } else {
            b'='
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame as a wsevents.v1 server sends it: unmasked text.
    fn text_frame(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81];
        if text.len() < 126 {
            frame.push(text.len() as u8);
        } else {
            frame.push(126);
            frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
        }
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    #[test]
    fn a_refusal_is_found_by_its_code_wherever_the_server_puts_it() {
        // What `wsevents serve` answers (the tag first, then the fields in order).
        let refused = br#"{"op":"error","id":7,"code":"too_many_requests","message":"1024 publishes waiting: retry later","temporary":true}"#;
        assert_eq!(refusal(refused).as_deref(), Some("too_many_requests"));
        let no_id = br#"{"id":null,"code":"bad_request","op":"error"}"#;
        assert_eq!(refusal(no_id).as_deref(), Some("bad_request"));
        let published = br#"{"op":"published","id":8,"topic":"3","epoch":"e","offset":4}"#;
        assert_eq!(refusal(published), None);
    }

    #[test]
    fn answers_are_taken_frame_by_frame_across_reads() {
        let long = format!(
            r#"{{"op":"error","id":9,"code":"too_large","message":"{}"}}"#,
            "x".repeat(200)
        );
        let mut wire =
            text_frame(r#"{"op":"published","id":1,"topic":"0","epoch":"e","offset":1}"#);
        wire.extend(text_frame(&long));
        let (opcode, payload, len) = server_frame(&wire).unwrap();
        assert_eq!((opcode, refusal(payload)), (1, None));
        let rest = &wire[len..];
        for cut in 0..rest.len() {
            assert!(server_frame(&rest[..cut]).is_none(), "a frame cut at {cut}");
        }
        let (_, payload, len) = server_frame(rest).unwrap();
        assert_eq!(
            (refusal(payload).as_deref(), len),
            (Some("too_large"), rest.len())
        );
    }
}
