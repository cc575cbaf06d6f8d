//! The history read: what a subscriber that last saw a position missed, read from the
//! topic's stream in Redis by one script (`recover.lua`), all of it or none, and the
//! parsing of the script's answer (which comes from Redis: anything malformed is an
//! error, never a panic).

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;

use super::Shared;
use super::envelope::message_of;
use crate::error::{Error, Result};
use crate::hub::history::{META_TTL, Position, Publication, Recovery, new_epoch};

/// The history read ([`recover`]), its hash computed once.
static RECOVER_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("recover.lua")));

/// Read what a subscriber of `topic` that last saw `since` missed, on `conn` (to the
/// Redis that keeps the topic). When this node delivered `since` itself (or a later
/// offset of its epoch), a history whose top is below it lost its tail and starts a
/// new epoch (`recover.lua`); a position a client made up does not. When `since` is
/// the latest this node delivered, its message goes along: a history that holds
/// another one there lost its tail and had it taken by other publications (a new
/// epoch too).
pub(super) async fn recover(
    shared: &Shared,
    mut conn: redis::aio::MultiplexedConnection,
    topic: &str,
    since: Option<&Position>,
) -> Result<Recovery> {
    let history = shared.history.get().copied().unwrap_or_default();
    let (delivered, message) =
        since.map_or((false, None), |since| shared.delivered_at(topic, since));
    let (kind, payload) = message
        .as_ref()
        .map_or(("", &[][..]), super::envelope::kind_and_payload);
    let reply: redis::Value = RECOVER_SCRIPT
        .key(shared.keys.meta(topic))
        .key(shared.keys.stream(topic))
        .arg(new_epoch())
        .arg(since.map_or("", Position::epoch))
        .arg(since.map_or(0, Position::offset))
        .arg(history.size)
        .arg(millis(history.ttl))
        .arg(millis(META_TTL.max(history.ttl)))
        .arg(if delivered { "1" } else { "0" })
        .arg(kind)
        .arg(payload)
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
    // As i64 first: redis-rs would wrap a negative integer into a u64.
    let top: i64 = redis::from_redis_value(items.next()?).ok()?;
    let top = u64::try_from(top).ok()?;
    let complete: i64 = redis::from_redis_value(items.next()?).ok()?;
    let position = Position::new(&epoch, top).ok()?;
    let publications = match (complete, since) {
        (1, Some(since)) => {
            let mut publications = Vec::new();
            let mut offset = since.offset();
            while let Some(kind) = items.next() {
                // The payload as the reply parser made it: owned, not copied again.
                let (redis::Value::BulkString(kind), Some(redis::Value::BulkString(payload))) =
                    (kind, items.next())
                else {
                    return None;
                };
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

#[cfg(test)]
mod tests {
    use redis::Value;
    use wsevents_proto::Message;

    use super::*;

    fn bulk(data: &[u8]) -> Value {
        Value::BulkString(data.to_vec())
    }

    fn since(offset: u64) -> Position {
        Position::new("e", offset).unwrap()
    }

    #[test]
    fn a_complete_answer_is_every_publication_after_since() {
        let reply = Value::Array(vec![
            bulk(b"e"),
            Value::Int(3),
            Value::Int(1),
            bulk(b"t"),
            bulk(b"two"),
            bulk(b"b"),
            bulk(b"\xff"),
        ]);
        let recovery = parse_recovery(reply, Some(&since(1))).unwrap();
        assert_eq!(recovery.position, since(3));
        let publications = recovery.publications.unwrap();
        assert_eq!(
            publications
                .iter()
                .map(|p| (p.position.offset(), p.message.clone()))
                .collect::<Vec<_>>(),
            [
                (2, Message::text("two")),
                (3, Message::binary(vec![0xffu8]))
            ]
        );
    }

    #[test]
    fn an_incomplete_or_unasked_answer_recovers_nothing() {
        let reply = || Value::Array(vec![bulk(b"e"), Value::Int(9), Value::Int(0)]);
        let recovery = parse_recovery(reply(), Some(&since(1))).unwrap();
        assert_eq!((recovery.position, recovery.publications), (since(9), None));
        assert_eq!(parse_recovery(reply(), None).unwrap().publications, None);
    }

    #[test]
    fn a_malformed_answer_is_none() {
        let complete = |tail: Vec<Value>| {
            let mut items = vec![bulk(b"e"), Value::Int(2), Value::Int(1)];
            items.extend(tail);
            Value::Array(items)
        };
        for (reply, why) in [
            (Value::Nil, "not an array"),
            (Value::Array(vec![bulk(b"e"), Value::Int(1)]), "cut short"),
            (
                Value::Array(vec![bulk(b"e!"), Value::Int(1), Value::Int(0)]),
                "a bad epoch",
            ),
            (
                Value::Array(vec![bulk(b"e"), Value::Int(-1), Value::Int(0)]),
                "a negative offset",
            ),
            (complete(vec![bulk(b"t")]), "a kind without payload"),
            (complete(vec![bulk(b"x"), bulk(b"p")]), "no such kind"),
            (complete(vec![bulk(b"t"), bulk(b"\xff")]), "text not UTF-8"),
            (
                complete(vec![bulk(b"t"), Value::Int(1)]),
                "a payload not a string",
            ),
        ] {
            assert_eq!(parse_recovery(reply, Some(&since(1))), None, "{why}");
        }
        // Fewer or more publications than the offsets say: not all of it.
        let short = parse_recovery(complete(vec![]), Some(&since(0))).unwrap();
        assert_eq!(short.publications, None);
        let past_the_end = complete(vec![bulk(b"t"), bulk(b"a"), bulk(b"t"), bulk(b"b")]);
        assert_eq!(
            parse_recovery(past_the_end, Some(&since(u64::MAX))),
            None,
            "offsets past u64::MAX"
        );
    }
}
