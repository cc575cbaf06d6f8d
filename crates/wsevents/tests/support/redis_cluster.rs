//! A Redis Cluster of the test's own: 3 masters and 3 replicas of Debian's
//! `redis-server` (`scripts/redis install`) in cluster mode on free loopback ports,
//! each in a temporary directory of its own, made by `redis-cli --cluster create`,
//! killed by PID when dropped. And the failures a cluster has: a master killed
//! (SIGKILL) or paused (SIGSTOP), a failover by command, a slot moved to another
//! master (`CLUSTER SETSLOT` and `MIGRATE`, what `redis-cli --cluster reshard` does
//! per slot).
//!
//! Nodes fail a peer that does not answer for two seconds (`cluster-node-timeout`: not
//! less, so that a node slowed down by a loaded machine is not failed over), so a
//! killed master's replica takes over within about three; `cluster-require-full-coverage
//! no` keeps the other masters' slots served meanwhile.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node may stay silent before its peers fail it.
pub(crate) const NODE_TIMEOUT_MS: u64 = 2000;

/// How long any change of the cluster (made, failed over, a slot moved) may take to
/// be seen by every node.
const SETTLE: Duration = Duration::from_secs(30);

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    bus: u16,
    /// `None` once killed.
    child: Mutex<Option<Child>>,
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A cluster of 3 masters and 3 replicas, stopped by PID when dropped.
pub(crate) struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// A master and what it serves, as `CLUSTER SHARDS`-like facts read from `CLUSTER
/// SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// The master's node index.
    pub(crate) master: usize,
    /// Its replicas' node indexes.
    pub(crate) replicas: Vec<usize>,
    /// Slot ranges, inclusive.
    pub(crate) slots: Vec<(u16, u16)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary(name: &str) -> String {
    match name {
        "redis-server" => std::env::var("REDIS_SERVER").unwrap_or_else(|_| name.into()),
        _ => std::env::var("REDIS_CLI").unwrap_or_else(|_| name.into()),
    }
}

impl RedisCluster {
    /// Start 6 nodes, make them a cluster (3 masters, a replica each) and wait until
    /// every node says `cluster_state:ok` and knows every other.
    pub(crate) async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "wsevents-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let (port, bus) = loop {
                let (a, b) = (free_port(), free_port());
                if a != b {
                    break (a, b);
                }
            };
            let node = Node {
                port,
                bus,
                child: Mutex::new(None),
            };
            *node.child.lock().unwrap() = Some(cluster.spawn(&node));
            cluster.nodes.push(node);
        }
        for i in 0..6 {
            cluster.wait_answers(i).await;
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(Node::addr).collect();
        let created = Command::new(binary("redis-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): run scripts/redis install"));
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_settled().await;
        cluster
    }

    fn spawn(&self, node: &Node) -> Child {
        let dir = self.dir.join(node.port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        Command::new(binary("redis-server"))
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &node.bus.to_string()])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--cluster-allow-replica-migration", "no"])
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            // Replicas show in CLUSTER SLOTS once their offset moved: ping them each second.
            .args(["--repl-ping-replica-period", "1"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run scripts/redis install")
            })
    }

    /// The masters' URLs as they were made (what a backend is given as seeds).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://{}", n.addr()))
            .collect()
    }

    /// Node `i`'s URL.
    pub(crate) fn url(&self, i: usize) -> String {
        format!("redis://{}", self.nodes[i].addr())
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].child.lock().unwrap().is_some()
    }

    /// A connection to node `i` (it must be alive).
    pub(crate) async fn connection(&self, i: usize) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url(i)).unwrap();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("node {i}: {e}"))
    }

    async fn wait_answers(&self, i: usize) {
        let client = redis::Client::open(self.url(i)).unwrap();
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node {i} never answered");
    }

    /// `CLUSTER SLOTS` as node `i` sees it, by node index.
    pub(crate) async fn shards_seen_by(&self, i: usize) -> Vec<Shard> {
        let mut conn = self.connection(i).await;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut shards: Vec<Shard> = Vec::new();
        for range in slots {
            let redis::Value::Array(items) = range else {
                panic!("CLUSTER SLOTS: {range:?}")
            };
            let start: u16 = redis::from_redis_value(items[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(items[1].clone()).unwrap();
            let node_of = |v: &redis::Value| {
                let redis::Value::Array(node) = v else {
                    panic!("CLUSTER SLOTS node: {v:?}")
                };
                let port: u16 = redis::from_redis_value(node[1].clone()).unwrap();
                self.index_of(port)
            };
            let master = node_of(&items[2]);
            let replicas: Vec<usize> = items[3..].iter().map(node_of).collect();
            match shards.iter_mut().find(|s| s.master == master) {
                Some(shard) => shard.slots.push((start, end)),
                None => shards.push(Shard {
                    master,
                    replicas,
                    slots: vec![(start, end)],
                }),
            }
        }
        shards.sort_by_key(|s| s.master);
        shards
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The first alive node.
    fn any_alive(&self) -> usize {
        (0..self.nodes.len()).find(|&i| self.is_alive(i)).unwrap()
    }

    /// The shards as the first alive node sees them.
    pub(crate) async fn shards(&self) -> Vec<Shard> {
        self.shards_seen_by(self.any_alive()).await
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub(crate) async fn slot_of(&self, key: &str) -> u16 {
        let mut conn = self.connection(self.any_alive()).await;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// The master that serves `slot`, and its replicas.
    pub(crate) async fn shard_of(&self, slot: u16) -> Shard {
        self.shards()
            .await
            .into_iter()
            .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .unwrap_or_else(|| panic!("nobody serves slot {slot}"))
    }

    /// Until every alive node says `cluster_state:ok`, knows every node and sees the
    /// same masters serving the same slots, every slot served.
    pub(crate) async fn wait_settled(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            if self.settled().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle within {SETTLE:?}: {}",
                self.describe().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn settled(&self) -> bool {
        let mut seen: Option<Vec<Shard>> = None;
        for i in (0..self.nodes.len()).filter(|&i| self.is_alive(i)) {
            let mut conn = self.connection(i).await;
            let Ok(info) = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut conn)
                .await
            else {
                return false;
            };
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_assigned:16384")
            {
                return false;
            }
            let mut shards = self.shards_seen_by(i).await;
            // Every shard has a master alive, and the replicas that are alive follow.
            if shards.iter().any(|s| !self.is_alive(s.master)) {
                return false;
            }
            for shard in &mut shards {
                shard.replicas.retain(|&r| self.is_alive(r));
            }
            // Every alive node is a master or a replica of one.
            let placed: usize = shards.iter().map(|s| 1 + s.replicas.len()).sum();
            if placed != (0..self.nodes.len()).filter(|&i| self.is_alive(i)).count() {
                return false;
            }
            for shard in &mut shards {
                shard.replicas.sort_unstable();
                shard.slots.sort_unstable();
            }
            match &seen {
                None => seen = Some(shards),
                Some(other) if *other != shards => return false,
                Some(_) => {}
            }
        }
        // And each alive replica has its master's data link up.
        for i in (0..self.nodes.len()).filter(|&i| self.is_alive(i)) {
            let mut conn = self.connection(i).await;
            let Ok(info) = redis::cmd("INFO")
                .arg("replication")
                .query_async::<String>(&mut conn)
                .await
            else {
                return false;
            };
            if info.contains("role:slave") && !info.contains("master_link_status:up") {
                return false;
            }
        }
        true
    }

    /// What each alive node says of the cluster (for a test that fails).
    async fn describe(&self) -> String {
        let mut out = String::new();
        for i in (0..self.nodes.len()).filter(|&i| self.is_alive(i)) {
            let mut conn = self.connection(i).await;
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            out += &format!("\nnode {i} (port {}):\n{nodes}", self.nodes[i].port);
        }
        out
    }

    /// Kill node `i` (SIGKILL: no goodbye, no replication of what it has not sent yet).
    pub(crate) fn kill(&self, i: usize) {
        let child = self.nodes[i].child.lock().unwrap().take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start killed node `i` again on its port, with its directory (its `nodes.conf`):
    /// it rejoins the cluster, as a replica of whoever took its slots; then until the
    /// cluster settled.
    pub(crate) async fn restart(&self, i: usize) {
        let child = self.spawn(&self.nodes[i]);
        *self.nodes[i].child.lock().unwrap() = Some(child);
        self.wait_answers(i).await;
        self.wait_settled().await;
    }

    /// Stop node `i` in its tracks (SIGSTOP) until [`resume`](Self::resume).
    pub(crate) fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Let a paused node go on (SIGCONT).
    pub(crate) fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i]
            .child
            .lock()
            .unwrap()
            .as_ref()
            .expect("alive")
            .id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Until replica `i` has taken over its master's slots (after the master was
    /// killed, its peers fail it and the replica is elected), everywhere.
    pub(crate) async fn wait_master(&self, i: usize) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let shards = self.shards().await;
            if shards.iter().any(|s| s.master == i) && self.settled().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not become a master within {SETTLE:?}: {}",
                self.describe().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `CLUSTER FAILOVER` on replica `i` (`mode`: "" for the safe one that waits until
    /// the replica has everything, "FORCE", "TAKEOVER"), then until it is the master
    /// everywhere.
    pub(crate) async fn failover(&self, i: usize, mode: &str) {
        let mut conn = self.connection(i).await;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        if !mode.is_empty() {
            cmd.arg(mode);
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
        self.wait_master(i).await;
    }

    /// Move `slot` from its master to master `to` with its keys, as `redis-cli
    /// --cluster reshard` does a slot: `IMPORTING` on `to`, `MIGRATING` on the owner,
    /// `MIGRATE` of its keys in batches, then `NODE` on `to`, the owner and the other
    /// masters; then until every node agrees.
    pub(crate) async fn move_slot(&self, slot: u16, to: usize) {
        let from = self.shard_of(slot).await.master;
        assert_ne!(from, to, "slot {slot} is on node {to} already");
        let id = |i| async move {
            let mut conn = self.connection(i).await;
            redis::cmd("CLUSTER")
                .arg("MYID")
                .query_async::<String>(&mut conn)
                .await
                .unwrap()
        };
        let (from_id, to_id) = (id(from).await, id(to).await);
        let mut src = self.connection(from).await;
        let mut dst = self.connection(to).await;
        let setslot = |state: &str, node: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
            cmd
        };
        let _: () = setslot("IMPORTING", &from_id)
            .query_async(&mut dst)
            .await
            .unwrap();
        let _: () = setslot("MIGRATING", &to_id)
            .query_async(&mut src)
            .await
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut src)
                .await
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut src)
                .await
                .unwrap();
        }
        let _: () = setslot("NODE", &to_id).query_async(&mut dst).await.unwrap();
        let _: () = setslot("NODE", &to_id).query_async(&mut src).await.unwrap();
        for shard in self.shards().await {
            if shard.master != from && shard.master != to {
                let mut conn = self.connection(shard.master).await;
                let _: () = setslot("NODE", &to_id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut agree = true;
            for i in (0..self.nodes.len()).filter(|&i| self.is_alive(i)) {
                let owner = self
                    .shards_seen_by(i)
                    .await
                    .into_iter()
                    .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)));
                agree &= owner.is_some_and(|s| s.master == to);
            }
            if agree && self.settled().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} not on node {to} everywhere within {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let child = node
                .child
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(mut child) = child {
                // A paused node dies of SIGKILL too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
