//! RFC 6455 §4: the opening handshake driven through the connection state machine.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::{Duration, Instant};

use util::*;
use wsevents_proto::handshake::ClientRequest;
use wsevents_proto::{Config, Connection, Error, Event, HandshakeError, Message, State, Timeout};

const SAMPLE_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

fn request_of(events: &[Event]) -> &wsevents_proto::handshake::Request {
    events
        .iter()
        .find_map(|e| match e {
            Event::Request(r) => Some(&**r),
            _ => None,
        })
        .expect("a request event")
}

#[test]
fn server_hands_out_the_request_then_opens_on_accept() {
    let mut server = Connection::server(Config::default(), Instant::now());
    assert_eq!(server.state(), State::Connecting);
    server.handle_input(SAMPLE_REQUEST);
    let events = events(&mut server);
    let request = request_of(&events);
    assert_eq!(request.path(), "/chat");
    assert_eq!(
        request.select_protocol(&["superchat", "chat"]),
        Some("chat")
    );
    assert_eq!(
        server.state(),
        State::Connecting,
        "waits for the caller's answer"
    );
    server.accept(request, Some("chat"), &[]).unwrap();
    assert_eq!(server.state(), State::Open);
    assert_eq!(server.protocol(), Some("chat"));
    assert!(matches!(server.poll_event(), Some(Event::Open)));
    let response = String::from_utf8(transmitted(&mut server)).unwrap();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(
        response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{response}"
    );
    assert!(response.contains("chat"), "{response}");
}

#[test]
fn server_reject_sends_the_status_and_closes() {
    let mut server = Connection::server(Config::default(), Instant::now());
    server.handle_input(SAMPLE_REQUEST);
    let events = events(&mut server);
    server.reject(403, "origin not allowed", &[]).unwrap();
    let response = String::from_utf8(transmitted(&mut server)).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(server.state(), State::Closed);
    assert!(matches!(server.poll_event(), Some(Event::Closed(_))));
    drop(events);
}

#[test]
fn server_answers_a_bad_request_with_its_status() {
    let bad = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let mut server = Connection::server(Config::default(), Instant::now());
    server.handle_input(bad);
    let events = events(&mut server);
    assert!(
        matches!(&events[0], Event::Error(Error::Handshake(_))),
        "{events:?}"
    );
    assert!(matches!(events.last(), Some(Event::Closed(_))));
    let response = String::from_utf8(transmitted(&mut server)).unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13"), "{response}");
}

#[test]
fn server_refuses_a_head_over_the_limit() {
    let mut server = Connection::server(Config::default(), Instant::now());
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(vec![b'a'; 20_000]);
    server.handle_input(&big);
    let events = events(&mut server);
    assert!(
        matches!(
            &events[0],
            Event::Error(Error::Handshake(HandshakeError::HeadTooLarge { .. }))
        ),
        "{events:?}"
    );
    assert_eq!(server.state(), State::Closed);
}

#[test]
fn client_opens_on_a_valid_101_and_reads_frames_behind_it() {
    let request = ClientRequest::new("server.example.com", "/chat").with_key(*b"the sample nonce");
    let mut client = Connection::client(request, Config::default(), Instant::now());
    let sent = String::from_utf8(transmitted(&mut client)).unwrap();
    assert!(
        sent.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
        "{sent}"
    );
    let mut response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        .to_vec();
    response.extend(server_frame(0x81, b"welcome"));
    client.handle_input(&response);
    let events = events(&mut client);
    assert!(matches!(&events[0], Event::Open));
    assert_eq!(messages(&events), [Message::text("welcome")]);
    assert_eq!(client.state(), State::Open);
    // The request and response stay readable once open (`wsevents connect -v`).
    let mut head = bytes::BytesMut::new();
    client.request().unwrap().encode(&mut head);
    assert_eq!(head, sent.as_bytes());
    let response = client.response().unwrap();
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
    );
}

#[test]
fn client_refuses_a_wrong_accept() {
    let request = ClientRequest::new("server.example.com", "/chat").with_key(*b"the sample nonce");
    let mut client = Connection::client(request, Config::default(), Instant::now());
    client.handle_input(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    );
    let events = events(&mut client);
    assert!(
        matches!(&events[0], Event::Error(Error::Handshake(_))),
        "{events:?}"
    );
    assert_eq!(client.state(), State::Closed);
}

#[test]
fn client_split_response_at_every_byte_still_opens() {
    let mut pair_bytes = None;
    for cut in [1, 10, 50, 100] {
        let now = Instant::now();
        let mut client = Connection::client(ClientRequest::new("h", "/"), Config::default(), now);
        let mut server = Connection::server(Config::default(), now);
        server.handle_input(&transmitted(&mut client));
        let events = events(&mut server);
        server.accept(request_of(&events), None, &[]).unwrap();
        let response = transmitted(&mut server);
        for piece in response.chunks(cut) {
            assert!(client.poll_event().is_none());
            client.handle_input(piece);
        }
        assert!(matches!(client.poll_event(), Some(Event::Open)));
        pair_bytes = Some(response);
    }
    assert!(pair_bytes.is_some());
}

#[test]
fn send_while_connecting_is_an_invalid_state() {
    let mut client = Connection::client(
        ClientRequest::new("h", "/"),
        Config::default(),
        Instant::now(),
    );
    assert_eq!(
        client.send_text("early"),
        Err(Error::InvalidState(State::Connecting))
    );
}

#[test]
fn close_while_connecting_aborts() {
    let mut client = Connection::client(
        ClientRequest::new("h", "/"),
        Config::default(),
        Instant::now(),
    );
    client
        .close(
            wsevents_proto::CloseFrame::new(wsevents_proto::CloseCode::NORMAL, ""),
            Instant::now(),
        )
        .unwrap();
    let events = events(&mut client);
    assert!(
        matches!(&events[..], [Event::Error(Error::Aborted), Event::Closed(c)] if c.code().as_u16() == 1006)
    );
    assert!(
        client.poll_transmit().is_none(),
        "the request is never sent"
    );
}

#[test]
fn handshake_times_out() {
    let start = Instant::now();
    let mut server = Connection::server(Config::default(), start);
    assert_eq!(server.poll_timeout(), Some(start + Duration::from_secs(10)));
    server.handle_timeout(start + Duration::from_secs(9));
    assert_eq!(server.state(), State::Connecting);
    server.handle_timeout(start + Duration::from_secs(10));
    let events = events(&mut server);
    assert!(matches!(
        &events[0],
        Event::Error(Error::Timeout(Timeout::Handshake))
    ));
    assert_eq!(server.state(), State::Closed);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn pair_exchanges_messages_both_ways() {
    let mut pair = Pair::connected();
    pair.client.send_text("from client").unwrap();
    pair.server.send_binary(vec![1, 2, 3]).unwrap();
    pair.drive();
    assert_eq!(
        messages(&pair.server_events),
        [Message::text("from client")]
    );
    assert_eq!(
        messages(&pair.client_events),
        [Message::binary(vec![1, 2, 3])]
    );
}
