//! Fuzz the handshake parsers: arbitrary bytes as a client's request (server side) and
//! as a server's response (client side). Nothing may panic; a server that refuses a
//! request must answer with a complete HTTP response.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wsevents_proto::handshake::{ClientRequest, Limits, parse_request};
use wsevents_proto::{Config, Connection, Event};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = parse_request(data, &limits);
    let request = ClientRequest::new("example.com", "/").with_key(*b"the sample nonce");
    let _ = request.parse_response(data, &limits);

    let mut server = Connection::server(Config::default(), Instant::now());
    server.handle_input(data);
    while let Some(event) = server.poll_event() {
        if let Event::Request(request) = event {
            let protocol = request.select_protocol(&["chat"]);
            let _ = server.accept(&request, protocol, &[]);
        }
    }
    let _ = server.poll_transmit();
});
