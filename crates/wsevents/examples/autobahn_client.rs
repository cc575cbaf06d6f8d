//! The client testee of the Autobahn TestSuite: asks the fuzzing server how many cases
//! there are, runs each one echoing every message back, then asks for the reports.
//!
//! permessage-deflate (12.*, 13.*): the offer includes `client_no_context_takeover`,
//! because Autobahn's fuzzing server asks a client to reset its context (13.2, 13.5,
//! 13.6) only when its offer says it can, and every message is compressed (threshold
//! 0), because the runner (kosoku 0.1.0) cannot hash an uncompressed echo in those
//! cases.
//!
//! ```text
//! AUTOBAHN_URL=ws://127.0.0.1:9001 AUTOBAHN_AGENT=wsevents \
//!     cargo run --release -p wsevents --example autobahn_client
//! ```
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use wsevents::{ClientBuilder, Config, DeflateConfig};

fn config() -> Config {
    Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    }
}

fn deflate() -> DeflateConfig {
    DeflateConfig {
        client_no_context_takeover: true,
        threshold: 0,
        ..DeflateConfig::default()
    }
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let mut ws = ClientBuilder::new(&format!("{base}/getCaseCount"))?
        .connect()
        .await?;
    let message = ws.next().await.ok_or("no case count")??;
    let count = message
        .as_text()
        .ok_or("case count is not text")?
        .trim()
        .parse()?;
    while ws.next().await.is_some() {}
    Ok(count)
}

async fn run_case(base: &str, case: u32, agent: &str) -> Result<(), wsevents::Error> {
    let url = format!("{base}/runCase?case={case}&agent={agent}");
    let mut ws = ClientBuilder::new(&url)?
        .config(config())
        .deflate(Some(deflate()))
        .connect()
        .await?;
    while let Some(message) = ws.next().await {
        match message {
            Ok(message) => {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("AUTOBAHN_URL").unwrap_or_else(|_| "ws://127.0.0.1:9001".into());
    let agent = std::env::var("AUTOBAHN_AGENT").unwrap_or_else(|_| "wsevents".into());
    let count = case_count(&base).await?;
    eprintln!("running {count} cases against {base}");
    for case in 1..=count {
        if let Err(error) = run_case(&base, case, &agent).await {
            eprintln!("case {case}: {error}");
        }
    }
    let mut ws = ClientBuilder::new(&format!("{base}/updateReports?agent={agent}"))?
        .connect()
        .await?;
    while ws.next().await.is_some() {}
    Ok(())
}
