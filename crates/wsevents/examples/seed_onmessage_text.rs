//! The seed's `onmessage` with text:
//!
//! ```javascript
//! ws.onmessage = function (e) {
//!     if (typeof e.data === "string") {
//!         console.log("String message from geek-docs.com received", e, e.data);
//!     } else {
//!         console.log("Other message from geek-docs.com received", e, e.data);
//!     }
//! };
//! ```
//!
//! `cargo run -p wsevents --example seed_onmessage_text [URL]` (echo server running).

use wsevents::{Data, WebSocket};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let sender = ws.clone();
    ws.on_open(move |_| {
        // The echo server sends it back.
        let _ = sender.send("Hello geek-docs.com WebSocket.");
    });
    let closer = ws.clone();
    ws.on_message(move |e| {
        match &e.data {
            Data::Text(text) => println!("String message from geek-docs.com received {e:?} {text}"),
            other => println!("Other message from geek-docs.com received {e:?} {other:?}"),
        }
        let _ = closer.close();
    });
    ws.run().await;
    Ok(())
}
