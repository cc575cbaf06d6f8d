//! Which master serves which slot of a Redis Cluster, as `CLUSTER SLOTS` says, and the
//! connections the publisher holds to the masters.
//!
//! The map is read from any node that answers (the masters known, then the seeds the
//! backend was given) when the backend starts, and again whenever someone finds it
//! stale: a `MOVED` or `ASK` answer, a `sunsubscribe` Redis pushed for a slot that
//! moved, a master that cannot be reached; and every
//! [`RedisConfig::topology_refresh`](super::RedisConfig::topology_refresh) otherwise.
//! One read at a time: a caller that finds a read under way waits for its map.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionAddr, Value};
use tokio::sync::watch;

use super::lock;
use super::slots::SLOTS;

/// Who serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotMap {
    /// The masters' addresses (`host:port`).
    masters: Vec<String>,
    /// Per slot, an index in `masters`, or `u16::MAX` for a slot nobody serves.
    owners: Vec<u16>,
}

impl SlotMap {
    /// The master that serves `slot`.
    pub(super) fn owner(&self, slot: u16) -> Option<&str> {
        let index = *self.owners.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).map(String::as_str)
    }

    /// Every master.
    pub(super) fn masters(&self) -> &[String] {
        &self.masters
    }

    /// The map in a `CLUSTER SLOTS` answer; `None` for anything else.
    pub(super) fn parse(reply: Value) -> Option<SlotMap> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = SlotMap {
            masters: Vec::new(),
            owners: vec![u16::MAX; usize::from(SLOTS)],
        };
        for range in ranges {
            let Value::Array(items) = range else {
                return None;
            };
            let mut items = items.into_iter();
            let start: i64 = redis::from_redis_value(items.next()?).ok()?;
            let end: i64 = redis::from_redis_value(items.next()?).ok()?;
            let Some(Value::Array(master)) = items.next() else {
                return None;
            };
            let mut master = master.into_iter();
            let host: String = redis::from_redis_value(master.next()?).ok()?;
            let port: u16 = redis::from_redis_value(master.next()?).ok()?;
            if host.is_empty() || !(0..=end).contains(&start) || end >= i64::from(SLOTS) {
                return None;
            }
            let addr = format!("{host}:{port}");
            let index = match map.masters.iter().position(|m| *m == addr) {
                Some(index) => index,
                None => {
                    map.masters.push(addr);
                    map.masters.len() - 1
                }
            };
            let index = u16::try_from(index).ok()?;
            // Checked above: 0 <= start <= end < SLOTS.
            let (start, end) = (start as usize, end as usize);
            map.owners[start..=end].fill(index);
        }
        Some(map)
    }
}

/// The cluster as the backend knows it: how to reach a node, the slot map, the
/// publisher's connections.
pub(super) struct Cluster {
    /// The first seed's connection settings (password, database, ...): a node's are
    /// these with its address.
    base: redis::ConnectionInfo,
    /// The addresses the backend was given.
    seeds: Vec<String>,
    /// The latest map, and a counter bumped when it changes.
    map: watch::Sender<Option<Arc<SlotMap>>>,
    /// One read of the map at a time.
    reading: tokio::sync::Mutex<()>,
    /// The publisher's connection to each master it sent to (the history reads go
    /// through them too).
    conns: Mutex<HashMap<String, redis::aio::MultiplexedConnection>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster reached through `urls` (at least one).
    pub(super) fn new(urls: &[&str]) -> Result<Cluster, String> {
        let mut seeds = Vec::new();
        let mut base = None;
        for url in urls {
            let client =
                redis::Client::open(*url).map_err(|e| format!("Redis URL {url:?}: {e}"))?;
            let info = client.get_connection_info().clone();
            let ConnectionAddr::Tcp(host, port) = info.addr() else {
                return Err(format!("Redis URL {url:?}: a cluster is reached over TCP"));
            };
            seeds.push(format!("{host}:{port}"));
            base.get_or_insert(info);
        }
        let base = base.ok_or("a Redis Cluster needs at least one URL")?;
        Ok(Cluster {
            base,
            seeds,
            map: watch::channel(None).0,
            reading: tokio::sync::Mutex::new(()),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// A client for the node at `addr` (`host:port`), speaking RESP3 if `resp3`.
    pub(super) fn client(&self, addr: &str, resp3: bool) -> redis::RedisResult<redis::Client> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "a bad address"))
            })?;
        let mut info = self
            .base
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.to_owned(), port));
        if resp3 {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        redis::Client::open(info)
    }

    /// The map now, if one was read.
    pub(super) fn map(&self) -> Option<Arc<SlotMap>> {
        self.map.borrow().clone()
    }

    /// A receiver that sees each new map.
    pub(super) fn watch(&self) -> watch::Receiver<Option<Arc<SlotMap>>> {
        self.map.subscribe()
    }

    /// Read the map again (or wait for a read under way and take its map).
    pub(super) async fn refresh(&self, timeout: Duration) -> Result<Arc<SlotMap>, String> {
        let before = self.map.borrow().clone();
        let _reading = self.reading.lock().await;
        let now = self.map.borrow().clone();
        if let Some(now) = now
            && before.as_ref().is_none_or(|b| !Arc::ptr_eq(b, &now))
        {
            return Ok(now);
        }
        let mut candidates: Vec<String> =
            self.map().map(|m| m.masters().to_vec()).unwrap_or_default();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut last = "no node to ask".to_owned();
        for addr in candidates {
            match self.read_map(&addr, timeout).await {
                Ok(map) => {
                    self.retain_conns(&map);
                    let map = Arc::new(map);
                    self.map.send_if_modified(|old| {
                        if old.as_deref() == Some(&*map) {
                            return false;
                        }
                        *old = Some(map.clone());
                        true
                    });
                    return Ok(self.map().unwrap_or(map));
                }
                Err(error) => last = format!("{addr}: {error}"),
            }
        }
        Err(last)
    }

    async fn read_map(&self, addr: &str, timeout: Duration) -> Result<SlotMap, String> {
        let client = self.client(addr, false).map_err(|e| e.to_string())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let read = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut conn)
                .await
        };
        let reply = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        let map = SlotMap::parse(reply).ok_or("a CLUSTER SLOTS answer that makes no sense")?;
        if map.masters.is_empty() {
            return Err("a node that serves no slot knows no master yet".into());
        }
        Ok(map)
    }

    /// The publisher's connection to `addr`, if it has one.
    pub(super) fn conn(&self, addr: &str) -> Option<redis::aio::MultiplexedConnection> {
        lock(&self.conns).get(addr).cloned()
    }

    pub(super) fn set_conn(&self, addr: &str, conn: Option<redis::aio::MultiplexedConnection>) {
        let mut conns = lock(&self.conns);
        match conn {
            Some(conn) => conns.insert(addr.to_owned(), conn),
            None => conns.remove(addr),
        };
    }

    /// Forget connections to nodes that are no longer masters.
    fn retain_conns(&self, map: &SlotMap) {
        lock(&self.conns).retain(|addr, _| map.masters.contains(addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn a_cluster_slots_answer_is_a_map_of_owners() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7001),
            ]),
            Value::Array(vec![
                Value::Int(100),
                Value::Int(100),
                node("127.0.0.1", 7001),
            ]),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.owner(0), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(100), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(5460), Some("127.0.0.1:7000"));
        assert_eq!(map.owner(16383), Some("127.0.0.1:7001"));
        assert_eq!(map.masters().len(), 2);
        let empty = SlotMap::parse(Value::Array(vec![])).unwrap();
        assert_eq!(empty.owner(0), None);
        for broken in [
            Value::Nil,
            Value::Array(vec![Value::Array(vec![
                Value::Int(5),
                Value::Int(1),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(16384),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(-1),
                Value::Int(1),
                node("h", 1),
            ])]),
        ] {
            assert_eq!(SlotMap::parse(broken.clone()), None, "{broken:?}");
        }
    }
}
