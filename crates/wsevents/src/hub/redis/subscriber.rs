//! The subscriber: one connection that holds a `SUBSCRIBE` for exactly the topics with
//! local subscribers, and the delivery of what arrives on them to the hub.
//!
//! Three parts, so that reading Redis never waits for the hub:
//!
//! - the **reader**, a callback that redis-rs's connection driver calls with each
//!   message as it parses it. The connection speaks RESP3, where messages are pushes
//!   handed over with their payload owned (no copy, and no unbounded channel in
//!   between as with redis-rs's RESP2 pub/sub stream); the reader queues them in the
//!   inbound queue (`inbound_queue.rs`, bounded in bytes) at once;
//! - the **subscriber task**, which connects, keeps the `SUBSCRIBE`s in step with the
//!   hub's topics, and reconnects with backoff;
//! - the **delivery task**, which takes what is queued, in order, opens the envelopes
//!   and hands the publications to the hub, yielding to the runtime as its budget
//!   asks.
//!
//! RESP3 needs Redis 6 or later. On a Redis Cluster the subscriber is
//! `shard_subscriber.rs`'s, the delivery task this one.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio_util::sync::CancellationToken;

use super::backoff::backoff;
use super::envelope::{open, open_stored, sealed_by};
use super::inbound_queue::{Arrival, Queued};
use super::publisher::BATCH;
use super::{Link, RedisConfig, Shared, lock};
use crate::hub::backend::Inbound;

/// The subscriber task: `SUBSCRIBE`s that follow the hub's topics, on a connection
/// whose reader queues what arrives. `client` speaks RESP3.
pub(super) async fn subscriber(
    client: redis::Client,
    config: RedisConfig,
    shared: Arc<Shared>,
    inbound: Inbound,
) {
    let mut attempts = 0u32;
    loop {
        let closed = CancellationToken::new();
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_push_sender(reader(shared.clone(), closed.clone()));
        let connecting = client.get_multiplexed_async_connection_with_config(&connection);
        let connected = tokio::select! {
            connected = tokio::time::timeout(config.timeout, connecting) => connected,
            () = shared.stop.cancelled() => return,
        };
        let error = match connected {
            Ok(Ok(mut conn)) => {
                let mut subscribed = HashSet::new();
                loop {
                    if let Err(error) = sync(&mut conn, &shared, &mut subscribed).await {
                        break error;
                    }
                    if closed.is_cancelled() {
                        break "the connection closed".to_owned();
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
                            // never came on the channel: the hub catches up from the
                            // history, after what came before the loss is delivered.
                            if shared.history.get().is_some() {
                                shared.inbound.catch_up(
                                    subscribed.iter().filter_map(|c| shared.keys.topic(c)),
                                );
                            }
                        }
                        attempts = 0;
                    }
                    tokio::select! {
                        () = closed.cancelled() => break "the connection closed".to_owned(),
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

/// A client for the subscriber connection: the backend's, speaking RESP3.
pub(super) fn resp3(client: &redis::Client) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

/// The reader of one connection: queues each message, and cancels `closed` when the
/// connection ends. Runs in redis-rs's driver: it never waits.
fn reader(
    shared: Arc<Shared>,
    closed: CancellationToken,
) -> impl Fn(PushInfo) -> Result<(), Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::Message => arrive(&shared, push.data),
            PushKind::Disconnection => closed.cancel(),
            _ => {}
        }
        Ok(())
    }
}

/// Queue a message (`[channel, payload]`), unless it is not for the hub: another
/// channel, or this node's own `wse1` envelope (delivered locally already).
pub(super) fn arrive(shared: &Shared, data: Vec<Value>) {
    let mut data = data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return;
    };
    let Some(topic) = String::from_utf8(channel)
        .ok()
        .and_then(|channel| shared.keys.topic_of_channel(channel))
    else {
        return;
    };
    let history = shared.history.get().is_some();
    if !history && sealed_by(&payload) == Some(shared.node) {
        return;
    }
    if shared.inbound.arrive(topic, payload.into(), history) == Queued::Dropped {
        shared
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Bring the connection's subscriptions to what the hub wants.
async fn sync(
    conn: &mut redis::aio::MultiplexedConnection,
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
            conn.subscribe(&add).await.map_err(|e| e.to_string())?;
            subscribed.extend(add);
        }
        if !remove.is_empty() {
            conn.unsubscribe(&remove).await.map_err(|e| e.to_string())?;
            for channel in &remove {
                subscribed.remove(channel);
            }
        }
    }
}

/// Until the subscriber connection is subscribed to `channel` (so that every
/// publication after a history read arrives live).
pub(super) async fn wait_subscribed(shared: &Shared, channel: &str) {
    let mut changed = shared.subscribed_changed.subscribe();
    while !lock(&shared.subscribed).contains(channel) {
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// The delivery task: what the reader queued, in order, to the hub.
pub(super) async fn delivery(shared: Arc<Shared>, inbound: Inbound) {
    loop {
        let arrival = tokio::select! {
            arrival = shared.inbound.next() => arrival,
            () = shared.stop.cancelled() => return,
        };
        match arrival {
            Arrival::Message { topic, payload } => deliver(&shared, &inbound, &topic, payload),
            Arrival::CatchUp(topic) => inbound.resubscribed(&topic),
        }
        tokio::task::coop::consume_budget().await;
    }
}

/// Hand a message from Redis to the hub, unless it is this node's own or malformed.
fn deliver(shared: &Shared, inbound: &Inbound, topic: &str, payload: bytes::Bytes) {
    if shared.history.get().is_some() {
        match open_stored(payload) {
            Some(publication) => {
                shared.note_delivered(topic, &publication.position, &publication.message);
                inbound.deliver_at(topic, &publication);
            }
            None => tracing::warn!(
                topic,
                "a Redis message that is not a stored wsevents publication: dropped"
            ),
        }
        return;
    }
    match open(payload) {
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
