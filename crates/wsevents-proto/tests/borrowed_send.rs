//! `send_text_ref` / `send_binary_ref`: the same frames as `send`, from borrowed bytes,
//! for every length class (short form, 16-bit, 64-bit; copied and by-reference
//! payloads) and both roles.

mod util;

use util::{events, messages, transmitted};
use wsevents_proto::{COPIED_PAYLOAD_LEN, Config, Connection, Message, Role};

const LENGTHS: [usize; 9] = [
    0,
    1,
    125,
    126,
    1000,
    COPIED_PAYLOAD_LEN - 1,
    COPIED_PAYLOAD_LEN,
    65_535,
    70_000,
];

fn text_of(len: usize) -> String {
    "κα".chars().cycle().take(len / 2).collect::<String>() + &"x".repeat(len % 2)
}

#[test]
fn a_server_sends_the_same_bytes_borrowed_as_owned() {
    for len in LENGTHS {
        let text = text_of(len);
        let data = vec![0xa5u8; len];
        let mut owned = Connection::open(Role::Server, Config::default());
        owned.send(Message::text(text.clone())).unwrap();
        owned.send(Message::binary(data.clone())).unwrap();
        let mut borrowed = Connection::open(Role::Server, Config::default());
        borrowed.send_text_ref(&text).unwrap();
        borrowed.send_binary_ref(&data).unwrap();
        assert_eq!(
            borrowed.buffered_amount(),
            owned.buffered_amount(),
            "len {len}"
        );
        assert_eq!(
            transmitted(&mut borrowed),
            transmitted(&mut owned),
            "len {len}"
        );
    }
}

#[test]
fn a_client_sends_borrowed_messages_masked_and_whole() {
    for len in LENGTHS {
        let text = text_of(len);
        let data = vec![0x5au8; len];
        let mut client = Connection::open(Role::Client, Config::default());
        client.send_text_ref(&text).unwrap();
        client.send_binary_ref(&data).unwrap();
        let mut server = Connection::open(Role::Server, Config::default());
        server.handle_input(&transmitted(&mut client));
        let got = messages(&events(&mut server));
        assert_eq!(
            got,
            [Message::text(text), Message::binary(data)],
            "len {len}"
        );
    }
}

#[test]
fn borrowed_sends_need_an_open_connection() {
    let mut conn = Connection::open(Role::Server, Config::default());
    conn.close(
        wsevents_proto::CloseFrame::empty(),
        std::time::Instant::now(),
    )
    .unwrap();
    assert!(conn.send_text_ref("late").is_err());
    assert!(conn.send_binary_ref(b"late").is_err());
}
