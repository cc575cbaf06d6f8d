//! Fuzz permessage-deflate's receiving path: a server connection that negotiated the
//! extension (window bits and context takeover picked by the first input byte) is fed
//! masked frames built from the input, so the fuzzer works on RSV1 flags, opcodes,
//! fragmentation and, above all, the compressed payloads themselves. Nothing may
//! panic, a message may never exceed the size limit however well it inflates, and
//! every connection ends in exactly one `Closed` event.
//!
//! Input: one parameter byte, then frames as `[flags, length, payload...]`, where
//! flags bit 7 is FIN, bit 6 RSV1, the low 4 bits the opcode.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wsevents_proto::deflate::{DeflateConfig, PerMessageDeflate};
use wsevents_proto::{Config, Connection, Event, Message};

const MAX_MESSAGE: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&params, mut rest)) = data.split_first() else {
        return;
    };
    let bits = 8 + (params & 0x07);
    let offer = format!(
        "permessage-deflate; client_max_window_bits={}{}",
        bits.max(9),
        if params & 0x08 != 0 { "; client_no_context_takeover" } else { "" }
    );
    let config = Config {
        max_message_size: MAX_MESSAGE,
        extensions: vec![Arc::new(PerMessageDeflate::new(DeflateConfig::default()))],
        ..Config::default()
    };
    let mut conn = Connection::server(config, Instant::now());
    let request = format!(
        "GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {offer}\r\n\r\n"
    );
    conn.handle_input(request.as_bytes());
    let Some(Event::Request(request)) = conn.poll_event() else {
        panic!("the handshake request was not parsed");
    };
    conn.accept(&request, None, &[]).expect("accept");
    assert!(conn.extensions().starts_with("permessage-deflate"));

    let mut wire = Vec::new();
    while let [flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        wire.push(flags & 0xcf);
        wire.push(0x80 | len as u8);
        let key = [0xa5, 0x5a, 0x3c, 0xc3];
        wire.extend_from_slice(&key);
        wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        rest = next;
    }
    let mut closed = 0;
    for piece in wire.chunks(usize::from(params >> 4) * 7 + 1) {
        conn.handle_input(piece);
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Message(Message::Text(text)) => assert!(text.len() <= MAX_MESSAGE),
                Event::Message(Message::Binary(data)) => assert!(data.len() <= MAX_MESSAGE),
                Event::Closed(_) => closed += 1,
                _ => {}
            }
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
});
