//! The send queue's bound (`Backpressure`) over real sockets on 127.0.0.1: a peer that
//! stops reading, a socket that sends until the limit, and each rule at it (issue 13,
//! item 2).
//!
//! The tests run on tokio's current-thread runtime, so nothing is written between a
//! `send` and the check after it: `buffered_amount` moves only when the test yields.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wsevents::{
    Backpressure, BinaryType, ClientBuilder, CloseCode, Data, Error, ReadyState, Server, WebSocket,
    WhenFull,
};

const LIMIT: usize = 256 * 1024;
const SIZE: usize = 16 * 1024;

/// Message `i`: `SIZE` bytes that start with `i`.
fn message(i: u64) -> Vec<u8> {
    let mut data = vec![0x5a; SIZE];
    data[..8].copy_from_slice(&i.to_be_bytes());
    data
}

fn index(data: &Data) -> u64 {
    let bytes = data.as_bytes();
    assert_eq!(bytes.len(), SIZE);
    u64::from_be_bytes(bytes[..8].try_into().unwrap())
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

/// Send messages 0, 1, 2, … on `ws` (alternately with `send` and `send_uncompressed`),
/// letting its driver write between sends, until one is refused. Returns how many were
/// accepted and the refusal. Checks on the way that `buffered_amount` never passes the
/// limit and that the refused message left nothing queued.
async fn send_until_full(ws: &WebSocket, limit: usize) -> (u64, Error) {
    let mut sent = 0u64;
    loop {
        assert!(
            sent < 20_000,
            "{} MiB accepted and still not full",
            (sent * SIZE as u64) >> 20
        );
        let before = ws.buffered_amount();
        let result = if sent.is_multiple_of(2) {
            ws.send(message(sent))
        } else {
            ws.send_uncompressed(message(sent))
        };
        match result {
            Ok(()) => sent += 1,
            Err(error) => {
                assert_eq!(
                    ws.buffered_amount(),
                    before,
                    "a refused message queues nothing"
                );
                return (sent, error);
            }
        }
        assert!(
            ws.buffered_amount() <= limit as u64,
            "buffered {} over the limit {limit}",
            ws.buffered_amount()
        );
        // Let the driver write what the kernel takes.
        tokio::task::yield_now().await;
    }
}

/// Received messages' indices, and the server socket's `run` in the background.
type Received = Arc<Mutex<Vec<u64>>>;

fn record_messages(ws: &WebSocket) -> Received {
    let received: Received = Arc::default();
    let r = received.clone();
    ws.set_binary_type(BinaryType::ArrayBuffer);
    ws.on_message(move |e| match &e.data {
        Data::Text(text) => assert_eq!(text, "after the drain"),
        data => r.lock().unwrap().push(index(data)),
    });
    received
}

/// The error rule, on a client set up with `ClientBuilder::backpressure`: the peer
/// stops reading, sends are refused at the limit with `Error::BufferFull` and nothing
/// of them is queued; the socket stays open, the peer gets exactly the accepted
/// messages, and sending works again once the queue has drained.
#[tokio::test]
async fn client_send_is_refused_at_the_limit_with_buffer_full_and_stays_open() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let builder = ClientBuilder::new(&url)
        .unwrap()
        .deflate(None)
        .backpressure(Backpressure::error(LIMIT))
        .unwrap();
    let ws = WebSocket::connecting(builder);
    assert_eq!(ws.backpressure(), Backpressure::error(LIMIT));
    let client = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    // The peer is accepted but not driven: it reads nothing.
    let peer = server.accept().await.unwrap();
    wait_until("open", || ws.ready_state() == ReadyState::Open).await;

    let (sent, refused) = send_until_full(&ws, LIMIT).await;
    match refused {
        Error::BufferFull {
            buffered,
            message,
            limit,
        } => {
            assert_eq!((message, limit), (SIZE, LIMIT));
            assert!(buffered + message > limit, "{buffered} + {message}");
            assert!(buffered > 0);
        }
        other => panic!("expected BufferFull, got {other:?}"),
    }
    assert_eq!(
        ws.ready_state(),
        ReadyState::Open,
        "the error rule keeps it open"
    );
    assert!(
        sent as usize * SIZE > LIMIT,
        "the kernel took some before the queue grew"
    );

    // The peer reads again: it gets every accepted message, in order, and no other.
    let received = record_messages(&peer);
    let peer_run = tokio::spawn({
        let peer = peer.clone();
        async move { peer.run().await }
    });
    wait_until("the peer has every accepted message", || {
        received.lock().unwrap().len() as u64 >= sent
    })
    .await;
    wait_until("the queue drained", || ws.buffered_amount() == 0).await;
    ws.send("after the drain").unwrap();
    ws.close_with(1000, "done").unwrap();
    let closed = client.await.unwrap();
    assert_eq!((closed.code, closed.was_clean), (1000, true));
    let peer_closed = peer_run.await.unwrap();
    assert_eq!(
        (peer_closed.code, peer_closed.reason.as_str()),
        (1000, "done")
    );
    assert_eq!(*received.lock().unwrap(), (0..sent).collect::<Vec<_>>());
}

/// The close rule, on a server socket set with `set_backpressure`: the client stops
/// reading; the refused send is `Error::BufferFull` and starts the close with the
/// rule's code; the client, reading again, gets every accepted message then the close
/// frame with that code; the server's own `close` event follows.
#[tokio::test]
async fn server_send_at_the_limit_closes_with_the_code_of_the_close_rule() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let client = WebSocket::connecting(ClientBuilder::new(&url).unwrap().deflate(None));
    let connecting = tokio::spawn({
        let client = client.clone();
        // Drive only until open, then stop reading.
        async move { client.next_event().await.map(|e| e.event_type()) }
    });
    let ws = server.accept().await.unwrap();
    let rule = Backpressure::close(LIMIT, CloseCode::TRY_AGAIN_LATER);
    ws.set_backpressure(rule).unwrap();
    assert_eq!(ws.backpressure(), rule);
    let closes = Arc::new(Mutex::new(Vec::new()));
    let c = closes.clone();
    ws.on_close(move |e| c.lock().unwrap().push((e.code, e.was_clean)));
    let server_run = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    assert_eq!(connecting.await.unwrap(), Some(wsevents::EventType::Open));
    wait_until("open", || ws.ready_state() == ReadyState::Open).await;

    let (sent, refused) = send_until_full(&ws, LIMIT).await;
    assert!(
        matches!(
            refused,
            Error::BufferFull {
                message: SIZE,
                limit: LIMIT,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(
        ws.ready_state(),
        ReadyState::Closing,
        "the close rule closes"
    );
    assert!(matches!(ws.send("late"), Err(Error::InvalidState)));

    // The client reads again: every accepted message, then the close frame.
    let received = record_messages(&client);
    let closed = tokio::time::timeout(Duration::from_secs(10), client.run())
        .await
        .unwrap();
    assert_eq!(*received.lock().unwrap(), (0..sent).collect::<Vec<_>>());
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1013, Backpressure::CLOSE_REASON)
    );
    let server_closed = server_run.await.unwrap();
    assert_eq!(server_closed.code, 1013, "the client echoes the code");
    assert_eq!(
        *closes.lock().unwrap(),
        [(1013, true)],
        "the local close event"
    );
}

/// A message larger than the limit goes out alone, on an empty queue; while it is
/// queued, anything else is refused; once written, sending works again.
#[tokio::test]
async fn a_message_over_the_limit_goes_alone_on_an_empty_queue() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let ws = WebSocket::connecting(ClientBuilder::new(&url).unwrap().deflate(None));
    ws.set_backpressure(Backpressure::error(1024)).unwrap();
    let client = tokio::spawn({
        let ws = ws.clone();
        async move { ws.run().await }
    });
    let peer = server.accept().await.unwrap();
    let received = record_messages(&peer);
    let peer_run = tokio::spawn({
        let peer = peer.clone();
        async move { peer.run().await }
    });
    wait_until("open", || ws.ready_state() == ReadyState::Open).await;

    ws.send(message(0)).unwrap();
    assert_eq!(ws.buffered_amount(), SIZE as u64, "over the limit, alone");
    match ws.send(vec![1u8]) {
        Err(Error::BufferFull {
            buffered: SIZE,
            message: 1,
            limit: 1024,
        }) => {}
        other => panic!("expected BufferFull, got {other:?}"),
    }
    assert_eq!(ws.buffered_amount(), SIZE as u64);
    wait_until("written", || ws.buffered_amount() == 0).await;
    ws.send(message(1)).unwrap();
    wait_until("both arrived", || received.lock().unwrap().len() == 2).await;
    ws.close().unwrap();
    client.await.unwrap();
    peer_run.await.unwrap();
    assert_eq!(*received.lock().unwrap(), [0, 1]);
}

/// A close rule with a code that cannot be sent is refused, and the rule stays.
#[test]
fn a_close_rule_with_a_code_not_for_the_wire_is_invalid_access() {
    let ws = WebSocket::new("ws://127.0.0.1:9/").unwrap();
    assert_eq!(ws.backpressure(), Backpressure::default());
    assert_eq!(ws.backpressure().limit, 16 << 20);
    assert_eq!(ws.backpressure().when_full, WhenFull::Error);
    let bad = Backpressure::close(1, CloseCode::ABNORMAL);
    assert!(matches!(
        ws.set_backpressure(bad),
        Err(Error::InvalidAccess(_))
    ));
    assert_eq!(ws.backpressure(), Backpressure::default());
}

#[tokio::test]
async fn server_sockets_take_the_builders_rule() {
    let rule = Backpressure::close(LIMIT, CloseCode::TRY_AGAIN_LATER);
    let server = Server::builder(wsevents::Acceptor::new())
        .backpressure(rule)
        .unwrap()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let client = tokio::spawn(async move { wsevents::connect(&url).await.map(|_| ()) });
    let ws = server.accept().await.unwrap();
    assert_eq!(ws.backpressure(), rule);
    assert!(
        Server::builder(wsevents::Acceptor::new())
            .backpressure(Backpressure::close(1, CloseCode::ABNORMAL))
            .is_err(),
        "1006 may not be sent"
    );
    drop(client);
}
