//! Property tests of the codec: what one end encodes the other decodes unchanged, in
//! both roles, and the way the byte stream is split never changes the events.
#![allow(clippy::unwrap_used)]

mod util;

use bytes::Bytes;
use proptest::prelude::*;
use util::*;
use wsevents_proto::{Config, Connection, Event, Message, MessageKind, Role};

/// Something a sender can do.
#[derive(Debug, Clone)]
enum Action {
    Send(Message),
    /// A message sent as several fragments with a ping in the middle.
    Fragmented(MessageKind, Vec<Vec<u8>>),
    Ping(Vec<u8>),
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,300}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::binary),
        // Around the 16-bit and 64-bit length boundaries.
        (120usize..130).prop_map(|n| Message::binary(vec![7; n])),
        (65530usize..65540).prop_map(|n| Message::binary(vec![3; n])),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => message().prop_map(Action::Send),
        1 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..5)
            .prop_map(|parts| Action::Fragmented(MessageKind::Binary, parts)),
        1 => ".{1,100}".prop_map(|s: String| {
            // Split text at byte positions, even inside characters.
            let bytes = s.into_bytes();
            let mid = bytes.len() / 2;
            Action::Fragmented(MessageKind::Text, vec![bytes[..mid].to_vec(), bytes[mid..].to_vec()])
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..125).prop_map(Action::Ping),
    ]
}

fn perform(conn: &mut Connection, action: &Action) {
    match action {
        Action::Send(message) => conn.send(message.clone()).unwrap(),
        Action::Fragmented(kind, parts) => {
            for (i, part) in parts.iter().enumerate() {
                let fin = i + 1 == parts.len();
                conn.send_fragment(*kind, Bytes::from(part.clone()), fin)
                    .unwrap();
                if i == 0 {
                    conn.ping(Bytes::from_static(b"mid")).unwrap();
                }
            }
        }
        Action::Ping(data) => conn.ping(Bytes::from(data.clone())).unwrap(),
    }
}

/// The message (or ping) each action should produce at the receiver.
fn expected(actions: &[Action]) -> Vec<Summary> {
    let mut out = Vec::new();
    for action in actions {
        match action {
            Action::Send(message) => out.push(Summary::Message(message.clone())),
            Action::Fragmented(kind, parts) => {
                let all: Vec<u8> = parts.concat();
                if parts.len() > 1 {
                    out.push(Summary::Ping(b"mid".to_vec()));
                }
                out.push(Summary::Message(match kind {
                    MessageKind::Text => Message::text(String::from_utf8(all).unwrap()),
                    MessageKind::Binary => Message::binary(all),
                }));
                if parts.len() == 1 {
                    out.push(Summary::Ping(b"mid".to_vec()));
                }
            }
            Action::Ping(data) => out.push(Summary::Ping(data.clone())),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Summary {
    Message(Message),
    Ping(Vec<u8>),
    Other(String),
}

fn summarize(events: Vec<Event>) -> Vec<Summary> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Message(m) => Summary::Message(m),
            Event::Ping(p) => Summary::Ping(p.to_vec()),
            other => Summary::Other(format!("{other:?}")),
        })
        .collect()
}

fn wire(role: Role, actions: &[Action]) -> Vec<u8> {
    let mut sender = Connection::open(role, Config::default());
    for action in actions {
        perform(&mut sender, action);
    }
    transmitted(&mut sender)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn client_to_server_round_trips(actions in proptest::collection::vec(action(), 0..8)) {
        let mut server = Connection::open(Role::Server, Config::default());
        server.handle_input(&wire(Role::Client, &actions));
        prop_assert_eq!(summarize(events(&mut server)), expected(&actions));
    }

    #[test]
    fn server_to_client_round_trips(actions in proptest::collection::vec(action(), 0..8)) {
        let mut client = Connection::open(Role::Client, Config::default());
        client.handle_input(&wire(Role::Server, &actions));
        prop_assert_eq!(summarize(events(&mut client)), expected(&actions));
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_events(
        actions in proptest::collection::vec(action(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        role in prop_oneof![Just(Role::Client), Just(Role::Server)],
    ) {
        let bytes = wire(role, &actions);
        let mut whole = Connection::open(role.peer(), Config::default());
        whole.handle_input(&bytes);
        let reference = summarize(events(&mut whole));

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        let mut split = Connection::open(role.peer(), Config::default());
        let mut got = Vec::new();
        for pair in points.windows(2) {
            split.handle_input(&bytes[pair[0]..pair[1]]);
            got.extend(events(&mut split));
        }
        prop_assert_eq!(summarize(got), reference);
    }

    /// The keepalive does not see how input is split either: with a check after every
    /// piece, one interval apart, no keepalive ping goes out (each interval heard
    /// something), input never moves the deadline, and the events are the same.
    #[test]
    fn any_split_with_keepalive_checks_between_pieces_sends_no_ping(
        actions in proptest::collection::vec(action(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        role in prop_oneof![Just(Role::Client), Just(Role::Server)],
    ) {
        let bytes = wire(role, &actions);
        let mut whole = Connection::open(role.peer(), Config::default());
        whole.handle_input(&bytes);
        let reference = summarize(events(&mut whole));

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        let interval = Config::default().ping_interval.unwrap();
        let t0 = std::time::Instant::now();
        let mut split = Connection::open_at(role.peer(), Config::default(), t0);
        let mut got = Vec::new();
        let mut sent = Vec::new();
        for (k, pair) in (1u32..).zip(points.windows(2)) {
            let deadline = split.poll_timeout();
            split.handle_input(&bytes[pair[0]..pair[1]]);
            got.extend(events(&mut split));
            prop_assert_eq!(split.poll_timeout(), deadline, "input moved the deadline");
            prop_assert_eq!(deadline, Some(t0 + interval * k));
            split.handle_timeout(t0 + interval * k);
            sent.extend(parse_frames(&transmitted(&mut split)));
        }
        prop_assert_eq!(summarize(got), reference);
        prop_assert!(sent.iter().all(|(byte0, _)| *byte0 == 0x8a), "only pongs: {:?}", sent);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        role in prop_oneof![Just(Role::Client), Just(Role::Server)],
    ) {
        let mut conn = Connection::open(role, Config::default());
        conn.handle_input(&input);
        let _ = events(&mut conn);
        let _ = transmitted(&mut conn);
        conn.handle_eof();
        let _ = events(&mut conn);
    }
}
