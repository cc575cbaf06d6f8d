//! The hub on Redis pub/sub: many server processes, one hub (feature `redis`); the
//! design is on [`RedisBackend`].
//!
//! - `mod.rs`: [`RedisBackend`], [`RedisConfig`], the [`Backend`] methods (each queues
//!   work for a task and returns at once), and what the tasks share.
//! - `publisher.rs`: the publisher task and its queue of jobs, sent in pipelined batches.
//! - `subscriber.rs`: the subscriber task and its `SUBSCRIBE`s that follow the hub's
//!   topics, the connection's reader, and the delivery task.
//! - `inbound_queue.rs`: what arrived from Redis and waits for the delivery task,
//!   bounded in bytes.
//! - `envelope.rs`: what a publication looks like on a channel (`wse1`, `wse2`).
//! - `keys.rs`: a topic's channel and key names.
//! - `recover.rs`: the history read and the parsing of its answer.
//! - `read.rs`: the history read of a server API (a page, nothing subscribed).
//! - `control.rs`: the control channel, commands to every node and their answers
//!   ([`Hub::command`](super::Hub::command)), on a connection of its own.
//! - `backoff.rs`: the wait before reconnecting.
//! - `store.lua`, `recover.lua`: the two scripts that keep a topic's history in Redis.
//! - On a Redis Cluster ([`RedisBackend::cluster`]): `slots.rs` (a topic's hash tag
//!   and slot), `topology.rs` (the slot map, the connections to the masters),
//!   `shard_publisher.rs` and `shard_subscriber.rs` (the two tasks, per master); the
//!   delivery task and the inbound queue are the same.
//!
//! Locks: every `Mutex` here guards one small piece of state and is held for one
//! insert, remove, read or assignment (the inbound queue's for one arrival or one
//! take); none is held across an `.await`, while calling the hub, or while another is
//! taken, except `wanted` then `subscribed` (in that order) in the publisher's settle
//! step. (`delivered` is taken after `wanted` is released.)

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use wsevents_proto::Message;

use super::backend::{Backend, BackendStatus, Inbound, Pending};
use super::history::{History, HistoryPage, Position, Recovery};
use crate::error::{Error, Result};

mod backoff;
mod control;
mod envelope;
mod inbound_queue;
mod keys;
mod publisher;
mod read;
mod recover;
mod shard_publisher;
mod shard_subscriber;
mod slots;
mod subscriber;
mod topology;

use inbound_queue::InboundQueue;
use keys::Keys;
use publisher::{Budget, Job};
use topology::Cluster;

/// Options for a [`RedisBackend`].
///
/// ```
/// use wsevents::hub::RedisConfig;
/// let config = RedisConfig { prefix: "chat:".into(), ..RedisConfig::default() };
/// assert_eq!(RedisConfig::default().max_pending, 65_536);
/// assert_eq!(RedisConfig::default().max_pending_bytes, 64 << 20);
/// assert_eq!(RedisConfig::default().max_inbound_bytes, 64 << 20);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Put before each topic to make its Redis channel; `"wsevents:"` by default.
    pub prefix: String,
    /// Publications waiting for the publisher connection, at most (65,536). Past it,
    /// and past [`max_pending_bytes`](Self::max_pending_bytes), a publish of a hub
    /// without history is not carried to other nodes (counted as dropped; local
    /// delivery is not affected) and a publication of a hub with history is refused
    /// with [`Error::Unavailable`] (stored nowhere, delivered nowhere; retry with its
    /// key).
    pub max_pending: usize,
    /// The bytes those waiting publications may hold, at most: 64 MiB. A publication
    /// counts its payload, its topic and its key (or channel and envelope); it holds
    /// them from the moment it is queued until Redis has answered for it (or it was
    /// given up), then gives them back. One that would take the total past the bound
    /// is refused as when the queue is full, unless nothing is held (so a publication
    /// larger than the bound is carried alone, never refused for ever).
    pub max_pending_bytes: usize,
    /// The bytes of messages from Redis waiting for delivery to the hub, at most:
    /// 64 MiB. The subscriber connection is read at once, whatever the hub's pace; a
    /// message (payload and topic) that would take what waits past the bound is not
    /// queued, unless nothing waits. On a hub with history its topic's later messages
    /// are not queued either, and once the queue is down to half the bound the topic
    /// catches up from the history, as after a lost subscription
    /// ([`Inbound::resubscribed`]): its subscribers get every publication once, in
    /// order, or see the gap and recover. On a hub without history the message is lost
    /// for this node (counted in [`RedisBackend::dropped`], logged once per overflow).
    /// [`RedisBackend::inbound_dropped`] counts both.
    pub max_inbound_bytes: usize,
    /// The first reconnection delay's ceiling (100 ms); it doubles per attempt.
    pub backoff_min: Duration,
    /// The most a reconnection delay's ceiling grows to (5 s).
    pub backoff_max: Duration,
    /// How long connecting, and each command, may take (2 s). On a cluster also how
    /// long a publication waits for its slot to settle (moving, failing over) before
    /// it is refused.
    pub timeout: Duration,
    /// On a Redis Cluster ([`RedisBackend::cluster`]), how often the slot map is read
    /// again when nothing said it changed (10 s). A `MOVED` answer, a `sunsubscribe`
    /// Redis pushes when a slot moves, and a master that cannot be reached make it
    /// read at once.
    pub topology_refresh: Duration,
    /// Replicas that must have a stored publication before it is confirmed to its
    /// publisher (0: confirmed when the master stored it). Above 0, each pipeline of
    /// stores ends with `WAIT n` (waiting at most half the timeout); a store not
    /// confirmed by as many in time is answered [`Error::Unavailable`] (it was stored
    /// and delivered, but a failover may lose it; a retry with its key is stored once).
    /// Whatever this says, a history that lost its tail in a failover starts a new
    /// epoch when a node that delivered the lost offsets reads it (see
    /// [`RedisBackend::cluster`]).
    pub wait_replicas: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "wsevents:".into(),
            max_pending: 65_536,
            max_pending_bytes: 64 << 20,
            max_inbound_bytes: 64 << 20,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            topology_refresh: Duration::from_secs(10),
            wait_replicas: 0,
        }
    }
}

impl RedisConfig {
    /// The reconnection waits: full jitter under `backoff_min` doubling to
    /// `backoff_max`.
    pub(crate) fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff {
            initial: self.backoff_min,
            max: self.backoff_max,
        }
    }
}

/// A [`Backend`] on Redis pub/sub: many server processes, one hub.
///
/// Each node keeps three connections to Redis, each owned by a task of its own (and a
/// fourth task delivers what arrives):
///
/// - the **publisher** sends this node's publishes, in order, as pipelined `PUBLISH`es
///   on one connection (Redis delivers a connection's messages in the order it sent
///   them), each in an envelope with this node's id;
/// - the **subscriber** holds a `SUBSCRIBE` for exactly the topics that have local
///   subscribers (it follows the hub: subscribe on the first, unsubscribe after the
///   last). It speaks RESP3 (Redis 6 or later), so what arrives is read at once, as
///   it is parsed, into an inbound queue bounded in bytes
///   ([`RedisConfig::max_inbound_bytes`]); a task of its own delivers the queue to the
///   hub, in order, and drops what carries this node's id (the hub delivered that
///   locally already).
/// - the **control** connection holds `SSUBSCRIBE {prefix}control`, the hub's channel
///   for commands to every node and their answers ([`Hub::command`](super::Hub::command):
///   a server API's disconnect, unsubscribe and info); on a cluster, at the master of
///   that channel's slot, so `SPUBLISH` there counts every node.
///
/// When Redis goes away, local delivery goes on unchanged; each task reconnects with
/// full-jitter exponential backoff (100 ms doubling to 5 s), the subscriber
/// resubscribes to every topic the hub has then (on a hub with history, the hub then
/// catches up on what was stored while it was away), and both say so in the log
/// (`tracing`: a warning on loss, info on recovery) and in
/// [`Hub::backend_status`](super::Hub::backend_status). What is published before the
/// first connection is made waits for it (up to [`RedisConfig::max_pending`]
/// publications and [`RedisConfig::max_pending_bytes`]); what is published while the
/// publisher is cut off is not carried to other nodes (counted in
/// [`BackendStatus::Reconnecting::dropped`] and [`RedisBackend::dropped`]); Redis
/// pub/sub has no history to replay.
///
/// **On a hub with history** ([`HubBuilder::history`](super::HubBuilder::history)),
/// Redis keeps it, so it outlives every node: per topic a hash
/// (`{prefix}meta:TOPIC`: epoch, latest offset, bytes) and a stream
/// (`{prefix}history:TOPIC`, entry ids `0-OFFSET`, its oldest entries trimmed past the
/// history's count and bytes by the script that adds one, expiring with its age), and
/// per idempotency key a string (`{prefix}key:LEN:TOPIC:KEY`, `LEN` the topic's length
/// in bytes, so that keys of two topics never meet). A publication is one Lua script,
/// pipelined in queue order on the publisher connection: it makes the epoch if the
/// topic has none (a new history: Redis lost or expired the old one), takes the next
/// offset, appends the entry, remembers the publish key for the history's age, and
/// `PUBLISH`es `wse2 EPOCH:OFFSET KIND PAYLOAD`; every node (this one too) delivers
/// what arrives on the channel, so positions and order are Redis's, the same
/// everywhere. A recovery waits until this node is subscribed to the topic's
/// channel, then reads the missed entries with a second script (all of them, none
/// older than the age and no more than the size, or none). While Redis is
/// unreachable, or the publisher's queue is full, a publication is refused with
/// [`Error::Unavailable`] and delivered nowhere: never a position without a stored
/// publication. A node whose inbound queue overflows catches the topic up from the
/// history, as after a lost subscription. On one Redis (standalone or Sentinel) build
/// it with [`new`](Self::new); on a Redis Cluster with [`cluster`](Self::cluster).
///
/// The envelope: `b"wse1"`, the node id (8 bytes, big-endian), the kind (`0x01` text,
/// `0x02` binary), the payload. Channels are the topics behind a prefix
/// ([`RedisConfig::prefix`], `"wsevents:"` by default). A payload is copied into the
/// Redis command on its way out, and taken as Redis's reply parser made it on its way
/// in (the envelope is sliced off, not copied).
///
/// To read the backend's counters once a hub has it, give the hub an
/// `Arc<RedisBackend>` (see the `Backend` impl for it).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use wsevents::hub::{BackendStatus, Hub, RedisBackend};
/// let hub = Hub::builder()
///     .backend(RedisBackend::new("redis://127.0.0.1:6379")?)
///     .build();
/// if let BackendStatus::Reconnecting { error, .. } = hub.backend_status() {
///     eprintln!("Redis unreachable ({error}): local subscribers only");
/// }
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    client: redis::Client,
    /// The same, speaking RESP3 (the subscriber connection).
    subscriber_client: redis::Client,
    config: RedisConfig,
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Receiver<Job>>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("node", &self.shared.node)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Topics without local subscribers whose latest stored position a node remembers.
const MAX_LATEST: usize = 65_536;

/// The latest publication of a topic this node delivered or stored.
#[derive(Debug, Clone)]
struct Latest {
    position: Position,
    /// Its message, on a topic with local subscribers.
    message: Option<Message>,
}

/// What the backend and its tasks share.
struct Shared {
    /// This node's id, in every envelope it publishes.
    node: u64,
    /// The names of topics in Redis.
    keys: Keys,
    /// The channels the hub wants (topics with local subscribers), and a wake-up for
    /// the subscriber task when they change.
    wanted: Mutex<HashSet<String>>,
    changed: Notify,
    /// The publisher's queue, and the bytes its jobs hold.
    publish: mpsc::Sender<Job>,
    pending: Arc<Budget>,
    /// The hub's history, when it keeps one (set at start): publications are
    /// stored, and positioned, in Redis.
    history: OnceLock<History>,
    /// Messages from Redis on their way to the hub.
    inbound: InboundQueue,
    /// The publisher's connection while it is up (recoveries read through it).
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// The control channel's connection while it is up (`control.rs`).
    control: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// The channels the subscriber connection is subscribed to now, and a counter
    /// bumped whenever they change (recoveries wait for their channel).
    subscribed: Mutex<HashSet<String>>,
    subscribed_changed: watch::Sender<u64>,
    links: Mutex<Links>,
    dropped: AtomicU64,
    /// On a Redis Cluster: the slot map and the publisher's connections.
    cluster: Option<Arc<Cluster>>,
    /// Per topic, the latest position this node delivered or stored (and, for a topic
    /// with local subscribers, its message), so that a history that lost its tail in
    /// a failover is found out (`store.lua`, `recover.lua`). Every topic with local
    /// subscribers, and up to [`MAX_LATEST`] others (past it, a topic without
    /// subscribers is not remembered).
    delivered: Mutex<HashMap<String, Latest>>,
    /// Set when the backend (so the hub) is dropped: the tasks end.
    stop: tokio_util::sync::CancellationToken,
}

#[derive(Debug, Default)]
struct Links {
    publisher: Link,
    subscriber: Link,
}

#[derive(Debug, Clone, Default)]
enum Link {
    #[default]
    Starting,
    Up,
    Down {
        attempts: u32,
        error: String,
    },
}

impl RedisBackend {
    /// A backend on the Redis at `url` (`redis://HOST:PORT[/DB]`, `rediss://` not
    /// compiled in) with the default [`RedisConfig`]. Connects when the hub is built;
    /// a bad URL is [`Error::Syntax`].
    pub fn new(url: &str) -> Result<RedisBackend> {
        RedisBackend::with_config(url, RedisConfig::default())
    }

    /// A backend with `config`.
    pub fn with_config(url: &str, config: RedisConfig) -> Result<RedisBackend> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Syntax(format!("Redis URL {url:?}: {e}")))?;
        let subscriber_client = subscriber::resp3(&client)
            .map_err(|e| Error::Syntax(format!("Redis URL {url:?}: {e}")))?;
        Ok(RedisBackend::make(client, subscriber_client, config, None))
    }

    /// A backend on the Redis Cluster that any of `urls` belongs to
    /// (`redis://HOST:PORT`, a few masters: the others are found with `CLUSTER
    /// SLOTS`; the first one's password and options are used for every node), with
    /// the default [`RedisConfig`]. Needs Redis 7 (sharded pub/sub) and connects when
    /// the hub is built; a bad URL, none, or a prefix with a `{` is [`Error::Syntax`].
    ///
    /// A topic's names (channel, meta, history stream, idempotency keys) share one
    /// hash slot: topics are hashed into 128 partitions, each with a hash tag spread
    /// evenly over the slots (`PREFIX{TAG}meta:TOPIC`, `PREFIX{TAG}TOPIC`, ...). A
    /// publication is sent to its slot's master, whose store script publishes it with
    /// `SPUBLISH` on the topic's channel, in the same slot. Each node keeps one
    /// publisher connection and one subscriber connection (RESP3) per master and
    /// `SSUBSCRIBE`s there to the topics with local subscribers whose slots it serves,
    /// in pipelines of up to 512, so a resubscription is one round trip per master.
    ///
    /// When the cluster changes, nothing is lost without a word: a slot that moves
    /// (Redis pushes `sunsubscribe` for its channels; `MOVED`), a master that fails
    /// over (its connection drops, or it pushes `sunsubscribe` when it turns replica)
    /// and the slot map read every [`RedisConfig::topology_refresh`] make the node
    /// read the map again, subscribe on the new owner, and catch each topic up from
    /// the history ([`Inbound::resubscribed`]), as after a lost connection on one
    /// Redis. A publication sent while its slot moves waits (up to
    /// [`RedisConfig::timeout`]) and is sent to the new owner, in order.
    ///
    /// **Offsets are never reused after a failover** that lost writes the old master
    /// had not replicated: a history whose latest offset is below one a node
    /// delivered from it (read when the node catches up after the failover, or when
    /// its client recovers) starts a new epoch, so later publications never take an
    /// offset a subscriber saw with other data; its subscribers are told
    /// `recovered: false`. With [`RedisConfig::wait_replicas`] a publication is
    /// confirmed only once a replica has it, so a confirmed one survives a failover
    /// to that replica.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::hub::{History, Hub, RedisBackend};
    /// let backend = RedisBackend::cluster(&["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])?;
    /// let hub = Hub::builder().history(History::default()).backend(backend).build();
    /// # let _ = hub;
    /// # Ok(()) }
    /// ```
    pub fn cluster(urls: &[&str]) -> Result<RedisBackend> {
        RedisBackend::cluster_with_config(urls, RedisConfig::default())
    }

    /// A backend on a Redis Cluster with `config` (see [`cluster`](Self::cluster)).
    pub fn cluster_with_config(urls: &[&str], config: RedisConfig) -> Result<RedisBackend> {
        if config.prefix.contains('{') {
            return Err(Error::Syntax(format!(
                "a Redis Cluster prefix holds no '{{' (the topic's hash tag comes first): {:?}",
                config.prefix
            )));
        }
        let cluster = Cluster::new(urls).map_err(Error::Syntax)?;
        let first = urls.first().copied().unwrap_or_default();
        let client = redis::Client::open(first)
            .map_err(|e| Error::Syntax(format!("Redis URL {first:?}: {e}")))?;
        let subscriber_client = subscriber::resp3(&client)
            .map_err(|e| Error::Syntax(format!("Redis URL {first:?}: {e}")))?;
        Ok(RedisBackend::make(
            client,
            subscriber_client,
            config,
            Some(Arc::new(cluster)),
        ))
    }

    fn make(
        client: redis::Client,
        subscriber_client: redis::Client,
        config: RedisConfig,
        cluster: Option<Arc<Cluster>>,
    ) -> RedisBackend {
        let (publish, queue) = mpsc::channel(config.max_pending.max(1));
        let keys = match cluster {
            Some(_) => Keys::tagged(&config.prefix),
            None => Keys::new(&config.prefix),
        };
        let shared = Arc::new(Shared {
            node: node_id(),
            keys,
            wanted: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            publish,
            pending: Arc::new(Budget::new(config.max_pending_bytes)),
            history: OnceLock::new(),
            inbound: InboundQueue::new(config.max_inbound_bytes),
            conn: Mutex::new(None),
            control: Mutex::new(None),
            subscribed: Mutex::new(HashSet::new()),
            subscribed_changed: watch::channel(0).0,
            links: Mutex::new(Links::default()),
            dropped: AtomicU64::new(0),
            cluster,
            delivered: Mutex::new(HashMap::new()),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        RedisBackend {
            client,
            subscriber_client,
            config,
            shared,
            queue: Mutex::new(Some(queue)),
        }
    }

    /// This node's id (what its envelopes carry).
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }

    /// Publications lost between nodes since the backend was made, the figure
    /// [`BackendStatus::Reconnecting::dropped`] reports: not carried to other nodes
    /// (the publisher cut off or its queue full, a batch lost with its connection) and,
    /// on a hub without history, other nodes' not delivered here (past
    /// [`RedisConfig::max_inbound_bytes`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The bytes the publisher's queue holds now (at most about
    /// [`RedisConfig::max_pending_bytes`]).
    pub fn pending_bytes(&self) -> usize {
        self.shared.pending.held()
    }

    /// Messages from Redis not queued for delivery, since the backend was made: past
    /// [`RedisConfig::max_inbound_bytes`], or of a topic waiting to catch up.
    pub fn inbound_dropped(&self) -> u64 {
        self.shared.inbound.dropped()
    }

    /// The bytes of messages from Redis waiting for delivery now (at most about
    /// [`RedisConfig::max_inbound_bytes`]).
    pub fn inbound_bytes(&self) -> usize {
        self.shared.inbound.bytes()
    }
}

/// What the fuzz targets reach ([`crate::fuzzing`]): compiled only with
/// `--cfg fuzzing`, hidden, not an API.
#[cfg(fuzzing)]
#[doc(hidden)]
impl RedisBackend {
    /// Open a `wse1` envelope.
    pub fn fuzz_open_envelope(data: &[u8]) -> Option<(u64, Message)> {
        envelope::open(bytes::Bytes::copy_from_slice(data))
    }

    /// Seal a `wse1` envelope, as the publisher writes it.
    pub fn fuzz_seal_envelope(node: u64, message: &Message) -> bytes::Bytes {
        envelope::seal(node, message)
    }

    /// Open a `wse2` envelope.
    pub fn fuzz_open_stored(data: &[u8]) -> Option<super::Publication> {
        envelope::open_stored(bytes::Bytes::copy_from_slice(data))
    }

    /// Parse `resp` as a Redis reply, then as the history read's answer.
    pub fn fuzz_parse_recovery(resp: &[u8], since: Option<&Position>) -> Option<Recovery> {
        recover::parse_recovery(redis::parse_redis_value(resp).ok()?, since)
    }
}

/// The payload's length.
fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl Backend for RedisBackend {
    fn start(&self, inbound: Inbound) {
        let Some(queue) = lock(&self.queue).take() else {
            return;
        };
        if let Some(history) = inbound.history() {
            let _ = self.shared.history.set(history);
        }
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "the Redis hub backend needs a tokio runtime: not started");
                let down = Link::Down {
                    attempts: 0,
                    error: "built outside a tokio runtime".into(),
                };
                let mut links = lock(&self.shared.links);
                links.publisher = down.clone();
                links.subscriber = down;
                return;
            }
        };
        let target = match &self.shared.cluster {
            Some(cluster) => control::Target::Cluster(cluster.clone()),
            None => control::Target::One(self.subscriber_client.clone()),
        };
        runtime.spawn(control::control(
            target,
            self.config.clone(),
            self.shared.clone(),
            inbound.clone(),
        ));
        if let Some(cluster) = &self.shared.cluster {
            runtime.spawn(shard_publisher::shard_publisher(
                cluster.clone(),
                self.config.clone(),
                self.shared.clone(),
                queue,
            ));
            runtime.spawn(subscriber::delivery(self.shared.clone(), inbound.clone()));
            runtime.spawn(shard_subscriber::shard_subscriber(
                cluster.clone(),
                self.config.clone(),
                self.shared.clone(),
                inbound,
            ));
            return;
        }
        runtime.spawn(publisher::publisher(
            self.client.clone(),
            self.config.clone(),
            self.shared.clone(),
            queue,
        ));
        runtime.spawn(subscriber::delivery(self.shared.clone(), inbound.clone()));
        runtime.spawn(subscriber::subscriber(
            self.subscriber_client.clone(),
            self.config.clone(),
            self.shared.clone(),
            inbound,
        ));
    }

    fn subscribe(&self, topic: &str) {
        lock(&self.shared.wanted).insert(self.shared.keys.channel(topic));
        self.shared.changed.notify_one();
    }

    fn unsubscribe(&self, topic: &str) {
        lock(&self.shared.wanted).remove(&self.shared.keys.channel(topic));
        if let Some(latest) = lock(&self.shared.delivered).get_mut(topic) {
            latest.message = None;
        }
        self.shared.changed.notify_one();
    }

    fn publish(&self, topic: &str, message: &Message) {
        // Cut off: not queued for later (other nodes lost their subscriptions too, and
        // would get it late or not at all); counted. While the first connection is
        // being made, it waits in the queue.
        if matches!(lock(&self.shared.links).publisher, Link::Down { .. }) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let channel = self.shared.keys.channel(topic);
        let bytes = channel.len() + envelope::HEADER_LEN + payload_len(message);
        let queued = match self.shared.pending.reserve(bytes) {
            Some(held) => self
                .shared
                .publish
                .try_send(Job::Publish {
                    channel,
                    message: message.clone(),
                    _held: held,
                })
                .is_ok(),
            None => false,
        };
        if !queued {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                topic,
                "Redis publisher queue full (in jobs or bytes): not carried to other nodes"
            );
        }
    }

    fn status(&self) -> BackendStatus {
        let links = lock(&self.shared.links);
        let down = [&links.publisher, &links.subscriber]
            .into_iter()
            .find_map(|link| match link {
                Link::Up => None,
                Link::Starting => Some((0, "connecting".to_owned())),
                Link::Down { attempts, error } => Some((*attempts, error.clone())),
            });
        match down {
            None => BackendStatus::Connected,
            Some((attempts, error)) => BackendStatus::Reconnecting {
                attempts,
                error,
                dropped: self.shared.dropped.load(Ordering::Relaxed),
            },
        }
    }

    fn stores_history(&self) -> bool {
        true
    }

    fn store(&self, topic: &str, message: &Message, key: Option<&str>) -> Pending<Position> {
        // Cut off: refused at once (the caller retries with the same key); while the
        // first connection is being made, it waits in the queue.
        if let Link::Down { error, .. } = &lock(&self.shared.links).publisher {
            return Pending::ready(Err(Error::Unavailable(format!("Redis: {error}"))));
        }
        let bytes = topic.len() + payload_len(message) + key.map_or(0, str::len);
        let Some(held) = self.shared.pending.reserve(bytes) else {
            return Pending::ready(Err(Error::Unavailable(format!(
                "the Redis publisher queue is full ({} bytes waiting)",
                self.shared.pending.held()
            ))));
        };
        let (done, answer) = oneshot::channel();
        let job = Job::Store {
            topic: topic.to_owned(),
            message: message.clone(),
            key: key.map(str::to_owned),
            done,
            _held: held,
        };
        if self.shared.publish.try_send(job).is_err() {
            return Pending::ready(Err(Error::Unavailable(
                "the Redis publisher queue is full".into(),
            )));
        }
        Pending::new(async move {
            answer.await.unwrap_or_else(|_| {
                Err(Error::Unavailable("Redis: the connection was lost".into()))
            })
        })
    }

    fn recover(&self, topic: &str, since: Option<&Position>) -> Pending<Recovery> {
        let shared = self.shared.clone();
        let config = self.config.clone();
        let timeout = self.config.timeout;
        let topic = topic.to_owned();
        let since = since.cloned();
        Pending::new(async move {
            let read = async {
                subscriber::wait_subscribed(&shared, &shared.keys.channel(&topic)).await;
                let conn = shared.connection_for(&config, &topic).await?;
                let recovery = recover::recover(&shared, conn, &topic, since.as_ref()).await?;
                if let Some(last) = recovery.publications.as_ref().and_then(|p| p.last()) {
                    shared.note_delivered(&topic, &last.position, &last.message);
                }
                Ok(recovery)
            };
            match tokio::time::timeout(timeout, read).await {
                Ok(recovery) => recovery,
                Err(_) => Err(Error::Unavailable(format!(
                    "Redis: the history of {topic:?} was not read within {timeout:?}"
                ))),
            }
        })
    }

    fn send_command(&self, message: bytes::Bytes) -> Option<Pending<usize>> {
        let shared = self.shared.clone();
        Some(Pending::new(async move {
            control::send(&shared, message).await
        }))
    }

    fn read_history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Pending<HistoryPage> {
        let shared = self.shared.clone();
        let config = self.config.clone();
        let timeout = self.config.timeout;
        let topic = topic.to_owned();
        let since = since.cloned();
        Pending::new(async move {
            let read = async {
                let conn = shared.connection_for(&config, &topic).await?;
                read::read(&shared, conn, &topic, since.as_ref(), limit).await
            };
            match tokio::time::timeout(timeout, read).await {
                Ok(page) => page,
                Err(_) => Err(Error::Unavailable(format!(
                    "Redis: the history of {topic:?} was not read within {timeout:?}"
                ))),
            }
        })
    }
}

/// A backend shared with its maker, so that its counters ([`RedisBackend::dropped`],
/// [`RedisBackend::pending_bytes`]) stay readable once a hub has it: build the hub
/// with a clone of the `Arc`. One hub per backend (a second one is never started).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use std::sync::Arc;
/// use wsevents::hub::{Hub, RedisBackend};
/// let backend = Arc::new(RedisBackend::new("redis://127.0.0.1:6379")?);
/// let hub = Hub::builder().backend(backend.clone()).build();
/// hub.publish("news", "hello");
/// println!("{} bytes wait for Redis", backend.pending_bytes());
/// # Ok(()) }
/// ```
impl Backend for Arc<RedisBackend> {
    fn start(&self, inbound: Inbound) {
        (**self).start(inbound);
    }

    fn subscribe(&self, topic: &str) {
        (**self).subscribe(topic);
    }

    fn unsubscribe(&self, topic: &str) {
        (**self).unsubscribe(topic);
    }

    fn publish(&self, topic: &str, message: &Message) {
        (**self).publish(topic, message);
    }

    fn status(&self) -> BackendStatus {
        (**self).status()
    }

    fn stores_history(&self) -> bool {
        (**self).stores_history()
    }

    fn store(&self, topic: &str, message: &Message, key: Option<&str>) -> Pending<Position> {
        (**self).store(topic, message, key)
    }

    fn recover(&self, topic: &str, since: Option<&Position>) -> Pending<Recovery> {
        (**self).recover(topic, since)
    }

    fn send_command(&self, message: bytes::Bytes) -> Option<Pending<usize>> {
        (**self).send_command(message)
    }

    fn read_history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Pending<HistoryPage> {
        (**self).read_history(topic, since, limit)
    }
}

impl Shared {
    /// A connection to the Redis that keeps `topic` (the publisher's; on a cluster,
    /// the one to the master of the topic's slot): reads go through it.
    async fn connection_for(
        &self,
        config: &RedisConfig,
        topic: &str,
    ) -> Result<redis::aio::MultiplexedConnection> {
        match &self.cluster {
            Some(cluster) => shard_publisher::connection_for(cluster, config, self, topic)
                .await
                .map_err(Error::Unavailable),
            None => lock(&self.conn)
                .clone()
                .ok_or_else(|| Error::Unavailable("Redis is not connected".into())),
        }
    }

    fn set_conn(&self, conn: Option<redis::aio::MultiplexedConnection>) {
        *lock(&self.conn) = conn;
    }

    fn set_subscribed(&self, channels: &HashSet<String>) {
        *lock(&self.subscribed) = channels.clone();
        self.subscribed_changed.send_modify(|n| *n += 1);
    }

    /// Note that this node delivered or stored `publication` of `topic`.
    fn note_delivered(&self, topic: &str, position: &Position, message: &Message) {
        let wanted = lock(&self.wanted).contains(&self.keys.channel(topic));
        let mut delivered = lock(&self.delivered);
        if let Some(latest) = delivered.get(topic)
            && latest.position.epoch() == position.epoch()
            && latest.position.offset() >= position.offset()
        {
            return;
        }
        if !wanted && delivered.len() >= MAX_LATEST && !delivered.contains_key(topic) {
            return;
        }
        delivered.insert(
            topic.to_owned(),
            Latest {
                position: position.clone(),
                message: wanted.then(|| message.clone()),
            },
        );
    }

    /// The latest position of `topic` this node delivered or stored.
    fn latest(&self, topic: &str) -> Option<Position> {
        lock(&self.delivered)
            .get(topic)
            .map(|latest| latest.position.clone())
    }

    /// What this node knows of `since` of `topic`: whether it delivered it (or a later
    /// offset of its epoch), and its message if `since` is the latest it delivered.
    fn delivered_at(&self, topic: &str, since: &Position) -> (bool, Option<Message>) {
        match lock(&self.delivered).get(topic) {
            Some(latest)
                if latest.position.epoch() == since.epoch()
                    && latest.position.offset() >= since.offset() =>
            {
                let message = (latest.position == *since)
                    .then(|| latest.message.clone())
                    .flatten();
                (true, message)
            }
            _ => (false, None),
        }
    }

    fn set_publisher(&self, link: Link) {
        lock(&self.links).publisher = link;
    }

    fn set_subscriber(&self, link: Link) {
        lock(&self.links).subscriber = link;
    }
}

/// A node id unlikely to be another's.
fn node_id() -> u64 {
    wsevents_proto::random::u64()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert, remove or assignment.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_differ() {
        assert_ne!(node_id(), node_id());
    }
}
