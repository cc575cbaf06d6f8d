//! `wsevents::Error`: one enum for everything the library reports, with variants a
//! caller can match, typed by who is at fault.
//!
//! The caller's mistakes carry the names the WHATWG standard gives them (the seed's
//! "invalid state exception" is [`Error::InvalidState`]); the peer's are
//! [`Error::Protocol`] (with the close code the connection failed with) and
//! [`Error::Handshake`]; the environment's are [`Error::Io`], [`Error::Tls`],
//! [`Error::Proxy`] (with the hop that failed) and [`Error::Timeout`].

use std::io;

use wsevents_proto::{HandshakeError, ProtocolError, Timeout};

use crate::io::proxy::ProxyError;

/// Everything wsevents can fail with.
///
/// ```
/// use wsevents::Error;
/// let error = Error::from(wsevents_proto::ProtocolError::InvalidUtf8);
/// assert_eq!(error.close_code().map(|c| c.as_u16()), Some(1007));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection is not in a state that allows this (sending while connecting,
    /// closing or closed; a second fragmented message while one is unfinished).
    #[error("invalid state: the connection is not open")]
    InvalidState,
    /// The caller passed a value it may not use (a close code other than 1000 or
    /// 3000–4999).
    #[error("invalid access: {0}")]
    InvalidAccess(String),
    /// A malformed argument: a URL, a subprotocol token, a close reason over 123 bytes.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The peer broke the protocol; the connection failed with
    /// [`close_code`](Error::close_code).
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed (the server refused, or answered wrongly).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// TLS failed (certificate, handshake, configuration), with the server or, once
    /// connected, in the TLS records (a server that requires a client certificate
    /// refuses one's absence after the handshake: the alert arrives as the first read).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The proxy failed; [`ProxyError`] says at which hop.
    #[error("proxy error: {0}")]
    Proxy(#[from] ProxyError),
    /// The transport failed, or ended without a close handshake.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// A limit was hit (a control payload over 125 bytes, the write buffer).
    #[error("capacity exceeded: {0}")]
    Capacity(String),
    /// [`send`](crate::WebSocket::send) refused a message because the send queue is
    /// full: `buffered` bytes were queued, the message of `message` bytes would have
    /// passed the socket's [`Backpressure`](crate::Backpressure) `limit`. Nothing of
    /// the message was queued. With [`WhenFull::Close`](crate::WhenFull::Close) the
    /// socket is also closing.
    ///
    /// ```
    /// use wsevents::Error;
    /// # fn send(ws: &wsevents::WebSocket, data: Vec<u8>) -> Result<(), Error> {
    /// match ws.send(data) {
    ///     Err(Error::BufferFull { buffered, limit, .. }) => {
    ///         eprintln!("peer too slow: {buffered} of {limit} bytes queued; dropped");
    ///         Ok(())
    ///     }
    ///     other => other,
    /// }
    /// # }
    /// ```
    #[error(
        "send buffer full: {buffered} bytes queued, a message of {message} bytes would pass the limit of {limit}"
    )]
    BufferFull {
        /// `buffered_amount` when the message was refused.
        buffered: usize,
        /// The size of the refused message.
        message: usize,
        /// The socket's limit.
        limit: usize,
    },
    /// [`ReconnectingWebSocket::send`](crate::ReconnectingWebSocket::send) refused a
    /// message while disconnected: `limit` messages already wait for the next
    /// connection ([`Reconnect::max_queued`](crate::Reconnect::max_queued)). Nothing
    /// of the message was queued.
    ///
    /// ```
    /// use wsevents::{ClientBuilder, Error, Reconnect};
    /// # fn main() -> wsevents::Result<()> {
    /// let ws = ClientBuilder::new("ws://127.0.0.1:9/")?.reconnect(Reconnect::new().max_queued(1));
    /// ws.send("first")?; // not connected yet: queued
    /// assert!(matches!(ws.send("second"), Err(Error::QueueFull { limit: 1 })));
    /// # Ok(()) }
    /// ```
    #[error("offline queue full: {limit} messages already wait for the next connection")]
    QueueFull {
        /// The bound on the offline queue, in messages.
        limit: usize,
    },
    /// A wsevents.v1 server answered a request with an error
    /// ([`pubsub::Client`](crate::pubsub::Client): a publish or a subscription it
    /// refused for good; temporary errors are retried, not reported).
    #[error("the server refused: {0}")]
    Rejected(crate::pubsub::wire::WireError),
    /// The opening or closing handshake, or the TCP connect, took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A server refused the upgrade request with this HTTP status (the response was
    /// sent).
    #[error("upgrade refused with HTTP status {0}")]
    Refused(http::StatusCode),
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// What the hub needs from its backend (Redis) is out of reach: nothing was
    /// stored or read. Temporary: retry later (a publish with the same key).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A [`pubsub::Client`](crate::pubsub::Client)'s token provider failed (its
    /// message): the connection is closed and made again after a backoff, asking it
    /// again.
    #[error("no token: {0}")]
    Token(String),
}

impl Error {
    /// The close code a protocol error failed the connection with.
    pub fn close_code(&self) -> Option<wsevents_proto::CloseCode> {
        match self {
            Error::Protocol(e) => Some(e.close_code()),
            _ => None,
        }
    }
}

impl From<wsevents_proto::Error> for Error {
    fn from(error: wsevents_proto::Error) -> Self {
        use wsevents_proto::Error as Core;
        match error {
            Core::InvalidState(_) | Core::MessageInProgress => Error::InvalidState,
            Core::InvalidCloseCode(code) => Error::InvalidAccess(format!(
                "close code {code} may not be used here (a close frame carries 1000-1003, \
                 1007-1014 or 3000-4999; close and close_with take 1000 or 3000-4999)"
            )),
            Core::ReasonTooLong(n) => {
                Error::Syntax(format!("close reason of {n} bytes is over 123"))
            }
            Core::ControlPayloadTooLarge(n) => {
                Error::Capacity(format!("control payload of {n} bytes is over 125"))
            }
            Core::Protocol(e) => Error::Protocol(e),
            Core::Handshake(e) => Error::Handshake(e),
            Core::UnexpectedEof => Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended without a close handshake",
            )),
            Core::Timeout(Timeout::Handshake) => Error::Timeout("the opening handshake".into()),
            Core::Timeout(Timeout::Close) => Error::Timeout("the close handshake".into()),
            Core::Timeout(Timeout::Pong) => {
                Error::Timeout("no answer to a keepalive ping (Config::pong_timeout)".into())
            }
            Core::Aborted => Error::Closed,
            Core::PreparedOnClient => Error::InvalidAccess(
                "a prepared message can only be sent on a server's connection".into(),
            ),
            other => Error::Io(io::Error::other(other.to_string())),
        }
    }
}

/// An I/O error, or [`Error::Tls`] when it carries a TLS error (tokio-rustls reports
/// an alert or a bad certificate as an I/O error of kind `InvalidData`).
impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        match error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(tls) => Error::Tls(tls.to_string()),
            None => Error::Io(error),
        }
    }
}

impl From<rustls::Error> for Error {
    fn from(error: rustls::Error) -> Self {
        Error::Tls(error.to_string())
    }
}

/// The result type of wsevents.
pub type Result<T, E = Error> = std::result::Result<T, E>;
