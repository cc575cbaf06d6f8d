//! The publisher on a Redis Cluster: this node's publications, each sent to the master
//! of its topic's slot, in order per topic.
//!
//! The queue is the same as on one Redis (`publisher.rs`); each batch is split by
//! master, and each master's part goes as one pipeline on the publisher's connection
//! to it, all masters at once. Redis runs a connection's commands in order, and a
//! topic's commands all go to one slot, so a topic's publications keep their order.
//!
//! A command Redis did not run because its slot is elsewhere or moving (`MOVED`,
//! `ASK`, `TRYAGAIN`, `CLUSTERDOWN`) is sent again, after the slot map is read again,
//! in order, until
//! [`RedisConfig::timeout`](super::RedisConfig::timeout) has passed since the batch
//! was taken; then it is refused ([`Error::Unavailable`]). A slot being migrated
//! answers every store `ASK` (the store declares a key that never exists when the
//! publication has no idempotency key, so one is always missing), so its stores wait
//! for the migration to end, in order. The next batch is taken when the batch is done. A lost
//! connection fails what was sent on it (as on one Redis: a store that did run is
//! delivered, and a retry with its key finds it).
//!
//! With [`RedisConfig::wait_replicas`](super::RedisConfig::wait_replicas) above 0, a
//! master's pipeline ends with `WAIT`: its stores are confirmed only once that many
//! replicas have them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind, Value};
use tokio::sync::mpsc;

use super::backoff::backoff;
use super::publisher::{BATCH, Job, STORE_SCRIPT, add_job, settle, stored_position};
use super::slots::key_slot;
use super::topology::Cluster;
use super::{Link, RedisConfig, Shared};
use crate::error::Error;

/// The publisher task on a cluster.
pub(super) async fn shard_publisher(
    cluster: Arc<Cluster>,
    config: RedisConfig,
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Job>,
) {
    let store = redis::Script::new(STORE_SCRIPT);
    let mut attempts = 0u32;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if cluster.map().is_none() {
            let read = tokio::select! {
                read = cluster.refresh(config.timeout) => read,
                () = shared.stop.cancelled() => return,
            };
            if let Err(error) = read {
                attempts += 1;
                shared.set_publisher(Link::Down {
                    attempts,
                    error: format!("Redis Cluster: no slot map ({error})"),
                });
                tracing::warn!(%error, attempts, "Redis Cluster publisher: cannot read the slot map; retrying");
                if !backoff(&config, &shared, attempts, Some(&mut queue)).await {
                    return;
                }
                continue;
            }
            if attempts > 0 {
                tracing::info!(attempts, "Redis Cluster publisher: slot map read");
            }
            attempts = 0;
            shared.set_publisher(Link::Up);
        }
        tokio::select! {
            received = queue.recv_many(&mut batch, BATCH) => if received == 0 { return },
            () = shared.stop.cancelled() => return,
        }
        settle(&shared, config.timeout, &batch).await;
        send(
            &cluster,
            &config,
            &shared,
            &store,
            std::mem::take(&mut batch),
        )
        .await;
    }
}

/// The slot a job's command goes to.
fn slot(shared: &Shared, job: &Job) -> u16 {
    match job {
        Job::Publish { channel, .. } => key_slot(channel.as_bytes()),
        Job::Store { topic, .. } => key_slot(shared.keys.meta(topic).as_bytes()),
    }
}

/// Send `jobs` to their masters, again while a slot is elsewhere or moving.
async fn send(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Shared,
    store: &redis::Script,
    mut jobs: Vec<Job>,
) {
    let deadline = Instant::now() + config.timeout;
    let mut wait = Duration::from_millis(5);
    loop {
        let Some(map) = cluster.map() else {
            fail_all(shared, jobs, "Redis Cluster: no slot map");
            return;
        };
        let mut groups: Vec<(String, Vec<Job>)> = Vec::new();
        let mut again = Vec::new();
        for job in jobs {
            match map.owner(slot(shared, &job)) {
                Some(addr) => match groups.iter_mut().find(|(a, _)| a == addr) {
                    Some((_, group)) => group.push(job),
                    None => groups.push((addr.to_owned(), vec![job])),
                },
                None => again.push(job),
            }
        }
        let mut stale = !again.is_empty();
        let sent = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|(addr, group)| send_group(cluster, config, shared, store, addr, group)),
        )
        .await;
        for (retry, moved) in sent {
            again.extend(retry);
            stale |= moved;
        }
        if stale {
            let _ = cluster.refresh(config.timeout).await;
        }
        if again.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            fail_all(
                shared,
                again,
                &format!(
                    "Redis Cluster: the slot stayed elsewhere or moving for {:?}",
                    config.timeout
                ),
            );
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stop.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_millis(200));
        jobs = again;
    }
}

/// The publisher's connection to the master at `addr`, made (and the store script
/// loaded on it) if there is none.
pub(super) async fn connection(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Shared,
    addr: &str,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    if let Some(conn) = cluster.conn(addr) {
        return Ok(conn);
    }
    let client = cluster.client(addr, false)?;
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?;
    if shared.history.get().is_some() {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(STORE_SCRIPT)
            .query_async::<String>(&mut conn)
            .await?;
    }
    cluster.set_conn(addr, Some(conn.clone()));
    Ok(conn)
}

/// What an error from a master means for the job it answered.
enum Answer {
    /// Not run: send it again once the slot map is read again.
    Moved,
    /// Not run: the slot is moving or the cluster is failing over; send it again.
    Later,
    /// The store script is not loaded there (its cache was flushed): load it, again.
    NoScript,
    /// Failed.
    Failed,
}

fn answer_of(error: &redis::RedisError) -> Answer {
    match error.kind() {
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => Answer::Moved,
        ErrorKind::Server(
            ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown,
        ) => Answer::Later,
        ErrorKind::Server(ServerErrorKind::NoScript) => Answer::NoScript,
        _ => Answer::Failed,
    }
}

/// Send one master's jobs as one pipeline; the jobs to send again, and whether the
/// slot map is stale.
async fn send_group(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Shared,
    store: &redis::Script,
    addr: String,
    jobs: Vec<Job>,
) -> (Vec<Job>, bool) {
    let mut conn = match connection(cluster, config, shared, &addr).await {
        Ok(conn) => conn,
        Err(error) => {
            tracing::warn!(%error, addr, "Redis Cluster publisher: cannot reach a master");
            fail_all(
                shared,
                jobs,
                &format!("Redis Cluster master {addr}: {error}"),
            );
            return (Vec::new(), true);
        }
    };
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for job in &jobs {
        add_job(&mut pipe, shared, store, job);
    }
    let waits = config.wait_replicas > 0 && jobs.iter().any(|j| matches!(j, Job::Store { .. }));
    if waits {
        pipe.cmd("WAIT")
            .arg(config.wait_replicas)
            .arg(super::recover::millis(config.timeout / 2));
    }
    let replies: redis::RedisResult<Vec<redis::RedisResult<Value>>> =
        pipe.query_async(&mut conn).await;
    let mut replies = match replies {
        Ok(replies) if replies.len() == jobs.len() + usize::from(waits) => replies,
        Ok(_) => {
            fail_all(shared, jobs, "Redis Cluster: answers that do not match");
            return (Vec::new(), false);
        }
        Err(error) => {
            cluster.set_conn(&addr, None);
            tracing::warn!(%error, addr, "Redis Cluster publisher: connection to a master lost");
            fail_all(
                shared,
                jobs,
                &format!("Redis Cluster master {addr}: {error}"),
            );
            return (Vec::new(), true);
        }
    };
    let unconfirmed = if waits {
        match replies.pop() {
            Some(Ok(Value::Int(n))) if n >= i64::from(config.wait_replicas) => None,
            Some(Ok(Value::Int(n))) => Some(format!(
                "stored and delivered, but {n} of {} replicas confirmed it within {:?}: a failover may lose it (retry with its key)",
                config.wait_replicas,
                config.timeout / 2
            )),
            other => Some(format!("WAIT answered {other:?}")),
        }
    } else {
        None
    };
    let mut again = Vec::new();
    let mut stale = false;
    let mut reload = false;
    // A slot that moves or migrates answers its later commands alike (every store
    // declares a key that is missing while it migrates), so what is sent again keeps
    // its order; one that ran is answered (never sent twice), and a later one of its
    // slot that ran anyway is said in the log.
    let mut held_back: Vec<u16> = Vec::new();
    for (job, reply) in jobs.into_iter().zip(replies) {
        let job_slot = slot(shared, &job);
        match reply {
            Ok(value) => {
                if held_back.contains(&job_slot) {
                    tracing::warn!(
                        slot = job_slot,
                        "Redis Cluster: a publication ran before an earlier one of its slot that is sent again"
                    );
                }
                answer(shared, job, &value, unconfirmed.as_deref());
            }
            Err(error) => match answer_of(&error) {
                Answer::Failed => fail(shared, job, &format!("Redis: {error}")),
                kind => {
                    stale |= matches!(kind, Answer::Moved);
                    reload |= matches!(kind, Answer::NoScript);
                    held_back.push(job_slot);
                    again.push(job);
                }
            },
        }
    }
    if reload {
        let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(STORE_SCRIPT)
            .query_async(&mut conn)
            .await;
        if loaded.is_err() {
            cluster.set_conn(&addr, None);
        }
    }
    (again, stale)
}

/// Answer a job Redis ran.
fn answer(shared: &Shared, job: Job, reply: &Value, unconfirmed: Option<&str>) {
    if let Job::Store {
        topic,
        message,
        done,
        _held: held,
        ..
    } = job
    {
        let position = stored_position(reply)
            .ok_or_else(|| Error::Unavailable("Redis answered a store with something else".into()));
        if let Ok(position) = &position {
            shared.note_delivered(&topic, position, &message);
        }
        let position = match unconfirmed {
            Some(why) => Err(Error::Unavailable(format!("Redis: {why}"))),
            None => position,
        };
        drop(held);
        let _ = done.send(position);
    }
}

fn fail_all(shared: &Shared, jobs: Vec<Job>, why: &str) {
    for job in jobs {
        fail(shared, job, why);
    }
}

fn fail(shared: &Shared, job: Job, why: &str) {
    shared.dropped.fetch_add(1, Ordering::Relaxed);
    if let Job::Store {
        done, _held: held, ..
    } = job
    {
        drop(held);
        let _ = done.send(Err(Error::Unavailable(why.to_owned())));
    }
}

/// The connection to the master of `topic`'s slot (a history read goes through it).
pub(super) async fn connection_for(
    cluster: &Cluster,
    config: &RedisConfig,
    shared: &Shared,
    topic: &str,
) -> Result<redis::aio::MultiplexedConnection, String> {
    let slot = key_slot(shared.keys.meta(topic).as_bytes());
    let map = match cluster.map() {
        Some(map) => map,
        None => cluster.refresh(config.timeout).await?,
    };
    let addr = map
        .owner(slot)
        .ok_or_else(|| format!("Redis Cluster: nobody serves slot {slot}"))?
        .to_owned();
    connection(cluster, config, shared, &addr)
        .await
        .map_err(|e| format!("Redis Cluster master {addr}: {e}"))
}
