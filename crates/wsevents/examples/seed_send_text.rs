//! The seed's `send` of text, and the invalid-state rule:
//!
//! ```javascript
//! ws.send("Hello geek-docs.com WebSocket.");
//! ```
//! "send() sends data while the connection is open. If the connection is not available
//! or closed, it throws an invalid-state exception."
//!
//! `cargo run -p wsevents --example seed_send_text [URL]` (echo server running).

use wsevents::{Error, WebSocket};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    if let Err(Error::InvalidState) = ws.send("too early") {
        println!("send while connecting: invalid state");
    }
    let sender = ws.clone();
    ws.on_open(move |_| {
        sender.send("Hello geek-docs.com WebSocket.").expect("open");
    });
    let closer = ws.clone();
    ws.on_message(move |e| {
        println!("echoed: {:?}", e.data.as_text());
        let _ = closer.close();
    });
    ws.run().await;
    if let Err(Error::InvalidState) = ws.send("too late") {
        println!("send after close: invalid state");
    }
    Ok(())
}
