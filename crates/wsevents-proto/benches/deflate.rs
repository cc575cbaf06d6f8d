//! Compressed echo through the core, no I/O: a client and a server that negotiated
//! permessage-deflate pass text messages back and forth (client compresses and masks,
//! server unmasks and inflates, compresses the echo, client inflates), beside the same
//! echo without the extension and the bare codec doing the same compression work
//! (flate2 on zlib-rs, level 1, window 15, sync flush, context kept), so the figures
//! say what compression costs and what wsevents adds to it.
//!
//! The messages are chat-like text (words drawn from a small vocabulary, 64 different
//! messages in rotation), which deflate shrinks about 3x, as it does real JSON or prose.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use wsevents_proto::deflate::{DeflateConfig, PerMessageDeflate};
use wsevents_proto::handshake::ClientRequest;
use wsevents_proto::{Config, Connection, Event, Message, Role};

const WORDS: [&str; 32] = [
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
    "handler",
    "listener",
    "state",
    "buffer",
    "room",
    "user",
    "hello",
    "world",
    "json",
    "value",
    "true",
    "false",
    "null",
    "id",
    "time",
    "ready",
    "error",
    "code",
    "reason",
];

/// `count` different chat-like texts of `size` bytes.
fn texts(count: usize, size: usize) -> Vec<String> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            let mut text = String::with_capacity(size + 16);
            while text.len() < size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(WORDS[(x % 32) as usize]);
                text.push(if x & 0x300 == 0 { ',' } else { ' ' });
            }
            text.truncate(size);
            text
        })
        .collect()
}

fn drain(from: &mut Connection, to: &mut Connection) {
    while let Some(queue) = from.poll_transmit() {
        let n = queue.chunk().len();
        to.handle_input(queue.chunk());
        queue.advance(n);
    }
}

/// A client and a server, open, with `deflate` configured on both.
fn pair(deflate: bool) -> (Connection, Connection) {
    let config = Config {
        extensions: if deflate {
            vec![Arc::new(PerMessageDeflate::new(DeflateConfig::default()))]
        } else {
            Vec::new()
        },
        ..Config::default()
    };
    let now = Instant::now();
    let mut client = Connection::client(ClientRequest::new("bench", "/"), config.clone(), now);
    let mut server = Connection::server(config, now);
    drain(&mut client, &mut server);
    let Some(Event::Request(request)) = server.poll_event() else {
        panic!("no request");
    };
    server.accept(&request, None, &[]).unwrap();
    drain(&mut server, &mut client);
    while client.poll_event().is_some() {}
    while server.poll_event().is_some() {}
    assert_eq!(client.role(), Role::Client);
    assert_eq!(
        client.extensions().starts_with("permessage-deflate"),
        deflate
    );
    (client, server)
}

/// One echo: client sends `text`, the server receives it and sends it back, the
/// client receives the echo. Returns the echoed length.
fn echo(client: &mut Connection, server: &mut Connection, text: &str) -> usize {
    client.send(Message::text(text.to_owned())).unwrap();
    drain(client, server);
    let Some(Event::Message(message)) = server.poll_event() else {
        panic!("the server got no message");
    };
    server.send(message).unwrap();
    drain(server, client);
    let Some(Event::Message(echo)) = client.poll_event() else {
        panic!("the client got no echo");
    };
    black_box(echo).payload().len()
}

/// The bare codec doing the same four steps with the same settings.
struct Bare {
    compress: [Compress; 2],
    decompress: [Decompress; 2],
    wire: Vec<u8>,
    out: Vec<u8>,
}

impl Bare {
    fn new() -> Self {
        let c = || Compress::new_with_window_bits(Compression::new(1), false, 15);
        let d = || Decompress::new_with_window_bits(false, 15);
        Bare {
            compress: [c(), c()],
            decompress: [d(), d()],
            wire: Vec::new(),
            out: Vec::new(),
        }
    }

    fn one_way(&mut self, side: usize, data: &[u8]) {
        self.wire.clear();
        self.wire.reserve(data.len() + 64);
        self.compress[side]
            .compress_vec(data, &mut self.wire, FlushCompress::Sync)
            .unwrap();
        self.out.clear();
        self.out.reserve(data.len() + 64);
        self.decompress[side]
            .decompress_vec(&self.wire, &mut self.out, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(self.out.len(), data.len());
    }

    fn echo(&mut self, text: &str) -> usize {
        self.one_way(0, text.as_bytes());
        let back = std::mem::take(&mut self.out);
        self.one_way(1, &back);
        black_box(&self.out).len()
    }
}

fn compressed_echo(c: &mut Criterion) {
    for size in [1024, 16 * 1024] {
        let texts = texts(64, size);
        let mut group = c.benchmark_group(format!("echo {} KiB text", size / 1024));
        group.throughput(Throughput::Bytes(size as u64));
        for (name, deflate) in [("wsevents deflate", true), ("wsevents plain", false)] {
            let (mut client, mut server) = pair(deflate);
            let mut i = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    i += 1;
                    echo(&mut client, &mut server, &texts[i % texts.len()])
                })
            });
        }
        let mut bare = Bare::new();
        let mut i = 0;
        group.bench_function("flate2 alone", |b| {
            b.iter(|| {
                i += 1;
                bare.echo(&texts[i % texts.len()])
            })
        });
        group.finish();
    }
}

criterion_group!(benches, compressed_echo);
criterion_main!(benches);
