//! The server side of the opening handshake: parse and check the client's request
//! (RFC 6455 §4.2.1), then answer with a 101 (§4.2.2) or a refusal.
//!
//! [`parse_request`] turns a valid request into a [`Request`] and every invalid one
//! into a [`HandshakeError`] that knows its HTTP status. What to answer a valid request
//! with (which subprotocol, which extensions, whether the origin is welcome) is the
//! caller's policy; [`encode_accept`] and [`encode_reject`] write the answer it chose.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, BytesMut};

use super::headers::{ExtensionOffer, accept_key, has_token, is_token, parse_extensions, tokens};
use super::{
    HandshakeError, Headers, Limits, check_parse, find_header, head_window, header_slots,
    joined_header, owned_headers, put_header, reason_phrase, single_header,
};

/// A client's valid upgrade request.
///
/// ```
/// use wsevents_proto::handshake::{Limits, parse_request};
///
/// let head = b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\n\
/// Upgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
/// Sec-WebSocket-Protocol: chat, superchat\r\n\r\n";
/// let (request, _) = parse_request(head, &Limits::default()).unwrap().unwrap();
/// assert_eq!((request.path(), request.query()), ("/chat", Some("room=1")));
/// assert_eq!(request.select_protocol(&["superchat", "chat"]), Some("chat"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method: `GET`, or `CONNECT` for an HTTP/2 extended CONNECT (RFC 8441).
    pub method: String,
    /// The request target as sent: usually path and query (`/chat?room=1`).
    pub target: String,
    /// The `Host` header.
    pub host: String,
    /// The `Sec-WebSocket-Key`, as sent (base64 of 16 bytes); empty for an HTTP/2
    /// extended CONNECT (RFC 8441 has no key).
    pub key: String,
    /// The `Origin` header, if any (the first, if repeated).
    pub origin: Option<String>,
    /// The subprotocols offered, in the client's order (every one a token).
    pub protocols: Vec<String>,
    /// The extensions offered, in the client's order, parameters not yet checked.
    pub extensions: Vec<ExtensionOffer>,
    /// Every header, in order, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find_header(&self.headers, name)
    }

    /// The path: the target without its query. For a target in absolute form
    /// (`ws://host/chat`, which RFC 6455 §4.2.1 allows), the path inside it (`/` if it has
    /// none).
    pub fn path(&self) -> &str {
        let target = self
            .target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path);
        match target.split_once("://") {
            Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains('/') => {
                rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/")
            }
            _ => target,
        }
    }

    /// The query (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The first subprotocol *in the client's order* that the server supports (compared
    /// exactly, as subprotocol names are case-sensitive), or `None` to answer without
    /// one.
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols
            .iter()
            .find_map(|offered| supported.iter().find(|s| **s == offered.as_str()).copied())
    }
}

/// Parse and check the client's request at the start of `buf`.
///
/// `Ok(None)` while the head is incomplete (and no longer than
/// [`Limits::max_head_size`]); else the request and how many bytes its head took (the
/// client may already have sent frames behind it; they are not consumed).
///
/// Checked, each failure with the status to answer it
/// ([`HandshakeError::status`]): the method is GET (405); HTTP/1.1 (400); exactly one
/// non-empty `Host` (400); `Upgrade` lists `websocket` and `Connection` lists `upgrade`,
/// in any case (400); `Sec-WebSocket-Version: 13` (426); exactly one `Sec-WebSocket-Key`
/// that is 16 bytes in base64 (400); every offered subprotocol a token and
/// `Sec-WebSocket-Extensions` in the §9.1 grammar (400). Headers that may repeat
/// (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`) are
/// read as one comma list.
///
/// ```
/// use wsevents_proto::HandshakeError;
/// use wsevents_proto::handshake::{Limits, parse_request};
///
/// let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
/// assert_eq!(parse_request(&head[..10], &Limits::default()), Ok(None));
/// let error = parse_request(head, &Limits::default()).unwrap_err();
/// assert_eq!(error, HandshakeError::UnsupportedVersion(Some("8".into())));
/// assert_eq!(error.status(), Some(426));
/// ```
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let window = head_window(buf, limits);
    let mut slots = header_slots(window, limits);
    let mut parsed = httparse::Request::new(&mut slots);
    let Some(len) = check_parse(parsed.parse(window), buf.len(), limits)? else {
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
    let headers = owned_headers(parsed.headers);
    check(method, target, headers).map(|request| Some((request, len)))
}

/// Check an HTTP/1.1 upgrade request that another HTTP server parsed (hyper, axum):
/// the same checks as [`parse_request`] after the head is read, with the same errors
/// and statuses. `target` is the request target (path and query); `headers` every
/// header in order.
///
/// ```
/// use wsevents_proto::HandshakeError;
/// use wsevents_proto::handshake::check_request;
/// let headers = vec![("Host".to_owned(), b"h".to_vec())];
/// assert_eq!(check_request("GET", "/", headers).unwrap_err(), HandshakeError::NotWebSocketUpgrade);
/// ```
pub fn check_request(
    method: &str,
    target: &str,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<Request, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(method.to_owned()));
    }
    check(method.to_owned(), target.to_owned(), headers)
}

/// Check an HTTP/2 extended CONNECT (RFC 8441 §4: `:method CONNECT`, `:protocol
/// websocket`) that an HTTP/2 server parsed. `authority` is the `:authority`
/// pseudo-header (it takes the `Host` header's place), `target` the `:path`; `headers`
/// the regular headers. RFC 8441 drops `Upgrade`, `Connection` and
/// `Sec-WebSocket-Key` (and the answer is `200` without `Sec-WebSocket-Accept`), so
/// the [`Request`]'s `key` is empty; `Sec-WebSocket-Version: 13`, the subprotocols and
/// the extensions are checked as on HTTP/1.1. The caller checks `:method` and
/// `:protocol` (they are not headers in its HTTP library either).
///
/// ```
/// use wsevents_proto::handshake::check_extended_connect;
/// let headers = vec![
///     ("sec-websocket-version".to_owned(), b"13".to_vec()),
///     ("sec-websocket-protocol".to_owned(), b"chat".to_vec()),
/// ];
/// let request = check_extended_connect("example.com", "/chat", headers).unwrap();
/// assert_eq!((request.method.as_str(), request.host.as_str(), request.key.as_str()), ("CONNECT", "example.com", ""));
/// assert_eq!(request.protocols, ["chat"]);
/// ```
pub fn check_extended_connect(
    authority: &str,
    target: &str,
    headers: Vec<(String, Vec<u8>)>,
) -> Result<Request, HandshakeError> {
    if authority.is_empty() {
        return Err(HandshakeError::MissingHost);
    }
    check_version(&headers)?;
    offers(
        "CONNECT".to_owned(),
        target.to_owned(),
        authority.to_owned(),
        String::new(),
        headers,
    )
}

/// Check a GET's headers.
fn check(method: String, target: String, headers: Headers) -> Result<Request, HandshakeError> {
    let host = match single_header(&headers, "Host") {
        Ok(Some(host)) if !host.is_empty() => {
            String::from_utf8(host.to_vec()).map_err(|_| HandshakeError::MissingHost)?
        }
        _ => return Err(HandshakeError::MissingHost),
    };
    let upgrade = joined_header(&headers, "Upgrade").unwrap_or_default();
    if !has_token(&upgrade, "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    let connection = joined_header(&headers, "Connection").unwrap_or_default();
    if !has_token(&connection, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // The version before the key: a client of another version may well format its key
    // differently, and 426 tells it what to speak.
    check_version(&headers)?;
    let key = match single_header(&headers, "Sec-WebSocket-Key") {
        Ok(Some(key)) if STANDARD.decode(key).is_ok_and(|k| k.len() == 16) => {
            // Invariant: valid base64 is ASCII.
            String::from_utf8_lossy(key).into_owned()
        }
        _ => return Err(HandshakeError::InvalidKey),
    };
    offers(method, target, host, key, headers)
}

/// `Sec-WebSocket-Version: 13` (426 otherwise, with the version seen).
fn check_version(headers: &Headers) -> Result<(), HandshakeError> {
    match joined_header(headers, "Sec-WebSocket-Version") {
        Some(version) if version == b"13" => Ok(()),
        other => {
            let seen = other.map(|v| String::from_utf8_lossy(&v).into_owned());
            Err(HandshakeError::UnsupportedVersion(seen))
        }
    }
}

/// The offers (subprotocols, extensions, origin) of a request whose framing is checked.
fn offers(
    method: String,
    target: String,
    host: String,
    key: String,
    headers: Headers,
) -> Result<Request, HandshakeError> {
    let protocols = match joined_header(&headers, "Sec-WebSocket-Protocol") {
        None => Vec::new(),
        Some(value) => tokens(&value)
            .map(|t| match std::str::from_utf8(t) {
                Ok(t) if is_token(t) => Ok(t.to_owned()),
                _ => Err(HandshakeError::InvalidProtocolToken(
                    String::from_utf8_lossy(t).into_owned(),
                )),
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
    Ok(Request {
        method,
        target,
        host,
        key,
        origin,
        protocols,
        extensions,
        headers,
    })
}

/// Write the 101 answer to `request`: `Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
/// the chosen subprotocol and the accepted extensions (with the parameters the server
/// answers with) when there are any, then `extra_headers`.
///
/// The caller chooses; nothing here checks that `protocol` was offered (use
/// [`Request::select_protocol`]) or that the extensions answer offers (that is
/// `extension/`). CR, LF and NUL in any string are written as spaces.
///
/// ```
/// # use bytes::BytesMut;
/// # use wsevents_proto::handshake::{encode_accept, parse_request, Limits};
/// let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// let (request, _) = parse_request(head, &Limits::default()).unwrap().unwrap();
/// let mut out = BytesMut::new();
/// encode_accept(&request, None, &[], &[], &mut out);
/// assert_eq!(
///     &out[..],
///     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
/// Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
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

/// Write a refusal: `status` (with its standard reason phrase for common statuses),
/// `Content-Type: text/plain; charset=utf-8` (unless `extra_headers` has a
/// `Content-Type` of its own), `Content-Length`, `Connection: close`, `extra_headers`,
/// and `body`. The caller closes the connection once it is sent.
///
/// ```
/// # use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// wsevents_proto::handshake::encode_reject(403, "origin not allowed", &[], &mut out);
/// assert_eq!(
///     &out[..],
///     b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
/// Content-Length: 18\r\nConnection: close\r\n\r\norigin not allowed"
/// );
/// ```
pub fn encode_reject(
    status: u16,
    body: &str,
    extra_headers: &[(String, String)],
    dst: &mut BytesMut,
) {
    dst.put_slice(format!("HTTP/1.1 {status:03} {}\r\n", reason_phrase(status)).as_bytes());
    if !extra_headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        put_header(dst, "Content-Type", "text/plain; charset=utf-8");
    }
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
    use crate::handshake::{ClientRequest, Response};

    /// RFC 6455 §1.2 / §4.1: the sample request.
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

    fn sample() -> Request {
        parse(SAMPLE).unwrap().unwrap().0
    }

    /// The sample with one substitution.
    fn sample_with(from: &str, to: &str) -> String {
        assert!(SAMPLE.contains(from), "{from:?}");
        SAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn rfc_sample_request_is_parsed() {
        let (request, n) = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(n, SAMPLE.len());
        assert_eq!(request.method, "GET");
        assert_eq!(request.target, "/chat");
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), None);
        assert_eq!(request.host, "server.example.com");
        assert_eq!(request.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(request.origin.as_deref(), Some("http://example.com"));
        assert_eq!(request.protocols, ["chat", "superchat"]);
        assert!(request.extensions.is_empty());
        assert_eq!(request.headers.len(), 7);
        assert_eq!(request.header("sec-websocket-version"), Some(&b"13"[..]));
        assert_eq!(request.header("X-Missing"), None);
    }

    #[test]
    fn reject_with_a_content_type_of_its_own_writes_only_that_one() {
        let mut out = BytesMut::new();
        let json = [("content-type".to_owned(), "application/json".to_owned())];
        encode_reject(401, "{}", &json, &mut out);
        let head = String::from_utf8_lossy(&out);
        assert_eq!(head.matches("ontent-").count(), 2, "{head}");
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Length: 2\r\n"), "{head}");
    }

    fn connect_headers(extra: &[(&str, &str)]) -> Headers {
        let mut headers = vec![("sec-websocket-version".to_owned(), b"13".to_vec())];
        for (name, value) in extra {
            headers.push(((*name).to_owned(), value.as_bytes().to_vec()));
        }
        headers
    }

    #[test]
    fn extended_connect_needs_version_13_and_an_authority() {
        let no_version = vec![("origin".to_owned(), b"https://a".to_vec())];
        assert_eq!(
            check_extended_connect("h", "/", no_version),
            Err(HandshakeError::UnsupportedVersion(None))
        );
        assert_eq!(
            check_extended_connect("", "/", connect_headers(&[])),
            Err(HandshakeError::MissingHost)
        );
    }

    #[test]
    fn extended_connect_reads_offers_like_a_get() {
        let headers = connect_headers(&[
            ("sec-websocket-protocol", "chat, superchat"),
            (
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            ),
            ("origin", "https://example.com"),
        ]);
        let request = check_extended_connect("example.com", "/chat?x=1", headers).unwrap();
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("x=1"));
        assert_eq!(request.protocols, ["chat", "superchat"]);
        assert_eq!(request.extensions[0].name, "permessage-deflate");
        assert_eq!(request.origin.as_deref(), Some("https://example.com"));
        let bad = connect_headers(&[("sec-websocket-protocol", "a b")]);
        assert!(matches!(
            check_extended_connect("h", "/", bad),
            Err(HandshakeError::InvalidProtocolToken(_))
        ));
    }

    #[test]
    fn check_request_applies_parse_request_rules() {
        let (parsed, _) = parse(SAMPLE).unwrap().unwrap();
        assert_eq!(
            check_request("GET", "/chat", parsed.headers.clone()),
            Ok(parsed.clone())
        );
        assert_eq!(
            check_request("POST", "/chat", parsed.headers),
            Err(HandshakeError::MethodNotAllowed("POST".into()))
        );
    }

    #[test]
    fn rfc_sample_response_is_encoded() {
        let mut out = BytesMut::new();
        encode_accept(&sample(), Some("chat"), &[], &[], &mut out);
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn protocol_is_selected_in_the_clients_order() {
        let request = sample();
        assert_eq!(request.select_protocol(&["superchat"]), Some("superchat"));
        assert_eq!(
            request.select_protocol(&["superchat", "chat"]),
            Some("chat")
        );
        assert_eq!(request.select_protocol(&["v2", "Chat"]), None);
        assert_eq!(request.select_protocol(&[]), None);
    }

    #[test]
    fn path_and_query() {
        let mut request = sample();
        for (target, path, query) in [
            ("/chat?room=1&x", "/chat", Some("room=1&x")),
            ("/?", "/", Some("")),
            ("/a?b=http://c/d", "/a", Some("b=http://c/d")),
            ("/x://y", "/x://y", None),
            ("ws://example.com/chat?x", "/chat", Some("x")),
            ("http://example.com", "/", None),
            ("*", "*", None),
        ] {
            request.target = target.into();
            assert_eq!((request.path(), request.query()), (path, query), "{target}");
        }
    }

    #[test]
    fn incomplete_at_every_split() {
        for cut in 0..SAMPLE.len() {
            assert_eq!(parse(&SAMPLE[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut bytes = SAMPLE.as_bytes().to_vec();
        // A masked text frame the client sent right behind its request.
        bytes.extend([0x81, 0x82, 0x01, 0x02, 0x03, 0x04, 0x69, 0x6b]);
        let (_, n) = parse_request(&bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, SAMPLE.len());
        assert_eq!(bytes.get(n..).map(<[u8]>::len), Some(8));
    }

    /// One row per refusal: the request, the error, the status it is answered with.
    #[test]
    fn every_refusal_has_its_status() {
        use HandshakeError::*;
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let table = [
            (
                sample_with("GET", "POST"),
                MethodNotAllowed("POST".into()),
                405,
            ),
            (
                sample_with("GET", "HEAD"),
                MethodNotAllowed("HEAD".into()),
                405,
            ),
            (
                sample_with("HTTP/1.1", "HTTP/1.0"),
                UnsupportedHttpVersion,
                400,
            ),
            (
                sample_with("Host: server.example.com\r\n", ""),
                MissingHost,
                400,
            ),
            (
                sample_with("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n"),
                MissingHost,
                400,
            ),
            (
                sample_with("Host: server.example.com", "Host:"),
                MissingHost,
                400,
            ),
            (
                sample_with("Upgrade: websocket\r\n", ""),
                NotWebSocketUpgrade,
                400,
            ),
            (
                sample_with("Upgrade: websocket", "Upgrade: h2c"),
                NotWebSocketUpgrade,
                400,
            ),
            (
                sample_with("Connection: Upgrade", "Connection: close"),
                MissingConnectionUpgrade,
                400,
            ),
            (
                sample_with("Connection: Upgrade\r\n", ""),
                MissingConnectionUpgrade,
                400,
            ),
            (
                sample_with("Connection: Upgrade", "Connection: Upgraded"),
                MissingConnectionUpgrade,
                400,
            ),
            (
                sample_with(&format!("Sec-WebSocket-Key: {key}\r\n"), ""),
                InvalidKey,
                400,
            ),
            (sample_with(key, "c2hvcnQ="), InvalidKey, 400),
            (sample_with(key, "!!!"), InvalidKey, 400),
            (sample_with(key, "dGhlIHNhbXBsZSBub25jZQ"), InvalidKey, 400),
            (
                sample_with(key, "dGhlIHNhbXBsZSBub25jZSE="),
                InvalidKey,
                400,
            ),
            (
                sample_with(
                    &format!("Sec-WebSocket-Key: {key}\r\n"),
                    &format!("Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Key: {key}\r\n"),
                ),
                InvalidKey,
                400,
            ),
            (
                sample_with("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                UnsupportedVersion(Some("8".into())),
                426,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Version: 13",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8",
                ),
                UnsupportedVersion(Some("13, 8".into())),
                426,
            ),
            (
                sample_with("Sec-WebSocket-Version: 13\r\n", ""),
                UnsupportedVersion(None),
                426,
            ),
            (
                sample_with("chat, superchat", "chat, super chat"),
                InvalidProtocolToken("super chat".into()),
                400,
            ),
            (
                sample_with("chat, superchat", "chat, \"superchat\""),
                InvalidProtocolToken("\"superchat\"".into()),
                400,
            ),
            (
                sample_with(
                    "Sec-WebSocket-Version: 13",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: a b",
                ),
                InvalidExtensionHeader("expected \";\" or \",\" at byte 2".into()),
                400,
            ),
        ];
        for (head, error, status) in table {
            assert_eq!(parse(&head), Err(error.clone()), "{head}");
            assert_eq!(error.status(), Some(status), "{error:?}");
        }
    }

    #[test]
    fn malformed_requests_are_400() {
        for head in [
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "\0",
        ] {
            let error = parse(head).unwrap_err();
            assert!(matches!(error, HandshakeError::Malformed(_)), "{head:?}");
            assert_eq!(error.status(), Some(400));
        }
    }

    #[test]
    fn tokens_are_case_insensitive() {
        let head = SAMPLE
            .replace("Upgrade: websocket", "UPGRADE: WebSocket")
            .replace("Connection: Upgrade", "connection: keep-alive, Upgrade");
        assert!(parse(&head).unwrap().is_some());
        let lists = sample_with("Upgrade: websocket", "Upgrade: h2c, WEBSOCKET");
        assert!(parse(&lists).unwrap().is_some());
    }

    #[test]
    fn repeated_headers_combine_as_lists() {
        let head = sample_with(
            "Connection: Upgrade\r\n",
            "Connection: keep-alive\r\nConnection: upgrade\r\n",
        )
        .replace(
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
            "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: superchat, v3\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Extensions: x-foo, permessage-deflate\r\n",
        );
        let (request, _) = parse(&head).unwrap().unwrap();
        assert_eq!(request.protocols, ["chat", "superchat", "v3"]);
        assert_eq!(
            request.extensions,
            [
                ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None),
                ExtensionOffer::new("x-foo"),
                ExtensionOffer::new("permessage-deflate"),
            ]
        );
    }

    #[test]
    fn head_over_the_limit_is_431() {
        let limits = Limits {
            max_head_size: 100,
            max_headers: 64,
        };
        let error = parse_request(SAMPLE.as_bytes(), &limits).unwrap_err();
        assert_eq!(error, HandshakeError::HeadTooLarge { max: 100 });
        assert_eq!(error.status(), Some(431));
        // Incomplete heads wait up to the limit, and are refused past it.
        assert_eq!(parse_request(&SAMPLE.as_bytes()[..100], &limits), Ok(None));
        assert_eq!(
            parse_request(&[b'a'; 101], &limits),
            Err(HandshakeError::HeadTooLarge { max: 100 })
        );
        // A megabyte of input behind an endless header costs one bounded parse.
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(1 << 20, b'a');
        assert_eq!(
            parse(std::str::from_utf8(&endless).unwrap()),
            Err(HandshakeError::HeadTooLarge { max: 16 * 1024 })
        );
        // Exactly at the limit is fine.
        let exact = Limits {
            max_head_size: SAMPLE.len(),
            max_headers: 64,
        };
        assert!(parse_request(SAMPLE.as_bytes(), &exact).is_ok());
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            max_head_size: 16 * 1024,
            max_headers: 4,
        };
        let error = parse_request(SAMPLE.as_bytes(), &limits).unwrap_err();
        assert_eq!(error, HandshakeError::TooManyHeaders { max: 4 });
        assert_eq!(error.status(), Some(431));
        // Found as soon as the fifth header (`Origin`) is read, before the head ends.
        let partial = &SAMPLE[..SAMPLE.find("Sec-WebSocket-Protocol").unwrap()];
        assert_eq!(
            parse_request(partial.as_bytes(), &limits),
            Err(HandshakeError::TooManyHeaders { max: 4 })
        );
        // Exactly the limit is fine; a huge limit costs nothing.
        for max_headers in [7, usize::MAX] {
            let limits = Limits {
                max_head_size: 16 * 1024,
                max_headers,
            };
            assert!(parse_request(SAMPLE.as_bytes(), &limits).is_ok());
        }
    }

    #[test]
    fn reject_is_a_complete_response() {
        let mut out = BytesMut::new();
        encode_reject(
            404,
            "no such room\n",
            &[("X-Reason".into(), "gone".into())],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "HTTP/1.1 404 Not Found\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 13\r\n\
Connection: close\r\n\
X-Reason: gone\r\n\r\n\
no such room\n"
        );
        let mut out = BytesMut::new();
        encode_reject(599, "", &[], &mut out);
        assert!(out.starts_with(b"HTTP/1.1 599 \r\n"), "{out:?}");
        assert!(out.ends_with(b"Content-Length: 0\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn error_response_parses_as_http() {
        let Err(error) = parse(&sample_with("GET", "PUT")) else {
            panic!("accepted a PUT");
        };
        let mut out = BytesMut::new();
        error.encode_response(&mut out);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&out).unwrap() else {
            panic!("incomplete response");
        };
        assert_eq!(response.code, Some(405));
        let allow = response.headers.iter().find(|h| h.name == "Allow");
        assert_eq!(allow.map(|h| h.value), Some(&b"GET"[..]));
        assert_eq!(out.len() - head, error.to_string().len() + 1);
    }

    #[test]
    fn client_and_server_round_trip() {
        let deflate =
            ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None);
        let client = ClientRequest::new("example.com:8080", "/chat?room=1")
            .protocols(["v2.chat", "chat"])
            .extension(deflate.clone())
            .extension(ExtensionOffer::new("x-other"))
            .origin("https://example.com");
        let mut head = BytesMut::new();
        client.encode(&mut head);
        let (request, n) = parse_request(&head, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, head.len());
        assert_eq!(request.host, "example.com:8080");
        assert_eq!((request.path(), request.query()), ("/chat", Some("room=1")));
        assert_eq!(request.key, client.key());
        assert_eq!(request.origin.as_deref(), Some("https://example.com"));
        assert_eq!(request.protocols, client.protocols_offered());
        assert_eq!(request.extensions, client.extensions());

        let protocol = request.select_protocol(&["chat", "v2.chat"]);
        assert_eq!(protocol, Some("v2.chat"));
        let answer = ExtensionOffer::new("permessage-deflate")
            .param("client_max_window_bits", Some("10".into()));
        let mut response = BytesMut::new();
        encode_accept(
            &request,
            protocol,
            std::slice::from_ref(&answer),
            &[("X-Served-By".into(), "test".into())],
            &mut response,
        );
        let response_len = response.len();
        response.extend_from_slice(&[0x81, 0x00]);
        let (
            Response {
                status,
                protocol,
                extensions,
                ..
            },
            n,
        ) = client
            .parse_response(&response, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!((status, n), (101, response_len));
        assert_eq!(protocol.as_deref(), Some("v2.chat"));
        assert_eq!(extensions, [answer]);
        let (response, _) = client
            .parse_response(&response, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(response.header("x-served-by"), Some(&b"test"[..]));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = sample_with(
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: e; p=\"1\"",
        );
        for i in 0..base.len() {
            for byte in [0x00, b'\r', b'\n', b':', b',', b';', b'"', b' ', 0x80, 0xff] {
                let mut bytes = base.clone().into_bytes();
                if let Some(b) = bytes.get_mut(i) {
                    *b = byte;
                }
                if let Err(error) = parse_request(&bytes, &Limits::default()) {
                    let mut out = BytesMut::new();
                    error.encode_response(&mut out);
                    assert!(!out.is_empty(), "{error:?} has no response");
                }
            }
        }
    }
}
