//! `ReconnectingWebSocket`: the event API over a connection that comes back by itself.
//!
//! **Why.** A browser's `WebSocket` is one connection: when it drops, the page must
//! make a new one, and every program writes the same loop, usually wrongly (retrying
//! at once in a tight loop, every client of a restarted server at the same instant, or
//! forever after a `403`). This module is that loop, written once: the handlers are
//! registered once and stay across connections, messages sent while disconnected wait
//! in a bounded queue, and the rules for when to stop are stated.
//!
//! **How.** Each attempt is a plain [`WebSocket`] made with
//! [`WebSocket::connecting`] from the builder's options and driven by its `run()`,
//! so everything the event API does (TLS, proxies, limits, keepalive, backpressure)
//! holds for every connection. Between attempts the driving task waits:
//!
//! ```text
//!  ┌─► attempt n (a WebSocket) ──open──► connected ──lost──┐
//!  │        └──────────── failed ───────────────────────────┤
//!  │                                                         ▼
//!  └── wait U(0, min(max, initial·2^n)) ◄──no── permanent? ──yes──► final close
//! ```
//!
//! The rules (backoff, servers, events, permanent closes, the offline queue) are
//! documented on [`ReconnectingWebSocket`], for users.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;
use wsevents_proto::{CloseCode, HandshakeError, Message, random};

use crate::backoff::Backoff;

use crate::api::data::{BinaryType, IntoMessage};
use crate::api::events::{CloseEvent, ErrorEvent, MessageEvent};
use crate::api::websocket::{ReadyState, WebSocket};
use crate::error::{Error, Result};
use crate::io::client::ClientBuilder;
use crate::io::url::Target;

/// [`Reconnect::initial_delay`]'s default: 500 ms.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(500);
/// [`Reconnect::max_delay`]'s default: 20 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(20);
/// [`Reconnect::stable_after`]'s default: 10 s.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);
/// [`Reconnect::max_queued`]'s default: 1,024 messages.
pub const DEFAULT_MAX_QUEUED: usize = 1024;

/// When and where a [`ReconnectingWebSocket`] reconnects.
///
/// ```
/// # fn main() -> wsevents::Result<()> {
/// use std::time::Duration;
/// use wsevents::Reconnect;
/// let options = Reconnect::new()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(5))
///     .stable_after(Duration::from_secs(30))
///     .servers(&["ws://backup-1.example:8080/feed", "ws://backup-2.example:8080/feed"])?
///     .max_queued(100)
///     .max_retries(Some(20));
/// assert_eq!(options.delay_bound(0), Duration::from_millis(200));
/// assert_eq!(options.delay_bound(2), Duration::from_millis(800));
/// assert_eq!(options.delay_bound(10), Duration::from_secs(5));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Reconnect {
    initial_delay: Duration,
    max_delay: Duration,
    stable_after: Duration,
    servers: Vec<Target>,
    max_queued: usize,
    max_retries: Option<u32>,
    final_codes: Vec<u16>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            stable_after: DEFAULT_STABLE_AFTER,
            servers: Vec::new(),
            max_queued: DEFAULT_MAX_QUEUED,
            max_retries: None,
            final_codes: Vec::new(),
        }
    }
}

impl Reconnect {
    /// The defaults: 500 ms initial delay, 20 s at most, stable after 10 s, no other
    /// server, 1,024 queued messages, retrying for ever.
    pub fn new() -> Self {
        Reconnect::default()
    }

    /// The bound of the first wait (default [`DEFAULT_INITIAL_DELAY`]); it doubles
    /// with every retry in a row.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The largest bound of a wait (default [`DEFAULT_MAX_DELAY`]).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How long a connection must stay open for the backoff to start again from
    /// [`initial_delay`](Self::initial_delay) (default [`DEFAULT_STABLE_AFTER`]).
    pub fn stable_after(mut self, period: Duration) -> Self {
        self.stable_after = period;
        self
    }

    /// Other URLs of the same service, tried in turn after the builder's: every
    /// retry goes to the next one, round robin. [`Error::Syntax`] for a bad URL. The
    /// builder's options (headers, TLS, proxy, limits) hold for all of them.
    pub fn servers<S: AsRef<str>>(mut self, urls: &[S]) -> Result<Self> {
        self.servers = urls
            .iter()
            .map(|url| Target::parse(url.as_ref()))
            .collect::<Result<_>>()?;
        Ok(self)
    }

    /// The bound on the messages [`send`](ReconnectingWebSocket::send) queues while
    /// disconnected (default [`DEFAULT_MAX_QUEUED`]); past it, `send` is
    /// [`Error::QueueFull`]. `0` queues nothing: `send` while disconnected always fails.
    pub fn max_queued(mut self, messages: usize) -> Self {
        self.max_queued = messages;
        self
    }

    /// Give up after this many retries in a row without a stable connection (the
    /// first attempt is not a retry; default `None`: never give up).
    pub fn max_retries(mut self, retries: Option<u32>) -> Self {
        self.max_retries = retries;
        self
    }

    /// Close codes of the server's after which it does not reconnect, besides those
    /// that always end it (1002, 1003, 1007, 1009, 1010, and a 4xx refusal of the
    /// handshake other than 408 and 429): an application's own, such as wsevents.v1's
    /// 4001 (unauthorized) and 4009 (disconnected by the server).
    ///
    /// ```
    /// use wsevents::Reconnect;
    /// let options = Reconnect::new().final_codes(&[4001, 4009]);
    /// # let _ = options;
    /// ```
    pub fn final_codes(mut self, codes: &[u16]) -> Self {
        self.final_codes.extend_from_slice(codes);
        self
    }

    /// The bound of the wait before retry `n` in a row (0 first):
    /// `min(max_delay, initial_delay · 2^n)`. The wait itself is uniform in
    /// `0..bound` (full jitter).
    pub fn delay_bound(&self, n: u32) -> Duration {
        self.backoff().bound(n)
    }

    /// The wait before retry `n`, for `unit` uniform in `[0, 1)`.
    pub(crate) fn delay(&self, n: u32, unit: f64) -> Duration {
        self.backoff().delay_at(n, unit)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial_delay,
            max: self.max_delay,
        }
    }
}

/// An `open` event of a [`ReconnectingWebSocket`]: a connection opened.
///
/// ```
/// use wsevents::OpenEvent;
/// let e = OpenEvent { url: "ws://127.0.0.1:9000/".into(), reconnect: true, attempt: 3 };
/// if e.reconnect {
///     println!("back on {} after {} attempts", e.url, e.attempt);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEvent {
    /// The URL of this connection (the builder's, or one of
    /// [`Reconnect::servers`]).
    pub url: String,
    /// `false` for the first connection, `true` for every one after it.
    pub reconnect: bool,
    /// Which attempt in a row this was since the last stable connection: 1 when it
    /// opened at the first try.
    pub attempt: u32,
}

/// A `close` event of a [`ReconnectingWebSocket`]: one connection (or one attempt
/// at one) ended. It derefs to the plain [`CloseEvent`] (`e.code`, `e.reason`,
/// `e.was_clean`).
///
/// ```
/// use std::time::Duration;
/// use wsevents::{CloseEvent, ReconnectCloseEvent};
/// let e = ReconnectCloseEvent {
///     close: CloseEvent { code: 1006, reason: String::new(), was_clean: false },
///     url: "ws://127.0.0.1:9000/".into(),
///     reconnect_in: Some(Duration::from_millis(350)),
/// };
/// assert_eq!(e.code, 1006);
/// assert!(e.will_reconnect());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectCloseEvent {
    /// The connection's close event.
    pub close: CloseEvent,
    /// The URL of the connection that ended.
    pub url: String,
    /// The wait before the next attempt; `None` for the final close (permanent, or
    /// [`Reconnect::max_retries`] reached).
    pub reconnect_in: Option<Duration>,
}

impl ReconnectCloseEvent {
    /// Whether another attempt follows.
    pub fn will_reconnect(&self) -> bool {
        self.reconnect_in.is_some()
    }
}

impl Deref for ReconnectCloseEvent {
    type Target = CloseEvent;

    fn deref(&self) -> &CloseEvent {
        &self.close
    }
}

type OpenFn = Arc<dyn Fn(&OpenEvent) + Send + Sync>;
type MessageFn = Arc<dyn Fn(&MessageEvent) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&ErrorEvent) + Send + Sync>;
type CloseFn = Arc<dyn Fn(&ReconnectCloseEvent) + Send + Sync>;

/// The caller's handlers, kept across connections.
#[derive(Default, Clone)]
struct Handlers {
    open: Option<OpenFn>,
    message: Option<MessageFn>,
    error: Option<ErrorFn>,
    close: Option<CloseFn>,
}

/// What clones share under one lock.
struct State {
    /// The connection of the current attempt, from its start to its close event.
    current: Option<WebSocket>,
    /// `current` is open and the queue was written into it: `send` goes straight there.
    open: bool,
    /// Messages sent while no connection was open, oldest first.
    queue: VecDeque<Message>,
    /// Index into `Shared::targets` of the current (or next) attempt.
    target: usize,
    /// The caller closed: the code and reason, for good.
    closing: Option<Option<(CloseCode, String)>>,
    /// The final close, once dispatched.
    finished: Option<ReconnectCloseEvent>,
    /// Connections opened so far.
    opens: u64,
    binary_type: BinaryType,
}

struct Shared {
    /// Options for every connection; aimed at each target in turn.
    builder: ClientBuilder,
    /// The builder's URL, then the other servers.
    targets: Vec<Target>,
    options: Reconnect,
    state: Mutex<State>,
    handlers: Mutex<Handlers>,
    /// The caller closed: ends a wait between attempts.
    closed: tokio::sync::Notify,
    /// Held by the task in `run`.
    drive: tokio::sync::Mutex<()>,
}

/// What one attempt's handlers saw.
#[derive(Default)]
struct Attempt {
    opened_at: Option<Instant>,
    /// The handshake's answer, when the server refused with a status.
    refused: Option<u16>,
    /// This end failed the connection for a protocol error (so the close code is
    /// ours, not the peer's).
    failed_here: bool,
}

/// A WebSocket client that reconnects: the event API of [`WebSocket`] across
/// connections, made with [`ClientBuilder::reconnect`]. A cheap clone: one clone
/// drives it ([`run`](Self::run)), others send and close.
///
/// - **Backoff**: full jitter (the wait is uniform in `0..min(max_delay,
///   initial_delay · 2^n)`, `n` the retries since the last stable connection), so that
///   the clients of a restarted server come back spread over the window rather than
///   all at once. A connection that stayed open for
///   [`stable_after`](Reconnect::stable_after) resets `n`; one that opens and drops at
///   once does not, so a server that accepts and closes is not hammered either.
/// - **Servers**: the builder's URL, then [`servers`](Reconnect::servers), in turn:
///   every attempt after a failure or a loss goes to the next one (the one that
///   dropped us may be going away).
/// - **Events**: every attempt's `open`, `message` and `error` events go to the
///   handlers as they are (an [`OpenEvent`] says whether it is a reconnect); every
///   attempt's `close` (a lost connection, or one that could not be made) goes to
///   [`on_close`](ReconnectingWebSocket::on_close) as a [`ReconnectCloseEvent`]: the
///   plain [`CloseEvent`] (`e.code`, `e.reason`, `e.was_clean` through `Deref`) with
///   the delay before the next attempt, or `None` for the final one.
/// - **Permanent** (never retried): the caller's own [`close`](ReconnectingWebSocket::close);
///   close codes 1002, 1003, 1007, 1009 and 1010 sent by the peer (the client is at
///   fault and would be again); a handshake refused with a 4xx status other than 408
///   and 429; the codes of [`final_codes`](Reconnect::final_codes);
///   [`max_retries`](Reconnect::max_retries) failed retries in a row.
///   Everything else is retried: connection refused, timeouts, TLS failures, 1001,
///   1006, 1008 (a slow subscriber dropped by a hub), 1011–1014, 5xx, 408, 429.
/// - **Offline queue**: [`send`](ReconnectingWebSocket::send) while no connection
///   is open queues the message (at most [`max_queued`](Reconnect::max_queued), then
///   [`Error::QueueFull`]); the queue is written, in order, into the next connection
///   as it opens, before its `open` handler runs, so before anything sent from there.
///
/// What it does not do: it does not know what the peer received. A message written
/// into a connection that then drops may be lost with it (as with any WebSocket); a
/// protocol on top that needs every message through acknowledges them and re-sends
/// (as the pub/sub client's publishes do, by key). What was still queued when
/// the socket is closed for good is dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use wsevents::{ClientBuilder, Reconnect};
/// let ws = ClientBuilder::new("ws://127.0.0.1:8080/chat")?.reconnect(Reconnect::new());
/// ws.on_open(|e| {
///     if e.reconnect {
///         eprintln!("reconnected to {}", e.url);
///     }
/// });
/// ws.on_message(|e| println!("{:?}", e.data));
/// ws.on_close(|e| match e.reconnect_in {
///     Some(delay) => eprintln!("lost ({}), again in {delay:?}", e.code),
///     None => eprintln!("closed for good ({})", e.code),
/// });
/// ws.send("hello")?; // queued until the first connection opens
/// let sender = ws.clone();
/// tokio::spawn(async move {
///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///     let _ = sender.close();
/// });
/// let last = ws.run().await;
/// # let _ = last; Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReconnectingWebSocket {
    inner: Arc<Shared>,
}

impl fmt::Debug for ReconnectingWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingWebSocket")
            .field("url", &self.url())
            .field("ready_state", &self.ready_state())
            .finish()
    }
}

impl ReconnectingWebSocket {
    pub(crate) fn new(builder: ClientBuilder, options: Reconnect) -> Self {
        let mut targets = vec![builder.target().clone()];
        targets.extend(options.servers.iter().cloned());
        ReconnectingWebSocket {
            inner: Arc::new(Shared {
                builder,
                targets,
                options,
                state: Mutex::new(State {
                    current: None,
                    open: false,
                    queue: VecDeque::new(),
                    target: 0,
                    closing: None,
                    finished: None,
                    opens: 0,
                    binary_type: BinaryType::Blob,
                }),
                handlers: Mutex::new(Handlers::default()),
                closed: tokio::sync::Notify::new(),
                drive: tokio::sync::Mutex::new(()),
            }),
        }
    }

    // ----- attributes -----

    /// The URL of the current connection, or of the next attempt.
    pub fn url(&self) -> String {
        let target = self.state().target;
        self.inner.targets[target % self.inner.targets.len()]
            .url
            .to_string()
    }

    /// `CONNECTING` while connecting or waiting to, `OPEN` while a connection is
    /// open, `CLOSING` once the caller closed, `CLOSED` after the final close.
    pub fn ready_state(&self) -> ReadyState {
        let state = self.state();
        if state.finished.is_some() {
            ReadyState::Closed
        } else if state.closing.is_some() {
            ReadyState::Closing
        } else if state.open {
            ReadyState::Open
        } else {
            ReadyState::Connecting
        }
    }

    /// Messages waiting for the next connection.
    pub fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// `protocol` of the current connection: the subprotocol its server chose, empty
    /// when none (or no connection is open).
    pub fn protocol(&self) -> String {
        let current = self.state().current.clone();
        current.map(|ws| ws.protocol()).unwrap_or_default()
    }

    /// The bound of the offline queue ([`Reconnect::max_queued`]).
    pub(crate) fn max_queued(&self) -> usize {
        self.inner.options.max_queued
    }

    /// `binaryType` of every connection.
    pub fn binary_type(&self) -> BinaryType {
        self.state().binary_type
    }

    /// Set `binaryType` for the current connection and every later one.
    pub fn set_binary_type(&self, binary_type: BinaryType) {
        let mut state = self.state();
        state.binary_type = binary_type;
        if let Some(ws) = &state.current {
            ws.set_binary_type(binary_type);
        }
    }

    // ----- handlers -----

    /// `onopen`: every connection that opens, after the queued messages were
    /// written into it.
    pub fn on_open(&self, f: impl Fn(&OpenEvent) + Send + Sync + 'static) {
        self.handlers().open = Some(Arc::new(f));
    }

    /// `onmessage`: every message of every connection.
    pub fn on_message(&self, f: impl Fn(&MessageEvent) + Send + Sync + 'static) {
        self.handlers().message = Some(Arc::new(f));
    }

    /// `onerror`: every connection's errors (a refused connection, a failed
    /// handshake, a protocol error); a `close` follows.
    pub fn on_error(&self, f: impl Fn(&ErrorEvent) + Send + Sync + 'static) {
        self.handlers().error = Some(Arc::new(f));
    }

    /// `onclose`: every connection or attempt that ended, with the wait before the
    /// next one (`None` for the final close).
    pub fn on_close(&self, f: impl Fn(&ReconnectCloseEvent) + Send + Sync + 'static) {
        self.handlers().close = Some(Arc::new(f));
    }

    // ----- methods -----

    /// Send a message on the open connection; while there is none, queue it for the
    /// next one (written before anything else on it). [`Error::QueueFull`] when
    /// [`Reconnect::max_queued`] messages already wait; [`Error::InvalidState`] once
    /// closed by the caller; the open connection's own errors (its
    /// [`Error::BufferFull`]) as they are. Nothing is sent or queued on an error.
    pub fn send(&self, data: impl IntoMessage) -> Result<()> {
        let message = data.into_message();
        let mut state = self.state();
        if state.closing.is_some() || state.finished.is_some() {
            return Err(Error::InvalidState);
        }
        if state.open
            && let Some(ws) = &state.current
        {
            match ws.send(message.clone()) {
                // Closing under us: the message waits for the next connection.
                Err(Error::InvalidState) => state.open = false,
                other => return other,
            }
        }
        if state.queue.len() >= self.inner.options.max_queued {
            return Err(Error::QueueFull {
                limit: self.inner.options.max_queued,
            });
        }
        state.queue.push_back(message);
        Ok(())
    }

    /// The open connection's socket, if one is open: for a protocol on top that sends
    /// on the open connection only (it re-sends what matters itself on every open, so
    /// nothing from the offline queue may overtake it) and paces what it sends by what
    /// the connection has unsent ([`WebSocket::buffered_at_most`]).
    pub(crate) fn open_socket(&self) -> Option<WebSocket> {
        let state = self.state();
        state.current.clone().filter(|_| state.open)
    }

    /// End the open connection, not the socket: it reconnects as after any loss (a
    /// protocol on top that cannot go on with this connection).
    pub(crate) fn drop_connection(&self, code: CloseCode, reason: &str) {
        if let Some(ws) = self.open_socket() {
            // Fails only when closing already.
            let _ = ws.close_with_code(code, reason);
        }
    }

    /// Close for good, with no status code: the open connection starts its closing
    /// handshake, an attempt in progress is abandoned, no other is made. Does nothing
    /// when already closed.
    pub fn close(&self) -> Result<()> {
        self.close_for_good(None)
    }

    /// Close for good with `code` (1000 or 3000–4999, else [`Error::InvalidAccess`])
    /// and `reason` (at most 123 bytes, else [`Error::Syntax`]).
    pub fn close_with(&self, code: u16, reason: &str) -> Result<()> {
        let code = crate::api::websocket::check_close_with(code, reason)?;
        self.close_for_good(Some((code, reason.to_owned())))
    }

    fn close_for_good(&self, frame: Option<(CloseCode, String)>) -> Result<()> {
        let current = {
            let mut state = self.state();
            if state.closing.is_some() || state.finished.is_some() {
                return Ok(());
            }
            state.closing = Some(frame.clone());
            state.open = false;
            state.current.clone()
        };
        self.inner.closed.notify_one();
        match (current, frame) {
            (None, _) => Ok(()),
            (Some(ws), None) => ws.close(),
            (Some(ws), Some((code, reason))) => ws.close_with(code.as_u16(), &reason),
        }
    }

    // ----- driving -----

    /// Connect, and reconnect, dispatching every event to the handlers, until closed
    /// for good; returns the final close. Only one clone drives at a time; a `run`
    /// after the end returns the same final close at once.
    ///
    /// Every wait is bounded: an attempt by the builder's connect timeout, a wait
    /// between attempts by [`Reconnect::max_delay`]; an open connection lasts as long
    /// as it lives (set [`Config::ping_interval`](crate::Config) to notice a peer that
    /// went silent).
    pub async fn run(&self) -> ReconnectCloseEvent {
        let _drive = self.inner.drive.lock().await;
        let mut retries: u32 = 0;
        loop {
            if let Some(done) = self.state().finished.clone() {
                return done;
            }
            let Some((ws, url)) = self.start_attempt() else {
                let close = self.caller_close_event();
                return self.finish(close, self.url());
            };
            let attempt = Arc::new(Mutex::new(Attempt::default()));
            self.attach(&ws, &url, &attempt, retries + 1);
            let close = ws.run().await;
            let seen = std::mem::take(&mut *lock(&attempt));
            let caller_closed = {
                let mut state = self.state();
                state.current = None;
                state.open = false;
                state.closing.is_some()
            };
            let final_code =
                !seen.failed_here && self.inner.options.final_codes.contains(&close.code);
            if caller_closed || final_code || permanent(close.code, seen.refused, seen.failed_here)
            {
                return self.finish(close, url);
            }
            let stable = seen
                .opened_at
                .is_some_and(|at| at.elapsed() >= self.inner.options.stable_after);
            if stable {
                retries = 0;
            }
            if self
                .inner
                .options
                .max_retries
                .is_some_and(|max| retries >= max)
            {
                return self.finish(close, url);
            }
            let delay = self.inner.options.delay(retries, random::unit());
            retries = retries.saturating_add(1);
            self.state().target += 1;
            let event = ReconnectCloseEvent {
                close,
                url,
                reconnect_in: Some(delay),
            };
            if let Some(f) = self.handlers().close.clone() {
                guarded(|| f(&event));
            }
            let closed = self.inner.closed.notified();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = closed => {}
            }
        }
    }

    /// The next attempt's socket, registered as current; `None` once the caller
    /// closed.
    fn start_attempt(&self) -> Option<(WebSocket, String)> {
        let mut state = self.state();
        if state.closing.is_some() {
            return None;
        }
        let target = self.inner.targets[state.target % self.inner.targets.len()].clone();
        let url = target.url.to_string();
        let ws = WebSocket::connecting(self.inner.builder.clone().retarget(target));
        ws.set_binary_type(state.binary_type);
        state.current = Some(ws.clone());
        state.open = false;
        Some((ws, url))
    }

    /// The caller's handlers on one attempt's socket. They hold the shared state
    /// weakly: the socket is the shared state's, not the other way round.
    fn attach(&self, ws: &WebSocket, url: &str, attempt: &Arc<Mutex<Attempt>>, number: u32) {
        let weak = Arc::downgrade(&self.inner);
        let (seen, url) = (attempt.clone(), url.to_owned());
        ws.on_open(move |_| {
            let Some(this) = upgrade(&weak) else { return };
            lock(&seen).opened_at = Some(Instant::now());
            let reconnect = this.flush_into_current();
            let event = OpenEvent {
                url: url.clone(),
                reconnect,
                attempt: number,
            };
            if let Some(f) = this.handlers().open.clone() {
                f(&event);
            }
        });
        let weak = Arc::downgrade(&self.inner);
        ws.on_message(move |e| {
            let Some(this) = upgrade(&weak) else { return };
            let f = this.handlers().message.clone();
            if let Some(f) = f {
                f(e);
            }
        });
        let weak = Arc::downgrade(&self.inner);
        let seen = attempt.clone();
        ws.on_error(move |e| {
            let Some(this) = upgrade(&weak) else { return };
            {
                let mut seen = lock(&seen);
                match e.error() {
                    Some(Error::Handshake(HandshakeError::UnexpectedStatus { status, .. })) => {
                        seen.refused = Some(*status);
                    }
                    Some(Error::Protocol(_)) => seen.failed_here = true,
                    _ => {}
                }
            }
            if let Some(f) = this.handlers().error.clone() {
                f(e);
            }
        });
    }

    /// On open: write the queue into the connection, in order, and from now on send
    /// straight to it (both under the state lock, so no `send` overtakes the queue).
    /// Returns whether this is a reconnect.
    fn flush_into_current(&self) -> bool {
        let mut refused = Vec::new();
        let reconnect = {
            let mut state = self.state();
            state.opens += 1;
            let reconnect = state.opens > 1;
            let Some(ws) = state.current.clone() else {
                return reconnect;
            };
            state.open = true;
            while let Some(message) = state.queue.pop_front() {
                match ws.send(message.clone()) {
                    Ok(()) => {}
                    Err(Error::InvalidState) => {
                        // Already closing: keep it (and the rest) for the next one.
                        state.queue.push_front(message);
                        state.open = false;
                        break;
                    }
                    // The connection's own bound (`Backpressure`): reported, dropped.
                    Err(error) => refused.push(error),
                }
            }
            reconnect
        };
        if !refused.is_empty()
            && let Some(f) = self.handlers().error.clone()
        {
            for error in refused {
                f(&ErrorEvent::new(error));
            }
        }
        reconnect
    }

    /// The close event for the caller's close when no connection was there to close.
    fn caller_close_event(&self) -> CloseEvent {
        let closing = self.state().closing.clone().flatten();
        let (code, reason) = closing.unwrap_or((CloseCode::NO_STATUS_RECEIVED, String::new()));
        CloseEvent {
            code: code.as_u16(),
            reason,
            was_clean: true,
        }
    }

    /// The final close: dispatched once, kept for later `run`s; the queue and the
    /// handlers (which often hold a clone of this socket) are dropped.
    fn finish(&self, close: CloseEvent, url: String) -> ReconnectCloseEvent {
        let event = ReconnectCloseEvent {
            close,
            url,
            reconnect_in: None,
        };
        {
            let mut state = self.state();
            state.finished = Some(event.clone());
            state.queue = VecDeque::new();
            state.current = None;
            state.open = false;
        }
        let handlers = std::mem::take(&mut *self.handlers());
        if let Some(f) = handlers.close {
            guarded(|| f(&event));
        }
        event
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn handlers(&self) -> MutexGuard<'_, Handlers> {
        lock(&self.inner.handlers)
    }
}

/// Whether a connection that ended so must not be retried: the peer closed with a
/// code that blames this end (1002, 1003, 1007, 1009, 1010: it would happen again),
/// or refused the handshake with a 4xx other than 408 (timeout) and 429 (too many
/// requests). A code this end sent itself (`failed_here`: it found the peer at fault)
/// is retried.
fn permanent(code: u16, refused: Option<u16>, failed_here: bool) -> bool {
    if let Some(status) = refused {
        return (400..500).contains(&status) && status != 408 && status != 429;
    }
    !failed_here && matches!(code, 1002 | 1003 | 1007 | 1009 | 1010)
}

/// Lock, carrying on after a panic elsewhere (the state is consistent between calls).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn upgrade(weak: &Weak<Shared>) -> Option<ReconnectingWebSocket> {
    weak.upgrade().map(|inner| ReconnectingWebSocket { inner })
}

/// Run a handler outside the socket's dispatch, a panic logged rather than ending
/// the driving task.
fn guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::warn!("a close handler panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delay_bound_doubles_up_to_the_max() {
        let options = Reconnect::new()
            .initial_delay(ms(500))
            .max_delay(ms(20_000));
        let bounds: Vec<_> = (0..8).map(|n| options.delay_bound(n)).collect();
        assert_eq!(
            bounds,
            [500, 1000, 2000, 4000, 8000, 16_000, 20_000, 20_000].map(ms)
        );
        assert_eq!(options.delay_bound(u32::MAX), ms(20_000));
    }

    #[test]
    fn jittered_delays_stay_within_the_bound_and_spread_over_it() {
        let options = Reconnect::new().initial_delay(ms(100)).max_delay(ms(1_000));
        for n in 0..40 {
            let bound = options.delay_bound(n);
            let delays: Vec<_> = (0..200).map(|_| options.delay(n, random::unit())).collect();
            assert!(delays.iter().all(|d| *d <= bound && *d <= ms(1_000)));
            // Full jitter: some waits in the lower half, some in the upper one.
            assert!(delays.iter().any(|d| *d < bound / 2), "n = {n}");
            assert!(delays.iter().any(|d| *d > bound / 2), "n = {n}");
        }
        assert_eq!(options.delay(3, 0.0), Duration::ZERO);
        assert_eq!(options.delay(3, 1.0), ms(800));
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..10_000 {
            let u = random::unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn which_ends_are_permanent() {
        for code in [1002, 1003, 1007, 1009, 1010] {
            assert!(permanent(code, None, false), "{code}");
            // Sent by this end about the peer: retried.
            assert!(!permanent(code, None, true), "{code}");
        }
        for code in [1000, 1001, 1005, 1006, 1008, 1011, 1012, 1013, 1014, 4000] {
            assert!(!permanent(code, None, false), "{code}");
        }
        for status in [400, 401, 403, 404, 426] {
            assert!(permanent(1006, Some(status), false), "{status}");
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(!permanent(1006, Some(status), false), "{status}");
        }
    }
}
