//! The history read of a server API ([`Hub::read_history`](crate::hub::Hub::read_history)):
//! a page of a topic's stream, read without subscribing. One atomic pipeline (the
//! topic's meta hash, a range of its stream, Redis's clock), and a second one from the
//! oldest entry when `since` is no longer followed by all it missed. Unlike the
//! recovery (`recover.lua`) it changes nothing in Redis: a read never starts an epoch.
//!
//! Everything comes from Redis: a malformed answer is an error, never a panic.

use bytes::Bytes;
use redis::Value;

use super::Shared;
use super::envelope::message_of;
use crate::error::{Error, Result};
use crate::hub::history::{HistoryPage, Position, Publication};

/// One stored entry, as the stream holds it.
struct Entry {
    offset: u64,
    /// When it was stored, in Redis's milliseconds.
    at: u64,
    message: wsevents_proto::Message,
}

/// What one pipeline read: the topic's epoch and latest offset (when it has a
/// record), the entries from the start asked for (at most `count`), Redis's clock.
struct Range {
    top: Option<Position>,
    entries: Vec<Entry>,
    now_ms: u64,
}

/// Up to `limit` publications of `topic` after `since` (see the module).
pub(super) async fn read(
    shared: &Shared,
    mut conn: redis::aio::MultiplexedConnection,
    topic: &str,
    since: Option<&Position>,
    limit: usize,
) -> Result<HistoryPage> {
    let ttl_ms = super::recover::millis(shared.history.get().copied().unwrap_or_default().ttl);
    // One more than asked: whether more follow.
    let count = limit.saturating_add(1);
    let start = since.map_or_else(
        || "-".to_owned(),
        |s| format!("0-{}", s.offset().saturating_add(1)),
    );
    let mut range = read_range(shared, &mut conn, topic, &start, count).await?;
    let Some(top) = range.top.clone() else {
        return Ok(HistoryPage {
            position: None,
            publications: Vec::new(),
            gap: since.is_some(),
            more: false,
        });
    };
    let cutoff = range.now_ms.saturating_sub(ttl_ms);
    let fresh = |entries: &mut Vec<Entry>| {
        let before = entries.len();
        entries.retain(|e| e.at >= cutoff);
        before != entries.len()
    };
    let mut aged = fresh(&mut range.entries);
    let gap = match since {
        None => false,
        Some(since) if since.epoch() != top.epoch() || since.offset() > top.offset() => true,
        Some(since) if since.offset() == top.offset() => false,
        Some(since) => range
            .entries
            .first()
            .is_none_or(|first| first.offset != since.offset() + 1),
    };
    if gap {
        range = read_range(shared, &mut conn, topic, "-", count).await?;
        aged = fresh(&mut range.entries);
    }
    let epoch = top.epoch().to_owned();
    let more = range.entries.len() > limit || (aged && range.entries.len() + 1 >= count);
    range.entries.truncate(limit);
    let publications = range
        .entries
        .into_iter()
        .map(|e| {
            Ok(Publication {
                position: Position::new(&epoch, e.offset)?,
                message: e.message,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(HistoryPage {
        position: Some(range.top.unwrap_or(top)),
        publications,
        gap,
        more,
    })
}

async fn read_range(
    shared: &Shared,
    conn: &mut redis::aio::MultiplexedConnection,
    topic: &str,
    start: &str,
    count: usize,
) -> Result<Range> {
    let reply: Value = redis::pipe()
        .atomic()
        .cmd("HMGET")
        .arg(shared.keys.meta(topic))
        .arg("epoch")
        .arg("offset")
        .cmd("XRANGE")
        .arg(shared.keys.stream(topic))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .cmd("TIME")
        .query_async(conn)
        .await
        .map_err(|e| Error::Unavailable(format!("Redis: {e}")))?;
    parse_range(reply).ok_or_else(|| {
        Error::Unavailable("Redis answered the history read with something else".into())
    })
}

/// The pipeline's answer: `[[epoch, offset], [[id, [field, value]*]]*, [secs, micros]]`.
fn parse_range(reply: Value) -> Option<Range> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let Value::Array(meta) = items.next()? else {
        return None;
    };
    let top = match &meta[..] {
        [Value::Nil, _] => None,
        [epoch, offset] => {
            let epoch: String = redis::from_redis_value_ref(epoch).ok()?;
            let offset: u64 = match offset {
                Value::Nil => 0,
                other => redis::from_redis_value_ref(other).ok()?,
            };
            Some(Position::new(&epoch, offset).ok()?)
        }
        _ => return None,
    };
    let Value::Array(stream) = items.next()? else {
        return None;
    };
    let entries = stream.into_iter().map(entry).collect::<Option<Vec<_>>>()?;
    let Value::Array(time) = items.next()? else {
        return None;
    };
    let [secs, micros] = &time[..] else {
        return None;
    };
    let secs: u64 = redis::from_redis_value_ref(secs).ok()?;
    let micros: u64 = redis::from_redis_value_ref(micros).ok()?;
    Some(Range {
        top,
        entries,
        now_ms: secs.checked_mul(1000)?.checked_add(micros / 1000)?,
    })
}

/// A stream entry: id `0-OFFSET`, fields `k` (kind), `d` (payload), `t` (ms).
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id: String = redis::from_redis_value(parts.next()?).ok()?;
    let offset = id.strip_prefix("0-")?.parse().ok()?;
    let Value::Array(fields) = parts.next()? else {
        return None;
    };
    let (mut kind, mut data, mut at) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Value::BulkString(name) = name else {
            return None;
        };
        match &name[..] {
            b"k" => kind = Some(redis::from_redis_value::<Vec<u8>>(value).ok()?),
            b"d" => match value {
                Value::BulkString(payload) => data = Some(Bytes::from(payload)),
                _ => return None,
            },
            b"t" => at = Some(redis::from_redis_value::<u64>(value).ok()?),
            _ => {}
        }
    }
    Some(Entry {
        offset,
        at: at?,
        message: message_of(&kind?, data?)?,
    })
}

#[cfg(test)]
mod tests {
    use wsevents_proto::Message;

    use super::*;

    fn bulk(data: &[u8]) -> Value {
        Value::BulkString(data.to_vec())
    }

    fn stored(offset: u64, kind: &[u8], data: &[u8], at: u64) -> Value {
        Value::Array(vec![
            bulk(format!("0-{offset}").as_bytes()),
            Value::Array(vec![
                bulk(b"k"),
                bulk(kind),
                bulk(b"d"),
                bulk(data),
                bulk(b"t"),
                bulk(at.to_string().as_bytes()),
            ]),
        ])
    }

    fn time() -> Value {
        Value::Array(vec![bulk(b"1700000000"), bulk(b"250000")])
    }

    #[test]
    fn a_range_is_the_record_its_entries_and_the_clock() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk(b"e1"), bulk(b"7")]),
            Value::Array(vec![
                stored(6, b"t", b"six", 5),
                stored(7, b"b", b"\xff", 6),
            ]),
            time(),
        ]);
        let range = parse_range(reply).unwrap();
        assert_eq!(range.top, Some(Position::new("e1", 7).unwrap()));
        assert_eq!(range.now_ms, 1_700_000_000_250);
        let read: Vec<_> = range
            .entries
            .iter()
            .map(|e| (e.offset, e.at, e.message.clone()))
            .collect();
        assert_eq!(
            read,
            [
                (6, 5, Message::text("six")),
                (7, 6, Message::binary(vec![0xffu8]))
            ]
        );
    }

    #[test]
    fn a_topic_without_a_record_has_no_position() {
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Nil, Value::Nil]),
            Value::Array(vec![]),
            time(),
        ]);
        let range = parse_range(reply).unwrap();
        assert!(range.top.is_none() && range.entries.is_empty());
    }

    #[test]
    fn a_malformed_range_is_none() {
        let with = |entries: Vec<Value>| {
            Value::Array(vec![
                Value::Array(vec![bulk(b"e1"), bulk(b"7")]),
                Value::Array(entries),
                time(),
            ])
        };
        for (reply, why) in [
            (Value::Nil, "not an array"),
            (Value::Array(vec![]), "empty"),
            (with(vec![stored(1, b"x", b"a", 1)]), "no such kind"),
            (with(vec![stored(1, b"t", b"\xff", 1)]), "text not UTF-8"),
            (with(vec![Value::Array(vec![bulk(b"1-1")])]), "no fields"),
            (
                with(vec![Value::Array(vec![bulk(b"x"), Value::Array(vec![])])]),
                "a bad id",
            ),
            (
                Value::Array(vec![
                    Value::Array(vec![bulk(b"bad epoch!"), bulk(b"1")]),
                    Value::Array(vec![]),
                    time(),
                ]),
                "a bad epoch",
            ),
            (
                Value::Array(vec![
                    Value::Array(vec![bulk(b"e1"), bulk(b"1")]),
                    Value::Array(vec![]),
                    Value::Array(vec![bulk(b"1")]),
                ]),
                "a short clock",
            ),
        ] {
            assert!(parse_range(reply).is_none(), "{why}");
        }
    }
}
