//! Hostile peers against `wsevents serve`, CI-sized, measured from the outside: the
//! server is a child process, so its open descriptors (`/proc/PID/fd`) and memory
//! (`VmRSS`, `VmHWM` in `/proc/PID/status`) are its own. Slowloris handshakes, silent
//! peers closed by keepalive, a flood past the connection cap (503), a client that
//! never reads, a deflate bomb, a head over the limit, a client killed with SIGKILL in
//! the middle of a message. The large versions, with figures: `scripts/hostile-peers`.
//!
//! Raw peers mask with the key `00 00 00 00` (valid, and no XOR to spend time on).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsevents::Message;

mod support;

use support::Serve;

// ----- helpers: the server child's descriptors and memory, raw peers -----

/// What only these tests ask of a `serve` child.
impl Serve {
    /// Open descriptors of the server process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
    fn kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Wait until the server holds `fds` descriptors again; how long it took, or a
    /// panic with `what` after `limit`.
    async fn wait_fds(&self, fds: usize, limit: Duration, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.fds();
            if now == fds {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: the server still holds {now} descriptors, {fds} at the start, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "wsevents serve exited"
        );
    }
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Read an HTTP head byte by byte (so no frame byte after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(e) => panic!("the connection ended in the head {head:?}: {e}"),
        }
    }
    String::from_utf8(head).unwrap()
}

/// A raw peer that completed the opening handshake, offering `extra` headers.
async fn raw_client(addr: &str, extra: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("{UPGRADE}{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
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

/// Read server frames until a close frame; its code (pings and data are skipped).
async fn close_code(tcp: &mut TcpStream, limit: Duration) -> u16 {
    tokio::time::timeout(limit, async {
        loop {
            let b0 = tcp.read_u8().await.expect("a close frame before the end");
            let b1 = tcp.read_u8().await.unwrap();
            let len = match b1 & 0x7f {
                126 => u64::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            if b0 & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("no close frame in time")
}

/// One echo through our own client.
async fn echo_once(url: &str, text: &str) {
    let mut ws = wsevents::connect(url).await.unwrap();
    ws.send(Message::text(text.to_owned())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().as_text(), Some(text));
}

// ----- the opening handshake -----

/// Slowloris against `--handshake-timeout 1`: each is closed at about one second,
/// not before, and not later than the slack; a normal client echoes meanwhile.
#[tokio::test]
async fn serve_closes_slowloris_at_the_handshake_timeout() {
    let serve = Serve::start(&["--echo", "--handshake-timeout", "1"]);
    let fds = serve.fds();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let addr = serve.addr.clone();
        slow.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let start = Instant::now();
            let (mut rd, mut wr) = tcp.split();
            let trickle = async {
                for byte in UPGRADE.bytes().cycle().take(40) {
                    if wr.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_once(&serve.url("/"), "not slow").await;
    for task in slow {
        let elapsed = tokio::time::timeout(Duration::from_secs(4), task)
            .await
            .expect("a slowloris peer was still open 4 s after a 1 s handshake timeout")
            .unwrap();
        assert!(
            elapsed >= Duration::from_millis(900),
            "closed after {elapsed:?}: before the handshake timeout"
        );
    }
    serve
        .wait_fds(fds, Duration::from_secs(3), "after slowloris")
        .await;
}

/// `serve` reads the request head itself (for the page); one over its 16 KiB limit is
/// answered 431 like the library's acceptor does (`crates/wsevents/tests/hostile.rs`).
/// (Regression: until 6a35cb4 every error of `http::read_head` dropped the connection
/// without a word.)
#[tokio::test]
async fn serve_answers_a_head_over_the_limit_with_431() {
    let serve = Serve::start(&["--echo"]);
    let mut tcp = TcpStream::connect(&serve.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Filler: ")
        .await
        .unwrap();
    // Until the server stops reading (or answers): at most 64 KiB.
    let _ = tcp.write_all(&[b'a'; 64 << 10]).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "answer to a 64 KiB head: {answer:?}"
    );
}

// ----- keepalive -----

/// Peers that open and then neither read nor write are failed by keepalive: each finds
/// a ping, then a close frame with 1011, then the end, and the server's descriptors
/// return to where they were (the next test holds them to `ping_interval +
/// pong_timeout`; this one allows serve's 5 s `close_timeout` more).
#[tokio::test]
async fn serve_closes_silent_peers_by_keepalive() {
    let serve = Serve::start(&["--echo", "--ping-interval", "1", "--pong-timeout", "1"]);
    let fds = serve.fds();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(raw_client(&serve.addr, "").await);
    }
    assert_eq!(serve.fds(), fds + 20);
    let took = serve
        .wait_fds(fds, Duration::from_secs(1 + 1 + 5 + 3), "silent peers")
        .await;
    println!("20 silent peers released {took:?} after opening (ping 1 s + pong 1 s)");
    for tcp in &mut silent {
        assert_eq!(close_code(tcp, Duration::from_secs(1)).await, 1011);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}, {rest:?}");
    }
    echo_once(&serve.url("/"), "awake").await;
}

/// A peer failed by keepalive is presumed gone: its descriptor is released at
/// `ping_interval + pong_timeout` (plus slack), even if it reads nothing. (Regression:
/// until ebabb18 the teardown lingered for its EOF up to `close_timeout`, 5 s more.)
#[tokio::test]
async fn serve_releases_silent_peers_at_ping_plus_pong() {
    let serve = Serve::start(&["--echo", "--ping-interval", "1", "--pong-timeout", "1"]);
    let fds = serve.fds();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(raw_client(&serve.addr, "").await);
    }
    serve
        .wait_fds(
            fds,
            Duration::from_millis(1000 + 1000 + 1500),
            "silent peers",
        )
        .await;
}

/// A peer that answers the pings (our own client, reading) stays open past many
/// keepalive periods.
#[tokio::test]
async fn serve_keeps_peers_that_answer_pings() {
    let serve = Serve::start(&["--echo", "--ping-interval", "1", "--pong-timeout", "1"]);
    let mut ws = wsevents::connect(&serve.url("/")).await.unwrap();
    // Reading (and auto-ponging) for 4 s, then an echo.
    let read = tokio::time::timeout(Duration::from_secs(4), ws.next()).await;
    assert!(read.is_err(), "the connection ended: {read:?}");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().as_text(),
        Some("still here")
    );
}

// ----- the connection cap -----

/// Past `--max-connections`, upgrades are answered 503 with Retry-After, the open
/// connections keep echoing, and a freed place is taken again.
#[tokio::test]
async fn serve_answers_503_past_the_connection_cap_and_the_others_keep_echoing() {
    let mut serve = Serve::start(&["--echo", "--max-connections", "5"]);
    let url = serve.url("/");
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(wsevents::connect(&url).await.unwrap());
    }
    let mut refused = 0;
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(&serve.addr).await.unwrap();
        tcp.write_all(format!("{UPGRADE}\r\n").as_bytes())
            .await
            .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut tcp))
            .await
            .expect("no answer past the cap");
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nretry-after:"),
            "{head}"
        );
        refused += 1;
    }
    assert_eq!(refused, 50);
    serve.assert_alive();
    for (i, ws) in open.iter_mut().enumerate() {
        ws.send(Message::text(format!("#{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap().as_text(),
            Some(format!("#{i}").as_str())
        );
    }
    // One leaves: its place is free again.
    let ws = open.pop().unwrap();
    drop(ws);
    let start = Instant::now();
    loop {
        match wsevents::connect(&url).await {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(7),
                "a freed place was not given again: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----- memory a peer can make the server hold -----

/// A client that sends without ever reading its echoes: the echo sink waits at its
/// write limit (128 KiB), so the server stops reading too and its memory stays flat
/// while the client pushes up to 256 MiB.
#[tokio::test]
async fn serve_echo_to_a_client_that_never_reads_stays_bounded() {
    let serve = Serve::start(&["--echo", "--no-deflate"]);
    let tcp = raw_client(&serve.addr, "").await;
    let before = serve.kib("VmRSS");
    let (_rd, mut wr) = tcp.into_split();
    let payload = vec![b'x'; 64 << 10];
    let mut message = header(true, false, 0x2, payload.len());
    message.extend_from_slice(&payload);
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match tokio::time::timeout(Duration::from_secs(1), wr.write_all(&message)).await {
            Ok(Ok(())) => sent += message.len(),
            Ok(Err(e)) => panic!("the server ended the connection: {e}"),
            Err(_) => break, // the server stopped reading: backpressure
        }
    }
    let after = serve.kib("VmRSS");
    println!(
        "client never reads: {} MiB accepted from it, server RSS {before} -> {after} KiB",
        sent >> 20
    );
    assert!(
        sent < 64 << 20,
        "the server read {} MiB from a client that reads nothing",
        sent >> 20
    );
    assert!(
        after < before + 16 * 1024,
        "server RSS grew from {before} to {after} KiB"
    );
}

/// A chat member (event API) that never reads while another floods the room: it is
/// dropped past the room's 1 MiB rule, and the server's memory stays flat.
#[tokio::test]
async fn serve_chat_drops_a_member_that_never_reads() {
    let serve = Serve::start(&["--broadcast", "--no-deflate"]);
    let fds = serve.fds();
    let mut silent = raw_client(&serve.addr, "").await;
    let mut flooder = wsevents::connect(&serve.url("/")).await.unwrap();
    let before = serve.kib("VmRSS");
    let chunk = vec![7u8; 64 << 10];
    // 64 MiB through the room, reading our own copies back.
    for _ in 0..1024 {
        flooder.send(Message::binary(chunk.clone())).await.unwrap();
        flooder.next().await.unwrap().unwrap();
    }
    let after = serve.kib("VmRSS");
    println!("64 MiB to a member that never reads: server RSS {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "server RSS grew from {before} to {after} KiB"
    );
    assert_eq!(close_code(&mut silent, Duration::from_secs(10)).await, 1008);
    drop(silent);
    drop(flooder);
    serve
        .wait_fds(fds, Duration::from_secs(10), "after the flood")
        .await;
}

/// A deflate bomb (1 GiB of zeros in about 1 MiB) is failed with 1009 without the
/// server inflating it: its peak memory grows by less than the 64 MiB message limit
/// plus slack, not by a gigabyte.
#[tokio::test]
async fn serve_fails_a_deflate_bomb_with_1009_and_bounded_peak_memory() {
    let bomb = deflate_zeros(1 << 30);
    assert!(bomb.len() < 8 << 20, "{} bytes", bomb.len());

    let mut serve = Serve::start(&["--echo"]);
    let hwm_before = serve.kib("VmHWM");
    let mut tcp = raw_client(
        &serve.addr,
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    )
    .await;
    let mut frame = header(true, true, 0x2, bomb.len());
    frame.extend_from_slice(&bomb);
    let _ = tcp.write_all(&frame).await;
    assert_eq!(close_code(&mut tcp, Duration::from_secs(10)).await, 1009);
    let hwm_after = serve.kib("VmHWM");
    println!("deflate bomb: server peak RSS {hwm_before} -> {hwm_after} KiB");
    assert!(
        hwm_after < hwm_before + 192 * 1024,
        "peak RSS grew from {hwm_before} to {hwm_after} KiB"
    );
    serve.assert_alive();
    echo_once(&serve.url("/"), "after the bomb").await;
}

/// Raw DEFLATE of about `len` zero bytes, made by hand: one fixed
/// Huffman block, a literal 0, then matches of 258 at distance 1 (13 bits each), the
/// end of block and the 3 header bits of the empty stored block whose `00 00 ff ff` the
/// receiver adds (RFC 7692 §7.2.2).
fn deflate_zeros(len: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `count` bits of `value`, least significant first.
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, most significant bit first.
        fn code(&mut self, code: u64, count: u32) {
            let reversed = (0..count).fold(0, |r, i| (r << 1) | ((code >> i) & 1));
            self.put(reversed, count);
        }
    }
    let mut bits = Bits {
        out: Vec::with_capacity(len / 150),
        acc: 0,
        n: 0,
    };
    bits.put(0b010, 3); // BFINAL 0, BTYPE 01 (fixed Huffman)
    bits.code(0b0011_0000, 8); // literal 0
    for _ in 0..(len - 1) / 258 {
        bits.code(0b1100_0101, 8); // length code 285: 258
        bits.code(0, 5); // distance code 0: 1
    }
    bits.code(0, 7); // end of block
    bits.put(0, 3); // BFINAL 0, BTYPE 00: the stored block the receiver completes
    if bits.n > 0 {
        bits.put(0, 8 - bits.n);
    }
    bits.out
}

// ----- peers that die -----

/// The child side of the next test, run as its own process (this test binary again,
/// filtered to this test); without `HOSTILE_CHILD_ADDR` it does nothing.
#[tokio::test]
async fn child_sends_half_a_message_then_waits() {
    let Ok(addr) = std::env::var("HOSTILE_CHILD_ADDR") else {
        return;
    };
    let mut tcp = raw_client(&addr, "").await;
    // A 1 MiB binary frame of which 64 KiB arrive, plus a first fragment of a text
    // message on a second connection: two ways to be in the middle of a message.
    tcp.write_all(&header(true, false, 0x2, 1 << 20))
        .await
        .unwrap();
    tcp.write_all(&[0u8; 64 << 10]).await.unwrap();
    let mut second = raw_client(&addr, "").await;
    second
        .write_all(&header(false, false, 0x1, 5))
        .await
        .unwrap();
    second.write_all(b"hello").await.unwrap();
    println!("HOSTILE_CHILD_READY");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

/// A client process killed with SIGKILL in the middle of a message: the server ends
/// both its connections, its descriptors return to where they were, and it echoes.
#[tokio::test]
async fn serve_frees_a_client_killed_mid_message() {
    let serve = Serve::start(&["--echo"]);
    let fds = serve.fds();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_sends_half_a_message_then_waits",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HOSTILE_CHILD_ADDR", &serve.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("HOSTILE_CHILD_READY"));
    assert!(ready, "the child never got ready");
    assert_eq!(serve.fds(), fds + 2);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let took = serve
        .wait_fds(fds, Duration::from_secs(5), "after SIGKILL")
        .await;
    println!("client killed mid-message: server descriptors back in {took:?}");
    echo_once(&serve.url("/"), "after the kill").await;
}
