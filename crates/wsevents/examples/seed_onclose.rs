//! The seed's `onclose`:
//!
//! ```javascript
//! ws.onclose = function (e) {
//!     console.log("Connectoin from geek-docs.com closed.", e);
//! };
//! ```
//!
//! `cargo run -p wsevents --example seed_onclose [URL]` (echo server running).

use wsevents::WebSocket;

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let closer = ws.clone();
    ws.on_open(move |_| {
        let _ = closer.close_with(1000, "done");
    });
    ws.on_close(|e| println!("Connection from geek-docs.com closed. {e:?}"));
    ws.run().await;
    Ok(())
}
