//! wsevents inside axum 0.8 (feature `axum`): the extractor [`WebSocketUpgrade`],
//! written as axum's own is.
//!
//! ```no_run
//! use axum::Router;
//! use axum::response::IntoResponse;
//! use axum::routing::any;
//! use wsevents::axum::WebSocketUpgrade;
//!
//! async fn chat(ws: WebSocketUpgrade) -> impl IntoResponse {
//!     ws.protocols(["chat"]).on_upgrade(|socket| async move {
//!         let echo = socket.clone();
//!         socket.on_message(move |e| {
//!             let _ = echo.send(&e.data);
//!         });
//!         socket.run().await;
//!     })
//! }
//!
//! # async fn demo() -> std::io::Result<()> {
//! // `any`, not `get`: HTTP/2 WebSockets (RFC 8441) arrive as CONNECT.
//! let app = Router::new().route("/chat", any(chat));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! The negotiation is an [`Acceptor`]'s, the same as a [`Server`](crate::Server)'s:
//! permessage-deflate with all four parameters, the subprotocol choice, the origin
//! rule, limits, the send-queue bound and the async accept hook
//! ([`Acceptor::on_request`]), which can refuse with any response (`401` with
//! `WWW-Authenticate`) or add headers (`Set-Cookie`).
//!
//! **Where the hook runs.** [`on_upgrade`](WebSocketUpgrade::on_upgrade) answers at
//! once, as axum's does, so the part of the negotiation that may await runs during the
//! extraction (axum 0.8's extractors are async): with the [`Acceptor`] the app put in
//! the request's extensions (`.layer(Extension(acceptor))`, for the whole router or
//! with `route_layer` per route), else the default one. A handler that picks its own
//! acceptor negotiates again with it: `ws.acceptor(acceptor).await` (the hook of the
//! extension's acceptor, if any, ran already). [`protocols`](WebSocketUpgrade::protocols)
//! needs no await: it only chooses the subprotocol again, unless the hook chose it.
//!
//! The request (cookies, headers) and the peer's address (with
//! `into_make_service_with_connect_info::<SocketAddr>()`) stay on the connection:
//! [`WebSocket::request`](crate::WebSocket::request),
//! [`WebSocket::peer_addr`](crate::WebSocket::peer_addr).
//!
//! Over HTTP/2, axum's `serve` enables RFC 8441's extended CONNECT when axum's
//! `http2` feature is on; route with `any` (or `on(MethodFilter::CONNECT | GET, ..)`).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;

use crate::io::server::handshake::Refusal;
use crate::io::server::hyper::{Negotiated, UpgradedStream, Upgrading, refused};
use crate::{Acceptor, Error};

/// What runs when the connection could not be handed over after the answer.
type OnFailed = Box<dyn FnOnce(Error) + Send>;

/// The extractor for a WebSocket upgrade (HTTP/1.1 `GET` + `Upgrade`, or HTTP/2
/// extended CONNECT), negotiated during the extraction (see the [module](self)).
/// Extraction never fails: a request that is not a valid upgrade, or that the policy
/// refuses, is answered by [`on_upgrade`](Self::on_upgrade) with the status it
/// deserves (400, 403, 404, 405, 426, or the hook's response), as a
/// [`Server`](crate::Server) would.
pub struct WebSocketUpgrade {
    request: http::Request<()>,
    peer_addr: Option<SocketAddr>,
    /// hyper's hand-over of the connection, moved out of the request.
    on_upgrade: Option<OnUpgrade>,
    negotiated: Result<Negotiated, Refusal>,
    on_failed: Option<OnFailed>,
}

impl fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("uri", self.request.uri())
            .field("peer_addr", &self.peer_addr)
            .field("accepted", &self.negotiated.is_ok())
            .field("protocol", &self.selected_protocol())
            .finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        // The upgrade handle moves here; the rest (hyper's `:protocol`, axum's
        // `ConnectInfo`, the app's extensions) is copied.
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let mut request = http::Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.extensions_mut() = parts.extensions.clone();
        let negotiated = match parts.extensions.get::<Acceptor>() {
            Some(acceptor) => acceptor.negotiate(request.clone(), peer_addr).await,
            None => Acceptor::new().negotiate(request.clone(), peer_addr).await,
        };
        Ok(WebSocketUpgrade {
            request,
            peer_addr,
            on_upgrade,
            negotiated,
            on_failed: None,
        })
    }
}

impl WebSocketUpgrade {
    /// Negotiate again with `acceptor`'s policy (its route, origin rule, hook,
    /// subprotocols, limits, send-queue bound), in place of the one of the extraction.
    /// Async, because the accept hook is; a refusal is what
    /// [`on_upgrade`](Self::on_upgrade) then answers.
    ///
    /// ```
    /// # use wsevents::axum::WebSocketUpgrade;
    /// use axum::response::IntoResponse;
    /// use wsevents::{Acceptor, Config, DeflateConfig};
    /// async fn upload(ws: WebSocketUpgrade) -> impl IntoResponse {
    ///     ws.acceptor(
    ///         Acceptor::new()
    ///             .protocols(&["upload"])
    ///             .deflate(Some(DeflateConfig { server_max_window_bits: Some(10), ..DeflateConfig::default() }))
    ///             .config(Config { max_message_size: 256 << 20, ..Config::default() }),
    ///     )
    ///     .await
    ///     .on_upgrade(|socket| async move { socket.run().await; })
    /// }
    /// ```
    pub async fn acceptor(mut self, acceptor: Acceptor) -> Self {
        self.negotiated = acceptor
            .negotiate(self.request.clone(), self.peer_addr)
            .await;
        self
    }

    /// The subprotocols this endpoint speaks: the first the client offers is chosen
    /// (unless the accept hook chose one). As axum's `protocols`.
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        if let Ok(negotiated) = &mut self.negotiated {
            negotiated.select_protocol(&protocols);
        }
        self
    }

    /// The subprotocol chosen, if any (`None` too when the upgrade is refused).
    pub fn selected_protocol(&self) -> Option<&str> {
        self.negotiated.as_ref().ok()?.protocol()
    }

    /// Whether the upgrade is accepted (else [`on_upgrade`](Self::on_upgrade) answers
    /// with the refusal, and its callback never runs).
    pub fn is_accepted(&self) -> bool {
        self.negotiated.is_ok()
    }

    /// The upgrade request (what the handler saw).
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// What to do when the connection cannot be handed over after the answer was
    /// sent (hyper's upgrade failed: the client went away): by default it is logged
    /// at debug level. As axum's `on_failed_upgrade`.
    ///
    /// ```
    /// # use wsevents::axum::WebSocketUpgrade;
    /// use axum::response::IntoResponse;
    /// async fn chat(ws: WebSocketUpgrade) -> impl IntoResponse {
    ///     ws.on_failed_upgrade(|error| eprintln!("the upgrade failed: {error}"))
    ///         .on_upgrade(|socket| async move { socket.run().await; })
    /// }
    /// ```
    pub fn on_failed_upgrade(mut self, callback: impl FnOnce(Error) + Send + 'static) -> Self {
        self.on_failed = Some(Box::new(callback));
        self
    }

    /// Answer: the response to return from the handler (`101`, `200` on HTTP/2, or
    /// the refusal), at once; once the client has it, `callback` gets the connection
    /// in the event API, on a task of its own. As axum's `on_upgrade`.
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(crate::WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.respond(|upgrading, on_failed| async move {
            match upgrading.websocket().await {
                Ok(socket) => callback(socket).await,
                Err(error) => failed(on_failed, error),
            }
        })
    }

    /// [`on_upgrade`](Self::on_upgrade), with the stream API.
    pub fn on_upgrade_stream<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(UpgradedStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.respond(|upgrading, on_failed| async move {
            match upgrading.stream().await {
                Ok(stream) => callback(stream).await,
                Err(error) => failed(on_failed, error),
            }
        })
    }

    /// The response, and `then` spawned with the upgrade when accepted.
    fn respond<T, Fut>(self, then: T) -> Response
    where
        T: FnOnce(Upgrading, Option<OnFailed>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let answered = self
            .negotiated
            .and_then(|negotiated| negotiated.respond(self.on_upgrade, None));
        match answered {
            Ok((response, upgrading)) => {
                tokio::spawn(then(upgrading, self.on_failed));
                response.into_response()
            }
            Err(refusal) => refused(refusal).into_response(),
        }
    }
}

/// The connection was not handed over: the app's callback, or a log line.
fn failed(on_failed: Option<OnFailed>, error: Error) {
    match on_failed {
        Some(callback) => callback(error),
        None => tracing::debug!(%error, "the upgrade did not complete"),
    }
}
