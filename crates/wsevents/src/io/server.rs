//! Accepting: the server side of the opening handshake on any transport, and a
//! [`Server`] that listens on TCP (optionally TLS), upgrades each connection in its own
//! task and hands out the open ones.
//!
//! The policy for upgrade requests, shared by all connections of a server, lives in an
//! [`Acceptor`]: which paths are served (others get 404), which subprotocols are spoken
//! (the first the client lists that the server supports is chosen), which origins are
//! allowed (others get 403), any further check of the caller's, and the handshake
//! timeout (from [`Config::handshake_timeout`]). An acceptor also runs on a stream some
//! other server accepted (hyper/axum upgrades: see the `axum` example).
//!
//! Lifecycle: one task accepts TCP connections, backing off when accept fails (out of
//! file descriptors); a semaphore bounds how many handshakes run at once; a handshake
//! that fails is logged and dropped, never handed out; dropping the [`Server`] stops
//! accepting.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use wsevents_proto::deflate::DeflateConfig;
use wsevents_proto::handshake::Request;
use wsevents_proto::{Config, Connection, Event};

use super::extensions::DeflateChoice;

use crate::api::error::{Error, Result};
use crate::io::driver::Driver;
use crate::io::stream::WebSocketStream;
use crate::io::tls::MaybeTlsStream;

type OriginRule = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;
type RequestRule = Arc<dyn Fn(&Request) -> std::result::Result<(), (u16, String)> + Send + Sync>;

/// How a server answers upgrade requests.
///
/// ```
/// use wsevents::Acceptor;
/// let acceptor = Acceptor::new()
///     .route("/chat")
///     .protocols(&["chat", "superchat"])
///     .allow_origin(|origin| origin == Some("https://example.com"));
/// ```
#[derive(Clone, Default)]
pub struct Acceptor {
    config: Config,
    deflate: DeflateChoice,
    routes: Vec<String>,
    protocols: Vec<String>,
    origin: Option<OriginRule>,
    check: Option<RequestRule>,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("config", &self.config)
            .field("deflate", &self.deflate)
            .field("routes", &self.routes)
            .field("protocols", &self.protocols)
            .field("origin_rule", &self.origin.is_some())
            .field("check", &self.check.is_some())
            .finish()
    }
}

impl Acceptor {
    /// Accept every path, no subprotocol, any origin, default limits.
    pub fn new() -> Self {
        Acceptor::default()
    }

    /// Serve this path (repeatable); once any route is set, other paths get 404.
    pub fn route(mut self, path: impl Into<String>) -> Self {
        self.routes.push(path.into());
        self
    }

    /// The subprotocols this server speaks.
    pub fn protocols<S: AsRef<str>>(mut self, protocols: &[S]) -> Self {
        self.protocols = protocols.iter().map(|p| p.as_ref().to_owned()).collect();
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

    /// A further check of each request: `Err((status, body))` refuses it.
    pub fn check(
        mut self,
        rule: impl Fn(&Request) -> std::result::Result<(), (u16, String)> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Arc::new(rule));
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

    /// The protocol configuration (without the extensions added per connection).
    pub fn protocol_config(&self) -> &Config {
        &self.config
    }

    /// Decide on a request: `Ok(protocol)` to accept, `Err((status, body))` to refuse.
    fn decide(&self, request: &Request) -> std::result::Result<Option<String>, (u16, String)> {
        if !self.routes.is_empty() && !self.routes.iter().any(|r| r == request.path()) {
            return Err((404, format!("no WebSocket endpoint at {}", request.path())));
        }
        if let Some(rule) = &self.origin {
            if !rule(request.origin.as_deref()) {
                return Err((403, "origin not allowed".into()));
            }
        }
        if let Some(check) = &self.check {
            check(request)?;
        }
        let supported: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
        Ok(request.select_protocol(&supported).map(str::to_owned))
    }

    /// Run the server side of the opening handshake on `io`. A refused request is
    /// answered with its HTTP status and returned as [`Error::Refused`].
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> Result<(WebSocketStream<S>, Request)> {
        let now = tokio::time::Instant::now().into_std();
        let mut conn = Connection::server(self.deflate.apply(&self.config), now);
        let mut driver = Driver::new(io);
        let mut accepted = None;
        loop {
            match std::future::poll_fn(|cx| driver.poll_event(&mut conn, cx)).await {
                Some(Event::Request(request)) => match self.decide(&request) {
                    Ok(protocol) => {
                        conn.accept(&request, protocol.as_deref(), &self.headers)?;
                        accepted = Some(request);
                    }
                    Err((status, body)) => {
                        tracing::debug!(status, %body, path = request.path(), "upgrade refused");
                        conn.reject(status, &body, &[])?;
                        // Flush the response and tear the transport down.
                        while std::future::poll_fn(|cx| driver.poll_event(&mut conn, cx))
                            .await
                            .is_some()
                        {}
                        return Err(Error::Refused(status));
                    }
                },
                Some(Event::Open) => {
                    let request = accepted.take().ok_or(Error::Closed)?;
                    std::future::poll_fn(|cx| driver.poll_write(&mut conn, cx)).await?;
                    return Ok((WebSocketStream::new(driver, conn), *request));
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
pub type Accepted = (WebSocketStream<MaybeTlsStream>, Request);

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
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    secure: bool,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    task: JoinHandle<()>,
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
            max_handshakes: 1024,
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
    ///             let _ = echo.send(e.data.as_bytes().to_vec());
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

    /// The next open connection as a [`WebSocket`](crate::WebSocket) with the event
    /// API (already open: its `open` event is the first its `run` dispatches); `None`
    /// once the server stopped.
    pub async fn accept(&self) -> Option<crate::WebSocket> {
        let (stream, request) = self.accept_stream().await?;
        let scheme = if self.secure { "wss" } else { "ws" };
        let url = format!("{scheme}://{}{}", request.host, request.target);
        Some(crate::WebSocket::accepted(stream, url))
    }

    /// The next open connection as a [`WebSocketStream`], with the request that
    /// opened it; `None` once the server stopped.
    pub async fn accept_stream(&self) -> Option<Accepted> {
        self.incoming.lock().await.recv().await
    }
}

/// Options for a [`Server`].
pub struct ServerBuilder {
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_handshakes: usize,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("acceptor", &self.acceptor)
            .field("tls", &self.tls.is_some())
            .field("max_handshakes", &self.max_handshakes)
            .finish()
    }
}

impl ServerBuilder {
    /// Serve `wss://` with this TLS configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// How many opening handshakes may run at once (default 1024); further TCP
    /// connections wait to be accepted.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Listen on `addr` and start accepting.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.serve(listener))
    }

    /// Start accepting on a listener the caller made.
    pub fn serve(self, listener: TcpListener) -> Server {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, incoming) = mpsc::channel(256);
        let secure = self.tls.is_some();
        let task = tokio::spawn(accept_loop(listener, Arc::new(self), tx));
        Server {
            local_addr,
            secure,
            incoming: tokio::sync::Mutex::new(incoming),
            task,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    options: Arc<ServerBuilder>,
    tx: mpsc::Sender<Accepted>,
) {
    let handshakes = Arc::new(Semaphore::new(options.max_handshakes));
    let mut backoff = Duration::from_millis(1);
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(1);
                accepted
            }
            Err(error) => {
                // Out of file descriptors and the like: wait, then try again.
                tracing::warn!(%error, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let options = options.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = upgrade(tcp, &options).await;
            drop(permit);
            match result {
                Ok(accepted) => {
                    let _ = tx.send(accepted).await;
                }
                Err(error) => tracing::debug!(%peer, %error, "handshake failed"),
            }
        });
    }
}

async fn upgrade(tcp: TcpStream, options: &ServerBuilder) -> Result<Accepted> {
    tcp.set_nodelay(true)?;
    let io = match &options.tls {
        Some(tls) => {
            let timeout = options
                .acceptor
                .config
                .handshake_timeout
                .unwrap_or(Duration::from_secs(10));
            let stream = tokio::time::timeout(timeout, tls.accept(tcp))
                .await
                .map_err(|_| Error::Timeout("the TLS handshake".into()))?
                .map_err(|e| Error::Tls(e.to_string()))?;
            MaybeTlsStream::Tls(Box::new(stream.into()))
        }
        None => MaybeTlsStream::Plain(tcp),
    };
    options.acceptor.accept(io).await
}
