//! The subscriber on a Redis Cluster: one RESP3 connection per master, each holding an
//! `SSUBSCRIBE` for exactly the topics with local subscribers whose slots that master
//! serves, kept in step with the hub's topics and with the slot map.
//!
//! Sharded channels live on their slot's master (Redis 7), so a node subscribes where
//! each topic's slot is served, and about one connection per master holds all its
//! subscriptions (not one per topic). What arrives is read as it is parsed into the
//! inbound queue, as on one Redis (`subscriber.rs`), whose delivery task hands it to
//! the hub.
//!
//! A subscription is **lost** when its connection drops (a master killed), when Redis
//! pushes a `sunsubscribe` this node did not ask for (its slot moved away, or its
//! master turned replica), or when the slot map says another master serves its slot
//! now. Then the map is read again, the topic is subscribed on the new owner, and once
//! it is, the topic catches up from the history ([`Inbound::resubscribed`]): what was
//! published between the loss and the new subscription is delivered from there, in
//! order. Nothing is lost silently: a topic is either subscribed, or waiting for a
//! catch-up that is queued the moment it is subscribed again.
//!
//! Subscriptions are sent in pipelines of up to [`BATCH`] single-channel `SSUBSCRIBE`s
//! per master (one `SSUBSCRIBE` may only name channels of one slot), and a channel
//! counts as subscribed when Redis confirmed it by name. A master whose connection
//! cannot be made is tried again with backoff, the map read again each time.
//!
//! Bounds: the pushed `sunsubscribe`s waiting for the task are at most one per channel
//! subscribed (Redis sends one per channel); the task takes them all at each turn.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::publisher::BATCH;
use super::slots::key_slot;
use super::subscriber::arrive;
use super::topology::{Cluster, SlotMap};
use super::{Link, RedisConfig, Shared, lock};
use crate::hub::backend::Inbound;

/// One master's subscriber connection.
struct ShardLink {
    id: u64,
    conn: redis::aio::MultiplexedConnection,
    /// Cancelled by the reader when the connection ends.
    closed: CancellationToken,
    /// The channels Redis confirmed and has not taken back.
    channels: HashSet<String>,
}

/// What the connections' readers tell the task.
#[derive(Default)]
struct Events {
    /// `(link id, channel)` of each `sunsubscribe` Redis pushed.
    unsubscribed: Mutex<Vec<(u64, String)>>,
    ready: Notify,
}

impl Events {
    fn take(&self) -> Vec<(u64, String)> {
        std::mem::take(&mut *lock(&self.unsubscribed))
    }
}

/// The subscriber task on a cluster.
pub(super) async fn shard_subscriber(
    cluster: Arc<Cluster>,
    config: RedisConfig,
    shared: Arc<Shared>,
    inbound: Inbound,
) {
    let events = Arc::new(Events::default());
    let next_id = AtomicU64::new(0);
    let mut links: HashMap<String, ShardLink> = HashMap::new();
    // Channels whose subscription was lost: caught up once subscribed again.
    let mut lost: HashSet<String> = HashSet::new();
    let mut map_changed = cluster.watch();
    let mut attempts = 0u32;
    let mut read_map = true;
    let mut last_read = Instant::now();
    let history = shared.history.get().is_some();
    loop {
        if !inbound.is_alive() {
            return;
        }
        let mut error: Option<String> = None;
        if read_map || cluster.map().is_none() || last_read.elapsed() >= config.topology_refresh {
            last_read = Instant::now();
            let read = tokio::select! {
                read = cluster.refresh(config.timeout) => read,
                () = shared.stop.cancelled() => return,
            };
            if let Err(e) = read {
                error = Some(format!("Redis Cluster: cannot read the slot map ({e})"));
            }
        }
        read_map = false;
        map_changed.borrow_and_update();
        let map = cluster.map();

        // What was lost: connections that ended, channels Redis took back, channels
        // whose slot another master serves now.
        links.retain(|addr, link| {
            if !link.closed.is_cancelled() {
                return true;
            }
            tracing::warn!(
                addr,
                topics = link.channels.len(),
                "Redis Cluster subscriber: connection to a master lost"
            );
            lost.extend(link.channels.drain());
            read_map = true;
            false
        });
        for (id, channel) in events.take() {
            if let Some(link) = links.values_mut().find(|l| l.id == id)
                && link.channels.remove(&channel)
            {
                lost.insert(channel);
                read_map = true;
            }
        }
        if let Some(map) = &map {
            for (addr, link) in &mut links {
                let moved: Vec<String> = link
                    .channels
                    .iter()
                    .filter(|c| map.owner(key_slot(c.as_bytes())) != Some(addr.as_str()))
                    .cloned()
                    .collect();
                if moved.is_empty() {
                    continue;
                }
                for channel in &moved {
                    link.channels.remove(channel);
                }
                // Best effort: the old owner may be gone.
                let _ = unsubscribe(&mut link.conn, &moved).await;
                lost.extend(moved);
            }
        }
        if !lost.is_empty() {
            // Recoveries of these topics wait until they are subscribed again.
            shared.set_subscribed(&union(&links));
        }

        // Subscribe where the map says; unsubscribe what the hub no longer wants.
        if let Some(map) = &map
            && let Err(e) = step(
                &cluster, &config, &shared, &events, &next_id, map, &mut links,
            )
            .await
        {
            error.get_or_insert(e);
        }
        links.retain(|addr, link| {
            !link.channels.is_empty() || map.as_ref().is_some_and(|m| m.masters().contains(addr))
        });
        let subscribed = union(&links);
        if *lock(&shared.subscribed) != subscribed {
            shared.set_subscribed(&subscribed);
        }

        // Lost and back: catch up from the history.
        {
            let wanted = lock(&shared.wanted);
            lost.retain(|c| wanted.contains(c));
        }
        let back: Vec<String> = lost
            .iter()
            .filter(|c| subscribed.contains(*c))
            .cloned()
            .collect();
        if !back.is_empty() {
            tracing::info!(
                topics = back.len(),
                "Redis Cluster subscriber: resubscribed after a topology change"
            );
            for channel in &back {
                lost.remove(channel);
            }
            if history {
                shared
                    .inbound
                    .catch_up(back.iter().filter_map(|c| shared.keys.topic(c)));
            }
        }

        let all_in = {
            let wanted = lock(&shared.wanted);
            wanted.iter().all(|c| subscribed.contains(c))
        };
        let wait = if all_in && error.is_none() {
            if attempts > 0 {
                tracing::info!(
                    attempts,
                    topics = subscribed.len(),
                    "Redis Cluster subscriber: every topic subscribed"
                );
            }
            attempts = 0;
            shared.set_subscriber(Link::Up);
            config.topology_refresh.saturating_sub(last_read.elapsed())
        } else {
            attempts += 1;
            let error = error.unwrap_or_else(|| "topics wait for their slot's master".into());
            if attempts == 1 {
                tracing::warn!(%error, "Redis Cluster subscriber: not every topic is subscribed; retrying");
            }
            shared.set_subscriber(Link::Down { attempts, error });
            read_map = true;
            config.backoff().bound(attempts)
        };
        let closed = futures_util::future::select_all(
            links
                .values()
                .map(|l| Box::pin(l.closed.clone().cancelled_owned()))
                .chain(std::iter::once(Box::pin(
                    CancellationToken::new().cancelled_owned(),
                ))),
        );
        tokio::select! {
            () = shared.changed.notified() => {}
            () = events.ready.notified() => {}
            _ = map_changed.changed() => {}
            _ = closed => {}
            () = tokio::time::sleep(wait) => {}
            () = shared.stop.cancelled() => return,
        }
    }
}

/// The channels subscribed on any link.
fn union(links: &HashMap<String, ShardLink>) -> HashSet<String> {
    links
        .values()
        .flat_map(|l| l.channels.iter().cloned())
        .collect()
}

/// One pass: each wanted channel subscribed on its slot's master, each unwanted one
/// unsubscribed. The first error, if any (the rest goes on).
async fn step(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Arc<Shared>,
    events: &Arc<Events>,
    next_id: &AtomicU64,
    map: &SlotMap,
    links: &mut HashMap<String, ShardLink>,
) -> Result<(), String> {
    let mut error = None;
    // What to add, per master, and what to drop, per link.
    let mut add: HashMap<String, Vec<String>> = HashMap::new();
    let mut remove: Vec<(String, Vec<String>)> = Vec::new();
    {
        let wanted = lock(&shared.wanted);
        for channel in wanted.iter() {
            let Some(owner) = map.owner(key_slot(channel.as_bytes())) else {
                error.get_or_insert_with(|| "a slot nobody serves".to_owned());
                continue;
            };
            if !links
                .get(owner)
                .is_some_and(|l| l.channels.contains(channel))
            {
                add.entry(owner.to_owned())
                    .or_default()
                    .push(channel.clone());
            }
        }
        for (addr, link) in links.iter() {
            let gone: Vec<String> = link
                .channels
                .iter()
                .filter(|c| !wanted.contains(*c))
                .cloned()
                .collect();
            if !gone.is_empty() {
                remove.push((addr.clone(), gone));
            }
        }
    }
    for (addr, gone) in remove {
        if let Some(link) = links.get_mut(&addr) {
            for channel in &gone {
                link.channels.remove(channel);
            }
            if let Err(e) = unsubscribe(&mut link.conn, &gone).await {
                error.get_or_insert(format!("{addr}: {e}"));
            }
        }
    }
    for (addr, channels) in add {
        if !links.contains_key(&addr) {
            match connect(cluster, config, shared, events, next_id, &addr).await {
                Ok(link) => {
                    links.insert(addr.clone(), link);
                }
                Err(e) => {
                    error.get_or_insert(format!("{addr}: {e}"));
                    continue;
                }
            }
        }
        let Some(link) = links.get_mut(&addr) else {
            continue;
        };
        for chunk in channels.chunks(BATCH) {
            match subscribe(&mut link.conn, chunk).await {
                Ok(confirmed) => {
                    if confirmed.len() < chunk.len() {
                        error.get_or_insert(format!("{addr}: not every SSUBSCRIBE confirmed"));
                    }
                    link.channels.extend(confirmed);
                }
                Err(e) => {
                    error.get_or_insert(format!("{addr}: {e}"));
                    break;
                }
            }
        }
    }
    match error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// A subscriber connection to the master at `addr`, its reader queueing what arrives.
async fn connect(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Arc<Shared>,
    events: &Arc<Events>,
    next_id: &AtomicU64,
    addr: &str,
) -> Result<ShardLink, String> {
    let client = cluster.client(addr, true).map_err(|e| e.to_string())?;
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let closed = CancellationToken::new();
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_push_sender(reader(shared.clone(), events.clone(), id, closed.clone()));
    let conn = tokio::time::timeout(
        config.timeout,
        client.get_multiplexed_async_connection_with_config(&settings),
    )
    .await
    .map_err(|_| format!("connecting took over {:?}", config.timeout))?
    .map_err(|e| e.to_string())?;
    Ok(ShardLink {
        id,
        conn,
        closed,
        channels: HashSet::new(),
    })
}

/// The reader of one master's connection: queues each sharded message, tells the task
/// of each `sunsubscribe` and of the connection's end. Runs in redis-rs's driver: it
/// never waits.
fn reader(
    shared: Arc<Shared>,
    events: Arc<Events>,
    id: u64,
    closed: CancellationToken,
) -> impl Fn(PushInfo) -> Result<(), Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::SMessage => arrive(&shared, push.data),
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = push.data.into_iter().next()
                    && let Ok(channel) = String::from_utf8(channel)
                {
                    lock(&events.unsubscribed).push((id, channel));
                    events.ready.notify_one();
                }
            }
            PushKind::Disconnection => {
                closed.cancel();
                events.ready.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// `SSUBSCRIBE` each of `channels` (one command each, pipelined: one command may only
/// name channels of one slot); the channels Redis confirmed, by name.
async fn subscribe(
    conn: &mut redis::aio::MultiplexedConnection,
    channels: &[String],
) -> redis::RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for channel in channels {
        pipe.cmd("SSUBSCRIBE").arg(channel);
    }
    let replies: Vec<redis::RedisResult<Value>> = pipe.query_async(conn).await?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            Ok(Value::Push {
                kind: PushKind::SSubscribe,
                data,
            }) => match data.into_iter().next() {
                Some(Value::BulkString(channel)) => String::from_utf8(channel).ok(),
                _ => None,
            },
            _ => None,
        })
        .filter(|c| channels.contains(c))
        .collect())
}

/// `SUNSUBSCRIBE` each of `channels` (pipelined, one each).
async fn unsubscribe(
    conn: &mut redis::aio::MultiplexedConnection,
    channels: &[String],
) -> redis::RedisResult<()> {
    for chunk in channels.chunks(BATCH) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for channel in chunk {
            pipe.cmd("SUNSUBSCRIBE").arg(channel);
        }
        let _: Vec<redis::RedisResult<Value>> = pipe.query_async(conn).await?;
    }
    Ok(())
}
