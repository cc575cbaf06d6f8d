//! `WebSocket`: the browser's WebSocket API in Rust, for clients and servers alike.
//!
//! One connection is driven by whichever clone calls [`WebSocket::run`] (or, for
//! [`WebSocket::next_event`], a task that its first call starts): that task reads the
//! socket, feeds the protocol core, writes what is queued, and runs the handlers, one
//! event at a time, in order, as JavaScript's event loop does. Other clones only queue
//! (`send`, `close`) and wake the driving task. A sync handler that takes its time
//! therefore slows the reading of the socket, not the growth of a queue; a handler
//! that awaits (`on_message_async`) keeps the connection driven while it awaits, and
//! at most `max_queue` events wait for it before reading pauses (`dispatch.rs`). Per
//! connection, memory stays bounded by the receive buffer (at most one frame,
//! `Config::max_frame_size`), the events waiting, and what the program itself queues
//! to send (`buffered_amount`, bounded by [`Backpressure`]); the bound is spelled out
//! on [`WebSocket`].
//!
//! The core is shared behind a `std` mutex, held only for the length of one
//! non-blocking poll or one `send`; handlers are never called with a lock held, so a
//! handler may send, close or register handlers on its own socket.
//!
//! **What one message costs** (the event API's hot path, as cheap as the stream
//! API's): one lock of the core to poll it, which also takes the event's callbacks (a
//! copy-on-write list: a reference count, no allocation) and translates the message
//! (its payload is the core's `Bytes`, the origin a shared `Arc<str>`, nothing is
//! copied or validated again); a `send` from a handler is a second lock. The driving
//! task is woken by a `send` only when it is parked waiting for the socket (the
//! `parked` flag under the core lock): a handler's `send` runs on the driving task
//! itself, which writes what was queued before it reads again, so waking it would
//! only make the scheduler poll it once more for nothing. `run` takes the drive lock
//! once for the whole connection, not once per event.

mod dispatch;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use wsevents_proto::{CloseCode, CloseFrame, Connection, PreparedMessage, Role, State};

use crate::api::data::{BinaryType, IntoMessage, MessageRef, data_of};
use crate::api::events::{
    Callback, CloseEvent, ErrorEvent, Event, EventType, ListenerId, MessageEvent, PingEvent,
    PongEvent, Registry,
};
use crate::backpressure::{Backpressure, DEFAULT_MAX_QUEUE, WhenFull};
use crate::error::{Error, Result};
use crate::io::client::ClientBuilder;
use crate::io::driver::Driver;
use crate::io::server::handshake::{ServerHandshake, client_request_to_http, response_to_http};
use crate::io::stream::WebSocketStream;
use crate::io::url::check_protocols;
use dispatch::Dispatch;

/// Where sockets' ids come from.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A transport of any kind, boxed so that [`WebSocket`] is one type.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> Transport for T {}
type BoxedDriver = Driver<Box<dyn Transport>>;

/// The ready state (`ws.readyState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// 0: the connection is not yet open.
    Connecting = 0,
    /// 1: the connection is open and ready to communicate.
    Open = 1,
    /// 2: the connection is going through the closing handshake.
    Closing = 2,
    /// 3: the connection is closed or could not be opened.
    Closed = 3,
}

/// Where the driving side is.
enum Drive {
    /// Client: TCP not connected yet; the options to connect with.
    NotStarted(Box<ClientBuilder>),
    /// The transport and its driver.
    Running(BoxedDriver),
    /// `next_event` handed the driver to a task of its own, which drives the
    /// connection and queues the events for it (`dispatch.rs`).
    Pulled,
    /// The close event has been produced.
    Finished,
}

/// What clones share under the core lock.
struct Core {
    /// The protocol core, once the transport exists.
    conn: Option<Connection>,
    /// Events made here rather than by the core (`open` of an accepted connection,
    /// failures before the core exists).
    queued: VecDeque<Event>,
    /// `close()` was called while the transport was still being connected.
    aborted: bool,
    /// The close event was dispatched: the state is CLOSED for good.
    closed: bool,
    /// The bound on `buffered_amount` and its rule.
    backpressure: Backpressure,
    /// The handlers and listeners (under this lock too: the poll that produces an
    /// event takes its callbacks in the same critical section).
    registry: Registry,
    /// The driving task is waiting in a poll of the core that returned `Pending`
    /// (and `driver_waker` wakes it). Otherwise it is running, and will write what is
    /// queued before it waits again: a `send` need not wake it.
    parked: bool,
    /// The waker of the driving task's last `Pending` poll.
    driver_waker: Option<Waker>,
    /// Tasks waiting for `buffered_amount` to fall to a bound
    /// ([`WebSocket::buffered_at_most`]); empty (and never looked into past one
    /// length check) unless someone waits.
    drain_waiters: DrainWaiters,
    /// How many received events may wait for a handler that awaits (or for
    /// `next_event`) before reading pauses ([`WebSocket::set_max_queue`]).
    max_queue: usize,
    /// The driving task polls without reading: the events waiting reached
    /// `max_queue`. Taking one of `next_event`'s wakes it.
    read_paused: bool,
    /// Once `next_event` drives in a task of its own: the events it queued.
    pull: Option<Box<dispatch::Pulled>>,
}

struct Inner {
    /// Unique in the process: the hub's key for this socket.
    id: u64,
    url: String,
    /// Shared with every message event (`e.origin`).
    origin: Arc<str>,
    core: Mutex<Core>,
    drive: tokio::sync::Mutex<Drive>,
    binary_type: AtomicU8,
    /// Wakes a connecting driver when `close()` aborts it.
    abort: tokio::sync::Notify,
    /// Server sockets: the request that opened it and the peer.
    handshake: Option<Box<ServerHandshake>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // `next_event`'s task holds the socket weakly and the driver itself: wake it,
        // so that it notices and drops the transport.
        let core = self.core.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = core.driver_waker.take() {
            waker.wake();
        }
    }
}

/// A WebSocket connection with the browser's event API.
///
/// | JavaScript (the seed) | Rust |
/// |---|---|
/// | `var ws = new WebSocket("ws://host/chat")` | `let ws = WebSocket::new("ws://host/chat")?;` |
/// | `ws.onopen = function (e) { … }` | `ws.on_open(\|e\| { … });` |
/// | `ws.onmessage = function (e) { e.data … }` | `ws.on_message(\|e\| match &e.data { … });` |
/// | `ws.binaryType = "arraybuffer"` | `ws.set_binary_type(BinaryType::ArrayBuffer);` |
/// | `ws.onerror = function (e) { … }` | `ws.on_error(\|e\| { … });` |
/// | `ws.onclose = function (e) { e.code, e.reason, e.wasClean }` | `ws.on_close(\|e\| { e.code; e.reason; e.was_clean; });` |
/// | `ws.addEventListener("message", f)` | `let id = ws.add_event_listener(EventType::Message, f);` |
/// | `ws.send("Hello")` | `ws.send("Hello")?;` |
/// | `ws.send(new Blob(["blob contents"]))` | `ws.send(Blob::from("blob contents"))?;` |
/// | `ws.send(new Uint8Array([1,2,3,4,5,6,7,8]).buffer)` | `ws.send(vec![1u8, 2, 3, 4, 5, 6, 7, 8])?;` |
/// | `ws.close()` / `ws.close(1000, "Closing normally")` | `ws.close()?;` / `ws.close_with(1000, "Closing normally")?;` |
/// | `ws.readyState`, `ws.bufferedAmount` | `ws.ready_state()`, `ws.buffered_amount()` |
/// | (the browser's event loop) | `ws.run().await` |
///
/// Differences from the browser, on purpose: the connection starts when a clone first
/// drives it (`run` / `next_event`), not in the background; errors are values
/// (`Err(Error::InvalidState)` where JavaScript throws); [`ErrorEvent`] carries the
/// cause; a panicking handler is reported as an `error` event and dispatch goes on
/// (an async one's panic also closes the connection with 1011); an async handler's
/// work ends before the next event is dispatched (JavaScript lets the next one in at
/// the first `await`); the send queue has a bound ([`Backpressure`]), and so has the
/// queue of events waiting for a handler that awaits ([`max_queue`](Self::max_queue)).
///
/// # Handlers that await
///
/// A server's handler usually awaits something (a database, another service) before
/// it answers. The ways to write it, side by side:
///
/// | pattern | events handled | while it awaits | a slow handler |
/// |---|---|---|---|
/// | [`on_message_async`](Self::on_message_async) + [`run`](Self::run) | one at a time, in order | the connection is driven: pings answered, keepalive kept, other clones' and the hub's sends written, the peer's close answered | reading pauses once [`max_queue`](Self::max_queue) events wait (16): the peer is slowed |
/// | `while let Some(e) = ws.next_event().await { ….await }` | one at a time, in order | the same: `next_event`'s task drives the connection | the same bound, on events not yet taken |
/// | [`on_message`](Self::on_message) + [`run`](Self::run) (sync) | one at a time, in order | (it cannot await) | reading stops while it runs |
/// | `on_message` spawning a task per message | **in any order** | the connection is driven | nothing slows the peer: tasks pile up |
/// | the stream API (`while let Some(m) = ws.next().await { ….await }`) | one at a time, in order | **not driven**: no pong, no write until the next `next()` | the peer is slowed |
///
/// ```no_run
/// # async fn lookup(_: &str) -> String { String::new() }
/// # async fn demo(server: wsevents::Server) {
/// use wsevents::Event;
/// // A handler that awaits, under `run`:
/// let ws = server.accept().await.unwrap();
/// let reply = ws.clone();
/// ws.on_message_async(move |e| {
///     let reply = reply.clone();
///     async move {
///         let answer = lookup(e.data.as_text().unwrap_or_default()).await;
///         let _ = reply.send(answer);
///     }
/// });
/// tokio::spawn(async move { ws.run().await });
///
/// // The same as a loop:
/// let ws = server.accept().await.unwrap();
/// tokio::spawn(async move {
///     while let Some(event) = ws.next_event().await {
///         if let Event::Message(e) = event {
///             let answer = lookup(e.data.as_text().unwrap_or_default()).await;
///             let _ = ws.send(answer);
///         }
///     }
/// });
/// # }
/// ```
///
/// Extensions, which browsers do not have: `ping` and `pong` events beside the four
/// ([`on_ping`](Self::on_ping), [`on_pong`](Self::on_pong) with the round-trip time,
/// [`EventType::Ping`] / [`EventType::Pong`] for listeners), [`ping`](Self::ping),
/// [`close_with_code`](Self::close_with_code) for the codes browsers keep to
/// themselves, and [`set_backpressure`](Self::set_backpressure).
///
/// # Memory per connection
///
/// Every buffer a connection holds has a bound, so a server can size itself by its
/// connection count:
///
/// - **receiving**: at most one frame, [`Config::max_frame_size`](crate::Config)
///   (16 MiB by default), or for a fragmented message the message so far,
///   `Config::max_message_size` (64 MiB). Reading stops while a sync handler runs, so
///   nothing else piles up: a fast peer is held back by TCP. While a handler awaits
///   (or `next_event` is not called), at most [`max_queue`](Self::max_queue) received
///   events wait (16 by default), each at most one message; then reading stops.
/// - **sending**: [`buffered_amount`](Self::buffered_amount) is at most the
///   [`Backpressure`] limit (16 MiB by default), or one message when a single message
///   larger than the limit was sent on an empty queue: at most the limit plus one
///   message. Add the frame headers and at most one queued pong (125 bytes).
/// - **permessage-deflate**, when negotiated: a compressor (about 256 KiB at the
///   default 15 window bits) and a decompressor (about 40 KiB), each made on first
///   use.
/// - an idle connection gives its empty receive and send buffers back.
///
/// ```no_run
/// use wsevents::{BinaryType, Data, WebSocket};
/// # async fn demo() -> Result<(), wsevents::Error> {
/// let ws = WebSocket::new("ws://127.0.0.1:8080/ws")?;
/// ws.set_binary_type(BinaryType::ArrayBuffer);
/// let sender = ws.clone();
/// ws.on_open(move |_| {
///     println!("Connect open...");
///     sender.send("Hello WebSocket.").unwrap();
/// });
/// ws.on_message(|e| match &e.data {
///     Data::Text(text) => println!("String message received: {text}"),
///     other => println!("Other message received: {other:?}"),
/// });
/// ws.on_close(|e| println!("closed: {} {} {}", e.code, e.reason, e.was_clean));
/// let closed = ws.run().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WebSocket {
    inner: Arc<Inner>,
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("url", &self.inner.url)
            .field("ready_state", &self.ready_state())
            .finish()
    }
}

impl WebSocket {
    /// `new WebSocket(url)`: checks the URL at once (a bad one is
    /// [`Error::Syntax`]) and returns a socket in [`ReadyState::Connecting`]. The
    /// connection is made when the socket is first driven.
    pub fn new(url: &str) -> Result<WebSocket> {
        Self::with_protocols(url, &[] as &[&str])
    }

    /// `new WebSocket(url, protocols)`: also offers subprotocols, which must be distinct
    /// tokens (else [`Error::Syntax`]).
    pub fn with_protocols<S: AsRef<str>>(url: &str, protocols: &[S]) -> Result<WebSocket> {
        check_protocols(protocols)?;
        let builder = ClientBuilder::new(url)?.protocols(protocols)?;
        Ok(WebSocket::connecting(builder))
    }

    /// A socket that connects with `builder`'s options (TLS roots, headers, limits,
    /// timeouts), in [`ReadyState::Connecting`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wsevents::Error> {
    /// use wsevents::{Backpressure, ClientBuilder, CloseCode, WebSocket};
    /// let builder = ClientBuilder::new("ws://127.0.0.1:8080/feed")?
    ///     .backpressure(Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER))?;
    /// let ws = WebSocket::connecting(builder);
    /// # let _ = ws; Ok(()) }
    /// ```
    pub fn connecting(builder: ClientBuilder) -> WebSocket {
        let url = builder.url().to_string();
        let origin = builder.url().origin().ascii_serialization();
        let backpressure = builder.backpressure_rule();
        WebSocket::build(
            url,
            origin,
            None,
            Drive::NotStarted(Box::new(builder)),
            VecDeque::new(),
            backpressure,
            None,
        )
    }

    /// The event API over a connection opened elsewhere: accepted with
    /// [`Acceptor::accept`](crate::Acceptor::accept) on a transport of the caller's
    /// (one that sniffed the request first, or a hyper/axum upgrade wrapped with
    /// [`WebSocketStream::from_upgraded`]), or connected with
    /// [`connect`](crate::connect). The socket is open: its `open` event is the first
    /// one dispatched. `url` is what [`url`](Self::url) reports and where message
    /// events' `origin` comes from.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Acceptor, WebSocket};
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// let (tcp, _) = listener.accept().await?;
    /// let (stream, request) = Acceptor::new().route("/chat").accept(tcp).await?;
    /// let host = request.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
    /// let ws = WebSocket::from_stream(stream, format!("ws://{host}{}", request.uri()));
    /// ws.on_message(|e| println!("{:?}", e.data));
    /// ws.run().await;
    /// # Ok(()) }
    /// ```
    pub fn from_stream<S>(stream: WebSocketStream<S>, url: impl Into<String>) -> WebSocket
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
    {
        WebSocket::accepted(stream, url.into())
    }

    /// A socket over a connection a server accepted (already open; its `open` event
    /// is the first one dispatched).
    pub(crate) fn accepted<S>(stream: WebSocketStream<S>, url: String) -> WebSocket
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
    {
        let mut stream = stream;
        let handshake = stream.take_handshake();
        let (driver, conn) = stream.into_parts();
        let driver = map_driver(driver);
        let origin = url::Url::parse(&url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        // A server connection's bounds are its acceptor's.
        let limits = handshake.as_ref().map(|h| h.limits).unwrap_or_default();
        let ws = WebSocket::build(
            url,
            origin,
            Some(conn),
            Drive::Running(driver),
            VecDeque::from([Event::Open]),
            limits.backpressure,
            handshake,
        );
        ws.set_max_queue(limits.max_queue);
        ws
    }

    fn build(
        url: String,
        origin: String,
        conn: Option<Connection>,
        drive: Drive,
        queued: VecDeque<Event>,
        backpressure: Backpressure,
        handshake: Option<Box<ServerHandshake>>,
    ) -> WebSocket {
        WebSocket {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                url,
                origin: origin.into(),
                core: Mutex::new(Core {
                    conn,
                    queued,
                    aborted: false,
                    closed: false,
                    backpressure,
                    registry: Registry::default(),
                    parked: false,
                    driver_waker: None,
                    drain_waiters: DrainWaiters::default(),
                    max_queue: DEFAULT_MAX_QUEUE,
                    read_paused: false,
                    pull: None,
                }),
                drive: tokio::sync::Mutex::new(drive),
                binary_type: AtomicU8::new(0),
                abort: tokio::sync::Notify::new(),
                handshake,
            }),
        }
    }

    // ----- attributes -----

    /// `ws.url`: the URL (for a server-side socket, the one the client asked for).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Server sockets: the peer's address, when the transport has one (always on a
    /// [`Server`](crate::Server)'s sockets); `None` on clients.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.handshake.as_ref().and_then(|h| h.peer_addr)
    }

    /// Server sockets: the request's path, without the query, as sent
    /// (percent-encoded); kept from the handshake, not parsed again. `None` on
    /// clients (see [`url`](Self::url)).
    pub fn path(&self) -> Option<&str> {
        self.inner.handshake.as_ref().map(|h| h.path())
    }

    /// Server sockets: the route the request matched, as written (`/topic/{name}`,
    /// see [`Acceptor::route`](crate::Acceptor::route) and
    /// [`ServerBuilder::route`](crate::ServerBuilder::route)); `None` when there were
    /// no routes or a fallback served the path.
    pub fn route(&self) -> Option<&str> {
        Some(self.inner.handshake.as_ref()?.route()?.route())
    }

    /// Server sockets: the value of the route's parameter `name`, percent-decoded:
    /// `news` for `/topic/news` on the route `/topic/{name}`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::{Server, WebSocket};
    /// let server = Server::route("/topic/{name}", |ws: WebSocket| async move {
    ///     let topic = ws.param("name").unwrap_or_default().to_owned();
    ///     println!("a subscriber of {topic}");
    ///     ws.run().await;
    /// })
    /// .bind("127.0.0.1:8080")
    /// .await?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.inner.handshake.as_ref()?.route()?.param(name)
    }

    /// Server sockets: every parameter of the route matched, in the route's order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .handshake
            .as_ref()
            .and_then(|h| h.route())
            .into_iter()
            .flat_map(|route| route.params())
    }

    /// `ws.readyState`.
    pub fn ready_state(&self) -> ReadyState {
        let core = self.core();
        if core.closed {
            return ReadyState::Closed;
        }
        match core.conn.as_ref().map(Connection::state) {
            None | Some(State::Connecting) => ReadyState::Connecting,
            Some(State::Open) => ReadyState::Open,
            // Closed in the core but the close event not yet dispatched: the browser
            // still says CLOSING while the transport winds down.
            Some(State::Closing) | Some(State::Closed) => ReadyState::Closing,
        }
    }

    /// `ws.bufferedAmount`: bytes queued by `send` and not yet written to the socket
    /// (application data: text as UTF-8, binary as is, before compression and
    /// framing). Bounded by the socket's [`Backpressure`].
    pub fn buffered_amount(&self) -> u64 {
        self.core()
            .conn
            .as_ref()
            .map_or(0, |c| c.buffered_amount() as u64)
    }

    /// `ws.protocol`: the subprotocol the server chose, empty if none (or not open
    /// yet).
    pub fn protocol(&self) -> String {
        self.core()
            .conn
            .as_ref()
            .and_then(|c| c.protocol().map(str::to_owned))
            .unwrap_or_default()
    }

    /// `ws.extensions`: the extensions the server accepted, empty if none.
    pub fn extensions(&self) -> String {
        self.core()
            .conn
            .as_ref()
            .map(|c| c.extensions().to_owned())
            .unwrap_or_default()
    }

    /// The upgrade request (a wsevents extension: browsers hide the handshake).
    ///
    /// - Server sockets: the request that opened this connection (URI, every header:
    ///   a cookie, a token in the query), as the accept hook saw it.
    /// - Clients: the request as sent (headers, key, the extension offers), once the
    ///   transport is up (also after a failed handshake); `None` before.
    ///   `wsevents connect --verbose` prints it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// let server = wsevents::Server::bind("127.0.0.1:8080").await?;
    /// while let Some(ws) = server.accept().await {
    ///     let request = ws.request().expect("a server socket keeps its request");
    ///     let user = wsevents::cookie(request.headers(), "user").map(str::to_owned);
    ///     println!("{user:?} at {} from {:?}", request.uri(), ws.peer_addr());
    ///     tokio::spawn(async move { ws.run().await });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn request(&self) -> Option<http::Request<()>> {
        if let Some(handshake) = &self.inner.handshake {
            return Some(handshake.request());
        }
        let core = self.core();
        client_request_to_http(core.conn.as_ref()?.request()?)
    }

    /// Client: the server's 101 response (every header as sent), once open; `None`
    /// before, for a server-side socket, or when the handshake failed.
    pub fn response(&self) -> Option<http::Response<()>> {
        Some(response_to_http(self.core().conn.as_ref()?.response()?))
    }

    /// `ws.binaryType`.
    pub fn binary_type(&self) -> BinaryType {
        match self.inner.binary_type.load(Ordering::Relaxed) {
            0 => BinaryType::Blob,
            _ => BinaryType::ArrayBuffer,
        }
    }

    /// `ws.binaryType = …`: decides what binary messages arrive as, from the next one
    /// dispatched on.
    pub fn set_binary_type(&self, binary_type: BinaryType) {
        let value = match binary_type {
            BinaryType::Blob => 0,
            BinaryType::ArrayBuffer => 1,
        };
        self.inner.binary_type.store(value, Ordering::Relaxed);
    }

    /// The bound on [`buffered_amount`](Self::buffered_amount) and what
    /// [`send`](Self::send) does at it (a wsevents extension; browsers have no bound).
    /// A client's comes from [`ClientBuilder::backpressure`], a server socket's from
    /// its acceptor ([`Acceptor::backpressure`](crate::Acceptor::backpressure));
    /// otherwise [`Backpressure::default()`]: 16 MiB, then [`Error::BufferFull`].
    pub fn backpressure(&self) -> Backpressure {
        self.core().backpressure
    }

    /// Set the bound on [`buffered_amount`](Self::buffered_amount) and its rule, from
    /// the next `send` on (what is already queued stays). [`Error::InvalidAccess`] for
    /// a [`WhenFull::Close`] code that may not be sent in a close frame; the rule is
    /// unchanged then.
    ///
    /// ```no_run
    /// # async fn demo(server: wsevents::Server) -> Result<(), wsevents::Error> {
    /// use wsevents::{Backpressure, CloseCode};
    /// while let Some(ws) = server.accept().await {
    ///     // A slow reader is dropped with 1008 once 1 MiB waits for it.
    ///     ws.set_backpressure(Backpressure::close(1 << 20, CloseCode::POLICY_VIOLATION))?;
    ///     tokio::spawn(async move { ws.run().await });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_backpressure(&self, backpressure: Backpressure) -> Result<()> {
        self.core().backpressure = backpressure.checked()?;
        Ok(())
    }

    // ----- handlers -----

    /// `ws.onopen = f` (replaces the previous `on_open`, keeps listeners).
    pub fn on_open(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Open, Callback::Any(Arc::new(f)));
    }

    /// `ws.onmessage = f`.
    pub fn on_message(&self, f: impl Fn(&MessageEvent) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Message, Callback::Message(Arc::new(f)));
    }

    /// `ws.onmessage = async (e) => { … }`, for handlers that await (a database,
    /// another service, a queue) before they answer: `f` gets its own copy of each
    /// message event (shared bytes, not copied) and returns the work to await. Like
    /// [`on_message`](Self::on_message), it is the socket's one message handler: each
    /// replaces the other, and listeners stay.
    ///
    /// Unlike JavaScript, where an async handler lets the next event in at its first
    /// `await`, the events of a connection stay **one at a time, in order**: the next
    /// event is dispatched once this work is done. Meanwhile the connection stays
    /// **driven** by the task that runs it ([`run`](Self::run)): pings are answered,
    /// keepalive deadlines kept, what the handler, other clones and the hub send is
    /// written at once, and a peer's close is answered. The events that arrive wait,
    /// [`max_queue`](Self::max_queue) of them at most (16 by default); then the socket
    /// is not read until the handler is done, so a slow handler slows the peer down
    /// (backpressure) instead of growing memory. A handler that panics is reported as
    /// an `error` event, and the connection closes with 1011 (its `close` event
    /// follows). The work must not drive its own socket (`run`, `next_event`): that
    /// waits for the connection to end.
    ///
    /// ```no_run
    /// # async fn lookup(_: &str) -> String { String::new() }
    /// # async fn demo(ws: wsevents::WebSocket) {
    /// let reply = ws.clone();
    /// ws.on_message_async(move |e| {
    ///     let reply = reply.clone();
    ///     async move {
    ///         let answer = lookup(e.data.as_text().unwrap_or_default()).await;
    ///         let _ = reply.send(answer);
    ///     }
    /// });
    /// ws.run().await;
    /// # }
    /// ```
    pub fn on_message_async<F, Fut>(&self, f: F)
    where
        F: Fn(MessageEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.core().registry.set_handler(
            EventType::Message,
            Callback::AsyncMessage(Arc::new(move |e| Box::pin(f(e)))),
        );
    }

    /// How many received events may wait while a handler awaits
    /// ([`on_message_async`](Self::on_message_async)), or until
    /// [`next_event`](Self::next_event) takes them, before the socket is no longer
    /// read (a wsevents extension): [`DEFAULT_MAX_QUEUE`] (16) unless set, here or for
    /// a server socket on its acceptor
    /// ([`Acceptor::max_queue`](crate::Acceptor::max_queue)).
    pub fn max_queue(&self) -> usize {
        self.core().max_queue
    }

    /// Set [`max_queue`](Self::max_queue) (at least 1; 0 counts as 1). Lower it for
    /// large messages: what waits is at most `max_queue` messages of
    /// `Config::max_message_size` each.
    ///
    /// ```no_run
    /// # fn demo(ws: wsevents::WebSocket) {
    /// ws.set_max_queue(4);
    /// assert_eq!(ws.max_queue(), 4);
    /// # }
    /// ```
    pub fn set_max_queue(&self, max_queue: usize) {
        self.core().max_queue = max_queue.max(1);
    }

    /// `ws.onerror = f`.
    pub fn on_error(&self, f: impl Fn(&ErrorEvent) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Error, Callback::Error(Arc::new(f)));
    }

    /// `ws.onclose = f`.
    pub fn on_close(&self, f: impl Fn(&CloseEvent) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Close, Callback::Close(Arc::new(f)));
    }

    /// `ping` events (a wsevents extension): `f` sees the payload of every ping the
    /// peer sends, after the pong that answers it was queued. Replaces the previous
    /// `on_ping`, keeps listeners.
    ///
    /// ```no_run
    /// # fn demo(ws: wsevents::WebSocket) {
    /// ws.on_ping(|e| println!("ping {:?}", e.data));
    /// # }
    /// ```
    pub fn on_ping(&self, f: impl Fn(&PingEvent) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Ping, Callback::Ping(Arc::new(f)));
    }

    /// `pong` events (a wsevents extension): `f` sees the payload of every pong, and
    /// the round-trip time when it answers this end's latest ping. Replaces the
    /// previous `on_pong`, keeps listeners.
    ///
    /// ```no_run
    /// # fn demo(ws: wsevents::WebSocket) -> Result<(), wsevents::Error> {
    /// ws.on_pong(|e| match e.rtt {
    ///     Some(rtt) => println!("pong {:?} after {rtt:?}", e.data),
    ///     None => println!("unsolicited pong {:?}", e.data),
    /// });
    /// ws.ping("t1")?;
    /// # Ok(()) }
    /// ```
    pub fn on_pong(&self, f: impl Fn(&PongEvent) + Send + Sync + 'static) {
        self.core()
            .registry
            .set_handler(EventType::Pong, Callback::Pong(Arc::new(f)));
    }

    /// `ws.addEventListener(type, f)`: listeners of a type run in the order added.
    pub fn add_event_listener(
        &self,
        event_type: EventType,
        f: impl Fn(&Event) + Send + Sync + 'static,
    ) -> ListenerId {
        self.core()
            .registry
            .add(event_type, Callback::Any(Arc::new(f)))
    }

    /// `ws.removeEventListener(…)`: true if the listener was registered.
    pub fn remove_event_listener(&self, id: ListenerId) -> bool {
        self.core().registry.remove(id)
    }

    // ----- methods -----

    /// `ws.send(data)`: queue a text message (`&str`, `String`) or a binary one
    /// (`&[u8]`, `Vec<u8>`, `Bytes`, [`Blob`](crate::Blob)).
    ///
    /// [`Error::InvalidState`] unless the socket is open; nothing is sent then.
    /// [`Error::BufferFull`] when the message does not fit in the send queue
    /// ([`backpressure`](Self::backpressure)); nothing is queued then, and with
    /// [`WhenFull::Close`] the socket starts closing.
    pub fn send(&self, data: impl IntoMessage) -> Result<()> {
        match data.borrowed() {
            // Copied into the send queue as it is: no owned or shared copy first.
            Some(borrowed) if borrowed.len() < wsevents_proto::COPIED_PAYLOAD_LEN => {
                self.queue(borrowed.len(), |conn| match borrowed {
                    MessageRef::Text(text) => conn.send_text_ref(text),
                    MessageRef::Binary(data) => conn.send_binary_ref(data),
                })
            }
            _ => {
                let message = data.into_message();
                self.queue(message.payload().len(), |conn| conn.send(message))
            }
        }
    }

    /// Like [`send`](Self::send), but the message goes out as it is even when
    /// permessage-deflate was negotiated: for data already compressed (images,
    /// archives), where deflating again costs CPU for nothing.
    ///
    /// ```no_run
    /// # fn demo(ws: &wsevents::WebSocket) -> Result<(), wsevents::Error> {
    /// let png: Vec<u8> = std::fs::read("chart.png")?;
    /// ws.send_uncompressed(png)?;
    /// # Ok(()) }
    /// ```
    pub fn send_uncompressed(&self, data: impl IntoMessage) -> Result<()> {
        let message = data.into_message();
        self.queue(message.payload().len(), |conn| {
            conn.send_uncompressed(message)
        })
    }

    /// Server: queue a message framed once for many sockets ([`PreparedMessage`]):
    /// the frame's bytes are shared with every socket it is sent on, not copied. It
    /// counts into [`buffered_amount`](Self::buffered_amount) and obeys the socket's
    /// [`Backpressure`] like [`send`](Self::send), keeps its order among `send`s (one
    /// queue), and goes out uncompressed even on a permessage-deflate connection
    /// (RFC 7692 lets any message be sent uncompressed). The [`Hub`](crate::hub::Hub)
    /// publishes with it. On a client: [`Error::InvalidAccess`] (client frames are
    /// masked, each with its own key).
    ///
    /// ```no_run
    /// # fn demo(sockets: &[wsevents::WebSocket]) -> Result<(), wsevents::Error> {
    /// use wsevents::{Message, PreparedMessage};
    /// let tick = PreparedMessage::new(&Message::text(r#"{"price":101.5}"#));
    /// for ws in sockets {
    ///     ws.send_prepared(&tick)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn send_prepared(&self, message: &PreparedMessage) -> Result<()> {
        let mut core = self.core();
        if core.closed {
            return Err(Error::InvalidState);
        }
        let backpressure = core.backpressure;
        let conn = core.conn.as_mut().ok_or(Error::InvalidState)?;
        let buffered = conn.buffered_amount();
        let len = message.payload_len();
        if conn.role() == Role::Server && !backpressure.admits(buffered, len) {
            if let WhenFull::Close(code) = backpressure.when_full {
                let frame = CloseFrame::new(code, Backpressure::CLOSE_REASON);
                conn.close(frame, tokio::time::Instant::now().into_std())?;
                self.wake_driver(core);
            }
            return Err(Error::BufferFull {
                buffered,
                message: len,
                limit: backpressure.limit,
            });
        }
        conn.send_prepared(message)?;
        crate::metrics::message_sent(conn.role());
        self.wake_driver(core);
        Ok(())
    }

    /// The hub's delivery: queue `message` unless that would take `buffered_amount`
    /// over `limit` (a message alone on an empty queue always fits); then close with
    /// `code` instead. The socket's own [`Backpressure`] is not consulted: the hub's
    /// bound is the rule for what it publishes.
    pub(crate) fn offer_prepared(
        &self,
        message: &PreparedMessage,
        limit: usize,
        code: CloseCode,
        reason: &str,
    ) -> Offer {
        let mut core = self.core();
        if core.closed {
            return Offer::Gone;
        }
        let Some(conn) = core.conn.as_mut() else {
            return Offer::Gone;
        };
        if conn.state() != State::Open {
            return Offer::Gone;
        }
        let buffered = conn.buffered_amount();
        if !Backpressure::error(limit).admits(buffered, message.payload_len()) {
            let frame = CloseFrame::new(code, reason);
            let _ = conn.close(frame, tokio::time::Instant::now().into_std());
            self.wake_driver(core);
            return Offer::TooSlow;
        }
        if conn.send_prepared(message).is_err() {
            return Offer::Gone;
        }
        crate::metrics::message_sent(conn.role());
        self.wake_driver(core);
        Offer::Queued
    }

    /// Whether this is an open connection of the server role (what a hub serves).
    pub(crate) fn is_open_server(&self) -> bool {
        let core = self.core();
        !core.closed
            && core
                .conn
                .as_ref()
                .is_some_and(|c| c.role() == Role::Server && c.state() == State::Open)
    }

    /// The role of the connection, once it has a core.
    pub(crate) fn role(&self) -> Option<Role> {
        self.core().conn.as_ref().map(Connection::role)
    }

    /// Whether the close event has been dispatched.
    pub(crate) fn is_closed(&self) -> bool {
        self.core().closed
    }

    /// Resolves once [`buffered_amount`](Self::buffered_amount) is at most `limit` (at
    /// once if it is): `Ok` then, or [`Error::InvalidState`] once the socket is
    /// closing, closed or dropped (what is queued will never drain). The future
    /// holds the socket weakly, so waiting keeps no connection alive; it is woken by
    /// the driving task after each write while it waits (and by the socket's drop),
    /// so the socket must be driven (`run`) for it to resolve.
    ///
    /// For a protocol on top that paces what it queues by what the peer reads (the
    /// wsevents.v1 server, before each subscription; its client, when a request did
    /// not fit).
    pub(crate) fn buffered_at_most(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let socket = self.downgrade();
        std::future::poll_fn(move |cx| {
            let Some(ws) = socket.upgrade() else {
                return Poll::Ready(Err(Error::InvalidState));
            };
            let mut core = ws.core();
            if core.closed {
                return Poll::Ready(Err(Error::InvalidState));
            }
            let Some(conn) = core.conn.as_ref() else {
                // Not connected yet: nothing queued.
                return Poll::Ready(Ok(()));
            };
            match conn.state() {
                State::Closing | State::Closed => Poll::Ready(Err(Error::InvalidState)),
                _ if conn.buffered_amount() <= limit => Poll::Ready(Ok(())),
                _ => {
                    core.drain_waiters.register(limit, cx.waker());
                    Poll::Pending
                }
            }
        })
    }

    /// The largest message the peer can send on this connection in one frame: the
    /// smaller of its frame and message limits ([`Config`](crate::Config)); `None`
    /// before it has a core.
    pub(crate) fn max_incoming_message(&self) -> Option<usize> {
        let core = self.core();
        let config = core.conn.as_ref()?.config();
        Some(config.max_frame_size.min(config.max_message_size))
    }

    /// Unique among the sockets of this process.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// A handle that does not keep the socket alive.
    pub(crate) fn downgrade(&self) -> WeakWebSocket {
        WeakWebSocket {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Hand `message` to the core with `send` (compressing or not) and wake the
    /// driving task to write it.
    /// Queue a message of `len` bytes with `send`, under the backpressure rule.
    fn queue(
        &self,
        len: usize,
        send: impl FnOnce(&mut Connection) -> std::result::Result<(), wsevents_proto::Error>,
    ) -> Result<()> {
        let mut core = self.core();
        if core.closed {
            return Err(Error::InvalidState);
        }
        let backpressure = core.backpressure;
        let conn = core.conn.as_mut().ok_or(Error::InvalidState)?;
        let buffered = conn.buffered_amount();
        if conn.state() == State::Open && !backpressure.admits(buffered, len) {
            if let WhenFull::Close(code) = backpressure.when_full {
                let frame = CloseFrame::new(code, Backpressure::CLOSE_REASON);
                conn.close(frame, tokio::time::Instant::now().into_std())?;
                self.wake_driver(core);
            }
            return Err(Error::BufferFull {
                buffered,
                message: len,
                limit: backpressure.limit,
            });
        }
        send(conn)?;
        crate::metrics::message_sent(conn.role());
        self.wake_driver(core);
        Ok(())
    }

    /// `ws.close()`: start the closing handshake with no status code (the peer reports
    /// 1005). Does nothing when closing or closed; while connecting, fails the
    /// connection (an `error` event, then `close` with 1006).
    pub fn close(&self) -> Result<()> {
        self.close_frame(CloseFrame::empty())
    }

    /// `ws.close(code, reason)`: `code` must be 1000 or 3000–4999
    /// ([`Error::InvalidAccess`] otherwise), `reason` at most 123 bytes of UTF-8
    /// ([`Error::Syntax`] otherwise).
    pub fn close_with(&self, code: u16, reason: &str) -> Result<()> {
        let code = check_close_with(code, reason)?;
        self.close_frame(CloseFrame::new(code, reason))
    }

    /// Close with a code the browser keeps for itself: any code valid on the wire
    /// (1000–1003, 1007–1014, 3000–4999), where [`close_with`](Self::close_with)
    /// allows a script's codes only. For servers and tools: 1001
    /// ([`CloseCode::GOING_AWAY`]) when shutting down, 1008 (policy violation) for a
    /// peer that breaks the application's rules, 1011 on an internal error. Like Node's
    /// `ws`, whose `close(code)` takes these too. Another code is
    /// [`Error::InvalidAccess`], a reason over 123 bytes [`Error::Syntax`]; like
    /// `close_with` it does nothing when the socket is closing or closed.
    ///
    /// ```no_run
    /// # async fn demo(ws: wsevents::WebSocket) -> Result<(), wsevents::Error> {
    /// use wsevents::CloseCode;
    /// ws.close_with_code(CloseCode::GOING_AWAY, "server shutting down")?;
    /// assert!(ws.close_with_code(CloseCode::ABNORMAL, "").is_err()); // 1006: never sent
    /// # Ok(()) }
    /// ```
    pub fn close_with_code(&self, code: CloseCode, reason: &str) -> Result<()> {
        let frame = CloseFrame::new(code, reason);
        frame.check()?;
        self.close_frame(frame)
    }

    /// Send a ping with up to 125 bytes of payload (a longer one is
    /// [`Error::Capacity`]); the peer answers with a pong, a `pong` event
    /// ([`on_pong`](Self::on_pong)) whose `rtt` is the round trip, if no other ping
    /// was sent in between. Browsers cannot ping from script; Node's `ws` has
    /// `ws.ping()`. [`Error::InvalidState`] unless the socket is open.
    ///
    /// ```no_run
    /// # fn demo(ws: wsevents::WebSocket) -> Result<(), wsevents::Error> {
    /// ws.on_pong(|e| println!("round trip: {:?}", e.rtt));
    /// ws.ping("are you there?")?;
    /// # Ok(()) }
    /// ```
    pub fn ping(&self, data: impl Into<bytes::Bytes>) -> Result<()> {
        let mut core = self.core();
        if core.closed {
            return Err(Error::InvalidState);
        }
        let conn = core.conn.as_mut().ok_or(Error::InvalidState)?;
        if conn.state() != State::Open {
            return Err(Error::InvalidState);
        }
        conn.ping_at(data.into(), tokio::time::Instant::now().into_std())?;
        self.wake_driver(core);
        Ok(())
    }

    fn close_frame(&self, frame: CloseFrame) -> Result<()> {
        let mut core = self.core();
        if core.closed {
            return Ok(());
        }
        match core.conn.as_mut() {
            Some(conn) => conn.close(frame, tokio::time::Instant::now().into_std())?,
            None => {
                core.aborted = true;
                self.inner.abort.notify_one();
            }
        }
        self.wake_driver(core);
        Ok(())
    }

    // ----- driving -----

    /// Drive the connection and dispatch every event to the handlers, until the close
    /// event, which is returned. It holds the drive for the whole connection: another
    /// clone's `next_event` waits until the end, then returns `None`. After
    /// `next_event` was called, `run` takes the events its task queues, dispatches
    /// them and returns the close event.
    ///
    /// A handler that awaits ([`on_message_async`](Self::on_message_async)) is awaited
    /// here, with the connection driven meanwhile (see
    /// [Handlers that await](Self#handlers-that-await)).
    pub async fn run(&self) -> CloseEvent {
        let mut drive = self.inner.drive.lock().await;
        loop {
            match &mut *drive {
                Drive::Running(driver) => {
                    let mut dispatch = Dispatch::default();
                    let close =
                        std::future::poll_fn(|cx| self.poll_dispatch(driver, &mut dispatch, cx))
                            .await;
                    *drive = Drive::Finished;
                    if let Some(close) = close {
                        return close;
                    }
                }
                Drive::NotStarted(_) => self.connect_drive(&mut drive).await,
                Drive::Pulled => {
                    drop(drive);
                    while let Some(event) = self.take_pulled().await {
                        self.dispatch_awaiting(&event).await;
                        if let Event::Close(close) = event {
                            return close;
                        }
                    }
                    break;
                }
                Drive::Finished => match self.dispatch_queued() {
                    Some(Event::Close(close)) => return close,
                    Some(_) => {}
                    None => break,
                },
            }
        }
        // Another clone dispatched the close event already.
        abnormal_close()
    }

    /// Drive the connection until the next event, dispatch it to the handlers, and
    /// return it; `None` after the close event.
    ///
    /// The connection stays driven between calls, while the caller awaits something
    /// else: the first call hands the driving to a task of its own (one per
    /// connection), which answers pings, writes what other clones and the hub send,
    /// keeps the keepalive deadlines and handles the peer's close, and queues the
    /// events, in order; `next_event` takes the next one and runs its handlers then
    /// (awaiting an async one). Reading pauses once [`max_queue`](Self::max_queue)
    /// events wait to be taken (16 by default), so a caller that is slow to take them
    /// still slows the peer down. The task holds the socket weakly: dropping every
    /// clone drops the connection, as before.
    ///
    /// ```no_run
    /// # async fn lookup(_: &str) -> String { String::new() }
    /// # async fn demo(ws: wsevents::WebSocket) {
    /// use wsevents::Event;
    /// while let Some(event) = ws.next_event().await {
    ///     if let Event::Message(e) = event {
    ///         // Awaiting here does not stall the connection.
    ///         let answer = lookup(e.data.as_text().unwrap_or_default()).await;
    ///         let _ = ws.send(answer);
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn next_event(&self) -> Option<Event> {
        let mut drive = self.inner.drive.lock().await;
        loop {
            match &mut *drive {
                Drive::Running(_) => {
                    let Drive::Running(driver) = std::mem::replace(&mut *drive, Drive::Pulled)
                    else {
                        continue;
                    };
                    self.start_pulling(driver);
                }
                Drive::NotStarted(_) => self.connect_drive(&mut drive).await,
                Drive::Pulled => {
                    drop(drive);
                    let event = self.take_pulled().await?;
                    self.dispatch_awaiting(&event).await;
                    return Some(event);
                }
                Drive::Finished => return self.dispatch_queued(),
            }
        }
    }

    /// Client: make the connection (TCP, TLS, proxies); the drive is then running, or
    /// finished with the failure's events queued.
    async fn connect_drive(&self, drive: &mut Drive) {
        let Drive::NotStarted(builder) = std::mem::replace(drive, Drive::Finished) else {
            return;
        };
        // Boxed: connecting (DNS, proxies, TLS) is a large future that runs once;
        // inline, every connection's task would carry its size for its whole life.
        *drive = Box::pin(self.start(*builder)).await;
    }

    /// What a failed start left (its error and close events), dispatched one by one;
    /// `None` once none is left.
    fn dispatch_queued(&self) -> Option<Event> {
        let (event, callbacks) = {
            let mut core = self.core();
            let event = core.queued.pop_front()?;
            if matches!(event, Event::Close(_)) {
                core.closed = true;
            }
            (event, core.registry.snapshot())
        };
        // Only `error` and `close` come this way: no handler of theirs awaits.
        let _ = self.dispatch_from(&event, &callbacks, 0);
        Some(event)
    }

    /// Client: connect TCP (and TLS), then hand the handshake to the core. Failures
    /// become an `error` then a `close` event (1006).
    async fn start(&self, builder: ClientBuilder) -> Drive {
        let timeout = builder.timeout();
        let connect = tokio::time::timeout(timeout, builder.open_transport());
        let result = tokio::select! {
            result = connect => match result {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout(format!("connecting took over {timeout:?}"))),
            },
            () = self.aborted() => Err(Error::Closed),
        };
        let mut core = self.core();
        match result {
            Ok(io) if !core.aborted => {
                let now = tokio::time::Instant::now().into_std();
                let conn =
                    Connection::client(builder.client_request(), builder.protocol_config(), now);
                core.conn = Some(conn);
                Drive::Running(Driver::new(Box::new(io)))
            }
            outcome => {
                let error = outcome.err().unwrap_or(Error::Closed);
                core.queued.push_back(Event::Error(ErrorEvent::new(error)));
                core.queued.push_back(Event::Close(abnormal_close()));
                Drive::Finished
            }
        }
    }

    /// Resolves once `close()` was called while connecting.
    async fn aborted(&self) {
        loop {
            let notified = self.inner.abort.notified();
            if self.core().aborted {
                return;
            }
            notified.await;
        }
    }

    /// One poll for the next event, with the core locked; `None` once the connection
    /// is over. Events queued here (the `open` of an accepted socket) come first; a
    /// message already in the core's buffer is taken without going through the
    /// driver's loop (as the stream API does). `Pending` parks the driving task: a
    /// `send` from another clone wakes it then.
    ///
    /// `READ` false: the events waiting reached `max_queue`; the peer's input is
    /// neither read nor parsed, everything else goes on (`Driver::poll_event_unread`).
    /// A constant, so `run`'s path is compiled without the branch.
    #[inline(always)]
    fn poll_locked<const READ: bool>(
        &self,
        core: &mut Core,
        driver: &mut BoxedDriver,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Event>> {
        core.parked = false;
        if !core.queued.is_empty()
            && let Some(event) = core.queued.pop_front()
        {
            if core.queued.is_empty() {
                // Once: an accepted socket's `open`; keep no buffer for it.
                core.queued = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        let Some(conn) = core.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let event = loop {
            if READ && let Some(message) = driver.poll_message(conn) {
                break self.message_event(message);
            }
            let polled = if READ {
                driver.poll_event(conn, cx)
            } else {
                driver.poll_event_unread(conn, cx)
            };
            // The driver writes only in `poll_event`: what it wrote may let a task
            // waiting for room go on. One length check when nobody waits.
            if !core.drain_waiters.is_empty() {
                core.drain_waiters.wake_drained(conn);
            }
            match polled {
                Poll::Ready(Some(event)) => {
                    if let Some(event) = self.translate(event) {
                        break event;
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    match &core.driver_waker {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => core.driver_waker = Some(cx.waker().clone()),
                    }
                    core.parked = true;
                    return Poll::Pending;
                }
            }
        };
        if let Event::Close(_) = event {
            core.closed = true;
        }
        Poll::Ready(Some(event))
    }

    /// Wake the driving task if it is parked, after releasing the lock: what was just
    /// queued must be written, or the state change seen. A driving task that is not
    /// parked writes it before it waits again (it polls the core first).
    fn wake_driver(&self, mut core: MutexGuard<'_, Core>) {
        let waker = if core.parked {
            core.parked = false;
            core.driver_waker.take()
        } else {
            None
        };
        drop(core);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// A message from the core as the browser API sees it: its bytes as they are.
    fn message_event(&self, message: wsevents_proto::Message) -> Event {
        Event::Message(MessageEvent {
            data: data_of(message, self.binary_type()),
            origin: Arc::clone(&self.inner.origin),
        })
    }

    /// A core event as the browser API sees it (`None` for the ones it hides).
    fn translate(&self, event: wsevents_proto::Event) -> Option<Event> {
        use wsevents_proto::Event as Core;
        Some(match event {
            Core::Open => Event::Open,
            Core::Message(message) => self.message_event(message),
            Core::Error(error) => Event::Error(ErrorEvent::new(error.into())),
            Core::Closed(closure) => Event::Close(CloseEvent {
                code: closure.code().as_u16(),
                reason: closure.reason().to_owned(),
                was_clean: closure.was_clean(),
            }),
            Core::Ping(data) => Event::Ping(PingEvent { data }),
            Core::Pong(pong) => {
                // The core records when our latest ping (ours or a keepalive) went out.
                let now = tokio::time::Instant::now().into_std();
                Event::Pong(PongEvent {
                    rtt: pong
                        .ping_sent_at
                        .map(|at| now.saturating_duration_since(at)),
                    data: pong.payload,
                })
            }
            _ => return None,
        })
    }

    #[inline]
    fn core(&self) -> MutexGuard<'_, Core> {
        // A poisoned lock means a panic while it was held; the core's state is still
        // consistent between polls, so carry on with it.
        self.inner.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What became of a message the hub offered a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Queued,
    /// Over the bound: not queued, and the socket is closing.
    TooSlow,
    /// The socket is closing or closed: not queued.
    Gone,
}

/// The tasks waiting in [`WebSocket::buffered_at_most`], each with its bound: at most
/// one entry per waiting task (a task polled again updates its own). Dropped with the
/// socket, which wakes them all (their wait then ends in an error).
#[derive(Default)]
struct DrainWaiters(Vec<(usize, Waker)>);

impl DrainWaiters {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn register(&mut self, limit: usize, waker: &Waker) {
        match self.0.iter_mut().find(|(_, w)| w.will_wake(waker)) {
            Some(entry) => entry.0 = limit,
            None => self.0.push((limit, waker.clone())),
        }
    }

    /// Wake the tasks whose bound `conn`'s buffered amount is now within, and all of
    /// them once it is no longer open (nothing more will drain). Waking a tokio task
    /// only schedules it, so it is done here, under the core's lock.
    #[cold]
    fn wake_drained(&mut self, conn: &Connection) {
        let open = matches!(conn.state(), State::Open | State::Connecting);
        let buffered = conn.buffered_amount();
        self.0.retain(|(limit, waker)| {
            let done = !open || buffered <= *limit;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
    }
}

impl Drop for DrainWaiters {
    fn drop(&mut self) {
        for (_, waker) in self.0.drain(..) {
            waker.wake();
        }
    }
}

/// A [`WebSocket`] that does not keep it alive (the hub's reference to a subscriber).
#[derive(Clone)]
pub(crate) struct WeakWebSocket {
    inner: Weak<Inner>,
}

impl WeakWebSocket {
    pub(crate) fn upgrade(&self) -> Option<WebSocket> {
        self.inner.upgrade().map(|inner| WebSocket { inner })
    }
}

impl fmt::Debug for WeakWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakWebSocket")
    }
}

fn map_driver<S>(driver: Driver<S>) -> BoxedDriver
where
    S: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug + 'static,
{
    driver.map_io(|io| Box::new(io) as Box<dyn Transport>)
}

fn abnormal_close() -> CloseEvent {
    CloseEvent {
        code: CloseCode::ABNORMAL.as_u16(),
        reason: String::new(),
        was_clean: false,
    }
}

/// The checks of `close(code, reason)`: `code` 1000 or 3000–4999
/// ([`Error::InvalidAccess`]), `reason` at most 123 bytes ([`Error::Syntax`]).
pub(crate) fn check_close_with(code: u16, reason: &str) -> Result<CloseCode> {
    let code = CloseCode::from(code);
    CloseFrame::new(code, reason).check_for_application()?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use crate::Server;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A server socket with megabytes queued for a peer that reads nothing: a wait for
    /// the queue to drain to a bound stays pending, ends once the peer reads, and fails
    /// at once on a socket that closed.
    #[tokio::test]
    async fn a_wait_for_room_ends_when_the_peer_reads_and_fails_once_closed() {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let client = tokio::spawn(async move { crate::connect(&url).await.unwrap() });
        let ws = server.accept().await.unwrap();
        let mut client = client.await.unwrap();
        let driver = ws.clone();
        let run = tokio::spawn(async move { driver.run().await });

        // Fill the kernel's buffers, then 2 MiB of the socket's own (uncompressed, in
        // case permessage-deflate was negotiated: the kernel takes wire bytes).
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        while ws.buffered_amount() < 2 << 20 {
            ws.send_uncompressed(chunk.clone()).unwrap();
            sent += chunk.len();
            assert!(sent < 256 << 20, "the peer's kernel took {sent} bytes");
            tokio::task::yield_now().await;
        }
        assert!(
            ws.buffered_at_most(4 << 20).await.is_ok(),
            "within: at once"
        );
        let wait = ws.buffered_at_most(1 << 20);
        tokio::pin!(wait);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut wait)
                .await
                .is_err(),
            "nobody reads: no room"
        );

        // The peer reads: the driver writes, and wakes the wait.
        let reader = tokio::spawn(async move {
            let mut received = 0usize;
            while received < sent {
                match client.next().await {
                    Some(Ok(message)) => received += message.payload().len(),
                    other => panic!("{other:?}"),
                }
            }
            client
        });
        tokio::time::timeout(TIMEOUT, wait).await.unwrap().unwrap();
        assert!(ws.buffered_amount() <= 1 << 20);

        let mut client = tokio::time::timeout(TIMEOUT, reader)
            .await
            .unwrap()
            .unwrap();
        client
            .close(wsevents_proto::CloseCode::NORMAL, "")
            .await
            .unwrap();
        while client.next().await.is_some() {}
        tokio::time::timeout(TIMEOUT, run).await.unwrap().unwrap();
        assert!(ws.buffered_at_most(usize::MAX).await.is_err(), "closed");
    }

    /// A wait on a socket that is dropped ends (in an error) instead of hanging.
    #[tokio::test]
    async fn a_wait_ends_when_the_socket_is_dropped() {
        let server = Server::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", server.local_addr());
        let client = tokio::spawn(async move { crate::connect(&url).await.unwrap() });
        let ws = server.accept().await.unwrap();
        let _client = client.await.unwrap();
        // Undriven, so what is sent stays queued.
        ws.send(vec![0u8; 1024]).unwrap();
        let wait = tokio::spawn(ws.buffered_at_most(0));
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(ws);
        let waited = tokio::time::timeout(TIMEOUT, wait).await.unwrap().unwrap();
        assert!(waited.is_err());
    }
}
