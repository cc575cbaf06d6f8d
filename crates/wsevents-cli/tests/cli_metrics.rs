//! `wsevents serve --metrics ADDR`: a real `serve` child on free 127.0.0.1 ports, a
//! client that echoes and closes, one upgrade past the cap; then a scrape of
//! `http://ADDR/metrics` over a plain TCP socket, checked series by series.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use wsevents::{CloseCode, Message};

mod support;

use support::Serve;

/// A free loopback port (free when this returns: the listener is closed).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` on a plain socket: the body of a 200.
fn scrape(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the series `name{labels}` (labels in any order) in `text`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut got: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            got.sort();
            (n == name && got == wanted).then(|| value.parse().ok())?
        })
}

#[tokio::test]
async fn serve_with_metrics_counts_an_echo_session_and_a_refusal_in_prometheus_text() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let serve = Serve::start(&["--echo", "--max-connections", "1", "--metrics", &metrics]);
    let url = format!("ws://{}/", serve.addr);

    let mut ws = wsevents::connect(&url).await.unwrap();
    for i in 0..4 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    // One over --max-connections: 503.
    let refused = wsevents::connect(&url).await;
    assert!(refused.is_err(), "{refused:?}");
    let closure = ws.close(CloseCode::NORMAL, "bye").await.unwrap();
    assert!(closure.was_clean());

    // The server's side of the teardown ends a moment after ours.
    let start = Instant::now();
    let text = loop {
        let text = scrape(&metrics);
        let closed = [
            ("role", "server"),
            ("code", "1000"),
            ("initiator", "remote"),
        ];
        if value(&text, "wsevents_close_codes_total", &closed) == Some(1.0)
            && value(&text, "wsevents_connections_open", &[("role", "server")]) == Some(0.0)
        {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let server = [("role", "server")];
    assert_eq!(
        value(&text, "wsevents_connections_total", &server),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "wsevents_messages_received_total", &server),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "wsevents_messages_sent_total", &server),
        Some(4.0),
        "{text}"
    );
    let status = [("status", "503")];
    assert_eq!(
        value(&text, "wsevents_handshakes_refused_total", &status),
        Some(1.0),
        "{text}"
    );
    // hyper reads the upgrade requests and writes the answers, so the driver's wire
    // bytes are the frames alone: in, four masked "hello N" (2 + 4 + 7) and the close
    // (2 + 4 + 2 + "bye"); out, four unmasked echoes (2 + 7) and the close reply (2 + 5).
    let received = value(&text, "wsevents_bytes_received_total", &server);
    assert_eq!(received, Some((4 * 13 + 11) as f64), "{text}");
    let sent = value(&text, "wsevents_bytes_sent_total", &server);
    assert_eq!(sent, Some((4 * 9 + 7) as f64), "{text}");
    assert!(
        text.contains("# TYPE wsevents_connections_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("# HELP wsevents_messages_received_total"),
        "{text}"
    );
    drop(serve);
}
