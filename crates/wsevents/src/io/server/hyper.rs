//! Upgrades inside a hyper 1.x server (feature `hyper`): HTTP/1.1 (`GET` + `Upgrade:
//! websocket`, answered `101`) and HTTP/2's extended CONNECT (RFC 8441: `CONNECT` with
//! `:protocol websocket`, answered `200`, on a server built with
//! `enable_connect_protocol()`).
//!
//! ```text
//!  http::Request ─► check (the core's rules) ─► Acceptor policy: route, origin,
//!                   hook, subprotocol ─► negotiate extensions ─► http::Response
//!                                                                (101 / 200, or a refusal)
//!  hyper writes it, then hands over the connection ─► Upgrading ─► WebSocketStream / WebSocket
//! ```
//!
//! The negotiation is the one a [`Server`](crate::Server) runs, from the same
//! [`Acceptor`]: permessage-deflate with all four parameters, the subprotocol choice,
//! the origin rule, the async accept hook, per-route configuration and limits. What
//! stays hyper's: its HTTP limits (head size, headers) and TLS. The connection cap and
//! the graceful shutdown come with [`Lifecycle::upgrade`], as for a
//! [`Server`](crate::Server).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;

use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{Method, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use wsevents_proto::handshake::{self as core, HandshakeError};
use wsevents_proto::{Connection, Role};

use super::Acceptor;
use super::handshake::{Refusal, ServerHandshake};
use super::lifecycle::{Lifecycle, Slot, Tracked};
use crate::error::{Error, Result};
use crate::io::driver::Driver;
use crate::io::stream::WebSocketStream;

/// The transport of an upgraded hyper connection, as tokio I/O.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// A connection upgraded inside hyper, with the stream API.
pub type UpgradedStream = WebSocketStream<Upgraded>;

impl Acceptor {
    /// Answer an upgrade request that a hyper server received (HTTP/1.1, or HTTP/2's
    /// extended CONNECT), with this acceptor's policy: `Ok` with the response to send
    /// (`101`, or `200` on HTTP/2) and the connection to come, [`Upgrading`]; `Err`
    /// with the refusal to send (a request that is not a valid upgrade gets the status
    /// the core gives it, 400, 405 or 426; the route, the origin rule and the accept
    /// hook give theirs).
    ///
    /// The request's body is not read (an upgrade request has none). The peer's
    /// address is not known to hyper's request: pass it with
    /// [`upgrade_from`](Self::upgrade_from).
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::body::Incoming;
    /// use wsevents::Acceptor;
    ///
    /// async fn handle(request: http::Request<Incoming>) -> Result<http::Response<String>, Infallible> {
    ///     let acceptor = Acceptor::new().protocols(&["chat"]);
    ///     Ok(match acceptor.upgrade(request).await {
    ///         Ok((response, upgrading)) => {
    ///             tokio::spawn(async move {
    ///                 if let Ok(ws) = upgrading.websocket().await {
    ///                     let echo = ws.clone();
    ///                     ws.on_message(move |e| { let _ = echo.send(&e.data); });
    ///                     ws.run().await;
    ///                 }
    ///             });
    ///             response
    ///         }
    ///         Err(refusal) => refusal,
    ///     })
    /// }
    /// ```
    ///
    /// Serve it with upgrades on, and with RFC 8441 for HTTP/2:
    ///
    /// ```no_run
    /// # async fn handle(r: http::Request<hyper::body::Incoming>) -> Result<http::Response<String>, std::convert::Infallible> { unimplemented!() }
    /// # async fn demo(tcp: tokio::net::TcpStream) {
    /// let io = hyper_util::rt::TokioIo::new(tcp);
    /// let http1 = hyper::server::conn::http1::Builder::new()
    ///     .serve_connection(io, hyper::service::service_fn(handle))
    ///     .with_upgrades();
    /// # let _ = http1.await;
    /// // HTTP/2: hyper::server::conn::http2::Builder::new(executor)
    /// //     .enable_connect_protocol()
    /// //     .serve_connection(io, service_fn(handle))
    /// # }
    /// ```
    pub async fn upgrade<B>(
        &self,
        request: http::Request<B>,
    ) -> std::result::Result<(http::Response<String>, Upgrading), http::Response<String>> {
        self.upgrade_from(request, None).await
    }

    /// [`upgrade`](Self::upgrade), from a peer at `peer_addr` (the accept hook and
    /// the connection's `peer_addr()` see it).
    pub async fn upgrade_from<B>(
        &self,
        request: http::Request<B>,
        peer_addr: Option<SocketAddr>,
    ) -> std::result::Result<(http::Response<String>, Upgrading), http::Response<String>> {
        self.upgrade_inner(request, peer_addr, None)
            .await
            .map_err(refused)
    }

    pub(crate) async fn upgrade_inner<B>(
        &self,
        request: http::Request<B>,
        peer_addr: Option<SocketAddr>,
        lifecycle: Option<&Lifecycle>,
    ) -> std::result::Result<(http::Response<String>, Upgrading), Refusal> {
        let (mut parts, _body) = request.into_parts();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        let request = http::Request::from_parts(parts, ());
        if on_upgrade.is_none() {
            // Not an upgrade at all gets the core's status; else, before the policy
            // (and its hook) runs, the server's misconfiguration.
            check(&request).map_err(refusal_of)?;
            return Err(no_hand_over());
        }
        let negotiated = self.negotiate(request, peer_addr).await?;
        negotiated.respond(on_upgrade, lifecycle)
    }

    /// The part of an upgrade that may await: the core's checks on the request, then
    /// this acceptor's policy (route, origin, the accept hook, the subprotocol). The
    /// answer itself ([`Negotiated::respond`]) needs no await, so an axum extractor
    /// negotiates and its handler answers at once, as axum's own does.
    pub(crate) async fn negotiate(
        &self,
        request: http::Request<()>,
        peer_addr: Option<SocketAddr>,
    ) -> std::result::Result<Negotiated, Refusal> {
        let core_request = check(&request).map_err(refusal_of)?;
        let answer = self.decide(&core_request, &request, peer_addr).await?;
        Ok(Negotiated {
            http2: request.version() == Version::HTTP_2,
            config: answer.route.connection_config(),
            protocol: answer.protocol,
            protocol_by_hook: answer.protocol_by_hook,
            headers: answer.headers,
            handshake: ServerHandshake::from_http(request, peer_addr)
                .with_route(answer.matched)
                .with_limits(answer.route.limits()),
            core_request,
        })
    }
}

/// An upgrade request that passed the checks and the policy, before its answer.
pub(crate) struct Negotiated {
    core_request: core::Request,
    /// An HTTP/2 extended CONNECT (answered `200`), else HTTP/1.1 (`101`).
    http2: bool,
    /// The configuration of the acceptor that serves the route.
    config: wsevents_proto::Config,
    protocol: Option<String>,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    protocol_by_hook: bool,
    headers: Vec<(String, String)>,
    handshake: ServerHandshake,
}

impl Negotiated {
    /// The subprotocol chosen.
    #[cfg(feature = "axum")]
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Choose the subprotocol again among `supported` (the first the client offers),
    /// unless the accept hook chose one.
    #[cfg(feature = "axum")]
    pub(crate) fn select_protocol(&mut self, supported: &[String]) {
        if !self.protocol_by_hook {
            let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
            self.protocol = self
                .core_request
                .select_protocol(&supported)
                .map(str::to_owned);
        }
    }

    /// The answer (`101`, or `200` on HTTP/2) and the connection to come, admitted by
    /// `lifecycle` when there is one (else `503`); `on_upgrade` is hyper's hand-over of
    /// the connection (without it, `500`: the server does not hand over connections).
    pub(crate) fn respond(
        self,
        on_upgrade: Option<OnUpgrade>,
        lifecycle: Option<&Lifecycle>,
    ) -> std::result::Result<(http::Response<String>, Upgrading), Refusal> {
        let on_upgrade = on_upgrade.ok_or_else(no_hand_over)?;
        let slot = match lifecycle {
            None => None,
            Some(lifecycle) => match lifecycle.admit(self.handshake.peer_addr) {
                Ok(slot) => Some(slot),
                Err(why) => {
                    let (status, body, (name, value)) = lifecycle.refuse(why);
                    let mut refusal = Refusal::new(status, body);
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        refusal.headers.insert(name, value);
                    }
                    return Err(refusal);
                }
            },
        };
        let http2 = self.http2;
        let now = tokio::time::Instant::now().into_std();
        let (conn, extensions) = Connection::accepted(
            self.config,
            &self.core_request,
            self.protocol.as_deref(),
            now,
        );
        let mut response = http::Response::new(String::new());
        *response.status_mut() = if http2 {
            StatusCode::OK
        } else {
            StatusCode::SWITCHING_PROTOCOLS
        };
        let headers = response.headers_mut();
        if !http2 {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                SEC_WEBSOCKET_ACCEPT,
                header_value(&core::accept_key(self.core_request.key.as_bytes()))?,
            );
        }
        if let Some(protocol) = &self.protocol {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, header_value(protocol)?);
        }
        if !extensions.is_empty() {
            let answers: Vec<String> = extensions.iter().map(ToString::to_string).collect();
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, header_value(&answers.join(", "))?);
        }
        for (name, value) in &self.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "an invalid header name")
            })?;
            headers.append(name, header_value(value)?);
        }
        let upgrading = Upgrading {
            on_upgrade,
            conn,
            slot,
            handshake: self.handshake,
        };
        Ok((response, upgrading))
    }
}

impl Lifecycle {
    /// [`Acceptor::upgrade_from`] under this lifecycle: past the connection cap, or once
    /// the shutdown has begun, the answer is `503` with `Retry-After` (and counted in
    /// [`refused`](Lifecycle::refused)); an accepted connection counts under the cap
    /// and closes with 1001 on shutdown, after what is queued for it, like a
    /// [`Server`](crate::Server)'s.
    ///
    /// ```no_run
    /// # async fn demo(lifecycle: wsevents::Lifecycle, acceptor: wsevents::Acceptor, request: http::Request<hyper::body::Incoming>) -> http::Response<String> {
    /// match lifecycle.upgrade(&acceptor, request, None).await {
    ///     Ok((response, upgrading)) => {
    ///         lifecycle.spawn(async move {
    ///             if let Ok(ws) = upgrading.websocket().await {
    ///                 ws.run().await;
    ///             }
    ///         });
    ///         response // 101: send it
    ///     }
    ///     Err(refusal) => refusal, // 503 + Retry-After past the cap, or the acceptor's refusal
    /// }
    /// # }
    /// ```
    pub async fn upgrade<B>(
        &self,
        acceptor: &Acceptor,
        request: http::Request<B>,
        peer_addr: Option<SocketAddr>,
    ) -> std::result::Result<(http::Response<String>, Upgrading), http::Response<String>> {
        acceptor
            .upgrade_inner(request, peer_addr, Some(self))
            .await
            .map_err(refused)
    }
}

/// The core's checks on a request hyper parsed: an HTTP/1.1 upgrade, or an HTTP/2
/// extended CONNECT with `:protocol websocket`.
fn check(parts: &http::Request<()>) -> std::result::Result<core::Request, HandshakeError> {
    let headers = parts
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let target = parts.uri().path_and_query().map_or("/", |p| p.as_str());
    match parts.version() {
        Version::HTTP_2 => {
            if parts.method() != Method::CONNECT {
                return Err(HandshakeError::MethodNotAllowed(parts.method().to_string()));
            }
            let protocol = parts.extensions().get::<hyper::ext::Protocol>();
            if !protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket")) {
                return Err(HandshakeError::NotWebSocketUpgrade);
            }
            let authority = parts.uri().authority().map_or("", |a| a.as_str());
            core::check_extended_connect(authority, target, headers)
        }
        Version::HTTP_11 => core::check_request(parts.method().as_str(), target, headers),
        _ => Err(HandshakeError::UnsupportedHttpVersion),
    }
}

/// The refusal of a server that does not hand over its connections.
fn no_hand_over() -> Refusal {
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "this HTTP server does not hand over connections (hyper: `with_upgrades()`, \
         and `enable_connect_protocol()` for HTTP/2)",
    )
}

/// A refusal as the response to send, counted in the metrics.
pub(crate) fn refused(refusal: Refusal) -> http::Response<String> {
    crate::metrics::handshake_refused(refusal.status);
    refusal.into_response()
}

/// The refusal for a request the core's checks turned down.
fn refusal_of(error: HandshakeError) -> Refusal {
    let status = error
        .status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let mut refusal = Refusal::new(status, format!("{error}\n"));
    match status {
        StatusCode::UPGRADE_REQUIRED => {
            refusal
                .headers
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            refusal.headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, CONNECT"),
            );
        }
        _ => {}
    }
    refusal
}

fn header_value(value: &str) -> std::result::Result<HeaderValue, Refusal> {
    HeaderValue::from_str(value).map_err(|_| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "an invalid response header value",
        )
    })
}

/// An accepted upgrade whose response is on its way: awaiting it (or
/// [`stream`](Self::stream), [`websocket`](Self::websocket)) waits for hyper to send
/// the response and hand the connection over, then gives it as an open WebSocket
/// with what was negotiated.
pub struct Upgrading {
    on_upgrade: OnUpgrade,
    conn: Connection,
    /// Admitted by a [`Lifecycle`]: the connection counts under its cap and closes
    /// with its shutdown.
    slot: Option<Slot>,
    handshake: ServerHandshake,
}

impl std::fmt::Debug for Upgrading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrading")
            .field("handshake", &self.handshake)
            .field("protocol", &self.conn.protocol())
            .field("extensions", &self.conn.extensions())
            .finish()
    }
}

impl Upgrading {
    /// The upgrade request.
    pub fn request(&self) -> http::Request<()> {
        self.handshake.request()
    }

    /// The subprotocol chosen.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.protocol()
    }

    /// The extensions negotiated, as the response says them.
    pub fn extensions(&self) -> &str {
        self.conn.extensions()
    }

    /// The request kept for the connection (the event API's URL comes from it).
    pub(crate) fn handshake(&self) -> &ServerHandshake {
        &self.handshake
    }

    /// The connection with the stream API, once hyper hands it over.
    pub async fn stream(self) -> Result<UpgradedStream> {
        let upgraded = self
            .on_upgrade
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let mut driver = Driver::opened(TokioIo::new(upgraded), Role::Server);
        if let Some(slot) = self.slot {
            driver.track(Tracked::new(slot));
        }
        let write_limit = self.handshake.limits.write_limit;
        let mut stream = WebSocketStream::new(driver, self.conn).with_handshake(self.handshake);
        stream.set_write_limit(write_limit);
        Ok(stream)
    }
}

impl IntoFuture for Upgrading {
    type Output = Result<UpgradedStream>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.stream())
    }
}
