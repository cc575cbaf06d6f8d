//! Hostile peers at scale, and the servers and well-behaved clients to measure them
//! with: the load side of `scripts/hostile-peers`, `scripts/many-connections` and
//! `scripts/soak`. Each subcommand prints one line of figures per phase (the scripts
//! read them); the server's own figures (RSS, descriptors) the scripts take from /proc.
//!
//! ```text
//! hostile slowloris ADDR COUNT INTERVAL_MS LIMIT_S [SOURCES]   the request 1 byte per interval; when
//!                                                    each was closed (SOURCES: 8 by default; 1 is
//!                                                    all from 127.0.0.2)
//! hostile silent ADDR COUNT LIMIT_S [deaf]           handshake, then write nothing; when each was closed
//!                                                    (deaf: read nothing either, just hold the sockets)
//! hostile probe URL SECONDS                          a normal client: echo latency p50/p99 every 20 ms
//! hostile cap ADDR COUNT HOLD_S [ANSWER_S]           COUNT upgrades at once: how many 101, 503, other
//!                                                    (no answer in ANSWER_S, default 10, is one of them)
//! hostile noread ADDR HOLD_S [push]                  open, never read (push: send 64 KiB messages too, until blocked)
//! hostile flood-server ADDR stream|event BYTES [LIMIT]  a server sending BYTES to each client in 64 KiB
//!                                                    messages (event: with a Backpressure limit of LIMIT)
//! hostile limit head|frame|message|utf8|bomb ADDR    one request or frame over a limit: the answer
//! hostile half-message ADDR                          stop in the middle of a message and wait (to be SIGKILLed)
//! hostile many URL COUNT HOLD_S SOURCES              COUNT connections held open, each echoes at the end
//! hostile churn URL SECONDS CONCURRENCY              connect, echo, close, in a loop: rate per 10 s
//! ```
//! SOURCES spreads clients over 127.0.0.2 .. 127.0.0.(1+SOURCES), so one server port
//! gets more connections than a single source address has ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wsevents::{Acceptor, ClientBuilder, CloseCode, Message, Server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: hostile slowloris|silent|probe|cap|noread|flood-server|limit|half-message|many|churn ARGS (see the source)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str, BoxError> {
        args.get(i).map(String::as_str).ok_or_else(|| USAGE.into())
    };
    let num = |i: usize| -> Result<u64, BoxError> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "slowloris" => {
            let sources = args.get(5).map(|a| a.parse()).transpose()?.unwrap_or(8);
            slowloris(arg(1)?, num(2)? as usize, num(3)?, num(4)?, sources).await
        }
        "silent" => {
            let deaf = args.get(4).is_some_and(|a| a == "deaf");
            silent(arg(1)?, num(2)? as usize, num(3)?, deaf).await
        }
        "probe" => probe(arg(1)?, num(2)?).await,
        "cap" => {
            let answer_s = args.get(4).map(|a| a.parse()).transpose()?.unwrap_or(10);
            cap(arg(1)?, num(2)? as usize, num(3)?, answer_s).await
        }
        "noread" => noread(arg(1)?, num(2)?, args.get(3).is_some_and(|a| a == "push")).await,
        "flood-server" => {
            let limit = args.get(4).map(|l| l.parse()).transpose()?;
            flood_server(arg(1)?, arg(2)?, num(3)?, limit).await
        }
        "limit" => limit(arg(1)?, arg(2)?).await,
        "half-message" => half_message(arg(1)?).await,
        "many" => many(arg(1)?, num(2)? as usize, num(3)?, num(4)? as u8).await,
        "churn" => churn(arg(1)?, num(2)?, num(3)? as usize).await,
        _ => Err(USAGE.into()),
    }
}

// ----- helpers -----

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Connect to `addr` from 127.0.0.(2 + i % sources), or from any address if `sources`
/// is 0.
async fn connect_from(addr: SocketAddr, i: usize, sources: u8) -> std::io::Result<TcpStream> {
    if sources == 0 {
        return TcpStream::connect(addr).await;
    }
    let socket = TcpSocket::new_v4()?;
    let last = 2 + (i % usize::from(sources)) as u8;
    socket.bind(SocketAddr::from(([127, 0, 0, last], 0)))?;
    socket.connect(addr).await
}

fn socket_addr(addr_or_url: &str) -> Result<SocketAddr, BoxError> {
    let rest = addr_or_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default();
    Ok(rest.parse()?)
}

/// Read an HTTP head byte by byte; `None` if the connection ended first.
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.ok()?);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A raw peer that completed the opening handshake, with `extra` request headers.
async fn raw_client(tcp: TcpStream, extra: &str) -> Result<TcpStream, BoxError> {
    let mut tcp = tcp;
    tcp.write_all(format!("{UPGRADE}{extra}\r\n").as_bytes())
        .await?;
    match read_head(&mut tcp).await {
        Some(head) if head.starts_with("HTTP/1.1 101") => Ok(tcp),
        other => Err(format!("upgrade refused: {other:?}").into()),
    }
}

/// The header of a masked client frame with the key `00 00 00 00`.
fn header(fin: bool, rsv1: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match len {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// Read server frames until a close frame; its code, or `None` if the connection ended.
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    loop {
        let b0 = tcp.read_u8().await.ok()?;
        let b1 = tcp.read_u8().await.ok()?;
        let len = match b1 & 0x7f {
            126 => u64::from(tcp.read_u16().await.ok()?),
            127 => tcp.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; len as usize];
        tcp.read_exact(&mut payload).await.ok()?;
        if b0 & 0x0f == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
    }
}

/// Wait for the end of the connection, discarding what arrives.
async fn until_closed(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// "min p50 p99 max" of `times` in milliseconds (sorts them).
fn spread(times: &mut [Duration]) -> String {
    if times.is_empty() {
        return "- - - -".into();
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    format!(
        "{} {} {} {}",
        ms(times[0]),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    )
}

/// Raw DEFLATE of about `len` zero bytes (see `tests/hostile.rs` of wsevents-cli).
fn deflate_zeros(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len / 150);
    let (mut acc, mut n) = (0u64, 0u32);
    let mut put = |value: u64, count: u32, out: &mut Vec<u8>| {
        acc |= value << n;
        n += count;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    };
    let rev = |code: u64, count: u32| (0..count).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
    put(0b010, 3, &mut out); // fixed Huffman block
    put(rev(0b0011_0000, 8), 8, &mut out); // literal 0
    for _ in 0..(len - 1) / 258 {
        put(rev(0b1100_0101, 8), 8, &mut out); // length 258
        put(0, 5, &mut out); // distance 1
    }
    put(0, 7, &mut out); // end of block
    put(0, 3, &mut out); // the empty stored block the receiver completes
    put(0, 7, &mut out); // pad to a byte
    out
}

// ----- the opening handshake -----

async fn slowloris(
    addr: &str,
    count: usize,
    interval_ms: u64,
    limit_s: u64,
    sources: u8,
) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let tcp = connect_from(addr, i, sources).await?;
        tasks.push(tokio::spawn(async move {
            let opened = Instant::now();
            let (mut rd, mut wr) = tcp.into_split();
            let trickle = async move {
                for byte in UPGRADE.bytes().cycle() {
                    if wr.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                }
                std::future::pending::<()>().await;
            };
            let end = async move {
                let mut buf = [0u8; 512];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                () = trickle => None,
                elapsed = end => Some(elapsed),
                () = tokio::time::sleep(Duration::from_secs(limit_s)) => None,
            }
        }));
    }
    println!("open {count} in {:.1} s", start.elapsed().as_secs_f64());
    let mut closed = Vec::new();
    for task in tasks {
        if let Some(elapsed) = task.await? {
            closed.push(elapsed);
        }
    }
    println!(
        "slowloris {count} closed {} time_to_close_ms(min p50 p99 max) {}",
        closed.len(),
        spread(&mut closed)
    );
    Ok(())
}

async fn silent(addr: &str, count: usize, limit_s: u64, deaf: bool) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let mut opened = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let opening = batch.iter().map(|&i| async move {
            let tcp = connect_from(addr, i, 8).await?;
            raw_client(tcp, "").await
        });
        for tcp in futures_util::future::join_all(opening).await {
            opened.push(tcp?);
        }
    }
    println!("open {}", opened.len());
    if deaf {
        // The kernel still takes what the server sends; the server is told nothing.
        tokio::time::sleep(Duration::from_secs(limit_s)).await;
        println!("silent {count} deaf held {limit_s} s");
        return Ok(());
    }
    let all_open = Instant::now();
    // Reading here answers nothing (no pong): to the server this peer is silent.
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(limit_s), async {
                    let code = close_code(&mut tcp).await;
                    until_closed(&mut tcp).await;
                    (code, all_open.elapsed())
                })
                .await
                .ok()
            })
        })
        .collect();
    let mut closed = Vec::new();
    let mut codes = std::collections::BTreeMap::new();
    for task in tasks {
        if let Some((code, elapsed)) = task.await? {
            closed.push(elapsed);
            *codes
                .entry(code.map_or("none".to_string(), |c| c.to_string()))
                .or_insert(0) += 1;
        }
    }
    println!(
        "silent {count} closed {} close_codes {codes:?} time_to_close_ms(min p50 p99 max) {}",
        closed.len(),
        spread(&mut closed)
    );
    Ok(())
}

async fn probe(url: &str, seconds: u64) -> Result<(), BoxError> {
    let connecting = Instant::now();
    let mut ws = wsevents::connect(url).await?;
    let connect = connecting.elapsed();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rtts = Vec::new();
    let mut failures = 0;
    while Instant::now() < end {
        let sent = Instant::now();
        ws.send(Message::text("probe")).await?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(m))) if m.as_text() == Some("probe") => rtts.push(sent.elapsed()),
            _ => {
                failures += 1;
                ws = wsevents::connect(url).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "probe connect_ms {:.1} echoes {} failures {failures} rtt_ms(min p50 p99 max) {}",
        connect.as_secs_f64() * 1e3,
        rtts.len(),
        spread(&mut rtts)
    );
    let _ = ws.close(CloseCode::NORMAL, "").await;
    Ok(())
}

async fn cap(addr: &str, count: usize, hold_s: u64, answer_s: u64) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let attempts = (0..count).map(|i| async move {
        let Ok(mut tcp) = connect_from(addr, i, 8).await else {
            return ("connect-failed".to_string(), None);
        };
        if tcp
            .write_all(format!("{UPGRADE}\r\n").as_bytes())
            .await
            .is_err()
        {
            return ("write-failed".to_string(), None);
        }
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(answer_s), read_head(&mut tcp)).await {
            Ok(Some(head)) => {
                let status = head.get(9..12).unwrap_or("???").to_string();
                let retry = head.to_ascii_lowercase().contains("\r\nretry-after:");
                let label = if status == "503" && !retry {
                    "503-without-retry-after".to_string()
                } else {
                    status
                };
                let label = if sent.elapsed() > Duration::from_secs(1) {
                    format!("{label}-after-1s")
                } else {
                    label
                };
                (label, Some(tcp))
            }
            Ok(None) => ("closed-without-answer".to_string(), None),
            Err(_) => (format!("no-answer-in-{answer_s}s"), None),
        }
    });
    let start = Instant::now();
    let mut answers = std::collections::BTreeMap::new();
    let mut held = Vec::new();
    for (label, tcp) in futures_util::future::join_all(attempts).await {
        if label.starts_with("101") {
            held.extend(tcp);
        }
        *answers.entry(label).or_insert(0) += 1;
    }
    println!(
        "cap {count} attempts in {:.1} s answers {answers:?}",
        start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold_s)).await;
    drop(held);
    Ok(())
}

// ----- peers that do not read -----

async fn noread(addr: &str, hold_s: u64, push: bool) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let tcp = raw_client(TcpStream::connect(addr).await?, "").await?;
    let (rd, mut wr) = tcp.into_split();
    let mut pushed = 0usize;
    if push {
        let mut message = header(true, false, 0x2, 64 << 10);
        message.resize(message.len() + (64 << 10), b'x');
        loop {
            match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&message)).await {
                Ok(Ok(())) => pushed += message.len(),
                Ok(Err(_)) | Err(_) => break,
            }
            if pushed >= 1 << 30 {
                break;
            }
        }
    }
    println!("noread pushed_mib {} holding {hold_s} s", pushed >> 20);
    tokio::time::sleep(Duration::from_secs(hold_s)).await;
    drop((rd, wr));
    Ok(())
}

async fn flood_server(
    addr: &str,
    api: &str,
    bytes: u64,
    limit: Option<usize>,
) -> Result<(), BoxError> {
    let server = Server::builder(Acceptor::new()).bind(addr).await?;
    println!("flood-server listening on {}", server.local_addr());
    let chunk = bytes::Bytes::from(vec![b'z'; 64 << 10]);
    match api {
        "stream" => {
            while let Some((mut ws, _)) = server.accept_stream().await {
                let chunk = chunk.clone();
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while sent < bytes {
                        // Waits while 128 KiB (the write limit) are queued unwritten.
                        if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
                            break;
                        }
                        sent += chunk.len() as u64;
                    }
                    println!("flood-server stream sent_mib {}", sent >> 20);
                });
            }
        }
        "event" => {
            while let Some(ws) = server.accept().await {
                if let Some(limit) = limit {
                    ws.set_backpressure(wsevents::Backpressure::error(limit))?;
                }
                let chunk = chunk.clone();
                let driver = ws.clone();
                tokio::spawn(async move { driver.run().await });
                tokio::spawn(async move {
                    let (mut sent, mut refused) = (0u64, 0u64);
                    let mut last_error = String::new();
                    while sent < bytes {
                        // No waiting of our own: as fast as `send` takes it, so the
                        // memory held is the library's bound, not ours. A fresh buffer
                        // each time, as an application's messages are (clones of one
                        // `Bytes` would share one allocation and hide what is queued).
                        match ws.send(chunk.to_vec()) {
                            Ok(()) => sent += chunk.len() as u64,
                            Err(wsevents::Error::InvalidState) => break,
                            Err(e) => {
                                refused += 1;
                                last_error = e.to_string();
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        tokio::task::yield_now().await;
                    }
                    println!(
                        "flood-server event queued_mib {} refused {refused} buffered_kib {} last_error {last_error:?}",
                        sent >> 20,
                        ws.buffered_amount() >> 10
                    );
                });
            }
        }
        _ => return Err("flood-server: API is stream or event".into()),
    }
    Ok(())
}

// ----- over the limits -----

async fn limit(case: &str, addr: &str) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let start = Instant::now();
    let answer = match case {
        "head" => {
            let mut tcp = TcpStream::connect(addr).await?;
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Filler: ")
                .await?;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&vec![b'a'; 1 << 20]))
                    .await;
            match tokio::time::timeout(Duration::from_secs(5), read_head(&mut tcp)).await {
                Ok(Some(head)) => format!("HTTP {}", head.get(9..12).unwrap_or("???")),
                Ok(None) => "closed without an answer".into(),
                Err(_) => "no answer in 5 s".into(),
            }
        }
        "frame" => {
            let mut tcp = raw_client(TcpStream::connect(addr).await?, "").await?;
            tcp.write_all(&header(true, false, 0x2, 1 << 30)).await?;
            code_answer(&mut tcp).await
        }
        "message" => {
            // 1 MiB fragments (within the frame limit) until the server answers.
            let tcp = raw_client(TcpStream::connect(addr).await?, "").await?;
            let (mut rd, mut wr) = tcp.into_split();
            let writer = tokio::spawn(async move {
                let mut fragment = header(false, false, 0x2, 1 << 20);
                fragment.resize(fragment.len() + (1 << 20), b'm');
                let mut sent = 0u64;
                for i in 0..4096 {
                    if i == 1 {
                        fragment[0] = 0x00; // continuation
                    }
                    if wr.write_all(&fragment).await.is_err() {
                        break;
                    }
                    sent += 1 << 20;
                }
                sent
            });
            let code = loop {
                let mut b = [0u8; 2];
                if rd.read_exact(&mut b).await.is_err() {
                    break None;
                }
                let mut payload = vec![0; usize::from(b[1] & 0x7f)];
                rd.read_exact(&mut payload).await?;
                if b[0] & 0x0f == 0x8 {
                    break Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
            };
            writer.abort();
            match code {
                Some(code) => format!("close {code}"),
                None => "closed without a close frame".into(),
            }
        }
        "utf8" => {
            let mut tcp = raw_client(TcpStream::connect(addr).await?, "").await?;
            let mut frame = header(false, false, 0x1, 8);
            frame.extend_from_slice(b"hello \xc3\x28");
            tcp.write_all(&frame).await?;
            code_answer(&mut tcp).await
        }
        "bomb" => {
            let bomb = deflate_zeros(1 << 30);
            let mut tcp = raw_client(
                TcpStream::connect(addr).await?,
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            )
            .await?;
            let mut frame = header(true, true, 0x2, bomb.len());
            frame.extend_from_slice(&bomb);
            let start = Instant::now();
            let _ = tcp.write_all(&frame).await;
            let answer = code_answer(&mut tcp).await;
            println!(
                "limit bomb {answer} ({} KiB inflating to 1 GiB) in {:.1} ms",
                bomb.len() >> 10,
                start.elapsed().as_secs_f64() * 1e3
            );
            return Ok(());
        }
        _ => return Err("limit: CASE is head, frame, message, utf8 or bomb".into()),
    };
    println!(
        "limit {case} {answer} in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

async fn code_answer(tcp: &mut TcpStream) -> String {
    match tokio::time::timeout(Duration::from_secs(10), close_code(tcp)).await {
        Ok(Some(code)) => format!("close {code}"),
        Ok(None) => "closed without a close frame".into(),
        Err(_) => "no answer in 10 s".into(),
    }
}

// ----- peers that die -----

async fn half_message(addr: &str) -> Result<(), BoxError> {
    let addr = socket_addr(addr)?;
    let mut tcp = raw_client(TcpStream::connect(addr).await?, "").await?;
    tcp.write_all(&header(true, false, 0x2, 1 << 20)).await?;
    tcp.write_all(&vec![0u8; 256 << 10]).await?;
    println!("half-message ready");
    std::future::pending::<()>().await;
    Ok(())
}

// ----- many connections, churn -----

async fn many(url: &str, count: usize, hold_s: u64, sources: u8) -> Result<(), BoxError> {
    let addr = socket_addr(url)?;
    let url = url.to_owned();
    let start = Instant::now();
    let failed = Arc::new(AtomicUsize::new(0));
    let (go, _) = tokio::sync::broadcast::channel::<()>(1);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let (echoed_tx, mut echoed_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let connecting = Arc::new(tokio::sync::Semaphore::new(512));
    for i in 0..count {
        let url = url.clone();
        let mut go = go.subscribe();
        let opened_tx = opened_tx.clone();
        let echoed_tx = echoed_tx.clone();
        let permit = connecting.clone().acquire_owned().await?;
        tokio::spawn(async move {
            let opened = async {
                let tcp = connect_from(addr, i, sources).await.ok()?;
                ClientBuilder::new(&url).ok()?.handshake(tcp).await.ok()
            }
            .await;
            drop(permit);
            let Some(mut ws) = opened else {
                let _ = opened_tx.send(false).await;
                return;
            };
            let _ = opened_tx.send(true).await;
            // Hold: keep reading (and answering pings) until told to echo.
            let echoed = loop {
                tokio::select! {
                    _ = go.recv() => break true,
                    message = ws.next() => if !matches!(message, Some(Ok(_))) { break false },
                }
            } && async {
                ws.send(Message::text("still there?")).await.ok()?;
                loop {
                    match ws.next().await? {
                        Ok(m) if m.as_text() == Some("still there?") => return Some(()),
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
            }
            .await
            .is_some();
            let _ = echoed_tx.send(echoed).await;
            let _ = go.recv().await;
            let _ = ws.close(CloseCode::NORMAL, "").await;
        });
    }
    drop((opened_tx, echoed_tx));
    let mut opened = 0;
    for _ in 0..count {
        match opened_rx.recv().await {
            Some(true) => opened += 1,
            Some(false) => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            None => break,
        }
    }
    println!(
        "open {opened} failed {} in {:.1} s",
        failed.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold_s)).await;
    let echo_start = Instant::now();
    let _ = go.send(());
    let mut echoed = 0;
    for _ in 0..opened {
        if echoed_rx.recv().await == Some(true) {
            echoed += 1;
        }
    }
    println!(
        "echoed {echoed} in {:.1} s",
        echo_start.elapsed().as_secs_f64()
    );
    let _ = go.send(());
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn churn(url: &str, seconds: u64, concurrency: usize) -> Result<(), BoxError> {
    let addr = socket_addr(url)?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (url, done, failed) = (url.to_owned(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                i += concurrency;
                let round = async {
                    let tcp = connect_from(addr, i, 8).await.ok()?;
                    let mut ws = ClientBuilder::new(&url).ok()?.handshake(tcp).await.ok()?;
                    ws.send(Message::text("churn")).await.ok()?;
                    let echo = ws.next().await?.ok()?;
                    (echo.as_text() == Some("churn")).then_some(())?;
                    ws.close(CloseCode::NORMAL, "").await.ok()
                };
                match tokio::time::timeout(Duration::from_secs(10), round).await {
                    Ok(Some(_)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let start = Instant::now();
    let (mut last, mut last_at) = (0, Instant::now());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(10).min(end - Instant::now())).await;
        let now = done.load(Ordering::Relaxed);
        println!(
            "churn t {:.0} s rate {:.0}/s done {now} failed {}",
            start.elapsed().as_secs_f64(),
            (now - last) as f64 / last_at.elapsed().as_secs_f64(),
            failed.load(Ordering::Relaxed)
        );
        (last, last_at) = (now, Instant::now());
    }
    for worker in workers {
        worker.await?;
    }
    let total = done.load(Ordering::Relaxed);
    println!(
        "churn total {total} failed {} rate {:.0}/s",
        failed.load(Ordering::Relaxed),
        total as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
