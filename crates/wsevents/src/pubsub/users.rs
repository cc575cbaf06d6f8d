//! This node's wsevents.v1 connections by user, so that an operator (the HTTP API's
//! `disconnect` and `unsubscribe`) can find a user's connections and close them or
//! take a topic away from them.
//!
//! **Bound:** one entry per open connection whose identity has a user, added when it
//! gets one (a handshake token, `connect`) and removed when it closes (its
//! [`Registration`] is dropped with the connection's handler and task); so at most the
//! server's open connections.
//!
//! **Locks:** the index's map, and each connection's [`Shared`] fields, are each held
//! only to read or change them, never around user code or a send: a caller collects the
//! connections under the map's lock, lets go, then acts on each. One nesting, in this
//! order: a [`Registration`]'s user, then the index's map (a connection changing the
//! user it is filed under).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::auth::{ClientId, Identity};
use crate::api::websocket::WeakWebSocket;

/// What a connection's handler, its task and the index share.
pub(super) struct Shared {
    pub(super) ws: WeakWebSocket,
    pub(super) client: ClientId,
    /// The identity requests are decided under (replaced by `connect` and `refresh`).
    identity: Mutex<Arc<Identity>>,
    /// The topics the connection is in or being subscribed to (what `max_topics`
    /// counts; at most `max_topics`).
    topics: Mutex<HashSet<String>>,
    /// Topics the server takes away ([`super::PubsubServer::unsubscribe_user`]): only
    /// topics in `topics`, so at most `max_topics`; taken by the task, in order with
    /// the subscription requests.
    drops: Mutex<HashSet<String>>,
    /// Wakes the task for `drops`.
    pub(super) wake: Notify,
}

/// A poisoned lock still holds consistent data here (every critical section is a
/// single insert, remove or clone).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new(ws: WeakWebSocket, identity: Identity) -> Shared {
        Shared {
            ws,
            client: identity.client(),
            identity: Mutex::new(Arc::new(identity)),
            topics: Mutex::new(HashSet::new()),
            drops: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        }
    }

    pub(super) fn identity(&self) -> Arc<Identity> {
        lock(&self.identity).clone()
    }

    pub(super) fn set_identity(&self, identity: Identity) {
        *lock(&self.identity) = Arc::new(identity);
    }

    pub(super) fn topic_count(&self) -> usize {
        lock(&self.topics).len()
    }

    pub(super) fn has_topic(&self, topic: &str) -> bool {
        lock(&self.topics).contains(topic)
    }

    pub(super) fn add_topic(&self, topic: &str) {
        lock(&self.topics).insert(topic.to_owned());
    }

    pub(super) fn remove_topic(&self, topic: &str) -> bool {
        lock(&self.topics).remove(topic)
    }

    /// Ask the task to take `topic` away, if the connection is in it.
    fn drop_topic(&self, topic: &str) -> bool {
        if !self.has_topic(topic) {
            return false;
        }
        lock(&self.drops).insert(topic.to_owned());
        self.wake.notify_one();
        true
    }

    /// The topics to take away, now.
    pub(super) fn take_drops(&self) -> Vec<String> {
        lock(&self.drops).drain().collect()
    }
}

/// The index: user → its connections on this node.
#[derive(Default)]
pub(super) struct Users {
    map: Mutex<HashMap<String, HashMap<ClientId, Arc<Shared>>>>,
}

impl Users {
    /// The connections of `user`, collected (the lock is let go before they are
    /// acted on).
    pub(super) fn of(&self, user: &str) -> Vec<Arc<Shared>> {
        lock(&self.map)
            .get(user)
            .map(|connections| connections.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn count(&self, user: &str) -> usize {
        lock(&self.map).get(user).map_or(0, HashMap::len)
    }

    /// Take `topic` away from `user`'s connections: how many were in it.
    pub(super) fn drop_topic(&self, user: &str, topic: &str) -> usize {
        self.of(user)
            .iter()
            .filter(|shared| shared.drop_topic(topic))
            .count()
    }

    /// File `shared` under `user` if the user has fewer than `max` connections here
    /// (checked and filed under one lock, so two at once cannot both pass).
    fn insert_within(&self, user: &str, shared: &Arc<Shared>, max: usize) -> bool {
        let mut map = lock(&self.map);
        let connections = map.entry(user.to_owned()).or_default();
        if connections.len() >= max && !connections.contains_key(&shared.client) {
            if connections.is_empty() {
                map.remove(user);
            }
            return false;
        }
        connections.insert(shared.client, shared.clone());
        true
    }

    fn insert(&self, user: &str, shared: &Arc<Shared>) {
        lock(&self.map)
            .entry(user.to_owned())
            .or_default()
            .insert(shared.client, shared.clone());
    }

    fn remove(&self, user: &str, client: ClientId) {
        let mut map = lock(&self.map);
        if let Some(connections) = map.get_mut(user) {
            connections.remove(&client);
            if connections.is_empty() {
                map.remove(user);
            }
        }
    }
}

/// A connection's place in the index, if its identity has a user; removed when this
/// is dropped (with the connection's handler and task, at its close).
pub(super) struct Registration {
    users: Arc<Users>,
    shared: Arc<Shared>,
    user: Mutex<Option<String>>,
}

impl Registration {
    pub(super) fn new(users: Arc<Users>, shared: Arc<Shared>) -> Registration {
        Registration {
            users,
            shared,
            user: Mutex::new(None),
        }
    }

    /// File the connection under `user` (its identity's), and under no other.
    pub(super) fn set_user(&self, user: Option<&str>) {
        let mut current = lock(&self.user);
        if current.as_deref() == user {
            return;
        }
        if let Some(old) = current.take() {
            self.users.remove(&old, self.shared.client);
        }
        if let Some(user) = user {
            self.users.insert(user, &self.shared);
            *current = Some(user.to_owned());
        }
    }
}

impl Registration {
    /// [`set_user`](Self::set_user), if `user` has fewer than `max` connections on
    /// this node (the cap on connections per user); false, and filed as before, if it
    /// has that many already.
    pub(super) fn claim_user(&self, user: Option<&str>, max: usize) -> bool {
        let mut current = lock(&self.user);
        if current.as_deref() == user {
            return true;
        }
        if let Some(user) = user
            && !self.users.insert_within(user, &self.shared, max)
        {
            return false;
        }
        if let Some(old) = current.take() {
            self.users.remove(&old, self.shared.client);
        }
        *current = user.map(str::to_owned);
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(user) = lock(&self.user).take() {
            self.users.remove(&user, self.shared.client);
        }
    }
}
