//! Fuzz the frame parser and the connection's reading path: arbitrary bytes, in
//! arbitrary pieces, into an open client and an open server. Nothing may panic, and
//! every failure must come out as an `Error` event followed by exactly one `Closed`.
//!
//! Time passes too: the connection opens at a fake `now` with short keepalive, pong,
//! idle and close timeouts, and before each piece the clock moves on by 0–1.5 s (from
//! the piece's first byte), firing whatever deadline is due, so pings, keepalive
//! failures, idle closes and close timeouts interleave with arbitrary input.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wsevents_proto::frame::FrameHeader;
use wsevents_proto::{Config, Connection, Event, Role};

fuzz_target!(|data: &[u8]| {
    let _ = FrameHeader::decode(data);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let stream_fragments = split & 0x80 != 0;
    for role in [Role::Client, Role::Server] {
        let config = Config {
            stream_fragments,
            max_frame_size: 1 << 16,
            max_message_size: 1 << 17,
            ping_interval: Some(Duration::from_secs(1)),
            pong_timeout: Some(Duration::from_secs(1)),
            idle_timeout: Some(Duration::from_secs(3)),
            close_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        };
        let mut now = Instant::now();
        let mut conn = Connection::open_at(role, config, now);
        let mut closed = 0;
        for piece in rest.chunks(usize::from(split & 0x7f) + 1) {
            now += Duration::from_millis(u64::from(piece[0] & 0x0f) * 100);
            if conn.poll_timeout().is_some_and(|deadline| deadline <= now) {
                conn.handle_timeout(now);
            }
            conn.handle_input(piece);
            while let Some(event) = conn.poll_event() {
                closed += usize::from(matches!(event, Event::Closed(_)));
            }
            while let Some(out) = conn.poll_transmit() {
                let n = bytes::Buf::remaining(out);
                bytes::Buf::advance(out, n);
            }
        }
        conn.handle_eof();
        while let Some(event) = conn.poll_event() {
            closed += usize::from(matches!(event, Event::Closed(_)));
        }
        assert_eq!(closed, 1, "exactly one Closed event");
    }
});
