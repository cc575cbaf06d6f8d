//! Pings and pongs on the stream API, over real sockets on 127.0.0.1: the `Stream`
//! hides them, `next_event` hands them out (a pong with its round-trip time when it
//! answers this end's ping).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use wsevents::{ClientBuilder, Message, StreamEvent, WebSocketStream};

const LIMIT: Duration = Duration::from_secs(20);

/// A connected client and the server end of its connection, over loopback.
async fn pair() -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        wsevents::accept(tcp).await.unwrap()
    });
    let client = ClientBuilder::new(&url)
        .unwrap()
        .handshake(tcp)
        .await
        .unwrap();
    (client, server.await.unwrap())
}

async fn next_event(ws: &mut WebSocketStream<TcpStream>) -> StreamEvent {
    timeout(LIMIT, ws.next_event())
        .await
        .expect("an event in time")
        .expect("not the end")
        .expect("no error")
}

#[tokio::test]
async fn next_event_hands_out_the_peers_ping_and_answers_it() {
    let (mut client, mut server) = pair().await;
    server.ping("are you there?").unwrap();
    server.send(Message::text("after the ping")).await.unwrap();
    assert_eq!(
        next_event(&mut client).await,
        StreamEvent::Ping(Bytes::from_static(b"are you there?"))
    );
    assert_eq!(
        next_event(&mut client).await,
        StreamEvent::Message(Message::text("after the ping"))
    );
    // The pong went out by itself.
    match next_event(&mut server).await {
        StreamEvent::Pong { payload, .. } => assert_eq!(payload, "are you there?"),
        other => panic!("expected the pong, got {other:?}"),
    }
}

#[tokio::test]
async fn the_stream_hides_pings_and_pongs() {
    let (mut client, mut server) = pair().await;
    server.ping("hidden").unwrap();
    server.send(Message::text("visible")).await.unwrap();
    let message = timeout(LIMIT, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message, Message::text("visible"));
    client.ping("hidden too").unwrap();
    client.send(Message::text("also visible")).await.unwrap();
    let message = timeout(LIMIT, server.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message, Message::text("also visible"));
    // The pong to the client's ping came before anything else; the stream skips it.
    server.send(Message::text("last")).await.unwrap();
    let message = timeout(LIMIT, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message, Message::text("last"));
}

#[tokio::test]
async fn pong_to_this_ends_ping_has_its_round_trip_time() {
    let (mut client, mut server) = pair().await;
    let echo = tokio::spawn(async move { while server.next().await.is_some() {} });
    let sent = tokio::time::Instant::now();
    client.ping("rtt").unwrap();
    match next_event(&mut client).await {
        StreamEvent::Pong { payload, rtt } => {
            assert_eq!(payload, "rtt");
            let rtt = rtt.expect("the pong answers our ping");
            assert!(rtt <= sent.elapsed(), "{rtt:?} is within the wait");
        }
        other => panic!("expected the pong, got {other:?}"),
    }
    client.close(wsevents::CloseCode::NORMAL, "").await.unwrap();
    echo.await.unwrap();
}

#[tokio::test]
async fn unsolicited_pong_has_no_round_trip_time() {
    let (mut client, mut server) = pair().await;
    // A whole unmasked pong frame from the server, written on the transport between
    // two of its frames.
    server.get_mut().write_all(b"\x8a\x04beat").await.unwrap();
    match next_event(&mut client).await {
        StreamEvent::Pong { payload, rtt } => {
            assert_eq!(payload, "beat");
            assert_eq!(rtt, None);
        }
        other => panic!("expected the pong, got {other:?}"),
    }
}

#[tokio::test]
async fn pong_to_an_older_ping_has_no_round_trip_time() {
    let (mut client, mut server) = pair().await;
    let echo = tokio::spawn(async move { while server.next().await.is_some() {} });
    client.ping("first").unwrap();
    client.ping("second").unwrap();
    // Only the latest ping is remembered: the first pong cannot be timed.
    assert_eq!(
        next_event(&mut client).await,
        StreamEvent::Pong {
            payload: Bytes::from_static(b"first"),
            rtt: None
        }
    );
    match next_event(&mut client).await {
        StreamEvent::Pong { payload, rtt } => {
            assert_eq!(payload, "second");
            assert!(rtt.is_some());
        }
        other => panic!("expected the second pong, got {other:?}"),
    }
    client.close(wsevents::CloseCode::NORMAL, "").await.unwrap();
    echo.await.unwrap();
}
