//! One echo server per implementation, all built the same way for the comparison in
//! `bench/compare`: a tokio multi-threaded runtime with as many workers as the cores
//! the process may run on (`taskset` pins it), a `TcpListener` on the given address,
//! `TCP_NODELAY` on every accepted socket, one spawned task per connection, and each
//! library's own echo pattern: tokio-tungstenite's example (`read.forward(write)`:
//! messages already received are queued and flushed together), fastwebsockets' example
//! (`read_frame` / `write_frame`: its API writes each frame at once), yawc's and
//! tokio-websockets' examples (`next` / `send`: each reply is flushed at once), and for
//! wsevents both faces: the stream API's `next` / `feed` (what is fed leaves with the
//! next read, together) and the event API's `on_message` / `send` with `binaryType`
//! arraybuffer (`wsevents-events`: what a handler sends leaves before the socket is
//! read again, so replies to a batch leave together there too).
//!
//! ```text
//! peer-echo wsevents|wsevents-events|tungstenite|fastwebsockets|yawc|tokio-websockets|tcp 127.0.0.1:PORT
//! ```

use std::error::Error;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Result<T = ()> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result {
    let mut args = std::env::args().skip(1);
    let usage = "usage: peer-echo \
        wsevents|wsevents-events|tungstenite|fastwebsockets|yawc|tokio-websockets|tcp ADDR";
    let kind = args.next().ok_or(usage)?;
    let addr = args.next().ok_or(usage)?;
    let handler: fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = Result> + Send>> =
        match kind.as_str() {
            "wsevents" => |tcp| Box::pin(wsevents_echo(tcp)),
            "wsevents-events" => |tcp| Box::pin(wsevents_events_echo(tcp)),
            "tungstenite" => |tcp| Box::pin(tungstenite_echo(tcp)),
            "fastwebsockets" => |tcp| Box::pin(fastwebsockets_echo(tcp)),
            "yawc" => |tcp| Box::pin(yawc_echo(tcp)),
            "tokio-websockets" => |tcp| Box::pin(tokio_websockets_echo(tcp)),
            "tcp" => |tcp| Box::pin(tcp_echo(tcp)),
            _ => return Err(usage.into()),
        };
    let listener = TcpListener::bind(&addr).await?;
    println!("{kind} echo on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(error) = handler(tcp).await {
                eprintln!("connection: {error}");
            }
        });
    }
}

async fn wsevents_echo(tcp: TcpStream) -> Result {
    let mut ws = wsevents::accept(tcp).await?;
    // What is fed is written by the next `next()` before it waits for input: replies
    // to messages read together leave in one write (as `forward` does for tungstenite).
    while let Some(message) = ws.next().await {
        ws.feed(message?).await?;
    }
    Ok(())
}

/// The event API, as a browser program would write it: `binaryType = "arraybuffer"`,
/// `onmessage = e => ws.send(e.data)`.
async fn wsevents_events_echo(tcp: TcpStream) -> Result {
    use wsevents::{BinaryType, WebSocket};
    let stream = wsevents::accept(tcp).await?;
    let ws = WebSocket::from_stream(stream, "ws://127.0.0.1/");
    ws.set_binary_type(BinaryType::ArrayBuffer);
    let echo = ws.clone();
    ws.on_message(move |e| {
        // The payload goes back as it came (binary as the core's `Bytes`, text as its
        // `Utf8Bytes`), without a copy. A full send queue is the only error an open
        // socket can give: the echo then drops the message.
        let _ = echo.send(&e.data);
    });
    ws.run().await;
    Ok(())
}

async fn tungstenite_echo(tcp: TcpStream) -> Result {
    let ws = tokio_tungstenite::accept_async(tcp).await?;
    let (write, read) = ws.split();
    read.try_filter(|message| std::future::ready(message.is_text() || message.is_binary()))
        .forward(write)
        .await?;
    Ok(())
}

async fn fastwebsockets_echo(tcp: TcpStream) -> Result {
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};

    async fn upgrade(
        mut request: Request<Incoming>,
    ) -> std::result::Result<Response<Empty<Bytes>>, fastwebsockets::WebSocketError> {
        let (response, upgraded) = fastwebsockets::upgrade::upgrade(&mut request)?;
        tokio::spawn(async move {
            let run = async move {
                let mut ws = fastwebsockets::FragmentCollector::new(upgraded.await?);
                loop {
                    let frame = ws.read_frame().await?;
                    match frame.opcode {
                        fastwebsockets::OpCode::Close => break,
                        fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {
                            ws.write_frame(frame).await?;
                        }
                        _ => {}
                    }
                }
                Ok::<_, fastwebsockets::WebSocketError>(())
            };
            if let Err(error) = run.await {
                eprintln!("connection: {error}");
            }
        });
        Ok(response)
    }

    hyper::server::conn::http1::Builder::new()
        .serve_connection(
            hyper_util::rt::TokioIo::new(tcp),
            hyper::service::service_fn(upgrade),
        )
        .with_upgrades()
        .await?;
    Ok(())
}

async fn yawc_echo(tcp: TcpStream) -> Result {
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};

    // yawc's examples/echo_server.rs, with limits above the comparison's largest
    // message (1 MiB) and no compression (the generator offers none).
    async fn upgrade(mut request: Request<Incoming>) -> yawc::Result<Response<Empty<Bytes>>> {
        let options = yawc::Options::default()
            .with_max_payload_read(64 << 20)
            .with_max_read_buffer(128 << 20)
            .with_compression_level(yawc::CompressionLevel::none());
        let (response, upgraded) = yawc::WebSocket::upgrade_with_options(&mut request, options)?;
        tokio::spawn(async move {
            let run = async move {
                let mut ws = upgraded.await?;
                while let Some(frame) = ws.next().await {
                    match frame.opcode() {
                        yawc::OpCode::Text | yawc::OpCode::Binary => ws.send(frame).await?,
                        _ => {}
                    }
                }
                Ok::<_, yawc::WebSocketError>(())
            };
            if let Err(error) = run.await {
                eprintln!("connection: {error}");
            }
        });
        Ok(response)
    }

    hyper::server::conn::http1::Builder::new()
        .serve_connection(
            hyper_util::rt::TokioIo::new(tcp),
            hyper::service::service_fn(upgrade),
        )
        .with_upgrades()
        .await?;
    Ok(())
}

async fn tokio_websockets_echo(tcp: TcpStream) -> Result {
    // tokio-websockets' examples/echo_server.rs (its default limits: 64 MiB messages).
    let (_request, mut ws) = tokio_websockets::ServerBuilder::new().accept(tcp).await?;
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}

async fn tcp_echo(mut tcp: TcpStream) -> Result {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        tcp.write_all(&buf[..n]).await?;
    }
}
