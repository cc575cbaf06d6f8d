//! The hub on a Redis Cluster (issue 29): a real cluster of 3 masters and 3 replicas
//! (`support/redis_cluster.rs`), the failures it has, and what subscribers see.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

#[path = "support/redis_cluster.rs"]
mod redis_cluster;

use redis_cluster::RedisCluster;

/// The harness itself: a cluster of 3 shards of a master and a replica; a slot moved;
/// a failover by command; a master killed and its replica taking over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_cluster_moves_slots_and_fails_over() {
    let started = std::time::Instant::now();
    let mut cluster = RedisCluster::start().await;
    eprintln!("cluster up in {:?}", started.elapsed());
    let shards = cluster.shards().await;
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert!(shards.iter().all(|s| s.replicas.len() == 1), "{shards:?}");
    let slot = cluster.slot_of("somekey").await;
    let mut conn = cluster
        .connection(cluster.shard_of(slot).await.master)
        .await;
    let _: () = redis::cmd("SET")
        .arg("somekey")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let from = cluster.shard_of(slot).await.master;
    let to = shards.iter().find(|s| s.master != from).unwrap().master;
    let t = std::time::Instant::now();
    cluster.move_slot(slot, to).await;
    eprintln!("slot moved in {:?}", t.elapsed());
    assert_eq!(cluster.shard_of(slot).await.master, to);
    let mut conn = cluster.connection(to).await;
    let v: String = redis::cmd("GET")
        .arg("somekey")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v", "the key moved with its slot");
    let replica = cluster.shard_of(slot).await.replicas[0];
    let t = std::time::Instant::now();
    cluster.failover(replica, "").await;
    eprintln!("failover in {:?}", t.elapsed());
    assert_eq!(cluster.shard_of(slot).await.master, replica);
    let shard = cluster.shard_of(slot).await;
    let t = std::time::Instant::now();
    cluster.kill(shard.master);
    cluster.wait_master(shard.replicas[0]).await;
    eprintln!("master killed, replica took over in {:?}", t.elapsed());
    let mut conn = cluster.connection(shard.replicas[0]).await;
    let v: String = redis::cmd("GET")
        .arg("somekey")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v");
}
