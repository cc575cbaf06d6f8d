//! The publisher: this node's publications to Redis, in order, on one connection.
//!
//! The hub's calls queue a [`Job`] and return at once; the publisher task takes the
//! queue in batches (at most [`BATCH`]) and sends each batch as one pipeline: a
//! `PUBLISH` of a `wse1` envelope per publish of a hub without history, a run of the
//! store script (`store.lua`) per publication of a hub with history, answered with its
//! position. Redis runs a connection's commands in the order they were sent, so a
//! node's publications keep their order on every node.
//!
//! The queue is bounded twice: in jobs (a `tokio::sync::mpsc` channel of
//! [`RedisConfig::max_pending`]) and in bytes ([`Budget`], of
//! [`RedisConfig::max_pending_bytes`]): each job holds a [`Reservation`] of its bytes
//! from the moment it is queued until it is dropped (answered, or given up).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use wsevents_proto::Message;

use super::backoff::backoff;
use super::envelope::{Sealed, kind_and_payload};
use super::recover::millis;
use super::subscriber::wait_subscribed;
use super::{Link, RedisConfig, Shared, lock};
use crate::error::{Error, Result};
use crate::hub::history::{META_TTL, Position, new_epoch};

/// The store script ([`send_batch`]).
pub(super) const STORE_SCRIPT: &str = include_str!("store.lua");

/// How many jobs go in one pipeline.
pub(super) const BATCH: usize = 512;

/// What the publisher task does, in queue order.
pub(super) enum Job {
    /// A publish of a hub without history: `PUBLISH` it on this channel, in a `wse1`
    /// envelope.
    Publish {
        channel: String,
        message: Message,
        /// Its bytes, given back when the job is dropped.
        _held: Reservation,
    },
    /// Store a publication and carry it (a hub with history); answer on `done`.
    Store {
        topic: String,
        message: Message,
        key: Option<String>,
        done: oneshot::Sender<Result<Position>>,
        /// Its bytes, given back when the job is dropped.
        _held: Reservation,
    },
}

/// The bytes the publisher's jobs hold, against a bound.
#[derive(Debug)]
pub(super) struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(super) fn new(max: usize) -> Budget {
        Budget {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Hold `bytes` more, unless that takes the total past the bound while something
    /// is held already (a job alone always fits). Given back when the reservation is
    /// dropped.
    pub(super) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            if held != 0 && held.saturating_add(bytes) > self.max {
                return None;
            }
            match self.held.compare_exchange_weak(
                held,
                held.saturating_add(bytes),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => held = now,
            }
        }
    }

    /// The bytes held now.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Bytes held in a [`Budget`] by one job, given back when it is dropped.
#[derive(Debug)]
pub(super) struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The publisher task: one connection, pipelined jobs in queue order.
pub(super) async fn publisher(
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
pub(super) async fn settle(shared: &Shared, timeout: Duration, batch: &[Job]) {
    let pending: Vec<String> = {
        let wanted = lock(&shared.wanted);
        let subscribed = lock(&shared.subscribed);
        if wanted.len() == subscribed.len() && wanted.iter().all(|c| subscribed.contains(c)) {
            return;
        }
        batch
            .iter()
            .filter_map(|job| match job {
                Job::Store { topic, .. } => Some(shared.keys.channel(topic)),
                Job::Publish { .. } => None,
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
    let mut pipe = redis::pipe();
    for job in batch.iter() {
        add_job(&mut pipe, shared, store, job);
    }
    let sent: redis::RedisResult<Vec<(i64, String)>> = pipe.query_async(conn).await;
    let jobs = batch.drain(..);
    match sent {
        Ok(stored) => {
            let mut stored = stored.into_iter();
            for job in jobs {
                if let Job::Store {
                    topic,
                    message,
                    done,
                    _held: held,
                    ..
                } = job
                {
                    let position = stored
                        .next()
                        .and_then(|(_, position)| position.parse().ok())
                        .ok_or_else(|| {
                            Error::Unavailable("Redis answered a store with something else".into())
                        });
                    if let Ok(position) = &position {
                        shared.note_delivered(&topic, position, &message);
                    }
                    // The bytes are given back before the answer: whoever awaits it
                    // finds them free.
                    drop(held);
                    let _ = done.send(position);
                }
            }
            Ok(())
        }
        Err(error) => {
            let lost = jobs.len() as u64;
            shared.dropped.fetch_add(lost, Ordering::Relaxed);
            for job in jobs {
                if let Job::Store {
                    done, _held: held, ..
                } = job
                {
                    drop(held);
                    let _ = done.send(Err(Error::Unavailable(format!("Redis: {error}"))));
                }
            }
            Err(error)
        }
    }
}

/// Add the command that does `job` to `pipe`: a `PUBLISH` (`SPUBLISH` on a cluster)
/// of a `wse1` envelope, or a run of the store script.
pub(super) fn add_job(
    pipe: &mut redis::Pipeline,
    shared: &Shared,
    store: &redis::Script,
    job: &Job,
) {
    let sharded = shared.cluster.is_some();
    match job {
        Job::Publish {
            channel, message, ..
        } => {
            let envelope = Sealed {
                node: shared.node,
                message,
            };
            if sharded {
                // Answered like every job on a cluster (the answers are matched to jobs).
                pipe.cmd("SPUBLISH").arg(channel).arg(envelope);
            } else {
                pipe.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
            }
        }
        Job::Store {
            topic,
            message,
            key,
            ..
        } => {
            let history = shared.history.get().copied().unwrap_or_default();
            let (kind, payload) = kind_and_payload(message);
            // No key: '' on one Redis; on a cluster a name of the topic's slot that is
            // never written ('' is a key of another slot), so that while the slot
            // migrates every store of it is answered alike (ASK: a key is missing).
            let (key, none) = match key {
                Some(key) => (shared.keys.publish_key(topic, key), "key"),
                None if sharded => (shared.keys.no_key(topic), "none"),
                None => (String::new(), "none"),
            };
            pipe.cmd("EVALSHA")
                .arg(store.get_hash())
                .arg(3)
                .arg(shared.keys.meta(topic))
                .arg(shared.keys.stream(topic))
                .arg(key)
                .arg(shared.keys.channel(topic))
                .arg(new_epoch())
                .arg(kind)
                .arg(payload)
                .arg(history.size)
                .arg(millis(history.ttl))
                .arg(millis(META_TTL.max(history.ttl)))
                .arg(history.max_bytes)
                .arg(if sharded { "SPUBLISH" } else { "PUBLISH" })
                .arg(none);
            // The latest position this node stored or delivered: a history below it in
            // its epoch lost its tail, and starts a new epoch before this is stored.
            match shared.latest(topic) {
                Some(floor) => pipe.arg(floor.epoch()).arg(floor.offset()),
                None => pipe.arg("").arg(0),
            };
        }
    }
}

/// The position in the store script's answer (`[flag, "EPOCH:OFFSET"]`).
pub(super) fn stored_position(reply: &redis::Value) -> Option<Position> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    match items.get(1)? {
        redis::Value::BulkString(position) => std::str::from_utf8(position).ok()?.parse().ok(),
        redis::Value::SimpleString(position) => position.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_bound_unless_empty_and_gives_back_on_drop() {
        let budget = Arc::new(Budget::new(100));
        let big = budget.reserve(500).expect("alone, larger than the bound");
        assert!(budget.reserve(1).is_none(), "something is held");
        drop(big);
        assert_eq!(budget.held(), 0);
        let a = budget.reserve(60).unwrap();
        let b = budget.reserve(40).unwrap();
        assert!(budget.reserve(1).is_none(), "100 of 100");
        drop(a);
        let c = budget.reserve(60).unwrap();
        assert_eq!(budget.held(), 100);
        drop((b, c));
        assert_eq!(budget.held(), 0);
    }
}
