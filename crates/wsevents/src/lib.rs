//! # wsevents
//!
//! WebSocket client and server for tokio, over plain TCP and TLS (rustls), on the
//! sans-I/O protocol core [`wsevents_proto`].
//!
//! ```text
//!  socket ─► io/driver.rs ─► wsevents_proto::Connection ─► io/stream.rs (Stream + Sink)
//!  (TcpStream / TLS)           (parse, validate, reassemble)
//! ```
//!
//! - [`connect`] / [`ClientBuilder`]: `ws://` and `wss://` clients.
//! - [`accept`] / [`Acceptor`] / [`Server`]: servers, standalone or inside another
//!   HTTP server's upgrade.
//! - [`hub::Hub`]: topics and fan-out (one frame per publish, shared by every
//!   subscriber), in one process or across many on Redis (feature `redis`).
//! - [`WebSocketStream`]: an open connection as a `Stream` and `Sink` of [`Message`]s
//!   ([`StreamEvent`]s with pings and pongs, on opt-in), that [`split`](WebSocketStream::split)s
//!   into a [`ReadHalf`] and a [`WriteHalf`] for two tasks.
//! - [`Lifecycle`] / [`ServerLimits`] / [`AcceptBackoff`]: a server's bounds (open
//!   connections, handshakes), accept back-off and graceful shutdown
//!   ([`Server::shutdown`] → [`ShutdownReport`]), for [`Server`] and for accept loops
//!   of one's own.
//!
//! What it does not do: HTTP beyond the upgrade (no routing of plain HTTP requests),
//! proxies, or HTTP/2 WebSockets (RFC 8441).

mod api {
    pub(crate) mod backpressure;
    pub(crate) mod data;
    pub(crate) mod error;
    pub(crate) mod events;
    pub(crate) mod websocket;
}
pub mod hub;
mod io {
    pub(crate) mod client;
    pub(crate) mod driver;
    pub(crate) mod extensions;
    pub(crate) mod scratch;
    pub(crate) mod server;
    pub(crate) mod stream;
    pub(crate) mod tls;
    pub(crate) mod url;
}

pub use api::backpressure::{Backpressure, WhenFull};
pub use api::data::{BinaryType, Blob, Data, IntoMessage};
pub use api::error::{Error, Result};
pub use api::events::{
    CloseEvent, ErrorEvent, Event, EventType, ListenerId, MessageEvent, PingEvent, PongEvent,
};
pub use api::websocket::{ReadyState, WebSocket};
pub use io::client::{ClientBuilder, connect};
pub use io::server::{
    AcceptBackoff, Accepted, Acceptor, DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HANDSHAKES, DEFAULT_RETRY_AFTER, HandshakePermit, Lifecycle, SHUTDOWN_REASON,
    Server, ServerBuilder, ServerLimits, ShutdownReport, accept,
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
        client_config_with_ca, native_client_config, server_config_from_pem, webpki_client_config,
    };
}
