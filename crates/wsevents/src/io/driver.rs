//! The driver: moves bytes between a transport and a protocol core, one poll at a time.
//!
//! quinn's `ConnectionDriver` shape, as a set of poll functions that borrow the core
//! (`&mut Connection`) only for the duration of one poll: read → `handle_input` →
//! write `poll_transmit` → arm the timer → hand out events, until nothing is left to do.
//! Both faces of a connection (the stream API and the event API) sit on it; the event
//! API locks its shared core around each poll, the stream API owns its core outright
//! (and its split halves share it behind a lock, polling the transport with a waker that
//! wakes both, see `io/stream/split.rs`).
//!
//! Reading is done only when the caller asks for the next event, so a caller that is
//! slow to take events slows the peer down (TCP backpressure) instead of growing a
//! queue. Writing is done on the caller's flush, and otherwise before every read: what
//! was sent in reply to a batch of messages that arrived together leaves in one write,
//! and nothing queued is ever left behind while the connection waits for input. A
//! caller whose application is behind but which must keep the connection live (the
//! event API while a handler awaits) polls without reading (`poll_event_unread`):
//! writes, deadlines, the shutdown and the teardown go on, the peer is held back.
//!
//! The end of a connection follows RFC 6455 §7.1.1: once the core is closed, the
//! queued bytes (a close frame, an HTTP error) are flushed; a server then shuts its
//! write side first, a client waits for the server to; both then wait, up to the close
//! timeout, for the peer's end of stream so no data is reset. Only then is the
//! [`Event::Closed`] handed out.
//!
//! A connection a server tracks (see `io/server/lifecycle.rs`) also obeys its server's
//! shutdown: told to go away, it closes with 1001 through the core (the close frame
//! after everything queued); told to stop, it aborts and gives up its transport. A
//! busy driver checks for that with one atomic load per `poll_event`; it registers its
//! wakeup with the server only on its way to `Pending`, and then without a lock (a
//! waker registration and an atomic load: the relay in `lifecycle.rs`). An untracked
//! driver (clients, connections accepted on a caller's transport) checks a `None`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use wsevents_proto::{CloseCode, CloseFrame, Connection, Event, Message, Role, Timeout};

use crate::io::scratch;
use crate::io::server::lifecycle::{SHUTDOWN_REASON, Signal, Tracked};
use crate::metrics::{self, ConnMetrics};

/// How much room to make in a connection's own receive buffer before a read, at most.
const READ_SIZE: usize = scratch::SCRATCH_SIZE;

/// After a read of at least this much, the next one goes straight into the
/// connection's own buffer, sized by it: a peer that sends large messages sends them
/// again, and copying them out of the thread's buffer would cost more than the
/// allocation it saves.
const DIRECT_READ_MIN: usize = 4 * 1024;

/// How long to wait for the peer's end of stream after closing, when the core has no
/// close timeout configured.
const DEFAULT_LINGER: Duration = Duration::from_secs(5);

/// Where the transport is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// The WebSocket connection is live.
    Running,
    /// The core is closed; flushing, shutting down and waiting for the peer's EOF.
    Closing,
    /// The transport is finished with; only the closed event remains to hand out.
    Done,
}

/// The timer for the core's next deadline, and the waker it was last polled with:
/// while the task's waker is the same and the timer has not fired, it needs no poll
/// (a poll per message is a measurable share of an echo: `bench/README.md`, "The
/// timer, polled per message").
#[derive(Debug)]
struct Timer {
    sleep: Pin<Box<Sleep>>,
    waker: Option<Waker>,
}

impl Timer {
    fn new(deadline: Instant) -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            waker: None,
        }
    }

    /// Fire at `deadline` (a change forgets the waker: the next poll registers again).
    fn arm(&mut self, deadline: Instant) {
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
            self.waker = None;
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let registered = self
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if registered && !self.sleep.is_elapsed() {
            // It holds this task's waker and will wake it when it fires.
            return Poll::Pending;
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            if !registered {
                self.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}

/// A transport and the state of driving it.
#[derive(Debug)]
pub(crate) struct Driver<S> {
    io: S,
    timer: Option<Timer>,
    /// The read side reached EOF (or failed).
    read_closed: bool,
    /// Our write side was shut down (or failed).
    write_closed: bool,
    teardown: Teardown,
    linger: Option<Pin<Box<Sleep>>>,
    closed_event: Option<Event>,
    /// The first transport error, kept for the caller.
    io_error: Option<io::Error>,
    /// How much the last read brought.
    last_read: usize,
    /// The peer was failed by keepalive (it answered nothing, not even a pong): it is
    /// presumed gone, so the teardown makes one try at the 1011 and the shutdown and
    /// does not wait for an end of stream that will not come. Also set when the
    /// connection was aborted, or a client's handshake failed (no close handshake to
    /// wait for).
    peer_gone: bool,
    /// The server's hold on this connection, if a server tracks it; given back once
    /// the teardown is done.
    tracked: Option<Box<Tracked>>,
    /// Whether it counts as open in the metrics (nothing without the feature).
    metrics: ConnMetrics,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    pub(crate) fn new(io: S) -> Self {
        Driver {
            io,
            timer: None,
            read_closed: false,
            write_closed: false,
            teardown: Teardown::Running,
            linger: None,
            closed_event: None,
            io_error: None,
            last_read: 0,
            peer_gone: false,
            tracked: None,
            metrics: ConnMetrics::new(),
        }
    }

    /// A driver for a connection whose handshake was done elsewhere (an HTTP server's
    /// upgrade): it counts as open from now on.
    pub(crate) fn opened(io: S, role: Role) -> Self {
        Driver {
            metrics: ConnMetrics::opened(role),
            ..Driver::new(io)
        }
    }

    /// Obey a server's shutdown, and count as open until the teardown is done.
    pub(crate) fn track(&mut self, tracked: Box<Tracked>) {
        self.tracked = Some(tracked);
    }

    /// The same driver over a wrapped transport.
    pub(crate) fn map_io<T>(self, wrap: impl FnOnce(S) -> T) -> Driver<T> {
        Driver {
            io: wrap(self.io),
            timer: self.timer,
            read_closed: self.read_closed,
            write_closed: self.write_closed,
            teardown: self.teardown,
            linger: self.linger,
            closed_event: self.closed_event,
            io_error: self.io_error,
            last_read: self.last_read,
            peer_gone: self.peer_gone,
            tracked: self.tracked,
            metrics: self.metrics,
        }
    }

    pub(crate) fn io(&self) -> &S {
        &self.io
    }

    pub(crate) fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Take the transport error that ended the connection, if one did.
    pub(crate) fn take_io_error(&mut self) -> Option<io::Error> {
        self.io_error.take()
    }

    /// The next event of the connection, reading, writing and timing as needed.
    /// `Ready(None)` once the closed event has been handed out.
    #[inline]
    pub(crate) fn poll_event(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Event>> {
        self.poll_event_with::<true>(conn, cx)
    }

    /// [`poll_event`](Self::poll_event) for a caller whose application is behind (the
    /// event API with messages waiting for a handler that awaits): the transport is
    /// not read and the input already received is not parsed, so TCP holds the peer
    /// back; everything else goes on: what is queued is written (other clones' sends,
    /// the hub's), deadlines fire (the core is told the silence is this end's, see
    /// `Connection::handle_read_paused`), the server's shutdown is obeyed, events the
    /// core made without input (a close timeout, an abort) are handed out, and a
    /// closed connection is torn down.
    pub(crate) fn poll_event_unread(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Event>> {
        self.poll_event_with::<false>(conn, cx)
    }

    /// The two above: `READ` says whether the peer's input is read and parsed. A
    /// constant, so the reading path is compiled as it was, without a branch.
    #[inline(always)]
    fn poll_event_with<const READ: bool>(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Event>> {
        // The busy path's whole cost of the server's shutdown: one atomic load (and a
        // branch on `None` when untracked).
        if let Some(signal) = self.tracked.as_mut().and_then(|t| t.signal()) {
            self.obey(conn, signal);
        }
        loop {
            match self.teardown {
                Teardown::Done => return Poll::Ready(self.closed_event.take()),
                Teardown::Closing => {
                    if self.poll_teardown(conn, cx).is_pending() {
                        // Only the force cuts a teardown short.
                        match self.poll_signal(cx) {
                            Some(Signal::Force) => self.give_up_transport(),
                            _ => return Poll::Pending,
                        }
                    }
                    self.finish_tracked(conn);
                    self.metrics.torn_down();
                    self.teardown = Teardown::Done;
                    continue;
                }
                Teardown::Running => {}
            }
            let queued = conn.queued_bytes();
            let event = if READ {
                conn.poll_event()
            } else {
                conn.poll_queued_event()
            };
            if let Some(event) = event {
                self.metrics
                    .on_event(conn.role(), &event, self.io_error.is_some());
                if let Event::Closed(_) = event {
                    self.closed_event = Some(event);
                    self.teardown = Teardown::Closing;
                    continue;
                }
                // Aborted (`close()` while connecting), or a client's handshake that
                // failed (a 404, a bad answer): no close handshake will come either,
                // and the server may be keeping its HTTP connection alive; drop the
                // transport at once rather than linger for the close timeout (as the
                // stream API's `connect` does, which drops it with the error).
                if let Event::Error(error) = &event {
                    use wsevents_proto::Error as E;
                    self.peer_gone |= match error {
                        E::Timeout(Timeout::Pong) | E::Aborted => true,
                        E::Handshake(_) | E::Timeout(Timeout::Handshake) => {
                            conn.role() == Role::Client
                        }
                        _ => false,
                    };
                }
                // An auto-pong or a close reply the core just queued leaves at once (a
                // full socket is fine). The caller's own messages wait for its flush,
                // or for the input to run dry below, so that replies to a batch of
                // messages read at once go out in one write.
                if conn.queued_bytes() > queued
                    && let Poll::Ready(Err(e)) = self.poll_write_queued(conn, cx)
                {
                    self.transport_failed(conn, e);
                }
                return Poll::Ready(Some(event));
            }
            if let Poll::Ready(Err(e)) = self.poll_write_queued(conn, cx) {
                self.transport_failed(conn, e);
                continue;
            }
            let read = if READ {
                self.poll_read(conn, cx)
            } else {
                conn.handle_read_paused();
                Poll::Pending
            };
            match read {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => self.transport_failed(conn, e),
                Poll::Pending => {
                    // The input ran dry, or the task's cooperative budget did (tokio's
                    // sockets return `Pending` then, every 128 operations at most): only
                    // now the timer. Its deadlines are seconds apart, so checking them
                    // between reads would cost a poll per message (about 90
                    // instructions, 3 % of an echo) for nothing.
                    if self.poll_timer(conn, cx).is_ready() {
                        // What a deadline queued (a keepalive ping, a keepalive failure's
                        // 1011, an idle close) leaves at once, before the events it caused
                        // are handed out: a caller that stops at the error has still sent
                        // the close frame.
                        if let Poll::Ready(Err(e)) = self.poll_write_queued(conn, cx) {
                            self.transport_failed(conn, e);
                        }
                        continue;
                    }
                    // About to sleep: only now register with the server's shutdown.
                    if let Some(signal) = self.poll_signal(cx) {
                        self.obey(conn, signal);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// A message the core has already read, if it has one: the fast path of both faces
    /// (no read, no write, no timer), counted like the messages `poll_event` hands
    /// out.
    #[inline]
    pub(crate) fn poll_message(&self, conn: &mut Connection) -> Option<Message> {
        let message = conn.poll_message()?;
        metrics::message_received(conn.role());
        Some(message)
    }

    /// Write everything the core has queued, then flush. `Pending` while the transport
    /// is full; a tracked connection waiting so (a peer that does not read) still obeys
    /// the server's shutdown.
    pub(crate) fn poll_write(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let written = self.poll_write_queued(conn, cx);
            if written.is_pending()
                && let Some(signal) = self.poll_signal(cx)
            {
                self.obey(conn, signal);
                continue;
            }
            return written;
        }
    }

    /// The shutdown signal that came, if one did, registering the wakeup otherwise.
    fn poll_signal(&mut self, cx: &mut Context<'_>) -> Option<Signal> {
        self.tracked.as_mut()?.poll_signal(cx)
    }

    /// Act on the server's shutdown through the core.
    #[cold]
    fn obey(&mut self, conn: &mut Connection, signal: Signal) {
        match signal {
            Signal::GoingAway => {
                tracing::debug!("server shutting down: closing with 1001");
                let now = Instant::now().into_std();
                // Valid code, short reason: cannot fail. Does nothing if closing already.
                let _ = conn.close(CloseFrame::new(CloseCode::GOING_AWAY, SHUTDOWN_REASON), now);
            }
            Signal::Force => {
                tracing::debug!("grace period over: aborting");
                conn.abort();
                self.give_up_transport();
            }
        }
    }

    /// Neither read nor write the transport any more: the teardown ends at once.
    fn give_up_transport(&mut self) {
        self.read_closed = true;
        self.write_closed = true;
    }

    /// The teardown is done: give the server its slot back, saying how it ended.
    fn finish_tracked(&mut self, conn: &Connection) {
        if let Some(tracked) = self.tracked.take() {
            (*tracked).finish(conn.closure().is_some_and(|c| c.was_clean()));
        }
    }

    /// [`poll_write`](Self::poll_write) without the shutdown's part, for `poll_event`,
    /// which has its own. Nothing queued (every other call: the pass that reads) is
    /// answered inline, without the call.
    #[inline]
    fn poll_write_queued(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.write_closed && conn.poll_transmit().is_none() {
            return Poll::Ready(Ok(()));
        }
        self.write_queued(conn, cx)
    }

    /// [`poll_write_queued`](Self::poll_write_queued) with something to write, or the
    /// write side closed.
    fn write_queued(
        &mut self,
        conn: &mut Connection,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut wrote = false;
        while let Some(queue) = conn.poll_transmit() {
            // One contiguous chunk (the usual case: small frames coalesce) goes out with
            // a plain write; writev's iovec handling costs the kernel more for one
            // buffer. Several chunks (a header and a large payload) go out vectored.
            let n = if queue.chunk().len() == queue.remaining() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, queue.chunk()))?;
                queue.advance(n);
                n
            } else {
                ready!(tokio_util::io::poll_write_buf(
                    Pin::new(&mut self.io),
                    cx,
                    queue
                ))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            metrics::bytes_sent(conn.role(), n);
            wrote = true;
        }
        if wrote {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Read once into the core's buffer. EOF is passed to the core.
    fn poll_read(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.read_closed {
            // Nothing more will come; the core has been told and is closed.
            return Poll::Pending;
        }
        // Nothing buffered and small messages: read into the thread's buffer and keep
        // only what came. Large messages, or the middle of a frame: read into the
        // connection's own buffer.
        let partial = conn.buffered_input() > 0;
        let shared = if !partial && self.last_read < DIRECT_READ_MIN {
            scratch::poll_read(&mut self.io, cx, |data| conn.handle_input(data))
        } else {
            None
        };
        let read = shared.unwrap_or_else(|| {
            let room = if partial {
                READ_SIZE
            } else {
                self.last_read.clamp(DIRECT_READ_MIN, READ_SIZE)
            };
            let mut buf = conn.input_buffer(room);
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buf)
        });
        let n = match read {
            Poll::Ready(result) => result?,
            Poll::Pending => {
                // Going to sleep: an idle connection keeps no buffers.
                conn.release_idle_buffers();
                return Poll::Pending;
            }
        };
        if n == 0 {
            self.read_closed = true;
            conn.handle_eof();
        } else {
            metrics::bytes_received(conn.role(), n);
            self.last_read = n;
            conn.handle_buffered_input();
        }
        Poll::Ready(Ok(()))
    }

    /// Arm the timer for the core's next deadline; `Ready` when it fired (and the core
    /// was told).
    fn poll_timer(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = conn.poll_timeout() else {
            if self.timer.is_some() {
                self.timer = None;
            }
            return Poll::Pending;
        };
        let deadline = Instant::from_std(deadline);
        if self
            .timer
            .as_ref()
            .is_none_or(|timer| timer.sleep.deadline() != deadline)
        {
            // A new deadline (rare: the core moves it only when one fires). One that is
            // already due (the core asks to be armed as soon as it opens, with a
            // deadline in the past) is handled at once, without a trip through the
            // timer wheel.
            let now = Instant::now();
            if deadline <= now {
                self.timer = None;
                conn.handle_timeout(now.into_std());
                return Poll::Ready(());
            }
        }
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.arm(deadline);
                timer
            }
            None => self.timer.insert(Timer::new(deadline)),
        };
        ready!(timer.poll(cx));
        self.timer = None;
        conn.handle_timeout(Instant::now().into_std());
        Poll::Ready(())
    }

    /// The transport failed: remember why, and tell the core its input ended.
    fn transport_failed(&mut self, conn: &mut Connection, error: io::Error) {
        tracing::debug!(%error, "transport failed");
        if self.io_error.is_none() {
            self.io_error = Some(error);
        }
        self.read_closed = true;
        self.write_closed = true;
        conn.handle_eof();
    }

    /// Flush, shut down in the role's order, and wait for the peer's EOF (bounded).
    fn poll_teardown(&mut self, conn: &mut Connection, cx: &mut Context<'_>) -> Poll<()> {
        if self.peer_gone {
            // One try, no waiting: a peer that answered nothing for a whole keepalive
            // round will not read our close frame nor send its end of stream.
            if !self.write_closed
                && let Poll::Ready(Ok(())) = self.poll_write_queued(conn, cx)
            {
                let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            }
            self.read_closed = true;
            self.write_closed = true;
            return Poll::Ready(());
        }
        if !self.write_closed {
            match self.poll_write_queued(conn, cx) {
                Poll::Pending => return self.poll_linger(conn, cx),
                Poll::Ready(Err(_)) => self.write_closed = true,
                Poll::Ready(Ok(())) => {}
            }
        }
        // The server closes the TCP connection first (§7.1.1); a client shuts down only
        // once the server has, or the wait is over.
        if !self.write_closed && (conn.role() == Role::Server || self.read_closed) {
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Pending => return self.poll_linger(conn, cx),
                Poll::Ready(_) => self.write_closed = true,
            }
        }
        while !self.read_closed {
            let mut scratch = [0u8; 4096];
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => self.read_closed = true,
                Poll::Pending => return self.poll_linger(conn, cx),
            }
        }
        if !self.write_closed {
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            self.write_closed = true;
        }
        Poll::Ready(())
    }

    /// Wait for the teardown, but no longer than the close timeout: then give up on
    /// the peer and drop the transport.
    fn poll_linger(&mut self, conn: &Connection, cx: &mut Context<'_>) -> Poll<()> {
        let linger = self.linger.get_or_insert_with(|| {
            let wait = conn.config().close_timeout.unwrap_or(DEFAULT_LINGER);
            Box::pin(tokio::time::sleep(wait))
        });
        ready!(linger.as_mut().poll(cx));
        self.read_closed = true;
        self.write_closed = true;
        Poll::Ready(())
    }
}
