//! The server side of the opening handshake: parse and check the client's request
//! (RFC 6455 §4.2.1), answer with a 101 (§4.2.2) or a refusal.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, BytesMut};

use super::headers::{ExtensionOffer, accept_key, has_token, is_token, parse_extensions, tokens};
use super::{
    HandshakeError, Headers, Limits, check_parse, find_header, joined_header, put_header,
    reason_phrase,
};

/// A client's valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (always GET).
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// The `Host` header.
    pub host: String,
    /// The `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The subprotocols offered, in the client's order.
    pub protocols: Vec<String>,
    /// The extensions offered, in the client's order.
    pub extensions: Vec<ExtensionOffer>,
    /// Every header, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The path: the target without its query.
    ///
    /// ```
    /// # use wsevents_proto::handshake::{parse_request, Limits};
    /// let head = b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    /// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    /// let (request, _) = parse_request(head, &Limits::default()).unwrap().unwrap();
    /// assert_eq!(request.path(), "/chat");
    /// ```
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first subprotocol *in the client's order* that the server supports.
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find_map(|offered| supported.iter().find(|s| **s == offered.as_str()).copied())
    }
}

/// Parse and check the client's request at the start of `buf`.
///
/// `Ok(None)` while the head is incomplete; else the request and how many bytes its
/// head took. Each failure knows the status to answer with
/// ([`HandshakeError::status`]).
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut slots);
    let Some(consumed) = check_parse(parsed.parse(buf), buf.len(), limits)? else {
        return Ok(None);
    };
    let method = parsed.method.unwrap_or("").to_owned();
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(method));
    }
    if parsed.version != Some(1) {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    let target = parsed.path.unwrap_or("/").to_owned();
    let headers: Headers = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    fn named<'a>(
        headers: &'a Headers,
        name: &'a str,
    ) -> impl Iterator<Item = &'a (String, Vec<u8>)> {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    }

    let host = {
        let mut hosts = named(&headers, "Host");
        match (hosts.next(), hosts.next()) {
            (Some((_, host)), None) => {
                String::from_utf8(host.clone()).map_err(|_| HandshakeError::MissingHost)?
            }
            _ => return Err(HandshakeError::MissingHost),
        }
    };
    let upgrade = joined_header(&headers, "Upgrade").unwrap_or_default();
    if !has_token(&upgrade, "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    let connection = joined_header(&headers, "Connection").unwrap_or_default();
    if !has_token(&connection, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = {
        let mut keys = named(&headers, "Sec-WebSocket-Key");
        let key = match (keys.next(), keys.next()) {
            (Some((_, key)), None) => key.trim_ascii(),
            _ => return Err(HandshakeError::InvalidKey),
        };
        if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
            return Err(HandshakeError::InvalidKey);
        }
        String::from_utf8_lossy(key).into_owned()
    };
    match joined_header(&headers, "Sec-WebSocket-Version") {
        Some(v) if v.trim_ascii() == b"13" => {}
        other => {
            let seen = other.map(|v| String::from_utf8_lossy(&v).into_owned());
            return Err(HandshakeError::UnsupportedVersion(seen));
        }
    }
    let protocols = match joined_header(&headers, "Sec-WebSocket-Protocol") {
        None => Vec::new(),
        Some(value) => tokens(&value)
            .map(|t| {
                let t = String::from_utf8_lossy(t).into_owned();
                if is_token(&t) {
                    Ok(t)
                } else {
                    Err(HandshakeError::InvalidProtocolToken(t))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let extensions = match joined_header(&headers, "Sec-WebSocket-Extensions") {
        None => Vec::new(),
        Some(value) => {
            let value = std::str::from_utf8(&value)
                .map_err(|_| HandshakeError::InvalidExtensionHeader("not UTF-8".into()))?;
            parse_extensions(value)?
        }
    };
    let origin = find_header(&headers, "Origin").map(|o| String::from_utf8_lossy(o).into_owned());
    Ok(Some((
        Request {
            method,
            target,
            host,
            key,
            origin,
            protocols,
            extensions,
            headers,
        },
        consumed,
    )))
}

/// Write the 101 answer to `request`, with the chosen subprotocol, the accepted
/// extensions and extra headers.
///
/// ```
/// # use bytes::BytesMut;
/// # use wsevents_proto::handshake::{encode_accept, parse_request, Limits};
/// let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// let (request, _) = parse_request(head, &Limits::default()).unwrap().unwrap();
/// let mut out = BytesMut::new();
/// encode_accept(&request, None, &[], &[], &mut out);
/// assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// ```
pub fn encode_accept(
    request: &Request,
    protocol: Option<&str>,
    extensions: &[ExtensionOffer],
    extra_headers: &[(String, String)],
    dst: &mut BytesMut,
) {
    dst.put_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    put_header(dst, "Upgrade", "websocket");
    put_header(dst, "Connection", "Upgrade");
    put_header(
        dst,
        "Sec-WebSocket-Accept",
        &accept_key(request.key.as_bytes()),
    );
    if let Some(protocol) = protocol {
        put_header(dst, "Sec-WebSocket-Protocol", protocol);
    }
    if !extensions.is_empty() {
        let answers: Vec<String> = extensions.iter().map(ToString::to_string).collect();
        put_header(dst, "Sec-WebSocket-Extensions", &answers.join(", "));
    }
    for (name, value) in extra_headers {
        put_header(dst, name, value);
    }
    dst.put_slice(b"\r\n");
}

/// Write a refusal: `status` with a text `body`, and the connection closed after it.
///
/// ```
/// # use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// wsevents_proto::handshake::encode_reject(403, "origin not allowed", &[], &mut out);
/// assert!(out.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
/// assert!(out.ends_with(b"\r\n\r\norigin not allowed"));
/// ```
pub fn encode_reject(
    status: u16,
    body: &str,
    extra_headers: &[(String, String)],
    dst: &mut BytesMut,
) {
    dst.put_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    put_header(dst, "Content-Type", "text/plain; charset=utf-8");
    put_header(dst, "Content-Length", &body.len().to_string());
    put_header(dst, "Connection", "close");
    for (name, value) in extra_headers {
        put_header(dst, name, value);
    }
    dst.put_slice(b"\r\n");
    dst.put_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "GET /chat HTTP/1.1\r\n\
Host: server.example.com\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(head: &str) -> Result<Option<(Request, usize)>, HandshakeError> {
        parse_request(head.as_bytes(), &Limits::default())
    }

    fn refused(head: &str) -> u16 {
        match parse(head) {
            Err(e) => e.status().unwrap(),
            other => panic!("accepted {other:?}"),
        }
    }

    #[test]
    fn rfc_sample_request_is_parsed() {
        let (request, n) = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(n, SAMPLE.len());
        assert_eq!(request.target, "/chat");
        assert_eq!(request.host, "server.example.com");
        assert_eq!(request.origin.as_deref(), Some("http://example.com"));
        assert_eq!(request.protocols, ["chat", "superchat"]);
        assert_eq!(request.select_protocol(&["superchat"]), Some("superchat"));
        assert_eq!(
            request.select_protocol(&["superchat", "chat"]),
            Some("chat")
        );
        assert_eq!(request.select_protocol(&["v2"]), None);
    }

    #[test]
    fn incomplete_at_every_split() {
        for cut in 0..SAMPLE.len() {
            assert_eq!(parse(&SAMPLE[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn every_refusal_has_its_status() {
        assert_eq!(refused(&SAMPLE.replace("GET", "POST")), 405);
        assert_eq!(refused(&SAMPLE.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(
            refused(&SAMPLE.replace("Host: server.example.com\r\n", "")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("Upgrade: websocket", "Upgrade: h2c")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("Connection: Upgrade", "Connection: close")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!")),
            400
        );
        assert_eq!(
            refused(&SAMPLE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")),
            426
        );
        assert_eq!(
            refused(&SAMPLE.replace("Sec-WebSocket-Version: 13\r\n", "")),
            426
        );
        assert_eq!(
            refused(&SAMPLE.replace("chat, superchat", "chat, super chat")),
            400
        );
        assert_eq!(refused("GET / HTTP/1.1\r\nbad header line\r\n\r\n"), 400);
    }

    #[test]
    fn tokens_are_case_insensitive() {
        let head = SAMPLE
            .replace("Upgrade: websocket", "UPGRADE: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, upgrade");
        assert!(parse(&head).unwrap().is_some());
    }

    #[test]
    fn head_over_the_limit_is_431() {
        let limits = Limits {
            max_head_size: 100,
            max_headers: 64,
        };
        let error = parse_request(SAMPLE.as_bytes(), &limits).unwrap_err();
        assert_eq!(error.status(), Some(431));
        let partial = parse_request(&[b'a'; 101], &limits).unwrap_err();
        assert_eq!(partial, HandshakeError::HeadTooLarge { max: 100 });
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            max_head_size: 16 * 1024,
            max_headers: 4,
        };
        assert_eq!(
            parse_request(SAMPLE.as_bytes(), &limits),
            Err(HandshakeError::TooManyHeaders { max: 4 })
        );
    }

    #[test]
    fn error_responses_are_complete_http() {
        let mut out = BytesMut::new();
        HandshakeError::UnsupportedVersion(Some("8".into())).encode_response(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn request_response_round_trip() {
        use crate::handshake::ClientRequest;
        let client = ClientRequest::new("h:1", "/x?y").protocols(["a", "b"]);
        let mut head = BytesMut::new();
        client.encode(&mut head);
        let (request, _) = parse_request(&head, &Limits::default()).unwrap().unwrap();
        assert_eq!(request.query(), Some("y"));
        let mut answer = BytesMut::new();
        encode_accept(
            &request,
            Some("b"),
            &[],
            &[("X-Served-By".into(), "test".into())],
            &mut answer,
        );
        let (response, _) = client
            .parse_response(&answer, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(response.protocol.as_deref(), Some("b"));
        assert_eq!(response.header("x-served-by"), Some(&b"test"[..]));
    }
}
