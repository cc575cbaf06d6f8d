//! UTF-8 validation throughput of text messages: ASCII and mixed CJK text, whole and
//! in 1 KiB pieces (as fragments or partial reads deliver it), against std's
//! `str::from_utf8` as the reference.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsevents_proto::utf8::Utf8Validator;

fn text(kind: &str) -> Vec<u8> {
    let unit = match kind {
        "ascii" => "The quick brown fox jumps over the lazy dog. 0123456789 ",
        _ => "WebSocket 协议也是事件驱动的，客户应用程序不需要轮询服务。κόσμε ",
    };
    let mut out = Vec::new();
    while out.len() < 16 * 1024 {
        out.extend_from_slice(unit.as_bytes());
    }
    // Cut at a character boundary at or below 16 KiB.
    let mut end = 16 * 1024;
    while std::str::from_utf8(&out[..end]).is_err() {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8 16 KiB");
    for kind in ["ascii", "mixed CJK"] {
        let data = text(kind);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(format!("{kind}/whole"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(&data)).unwrap();
                v.finish().unwrap();
            })
        });
        group.bench_function(format!("{kind}/1 KiB pieces"), |b| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                for piece in black_box(&data).chunks(1024) {
                    v.feed(piece).unwrap();
                }
                v.finish().unwrap();
            })
        });
        group.bench_function(format!("{kind}/std from_utf8"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&data)).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
