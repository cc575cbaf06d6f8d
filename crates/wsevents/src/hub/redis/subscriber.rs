//! The subscriber: one connection that holds a `SUBSCRIBE` for exactly the topics with
//! local subscribers, and hands what arrives on them to the hub.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;

use super::backoff::backoff;
use super::envelope::{open, open_stored};
use super::publisher::BATCH;
use super::{Link, RedisConfig, Shared, lock};
use crate::hub::backend::Inbound;

/// The subscriber task: `SUBSCRIBE`s that follow the hub's topics, and delivery of
/// other nodes' messages.
pub(super) async fn subscriber(
    client: redis::Client,
    config: RedisConfig,
    shared: Arc<Shared>,
    inbound: Inbound,
) {
    let mut attempts = 0u32;
    loop {
        let connected = tokio::select! {
            connected = tokio::time::timeout(config.timeout, client.get_async_pubsub()) => connected,
            () = shared.stop.cancelled() => return,
        };
        let error = match connected {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let mut subscribed = HashSet::new();
                loop {
                    if let Err(error) = sync(&mut sink, &shared, &mut subscribed).await {
                        break error;
                    }
                    if *lock(&shared.subscribed) != subscribed {
                        shared.set_subscribed(&subscribed);
                    }
                    if !matches!(lock(&shared.links).subscriber, Link::Up) {
                        shared.set_subscriber(Link::Up);
                        if attempts > 0 {
                            tracing::info!(
                                attempts,
                                topics = subscribed.len(),
                                "Redis subscriber reconnected and resubscribed"
                            );
                            // What was published while the subscription was down
                            // never came on the channel: the hub catches up from
                            // the history.
                            for channel in &subscribed {
                                if let Some(topic) = shared.keys.topic(channel) {
                                    inbound.resubscribed(topic);
                                }
                            }
                        }
                        attempts = 0;
                    }
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => deliver(&shared, &inbound, &message),
                            None => break "the connection closed".to_owned(),
                        },
                        () = shared.changed.notified() => {}
                        () = shared.stop.cancelled() => return,
                    }
                }
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("connecting took over {:?}", config.timeout),
        };
        shared.set_subscribed(&HashSet::new());
        if !inbound.is_alive() {
            return;
        }
        attempts += 1;
        shared.set_subscriber(Link::Down {
            attempts,
            error: error.clone(),
        });
        tracing::warn!(%error, attempts, "Redis subscriber: connection lost or refused; messages from other nodes stop until it is back");
        if !backoff(&config, &shared, attempts, None).await {
            return;
        }
    }
}

/// Bring the connection's subscriptions to what the hub wants.
async fn sync(
    sink: &mut redis::aio::PubSubSink,
    shared: &Shared,
    subscribed: &mut HashSet<String>,
) -> std::result::Result<(), String> {
    loop {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let wanted = lock(&shared.wanted);
            (
                wanted.difference(subscribed).take(BATCH).cloned().collect(),
                subscribed
                    .difference(&wanted)
                    .take(BATCH)
                    .cloned()
                    .collect(),
            )
        };
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        if !add.is_empty() {
            sink.subscribe(&add).await.map_err(|e| e.to_string())?;
            subscribed.extend(add);
        }
        if !remove.is_empty() {
            sink.unsubscribe(&remove).await.map_err(|e| e.to_string())?;
            for channel in &remove {
                subscribed.remove(channel);
            }
        }
    }
}

/// Until the subscriber connection is subscribed to `channel` (so that every
/// publication after a history read arrives live).
pub(super) async fn wait_subscribed(shared: &Shared, channel: &str) {
    let mut changed = shared.subscribed_changed.subscribe();
    while !lock(&shared.subscribed).contains(channel) {
        if changed.changed().await.is_err() {
            return;
        }
    }
}

/// Hand a message from Redis to the hub, unless it is this node's own or malformed.
fn deliver(shared: &Shared, inbound: &Inbound, message: &redis::Msg) {
    let Some(topic) = shared.keys.topic(message.get_channel_name()) else {
        return;
    };
    if shared.history.get().is_some() {
        match open_stored(message.get_payload_bytes()) {
            Some(publication) => {
                inbound.deliver_at(topic, &publication);
            }
            None => tracing::warn!(
                topic,
                "a Redis message that is not a stored wsevents publication: dropped"
            ),
        }
        return;
    }
    match open(message.get_payload_bytes()) {
        Some((node, _)) if node == shared.node => {}
        Some((_, message)) => {
            inbound.deliver(topic, &message);
        }
        None => tracing::warn!(
            topic,
            "a Redis message that is not a wsevents envelope: dropped"
        ),
    }
}
