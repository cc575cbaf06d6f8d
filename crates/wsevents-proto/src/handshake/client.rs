//! The client side of the opening handshake: the upgrade request, and the check of
//! the server's answer (RFC 6455 §4.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, BytesMut};

use super::headers::{ExtensionOffer, accept_key, has_token, parse_extensions};
use super::{HandshakeError, Headers, Limits, check_parse, find_header, joined_header, put_header};

/// A client's upgrade request.
///
/// ```
/// use bytes::BytesMut;
/// use wsevents_proto::handshake::ClientRequest;
/// let request = ClientRequest::new("example.com:8080", "/chat?room=1")
///     .with_key(*b"the sample nonce")
///     .protocol("chat");
/// let mut head = BytesMut::new();
/// request.encode(&mut head);
/// let head = String::from_utf8(head.to_vec()).unwrap();
/// assert!(head.starts_with("GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
/// assert!(head.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
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
    /// A request for `target` (path and query) on `host` (as the `Host` header says
    /// it), with a fresh random key.
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

    /// Use this key instead of a random one (for tests).
    pub fn with_key(mut self, key: [u8; 16]) -> Self {
        self.key = STANDARD.encode(key);
        self
    }

    /// Offer a subprotocol (repeatable, most preferred first).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// Offer several subprotocols.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.protocols.extend(protocols.into_iter().map(Into::into));
        self
    }

    /// Offer an extension.
    pub fn extension(mut self, offer: ExtensionOffer) -> Self {
        self.extensions.push(offer);
        self
    }

    /// Send an `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Sec-WebSocket-Key`, in base64.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols offered.
    pub fn protocols_offered(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions offered.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// Write the request head.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(b"GET ");
        dst.put_slice(self.target.as_bytes());
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
    /// `Ok(None)` while the head is incomplete; else the response and how many bytes
    /// its head took (what follows is frames, and is not consumed).
    pub fn parse_response(
        &self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Response, usize)>, HandshakeError> {
        let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut parsed = httparse::Response::new(&mut slots);
        let Some(consumed) = check_parse(parsed.parse(buf), buf.len(), limits)? else {
            return Ok(None);
        };
        let status = parsed.code.unwrap_or(0);
        let headers: Headers = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason: parsed.reason.unwrap_or("").to_owned(),
            });
        }
        let upgrade = joined_header(&headers, "Upgrade").unwrap_or_default();
        if !has_token(&upgrade, "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        let connection = joined_header(&headers, "Connection").unwrap_or_default();
        if !has_token(&connection, "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let accept = find_header(&headers, "Sec-WebSocket-Accept").unwrap_or_default();
        if accept.trim_ascii() != accept_key(self.key.as_bytes()).as_bytes() {
            return Err(HandshakeError::InvalidAccept);
        }
        let protocol = match joined_header(&headers, "Sec-WebSocket-Protocol") {
            None => None,
            Some(value) => {
                let chosen = String::from_utf8_lossy(&value).trim().to_owned();
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
                for answer in &answers {
                    if !self
                        .extensions
                        .iter()
                        .any(|o| o.name.eq_ignore_ascii_case(&answer.name))
                    {
                        return Err(HandshakeError::UnrequestedExtension(answer.name.clone()));
                    }
                }
                answers
            }
        };
        Ok(Some((
            Response {
                status,
                headers,
                protocol,
                extensions,
            },
            consumed,
        )))
    }
}

/// A server's accepted (101) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status (101).
    pub status: u16,
    /// Every header, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with its parameters.
    pub extensions: Vec<ExtensionOffer>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }
}

/// 16 random bytes from the OS, or from std's randomly seeded hasher if that fails.
fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    if getrandom::fill(&mut key).is_err() {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        for (i, half) in key.chunks_mut(8).enumerate() {
            let mut hasher = state.build_hasher();
            hasher.write_usize(i);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";

    fn request() -> ClientRequest {
        ClientRequest::new("server.example.com", "/chat")
            .with_key(*b"the sample nonce")
            .protocols(["chat", "superchat"])
            .extension(ExtensionOffer::new("permessage-deflate"))
    }

    fn parse(extra: &str) -> Result<Option<(Response, usize)>, HandshakeError> {
        let head = format!("{OK}{extra}\r\n");
        request().parse_response(head.as_bytes(), &Limits::default())
    }

    #[test]
    fn rfc_sample_response_is_accepted() {
        let (response, n) = parse("Sec-WebSocket-Protocol: chat\r\n").unwrap().unwrap();
        assert_eq!(response.protocol.as_deref(), Some("chat"));
        assert_eq!(n, OK.len() + "Sec-WebSocket-Protocol: chat\r\n".len() + 2);
    }

    #[test]
    fn frames_after_the_head_are_not_consumed() {
        let mut bytes = format!("{OK}\r\n").into_bytes();
        let head_len = bytes.len();
        bytes.extend([0x81, 0x00]);
        let (_, n) = request()
            .parse_response(&bytes, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(n, head_len);
    }

    #[test]
    fn incomplete_head_waits_at_every_split() {
        let full = format!("{OK}\r\n");
        for cut in 0..full.len() {
            assert_eq!(
                request().parse_response(&full.as_bytes()[..cut], &Limits::default()),
                Ok(None)
            );
        }
    }

    #[test]
    fn case_insensitive_tokens() {
        let head = "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, UPGRADE\r\n\
sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(
            request()
                .parse_response(head.as_bytes(), &Limits::default())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn refusals() {
        let wrong_status = "HTTP/1.1 403 Forbidden\r\n\r\n";
        assert!(matches!(
            request().parse_response(wrong_status.as_bytes(), &Limits::default()),
            Err(HandshakeError::UnexpectedStatus { status: 403, .. })
        ));
        let wrong_accept =
            OK.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "x3JJHMbDL1EzLkh9GBhXDw==") + "\r\n";
        assert_eq!(
            request().parse_response(wrong_accept.as_bytes(), &Limits::default()),
            Err(HandshakeError::InvalidAccept)
        );
        assert_eq!(
            parse("Sec-WebSocket-Protocol: other\r\n"),
            Err(HandshakeError::UnrequestedProtocol("other".into()))
        );
        assert_eq!(
            parse("Sec-WebSocket-Protocol: chat, superchat\r\n"),
            Err(HandshakeError::UnrequestedProtocol(
                "chat, superchat".into()
            ))
        );
        assert_eq!(
            parse("Sec-WebSocket-Extensions: x-other\r\n"),
            Err(HandshakeError::UnrequestedExtension("x-other".into()))
        );
        let no_upgrade = OK.replace("Upgrade: websocket\r\n", "") + "\r\n";
        assert_eq!(
            request().parse_response(no_upgrade.as_bytes(), &Limits::default()),
            Err(HandshakeError::MissingUpgrade)
        );
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(
            ClientRequest::new("h", "/").key(),
            ClientRequest::new("h", "/").key()
        );
        assert_eq!(
            STANDARD
                .decode(ClientRequest::new("h", "/").key())
                .unwrap()
                .len(),
            16
        );
    }
}
