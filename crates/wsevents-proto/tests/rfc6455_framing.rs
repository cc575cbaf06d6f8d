//! RFC 6455 §5: framing, masking, fragmentation, control frames and data, by role.
#![allow(clippy::unwrap_used)]

mod util;

use bytes::Bytes;
use util::*;
use wsevents_proto::{CloseCode, Config, Event, Message, MessageKind, State};

// ----- §5.7 examples -----

#[test]
fn client_receives_unmasked_hello() {
    let (_, events) = client_receives(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(messages(&events), [Message::text("Hello")]);
}

#[test]
fn server_receives_masked_hello() {
    let (_, events) = server_receives(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    assert_eq!(messages(&events), [Message::text("Hello")]);
}

#[test]
fn client_receives_fragmented_hel_lo() {
    let (_, events) = client_receives(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    assert_eq!(messages(&events), [Message::text("Hello")]);
}

#[test]
fn client_receives_ping_and_pongs_with_its_payload() {
    let (mut client, events) = client_receives(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert!(matches!(&events[..], [Event::Ping(p)] if p == &b"Hello"[..]));
    let frames = parse_frames(&transmitted(&mut client));
    assert_eq!(frames, [(0x8A, b"Hello".to_vec())]);
}

#[test]
fn server_receives_masked_pong() {
    let (_, events) = server_receives(&[
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    assert!(
        matches!(&events[..], [Event::Pong(p)] if p.payload == b"Hello"[..] && p.ping_sent_at.is_none())
    );
}

#[test]
fn client_receives_256_byte_binary_with_16_bit_length() {
    let mut wire = vec![0x82, 0x7E, 0x01, 0x00];
    wire.extend((0..=255u8).collect::<Vec<_>>());
    let (_, events) = client_receives(&wire);
    assert_eq!(
        messages(&events),
        [Message::binary((0..=255u8).collect::<Vec<_>>())]
    );
}

#[test]
fn client_receives_64_kib_binary_with_64_bit_length() {
    let mut wire = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
    wire.extend(vec![0xAB; 65536]);
    let (_, events) = client_receives(&wire);
    assert_eq!(messages(&events), [Message::binary(vec![0xAB; 65536])]);
}

#[test]
fn server_sends_the_rfc_frames_unmasked() {
    let mut server =
        wsevents_proto::Connection::open(wsevents_proto::Role::Server, Config::default());
    server.send_text("Hello").unwrap();
    server.send_binary(vec![0u8; 256]).unwrap();
    server.send_binary(vec![0u8; 65536]).unwrap();
    let wire = transmitted(&mut server);
    assert_eq!(&wire[..7], [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(&wire[7..11], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(
        &wire[11 + 256..11 + 256 + 10],
        [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
    );
}

#[test]
fn client_sends_masked_frames_with_fresh_keys() {
    let mut client =
        wsevents_proto::Connection::open(wsevents_proto::Role::Client, Config::default());
    client.send_text("Hello").unwrap();
    client.send_text("Hello").unwrap();
    let wire = transmitted(&mut client);
    assert_eq!(wire.len(), 22);
    assert_eq!(&wire[..2], [0x81, 0x85]);
    assert_ne!(&wire[2..6], &wire[13..17], "each frame gets its own key");
    assert_eq!(
        parse_frames(&wire),
        [(0x81, b"Hello".to_vec()), (0x81, b"Hello".to_vec())]
    );
}

// ----- control frames inside fragmented messages -----

#[test]
fn server_receives_ping_between_fragments() {
    let mut wire = client_frame(0x01, b"Hel");
    wire.extend(client_frame(0x89, b"p"));
    wire.extend(client_frame(0x80, b"lo"));
    let (mut server, events) = server_receives(&wire);
    assert!(matches!(&events[0], Event::Ping(p) if p == &b"p"[..]));
    assert_eq!(messages(&events), [Message::text("Hello")]);
    assert_eq!(
        parse_frames(&transmitted(&mut server)),
        [(0x8A, b"p".to_vec())]
    );
}

#[test]
fn only_the_latest_of_several_pings_is_owed_a_pong() {
    let mut wire = client_frame(0x89, b"1");
    wire.extend(client_frame(0x89, b"2"));
    wire.extend(client_frame(0x89, b"3"));
    let (mut server, events) = server_receives(&wire);
    assert_eq!(events.len(), 3);
    assert_eq!(
        parse_frames(&transmitted(&mut server)),
        [(0x8A, b"3".to_vec())]
    );
}

#[test]
fn auto_pong_can_be_turned_off() {
    let config = Config {
        auto_pong: false,
        ..Config::default()
    };
    let (mut server, events) = server_receives_with(config, &client_frame(0x89, b"x"));
    assert_eq!(events.len(), 1);
    assert!(transmitted(&mut server).is_empty());
}

// ----- framing violations, each with its close code -----

#[track_caller]
fn server_fails(input: &[u8], code: CloseCode) {
    let (mut server, events) = server_receives(input);
    assert_connection_failing(&mut server, &events, code);
}

#[track_caller]
fn client_fails(input: &[u8], code: CloseCode) {
    let (mut client, events) = client_receives(input);
    assert_connection_failing(&mut client, &events, code);
}

#[test]
fn server_refuses_reserved_bits_without_extension() {
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        server_fails(&client_frame(0x81 | rsv, b"x"), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn client_refuses_reserved_bits_without_extension() {
    client_fails(&server_frame(0xC1, b"x"), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_reserved_opcodes() {
    for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        server_fails(&client_frame(0x80 | op, b""), CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn server_refuses_fragmented_control_frame() {
    server_fails(&client_frame(0x09, b"x"), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_control_frame_over_125_bytes() {
    server_fails(&client_frame(0x89, &[0; 126]), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_non_minimal_length() {
    server_fails(
        &[0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4],
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn server_refuses_64_bit_length_with_top_bit() {
    server_fails(
        &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
        CloseCode::PROTOCOL_ERROR,
    );
}

#[test]
fn server_refuses_unmasked_frame() {
    server_fails(&server_frame(0x81, b"hi"), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_may_accept_unmasked_frames_when_told_to() {
    let config = Config {
        danger_accept_unmasked_frames: true,
        ..Config::default()
    };
    let (_, events) = server_receives_with(config, &server_frame(0x81, b"hi"));
    assert_eq!(messages(&events), [Message::text("hi")]);
}

#[test]
fn client_refuses_masked_frame() {
    client_fails(&client_frame(0x81, b"hi"), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_continuation_without_message() {
    server_fails(&client_frame(0x80, b"x"), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_new_message_inside_fragmented_one() {
    let mut wire = client_frame(0x01, b"a");
    wire.extend(client_frame(0x81, b"b"));
    server_fails(&wire, CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_frame_over_the_size_limit_before_reading_it() {
    let config = Config {
        max_frame_size: 100,
        ..Config::default()
    };
    // Only the header of a 1000-byte frame arrives: the limit is enforced at once.
    let (mut server, events) = server_receives_with(config, &[0x82, 0xFE, 0x03, 0xE8, 1, 2, 3, 4]);
    assert_connection_failing(&mut server, &events, CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn server_refuses_message_over_the_size_limit_across_fragments() {
    let config = Config {
        max_message_size: 10,
        ..Config::default()
    };
    let mut wire = client_frame(0x02, &[0; 6]);
    wire.extend(client_frame(0x80, &[0; 6]));
    let (mut server, events) = server_receives_with(config, &wire);
    assert_connection_failing(&mut server, &events, CloseCode::MESSAGE_TOO_BIG);
}

// ----- UTF-8 (§8.1) -----

#[test]
fn server_refuses_invalid_utf8_in_one_frame() {
    server_fails(
        &client_frame(0x81, &[0xce, 0xba, 0xff]),
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn invalid_utf8_split_across_fragments_fails_before_the_message_ends() {
    // κόσμε then the start of a surrogate (ed a0 80), split across fragments; the
    // final fragment never arrives, and still the connection fails.
    let mut wire = client_frame(
        0x01,
        &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xce, 0xbc, 0xce, 0xb5, 0xed],
    );
    wire.extend(client_frame(0x00, &[0xa0, 0x80]));
    server_fails(&wire, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn invalid_utf8_fails_inside_a_frame_before_the_frame_ends() {
    // A 100-byte text frame whose 3rd byte is invalid; only 10 bytes arrived.
    let mut payload = vec![b'a'; 100];
    payload[2] = 0xff;
    let wire = client_frame(0x81, &payload);
    server_fails(&wire[..16], CloseCode::INVALID_PAYLOAD);
}

#[test]
fn valid_utf8_split_inside_a_character_across_fragments_is_accepted() {
    let text = "κόσμε😀";
    let bytes = text.as_bytes();
    for cut in 0..=bytes.len() {
        let mut wire = client_frame(0x01, &bytes[..cut]);
        wire.extend(client_frame(0x80, &bytes[cut..]));
        let (_, events) = server_receives(&wire);
        assert_eq!(messages(&events), [Message::text(text)], "cut at {cut}");
    }
}

#[test]
fn text_ending_inside_a_character_is_refused() {
    server_fails(
        &client_frame(0x81, &[0xe2, 0x82]),
        CloseCode::INVALID_PAYLOAD,
    );
}

#[test]
fn binary_is_never_checked_as_utf8() {
    let (_, events) = server_receives(&client_frame(0x82, &[0xff, 0xfe]));
    assert_eq!(messages(&events), [Message::binary(vec![0xff, 0xfe])]);
}

// ----- streaming fragments -----

#[test]
fn server_streams_fragments_when_asked() {
    let config = Config {
        stream_fragments: true,
        ..Config::default()
    };
    let mut wire = client_frame(0x02, b"ab");
    wire.extend(client_frame(0x00, b"cd"));
    wire.extend(client_frame(0x80, b"ef"));
    let (_, events) = server_receives_with(config, &wire);
    let fragments: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Fragment(f) => (f.kind, f.data.clone(), f.first, f.fin),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        fragments,
        [
            (MessageKind::Binary, Bytes::from_static(b"ab"), true, false),
            (MessageKind::Binary, Bytes::from_static(b"cd"), false, false),
            (MessageKind::Binary, Bytes::from_static(b"ef"), false, true),
        ]
    );
}

#[test]
fn server_sends_fragmented_text() {
    let mut pair = Pair::connected();
    pair.server
        .send_fragment(MessageKind::Text, Bytes::from_static(b"Hel"), false)
        .unwrap();
    pair.server.ping(Bytes::from_static(b"p")).unwrap();
    pair.server
        .send_fragment(MessageKind::Text, Bytes::from_static(b"lo"), true)
        .unwrap();
    pair.drive();
    assert_eq!(messages(&pair.client_events), [Message::text("Hello")]);
}

#[test]
fn another_message_cannot_start_inside_a_fragmented_send() {
    let mut pair = Pair::connected();
    pair.client
        .send_fragment(MessageKind::Binary, Bytes::from_static(b"a"), false)
        .unwrap();
    assert_eq!(
        pair.client.send_text("x"),
        Err(wsevents_proto::Error::MessageInProgress)
    );
    assert_eq!(
        pair.client
            .send_fragment(MessageKind::Text, Bytes::new(), true),
        Err(wsevents_proto::Error::MessageInProgress)
    );
}

#[test]
fn single_frame_message_is_handed_out_from_the_receive_buffer_without_a_copy() {
    use bytes::BufMut;
    let mut client =
        wsevents_proto::Connection::open(wsevents_proto::Role::Client, Config::default());
    let frame = server_frame(0x82, &[9; 4096]);
    let start = {
        let mut buf = client.input_buffer(frame.len());
        buf.put_slice(&frame);
        buf.get_ref().as_ptr() as usize
    };
    client.handle_buffered_input();
    let Some(Event::Message(Message::Binary(data))) = client.poll_event() else {
        panic!("expected a binary message")
    };
    assert_eq!(data.len(), 4096);
    assert_eq!(
        data.as_ptr() as usize,
        start + 4,
        "payload is the buffer's own bytes"
    );
}

#[test]
fn pings_and_data_after_failure_are_ignored() {
    let mut wire = client_frame(0x83, b"");
    wire.extend(client_frame(0x89, b"late"));
    let (mut server, events) = server_receives(&wire);
    assert_connection_failing(&mut server, &events, CloseCode::PROTOCOL_ERROR);
    server.handle_input(&client_frame(0x81, b"more"));
    assert!(server.poll_event().is_none());
    assert_eq!(server.state(), State::Closed);
}

// ----- prepared messages (one frame shared by many connections) -----

#[test]
fn server_sends_a_prepared_message_unmasked_in_order_with_its_sends() {
    use wsevents_proto::PreparedMessage;
    let mut pair = Pair::connected();
    let big = PreparedMessage::new(&Message::binary(vec![0xab; 70_000]));
    let small = PreparedMessage::new(&Message::text("tick"));
    assert_eq!(&small.frame()[..], b"\x81\x04tick");
    assert_eq!(
        &big.frame()[..4],
        [0x82, 0x7f, 0x00, 0x00],
        "the 64-bit length"
    );
    pair.server.send_text("before").unwrap();
    pair.server.send_prepared(&small).unwrap();
    pair.server.send_prepared(&big).unwrap();
    pair.server.send_text("after").unwrap();
    assert_eq!(pair.server.buffered_amount(), 6 + 4 + 70_000 + 5);
    pair.drive();
    assert_eq!(
        messages(&pair.client_events),
        [
            Message::text("before"),
            Message::text("tick"),
            Message::binary(vec![0xab; 70_000]),
            Message::text("after"),
        ]
    );
    assert_eq!(pair.server.buffered_amount(), 0);
}

#[test]
fn a_prepared_message_is_refused_by_a_client_and_inside_a_fragmented_message() {
    use wsevents_proto::{Error, PreparedMessage};
    let mut pair = Pair::connected();
    let prepared = PreparedMessage::new(&Message::text("x"));
    assert!(matches!(
        pair.client.send_prepared(&prepared),
        Err(Error::PreparedOnClient)
    ));
    pair.server
        .send_fragment(MessageKind::Text, Bytes::from_static(b"par"), false)
        .unwrap();
    assert!(matches!(
        pair.server.send_prepared(&prepared),
        Err(Error::MessageInProgress)
    ));
    pair.server
        .send_fragment(MessageKind::Text, Bytes::from_static(b"t"), true)
        .unwrap();
    pair.server.send_prepared(&prepared).unwrap();
    pair.drive();
    assert_eq!(
        messages(&pair.client_events),
        [Message::text("part"), Message::text("x")]
    );
}
