//! The server testee of the Autobahn TestSuite: an echo server with limits large
//! enough for the 9.* cases (16 MiB messages), and permessage-deflate (12.*, 13.*)
//! compressing every message: the runner (kosoku 0.1.0) cannot hash an uncompressed
//! echo in the compression cases, so the default 64-byte threshold is set to 0 here.
//!
//! ```text
//! AUTOBAHN_ADDR=127.0.0.1:9001 cargo run --release -p wsevents --example autobahn_server
//! conformance/run.sh server -- target/release/examples/autobahn_server
//! ```
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use wsevents::{Acceptor, Config, DeflateConfig, Server};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), wsevents::Error> {
    let addr = std::env::var("AUTOBAHN_ADDR").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let config = Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    };
    let deflate = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let server = Server::builder(Acceptor::new().config(config).deflate(Some(deflate)))
        .bind(&addr)
        .await?;
    eprintln!("autobahn server testee on {}", server.local_addr());
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
