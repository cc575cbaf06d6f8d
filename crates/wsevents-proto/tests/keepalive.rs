//! Liveness (RFC 6455 §5.5.2–5.5.3 pings and pongs put to work): recorded pings and the
//! round-trip their pong reports, keepalive pings, the pong timeout and the idle
//! timeout, every deadline driven by a fake `now`.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use util::*;
use wsevents_proto::{Config, Connection, Event, Pong, Role};

/// The pongs among `events`.
fn pongs(events: &[Event]) -> Vec<Pong> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Pong(pong) => Some(pong.clone()),
            _ => None,
        })
        .collect()
}

// ----- recorded pings: `ping_at` and `Pong::ping_sent_at` -----

#[test]
fn client_pong_reports_when_its_recorded_ping_was_sent() {
    let mut pair = Pair::connected();
    let sent = pair.now;
    pair.client
        .ping_at(Bytes::from_static(b"rtt-1"), sent)
        .unwrap();
    pair.drive();
    let pongs = pongs(&pair.client_events);
    assert_eq!(pongs.len(), 1);
    assert_eq!(pongs[0].payload, &b"rtt-1"[..]);
    assert_eq!(pongs[0].ping_sent_at, Some(sent));
}

#[test]
fn server_pong_reports_when_its_recorded_ping_was_sent() {
    let mut pair = Pair::connected();
    let sent = pair.now + Duration::from_millis(7);
    pair.server
        .ping_at(Bytes::from_static(b"\x00\x01"), sent)
        .unwrap();
    pair.drive();
    assert_eq!(pongs(&pair.server_events)[0].ping_sent_at, Some(sent));
}

#[test]
fn second_pong_with_the_same_payload_reports_no_send_time() {
    let mut client = Connection::open(Role::Client, Config::default());
    client
        .ping_at(Bytes::from_static(b"p"), Instant::now())
        .unwrap();
    client.handle_input(&server_frame(0x8a, b"p"));
    client.handle_input(&server_frame(0x8a, b"p"));
    let pongs = pongs(&events(&mut client));
    assert_eq!(pongs.len(), 2);
    assert!(pongs[0].ping_sent_at.is_some());
    assert_eq!(pongs[1].ping_sent_at, None, "the record was cleared");
}

#[test]
fn pong_to_an_unrecorded_or_older_ping_reports_no_send_time() {
    let mut client = Connection::open(Role::Client, Config::default());
    let start = Instant::now();
    client.ping(Bytes::from_static(b"plain")).unwrap();
    client.ping_at(Bytes::from_static(b"old"), start).unwrap();
    client
        .ping_at(Bytes::from_static(b"new"), start + Duration::from_secs(1))
        .unwrap();
    client.handle_input(&server_frame(0x8a, b"plain"));
    client.handle_input(&server_frame(0x8a, b"old"));
    client.handle_input(&server_frame(0x8a, b"unsolicited"));
    client.handle_input(&server_frame(0x8a, b"new"));
    let sent_at: Vec<_> = pongs(&events(&mut client))
        .iter()
        .map(|p| p.ping_sent_at)
        .collect();
    assert_eq!(
        sent_at,
        [None, None, None, Some(start + Duration::from_secs(1))]
    );
}
