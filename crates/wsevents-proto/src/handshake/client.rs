//! The client side of the opening handshake (RFC 6455 §4.1): build the upgrade request,
//! then check the server's answer to it.
//!
//! A [`ClientRequest`] holds everything the request says, including its random key, so
//! the same value checks the response: [`ClientRequest::parse_response`] accepts a 101
//! only if its `Sec-WebSocket-Accept` matches our key and it chose nothing we did not
//! offer. Which of the offered extensions' *parameters* are acceptable is
//! `extension/`'s decision, made on the [`Response`] afterwards.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, BytesMut};

use super::headers::{ExtensionOffer, accept_key, has_token, parse_extensions};
use super::{
    HandshakeError, Headers, Limits, check_parse, find_header, head_window, header_slots,
    joined_header, owned_headers, put_header, single_header,
};

/// A client's upgrade request: built once, encoded, then used to check the response.
///
/// Strings given to the builder are written as they are, except that CR, LF and NUL
/// become spaces so no value can end its header line early.
///
/// ```
/// use bytes::BytesMut;
/// use wsevents_proto::handshake::{ClientRequest, ExtensionOffer};
///
/// let request = ClientRequest::new("example.com:8080", "/chat?room=1")
///     .with_key(*b"the sample nonce")
///     .protocol("chat")
///     .extension(ExtensionOffer::new("permessage-deflate"));
/// let mut head = BytesMut::new();
/// request.encode(&mut head);
/// let head = String::from_utf8(head.to_vec()).unwrap();
/// assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
/// assert!(head.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
/// assert!(head.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"));
/// assert!(head.ends_with("\r\n\r\n"));
/// ```
#[derive(Debug, Clone)]
pub struct ClientRequest {
    host: String,
    target: String,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    origin: Option<String>,
    headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// A request for `target` (path and query, `/chat?x=1`) on `host` (as the `Host`
    /// header says it, `example.com:8080`), with a fresh random key.
    ///
    /// The key's 16 bytes come from the operating system's generator; should it fail,
    /// from std's randomly seeded hasher (the key needs to be unpredictable to
    /// intermediaries, not secret).
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Self {
        ClientRequest {
            host: host.into(),
            target: target.into(),
            key: STANDARD.encode(random_key()),
            protocols: Vec::new(),
            extensions: Vec::new(),
            origin: None,
            headers: Vec::new(),
        }
    }

    /// Use this key instead of a random one (for tests and test vectors).
    pub fn with_key(mut self, key: [u8; 16]) -> Self {
        self.key = STANDARD.encode(key);
        self
    }

    /// Offer a subprotocol (repeatable, most preferred first).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offer several subprotocols, most preferred first.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.protocols.extend(protocols.into_iter().map(Into::into));
        self
    }

    /// Offer an extension (repeatable, most preferred first).
    pub fn extension(mut self, offer: ExtensionOffer) -> Self {
        self.extensions.push(offer);
        self
    }

    /// Send an `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Add a header, written after the handshake's own (repeatable).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Sec-WebSocket-Key`, in base64.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols offered, most preferred first.
    ///
    /// (Not `protocols()`: that name is the builder method.)
    pub fn protocols_offered(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions offered.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The `Host` header.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The request target.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Write the request head: the request line, `Host`, `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, then `Sec-WebSocket-Protocol`,
    /// `Sec-WebSocket-Extensions` and `Origin` when set, the extra headers, and the blank
    /// line.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(b"GET ");
        // Spaces and control bytes would end the target (or the line) early:
        // percent-encode them as a URL does.
        for &b in self.target.as_bytes() {
            if b <= 0x20 || b == 0x7f {
                dst.put_slice(format!("%{b:02X}").as_bytes());
            } else {
                dst.put_u8(b);
            }
        }
        dst.put_slice(b" HTTP/1.1\r\n");
        put_header(dst, "Host", &self.host);
        put_header(dst, "Upgrade", "websocket");
        put_header(dst, "Connection", "Upgrade");
        put_header(dst, "Sec-WebSocket-Key", &self.key);
        put_header(dst, "Sec-WebSocket-Version", "13");
        if !self.protocols.is_empty() {
            put_header(dst, "Sec-WebSocket-Protocol", &self.protocols.join(", "));
        }
        if !self.extensions.is_empty() {
            let offers: Vec<String> = self.extensions.iter().map(ToString::to_string).collect();
            put_header(dst, "Sec-WebSocket-Extensions", &offers.join(", "));
        }
        if let Some(origin) = &self.origin {
            put_header(dst, "Origin", origin);
        }
        for (name, value) in &self.headers {
            put_header(dst, name, value);
        }
        dst.put_slice(b"\r\n");
    }

    /// Parse and check the server's answer at the start of `buf`.
    ///
    /// `Ok(None)` while the head is incomplete (and no longer than
    /// [`Limits::max_head_size`]); else the response and how many bytes its head took:
    /// what follows is frames, and is not consumed.
    ///
    /// The response must be a 101 ([`UnexpectedStatus`](HandshakeError::UnexpectedStatus)
    /// otherwise) with `Upgrade: websocket` and `Connection: upgrade` (in any case),
    /// exactly one `Sec-WebSocket-Accept` equal to [`accept_key`] of our key, at most one
    /// subprotocol and only one we offered, and only extensions we offered.
    ///
    /// ```
    /// use wsevents_proto::handshake::{ClientRequest, Limits};
    ///
    /// let request = ClientRequest::new("server.example.com", "/chat")
    ///     .with_key(*b"the sample nonce")
    ///     .protocols(["chat", "superchat"]);
    /// let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    /// Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
    /// Sec-WebSocket-Protocol: chat\r\n\r\n";
    /// assert_eq!(request.parse_response(&head[..20], &Limits::default()), Ok(None));
    /// let (response, len) = request.parse_response(head, &Limits::default()).unwrap().unwrap();
    /// assert_eq!((response.protocol.as_deref(), len), (Some("chat"), head.len()));
    /// ```
    pub fn parse_response(
        &self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Response, usize)>, HandshakeError> {
        let window = head_window(buf, limits);
        let mut slots = header_slots(window, limits);
        let mut parsed = httparse::Response::new(&mut slots);
        let Some(len) = check_parse(parsed.parse(window), buf.len(), limits)? else {
            return Ok(None);
        };
        let status = parsed.code.unwrap_or(0);
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason: parsed.reason.unwrap_or("").to_owned(),
            });
        }
        let headers = owned_headers(parsed.headers);
        self.check(headers).map(|response| Some((response, len)))
    }

    /// Check a 101's headers against this request.
    fn check(&self, headers: Headers) -> Result<Response, HandshakeError> {
        let upgrade = joined_header(&headers, "Upgrade").unwrap_or_default();
        if !has_token(&upgrade, "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        let connection = joined_header(&headers, "Connection").unwrap_or_default();
        if !has_token(&connection, "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        match single_header(&headers, "Sec-WebSocket-Accept") {
            Ok(Some(accept)) if accept == accept_key(self.key.as_bytes()).as_bytes() => {}
            _ => return Err(HandshakeError::InvalidAccept),
        }
        let protocol = match joined_header(&headers, "Sec-WebSocket-Protocol") {
            None => None,
            Some(value) => {
                // Joined, two headers read as a list and so match no single offer.
                let chosen = String::from_utf8_lossy(&value).into_owned();
                if !self.protocols.contains(&chosen) {
                    return Err(HandshakeError::UnrequestedProtocol(chosen));
                }
                Some(chosen)
            }
        };
        let extensions = match joined_header(&headers, "Sec-WebSocket-Extensions") {
            None => Vec::new(),
            Some(value) => {
                let value = std::str::from_utf8(&value)
                    .map_err(|_| HandshakeError::InvalidExtensionHeader("not UTF-8".into()))?;
                let answers = parse_extensions(value)?;
                if let Some(answer) = answers.iter().find(|answer| {
                    !self
                        .extensions
                        .iter()
                        .any(|offer| offer.name.eq_ignore_ascii_case(&answer.name))
                }) {
                    return Err(HandshakeError::UnrequestedExtension(answer.name.clone()));
                }
                answers
            }
        };
        Ok(Response {
            status: 101,
            headers,
            protocol,
            extensions,
        })
    }
}

/// A server's 101 answer, checked against the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status: always 101.
    pub status: u16,
    /// Every header, in order, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The subprotocol the server chose, one of those offered.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with its parameters, in its order; each one
    /// we offered, with parameters not yet checked.
    pub extensions: Vec<ExtensionOffer>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    ///
    /// ```
    /// # use wsevents_proto::handshake::{ClientRequest, Limits};
    /// # let request = ClientRequest::new("h", "/").with_key(*b"the sample nonce");
    /// # let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
    /// # Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
    /// # Server: demo\r\n\r\n";
    /// # let (response, _) = request.parse_response(head, &Limits::default()).unwrap().unwrap();
    /// assert_eq!(response.header("server"), Some(&b"demo"[..]));
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }
}

/// 16 random bytes from the OS ([`random::fill`](crate::random::fill)).
fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    crate::random::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6455 §1.3 answer to the sample key.
    const OK: &str = "HTTP/1.1 101 Switching Protocols\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    fn request() -> ClientRequest {
        ClientRequest::new("server.example.com", "/chat")
            .with_key(*b"the sample nonce")
            .protocols(["chat", "superchat"])
            .extension(ExtensionOffer::new("permessage-deflate"))
    }

    fn parse_head(head: &str) -> Result<Option<(Response, usize)>, HandshakeError> {
        request().parse_response(head.as_bytes(), &Limits::default())
    }

    /// The sample 101 with `extra` header lines.
    fn parse(extra: &str) -> Result<Option<(Response, usize)>, HandshakeError> {
        parse_head(&format!("{OK}{extra}\r\n"))
    }

    #[test]
    fn encodes_the_rfc_sample_request() {
        let mut head = BytesMut::new();
        ClientRequest::new("server.example.com", "/chat")
            .with_key(*b"the sample nonce")
            .protocols(["chat", "superchat"])
            .extension(
                ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None),
            )
            .origin("http://example.com")
            .header("User-Agent", "wsevents-test")
            .encode(&mut head);
        assert_eq!(
            String::from_utf8(head.to_vec()).unwrap(),
            "GET /chat HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Origin: http://example.com\r\n\
User-Agent: wsevents-test\r\n\r\n"
        );
    }

    #[test]
    fn minimal_request_has_no_optional_headers() {
        let mut head = BytesMut::new();
        let request = ClientRequest::new("h", "/").with_key([0; 16]);
        request.encode(&mut head);
        let head = String::from_utf8(head.to_vec()).unwrap();
        assert!(!head.contains("Sec-WebSocket-Protocol"), "{head}");
        assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
        assert!(!head.contains("Origin"), "{head}");
        assert_eq!(request.key(), "AAAAAAAAAAAAAAAAAAAAAA==");
        assert!(request.protocols_offered().is_empty() && request.extensions().is_empty());
    }

    #[test]
    fn request_line_and_headers_cannot_be_split() {
        let mut head = BytesMut::new();
        ClientRequest::new("h\r\nX-Evil: 1", "/a b\r\nX-Evil: 2")
            .header("X-Ok", "1\n2")
            .encode(&mut head);
        let head = String::from_utf8(head.to_vec()).unwrap();
        assert!(
            head.starts_with("GET /a%20b%0D%0AX-Evil:%202 HTTP/1.1\r\nHost: h  X-Evil: 1\r\n"),
            "{head}"
        );
        assert!(head.contains("X-Ok: 1 2\r\n"), "{head}");
    }

    #[test]
    fn rfc_sample_response_is_accepted() {
        let extra = "Sec-WebSocket-Protocol: chat\r\n";
        let (response, n) = parse(extra).unwrap().unwrap();
        assert_eq!(n, OK.len() + extra.len() + 2);
        assert_eq!(response.status, 101);
        assert_eq!(response.protocol.as_deref(), Some("chat"));
        assert!(response.extensions.is_empty());
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        assert_eq!(response.header("X-Missing"), None);
        let (response, _) = parse("").unwrap().unwrap();
        assert_eq!(response.protocol, None, "a server may choose no protocol");
    }

    #[test]
    fn accepted_extension_is_returned_with_its_parameters() {
        let (response, _) =
            parse("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            response.extensions,
            [ExtensionOffer::new("permessage-deflate")
                .param("server_max_window_bits", Some("10".into()))]
        );
    }

    #[test]
    fn frames_after_the_head_are_not_consumed() {
        let mut bytes = format!("{OK}\r\n").into_bytes();
        let head_len = bytes.len();
        bytes.extend([0x81, 0x02, 0x68, 0x69]);
        let (_, n) = request()
            .parse_response(&bytes, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(n, head_len);
        assert_eq!(bytes.get(n..), Some(&[0x81, 0x02, 0x68, 0x69][..]));
    }

    #[test]
    fn incomplete_head_waits_at_every_split() {
        let full = format!("{OK}\r\n");
        for cut in 0..full.len() {
            assert_eq!(parse_head(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_head(&full).unwrap().is_some());
    }

    #[test]
    fn head_over_the_limit() {
        let full = format!("{OK}\r\n");
        let limits = Limits {
            max_head_size: full.len() - 1,
            ..Limits::default()
        };
        let request = request();
        // Incomplete up to the limit, then too large.
        assert_eq!(
            request.parse_response(&full.as_bytes()[..full.len() - 1], &limits),
            Ok(None)
        );
        assert_eq!(
            request.parse_response(full.as_bytes(), &limits),
            Err(HandshakeError::HeadTooLarge {
                max: full.len() - 1
            })
        );
        // Exactly at the limit is fine.
        let exact = Limits {
            max_head_size: full.len(),
            ..Limits::default()
        };
        assert!(request.parse_response(full.as_bytes(), &exact).is_ok());
    }

    #[test]
    fn too_many_headers() {
        let limits = Limits {
            max_headers: 2,
            ..Limits::default()
        };
        assert_eq!(
            request().parse_response(format!("{OK}\r\n").as_bytes(), &limits),
            Err(HandshakeError::TooManyHeaders { max: 2 })
        );
    }

    #[test]
    fn case_insensitive_tokens() {
        let head = "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, UPGRADE\r\n\
sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(parse_head(head).unwrap().is_some());
        let split = "HTTP/1.1 101 OK\r\nUpgrade: WEBSOCKET\r\nConnection: keep-alive\r\n\
Connection: upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(parse_head(split).unwrap().is_some());
    }

    #[test]
    fn other_statuses_are_refused() {
        for (head, status, reason) in [
            ("HTTP/1.1 403 Forbidden\r\n\r\n", 403, "Forbidden"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "OK"),
            (
                "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\r\n",
                426,
                "Upgrade Required",
            ),
            ("HTTP/1.1 302 \r\nLocation: /\r\n\r\n", 302, ""),
        ] {
            let error = parse_head(head).unwrap_err();
            assert_eq!(
                error,
                HandshakeError::UnexpectedStatus {
                    status,
                    reason: reason.into()
                }
            );
            assert_eq!(error.status(), None);
        }
    }

    #[test]
    fn wrong_accept_is_refused() {
        let wrong = OK.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "x3JJHMbDL1EzLkh9GBhXDw==");
        let missing = OK.replace("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", "");
        let lower = OK.replace(
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "s3pplmbitxaq9kygzzhzrbk+xoo=",
        );
        let twice = format!("{OK}Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
        for head in [wrong, missing, lower, twice] {
            assert_eq!(
                parse_head(&format!("{head}\r\n")),
                Err(HandshakeError::InvalidAccept),
                "{head}"
            );
        }
        // The accept of another key.
        let other = ClientRequest::new("h", "/").with_key([7; 16]);
        assert_eq!(
            other.parse_response(format!("{OK}\r\n").as_bytes(), &Limits::default()),
            Err(HandshakeError::InvalidAccept)
        );
    }

    #[test]
    fn missing_upgrade_or_connection_is_refused() {
        let no_upgrade = OK.replace("Upgrade: websocket\r\n", "");
        let h2c = OK.replace("Upgrade: websocket", "Upgrade: h2c");
        for head in [no_upgrade, h2c] {
            assert_eq!(
                parse_head(&format!("{head}\r\n")),
                Err(HandshakeError::MissingUpgrade)
            );
        }
        let no_connection = OK.replace("Connection: Upgrade\r\n", "");
        let keep_alive = OK.replace("Connection: Upgrade", "Connection: keep-alive");
        for head in [no_connection, keep_alive] {
            assert_eq!(
                parse_head(&format!("{head}\r\n")),
                Err(HandshakeError::MissingConnectionUpgrade)
            );
        }
    }

    #[test]
    fn protocol_not_offered_is_refused() {
        assert_eq!(
            parse("Sec-WebSocket-Protocol: other\r\n"),
            Err(HandshakeError::UnrequestedProtocol("other".into()))
        );
        assert_eq!(
            parse("Sec-WebSocket-Protocol: CHAT\r\n"),
            Err(HandshakeError::UnrequestedProtocol("CHAT".into())),
            "subprotocols compare case-sensitively"
        );
        assert_eq!(
            parse("Sec-WebSocket-Protocol: chat, superchat\r\n"),
            Err(HandshakeError::UnrequestedProtocol(
                "chat, superchat".into()
            ))
        );
        assert_eq!(
            parse("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"),
            Err(HandshakeError::UnrequestedProtocol("chat, chat".into()))
        );
        let none_offered = ClientRequest::new("h", "/").with_key(*b"the sample nonce");
        let head = format!("{OK}Sec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(
            none_offered.parse_response(head.as_bytes(), &Limits::default()),
            Err(HandshakeError::UnrequestedProtocol("chat".into()))
        );
    }

    #[test]
    fn extension_not_offered_is_refused() {
        assert_eq!(
            parse("Sec-WebSocket-Extensions: x-other\r\n"),
            Err(HandshakeError::UnrequestedExtension("x-other".into()))
        );
        assert_eq!(
            parse("Sec-WebSocket-Extensions: permessage-deflate, x-other\r\n"),
            Err(HandshakeError::UnrequestedExtension("x-other".into()))
        );
        assert!(matches!(
            parse("Sec-WebSocket-Extensions: permessage-deflate; a b\r\n"),
            Err(HandshakeError::InvalidExtensionHeader(_))
        ));
        let none_offered = ClientRequest::new("h", "/").with_key(*b"the sample nonce");
        let head = format!("{OK}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
        assert_eq!(
            none_offered.parse_response(head.as_bytes(), &Limits::default()),
            Err(HandshakeError::UnrequestedExtension(
                "permessage-deflate".into()
            ))
        );
    }

    #[test]
    fn malformed_response_is_refused() {
        for head in [
            "HTTP/1.1 101 Switching Protocols\r\nBad Header\r\n\r\n",
            "HTTP/2 101\r\n\r\n",
            "ICY 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(head), Err(HandshakeError::Malformed(_))),
                "{head:?}"
            );
        }
    }

    #[test]
    fn random_keys_differ_and_encode_16_bytes() {
        let a = ClientRequest::new("h", "/");
        let b = ClientRequest::new("h", "/");
        assert_ne!(a.key(), b.key());
        for request in [a, b] {
            assert_eq!(STANDARD.decode(request.key()).unwrap().len(), 16);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = format!("{OK}Sec-WebSocket-Extensions: permessage-deflate; x=\"1\"\r\n\r\n");
        let request = request();
        for i in 0..base.len() {
            for byte in [0x00, b'\r', b'\n', b':', b',', b';', b'"', b' ', 0x80, 0xff] {
                let mut bytes = base.clone().into_bytes();
                if let Some(b) = bytes.get_mut(i) {
                    *b = byte;
                }
                let _ = request.parse_response(&bytes, &Limits::default());
            }
        }
    }
}
