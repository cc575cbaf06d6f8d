//! Which topics each socket is in, and the close listener that takes it out of them.
//!
//! The topics hold subscribers by socket; this is the other direction, so that a
//! closing socket leaves every topic it is in without a scan. Sharded by socket id,
//! each shard's lock taken alone (never with a topic's).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::topics::{Topic, lock};
use crate::api::events::ListenerId;

const SHARDS: usize = 16;

/// Socket id → its topics.
pub(super) struct Members {
    shards: Box<[Mutex<HashMap<u64, Member>>]>,
    /// Sockets in at least one topic.
    count: AtomicUsize,
}

/// One socket's topics, and its close listener.
pub(super) struct Member {
    pub(super) topics: HashSet<Topic>,
    pub(super) listener: ListenerId,
}

impl Members {
    pub(super) fn new() -> Members {
        Members {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            count: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Member>> {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// Put `topic` in socket `id`'s set. A socket without an entry gets one with
    /// `listener` (registered by the caller with no lock held); the listener is handed
    /// back when the socket had an entry already, for the caller to remove.
    pub(super) fn add(
        &self,
        id: u64,
        topic: &Topic,
        listener: impl FnOnce() -> ListenerId,
    ) -> Option<ListenerId> {
        {
            let mut shard = lock(self.shard(id));
            if let Some(member) = shard.get_mut(&id) {
                member.topics.insert(topic.clone());
                return None;
            }
        }
        let listener = listener();
        let mut shard = lock(self.shard(id));
        match shard.get_mut(&id) {
            // Another subscription of the same socket got there first.
            Some(member) => {
                member.topics.insert(topic.clone());
                Some(listener)
            }
            None => {
                shard.insert(
                    id,
                    Member {
                        topics: HashSet::from([topic.clone()]),
                        listener,
                    },
                );
                self.count.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Take `topic` out of socket `id`'s set; its listener when the set is then empty
    /// (the entry is gone: remove the listener).
    pub(super) fn remove(&self, id: u64, topic: &str) -> Option<ListenerId> {
        let mut shard = lock(self.shard(id));
        let member = shard.get_mut(&id)?;
        member.topics.remove(topic);
        if !member.topics.is_empty() {
            return None;
        }
        let member = shard.remove(&id)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(member.listener)
    }

    /// Take socket `id`'s whole entry.
    pub(super) fn take(&self, id: u64) -> Option<Member> {
        let member = lock(self.shard(id)).remove(&id)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        Some(member)
    }

    /// Socket `id`'s topics, sorted.
    pub(super) fn topics(&self, id: u64) -> Vec<String> {
        let mut topics: Vec<String> = lock(self.shard(id))
            .get(&id)
            .map(|m| m.topics.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        topics.sort();
        topics
    }

    /// How many sockets are in at least one topic.
    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}
