//! The ways in for a message: a local publish (with or without a position, stored here
//! or by the backend) and what the backend hands back ([`Inbound`]). Each one becomes a
//! delivery on its topic's queue ([`super::run`]); this module decides which, and
//! stores in-process history on the way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use wsevents_proto::Message;

use super::backend::{Inbound, Pending};
use super::history::{History, MAX_KEY_LEN, Position, Publication, Stored, TopicHistory};
use super::topics::{Delivery, Source, Work};
use super::{Hub, HubInner};
use crate::api::data::IntoMessage;
use crate::error::Error;

impl Hub {
    /// Publish `message` to `topic`: framed once, queued on every local subscriber,
    /// and handed to the backend for the other nodes. Returns how many local
    /// subscribers this call queued it for (slow ones closed instead are not counted;
    /// 0 when another thread was delivering on the topic at that moment: that one
    /// queues it, in order). Never waits.
    ///
    /// On a hub with [history](super::HubBuilder::history) the publication gets a
    /// [`Position`] first; where the backend keeps the history (Redis), the position
    /// comes from it, so local delivery waits for it too and this returns 0 (use
    /// [`publish_confirmed`](Self::publish_confirmed) to learn the position, or that
    /// there is none).
    ///
    /// ```
    /// let hub = wsevents::hub::Hub::new();
    /// assert_eq!(hub.publish("chat", "hello"), 0);
    /// assert_eq!(hub.publish("bin", vec![1u8, 2, 3]), 0);
    /// assert_eq!(hub.stats().published, 2);
    /// ```
    pub fn publish(&self, topic: &str, message: impl IntoMessage) -> usize {
        let message = message.into_message();
        let inner = &self.inner;
        inner.published.fetch_add(1, Ordering::Relaxed);
        match inner.history {
            None => inner.publish_here(topic, message),
            Some(_) if inner.history_in_backend => {
                // Delivered when the backend hands it back with its position.
                drop(inner.backend.store(topic, &message, None));
                0
            }
            Some(config) => inner.store_here(topic, &message, None, &config).1,
        }
    }

    /// Publish `message` to `topic` on a hub with history and learn its position;
    /// with a `key` (at most [`MAX_KEY_LEN`] bytes), a publish whose key the topic has
    /// seen within its history's age is not stored again, and the position is the
    /// first one's. Resolves once the publication is stored (at once in process; on
    /// Redis, after its round trip, when this node's subscribers of the topic get it
    /// too if it is the topic's next one).
    ///
    /// Errors: [`Error::InvalidAccess`] on a hub without history or for a key too
    /// long; the backend's when it could not store it (Redis unreachable: nothing was
    /// delivered anywhere; retry with the same key).
    ///
    /// ```
    /// # async fn demo() -> Result<(), wsevents::Error> {
    /// use wsevents::hub::{History, Hub};
    /// let hub = Hub::builder().history(History::default()).build();
    /// let first = hub.publish_confirmed("news", "hello", Some("k1")).await?;
    /// let again = hub.publish_confirmed("news", "hello", Some("k1")).await?;
    /// assert_eq!((first.offset(), again), (1, first));
    /// # Ok(()) }
    /// ```
    pub fn publish_confirmed(
        &self,
        topic: &str,
        message: impl IntoMessage,
        key: Option<&str>,
    ) -> Pending<Position> {
        let message = message.into_message();
        let inner = &self.inner;
        let Some(config) = inner.history else {
            return Pending::ready(Err(Error::InvalidAccess(
                "this hub keeps no history".into(),
            )));
        };
        if key.is_some_and(|k| k.len() > MAX_KEY_LEN) {
            return Pending::ready(Err(Error::InvalidAccess(format!(
                "an idempotency key is at most {MAX_KEY_LEN} bytes"
            ))));
        }
        inner.published.fetch_add(1, Ordering::Relaxed);
        if inner.history_in_backend {
            let stored = inner.backend.store(topic, &message, key);
            let hub = Arc::downgrade(&self.inner);
            let topic = topic.to_owned();
            return Pending::new(async move {
                let position = stored.await?;
                if let Some(hub) = hub.upgrade() {
                    let publication = Publication {
                        position: position.clone(),
                        message,
                    };
                    hub.deliver_existing(
                        &topic,
                        publication.message.clone(),
                        Some(publication),
                        Source::Own,
                    );
                }
                Ok(position)
            });
        }
        let (position, _) = inner.store_here(topic, &message, key, &config);
        Pending::ready(Ok(position))
    }
}

impl HubInner {
    /// A publish on a hub without history: delivered here, then handed to the backend
    /// (by the topic's runner, so other nodes get this node's order).
    fn publish_here(&self, topic: &str, message: Message) -> usize {
        loop {
            let Some(cell) = self.topics.get(topic) else {
                // No local subscriber: only the other nodes.
                self.backend.publish(topic, &message);
                return 0;
            };
            let state = cell.lock();
            if state.removed {
                continue;
            }
            let delivery = Delivery {
                message,
                publication: None,
                source: Source::Local { forward: true },
            };
            return self.push_work(&cell, state, Work::Deliver(delivery));
        }
    }

    /// Store `message` in this process's history of `topic` and deliver it (positions
    /// are given under the topic's lock, in the order of its queue); its position and
    /// the count this call queued.
    pub(super) fn store_here(
        &self,
        topic: &str,
        message: &Message,
        key: Option<&str>,
        config: &History,
    ) -> (Position, usize) {
        let now = Instant::now();
        self.sweep_some(config, now);
        let (position, queued) = loop {
            let cell = self.topics.entry(topic);
            let mut state = cell.lock();
            if state.removed {
                continue;
            }
            let stored = state
                .history
                .get_or_insert_with(|| TopicHistory::new(now))
                .store(message, key, config, now);
            state.touched = self.budget.tick();
            self.budget.recharge(&mut state);
            match stored {
                Stored::Repeat(position) => break (position, 0),
                Stored::New(position) => {
                    let publication = Publication {
                        position: position.clone(),
                        message: message.clone(),
                    };
                    let delivery = Delivery {
                        message: message.clone(),
                        publication: Some(publication),
                        source: Source::Local { forward: false },
                    };
                    break (
                        position,
                        self.push_work(&cell, state, Work::Deliver(delivery)),
                    );
                }
            }
        };
        if self.budget.is_over() {
            self.evict();
        }
        (position, queued)
    }

    /// Deliver on `topic` if it has a cell here (no cell: no local subscriber); the
    /// count this call queued.
    pub(super) fn deliver_existing(
        &self,
        topic: &str,
        message: Message,
        publication: Option<Publication>,
        source: Source,
    ) -> usize {
        loop {
            let Some(cell) = self.topics.get(topic) else {
                return 0;
            };
            let state = cell.lock();
            if state.removed {
                continue;
            }
            let delivery = Delivery {
                message,
                publication,
                source,
            };
            return self.push_work(&cell, state, Work::Deliver(delivery));
        }
    }
}

impl Inbound {
    /// Queue `message` on the local subscribers of `topic`; how many it was queued
    /// for by this call (0 once the hub is gone).
    pub fn deliver(&self, topic: &str, message: &Message) -> usize {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver_existing(topic, message.clone(), None, Source::Backend),
            None => 0,
        }
    }

    /// Queue `publication` on the local subscribers of `topic` (a backend that keeps
    /// the history hands back every publication so, this node's own included: one
    /// this node delivered already when it was stored is skipped).
    pub fn deliver_at(&self, topic: &str, publication: &Publication) -> usize {
        match self.hub.upgrade() {
            Some(hub) => hub.deliver_existing(
                topic,
                publication.message.clone(),
                Some(publication.clone()),
                Source::Backend,
            ),
            None => 0,
        }
    }

    /// The hub's history settings, when it keeps history.
    pub fn history(&self) -> Option<History> {
        self.hub.upgrade().and_then(|hub| hub.history)
    }

    /// Whether the hub still exists (a backend's tasks end when it is gone).
    pub fn is_alive(&self) -> bool {
        self.hub.strong_count() > 0
    }

    /// The topics with local subscribers now (what a backend resubscribes to after
    /// reconnecting).
    pub fn topics(&self) -> Vec<String> {
        match self.hub.upgrade() {
            Some(hub) => hub
                .topics
                .cells()
                .into_iter()
                .filter(|cell| !cell.lock().subscribers.is_empty())
                .map(|cell| cell.name.to_string())
                .collect(),
            None => Vec::new(),
        }
    }
}
