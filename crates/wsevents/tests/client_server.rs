//! The tokio client and server over real sockets on 127.0.0.1: TLS, subprotocols,
//! origin refusal, handshake timeouts, vanishing peers and message-size limits.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsevents::{Acceptor, ClientBuilder, CloseCode, Config, Error, Message, Server};

/// An echo server with `acceptor`, on a free port; returns its `ws://` base URL.
async fn echo_server(acceptor: Acceptor) -> (Server, String) {
    let server = Server::builder(acceptor).bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    (server, url)
}

fn spawn_echo(server: Server) -> tokio::task::JoinHandle<Vec<Option<wsevents::Closure>>> {
    tokio::spawn(async move {
        let mut closures = Vec::new();
        while let Some((mut ws, _)) = server.accept_stream().await {
            while let Some(Ok(message)) = ws.next().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            closures.push(ws.closure().cloned());
        }
        closures
    })
}

#[tokio::test]
async fn client_and_server_echo_text_and_binary() {
    let (server, url) = echo_server(Acceptor::new()).await;
    let _task = spawn_echo(server);
    let mut ws = wsevents::connect(&format!("{url}/echo")).await.unwrap();
    ws.send(Message::text("Hello WebSocket.")).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3, 4, 5, 6, 7, 8]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("Hello WebSocket.")
    );
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3, 4, 5, 6, 7, 8])
    );
    let closure = ws
        .close(CloseCode::NORMAL, "Closing normally")
        .await
        .unwrap();
    assert!(closure.was_clean());
    assert_eq!(closure.code(), CloseCode::NORMAL);
}

#[tokio::test]
async fn wss_with_a_test_ca() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let tls = wsevents::tls::server_config_from_pem(
        server_cert.pem().as_bytes(),
        server_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let server = Server::builder(Acceptor::new())
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = server.local_addr().port();
    let _task = spawn_echo(server);

    let client_tls = wsevents::tls::client_config_with_ca(ca.pem().as_bytes()).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let mut ws = ClientBuilder::new(&format!("wss://{host}:{port}/secure"))
            .unwrap()
            .tls_config(client_tls.clone())
            .connect()
            .await
            .unwrap();
        ws.send(Message::text("over TLS")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over TLS"));
        assert!(ws.close(CloseCode::NORMAL, "").await.unwrap().was_clean());
    }

    // Without the CA, the certificate is refused.
    let refused = ClientBuilder::new(&format!("wss://localhost:{port}/"))
        .unwrap()
        .connect()
        .await;
    assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");
}

#[tokio::test]
async fn subprotocol_negotiation_picks_the_clients_first_supported() {
    let (server, url) = echo_server(Acceptor::new().protocols(&["superchat", "chat"])).await;
    let _task = spawn_echo(server);
    let ws = ClientBuilder::new(&url)
        .unwrap()
        .protocols(&["chat", "superchat"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    let ws = ClientBuilder::new(&url)
        .unwrap()
        .protocols(&["v2"])
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), None, "no common protocol: none chosen");
}

#[tokio::test]
async fn origin_refused_with_403() {
    let acceptor = Acceptor::new().allow_origin(|origin| origin == Some("https://good.example"));
    let (server, url) = echo_server(acceptor).await;
    let _task = spawn_echo(server);
    let refused = ClientBuilder::new(&url)
        .unwrap()
        .origin("https://evil.example")
        .connect()
        .await;
    match refused {
        Err(Error::Handshake(e)) => assert!(e.to_string().contains("403"), "{e}"),
        other => panic!("expected a 403, got {other:?}"),
    }
    let ok = ClientBuilder::new(&url)
        .unwrap()
        .origin("https://good.example")
        .connect()
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn unknown_path_is_refused_with_404() {
    let (server, url) = echo_server(Acceptor::new().route("/ws")).await;
    let _task = spawn_echo(server);
    assert!(wsevents::connect(&format!("{url}/ws")).await.is_ok());
    let refused = wsevents::connect(&format!("{url}/nope")).await;
    assert!(
        matches!(refused, Err(Error::Handshake(ref e)) if e.to_string().contains("404")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn server_times_out_a_handshake_that_never_completes() {
    let config = Config {
        handshake_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let (server, url) = echo_server(Acceptor::new().config(config)).await;
    let _task = spawn_echo(server);
    let mut tcp = TcpStream::connect(url.trim_start_matches("ws://"))
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap(); // never finished
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "server closed the connection: {read:?}"
    );
}

#[tokio::test]
async fn client_times_out_a_server_that_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let result = ClientBuilder::new(&url)
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await;
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
}

/// A raw TCP client that completes the handshake by hand.
async fn raw_client(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tcp
}

#[tokio::test]
async fn peer_vanishing_mid_message_is_1006() {
    let server = Server::builder(Acceptor::new())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr().to_string();
    let client = tokio::spawn(async move {
        let mut tcp = raw_client(&addr).await;
        // A masked binary frame announcing 100 bytes, of which 10 arrive.
        let mut frame = vec![0x82, 0x80 | 100, 1, 2, 3, 4];
        frame.extend([0u8; 10]);
        tcp.write_all(&frame).await.unwrap();
        drop(tcp);
    });
    let (mut ws, _) = server.accept_stream().await.unwrap();
    client.await.unwrap();
    let next = ws.next().await;
    assert!(matches!(next, Some(Err(Error::Io(_)))), "{next:?}");
    assert!(ws.next().await.is_none());
    let closure = ws.closure().unwrap();
    assert_eq!(closure.code(), CloseCode::ABNORMAL);
    assert!(!closure.was_clean());
}

fn big_config() -> Config {
    Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    }
}

#[tokio::test]
async fn a_64_mib_message_within_limits_round_trips() {
    let (server, url) = echo_server(Acceptor::new().config(big_config())).await;
    let _task = spawn_echo(server);
    let mut ws = ClientBuilder::new(&url)
        .unwrap()
        .config(big_config())
        .connect()
        .await
        .unwrap();
    let payload: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(payload.clone())).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.payload().len(), payload.len());
    assert!(echoed.payload()[..] == payload[..]);
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let small = Config {
        max_message_size: 1 << 20,
        ..Config::default()
    };
    let (server, url) = echo_server(Acceptor::new().config(small)).await;
    let task = spawn_echo(server);
    let mut ws = wsevents::connect(&url).await.unwrap();
    ws.send(Message::binary(vec![0u8; 2 << 20])).await.unwrap();
    assert!(
        ws.next().await.is_none(),
        "the server closes the connection"
    );
    let closure = ws.closure().unwrap();
    assert_eq!(closure.code(), CloseCode::MESSAGE_TOO_BIG);
    drop(task);
}
