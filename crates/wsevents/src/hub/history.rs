//! Positions and history: what lets a subscriber that went away come back and get what
//! it missed (docs/protocol.md).
//!
//! Every publication on a topic gets a [`Position`]: the topic's epoch and the next
//! offset. Offsets within an epoch are contiguous, so a subscriber that knows the last
//! position it handled knows exactly what it missed; the epoch changes whenever the
//! record of a topic is lost (a new process, Redis without its data, a topic idle past
//! the [`META_TTL`]), so an offset is never compared across two histories.
//!
//! [`TopicHistory`] is the in-process hub's record of one topic: a ring of its latest
//! publications, bounded by count and by age ([`History`]), and the idempotency keys of
//! those publications, so a retried publish is stored once. The Redis backend keeps the
//! same record in Redis (a stream and a hash per topic) under the same rules.
//!
//! The module has no clock of its own: callers pass `now`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsevents_proto::Message;

/// How long a topic's epoch and offset are kept after its last publication, when its
/// history is empty: a day. A subscriber away longer is told `recovered: false` even
/// if nothing was published meanwhile.
pub const META_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 128;

/// A publication's place in its topic: `epoch` and `offset`.
///
/// ```
/// use wsevents::hub::Position;
/// let p: Position = "7kq3v9xb:41".parse()?;
/// assert_eq!((p.epoch(), p.offset()), ("7kq3v9xb", 41));
/// assert_eq!(p.to_string(), "7kq3v9xb:41");
/// assert!("no-colon".parse::<Position>().is_err());
/// # Ok::<(), wsevents::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Position {
    epoch: Arc<str>,
    offset: u64,
}

impl Position {
    /// A position; the epoch must be 1 to 64 letters or digits
    /// ([`Error::Syntax`](crate::Error::Syntax) otherwise).
    pub fn new(epoch: &str, offset: u64) -> crate::Result<Position> {
        if epoch.is_empty() || epoch.len() > 64 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(crate::Error::Syntax(format!(
                "an epoch is 1 to 64 letters or digits, not {epoch:?}"
            )));
        }
        Ok(Position {
            epoch: epoch.into(),
            offset,
        })
    }

    pub(crate) fn from_parts(epoch: Arc<str>, offset: u64) -> Position {
        Position { epoch, offset }
    }

    /// The epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The offset (0 before the epoch's first publication).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether this position comes after `other` for a subscriber that is at `other`:
    /// a later offset of the same epoch, or another epoch (the history started again).
    pub(crate) fn is_past(&self, other: &Position) -> bool {
        self.epoch != other.epoch || self.offset > other.offset
    }

    #[cfg(test)]
    pub(crate) fn epoch_arc(&self) -> &Arc<str> {
        &self.epoch
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = crate::Error;

    /// `EPOCH:OFFSET`.
    fn from_str(s: &str) -> crate::Result<Position> {
        let bad = || crate::Error::Syntax(format!("a position is EPOCH:OFFSET, not {s:?}"));
        let (epoch, offset) = s.split_once(':').ok_or_else(bad)?;
        let offset = offset.parse().map_err(|_| bad())?;
        Position::new(epoch, offset)
    }
}

/// How much history a hub keeps per topic.
///
/// ```
/// use std::time::Duration;
/// use wsevents::hub::History;
/// let history = History { size: 500, ttl: Duration::from_secs(60), ..History::default() };
/// assert_eq!(History::default().size, 10_000);
/// assert_eq!(History::default().max_bytes, 8 << 20);
/// # let _ = history;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// The most publications kept per topic (10,000); older ones are trimmed.
    pub size: usize,
    /// The oldest a kept publication may be (300 s); older ones are trimmed. Also how
    /// long an idempotency key is remembered.
    pub ttl: Duration,
    /// The most bytes of payload kept per topic (8 MiB); the oldest publications are
    /// trimmed past it (the latest one is always kept).
    pub max_bytes: usize,
}

impl Default for History {
    fn default() -> Self {
        History {
            size: 10_000,
            ttl: Duration::from_secs(300),
            max_bytes: 8 << 20,
        }
    }
}

/// A publication with its position, as history holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Where it is.
    pub position: Position,
    /// What was published.
    pub message: Message,
}

/// What a subscription from a position found ([`Backend::recover`](super::Backend::recover)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The topic's latest position.
    pub position: Position,
    /// Everything after the position asked for, up to `position`, in order; `None`
    /// when that is not all in the history (or nothing was asked).
    pub publications: Option<Vec<Publication>>,
}

/// A page of a topic's history, as [`Hub::read_history`](super::Hub::read_history)
/// reads it: for a backend's server API (`GET /api/history`), not for a subscriber,
/// which recovers with [`Hub::subscribe_from`](super::Hub::subscribe_from).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The topic's latest position; `None` when the topic has no record (never
    /// published, or forgotten after [`META_TTL`]).
    pub position: Option<Position>,
    /// Up to the limit asked for, oldest first: those right after `since` when they are
    /// all still kept, else (and without `since`) from the oldest kept.
    pub publications: Vec<Publication>,
    /// `since` was given and what followed it is no longer all kept (another epoch,
    /// trimmed by count, bytes or age): `publications` start at the oldest kept
    /// instead, with a gap between.
    pub gap: bool,
    /// More publications follow the last one of `publications` (read again from its
    /// position).
    pub more: bool,
}

/// The in-process record of one topic.
pub(crate) struct TopicHistory {
    epoch: Arc<str>,
    offset: u64,
    /// (offset, published at, message, key), oldest first; offsets contiguous.
    entries: VecDeque<Entry>,
    /// The payload bytes of `entries`.
    bytes: usize,
    keys: HashMap<Box<str>, u64>,
    touched: Instant,
}

struct Entry {
    offset: u64,
    at: Instant,
    message: Message,
    key: Option<Box<str>>,
}

/// What storing a publication did.
pub(crate) enum Stored {
    /// Stored at this position: deliver it.
    New(Position),
    /// Its key was seen: stored before, at this position; deliver nothing.
    Repeat(Position),
}

impl TopicHistory {
    pub(crate) fn new(now: Instant) -> TopicHistory {
        TopicHistory {
            epoch: new_epoch().into(),
            offset: 0,
            entries: VecDeque::new(),
            bytes: 0,
            keys: HashMap::new(),
            touched: now,
        }
    }

    /// The latest position.
    pub(crate) fn position(&self) -> Position {
        Position::from_parts(self.epoch.clone(), self.offset)
    }

    /// Store `message` (kept if `config.size > 0`), unless `key` was seen.
    pub(crate) fn store(
        &mut self,
        message: &Message,
        key: Option<&str>,
        config: &History,
        now: Instant,
    ) -> Stored {
        self.trim(config, now);
        self.touched = now;
        if let Some(offset) = key.and_then(|k| self.keys.get(k)) {
            return Stored::Repeat(Position::from_parts(self.epoch.clone(), *offset));
        }
        self.offset += 1;
        if config.size > 0 {
            let key: Option<Box<str>> = key.map(Into::into);
            if let Some(key) = &key {
                self.keys.insert(key.clone(), self.offset);
            }
            self.bytes += payload_len(message);
            if self.entries.capacity() == 0 {
                // Most topics keep few publications: grow from one, not four.
                self.entries.reserve_exact(1);
            }
            self.entries.push_back(Entry {
                offset: self.offset,
                at: now,
                message: message.clone(),
                key,
            });
            self.trim(config, now);
        }
        Stored::New(self.position())
    }

    /// What a subscriber that last handled `since` missed, if it is all here.
    pub(crate) fn recover(
        &mut self,
        since: Option<&Position>,
        config: &History,
        now: Instant,
    ) -> Recovery {
        self.trim(config, now);
        self.touched = now;
        let position = self.position();
        let publications = since.and_then(|since| {
            if *since.epoch != *self.epoch || since.offset > self.offset {
                return None;
            }
            let missed = self.offset - since.offset;
            if missed == 0 {
                return Some(Vec::new());
            }
            let first = self.entries.front()?.offset;
            if first > since.offset + 1 {
                return None;
            }
            let skip = usize::try_from(since.offset + 1 - first).ok()?;
            Some(
                self.entries
                    .iter()
                    .skip(skip)
                    .map(|e| Publication {
                        position: Position::from_parts(self.epoch.clone(), e.offset),
                        message: e.message.clone(),
                    })
                    .collect(),
            )
        });
        Recovery {
            position,
            publications,
        }
    }

    /// Up to `limit` kept publications after `since` (from the oldest kept when
    /// `since` is absent, of another epoch, or older than what is kept).
    pub(crate) fn read(
        &mut self,
        since: Option<&Position>,
        limit: usize,
        config: &History,
        now: Instant,
    ) -> HistoryPage {
        self.trim(config, now);
        let first = self.entries.front().map_or(self.offset + 1, |e| e.offset);
        let after =
            since.filter(|since| *since.epoch == *self.epoch && since.offset <= self.offset);
        let (skip, gap) = match (since, after) {
            (None, _) => (0, false),
            // Nothing newer was trimmed: from right after it.
            (Some(_), Some(after)) if after.offset + 1 >= first => (
                usize::try_from(after.offset + 1 - first).unwrap_or(usize::MAX),
                false,
            ),
            (Some(_), _) => (0, true),
        };
        let publications: Vec<Publication> = self
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .map(|e| Publication {
                position: Position::from_parts(self.epoch.clone(), e.offset),
                message: e.message.clone(),
            })
            .collect();
        HistoryPage {
            position: Some(self.position()),
            more: skip.saturating_add(publications.len()) < self.entries.len(),
            publications,
            gap,
        }
    }

    /// How many publications are kept, and their payload bytes.
    pub(crate) fn kept(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }

    /// Drop every kept publication and idempotency key, keeping the epoch and the
    /// offset: a recovery from before the latest position is then `recovered: false`,
    /// and the next publication still takes the next offset (the hub's memory bound
    /// evicts so, [`super::budget`]).
    pub(crate) fn forget_kept(&mut self) {
        self.entries = VecDeque::new();
        self.keys = HashMap::new();
        self.bytes = 0;
    }

    /// Whether the record can go: nothing kept and idle past [`META_TTL`].
    pub(crate) fn is_stale(&mut self, config: &History, now: Instant) -> bool {
        self.trim(config, now);
        self.entries.is_empty() && now.duration_since(self.touched) > META_TTL.max(config.ttl)
    }

    fn trim(&mut self, config: &History, now: Instant) {
        while let Some(front) = self.entries.front() {
            let old = now.duration_since(front.at) > config.ttl;
            let heavy = self.bytes > config.max_bytes && self.entries.len() > 1;
            if !old && !heavy && self.entries.len() <= config.size {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.bytes -= payload_len(&entry.message);
                if let Some(key) = entry.key {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
    }
}

/// A fresh epoch: 8 characters of [0-9a-z] that another process is unlikely to pick
/// for the same topic.
pub(crate) fn new_epoch() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = wsevents_proto::random::u64();
    (0..8)
        .map(|_| {
            let digit = DIGITS[(n % 36) as usize];
            n /= 36;
            char::from(digit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(size: usize, ttl_secs: u64) -> History {
        History {
            size,
            ttl: Duration::from_secs(ttl_secs),
            ..History::default()
        }
    }

    fn offsets(recovery: &Recovery) -> Option<Vec<u64>> {
        recovery
            .publications
            .as_ref()
            .map(|p| p.iter().map(|p| p.position.offset()).collect())
    }

    #[test]
    fn offsets_are_contiguous_and_recovery_is_all_or_nothing() {
        let now = Instant::now();
        let c = config(3, 60);
        let mut h = TopicHistory::new(now);
        let start = h.position();
        assert_eq!(start.offset(), 0);
        for i in 1..=5u64 {
            match h.store(&Message::text(i.to_string()), None, &c, now) {
                Stored::New(p) => assert_eq!(p.offset(), i),
                Stored::Repeat(_) => panic!("no key"),
            }
        }
        let at = |o| Position::from_parts(start.epoch_arc().clone(), o);
        assert_eq!(
            offsets(&h.recover(Some(&at(2),), &c, now)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(offsets(&h.recover(Some(&at(5)), &c, now)), Some(vec![]));
        assert_eq!(
            offsets(&h.recover(Some(&at(1)), &c, now)),
            None,
            "2 was trimmed"
        );
        assert_eq!(
            offsets(&h.recover(Some(&at(6)), &c, now)),
            None,
            "the future"
        );
        let other = Position::new("otherepoch", 4).unwrap();
        assert_eq!(offsets(&h.recover(Some(&other), &c, now)), None);
        assert_eq!(offsets(&h.recover(None, &c, now)), None);
        assert_eq!(h.recover(None, &c, now).position, at(5));
    }

    #[test]
    fn age_trims_and_keys_dedupe_within_the_window() {
        let t0 = Instant::now();
        let c = config(100, 10);
        let mut h = TopicHistory::new(t0);
        let first = match h.store(&Message::text("a"), Some("k1"), &c, t0) {
            Stored::New(p) => p,
            Stored::Repeat(_) => panic!("new key"),
        };
        assert!(
            matches!(h.store(&Message::text("a"), Some("k1"), &c, t0), Stored::Repeat(p) if p == first)
        );
        let later = t0 + Duration::from_secs(11);
        let zero = Position::from_parts(first.epoch_arc().clone(), 0);
        assert_eq!(
            offsets(&h.recover(Some(&zero), &c, later)),
            None,
            "aged out"
        );
        assert!(
            matches!(h.store(&Message::text("a"), Some("k1"), &c, later), Stored::New(p) if p.offset() == 2)
        );
        assert!(!h.is_stale(&c, later));
    }

    #[test]
    fn bytes_trim_the_oldest_but_keep_the_latest() {
        let now = Instant::now();
        let c = History {
            max_bytes: 10,
            ..config(100, 60)
        };
        let mut h = TopicHistory::new(now);
        let zero = h.position();
        for _ in 0..4 {
            h.store(&Message::binary(vec![0u8; 4]), None, &c, now);
        }
        let recovery = h.recover(
            Some(&Position::from_parts(zero.epoch_arc().clone(), 2)),
            &c,
            now,
        );
        assert_eq!(offsets(&recovery), Some(vec![3, 4]), "8 of 10 bytes kept");
        h.store(&Message::binary(vec![0u8; 64]), None, &c, now);
        assert_eq!(
            (h.entries.len(), h.bytes),
            (1, 64),
            "one larger than the bound stays alone"
        );
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert!(Position::new(&new_epoch(), 1).is_ok());
    }
}
