//! The opening handshake (RFC 6455 §4): an HTTP/1.1 Upgrade, in both roles.
//!
//! ```text
//!   client                                        server
//!   ClientRequest::encode ──── GET, Upgrade ────► parse_request ──► Request
//!                                                 (the caller decides: protocol,
//!                                                  extensions, origin policy)
//!   ClientRequest::parse_response ◄── 101 ─────── encode_accept
//!     └─► Response                  ◄── 4xx ───── encode_reject / HandshakeError::encode_response
//! ```
//!
//! - `client.rs`: build the request ([`ClientRequest`]) and check the server's 101
//!   ([`ClientRequest::parse_response`] → [`Response`]).
//! - `server.rs`: parse and check the client's request ([`parse_request`] →
//!   [`Request`]) and build the 101 ([`encode_accept`]) or a refusal
//!   ([`encode_reject`]).
//! - `headers.rs`: the pieces both share: `Sec-WebSocket-Accept` ([`accept_key`]), token
//!   lists ([`tokens`], [`has_token`]) and the `Sec-WebSocket-Extensions` grammar
//!   ([`parse_extensions`], [`ExtensionOffer`]).
//!
//! HTTP heads are parsed with `httparse`, bounded by [`Limits`]: a head over
//! `max_head_size` bytes or with more than `max_headers` headers is refused (431 on the
//! server side) as soon as that is known, and no more than `max_head_size` bytes of the
//! input are ever looked at. Parsers return `Ok(None)` while the head is incomplete and,
//! once it is complete, how many bytes it took: what follows is frames, left to the
//! caller.
//!
//! What it does not do: I/O (the connection state machine feeds it bytes); deciding
//! which subprotocol or origin to accept (the caller's policy, helped by
//! [`Request::select_protocol`]); negotiating extension *parameters* (that is
//! `extension/`: only the header grammar is here); redirects, authentication or any
//! HTTP beyond the upgrade.

mod client;
mod headers;
mod server;

pub use client::{ClientRequest, Response};
pub use headers::{
    ExtensionOffer, ExtensionParam, GUID, accept_key, has_token, is_token, parse_extensions, tokens,
};
pub use server::{
    Request, check_extended_connect, check_request, encode_accept, encode_reject, parse_request,
};

use bytes::{BufMut, BytesMut};

/// Bounds on an HTTP head, applied before it is allowed to grow.
///
/// ```
/// let limits = wsevents_proto::handshake::Limits::default();
/// assert_eq!((limits.max_head_size, limits.max_headers), (16 * 1024, 64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest head accepted, in bytes, including the blank line that ends it.
    /// Default 16 KiB.
    pub max_head_size: usize,
    /// The most header lines accepted. Default 64.
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
/// Errors found by a server know the HTTP status to answer with
/// ([`status`](Self::status)) and can write that response
/// ([`encode_response`](Self::encode_response)). Errors only a client finds (its
/// server's 101 is wrong) have no status: a client has no one to answer. A few kinds are
/// found by both sides (a malformed or oversized head, a missing `Connection: Upgrade`,
/// a bad `Sec-WebSocket-Extensions`); they carry the status a server would send.
///
/// ```
/// use wsevents_proto::HandshakeError;
/// use wsevents_proto::handshake::{Limits, parse_request};
///
/// let head = b"POST /chat HTTP/1.1\r\nHost: example.com\r\n\r\n";
/// let error = parse_request(head, &Limits::default()).unwrap_err();
/// assert_eq!(error, HandshakeError::MethodNotAllowed("POST".into()));
/// assert_eq!(error.status(), Some(405));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head grew over [`Limits::max_head_size`] before it ended (431).
    #[error("HTTP head over {max} bytes")]
    HeadTooLarge {
        /// The limit.
        max: usize,
    },
    /// The head had more than [`Limits::max_headers`] headers (431).
    #[error("more than {max} HTTP headers")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// The head is not valid HTTP/1.x; the text is `httparse`'s (400).
    #[error("malformed HTTP: {0}")]
    Malformed(String),
    /// Server: the method is not GET (405).
    #[error("method {0} not allowed, only GET")]
    MethodNotAllowed(String),
    /// Server: the request is not HTTP/1.1 (400).
    #[error("HTTP/1.1 required")]
    UnsupportedHttpVersion,
    /// Server: no `Host` header, more than one, or an empty one (400).
    #[error("exactly one Host header is required")]
    MissingHost,
    /// Server: `Upgrade` does not name `websocket` (400).
    #[error("Upgrade: websocket is required")]
    NotWebSocketUpgrade,
    /// `Connection` does not list `upgrade` (400).
    #[error("Connection: Upgrade is required")]
    MissingConnectionUpgrade,
    /// Server: `Sec-WebSocket-Key` is missing, repeated, or not 16 bytes in base64 (400).
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    InvalidKey,
    /// Server: `Sec-WebSocket-Version` is missing (`None`) or not 13 (426, with the
    /// version this server speaks).
    #[error("unsupported WebSocket version {0:?}, only 13")]
    UnsupportedVersion(Option<String>),
    /// Server: an offered subprotocol is not a token (400).
    #[error("invalid subprotocol {0:?}")]
    InvalidProtocolToken(String),
    /// `Sec-WebSocket-Extensions` is not in the RFC 6455 §9.1 grammar (400).
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
    /// Client: `Upgrade: websocket` is missing from the 101.
    #[error("the server's response lacks Upgrade: websocket")]
    MissingUpgrade,
    /// Client: `Sec-WebSocket-Accept` is missing, repeated, or does not match our key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    InvalidAccept,
    /// Client: the server chose a subprotocol we did not offer (or several).
    #[error("the server chose subprotocol {0:?}, which was not offered")]
    UnrequestedProtocol(String),
    /// Client: the server answered with an extension we did not offer.
    #[error("the server chose extension {0:?}, which was not offered")]
    UnrequestedExtension(String),
    /// Client: the server's extension parameters are not acceptable (decided in
    /// `extension/`).
    #[error("unacceptable extension parameters: {0}")]
    InvalidExtensionParams(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with; `None` for errors only a client
    /// finds.
    ///
    /// ```
    /// use wsevents_proto::HandshakeError;
    /// assert_eq!(HandshakeError::UnsupportedVersion(None).status(), Some(426));
    /// assert_eq!(HandshakeError::TooManyHeaders { max: 64 }.status(), Some(431));
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

    /// Write the full HTTP response a server sends for this error, through
    /// [`encode_reject`]: the status, a short text body saying what is wrong, and for 426
    /// the version this server speaks (`Sec-WebSocket-Version: 13`), for 405 the method
    /// it allows (`Allow: GET`). Writes nothing for errors without a
    /// [`status`](Self::status).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use wsevents_proto::HandshakeError;
    ///
    /// let mut out = BytesMut::new();
    /// HandshakeError::UnsupportedVersion(Some("8".into())).encode_response(&mut out);
    /// assert!(out.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
    /// assert!(out.windows(25).any(|w| w == b"Sec-WebSocket-Version: 13"));
    /// ```
    pub fn encode_response(&self, dst: &mut BytesMut) {
        let Some(status) = self.status() else {
            return;
        };
        let extra: &[(&str, &str)] = match status {
            426 => &[("Sec-WebSocket-Version", "13")],
            405 => &[("Allow", "GET")],
            _ => &[],
        };
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        encode_reject(status, &format!("{self}\n"), &extra, dst);
    }
}

/// The reason phrase of common statuses; empty (which HTTP allows) for others.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Write one header line.
///
/// CR, LF and NUL in `name` or `value` are written as spaces: a caller's string can
/// never end the line early and smuggle in a header of its own (response splitting).
pub(crate) fn put_header(dst: &mut BytesMut, name: &str, value: &str) {
    put_field(dst, name);
    dst.put_slice(b": ");
    put_field(dst, value);
    dst.put_slice(b"\r\n");
}

/// Write `text` with CR, LF and NUL replaced by spaces.
pub(crate) fn put_field(dst: &mut BytesMut, text: &str) {
    for (i, piece) in text.split(['\r', '\n', '\0']).enumerate() {
        if i > 0 {
            dst.put_u8(b' ');
        }
        dst.put_slice(piece.as_bytes());
    }
}

/// Headers of a parsed head, owned, in order.
pub(crate) type Headers = Vec<(String, Vec<u8>)>;

/// Copy `httparse`'s borrowed headers out.
pub(crate) fn owned_headers(headers: &[httparse::Header<'_>]) -> Headers {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

/// Every value of the headers named `name` (case-insensitive), in order.
pub(crate) fn header_values<'a, 'n>(
    headers: &'a Headers,
    name: &'n str,
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The first header named `name` (case-insensitive).
pub(crate) fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    header_values(headers, name).next()
}

/// The only header named `name`: `Err(())` when it is repeated, `Ok(None)` when absent.
pub(crate) fn single_header<'a>(headers: &'a Headers, name: &str) -> Result<Option<&'a [u8]>, ()> {
    let mut values = header_values(headers, name);
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(()),
    }
}

/// All headers named `name`, joined as one comma list (RFC 9110 §5.3), `None` if absent.
pub(crate) fn joined_header(headers: &Headers, name: &str) -> Option<Vec<u8>> {
    let mut values = header_values(headers, name);
    let mut joined = values.next()?.to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value);
    }
    Some(joined)
}

/// The part of `buf` a head may occupy: at most its first `max_head_size` bytes, so a
/// peer that sends megabytes costs one bounded parse.
pub(crate) fn head_window<'b>(buf: &'b [u8], limits: &Limits) -> &'b [u8] {
    buf.get(..limits.max_head_size).unwrap_or(buf)
}

/// Empty header slots for parsing `window`: `max_headers` of them, but never more than
/// the window can hold (a header line takes at least three bytes, `a:\n`), so a large
/// limit costs nothing on a small head and never changes when `TooManyHeaders` is found.
pub(crate) fn header_slots<'h>(window: &[u8], limits: &Limits) -> Vec<httparse::Header<'h>> {
    let fit = window.len() / 3 + 1;
    vec![httparse::EMPTY_HEADER; limits.max_headers.min(fit)]
}

/// Map an `httparse` result on the [`head_window`] of a `buf_len`-byte input to ours:
/// the head's length once complete; `Ok(None)` while it is incomplete and the input is
/// within the limit; `HeadTooLarge` once the input is over the limit with no end of head
/// in sight.
pub(crate) fn check_parse(
    result: Result<httparse::Status<usize>, httparse::Error>,
    buf_len: usize,
    limits: &Limits,
) -> Result<Option<usize>, HandshakeError> {
    let too_large = HandshakeError::HeadTooLarge {
        max: limits.max_head_size,
    };
    match result {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_size => Err(too_large),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf_len > limits.max_head_size => Err(too_large),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::TooManyHeaders {
            max: limits.max_headers,
        }),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(error: &HandshakeError) -> String {
        let mut out = BytesMut::new();
        error.encode_response(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    /// One row per error: the status a server answers it with.
    #[test]
    fn every_error_has_its_status() {
        use HandshakeError::*;
        let table = [
            (HeadTooLarge { max: 1 }, Some(431)),
            (TooManyHeaders { max: 1 }, Some(431)),
            (Malformed("invalid token".into()), Some(400)),
            (MethodNotAllowed("POST".into()), Some(405)),
            (UnsupportedHttpVersion, Some(400)),
            (MissingHost, Some(400)),
            (NotWebSocketUpgrade, Some(400)),
            (MissingConnectionUpgrade, Some(400)),
            (InvalidKey, Some(400)),
            (UnsupportedVersion(None), Some(426)),
            (UnsupportedVersion(Some("8".into())), Some(426)),
            (InvalidProtocolToken("a b".into()), Some(400)),
            (InvalidExtensionHeader("x".into()), Some(400)),
            (
                UnexpectedStatus {
                    status: 404,
                    reason: "Not Found".into(),
                },
                None,
            ),
            (MissingUpgrade, None),
            (InvalidAccept, None),
            (UnrequestedProtocol("x".into()), None),
            (UnrequestedExtension("x".into()), None),
            (InvalidExtensionParams("x".into()), None),
        ];
        for (error, status) in table {
            assert_eq!(error.status(), status, "{error:?}");
        }
    }

    #[test]
    fn error_responses_are_complete_http() {
        for (error, status_line, header) in [
            (
                HandshakeError::UnsupportedVersion(Some("8".into())),
                "HTTP/1.1 426 Upgrade Required",
                Some("Sec-WebSocket-Version: 13"),
            ),
            (
                HandshakeError::MethodNotAllowed("POST".into()),
                "HTTP/1.1 405 Method Not Allowed",
                Some("Allow: GET"),
            ),
            (
                HandshakeError::HeadTooLarge { max: 16 },
                "HTTP/1.1 431 Request Header Fields Too Large",
                None,
            ),
            (HandshakeError::InvalidKey, "HTTP/1.1 400 Bad Request", None),
        ] {
            let text = response_of(&error);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let mut lines = head.split("\r\n");
            assert_eq!(lines.next(), Some(status_line));
            let lines: Vec<&str> = lines.collect();
            assert!(lines.contains(&"Connection: close"), "{text}");
            assert!(
                lines.contains(&"Content-Type: text/plain; charset=utf-8"),
                "{text}"
            );
            let length = format!("Content-Length: {}", body.len());
            assert!(lines.contains(&length.as_str()), "{text}");
            if let Some(header) = header {
                assert!(lines.contains(&header), "{text}");
            }
            assert_eq!(body, format!("{error}\n"));
        }
    }

    #[test]
    fn client_side_errors_write_no_response() {
        assert_eq!(response_of(&HandshakeError::InvalidAccept), "");
        assert_eq!(
            response_of(&HandshakeError::UnrequestedProtocol("x".into())),
            ""
        );
    }

    #[test]
    fn header_lines_cannot_be_split_by_their_values() {
        let mut out = BytesMut::new();
        put_header(&mut out, "X-A\r\n", "1\r\nSet-Cookie: evil\0");
        assert_eq!(&out[..], b"X-A  : 1  Set-Cookie: evil \r\n");
    }

    #[test]
    fn repeated_headers_join_as_one_list() {
        let headers: Headers = vec![
            ("Connection".into(), b"keep-alive".to_vec()),
            ("Host".into(), b"h".to_vec()),
            ("connection".into(), b"Upgrade".to_vec()),
        ];
        assert_eq!(
            joined_header(&headers, "CONNECTION").as_deref(),
            Some(&b"keep-alive, Upgrade"[..])
        );
        assert_eq!(joined_header(&headers, "Upgrade"), None);
        assert_eq!(single_header(&headers, "host"), Ok(Some(&b"h"[..])));
        assert_eq!(single_header(&headers, "connection"), Err(()));
        assert_eq!(single_header(&headers, "origin"), Ok(None));
    }

    #[test]
    fn head_window_and_slots_are_bounded() {
        let limits = Limits {
            max_head_size: 10,
            max_headers: 1_000_000,
        };
        assert_eq!(head_window(&[0; 50], &limits).len(), 10);
        assert_eq!(head_window(&[0; 5], &limits).len(), 5);
        assert_eq!(header_slots(&[0; 10], &limits).len(), 4);
        assert_eq!(header_slots(&[0; 10], &Limits::default()).len(), 4);
        assert_eq!(header_slots(&[0; 1000], &Limits::default()).len(), 64);
    }
}
