//! Open many WebSocket connections and hold them idle: the load side of the
//! idle-connection capacity check (`scripts/idle-connections`).
//!
//! ```text
//! idle_clients URL COUNT HOLD_SECONDS
//! ```
//! Prints `open N` once all are open, holds them, then checks each one still echoes
//! and prints `echoed N`. Exits non-zero if any connection failed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use wsevents::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: idle_clients URL COUNT HOLD_SECONDS")?;
    let count: usize = args.next().ok_or("missing COUNT")?.parse()?;
    let hold: u64 = args.next().ok_or("missing HOLD_SECONDS")?.parse()?;

    let mut conns = Vec::with_capacity(count);
    // Open in batches so the listen backlog is never overrun.
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let opening = batch.iter().map(|_| wsevents::connect(&url));
        for result in futures_util::future::join_all(opening).await {
            conns.push(result?);
        }
    }
    println!("open {}", conns.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;

    let mut echoed = 0;
    for ws in &mut conns {
        ws.send(Message::text("still there?")).await?;
        match ws.next().await {
            Some(Ok(m)) if m.as_text() == Some("still there?") => echoed += 1,
            other => return Err(format!("connection lost: {other:?}").into()),
        }
    }
    println!("echoed {echoed}");
    Ok(())
}
