//! An echo server set up the way the README's "Running in production" section says:
//! keepalive, limits, a bounded send queue with the close rule, caps on connections and
//! handshakes, and a graceful shutdown on Ctrl-C that reports how it went.
//!
//! ```sh
//! cargo run --release -p wsevents --example production_server -- 127.0.0.1:9000
//! ```

use std::time::Duration;

use wsevents::{
    Acceptor, Backpressure, CancellationToken, CloseCode, Config, Server, ServerLimits,
};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());

    let config = Config {
        // Keepalive: a ping after 20 s with nothing received; then 20 s for anything
        // at all (the pong, or any frame), else 1011 and the connection is gone.
        ping_interval: Some(Duration::from_secs(20)),
        pong_timeout: Some(Duration::from_secs(20)),
        // No data message either way for 10 minutes: close with 1001.
        idle_timeout: Some(Duration::from_secs(600)),
        // Slowloris: the whole opening handshake (TLS included) within 10 s.
        handshake_timeout: Some(Duration::from_secs(10)),
        // What one peer can make us hold while receiving.
        max_frame_size: 1 << 20,
        max_message_size: 4 << 20,
        ..Config::default()
    };

    let stop = CancellationToken::new();
    let server = Server::builder(Acceptor::new().route("/ws").config(config))
        .limits(ServerLimits {
            max_connections: 10_000, // past it: 503 with Retry-After
            max_handshakes: 1024,
            // One address (a slowloris, a client in a loop) holds at most these.
            max_handshakes_per_ip: 64, // past it: its next TCP connection is closed
            max_connections_per_ip: 1000, // past it: 429 with Retry-After
            retry_after: Duration::from_secs(5),
        })
        // A client that stops reading is closed with 1013 once 1 MiB waits for it.
        .backpressure(Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER))?
        .shutdown_token(stop.clone())
        .grace(Duration::from_secs(10))
        .bind(addr)
        .await?;
    println!("listening on ws://{}/ws", server.local_addr());

    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel(); // every client gets 1001 after what is queued for it
    });

    while let Some(ws) = server.accept().await {
        tokio::spawn(async move {
            let echo = ws.clone();
            ws.on_message(move |e| {
                // The payload goes back as it came (text as text), without a copy.
                if let Err(error) = echo.send(&e.data) {
                    tracing::debug!(%error, "echo refused"); // Error::BufferFull: closing
                }
            });
            ws.on_pong(|e| {
                if let Some(rtt) = e.rtt {
                    tracing::debug!(?rtt, "keepalive round trip");
                }
            });
            ws.run().await;
        });
    }
    // `accept` returned None: the shutdown has begun; wait for its outcome.
    let report = server.shutdown(Duration::from_secs(10)).await;
    println!("shutdown: {report}");
    Ok(())
}
