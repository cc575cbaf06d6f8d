//! The seed's `close()`: "If the connection is already closed, the method does
//! nothing", and nothing can be sent after it.
//!
//! ```javascript
//! ws.close();
//! ```
//!
//! `cargo run -p wsevents --example seed_close [URL]` (echo server running).

use wsevents::WebSocket;

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let closer = ws.clone();
    ws.on_open(move |_| {
        closer.close().expect("close");
        println!("readyState after close(): {:?}", closer.ready_state());
    });
    let closed = ws.run().await;
    println!(
        "closed: code {} (no status code was sent), wasClean {}",
        closed.code, closed.was_clean
    );
    ws.close()?;
    println!(
        "close() on a closed socket does nothing; readyState {:?}",
        ws.ready_state()
    );
    Ok(())
}
