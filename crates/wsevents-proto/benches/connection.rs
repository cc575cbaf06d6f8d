//! End-to-end throughput of the core, no I/O: parsing a stream of small frames (the
//! chat / telemetry case) and receiving and sending a 1 MiB binary message (the file
//! case), in both roles.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use bytes::Buf;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use wsevents_proto::{Config, Connection, Event, Role};

/// `count` frames of `size` bytes as `sender` would write them.
fn stream(sender: Role, count: usize, size: usize) -> Vec<u8> {
    let mut conn = Connection::open(sender, Config::default());
    for _ in 0..count {
        conn.send_binary(vec![b'x'; size]).expect("open");
    }
    let mut out = Vec::new();
    while let Some(queue) = conn.poll_transmit() {
        let n = queue.chunk().len();
        out.extend_from_slice(queue.chunk());
        queue.advance(n);
    }
    out
}

fn receive_all(receiver: Role, wire: &[u8]) -> usize {
    let mut conn = Connection::open(receiver, Config::default());
    conn.handle_input(wire);
    let mut n = 0;
    while let Some(event) = conn.poll_event() {
        if let Event::Message(m) = event {
            n += black_box(m).payload().len();
        }
    }
    n
}

fn small_frames(c: &mut Criterion) {
    const COUNT: usize = 10_000;
    let mut group = c.benchmark_group("parse 20 B frames");
    group.throughput(Throughput::Elements(COUNT as u64));
    for (name, sender) in [
        ("server receives (masked)", Role::Client),
        ("client receives", Role::Server),
    ] {
        let wire = stream(sender, COUNT, 20);
        group.bench_function(name, |b| b.iter(|| receive_all(sender.peer(), &wire)));
    }
    group.finish();

    let mut group = c.benchmark_group("send 20 B frames");
    group.throughput(Throughput::Elements(COUNT as u64));
    for (name, role) in [
        ("server sends", Role::Server),
        ("client sends (masked)", Role::Client),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Connection::open(role, Config::default()),
                |conn| {
                    for _ in 0..COUNT {
                        conn.send_binary(&b"01234567890123456789"[..])
                            .expect("open");
                    }
                    let queue = conn.poll_transmit().expect("queued");
                    let n = queue.remaining();
                    queue.advance(n);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn one_mib_message(c: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    let mut group = c.benchmark_group("1 MiB binary message");
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, sender) in [
        ("server receives (masked)", Role::Client),
        ("client receives", Role::Server),
    ] {
        let wire = stream(sender, 1, SIZE);
        group.bench_function(name, |b| b.iter(|| receive_all(sender.peer(), &wire)));
    }
    let payload = bytes::Bytes::from(vec![7u8; SIZE]);
    for (name, role) in [
        ("server sends", Role::Server),
        ("client sends (masked)", Role::Client),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Connection::open(role, Config::default()),
                |conn| {
                    conn.send_binary(payload.clone()).expect("open");
                    let queue = conn.poll_transmit().expect("queued");
                    let n = queue.remaining();
                    queue.advance(n);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, small_frames, one_mib_message);
criterion_main!(benches);
