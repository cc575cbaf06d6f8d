//! Accepting: the server side of the opening handshake on any transport, and a
//! [`Server`] that listens on TCP (optionally TLS), upgrades each connection in its own
//! task, hands out the open ones, and shuts them all down gracefully.
//!
//! # Lifecycle
//!
//! ```text
//!  listen ─► handshake permit ─► accept (AcceptBackoff) ─► task: TLS + HTTP head + 101
//!            (max_handshakes)                                within handshake_timeout
//!                                     under max_connections? ─┬─ no: 503 + Retry-After
//!                                                             └─ yes: tracked, handed out
//!  shutdown ─► stop accepting ─► 1001 to every open connection, after its queue
//!          ─► close handshakes, up to the grace period ─► abort the rest ─► report
//! ```
//!
//! 1. **Handshakes** are bounded in number ([`ServerBuilder::max_handshakes`], 1024)
//!    and in time: one timeout, `Config::handshake_timeout` (10 s), covers TLS, the
//!    HTTP head and the response, so a client that trickles its request in a byte at a
//!    time is closed then, whatever it does. A handshake that fails is logged and
//!    dropped, never handed out.
//! 2. **Open connections** are bounded ([`ServerBuilder::max_connections`], 10,000):
//!    past the cap an upgrade request is answered `503 Service Unavailable` with
//!    `Retry-After` ([`ServerBuilder::retry_after`], 5 s), an HTTP answer rather than
//!    a dropped connection, and counted ([`Lifecycle::refused`]).
//! 3. **Per peer address** (an IPv4 address, an IPv6 /64), both again, well below the
//!    server-wide caps so that one address cannot take every slot:
//!    [`ServerBuilder::max_handshakes_per_ip`] (64 handshakes in progress; past it the
//!    address's next TCP connection is closed at once, unread) and
//!    [`ServerBuilder::max_connections_per_ip`] (1,000 open; past it `429 Too Many
//!    Requests` with `Retry-After`), counted ([`Lifecycle::refused_per_ip`]).
//! 4. **Accepting** waits out resource exhaustion (out of file descriptors):
//!    [`AcceptBackoff`].
//! 5. **Shutdown** ([`Server::shutdown`], or cancelling the token of
//!    [`ServerBuilder::shutdown_token`]): stop accepting; close every open connection
//!    with 1001 and [`SHUTDOWN_REASON`] after what is queued for it; wait up to a grace
//!    period for the close handshakes; abort the rest; report how many closed cleanly
//!    and how many were forced ([`ShutdownReport`]). Dropping the [`Server`] only stops
//!    accepting.
//!
//! The pieces are small named types in `lifecycle.rs` and `backoff.rs`
//! ([`Lifecycle`], [`ServerLimits`], [`HandshakePermit`], [`AcceptBackoff`]), public so
//! an accept loop of one's own (`wsevents serve`, which also serves a page on the
//! port) gets the same bounds and the same shutdown.
//!
//! # Policy
//!
//! The policy for upgrade requests, shared by all connections of a server, lives in an
//! [`Acceptor`]: which paths are served (others get 404), which subprotocols are spoken
//! (the first the client lists that the server supports is chosen), which origins are
//! allowed (others get 403), any further check of the caller's, and the handshake
//! timeout (from [`Config::handshake_timeout`]). An acceptor also runs on a stream some
//! other server accepted (hyper/axum upgrades: see the `axum` example).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wsevents_proto::deflate::DeflateConfig;
use wsevents_proto::handshake::Request;
use wsevents_proto::{CloseCode, Config, Connection, Event, Role};

use super::extensions::DeflateChoice;
pub(crate) mod backoff;
pub(crate) mod handshake;
#[cfg(feature = "hyper")]
pub(crate) mod hyper;
pub(crate) mod lifecycle;
pub(crate) mod listen;
pub(crate) mod peers;
pub(crate) mod route;

pub use self::handshake::{Accept, cookie};
use self::handshake::{Decision, Hook, ProtocolSelector, Refusal, ServerHandshake, UpgradeRequest};

pub use self::backoff::AcceptBackoff;
use self::lifecycle::Tracked;
pub use self::lifecycle::{
    DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_HANDSHAKES_PER_IP, DEFAULT_RETRY_AFTER, HandshakePermit, Lifecycle,
    SHUTDOWN_REASON, ServerLimits, ShutdownReport,
};
pub use self::peers::PeerLoad;
use self::route::{Matched, RouteMatch, RoutePattern};

use crate::backpressure::{Backpressure, DEFAULT_MAX_QUEUE};
use crate::error::{Error, Result};
use crate::io::driver::Driver;
use crate::io::stream::{DEFAULT_WRITE_LIMIT, WebSocketStream};
use crate::io::tls::MaybeTlsStream;

type OriginRule = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// How a server answers upgrade requests.
///
/// ```
/// use wsevents::Acceptor;
/// let acceptor = Acceptor::new()
///     .route("/chat")
///     .protocols(&["chat", "superchat"])
///     .allow_origin(|origin| origin == Some("https://example.com"));
/// ```
///
/// The order of the checks: the route (404 for a path no route serves; a path given
/// its own acceptor with [`at`](Self::at) is decided by that one from here on), the
/// origin rule (403), the accept hook ([`on_request`](Self::on_request), which may
/// refuse with any response), then the subprotocol: the hook's choice, else the
/// selection callback's ([`select_protocol`](Self::select_protocol)), else the first
/// the client offers of [`protocols`](Self::protocols).
#[derive(Clone, Default)]
pub struct Acceptor {
    config: Config,
    deflate: DeflateChoice,
    routes: Vec<(RoutePattern, Option<Arc<Acceptor>>)>,
    /// Who serves a path no route matches, once there are routes.
    unrouted: Unrouted,
    protocols: Vec<String>,
    origin: Option<OriginRule>,
    hook: Option<Hook>,
    select: Option<ProtocolSelector>,
    headers: Vec<(String, String)>,
    /// The bounds its connections get: the event API's send queue and received
    /// events, the stream API's write limit.
    limits: SocketLimits,
}

/// The bounds an acceptor gives its connections (see [`Backpressure`]'s table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketLimits {
    /// The event API's send queue.
    pub(crate) backpressure: Backpressure,
    /// The event API's received events waiting for a handler that awaits.
    pub(crate) max_queue: usize,
    /// The stream API's sink.
    pub(crate) write_limit: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            backpressure: Backpressure::default(),
            max_queue: DEFAULT_MAX_QUEUE,
            write_limit: DEFAULT_WRITE_LIMIT,
        }
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes: Vec<&str> = self.routes.iter().map(|(path, _)| path.as_str()).collect();
        f.debug_struct("Acceptor")
            .field("config", &self.config)
            .field("deflate", &self.deflate)
            .field("routes", &routes)
            .field("unrouted", &self.unrouted)
            .field("protocols", &self.protocols)
            .field("origin_rule", &self.origin.is_some())
            .field("hook", &self.hook.is_some())
            .field("select_protocol", &self.select.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

/// Who serves a path that no route matches (while there are routes).
#[derive(Debug, Clone, Default)]
enum Unrouted {
    /// Nobody: 404.
    #[default]
    NotFound,
    /// The acceptor itself, with its own policy.
    Here,
    /// This acceptor's policy and configuration.
    With(Arc<Acceptor>),
}

/// A yes to an upgrade: which acceptor's configuration the connection takes, the
/// route it matched, the subprotocol, the headers to add.
struct Answer<'a> {
    route: &'a Acceptor,
    matched: Option<RouteMatch>,
    protocol: Option<String>,
    /// The accept hook chose the subprotocol (a later choice among a list leaves it).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    protocol_by_hook: bool,
    headers: Vec<(String, String)>,
}

impl Acceptor {
    /// Accept every path, no subprotocol, any origin, default limits.
    pub fn new() -> Self {
        Acceptor::default()
    }

    /// Serve this path (repeatable) with this acceptor's policy; once any route is set,
    /// other paths get 404 (unless a [`fallback`](Self::fallback) serves them).
    ///
    /// A path may hold parameters, in axum's syntax: `{name}` is one whole segment,
    /// `{*name}` the rest of the path (last only). The route matched and its
    /// parameters (percent-decoded) stay on the connection
    /// ([`WebSocket::param`](crate::WebSocket::param),
    /// [`WebSocketStream::param`], and for the accept hook
    /// [`UpgradeRequest::param`]); a parameter that is not UTF-8 once decoded is
    /// answered `400`. Routes are tried in the order they were added.
    ///
    /// ```
    /// use wsevents::Acceptor;
    /// let acceptor = Acceptor::new().route("/chat").route("/topic/{name}");
    /// # let _ = acceptor;
    /// ```
    ///
    /// # Panics
    ///
    /// On a path that is not a route (a programming error, as in axum): one that does
    /// not start with `/`, a `{` or `}` that is not a whole segment's, an empty or
    /// repeated name, `{*name}` before the end.
    pub fn route(mut self, path: impl Into<String>) -> Self {
        self.routes.push((RoutePattern::parse(&path.into()), None));
        self
    }

    /// Serve this path with `acceptor`'s own policy and configuration: its limits,
    /// permessage-deflate, subprotocols, origin rule, hook and headers (routes of its
    /// own are ignored). The handshake limits and timeout stay this acceptor's: they
    /// apply before the path is known. The path may hold parameters, as in
    /// [`route`](Self::route) (which also says when it panics).
    ///
    /// ```
    /// use wsevents::{Acceptor, Config};
    /// let acceptor = Acceptor::new()
    ///     .at("/chat", Acceptor::new().protocols(&["chat"]))
    ///     .at(
    ///         "/upload/{name}",
    ///         Acceptor::new()
    ///             .config(Config { max_message_size: 256 << 20, ..Config::default() })
    ///             .deflate(None),
    ///     );
    /// # let _ = acceptor;
    /// ```
    pub fn at(mut self, path: impl Into<String>, acceptor: Acceptor) -> Self {
        self.routes
            .push((RoutePattern::parse(&path.into()), Some(Arc::new(acceptor))));
        self
    }

    /// Serve the paths no route matches with `acceptor`'s policy and configuration,
    /// instead of answering them 404 (without routes, every path is served anyway).
    ///
    /// ```
    /// use wsevents::Acceptor;
    /// let acceptor = Acceptor::new()
    ///     .at("/chat", Acceptor::new().protocols(&["chat"]))
    ///     .fallback(Acceptor::new().protocols(&["echo"]));
    /// # let _ = acceptor;
    /// ```
    pub fn fallback(mut self, acceptor: Acceptor) -> Self {
        self.unrouted = Unrouted::With(Arc::new(acceptor));
        self
    }

    /// Serve unrouted paths with this acceptor's own policy (a `Server` with a
    /// fallback handler but no fallback acceptor).
    pub(crate) fn fallback_here(mut self) -> Self {
        if matches!(self.unrouted, Unrouted::NotFound) {
            self.unrouted = Unrouted::Here;
        }
        self
    }

    /// The subprotocols this server speaks.
    pub fn protocols<S: AsRef<str>>(mut self, protocols: &[S]) -> Self {
        self.protocols = protocols.iter().map(|p| p.as_ref().to_owned()).collect();
        self
    }

    /// Choose the subprotocol with a function of the offered ones (in the client's
    /// order) and the request, like Node `ws`'s `handleProtocols`: `None` answers
    /// without one. It must return one of the offered protocols (another one is
    /// answered `500`). It replaces the choice among [`protocols`](Self::protocols).
    ///
    /// ```
    /// use wsevents::Acceptor;
    /// // The newest version of our protocol the client speaks.
    /// let acceptor = Acceptor::new().select_protocol(|offered, _request| {
    ///     offered.iter().filter(|p| p.starts_with("game.v")).max().cloned()
    /// });
    /// # let _ = acceptor;
    /// ```
    pub fn select_protocol(
        mut self,
        select: impl Fn(&[String], &http::Request<()>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.select = Some(Arc::new(select));
        self
    }

    /// Allow only origins for which `rule` is true (it gets `None` when the request has
    /// no `Origin` header); refused requests get 403.
    pub fn allow_origin(
        mut self,
        rule: impl Fn(Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.origin = Some(Arc::new(rule));
        self
    }

    /// The accept hook: an async function that sees the whole request (path, query,
    /// headers, cookies, the peer's address, the subprotocols offered) and accepts
    /// ([`Accept`], with the subprotocol it chose and headers to add, such as
    /// `Set-Cookie`) or refuses with a response of its own (status, headers such as
    /// `WWW-Authenticate`, body). It runs within the handshake timeout.
    ///
    /// ```
    /// use http::{HeaderValue, StatusCode, header};
    /// use wsevents::{Accept, Acceptor};
    /// let acceptor = Acceptor::new().on_request(|request| async move {
    ///     match request.cookie("session") {
    ///         Some(session) if session == "good" => Ok(Accept::new()
    ///             .header(header::SET_COOKIE, HeaderValue::from_static("seen=1"))),
    ///         _ => Err(http::Response::builder()
    ///             .status(StatusCode::UNAUTHORIZED)
    ///             .header(header::WWW_AUTHENTICATE, "Bearer realm=\"chat\"")
    ///             .body("log in first\n".to_owned())
    ///             .expect("a valid response")),
    ///     }
    /// });
    /// # let _ = acceptor;
    /// ```
    pub fn on_request<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        self.hook = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// A header to add to every 101 response.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Protocol limits and switches (the handshake timeout among them).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// permessage-deflate (RFC 7692): accepted by default with
    /// [`DeflateConfig::default()`](crate::DeflateConfig) when a client offers it; the
    /// configuration is this server's policy (for example
    /// `client_no_context_takeover: true` to keep no compression state per client
    /// between messages); `None` declines every offer.
    ///
    /// ```
    /// use wsevents::{Acceptor, DeflateConfig};
    /// let frugal = Acceptor::new().deflate(Some(DeflateConfig {
    ///     server_max_window_bits: Some(10),
    ///     client_max_window_bits: Some(10),
    ///     ..DeflateConfig::default()
    /// }));
    /// let plain = Acceptor::new().deflate(None);
    /// # let _ = (frugal, plain);
    /// ```
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        self.deflate = DeflateChoice::new(config);
        self
    }

    /// The send-queue rule of the event API's connections (default
    /// [`Backpressure::default`]: 16 MiB, then `send` fails with
    /// [`Error::BufferFull`]), whichever way they are accepted: a [`Server`],
    /// [`Lifecycle`], hyper's [`upgrade`](Self::upgrade) or axum's extractor. A server
    /// that pushes to many clients usually wants the close rule, so one client that
    /// stops reading is dropped instead of holding memory. A close code that may not
    /// be sent in a close frame is [`Error::InvalidAccess`]. Every queue bound of the
    /// crate is in one table on [`Backpressure`].
    ///
    /// ```
    /// # fn main() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, Backpressure, CloseCode};
    /// let acceptor = Acceptor::new()
    ///     .backpressure(Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER))?
    ///     .max_queue(4)
    ///     .write_limit(64 * 1024);
    /// # let _ = acceptor; Ok(()) }
    /// ```
    pub fn backpressure(mut self, backpressure: Backpressure) -> Result<Self> {
        self.limits.backpressure = backpressure.checked()?;
        Ok(self)
    }

    /// How many received events may wait for a handler that awaits, or for
    /// `next_event`, before the connection is no longer read (default
    /// [`DEFAULT_MAX_QUEUE`], 16; at least 1): the event API's connections'
    /// [`WebSocket::max_queue`](crate::WebSocket::max_queue).
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.limits.max_queue = max_queue.max(1);
        self
    }

    /// How many queued, unwritten bytes make the sink of the stream API's
    /// connections wait (default [`DEFAULT_WRITE_LIMIT`], 128 KiB):
    /// [`WebSocketStream::set_write_limit`] for every connection accepted.
    pub fn write_limit(mut self, limit: usize) -> Self {
        self.limits.write_limit = limit;
        self
    }

    /// The bounds its connections get.
    pub(crate) fn limits(&self) -> SocketLimits {
        self.limits
    }

    /// The protocol configuration (without the extensions added per connection).
    pub fn protocol_config(&self) -> &Config {
        &self.config
    }

    /// The configuration a connection of this acceptor runs with: its `Config` plus
    /// permessage-deflate when chosen.
    pub(crate) fn connection_config(&self) -> Config {
        self.deflate.apply(&self.config)
    }

    /// Decide on a request: which acceptor serves it, the subprotocol and the headers,
    /// or the refusal.
    async fn decide<'a>(
        &'a self,
        request: &Request,
        http_request: &http::Request<()>,
        peer_addr: Option<SocketAddr>,
    ) -> std::result::Result<Answer<'a>, Refusal> {
        let (route, matched) = self.route_for(request.path())?;
        if let Some(rule) = &route.origin
            && !rule(request.origin.as_deref())
        {
            return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed"));
        }
        let mut headers = route.headers.clone();
        let mut protocol = None;
        if let Some(hook) = &route.hook {
            let view =
                UpgradeRequest::new(http_request.clone(), peer_addr, request.protocols.clone())
                    .with_route(matched.clone());
            let accept = hook(view).await.map_err(Refusal::from)?;
            headers.extend(handshake::header_pairs(&accept.headers));
            protocol = accept.protocol;
        }
        let protocol_by_hook = protocol.is_some();
        if protocol.is_none() {
            protocol = match &route.select {
                Some(select) => select(&request.protocols, http_request),
                None => {
                    let supported: Vec<&str> = route.protocols.iter().map(String::as_str).collect();
                    request.select_protocol(&supported).map(str::to_owned)
                }
            };
        }
        if let Some(chosen) = &protocol
            && !request.protocols.iter().any(|offered| offered == chosen)
        {
            tracing::warn!(protocol = %chosen, "the chosen subprotocol was not offered");
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server chose a subprotocol the client did not offer",
            ));
        }
        Ok(Answer {
            route,
            matched,
            protocol,
            protocol_by_hook,
            headers,
        })
    }

    /// The acceptor that serves `path` and the route it matched, or the refusal: 404
    /// for a path nothing serves, 400 for a parameter that is not UTF-8.
    fn route_for(
        &self,
        path: &str,
    ) -> std::result::Result<(&Acceptor, Option<RouteMatch>), Refusal> {
        if self.routes.is_empty() {
            return Ok((self, None));
        }
        for (pattern, acceptor) in &self.routes {
            match pattern.matches(path) {
                Matched::Yes(matched) => {
                    return Ok((acceptor.as_deref().unwrap_or(self), Some(matched)));
                }
                Matched::No => {}
                Matched::BadParam(name) => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("the path parameter {name} is not UTF-8"),
                    ));
                }
            }
        }
        match &self.unrouted {
            Unrouted::NotFound => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint at {path}"),
            )),
            Unrouted::Here => Ok((self, None)),
            Unrouted::With(acceptor) => Ok((acceptor, None)),
        }
    }

    /// Run the server side of the opening handshake on `io`. A refused request is
    /// answered with its HTTP status and returned as [`Error::Refused`]. The
    /// connection is not tracked by any server: see [`Lifecycle::accept`] for one that
    /// is (connection cap, graceful shutdown). The request also stays on the
    /// connection ([`WebSocketStream::request`]).
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> Result<(WebSocketStream<S>, http::Request<()>)> {
        self.accept_inner(io, None, None).await
    }

    /// [`accept`](Self::accept), for a transport whose peer is at `peer_addr` (the
    /// accept hook and [`WebSocketStream::peer_addr`] see it).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let (tcp, peer) = listener.accept().await?;
    /// let (ws, request) = wsevents::Acceptor::new().accept_from(tcp, peer).await?;
    /// assert_eq!(ws.peer_addr(), Some(peer));
    /// println!("{} from {peer}", request.uri());
    /// # Ok(()) }
    /// ```
    pub async fn accept_from<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        peer_addr: SocketAddr,
    ) -> Result<(WebSocketStream<S>, http::Request<()>)> {
        self.accept_inner(io, Some(peer_addr), None).await
    }

    /// The handshake, admitting the connection into `lifecycle` if there is one.
    pub(crate) async fn accept_inner<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        peer_addr: Option<SocketAddr>,
        lifecycle: Option<&Lifecycle>,
    ) -> Result<(WebSocketStream<S>, http::Request<()>)> {
        let now = tokio::time::Instant::now().into_std();
        let mut conn = Connection::server(self.connection_config(), now);
        let mut driver = Driver::new(io);
        let mut accepted = None;
        let mut slot = None;
        let mut limits = SocketLimits::default();
        loop {
            match std::future::poll_fn(|cx| driver.poll_event(&mut conn, cx)).await {
                Some(Event::Request(request)) => {
                    let decision = match handshake::to_http(&request) {
                        None => Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "a request target or header the http types do not take",
                        )),
                        Some(http_request) => self
                            .decide(&request, &http_request, peer_addr)
                            .await
                            .map(|answer| (answer, http_request)),
                    };
                    // Written as the lifecycle spells them (`Retry-After`).
                    let mut lifecycle_headers = Vec::new();
                    let decision = decision.and_then(|(answer, http_request)| {
                        let Some(lifecycle) = lifecycle else {
                            return Ok((answer, http_request, None));
                        };
                        match lifecycle.admit(peer_addr) {
                            Ok(admitted) => Ok((answer, http_request, Some(admitted))),
                            Err(why) => {
                                let (status, body, retry_after) = lifecycle.refuse(why);
                                lifecycle_headers.push(retry_after.clone());
                                Err(Refusal::new(status, body))
                            }
                        }
                    });
                    let refusal = match decision {
                        Ok((answer, http_request, admitted)) => {
                            if !std::ptr::eq(answer.route, self) {
                                conn.reconfigure(answer.route.connection_config())?;
                            }
                            conn.accept(&request, answer.protocol.as_deref(), &answer.headers)?;
                            limits = answer.route.limits();
                            accepted = Some((
                                ServerHandshake::from_core(&request, peer_addr)
                                    .with_route(answer.matched)
                                    .with_limits(limits),
                                http_request,
                            ));
                            slot = admitted;
                            continue;
                        }
                        Err(refusal) => refusal,
                    };
                    let status = refusal.status;
                    crate::metrics::handshake_refused(status);
                    tracing::debug!(%status, body = %refusal.body, path = request.path(), "upgrade refused");
                    lifecycle_headers.extend(handshake::header_pairs(&refusal.headers));
                    conn.reject(status.as_u16(), &refusal.body, &lifecycle_headers)?;
                    // Flush the response and tear the transport down.
                    while std::future::poll_fn(|cx| driver.poll_event(&mut conn, cx))
                        .await
                        .is_some()
                    {}
                    return Err(Error::Refused(status));
                }
                Some(Event::Open) => {
                    let (handshake, request) = accepted.take().ok_or(Error::Closed)?;
                    if let Some(slot) = slot.take() {
                        driver.track(Tracked::new(slot));
                    }
                    std::future::poll_fn(|cx| driver.poll_write(&mut conn, cx)).await?;
                    let mut stream = WebSocketStream::new(driver, conn).with_handshake(handshake);
                    stream.set_write_limit(limits.write_limit);
                    return Ok((stream, request));
                }
                Some(Event::Error(error)) => {
                    return Err(match (driver.take_io_error(), error) {
                        (Some(io), wsevents_proto::Error::UnexpectedEof) => Error::Io(io),
                        (_, error) => error.into(),
                    });
                }
                Some(_) => {}
                None => return Err(Error::Closed),
            }
        }
    }
}

/// Accept a WebSocket connection on `io` with the default [`Acceptor`].
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let (tcp, _) = listener.accept().await?;
/// let ws = wsevents::accept(tcp).await?;
/// # Ok(()) }
/// ```
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Result<WebSocketStream<S>> {
    Ok(Acceptor::new().accept(io).await?.0)
}

/// An open connection a [`Server`] hands out, with the request that opened it.
pub type Accepted = (WebSocketStream<MaybeTlsStream>, http::Request<()>);

/// A listening WebSocket server.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use futures_util::{SinkExt, StreamExt};
/// let mut server = wsevents::Server::builder(wsevents::Acceptor::new().route("/ws"))
///     .bind("127.0.0.1:8080")
///     .await?;
/// while let Some((mut ws, _request)) = server.accept_stream().await {
///     tokio::spawn(async move {
///         while let Some(Ok(message)) = ws.next().await {
///             if ws.send(message).await.is_err() { break; }
///         }
///     });
/// }
/// # Ok(()) }
/// ```
///
/// Shutting down from another task, with a report:
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// let server = Arc::new(wsevents::Server::bind("127.0.0.1:8080").await?);
/// let stopper = server.clone();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     let report = stopper.shutdown(Duration::from_secs(10)).await;
///     println!("shutdown: {report}"); // "shutdown: 12 closed cleanly, 1 forced"
/// });
/// while let Some(ws) = server.accept().await {
///     tokio::spawn(async move { ws.run().await });
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    /// TLS: its connections' URLs are `wss://` (the event API's `url`).
    pub(crate) secure: bool,
    incoming: Arc<Incoming>,
    lifecycle: Lifecycle,
    task: JoinHandle<()>,
}

/// Open connections waiting for [`Server::accept`].
type Incoming = tokio::sync::Mutex<mpsc::Receiver<Accepted>>;

/// A route's handler as the I/O layer holds it: the open connection in, the work out.
/// The event API wraps a handler of [`WebSocket`](crate::WebSocket)s into one
/// (`api/server.rs`), so this layer knows nothing of it.
pub(crate) type StreamHandler =
    Arc<dyn Fn(Accepted, Handed) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a handler gets from its server beside the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handed {
    /// TLS: the connection's URL is `wss://`.
    pub(crate) secure: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Options for a server.
    pub fn builder(acceptor: Acceptor) -> ServerBuilder {
        ServerBuilder {
            acceptor,
            tls: None,
            limits: ServerLimits::default(),
            shutdown: None,
            grace: DEFAULT_GRACE,
            handlers: Vec::new(),
            fallback: None,
        }
    }

    /// A server with the default [`Acceptor`] listening on `addr`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let server = wsevents::Server::bind("127.0.0.1:8080").await?;
    /// while let Some(ws) = server.accept().await {
    ///     tokio::spawn(async move {
    ///         let echo = ws.clone();
    ///         ws.on_message(move |e| {
    ///             let _ = echo.send(&e.data);
    ///         });
    ///         ws.run().await;
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn bind(addr: impl ToSocketAddrs) -> Result<Server> {
        Server::builder(Acceptor::new()).bind(addr).await
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next open connection as a [`WebSocketStream`], with the request that
    /// opened it; `None` once the server stopped.
    pub async fn accept_stream(&self) -> Option<Accepted> {
        self.incoming.lock().await.recv().await
    }

    /// The server's connection cap, tracking and shutdown: how many connections are
    /// open, how many were refused, its shutdown token.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Shut down gracefully: stop accepting; close every open connection (those
    /// handed out by [`accept`](Self::accept) and [`accept_stream`](Self::accept_stream),
    /// and those not taken yet) with 1001 and [`SHUTDOWN_REASON`], after the messages
    /// already queued for it; wait up to `grace` for the close handshakes; abort the
    /// rest. Returns how many closed cleanly and how many were forced. A connection
    /// closes by itself as long as its owner polls it (`run`, `next_event`, the
    /// stream's `next`, or a send waiting for room).
    ///
    /// The shutdown also starts when the token given to
    /// [`ServerBuilder::shutdown_token`] is cancelled, with the builder's grace period;
    /// calling this then waits for that shutdown and returns its report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        // The lifecycle's shutdown claims the grace period in its first poll, before
        // the accept loop can wake up and claim its own.
        let (report, ()) = tokio::join!(
            self.lifecycle.shutdown(grace),
            drain(&self.incoming, &self.lifecycle)
        );
        report
    }
}

/// Options for a [`Server`].
pub struct ServerBuilder {
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ServerLimits,
    shutdown: Option<CancellationToken>,
    grace: Duration,
    /// The routes with a handler, by pattern (the acceptor routes them).
    handlers: Vec<(String, StreamHandler)>,
    /// The handler of the paths no route matches.
    fallback: Option<StreamHandler>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("acceptor", &self.acceptor)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("shutdown_token", &self.shutdown.is_some())
            .field("grace", &self.grace)
            .field(
                "handlers",
                &self.handlers.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl ServerBuilder {
    /// Route `path` to `handler` (with `acceptor`'s policy when given, else the
    /// server's): the event API wraps its handlers with this (`api/server.rs`).
    pub(crate) fn handle(
        mut self,
        path: String,
        acceptor: Option<Acceptor>,
        handler: StreamHandler,
    ) -> Self {
        self.acceptor = match acceptor {
            Some(acceptor) => self.acceptor.at(path.clone(), acceptor),
            None => self.acceptor.route(path.clone()),
        };
        self.handlers.push((path, handler));
        self
    }

    /// Serve the paths no route matches with `handler` (with `acceptor`'s policy
    /// when given, else the server's).
    pub(crate) fn handle_fallback(
        mut self,
        acceptor: Option<Acceptor>,
        handler: StreamHandler,
    ) -> Self {
        self.acceptor = match acceptor {
            Some(acceptor) => self.acceptor.fallback(acceptor),
            None => self.acceptor.fallback_here(),
        };
        self.fallback = Some(handler);
        self
    }

    /// The handler of the route `stream` was accepted on, if it has one (else the
    /// connection goes to [`Server::accept`]).
    fn handler_for<S>(&self, stream: &WebSocketStream<S>) -> Option<&StreamHandler>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match stream.route() {
            Some(route) => self
                .handlers
                .iter()
                .find(|(path, _)| path == route)
                .map(|(_, handler)| handler),
            None => self.fallback.as_ref(),
        }
    }

    /// Serve `wss://` with this TLS configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// How many opening handshakes may run at once (default
    /// [`DEFAULT_MAX_HANDSHAKES`], 1024); further TCP connections wait to be accepted.
    /// Each handshake, TLS included, is bounded by the acceptor's
    /// `Config::handshake_timeout` (10 s by default): a client that sends its request
    /// a byte at a time is closed then, whatever it does.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.limits.max_handshakes = n.max(1);
        self
    }

    /// How many connections may be open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], 10,000); past it, an upgrade request is answered
    /// `503 Service Unavailable` with a `Retry-After` header.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use std::time::Duration;
    /// let server = wsevents::Server::builder(wsevents::Acceptor::new())
    ///     .max_connections(100)
    ///     .retry_after(Duration::from_secs(30))
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// assert_eq!(server.lifecycle().limits().max_connections, 100);
    /// # Ok(()) }
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n.max(1);
        self
    }

    /// How many opening handshakes one peer address (an IPv4 address, an IPv6 /64) may
    /// have in progress at once (default [`DEFAULT_MAX_HANDSHAKES_PER_IP`], 64, whose
    /// doc gives the reasons; `usize::MAX`: no cap); past it the address's next TCP
    /// connection is closed at once, without reading it, while other addresses are
    /// served as usual. Keep it well below [`max_handshakes`](Self::max_handshakes),
    /// so that one address cannot hold every handshake slot (slowloris). Behind a
    /// reverse proxy every connection comes from the proxy's address: raise it there.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let server = wsevents::Server::builder(wsevents::Acceptor::new())
    ///     .max_handshakes_per_ip(16)
    ///     .max_connections_per_ip(100)
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// assert_eq!(server.lifecycle().limits().max_handshakes_per_ip, 16);
    /// # Ok(()) }
    /// ```
    pub fn max_handshakes_per_ip(mut self, n: usize) -> Self {
        self.limits.max_handshakes_per_ip = n.max(1);
        self
    }

    /// How many connections one peer address (an IPv4 address, an IPv6 /64) may have
    /// open at once (default [`DEFAULT_MAX_CONNECTIONS_PER_IP`], 1,000, whose doc gives
    /// the reasons; `usize::MAX`: no cap); past it an upgrade request is answered `429
    /// Too Many Requests` with `Retry-After` ([`retry_after`](Self::retry_after)).
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.limits.max_connections_per_ip = n.max(1);
        self
    }

    /// The `Retry-After` of a 503 or a 429, in whole seconds (default
    /// [`DEFAULT_RETRY_AFTER`], 5 s).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.limits.retry_after = wait;
        self
    }

    /// The send-queue rule of every event-API connection the server accepts (default
    /// [`Backpressure::default`]: 16 MiB, then `send` fails with
    /// [`Error::BufferFull`]): the same as [`Acceptor::backpressure`] on the server's
    /// acceptor (a route with an acceptor of its own takes that one's). A server that
    /// pushes to many clients usually wants the close rule, so one client that stops
    /// reading is dropped instead of holding memory. A close code that may not be sent
    /// in a close frame is [`Error::InvalidAccess`].
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, Backpressure, CloseCode, Server};
    /// let server = Server::builder(Acceptor::new())
    ///     .backpressure(Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER))?
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// # let _ = server;
    /// # Ok(()) }
    /// ```
    pub fn backpressure(mut self, backpressure: Backpressure) -> Result<Self> {
        self.acceptor = self.acceptor.backpressure(backpressure)?;
        Ok(self)
    }

    /// All the bounds at once.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, Server, ServerLimits};
    /// let limits = ServerLimits { max_connections: 500, ..ServerLimits::default() };
    /// let server = Server::builder(Acceptor::new()).limits(limits.clone()).bind("127.0.0.1:0").await?;
    /// assert_eq!(server.lifecycle().limits(), &limits);
    /// # Ok(()) }
    /// ```
    pub fn limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Shut down when `token` is cancelled (from any task), with the grace period of
    /// [`grace`](Self::grace).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let stop = wsevents::CancellationToken::new();
    /// let server = wsevents::Server::builder(wsevents::Acceptor::new())
    ///     .shutdown_token(stop.clone())
    ///     .bind("127.0.0.1:8080")
    ///     .await?;
    /// // Later, anywhere: every client gets 1001, `accept` returns `None`.
    /// stop.cancel();
    /// # Ok(()) }
    /// ```
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// The grace period of a shutdown started by the token (default
    /// [`DEFAULT_GRACE`], 10 s); [`Server::shutdown`] takes its own.
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use std::time::Duration;
    /// let stop = wsevents::CancellationToken::new();
    /// let server = wsevents::Server::builder(wsevents::Acceptor::new())
    ///     .shutdown_token(stop.clone())
    ///     .grace(Duration::from_secs(30))
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// # let _ = server;
    /// # Ok(()) }
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Listen on `addr` (with a listen backlog of [`DEFAULT_BACKLOG`](crate::DEFAULT_BACKLOG), see
    /// [`bind_listener`](crate::bind_listener)) and start accepting.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server> {
        let listener = listen::bind_listener(addr, listen::DEFAULT_BACKLOG).await?;
        Ok(self.serve(listener))
    }

    /// Start accepting on a listener the caller made.
    pub fn serve(mut self, listener: TcpListener) -> Server {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, incoming) = mpsc::channel(256);
        let incoming = Arc::new(tokio::sync::Mutex::new(incoming));
        let secure = self.tls.is_some();
        let token = self.shutdown.take().unwrap_or_default();
        let lifecycle = Lifecycle::new(self.limits.clone(), token);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::new(self),
            lifecycle.clone(),
            tx,
            incoming.clone(),
        ));
        Server {
            local_addr,
            secure,
            incoming,
            lifecycle,
            task,
        }
    }
}

/// Accept until the shutdown, each handshake in a task of its own; then shut down.
async fn accept_loop(
    listener: TcpListener,
    options: Arc<ServerBuilder>,
    lifecycle: Lifecycle,
    tx: mpsc::Sender<Accepted>,
    incoming: Arc<Incoming>,
) {
    let mut backoff = AcceptBackoff::new();
    while let Some((permit, tcp, peer)) = lifecycle.next_connection(&listener, &mut backoff).await {
        let options = options.clone();
        let tx = tx.clone();
        let tracked = lifecycle.clone();
        lifecycle.spawn(async move {
            let stop = tracked.shutdown_token().clone();
            // A handshake in progress when the shutdown comes is dropped.
            let upgraded = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                upgraded = upgrade(tcp, peer, &options, &tracked) => upgraded,
            };
            drop(permit);
            match upgraded {
                Ok(accepted) => {
                    if let Some(handler) = options.handler_for(&accepted.0) {
                        let handed = Handed {
                            secure: options.tls.is_some(),
                        };
                        return handler(accepted, handed).await;
                    }
                    tokio::select! {
                        biased;
                        // Shutting down before the caller took it: close it here.
                        () = stop.cancelled() => close_going_away(accepted).await,
                        room = tx.reserve() => match room {
                            Ok(room) => room.send(accepted),
                            Err(_) => close_going_away(accepted).await,
                        },
                    }
                }
                Err(error) => tracing::debug!(%peer, %error, "handshake failed"),
            }
        });
    }
    drop(listener);
    drop(tx);
    lifecycle.begin_shutdown();
    // Started by the caller's token (else this waits for the `Server::shutdown`
    // running): the builder's grace period.
    let (report, ()) = tokio::join!(
        lifecycle.shutdown(options.grace),
        drain(&incoming, &lifecycle)
    );
    tracing::info!(report.clean, report.forced, "server shut down");
}

/// Close the connections no one took from the server yet.
async fn drain(incoming: &Incoming, lifecycle: &Lifecycle) {
    let mut incoming = incoming.lock().await;
    incoming.close();
    while let Ok(accepted) = incoming.try_recv() {
        lifecycle.spawn(close_going_away(accepted));
    }
}

/// Close one connection with 1001 and wait for its close handshake.
async fn close_going_away((mut ws, _): Accepted) {
    if let Err(error) = ws.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON).await {
        tracing::debug!(%error, "closing on shutdown failed");
    }
}

/// TLS then the WebSocket handshake, both within the handshake timeout.
async fn upgrade(
    tcp: TcpStream,
    peer: SocketAddr,
    options: &ServerBuilder,
    lifecycle: &Lifecycle,
) -> Result<Accepted> {
    let handshake = async {
        tcp.set_nodelay(true)?;
        let io = match &options.tls {
            Some(tls) => {
                let stream = tls.accept(tcp).await.map_err(|e| {
                    crate::metrics::handshake_failed(Role::Server, "tls");
                    Error::Tls(e.to_string())
                })?;
                MaybeTlsStream::Tls(Box::new(stream.into()))
            }
            None => MaybeTlsStream::Plain(tcp),
        };
        lifecycle.accept_from(&options.acceptor, io, peer).await
    };
    match options.acceptor.config.handshake_timeout {
        Some(timeout) => tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| {
                crate::metrics::handshake_failed(Role::Server, "timeout");
                Error::Timeout(format!("the opening handshake took over {timeout:?}"))
            })?,
        None => handshake.await,
    }
}
