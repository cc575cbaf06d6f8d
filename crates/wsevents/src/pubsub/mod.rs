//! wsevents.v1: topics with history over one WebSocket, so that a client that loses
//! its connection comes back and gets every publication it missed, in order, exactly
//! once, or is told plainly that it cannot (the protocol: `docs/protocol.md`).
//!
//! - [`wire`]: the protocol's messages, both directions (one codec for every end);
//! - [`Client`]: the client, on a [`ReconnectingWebSocket`](crate::ReconnectingWebSocket):
//!   subscriptions resumed from their positions after every reconnect, publishes
//!   re-sent by key until answered;
//! - [`PubsubServer`]: serves it on server sockets, on a [`Hub`](crate::hub::Hub) with
//!   [history](crate::hub::HubBuilder::history) (in process, or on Redis so that
//!   every node shares it);
//!
//! ```no_run
//! use wsevents::hub::{History, Hub};
//! use wsevents::pubsub::{PubsubServer, wire::PROTOCOL};
//! use wsevents::{Acceptor, Server};
//! # async fn demo() -> Result<(), wsevents::Error> {
//! let hub = Hub::builder().history(History::default()).build();
//! let pubsub = PubsubServer::new(hub);
//! let acceptor = Acceptor::new().protocols(&[PROTOCOL]);
//! let server = Server::builder(acceptor).bind("127.0.0.1:8080").await?;
//! while let Some(ws) = server.accept().await {
//!     pubsub.serve(&ws);
//!     tokio::spawn(async move { ws.run().await });
//! }
//! # Ok(()) }
//! ```

mod client;
mod rate;
mod server;
pub mod wire;

pub use client::{Client, PublicationEvent, Publishing, SUBSCRIBE_WINDOW, SubscribedEvent};

pub use rate::{DEFAULT_PUBLISH_RATE, PublishRate};
pub use server::{
    DEFAULT_MAX_PUBLICATION, DEFAULT_MAX_TOPICS, MAX_PENDING_PUBLISHES, MIN_WAITING_SUBSCRIPTIONS,
    PubsubServer, SLOW_CLOSE_CODE, SLOW_CLOSE_REASON,
};
