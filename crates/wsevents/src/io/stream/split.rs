//! [`WebSocketStream::split`]: a [`ReadHalf`] and a [`WriteHalf`] for two tasks.
//!
//! Both halves share the stream behind a lock, held for one poll at a time and never
//! across an `.await`. Either half may touch the transport in either direction: the
//! read half writes too (the driver flushes what is queued before it waits for input,
//! and writes auto-pongs and the close reply), and a transport keeps only one waker
//! per direction, the last one it was polled with.
//!
//! **The waking rule.** Each half registers its task's waker in its own slot, and the
//! transport (and the timer) is only ever polled with a third waker that wakes *both*
//! slots. So whichever half polled last, a socket that becomes readable or writable
//! wakes the half that waits for it; the other half wakes spuriously, finds nothing
//! to do and sleeps again, which is cheap (a lost wakeup is a hang). A poll that
//! changes what the other half waits for without the transport's help wakes it
//! directly: the connection's state changed (the write half's close arms the close
//! timeout, which only the reading side's poll sets; the read half's end of the
//! connection ends the write half's wait on a full socket), or queued bytes were
//! written (a write half waits for room under the write limit or for its flush; with
//! tokio's transports the socket's own wakeup already reaches it, so this is a second
//! line for transports that make room without one).
//!
//! **The close rule.** Closing the write half ([`WriteHalf::close`], or the sink's
//! `poll_close`) sends the close frame after everything already queued and flushes it;
//! it does not read. The read half keeps yielding the messages the peer sent before
//! its close frame, and ends (`None`) after the close handshake and the transport's
//! teardown, like the whole stream. Only when the read half is gone (dropped) does the
//! write half's close drive the connection to its end itself, dropping what arrives,
//! since nobody is left to take it.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use wsevents_proto::{CloseCode, CloseFrame, Closure, Message, State};

use super::{StreamEvent, WebSocketStream};
use crate::error::Result;

/// Split `stream` (see [`WebSocketStream::split`]).
pub(super) fn split<S>(stream: WebSocketStream<S>) -> (WriteHalf<S>, ReadHalf<S>) {
    let wakers = Arc::new(HalfWakers::default());
    let shared = Arc::new(Shared {
        stream: Mutex::new(stream),
        both: Waker::from(wakers.clone()),
        wakers,
    });
    (
        WriteHalf {
            shared: shared.clone(),
        },
        ReadHalf { shared },
    )
}

/// The receiving half of a split [`WebSocketStream`]: a `Stream` of messages, and
/// [`next_event`](Self::next_event) for pings and pongs too.
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
}

/// The sending half of a split [`WebSocketStream`]: a `Sink` of messages with the
/// stream's backpressure (the sink waits while the write limit is queued and
/// unwritten), plus [`ping`](Self::ping) and [`close`](Self::close).
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
}

/// What both halves hold.
struct Shared<S> {
    stream: Mutex<WebSocketStream<S>>,
    wakers: Arc<HalfWakers>,
    /// Wakes both halves: the only waker the transport and the timer ever see.
    both: Waker,
}

/// The tasks of the two halves, each as its half last registered it.
#[derive(Default)]
struct HalfWakers {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Wake for HalfWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.read.wake();
        self.write.wake();
    }
}

/// Which half is polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Read,
    Write,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, WebSocketStream<S>> {
        // A poisoned lock means a panic during a poll; the stream is consistent between
        // polls, so carry on with it.
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Poll the stream for `half`, by the waking rule of the module doc: register the
    /// half's task, then poll with the waker of both.
    fn poll<T>(
        &self,
        half: Half,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut WebSocketStream<S>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mine = match half {
            Half::Read => &self.wakers.read,
            Half::Write => &self.wakers.write,
        };
        // Registered before the poll: a wakeup that comes during it is not lost.
        mine.register(cx.waker());
        self.with(half, |stream| {
            f(stream, &mut Context::from_waker(&self.both))
        })
    }

    /// Run `f` on the stream for `half`, and wake the other half if that changed what
    /// it may be waiting for: queued bytes written, or the connection's state.
    fn with<T>(&self, half: Half, f: impl FnOnce(&mut WebSocketStream<S>) -> T) -> T {
        let mut stream = self.lock();
        let (state, queued) = (stream.conn.state(), stream.conn.queued_bytes());
        let value = f(&mut stream);
        let changed = stream.conn.state() != state || stream.conn.queued_bytes() < queued;
        drop(stream);
        if changed {
            match half {
                Half::Read => self.wakers.write.wake(),
                Half::Write => self.wakers.read.wake(),
            }
        }
        value
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// The next message, ping or pong, like [`WebSocketStream::next_event`].
    ///
    /// ```no_run
    /// use wsevents::StreamEvent;
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let (mut write, mut read) = wsevents::connect("ws://127.0.0.1:8080/ws").await?.split();
    /// write.ping("tick").await?;
    /// while let Some(event) = read.next_event().await {
    ///     if let StreamEvent::Pong { rtt, .. } = event? {
    ///         println!("pong after {rtt:?}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_event(&mut self) -> Option<Result<StreamEvent>> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Poll for the next message, ping or pong.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<StreamEvent>>> {
        self.shared.poll(Half::Read, cx, |stream, cx| {
            stream.poll_next_inner(cx, true)
        })
    }

    /// The ready state.
    pub fn state(&self) -> State {
        self.shared.lock().state()
    }

    /// How the connection ended, once it has.
    pub fn closure(&self) -> Option<Closure> {
        self.shared.lock().closure().cloned()
    }

    /// Whether `write` is the other half of this stream.
    pub fn is_pair_of(&self, write: &WriteHalf<S>) -> bool {
        Arc::ptr_eq(&self.shared, &write.shared)
    }

    /// Put the stream back together, if `write` is its other half.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let (write, read) = wsevents::connect("ws://127.0.0.1:8080/ws").await?.split();
    /// let ws = read.reunite(write).expect("the halves of one stream");
    /// # Ok(()) }
    /// ```
    pub fn reunite(
        self,
        write: WriteHalf<S>,
    ) -> std::result::Result<WebSocketStream<S>, ReuniteError<S>> {
        if !self.is_pair_of(&write) {
            return Err(ReuniteError(self, write));
        }
        drop(write);
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared
                .stream
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())),
            // Only the two halves hold the shared stream, so this does not happen; give
            // the halves back rather than lose the stream.
            Err(shared) => Err(ReuniteError(
                ReadHalf {
                    shared: shared.clone(),
                },
                WriteHalf { shared },
            )),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared
            .poll(Half::Read, cx, |stream, cx| Pin::new(stream).poll_next(cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Send a ping and write it out. Its time is recorded, so the pong that answers it
    /// comes out of [`ReadHalf::next_event`] with its round-trip time.
    pub async fn ping(&mut self, data: impl Into<Bytes>) -> Result<()> {
        let data = data.into();
        self.shared.with(Half::Write, |stream| stream.ping(data))?;
        self.flush_queued().await
    }

    /// Start the close handshake with `code` and `reason`: the close frame goes after
    /// everything already queued, and is written out before this returns. The read
    /// half keeps yielding what the peer sent before its close frame, then ends after
    /// the close handshake. If the read half is gone, this drives the connection to its
    /// end itself (dropping what still arrives).
    ///
    /// ```no_run
    /// use futures_util::{SinkExt, StreamExt};
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let (mut write, mut read) = wsevents::connect("ws://127.0.0.1:8080/ws").await?.split();
    /// write.send(wsevents::Message::text("last words")).await?;
    /// write.close(wsevents::CloseCode::NORMAL, "bye").await?;
    /// // The replies already on their way still come out.
    /// while let Some(message) = read.next().await {
    ///     println!("{:?}", message?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        let now = tokio::time::Instant::now().into_std();
        let frame = CloseFrame::new(code, reason);
        self.shared
            .with(Half::Write, |stream| stream.conn.close(frame, now))?;
        self.finish_close().await
    }

    /// Send `message` without compressing it, like
    /// [`WebSocketStream::send_uncompressed`].
    pub async fn send_uncompressed(&mut self, message: Message) -> Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.shared
            .with(Half::Write, |stream| stream.queue_uncompressed(message))?;
        self.flush_queued().await
    }

    /// Set how many queued, unwritten bytes make the sink wait.
    pub fn set_write_limit(&mut self, limit: usize) {
        self.shared
            .with(Half::Write, |stream| stream.set_write_limit(limit));
    }

    /// Application bytes of messages sent and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().buffered_amount()
    }

    /// The ready state.
    pub fn state(&self) -> State {
        self.shared.lock().state()
    }

    /// Put the stream back together, if `read` is its other half.
    pub fn reunite(
        self,
        read: ReadHalf<S>,
    ) -> std::result::Result<WebSocketStream<S>, ReuniteError<S>> {
        read.reunite(self)
    }

    /// Whether the read half has been dropped (only the two halves hold the stream).
    fn alone(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    async fn flush_queued(&mut self) -> Result<()> {
        std::future::poll_fn(|cx| {
            self.shared
                .poll(Half::Write, cx, |stream, cx| stream.poll_write_queued(cx))
        })
        .await
    }

    /// After the close frame was queued: write it out, or with no read half left,
    /// drive the connection to its end.
    async fn finish_close(&mut self) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_finish_close(cx)).await
    }

    fn poll_finish_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let alone = self.alone();
        self.shared.poll(Half::Write, cx, |stream, cx| {
            if alone {
                ready!(stream.poll_drain(cx));
                Poll::Ready(Ok(()))
            } else {
                stream.poll_write_queued(cx)
            }
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = crate::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.poll(Half::Write, cx, |stream, cx| {
            Pin::new(stream).poll_ready(cx)
        })
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        self.shared
            .with(Half::Write, |stream| Pin::new(stream).start_send(message))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.poll(Half::Write, cx, |stream, cx| {
            Pin::new(stream).poll_flush(cx)
        })
    }

    /// Close with 1000 (normal) by the close rule: the read half keeps the messages
    /// still to come.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let now = tokio::time::Instant::now().into_std();
        this.shared.with(Half::Write, |stream| {
            stream
                .conn
                .close(CloseFrame::new(CloseCode::NORMAL, ""), now)
        })?;
        this.poll_finish_close(cx)
    }
}

impl<S> fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf").finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf").finish_non_exhaustive()
    }
}

/// The halves given to [`ReadHalf::reunite`] were not of one stream; here they are
/// back.
pub struct ReuniteError<S>(pub ReadHalf<S>, pub WriteHalf<S>);

impl<S> fmt::Debug for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReuniteError(..)")
    }
}

impl<S> fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the halves are not of one stream")
    }
}

impl<S> std::error::Error for ReuniteError<S> {}
