//! The messages of wsevents.v1 (docs/protocol.md), both directions, as Rust values:
//! parsed from and written to the JSON text frames the protocol is made of.
//!
//! One module for both ends, so the server ([`PubsubServer`](super::PubsubServer)) and
//! the clients cannot drift apart: every message type has one `parse` and one
//! `to_json`, and the tests check that each reads back what it wrote.
//!
//! The codec is serde's derive: each direction is a `#[serde(tag = "op")]` enum whose
//! variants are the frames, with borrowed fields (`RequestIn`/`ReplyIn` read,
//! `RequestOut`/`ReplyOut` write), so a field cannot be read on one side and forgotten
//! on the other. The public [`Request`] and [`Reply`] own their data and are checked
//! as they are made from them (ids, topic lengths, positions, keys, base64).
//!
//! A publication's data is copied **once on the way in** (a text `data` borrowed from
//! the frame into the message's bytes; with escapes, serde_json's unescaped copy *is*
//! the message's bytes; binary: base64-decoded into them) and **once on the way out**:
//! a `pub` ([`V1Framing`], made once per publication for all its subscribers) is
//! counted first and written into one buffer of its exact size, which becomes the
//! message without another copy.
//!
//! ```text
//!  frame text ──serde_json──► RequestIn<'frame> ──check──► Request  (data: one copy)
//!  Publication ──count, then write──► one String ──► Message         (data: one copy)
//! ```

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use wsevents_proto::Message;

use super::json;
use crate::hub::{Framing, MAX_KEY_LEN, Position, Publication};

/// The subprotocol name: `wsevents.v1`.
pub const PROTOCOL: &str = "wsevents.v1";

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// An upper bound on what a `publish` frame holds besides its data, in bytes: its
/// fields at their longest (a 20-digit id, a 256-byte topic and a 128-byte key, each
/// byte escaped at 6 bytes) take 2,390 bytes as this crate writes them; the rest is
/// room for what another client adds (spaces, unknown fields).
pub const PUBLISH_ENVELOPE: usize = 4096;

/// The longest a `publish` frame of `data` bytes is (as this crate, or any client that
/// escapes only what JSON requires, writes it): the data as base64 (binary, the longer
/// form; text counts as its UTF-8 bytes, longer only by the escapes JSON needs:
/// quotes, backslashes, control characters) plus [`PUBLISH_ENVELOPE`]. A server whose
/// connections accept frames of this length can answer every publish up to `data`
/// bytes, and one past it with `too_large` (see
/// [`PubsubServer::max_publication`](super::PubsubServer::max_publication)).
///
/// ```
/// use wsevents::pubsub::wire::publish_frame_len;
/// // The default 8 MiB takes at most 10.7 MiB: within the default 16 MiB frame.
/// assert!(publish_frame_len(8 << 20) < 11 << 20);
/// ```
pub const fn publish_frame_len(data: usize) -> usize {
    data.div_ceil(3)
        .saturating_mul(4)
        .saturating_add(PUBLISH_ENVELOPE)
}

/// The largest publication whose `publish` frame fits in `frame` bytes: the inverse of
/// [`publish_frame_len`].
///
/// ```
/// use wsevents::pubsub::wire::{max_publication_in, publish_frame_len};
/// let most = max_publication_in(16 << 20);
/// assert!(publish_frame_len(most) <= 16 << 20);
/// assert!(publish_frame_len(most + 3) > 16 << 20);
/// ```
pub const fn max_publication_in(frame: usize) -> usize {
    frame.saturating_sub(PUBLISH_ENVELOPE) / 4 * 3
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Receive `topic`'s publications; with `since`, also those after it.
    Subscribe {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
        /// Where the client left off.
        since: Option<Position>,
    },
    /// Stop receiving `topic`'s publications.
    Unsubscribe {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
    },
    /// Publish `data` to `topic`, once per `key`.
    Publish {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
        /// The message: text, or binary (base64 on the wire).
        data: Message,
        /// The idempotency key.
        key: Option<String>,
    },
}

/// What a server says: an answer to a request (with its id) or a publication.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// The answer to `subscribe`.
    Subscribed {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
        /// Whether what was missed follows.
        recovered: bool,
        /// The topic's latest position when the subscription took effect.
        position: Position,
    },
    /// The answer to `unsubscribe`.
    Unsubscribed {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
    },
    /// The answer to `publish`: stored at `position`.
    Published {
        /// The request's id.
        id: u64,
        /// The topic.
        topic: String,
        /// Where it was stored.
        position: Position,
    },
    /// A request failed.
    Error {
        /// The request's id (`None` when it had none that could be read).
        id: Option<u64>,
        /// What failed.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// A publication (`pub`).
    Pub {
        /// The topic.
        topic: String,
        /// Its position and message.
        publication: Publication,
    },
}

/// The `code` of an `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, no id, an unknown op, a field of the wrong type.
    BadRequest,
    /// A topic name that is empty or too long.
    BadTopic,
    /// A publication over the server's limit.
    TooLarge,
    /// Past the server's limit of topics per connection.
    TooManyTopics,
    /// Past what the server keeps waiting for one connection (subscriptions waiting
    /// for the one before, publishes waiting to be stored): nothing was done; retry
    /// after a delay (with the same key for a publish).
    TooManyRequests,
    /// The broker is unreachable: nothing was stored; retry with the same key.
    Unavailable,
}

impl ErrorCode {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyTopics => "too_many_topics",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Whether retrying later may succeed (the `error`'s `temporary`).
    pub fn is_temporary(self) -> bool {
        matches!(self, ErrorCode::TooManyRequests | ErrorCode::Unavailable)
    }

    fn parse(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "bad_request" => ErrorCode::BadRequest,
            "bad_topic" => ErrorCode::BadTopic,
            "too_large" => ErrorCode::TooLarge,
            "too_many_topics" => ErrorCode::TooManyTopics,
            "too_many_requests" => ErrorCode::TooManyRequests,
            "unavailable" => ErrorCode::Unavailable,
            _ => return None,
        })
    }
}

/// A message that is not one of the protocol's: what the `error` answer says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct WireError {
    /// The request's id, when it could be read.
    pub id: Option<u64>,
    /// What is wrong.
    pub code: ErrorCode,
    /// Why, for people.
    pub message: String,
}

impl WireError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            id,
            code,
            message: message.into(),
        }
    }

    fn bad(id: Option<u64>, message: impl Into<String>) -> WireError {
        WireError::new(id, ErrorCode::BadRequest, message)
    }
}

// What the errors say, one place for the fast path and the diagnosis.
const NO_ID: &str = "no id (an integer >= 1)";
const BAD_SINCE: &str = "since is {epoch, offset}";
const BAD_DATA: &str = "data is a string (base64 when binary)";
const BAD_KEY: &str = "key is a string of at most 128 bytes";
const BAD_TOPIC: &str = "a topic is 1 to 256 bytes";

impl Request {
    /// Read a client's frame.
    ///
    /// Errors, in the order they are looked for (the first one found is the answer):
    /// not a JSON object (`bad_request`, no id); no `id` that is an integer ≥ 1 (no
    /// id); no `op` string; no `topic` string (`bad_request`), or one that is empty or
    /// over 256 bytes (`bad_topic`); an unknown `op`; then the op's own fields
    /// (`since`, `data` and its base64, `key` of at most 128 bytes), and anything else
    /// serde refuses (a field given twice). Unknown fields are ignored.
    ///
    /// ```
    /// use wsevents::pubsub::wire::Request;
    /// let r = Request::parse(r#"{"id":1,"op":"subscribe","topic":"news","since":{"epoch":"e1","offset":4}}"#)?;
    /// assert!(matches!(r, Request::Subscribe { id: 1, since: Some(_), .. }));
    /// # Ok::<(), wsevents::pubsub::wire::WireError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Request, WireError> {
        // serde reads an internally tagged enum from an array too (`["subscribe", 1,
        // "news"]`): the protocol's frames are objects.
        if !is_object(text) {
            return Err(diagnose(text, None, &RequestRules));
        }
        match serde_json::from_str::<RequestIn<'_>>(text) {
            Ok(request) => request.check(),
            Err(error) => Err(diagnose(text, Some(&error), &RequestRules)),
        }
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        let (out, data_len) = match self {
            Request::Subscribe { id, topic, since } => (
                RequestOut::Subscribe {
                    id: *id,
                    topic,
                    since: since.as_ref().map(PositionOut::from),
                },
                0,
            ),
            Request::Unsubscribe { id, topic } => (RequestOut::Unsubscribe { id: *id, topic }, 0),
            Request::Publish {
                id,
                topic,
                data,
                key,
            } => (
                RequestOut::Publish {
                    id: *id,
                    topic,
                    data: DataOut(data),
                    binary: matches!(data, Message::Binary(_)),
                    key: key.as_deref(),
                },
                data_len(data) + key.as_deref().map_or(0, json::str_len),
            ),
        };
        let topic = match self {
            Request::Subscribe { topic, .. }
            | Request::Unsubscribe { topic, .. }
            | Request::Publish { topic, .. } => topic,
        };
        // One allocation: the data, key and topic counted, the rest (at most 200
        // bytes) bounded.
        to_json_sized(&out, data_len + json::str_len(topic) + 256)
    }
}

impl Reply {
    /// Read a server's frame.
    ///
    /// ```
    /// use wsevents::pubsub::wire::Reply;
    /// let r = Reply::parse(r#"{"op":"pub","topic":"news","epoch":"e1","offset":5,"data":"hi"}"#)?;
    /// let Reply::Pub { publication, .. } = r else { panic!() };
    /// assert_eq!(publication.position.offset(), 5);
    /// # Ok::<(), wsevents::pubsub::wire::WireError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Reply, WireError> {
        if !is_object(text) {
            return Err(diagnose(text, None, &ReplyRules));
        }
        match serde_json::from_str::<ReplyIn<'_>>(text) {
            Ok(reply) => reply.check(),
            Err(error) => Err(diagnose(text, Some(&error), &ReplyRules)),
        }
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        let out = match self {
            Reply::Pub { topic, publication } => return pub_frame(topic, publication),
            Reply::Subscribed {
                id,
                topic,
                recovered,
                position,
            } => ReplyOut::Subscribed {
                id: *id,
                topic,
                recovered: *recovered,
                epoch: position.epoch(),
                offset: position.offset(),
            },
            Reply::Unsubscribed { id, topic } => ReplyOut::Unsubscribed { id: *id, topic },
            Reply::Published {
                id,
                topic,
                position,
            } => ReplyOut::Published {
                id: *id,
                topic,
                epoch: position.epoch(),
                offset: position.offset(),
            },
            Reply::Error { id, code, message } => ReplyOut::Error {
                id: *id,
                code: code.as_str(),
                message,
                temporary: code.is_temporary(),
            },
        };
        to_json_sized(&out, 512 + self.text_len())
    }

    /// The frame: a text message of the JSON.
    pub fn to_message(&self) -> Message {
        Message::text(self.to_json())
    }

    /// The length of the strings of an answer, counted for its buffer.
    fn text_len(&self) -> usize {
        match self {
            Reply::Subscribed { topic, .. }
            | Reply::Unsubscribed { topic, .. }
            | Reply::Published { topic, .. } => json::str_len(topic),
            Reply::Error { message, .. } => json::str_len(message),
            Reply::Pub { .. } => 0,
        }
    }
}

/// The hub's framing for wsevents.v1 subscribers: each publication as a `pub`, one
/// allocation of the frame's exact length (the hub makes it once per publication for
/// all the subscribers of the topic).
#[derive(Debug, Clone, Copy, Default)]
pub struct V1Framing;

impl Framing for V1Framing {
    fn frame(&self, topic: &str, publication: &Publication) -> Message {
        Message::text(pub_frame(topic, publication))
    }
}

// ----- reading -----

/// A client's frame as serde reads it: borrowed from the frame where it can be (a
/// string with escapes is unescaped into its own `String`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum RequestIn<'a> {
    Subscribe {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(default)]
        since: Option<PositionIn>,
    },
    Unsubscribe {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
    },
    Publish {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        data: Cow<'a, str>,
        /// Binary only when `true`; any other value is text (as it always was).
        #[serde(default)]
        binary: Option<Value>,
        #[serde(default)]
        key: Option<String>,
    },
}

impl RequestIn<'_> {
    /// The checks serde's types do not make, in the order of [`Request::parse`]'s doc.
    fn check(self) -> Result<Request, WireError> {
        let (id, topic) = match &self {
            RequestIn::Subscribe { id, topic, .. }
            | RequestIn::Unsubscribe { id, topic }
            | RequestIn::Publish { id, topic, .. } => (*id, topic),
        };
        if id == 0 {
            return Err(WireError::bad(None, NO_ID));
        }
        check_topic(topic, Some(id))?;
        let bad = |message| WireError::bad(Some(id), message);
        Ok(match self {
            RequestIn::Subscribe { topic, since, .. } => Request::Subscribe {
                id,
                topic: topic.into_owned(),
                since: since
                    .map(|since| since.position().ok_or_else(|| bad(BAD_SINCE)))
                    .transpose()?,
            },
            RequestIn::Unsubscribe { topic, .. } => Request::Unsubscribe {
                id,
                topic: topic.into_owned(),
            },
            RequestIn::Publish {
                topic,
                data,
                binary,
                key,
                ..
            } => {
                let data =
                    message_of(data, is_true(binary.as_ref())).ok_or_else(|| bad(BAD_DATA))?;
                if key.as_ref().is_some_and(|key| key.len() > MAX_KEY_LEN) {
                    return Err(bad(BAD_KEY));
                }
                Request::Publish {
                    id,
                    topic: topic.into_owned(),
                    data,
                    key,
                }
            }
        })
    }
}

/// A server's frame as serde reads it.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ReplyIn<'a> {
    Subscribed {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
        recovered: bool,
        #[serde(borrow)]
        epoch: Cow<'a, str>,
        offset: u64,
    },
    Unsubscribed {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
    },
    Published {
        id: u64,
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        epoch: Cow<'a, str>,
        offset: u64,
    },
    Error {
        #[serde(default)]
        id: Option<u64>,
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(default)]
        message: Option<String>,
    },
    Pub {
        #[serde(borrow)]
        topic: Cow<'a, str>,
        #[serde(borrow)]
        epoch: Cow<'a, str>,
        offset: u64,
        #[serde(borrow)]
        data: Cow<'a, str>,
        #[serde(default)]
        binary: Option<Value>,
    },
}

impl ReplyIn<'_> {
    fn check(self) -> Result<Reply, WireError> {
        let id = match &self {
            ReplyIn::Subscribed { id, .. }
            | ReplyIn::Unsubscribed { id, .. }
            | ReplyIn::Published { id, .. } => Some(*id),
            ReplyIn::Error { id, .. } => *id,
            ReplyIn::Pub { .. } => None,
        };
        let bad = |message| WireError::bad(id, message);
        let position = |epoch: &str, offset| {
            Position::new(epoch, offset).map_err(|_| bad("an epoch is 1 to 64 letters or digits"))
        };
        Ok(match self {
            ReplyIn::Subscribed {
                id,
                topic,
                recovered,
                epoch,
                offset,
            } => Reply::Subscribed {
                id,
                topic: checked_topic(topic, Some(id))?,
                recovered,
                position: position(&epoch, offset)?,
            },
            ReplyIn::Unsubscribed { id, topic } => Reply::Unsubscribed {
                id,
                topic: checked_topic(topic, Some(id))?,
            },
            ReplyIn::Published {
                id,
                topic,
                epoch,
                offset,
            } => Reply::Published {
                id,
                topic: checked_topic(topic, Some(id))?,
                position: position(&epoch, offset)?,
            },
            ReplyIn::Error { id, code, message } => Reply::Error {
                id,
                code: ErrorCode::parse(&code).ok_or_else(|| bad("an unknown error code"))?,
                message: message.unwrap_or_default(),
            },
            ReplyIn::Pub {
                topic,
                epoch,
                offset,
                data,
                binary,
            } => {
                let topic = checked_topic(topic, None)?;
                let position = position(&epoch, offset)?;
                let message =
                    message_of(data, is_true(binary.as_ref())).ok_or_else(|| bad(BAD_DATA))?;
                Reply::Pub {
                    topic,
                    publication: Publication { position, message },
                }
            }
        })
    }
}

/// `since`: `{"epoch": …, "offset": …}`, an object only (serde's derive would take
/// `["e1", 4]` too), unknown fields ignored, a field given twice the last one.
struct PositionIn {
    epoch: Option<String>,
    offset: Option<u64>,
}

impl PositionIn {
    fn position(self) -> Option<Position> {
        Position::new(&self.epoch?, self.offset?).ok()
    }
}

impl<'de> Deserialize<'de> for PositionIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = PositionIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{epoch, offset}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PositionIn, A::Error> {
                let mut since = PositionIn {
                    epoch: None,
                    offset: None,
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "epoch" => since.epoch = Some(map.next_value()?),
                        "offset" => since.offset = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(since)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A frame's `data` as the message it carries: the text (one copy out of the frame,
/// none when serde_json already unescaped it into its own `String`), or the bytes the
/// base64 decodes to; `None` for bad base64.
fn message_of(data: Cow<'_, str>, binary: bool) -> Option<Message> {
    if binary {
        let bytes = BASE64.decode(data.as_bytes()).ok()?;
        return Some(Message::Binary(Bytes::from(bytes)));
    }
    Some(Message::text(data.into_owned()))
}

fn is_true(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
}

fn check_topic(topic: &str, id: Option<u64>) -> Result<(), WireError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(WireError::new(id, ErrorCode::BadTopic, BAD_TOPIC));
    }
    Ok(())
}

fn checked_topic(topic: Cow<'_, str>, id: Option<u64>) -> Result<String, WireError> {
    check_topic(&topic, id)?;
    Ok(topic.into_owned())
}

/// Whether `text` is a JSON object, from its first byte: the rest is serde's to judge.
fn is_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// The rules of one direction's frames, for [`diagnose`].
trait Rules {
    /// The id of a frame whose id can be read (`None`: the frame is refused for it).
    fn id(&self, object: &Map<String, Value>) -> Result<Option<u64>, WireError>;
    /// Whether the op has a topic, `None` for an unknown op.
    fn has_topic(&self, op: &str) -> Option<bool>;
    /// The op's own fields, checked by hand: the message of the first one wrong.
    fn fields(&self, op: &str, object: &Map<String, Value>) -> Option<&'static str>;
}

struct RequestRules;

impl Rules for RequestRules {
    fn id(&self, object: &Map<String, Value>) -> Result<Option<u64>, WireError> {
        match object
            .get("id")
            .and_then(Value::as_u64)
            .filter(|&id| id >= 1)
        {
            Some(id) => Ok(Some(id)),
            None => Err(WireError::bad(None, NO_ID)),
        }
    }

    fn has_topic(&self, op: &str) -> Option<bool> {
        matches!(op, "subscribe" | "unsubscribe" | "publish").then_some(true)
    }

    fn fields(&self, op: &str, object: &Map<String, Value>) -> Option<&'static str> {
        let absent = |field| matches!(object.get(field), None | Some(Value::Null));
        match op {
            "subscribe" => {
                let since = object.get("since").filter(|_| !absent("since"));
                let readable = |since: &Value| {
                    let epoch = since.get("epoch")?.as_str()?;
                    let offset = since.get("offset")?.as_u64()?;
                    Position::new(epoch, offset).ok()
                };
                since
                    .is_some_and(|since| readable(since).is_none())
                    .then_some(BAD_SINCE)
            }
            "publish" => {
                let binary = is_true(object.get("binary"));
                let data = object.get("data").and_then(Value::as_str);
                let data_ok = data.is_some_and(|d| !binary || BASE64.decode(d).is_ok());
                let key_ok = absent("key")
                    || object
                        .get("key")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.len() <= MAX_KEY_LEN);
                if !data_ok {
                    Some(BAD_DATA)
                } else if !key_ok {
                    Some(BAD_KEY)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

struct ReplyRules;

impl Rules for ReplyRules {
    fn id(&self, object: &Map<String, Value>) -> Result<Option<u64>, WireError> {
        Ok(object.get("id").and_then(Value::as_u64))
    }

    fn has_topic(&self, op: &str) -> Option<bool> {
        match op {
            "subscribed" | "unsubscribed" | "published" | "pub" => Some(true),
            "error" => Some(false),
            _ => None,
        }
    }

    fn fields(&self, _: &str, _: &Map<String, Value>) -> Option<&'static str> {
        None
    }
}

/// Why a frame serde refused (or that is not an object) is wrong, by the rules read
/// by hand, in the order of [`Request::parse`]'s doc, so that the answer says which
/// field is wrong and carries the id whenever it can be read. Runs only for a frame
/// that is refused (it reads it again, as a `serde_json::Value`).
fn diagnose(text: &str, error: Option<&serde_json::Error>, rules: &dyn Rules) -> WireError {
    let object = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return WireError::bad(None, "not a JSON object"),
        Err(e) => return WireError::bad(None, format!("not JSON: {e}")),
    };
    let id = match rules.id(&object) {
        Ok(id) => id,
        Err(error) => return error,
    };
    let Some(op) = object.get("op").and_then(Value::as_str) else {
        return WireError::bad(id, "no op");
    };
    let has_topic = rules.has_topic(op);
    if has_topic != Some(false) {
        match object.get("topic") {
            Some(Value::String(topic)) => {
                if let Err(error) = check_topic(topic, id) {
                    return error;
                }
            }
            _ => return WireError::bad(id, "no topic"),
        }
    }
    if has_topic.is_none() {
        return WireError::bad(id, format!("unknown op {op:?}"));
    }
    if let Some(message) = rules.fields(op, &object) {
        return WireError::bad(id, message);
    }
    // Nothing the rules name: what serde said (a field given twice, a field missing or
    // of the wrong type in an answer).
    let message = error.map_or_else(|| "not a JSON object".to_owned(), ToString::to_string);
    WireError::bad(id, message)
}

// ----- writing -----

/// A client's frame as serde writes it.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum RequestOut<'a> {
    Subscribe {
        id: u64,
        topic: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<PositionOut<'a>>,
    },
    Unsubscribe {
        id: u64,
        topic: &'a str,
    },
    Publish {
        id: u64,
        topic: &'a str,
        data: DataOut<'a>,
        #[serde(skip_serializing_if = "is_false")]
        binary: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct PositionOut<'a> {
    epoch: &'a str,
    offset: u64,
}

impl<'a> From<&'a Position> for PositionOut<'a> {
    fn from(position: &'a Position) -> Self {
        PositionOut {
            epoch: position.epoch(),
            offset: position.offset(),
        }
    }
}

/// A server's frame as serde writes it (the `pub` is written by [`pub_frame`], byte
/// for byte the same: the tests compare them).
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ReplyOut<'a> {
    Subscribed {
        id: u64,
        topic: &'a str,
        recovered: bool,
        epoch: &'a str,
        offset: u64,
    },
    Unsubscribed {
        id: u64,
        topic: &'a str,
    },
    Published {
        id: u64,
        topic: &'a str,
        epoch: &'a str,
        offset: u64,
    },
    Error {
        id: Option<u64>,
        code: &'a str,
        message: &'a str,
        temporary: bool,
    },
    #[cfg_attr(not(test), allow(dead_code))]
    Pub {
        topic: &'a str,
        epoch: &'a str,
        offset: u64,
        data: DataOut<'a>,
        #[serde(skip_serializing_if = "is_false")]
        binary: bool,
    },
}

/// A message as `data`: the text, or the base64 of the bytes (written in chunks
/// straight into the frame, no base64 string first).
struct DataOut<'a>(&'a Message);

impl Serialize for DataOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Message::Text(text) => serializer.serialize_str(text.as_str()),
            Message::Binary(bytes) => serializer.collect_str(&Base64Display::new(bytes, &BASE64)),
        }
    }
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The length of a message as `data` (quoted).
fn data_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => json::str_len(text.as_str()),
        Message::Binary(bytes) => base64_len(bytes.len()) + 2,
    }
}

fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// `value` as JSON, in one buffer of `capacity` bytes (enough for it: no copy as it
/// grows).
fn to_json_sized(value: &impl Serialize, capacity: usize) -> String {
    let mut out = Vec::with_capacity(capacity);
    // Writing these types into a Vec cannot fail: no map has a non-string key and
    // every Serialize impl here writes plain values.
    serde_json::to_writer(&mut out, value).expect("the wire types always serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The fixed part of a `pub`: `{"op":"pub","topic":,"epoch":,"offset":,"data":}`.
const PUB_FIXED: usize = r#"{"op":"pub","topic":,"epoch":,"offset":,"data":}"#.len();
const PUB_BINARY: &str = r#","binary":true"#;

/// A `pub` frame, counted then written into one `String` of its exact length (the
/// hot path: every publication to wsevents.v1 subscribers). The bytes are serde's
/// (`ReplyOut::Pub`) exactly.
fn pub_frame(topic: &str, publication: &Publication) -> String {
    use std::fmt::Write;
    let position = &publication.position;
    let message = &publication.message;
    let binary = matches!(message, Message::Binary(_));
    let len = PUB_FIXED
        + json::str_len(topic)
        + json::str_len(position.epoch())
        + json::u64_len(position.offset())
        + data_len(message)
        + if binary { PUB_BINARY.len() } else { 0 };
    let mut out = String::with_capacity(len);
    out.push_str(r#"{"op":"pub","topic":"#);
    json::push_str(&mut out, topic);
    out.push_str(r#","epoch":"#);
    json::push_str(&mut out, position.epoch());
    out.push_str(r#","offset":"#);
    // Writing into a String cannot fail.
    let _ = write!(out, "{}", position.offset());
    out.push_str(r#","data":"#);
    match message {
        Message::Text(text) => json::push_str(&mut out, text.as_str()),
        Message::Binary(bytes) => {
            out.push('"');
            BASE64.encode_string(bytes, &mut out);
            out.push('"');
            out.push_str(PUB_BINARY);
        }
    }
    out.push('}');
    debug_assert_eq!(out.len(), len, "a pub frame counted wrong");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position::new("e1", offset).unwrap()
    }

    #[test]
    fn every_message_reads_back_what_it_wrote() {
        let requests = [
            Request::Subscribe {
                id: 1,
                topic: "a".into(),
                since: None,
            },
            Request::Subscribe {
                id: 2,
                topic: "a".into(),
                since: Some(at(4)),
            },
            Request::Unsubscribe {
                id: 3,
                topic: "a".into(),
            },
            Request::Publish {
                id: 4,
                topic: "a".into(),
                data: Message::text("hé \"x\""),
                key: Some("k".into()),
            },
            Request::Publish {
                id: 5,
                topic: "a".into(),
                data: Message::binary(vec![0u8, 255, 7]),
                key: None,
            },
        ];
        for r in requests {
            assert_eq!(
                Request::parse(&r.to_json()),
                Ok(r.clone()),
                "{}",
                r.to_json()
            );
        }
        let replies = [
            Reply::Subscribed {
                id: 1,
                topic: "a".into(),
                recovered: true,
                position: at(9),
            },
            Reply::Unsubscribed {
                id: 3,
                topic: "a".into(),
            },
            Reply::Published {
                id: 4,
                topic: "a".into(),
                position: at(10),
            },
            Reply::Error {
                id: Some(5),
                code: ErrorCode::Unavailable,
                message: "down".into(),
            },
            Reply::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: "?".into(),
            },
            Reply::Pub {
                topic: "a".into(),
                publication: Publication {
                    position: at(11),
                    message: Message::binary(vec![1u8]),
                },
            },
            Reply::Pub {
                topic: "a".into(),
                publication: Publication {
                    position: at(12),
                    message: Message::text("x"),
                },
            },
        ];
        for r in replies {
            assert_eq!(Reply::parse(&r.to_json()), Ok(r.clone()), "{}", r.to_json());
        }
    }

    #[test]
    fn bad_requests_say_why_with_the_id_when_there_is_one() {
        let err = |text: &str| Request::parse(text).unwrap_err();
        assert_eq!(err("nope").code, ErrorCode::BadRequest);
        assert_eq!(err("[1]").id, None);
        assert_eq!(err(r#"{"op":"subscribe","topic":"a"}"#).id, None);
        assert_eq!(err(r#"{"id":0,"op":"subscribe","topic":"a"}"#).id, None);
        let e = err(r#"{"id":7,"op":"dance","topic":"a"}"#);
        assert_eq!((e.id, e.code), (Some(7), ErrorCode::BadRequest));
        assert_eq!(
            err(r#"{"id":7,"op":"subscribe","topic":""}"#).code,
            ErrorCode::BadTopic
        );
        let long = format!(
            r#"{{"id":7,"op":"subscribe","topic":"{}"}}"#,
            "x".repeat(257)
        );
        assert_eq!(err(&long).code, ErrorCode::BadTopic);
        assert_eq!(
            err(r#"{"id":7,"op":"publish","topic":"a","data":"!!","binary":true}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            err(r#"{"id":7,"op":"subscribe","topic":"a","since":{"epoch":"e-1","offset":1}}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(err(r#"{"id":7,"op":"publish","topic":"a"}"#).id, Some(7));
    }

    /// Every op, with and without its optional fields, reads back what it wrote.
    #[test]
    fn every_request_with_its_options_round_trips() {
        let since = [None, Some(at(0)), Some(at(u64::MAX))];
        let topics = ["a", "hé \"x\" \\ \n\u{1}", &"t".repeat(MAX_TOPIC_LEN)];
        let keys = [None, Some(""), Some("k-1"), Some(&*"k".repeat(MAX_KEY_LEN))];
        let data = [
            Message::text(""),
            Message::text("hé \"x\" \\ / \u{0}\u{1f} 🎉"),
            Message::binary(Vec::<u8>::new()),
            Message::binary((0..=255u8).collect::<Vec<_>>()),
        ];
        let mut requests = Vec::new();
        for topic in topics {
            for since in &since {
                requests.push(Request::Subscribe {
                    id: 1,
                    topic: topic.into(),
                    since: since.clone(),
                });
            }
            requests.push(Request::Unsubscribe {
                id: u64::MAX,
                topic: topic.into(),
            });
            for key in keys {
                for data in &data {
                    requests.push(Request::Publish {
                        id: 7,
                        topic: topic.into(),
                        data: data.clone(),
                        key: key.map(Into::into),
                    });
                }
            }
        }
        for r in requests {
            let json = r.to_json();
            assert_eq!(Request::parse(&json), Ok(r), "{json}");
        }
    }

    /// What other clients may send and the codec accepts: fields in any order, spaces,
    /// unknown fields, nulls for the optional ones, escapes anywhere, a `binary` that is
    /// not `true` (text, as it always was).
    #[test]
    fn requests_are_read_as_json_not_as_this_crate_writes_them() {
        let ok = |text: &str| Request::parse(text).unwrap();
        assert_eq!(
            ok(
                r#" { "topic" : "n\u0065ws", "extra": [1, {"a": null}], "op": "subscribe", "id": 3, "since": null } "#
            ),
            Request::Subscribe {
                id: 3,
                topic: "news".into(),
                since: None
            }
        );
        assert_eq!(
            ok(r#"{"id":3,"op":"subscribe","topic":"t","since":{"offset":4,"x":1,"epoch":"e1"}}"#),
            Request::Subscribe {
                id: 3,
                topic: "t".into(),
                since: Some(at(4))
            }
        );
        assert_eq!(
            ok(r#"{"id":4,"op":"publish","topic":"t","data":"AAE=","binary":"yes","key":null}"#),
            Request::Publish {
                id: 4,
                topic: "t".into(),
                data: Message::text("AAE="),
                key: None
            }
        );
        assert_eq!(
            ok(r#"{"data":"AAE=","binary":true,"op":"publish","id":4,"topic":"t","key":"k"}"#),
            Request::Publish {
                id: 4,
                topic: "t".into(),
                data: Message::binary(vec![0u8, 1]),
                key: Some("k".into())
            }
        );
    }

    /// Each op's own errors, with the id, and the order the checks are made in: the
    /// topic before the op's fields, the data before the key.
    #[test]
    fn every_op_says_which_field_is_wrong() {
        let err = |text: &str| {
            let e = Request::parse(text).unwrap_err();
            (e.id, e.code, e.message)
        };
        let bad = |message: &str| (Some(7), ErrorCode::BadRequest, message.to_owned());
        for (text, expected) in [
            (r#"{"id":7,"op":"subscribe"}"#, bad("no topic")),
            (r#"{"id":7,"op":"subscribe","topic":5}"#, bad("no topic")),
            (
                r#"{"id":7,"op":"unsubscribe","topic":"","since":5}"#,
                (Some(7), ErrorCode::BadTopic, BAD_TOPIC.into()),
            ),
            (r#"{"id":7,"topic":"a"}"#, bad("no op")),
            (r#"{"id":7,"op":1,"topic":"a"}"#, bad("no op")),
            (
                r#"{"id":7,"op":"Subscribe","topic":"a"}"#,
                bad("unknown op \"Subscribe\""),
            ),
            (
                r#"{"id":7,"op":"subscribe","topic":"a","since":5}"#,
                bad(BAD_SINCE),
            ),
            (
                r#"{"id":7,"op":"subscribe","topic":"a","since":["e1",4]}"#,
                bad(BAD_SINCE),
            ),
            (
                r#"{"id":7,"op":"subscribe","topic":"a","since":{"epoch":"e1"}}"#,
                bad(BAD_SINCE),
            ),
            (
                r#"{"id":7,"op":"subscribe","topic":"a","since":{"epoch":"e1","offset":-1}}"#,
                bad(BAD_SINCE),
            ),
            (r#"{"id":7,"op":"publish","topic":"a"}"#, bad(BAD_DATA)),
            (
                r#"{"id":7,"op":"publish","topic":"a","data":[1]}"#,
                bad(BAD_DATA),
            ),
            (
                r#"{"id":7,"op":"publish","topic":"a","data":"!!","binary":true,"key":5}"#,
                bad(BAD_DATA),
            ),
            (
                r#"{"id":7,"op":"publish","topic":"a","data":"x","key":5}"#,
                bad(BAD_KEY),
            ),
            (
                &format!(
                    r#"{{"id":7,"op":"publish","topic":"a","data":"x","key":"{}"}}"#,
                    "k".repeat(MAX_KEY_LEN + 1)
                ),
                bad(BAD_KEY),
            ),
        ] {
            assert_eq!(err(text), expected, "{text}");
        }
        // No id that can be read: none in the answer.
        for text in [
            r#"{"id":0,"op":"publish","topic":"a","data":"x"}"#,
            r#"{"id":-1,"op":"publish","topic":"a","data":"x"}"#,
            r#"{"id":1.0,"op":"publish","topic":"a","data":"x"}"#,
            r#"{"id":"1","op":"publish","topic":"a","data":"x"}"#,
            r#"{"id":18446744073709551616,"op":"publish","topic":"a","data":"x"}"#,
        ] {
            assert_eq!(
                err(text),
                (None, ErrorCode::BadRequest, NO_ID.into()),
                "{text}"
            );
        }
        // Not an object at all, even one serde could read as a tagged enum.
        for text in [r#"["subscribe",1,"a"]"#, "\"x\"", "5", "null", ""] {
            let (id, code, _) = err(text);
            assert_eq!((id, code), (None, ErrorCode::BadRequest), "{text}");
        }
        // A field given twice: refused, with the id.
        let (id, code, message) = err(r#"{"id":7,"op":"subscribe","topic":"a","topic":"b"}"#);
        assert_eq!((id, code), (Some(7), ErrorCode::BadRequest));
        assert!(message.contains("duplicate"), "{message}");
    }

    #[test]
    fn replies_say_what_is_wrong_with_the_id_when_there_is_one() {
        let err = |text: &str| {
            let e = Reply::parse(text).unwrap_err();
            (e.id, e.code)
        };
        assert_eq!(err("[]"), (None, ErrorCode::BadRequest));
        assert_eq!(err(r#"{"id":3}"#), (Some(3), ErrorCode::BadRequest));
        assert_eq!(
            err(r#"{"id":3,"op":"subscribed","topic":"","recovered":true,"epoch":"e","offset":1}"#),
            (Some(3), ErrorCode::BadTopic)
        );
        assert_eq!(
            err(r#"{"id":3,"op":"subscribed","topic":"t","epoch":"e","offset":1}"#),
            (Some(3), ErrorCode::BadRequest)
        );
        assert_eq!(
            err(r#"{"id":3,"op":"published","topic":"t","epoch":"e-1","offset":1}"#),
            (Some(3), ErrorCode::BadRequest)
        );
        assert_eq!(
            err(r#"{"id":3,"op":"error","code":"sunspots"}"#),
            (Some(3), ErrorCode::BadRequest)
        );
        assert_eq!(
            err(r#"{"op":"pub","topic":"t","epoch":"e","offset":1,"data":"!","binary":true}"#),
            (None, ErrorCode::BadRequest)
        );
        assert_eq!(
            err(r#"{"id":3,"op":"dance"}"#),
            (Some(3), ErrorCode::BadRequest)
        );
        // An error without id or message is fine, and `temporary` is the code's.
        assert_eq!(
            Reply::parse(r#"{"op":"error","code":"too_many_requests","temporary":false}"#),
            Ok(Reply::Error {
                id: None,
                code: ErrorCode::TooManyRequests,
                message: String::new()
            })
        );
    }

    #[test]
    fn every_error_code_reads_back_with_its_temporary_flag() {
        let codes = [
            (ErrorCode::BadRequest, false),
            (ErrorCode::BadTopic, false),
            (ErrorCode::TooLarge, false),
            (ErrorCode::TooManyTopics, false),
            (ErrorCode::TooManyRequests, true),
            (ErrorCode::Unavailable, true),
        ];
        for (code, temporary) in codes {
            let reply = Reply::Error {
                id: Some(1),
                code,
                message: "m".into(),
            };
            let json = reply.to_json();
            let value: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(value["code"], code.as_str());
            assert_eq!(value["temporary"], temporary, "{json}");
            assert_eq!(Reply::parse(&json), Ok(reply));
        }
    }

    /// The `pub` written by hand is serde's, byte for byte, in one buffer of its exact
    /// length.
    #[test]
    fn a_pub_frame_is_the_derived_codec_s_in_one_exact_allocation() {
        let topics = [
            "a",
            "hé \"x\" \\ \n\u{1}\u{7f}",
            &"\u{1}".repeat(MAX_TOPIC_LEN),
        ];
        let messages = [
            Message::text(""),
            Message::text("hé \"x\" \\ / \u{0}\u{1f}\u{8}\t\n\u{c}\r 🎉"),
            Message::binary(Vec::<u8>::new()),
            Message::binary(vec![0xffu8; 1]),
            Message::binary(vec![0xfeu8; 2]),
            Message::binary((0..=255u8).cycle().take(100_000).collect::<Vec<_>>()),
        ];
        for topic in topics {
            for message in &messages {
                for position in [
                    at(0),
                    at(9),
                    at(u64::MAX),
                    Position::new(&"z".repeat(64), 10).unwrap(),
                ] {
                    let publication = Publication {
                        position: position.clone(),
                        message: message.clone(),
                    };
                    let frame = pub_frame(topic, &publication);
                    let derived = serde_json::to_string(&ReplyOut::Pub {
                        topic,
                        epoch: position.epoch(),
                        offset: position.offset(),
                        data: DataOut(message),
                        binary: matches!(message, Message::Binary(_)),
                    })
                    .unwrap();
                    assert_eq!(frame, derived);
                    assert_eq!(frame.capacity(), frame.len(), "one exact allocation");
                    let framed = V1Framing.frame(topic, &publication);
                    assert_eq!(framed.as_text(), Some(derived.as_str()));
                    assert_eq!(
                        Reply::parse(&frame),
                        Ok(Reply::Pub {
                            topic: topic.into(),
                            publication
                        })
                    );
                }
            }
        }
    }

    /// The text of a frame without escapes is borrowed until it becomes the message;
    /// with escapes, serde's unescaped string is the message.
    #[test]
    fn a_text_publication_is_copied_once_on_the_way_in() {
        let frame = r#"{"id":1,"op":"publish","topic":"t","data":"plain text"}"#;
        let Ok(RequestIn::Publish { data, .. }) = serde_json::from_str::<RequestIn<'_>>(frame)
        else {
            panic!("not a publish");
        };
        assert!(matches!(data, Cow::Borrowed(_)), "borrowed from the frame");
        let escaped = r#"{"id":1,"op":"publish","topic":"t","data":"with \"quotes\""}"#;
        let Ok(RequestIn::Publish { data, .. }) = serde_json::from_str::<RequestIn<'_>>(escaped)
        else {
            panic!("not a publish");
        };
        let Cow::Owned(unescaped) = data else {
            panic!("escapes are unescaped into a String");
        };
        let at = unescaped.as_ptr();
        let message = message_of(Cow::Owned(unescaped), false).unwrap();
        assert_eq!(
            message.payload().as_ptr(),
            at,
            "that String is the message's bytes"
        );
    }

    /// The limits' rule: a publication up to the bound fits in a frame of
    /// `publish_frame_len`, envelope and all, at its longest.
    #[test]
    fn the_longest_publish_frame_fits_its_bound() {
        for len in [0, 1, 2, 3, 1000, 8 << 20] {
            let longest = Request::Publish {
                id: u64::MAX,
                topic: "\u{1}".repeat(MAX_TOPIC_LEN),
                data: Message::binary(vec![0u8; len]),
                key: Some("\u{1}".repeat(MAX_KEY_LEN)),
            };
            let json = longest.to_json();
            assert!(
                json.len() <= publish_frame_len(len),
                "{} for {len}",
                json.len()
            );
            assert!(
                json.len() + 1600 < publish_frame_len(len),
                "room for other clients"
            );
        }
        for frame in [4096, 5000, 16 << 20, 64 << 20] {
            let most = max_publication_in(frame);
            assert!(publish_frame_len(most) <= frame);
            assert!(publish_frame_len(most + 3) > frame);
        }
        assert_eq!(max_publication_in(100), 0);
    }
}
