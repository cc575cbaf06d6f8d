//! wsevents inside axum 0.8 (feature `axum`): the extractor [`WebSocketUpgrade`].
//!
//! ```no_run
//! use axum::Router;
//! use axum::response::Response;
//! use axum::routing::any;
//! use wsevents::axum::WebSocketUpgrade;
//!
//! async fn chat(ws: WebSocketUpgrade) -> Response {
//!     ws.protocols(["chat"])
//!         .on_upgrade(|socket: wsevents::WebSocket| async move {
//!             let echo = socket.clone();
//!             socket.on_message(move |e| {
//!                 let _ = echo.send(&e.data);
//!             });
//!             socket.run().await;
//!         })
//!         .await
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
//! rule, limits, and the async accept hook ([`Acceptor::on_request`]), which can refuse
//! with any response (`401` with `WWW-Authenticate`) or add headers (`Set-Cookie`).
//! Give one with [`WebSocketUpgrade::acceptor`] (from the app's state, for example);
//! [`protocols`](WebSocketUpgrade::protocols) is the shortcut for the common case.
//!
//! One difference from axum's own extractor: `on_upgrade` is `async` (await it, as
//! above), because the accept hook it runs is. The request (cookies, headers) and the
//! peer's address (with `into_make_service_with_connect_info::<SocketAddr>()`) stay on
//! the connection: [`WebSocket::request`](crate::WebSocket::request),
//! [`WebSocket::peer_addr`](crate::WebSocket::peer_addr).
//!
//! Over HTTP/2, axum's `serve` enables RFC 8441's extended CONNECT when axum's
//! `http2` feature is on; route with `any` (or `on(MethodFilter::CONNECT | GET, ..)`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::Acceptor;
use crate::io::server::hyper::{UpgradedStream, Upgrading};

/// The extractor for a WebSocket upgrade (HTTP/1.1 `GET` + `Upgrade`, or HTTP/2
/// extended CONNECT). Extraction never fails: a request that is not a valid upgrade
/// is answered by [`on_upgrade`](Self::on_upgrade) with the status it deserves (400,
/// 405, 426), as a [`Server`](crate::Server) would.
#[derive(Debug)]
pub struct WebSocketUpgrade {
    request: http::Request<()>,
    peer_addr: Option<SocketAddr>,
    acceptor: Acceptor,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let mut request = http::Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        // The upgrade handle moves here; the rest (hyper's `:protocol`, axum's
        // `ConnectInfo`) is copied.
        *request.extensions_mut() = parts.extensions.clone();
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        Ok(WebSocketUpgrade {
            request,
            peer_addr,
            acceptor: Acceptor::new(),
        })
    }
}

impl WebSocketUpgrade {
    /// Negotiate with `acceptor`'s policy (replacing the default and anything set with
    /// [`protocols`](Self::protocols)).
    ///
    /// ```
    /// # use wsevents::axum::WebSocketUpgrade;
    /// use wsevents::{Acceptor, Config, DeflateConfig};
    /// fn policy(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ///     ws.acceptor(
    ///         Acceptor::new()
    ///             .protocols(&["chat"])
    ///             .deflate(Some(DeflateConfig { server_max_window_bits: Some(10), ..DeflateConfig::default() }))
    ///             .config(Config { max_message_size: 1 << 20, ..Config::default() }),
    ///     )
    /// }
    /// ```
    pub fn acceptor(mut self, acceptor: Acceptor) -> Self {
        self.acceptor = acceptor;
        self
    }

    /// The subprotocols this endpoint speaks: the first the client offers is chosen.
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        self.acceptor = self.acceptor.protocols(&protocols);
        self
    }

    /// The upgrade request (what the handler saw).
    pub fn request(&self) -> &http::Request<()> {
        &self.request
    }

    /// Negotiate and answer: the response to return from the handler (`101`, `200` on
    /// HTTP/2, or the refusal), and, once the client has it, `callback` with the
    /// connection in the event API, on a task of its own.
    pub async fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(crate::WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.respond(|upgrading| async move {
            match upgrading.websocket().await {
                Ok(socket) => callback(socket).await,
                Err(error) => tracing::debug!(%error, "the upgrade did not complete"),
            }
        })
        .await
    }

    /// [`on_upgrade`](Self::on_upgrade), with the stream API.
    pub async fn on_upgrade_stream<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(UpgradedStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.respond(|upgrading| async move {
            match upgrading.stream().await {
                Ok(stream) => callback(stream).await,
                Err(error) => tracing::debug!(%error, "the upgrade did not complete"),
            }
        })
        .await
    }

    /// Negotiate; the response, and `then` spawned with the upgrade when accepted.
    async fn respond<T, Fut>(self, then: T) -> Response
    where
        T: FnOnce(Upgrading) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self
            .acceptor
            .upgrade_from(self.request, self.peer_addr)
            .await
        {
            Ok((response, upgrading)) => {
                tokio::spawn(then(upgrading));
                response.into_response()
            }
            Err(refusal) => refusal.into_response(),
        }
    }
}
