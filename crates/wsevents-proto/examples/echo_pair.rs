//! The protocol core at work, with no network at all: a client and a server
//! `Connection` wired back to back in memory go through the opening handshake, trade
//! messages (one fragmented, with a ping in the middle), and close cleanly.
//!
//! Every byte that would cross the wire is printed, so this doubles as a picture of
//! RFC 6455 on the wire.
//!
//! ```text
//! cargo run -p wsevents-proto --example echo_pair
//! ```
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::{Buf, Bytes};
use wsevents_proto::handshake::ClientRequest;
use wsevents_proto::{CloseCode, CloseFrame, Config, Connection, Event, Message, MessageKind};

fn main() {
    let now = Instant::now();
    let request = ClientRequest::new("127.0.0.1:8080", "/chat").protocol("chat");
    let mut client = Connection::client(request, Config::default(), now);
    let mut server = Connection::server(Config::default(), now);

    client
        .send_text("too early")
        .expect_err("sending while connecting is refused");

    let mut step = 0;
    loop {
        step += 1;
        let to_server = drain(&mut client);
        let to_client = drain(&mut server);
        if to_server.is_empty() && to_client.is_empty() && step > 1 {
            break;
        }
        show("client → server", &to_server);
        show("server → client", &to_client);
        server.handle_input(&to_server);
        client.handle_input(&to_client);

        while let Some(event) = server.poll_event() {
            println!("  server event: {event:?}");
            match event {
                Event::Request(request) => {
                    let protocol = request.select_protocol(&["chat"]);
                    server.accept(&request, protocol, &[]).expect("accept");
                }
                // Echo every message back.
                Event::Message(message) => server.send(message).expect("echo"),
                _ => {}
            }
        }
        while let Some(event) = client.poll_event() {
            println!("  client event: {event:?}");
            match event {
                Event::Open => {
                    println!("  client: open, protocol {:?}", client.protocol());
                    client.send_text("Hello WebSocket.").expect("send");
                    client
                        .send(Message::binary(vec![1, 2, 3, 4, 5, 6, 7, 8]))
                        .expect("send");
                    client
                        .send_fragment(MessageKind::Text, Bytes::from_static(b"frag"), false)
                        .expect("send");
                    client
                        .ping(Bytes::from_static(b"are you there?"))
                        .expect("ping");
                    client
                        .send_fragment(MessageKind::Text, Bytes::from_static(b"mented"), true)
                        .expect("send");
                }
                Event::Message(Message::Text(text)) if text.as_str() == "fragmented" => {
                    let frame = CloseFrame::new(CloseCode::NORMAL, "Closing normally");
                    client.close(frame, now).expect("close");
                }
                _ => {}
            }
        }
    }
    println!("client closure: {:?}", client.closure());
    println!("server closure: {:?}", server.closure());
}

fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(queue) = conn.poll_transmit() {
        out.extend_from_slice(queue.chunk());
        let n = queue.chunk().len();
        queue.advance(n);
    }
    out
}

fn show(direction: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if bytes.starts_with(b"GET ") || bytes.starts_with(b"HTTP/") {
        println!(
            "{direction}:\n{}",
            String::from_utf8_lossy(bytes).trim_end()
        );
    } else {
        let hex: Vec<String> = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
        let more = if bytes.len() > 48 { " …" } else { "" };
        println!(
            "{direction}: {} bytes: {}{more}",
            bytes.len(),
            hex.join(" ")
        );
    }
}
