//! The upgrade request in the `http` crate's types, and the caller's say in it.
//!
//! The core parses and checks the upgrade (`wsevents_proto::handshake`); what a server
//! answers is policy, and policy is written against the types the Rust web stack
//! speaks: [`http::Request`], [`HeaderMap`], [`StatusCode`]. This module holds those
//! pieces, shared by every way in (the [`Server`](crate::Server), an
//! [`Acceptor`](crate::Acceptor) on a stream of one's own, and hyper/axum upgrades):
//!
//! - [`UpgradeRequest`]: what the accept hook sees (the whole request, the peer's
//!   address, the subprotocols offered);
//! - [`Accept`]: the hook's yes, with the subprotocol it chose and headers to add to
//!   the answer (`Set-Cookie`); its no is an `http::Response<String>` (status,
//!   headers such as `WWW-Authenticate`, body);
//! - the conversion of the core's request into an `http::Request<()>`, and the
//!   handshake a server connection keeps ([`request()`](crate::WebSocketStream::request),
//!   [`peer_addr()`](crate::WebSocketStream::peer_addr)).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{AsHeaderName, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use wsevents_proto::Utf8Bytes;
use wsevents_proto::handshake::Request;

use super::SocketLimits;
use super::route::RouteMatch;

/// What an accept hook answers: [`Accept`], or the response that refuses the upgrade.
pub type Decision = Result<Accept, http::Response<String>>;

/// The accept hook: an async function of the request.
pub(crate) type Hook =
    Arc<dyn Fn(UpgradeRequest) -> Pin<Box<dyn Future<Output = Decision> + Send>> + Send + Sync>;

/// The subprotocol selection callback: offered protocols and the request in, the
/// choice out.
pub(crate) type ProtocolSelector =
    Arc<dyn Fn(&[String], &http::Request<()>) -> Option<String> + Send + Sync>;

/// An upgrade request as an accept hook ([`Acceptor::on_request`](crate::Acceptor::on_request))
/// sees it: the whole request (method, URI with path and query, version, every
/// header), the peer's address, and the subprotocols offered.
///
/// ```
/// # use wsevents::UpgradeRequest;
/// fn session(request: &UpgradeRequest) -> Option<&str> {
///     request.cookie("session")
/// }
/// ```
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    request: http::Request<()>,
    peer_addr: Option<SocketAddr>,
    protocols: Vec<String>,
    route: Option<RouteMatch>,
}

impl UpgradeRequest {
    pub(crate) fn new(
        request: http::Request<()>,
        peer_addr: Option<SocketAddr>,
        protocols: Vec<String>,
    ) -> Self {
        UpgradeRequest {
            request,
            peer_addr,
            protocols,
            route: None,
        }
    }

    pub(crate) fn with_route(mut self, route: Option<RouteMatch>) -> Self {
        self.route = route;
        self
    }

    /// The route the request matched, as written (`/topic/{name}`); `None` when the
    /// acceptor has no routes, or a fallback serves the path.
    pub fn route(&self) -> Option<&str> {
        self.route.as_ref().map(RouteMatch::route)
    }

    /// The value of the route's parameter `name`, percent-decoded (`news` for
    /// `/topic/news` on the route `/topic/{name}`).
    ///
    /// ```
    /// use wsevents::{Accept, Acceptor};
    /// // Only subscribers of a topic may listen to it.
    /// let acceptor = Acceptor::new().route("/topic/{name}").on_request(|request| async move {
    ///     let topic = request.param("name").unwrap_or_default().to_owned();
    ///     match request.cookie("topics") {
    ///         Some(topics) if topics.split(',').any(|t| t == topic) => Ok(Accept::new()),
    ///         _ => Err(http::Response::builder().status(403).body(String::new()).unwrap()),
    ///     }
    /// });
    /// # let _ = acceptor;
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.route.as_ref()?.param(name)
    }

    /// The request (`GET` on HTTP/1.1, `CONNECT` on HTTP/2).
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        self.request.uri()
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// Every header.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// The first header named `name`, if it is visible ASCII.
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.request.headers().get(name)?.to_str().ok()
    }

    /// The value of the cookie `name` in the `Cookie` headers, if any.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(self.request.headers(), name)
    }

    /// The peer's address, when the transport has one (a [`Server`](crate::Server)
    /// always knows it; an [`Acceptor`](crate::Acceptor) on a stream of one's own knows
    /// it when given, see [`Acceptor::accept_from`](crate::Acceptor::accept_from)).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The subprotocols the client offered, in its order.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The request, taken out.
    pub fn into_request(self) -> http::Request<()> {
        self.request
    }
}

/// The value of the cookie `name` in `headers`' `Cookie` lines (RFC 6265 §5.4:
/// `name=value` pairs separated by `; `).
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::COOKIE};
/// let mut headers = HeaderMap::new();
/// headers.append(COOKIE, HeaderValue::from_static("theme=dark; session=abc123"));
/// assert_eq!(wsevents::cookie(&headers, "session"), Some("abc123"));
/// assert_eq!(wsevents::cookie(&headers, "user"), None);
/// ```
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.trim_matches('"'))
        })
}

/// An accept hook's yes: the upgrade goes ahead, with the subprotocol chosen here (it
/// must be one the client offered; without one, the acceptor's own choice stands) and
/// headers added to the answer.
///
/// ```
/// use http::{HeaderValue, header::SET_COOKIE};
/// let accept = wsevents::Accept::new()
///     .protocol("chat")
///     .header(SET_COOKIE, HeaderValue::from_static("seen=1; HttpOnly"));
/// # let _ = accept;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Accept {
    pub(crate) protocol: Option<String>,
    pub(crate) headers: HeaderMap,
}

impl Accept {
    /// Accept, with the acceptor's subprotocol choice and no extra header.
    pub fn new() -> Self {
        Accept::default()
    }

    /// Answer with this subprotocol (one the client offered: another one is a bug of
    /// the hook's, answered `500`).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Add a header to the answer (repeatable: `Set-Cookie` twice sends two).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The headers added to the answer.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}

/// A refusal, before it is written: status, headers and body.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// Boxed: a refusal travels in `Err`s, kept small.
    pub(crate) headers: Box<HeaderMap>,
    pub(crate) body: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> Self {
        Refusal {
            status,
            headers: Box::default(),
            body: body.into(),
        }
    }

    /// The refusal as a response.
    #[cfg(feature = "hyper")]
    pub(crate) fn into_response(self) -> http::Response<String> {
        let mut response = http::Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = *self.headers;
        response
    }
}

impl From<http::Response<String>> for Refusal {
    fn from(response: http::Response<String>) -> Self {
        let (parts, body) = response.into_parts();
        Refusal {
            status: parts.status,
            headers: Box::new(parts.headers),
            body,
        }
    }
}

/// The handshake a server connection keeps: the request that opened it and the peer.
///
/// Kept compact, since every idle connection holds one: a request read by the core is
/// kept as one buffer in HTTP/1.1 head form (a few hundred bytes, against a couple of
/// KiB for an `http::Request` with its `HeaderMap`), made into an `http::Request` when
/// asked for; one that hyper parsed (which may carry HTTP/2 and extensions) is kept as
/// it came.
#[derive(Clone)]
pub(crate) struct ServerHandshake {
    request: StoredRequest,
    pub(crate) peer_addr: Option<SocketAddr>,
    /// The route the request matched, with its parameters.
    route: Option<RouteMatch>,
    /// The bounds the acceptor gives the connection.
    pub(crate) limits: SocketLimits,
}

#[derive(Clone)]
enum StoredRequest {
    /// `METHOD TARGET HTTP/1.1`, the headers, the blank line; and the path, a slice
    /// of the same bytes.
    Head { head: bytes::Bytes, path: Utf8Bytes },
    /// A request another HTTP server parsed (hyper's, as it came).
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    Http(Box<http::Request<()>>),
}

impl ServerHandshake {
    /// A request the core read.
    pub(crate) fn from_core(request: &Request, peer_addr: Option<SocketAddr>) -> Self {
        let size = request.method.len()
            + request.target.len()
            + 13
            + request
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len() + 4)
                .sum::<usize>()
            + 2;
        let mut head = Vec::with_capacity(size);
        head.extend_from_slice(request.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(request.target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &request.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let head = bytes::Bytes::from(head);
        // The path is a slice of the target (`Request::path`), which follows the
        // method and a space in the head; the target is UTF-8, so is the slice.
        let path_at = (request.path().as_ptr() as usize)
            .checked_sub(request.target.as_ptr() as usize)
            .map(|offset| request.method.len() + 1 + offset);
        let path = path_at
            .and_then(|at| head.get(at..at + request.path().len()))
            .and_then(|slice| Utf8Bytes::try_from(head.slice_ref(slice)).ok())
            .unwrap_or_else(|| Utf8Bytes::from("/"));
        ServerHandshake {
            request: StoredRequest::Head { head, path },
            peer_addr,
            route: None,
            limits: SocketLimits::default(),
        }
    }

    /// The same, with the bounds of the acceptor that serves it.
    pub(crate) fn with_limits(mut self, limits: SocketLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same, with the route the request matched.
    pub(crate) fn with_route(mut self, route: Option<RouteMatch>) -> Self {
        self.route = route;
        self
    }

    /// The request's path, without the query (as sent: percent-encoded).
    pub(crate) fn path(&self) -> &str {
        match &self.request {
            StoredRequest::Head { path, .. } => path.as_str(),
            StoredRequest::Http(request) => request.uri().path(),
        }
    }

    /// The route matched, if the acceptor had routes.
    pub(crate) fn route(&self) -> Option<&RouteMatch> {
        self.route.as_ref()
    }

    /// A request another HTTP server parsed.
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) fn from_http(request: http::Request<()>, peer_addr: Option<SocketAddr>) -> Self {
        ServerHandshake {
            request: StoredRequest::Http(Box::new(request)),
            peer_addr,
            route: None,
            limits: SocketLimits::default(),
        }
    }

    /// The request, as the `http` types.
    pub(crate) fn request(&self) -> http::Request<()> {
        match &self.request {
            StoredRequest::Http(request) => (**request).clone(),
            // Written by `from_core` from a request that `to_http` took, so it parses.
            StoredRequest::Head { head, .. } => parse_head(head).unwrap_or_default(),
        }
    }
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self.request();
        f.debug_struct("ServerHandshake")
            .field("uri", request.uri())
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

/// An HTTP/1.1 request head as an `http::Request<()>`.
fn parse_head(head: &[u8]) -> Option<http::Request<()>> {
    let lines = head.windows(2).filter(|w| w == b"\r\n").count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    let mut parsed = httparse::Request::new(&mut slots);
    parsed.parse(head).ok()?;
    let mut out = http::Request::new(());
    *out.method_mut() = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    *out.uri_mut() = Uri::try_from(parsed.path?).ok()?;
    *out.version_mut() = Version::HTTP_11;
    let headers = out.headers_mut();
    headers.reserve(parsed.headers.len());
    for header in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(header.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(header.value).ok()?,
        );
    }
    Some(out)
}

/// The core's request, read from an HTTP/1.1 head, as an `http::Request<()>`:
/// method, target, version, every header. `None` for a target or a header the `http`
/// types do not take (the caller answers 400).
pub(crate) fn to_http(request: &Request) -> Option<http::Request<()>> {
    let method = Method::from_bytes(request.method.as_bytes()).ok()?;
    let version = Version::HTTP_11;
    let uri = Uri::try_from(request.target.as_str()).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(value).ok()?;
        headers.append(name, value);
    }
    let mut out = http::Request::new(());
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.version_mut() = version;
    *out.headers_mut() = headers;
    Some(out)
}

/// A client's request as sent, as an `http::Request<()>` (from the head the core
/// encodes, so every header is there as it went out).
pub(crate) fn client_request_to_http(
    request: &wsevents_proto::handshake::ClientRequest,
) -> Option<http::Request<()>> {
    let mut head = bytes::BytesMut::new();
    request.encode(&mut head);
    parse_head(&head)
}

/// A server's answer as the client got it, as an `http::Response<()>` (headers the
/// `http` types do not take are left out).
pub(crate) fn response_to_http(
    response: &wsevents_proto::handshake::Response,
) -> http::Response<()> {
    let mut out = http::Response::new(());
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out
}

/// The URL a server connection was opened at: `ws://` or `wss://`, the `Host` (or
/// HTTP/2 `:authority`), the path and query.
pub(crate) fn url_of(request: &http::Request<()>, secure: bool) -> String {
    let scheme = if secure { "wss" } else { "ws" };
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
        .unwrap_or("");
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{target}")
}

/// Headers as the core writes them: name and value strings (values that are not
/// UTF-8 are written lossily; the core writes CR, LF and NUL as spaces).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsevents_proto::handshake::{Limits, parse_request};

    fn parsed(head: &str) -> Request {
        parse_request(head.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
            .0
    }

    const HEAD: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nCookie: a=1; session=\"xyz\"\r\nCookie: b=2\r\n\r\n";

    #[test]
    fn core_request_becomes_http_request() {
        let request = to_http(&parsed(HEAD)).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.uri().path(), "/chat");
        assert_eq!(request.uri().query(), Some("room=1"));
        assert_eq!(request.headers()["host"], "example.com");
        assert_eq!(request.headers().get_all(COOKIE).iter().count(), 2);
    }

    #[test]
    fn cookies_are_found_across_lines_and_unquoted() {
        let request = to_http(&parsed(HEAD)).unwrap();
        assert_eq!(cookie(request.headers(), "session"), Some("xyz"));
        assert_eq!(cookie(request.headers(), "b"), Some("2"));
        assert_eq!(cookie(request.headers(), "sess"), None);
    }

    #[test]
    fn a_kept_handshake_gives_the_request_back() {
        let core = parsed(HEAD);
        let kept = ServerHandshake::from_core(&core, None);
        assert_eq!(kept.request().uri(), "/chat?room=1");
        assert_eq!(kept.request().headers(), to_http(&core).unwrap().headers());
        let StoredRequest::Head { head, .. } = &kept.request else {
            unreachable!()
        };
        assert_eq!(&head[..], HEAD.as_bytes(), "the head as received");
        assert_eq!(kept.path(), "/chat");
    }

    #[test]
    fn a_kept_handshake_knows_its_path_without_parsing_again() {
        let absolute = HEAD.replacen("/chat?room=1", "ws://example.com/chat/a%20b?x", 1);
        let kept = ServerHandshake::from_core(&parsed(&absolute), None);
        assert_eq!(kept.path(), "/chat/a%20b");
        let StoredRequest::Head { head, path } = &kept.request else {
            unreachable!()
        };
        assert!(
            head.as_ptr_range().contains(&path.as_bytes().as_ptr()),
            "a slice of the head, not a copy"
        );
        let root = HEAD.replacen("/chat?room=1", "/?q", 1);
        assert_eq!(ServerHandshake::from_core(&parsed(&root), None).path(), "/");
    }

    #[test]
    fn refusal_keeps_status_headers_and_body() {
        let response = http::Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Bearer")
            .body("log in first".to_owned())
            .unwrap();
        let refusal = Refusal::from(response);
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED);
        assert_eq!(refusal.headers["www-authenticate"], "Bearer");
        assert_eq!(
            header_pairs(&refusal.headers),
            [("www-authenticate".to_owned(), "Bearer".to_owned())]
        );
        assert_eq!(refusal.body, "log in first");
    }
}
