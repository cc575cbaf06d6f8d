//! The seed's `onopen`:
//!
//! ```javascript
//! ws.onopen = function (e) {
//!     console.log("Geek-docs Connect open...");
//! };
//! ```
//!
//! Run against the echo server: `cargo run -p wsevents --example echo_server` then
//! `cargo run -p wsevents --example seed_onopen [URL]`.

use wsevents::WebSocket;

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let closer = ws.clone();
    ws.on_open(move |_e| {
        println!("Geek-docs Connect open...");
        let _ = closer.close();
    });
    ws.run().await;
    Ok(())
}
