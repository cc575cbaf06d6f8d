//! The stream API: a connection as a [`Stream`] of incoming messages and a [`Sink`] of
//! outgoing ones, for code that prefers to pull.
//!
//! Pings are answered automatically and, on the `Stream`, neither pings nor pongs are
//! surfaced; [`WebSocketStream::next_event`] is the opt-in that hands them out too, as
//! [`StreamEvent`]s (a pong with its round-trip time when it answers this end's
//! [`ping`](WebSocketStream::ping)). The end of the stream (`None`) comes after the
//! close handshake and the transport's teardown, and [`WebSocketStream::closure`] then
//! says how the connection ended.
//!
//! Writing: messages given to the sink with `feed` are written on `flush`, and
//! otherwise by the next `poll_next` before it waits for input. So an echo loop needs
//! no flush (`while let Some(m) = ws.next().await { ws.feed(m?).await? }`), and the
//! replies to messages that arrived together leave in one write.
//!
//! Backpressure: `poll_ready` of the sink waits while more than the write limit is
//! queued and not yet written (default 128 KiB), so a sender can never queue more than
//! that plus one message per connection.
//!
//! [`WebSocketStream::split`] gives a [`ReadHalf`] and a [`WriteHalf`] for two tasks;
//! `split.rs` says how they wake and how the write half closes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use wsevents_proto::{CloseCode, CloseFrame, Closure, Connection, Event, Message, Pong, State};

use crate::error::{Error, Result};
use crate::io::driver::Driver;
use crate::io::server::handshake::ServerHandshake;
use crate::metrics;

mod split;

pub use split::{ReadHalf, ReuniteError, WriteHalf};

/// The default write limit: how many queued, unwritten bytes make `poll_ready` wait.
pub const DEFAULT_WRITE_LIMIT: usize = 128 * 1024;

/// An open WebSocket connection over a transport `S`, as a `Stream` of messages and a
/// `Sink` of messages.
///
/// ```no_run
/// use futures_util::{SinkExt, StreamExt};
/// # async fn demo() -> Result<(), wsevents::Error> {
/// let mut ws = wsevents::connect("ws://127.0.0.1:8080/ws").await?;
/// ws.send(wsevents::Message::text("Hello WebSocket.")).await?;
/// while let Some(message) = ws.next().await {
///     println!("{:?}", message?);
/// }
/// println!("closed: {:?}", ws.closure());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WebSocketStream<S> {
    driver: Driver<S>,
    conn: Connection,
    write_limit: usize,
    /// Server connections: the request that opened it and the peer (one pointer when
    /// absent).
    handshake: Option<Box<ServerHandshake>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    pub(crate) fn new(driver: Driver<S>, conn: Connection) -> Self {
        WebSocketStream {
            driver,
            conn,
            write_limit: DEFAULT_WRITE_LIMIT,
            handshake: None,
        }
    }

    /// The same, remembering the handshake that opened it (server connections).
    pub(crate) fn with_handshake(mut self, handshake: ServerHandshake) -> Self {
        self.handshake = Some(Box::new(handshake));
        self
    }

    /// The handshake, taken out (for the event API to keep).
    pub(crate) fn take_handshake(&mut self) -> Option<Box<ServerHandshake>> {
        self.handshake.take()
    }

    /// Server connections: the upgrade request that opened this connection (method,
    /// URI, version, every header: a cookie, a token in the query), as the accept
    /// hook saw it. `None` on clients and on [`from_upgraded`](Self::from_upgraded)
    /// streams. The connection keeps it compact (one buffer of the head as received)
    /// and makes the `http::Request` on each call.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let server = wsevents::Server::bind("127.0.0.1:8080").await?;
    /// while let Some((ws, _)) = server.accept_stream().await {
    ///     let request = ws.request().expect("a server connection keeps its request");
    ///     let session = wsevents::cookie(request.headers(), "session");
    ///     println!("{} from {:?}, session {session:?}", request.uri(), ws.peer_addr());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn request(&self) -> Option<http::Request<()>> {
        self.handshake.as_ref().map(|h| h.request())
    }

    /// Clients: the server's 101 response (every header as sent: a `Set-Cookie`, the
    /// negotiated `Sec-WebSocket-Extensions`); `None` on server connections.
    pub fn response(&self) -> Option<http::Response<()>> {
        self.conn
            .response()
            .map(crate::io::server::handshake::response_to_http)
    }

    /// Server connections: the peer's address, when the transport has one (always on
    /// a [`Server`](crate::Server)'s connections).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.handshake.as_ref().and_then(|h| h.peer_addr)
    }

    /// Server connections: the request's path, without the query, as sent
    /// (percent-encoded); kept from the handshake, not parsed again.
    pub fn path(&self) -> Option<&str> {
        self.handshake.as_ref().map(|h| h.path())
    }

    /// Server connections: the route the request matched, as written
    /// (`/topic/{name}`, see [`Acceptor::route`](crate::Acceptor::route)); `None`
    /// when the acceptor has no routes or a fallback served the path.
    pub fn route(&self) -> Option<&str> {
        Some(self.handshake.as_ref()?.route()?.route())
    }

    /// Server connections: the value of the route's parameter `name`,
    /// percent-decoded.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, Server};
    /// let server = Server::builder(Acceptor::new().route("/topic/{name}")).bind("127.0.0.1:8080").await?;
    /// while let Some((ws, _request)) = server.accept_stream().await {
    ///     println!("a subscriber of {:?}", ws.param("name"));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.handshake.as_ref()?.route()?.param(name)
    }

    /// Wrap a transport on which the handshake was done elsewhere (for example by an
    /// HTTP server's upgrade), as `role`. The connection is open from now on: its
    /// keepalive and idle deadlines (`Config::ping_interval`, `pong_timeout`,
    /// `idle_timeout`) count from this moment.
    pub fn from_upgraded(
        io: S,
        role: wsevents_proto::Role,
        config: wsevents_proto::Config,
    ) -> Self {
        let now = tokio::time::Instant::now().into_std();
        WebSocketStream::new(
            Driver::opened(io, role),
            Connection::open_at(role, config, now),
        )
    }

    /// The driver and the core, for the event API to take over.
    pub(crate) fn into_parts(self) -> (Driver<S>, Connection) {
        (self.driver, self.conn)
    }

    /// Set how many queued, unwritten bytes make the sink wait (a server
    /// connection starts with its acceptor's, [`Acceptor::write_limit`](crate::Acceptor::write_limit)).
    pub fn set_write_limit(&mut self, limit: usize) {
        self.write_limit = limit;
    }

    /// How many queued, unwritten bytes make the sink wait ([`DEFAULT_WRITE_LIMIT`]
    /// unless set).
    pub fn write_limit(&self) -> usize {
        self.write_limit
    }

    /// The negotiated subprotocol.
    pub fn protocol(&self) -> Option<&str> {
        self.conn.protocol()
    }

    /// The negotiated extensions, as the handshake said them.
    pub fn extensions(&self) -> &str {
        self.conn.extensions()
    }

    /// The ready state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Application bytes of messages sent and not yet written (the browser's
    /// `bufferedAmount`: before compression, without framing).
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// How the connection ended, once it has.
    pub fn closure(&self) -> Option<&Closure> {
        self.conn.closure()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        self.driver.io()
    }

    /// The transport, mutably (reading or writing it directly corrupts the stream).
    pub fn get_mut(&mut self) -> &mut S {
        self.driver.io_mut()
    }

    /// The protocol core.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Send `message` as it is even when permessage-deflate was negotiated (data
    /// already compressed, or a message that must not pay for compression): waits
    /// for room under the write limit like the sink, then writes it out.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let mut ws = wsevents::connect("ws://127.0.0.1:8080/ws").await?;
    /// let jpeg = std::fs::read("photo.jpg")?;
    /// ws.send_uncompressed(wsevents::Message::binary(jpeg)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_uncompressed(&mut self, message: Message) -> Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.queue_uncompressed(message)?;
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Queue `message` uncompressed, without waiting (the write half's send too).
    pub(crate) fn queue_uncompressed(&mut self, message: Message) -> Result<()> {
        self.conn.send_uncompressed(message)?;
        metrics::message_sent(self.conn.role());
        Ok(())
    }

    /// Queue a ping (written on the next flush or read). Its time is recorded, so the
    /// pong that answers it comes out of [`next_event`](Self::next_event) with its
    /// round-trip time.
    pub fn ping(&mut self, data: impl Into<Bytes>) -> Result<()> {
        let now = tokio::time::Instant::now().into_std();
        Ok(self.conn.ping_at(data.into(), now)?)
    }

    /// The next message, ping or pong: the [`Stream`] with the control frames it
    /// hides. `None` after the close handshake, like the stream. Pings are still
    /// answered automatically.
    ///
    /// ```no_run
    /// use wsevents::StreamEvent;
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let mut ws = wsevents::connect("ws://127.0.0.1:8080/ws").await?;
    /// ws.ping("are you there?")?;
    /// while let Some(event) = ws.next_event().await {
    ///     match event? {
    ///         StreamEvent::Message(message) => println!("{message:?}"),
    ///         StreamEvent::Pong { rtt: Some(rtt), .. } => println!("round trip: {rtt:?}"),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_event(&mut self) -> Option<Result<StreamEvent>> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Poll for the next message, ping or pong (see [`next_event`](Self::next_event)).
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<StreamEvent>>> {
        self.poll_next_inner(cx, true)
    }

    /// Close with `code` and `reason`, wait for the close handshake and the transport's
    /// teardown, and return how the connection ended. Messages still arriving are
    /// dropped.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<Closure> {
        let now = tokio::time::Instant::now().into_std();
        self.conn.close(CloseFrame::new(code, reason), now)?;
        std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.conn.closure().cloned().ok_or(Error::Closed)
    }

    /// Drive the connection until it is closed and torn down, dropping messages.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while ready!(self.driver.poll_event(&mut self.conn, cx)).is_some() {}
        Poll::Ready(())
    }

    /// Split into a sink half and a stream half that can move to different tasks;
    /// [`ReadHalf::reunite`] puts them back together.
    ///
    /// **Waking:** the halves share the stream behind a lock held for one poll, and
    /// either may read and write the transport (the read half flushes what is queued
    /// and writes pongs and the close reply). The transport and the timer are polled
    /// only with a waker that wakes both halves, so a socket that becomes writable
    /// wakes a waiting write half whichever half polled last (the other half wakes
    /// spuriously, which is cheap); a poll that writes queued bytes or changes the
    /// connection's state also wakes the other half.
    ///
    /// **Closing:** [`WriteHalf::close`] (or the sink's `close`) sends the close frame
    /// after everything already queued and flushes it, without reading. The read half
    /// keeps yielding the messages the peer sent before its close frame, then ends
    /// (`None`) after the close handshake, as the whole stream does. (The whole
    /// stream's [`close`](Self::close) drops what still arrives; so does the write
    /// half's once the read half has been dropped.)
    ///
    /// Backpressure on the write half is the stream's: its sink waits while the write
    /// limit is queued and unwritten.
    ///
    /// ```no_run
    /// use futures_util::{SinkExt, StreamExt};
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let ws = wsevents::connect("ws://127.0.0.1:8080/ws").await?;
    /// let (mut write, mut read) = ws.split();
    /// let reader = tokio::spawn(async move {
    ///     while let Some(message) = read.next().await {
    ///         println!("{:?}", message?);
    ///     }
    ///     Ok::<_, wsevents::Error>(read)
    /// });
    /// write.send(wsevents::Message::text("Hello WebSocket.")).await?;
    /// write.close(wsevents::CloseCode::NORMAL, "done").await?;
    /// let read = reader.await.expect("the reader does not panic")?;
    /// println!("closed: {:?}", read.closure());
    /// # Ok(()) }
    /// ```
    pub fn split(self) -> (WriteHalf<S>, ReadHalf<S>) {
        split::split(self)
    }

    /// The next message, or with `control` also the next ping or pong.
    fn poll_next_inner(
        &mut self,
        cx: &mut Context<'_>,
        control: bool,
    ) -> Poll<Option<Result<StreamEvent>>> {
        // The common case first: a message already read, straight from the core.
        if let Some(message) = self.driver.poll_message(&mut self.conn) {
            return Poll::Ready(Some(Ok(StreamEvent::Message(message))));
        }
        self.poll_next_driven(cx, control)
    }

    /// [`poll_next_inner`](Self::poll_next_inner) once no message was ready in the
    /// core: through the driver (writing, reading, timing).
    fn poll_next_driven(
        &mut self,
        cx: &mut Context<'_>,
        control: bool,
    ) -> Poll<Option<Result<StreamEvent>>> {
        loop {
            let event = match ready!(self.driver.poll_event(&mut self.conn, cx)) {
                None | Some(Event::Closed(_)) => return Poll::Ready(None),
                Some(Event::Message(message)) => StreamEvent::Message(message),
                Some(Event::Error(error)) => {
                    let error = match (self.driver.take_io_error(), error) {
                        (Some(io), wsevents_proto::Error::UnexpectedEof) => Error::Io(io),
                        (_, error) => Error::from(error),
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Some(Event::Ping(payload)) if control => StreamEvent::Ping(payload),
                Some(Event::Pong(pong)) if control => pong_event(pong),
                Some(_) => continue,
            };
            return Poll::Ready(Some(Ok(event)));
        }
    }

    /// Write what is queued, unless the core is closed: then the driver's teardown,
    /// run by whoever reads, writes what is left (and may already have shut the
    /// transport's write side).
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.state() == State::Closed {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Ok(ready!(self.driver.poll_write(&mut self.conn, cx))?))
    }
}

/// What [`WebSocketStream::next_event`] and [`ReadHalf::next_event`] hand out: a message,
/// or a control frame the [`Stream`] hides.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A whole message, as the `Stream` gives it.
    Message(Message),
    /// A ping arrived (the pong is already queued).
    Ping(Bytes),
    /// A pong arrived.
    Pong {
        /// Its payload.
        payload: Bytes,
        /// The time since this end sent the ping it answers, when it answers the latest
        /// ping this end sent (by [`WebSocketStream::ping`], [`WriteHalf::ping`] or
        /// keepalive); `None` for an unsolicited pong or one that answers an older
        /// ping.
        rtt: Option<Duration>,
    },
}

/// A pong from the core as a [`StreamEvent`], timed on tokio's clock (the one the
/// ping was recorded on).
fn pong_event(pong: Pong) -> StreamEvent {
    let now = tokio::time::Instant::now().into_std();
    StreamEvent::Pong {
        rtt: pong
            .ping_sent_at
            .map(|sent| now.saturating_duration_since(sent)),
        payload: pong.payload,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketStream<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // The common case first: a message already read, straight from the core.
        if let Some(message) = this.driver.poll_message(&mut this.conn) {
            return Poll::Ready(Some(Ok(message)));
        }
        Poll::Ready(match ready!(this.poll_next_driven(cx, false)) {
            Some(Ok(StreamEvent::Message(message))) => Some(Ok(message)),
            Some(Err(error)) => Some(Err(error)),
            // Without `control` only messages come out.
            Some(Ok(_)) | None => None,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocketStream<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.conn.state() != State::Open {
            return Poll::Ready(Err(Error::InvalidState));
        }
        while this.conn.queued_bytes() >= this.write_limit {
            ready!(this.driver.poll_write(&mut this.conn, cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        let conn = &mut self.get_mut().conn;
        conn.send(message)?;
        metrics::message_sent(conn.role());
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        Poll::Ready(Ok(ready!(this.driver.poll_write(&mut this.conn, cx))?))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.conn.state() == State::Open {
            let now = tokio::time::Instant::now().into_std();
            this.conn
                .close(CloseFrame::new(CloseCode::NORMAL, ""), now)?;
        }
        ready!(this.poll_drain(cx));
        Poll::Ready(Ok(()))
    }
}
