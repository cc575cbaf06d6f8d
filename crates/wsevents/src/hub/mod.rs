//! Topics and fan-out: the server pushes.
//!
//! A [`Hub`] maps topics to the sockets subscribed to them. [`Hub::publish`] frames a
//! message once and queues those same bytes on every subscriber of the topic; each
//! subscriber's driver writes what is queued for it in one (vectored) write per turn,
//! so a burst of publishes costs a subscriber one syscall, not one per message
//! (uWebSockets' cork/drain, its `TopicTree`).
//!
//! ```text
//!  publish(topic, m) ─► PreparedMessage (one Bytes: header + payload)
//!        │                 │ the same bytes, a reference count each
//!        │                 ├─► subscriber 1: transmit queue ─► its driver: one write
//!        │                 └─► subscriber n: transmit queue ─► its driver: one write
//!        └─► Backend (Redis: PUBLISH with this node's id) ─► other nodes ─► their subscribers
//! ```
//!
//! # Guarantees
//!
//! - **Order.** A subscriber receives each topic's messages in the order they were
//!   published on this node (fan-out runs under the hub's lock, so two publishes never
//!   interleave). A socket's own [`send`](crate::WebSocket::send)s and the hub's
//!   publishes to it keep program order: both go through the core's one transmit
//!   queue. Across nodes (a [`Backend`] such as Redis): each node's publishes arrive in
//!   that node's order; publishes from different nodes are not put in one total order.
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
//!   the in-process backend the history is this process's (under the hub's lock, so
//!   positions follow delivery order); on Redis it is in Redis (one script per
//!   publication assigns the position, stores it and publishes it to every node, the
//!   publishing one included), so every node delivers one order of each topic and the
//!   history outlives any node. A publication Redis could not store is delivered
//!   nowhere and its publisher told ([`Error::Unavailable`]); a retry with the same
//!   key is stored once. A node whose subscription to Redis was lost catches up when
//!   it is back: what was stored meanwhile never came on the channel, so the hub reads
//!   it from the history after the latest position its subscribers were given and
//!   delivers it ([`Inbound::resubscribed`]); a subscriber waiting for a topic that
//!   went quiet is not left behind without knowing. The wire protocol on top is [`crate::pubsub`]'s.
//! - **Slow subscribers are closed, never waited for.** A publish that would take a
//!   subscriber's [`buffered_amount`](crate::WebSocket::buffered_amount) over the hub's
//!   bound ([`HubBuilder::max_backlog`], 1 MiB by default; a message alone on an empty
//!   queue always fits) is not queued for it: the subscriber is closed with
//!   [`SLOW_CLOSE_CODE`] (1008, policy violation: the peer broke the rule that it reads
//!   what it subscribed to; 1013 would tell it the *server* is overloaded), reason
//!   `"slow subscriber"`, after what it was already sent, and counted in
//!   [`HubStats::dropped_slow`]. The publisher never blocks and the other subscribers
//!   are not delayed.
//! - **Memory.** What a hub makes its subscribers hold is at most the bound per
//!   subscriber (or one message larger than it), and the messages' bytes are shared, so
//!   the real cost is lower: one frame per publish plus a reference per subscriber.
//! - **No leak.** A socket leaves all its topics when its close event is dispatched
//!   (the hub registers a close listener), and a socket that went away without one is
//!   dropped from the maps at the next publish to its topics: the hub holds sockets by
//!   weak reference only.
//! - **permessage-deflate.** The shared frame is sent uncompressed (RSV1 clear) to
//!   deflate connections too, as RFC 7692 §6.1 allows; compressing per subscriber would
//!   cost one deflate per subscriber and defeat the sharing. The price is bandwidth:
//!   for a 1 KiB JSON-like message, 1,028 bytes on the wire instead of 291 for the
//!   first message compressed for one subscriber and about 218 for the next ones
//!   (context takeover), about 3.5 to 4.7 times more (measured in `tests/hub.rs`,
//!   `deflate_subscribers_get_the_frame_uncompressed`).
//!   Use [`send`](crate::WebSocket::send) per socket where bandwidth matters more than
//!   CPU. (Connections without context takeover could share one compressed frame; not
//!   done yet.)
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use wsevents_proto::{CloseCode, Message, PreparedMessage, Role};

use crate::api::data::IntoMessage;
use crate::api::events::{EventType, ListenerId};
use crate::api::websocket::{Offer, WeakWebSocket, WebSocket};
use crate::error::{Error, Result};

mod backend;
mod history;
#[cfg(feature = "redis")]
mod redis;

pub use backend::{Backend, BackendStatus, InProcess, Inbound, Pending};
pub use history::{History, MAX_KEY_LEN, META_TTL, Position, Publication, Recovery};
use history::{Stored, TopicHistory};
#[cfg(feature = "redis")]
pub use redis::{RedisBackend, RedisConfig};

/// The default bound on a subscriber's unsent bytes: 1 MiB (Centrifugo's, uWS.js's).
pub const DEFAULT_MAX_BACKLOG: usize = 1 << 20;

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
    state: Mutex<State>,
    max_backlog: usize,
    slow_code: CloseCode,
    /// Keep history, and give every publication a position.
    history: Option<History>,
    /// The backend keeps it (Redis), not the hub.
    history_in_backend: bool,
    backend: Box<dyn Backend>,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped_slow: AtomicU64,
}

/// A topic name, shared between the topic map and the members' sets.
type Topic = Arc<str>;

#[derive(Default)]
struct State {
    /// Topic → its subscribers by socket id.
    topics: HashMap<Topic, HashMap<u64, Subscriber>>,
    /// Socket id → the topics it is in, and the close listener that takes it out.
    members: HashMap<u64, Member>,
    /// Topic → its history, on a hub that keeps it in process.
    history: HashMap<Topic, TopicHistory>,
    /// Topic → the latest position its local subscribers were given (by a delivery or
    /// a recovery), on a hub with positions: where a catch-up reads from once the
    /// backend's lost subscription is back ([`Inbound::resubscribed`]).
    latest: HashMap<Topic, Position>,
    /// Publications since the last sweep of stale histories.
    since_sweep: u32,
}

/// Sweep the histories of idle topics every this many publications.
const SWEEP_EVERY: u32 = 4096;

/// One socket's subscription to one topic.
struct Subscriber {
    socket: WeakWebSocket,
    /// `None`: the bare message; else a frame of a protocol, with the position.
    framing: Option<Arc<dyn Framing>>,
    /// Publications held back while the subscriber's recovery is read from the
    /// backend; `None` once it is live.
    held: Option<Vec<Publication>>,
    /// The position its recovery went up to: a publication at or before it that the
    /// backend delivers late is not queued again.
    through: Option<Position>,
}

/// How publications look to the subscribers of a protocol that carries positions
/// (wsevents.v1's `pub`, [`crate::pubsub`]): one frame per publication, made once
/// for all the subscribers with the same framing.
pub trait Framing: Send + Sync + 'static {
    /// The frame that carries `publication` of `topic`.
    fn frame(&self, topic: &str, publication: &Publication) -> Message;
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

/// The most publications held back per subscriber while its recovery is read; past
/// it the subscriber is closed as slow (it reconnects and recovers).
const MAX_HELD: usize = 65_536;

struct Member {
    topics: HashSet<Topic>,
    socket: WeakWebSocket,
    listener: ListenerId,
}

/// Counters of a hub, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Calls of [`Hub::publish`].
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
    backend: Box<dyn Backend>,
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("max_backlog", &self.max_backlog)
            .field("slow_code", &self.slow_code)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// The bound on a subscriber's unsent bytes
    /// ([`buffered_amount`](crate::WebSocket::buffered_amount), its own `send`s
    /// included) past which a publish closes it instead of queuing; default
    /// [`DEFAULT_MAX_BACKLOG`] (1 MiB).
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
        if !code.is_valid_on_wire() {
            return Err(Error::InvalidAccess(format!(
                "close code {code} may not be sent in a close frame"
            )));
        }
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

    /// The backend that joins this hub to others ([`InProcess`] by default: none).
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Box::new(backend);
        self
    }

    /// The hub. A backend that runs tasks (Redis) starts them here, so call it inside
    /// a tokio runtime.
    pub fn build(self) -> Hub {
        let inner = Arc::new(HubInner {
            state: Mutex::new(State::default()),
            max_backlog: self.max_backlog,
            slow_code: self.slow_code,
            history: self.history,
            history_in_backend: self.history.is_some() && self.backend.stores_history(),
            backend: self.backend,
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped_slow: AtomicU64::new(0),
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

    /// Options: the backlog bound, the slow subscribers' close code, the backend.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            max_backlog: DEFAULT_MAX_BACKLOG,
            slow_code: SLOW_CLOSE_CODE,
            history: None,
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
        let added = {
            let mut state = self.inner.state();
            self.join(&mut state, ws, topic, None, None)
        };
        self.check_still_open(ws)?;
        Ok(added)
    }

    /// Subscribe `ws` to `topic` with positions, from `since` if given: the
    /// subscription of a protocol such as wsevents.v1 (docs/protocol.md;
    /// [`crate::pubsub`] serves it). The hub queues on `ws`, in this order and with
    /// nothing of the topic between them: the frame `answer` makes of the
    /// [`Subscribed`]; if it says `recovered`, every publication after `since` up to
    /// its position, framed by `framing`; then every later one, live. Subscribing again
    /// replaces the subscription (from a new `since`).
    ///
    /// A recovery is queued whole, past the backlog bound (its size is bounded by the
    /// history's). On a hub whose backend keeps the history (Redis), live publications
    /// that arrive while it is read are held back (at most 65,536; past them the
    /// subscriber is closed as slow) and queued after it, without the ones it
    /// already holds.
    ///
    /// Errors: those of [`subscribe`](Self::subscribe); [`Error::InvalidAccess`] on a
    /// hub without history; the backend's error when it cannot read the history
    /// (nothing is subscribed then).
    pub async fn subscribe_from(
        &self,
        ws: &WebSocket,
        topic: &str,
        since: Option<&Position>,
        framing: Arc<dyn Framing>,
        answer: impl FnOnce(&Subscribed) -> Message,
    ) -> Result<Subscribed> {
        check_subscriber(ws)?;
        let Some(config) = self.inner.history else {
            return Err(Error::InvalidAccess("this hub keeps no history".into()));
        };
        if !self.inner.history_in_backend {
            let subscribed = {
                let mut state = self.inner.state();
                self.join(&mut state, ws, topic, Some(framing.clone()), None);
                let recovery =
                    history_of(&mut state, topic).recover(since, &config, Instant::now());
                self.inner
                    .answer(ws, topic, recovery, &*framing, answer, Vec::new())
            };
            self.check_still_open(ws)?;
            return Ok(subscribed);
        }
        {
            let mut state = self.inner.state();
            self.join(
                &mut state,
                ws,
                topic,
                Some(framing.clone()),
                Some(Vec::new()),
            );
        }
        self.check_still_open(ws)?;
        let recovery = self.inner.backend.recover(topic, since).await;
        let mut state = self.inner.state();
        let held = state
            .topics
            .get_mut(topic)
            .and_then(|subscribers| subscribers.get_mut(&ws.id()))
            .and_then(|subscriber| subscriber.held.take());
        let Some(held) = held else {
            // Closed (or unsubscribed) meanwhile.
            return Err(Error::InvalidState);
        };
        match recovery {
            Ok(recovery) => {
                advance(&mut state, topic, &recovery.position);
                Ok(self
                    .inner
                    .answer(ws, topic, recovery, &*framing, answer, held))
            }
            Err(error) => {
                self.inner.leave(&mut state, ws.id(), topic);
                Err(error)
            }
        }
    }

    /// Add `ws` to `topic` (replacing its subscription there); true if it was not in
    /// it yet.
    fn join(
        &self,
        state: &mut State,
        ws: &WebSocket,
        topic: &str,
        framing: Option<Arc<dyn Framing>>,
        held: Option<Vec<Publication>>,
    ) -> bool {
        let id = ws.id();
        let name: Topic = match state.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::from(topic),
        };
        let member = state.members.entry(id).or_insert_with(|| {
            let hub = Arc::downgrade(&self.inner);
            let listener = ws.add_event_listener(EventType::Close, move |_| {
                if let Some(hub) = hub.upgrade() {
                    hub.leave_all(id);
                }
            });
            Member {
                topics: HashSet::new(),
                socket: ws.downgrade(),
                listener,
            }
        });
        let added = member.topics.insert(name.clone());
        let subscribers = state.topics.entry(name).or_default();
        subscribers.insert(
            id,
            Subscriber {
                socket: ws.downgrade(),
                framing,
                held,
                through: None,
            },
        );
        if added && subscribers.len() == 1 {
            self.inner.backend.subscribe(topic);
        }
        added
    }

    /// The close event may have been dispatched after the socket was checked and
    /// before its listener was registered: then nobody else will take it out.
    fn check_still_open(&self, ws: &WebSocket) -> Result<()> {
        if ws.is_closed() {
            self.inner.leave_all(ws.id());
            return Err(Error::InvalidState);
        }
        Ok(())
    }

    /// Unsubscribe `ws` from `topic`: true if it was subscribed.
    pub fn unsubscribe(&self, ws: &WebSocket, topic: &str) -> bool {
        let mut state = self.inner.state();
        let removed = self.inner.leave(&mut state, ws.id(), topic);
        let empty = state
            .members
            .get(&ws.id())
            .is_some_and(|m| m.topics.is_empty());
        if empty && let Some(member) = state.members.remove(&ws.id()) {
            drop(state);
            ws.remove_event_listener(member.listener);
        }
        removed
    }

    /// Publish `message` to `topic`: framed once, queued on every local subscriber,
    /// and handed to the backend for the other nodes. Returns how many local
    /// subscribers it was queued for (slow ones closed instead are not counted).
    /// Never waits.
    ///
    /// On a hub with [history](HubBuilder::history) the publication gets a
    /// [`Position`] first; where the backend keeps the history (Redis), the position
    /// comes from it, so local delivery waits for it too and this returns 0 (use
    /// [`publish_confirmed`](Self::publish_confirmed) to learn the position, or that
    /// there is none).
    ///
    /// ```
    /// let hub = wsevents::hub::Hub::new();
    /// assert_eq!(hub.publish("chat", "hello"), 0);
    /// assert_eq!(hub.publish("bin", vec![1u8, 2, 3]), 0);
    /// assert_eq!(hub.stats().published, 2);
    /// ```
    pub fn publish(&self, topic: &str, message: impl IntoMessage) -> usize {
        let message = message.into_message();
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        match self.inner.history {
            None => {
                let queued = self.inner.deliver(topic, &message, None);
                self.inner.backend.publish(topic, &message);
                queued
            }
            Some(_) if self.inner.history_in_backend => {
                // Delivered when the backend hands it back with its position.
                drop(self.inner.backend.store(topic, &message, None));
                0
            }
            Some(config) => self.inner.store_here(topic, &message, None, &config).1,
        }
    }

    /// Publish `message` to `topic` on a hub with history and learn its position;
    /// with a `key` (at most [`MAX_KEY_LEN`] bytes), a publish whose key the topic has
    /// seen within its history's age is not stored again, and the position is the
    /// first one's. Resolves once the publication is stored (at once in process; on
    /// Redis, after its round trip).
    ///
    /// Errors: [`Error::InvalidAccess`] on a hub without history or for a key too
    /// long; the backend's when it could not store it (Redis unreachable: nothing was
    /// delivered anywhere; retry with the same key).
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::hub::{History, Hub};
    /// let hub = Hub::builder().history(History::default()).build();
    /// let first = hub.publish_confirmed("news", "hello", Some("k1")).await?;
    /// let again = hub.publish_confirmed("news", "hello", Some("k1")).await?;
    /// assert_eq!((first.offset(), again), (1, first));
    /// # Ok(()) }
    /// ```
    pub fn publish_confirmed(
        &self,
        topic: &str,
        message: impl IntoMessage,
        key: Option<&str>,
    ) -> Pending<Position> {
        let message = message.into_message();
        let Some(config) = self.inner.history else {
            return Pending::ready(Err(Error::InvalidAccess(
                "this hub keeps no history".into(),
            )));
        };
        if key.is_some_and(|k| k.len() > MAX_KEY_LEN) {
            return Pending::ready(Err(Error::InvalidAccess(format!(
                "an idempotency key is at most {MAX_KEY_LEN} bytes"
            ))));
        }
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        if self.inner.history_in_backend {
            return self.inner.backend.store(topic, &message, key);
        }
        let (position, _) = self.inner.store_here(topic, &message, key, &config);
        Pending::ready(Ok(position))
    }

    /// The topics `ws` is subscribed to, sorted.
    pub fn topics(&self, ws: &WebSocket) -> Vec<String> {
        let state = self.inner.state();
        let mut topics: Vec<String> = state
            .members
            .get(&ws.id())
            .map(|m| m.topics.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        topics.sort();
        topics
    }

    /// How many local sockets are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner.state().topics.get(topic).map_or(0, HashMap::len)
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        let state = self.inner.state();
        HubStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped_slow: self.inner.dropped_slow.load(Ordering::Relaxed),
            topics: state.topics.len(),
            subscribers: state.members.len(),
        }
    }

    /// Where the backend is: [`BackendStatus::InProcess`] for a hub of one process,
    /// else connected or reconnecting (and why).
    pub fn backend_status(&self) -> BackendStatus {
        self.inner.backend.status()
    }
}

impl HubInner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left the maps consistent (every change is
        // one insert or remove); carry on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `message` in this process's history of `topic` and deliver it, under one
    /// lock (so positions and delivery agree); its position and the count queued.
    fn store_here(
        &self,
        topic: &str,
        message: &Message,
        key: Option<&str>,
        config: &History,
    ) -> (Position, usize) {
        let now = Instant::now();
        let mut state = self.state();
        state.since_sweep += 1;
        if state.since_sweep >= SWEEP_EVERY {
            state.since_sweep = 0;
            sweep(&mut state, config, now);
        }
        match history_of(&mut state, topic).store(message, key, config, now) {
            Stored::Repeat(position) => (position, 0),
            Stored::New(position) => {
                let publication = Publication {
                    position,
                    message: message.clone(),
                };
                let queued =
                    self.deliver_locked(state, topic, &publication.message, Some(&publication));
                (publication.position, queued)
            }
        }
    }

    /// Queue `message` (with its position, on a hub with history) on every local
    /// subscriber of `topic`; the count queued.
    pub(crate) fn deliver(
        &self,
        topic: &str,
        message: &Message,
        publication: Option<&Publication>,
    ) -> usize {
        let state = self.state();
        self.deliver_locked(state, topic, message, publication)
    }

    /// Deliver `publication` of a catch-up unless the topic's subscribers were given it
    /// or a later one of its epoch meanwhile (live, while the history was read): never
    /// twice to a subscriber that does not check positions. A positioned subscriber that
    /// got a later one first saw the hole and recovers by itself.
    fn deliver_missed(&self, topic: &str, publication: &Publication) {
        let state = self.state();
        if let Some(latest) = state.latest.get(topic)
            && !publication.position.is_past(latest)
        {
            return;
        }
        self.deliver_locked(state, topic, &publication.message, Some(publication));
    }

    fn deliver_locked(
        &self,
        mut state: MutexGuard<'_, State>,
        topic: &str,
        message: &Message,
        publication: Option<&Publication>,
    ) -> usize {
        let Some(subscribers) = state.topics.get_mut(topic) else {
            return 0;
        };
        let mut bare: Option<PreparedMessage> = None;
        let mut framed: Vec<(Arc<dyn Framing>, PreparedMessage)> = Vec::new();
        let mut queued = 0;
        let mut slow = 0;
        let mut gone = Vec::new();
        for (&id, subscriber) in subscribers.iter_mut() {
            let Some(ws) = subscriber.socket.upgrade() else {
                gone.push(id);
                continue;
            };
            if let Some(held) = &mut subscriber.held {
                if let Some(publication) = publication {
                    if held.len() < MAX_HELD {
                        held.push(publication.clone());
                    } else {
                        subscriber.held = None;
                        let _ = ws.close_with_code(self.slow_code, SLOW_CLOSE_REASON);
                        slow += 1;
                    }
                }
                continue;
            }
            if let (Some(through), Some(publication)) = (&subscriber.through, publication) {
                if !publication.position.is_past(through) {
                    continue;
                }
            }
            let prepared = match (&subscriber.framing, publication) {
                (None, _) => &*bare.get_or_insert_with(|| PreparedMessage::new(message)),
                (Some(framing), Some(publication)) => {
                    let at = match framed.iter().position(|(f, _)| Arc::ptr_eq(f, framing)) {
                        Some(at) => at,
                        None => {
                            let frame = framing.frame(topic, publication);
                            framed.push((framing.clone(), PreparedMessage::new(&frame)));
                            framed.len() - 1
                        }
                    };
                    &framed[at].1
                }
                // A positioned subscriber on a hub without positions: not made.
                (Some(_), None) => continue,
            };
            match ws.offer_prepared(
                prepared,
                self.max_backlog,
                self.slow_code,
                SLOW_CLOSE_REASON,
            ) {
                Offer::Queued => queued += 1,
                Offer::TooSlow => {
                    tracing::info!(
                        topic,
                        backlog = ws.buffered_amount(),
                        limit = self.max_backlog,
                        "closing a slow subscriber"
                    );
                    slow += 1;
                }
                Offer::Gone if ws.is_closed() => gone.push(id),
                Offer::Gone => {}
            }
        }
        if let Some(publication) = publication {
            advance(&mut state, topic, &publication.position);
        }
        for id in gone {
            self.remove_member(&mut state, id);
        }
        drop(state);
        self.delivered.fetch_add(queued as u64, Ordering::Relaxed);
        self.dropped_slow.fetch_add(slow, Ordering::Relaxed);
        queued
    }

    /// Queue on `ws` the answer to its subscription, then what it recovered, then
    /// what was held back for it past that (called under the hub's lock, so nothing
    /// of the topic comes between).
    fn answer(
        &self,
        ws: &WebSocket,
        topic: &str,
        recovery: Recovery,
        framing: &dyn Framing,
        answer: impl FnOnce(&Subscribed) -> Message,
        held: Vec<Publication>,
    ) -> Subscribed {
        let subscribed = Subscribed {
            topic: topic.to_owned(),
            recovered: recovery.publications.is_some(),
            position: recovery.position.clone(),
            count: recovery.publications.as_ref().map_or(0, Vec::len),
        };
        let queue = |message: &Message| {
            ws.offer_prepared(
                &PreparedMessage::new(message),
                usize::MAX,
                self.slow_code,
                SLOW_CLOSE_REASON,
            )
        };
        queue(&answer(&subscribed));
        for publication in recovery.publications.iter().flatten() {
            queue(&framing.frame(topic, publication));
        }
        // Held back while the recovery was read: the ones it did not already cover
        // (same epoch, past its position), and those of a new epoch as they come
        // (the client sees the change and recovers).
        let last = &recovery.position;
        for publication in held {
            if publication.position.is_past(last) {
                queue(&framing.frame(topic, &publication));
            }
        }
        subscribed
    }

    /// Take socket `id` out of every topic (its close listener).
    fn leave_all(&self, id: u64) {
        let mut state = self.state();
        self.remove_member(&mut state, id);
    }

    fn remove_member(&self, state: &mut State, id: u64) {
        let Some(member) = state.members.remove(&id) else {
            return;
        };
        for topic in &member.topics {
            self.drop_subscriber(state, id, topic);
        }
        drop(member.socket);
    }

    /// Take `id` out of `topic`'s subscribers: true if it was there.
    fn leave(&self, state: &mut State, id: u64, topic: &str) -> bool {
        let removed = state
            .members
            .get_mut(&id)
            .is_some_and(|m| m.topics.remove(topic));
        if removed {
            self.drop_subscriber(state, id, topic);
        }
        removed
    }

    fn drop_subscriber(&self, state: &mut State, id: u64, topic: &str) {
        if let Some(subscribers) = state.topics.get_mut(topic) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                state.topics.remove(topic);
                state.latest.remove(topic);
                self.backend.unsubscribe(topic);
            }
        }
    }
}

impl Inbound {
    /// Queue `message` on the local subscribers of `topic`; how many it was queued
    /// for (0 once the hub is gone).
    pub fn deliver(&self, topic: &str, message: &Message) -> usize {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver(topic, message, None),
            None => 0,
        }
    }

    /// Queue `publication` on the local subscribers of `topic` (a backend that keeps
    /// the history hands back every publication so, this node's own included).
    pub fn deliver_at(&self, topic: &str, publication: &Publication) -> usize {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver(topic, &publication.message, Some(publication)),
            None => 0,
        }
    }

    /// The backend's subscription to `topic` is back after it was lost (its connection
    /// to the broker dropped): what was published meanwhile did not reach this node,
    /// and if nothing is published after it, no subscriber would ever see the gap. So
    /// the hub reads the history from the latest position its subscribers were given
    /// and delivers what they missed, in order. Past what the history holds, or in a
    /// new epoch (the broker lost its data), it delivers the latest publication only:
    /// each subscriber sees the hole or the new epoch and resubscribes from its own
    /// position, and is told whether it recovered. Nothing happens on a hub without
    /// positions, or for a topic whose subscribers were given nothing yet (their
    /// subscription's recovery reads the history itself).
    pub fn resubscribed(&self, topic: &str) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if !hub.history_in_backend {
            return;
        }
        let Some(since) = hub.state().latest.get(topic).cloned() else {
            return;
        };
        tokio::spawn(catch_up(self.clone(), topic.to_owned(), since));
    }

    /// The hub's history settings, when it keeps history.
    pub fn history(&self) -> Option<History> {
        self.hub.upgrade().and_then(|hub| hub.history)
    }

    /// Whether the hub still exists (a backend's tasks end when it is gone).
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }

    /// The topics with local subscribers now (what a backend resubscribes to after
    /// reconnecting).
    pub fn topics(&self) -> Vec<String> {
        match self.hub.upgrade() {
            Some(hub) => hub.state().topics.keys().map(|t| t.to_string()).collect(),
            None => Vec::new(),
        }
    }
}

pub(crate) type WeakHub = Weak<HubInner>;

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

/// How often a catch-up ([`Inbound::resubscribed`]) reads the history before it gives
/// up (the broker failing again brings another catch-up when it is back), and the
/// first wait between tries (doubling).
const CATCH_UP_TRIES: u32 = 8;
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Deliver what `topic`'s subscribers missed after `since` (see
/// [`Inbound::resubscribed`]).
async fn catch_up(inbound: Inbound, topic: String, since: Position) {
    let read = |from: Position| {
        let hub = inbound.hub.clone();
        let topic = topic.clone();
        async move {
            let mut wait = CATCH_UP_RETRY;
            for _ in 0..CATCH_UP_TRIES {
                // Not kept alive by its own catch-up.
                let pending = hub.upgrade()?.backend.recover(&topic, Some(&from));
                match pending.await {
                    Ok(recovery) => return Some(recovery),
                    Err(error) => {
                        tracing::debug!(%error, topic, "catching up: the history read failed; again");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
            tracing::warn!(
                topic,
                "catching up after a lost subscription: the history could not be read"
            );
            None
        }
    };
    let missed = match read(since.clone()).await {
        Some(Recovery {
            publications: Some(missed),
            ..
        }) => missed,
        // Not all in the history, or another epoch: the latest publication, so that
        // every subscriber notices.
        Some(Recovery { position, .. }) => {
            let Some(before) = position
                .offset()
                .checked_sub(1)
                .and_then(|offset| Position::new(position.epoch(), offset).ok())
            else {
                return;
            };
            match read(before).await {
                Some(Recovery {
                    publications: Some(latest),
                    ..
                }) => latest.into_iter().last().into_iter().collect(),
                _ => Vec::new(),
            }
        }
        None => return,
    };
    if !missed.is_empty() {
        tracing::info!(topic, count = missed.len(), since = %since, "caught up after a lost subscription");
    }
    let Some(hub) = inbound.hub.upgrade() else {
        return;
    };
    for publication in &missed {
        hub.deliver_missed(&topic, publication);
    }
}

/// `topic`'s subscribers were given `position`: the latest they were given moves to it
/// if it is later (or of another epoch: the backend's history started again).
fn advance(state: &mut State, topic: &str, position: &Position) {
    match state.latest.get_mut(topic) {
        Some(latest) => {
            if position.is_past(latest) {
                *latest = position.clone();
            }
        }
        None => {
            if let Some((name, _)) = state.topics.get_key_value(topic) {
                let name = name.clone();
                state.latest.insert(name, position.clone());
            }
        }
    }
}

/// `topic`'s history in this process, made (with a new epoch) if it has none.
fn history_of<'a>(state: &'a mut State, topic: &str) -> &'a mut TopicHistory {
    if !state.history.contains_key(topic) {
        let name: Topic = match state.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::from(topic),
        };
        state
            .history
            .insert(name.clone(), TopicHistory::new(Instant::now()));
    }
    state.history.get_mut(topic).expect("inserted just above")
}

/// Forget the histories of topics that hold nothing, have no subscriber and were idle
/// past [`META_TTL`].
fn sweep(state: &mut State, config: &History, now: Instant) {
    let topics = &state.topics;
    state
        .history
        .retain(|topic, history| topics.contains_key(topic) || !history.is_stale(config, now));
}
