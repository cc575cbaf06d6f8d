//! Subscriptions: a socket joins and leaves topics, the backend follows which topics
//! have local subscribers, and a subscription from a position gets what it missed.
//!
//! A subscription from a position ([`Hub::subscribe_from`]) joins its topic *held*:
//! publications delivered meanwhile are kept for it ([`Mode::Held`]) while its recovery
//! is read (under the topic's lock in process; from the backend, awaited, on Redis),
//! its answer and recovery are framed and queued with no lock held, and then its
//! topic's runner queues what was held past the recovery and makes it live
//! ([`Work::GoLive`]), so that nothing comes between and nothing is repeated.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use wsevents_proto::{Message, PreparedMessage};

use super::history::{Position, Recovery, TopicHistory};
use super::topics::{Mode, Subscriber, TopicCell, TopicState, Work};
use super::{Framing, Hub, HubInner, SLOW_CLOSE_REASON, Subscribed, check_subscriber};
use crate::api::events::EventType;
use crate::api::websocket::WebSocket;
use crate::error::{Error, Result};

/// What [`HubInner::join`] did.
pub(super) struct Joined<R> {
    pub(super) cell: Arc<TopicCell>,
    /// Which subscription of this socket to this topic it is.
    pub(super) generation: u64,
    /// The socket was not in the topic before.
    pub(super) added: bool,
    /// What the caller read under the topic's lock, right after joining.
    pub(super) read: R,
}

impl Hub {
    /// Subscribe `ws` to `topic` with positions, from `since` if given: the
    /// subscription of a protocol such as wsevents.v1 (docs/protocol.md;
    /// [`crate::pubsub`] serves it). The hub queues on `ws`, in this order and with
    /// nothing of the topic between them: the frame `answer` makes of the
    /// [`Subscribed`]; if it says `recovered`, every publication after `since` up to
    /// its position, framed by `framing`; then every later one, live. Subscribing again
    /// replaces the subscription (from a new `since`).
    ///
    /// The answer and the recovery are queued only if the socket's unsent bytes are
    /// within the hub's backlog bound at that moment (the recovery may then pass it:
    /// its size is bounded by the topic's history); otherwise the socket is closed as
    /// slow (it reconnects and recovers) and this returns [`Error::InvalidState`]. So a
    /// server that subscribes one socket to many topics waits for the socket to drain
    /// between them. Live publications that arrive while the recovery is read are held
    /// back for it, at most the backlog bound in bytes (past it the subscriber is
    /// closed as slow), and queued after it, without the ones it already holds.
    /// `answer` and `framing` run with no hub lock held.
    ///
    /// Errors: those of [`subscribe`](Self::subscribe); [`Error::InvalidAccess`] on a
    /// hub without history; the backend's error when it cannot read the history
    /// (nothing is subscribed then); [`Error::InvalidState`] when the socket closed
    /// meanwhile or was closed as slow.
    pub async fn subscribe_from(
        &self,
        ws: &WebSocket,
        topic: &str,
        since: Option<&Position>,
        framing: Arc<dyn Framing>,
        answer: impl FnOnce(&Subscribed) -> Message,
    ) -> Result<Subscribed> {
        check_subscriber(ws)?;
        let inner = &self.inner;
        let Some(config) = inner.history else {
            return Err(Error::InvalidAccess("this hub keeps no history".into()));
        };
        let in_process = !inner.history_in_backend;
        let mut joined = inner.join(ws, topic, Some(framing.clone()), true, |state| {
            in_process.then(|| {
                let now = Instant::now();
                let recovery = state
                    .history
                    .get_or_insert_with(|| TopicHistory::new(now))
                    .recover(since, &config, now);
                inner.budget.recharge(state);
                recovery
            })
        });
        inner.check_still_open(ws)?;
        let recovery = match joined.read.take() {
            Some(recovery) => recovery,
            None => match inner.backend.recover(topic, since).await {
                Ok(recovery) => recovery,
                Err(error) => {
                    inner.leave(ws, topic, Some(joined.generation));
                    return Err(error);
                }
            },
        };
        inner.answer(ws, &joined, recovery, &*framing, answer)
    }
}

impl HubInner {
    /// Add `ws` to `topic` (replacing its subscription there), held or live, and run
    /// `read` on the topic's state under the same lock.
    pub(super) fn join<R>(
        self: &Arc<Self>,
        ws: &WebSocket,
        topic: &str,
        framing: Option<Arc<dyn Framing>>,
        held: bool,
        read: impl FnOnce(&mut TopicState) -> R,
    ) -> Joined<R> {
        let id = ws.id();
        let (cell, generation, added, first, read) = loop {
            let cell = self.topics.entry(topic);
            let mut state = cell.lock();
            if state.removed {
                continue;
            }
            state.generation += 1;
            let generation = state.generation;
            let first = state.subscribers.is_empty();
            let mode = if held {
                Mode::Held {
                    publications: Vec::new(),
                    bytes: 0,
                }
            } else {
                Mode::Live
            };
            let subscriber = Subscriber {
                socket: ws.downgrade(),
                framing,
                mode,
                through: None,
                generation,
            };
            let added = state.subscribers.insert(id, subscriber).is_none();
            let read = read(&mut state);
            drop(state);
            break (cell, generation, added, first, read);
        };
        if first {
            self.live_topics.fetch_add(1, Ordering::Relaxed);
            self.sync_backend(&cell);
        }
        if added {
            let hub = Arc::downgrade(self);
            let extra = self.members.add(id, &cell.name, || {
                ws.add_event_listener(EventType::Close, move |_| {
                    if let Some(hub) = hub.upgrade() {
                        hub.leave_all(id);
                    }
                })
            });
            if let Some(extra) = extra {
                ws.remove_event_listener(extra);
            }
        }
        Joined {
            cell,
            generation,
            added,
            read,
        }
    }

    /// The close event may have been dispatched after the socket was checked and
    /// before its listener was registered: then nobody else will take it out.
    pub(super) fn check_still_open(&self, ws: &WebSocket) -> Result<()> {
        if ws.is_closed() {
            self.leave_all(ws.id());
            return Err(Error::InvalidState);
        }
        Ok(())
    }

    /// Take `ws` out of `topic` (only subscription `generation` if given): true if it
    /// was there.
    pub(super) fn leave(&self, ws: &WebSocket, topic: &str, generation: Option<u64>) -> bool {
        let removed = self.remove_subscriber(topic, ws.id(), generation);
        if removed && let Some(listener) = self.members.remove(ws.id(), topic) {
            ws.remove_event_listener(listener);
        }
        removed
    }

    /// Take socket `id` out of every topic (its close listener, or a socket gone).
    pub(super) fn leave_all(&self, id: u64) {
        let Some(member) = self.members.take(id) else {
            return;
        };
        for topic in &member.topics {
            self.remove_subscriber(topic, id, None);
        }
    }

    /// Take socket `id` out of `topic`'s subscribers: true if it was there.
    fn remove_subscriber(&self, topic: &str, id: u64, generation: Option<u64>) -> bool {
        let Some(cell) = self.topics.get(topic) else {
            return false;
        };
        let mut state = cell.lock();
        let ours = state
            .subscribers
            .get(&id)
            .is_some_and(|s| generation.is_none_or(|g| s.generation == g));
        if !ours {
            return false;
        }
        state.subscribers.remove(&id);
        let emptied = state.subscribers.is_empty();
        drop(state);
        if emptied {
            self.live_topics.fetch_sub(1, Ordering::Relaxed);
            self.sync_backend(&cell);
        }
        true
    }

    /// Bring the backend to whether the topic has local subscribers. One thread at a
    /// time tells the backend about a topic, with no lock held, until what it last
    /// told matches the topic (others that change it meanwhile leave it to that one),
    /// so its calls for a topic come in order and the last one is right.
    pub(super) fn sync_backend(&self, cell: &Arc<TopicCell>) {
        let mut state = cell.lock();
        if state.syncing || state.removed {
            return;
        }
        state.syncing = true;
        loop {
            let wanted = !state.subscribers.is_empty();
            if wanted == state.backend_subscribed {
                break;
            }
            state.backend_subscribed = wanted;
            drop(state);
            if wanted {
                self.backend.subscribe(&cell.name);
            } else {
                self.backend.unsubscribe(&cell.name);
            }
            state = cell.lock();
        }
        state.syncing = false;
        drop(state);
        self.topics.remove_if_idle(cell);
    }

    /// Queue on `ws` the answer to its subscription and what it recovered, then have
    /// the topic's runner queue what was held back and make it live.
    fn answer(
        &self,
        ws: &WebSocket,
        joined: &Joined<Option<Recovery>>,
        recovery: Recovery,
        framing: &dyn Framing,
        answer: impl FnOnce(&Subscribed) -> Message,
    ) -> Result<Subscribed> {
        let topic = &joined.cell.name;
        let subscribed = Subscribed {
            topic: topic.to_string(),
            recovered: recovery.publications.is_some(),
            position: recovery.position.clone(),
            count: recovery.publications.as_ref().map_or(0, Vec::len),
        };
        let answer = PreparedMessage::new(&answer(&subscribed));
        let frames: Vec<PreparedMessage> = recovery
            .publications
            .iter()
            .flatten()
            .map(|publication| framing.prepare(topic, publication))
            .collect();
        if ws.buffered_amount() > self.max_backlog as u64 {
            tracing::info!(
                topic = &**topic,
                backlog = ws.buffered_amount(),
                limit = self.max_backlog,
                "closing a subscriber with no room for its recovery"
            );
            self.dropped_slow.fetch_add(1, Ordering::Relaxed);
            self.leave(ws, topic, Some(joined.generation));
            let _ = ws.close_with_code(self.slow_code, SLOW_CLOSE_REASON);
            return Err(Error::InvalidState);
        }
        // Held: nothing of the topic is queued on it until it goes live.
        for frame in std::iter::once(&answer).chain(&frames) {
            self.offer(ws, frame, usize::MAX);
        }
        let cell = &joined.cell;
        let state = cell.lock();
        let ours = state
            .subscribers
            .get(&ws.id())
            .is_some_and(|s| s.generation == joined.generation);
        if !ours {
            // Closed (or unsubscribed, or subscribed again) meanwhile.
            return Err(Error::InvalidState);
        }
        let go_live = Work::GoLive {
            id: ws.id(),
            generation: joined.generation,
            through: recovery.position,
        };
        self.push_work(cell, state, go_live);
        Ok(subscribed)
    }
}
