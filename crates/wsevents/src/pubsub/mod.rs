//! wsevents.v1: topics with history over one WebSocket, so that a client that loses
//! its connection comes back and gets every publication it missed, in order, exactly
//! once, or is told plainly that it cannot (the protocol: `docs/protocol.md`).
//!
//! - [`wire`]: the protocol's messages, both directions (one codec for every end);
//! - [`Client`]: the client, on a [`ReconnectingWebSocket`](crate::ReconnectingWebSocket):
//!   subscriptions resumed from their positions after every reconnect, publishes
//!   re-sent by key until answered;
//! - [`auth`]: who a connection is and what it may do: topic patterns, connection
//!   tokens (JWT with the `jwt` feature), the async authorization hook;
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

pub mod auth;
mod client;
mod rate;
mod server;
mod users;
pub mod wire;

pub use client::{
    Client, MAX_REFRESH_AHEAD, PublicationEvent, Publishing, SUBSCRIBE_WINDOW, SubscribedEvent,
    TokenFuture,
};

pub use rate::{DEFAULT_PUBLISH_RATE, PublishRate};
pub use server::{
    DEFAULT_EXPIRY_GRACE, DEFAULT_MAX_PUBLICATION, DEFAULT_MAX_TOPICS, DISCONNECTED_REASON,
    MAX_HOOKS_IN_FLIGHT, MAX_PENDING_PUBLISHES, MIN_WAITING_SUBSCRIPTIONS, PubsubServer,
    SLOW_CLOSE_CODE, SLOW_CLOSE_REASON,
};
pub use server::{
    DEFAULT_MAX_CONNECTIONS_PER_USER, TOO_MANY_CONNECTIONS_CLOSE_CODE, TOO_MANY_CONNECTIONS_REASON,
};
