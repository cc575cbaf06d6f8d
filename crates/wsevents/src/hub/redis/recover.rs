//! The history read: what a subscriber that last saw a position missed, read from the
//! topic's stream in Redis by one script (`recover.lua`), all of it or none, and the
//! parsing of the script's answer (which comes from Redis: anything malformed is an
//! error, never a panic).

use std::time::Duration;

use bytes::Bytes;

use super::Shared;
use super::envelope::message_of;
use crate::error::{Error, Result};
use crate::hub::history::{META_TTL, Position, Publication, Recovery, new_epoch};

/// The history read ([`recover`]).
pub(super) const RECOVER_SCRIPT: &str = include_str!("recover.lua");

/// Read what a subscriber of `topic` that last saw `since` missed.
pub(super) async fn recover(
    shared: &Shared,
    topic: &str,
    since: Option<&Position>,
) -> Result<Recovery> {
    let history = shared.history.get().copied().unwrap_or_default();
    let conn = super::lock(&shared.conn).clone();
    let Some(mut conn) = conn else {
        return Err(Error::Unavailable("Redis is not connected".into()));
    };
    let reply: redis::Value = redis::Script::new(RECOVER_SCRIPT)
        .key(shared.keys.meta(topic))
        .key(shared.keys.stream(topic))
        .arg(new_epoch())
        .arg(since.map_or("", Position::epoch))
        .arg(since.map_or(0, Position::offset))
        .arg(history.size)
        .arg(millis(history.ttl))
        .arg(millis(META_TTL.max(history.ttl)))
        .invoke_async(&mut conn)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis: {e}")))?;
    parse_recovery(reply, since).ok_or_else(|| {
        Error::Unavailable("Redis answered the history read with something else".into())
    })
}

/// The recovery in the script's answer: `[epoch, top, complete, (kind, payload)*]`.
pub(super) fn parse_recovery(reply: redis::Value, since: Option<&Position>) -> Option<Recovery> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let epoch: String = redis::from_redis_value(items.next()?).ok()?;
    let top: u64 = redis::from_redis_value(items.next()?).ok()?;
    let complete: i64 = redis::from_redis_value(items.next()?).ok()?;
    let position = Position::new(&epoch, top).ok()?;
    let publications = match (complete, since) {
        (1, Some(since)) => {
            let mut publications = Vec::new();
            let mut offset = since.offset();
            while let Some(kind) = items.next() {
                let kind: Vec<u8> = redis::from_redis_value(kind).ok()?;
                let payload: Vec<u8> = redis::from_redis_value(items.next()?).ok()?;
                offset = offset.checked_add(1)?;
                publications.push(Publication {
                    position: Position::new(&epoch, offset).ok()?,
                    message: message_of(&kind, Bytes::from(payload))?,
                });
            }
            (offset == top).then_some(publications)
        }
        _ => None,
    };
    Some(Recovery {
        position,
        publications,
    })
}

/// A duration in milliseconds for Redis: at least 1 (0 means something else there).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
