//! The seed's `send` of a Blob and of an ArrayBuffer:
//!
//! ```javascript
//! var blob = new Blob("blob contents");   // valid form: new Blob(["blob contents"])
//! ws.send(blob);
//!
//! var a = new Uint8Array([1,2,3,4,5,6,7,8]);
//! ws.send(a.buffer);
//! ```
//!
//! `cargo run -p wsevents --example seed_send_binary [URL]` (echo server running).

use std::sync::atomic::{AtomicUsize, Ordering};

use wsevents::{Blob, WebSocket};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    let sender = ws.clone();
    ws.on_open(move |_| {
        let blob = Blob::from("blob contents");
        sender.send(blob).expect("open");
        let a: Vec<u8> = vec![1, 2, 3, 4, 5, 6, 7, 8];
        sender.send(a).expect("open");
    });
    let received = AtomicUsize::new(0);
    let closer = ws.clone();
    ws.on_message(move |e| {
        println!("echoed binary: {:?}", e.data);
        if received.fetch_add(1, Ordering::Relaxed) == 1 {
            let _ = closer.close();
        }
    });
    ws.run().await;
    Ok(())
}
