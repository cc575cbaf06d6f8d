//! Catching up after the backend's subscription to a topic was lost and came back.
//!
//! What was published meanwhile never reached this node, and if nothing is published
//! after it, no subscriber would ever see the gap. So the hub reads the history from
//! the latest position its subscribers were given and delivers what they missed, in
//! order, on the topic's queue (a delivery from [`Source::Missed`]: skipped when the
//! subscribers were given it or a later one live meanwhile, so never twice).

use super::backend::Inbound;
use super::history::{Position, Recovery};
use super::topics::Source;

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
        let Some(since) = hub
            .topics
            .get(topic)
            .and_then(|cell| cell.lock().latest.clone())
        else {
            return;
        };
        tokio::spawn(catch_up(self.clone(), topic.to_owned(), since));
    }
}

/// How often a catch-up ([`Inbound::resubscribed`]) reads the history before it gives
/// up (the broker failing again brings another catch-up when it is back), and the
/// first wait between tries (doubling).
const CATCH_UP_TRIES: u32 = 8;
const CATCH_UP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Deliver what `topic`'s subscribers missed after `since` (see
/// [`Inbound::resubscribed`]).
async fn catch_up(inbound: Inbound, topic: String, since: Position) {
    let read = |from: Position| {
        let hub = inbound.hub.clone();
        let topic = topic.clone();
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
    let missed = match read(since.clone()).await {
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
                return;
            };
            match read(before).await {
                Some(Recovery {
                    publications: Some(latest),
                    ..
                }) => latest.into_iter().last().into_iter().collect(),
                _ => Vec::new(),
            }
        }
        None => return,
    };
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
}
