//! The `metrics` feature over real sockets on 127.0.0.1, read back the way an operator
//! reads them: a Prometheus recorder (`metrics-exporter-prometheus`) rendered to text.
//! One server (the event API), clients of both APIs; every metric is checked by its
//! exact value.
//!
//! The recorder is process-wide, and every connection of the process counts, so this
//! file holds one test (nextest runs each test in its own process anyway).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsevents::{Acceptor, CloseCode, Config, Data, Event, Message, ReadyState, Server, WebSocket};

/// A request without a `Sec-WebSocket-Key`: the core answers 400 itself.
const NO_KEY: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// A request cut short: the peer leaves in the middle of its head.
const CUT_SHORT: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpg";

/// The rendered metrics, parsed: (name, sorted labels) → value.
struct Scrape(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    fn of(handle: &PrometheusHandle) -> Scrape {
        let text = handle.render();
        let mut values = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            labels.sort();
            values.insert((name.to_owned(), labels), value.parse().unwrap());
        }
        Scrape(values)
    }

    /// The value of one series (0 when it was never recorded).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series of `name`, for failure messages.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, labels), value)| format!("{labels:?} = {value}"))
            .collect()
    }
}

/// Wait (bounded) until the scrape satisfies `condition`, and return that scrape.
async fn scrape_until(handle: &PrometheusHandle, condition: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let scrape = Scrape::of(handle);
        if condition(&scrape) {
            return scrape;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "metrics never got there:\n{}",
            handle.render()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An event-API echo server at `/ws`, capped at two connections, with a short
/// handshake timeout.
async fn echo_server() -> std::sync::Arc<Server> {
    let acceptor = Acceptor::new().route("/ws").config(Config {
        handshake_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    });
    let server = Server::builder(acceptor)
        .max_connections(2)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let server = std::sync::Arc::new(server);
    let accepting = server.clone();
    tokio::spawn(async move {
        while let Some(ws) = accepting.accept().await {
            tokio::spawn(async move {
                let echo = ws.clone();
                ws.on_message(move |e| {
                    let _ = match &e.data {
                        Data::Text(text) => echo.send(text.as_str()),
                        other => echo.send(other.as_bytes().to_vec()),
                    };
                });
                ws.run().await;
            });
        }
    });
    server
}

/// Send raw bytes, then read everything until the server closes.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str, shut_write: bool) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    if shut_write {
        tcp.shutdown().await.unwrap();
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn every_metric_counts_exactly_what_happened_on_the_wire() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    wsevents::metrics::describe();

    let server = echo_server().await;
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws");

    // Client A, stream API: 5 messages, 5 echoes.
    let mut a = wsevents::connect(&url).await.unwrap();
    for i in 0..5 {
        a.send(Message::text(format!("a{i}"))).await.unwrap();
        assert_eq!(
            a.next().await.unwrap().unwrap(),
            Message::text(format!("a{i}"))
        );
    }

    // Client B, event API: 3 messages, 3 echoes.
    let b = WebSocket::new(&url).unwrap();
    let mut echoes = 0;
    while let Some(event) = b.next_event().await {
        match event {
            Event::Open => {
                for i in 0..3 {
                    b.send(format!("b{i}")).unwrap();
                }
            }
            Event::Message(_) => {
                echoes += 1;
                if echoes == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(b.ready_state(), ReadyState::Open);

    let open = scrape_until(&handle, |s| {
        s.get("wsevents_connections_open", &[("role", "server")]) == 2.0
    })
    .await;
    assert_eq!(
        open.get("wsevents_connections_open", &[("role", "client")]),
        2.0
    );

    // Past the cap: 503. At an unknown path: 404. Both are refusals the client sees.
    let at_cap = wsevents::connect(&url).await;
    assert!(at_cap.is_err(), "{at_cap:?}");
    let unknown = wsevents::connect(&format!("ws://{addr}/nowhere")).await;
    assert!(unknown.is_err(), "{unknown:?}");
    // A bad request (400 from the core), a peer that leaves mid-head, a silent one.
    let no_key = raw_exchange(addr, NO_KEY, false).await;
    assert!(no_key.starts_with("HTTP/1.1 400"), "{no_key}");
    let cut_short = raw_exchange(addr, CUT_SHORT, true).await;
    assert_eq!(cut_short, "");
    let silent = raw_exchange(addr, "", false).await;
    assert_eq!(silent, "");

    // A closes with 1000, B with 4000.
    let closure = a.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(closure.was_clean());
    b.close_with(4000, "bye").unwrap();
    let close = b.run().await;
    assert_eq!((close.code, close.was_clean), (4000, true), "{close:?}");
    // Their server sides are torn down before C comes (the shutdown reports C alone).
    scrape_until(&handle, |s| {
        s.get("wsevents_connections_open", &[("role", "server")]) == 0.0
    })
    .await;

    // C is open when the server shuts down: 1001 from the server.
    let mut c = wsevents::connect(&url).await.unwrap();
    let c = tokio::spawn(async move { c.next().await.is_none() });
    let report = server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.clean, 1, "{report}");
    assert!(c.await.unwrap(), "C got its 1001 and the end of the stream");

    let s = scrape_until(&handle, |s| {
        s.get("wsevents_connections_open", &[("role", "server")]) == 0.0
            && s.get("wsevents_connections_open", &[("role", "client")]) == 0.0
    })
    .await;
    let counter = |name: &str, labels: &[(&str, &str)]| s.get(name, labels);

    for role in ["server", "client"] {
        let r = [("role", role)];
        assert_eq!(counter("wsevents_connections_total", &r), 3.0, "{role}");
        assert_eq!(
            counter("wsevents_messages_received_total", &r),
            8.0,
            "{role}"
        );
        assert_eq!(counter("wsevents_messages_sent_total", &r), 8.0, "{role}");
    }

    let refused = "wsevents_handshakes_refused_total";
    for status in ["503", "404", "400"] {
        assert_eq!(
            counter(refused, &[("status", status)]),
            1.0,
            "{status}: {:?}",
            s.all(refused)
        );
    }
    assert_eq!(s.all(refused).len(), 3, "{:?}", s.all(refused));

    let failed = "wsevents_handshakes_failed_total";
    let failure = |role, reason| counter(failed, &[("role", role), ("reason", reason)]);
    assert_eq!(failure("server", "eof"), 1.0, "{:?}", s.all(failed));
    assert_eq!(failure("server", "timeout"), 1.0, "{:?}", s.all(failed));
    assert_eq!(failure("client", "refused"), 2.0, "{:?}", s.all(failed));
    assert_eq!(s.all(failed).len(), 3, "{:?}", s.all(failed));

    let closes = "wsevents_close_codes_total";
    let close = |role, code, initiator| {
        counter(
            closes,
            &[("role", role), ("code", code), ("initiator", initiator)],
        )
    };
    assert_eq!(close("client", "1000", "local"), 1.0, "{:?}", s.all(closes));
    assert_eq!(
        close("server", "1000", "remote"),
        1.0,
        "{:?}",
        s.all(closes)
    );
    assert_eq!(close("client", "4000", "local"), 1.0, "{:?}", s.all(closes));
    assert_eq!(
        close("server", "4000", "remote"),
        1.0,
        "{:?}",
        s.all(closes)
    );
    assert_eq!(close("server", "1001", "local"), 1.0, "{:?}", s.all(closes));
    assert_eq!(
        close("client", "1001", "remote"),
        1.0,
        "{:?}",
        s.all(closes)
    );
    assert_eq!(s.all(closes).len(), 6, "{:?}", s.all(closes));

    // Wire bytes: what the clients wrote, the server read, plus the raw peers' bytes.
    let bytes = |name, role| counter(name, &[("role", role)]);
    let raw = (NO_KEY.len() + CUT_SHORT.len()) as f64;
    assert_eq!(
        bytes("wsevents_bytes_received_total", "server"),
        bytes("wsevents_bytes_sent_total", "client") + raw
    );
    // The other way the raw peers read the 400, and the refused clients may stop
    // reading after the head of their 503 and 404; the messages are there at least.
    let server_sent = bytes("wsevents_bytes_sent_total", "server");
    let client_received = bytes("wsevents_bytes_received_total", "client");
    assert!(client_received <= server_sent - no_key.len() as f64);
    // At least three 101 heads and eight echoes of two-byte messages (four bytes each).
    let least = 3 * "HTTP/1.1 101 Switching Protocols\r\n".len() + 8 * 4;
    assert!(client_received >= least as f64, "{client_received}");

    // The descriptions reach the exporter.
    let text = handle.render();
    assert!(
        text.contains("# HELP wsevents_bytes_sent_total Bytes written to the transport"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE wsevents_connections_open gauge"),
        "{text}"
    );
}
