//! The opening handshake (RFC 6455 §4): an HTTP/1.1 Upgrade, in both roles.
//!
//! - `client.rs`: build the request ([`ClientRequest`]) and check the server's 101
//!   ([`ClientRequest::parse_response`]).
//! - `server.rs`: parse and check the client's request ([`parse_request`]) and build the
//!   101 ([`encode_accept`]) or a refusal ([`encode_reject`]).
//! - `headers.rs`: the pieces both share: `Sec-WebSocket-Accept`, token lists and the
//!   `Sec-WebSocket-Extensions` grammar.
//!
//! HTTP heads are parsed with `httparse`, bounded by [`Limits`]: a head over
//! `max_head_size` or with more than `max_headers` headers is refused (431 on the
//! server side) before it can grow.
//!
//! What it does not do: I/O (the connection state machine feeds it bytes), deciding
//! which subprotocol or origin to accept (the caller's policy), or negotiating extension
//! *parameters* (that is `extension/`; only the header grammar is here).

mod client;
mod headers;
mod server;

pub use client::{ClientRequest, Response};
pub use headers::{
    ExtensionOffer, ExtensionParam, GUID, accept_key, has_token, is_token, parse_extensions, tokens,
};
pub use server::{Request, encode_accept, encode_reject, parse_request};

use bytes::{BufMut, BytesMut};

/// Bounds on an HTTP head.
///
/// ```
/// let limits = wsevents_proto::handshake::Limits::default();
/// assert_eq!((limits.max_head_size, limits.max_headers), (16 * 1024, 64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest head accepted, in bytes. Default 16 KiB.
    pub max_head_size: usize,
    /// The most headers accepted. Default 64.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_size: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// The opening handshake failed.
///
/// Server-side errors know the HTTP status to answer with ([`status`](Self::status))
/// and can write that response ([`encode_response`](Self::encode_response)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head grew over the limit before it ended.
    #[error("HTTP head over {max} bytes")]
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// The head had more headers than allowed.
    #[error("more than {max} HTTP headers")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// The head is not valid HTTP/1.x.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// Server: the method is not GET.
    #[error("method {0} not allowed, only GET")]
    MethodNotAllowed(String),
    /// Server: the request is not HTTP/1.1.
    #[error("HTTP/1.1 required")]
    UnsupportedHttpVersion,
    /// Server: no (or more than one) `Host` header.
    #[error("exactly one Host header is required")]
    MissingHost,
    /// Server: `Upgrade` does not name `websocket`.
    #[error("Upgrade: websocket is required")]
    NotWebSocketUpgrade,
    /// `Connection` does not list `upgrade`.
    #[error("Connection: Upgrade is required")]
    MissingConnectionUpgrade,
    /// Server: `Sec-WebSocket-Key` is missing, repeated, or not 16 bytes in base64.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    InvalidKey,
    /// Server: `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported WebSocket version {0:?}, only 13")]
    UnsupportedVersion(Option<String>),
    /// A subprotocol is not a token.
    #[error("invalid subprotocol {0:?}")]
    InvalidProtocolToken(String),
    /// `Sec-WebSocket-Extensions` is not in the RFC 6455 §9.1 grammar.
    #[error("invalid Sec-WebSocket-Extensions header: {0}")]
    InvalidExtensionHeader(String),
    /// Client: the server answered with another status than 101.
    #[error("the server answered {status} {reason}")]
    UnexpectedStatus {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// Client: `Upgrade: websocket` missing from the 101.
    #[error("the server's response lacks Upgrade: websocket")]
    MissingUpgrade,
    /// Client: `Sec-WebSocket-Accept` does not match our key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    InvalidAccept,
    /// Client: the server chose a subprotocol we did not offer (or several).
    #[error("the server chose subprotocol {0:?}, which was not offered")]
    UnrequestedProtocol(String),
    /// Client: the server answered with an extension we did not offer.
    #[error("the server chose extension {0:?}, which was not offered")]
    UnrequestedExtension(String),
    /// Client: the server's extension parameters are not acceptable.
    #[error("unacceptable extension parameters: {0}")]
    InvalidExtensionParams(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with; `None` for client-side errors.
    ///
    /// ```
    /// use wsevents_proto::HandshakeError;
    /// assert_eq!(HandshakeError::UnsupportedVersion(None).status(), Some(426));
    /// assert_eq!(HandshakeError::InvalidAccept.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        use HandshakeError::*;
        match self {
            HeadTooLarge { .. } | TooManyHeaders { .. } => Some(431),
            MethodNotAllowed(_) => Some(405),
            UnsupportedVersion(_) => Some(426),
            Malformed(_)
            | UnsupportedHttpVersion
            | MissingHost
            | NotWebSocketUpgrade
            | MissingConnectionUpgrade
            | InvalidKey
            | InvalidProtocolToken(_)
            | InvalidExtensionHeader(_) => Some(400),
            UnexpectedStatus { .. }
            | MissingUpgrade
            | InvalidAccept
            | UnrequestedProtocol(_)
            | UnrequestedExtension(_)
            | InvalidExtensionParams(_) => None,
        }
    }

    /// Write the HTTP response a server sends for this error (nothing for client-side
    /// errors): the status, a text body saying what is wrong, and for 426 the version
    /// this server speaks, for 405 the method it allows.
    pub fn encode_response(&self, dst: &mut BytesMut) {
        let Some(status) = self.status() else {
            return;
        };
        let extra: Vec<(String, String)> = match status {
            426 => vec![("Sec-WebSocket-Version".into(), "13".into())],
            405 => vec![("Allow".into(), "GET".into())],
            _ => Vec::new(),
        };
        encode_reject(status, &self.to_string(), &extra, dst);
    }
}

/// The reason phrase of common statuses.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Write one header line.
pub(crate) fn put_header(dst: &mut BytesMut, name: &str, value: &str) {
    dst.put_slice(name.as_bytes());
    dst.put_slice(b": ");
    dst.put_slice(value.as_bytes());
    dst.put_slice(b"\r\n");
}

/// Headers of a parsed head, owned.
pub(crate) type Headers = Vec<(String, Vec<u8>)>;

/// The first header named `name` (case-insensitive).
pub(crate) fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// All headers named `name`, joined as one comma list (RFC 9110 §5.3).
pub(crate) fn joined_header(headers: &Headers, name: &str) -> Option<Vec<u8>> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    let first = values.next()?;
    let mut joined = first.clone();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value);
    }
    Some(joined)
}

/// Map an `httparse` result to ours, applying the size limit to an incomplete head.
pub(crate) fn check_parse(
    result: Result<httparse::Status<usize>, httparse::Error>,
    buf_len: usize,
    limits: &Limits,
) -> Result<Option<usize>, HandshakeError> {
    match result {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_size => {
            Err(HandshakeError::HeadTooLarge {
                max: limits.max_head_size,
            })
        }
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf_len > limits.max_head_size => {
            Err(HandshakeError::HeadTooLarge {
                max: limits.max_head_size,
            })
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders {
            max: limits.max_headers,
        }),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}
