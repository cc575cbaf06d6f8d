//! The hub on a Redis Cluster (issue 29): a real cluster of 3 masters and 3 replicas
//! (`support/redis_cluster.rs`), the failures a cluster has, and what wsevents.v1
//! subscribers (the reconnecting `pubsub::Client`) see through them: every
//! publication once, in order, or `recovered: false`, never a silent hole. Each test
//! has its own cluster (about 2.5 s to make).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis_cluster.rs"]
mod redis_cluster;
#[path = "support/v1.rs"]
mod v1;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_cluster::RedisCluster;
use tokio::sync::Notify;
use wsevents::hub::{BackendStatus, History, Hub, Position, RedisBackend, RedisConfig};
use wsevents::pubsub::{Client, PubsubServer};
use wsevents::{ClientBuilder, Message, Reconnect};

/// How long a whole chaos run may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(100);

fn config() -> RedisConfig {
    RedisConfig {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
        topology_refresh: Duration::from_secs(1),
        ..RedisConfig::default()
    }
}

/// A wsevents node on the cluster: its `/pubsub` URL, its hub, its backend.
struct Node {
    url: String,
    hub: Hub,
    backend: Arc<RedisBackend>,
}

async fn node(cluster: &RedisCluster, config: RedisConfig) -> Node {
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).take(2).collect();
    let backend = Arc::new(RedisBackend::cluster_with_config(&seeds, config).unwrap());
    let hub = Hub::builder()
        .history(History::default())
        .backend(backend.clone())
        .build();
    let url = v1::serve(PubsubServer::new(hub.clone())).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.backend_status() != BackendStatus::Connected {
        assert!(
            Instant::now() < deadline,
            "not connected: {:?}",
            hub.backend_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Node { url, hub, backend }
}

/// What a subscriber saw of one topic, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Publication(Position, String),
    Subscribed { recovered: bool },
}

/// A reconnecting wsevents.v1 client, its log per topic.
struct Subscriber {
    client: Client,
    log: Arc<Mutex<BTreeMap<String, Vec<Seen>>>>,
    changed: Arc<Notify>,
}

fn subscriber(url: &str, topics: &[String]) -> Subscriber {
    let builder = ClientBuilder::new(url).unwrap().no_proxy();
    let options = Reconnect::new()
        .initial_delay(Duration::from_millis(20))
        .max_delay(Duration::from_millis(100));
    let client = Client::with_options(builder, options).unwrap();
    let log: Arc<Mutex<BTreeMap<String, Vec<Seen>>>> = Arc::default();
    let changed = Arc::new(Notify::new());
    let (l, c) = (log.clone(), changed.clone());
    client.on_publication(move |p| {
        let Message::Text(text) = &p.data else {
            panic!("binary")
        };
        l.lock()
            .unwrap()
            .entry(p.topic.clone())
            .or_default()
            .push(Seen::Publication(p.position.clone(), text.to_string()));
        c.notify_waiters();
    });
    let (l, c) = (log.clone(), changed.clone());
    client.on_subscribed(move |s| {
        l.lock()
            .unwrap()
            .entry(s.topic.clone())
            .or_default()
            .push(Seen::Subscribed {
                recovered: s.recovered,
            });
        c.notify_waiters();
    });
    for topic in topics {
        client.subscribe(topic, None).unwrap();
    }
    let driver = client.clone();
    tokio::spawn(async move { driver.run().await });
    Subscriber {
        client,
        log,
        changed,
    }
}

impl Subscriber {
    /// Until `done` says yes of the log (checked at each thing seen).
    async fn until(&self, what: &str, done: impl Fn(&BTreeMap<String, Vec<Seen>>) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            if done(&self.log.lock().unwrap()) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left.min(Duration::from_millis(500)), notified)
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {DEADLINE:?}; last seen: {:?}",
                    self.log
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(t, s)| (
                            t.clone(),
                            s.iter().rev().take(3).cloned().collect::<Vec<_>>()
                        ))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Until every topic's publication `last` (by payload) arrived.
    async fn until_last(&self, topics: &[String], last: u64) {
        let last = last.to_string();
        self.until(&format!("publication {last} of every topic"), |log| {
            topics.iter().all(|t| {
                log.get(t).is_some_and(|seen| {
                    seen.iter()
                        .any(|s| matches!(s, Seen::Publication(_, d) if *d == last))
                })
            })
        })
        .await;
    }
}

/// What a topic's log says: publications `1..=n` each once and in order, except that
/// a hole is allowed right after `recovered: false` (the subscriber was told);
/// positions never repeat with other data. The holes told.
fn check(topic: &str, seen: &[Seen], n: u64) -> u64 {
    let mut next = 1u64;
    let mut told = false;
    let mut holes = 0;
    let mut at: BTreeMap<String, String> = BTreeMap::new();
    for s in seen {
        match s {
            Seen::Subscribed { recovered } => told |= !recovered,
            Seen::Publication(position, data) => {
                if let Some(before) = at.insert(position.to_string(), data.clone()) {
                    assert_eq!(
                        &before, data,
                        "{topic}: {position} given to two publications"
                    );
                }
                let i: u64 = data.parse().unwrap();
                assert!(
                    i >= next,
                    "{topic}: {i} again or out of order (expected {next})"
                );
                if i > next {
                    assert!(told, "{topic}: {next}..{i} missing and nobody was told");
                    holes += 1;
                }
                told = false;
                next = i + 1;
            }
        }
    }
    assert_eq!(next, n + 1, "{topic}: not every publication arrived");
    holes
}

/// The topics' slots, found from their meta keys once each was published to.
async fn slot_of_topic(cluster: &RedisCluster, topic: &str) -> u16 {
    for shard in cluster.shards().await {
        let mut conn = cluster.connection(shard.master).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("wsevents:*meta:{topic}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(key) = keys.first() {
            return cluster.slot_of(key).await;
        }
    }
    panic!("no meta of {topic} anywhere");
}

/// Publish `1..=n` on each topic from `hub`, in order per topic, each confirmed
/// (refused ones published again with the same key: stored once). The count of
/// refusals. `progress` counts confirmed publications.
async fn publish_all(
    hub: &Hub,
    topics: &[String],
    n: u64,
    progress: Arc<std::sync::atomic::AtomicU64>,
    moved_on: Arc<Notify>,
) -> u64 {
    let tasks: Vec<_> = topics
        .iter()
        .map(|topic| {
            let hub = hub.clone();
            let topic = topic.clone();
            let progress = progress.clone();
            let moved_on = moved_on.clone();
            tokio::spawn(async move {
                let mut refused = 0;
                for i in 1..=n {
                    let key = format!("{topic}-{i}");
                    loop {
                        match hub
                            .publish_confirmed(&topic, i.to_string(), Some(&key))
                            .await
                        {
                            Ok(_) => break,
                            Err(_) => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    moved_on.notify_waiters();
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    refused
}

/// Until `progress` reaches `count`.
async fn reached(progress: &std::sync::atomic::AtomicU64, moved_on: &Notify, count: u64) {
    loop {
        let notified = moved_on.notified();
        if progress.load(std::sync::atomic::Ordering::Relaxed) >= count {
            return;
        }
        tokio::time::timeout(DEADLINE, notified).await.unwrap();
    }
}

fn topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("topic-{i}")).collect()
}

/// The chaos runs: 4 topics x 2,500 publications (10,000) from node A, subscribers on
/// nodes A and B, `chaos` done once a third is confirmed. Asserts 0 lost, 0 repeated,
/// order kept, or `recovered: false` told; returns the holes told and the refusals.
async fn chaos_run<F, Fut>(wait_replicas: u32, chaos: F) -> (u64, u64)
where
    F: FnOnce(Arc<RedisCluster>, u16) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const PER_TOPIC: u64 = 2_500;
    let cluster = Arc::new(RedisCluster::start().await);
    let config = RedisConfig {
        wait_replicas,
        ..config()
    };
    let a = node(&cluster, config.clone()).await;
    let b = node(&cluster, config).await;
    let topics = topics(4);
    let on_a = subscriber(&a.url, &topics);
    let on_b = subscriber(&b.url, &topics);
    for s in [&on_a, &on_b] {
        s.until("subscribed", |log| {
            topics.iter().all(|t| log.contains_key(t))
        })
        .await;
    }
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let moved_on = Arc::new(Notify::new());
    let publishing = {
        let hub = a.hub.clone();
        let topics = topics.clone();
        let (progress, moved_on) = (progress.clone(), moved_on.clone());
        tokio::spawn(async move { publish_all(&hub, &topics, PER_TOPIC, progress, moved_on).await })
    };
    reached(&progress, &moved_on, 4 * PER_TOPIC / 3).await;
    let slot = slot_of_topic(&cluster, &topics[0]).await;
    let started = Instant::now();
    chaos(cluster.clone(), slot).await;
    eprintln!("chaos done in {:?}", started.elapsed());
    let refused = tokio::time::timeout(DEADLINE, publishing)
        .await
        .unwrap()
        .unwrap();
    let mut holes = 0;
    for s in [&on_a, &on_b] {
        s.until_last(&topics, PER_TOPIC).await;
        let log = s.log.lock().unwrap().clone();
        for topic in &topics {
            holes += check(topic, &log[topic], PER_TOPIC);
        }
    }
    eprintln!(
        "{} publications, {refused} refused and published again, {holes} holes told; A dropped {}, B dropped {}",
        4 * PER_TOPIC,
        a.backend.dropped(),
        b.backend.dropped()
    );
    drop((on_a.client, on_b.client));
    (holes, refused)
}

/// Publications on topics spread over the masters reach subscribers on both nodes,
/// in one order; each node holds one subscriber connection per master that serves
/// its topics, not one per topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_spread_over_the_masters_one_connection_per_master() {
    let cluster = RedisCluster::start().await;
    let a = node(&cluster, config()).await;
    let b = node(&cluster, config()).await;
    let topics = topics(40);
    let on_a = subscriber(&a.url, &topics);
    let on_b = subscriber(&b.url, &topics);
    for s in [&on_a, &on_b] {
        s.until("subscribed", |log| {
            topics.iter().all(|t| log.contains_key(t))
        })
        .await;
    }
    for i in 1..=20u64 {
        for (n, topic) in topics.iter().enumerate() {
            let hub = if n % 2 == 0 { &a.hub } else { &b.hub };
            hub.publish_confirmed(topic, i.to_string(), None)
                .await
                .unwrap();
        }
    }
    for s in [&on_a, &on_b] {
        s.until_last(&topics, 20).await;
    }
    let (log_a, log_b) = (
        on_a.log.lock().unwrap().clone(),
        on_b.log.lock().unwrap().clone(),
    );
    for topic in &topics {
        assert_eq!(check(topic, &log_a[topic], 20), 0);
        assert_eq!(log_a[topic], log_b[topic], "one order everywhere");
    }
    // Every master serves some of the topics, and holds two subscriber connections
    // (one per node), whatever the number of topics it serves. Beside them, the master
    // of the hub's control channel (`Hub::command`) holds each node's connection for
    // it: counted apart, once both are subscribed.
    let shards = cluster.shards().await;
    let mut on_control = HashMap::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while on_control.values().sum::<usize>() != 2 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "control: {on_control:?}"
        );
        on_control.clear();
        for shard in &shards {
            let mut conn = cluster.connection(shard.master).await;
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .arg("*control")
                .query_async(&mut conn)
                .await
                .unwrap();
            for channel in channels {
                let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
                    .arg("SHARDNUMSUB")
                    .arg(&channel)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                *on_control.entry(shard.master).or_default() +=
                    counts.iter().map(|(_, n)| n).sum::<usize>();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut served = 0;
    for shard in shards {
        let mut conn = cluster.connection(shard.master).await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        let subscribers = clients
            .lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f.starts_with("ssub=") && f != "ssub=0")
            })
            .count();
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            !channels.is_empty(),
            "master {} serves no topic",
            shard.master
        );
        served += channels.iter().filter(|c| !c.ends_with("control")).count();
        let control = on_control.get(&shard.master).copied().unwrap_or(0);
        assert_eq!(
            subscribers - control,
            2,
            "master {}: {clients}",
            shard.master
        );
    }
    assert_eq!(served, 40);
}

/// A slot migrates (SETSLOT IMPORTING/MIGRATING, MIGRATE, NODE) while 10,000
/// publications go on: nothing lost, nothing twice, order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrates_under_load_without_loss() {
    let (holes, _) = chaos_run(0, |cluster, slot| async move {
        let from = cluster.shard_of(slot).await.master;
        let to = cluster
            .shards()
            .await
            .into_iter()
            .find(|s| s.master != from)
            .unwrap()
            .master;
        cluster.move_slot(slot, to).await;
    })
    .await;
    assert_eq!(holes, 0, "a migration loses nothing");
}

/// A replica takes over by `CLUSTER FAILOVER` while 10,000 publications go on:
/// nothing lost, nothing twice, order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_by_command_under_load_without_loss() {
    let (holes, _) = chaos_run(0, |cluster, slot| async move {
        let replica = cluster.shard_of(slot).await.replicas[0];
        cluster.failover(replica, "").await;
    })
    .await;
    assert_eq!(holes, 0, "a manual failover loses nothing");
}

/// The master of a topic's slot is killed (SIGKILL) while 10,000 publications go on;
/// its replica takes over, and the killed node comes back as its replica.
/// Publications are confirmed once a replica has them (`wait_replicas: 1`: refused
/// while the shard has none, and published again), so none confirmed is lost:
/// subscribers get every one once, in order, or are told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_nothing_silently() {
    let (holes, refused) = chaos_run(1, |cluster, slot| async move {
        let shard = cluster.shard_of(slot).await;
        cluster.kill(shard.master);
        cluster.wait_master(shard.replicas[0]).await;
        cluster.restart(shard.master).await;
    })
    .await;
    assert!(
        refused > 0,
        "publications were refused while the slot had no master"
    );
    eprintln!("holes told: {holes}");
}

/// The harness itself: 3 shards of a master and a replica; a slot moved with its
/// keys; a failover by command; a master killed, its replica taking over, and the
/// killed node back as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_cluster_moves_slots_and_fails_over() {
    let started = Instant::now();
    let cluster = RedisCluster::start().await;
    eprintln!("cluster up in {:?}", started.elapsed());
    let shards = cluster.shards().await;
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert!(shards.iter().all(|s| s.replicas.len() == 1), "{shards:?}");
    let slot = cluster.slot_of("somekey").await;
    let from = cluster.shard_of(slot).await.master;
    let mut conn = cluster.connection(from).await;
    let _: () = redis::cmd("SET")
        .arg("somekey")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let to = shards.iter().find(|s| s.master != from).unwrap().master;
    cluster.move_slot(slot, to).await;
    assert_eq!(cluster.shard_of(slot).await.master, to);
    let get = |i| {
        let cluster = &cluster;
        async move {
            let mut conn = cluster.connection(i).await;
            redis::cmd("GET")
                .arg("somekey")
                .query_async::<String>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(get(to).await, "v", "the key moved with its slot");
    let replica = cluster.shard_of(slot).await.replicas[0];
    cluster.failover(replica, "").await;
    assert_eq!(cluster.shard_of(slot).await.master, replica);
    let shard = cluster.shard_of(slot).await;
    cluster.kill(shard.master);
    cluster.wait_master(shard.replicas[0]).await;
    assert_eq!(get(shard.replicas[0]).await, "v");
    cluster.restart(shard.master).await;
    assert_eq!(cluster.shard_of(slot).await.replicas, [shard.master]);
}

/// The offset rule. A master confirms publications its replica never got (paused),
/// then is killed and the replica takes over without them: the history lost its tail.
/// Later publications must not take the offsets the subscriber saw with other data
/// (it would drop them as repeats: silent loss). The node that delivered the lost
/// offsets finds the history below them when it catches up after the failover, and
/// the history starts a new epoch: the subscriber is told `recovered: false` and gets
/// every later publication. (Without the rule it never gets them: it drops them as
/// repeats of what it saw at those offsets.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_lost_in_a_failover_are_never_given_again() {
    let cluster = RedisCluster::start().await;
    let a = node(&cluster, config()).await;
    let b = node(&cluster, config()).await;
    let topic = vec!["t".to_owned()];
    let on_b = subscriber(&b.url, &topic);
    on_b.until("subscribed", |log| log.contains_key("t")).await;
    let publish = |range: std::ops::RangeInclusive<u64>| {
        let hub = a.hub.clone();
        async move {
            let mut last = None;
            for i in range {
                let key = format!("t-{i}");
                loop {
                    match hub.publish_confirmed("t", i.to_string(), Some(&key)).await {
                        Ok(position) => {
                            last = Some(position);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
            last.unwrap()
        }
    };
    publish(1..=50).await;
    on_b.until_last(&topic, 50).await;
    let shard = cluster.shard_of(slot_of_topic(&cluster, "t").await).await;
    let replica = shard.replicas[0];
    // Confirmed by the master only: the replica is stopped, and its link dropped by the
    // master (so that nothing more waits for it in a socket buffer).
    cluster.pause(replica);
    let mut master = cluster.connection(shard.master).await;
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut master)
        .await
        .unwrap();
    let confirmed = publish(51..=60).await;
    assert_eq!(confirmed.offset(), 60);
    on_b.until_last(&topic, 60).await;
    cluster.kill(shard.master);
    cluster.resume(replica);
    cluster.wait_master(replica).await;
    let mut conn = cluster.connection(replica).await;
    let offset: u64 = redis::cmd("HGET")
        .arg(
            redis::cmd("KEYS")
                .arg("wsevents:*meta:t")
                .query_async::<Vec<String>>(&mut conn)
                .await
                .unwrap()[0]
                .clone(),
        )
        .arg("offset")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(offset, 50, "the new master lost 51..60");
    let after = publish(61..=70).await;
    assert_ne!(after.epoch(), confirmed.epoch(), "a new epoch");
    eprintln!("confirmed {confirmed} before the failover, {after} after it");
    // Told `recovered: false` at the new epoch, the subscriber may have missed some of
    // 61..70 (it was told); whatever comes next it gets.
    let mut last = 70;
    loop {
        last += 1;
        publish(last..=last).await;
        let arrived = on_b.until_last(&topic, last);
        if tokio::time::timeout(Duration::from_secs(1), arrived)
            .await
            .is_ok()
        {
            break;
        }
        assert!(last < 80, "nothing after the failover arrives");
    }
    let log = on_b.log.lock().unwrap().clone();
    let holes = check("t", &log["t"], last);
    eprintln!("{holes} holes told, up to {last}");
    assert!(
        log["t"].contains(&Seen::Subscribed { recovered: false }),
        "the subscriber was told: {:?}",
        &log["t"][log["t"].len().saturating_sub(15)..]
    );
}

/// `wait_replicas: 1`: a publication is confirmed once the replica has it; while the
/// replica is stopped it is refused (stored and delivered, but not confirmed), and a
/// retry with its key once the replica is back confirms that one publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_a_confirmation_means_a_replica_has_it() {
    let cluster = RedisCluster::start().await;
    let config = RedisConfig {
        wait_replicas: 1,
        ..config()
    };
    let a = node(&cluster, config).await;
    let first = a.hub.publish_confirmed("t", "1", Some("k1")).await.unwrap();
    let shard = cluster.shard_of(slot_of_topic(&cluster, "t").await).await;
    cluster.pause(shard.replicas[0]);
    let refused = a.hub.publish_confirmed("t", "2", Some("k2")).await;
    cluster.resume(shard.replicas[0]);
    let Err(wsevents::Error::Unavailable(why)) = refused else {
        panic!("confirmed without its replica: {refused:?}")
    };
    assert!(why.contains("replicas"), "{why}");
    let again = a.hub.publish_confirmed("t", "2", Some("k2")).await.unwrap();
    assert_eq!(
        (again.epoch(), again.offset()),
        (first.epoch(), 2),
        "stored once"
    );
}
