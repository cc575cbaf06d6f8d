//! Pings and pongs as events (a wsevents extension beside the browser's four) over real
//! sockets on 127.0.0.1: `on_ping` sees the peer's pings, `on_pong` sees pongs with
//! the round-trip time when they answer this end's latest ping (issue 13, item 4).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use wsevents::{Event, EventType, Message, ReadyState, Server, WebSocket};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: String) {
    log.lock().unwrap().push(entry);
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// Both ends on the event API: the server pings on open; the client's `on_ping` and
/// its `ping` listener see the payload, and the server's `on_pong` gets the answer
/// with an rtt. The client then pings back and its `on_pong` gets an rtt too.
#[tokio::test]
async fn on_ping_sees_the_peers_ping_and_on_pong_gets_the_answer_with_an_rtt() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let server_log: Log = Arc::default();
    let log = server_log.clone();
    let server_task = tokio::spawn(async move {
        let ws = server.accept().await.unwrap();
        let pinger = ws.clone();
        ws.on_open(move |_| pinger.ping("from server").unwrap());
        let l = log.clone();
        ws.on_pong(move |e| {
            let rtt = e.rtt.unwrap();
            assert!(rtt < Duration::from_secs(5), "{rtt:?}");
            push(&l, format!("pong:{}:rtt", text(&e.data)));
        });
        let l = log.clone();
        ws.on_ping(move |e| push(&l, format!("ping:{}", text(&e.data))));
        ws.run().await
    });

    let ws = WebSocket::new(&url).unwrap();
    let log: Log = Arc::default();
    let (l, pinger) = (log.clone(), ws.clone());
    ws.on_ping(move |e| {
        push(&l, format!("on_ping:{}", text(&e.data)));
        pinger.ping(&b"from client"[..]).unwrap();
    });
    let l = log.clone();
    ws.add_event_listener(EventType::Ping, move |e| {
        let ping = e.as_ping().unwrap();
        push(&l, format!("listener:{}", text(&ping.data)));
    });
    let (l, closer) = (log.clone(), ws.clone());
    ws.on_pong(move |e| {
        push(&l, format!("on_pong:{}:{}", text(&e.data), e.rtt.is_some()));
        closer.close().unwrap();
    });
    let l = log.clone();
    ws.add_event_listener(EventType::Pong, move |e| {
        assert_eq!(e.event_type(), EventType::Pong);
        let pong = e.as_pong().unwrap();
        push(&l, format!("pong listener:{:?}", pong.rtt.map(|_| "rtt")));
    });
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.run())
        .await
        .unwrap();
    assert!(closed.was_clean);
    assert_eq!(
        entries(&log),
        [
            "on_ping:from server",
            "listener:from server",
            "on_pong:from client:true",
            "pong listener:Some(\"rtt\")",
        ]
    );
    server_task.await.unwrap();
    assert_eq!(
        entries(&server_log),
        ["pong:from server:rtt", "ping:from client"]
    );
}

/// A pong that answers nothing of ours (an unsolicited heartbeat, or one whose payload
/// is not our latest ping's) has no rtt; the answer to our ping has one. The peer
/// writes the unsolicited pongs as raw frames on its socket.
#[tokio::test]
async fn a_pong_not_answering_our_latest_ping_has_no_rtt() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let ws = WebSocket::new(&url).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    ws.on_pong(move |e| push(&l, format!("{}:{:?}", text(&e.data), e.rtt.map(|_| "rtt"))));
    let client = tokio::spawn({
        let ws = ws.clone();
        async move {
            // `next_event` hands pongs out too.
            let mut pongs = 0;
            while let Some(event) = ws.next_event().await {
                pongs += usize::from(matches!(event, Event::Pong(_)));
            }
            pongs
        }
    });
    let (mut peer, _) = server.accept_stream().await.unwrap();
    wait_until("open", || ws.ready_state() == ReadyState::Open).await;

    // An unsolicited pong (RFC 6455 §5.5.3: a heartbeat), server to client, unmasked.
    peer.get_mut().write_all(b"\x8a\x02hb").await.unwrap();
    wait_until("the heartbeat", || entries(&log).len() == 1).await;

    ws.ping("p1").unwrap();
    // A pong with another payload reaches the client before the peer reads the ping.
    peer.get_mut().write_all(b"\x8a\x05other").await.unwrap();
    ws.send("done").unwrap();
    // Reading the ping queues and writes the auto-pong; then the message arrives.
    let message = peer.next().await.unwrap().unwrap();
    assert_eq!(message, Message::text("done"));
    wait_until("the answer", || entries(&log).len() == 3).await;
    ws.close().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), peer.next()).await;
    drop(peer);
    assert_eq!(client.await.unwrap(), 3);
    assert_eq!(entries(&log), ["hb:None", "other:None", "p1:Some(\"rtt\")"]);
}

/// A keepalive ping (`Config::ping_interval`) is answered by the peer's auto-pong,
/// which comes as a `pong` event with an rtt: the core timed the ping.
#[tokio::test]
async fn a_pong_answering_a_keepalive_ping_has_an_rtt() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    tokio::spawn(async move {
        while let Some(ws) = server.accept().await {
            tokio::spawn(async move { ws.run().await });
        }
    });
    let config = wsevents::Config {
        ping_interval: Some(Duration::from_millis(50)),
        ..wsevents::Config::default()
    };
    let builder = wsevents::ClientBuilder::new(&url).unwrap().config(config);
    let ws = WebSocket::connecting(builder);
    let log: Log = Arc::default();
    let (l, closer) = (log.clone(), ws.clone());
    ws.on_pong(move |e| {
        assert_eq!(e.data.len(), 8, "the core's keepalive payload: a counter");
        push(&l, format!("pong:{:?}", e.rtt.map(|_| "rtt")));
        closer.close().unwrap();
    });
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.run())
        .await
        .unwrap();
    assert!(closed.was_clean);
    assert_eq!(entries(&log), ["pong:Some(\"rtt\")"]);
}
