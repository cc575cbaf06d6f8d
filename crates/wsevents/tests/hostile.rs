//! Hostile peers against the library's `Server` over 127.0.0.1, CI-sized: slowloris
//! handshakes, a head over the limit (431), frames and messages over the limits (1009,
//! before the rest arrives), invalid UTF-8 (1007, on the first bad fragment), and a peer
//! that vanishes mid-frame. The large versions, with figures, are `scripts/hostile-peers`.
//!
//! Every peer here is a raw TCP socket writing the bytes itself, so it can say what our
//! own client never would; frames are masked with the key `00 00 00 00` (a valid key)
//! where the payload is large, so the test does not spend its time XOR-ing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsevents::{Acceptor, CloseCode, Config, Message, Server};

// ----- helpers: an echo server, raw peers, frames -----

/// An echo server with `config`; returns its address (`host:port`). Each connection
/// is served the way most code writes it, `while let Some(Ok(message))`: the first
/// error ends the loop and drops the stream.
async fn echo_server(config: Config) -> String {
    echo_server_with(config, false).await
}

/// The same, but the loop goes on past errors until the stream ends (`None`), as
/// `wsevents serve` does: what the library writes after an error still gets out.
async fn draining_echo_server(config: Config) -> String {
    echo_server_with(config, true).await
}

async fn echo_server_with(config: Config, drain: bool) -> String {
    let server = Server::builder(Acceptor::new().config(config))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            tokio::spawn(async move {
                while let Some(next) = ws.next().await {
                    let message = match next {
                        Ok(message) => message,
                        Err(_) if drain => continue,
                        Err(_) => break,
                    };
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Read an HTTP head byte by byte (so no frame byte after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// A raw TCP peer that completed the opening handshake.
async fn raw_client(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(UPGRADE.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// The header of a masked client frame (key `00 00 00 00`, so the payload goes as is).
fn header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
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

/// A whole masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(fin, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// Read server frames until a close frame; its code. Pings and data on the way are
/// skipped. Panics if the connection ends first or nothing comes within `limit`.
async fn close_code(tcp: &mut TcpStream, limit: Duration) -> u16 {
    tokio::time::timeout(limit, async {
        loop {
            let b0 = tcp.read_u8().await.expect("a close frame before the end");
            let b1 = tcp.read_u8().await.unwrap();
            assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
            let len = match b1 & 0x7f {
                126 => u64::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            if b0 & 0x0f == 0x8 {
                assert!(payload.len() >= 2, "the close frame has a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("no close frame in time")
}

/// Wait until the server ends the TCP connection (EOF or reset); bytes before the end
/// are discarded. `None` if it is still open after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ----- the opening handshake -----

/// Slowloris: peers that send their request one byte at a time are closed at the
/// handshake timeout (a deadline from the start, not an idle timer their trickle
/// resets), while a normal client keeps echoing.
#[tokio::test]
async fn slowloris_handshakes_are_closed_at_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let addr = echo_server(Config {
        handshake_timeout: Some(TIMEOUT),
        ..Config::default()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let start = Instant::now();
            let (mut rd, mut wr) = tcp.split();
            let trickle = async {
                for byte in UPGRADE.bytes().cycle().take(60) {
                    if wr.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                std::future::pending::<()>().await;
            };
            let end = async {
                let mut buf = [0u8; 256];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => return start.elapsed(),
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                () = trickle => unreachable!(),
                elapsed = end => elapsed,
            }
        }));
    }

    // A normal client echoes while they hang on.
    let mut ws = wsevents::connect(&format!("ws://{addr}/")).await.unwrap();
    let mut rtts = Vec::new();
    for i in 0..50 {
        let sent = Instant::now();
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        rtts.push(sent.elapsed());
        assert_eq!(echo.as_text(), Some(format!("ping {i}").as_str()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rtts.sort();

    for task in slow {
        let elapsed = tokio::time::timeout(TIMEOUT * 4, task)
            .await
            .expect("a slowloris peer was still open at 4x the handshake timeout")
            .unwrap();
        assert!(
            elapsed >= TIMEOUT - Duration::from_millis(100),
            "closed after {elapsed:?}, before the handshake timeout"
        );
    }
    println!(
        "echo while 8 slowloris hang on: p50 {:?}, p99 {:?}",
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );
}

/// A request head over `max_head_size` is refused with 431 as soon as the limit is
/// passed, without waiting for its end.
#[tokio::test]
async fn a_head_over_the_limit_is_refused_with_431() {
    let addr = echo_server(Config::default()).await;
    let limit = Config::default().handshake.max_head_size;
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Filler: ")
        .await
        .unwrap();
    // One header line that never ends, past the limit.
    tcp.write_all(&vec![b'a'; limit + 1024]).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut tcp))
        .await
        .expect("no answer to an endless head");
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// More header lines than `max_headers` is refused with 431 too.
#[tokio::test]
async fn too_many_header_lines_are_refused_with_431() {
    let addr = echo_server(Config::default()).await;
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..Config::default().handshake.max_headers + 1 {
        request += &format!("X-H{i}: v\r\n");
    }
    request += "\r\n";
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut tcp))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

// ----- frames and messages over the limits -----

/// A frame header announcing more than `max_frame_size` is failed with 1009 at once:
/// the server does not wait for (or buffer) the payload.
#[tokio::test]
async fn a_frame_over_the_limit_is_closed_with_1009_from_its_header() {
    let addr = echo_server(Config {
        max_frame_size: 64 << 10,
        // Out of the way: the frame limit alone must catch it.
        max_message_size: 4 << 30,
        ..Config::default()
    })
    .await;
    let mut tcp = raw_client(&addr).await;
    // 1 GiB announced; only the header and 1 KiB are ever sent.
    tcp.write_all(&header(true, 0x2, 1 << 30)).await.unwrap();
    tcp.write_all(&[0u8; 1024]).await.unwrap();
    assert_eq!(
        close_code(&mut tcp, Duration::from_secs(5)).await,
        CloseCode::MESSAGE_TOO_BIG.as_u16()
    );
    // The server then ends the connection (after its close timeout at most).
    assert!(
        closed_within(&mut tcp, Duration::from_secs(10))
            .await
            .is_some()
    );
}

/// A message in small fragments, each within the frame limit, is failed with 1009
/// once the fragments pass `max_message_size`: the server stops there, it does not
/// assemble what follows.
#[tokio::test]
async fn a_message_over_the_limit_in_small_fragments_is_closed_with_1009() {
    const LIMIT: usize = 256 << 10;
    let addr = echo_server(Config {
        max_message_size: LIMIT,
        ..Config::default()
    })
    .await;
    let tcp = raw_client(&addr).await;
    let (mut rd, mut wr) = tcp.into_split();
    let chunk = vec![b'x'; 16 << 10];
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        let mut first = true;
        // Keep sending fragments (up to 64 MiB) until the server stops reading.
        while sent < 64 << 20 {
            let opcode = if first { 0x2 } else { 0x0 };
            first = false;
            if wr.write_all(&frame(false, opcode, &chunk)).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let tcp_rd = async {
        let b0 = rd.read_u8().await.unwrap();
        let b1 = rd.read_u8().await.unwrap();
        let mut payload = vec![0; usize::from(b1 & 0x7f)];
        rd.read_exact(&mut payload).await.unwrap();
        (b0 & 0x0f, u16::from_be_bytes([payload[0], payload[1]]))
    };
    let (opcode, code) = tokio::time::timeout(Duration::from_secs(10), tcp_rd)
        .await
        .expect("no close frame");
    assert_eq!(opcode, 0x8);
    assert_eq!(code, CloseCode::MESSAGE_TOO_BIG.as_u16());
    drop(rd);
    writer.abort();
}

// ----- invalid UTF-8 -----

/// An invalid byte in a text frame fails the connection with 1007.
#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let addr = echo_server(Config::default()).await;
    let mut tcp = raw_client(&addr).await;
    tcp.write_all(&frame(true, 0x1, b"caf\xc3\x28"))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut tcp, Duration::from_secs(5)).await,
        CloseCode::INVALID_PAYLOAD.as_u16()
    );
}

/// Fail fast: an invalid byte in the *first* fragment of a text message is found at
/// once, while the message is still open (its last fragment never comes).
#[tokio::test]
async fn invalid_utf8_in_an_unfinished_text_message_is_closed_with_1007_at_once() {
    let addr = echo_server(Config::default()).await;
    let mut tcp = raw_client(&addr).await;
    tcp.write_all(&frame(false, 0x1, b"hello \xff"))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut tcp, Duration::from_secs(5)).await,
        CloseCode::INVALID_PAYLOAD.as_u16()
    );
}

/// A character split across two fragments is valid; its second half wrong is 1007.
#[tokio::test]
async fn utf8_split_across_fragments_is_checked_across_the_split() {
    let addr = echo_server(Config::default()).await;
    let mut tcp = raw_client(&addr).await;
    // "é" = c3 a9, split: echoed whole.
    tcp.write_all(&frame(false, 0x1, b"caf\xc3")).await.unwrap();
    tcp.write_all(&frame(true, 0x0, b"\xa9")).await.unwrap();
    let b0 = tcp.read_u8().await.unwrap();
    let len = tcp.read_u8().await.unwrap();
    let mut payload = vec![0; usize::from(len)];
    tcp.read_exact(&mut payload).await.unwrap();
    assert_eq!((b0, payload.as_slice()), (0x81, "café".as_bytes()));
    // c3 then 28: not a continuation byte.
    tcp.write_all(&frame(false, 0x1, b"caf\xc3")).await.unwrap();
    tcp.write_all(&frame(true, 0x0, b"\x28")).await.unwrap();
    assert_eq!(
        close_code(&mut tcp, Duration::from_secs(5)).await,
        CloseCode::INVALID_PAYLOAD.as_u16()
    );
}

// ----- peers that vanish -----

/// Many peers that stop in the middle of a frame, half of them with a FIN, half with a
/// reset (as a killed process's socket with unread data does): the server ends every
/// one of those connections (each stream yields its end), and keeps echoing.
#[tokio::test]
async fn peers_gone_mid_frame_are_ended_and_the_server_keeps_echoing() {
    let server = Server::builder(Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    // Connections ended on the server, watched.
    let (counter, mut ended) = tokio::sync::watch::channel(0usize);
    let counter = Arc::new(counter);
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                counter.send_modify(|n| *n += 1);
            });
        }
    });
    for i in 0..50 {
        let mut tcp = raw_client(&addr).await;
        // 100 bytes announced, 10 sent.
        tcp.write_all(&header(true, 0x2, 100)).await.unwrap();
        tcp.write_all(&[0u8; 10]).await.unwrap();
        if i % 2 == 0 {
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).unwrap();
        }
        drop(tcp);
    }
    let all_ended = ended.wait_for(|n| *n >= 50);
    if tokio::time::timeout(Duration::from_secs(5), all_ended)
        .await
        .is_err()
    {
        panic!(
            "{} of 50 vanished peers ended on the server after 5 s",
            *ended.borrow()
        );
    }
    let mut ws = wsevents::connect(&format!("ws://{addr}/")).await.unwrap();
    ws.send(Message::text("still there")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().as_text(),
        Some("still there")
    );
}

// ----- peers that never read -----

/// A server feeding (not flushing) messages to a peer that never reads: once the
/// kernel's buffers are full, `feed` waits with at most the write limit (128 KiB) plus
/// one message queued, however much more the server has to send.
#[tokio::test]
async fn the_sink_waits_at_its_write_limit_for_a_peer_that_never_reads() {
    let server = Server::builder(Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let _silent = tokio::spawn(async move {
        let tcp = raw_client(&addr).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let (mut ws, _) = server.accept_stream().await.unwrap();
    const MESSAGE: usize = 64 << 10;
    let mut fed = 0usize;
    let blocked = loop {
        let message = Message::binary(vec![b'x'; MESSAGE]);
        match tokio::time::timeout(Duration::from_secs(1), ws.feed(message)).await {
            Ok(result) => result.unwrap(),
            Err(_) => break true,
        }
        fed += MESSAGE;
        if fed >= 256 << 20 {
            break false;
        }
    };
    assert!(blocked, "fed 256 MiB to a peer that reads nothing");
    let queued = ws.buffered_amount();
    println!(
        "sink to a peer that never reads: {} KiB taken, {} KiB queued when it waits",
        fed >> 10,
        queued >> 10
    );
    assert!(
        queued <= wsevents::DEFAULT_WRITE_LIMIT + MESSAGE + 64,
        "{queued} bytes queued"
    );
}

// ----- keepalive and idleness -----

fn keepalive(ping: u64, pong: u64) -> Config {
    Config {
        ping_interval: Some(Duration::from_millis(ping)),
        pong_timeout: Some(Duration::from_millis(pong)),
        ..Config::default()
    }
}

/// Read one server frame: (opcode, payload).
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let b0 = tcp.read_u8().await.ok()?;
    let b1 = tcp.read_u8().await.ok()?;
    let len = match b1 & 0x7f {
        126 => u64::from(tcp.read_u16().await.ok()?),
        127 => tcp.read_u64().await.ok()?,
        n => u64::from(n),
    };
    let mut payload = vec![0; len as usize];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((b0 & 0x0f, payload))
}

/// Peers that open and then send nothing are pinged after `ping_interval`, failed with
/// 1011 after `pong_timeout` more, and their TCP connection ends right then (the close
/// handshake is not waited for: the peer is presumed gone).
#[tokio::test]
async fn silent_peers_are_failed_by_keepalive_at_ping_plus_pong() {
    silent_peers_get_a_ping_then_1011(draining_echo_server(keepalive(500, 500)).await).await;
}

/// The same with the common `while let Some(Ok(message))` loop, which stops at the
/// error: like a protocol error's close frame, the keepalive's 1011 is written before
/// `Error::Timeout` reaches the caller. (Regression: until ebabb18 the 1011 that
/// `handle_timeout` queued was still unwritten when the error was handed out, and a
/// loop that stopped there left the peer a bare EOF.)
#[tokio::test]
async fn keepalive_failure_writes_its_1011_before_reporting_the_error() {
    silent_peers_get_a_ping_then_1011(echo_server(keepalive(500, 500)).await).await;
}

async fn silent_peers_get_a_ping_then_1011(addr: String) {
    let mut peers = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        peers.push(tokio::spawn(async move {
            let mut tcp = raw_client(&addr).await;
            let opened = Instant::now();
            let mut frames = Vec::new();
            let ended = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some((opcode, payload)) = read_frame(&mut tcp).await {
                    frames.push((opcode, payload, opened.elapsed()));
                }
                opened.elapsed()
            })
            .await
            .expect("a silent peer still open 5 s after ping 0.5 s + pong 0.5 s");
            (frames, ended)
        }));
    }
    for peer in peers {
        let (frames, ended) = peer.await.unwrap();
        let opcodes: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(opcodes, [0x9, 0x8], "a ping, then a close: {frames:?}");
        assert_eq!(frames[1].1[..2], 1011u16.to_be_bytes());
        let (ping_at, close_at) = (frames[0].2, frames[1].2);
        assert!(
            ping_at >= Duration::from_millis(450),
            "pinged after {ping_at:?}"
        );
        assert!(
            close_at >= Duration::from_millis(950),
            "failed after {close_at:?}, before ping + pong"
        );
        assert!(
            ended < close_at + Duration::from_secs(1),
            "the TCP connection outlived the close frame: {ended:?} vs {close_at:?}"
        );
    }
}

/// A peer that answers the pings (our own client: reading answers them) stays open
/// across many keepalive periods and still echoes.
#[tokio::test]
async fn peers_that_answer_pings_stay_open() {
    let addr = echo_server(keepalive(200, 200)).await;
    let mut ws = wsevents::connect(&format!("ws://{addr}/")).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    assert!(read.is_err(), "the connection ended: {read:?}");
    ws.send(Message::text("awake")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().as_text(), Some("awake"));
}

/// A peer that keeps the connection busy with a frame it never finishes, one byte at a
/// time: keepalive is satisfied (bytes arrive), but partial frames are no data, so
/// `idle_timeout` closes it with 1001.
#[tokio::test]
async fn a_frame_trickled_forever_is_closed_by_the_idle_timeout() {
    let addr = echo_server(Config {
        idle_timeout: Some(Duration::from_millis(600)),
        ..keepalive(200, 200)
    })
    .await;
    let tcp = raw_client(&addr).await;
    let opened = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        let mut frame = header(true, 0x2, 1 << 20);
        frame.resize(frame.len() + (1 << 20), 0);
        for byte in frame {
            if wr.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let b0 = rd.read_u8().await.unwrap();
            let b1 = rd.read_u8().await.unwrap();
            let mut payload = vec![0; usize::from(b1 & 0x7f)];
            rd.read_exact(&mut payload).await.unwrap();
            if b0 & 0x0f == 0x8 {
                return (
                    u16::from_be_bytes([payload[0], payload[1]]),
                    opened.elapsed(),
                );
            }
        }
    })
    .await
    .expect("no close 5 s after a 0.6 s idle timeout");
    trickle.abort();
    assert_eq!(close.0, CloseCode::GOING_AWAY.as_u16());
    assert!(
        close.1 >= Duration::from_millis(550),
        "closed after {:?}",
        close.1
    );
}
