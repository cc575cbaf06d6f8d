//! The event API's side of the server: connections a [`Server`] accepted, or that
//! hyper upgraded, handed out as [`WebSocket`]s.
//!
//! These live here, above `io/`, so that the I/O layer never reaches up into the event
//! API: `io/` gives open [`WebSocketStream`](crate::WebSocketStream)s, this turns
//! them into sockets with handlers.

use crate::api::websocket::WebSocket;
use crate::io::server::Server;
use crate::io::server::handshake;

impl Server {
    /// The next open connection as a [`WebSocket`] with the event API (already open:
    /// its `open` event is the first its `run` dispatches); `None` once the server
    /// stopped.
    pub async fn accept(&self) -> Option<WebSocket> {
        let (stream, request) = self.accept_stream().await?;
        let url = handshake::url_of(&request, self.secure);
        let ws = WebSocket::accepted(stream, url);
        // Checked when the builder took it, so this cannot fail.
        let _ = ws.set_backpressure(self.backpressure);
        Some(ws)
    }
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
