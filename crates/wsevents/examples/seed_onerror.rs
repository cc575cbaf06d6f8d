//! The seed's `onerror`:
//!
//! ```javascript
//! ws.onerror = function (e) {
//!     console.log("WebSocket Error:", e);
//!     handleErrors(e);
//! };
//! ```
//!
//! Connects to a port where nothing listens (by default), so the error fires, and the
//! close event follows, as the seed says it will.
//!
//! `cargo run -p wsevents --example seed_onerror [URL]`

use wsevents::{ErrorEvent, WebSocket};

fn handle_errors(e: &ErrorEvent) {
    match e.error() {
        Some(wsevents::Error::Io(io)) => println!("the network failed: {io}"),
        Some(other) => println!("failed: {other}"),
        None => println!("a handler panicked"),
    }
}

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:1/".into());
    let ws = WebSocket::new(&url)?;
    ws.on_error(|e| {
        println!("WebSocket Error: {}", e.message());
        handle_errors(e);
    });
    ws.on_close(|e| println!("then close: {} wasClean={}", e.code, e.was_clean));
    ws.run().await;
    Ok(())
}
