//! The subscriber's inbound queue: what arrives from Redis, between the connection's
//! reader and the delivery task, bounded in bytes.
//!
//! The reader (a callback in redis-rs's connection driver, `subscriber.rs`) never waits:
//! it queues each message as it is parsed, so Redis is read at once however slow the
//! hub is, and what waits for the hub is held here, where it is counted. The delivery
//! task takes the messages in order and hands them to the hub.
//!
//! The rule at the bound ([`RedisConfig::max_inbound_bytes`](super::RedisConfig)): a
//! message (payload and topic) that would take the queue past it is not queued, unless
//! the queue holds nothing (so one larger than the bound still goes through alone).
//! Every such message is counted ([`InboundQueue::dropped`]). Then:
//!
//! - **on a hub with history** its topic is *lost*: the topic's later messages are not
//!   queued either (a subscriber must not get them before the ones that were dropped),
//!   and once the queue has room again (half the bound, or less) a catch-up for the
//!   topic is queued behind whatever was queued before: the hub reads the history from
//!   the latest position its subscribers were given and delivers what they missed, in
//!   order ([`Inbound::resubscribed`](crate::hub::Inbound::resubscribed)), as after a
//!   lost subscription; the topic's messages are queued again from then on;
//! - **on a hub without history** the message is lost for this node's subscribers
//!   (there is nothing to catch up from): counted with the publishes the backend
//!   could not carry.
//!
//! A warning is logged once per overflow (until a message is queued again).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

use super::lock;

/// What the delivery task does next, in queue order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// A message on a topic's channel (its envelope unopened).
    Message { topic: String, payload: Bytes },
    /// Catch up on the topic from the history: messages of it were dropped, or the
    /// subscription to it was lost.
    CatchUp(String),
}

/// What the delivery task does with what arrives.
#[derive(Debug)]
pub(super) struct InboundQueue {
    state: Mutex<State>,
    ready: Notify,
    max: usize,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    arrivals: VecDeque<Arrival>,
    /// The bytes of the queued messages (catch-ups count none: there is at most one
    /// per topic the node subscribes to).
    bytes: usize,
    /// Topics with messages dropped, to catch up once there is room (a hub with
    /// history).
    lost: HashSet<String>,
    /// Dropping since the last message queued: warned once.
    overflowing: bool,
}

/// What [`InboundQueue::arrive`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Queued {
    /// Queued for delivery.
    Yes,
    /// Not queued: its topic will be caught up from the history.
    Lost,
    /// Not queued, and nothing will bring it back (a hub without history).
    Dropped,
}

impl InboundQueue {
    pub(super) fn new(max: usize) -> InboundQueue {
        InboundQueue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queue `payload`, which arrived on `topic`'s channel, unless the bound says no
    /// (see the module doc). `catch_up`: the hub keeps history, so a topic whose
    /// messages were dropped can be caught up.
    pub(super) fn arrive(&self, topic: String, payload: Bytes, catch_up: bool) -> Queued {
        let size = payload.len() + topic.len();
        let mut state = lock(&self.state);
        let lost = catch_up && state.lost.contains(&topic);
        if lost || (state.bytes != 0 && state.bytes.saturating_add(size) > self.max) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !state.overflowing {
                state.overflowing = true;
                if catch_up {
                    tracing::warn!(
                        topic,
                        bytes = state.bytes,
                        limit = self.max,
                        "Redis inbound queue full: topics are caught up from the history once there is room"
                    );
                } else {
                    tracing::warn!(
                        topic,
                        bytes = state.bytes,
                        limit = self.max,
                        "Redis inbound queue full: messages from other nodes dropped"
                    );
                }
            }
            if !catch_up {
                return Queued::Dropped;
            }
            if !lost {
                state.lost.insert(topic);
            }
            return Queued::Lost;
        }
        state.overflowing = false;
        state.bytes += size;
        state
            .arrivals
            .push_back(Arrival::Message { topic, payload });
        drop(state);
        self.ready.notify_one();
        Queued::Yes
    }

    /// Queue a catch-up of each of `topics`, behind what is queued (the subscription
    /// to them was lost and is back).
    pub(super) fn catch_up<'a>(&self, topics: impl IntoIterator<Item = &'a str>) {
        let mut state = lock(&self.state);
        for topic in topics {
            state.lost.remove(topic);
            state.arrivals.push_back(Arrival::CatchUp(topic.to_owned()));
        }
        drop(state);
        self.ready.notify_one();
    }

    /// The next arrival, once there is one. Cancel-safe: nothing is taken until it
    /// returns.
    pub(super) async fn next(&self) -> Arrival {
        loop {
            if let Some(arrival) = self.pop() {
                return arrival;
            }
            // `notify_one` leaves a permit when nobody waits: an arrival between the
            // pop and this wait is not missed.
            self.ready.notified().await;
        }
    }

    fn pop(&self) -> Option<Arrival> {
        let mut state = lock(&self.state);
        let arrival = state.arrivals.pop_front()?;
        if let Arrival::Message { topic, payload } = &arrival {
            state.bytes -= payload.len() + topic.len();
        }
        if !state.lost.is_empty() && state.bytes <= self.max / 2 {
            let state = &mut *state;
            for topic in state.lost.drain() {
                state.arrivals.push_back(Arrival::CatchUp(topic));
            }
        }
        Some(arrival)
    }

    /// The bytes queued now.
    pub(super) fn bytes(&self) -> usize {
        lock(&self.state).bytes
    }

    /// Messages not queued for being past the bound, since the queue was made.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str) -> Arrival {
        Arrival::Message {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    fn arrive(queue: &InboundQueue, topic: &str, payload: &str, catch_up: bool) -> Queued {
        queue.arrive(
            topic.into(),
            Bytes::copy_from_slice(payload.as_bytes()),
            catch_up,
        )
    }

    #[test]
    fn a_lost_topic_is_caught_up_behind_what_was_queued_before() {
        // 20 bytes: four messages of "t" + 4.
        let queue = InboundQueue::new(20);
        for payload in ["1111", "2222", "3333"] {
            assert_eq!(arrive(&queue, "t", payload, true), Queued::Yes);
        }
        assert_eq!(arrive(&queue, "u", "4444", true), Queued::Yes);
        assert_eq!(arrive(&queue, "t", "5555", true), Queued::Lost);
        assert_eq!(queue.bytes(), 20);
        assert_eq!(queue.pop(), Some(message("t", "1111")));
        // It would fit, but "t" is lost until its catch-up is queued: never a later
        // message before the dropped one.
        assert_eq!(arrive(&queue, "t", "6666", true), Queued::Lost);
        assert_eq!(arrive(&queue, "v", "7777", true), Queued::Yes);
        assert_eq!(queue.dropped(), 2);
        assert_eq!(queue.pop(), Some(message("t", "2222")));
        // Down to 10 of 20 bytes: room; the catch-up goes behind what is queued.
        assert_eq!(queue.pop(), Some(message("t", "3333")));
        assert_eq!(arrive(&queue, "t", "8888", true), Queued::Yes);
        assert_eq!(queue.pop(), Some(message("u", "4444")));
        assert_eq!(queue.pop(), Some(message("v", "7777")));
        assert_eq!(queue.pop(), Some(Arrival::CatchUp("t".into())));
        assert_eq!(queue.pop(), Some(message("t", "8888")));
        assert_eq!(queue.pop(), None);
        assert_eq!(queue.bytes(), 0);
    }

    #[test]
    fn without_history_a_message_past_the_bound_is_dropped_alone() {
        let queue = InboundQueue::new(10);
        assert_eq!(arrive(&queue, "t", "1111", false), Queued::Yes);
        assert_eq!(arrive(&queue, "t", "too large", false), Queued::Dropped);
        assert_eq!(arrive(&queue, "t", "2222", false), Queued::Yes);
        assert_eq!(queue.pop(), Some(message("t", "1111")));
        assert_eq!(queue.pop(), Some(message("t", "2222")));
        assert_eq!(queue.pop(), None);
        assert_eq!(queue.dropped(), 1);
    }

    #[test]
    fn a_message_larger_than_the_bound_goes_through_alone() {
        let queue = InboundQueue::new(4);
        assert_eq!(arrive(&queue, "t", "larger", true), Queued::Yes);
        assert_eq!(arrive(&queue, "u", "x", true), Queued::Lost);
        assert_eq!(queue.pop(), Some(message("t", "larger")));
        assert_eq!(queue.pop(), Some(Arrival::CatchUp("u".into())));
    }

    #[test]
    fn a_lost_subscription_queues_catch_ups_and_ends_the_loss() {
        let queue = InboundQueue::new(5);
        assert_eq!(arrive(&queue, "t", "1111", true), Queued::Yes);
        assert_eq!(arrive(&queue, "t", "2222", true), Queued::Lost);
        queue.catch_up(["t", "u"]);
        assert_eq!(arrive(&queue, "t", "3", true), Queued::Lost, "still full");
        assert_eq!(queue.pop(), Some(message("t", "1111")));
        assert_eq!(queue.pop(), Some(Arrival::CatchUp("t".into())));
        assert_eq!(queue.pop(), Some(Arrival::CatchUp("u".into())));
        assert_eq!(queue.pop(), Some(Arrival::CatchUp("t".into())));
        assert_eq!(queue.pop(), None);
    }
}
