//! # wsevents
//!
//! WebSocket client and server for tokio, over plain TCP and TLS (rustls), on the
//! sans-I/O protocol core [`wsevents_proto`].
//!
//! ```text
//!  TCP or TLS (io/tls.rs): dialled by io/client.rs (through io/proxy/), accepted by io/server/
//!    │
//!  io/driver.rs ──► wsevents_proto::Connection (parse, validate, reassemble; no I/O)
//!    │
//!    ├── io/stream/   WebSocketStream: Stream + Sink, split into two halves
//!    └── api/         WebSocket: the browser's event API (handlers, listeners, dispatch);
//!          │          ReconnectingWebSocket
//!          ├── hub/     topics and fan-out, in one process or on Redis (hub/redis/)
//!          └── pubsub/  wsevents.v1 on the hub: PubsubServer and its Client
//! ```
//!
//! - [`connect`] / [`ClientBuilder`]: `ws://` and `wss://` clients.
//! - [`WebSocket`]: the browser's event API, for clients and servers; handlers that
//!   await ([`WebSocket::on_message_async`]) keep the events in order and the
//!   connection driven while they await.
//! - [`accept`] / [`Acceptor`] / [`Server`]: servers, standalone or inside another
//!   HTTP server's upgrade, with routes and path parameters
//!   ([`Server::route`]`("/topic/{name}", handler)`): `Acceptor::upgrade` for hyper (feature `hyper`),
//!   `axum::WebSocketUpgrade` for axum (feature `axum`), over HTTP/1.1 and HTTP/2's
//!   extended CONNECT (RFC 8441), with the same negotiation (permessage-deflate,
//!   subprotocols, origin, limits, the async accept hook [`Acceptor::on_request`]).
//!   Handshake types are the `http` crate's; every server connection keeps its
//!   request and peer address ([`WebSocket::request`], [`WebSocketStream::peer_addr`]).
//! - [`ReconnectingWebSocket`] ([`ClientBuilder::reconnect`]): the event API across
//!   connections: full-jitter backoff, other servers in turn, a bounded offline queue,
//!   and stated rules for which closes are final.
//! - [`hub::Hub`]: topics and fan-out (one frame per publish, shared by every
//!   subscriber), in one process or across many on Redis (feature `redis`).
//! - [`pubsub`]: the `wsevents.v1` protocol (topics with history and recovery), its
//!   server and client, and [`pubsub::auth`]: per-topic permissions, an async
//!   authorization hook and connection tokens (JWT with the feature `jwt`).
//! - [`WebSocketStream`]: an open connection as a `Stream` and `Sink` of [`Message`]s
//!   ([`StreamEvent`]s with pings and pongs, on opt-in), that [`split`](WebSocketStream::split)s
//!   into a [`ReadHalf`] and a [`WriteHalf`] for two tasks.
//! - [`Lifecycle`] / [`ServerLimits`] / [`AcceptBackoff`]: a server's bounds (open
//!   connections, handshakes), accept back-off and graceful shutdown
//!   ([`Server::shutdown`] → [`ShutdownReport`]), for [`Server`] and for accept loops
//!   of one's own.
//! - `wsevents::metrics` (feature `metrics`): connections, refused and failed handshakes,
//!   messages, bytes and close codes through the `metrics` facade, for any exporter.
//! - [`Proxy`]: clients reach servers through HTTP CONNECT (`http://`, `https://`) and
//!   SOCKS5 (`socks5://`, `socks5h://`) proxies, set on the builder or taken from
//!   `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` as curl reads them.
//!
//! What it does not do: HTTP beyond the upgrade (no routing of plain HTTP requests),
//! proxy authentication other than basic (HTTP) and user/password (SOCKS5), SOCKS4, PAC
//! files, or HTTP/2 WebSockets (RFC 8441) of its own: those come through hyper.

mod api {
    pub(crate) mod data;
    pub(crate) mod events;
    pub(crate) mod reconnecting;
    pub(crate) mod server;
    pub(crate) mod websocket;
}
#[cfg(feature = "axum")]
pub mod axum;
mod backoff;
mod backpressure;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "http-api")]
pub mod http_api;
pub mod hub;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
pub mod pubsub;
mod io {
    pub(crate) mod client;
    pub(crate) mod driver;
    pub(crate) mod extensions;
    pub(crate) mod proxy;
    pub(crate) mod scratch;
    pub(crate) mod server;
    pub(crate) mod stream;
    pub(crate) mod tls;
    pub(crate) mod url;
}

pub use api::data::{BinaryType, Blob, Data, IntoMessage, MessageRef};
pub use api::events::{
    CloseEvent, ErrorEvent, Event, EventType, ListenerId, MessageEvent, PingEvent, PongEvent,
};
pub use api::reconnecting::{
    DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_MAX_QUEUED, DEFAULT_STABLE_AFTER, OpenEvent,
    Reconnect, ReconnectCloseEvent, ReconnectingWebSocket,
};
pub use api::websocket::{ReadyState, WebSocket};
pub use backpressure::{Backpressure, DEFAULT_MAX_QUEUE, WhenFull};
pub use error::{Error, Result};
pub use io::client::{ClientBuilder, connect};
pub use io::proxy::{MAX_PROXY_REPLY_HEAD, Proxy, ProxyError, socks_reply_name};
pub use io::server::handshake::{Decision, UpgradeRequest};
#[cfg(feature = "hyper")]
pub use io::server::hyper::{Upgraded, UpgradedStream, Upgrading};
pub use io::server::listen::{DEFAULT_BACKLOG, bind_listener};
pub use io::server::{
    Accept, AcceptBackoff, Accepted, Acceptor, DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_HANDSHAKES_PER_IP,
    DEFAULT_RETRY_AFTER, HandshakePermit, Lifecycle, PeerLoad, SHUTDOWN_REASON, Server,
    ServerBuilder, ServerLimits, ShutdownReport, accept, cookie,
};
pub use io::stream::{
    DEFAULT_WRITE_LIMIT, ReadHalf, ReuniteError, StreamEvent, WebSocketStream, WriteHalf,
};
pub use io::tls::MaybeTlsStream;
/// The token that starts a shutdown ([`ServerBuilder::shutdown_token`],
/// [`Lifecycle::new`]): tokio-util's.
pub use tokio_util::sync::CancellationToken;
pub use wsevents_proto::deflate::DeflateConfig;
pub use wsevents_proto::{
    CloseCode, CloseFrame, Closure, Config, Message, PreparedMessage, Role, State, Utf8Bytes,
};

/// TLS configurations for clients and servers.
pub mod tls {
    pub use crate::io::tls::{
        client_config_with_ca, native_client_config, server_config_from_pem,
        server_config_with_client_ca, webpki_client_config,
    };
}
