//! The seed's `binaryType = "blob"`:
//!
//! ```javascript
//! ws.binaryType = "blob";
//! ws.onmessage = function (e) {
//!     if (e.data instanceof Blob) {
//!         console.log("Blob message received", e.data);
//!         var blob = new Blob(e.data);
//!     }
//! };
//! ```
//! (`new Blob(e.data)` is not valid JavaScript, a Blob takes an array of parts:
//! `new Blob([e.data])`, which is what this does.)
//!
//! `cargo run -p wsevents --example seed_binary_type_blob [URL]` (echo server running).

use wsevents::{BinaryType, Blob, Data, WebSocket};

#[tokio::main]
async fn main() -> Result<(), wsevents::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let ws = WebSocket::new(&url)?;
    ws.set_binary_type(BinaryType::Blob);
    let sender = ws.clone();
    ws.on_open(move |_| {
        let _ = sender.send(Blob::from("blob contents"));
    });
    let closer = ws.clone();
    ws.on_message(move |e| {
        if let Data::Blob(data) = &e.data {
            println!("Blob message received {data:?}");
            let blob = Blob::from_parts([&data.bytes()[..]], data.type_());
            println!("a new Blob of {} bytes: {:?}", blob.size(), blob.text());
        }
        let _ = closer.close();
    });
    ws.run().await;
    Ok(())
}
