//! Fuzz the frame parser and the connection's reading path: arbitrary bytes, in
//! arbitrary pieces, into an open client and an open server. Nothing may panic, and
//! every failure must come out as an `Error` event followed by exactly one `Closed`.
#![no_main]

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
            ..Config::default()
        };
        let mut conn = Connection::open(role, config);
        let mut closed = 0;
        for piece in rest.chunks(usize::from(split & 0x7f) + 1) {
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
