//! The hub on Redis pub/sub: many server processes, one hub (feature `redis`); the
//! design is on [`RedisBackend`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use wsevents_proto::{Message, Utf8Bytes};

use super::backend::{Backend, BackendStatus, Inbound, Pending};
use super::history::{History, META_TTL, Position, Publication, Recovery, new_epoch};
use crate::error::{Error, Result};

/// Store a publication and carry it (a hub with history), in one step: the topic's
/// epoch (made if it has none: a new history, so any old stream goes), the next
/// offset, the entry in the stream, the oldest entries trimmed past the history's
/// count or bytes (the latest one always stays unless the size is 0), the idempotency
/// key, and the `PUBLISH` of `wse2 EPOCH:OFFSET KIND PAYLOAD` to every node. A key
/// seen before: nothing, and the first one's position.
///
/// KEYS: meta (hash: epoch, offset, bytes), stream, key ('' for none).
/// ARGV: channel, a fresh epoch, kind (`t`/`b`), payload, size, ttl ms, meta ttl ms,
/// max bytes.
const STORE_SCRIPT: &str = r"
if KEYS[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {0, prior} end
end
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then redis.call('DEL', KEYS[2]) end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[2], '0-' .. offset, 'k', ARGV[3], 'd', ARGV[4], 't', ms)
local bytes = string.len(ARGV[4])
if redis.call('XLEN', KEYS[2]) == 1 then
  -- A stream that had expired: count from this entry.
  redis.call('HSET', KEYS[1], 'bytes', bytes)
else
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
end
local size = tonumber(ARGV[5])
local max = tonumber(ARGV[8])
while true do
  local count = redis.call('XLEN', KEYS[2])
  if count == 0 or (count <= size and (bytes <= max or count == 1)) then break end
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  local fields = oldest[2]
  local n = 0
  for j = 1, #fields, 2 do
    if fields[j] == 'd' then n = string.len(fields[j + 1]) end
  end
  redis.call('XDEL', KEYS[2], oldest[1])
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -n)
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local position = epoch .. ':' .. offset
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], position, 'PX', ARGV[6]) end
redis.call('PUBLISH', ARGV[1], 'wse2 ' .. position .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return {1, position}
";

/// What a subscriber that last saw (ARGV[2], ARGV[3]) missed: the epoch, the latest
/// offset, 1 if all of it is there (no more than the size, none older than the ttl,
/// none trimmed) followed by each one's kind and payload, else 0.
///
/// KEYS: meta, stream. ARGV: a fresh epoch, since epoch ('' for none), since offset,
/// size, ttl ms, meta ttl ms.
const RECOVER_SCRIPT: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local top = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local result = {epoch, top, 0}
if ARGV[2] ~= epoch then return result end
local since = tonumber(ARGV[3])
if since > top or top - since > tonumber(ARGV[4]) then return result end
if since == top then result[3] = 1 return result end
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '0-' .. top)
if #entries ~= top - since then return result end
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[5])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  local f = {}
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  if tonumber(f['t']) < cutoff then return {epoch, top, 0} end
  table.insert(result, f['k'])
  table.insert(result, f['d'])
end
result[3] = 1
return result
";

/// The envelope of a stored publication: `wse2 EPOCH:OFFSET KIND PAYLOAD`.
const MAGIC_STORED: &[u8] = b"wse2 ";

const MAGIC: &[u8; 4] = b"wse1";
const KIND_TEXT: u8 = 0x01;
const KIND_BINARY: u8 = 0x02;
const HEADER_LEN: usize = 4 + 8 + 1;

/// How many publishes go in one pipeline, and how many channels in one `SUBSCRIBE`.
const BATCH: usize = 512;

/// Options for a [`RedisBackend`].
///
/// ```
/// use wsevents::hub::RedisConfig;
/// let config = RedisConfig { prefix: "chat:".into(), ..RedisConfig::default() };
/// assert_eq!(RedisConfig::default().max_pending, 65_536);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Put before each topic to make its Redis channel; `"wsevents:"` by default.
    pub prefix: String,
    /// Publishes waiting for the publisher connection, at most; past it a publish is
    /// not carried to other nodes (counted as dropped; local delivery is not
    /// affected). 65,536 by default.
    pub max_pending: usize,
    /// The first reconnection delay's ceiling (100 ms); it doubles per attempt.
    pub backoff_min: Duration,
    /// The most a reconnection delay's ceiling grows to (5 s).
    pub backoff_max: Duration,
    /// How long connecting, and each command, may take (2 s).
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            prefix: "wsevents:".into(),
            max_pending: 65_536,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A [`Backend`] on Redis pub/sub: many server processes, one hub.
///
/// Each node keeps two connections to Redis, each owned by a task of its own:
///
/// - the **publisher** sends this node's publishes, in order, as pipelined `PUBLISH`es
///   on one connection (Redis delivers a connection's messages in the order it sent
///   them), each in an envelope with this node's id;
/// - the **subscriber** holds a `SUBSCRIBE` for exactly the topics that have local
///   subscribers (it follows the hub: subscribe on the first, unsubscribe after the
///   last), delivers what other nodes publish, and drops what carries its own id (the
///   hub delivered that locally already).
///
/// When Redis goes away, local delivery goes on unchanged; each task reconnects with
/// full-jitter exponential backoff (100 ms doubling to 5 s), the subscriber
/// resubscribes to every topic the hub has then (on a hub with history, the hub then
/// catches up on what was stored while it was away), and both say so in the log
/// (`tracing`: a warning on loss, info on recovery) and in
/// [`Hub::backend_status`](super::Hub::backend_status). What is published before the
/// first connection is made waits for it (up to [`RedisConfig::max_pending`]); what is
/// published while the publisher is cut off is not carried to other nodes (counted in
/// [`BackendStatus::Reconnecting::dropped`]); Redis pub/sub has no history to replay.
///
/// **On a hub with history** ([`HubBuilder::history`](super::HubBuilder::history)),
/// Redis keeps it, so it outlives every node: per topic a hash
/// (`{prefix}meta:TOPIC`: epoch, latest offset) and a stream
/// (`{prefix}history:TOPIC`, entry ids `0-OFFSET`, its oldest entries trimmed past the
/// history's count and bytes by the script that adds one, expiring with its age). A publication is one Lua script,
/// pipelined in queue order on the publisher connection: it makes the epoch if the
/// topic has none (a new history: Redis lost or expired the old one), takes the next
/// offset, appends the entry, remembers the publish key for the history's age, and
/// `PUBLISH`es `wse2 EPOCH:OFFSET KIND PAYLOAD`; every node (this one too) delivers
/// what arrives on the channel, so positions and order are Redis's, the same
/// everywhere. A recovery waits until this node is subscribed to the topic's
/// channel, then reads the missed entries with a second script (all of them, none
/// older than the age and no more than the size, or none). While Redis is
/// unreachable a publication is refused with [`Error::Unavailable`] and delivered
/// nowhere: never a position without a stored publication. Topics and keys of one
/// topic must live on one Redis (standalone or Sentinel; not Cluster).
///
/// The envelope: `b"wse1"`, the node id (8 bytes, big-endian), the kind (`0x01` text,
/// `0x02` binary), the payload. Channels are the topics behind a prefix
/// ([`RedisConfig::prefix`], `"wsevents:"` by default).
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
    config: RedisConfig,
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Receiver<Job>>>,
}

/// What the publisher task does, in queue order.
enum Job {
    /// A publish of a hub without history: `PUBLISH` this envelope.
    Publish(String, Bytes),
    /// Store a publication and carry it (a hub with history); answer on `done`.
    Store {
        topic: String,
        message: Message,
        key: Option<String>,
        done: oneshot::Sender<Result<Position>>,
    },
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("node", &self.shared.node)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the backend and its two tasks share.
struct Shared {
    /// This node's id, in every envelope it publishes.
    node: u64,
    prefix: String,
    /// The channels the hub wants (topics with local subscribers), and a wake-up for
    /// the subscriber task when they change.
    wanted: Mutex<HashSet<String>>,
    changed: Notify,
    /// The publisher's queue.
    publish: mpsc::Sender<Job>,
    /// The hub's history, when it keeps one (set at start): publications are
    /// stored, and positioned, in Redis.
    history: OnceLock<History>,
    /// The publisher's connection while it is up (recoveries read through it).
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// The channels the subscriber connection is subscribed to now, and a counter
    /// bumped whenever they change (recoveries wait for their channel).
    subscribed: Mutex<HashSet<String>>,
    subscribed_changed: watch::Sender<u64>,
    links: Mutex<Links>,
    dropped: AtomicU64,
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
        let (publish, queue) = mpsc::channel(config.max_pending.max(1));
        let shared = Arc::new(Shared {
            node: node_id(),
            prefix: config.prefix.clone(),
            wanted: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            publish,
            history: OnceLock::new(),
            conn: Mutex::new(None),
            subscribed: Mutex::new(HashSet::new()),
            subscribed_changed: watch::channel(0).0,
            links: Mutex::new(Links::default()),
            dropped: AtomicU64::new(0),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        Ok(RedisBackend {
            client,
            config,
            shared,
            queue: Mutex::new(Some(queue)),
        })
    }

    /// This node's id (what its envelopes carry).
    pub fn node_id(&self) -> u64 {
        self.shared.node
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
        runtime.spawn(publisher(
            self.client.clone(),
            self.config.clone(),
            self.shared.clone(),
            queue,
        ));
        runtime.spawn(subscriber(
            self.client.clone(),
            self.config.clone(),
            self.shared.clone(),
            inbound,
        ));
    }

    fn subscribe(&self, topic: &str) {
        lock(&self.shared.wanted).insert(self.shared.channel(topic));
        self.shared.changed.notify_one();
    }

    fn unsubscribe(&self, topic: &str) {
        lock(&self.shared.wanted).remove(&self.shared.channel(topic));
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
        let envelope = envelope(self.shared.node, message);
        if self
            .shared
            .publish
            .try_send(Job::Publish(self.shared.channel(topic), envelope))
            .is_err()
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                topic,
                "Redis publisher queue full: not carried to other nodes"
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
        let (done, answer) = oneshot::channel();
        let job = Job::Store {
            topic: topic.to_owned(),
            message: message.clone(),
            key: key.map(str::to_owned),
            done,
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
        let timeout = self.config.timeout;
        let topic = topic.to_owned();
        let since = since.cloned();
        Pending::new(async move {
            let read = async {
                wait_subscribed(&shared, &shared.channel(&topic)).await;
                recover(&shared, &topic, since.as_ref()).await
            };
            match tokio::time::timeout(timeout, read).await {
                Ok(recovery) => recovery,
                Err(_) => Err(Error::Unavailable(format!(
                    "Redis: the history of {topic:?} was not read within {timeout:?}"
                ))),
            }
        })
    }
}

/// Until the subscriber connection is subscribed to `channel` (so that every
/// publication after the history read arrives live).
async fn wait_subscribed(shared: &Shared, channel: &str) {
    let mut changed = shared.subscribed_changed.subscribe();
    while !lock(&shared.subscribed).contains(channel) {
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Read what a subscriber of `topic` that last saw `since` missed
/// ([`RECOVER_SCRIPT`]).
async fn recover(shared: &Shared, topic: &str, since: Option<&Position>) -> Result<Recovery> {
    let history = shared.history.get().copied().unwrap_or_default();
    let conn = lock(&shared.conn).clone();
    let Some(mut conn) = conn else {
        return Err(Error::Unavailable("Redis is not connected".into()));
    };
    let reply: redis::Value = redis::Script::new(RECOVER_SCRIPT)
        .key(shared.meta_key(topic))
        .key(shared.stream_key(topic))
        .arg(new_epoch())
        .arg(since.map_or("", Position::epoch))
        .arg(since.map_or(0, Position::offset))
        .arg(history.size)
        .arg(millis(history.ttl))
        .arg(millis(META_TTL.max(history.ttl)))
        .invoke_async(&mut conn)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis: {e}")))?;
    parse_recovery(reply, since).ok_or_else(|| {
        Error::Unavailable("Redis answered the history read with something else".into())
    })
}

fn parse_recovery(reply: redis::Value, since: Option<&Position>) -> Option<Recovery> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let epoch: String = redis::from_redis_value(items.next()?).ok()?;
    let top: u64 = redis::from_redis_value(items.next()?).ok()?;
    let complete: i64 = redis::from_redis_value(items.next()?).ok()?;
    let position = Position::new(&epoch, top).ok()?;
    let publications = match (complete, since) {
        (1, Some(since)) => {
            let mut publications = Vec::new();
            let mut offset = since.offset();
            while let Some(kind) = items.next() {
                let kind: Vec<u8> = redis::from_redis_value(kind).ok()?;
                let payload: Vec<u8> = redis::from_redis_value(items.next()?).ok()?;
                offset += 1;
                publications.push(Publication {
                    position: Position::new(&epoch, offset).ok()?,
                    message: message_of(&kind, Bytes::from(payload))?,
                });
            }
            (offset == top).then_some(publications)
        }
        _ => None,
    };
    Some(Recovery {
        position,
        publications,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The kind of a stored publication: `t` text, `b` binary.
fn kind_and_payload(message: &Message) -> (&'static str, &[u8]) {
    match message {
        Message::Text(text) => ("t", text.as_bytes()),
        Message::Binary(data) => ("b", data),
    }
}

fn message_of(kind: &[u8], payload: Bytes) -> Option<Message> {
    match kind {
        b"t" => Some(Message::Text(Utf8Bytes::try_from(payload).ok()?)),
        b"b" => Some(Message::Binary(payload)),
        _ => None,
    }
}

/// Open `wse2 EPOCH:OFFSET KIND PAYLOAD`.
fn open_stored(data: &[u8]) -> Option<Publication> {
    let rest = data.strip_prefix(MAGIC_STORED)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let position: Position = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let rest = &rest[space + 1..];
    let (kind, payload) = (rest.get(..1)?, rest.get(2..)?);
    if rest.get(1) != Some(&b' ') {
        return None;
    }
    Some(Publication {
        position,
        message: message_of(kind, Bytes::copy_from_slice(payload))?,
    })
}

impl Shared {
    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The hash of a topic's epoch and latest offset.
    fn meta_key(&self, topic: &str) -> String {
        format!("{}meta:{topic}", self.prefix)
    }

    /// The stream of a topic's history (entry ids `0-OFFSET`).
    fn stream_key(&self, topic: &str) -> String {
        format!("{}history:{topic}", self.prefix)
    }

    /// A publish key seen on a topic.
    fn publish_key(&self, topic: &str, key: &str) -> String {
        format!("{}key:{topic}:{key}", self.prefix)
    }

    fn set_conn(&self, conn: Option<redis::aio::MultiplexedConnection>) {
        *lock(&self.conn) = conn;
    }

    fn set_subscribed(&self, channels: &HashSet<String>) {
        *lock(&self.subscribed) = channels.clone();
        self.subscribed_changed.send_modify(|n| *n += 1);
    }

    fn set_publisher(&self, link: Link) {
        lock(&self.links).publisher = link;
    }

    fn set_subscriber(&self, link: Link) {
        lock(&self.links).subscriber = link;
    }
}

/// The publisher task: one connection, pipelined `PUBLISH`es in queue order.
async fn publisher(
    client: redis::Client,
    config: RedisConfig,
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Job>,
) {
    let connection = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout));
    let mut attempts = 0u32;
    loop {
        let connected = tokio::select! {
            connected = client.get_multiplexed_async_connection_with_config(&connection) => connected,
            () = shared.stop.cancelled() => return,
        };
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(error) => {
                attempts += 1;
                shared.set_publisher(Link::Down {
                    attempts,
                    error: error.to_string(),
                });
                tracing::warn!(%error, attempts, "Redis publisher: cannot connect; retrying");
                if !backoff(&config, &shared, attempts, Some(&mut queue)).await {
                    return;
                }
                continue;
            }
        };
        let store = redis::Script::new(STORE_SCRIPT);
        if shared.history.get().is_some() {
            let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(STORE_SCRIPT)
                .query_async(&mut conn)
                .await;
            if let Err(error) = loaded {
                attempts += 1;
                shared.set_publisher(Link::Down {
                    attempts,
                    error: error.to_string(),
                });
                tracing::warn!(%error, attempts, "Redis publisher: cannot load its script; retrying");
                if !backoff(&config, &shared, attempts, Some(&mut queue)).await {
                    return;
                }
                continue;
            }
        }
        if attempts > 0 {
            tracing::info!(attempts, "Redis publisher reconnected");
        }
        shared.set_conn(Some(conn.clone()));
        shared.set_publisher(Link::Up);
        let mut batch = Vec::with_capacity(BATCH);
        let error = loop {
            tokio::select! {
                received = queue.recv_many(&mut batch, BATCH) => if received == 0 { return },
                () = shared.stop.cancelled() => return,
            }
            settle(&shared, config.timeout, &batch).await;
            let sent = send_batch(&shared, &store, &mut conn, &mut batch).await;
            if let Err(error) = sent {
                break error;
            }
        };
        shared.set_conn(None);
        attempts = 1;
        shared.set_publisher(Link::Down {
            attempts,
            error: error.to_string(),
        });
        tracing::warn!(%error, "Redis publisher: connection lost; reconnecting");
        if !backoff(&config, &shared, attempts, Some(&mut queue)).await {
            return;
        }
    }
}

/// Before storing publications of a topic this node has just subscribed to, wait until
/// the subscription is in place (at most `timeout`): every node, this one included,
/// delivers what arrives on the channel, so a publication stored earlier would miss
/// this node's own subscribers (a publish right after a subscribe, or the first ones
/// after Redis came back while the subscriber connection resubscribes).
async fn settle(shared: &Shared, timeout: Duration, batch: &[Job]) {
    let pending: Vec<String> = {
        let wanted = lock(&shared.wanted);
        let subscribed = lock(&shared.subscribed);
        if wanted.len() == subscribed.len() && wanted.iter().all(|c| subscribed.contains(c)) {
            return;
        }
        batch
            .iter()
            .filter_map(|job| match job {
                Job::Store { topic, .. } => Some(shared.channel(topic)),
                Job::Publish(..) => None,
            })
            .filter(|channel| wanted.contains(channel) && !subscribed.contains(channel))
            .collect()
    };
    if pending.is_empty() || matches!(lock(&shared.links).subscriber, Link::Down { .. }) {
        return;
    }
    let settled = async {
        for channel in &pending {
            wait_subscribed(shared, channel).await;
        }
    };
    let _ = tokio::time::timeout(timeout, settled).await;
}

/// Send one batch of jobs in one pipeline and answer the stores; on failure every
/// job of the batch fails (a store that Redis did run before the failure is
/// delivered, and a retry with its key finds it).
async fn send_batch(
    shared: &Shared,
    store: &redis::Script,
    conn: &mut redis::aio::MultiplexedConnection,
    batch: &mut Vec<Job>,
) -> redis::RedisResult<()> {
    let history = shared.history.get().copied().unwrap_or_default();
    let mut pipe = redis::pipe();
    for job in batch.iter() {
        match job {
            Job::Publish(channel, envelope) => {
                pipe.cmd("PUBLISH").arg(channel).arg(&envelope[..]).ignore();
            }
            Job::Store {
                topic,
                message,
                key,
                ..
            } => {
                let (kind, payload) = kind_and_payload(message);
                let key = key
                    .as_deref()
                    .map(|k| shared.publish_key(topic, k))
                    .unwrap_or_default();
                pipe.cmd("EVALSHA")
                    .arg(store.get_hash())
                    .arg(3)
                    .arg(shared.meta_key(topic))
                    .arg(shared.stream_key(topic))
                    .arg(key)
                    .arg(shared.channel(topic))
                    .arg(new_epoch())
                    .arg(kind)
                    .arg(payload)
                    .arg(history.size)
                    .arg(millis(history.ttl))
                    .arg(millis(META_TTL.max(history.ttl)))
                    .arg(history.max_bytes);
            }
        }
    }
    let sent: redis::RedisResult<Vec<(i64, String)>> = pipe.query_async(conn).await;
    let jobs = batch.drain(..);
    match sent {
        Ok(stored) => {
            let mut stored = stored.into_iter();
            for job in jobs {
                if let Job::Store { done, .. } = job {
                    let position = stored
                        .next()
                        .and_then(|(_, position)| position.parse().ok())
                        .ok_or_else(|| {
                            Error::Unavailable("Redis answered a store with something else".into())
                        });
                    let _ = done.send(position);
                }
            }
            Ok(())
        }
        Err(error) => {
            let lost = jobs.len() as u64;
            shared.dropped.fetch_add(lost, Ordering::Relaxed);
            for job in jobs {
                if let Job::Store { done, .. } = job {
                    let _ = done.send(Err(Error::Unavailable(format!("Redis: {error}"))));
                }
            }
            Err(error)
        }
    }
}

/// The subscriber task: `SUBSCRIBE`s that follow the hub's topics, and delivery of
/// other nodes' messages.
async fn subscriber(
    client: redis::Client,
    config: RedisConfig,
    shared: Arc<Shared>,
    inbound: Inbound,
) {
    let mut attempts = 0u32;
    loop {
        let connected = tokio::select! {
            connected = tokio::time::timeout(config.timeout, client.get_async_pubsub()) => connected,
            () = shared.stop.cancelled() => return,
        };
        let error = match connected {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut subscribed = HashSet::new();
                loop {
                    if let Err(error) = sync(&mut sink, &shared, &mut subscribed).await {
                        break error;
                    }
                    if *lock(&shared.subscribed) != subscribed {
                        shared.set_subscribed(&subscribed);
                    }
                    if !matches!(lock(&shared.links).subscriber, Link::Up) {
                        shared.set_subscriber(Link::Up);
                        if attempts > 0 {
                            tracing::info!(
                                attempts,
                                topics = subscribed.len(),
                                "Redis subscriber reconnected and resubscribed"
                            );
                            // What was published while the subscription was down
                            // never came on the channel: the hub catches up from
                            // the history.
                            for channel in &subscribed {
                                if let Some(topic) = channel.strip_prefix(&shared.prefix) {
                                    inbound.resubscribed(topic);
                                }
                            }
                        }
                        attempts = 0;
                    }
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => deliver(&shared, &inbound, &message),
                            None => break "the connection closed".to_owned(),
                        },
                        () = shared.changed.notified() => {}
                        () = shared.stop.cancelled() => return,
                    }
                }
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("connecting took over {:?}", config.timeout),
        };
        shared.set_subscribed(&HashSet::new());
        if !inbound.is_alive() {
            return;
        }
        attempts += 1;
        shared.set_subscriber(Link::Down {
            attempts,
            error: error.clone(),
        });
        tracing::warn!(%error, attempts, "Redis subscriber: connection lost or refused; messages from other nodes stop until it is back");
        if !backoff(&config, &shared, attempts, None).await {
            return;
        }
    }
}

/// Bring the connection's subscriptions to what the hub wants.
async fn sync(
    sink: &mut redis::aio::PubSubSink,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
) -> std::result::Result<(), String> {
    loop {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let wanted = lock(&shared.wanted);
            (
                wanted.difference(subscribed).take(BATCH).cloned().collect(),
                subscribed
                    .difference(&wanted)
                    .take(BATCH)
                    .cloned()
                    .collect(),
            )
        };
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        if !add.is_empty() {
            sink.subscribe(&add).await.map_err(|e| e.to_string())?;
            subscribed.extend(add);
        }
        if !remove.is_empty() {
            sink.unsubscribe(&remove).await.map_err(|e| e.to_string())?;
            for channel in &remove {
                subscribed.remove(channel);
            }
        }
    }
}

/// Hand a message from Redis to the hub, unless it is this node's own or malformed.
fn deliver(shared: &Shared, inbound: &Inbound, message: &redis::Msg) {
    let Some(topic) = message.get_channel_name().strip_prefix(&shared.prefix) else {
        return;
    };
    if shared.history.get().is_some() {
        match open_stored(message.get_payload_bytes()) {
            Some(publication) => {
                inbound.deliver_at(topic, &publication);
            }
            None => tracing::warn!(
                topic,
                "a Redis message that is not a stored wsevents publication: dropped"
            ),
        }
        return;
    }
    match open_envelope(message.get_payload_bytes()) {
        Some((node, _)) if node == shared.node => {}
        Some((_, message)) => {
            inbound.deliver(topic, &message);
        }
        None => tracing::warn!(
            topic,
            "a Redis message that is not a wsevents envelope: dropped"
        ),
    }
}

/// Sleep before reconnecting attempt `attempts` (full jitter: uniform in
/// `0..min(max, min * 2^attempts)`), dropping what is published meanwhile. False when
/// the backend stopped.
async fn backoff(
    config: &RedisConfig,
    shared: &Shared,
    attempts: u32,
    mut queue: Option<&mut mpsc::Receiver<Job>>,
) -> bool {
    let ceiling = config
        .backoff_min
        .saturating_mul(1u32 << attempts.min(16))
        .min(config.backoff_max);
    let delay = ceiling.mul_f64(jitter(shared.node ^ u64::from(attempts)));
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        let dropped = async {
            match queue.as_mut() {
                Some(queue) => queue.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut sleep => return true,
            () = shared.stop.cancelled() => return false,
            more = dropped => {
                if !more {
                    return false;
                }
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn envelope(node: u64, message: &Message) -> Bytes {
    let (kind, payload) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, data),
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_slice(MAGIC);
    out.put_u64(node);
    out.put_u8(kind);
    out.put_slice(payload);
    out.freeze()
}

fn open_envelope(data: &[u8]) -> Option<(u64, Message)> {
    let rest = data.strip_prefix(MAGIC)?;
    let (node, rest) = rest.split_first_chunk::<8>()?;
    let (&kind, payload) = rest.split_first()?;
    let payload = Bytes::copy_from_slice(payload);
    let message = match kind {
        KIND_TEXT => Message::Text(Utf8Bytes::try_from(payload).ok()?),
        KIND_BINARY => Message::Binary(payload),
        _ => return None,
    };
    Some((u64::from_be_bytes(*node), message))
}

/// A node id unlikely to be another's: std's random hash keys, the process id, the
/// time.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A number in [0, 1) from `seed` and the clock (splitmix64): spreads reconnects.
fn jitter(seed: u64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut z = seed
        .wrapping_add(u64::from(nanos))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert, remove or assignment.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_its_node_and_message() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 0xff])] {
            let sealed = envelope(0x0102_0304_0506_0708, &message);
            assert_eq!(&sealed[..4], b"wse1");
            assert_eq!(
                open_envelope(&sealed),
                Some((0x0102_0304_0506_0708, message))
            );
        }
        assert_eq!(
            open_envelope(b"wse1\0\0\0\0\0\0\0\x01\x01\xff"),
            None,
            "bad UTF-8"
        );
        assert_eq!(open_envelope(b"wse1\0\0"), None, "cut short");
        assert_eq!(open_envelope(b"other payload"), None);
    }

    #[test]
    fn jitter_stays_in_the_unit_interval_and_nodes_differ() {
        for seed in 0..1000 {
            let j = jitter(seed);
            assert!((0.0..1.0).contains(&j));
        }
        assert_ne!(node_id(), node_id());
    }
}
