//! `wsevents bench URL`: a load generator for echo servers.
//!
//! Each of N connections is one task on a multi-threaded runtime, keeping K messages
//! in flight: it queues messages until K are outstanding, writes them in one go, then
//! takes every echo that has arrived, and again. The latency of a message is the time
//! from queueing it to receiving its echo (echoes come back in order on a connection,
//! so a queue of bursts, each a send time and a count, is enough; nothing is written
//! into the payload, which is built once and shared). Each task records into its own
//! HDR histogram, one latency per burst answered in a wake-up rather than one per
//! message (see `stats::InFlight`); they are merged at the end, so the hot loop shares
//! nothing but a relaxed counter for the progress bar.
//!
//! With `--rate R` the loop is open instead (wrk2's way): R messages/s in all, each
//! connection sending its share on a fixed schedule whether or not echoes have come
//! back, and a message's latency runs from the time it was *due*, so a server that
//! stalls shows every message that waited behind the stall (a closed loop sends nothing
//! while it waits, and so measures one slow message: coordinated omission). The
//! schedule runs on tokio's timer, whose resolution is 1 ms: at low rates a message can
//! leave up to about a millisecond after it was due, and that shows in its latency.
//!
//! Every echo is checked against the message it answers: messages cycle through up to
//! 64 payloads that differ in their first byte (built once, still shared), so a
//! corrupted, truncated, lost, duplicated or reordered echo is counted as a mismatch.
//! Mismatches are reported and make the exit code 1. (`tcp://` counts bytes only.)
//!
//! Only echoes received within the duration count. The generator's CPU time (and the
//! server's, with `--server-pid`) over the same window tells which side was the
//! bottleneck: the generator uses the stream API, the cheapest face of the library,
//! so that on loopback it should stay below the server.
//!
//! A `tcp://host:port` URL drives a raw TCP echo server the same way (messages are
//! `size` bytes with no framing, a message is back when `size` more bytes are): the
//! ceiling a WebSocket server is measured against.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wsevents::{ClientBuilder, CloseCode, MaybeTlsStream, Message, WebSocketStream};

use crate::Result;
use crate::stats::{self, InFlight, Latency, human_us};

/// Options of `wsevents bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The echo server: ws://… or wss://… (e.g. `wsevents serve --echo`), or
    /// tcp://host:port for a raw TCP echo server (the ceiling)
    url: String,
    /// Connections, each a task of its own
    #[arg(long, short = 'c', value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Payload of each message, in bytes
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=(64 << 20)))]
    size: u32,
    /// How long to measure, in seconds
    #[arg(long, short = 'd', value_name = "S", default_value = "10",
          value_parser = crate::seconds::positive_seconds)]
    duration: Duration,
    /// Messages in flight per connection (the closed loop)
    #[arg(long, short = 'k', value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pipeline: u32,
    /// Open loop: send N messages/s in all, spread evenly over the connections, on
    /// schedule whatever the echoes do; latency counts from when each message was due
    /// (so queueing behind a stall shows). Without it, the closed loop of --pipeline
    #[arg(long, short = 'r', value_name = "N", conflicts_with = "pipeline")]
    rate: Option<f64>,
    /// Send text messages (the default)
    #[arg(long, conflicts_with = "binary")]
    text: bool,
    /// Send binary messages
    #[arg(long)]
    binary: bool,
    /// Negotiate permessage-deflate (off by default, so that the figures measure the
    /// WebSocket itself and compare with servers without it); the server must accept
    /// it. The payload is chat-like text either way, which deflate shrinks about 3x.
    #[arg(long)]
    deflate: bool,
    /// Print the results as one JSON object on stdout (no progress bar)
    #[arg(long)]
    json: bool,
    /// The server's process id: report its CPU time beside ours (Linux)
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Trust the CA certificate(s) in this PEM file for wss://
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not check the server's certificate
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
}

type Socket = WebSocketStream<MaybeTlsStream>;

/// What one connection measured.
struct Outcome {
    in_flight: InFlight,
    messages: u64,
    /// Messages sent (the open loop's achieved rate).
    sent: u64,
    /// Echoes that were not the message they answer, and the first of them.
    mismatches: u64,
    first_mismatch: Option<String>,
    error: Option<String>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            in_flight: InFlight::new(),
            messages: 0,
            sent: 0,
            mismatches: 0,
            first_mismatch: None,
            error: None,
        }
    }
}

/// The messages a connection cycles through, and where it is in the cycle both ways:
/// the echo of the `n`th message sent must be `messages[n % len]`.
struct Payloads {
    messages: &'static [Message],
    sent: u64,
    received: u64,
}

impl Payloads {
    fn new(messages: &'static [Message]) -> Payloads {
        Payloads {
            messages,
            sent: 0,
            received: 0,
        }
    }

    /// The next message to send.
    fn next(&mut self) -> Message {
        let message = self.messages[(self.sent % self.messages.len() as u64) as usize].clone();
        self.sent += 1;
        message
    }

    /// Check an echo: `None` when it is the message it answers, else what is wrong.
    fn check(&mut self, echo: &Message) -> Option<String> {
        let n = self.received;
        self.received += 1;
        let want = &self.messages[(n % self.messages.len() as u64) as usize];
        (echo != want).then(|| {
            format!(
                "echo #{n} is a {}-byte {:?} message unlike the {}-byte {:?} one sent",
                echo.payload().len(),
                echo.kind(),
                want.payload().len(),
                want.kind()
            )
        })
    }
}

/// The variants of the payload: up to 64 (fewer for large ones, at most 64 MiB in
/// all), that differ in their first byte; one when empty.
fn payload_variants(text: &str, binary: bool) -> &'static [Message] {
    const MARKS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let count = if text.is_empty() {
        1
    } else {
        ((64 << 20) / text.len()).clamp(1, MARKS.len())
    };
    let messages: Vec<Message> = (0..count)
        .map(|i| {
            let mut variant = text.to_owned();
            if !variant.is_empty() {
                // Invariant: chat_like_text is ASCII, so byte 0 is a whole character,
                // and so is its replacement.
                variant.replace_range(..1, &(MARKS[i] as char).to_string());
            }
            let variant: &'static str = String::leak(variant);
            if binary {
                Message::binary(Bytes::from_static(variant.as_bytes()))
            } else {
                Message::text(variant)
            }
        })
        .collect();
    Vec::leak(messages)
}

/// Run the benchmark and print the report.
pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let ends = args.duration.checked_mul(2);
    if ends
        .and_then(|d| std::time::Instant::now().checked_add(d))
        .is_none()
    {
        return Err("--duration is too long to measure".into());
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err("--rate must be a positive number of messages per second".into());
    }
    // The payload lives as long as the run: as static bytes, copies of the message
    // cost no reference counting (two atomic operations per message otherwise, a
    // tenth of the generator's own work per small message).
    let text: &'static str = String::leak(chat_like_text(args.size as usize));
    let message = if args.binary {
        Message::binary(Bytes::from_static(text.as_bytes()))
    } else {
        Message::text(text)
    };

    let duration = args.duration;
    if let Some(addr) = args
        .url
        .strip_prefix("tcp://")
        .map(|a| a.trim_end_matches('/'))
    {
        if args.size == 0 {
            return Err("--size must be at least 1 for a raw TCP echo".into());
        }
        let streams = connect_all_tcp(addr, args.connections).await?;
        let payload = message.payload().clone();
        let pipeline = args.pipeline as usize;
        if args.rate.is_some() {
            return Err("--rate needs a ws:// or wss:// server".into());
        }
        return measure(&args, streams, duration, |tcp, _, deadline, counter| {
            load_tcp(tcp, payload.clone(), pipeline, deadline, counter)
        })
        .await;
    }
    let mut builder =
        ClientBuilder::new(&args.url)?.deflate(args.deflate.then(wsevents::DeflateConfig::default));
    if let Some(config) = crate::tls::client_config(args.ca.as_deref(), args.insecure)? {
        builder = builder.tls_config(config);
    }
    let sockets = connect_all(&builder, args.connections).await?;
    if args.deflate
        && let Some(ws) = sockets
            .iter()
            .find(|ws| !ws.extensions().starts_with("permessage-deflate"))
    {
        return Err(format!(
            "the server did not accept permessage-deflate (extensions: {:?})",
            ws.extensions()
        )
        .into());
    }
    let pipeline = args.pipeline as usize;
    let variants = payload_variants(text, args.binary);
    match args.rate {
        Some(rate) => {
            // Each connection sends every `interval`; connection i starts i/n of an
            // interval in, so that together they send evenly.
            let n = sockets.len() as f64;
            let interval = Duration::try_from_secs_f64(n / rate)
                .map_err(|_| format!("--rate {rate}: one message per connection is too rare"))?;
            measure(&args, sockets, duration, |ws, i, deadline, counter| {
                let offset = interval.mul_f64(i as f64 / n);
                let schedule = Schedule::new(deadline - duration + offset, interval);
                load_open(ws, variants, schedule, deadline, counter)
            })
            .await
        }
        None => {
            measure(&args, sockets, duration, |ws, _, deadline, counter| {
                load(ws, variants, pipeline, deadline, counter)
            })
            .await
        }
    }
}

/// Run `load` on every connection until the deadline, with the progress bar, and
/// report.
async fn measure<C, F, L>(
    args: &Args,
    sockets: Vec<C>,
    duration: Duration,
    load: L,
) -> Result<ExitCode>
where
    L: Fn(C, usize, Instant, Arc<AtomicU64>) -> F,
    F: std::future::Future<Output = Outcome> + Send + 'static,
{
    let connected = sockets.len();
    let progress = progress_bar(args.json, duration);
    let counters: Vec<Arc<AtomicU64>> = (0..connected).map(|_| Arc::default()).collect();
    let cpu_before = (
        stats::cpu_time(None),
        args.server_pid.and_then(|p| stats::cpu_time(Some(p))),
    );
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .zip(&counters)
        .enumerate()
        .map(|(i, (ws, counter))| tokio::spawn(load(ws, i, deadline, counter.clone())))
        .collect();

    // The progress bar, until the deadline; then the CPU times of the window.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last = (start, 0u64);
    while Instant::now() < deadline {
        tick.tick().await;
        let now = Instant::now().min(deadline);
        let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let rate = (total - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, total);
        progress.set_position(now.duration_since(start).as_millis() as u64);
        progress.set_message(format!("{total} messages, {rate:.0} msg/s"));
    }
    let elapsed = start.elapsed().min(duration).max(Duration::from_millis(1));
    let cpu_after = (
        stats::cpu_time(None),
        args.server_pid.and_then(|p| stats::cpu_time(Some(p))),
    );
    progress.finish_and_clear();

    let mut histogram = stats::latency_histogram();
    let mut messages = 0;
    let mut sent = 0;
    let mut mismatches = 0;
    let mut first_mismatch = None;
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                // Same bounds on every histogram: adding cannot fail.
                let _ = histogram.add(outcome.in_flight.into_histogram());
                messages += outcome.messages;
                sent += outcome.sent;
                mismatches += outcome.mismatches;
                first_mismatch = first_mismatch.or(outcome.first_mismatch);
                errors.extend(outcome.error);
            }
            Err(error) => errors.push(format!("a connection task failed: {error}")),
        }
    }

    let report = Report {
        args,
        connected,
        seconds: elapsed.as_secs_f64(),
        messages,
        sent,
        mismatches,
        first_mismatch,
        latency: Latency::of(&histogram),
        errors,
        generator_cpu: cpu_after
            .0
            .zip(cpu_before.0)
            .map(|(a, b)| a.saturating_sub(b)),
        server_cpu: cpu_after
            .1
            .zip(cpu_before.1)
            .map(|(a, b)| a.saturating_sub(b)),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.messages > 0 && report.mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `size` bytes of text made of common words in a pseudo-random order: compressible
/// the way prose or JSON is (about 3x), not the way a run of one byte is.
fn chat_like_text(size: usize) -> String {
    const WORDS: [&str; 16] = [
        "the",
        "websocket",
        "message",
        "event",
        "open",
        "close",
        "send",
        "data",
        "server",
        "client",
        "frame",
        "binary",
        "text",
        "user",
        "room",
        "hello",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::with_capacity(size + 16);
    while text.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(WORDS[(x % 16) as usize]);
        text.push(' ');
    }
    text.truncate(size);
    text
}

/// Open every connection, all at once; fail only if none opens.
async fn connect_all(builder: &ClientBuilder, n: u32) -> Result<Vec<Socket>> {
    let attempts: Vec<_> = (0..n)
        .map(|_| tokio::spawn(builder.clone().connect()))
        .collect();
    gather(attempts).await
}

/// Await every connection attempt; fail only if none opened, and say how many failed
/// otherwise.
async fn gather<T, E: std::fmt::Display>(
    attempts: Vec<tokio::task::JoinHandle<std::result::Result<T, E>>>,
) -> Result<Vec<T>> {
    let n = attempts.len();
    let mut opened = Vec::with_capacity(n);
    let mut first_error = None;
    for attempt in attempts {
        match attempt.await {
            Ok(Ok(connection)) => opened.push(connection),
            Ok(Err(error)) => {
                first_error.get_or_insert_with(|| error.to_string());
            }
            Err(error) => {
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    match (opened.is_empty(), first_error) {
        (true, Some(error)) => Err(format!("could not connect: {error}").into()),
        (false, Some(error)) => {
            eprintln!(
                "wsevents: {} of {n} connections failed: {error}",
                n - opened.len()
            );
            Ok(opened)
        }
        _ => Ok(opened),
    }
}

/// One connection's load loop: keep `pipeline` messages in flight until `deadline`.
async fn load(
    mut ws: Socket,
    variants: &'static [Message],
    pipeline: usize,
    deadline: Instant,
    counter: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome::new();
    let mut payloads = Payloads::new(variants);
    let pipeline = pipeline as u64;
    let stop = tokio::time::sleep_until(deadline);
    tokio::pin!(stop);
    'run: loop {
        // One clock read per burst: its messages leave in the same write.
        let burst_at = Instant::now();
        let missing = pipeline - outcome.in_flight.len();
        let mut unsent = missing;
        let sent = std::future::poll_fn(|cx| poll_burst(&mut ws, cx, &mut payloads, &mut unsent));
        if let Err(error) = sent.await {
            outcome.error = Some(error.to_string());
            break;
        }
        outcome.in_flight.sent(burst_at, missing);
        let in_flight = outcome.in_flight.len();
        let echoes = tokio::select! {
            biased;
            () = &mut stop => break,
            echoes = std::future::poll_fn(|cx| {
                poll_echoes(&mut ws, cx, in_flight, &mut payloads, &mut outcome)
            }) => echoes,
        };
        let echoes = match echoes {
            Ok(echoes) => echoes,
            Err(error) => {
                outcome.error = Some(error);
                break 'run;
            }
        };
        // The echoes taken in one wake-up arrived together: one clock read serves all.
        outcome.in_flight.answered(Instant::now(), echoes);
        outcome.messages += echoes;
        counter.store(outcome.messages, Ordering::Relaxed);
    }
    counter.store(outcome.messages, Ordering::Relaxed);
    outcome.sent = payloads.sent;
    if outcome.error.is_none() {
        // Echoes still in flight are dropped by the close.
        let _ = ws.close(CloseCode::NORMAL, "").await;
    }
    outcome
}

/// The open loop's timetable for one connection: a message due every `interval` from
/// `first`.
struct Schedule {
    next: Instant,
    interval: Duration,
}

impl Schedule {
    fn new(first: Instant, interval: Duration) -> Schedule {
        Schedule {
            next: first,
            interval,
        }
    }

    /// The messages due by `now` (and before `deadline`) not taken yet: when each was
    /// due, oldest first. A sender that fell behind gets every one it missed, with the
    /// times they were due, not the time it caught up.
    fn take_due(&mut self, now: Instant, deadline: Instant) -> Vec<Instant> {
        let mut due = Vec::new();
        while self.next <= now && self.next < deadline {
            due.push(self.next);
            self.next += self.interval;
        }
        due
    }
}

/// One connection's open loop: send on `schedule` until `deadline`, whatever the
/// echoes do, reading them as they come.
async fn load_open(
    mut ws: Socket,
    variants: &'static [Message],
    mut schedule: Schedule,
    deadline: Instant,
    counter: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome::new();
    let mut payloads = Payloads::new(variants);
    let stop = tokio::time::sleep_until(deadline);
    tokio::pin!(stop);
    let mut unsent = 0u64;
    let mut unflushed = false;
    loop {
        // Due messages are counted in flight from when they were due, sent or not.
        for due in schedule.take_due(Instant::now(), deadline) {
            outcome.in_flight.sent(due, 1);
            unsent += 1;
        }
        let next_due = tokio::time::sleep_until(schedule.next.min(deadline));
        let step = tokio::select! {
            biased;
            () = &mut stop => break,
            () = next_due => continue,
            step = std::future::poll_fn(|cx| {
                poll_open(&mut ws, cx, &mut payloads, &mut unsent, &mut unflushed, &mut outcome)
            }) => step,
        };
        match step {
            Ok(echoes) => {
                outcome.in_flight.answered(Instant::now(), echoes);
                outcome.messages += echoes;
                counter.store(outcome.messages, Ordering::Relaxed);
            }
            Err(error) => {
                outcome.error = Some(error);
                break;
            }
        }
    }
    counter.store(outcome.messages, Ordering::Relaxed);
    outcome.sent = payloads.sent;
    if outcome.error.is_none() {
        let _ = ws.close(CloseCode::NORMAL, "").await;
    }
    outcome
}

/// One turn of the open loop: write what is due as far as the socket takes it, and take
/// the echoes that are here. Ready with the echoes taken (at least one); pending while
/// there are none, woken by the socket either way.
fn poll_open(
    ws: &mut Socket,
    cx: &mut Context<'_>,
    payloads: &mut Payloads,
    unsent: &mut u64,
    unflushed: &mut bool,
    outcome: &mut Outcome,
) -> Poll<std::result::Result<u64, String>> {
    let mut sink = Pin::new(&mut *ws);
    while *unsent > 0 {
        match sink.as_mut().poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
            Poll::Pending => break,
        }
        if let Err(error) = sink.as_mut().start_send(payloads.next()) {
            return Poll::Ready(Err(error.to_string()));
        }
        *unsent -= 1;
        *unflushed = true;
    }
    if *unflushed {
        match sink.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error.to_string())),
            Poll::Pending => {}
        }
    }
    let in_flight = outcome.in_flight.len();
    if in_flight == 0 {
        return Poll::Pending;
    }
    poll_echoes(ws, cx, in_flight, payloads, outcome)
}

/// Queue `unsent` copies of `message` and write them out, in one write when they fit.
/// Polled by hand rather than with `feed(..).await` per message, whose future costs
/// the generator more than the message does.
fn poll_burst(
    ws: &mut Socket,
    cx: &mut Context<'_>,
    payloads: &mut Payloads,
    unsent: &mut u64,
) -> Poll<std::result::Result<(), wsevents::Error>> {
    let mut ws = Pin::new(ws);
    while *unsent > 0 {
        ready!(ws.as_mut().poll_ready(cx))?;
        ws.as_mut().start_send(payloads.next())?;
        *unsent -= 1;
    }
    ws.poll_flush(cx)
}

/// Take every message that is here, up to `max`, waiting only for the first; each is
/// checked against the message it answers.
fn poll_echoes(
    ws: &mut Socket,
    cx: &mut Context<'_>,
    max: u64,
    payloads: &mut Payloads,
    outcome: &mut Outcome,
) -> Poll<std::result::Result<u64, String>> {
    let mut taken = 0;
    while taken < max {
        match Pin::new(&mut *ws).poll_next(cx) {
            Poll::Ready(Some(Ok(echo))) => {
                taken += 1;
                if let Some(wrong) = payloads.check(&echo) {
                    outcome.mismatches += 1;
                    outcome.first_mismatch.get_or_insert(wrong);
                }
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error.to_string())),
            Poll::Ready(None) => {
                return Poll::Ready(Err("the server closed the connection".into()));
            }
            // Woken again when more arrives; with some taken, hand them over now.
            Poll::Pending if taken == 0 => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    Poll::Ready(Ok(taken))
}

/// Open `n` raw TCP connections; fail only if none opens.
async fn connect_all_tcp(addr: &str, n: u32) -> Result<Vec<TcpStream>> {
    let attempts: Vec<_> = (0..n)
        .map(|_| {
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(tcp)
            })
        })
        .collect();
    gather(attempts).await
}

/// The raw TCP load loop: `pipeline` messages of `payload` in flight; a message is
/// echoed when `payload.len()` more bytes have come back.
async fn load_tcp(
    mut tcp: TcpStream,
    payload: Bytes,
    pipeline: usize,
    deadline: Instant,
    counter: Arc<AtomicU64>,
) -> Outcome {
    let mut outcome = Outcome::new();
    let size = payload.len();
    let burst: Vec<u8> = payload
        .iter()
        .copied()
        .cycle()
        .take(size * pipeline)
        .collect();
    let mut buf = vec![0u8; (size * pipeline).clamp(4096, 1 << 20)];
    let mut pending = 0usize;
    let stop = tokio::time::sleep_until(deadline);
    tokio::pin!(stop);
    'run: loop {
        let missing = pipeline - outcome.in_flight.len() as usize;
        if missing > 0 {
            let burst_at = Instant::now();
            if let Err(error) = tcp.write_all(&burst[..missing * size]).await {
                outcome.error = Some(error.to_string());
                break;
            }
            outcome.in_flight.sent(burst_at, missing as u64);
        }
        let read = tokio::select! {
            biased;
            () = &mut stop => break,
            read = tcp.read(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                outcome.error = Some("the server closed the connection".into());
                break;
            }
            Ok(n) => {
                pending += n;
                let echoes = (pending / size) as u64;
                pending %= size;
                if outcome.in_flight.answered(Instant::now(), echoes) < echoes {
                    outcome.error = Some("the server sent more than it was sent".into());
                    break 'run;
                }
                outcome.messages += echoes;
            }
            Err(error) => {
                outcome.error = Some(error.to_string());
                break;
            }
        }
        counter.store(outcome.messages, Ordering::Relaxed);
    }
    counter.store(outcome.messages, Ordering::Relaxed);
    outcome
}

fn progress_bar(hidden: bool, duration: Duration) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The results, for people or for machines.
struct Report<'a> {
    args: &'a Args,
    connected: usize,
    seconds: f64,
    messages: u64,
    sent: u64,
    mismatches: u64,
    first_mismatch: Option<String>,
    latency: Latency,
    errors: Vec<String>,
    generator_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

impl Report<'_> {
    fn kind(&self) -> &'static str {
        if self.args.binary { "binary" } else { "text" }
    }

    fn messages_per_second(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// Payload megabytes (10^6) echoed back per second.
    fn megabytes_per_second(&self) -> f64 {
        self.messages as f64 * f64::from(self.args.size) / self.seconds / 1e6
    }

    fn json(&self) -> serde_json::Value {
        let l = &self.latency;
        let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        serde_json::json!({
            "url": self.args.url,
            "connections": self.connected,
            "pipeline": self.args.rate.is_none().then_some(self.args.pipeline),
            "rate": self.args.rate,
            "size": self.args.size,
            "kind": self.kind(),
            "deflate": self.args.deflate,
            "duration_s": self.seconds,
            "messages": self.messages,
            "sent": self.sent,
            "mismatches": self.mismatches,
            "first_mismatch": self.first_mismatch,
            "messages_per_s": self.messages_per_second(),
            "mb_per_s": self.megabytes_per_second(),
            "latency_us": {
                "p50": l.p50, "p90": l.p90, "p99": l.p99, "p99_9": l.p99_9,
                "max": l.max, "mean": l.mean,
            },
            "cpu_s": {
                "generator": seconds(self.generator_cpu),
                "server": seconds(self.server_cpu),
            },
            "errors": self.errors.len(),
            "first_error": self.errors.first(),
        })
    }

    fn text(&self) -> String {
        let l = &self.latency;
        let percent = |d: Duration| 100.0 * d.as_secs_f64() / self.seconds;
        let load = match self.args.rate {
            Some(rate) => format!("open loop at {rate} msg/s"),
            None => format!("{} in flight", self.args.pipeline),
        };
        let mut out = format!(
            "wsevents bench {}: {} connections x {load}, {}-byte {} messages{}, {:.1} s\n",
            self.args.url,
            self.connected,
            self.args.size,
            self.kind(),
            if self.args.deflate {
                ", permessage-deflate"
            } else {
                ""
            },
            self.seconds
        );
        out += &format!(
            "  messages    {} echoed, {:.0} msg/s ({} sent)\n",
            self.messages,
            self.messages_per_second(),
            self.sent
        );
        if let Some(first) = &self.first_mismatch {
            out += &format!(
                "  MISMATCHES  {} echoes differ from what was sent; first: {first}\n",
                self.mismatches
            );
        }
        out += &format!(
            "  throughput  {:.2} MB/s of payload each way\n",
            self.megabytes_per_second()
        );
        out += &format!(
            "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            human_us(l.p50),
            human_us(l.p90),
            human_us(l.p99),
            human_us(l.p99_9),
            human_us(l.max)
        );
        let mut cpu = match self.generator_cpu {
            Some(d) => format!(
                "generator {:.2} s ({:.0}% of a core)",
                d.as_secs_f64(),
                percent(d)
            ),
            None => "generator unknown".to_owned(),
        };
        match (self.args.server_pid, self.server_cpu) {
            (Some(pid), Some(d)) => {
                cpu += &format!(
                    ", server (pid {pid}) {:.2} s ({:.0}% of a core)",
                    d.as_secs_f64(),
                    percent(d)
                );
            }
            (Some(pid), None) => cpu += &format!(", server (pid {pid}) unknown"),
            (None, _) => cpu += "; --server-pid PID to compare with the server",
        }
        out += &format!("  CPU         {cpu}\n");
        if let Some(first) = self.errors.first() {
            out += &format!(
                "  errors      {} connection(s) failed; first: {first}\n",
                self.errors.len()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender that wakes late gets every message it missed, each with the time it
    /// was due (which its latency counts from), and none at or past the deadline.
    #[test]
    fn a_late_sender_gets_the_missed_messages_with_their_due_times() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut schedule = Schedule::new(start, ms(10));
        assert_eq!(schedule.take_due(start, start + ms(100)), [start]);
        assert!(schedule.take_due(start + ms(5), start + ms(100)).is_empty());
        assert_eq!(
            schedule.take_due(start + ms(35), start + ms(100)),
            [start + ms(10), start + ms(20), start + ms(30)]
        );
        assert_eq!(
            schedule.take_due(start + ms(500), start + ms(60)),
            [start + ms(40), start + ms(50)]
        );
    }

    #[test]
    fn echoes_are_checked_against_the_message_they_answer() {
        let variants = payload_variants("hello world", false);
        assert_eq!(variants.len(), 64);
        let mut payloads = Payloads::new(variants);
        let (first, second) = (payloads.next(), payloads.next());
        assert_ne!(first, second);
        assert_eq!(payloads.check(&first), None);
        assert!(payloads.check(&first).is_some(), "a repeat of the first");
        assert!(
            payloads
                .check(&Message::binary(second.payload().clone()))
                .is_some()
        );
        assert_eq!(payload_variants("", true).len(), 1);
        assert_eq!(payload_variants(&"x".repeat(16 << 20), true).len(), 4);
    }
}
