//! The event API's side of the server: connections a [`Server`] accepted, or that
//! hyper upgraded, handed out as [`WebSocket`]s, and routes whose handlers get them.
//!
//! These live here, above `io/`, so that the I/O layer never reaches up into the event
//! API: `io/` gives open [`WebSocketStream`](crate::WebSocketStream)s (and runs a
//! route's handler as a function of one), this turns them into sockets with handlers.

use std::future::Future;

use crate::api::websocket::WebSocket;
use crate::io::server::handshake;
use crate::io::server::{Accepted, Acceptor, Handed, Server, ServerBuilder, StreamHandler};

impl Server {
    /// The next open connection as a [`WebSocket`] with the event API (already open:
    /// its `open` event is the first its `run` dispatches); `None` once the server
    /// stopped. Connections on a route with a handler
    /// ([`ServerBuilder::route`]) go to their handler instead.
    pub async fn accept(&self) -> Option<WebSocket> {
        let (stream, request) = self.accept_stream().await?;
        let url = handshake::url_of(&request, self.secure);
        Some(WebSocket::accepted(stream, url))
    }

    /// A server whose connections on `path` go to `handler`: the start of a
    /// [`ServerBuilder`] with the default [`Acceptor`], for more routes
    /// ([`ServerBuilder::route`]), a [`fallback`](ServerBuilder::fallback) and the
    /// other options, then [`bind`](ServerBuilder::bind).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use wsevents::{Server, WebSocket};
    ///
    /// async fn chat(ws: WebSocket) {
    ///     let echo = ws.clone();
    ///     ws.on_message(move |e| {
    ///         let _ = echo.send(&e.data);
    ///     });
    ///     ws.run().await;
    /// }
    ///
    /// async fn topic(ws: WebSocket) {
    ///     let name = ws.param("name").unwrap_or_default().to_owned();
    ///     let _ = ws.send(format!("welcome to {name}"));
    ///     ws.run().await;
    /// }
    ///
    /// let server = Server::route("/chat", chat)
    ///     .route("/topic/{name}", topic)
    ///     .fallback(|ws: WebSocket| async move {
    ///         let _ = ws.close_with(4404, "no such endpoint");
    ///         ws.run().await;
    ///     })
    ///     .bind("127.0.0.1:8080")
    ///     .await?;
    /// tokio::signal::ctrl_c().await?;
    /// println!("{}", server.shutdown(Duration::from_secs(5)).await);
    /// # Ok(()) }
    /// ```
    pub fn route<F, Fut>(path: impl Into<String>, handler: F) -> ServerBuilder
    where
        F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Server::builder(Acceptor::new()).route(path, handler)
    }
}

impl ServerBuilder {
    /// Serve `path` (with parameters, as [`Acceptor::route`] says: `/topic/{name}`)
    /// and hand each connection on it to `handler`, in the connection's own task: a
    /// [`WebSocket`], already open, which the handler drives (`run`, `next_event`);
    /// it reads the route's parameters with [`WebSocket::param`], without parsing the
    /// request again. The connection counts under the server's cap and closes with
    /// its shutdown, like every other. Connections on routes without a handler (the
    /// acceptor's own) still go to [`Server::accept`].
    ///
    /// # Panics
    ///
    /// On a path that is not a route, as [`Acceptor::route`].
    pub fn route<F, Fut>(self, path: impl Into<String>, handler: F) -> Self
    where
        F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle(path.into(), None, event_api(handler))
    }

    /// [`route`](Self::route), with `acceptor`'s own policy and configuration for
    /// this path (as [`Acceptor::at`]: its subprotocols, origin rule, hook, limits,
    /// permessage-deflate).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, Config, Server, WebSocket};
    /// let uploads = Acceptor::new().config(Config { max_message_size: 256 << 20, ..Config::default() });
    /// let server = Server::builder(Acceptor::new())
    ///     .route_with("/upload/{name}", uploads, |ws: WebSocket| async move {
    ///         ws.run().await;
    ///     })
    ///     .bind("127.0.0.1:8080")
    ///     .await?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn route_with<F, Fut>(self, path: impl Into<String>, acceptor: Acceptor, handler: F) -> Self
    where
        F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle(path.into(), Some(acceptor), event_api(handler))
    }

    /// Hand the connections on paths no route matches to `handler` (with the server's
    /// acceptor's policy) instead of answering them 404.
    pub fn fallback<F, Fut>(self, handler: F) -> Self
    where
        F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle_fallback(None, event_api(handler))
    }

    /// [`fallback`](Self::fallback), with `acceptor`'s policy and configuration.
    pub fn fallback_with<F, Fut>(self, acceptor: Acceptor, handler: F) -> Self
    where
        F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handle_fallback(Some(acceptor), event_api(handler))
    }
}

/// A handler of [`WebSocket`]s as the I/O layer runs it: the connection made a socket
/// (its URL; its bounds come with it from the acceptor), then the handler's work.
fn event_api<F, Fut>(handler: F) -> StreamHandler
where
    F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    std::sync::Arc::new(move |(stream, request): Accepted, handed: Handed| {
        let url = handshake::url_of(&request, handed.secure);
        Box::pin(handler(WebSocket::accepted(stream, url)))
    })
}

#[cfg(feature = "hyper")]
impl crate::io::server::hyper::Upgrading {
    /// The connection with the event API, once hyper hands it over (open: its `open`
    /// event is the first its `run` dispatches).
    pub async fn websocket(self) -> crate::Result<WebSocket> {
        let request = self.handshake().request();
        let secure = request.uri().scheme_str() == Some("https");
        let url = handshake::url_of(&request, secure);
        let stream = self.stream().await?;
        Ok(WebSocket::accepted(stream, url))
    }
}
