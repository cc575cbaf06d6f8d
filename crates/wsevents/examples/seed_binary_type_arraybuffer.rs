//! The seed's `binaryType = "arraybuffer"`:
//!
//! ```javascript
//! ws.binaryType = "arraybuffer";
//! ws.onmessage = function (e) {
//!     if (e.data instanceof ArrayBuffer) {
//!         console.log("ArrayBuffer Message Received", e.data);
//!         var a = new Uint8Array(e.data);
//!     }
//! };
//! ```
//!
//! `cargo run -p wsevents --example seed_binary_type_arraybuffer [URL]` (echo server running).

use wsevents::{BinaryType, Data, WebSocket};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    ws.set_binary_type(BinaryType::ArrayBuffer);
    let sender = ws.clone();
    ws.on_open(move |_| {
        let _ = sender.send(vec![1u8, 2, 3, 4, 5, 6, 7, 8]);
    });
    let closer = ws.clone();
    ws.on_message(move |e| {
        if let Data::ArrayBuffer(buffer) = &e.data {
            println!("ArrayBuffer Message Received {:?}", &buffer[..]);
            let a: &[u8] = buffer;
            println!("as a Uint8Array: {} bytes, first {:?}", a.len(), a.first());
        }
        let _ = closer.close();
    });
    ws.run().await;
    Ok(())
}
