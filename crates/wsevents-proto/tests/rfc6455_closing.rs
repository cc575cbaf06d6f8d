//! RFC 6455 §7: the close handshake, close codes, and what is allowed after close.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::Duration;

use bytes::Bytes;
use util::*;
use wsevents_proto::{CloseCode, CloseFrame, Error, Event, Initiator, State, Timeout};

fn closed(events: &[Event]) -> &wsevents_proto::Closure {
    match events.last() {
        Some(Event::Closed(closure)) => closure,
        other => panic!("last event {other:?}"),
    }
}

#[test]
fn client_initiated_close_is_clean_on_both_sides() {
    let mut pair = Pair::connected();
    pair.client
        .close(
            CloseFrame::new(CloseCode::NORMAL, "Closing normally"),
            pair.now,
        )
        .unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    pair.drive();
    let server_side = closed(&pair.server_events);
    assert!(server_side.was_clean());
    assert_eq!(server_side.initiator, Initiator::Remote);
    assert_eq!(
        (server_side.code(), server_side.reason()),
        (CloseCode::NORMAL, "Closing normally")
    );
    let client_side = closed(&pair.client_events);
    assert!(client_side.was_clean());
    assert_eq!(client_side.initiator, Initiator::Local);
    assert_eq!(
        client_side.code(),
        CloseCode::NORMAL,
        "the server echoed the code"
    );
    assert_eq!(pair.client.state(), State::Closed);
    assert_eq!(pair.server.state(), State::Closed);
}

#[test]
fn server_initiated_close_with_application_code_round_trips() {
    let mut pair = Pair::connected();
    pair.server
        .close(CloseFrame::new(CloseCode::from(4000), "custom"), pair.now)
        .unwrap();
    pair.drive();
    let client_side = closed(&pair.client_events);
    assert_eq!(
        (client_side.code().as_u16(), client_side.reason()),
        (4000, "custom")
    );
    assert!(closed(&pair.server_events).was_clean());
}

#[test]
fn empty_close_frame_reports_1005() {
    let mut pair = Pair::connected();
    pair.client.close(CloseFrame::empty(), pair.now).unwrap();
    pair.drive();
    assert_eq!(
        closed(&pair.server_events).code(),
        CloseCode::NO_STATUS_RECEIVED
    );
    assert_eq!(
        closed(&pair.client_events).code(),
        CloseCode::NO_STATUS_RECEIVED
    );
}

#[test]
fn messages_sent_before_close_arrive_before_it() {
    let mut pair = Pair::connected();
    pair.server.send_text("last words").unwrap();
    pair.server
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    pair.drive();
    assert!(matches!(&pair.client_events[0], Event::Message(_)));
    assert!(matches!(pair.client_events.last(), Some(Event::Closed(_))));
}

#[test]
fn data_still_arrives_while_closing() {
    let mut pair = Pair::connected();
    pair.client
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    pair.server.send_text("in flight").unwrap();
    pair.drive();
    assert_eq!(messages(&pair.client_events).len(), 1);
    assert!(closed(&pair.client_events).was_clean());
}

#[test]
fn nothing_can_be_sent_after_close() {
    let mut pair = Pair::connected();
    pair.client
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    assert_eq!(
        pair.client.send_text("x"),
        Err(Error::InvalidState(State::Closing))
    );
    assert_eq!(
        pair.client.ping(Bytes::new()),
        Err(Error::InvalidState(State::Closing))
    );
    pair.drive();
    assert_eq!(
        pair.client.send_text("x"),
        Err(Error::InvalidState(State::Closed))
    );
    assert_eq!(
        pair.server.send_binary(vec![1]),
        Err(Error::InvalidState(State::Closed))
    );
}

#[test]
fn nothing_is_accepted_after_close() {
    let mut pair = Pair::connected();
    pair.client
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    pair.drive();
    pair.server.handle_input(&client_frame(0x81, b"late"));
    assert!(pair.server.poll_event().is_none());
    assert!(pair.server.poll_transmit().is_none());
}

#[test]
fn closing_twice_does_nothing() {
    let mut pair = Pair::connected();
    pair.client
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    pair.client
        .close(CloseFrame::new(CloseCode::from(3000), ""), pair.now)
        .unwrap();
    let frames = parse_frames(&transmitted(&mut pair.client));
    assert_eq!(frames.len(), 1, "one close frame");
    pair.client.close(CloseFrame::empty(), pair.now).unwrap();
}

#[test]
fn close_refuses_codes_and_reasons_that_cannot_be_sent() {
    let mut pair = Pair::connected();
    for code in [999, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(
            pair.client
                .close(CloseFrame::new(CloseCode::from(code), ""), pair.now),
            Err(Error::InvalidCloseCode(code))
        );
    }
    let long = "x".repeat(124);
    assert_eq!(
        pair.client
            .close(CloseFrame::new(CloseCode::NORMAL, long), pair.now),
        Err(Error::ReasonTooLong(124))
    );
    assert_eq!(
        pair.client.state(),
        State::Open,
        "refused closes change nothing"
    );
    pair.client
        .close(
            CloseFrame::new(CloseCode::NORMAL, "x".repeat(123)),
            pair.now,
        )
        .unwrap();
}

#[test]
fn server_receives_every_valid_close_code_class_cleanly() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let (mut server, events) = server_receives(&client_frame(0x88, &code.to_be_bytes()));
        let closure = closed(&events);
        assert_eq!(closure.code().as_u16(), code);
        let reply = parse_frames(&transmitted(&mut server));
        assert_eq!(
            reply,
            [(0x88, code.to_be_bytes().to_vec())],
            "echoes {code}"
        );
    }
}

#[test]
fn server_refuses_every_invalid_close_code_class() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let (mut server, events) = server_receives(&client_frame(0x88, &code.to_be_bytes()));
        assert_connection_failing(&mut server, &events, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn server_refuses_one_byte_close_payload() {
    let (mut server, events) = server_receives(&client_frame(0x88, &[0x03]));
    assert_connection_failing(&mut server, &events, CloseCode::PROTOCOL_ERROR);
}

#[test]
fn server_refuses_close_reason_that_is_not_utf8() {
    let (mut server, events) = server_receives(&client_frame(0x88, &[0x03, 0xe8, 0xff]));
    assert_connection_failing(&mut server, &events, CloseCode::INVALID_PAYLOAD);
}

#[test]
fn close_timeout_ends_the_connection_uncleanly() {
    let mut pair = Pair::connected();
    pair.client
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    let deadline = pair.client.poll_timeout().expect("a close deadline");
    assert_eq!(deadline, pair.now + Duration::from_secs(5));
    // The server never answers: advance past the deadline without driving.
    pair.advance(Duration::from_secs(4));
    assert_eq!(pair.client.state(), State::Closing);
    pair.advance(Duration::from_secs(1));
    let events = events(&mut pair.client);
    assert!(matches!(
        &events[0],
        Event::Error(Error::Timeout(Timeout::Close))
    ));
    let closure = closed(&events);
    assert!(!closure.was_clean());
    assert_eq!(closure.code(), CloseCode::ABNORMAL);
}

#[test]
fn eof_while_open_reports_1006_after_an_error() {
    let mut pair = Pair::connected();
    pair.client.handle_eof();
    let events = events(&mut pair.client);
    assert!(
        matches!(&events[..], [Event::Error(Error::UnexpectedEof), Event::Closed(c)]
        if c.code() == CloseCode::ABNORMAL && !c.was_clean() && c.initiator == Initiator::Remote)
    );
}

#[test]
fn eof_mid_message_reports_1006() {
    let (mut server, events) = server_receives(&client_frame(0x01, b"half"));
    assert!(events.is_empty());
    server.handle_eof();
    let events = util::events(&mut server);
    assert_eq!(closed(&events).code(), CloseCode::ABNORMAL);
}

#[test]
fn eof_after_close_frame_is_clean() {
    let mut server_bytes = server_frame(0x81, b"bye");
    server_bytes.extend(server_frame(0x88, &1000u16.to_be_bytes()));
    let (mut client, _) = client_receives(&[]);
    client.handle_input(&server_bytes);
    client.handle_eof();
    let events = events(&mut client);
    assert_eq!(messages(&events).len(), 1);
    assert!(closed(&events).was_clean());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Closed(_)))
            .count(),
        1
    );
}

#[test]
fn closed_is_reported_exactly_once() {
    let mut pair = Pair::connected();
    pair.server
        .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
        .unwrap();
    pair.drive();
    pair.client.handle_eof();
    pair.client.abort();
    let later = events(&mut pair.client);
    let count = pair
        .client_events
        .iter()
        .chain(&later)
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert_eq!(count, 1);
}
