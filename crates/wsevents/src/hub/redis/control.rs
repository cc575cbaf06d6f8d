//! The control channel: commands to every node of the hub and their answers
//! ([`Hub::command`](crate::hub::Hub::command)), on a connection of their own.
//!
//! The channel is `{prefix}control` in Redis's **sharded** pub/sub namespace
//! (`SSUBSCRIBE` / `SPUBLISH`, Redis 7), apart from every topic's: on one Redis the
//! topics' channels are in the classic namespace (`SUBSCRIBE`), so no topic can be
//! named onto it; on a Redis Cluster every topic channel has a hash tag right after
//! the prefix and this one has none. On a cluster the channel has one slot, so every
//! node subscribes on the master that owns it, and `SPUBLISH` there answers how many
//! nodes got the command: the number of answers to wait for.
//!
//! The connection speaks RESP3: the reader (in redis-rs's driver, never waiting)
//! queues each message in a channel of [`QUEUE`] messages (past it a message is
//! dropped and logged: the node that sent a dropped command sees one answer fewer), and
//! the control task hands them to the hub one at a time and `SPUBLISH`es the answers
//! on the same connection. Lost (the connection, a `sunsubscribe` when the slot moves),
//! it reconnects with the backend's backoff; meanwhile this node neither gets nor
//! sends commands ([`RedisBackend::send_command`](super::RedisBackend) answers
//! [`Error::Unavailable`]).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff::backoff;
use super::slots::key_slot;
use super::{RedisConfig, Shared, lock};
use crate::error::{Error, Result};
use crate::hub::backend::Inbound;

/// Messages from the control channel waiting for the control task, at most.
pub(super) const QUEUE: usize = 256;

/// Where the control connection goes: the Redis (RESP3 client), or the master of
/// the channel's slot on a cluster.
pub(super) enum Target {
    One(redis::Client),
    Cluster(Arc<super::topology::Cluster>),
}

/// The control task: subscribe to the channel, run what arrives, send the answers;
/// reconnect when lost. Ends with the backend.
pub(super) async fn control(
    target: Target,
    config: RedisConfig,
    shared: Arc<Shared>,
    inbound: Inbound,
) {
    let channel = shared.keys.control();
    let mut attempts = 0u32;
    loop {
        let (queue, mut arrived) = mpsc::channel(QUEUE);
        let closed = CancellationToken::new();
        let connected = tokio::select! {
            connected = connect(&target, &config, &channel, queue, closed.clone()) => connected,
            () = shared.stop.cancelled() => return,
        };
        let error = match connected {
            Ok(mut conn) => {
                *lock(&shared.control) = Some(conn.clone());
                if attempts > 0 {
                    tracing::info!(attempts, "Redis control channel reconnected");
                }
                attempts = 0;
                loop {
                    let message = tokio::select! {
                        message = arrived.recv() => message,
                        () = closed.cancelled() => break "the connection closed or the slot moved".to_owned(),
                        () = shared.stop.cancelled() => return,
                    };
                    let Some(message) = message else {
                        break "the connection closed".to_owned();
                    };
                    let Some(answer) = inbound.command(&message) else {
                        continue;
                    };
                    let sent: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
                        .arg(&channel)
                        .arg(&answer[..])
                        .query_async(&mut conn)
                        .await;
                    if let Err(error) = sent {
                        break error.to_string();
                    }
                }
            }
            Err(error) => error,
        };
        *lock(&shared.control) = None;
        if !inbound.is_alive() {
            return;
        }
        attempts += 1;
        tracing::warn!(%error, attempts, "Redis control channel lost: commands to every node (disconnect, unsubscribe, info) wait until it is back");
        if !backoff(&config, &shared, attempts, None).await {
            return;
        }
    }
}

/// A connection subscribed to `channel`, its reader queueing what arrives.
async fn connect(
    target: &Target,
    config: &RedisConfig,
    channel: &str,
    queue: mpsc::Sender<Bytes>,
    closed: CancellationToken,
) -> std::result::Result<redis::aio::MultiplexedConnection, String> {
    let client = match target {
        Target::One(client) => client.clone(),
        Target::Cluster(cluster) => {
            let map = cluster.refresh(config.timeout).await?;
            let slot = key_slot(channel.as_bytes());
            let addr = map
                .owner(slot)
                .ok_or_else(|| format!("Redis Cluster: nobody serves slot {slot}"))?;
            cluster.client(addr, true).map_err(|e| e.to_string())?
        }
    };
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_push_sender(reader(queue, closed));
    let mut conn = tokio::time::timeout(
        config.timeout,
        client.get_multiplexed_async_connection_with_config(&settings),
    )
    .await
    .map_err(|_| format!("connecting took over {:?}", config.timeout))?
    .map_err(|e| e.to_string())?;
    let reply: Value = redis::cmd("SSUBSCRIBE")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("SSUBSCRIBE {channel}: {e}"))?;
    match reply {
        Value::Push {
            kind: PushKind::SSubscribe,
            ..
        } => Ok(conn),
        other => Err(format!("SSUBSCRIBE {channel} answered {other:?}")),
    }
}

/// The connection's reader: queues each message, and cancels `closed` when the
/// connection ends or Redis unsubscribes it (the slot moved).
fn reader(
    queue: mpsc::Sender<Bytes>,
    closed: CancellationToken,
) -> impl Fn(PushInfo) -> std::result::Result<(), Infallible> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::SMessage => {
                if let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1)
                    && queue.try_send(Bytes::from(payload)).is_err()
                {
                    tracing::warn!("Redis control channel: {QUEUE} messages wait; one dropped");
                }
            }
            PushKind::SUnsubscribe | PushKind::Disconnection => closed.cancel(),
            _ => {}
        }
        Ok(())
    }
}

/// Send `message` on the control channel; how many nodes got it.
pub(super) async fn send(shared: &Shared, message: Bytes) -> Result<usize> {
    let mut conn = lock(&shared.control)
        .clone()
        .ok_or_else(|| Error::Unavailable("Redis: the control channel is not connected".into()))?;
    let reached: i64 = redis::cmd("SPUBLISH")
        .arg(shared.keys.control())
        .arg(&message[..])
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis: {e}")))?;
    Ok(usize::try_from(reached).unwrap_or(0))
}
