//! Catching up after the backend's subscription to a topic was lost and came back.
//!
//! What was published meanwhile never reached this node, and if nothing is published
//! after it, no subscriber would ever see the gap. So the hub reads the history from
//! the latest position its subscribers were given and delivers what they missed, in
//! order, on the topic's queue. What the backend delivers live while the history is
//! read waits ([`CatchingUp`], at most 16 MiB per topic; past it live deliveries
//! resume) until the missed publications are delivered, then goes next
//! ([`Work::CaughtUp`]): no hole even for a subscriber without positions, and nothing
//! twice (a missed publication the subscribers were given already is skipped,
//! [`Source::Missed`]). One catch-up per topic at a time; a subscription lost again
//! meanwhile brings another once it is done.

use super::backend::Inbound;
use super::history::{Position, Publication, Recovery};
use super::topics::{CatchingUp, Source, Work};

impl Inbound {
    /// The backend's subscription to `topic` is back after it was lost (its connection
    /// to the broker dropped, or its inbound queue overflowed): what was published
    /// meanwhile did not reach this node, and if nothing is published after it, no
    /// subscriber would ever see the gap. So the hub reads the history from the latest
    /// position its subscribers were given and delivers what they missed, in order.
    /// Past what the history holds, or in a new epoch (the broker lost its data), it
    /// delivers the latest publication only: each subscriber sees the hole or the new
    /// epoch and resubscribes from its own position, and is told whether it recovered.
    /// Nothing happens on a hub without positions, or for a topic whose subscribers
    /// were given nothing yet (their subscription's recovery reads the history itself).
    pub fn resubscribed(&self, topic: &str) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if !hub.history_in_backend {
            return;
        }
        let Some(cell) = hub.topics.get(topic) else {
            return;
        };
        let mut state = cell.lock();
        let Some(since) = state.latest.clone() else {
            return;
        };
        match &mut state.catching_up {
            // One at a time: the one under way catches up again when it is done.
            Some(catching_up) => catching_up.again = true,
            None => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    tracing::error!(
                        topic,
                        "a backend reported a lost subscription outside a tokio runtime: no catch-up"
                    );
                    return;
                };
                state.catching_up = Some(CatchingUp {
                    runtime: Some(runtime.clone()),
                    ..CatchingUp::default()
                });
                runtime.spawn(catch_up(self.clone(), topic.to_owned(), since));
            }
        }
    }
}

/// How often a catch-up ([`Inbound::resubscribed`]) reads the history before it gives
/// up (the broker failing again brings another catch-up when it is back), and the
/// first wait between tries (doubling).
const CATCH_UP_TRIES: u32 = 8;
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Deliver what `topic`'s subscribers missed after `since` (see
/// [`Inbound::resubscribed`]).
pub(super) async fn catch_up(inbound: Inbound, topic: String, since: Position) {
    let missed = read_missed(&inbound, &topic, &since).await;
    if !missed.is_empty() {
        tracing::info!(topic, count = missed.len(), since = %since, "caught up after a lost subscription");
    }
    let Some(hub) = inbound.hub.upgrade() else {
        return;
    };
    for publication in missed {
        hub.deliver_existing(
            &topic,
            publication.message.clone(),
            Some(publication),
            Source::Missed,
        );
    }
    // What the backend delivered meanwhile was held back: it goes next.
    loop {
        let Some(cell) = hub.topics.get(&topic) else {
            return;
        };
        let state = cell.lock();
        if state.removed {
            continue;
        }
        hub.push_work(&cell, state, Work::CaughtUp);
        return;
    }
}

/// What `topic`'s subscribers missed after `since` (nothing when the history cannot be
/// read).
async fn read_missed(inbound: &Inbound, topic: &str, since: &Position) -> Vec<Publication> {
    let read = |from: Position| {
        let hub = inbound.hub.clone();
        let topic = topic.to_owned();
        async move {
            let mut wait = CATCH_UP_RETRY;
            for _ in 0..CATCH_UP_TRIES {
                // Not kept alive by its own catch-up.
                let pending = hub.upgrade()?.backend.recover(&topic, Some(&from));
                match pending.await {
                    Ok(recovery) => return Some(recovery),
                    Err(error) => {
                        tracing::debug!(%error, topic, "catching up: the history read failed; again");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
            tracing::warn!(
                topic,
                "catching up after a lost subscription: the history could not be read"
            );
            None
        }
    };
    match read(since.clone()).await {
        Some(Recovery {
            publications: Some(missed),
            ..
        }) => missed,
        // Not all in the history, or another epoch: the latest publication, so that
        // every subscriber notices.
        Some(Recovery { position, .. }) => {
            let Some(before) = position
                .offset()
                .checked_sub(1)
                .and_then(|offset| Position::new(position.epoch(), offset).ok())
            else {
                return Vec::new();
            };
            match read(before).await {
                Some(Recovery {
                    publications: Some(latest),
                    ..
                }) => latest.into_iter().last().into_iter().collect(),
                _ => Vec::new(),
            }
        }
        None => Vec::new(),
    }
}
