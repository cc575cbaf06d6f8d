//! permessage-deflate (RFC 7692) end to end over 127.0.0.1: each negotiation parameter
//! accepted and refused in both roles, a decompression bomb, context takeover across
//! 1,000 messages, and control frames between the fragments of a compressed message.
//!
//! Where a test needs to say something our own client or server never would (an
//! invalid offer, an invalid answer, a hand-fragmented compressed message), the other
//! end is a raw TCP peer writing the bytes itself; the compressed payloads are made
//! with flate2 (raw DEFLATE, sync flush, the RFC's 4-byte tail removed).
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use wsevents::{Acceptor, ClientBuilder, DeflateConfig, Error, Message, Server};

// ----- helpers: servers, raw peers, frames, DEFLATE -----

/// An echo server with `deflate` as its policy; returns the URL and a channel that
/// yields the `extensions` each accepted connection negotiated.
async fn echo_server(
    deflate: Option<DeflateConfig>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let server = Server::builder(Acceptor::new().deflate(deflate))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}", server.local_addr());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((mut ws, _)) = server.accept_stream().await {
            let _ = tx.send(ws.extensions().to_owned());
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// A text that compresses well and differs from message to message.
fn chatty(i: usize) -> String {
    format!(
        r#"{{"seq":{i},"user":"user-{}","room":"general","text":"message number {i} in the room, {}"}}"#,
        i % 17,
        "and the same words again ".repeat(8 + i % 5)
    )
}

/// Open a raw TCP connection and send a client handshake offering `extensions`;
/// returns the stream and the response head.
async fn raw_client(url: &str, extensions: Option<&str>) -> (TcpStream, String) {
    let addr = url.trim_start_matches("ws://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(extensions) = extensions {
        head += &format!("Sec-WebSocket-Extensions: {extensions}\r\n");
    }
    head += "\r\n";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let response = read_head(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    (tcp, response)
}

/// Read an HTTP head byte by byte (so no frame byte after it is consumed).
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// The value of `Sec-WebSocket-Extensions` in a response head, if any.
fn extensions_header(head: &str) -> Option<String> {
    head.lines()
        .find_map(|line| line.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_owned)
}

/// One frame: FIN, RSV1, opcode, payload; masked when `mask` (client to server).
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let mask_bit = u8::from(mask) << 7;
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A frame as read: (FIN, RSV1, opcode, payload). Frames from a server are unmasked.
async fn read_frame(tcp: &mut TcpStream) -> (bool, bool, u8, Vec<u8>) {
    let b0 = tcp.read_u8().await.unwrap();
    let b1 = tcp.read_u8().await.unwrap();
    let len = match b1 & 0x7f {
        126 => u64::from(tcp.read_u16().await.unwrap()),
        127 => tcp.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let key = if b1 & 0x80 != 0 {
        Some(tcp.read_u32().await.unwrap().to_be_bytes())
    } else {
        None
    };
    let mut payload = vec![0; len as usize];
    tcp.read_exact(&mut payload).await.unwrap();
    if let Some(key) = key {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f, payload)
}

/// Raw DEFLATE of `data` (window 15), sync-flushed, with the trailing
/// `00 00 ff ff` removed as RFC 7692 §7.2.1 says.
fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut rest = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1 << 16));
        }
        let before = compressor.total_in();
        compressor
            .compress_vec(rest, &mut out, FlushCompress::Sync)
            .unwrap();
        rest = &rest[(compressor.total_in() - before) as usize..];
        if rest.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflate one message's payload (the tail re-added).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut decompressor = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut rest = &input[..];
    let mut out = Vec::with_capacity(input.len() * 4);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let before = decompressor.total_in();
        decompressor
            .decompress_vec(rest, &mut out, FlushDecompress::Sync)
            .unwrap();
        rest = &rest[(decompressor.total_in() - before) as usize..];
        if rest.is_empty() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// A transport that counts the bytes written and read through it.
struct Counting {
    inner: TcpStream,
    written: Arc<AtomicUsize>,
    read: Arc<AtomicUsize>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read
            .fetch_add(buf.filled().len() - before, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ----- negotiation: accepted -----

/// Each parameter, asked by the client or imposed by the server's policy, ends up in
/// the answer both ends report, and messages round-trip under it.
#[tokio::test]
async fn each_parameter_is_negotiated_end_to_end() {
    let default = DeflateConfig::default;
    let cases: Vec<(DeflateConfig, DeflateConfig, &str)> = vec![
        (default(), default(), "permessage-deflate"),
        // Asked by the client.
        (
            DeflateConfig {
                server_no_context_takeover: true,
                ..default()
            },
            default(),
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            DeflateConfig {
                client_no_context_takeover: true,
                ..default()
            },
            default(),
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            DeflateConfig {
                server_max_window_bits: Some(10),
                ..default()
            },
            default(),
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            DeflateConfig {
                client_max_window_bits: Some(9),
                ..default()
            },
            default(),
            "permessage-deflate; client_max_window_bits=9",
        ),
        // Imposed by the server.
        (
            default(),
            DeflateConfig {
                server_no_context_takeover: true,
                ..default()
            },
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            default(),
            DeflateConfig {
                client_no_context_takeover: true,
                ..default()
            },
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            default(),
            DeflateConfig {
                server_max_window_bits: Some(11),
                ..default()
            },
            "permessage-deflate; server_max_window_bits=11",
        ),
        (
            default(),
            DeflateConfig {
                client_max_window_bits: Some(8),
                ..default()
            },
            "permessage-deflate; client_max_window_bits=8",
        ),
        // The smaller of what both want, and all four at once.
        (
            DeflateConfig {
                server_max_window_bits: Some(12),
                client_max_window_bits: Some(13),
                ..default()
            },
            DeflateConfig {
                server_max_window_bits: Some(9),
                client_max_window_bits: Some(10),
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..default()
            },
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=10",
        ),
    ];
    for (client, server, expected) in cases {
        let (url, mut negotiated) = echo_server(Some(server.clone())).await;
        let mut ws = ClientBuilder::new(&url)
            .unwrap()
            .deflate(Some(client.clone()))
            .connect()
            .await
            .unwrap();
        let case = format!("client {client:?} / server {server:?}");
        assert_eq!(ws.extensions(), expected, "client side, {case}");
        assert_eq!(
            negotiated.recv().await.unwrap(),
            expected,
            "server side, {case}"
        );
        for i in 0..20 {
            ws.send(Message::text(chatty(i))).await.unwrap();
            let back = ws.next().await.unwrap().unwrap();
            assert_eq!(back, Message::text(chatty(i)), "{case}");
        }
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
        ws.close(wsevents::CloseCode::NORMAL, "").await.unwrap();
    }
}

// ----- negotiation: refused -----

/// Either end with deflate off: no extension, and messages flow uncompressed.
#[tokio::test]
async fn deflate_off_on_either_side_means_no_extension() {
    for (client, server) in [
        (None, Some(DeflateConfig::default())),
        (Some(DeflateConfig::default()), None),
    ] {
        let (url, mut negotiated) = echo_server(server).await;
        let mut ws = ClientBuilder::new(&url)
            .unwrap()
            .deflate(client)
            .connect()
            .await
            .unwrap();
        assert_eq!(ws.extensions(), "");
        assert_eq!(negotiated.recv().await.unwrap(), "");
        ws.send(Message::text(chatty(1))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(chatty(1)));
    }
}

/// The server declines an offer with an invalid or duplicate parameter (RFC 7692
/// §5.1, §7.1) and the handshake still succeeds, without the extension; with several
/// offers it takes the first it can accept.
#[tokio::test]
async fn server_declines_invalid_offers_and_takes_the_next() {
    let (url, _) = echo_server(Some(DeflateConfig::default())).await;
    for offer in [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=\"08\"",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; x-unknown=1",
        "x-webkit-deflate-frame",
    ] {
        let (mut tcp, head) = raw_client(&url, Some(offer)).await;
        assert_eq!(
            extensions_header(&head),
            None,
            "offer {offer:?} was accepted"
        );
        // The connection works, uncompressed.
        tcp.write_all(&frame(true, false, 0x1, b"still here", true))
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut tcp).await,
            (true, false, 0x1, b"still here".to_vec())
        );
    }
    let (_, head) = raw_client(
        &url,
        Some(
            "permessage-deflate; server_max_window_bits=7, \
             permessage-deflate; server_max_window_bits=12; client_max_window_bits",
        ),
    )
    .await;
    assert_eq!(
        extensions_header(&head).as_deref(),
        Some("permessage-deflate; server_max_window_bits=12")
    );
}

/// A server whose policy limits the client's window declines a client that did not
/// offer `client_max_window_bits` (it could not honour the limit), and accepts one
/// that did.
#[tokio::test]
async fn a_client_window_limit_needs_the_clients_consent() {
    let (url, _) = echo_server(Some(DeflateConfig {
        client_max_window_bits: Some(10),
        ..DeflateConfig::default()
    }))
    .await;
    let (_, head) = raw_client(&url, Some("permessage-deflate")).await;
    assert_eq!(extensions_header(&head), None);
    let (_, head) = raw_client(&url, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(
        extensions_header(&head).as_deref(),
        Some("permessage-deflate; client_max_window_bits=10")
    );
}

/// The server side of a raw handshake: read the client's request and answer 101 with
/// `extensions` as its `Sec-WebSocket-Extensions`.
async fn answer_handshake(tcp: &mut TcpStream, extensions: &str) {
    let head = read_head(tcp).await;
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let accept = wsevents_proto::handshake::accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).await.unwrap();
}

/// A raw server answering each client with `answer`; returns its URL.
async fn answering_server(answer: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            answer_handshake(&mut tcp, answer).await;
        }
    });
    url
}

/// The client fails the connection on an answer it did not ask for or cannot honour
/// (RFC 7692 §7.1.1.2, §7.1.2).
#[tokio::test]
async fn client_refuses_invalid_answers() {
    let asks_server_limits = DeflateConfig {
        server_no_context_takeover: true,
        server_max_window_bits: Some(10),
        ..DeflateConfig::default()
    };
    let cases = [
        (
            "permessage-deflate; server_max_window_bits=7",
            DeflateConfig::default(),
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            DeflateConfig::default(),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            DeflateConfig::default(),
        ),
        (
            "permessage-deflate; client_max_window_bits=20",
            DeflateConfig::default(),
        ),
        ("permessage-deflate; x-unknown", DeflateConfig::default()),
        (
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            DeflateConfig::default(),
        ),
        (
            "permessage-deflate, permessage-deflate",
            DeflateConfig::default(),
        ),
        ("x-webkit-deflate-frame", DeflateConfig::default()),
        // Asked and not granted, or granted larger than asked. (An answer with
        // client_max_window_bits to an offer without it cannot arise from our client, which
        // always offers it; the core's unit tests cover that rule.)
        (
            "permessage-deflate; server_max_window_bits=10",
            asks_server_limits.clone(),
        ),
        (
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
            asks_server_limits.clone(),
        ),
    ];
    for (answer, config) in cases {
        let url = answering_server(answer).await;
        let result = ClientBuilder::new(&url)
            .unwrap()
            .deflate(Some(config))
            .connect()
            .await;
        assert!(
            matches!(result, Err(Error::Handshake(_))),
            "answer {answer:?}: {result:?}"
        );
    }
}

// ----- limits -----

/// The high-water mark of this process's resident memory, in bytes (each nextest test
/// is its own process).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// One frame of about 1 MiB that inflates to 1 GiB: the server closes with 1009 once
/// the output passes its 64 MiB limit, without ever holding the gigabyte, and goes on
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_closes_with_1009_without_allocating_it() {
    const GIB: usize = 1 << 30;
    let zeros = vec![0u8; 1 << 20];
    let mut compressor = Compress::new(Compression::best(), false);
    let mut bomb = Vec::with_capacity(2 << 20);
    for _ in 0..GIB / zeros.len() {
        let before = compressor.total_in();
        compressor
            .compress_vec(&zeros, &mut bomb, FlushCompress::None)
            .unwrap();
        assert_eq!((compressor.total_in() - before) as usize, zeros.len());
    }
    compressor
        .compress_vec(&[], &mut bomb, FlushCompress::Sync)
        .unwrap();
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 1_100_000, "{} bytes", bomb.len());

    let (url, _) = echo_server(Some(DeflateConfig::default())).await;
    let rss_before = peak_rss();
    let (mut tcp, head) = raw_client(&url, Some("permessage-deflate")).await;
    assert!(extensions_header(&head).is_some());
    tcp.write_all(&frame(true, true, 0x2, &bomb, true))
        .await
        .unwrap();
    let (fin, _, opcode, payload) = read_frame(&mut tcp).await;
    assert!(fin);
    assert_eq!(opcode, 0x8, "a close frame");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    let grown = peak_rss().saturating_sub(rss_before);
    eprintln!(
        "{} byte frame of 1 GiB: peak RSS grew by {grown} bytes",
        bomb.len()
    );
    assert!(grown < 256 << 20, "peak RSS grew by {grown} bytes");

    // The server goes on.
    let mut ws = wsevents::connect(&url).await.unwrap();
    ws.send(Message::text(chatty(7))).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(chatty(7)));
}

/// A message over the limit in a small compressed frame, on the client side: a server
/// sending 2 MiB of zeros in a 2 KiB frame to a client allowing 1 MiB gets 1009.
#[tokio::test]
async fn client_enforces_the_limit_on_the_inflated_size() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        answer_handshake(&mut tcp, "permessage-deflate").await;
        let payload = deflate(&vec![0u8; 2 << 20], 9);
        assert!(payload.len() < 4096);
        tcp.write_all(&frame(true, true, 0x2, &payload, false))
            .await
            .unwrap();
        read_frame(&mut tcp).await
    });
    let config = wsevents::Config {
        max_message_size: 1 << 20,
        ..wsevents::Config::default()
    };
    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .config(config)
        .connect()
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Err(_))));
    let (_, _, opcode, payload) = server.await.unwrap();
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
}

// ----- context takeover -----

/// Connect through a counting transport with `client` as the client's deflate
/// config, echo 1,000 similar messages, and return the bytes the client wrote.
async fn wire_bytes_for_1000_messages(
    client: Option<DeflateConfig>,
    server: Option<DeflateConfig>,
) -> usize {
    let (url, _) = echo_server(server).await;
    let tcp = TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner: tcp,
        written: written.clone(),
        read: Arc::new(AtomicUsize::new(0)),
    };
    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .deflate(client)
        .handshake(counting)
        .await
        .unwrap();
    let handshake = written.load(Ordering::Relaxed);
    // Ten in flight at a time, so both compressors carry state across messages that
    // interleave on the wire with the echoes.
    for batch in 0..100 {
        for i in batch * 10..batch * 10 + 10 {
            ws.feed(Message::text(chatty(i))).await.unwrap();
        }
        ws.flush().await.unwrap();
        for i in batch * 10..batch * 10 + 10 {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(chatty(i)));
        }
    }
    written.load(Ordering::Relaxed) - handshake
}

/// With context takeover (the default) each message is compressed against the ones
/// before it, so 1,000 similar messages cost far less than with the context reset
/// after each; both round-trip every message intact.
#[tokio::test]
async fn context_takeover_across_1000_messages() {
    let raw: usize = (0..1000).map(|i| chatty(i).len()).sum();
    let plain = wire_bytes_for_1000_messages(None, Some(DeflateConfig::default())).await;
    let takeover = wire_bytes_for_1000_messages(
        Some(DeflateConfig::default()),
        Some(DeflateConfig::default()),
    )
    .await;
    let reset = wire_bytes_for_1000_messages(
        Some(DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        }),
        Some(DeflateConfig::default()),
    )
    .await;
    eprintln!(
        "1,000 messages, {raw} bytes of text: uncompressed {plain} B on the wire, reset per message {reset} B, context takeover {takeover} B"
    );
    assert!(plain > raw);
    assert!(reset < plain / 2, "reset {reset} vs plain {plain}");
    assert!(takeover < reset / 2, "takeover {takeover} vs reset {reset}");
}

/// `send_uncompressed` puts a message on the wire as it is even on a deflate
/// connection; `send` compresses the same message.
#[tokio::test]
async fn send_uncompressed_skips_the_compressor() {
    let (url, _) = echo_server(Some(DeflateConfig::default())).await;
    let tcp = TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner: tcp,
        written: written.clone(),
        read: Arc::new(AtomicUsize::new(0)),
    };
    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .handshake(counting)
        .await
        .unwrap();
    assert_eq!(ws.extensions(), "permessage-deflate");
    let text = "compressible ".repeat(1000);
    let before = written.load(Ordering::Relaxed);
    ws.send_uncompressed(Message::text(text.clone()))
        .await
        .unwrap();
    let uncompressed = written.load(Ordering::Relaxed) - before;
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text(text.clone())
    );
    let before = written.load(Ordering::Relaxed);
    ws.send(Message::text(text.clone())).await.unwrap();
    let compressed = written.load(Ordering::Relaxed) - before;
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text(text.clone())
    );
    assert_eq!(
        uncompressed,
        text.len() + 4 + 4,
        "payload, 4-byte header, mask key"
    );
    assert!(compressed < 200, "{compressed} bytes");
}

// ----- control frames inside compressed fragmented messages -----

/// Server role: a compressed text message in three fragments (RSV1 on the first
/// only) with a ping before the second and the third: the server answers each ping
/// at once, then echoes the whole message, compressed.
#[tokio::test]
async fn server_answers_pings_between_compressed_fragments() {
    let (url, _) = echo_server(Some(DeflateConfig::default())).await;
    let (mut tcp, head) = raw_client(&url, Some("permessage-deflate")).await;
    assert_eq!(
        extensions_header(&head).as_deref(),
        Some("permessage-deflate")
    );
    let text = chatty(42).repeat(20);
    let compressed = deflate(text.as_bytes(), 6);
    let (a, rest) = compressed.split_at(compressed.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(false, true, 0x1, a, true);
    bytes.extend(frame(true, false, 0x9, b"ping one", true));
    bytes.extend(frame(false, false, 0x0, b, true));
    bytes.extend(frame(true, false, 0x9, b"ping two", true));
    bytes.extend(frame(true, false, 0x0, c, true));
    // Byte by byte is the hardest split for the parser.
    for byte in bytes {
        tcp.write_all(&[byte]).await.unwrap();
    }
    assert_eq!(
        read_frame(&mut tcp).await,
        (true, false, 0xA, b"ping one".to_vec())
    );
    assert_eq!(
        read_frame(&mut tcp).await,
        (true, false, 0xA, b"ping two".to_vec())
    );
    let (fin, rsv1, opcode, payload) = read_frame(&mut tcp).await;
    assert_eq!(
        (fin, rsv1, opcode),
        (true, true, 0x1),
        "a compressed text echo"
    );
    assert!(
        inflate(&payload) == text.as_bytes(),
        "the echo inflates to the text"
    );
}

/// Client role: the same from a raw server (unmasked frames, a pong in the middle
/// too); the client answers the ping, delivers the message, and a second compressed
/// message using the first one's context arrives intact.
#[tokio::test]
async fn client_handles_control_frames_between_compressed_fragments() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let first = chatty(1).repeat(10);
    let second = chatty(2).repeat(10);
    let (first_sent, second_sent) = (first.clone(), second.clone());
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        answer_handshake(&mut tcp, "permessage-deflate").await;
        // One compressor for both messages: context takeover.
        let mut compressor = Compress::new(Compression::default(), false);
        let mut messages = Vec::new();
        for text in [&first_sent, &second_sent] {
            let mut out = Vec::with_capacity(text.len() + 64);
            compressor
                .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
                .unwrap();
            out.truncate(out.len() - 4);
            messages.push(out);
        }
        let (a, b) = messages[0].split_at(messages[0].len() / 2);
        let mut bytes = frame(false, true, 0x1, a, false);
        bytes.extend(frame(true, false, 0x9, b"are you there", false));
        bytes.extend(frame(true, false, 0xA, b"unsolicited pong", false));
        bytes.extend(frame(true, false, 0x0, b, false));
        bytes.extend(frame(true, true, 0x1, &messages[1], false));
        tcp.write_all(&bytes).await.unwrap();
        let pong = read_frame(&mut tcp).await;
        assert!(
            messages[1].len() < second_sent.len() / 4,
            "context was used"
        );
        pong
    });
    let mut ws = ClientBuilder::new(&url).unwrap().connect().await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(first));
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(second));
    assert_eq!(
        server.await.unwrap(),
        (true, false, 0xA, b"are you there".to_vec())
    );
}
