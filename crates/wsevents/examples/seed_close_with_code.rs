//! The seed's `close(code, reason)`:
//!
//! ```javascript
//! ws.close(1000, "Closing normally");
//! ```
//!
//! `cargo run -p wsevents --example seed_close_with_code [URL]` (echo server running).

use wsevents::WebSocket;

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let closer = ws.clone();
    ws.on_open(move |_| {
        if let Err(e) = closer.close_with(1001, "reserved for the browser") {
            println!("close(1001): {e}");
        }
        closer.close_with(1000, "Closing normally").expect("close");
    });
    let closed = ws.run().await;
    println!(
        "closed: {} {:?} wasClean {}",
        closed.code, closed.reason, closed.was_clean
    );
    Ok(())
}
