//! The stream API: a connection as a [`Stream`] of incoming messages and a [`Sink`] of
//! outgoing ones, for code that prefers to pull.
//!
//! Pings are answered automatically and pongs are not surfaced; the end of the stream
//! (`None`) comes after the close handshake and the transport's teardown, and
//! [`WebSocketStream::closure`] then says how the connection ended.
//!
//! Writing: messages given to the sink with `feed` are written on `flush`, and
//! otherwise by the next `poll_next` before it waits for input. So an echo loop needs
//! no flush (`while let Some(m) = ws.next().await { ws.feed(m?).await? }`), and the
//! replies to messages that arrived together leave in one write.
//!
//! Backpressure: `poll_ready` of the sink waits while more than the write limit is
//! queued and not yet written (default 128 KiB), so a sender can never queue more than
//! that plus one message per connection.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use wsevents_proto::{CloseCode, CloseFrame, Closure, Connection, Event, Message, State};

use crate::api::error::{Error, Result};
use crate::io::driver::Driver;

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
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    pub(crate) fn new(driver: Driver<S>, conn: Connection) -> Self {
        WebSocketStream {
            driver,
            conn,
            write_limit: DEFAULT_WRITE_LIMIT,
        }
    }

    /// Wrap a transport on which the handshake was done elsewhere (for example by an
    /// HTTP server's upgrade), as `role`.
    pub fn from_upgraded(
        io: S,
        role: wsevents_proto::Role,
        config: wsevents_proto::Config,
    ) -> Self {
        WebSocketStream::new(Driver::new(io), Connection::open(role, config))
    }

    /// The driver and the core, for the event API to take over.
    pub(crate) fn into_parts(self) -> (Driver<S>, Connection) {
        (self.driver, self.conn)
    }

    /// Set how many queued, unwritten bytes make the sink wait.
    pub fn set_write_limit(&mut self, limit: usize) {
        self.write_limit = limit;
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
        self.conn.send_uncompressed(message)?;
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Queue a ping.
    pub fn ping(&mut self, data: impl Into<Bytes>) -> Result<()> {
        Ok(self.conn.ping(data.into())?)
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

    /// Split into a sink half and a stream half that can move to different tasks.
    pub fn split(self) -> (WriteHalf<S>, ReadHalf<S>) {
        futures_util::StreamExt::split(self)
    }
}

/// The sending half of a split [`WebSocketStream`].
pub type WriteHalf<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;
/// The receiving half of a split [`WebSocketStream`].
pub type ReadHalf<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocketStream<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // The common case first: a message already read, straight from the core.
        if let Some(message) = this.conn.poll_message() {
            return Poll::Ready(Some(Ok(message)));
        }
        loop {
            match ready!(this.driver.poll_event(&mut this.conn, cx)) {
                None | Some(Event::Closed(_)) => return Poll::Ready(None),
                Some(Event::Message(message)) => return Poll::Ready(Some(Ok(message))),
                Some(Event::Error(error)) => {
                    let error = match (this.driver.take_io_error(), error) {
                        (Some(io), wsevents_proto::Error::UnexpectedEof) => Error::Io(io),
                        (_, error) => Error::from(error),
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Some(_) => {}
            }
        }
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
        Ok(self.get_mut().conn.send(message)?)
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
