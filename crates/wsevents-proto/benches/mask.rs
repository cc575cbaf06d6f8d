//! Masking throughput: the word-at-a-time (auto-vectorized) version against the
//! byte-wise reference, on the payload sizes that matter (a chat message, a control
//! frame, a 16 KiB chunk, a 1 MiB file).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsevents_proto::mask::{apply_mask, apply_mask_bytewise};

fn masking(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut group = c.benchmark_group("mask");
    for size in [20usize, 125, 16 * 1024, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fast", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), key, 1))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), key, 1))
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
