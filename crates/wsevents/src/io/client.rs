//! Connecting: URL → TCP (with `TCP_NODELAY`), directly or through a proxy's tunnel
//! (`io/proxy/`) → TLS for `wss://` → the opening handshake → an open
//! [`WebSocketStream`].
//!
//! Each step has a typed failure ([`Error::Syntax`] for the URL, [`Error::Io`] for TCP,
//! [`Error::Proxy`] for the proxy's hop, [`Error::Tls`], [`Error::Handshake`]) and the
//! whole of it is bounded by the connect timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wsevents_proto::deflate::DeflateConfig;
use wsevents_proto::handshake::ClientRequest;
use wsevents_proto::{Config, Connection, Event};

use super::extensions::DeflateChoice;

use crate::backpressure::Backpressure;
use crate::error::{Error, Result};
use crate::io::driver::Driver;
use crate::io::proxy::{Proxy, Tunnel, proxy_for};
use crate::io::stream::WebSocketStream;
use crate::io::tls::{self, MaybeTlsStream};
use crate::io::url::{Target, check_protocols};

/// Connect to a `ws://` or `wss://` URL with the default options.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// let ws = wsevents::connect("ws://127.0.0.1:8080/ws").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<WebSocketStream<MaybeTlsStream>> {
    ClientBuilder::new(url)?.connect().await
}

/// Options for a client connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use std::time::Duration;
/// let ws = wsevents::ClientBuilder::new("wss://example.com/chat")?
///     .protocols(&["chat", "superchat"])?
///     .header("Authorization", "Bearer token")
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// println!("protocol: {:?}", ws.protocol());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    target: Target,
    protocols: Vec<String>,
    headers: Vec<(String, String)>,
    origin: Option<String>,
    config: Config,
    deflate: DeflateChoice,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_certificate: Option<Arc<rustls::sign::CertifiedKey>>,
    proxy: ProxyChoice,
    connect_timeout: Duration,
    backpressure: Backpressure,
}

/// Where the proxy comes from.
#[derive(Debug, Clone)]
enum ProxyChoice {
    /// The environment's, read at connect time ([`Proxy::from_env`]).
    FromEnv,
    /// None: connect directly.
    Direct,
    /// This one, for every URL.
    Explicit(Proxy),
}

impl ClientBuilder {
    /// Options for `url`; fails at once with [`Error::Syntax`] for a bad URL.
    pub fn new(url: &str) -> Result<Self> {
        Ok(ClientBuilder {
            target: Target::parse(url)?,
            protocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            config: Config::default(),
            deflate: DeflateChoice::default(),
            tls: None,
            client_certificate: None,
            proxy: ProxyChoice::FromEnv,
            connect_timeout: Duration::from_secs(10),
            backpressure: Backpressure::default(),
        })
    }

    /// The URL, normalized (`http` → `ws`).
    pub fn url(&self) -> &url::Url {
        &self.target.url
    }

    /// Where the builder connects to.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The same options, aimed at another URL (the reconnecting client's other
    /// servers). Headers, origin, TLS, proxy and limits stay as they are.
    pub(crate) fn retarget(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// A WebSocket that reconnects by itself, with these options for every
    /// connection and `options` for when and where to reconnect
    /// ([`ReconnectingWebSocket`](crate::ReconnectingWebSocket)). Nothing is connected
    /// until it is driven ([`run`](crate::ReconnectingWebSocket::run)).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use std::time::Duration;
    /// use wsevents::{ClientBuilder, Reconnect};
    /// let ws = ClientBuilder::new("ws://127.0.0.1:8080/feed")?.reconnect(
    ///     Reconnect::new()
    ///         .max_delay(Duration::from_secs(10))
    ///         .servers(&["ws://127.0.0.2:8080/feed"])?,
    /// );
    /// ws.on_message(|e| println!("{:?}", e.data));
    /// let last = ws.run().await;
    /// println!("gave up: {}", last.code);
    /// # Ok(()) }
    /// ```
    pub fn reconnect(
        self,
        options: crate::api::reconnecting::Reconnect,
    ) -> crate::api::reconnecting::ReconnectingWebSocket {
        crate::api::reconnecting::ReconnectingWebSocket::new(self, options)
    }

    /// Offer these subprotocols; fails with [`Error::Syntax`] for a non-token or a
    /// repeated one.
    pub fn protocols<S: AsRef<str>>(mut self, protocols: &[S]) -> Result<Self> {
        self.protocols = check_protocols(protocols)?;
        Ok(self)
    }

    /// Add a header to the upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Send an `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Protocol limits and switches.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// permessage-deflate (RFC 7692): offered by default with
    /// [`DeflateConfig::default()`](crate::DeflateConfig), as browsers do; `None` does
    /// not offer it.
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// use wsevents::{ClientBuilder, DeflateConfig};
    /// let plain = ClientBuilder::new("ws://127.0.0.1:9000/")?.deflate(None);
    /// let small = ClientBuilder::new("ws://127.0.0.1:9000/")?.deflate(Some(DeflateConfig {
    ///     server_max_window_bits: Some(10),
    ///     ..DeflateConfig::default()
    /// }));
    /// # let _ = (plain, small); Ok(()) }
    /// ```
    pub fn deflate(mut self, config: Option<DeflateConfig>) -> Self {
        self.deflate = DeflateChoice::new(config);
        self
    }

    /// The TLS configuration for `wss://` (default: the Mozilla roots).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Present this certificate (a PEM chain, leaf first, and its PEM private key) to
    /// `wss://` servers that ask for one (mutual TLS), with the roots of
    /// [`tls_config`](Self::tls_config) or the default ones. Fails at once with
    /// [`Error::Tls`] for bad PEM or a key that does not match the certificate. It is
    /// not presented to an `https://` proxy.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let cert = std::fs::read("client.pem")?;
    /// let key = std::fs::read("client.key")?;
    /// let ws = wsevents::ClientBuilder::new("wss://example.com/")?
    ///     .client_certificate(&cert, &key)?
    ///     .connect()
    ///     .await?;
    /// # let _ = ws; Ok(()) }
    /// ```
    pub fn client_certificate(mut self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        self.client_certificate = Some(tls::client_certificate(cert_chain_pem, key_pem)?);
        Ok(self)
    }

    /// Connect through `proxy`, whatever the URL and the environment say.
    ///
    /// By default the proxy comes from the environment, as curl and python-websockets
    /// take it: `HTTPS_PROXY` for `wss://`, `HTTP_PROXY` for `ws://`, `ALL_PROXY`,
    /// except for the hosts `NO_PROXY` lists (the rules: [`Proxy::from_vars`]).
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// use wsevents::{ClientBuilder, Proxy};
    /// let builder = ClientBuilder::new("wss://example.com/")?
    ///     .proxy(Proxy::parse("socks5h://user:pw@127.0.0.1:1080")?);
    /// # let _ = builder; Ok(()) }
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyChoice::Explicit(proxy);
        self
    }

    /// Connect directly: no proxy, whatever the environment says.
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// let builder = wsevents::ClientBuilder::new("ws://127.0.0.1:9000/")?.no_proxy();
    /// # let _ = builder; Ok(()) }
    /// ```
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxyChoice::Direct;
        self
    }

    /// How long TCP connect (to the server or the proxy), the proxy's exchange, TLS
    /// and the opening handshake may take together (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The bound on the send queue of a [`WebSocket`](crate::WebSocket) made with
    /// [`WebSocket::connecting`](crate::WebSocket::connecting), and what `send` does at
    /// it (default [`Backpressure::default()`]: 16 MiB, then
    /// [`Error::BufferFull`]). [`Error::InvalidAccess`] for a
    /// [`WhenFull::Close`](crate::WhenFull::Close) code that may not be sent in a close
    /// frame. The stream API ([`connect`](Self::connect)) does not use it: its `Sink`
    /// waits instead, at [`WebSocketStream::set_write_limit`].
    ///
    /// ```
    /// # fn main() -> wsevents::Result<()> {
    /// use wsevents::{Backpressure, ClientBuilder, CloseCode, Error};
    /// let builder = ClientBuilder::new("ws://127.0.0.1:9000/")?
    ///     .backpressure(Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER))?;
    /// let refused = ClientBuilder::new("ws://127.0.0.1:9000/")?
    ///     .backpressure(Backpressure::close(1 << 20, CloseCode::ABNORMAL));
    /// assert!(matches!(refused, Err(Error::InvalidAccess(_))));
    /// # let _ = builder; Ok(()) }
    /// ```
    pub fn backpressure(mut self, backpressure: Backpressure) -> Result<Self> {
        self.backpressure = backpressure.checked()?;
        Ok(self)
    }

    /// Connect and complete the opening handshake.
    pub async fn connect(self) -> Result<WebSocketStream<MaybeTlsStream>> {
        let timeout = self.connect_timeout;
        let via = match self.chosen_proxy() {
            Ok(Some(proxy)) => format!(" through the proxy {proxy}"),
            _ => String::new(),
        };
        tokio::time::timeout(timeout, self.connect_now())
            .await
            .map_err(|_| Error::Timeout(format!("connecting{via} took over {timeout:?}")))?
    }

    async fn connect_now(self) -> Result<WebSocketStream<MaybeTlsStream>> {
        let io = self.open_transport().await?;
        self.handshake(io).await
    }

    /// TCP (through the proxy, if any) and TLS for `wss://`, without the WebSocket
    /// handshake.
    pub(crate) async fn open_transport(&self) -> Result<MaybeTlsStream> {
        let tunnel = match self.chosen_proxy()? {
            None => Tunnel::Tcp(self.connect_tcp().await?),
            Some(proxy) => proxy.tunnel(&self.target, || self.roots_config()).await?,
        };
        if !self.target.secure {
            return Ok(match tunnel {
                Tunnel::Tcp(tcp) => MaybeTlsStream::Plain(tcp),
                Tunnel::Tls(tls) => MaybeTlsStream::Tls(Box::new((*tls).into())),
            });
        }
        let mut config = self.roots_config()?;
        if let Some(certified) = &self.client_certificate {
            config = tls::with_client_certificate(&config, certified.clone());
        }
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = self.target.server_name()?;
        Ok(match tunnel {
            Tunnel::Tcp(tcp) => {
                let tls = connector.connect(name, tcp).await.map_err(tls_error)?;
                MaybeTlsStream::Tls(Box::new(tls.into()))
            }
            Tunnel::Tls(proxy_tls) => {
                let tls = connector
                    .connect(name, *proxy_tls)
                    .await
                    .map_err(tls_error)?;
                MaybeTlsStream::TlsInTls(Box::new(tls))
            }
        })
    }

    /// The proxy to connect through, if any.
    fn chosen_proxy(&self) -> Result<Option<Proxy>> {
        match &self.proxy {
            ProxyChoice::FromEnv => proxy_for(&self.target, |name| std::env::var(name).ok()),
            ProxyChoice::Direct => Ok(None),
            ProxyChoice::Explicit(proxy) => Ok(Some(proxy.clone())),
        }
    }

    /// The TLS configuration without the client certificate.
    fn roots_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        match &self.tls {
            Some(config) => Ok(config.clone()),
            None => tls::webpki_client_config(),
        }
    }

    /// The upgrade request these options make.
    pub(crate) fn client_request(&self) -> ClientRequest {
        let mut request = ClientRequest::new(
            self.target.host_header.clone(),
            self.target.resource.clone(),
        )
        .protocols(self.protocols.iter().cloned());
        if let Some(origin) = &self.origin {
            request = request.origin(origin.clone());
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        request
    }

    /// The protocol configuration, extensions included.
    pub(crate) fn protocol_config(&self) -> Config {
        self.deflate.apply(&self.config)
    }

    /// The connect timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The send-queue bound of the event API.
    pub(crate) fn backpressure_rule(&self) -> Backpressure {
        self.backpressure
    }

    async fn connect_tcp(&self) -> Result<TcpStream> {
        let mut last_error = None;
        for addr in self.target.resolve().await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    return Ok(tcp);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(Error::Io(last_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host resolved to no address",
            )
        })))
    }

    /// Run the opening handshake over an already connected transport.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        io: S,
    ) -> Result<WebSocketStream<S>> {
        let request = self.client_request();
        let now = tokio::time::Instant::now().into_std();
        let mut conn = Connection::client(request, self.protocol_config(), now);
        let mut driver = Driver::new(io);
        let opened = std::future::poll_fn(|cx| driver.poll_event(&mut conn, cx)).await;
        match opened {
            Some(Event::Open) => Ok(WebSocketStream::new(driver, conn)),
            Some(Event::Error(error)) => Err(match (driver.take_io_error(), error) {
                (Some(io), wsevents_proto::Error::UnexpectedEof) => io.into(),
                (_, error) => error.into(),
            }),
            _ => Err(Error::Closed),
        }
    }
}

/// A failed TLS handshake with the server: [`Error::Tls`], whether rustls or the
/// transport under it failed.
fn tls_error(error: std::io::Error) -> Error {
    match Error::from(error) {
        Error::Io(io) => Error::Tls(io.to_string()),
        other => other,
    }
}
