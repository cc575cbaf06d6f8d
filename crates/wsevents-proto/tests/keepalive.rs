//! Liveness (RFC 6455 §5.5.2–5.5.3 pings and pongs put to work): recorded pings and the
//! round-trip their pong reports, keepalive pings, the pong timeout and the idle
//! timeout, every deadline driven by a fake `now`.
#![allow(clippy::unwrap_used)]

mod util;

use std::time::{Duration, Instant};

use bytes::Bytes;
use util::*;
use wsevents_proto::{
    CloseCode, CloseFrame, Config, Connection, Error, Event, Initiator, Pong, Role, State, Timeout,
};

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

// ----- keepalive: the ping after an interval of silence, the pong deadline -----

const INTERVAL: Duration = Duration::from_secs(20);
const PONG_TIMEOUT: Duration = Duration::from_secs(20);

/// An open connection of `role` armed at `t0`, with `config`.
fn open_at(role: Role, config: Config) -> (Connection, Instant) {
    let t0 = Instant::now();
    (Connection::open_at(role, config, t0), t0)
}

/// A frame as the peer of `role` sends it.
fn from_peer(role: Role, byte0: u8, payload: &[u8]) -> Vec<u8> {
    match role {
        Role::Server => client_frame(byte0, payload),
        Role::Client => server_frame(byte0, payload),
    }
}

/// The `(byte0, payload)` of every frame `conn` wants to write now.
fn frames_sent(conn: &mut Connection) -> Vec<(u8, Vec<u8>)> {
    parse_frames(&transmitted(conn))
}

/// Assert the connection failed by the pong timeout: the error then the close event
/// (1006, not clean), and a 1011 close frame as its last word.
#[track_caller]
fn assert_failed_by_pong_timeout(conn: &mut Connection) {
    let events = events(conn);
    match &events[..] {
        [
            Event::Error(Error::Timeout(Timeout::Pong)),
            Event::Closed(closure),
        ] => {
            assert_eq!(closure.code(), CloseCode::ABNORMAL);
            assert!(!closure.was_clean());
            assert_eq!(closure.initiator, Initiator::Library);
        }
        other => panic!("events {other:?}"),
    }
    assert_eq!(conn.state(), State::Closed);
    let frames = frames_sent(conn);
    let (byte0, payload) = frames.last().expect("a close frame");
    assert_eq!(*byte0, 0x88);
    let close = CloseFrame::parse(payload).unwrap();
    assert_eq!(close.code, Some(CloseCode::INTERNAL_ERROR));
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn keepalive_ping_goes_out_after_an_interval_with_nothing_received() {
    for role in [Role::Server, Role::Client] {
        let (mut conn, t0) = open_at(role, Config::default());
        assert_eq!(conn.poll_timeout(), Some(t0 + INTERVAL));
        conn.handle_timeout(t0 + INTERVAL - Duration::from_millis(1));
        assert!(frames_sent(&mut conn).is_empty(), "{role:?}: no ping early");
        conn.handle_timeout(t0 + INTERVAL);
        let frames = frames_sent(&mut conn);
        assert_eq!(frames.len(), 1, "{role:?}");
        assert_eq!(frames[0].0, 0x89, "{role:?}: a ping");
        assert_eq!(frames[0].1.len(), 8, "{role:?}: the counter");
        assert_eq!(
            conn.poll_timeout(),
            Some(t0 + INTERVAL + PONG_TIMEOUT),
            "{role:?}: now the pong deadline"
        );
        assert!(events(&mut conn).is_empty(), "{role:?}");
    }
}

#[test]
fn server_sends_no_keepalive_ping_while_input_keeps_arriving() {
    let (mut server, t0) = open_at(Role::Server, Config::default());
    for k in 1..=5 {
        server.handle_input(&client_frame(0x81, b"still here"));
        assert_eq!(
            server.poll_timeout(),
            Some(t0 + INTERVAL * k),
            "input moves nothing"
        );
        server.handle_timeout(t0 + INTERVAL * k);
        assert!(frames_sent(&mut server).is_empty(), "check {k}: re-armed");
        assert_eq!(server.poll_timeout(), Some(t0 + INTERVAL * (k + 1)));
    }
    assert_eq!(messages(&events(&mut server)).len(), 5);
    // Then silence: the next check pings.
    server.handle_timeout(t0 + INTERVAL * 6);
    assert_eq!(frames_sent(&mut server)[0].0, 0x89);
}

#[test]
fn input_read_into_the_buffer_counts_as_received() {
    use bytes::BufMut;
    let (mut client, t0) = open_at(Role::Client, Config::default());
    client
        .input_buffer(64)
        .put_slice(&server_frame(0x82, b"\x01"));
    client.handle_buffered_input();
    client.handle_timeout(t0 + INTERVAL);
    assert!(frames_sent(&mut client).is_empty());
    assert_eq!(client.poll_timeout(), Some(t0 + INTERVAL * 2));
}

#[test]
fn silent_peer_fails_the_connection_at_ping_plus_pong_timeout() {
    for role in [Role::Server, Role::Client] {
        let (mut conn, t0) = open_at(role, Config::default());
        conn.handle_timeout(t0 + INTERVAL);
        assert_eq!(frames_sent(&mut conn)[0].0, 0x89);
        conn.handle_timeout(t0 + INTERVAL + PONG_TIMEOUT - Duration::from_millis(1));
        assert_eq!(conn.state(), State::Open, "{role:?}: not yet");
        assert!(events(&mut conn).is_empty());
        conn.handle_timeout(t0 + INTERVAL + PONG_TIMEOUT);
        assert_failed_by_pong_timeout(&mut conn);
    }
}

#[test]
fn client_pong_before_the_deadline_keeps_the_connection_open() {
    let (mut client, t0) = open_at(Role::Client, Config::default());
    client.handle_timeout(t0 + INTERVAL);
    let (_, ping) = frames_sent(&mut client).remove(0);
    client.handle_input(&server_frame(0x8a, &ping));
    let pongs = pongs(&events(&mut client));
    assert_eq!(
        pongs[0].ping_sent_at,
        Some(t0 + INTERVAL),
        "the keepalive ping is recorded"
    );
    client.handle_timeout(t0 + INTERVAL + PONG_TIMEOUT);
    assert_eq!(client.state(), State::Open);
    assert!(frames_sent(&mut client).is_empty());
    assert_eq!(
        client.poll_timeout(),
        Some(t0 + INTERVAL * 2 + PONG_TIMEOUT)
    );
    // Silence again: ping, then failure, one interval and one pong timeout later.
    client.handle_timeout(t0 + INTERVAL * 2 + PONG_TIMEOUT);
    assert_eq!(frames_sent(&mut client)[0].0, 0x89);
    client.handle_timeout(t0 + (INTERVAL + PONG_TIMEOUT) * 2);
    assert_failed_by_pong_timeout(&mut client);
}

#[test]
fn server_any_input_before_the_pong_deadline_keeps_the_connection_open() {
    let (mut server, t0) = open_at(Role::Server, Config::default());
    server.handle_timeout(t0 + INTERVAL);
    let _ = frames_sent(&mut server);
    server.handle_input(&client_frame(0x81, b"not a pong"));
    server.handle_timeout(t0 + INTERVAL + PONG_TIMEOUT);
    assert_eq!(server.state(), State::Open);
    assert_eq!(messages(&events(&mut server)).len(), 1);
}

#[test]
fn keepalive_pings_carry_distinct_payloads() {
    let config = Config {
        pong_timeout: None,
        ..Config::default()
    };
    let (mut server, t0) = open_at(Role::Server, config);
    server.handle_timeout(t0 + INTERVAL);
    server.handle_timeout(t0 + INTERVAL * 2);
    let frames = frames_sent(&mut server);
    assert_eq!(frames.len(), 2);
    assert_ne!(frames[0].1, frames[1].1);
    // Only the latest is recorded: the older one's pong reports no send time.
    server.handle_input(&client_frame(0x8a, &frames[0].1));
    server.handle_input(&client_frame(0x8a, &frames[1].1));
    let sent_at: Vec<_> = pongs(&events(&mut server))
        .iter()
        .map(|p| p.ping_sent_at)
        .collect();
    assert_eq!(sent_at, [None, Some(t0 + INTERVAL * 2)]);
}

#[test]
fn pair_keepalive_round_trip_reports_the_ping_time_on_both_sides() {
    let mut pair = Pair::connected();
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now),
        "asks to be armed at once"
    );
    pair.advance(Duration::ZERO);
    assert_eq!(pair.client.poll_timeout(), Some(pair.now + INTERVAL));
    assert_eq!(pair.server.poll_timeout(), Some(pair.now + INTERVAL));
    pair.advance(INTERVAL);
    let pinged = pair.now;
    pair.drive();
    for events in [&pair.client_events, &pair.server_events] {
        let pongs = pongs(events);
        assert_eq!(pongs.len(), 1, "{events:?}");
        assert_eq!(pongs[0].ping_sent_at, Some(pinged));
    }
    pair.advance(PONG_TIMEOUT);
    assert_eq!(pair.client.state(), State::Open);
    assert_eq!(pair.server.state(), State::Open);
}

#[test]
fn handshake_bytes_do_not_count_once_armed() {
    // The server heard the request and the client the 101 before they opened; the
    // first interval starts when the deadlines are armed.
    let mut pair = Pair::connected();
    pair.advance(Duration::ZERO);
    pair.advance(INTERVAL);
    let client_frames = frames_sent(&mut pair.client);
    let server_frames = frames_sent(&mut pair.server);
    assert_eq!(client_frames[0].0, 0x89);
    assert_eq!(server_frames[0].0, 0x89);
}

#[test]
fn open_without_a_time_is_armed_by_the_first_handle_timeout() {
    let mut server = Connection::open(Role::Server, Config::default());
    assert_eq!(server.poll_timeout(), None, "it knows no time");
    let t0 = Instant::now();
    server.handle_timeout(t0);
    assert_eq!(server.poll_timeout(), Some(t0 + INTERVAL));
    assert!(frames_sent(&mut server).is_empty());
}

#[test]
fn no_ping_interval_means_no_keepalive() {
    let config = Config {
        ping_interval: None,
        ..Config::default()
    };
    let (mut server, t0) = open_at(Role::Server, config.clone());
    assert_eq!(server.poll_timeout(), None);
    server.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(frames_sent(&mut server).is_empty());
    assert_eq!(server.state(), State::Open);
    // Nor is a handshake connection asked to arm anything.
    let mut pair = Pair::connected_with(config.clone(), config);
    assert_eq!(pair.client.poll_timeout(), None);
    pair.advance(Duration::from_secs(3600));
    assert_eq!(pair.server.state(), State::Open);
}

#[test]
fn no_pong_timeout_keeps_pinging_and_never_fails() {
    let config = Config {
        pong_timeout: None,
        ..Config::default()
    };
    let (mut client, t0) = open_at(Role::Client, config);
    for k in 1..=4 {
        client.handle_timeout(t0 + INTERVAL * k);
        assert_eq!(frames_sent(&mut client)[0].0, 0x89, "ping {k}");
        assert_eq!(client.poll_timeout(), Some(t0 + INTERVAL * (k + 1)));
    }
    assert_eq!(client.state(), State::Open);
    assert!(events(&mut client).is_empty());
}

#[test]
fn keepalive_stops_once_closing() {
    let (mut server, t0) = open_at(Role::Server, Config::default());
    server
        .close(CloseFrame::new(CloseCode::NORMAL, ""), t0)
        .unwrap();
    assert_eq!(
        server.poll_timeout(),
        Some(t0 + Duration::from_secs(5)),
        "the close deadline only"
    );
}

/// A reader that holds the peer back on purpose (its application is behind) says so:
/// its own silence neither pings nor fails the peer; once it reads again, silence
/// counts as before.
#[test]
fn server_paused_reading_is_not_the_peers_silence() {
    let (mut server, t0) = open_at(Role::Server, Config::default());
    for k in 1..=4 {
        server.handle_read_paused();
        server.handle_timeout(t0 + INTERVAL * k);
        assert_eq!(server.state(), State::Open, "check {k}");
        assert!(frames_sent(&mut server).is_empty(), "check {k}: no ping");
    }
    // Reading again, and nothing comes: ping, then the pong timeout.
    server.handle_timeout(t0 + INTERVAL * 5);
    assert_eq!(frames_sent(&mut server)[0].0, 0x89);
    server.handle_timeout(t0 + INTERVAL * 5 + PONG_TIMEOUT);
    assert_failed_by_pong_timeout(&mut server);
}

/// The events a paused reader still takes are those already made, never the input's.
#[test]
fn server_queued_events_come_without_parsing_the_input() {
    let (mut server, t0) = open_at(Role::Server, Config::default());
    server.handle_input(&client_frame(0x81, b"waits"));
    assert!(server.poll_queued_event().is_none(), "not parsed");
    server.handle_timeout(t0 + INTERVAL * 3);
    assert!(
        server.poll_queued_event().is_none(),
        "input arrived: nothing failed"
    );
    server
        .close(CloseFrame::new(CloseCode::NORMAL, ""), t0)
        .unwrap();
    server.abort();
    assert!(matches!(
        server.poll_queued_event(),
        Some(Event::Error(Error::Aborted))
    ));
    assert!(matches!(server.poll_queued_event(), Some(Event::Closed(_))));
}

// ----- idle timeout -----

const IDLE: Duration = Duration::from_secs(60);

fn idle_config() -> Config {
    Config {
        ping_interval: None,
        idle_timeout: Some(IDLE),
        ..Config::default()
    }
}

#[test]
fn idle_connection_starts_the_close_handshake_with_1001() {
    for role in [Role::Server, Role::Client] {
        let (mut conn, t0) = open_at(role, idle_config());
        assert_eq!(conn.poll_timeout(), Some(t0 + IDLE));
        // Pings and pongs are not data.
        conn.handle_input(&from_peer(role, 0x89, b"ping"));
        conn.handle_input(&from_peer(role, 0x8a, b"pong"));
        let _ = events(&mut conn);
        let _ = frames_sent(&mut conn);
        conn.handle_timeout(t0 + IDLE);
        assert_eq!(conn.state(), State::Closing, "{role:?}");
        let frames = frames_sent(&mut conn);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0, 0x88);
        assert_eq!(
            CloseFrame::parse(&frames[0].1).unwrap(),
            CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout")
        );
        // Bounded by the close timeout as usual.
        assert_eq!(
            conn.poll_timeout(),
            Some(t0 + IDLE + Duration::from_secs(5))
        );
        conn.handle_timeout(t0 + IDLE + Duration::from_secs(5));
        assert!(matches!(
            events(&mut conn)[..],
            [
                Event::Error(Error::Timeout(Timeout::Close)),
                Event::Closed(_)
            ]
        ));
    }
}

#[test]
fn no_idle_close_while_data_flows_either_way() {
    let (mut server, t0) = open_at(Role::Server, idle_config());
    server.send_text("sent").unwrap();
    server.handle_timeout(t0 + IDLE);
    assert_eq!(server.state(), State::Open, "a message sent");
    assert_eq!(server.poll_timeout(), Some(t0 + IDLE * 2));
    server.handle_input(&client_frame(0x82, b"received"));
    assert_eq!(messages(&events(&mut server)).len(), 1);
    server.handle_timeout(t0 + IDLE * 2);
    assert_eq!(server.state(), State::Open, "a message received");
    server
        .send_fragment(
            wsevents_proto::MessageKind::Binary,
            Bytes::from_static(b"a"),
            false,
        )
        .unwrap();
    server.handle_timeout(t0 + IDLE * 3);
    assert_eq!(server.state(), State::Open, "a fragment sent");
    server.handle_input(&client_frame(0x01, b"par"));
    let _ = events(&mut server);
    server.handle_timeout(t0 + IDLE * 4);
    assert_eq!(server.state(), State::Open, "a fragment received");
    server.handle_timeout(t0 + IDLE * 5);
    assert_eq!(server.state(), State::Closing, "then nothing");
}

#[test]
fn pair_idle_close_completes_cleanly_and_the_reply_echoes_it() {
    let mut pair = Pair::connected_with(idle_config(), Config::default());
    pair.advance(Duration::ZERO);
    pair.advance(IDLE);
    pair.drive();
    let client = match pair.client_events.last() {
        Some(Event::Closed(closure)) => closure.clone(),
        other => panic!("{other:?}"),
    };
    assert!(client.was_clean());
    assert_eq!(client.initiator, Initiator::Library);
    assert_eq!(client.code(), CloseCode::GOING_AWAY);
    assert_eq!(
        client.reason(),
        "idle timeout",
        "the server echoed the reason"
    );
}

#[test]
fn no_idle_timeout_by_default() {
    let (mut server, t0) = open_at(
        Role::Server,
        Config {
            ping_interval: None,
            ..Config::default()
        },
    );
    server.handle_timeout(t0 + Duration::from_secs(86_400));
    assert_eq!(server.state(), State::Open);
}

#[test]
fn keepalive_and_idle_together_report_the_earliest_deadline() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let (mut server, t0) = open_at(Role::Server, config);
    assert_eq!(server.poll_timeout(), Some(t0 + INTERVAL));
    server.handle_timeout(t0 + INTERVAL);
    assert_eq!(frames_sent(&mut server)[0].0, 0x89);
    assert_eq!(
        server.poll_timeout(),
        Some(t0 + Duration::from_secs(30)),
        "idle first"
    );
    server.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(server.state(), State::Closing);
}

// ----- the close reply (RFC 6455 §5.5.1) -----

#[test]
fn server_close_reply_echoes_code_and_reason() {
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye, ünïcode".as_bytes());
    let (mut server, _) = server_receives(&client_frame(0x88, &payload));
    let frames = frames_sent(&mut server);
    assert_eq!(frames, [(0x88, payload)]);
}

#[test]
fn client_close_reply_echoes_code_and_reason() {
    let reason = "x".repeat(123);
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    let (mut client, _) = client_receives(&server_frame(0x88, &payload));
    let frames = frames_sent(&mut client);
    assert_eq!(
        frames,
        [(0x88, payload)],
        "the longest reason goes back whole"
    );
}

#[test]
fn pair_close_reply_is_recorded_as_sent() {
    let mut pair = Pair::connected();
    let frame = CloseFrame::new(CloseCode::from(3000), "done here");
    pair.client.close(frame.clone(), pair.now).unwrap();
    pair.drive();
    for events in [&pair.client_events, &pair.server_events] {
        match events.last() {
            Some(Event::Closed(closure)) => {
                assert_eq!(closure.sent.as_ref(), Some(&frame));
                assert_eq!(closure.received.as_ref(), Some(&frame));
            }
            other => panic!("{other:?}"),
        }
    }
}

// ----- durations too long to be deadlines -----

/// Every timeout set to the longest `Duration` (or to years, as a flag might say): no
/// deadline can be that far, so none is armed, and nothing panics on the way; the
/// connection opens, exchanges, pings and closes as without timeouts.
#[test]
fn timeouts_too_long_to_be_deadlines_are_never_reached_and_never_panic() {
    for far in [
        Duration::MAX,
        Duration::from_secs(10_000_000_000_000_000_000),
    ] {
        let config = Config {
            handshake_timeout: Some(far),
            ping_interval: Some(far),
            pong_timeout: Some(far),
            idle_timeout: Some(far),
            close_timeout: Some(far),
            ..Config::default()
        };
        let mut pair = Pair::connected_with(config.clone(), config);
        pair.advance(Duration::from_secs(3600));
        pair.drive();
        assert_eq!(pair.client.state(), State::Open);
        pair.client.send_text("still here").unwrap();
        pair.drive();
        assert_eq!(messages(&pair.server_events).len(), 1);
        pair.client
            .close(CloseFrame::new(CloseCode::NORMAL, ""), pair.now)
            .unwrap();
        pair.drive();
        assert_eq!(pair.client.state(), State::Closed);
        assert_eq!(pair.server.state(), State::Closed);
    }
}
