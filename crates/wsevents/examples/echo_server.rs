//! A plain echo server with the default limits: every message comes back as it was.
//!
//! ```text
//! cargo run --release -p wsevents --example echo_server -- 127.0.0.1:9000
//! ```

use futures_util::{SinkExt, StreamExt};
use wsevents::{Acceptor, Server};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), wsevents::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let server = Server::builder(Acceptor::new()).bind(&addr).await?;
    println!("echo server on ws://{}", server.local_addr());
    while let Some((mut ws, _request)) = server.accept_stream().await {
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}
