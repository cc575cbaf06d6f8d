//! Test utilities: an in-memory client/server [`Pair`] (quinn-proto's `tests/util.rs`,
//! h11's `ConnectionPair`), raw frame builders for hostile input, and assertions in the
//! protocol's words.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::Buf;
use wsevents_proto::handshake::ClientRequest;
use wsevents_proto::{
    CloseCode, CloseFrame, Config, Connection, Error, Event, Message, Role, State,
};

/// Build a raw frame: `byte0` is FIN|RSV|opcode, `mask` a key for client frames.
pub fn raw_frame(byte0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![byte0];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend(key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend(payload),
    }
    out
}

/// A frame as a client sends it (masked with a fixed key).
pub fn client_frame(byte0: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(byte0, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A frame as a server sends it (unmasked).
pub fn server_frame(byte0: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(byte0, payload, None)
}

/// Every event the connection has now.
pub fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// Every byte the connection wants to write now.
pub fn transmitted(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(queue) = conn.poll_transmit() {
        while queue.has_remaining() {
            let chunk = queue.chunk();
            out.extend_from_slice(chunk);
            let n = chunk.len();
            queue.advance(n);
        }
    }
    out
}

/// The messages among `events`.
pub fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// An open server fed `input`, returning its events.
pub fn server_receives(input: &[u8]) -> (Connection, Vec<Event>) {
    server_receives_with(Config::default(), input)
}

/// An open server with `config` fed `input`, returning its events.
pub fn server_receives_with(config: Config, input: &[u8]) -> (Connection, Vec<Event>) {
    let mut server = Connection::open(Role::Server, config);
    server.handle_input(input);
    let events = events(&mut server);
    (server, events)
}

/// An open client fed `input`, returning its events.
pub fn client_receives(input: &[u8]) -> (Connection, Vec<Event>) {
    let mut client = Connection::open(Role::Client, Config::default());
    client.handle_input(input);
    let events = events(&mut client);
    (client, events)
}

/// Parse the frames `bytes` holds as a client would receive them from a server
/// (unmasked), returning `(byte0, payload)` pairs.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, n) = wsevents_proto::frame::FrameHeader::decode(bytes)
            .expect("valid frame")
            .expect("complete header");
        let len = header.payload_len as usize;
        let mut payload = bytes[n..n + len].to_vec();
        if let Some(key) = header.mask {
            wsevents_proto::mask::apply_mask_bytewise(&mut payload, key, 0);
        }
        let byte0 = u8::from(header.fin) << 7 | header.rsv | header.opcode.as_u8();
        frames.push((byte0, payload));
        bytes = &bytes[n + len..];
    }
    frames
}

/// Assert that the connection failed with `code`: an error event whose protocol error
/// maps to `code`, then the closed event, and a close frame with `code` on the wire.
#[track_caller]
pub fn assert_connection_failing(conn: &mut Connection, events: &[Event], code: CloseCode) {
    let error = events
        .iter()
        .find_map(|e| match e {
            Event::Error(Error::Protocol(p)) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no protocol error among {events:?}"));
    assert_eq!(error.close_code(), code, "{error:?}");
    match events.last() {
        Some(Event::Closed(closure)) => {
            assert!(!closure.was_clean());
            assert_eq!(closure.code(), CloseCode::ABNORMAL);
        }
        other => panic!("last event is {other:?}, not Closed"),
    }
    assert_eq!(conn.state(), State::Closed);
    let frames = parse_frames(&transmitted(conn));
    let close = frames.last().expect("a close frame was sent");
    assert_eq!(close.0, 0x88);
    let sent = CloseFrame::parse(&close.1).expect("valid close frame");
    assert_eq!(sent.code, Some(code));
}

/// A client and a server core wired back to back in memory.
pub struct Pair {
    pub client: Connection,
    pub server: Connection,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    pub now: Instant,
}

impl Pair {
    /// A pair through a real opening handshake, both open.
    pub fn connected() -> Pair {
        Pair::connected_with(Config::default(), Config::default())
    }

    /// A pair with the given configs, through the handshake.
    pub fn connected_with(client: Config, server: Config) -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            client: Connection::client(ClientRequest::new("localhost", "/"), client, now),
            server: Connection::server(server, now),
            client_events: Vec::new(),
            server_events: Vec::new(),
            now,
        };
        pair.drive();
        let request = pair
            .server_events
            .drain(..)
            .find_map(|e| match e {
                Event::Request(r) => Some(r),
                _ => None,
            })
            .expect("server got the request");
        pair.server.accept(&request, None, &[]).expect("accept");
        pair.drive();
        assert_eq!(pair.client.state(), State::Open);
        assert_eq!(pair.server.state(), State::Open);
        assert!(matches!(pair.client_events.as_slice(), [Event::Open]));
        assert!(matches!(pair.server_events.as_slice(), [Event::Open]));
        pair.client_events.clear();
        pair.server_events.clear();
        pair
    }

    /// Move bytes both ways until neither side has anything to say.
    pub fn drive(&mut self) {
        loop {
            self.server_events.extend(events(&mut self.server));
            self.client_events.extend(events(&mut self.client));
            let to_server = transmitted(&mut self.client);
            let to_client = transmitted(&mut self.server);
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
            self.server.handle_input(&to_server);
            self.client.handle_input(&to_client);
        }
    }

    /// Let `d` pass on both sides.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }
}
