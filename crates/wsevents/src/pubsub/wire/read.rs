//! Reading wsevents.v1 frames: serde's derive over borrowed fields (a text `data`
//! stays in the frame until it becomes the message's bytes), then the checks serde's
//! types do not make (ids, topic lengths, positions, keys, base64). A frame serde
//! refuses is read again, by hand (`diagnose`), so that the answer names the field that
//! is wrong in the order the protocol gives, with the id whenever it can be read.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use wsevents_proto::Message;

use super::{ErrorCode, MAX_TOKEN_LEN, MAX_TOPIC_LEN, Reply, Request, WireError};
use crate::hub::{MAX_KEY_LEN, Position, Publication};

// What the errors say, one place for the fast path and the diagnosis.
pub(super) const NO_ID: &str = "no id (an integer >= 1)";
pub(super) const BAD_SINCE: &str = "since is {epoch, offset}";
pub(super) const BAD_DATA: &str = "data is a string (base64 when binary)";
pub(super) const BAD_KEY: &str = "key is a string of at most 128 bytes";
pub(super) const BAD_TOPIC: &str = "a topic is 1 to 256 bytes";
pub(super) const BAD_TOKEN: &str = "token is a string of at most 16384 bytes";

/// [`Request::parse`].
pub(super) fn request(text: &str) -> Result<Request, WireError> {
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

/// [`Reply::parse`].
pub(super) fn reply(text: &str) -> Result<Reply, WireError> {
    if !is_object(text) {
        return Err(diagnose(text, None, &ReplyRules));
    }
    match serde_json::from_str::<ReplyIn<'_>>(text) {
        Ok(reply) => reply.check(),
        Err(error) => Err(diagnose(text, Some(&error), &ReplyRules)),
    }
}

/// A client's frame as serde reads it: borrowed from the frame where it can be (a
/// string with escapes is unescaped into its own `String`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum RequestIn<'a> {
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
    Connect {
        id: u64,
        token: String,
    },
    Refresh {
        id: u64,
        token: String,
    },
}

impl RequestIn<'_> {
    /// The checks serde's types do not make, in the order of [`Request::parse`]'s doc.
    fn check(self) -> Result<Request, WireError> {
        let (id, topic) = match &self {
            RequestIn::Subscribe { id, topic, .. }
            | RequestIn::Unsubscribe { id, topic }
            | RequestIn::Publish { id, topic, .. } => (*id, Some(topic)),
            RequestIn::Connect { id, .. } | RequestIn::Refresh { id, .. } => (*id, None),
        };
        if id == 0 {
            return Err(WireError::bad(None, NO_ID));
        }
        if let Some(topic) = topic {
            check_topic(topic, Some(id))?;
        }
        let bad = |message| WireError::bad(Some(id), message);
        Ok(match self {
            RequestIn::Connect { token, .. } | RequestIn::Refresh { token, .. }
                if token.len() > MAX_TOKEN_LEN =>
            {
                return Err(bad(BAD_TOKEN));
            }
            RequestIn::Connect { token, .. } => Request::Connect { id, token },
            RequestIn::Refresh { token, .. } => Request::Refresh { id, token },
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
        #[serde(default)]
        id: Option<u64>,
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
        #[serde(default)]
        retry_after_ms: Option<u64>,
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
    Connected {
        id: u64,
        client: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        expires: Option<u64>,
    },
    Refreshed {
        id: u64,
        #[serde(default)]
        expires: Option<u64>,
    },
}

impl ReplyIn<'_> {
    fn check(self) -> Result<Reply, WireError> {
        let id = match &self {
            ReplyIn::Subscribed { id, .. }
            | ReplyIn::Published { id, .. }
            | ReplyIn::Connected { id, .. }
            | ReplyIn::Refreshed { id, .. } => Some(*id),
            ReplyIn::Error { id, .. } | ReplyIn::Unsubscribed { id, .. } => *id,
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
                topic: checked_topic(topic, id)?,
            },
            ReplyIn::Connected {
                id,
                client,
                user,
                expires,
            } => Reply::Connected {
                id,
                client,
                user,
                expires,
            },
            ReplyIn::Refreshed { id, expires } => Reply::Refreshed { id, expires },
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
            ReplyIn::Error {
                id,
                code,
                message,
                retry_after_ms,
            } => Reply::Error {
                id,
                code: ErrorCode::parse(&code).ok_or_else(|| bad("an unknown error code"))?,
                message: message.unwrap_or_default(),
                retry_after: retry_after_ms.map(std::time::Duration::from_millis),
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
pub(super) struct PositionIn {
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
pub(super) fn message_of(data: Cow<'_, str>, binary: bool) -> Option<Message> {
    if binary {
        let bytes = BASE64.decode(data.as_bytes()).ok()?;
        return Some(Message::Binary(Bytes::from(bytes)));
    }
    Some(Message::text(data.into_owned()))
}

pub(super) fn is_true(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
}

pub(super) fn check_topic(topic: &str, id: Option<u64>) -> Result<(), WireError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(WireError::new(id, ErrorCode::BadTopic, BAD_TOPIC));
    }
    Ok(())
}

pub(super) fn checked_topic(topic: Cow<'_, str>, id: Option<u64>) -> Result<String, WireError> {
    check_topic(&topic, id)?;
    Ok(topic.into_owned())
}

/// Whether `text` is a JSON object, from its first byte: the rest is serde's to judge.
pub(super) fn is_object(text: &str) -> bool {
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
        match op {
            "subscribe" | "unsubscribe" | "publish" => Some(true),
            "connect" | "refresh" => Some(false),
            _ => None,
        }
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
            "connect" | "refresh" => object
                .get("token")
                .and_then(Value::as_str)
                .is_none_or(|token| token.len() > MAX_TOKEN_LEN)
                .then_some(BAD_TOKEN),
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
            "error" | "connected" | "refreshed" => Some(false),
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
