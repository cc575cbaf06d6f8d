//! The messages of wsevents.v1 (docs/protocol.md), both directions, as Rust values:
//! parsed from and written to the JSON text frames the protocol is made of.
//!
//! One module for both ends, so the server ([`PubsubServer`](super::PubsubServer)) and the clients cannot
//! drift apart: every message type has one `parse` and one `to_json`, and the tests
//! check that each reads back what it wrote.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use wsevents_proto::Message;

use crate::hub::{Framing, Position, Publication};

/// The subprotocol name: `wsevents.v1`.
pub const PROTOCOL: &str = "wsevents.v1";

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

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
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_temporary(self) -> bool {
        self == ErrorCode::Unavailable
    }

    fn parse(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "bad_request" => ErrorCode::BadRequest,
            "bad_topic" => ErrorCode::BadTopic,
            "too_large" => ErrorCode::TooLarge,
            "too_many_topics" => ErrorCode::TooManyTopics,
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
}

impl Request {
    /// Read a client's frame.
    ///
    /// ```
    /// use wsevents::pubsub::wire::Request;
    /// let r = Request::parse(r#"{"id":1,"op":"subscribe","topic":"news","since":{"epoch":"e1","offset":4}}"#)?;
    /// assert!(matches!(r, Request::Subscribe { id: 1, since: Some(_), .. }));
    /// # Ok::<(), wsevents::pubsub::wire::WireError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Request, WireError> {
        let object = object_of(text)?;
        let id = object
            .get("id")
            .and_then(Value::as_u64)
            .filter(|&id| id >= 1);
        let Some(id) = id else {
            return Err(WireError::new(
                None,
                ErrorCode::BadRequest,
                "no id (an integer >= 1)",
            ));
        };
        let bad = |message: &str| WireError::new(Some(id), ErrorCode::BadRequest, message);
        let op = object
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no op"))?;
        let topic = topic_of(&object, Some(id))?;
        match op {
            "subscribe" => {
                let since = match object.get("since") {
                    None | Some(Value::Null) => None,
                    Some(since) => {
                        Some(position_of(since).ok_or_else(|| bad("since is {epoch, offset}"))?)
                    }
                };
                Ok(Request::Subscribe { id, topic, since })
            }
            "unsubscribe" => Ok(Request::Unsubscribe { id, topic }),
            "publish" => {
                let data =
                    data_of(&object).ok_or_else(|| bad("data is a string (base64 when binary)"))?;
                let key = match object.get("key") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(key)) if key.len() <= crate::hub::MAX_KEY_LEN => {
                        Some(key.clone())
                    }
                    Some(_) => return Err(bad("key is a string of at most 128 bytes")),
                };
                Ok(Request::Publish {
                    id,
                    topic,
                    data,
                    key,
                })
            }
            other => Err(bad(&format!("unknown op {other:?}"))),
        }
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        let value = match self {
            Request::Subscribe { id, topic, since } => {
                let mut v = json!({"id": id, "op": "subscribe", "topic": topic});
                if let Some(since) = since {
                    v["since"] = json!({"epoch": since.epoch(), "offset": since.offset()});
                }
                v
            }
            Request::Unsubscribe { id, topic } => {
                json!({"id": id, "op": "unsubscribe", "topic": topic})
            }
            Request::Publish {
                id,
                topic,
                data,
                key,
            } => {
                let mut v = json!({"id": id, "op": "publish", "topic": topic});
                put_data(&mut v, data);
                if let Some(key) = key {
                    v["key"] = json!(key);
                }
                v
            }
        };
        value.to_string()
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
        let object = object_of(text)?;
        let id = object.get("id").and_then(Value::as_u64);
        let bad = |message: &str| WireError::new(id, ErrorCode::BadRequest, message);
        let op = object
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no op"))?;
        let need_id = || id.ok_or_else(|| bad("no id"));
        let position =
            || position_of(&Value::Object(object.clone())).ok_or_else(|| bad("no position"));
        Ok(match op {
            "subscribed" => Reply::Subscribed {
                id: need_id()?,
                topic: topic_of(&object, id)?,
                recovered: object
                    .get("recovered")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| bad("no recovered"))?,
                position: position()?,
            },
            "unsubscribed" => Reply::Unsubscribed {
                id: need_id()?,
                topic: topic_of(&object, id)?,
            },
            "published" => Reply::Published {
                id: need_id()?,
                topic: topic_of(&object, id)?,
                position: position()?,
            },
            "error" => Reply::Error {
                id,
                code: object
                    .get("code")
                    .and_then(Value::as_str)
                    .and_then(ErrorCode::parse)
                    .ok_or_else(|| bad("an unknown error code"))?,
                message: object
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            "pub" => Reply::Pub {
                topic: topic_of(&object, id)?,
                publication: Publication {
                    position: position()?,
                    message: data_of(&object).ok_or_else(|| bad("no data"))?,
                },
            },
            other => return Err(bad(&format!("unknown op {other:?}"))),
        })
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        let at = |v: &mut Value, p: &Position| {
            v["epoch"] = json!(p.epoch());
            v["offset"] = json!(p.offset());
        };
        let value = match self {
            Reply::Subscribed {
                id,
                topic,
                recovered,
                position,
            } => {
                let mut v =
                    json!({"id": id, "op": "subscribed", "topic": topic, "recovered": recovered});
                at(&mut v, position);
                v
            }
            Reply::Unsubscribed { id, topic } => {
                json!({"id": id, "op": "unsubscribed", "topic": topic})
            }
            Reply::Published {
                id,
                topic,
                position,
            } => {
                let mut v = json!({"id": id, "op": "published", "topic": topic});
                at(&mut v, position);
                v
            }
            Reply::Error { id, code, message } => json!({
                "id": id, "op": "error", "code": code.as_str(), "message": message,
                "temporary": code.is_temporary(),
            }),
            Reply::Pub { topic, publication } => {
                let mut v = json!({"op": "pub", "topic": topic});
                at(&mut v, &publication.position);
                put_data(&mut v, &publication.message);
                v
            }
        };
        value.to_string()
    }

    /// The frame: a text message of the JSON.
    pub fn to_message(&self) -> Message {
        Message::text(self.to_json())
    }
}

/// The hub's framing for wsevents.v1 subscribers: each publication as a `pub`.
#[derive(Debug, Clone, Copy, Default)]
pub struct V1Framing;

impl Framing for V1Framing {
    fn frame(&self, topic: &str, publication: &Publication) -> Message {
        Reply::Pub {
            topic: topic.to_owned(),
            publication: publication.clone(),
        }
        .to_message()
    }
}

fn object_of(text: &str) -> Result<Map<String, Value>, WireError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(WireError::new(
            None,
            ErrorCode::BadRequest,
            "not a JSON object",
        )),
        Err(e) => Err(WireError::new(
            None,
            ErrorCode::BadRequest,
            format!("not JSON: {e}"),
        )),
    }
}

fn topic_of(object: &Map<String, Value>, id: Option<u64>) -> Result<String, WireError> {
    match object.get("topic") {
        Some(Value::String(topic)) if !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN => {
            Ok(topic.clone())
        }
        Some(Value::String(_)) => Err(WireError::new(
            id,
            ErrorCode::BadTopic,
            "a topic is 1 to 256 bytes",
        )),
        _ => Err(WireError::new(id, ErrorCode::BadRequest, "no topic")),
    }
}

fn position_of(value: &Value) -> Option<Position> {
    let epoch = value.get("epoch")?.as_str()?;
    let offset = value.get("offset")?.as_u64()?;
    Position::new(epoch, offset).ok()
}

fn data_of(object: &Map<String, Value>) -> Option<Message> {
    let data = object.get("data")?.as_str()?;
    if object
        .get("binary")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        let bytes = BASE64.decode(data).ok()?;
        Some(Message::Binary(Bytes::from(bytes)))
    } else {
        Some(Message::text(data.to_owned()))
    }
}

fn put_data(v: &mut Value, data: &Message) {
    match data {
        Message::Text(text) => v["data"] = json!(text.as_str()),
        Message::Binary(bytes) => {
            v["data"] = json!(BASE64.encode(bytes));
            v["binary"] = json!(true);
        }
    }
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
}
