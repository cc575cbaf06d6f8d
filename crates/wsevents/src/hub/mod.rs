//! Topics and fan-out: the server pushes.
//!
//! A [`Hub`] maps topics to the sockets subscribed to them. [`Hub::publish`] frames a
//! message once and queues those same bytes on every subscriber of the topic; each
//! subscriber's driver writes what is queued for it in one (vectored) write per turn,
//! so a burst of publishes costs a subscriber one syscall, not one per message
//! (uWebSockets' cork/drain, its `TopicTree`).
//!
//! ```text
//!  publish(topic, m) ─► the topic's queue ─► PreparedMessage (one Bytes: header + payload)
//!        │                                    │ the same bytes, a reference count each
//!        │                                    ├─► subscriber 1: transmit queue ─► its driver: one write
//!        │                                    └─► subscriber n: transmit queue ─► its driver: one write
//!        └─► Backend (Redis: PUBLISH with this node's id) ─► other nodes ─► their subscribers
//! ```
//!
//! Beside topics, a hub carries **commands to every node** ([`Hub::command`],
//! [`Hub::on_command`]: on Redis a control channel of its own) and reads **history
//! pages** without subscribing ([`Hub::read_history`]): what a server API (the
//! `http_api` module) needs to act on connections wherever they are.
//!
//! # Guarantees
//!
//! - **Order.** A subscriber receives each topic's messages in the order they were
//!   published on this node: each topic has a queue of deliveries, run by one thread at
//!   a time in order (`hub/run.rs`). A socket's own [`send`](crate::WebSocket::send)s and
//!   the hub's publishes to it keep program order: both go through the core's one
//!   transmit queue. Across nodes (a [`Backend`] such as Redis): each node's publishes
//!   arrive in that node's order; publishes from different nodes are not put in one
//!   total order.
//! - **Exactly once, while connected.** A publish reaches each local subscriber once,
//!   and through a backend each subscriber on every other node once: a node subscribes
//!   in the backend once per topic it has local subscribers for, and drops its own
//!   messages when they come back. Without history, what is published while a node is
//!   cut off from the backend reaches that node's own subscribers only.
//! - **With history** ([`HubBuilder::history`]), every publication gets a
//!   [`Position`] (an epoch and an offset, contiguous within the epoch) and stays in
//!   the topic's history, bounded by count and age ([`History`]), so a subscriber
//!   that comes back from a position ([`Hub::subscribe_from`]) gets everything it
//!   missed, in order, then the live publications with no gap and no repeat between
//!   them, or is told `recovered: false` and given nothing of it, never a part. On
//!   the in-process backend the history is this process's (positions are given under
//!   the topic's lock, in the order of its queue); on Redis it is in Redis (one script
//!   per publication assigns the position, stores it and publishes it to every node,
//!   the publishing one included), so every node delivers one order of each topic and
//!   the history outlives any node. The publishing node delivers its own publication as
//!   soon as Redis answers the store when it is the next one of the topic, and skips it
//!   when it comes back on the channel. A publication Redis could not store is
//!   delivered nowhere and its publisher told ([`Error::Unavailable`]); a retry with
//!   the same key is stored once. A node whose subscription to Redis was lost catches
//!   up when it is back: what was stored meanwhile never came on the channel, so the
//!   hub reads it from the history after the latest position its subscribers were
//!   given and delivers it ([`Inbound::resubscribed`]). The wire protocol on top is
//!   [`crate::pubsub`]'s.
//! - **Slow subscribers are closed, never waited for.** A publish that would take a
//!   subscriber's [`buffered_amount`](crate::WebSocket::buffered_amount) over the hub's
//!   bound ([`HubBuilder::max_backlog`], 1 MiB by default; a message alone on an empty
//!   queue always fits) is not queued for it: the subscriber is closed with
//!   [`SLOW_CLOSE_CODE`] (1008, policy violation: the peer broke the rule that it reads
//!   what it subscribed to; 1013 would tell it the *server* is overloaded), reason
//!   `"slow subscriber"`, after what it was already sent, and counted in
//!   [`HubStats::dropped_slow`]. The publisher never blocks and the other subscribers
//!   are not delayed.
//!
//! # Bounds
//!
//! Everything the hub holds has a limit, a default and a rule:
//!
//! | what | limit (default) | past it |
//! |---|---|---|
//! | a subscriber's unsent bytes | [`HubBuilder::max_backlog`] (1 MiB) | closed as slow (1008) |
//! | publications held for a subscriber while its recovery is read | the same bytes | closed as slow; it reconnects and recovers |
//! | a recovery queued at once | one topic's history ([`History`]); queued only while the subscriber's unsent bytes are within the backlog bound | closed as slow |
//! | history in this process, all topics together | [`HubBuilder::max_history_bytes`] (128 MiB, counting a fixed cost per topic and per publication beside the payloads) | the least recently published topics are evicted first: the stored publications of a topic with subscribers (its epoch and offset stay), the whole record of one without; a recovery from there is `recovered: false` |
//! | one topic's history | [`History`] (10,000 publications, 300 s, 8 MiB) | the oldest are trimmed |
//! | an idle topic's record (epoch, offset) | [`META_TTL`] (a day) | forgotten |
//!
//! What a hub makes its subscribers hold is at most the bound per subscriber (or one
//! message larger than it), and the messages' bytes are shared, so the real cost is
//! lower: one frame per publish plus a reference per subscriber. A socket leaves all
//! its topics when its close event is dispatched (the hub registers a close listener),
//! and a socket that went away without one is dropped at the next publish to its
//! topics: the hub holds sockets by weak reference only. The backend's own queues
//! are bounded by its configuration (Redis: `RedisConfig`).
//!
//! # Locks
//!
//! Publishes to different topics take different locks, so they run in parallel on a
//! multi-thread runtime. Locks, in the only order in which they nest:
//!
//! 1. the history budget's eviction lock (`hub/budget.rs`);
//! 2. one shard of the topic map (`hub/topics.rs`);
//! 3. one topic's state;
//! 4. one socket's core (queueing a frame on it, closing it).
//!
//! A shard of the members map (`hub/members.rs`) is taken alone. **No hub lock is held
//! while code that is not the hub's runs**: a [`Framing`] frames, a [`Backend`] is
//! called, a subscription's `answer` is made, or a close listener is registered, each
//! with every hub lock released, so each of them may call back into the hub (the tests
//! re-enter it from each).
//!
//! # permessage-deflate
//!
//! The shared frame is sent uncompressed (RSV1 clear) to deflate connections too, as
//! RFC 7692 §6.1 allows; compressing per subscriber would cost one deflate per
//! subscriber and defeat the sharing. The price is bandwidth: for a 1 KiB JSON-like
//! message, 1,028 bytes on the wire instead of 291 for the first message compressed for
//! one subscriber and about 218 for the next ones (context takeover), about 3.5 to 4.7
//! times more (measured in `tests/hub.rs`, `deflate_subscribers_get_the_frame_uncompressed`).
//! Use [`send`](crate::WebSocket::send) per socket where bandwidth matters more than
//! CPU.
//!
//! The hub serves open connections of the **server role** of the event API
//! ([`WebSocket`]): a prepared frame is unmasked, which only a server may send. The
//! stream API ([`WebSocketStream`](crate::WebSocketStream)) is not served: its core is
//! owned by the task that polls it, with no shared handle the hub could queue into
//! without a lock on every poll of every stream; turn such a connection into a
//! `WebSocket` with [`WebSocket::from_stream`] to subscribe it.
//!
//! # Example
//!
//! ```no_run
//! use wsevents::hub::Hub;
//! use wsevents::{Data, Server};
//! # async fn demo() -> Result<(), wsevents::Error> {
//! let hub = Hub::new();
//! let server = Server::bind("127.0.0.1:8080").await?;
//! while let Some(ws) = server.accept().await {
//!     // A chat room: every socket is in "chat", and what one says goes to all.
//!     hub.subscribe(&ws, "chat")?;
//!     let room = hub.clone();
//!     ws.on_message(move |e| {
//!         if let Data::Text(text) = &e.data {
//!             room.publish("chat", text.as_str());
//!         }
//!     });
//!     tokio::spawn(async move { ws.run().await });
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use wsevents_proto::{CloseCode, Message, PreparedMessage, Role};

use crate::api::websocket::WebSocket;
use crate::error::{Error, Result};

mod backend;
mod budget;
mod catch_up;
mod command;
mod history;
mod members;
mod publish;
mod read;
#[cfg(feature = "redis")]
mod redis;
mod run;
mod subscribe;
mod topics;

pub use backend::{Backend, BackendStatus, InProcess, Inbound, Pending};
use budget::Budget;
use command::Commands;
pub use command::{Answers, CommandHandler, MAX_ANSWERS, MAX_COMMAND_BYTES, MAX_COMMANDS};
pub use history::{History, HistoryPage, MAX_KEY_LEN, META_TTL, Position, Publication, Recovery};
use members::Members;
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisConfig};
use topics::Topics;

/// The default bound on a subscriber's unsent bytes: 1 MiB (Centrifugo's, uWS.js's).
pub const DEFAULT_MAX_BACKLOG: usize = 1 << 20;

/// The default bound on the history a hub keeps in process, all topics together:
/// 128 MiB.
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 128 << 20;

/// The code a slow subscriber is closed with: 1008, policy violation.
pub const SLOW_CLOSE_CODE: CloseCode = CloseCode::POLICY_VIOLATION;

/// The reason a slow subscriber is closed with.
pub const SLOW_CLOSE_REASON: &str = "slow subscriber";

/// Topics and their subscribers; a cheap clone (all clones are one hub).
///
/// ```
/// use wsevents::hub::Hub;
/// let hub = Hub::new();
/// assert_eq!(hub.publish("news", "nobody listens"), 0);
/// assert_eq!(hub.subscriber_count("news"), 0);
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    /// Itself, for the tasks it starts (they do not keep it alive).
    me: Weak<HubInner>,
    topics: Topics,
    members: Members,
    max_backlog: usize,
    slow_code: CloseCode,
    /// Keep history, and give every publication a position.
    history: Option<History>,
    /// The backend keeps it (Redis), not the hub.
    history_in_backend: bool,
    /// The bound on the history kept in process.
    budget: Budget,
    backend: Box<dyn Backend>,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped_slow: AtomicU64,
    /// Topics with at least one local subscriber.
    live_topics: AtomicUsize,
    /// Commands to every node ([`Hub::command`]) and this node's handler.
    commands: Commands,
    next_command: AtomicU64,
}

pub(crate) type WeakHub = Weak<HubInner>;

/// How publications look to the subscribers of a protocol that carries positions
/// (wsevents.v1's `pub`, [`crate::pubsub`]): one frame per publication, made once
/// for all the subscribers with the same framing.
///
/// The hub calls it with none of its locks held, so it may call the hub (publish,
/// subscribe, read counters); it is called once per publication per distinct framing
/// of the topic's subscribers, in the topic's order, so keep it quick: the next
/// publication of the topic waits for it.
pub trait Framing: Send + Sync + 'static {
    /// The frame that carries `publication` of `topic`.
    fn frame(&self, topic: &str, publication: &Publication) -> Message;

    /// The same, framed for the wire: what the hub queues. By default
    /// [`frame`](Self::frame)'s message copied behind its header; a framing that
    /// builds its text can write it in place with [`PreparedMessage::text_with`]
    /// instead, so that the payload is copied once on its way out.
    fn prepare(&self, topic: &str, publication: &Publication) -> PreparedMessage {
        PreparedMessage::new(&self.frame(topic, publication))
    }
}

/// The answer to a subscription from a position
/// ([`Hub::subscribe_from`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscribed {
    /// The topic.
    pub topic: String,
    /// True: everything after the position asked for, up to `position`, was queued
    /// (right after the answer). False: nothing was recovered (none asked, or not
    /// all of it is in the history).
    pub recovered: bool,
    /// The topic's latest position when the subscription took effect.
    pub position: Position,
    /// How many publications were recovered.
    pub count: usize,
}

/// Counters of a hub, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Calls of [`Hub::publish`] and [`Hub::publish_confirmed`].
    pub published: u64,
    /// Messages queued on local subscribers (from local publishes and from the
    /// backend).
    pub delivered: u64,
    /// Subscribers closed for being over the backlog bound.
    pub dropped_slow: u64,
    /// Topics with at least one local subscriber, now.
    pub topics: usize,
    /// Sockets subscribed to at least one topic, now.
    pub subscribers: usize,
    /// Bytes charged to the history kept in process, now
    /// ([`HubBuilder::max_history_bytes`]).
    pub history_bytes: usize,
    /// Topics whose history was evicted to stay within that bound.
    pub history_evicted: u64,
}

/// Options for a [`Hub`].
///
/// ```
/// use wsevents::hub::{Hub, InProcess};
/// let hub = Hub::builder().max_backlog(256 * 1024).backend(InProcess).build();
/// # let _ = hub;
/// ```
pub struct HubBuilder {
    max_backlog: usize,
    slow_code: CloseCode,
    history: Option<History>,
    max_history_bytes: usize,
    backend: Box<dyn Backend>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("max_backlog", &self.max_backlog)
            .field("slow_code", &self.slow_code)
            .field("history", &self.history)
            .field("max_history_bytes", &self.max_history_bytes)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// The bound on a subscriber's unsent bytes
    /// ([`buffered_amount`](crate::WebSocket::buffered_amount), its own `send`s
    /// included) past which a publish closes it instead of queuing; default
    /// [`DEFAULT_MAX_BACKLOG`] (1 MiB). Also the bound on what is held back for a
    /// subscriber while its recovery is read, and on the unsent bytes a subscription
    /// from a position may find before its recovery is queued.
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes;
        self
    }

    /// The close code for slow subscribers; default [`SLOW_CLOSE_CODE`] (1008).
    /// [`Error::InvalidAccess`] for a code that may not be sent in a close frame.
    ///
    /// ```
    /// use wsevents::{CloseCode, hub::Hub};
    /// let hub = Hub::builder().slow_close_code(CloseCode::TRY_AGAIN_LATER)?.build();
    /// assert!(Hub::builder().slow_close_code(CloseCode::ABNORMAL).is_err());
    /// # let _ = hub; Ok::<(), wsevents::Error>(())
    /// ```
    pub fn slow_close_code(mut self, code: CloseCode) -> Result<Self> {
        wsevents_proto::CloseFrame::new(code, String::new()).check()?;
        self.slow_code = code;
        Ok(self)
    }

    /// Keep history: every publication gets a [`Position`], and a subscriber can
    /// come back from one ([`Hub::subscribe_from`]). Off by default. On the
    /// in-process backend the history is in this process; a backend that keeps it
    /// ([`Backend::stores_history`], Redis) keeps it there, shared by every node.
    ///
    /// ```
    /// use wsevents::hub::{History, Hub};
    /// let hub = Hub::builder().history(History::default()).build();
    /// let at = hub.publish_confirmed("news", "first", None);
    /// # let _ = at;
    /// ```
    pub fn history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// The most history kept in this process, all topics together, in bytes: the
    /// payloads plus a fixed cost per topic and per publication for the records around
    /// them ([`DEFAULT_MAX_HISTORY_BYTES`], 128 MiB). Past it the least recently
    /// published topics are evicted first: a topic with subscribers loses its stored
    /// publications (its epoch and offset stay), one without loses its whole record; a
    /// recovery from there is answered `recovered: false`. Not used when the backend
    /// keeps the history (Redis: bound it with Redis's `maxmemory`).
    ///
    /// ```
    /// use wsevents::hub::{History, Hub};
    /// let hub = Hub::builder().history(History::default()).max_history_bytes(32 << 20).build();
    /// # let _ = hub;
    /// ```
    pub fn max_history_bytes(mut self, bytes: usize) -> Self {
        self.max_history_bytes = bytes;
        self
    }

    /// The backend that joins this hub to others ([`InProcess`] by default: none).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Box::new(backend);
        self
    }

    /// The hub. A backend that runs tasks (Redis) starts them here, so call it inside
    /// a tokio runtime.
    pub fn build(self) -> Hub {
        let inner = Arc::new_cyclic(|me| HubInner {
            me: me.clone(),
            topics: Topics::new(),
            members: Members::new(),
            max_backlog: self.max_backlog,
            slow_code: self.slow_code,
            history: self.history,
            history_in_backend: self.history.is_some() && self.backend.stores_history(),
            budget: Budget::new(self.max_history_bytes),
            backend: self.backend,
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
            live_topics: AtomicUsize::new(0),
            commands: Commands::new(),
            next_command: AtomicU64::new(1),
        });
        inner.backend.start(Inbound {
            hub: Arc::downgrade(&inner),
        });
        Hub { inner }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("stats", &self.stats())
            .field("backend", &self.backend_status())
            .finish()
    }
}

impl Hub {
    /// An in-process hub with the defaults.
    pub fn new() -> Hub {
        Hub::builder().build()
    }

    /// Options: the backlog bound, the slow subscribers' close code, history and its
    /// bound, the backend.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            max_backlog: DEFAULT_MAX_BACKLOG,
            slow_code: SLOW_CLOSE_CODE,
            history: None,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            backend: Box::new(InProcess),
        }
    }

    /// Subscribe `ws` to `topic`: true if it was not subscribed yet. The socket
    /// receives each publication's message as it was published, and leaves all its
    /// topics by itself when it closes.
    ///
    /// [`Error::InvalidState`] unless the socket is open; [`Error::InvalidAccess`] for a
    /// client's socket (the hub serves the server role).
    ///
    /// ```no_run
    /// # fn demo(hub: &wsevents::hub::Hub, ws: &wsevents::WebSocket) -> Result<(), wsevents::Error> {
    /// hub.subscribe(ws, "prices/EURUSD")?;
    /// assert_eq!(hub.topics(ws), ["prices/EURUSD"]);
    /// # Ok(()) }
    /// ```
    pub fn subscribe(&self, ws: &WebSocket, topic: &str) -> Result<bool> {
        check_subscriber(ws)?;
        let joined = self.inner.join(ws, topic, None, false, |_| ());
        self.inner.check_still_open(ws)?;
        Ok(joined.added)
    }

    /// Unsubscribe `ws` from `topic`: true if it was subscribed.
    pub fn unsubscribe(&self, ws: &WebSocket, topic: &str) -> bool {
        self.inner.leave(ws, topic, None)
    }

    /// The topics `ws` is subscribed to, sorted.
    pub fn topics(&self, ws: &WebSocket) -> Vec<String> {
        self.inner.members.topics(ws.id())
    }

    /// How many local sockets are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner
            .topics
            .get(topic)
            .map_or(0, |cell| cell.lock().subscribers.len())
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        let inner = &self.inner;
        HubStats {
            published: inner.published.load(Ordering::Relaxed),
            delivered: inner.delivered.load(Ordering::Relaxed),
            dropped_slow: inner.dropped_slow.load(Ordering::Relaxed),
            topics: inner.live_topics.load(Ordering::Relaxed),
            subscribers: inner.members.len(),
            history_bytes: inner.budget.used(),
            history_evicted: inner.budget.evicted(),
        }
    }

    /// The bound on a subscriber's unsent bytes ([`HubBuilder::max_backlog`]).
    pub fn max_backlog(&self) -> usize {
        self.inner.max_backlog
    }

    /// Where the backend is: [`BackendStatus::InProcess`] for a hub of one process,
    /// else connected or reconnecting (and why).
    pub fn backend_status(&self) -> BackendStatus {
        self.inner.backend.status()
    }
}

/// The subscriber checks of [`Hub::subscribe`]: an open server socket.
fn check_subscriber(ws: &WebSocket) -> Result<()> {
    match ws.role() {
        Some(Role::Server) => {}
        Some(_) => {
            return Err(Error::InvalidAccess(
                "a hub serves server connections only".into(),
            ));
        }
        None => return Err(Error::InvalidState),
    }
    if !ws.is_open_server() {
        return Err(Error::InvalidState);
    }
    Ok(())
}

/// The payload bytes of a message (what the backlog and history bounds count).
fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
    }
}
