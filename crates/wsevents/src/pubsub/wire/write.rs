//! Writing wsevents.v1 frames: serde's derive over borrowed fields, into one buffer
//! sized for the frame (its data counted, the rest bounded), and the `pub` (the hot
//! path: once per publication for all its subscribers) counted exactly and written by
//! hand, byte for byte what the derive writes (the tests compare them).

use base64::Engine;
use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Serialize, Serializer};
use wsevents_proto::Message;

use super::json;
use super::{Reply, Request};
use crate::hub::{Position, Publication};

/// [`Request::to_json`].
pub(super) fn request(request: &Request) -> String {
    let (out, data_len) = match request {
        Request::Subscribe { id, topic, since } => (
            RequestOut::Subscribe {
                id: *id,
                topic,
                since: since.as_ref().map(PositionOut::from),
            },
            0,
        ),
        Request::Unsubscribe { id, topic } => (RequestOut::Unsubscribe { id: *id, topic }, 0),
        Request::Connect { id, token } => (RequestOut::Connect { id: *id, token }, 0),
        Request::Refresh { id, token } => (RequestOut::Refresh { id: *id, token }, 0),
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
    let topic = match request {
        Request::Subscribe { topic, .. }
        | Request::Unsubscribe { topic, .. }
        | Request::Publish { topic, .. } => topic,
        Request::Connect { token, .. } | Request::Refresh { token, .. } => token,
    };
    // One allocation: the data, key and topic counted, the rest (at most 200
    // bytes) bounded.
    to_json_sized(&out, data_len + json::str_len(topic) + 256)
}

/// [`Reply::to_json`].
pub(super) fn reply(reply: &Reply) -> String {
    let out = match reply {
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
        Reply::Connected {
            id,
            client,
            user,
            expires,
        } => ReplyOut::Connected {
            id: *id,
            client,
            user: user.as_deref(),
            expires: *expires,
        },
        Reply::Refreshed { id, expires } => ReplyOut::Refreshed {
            id: *id,
            expires: *expires,
        },
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
        Reply::Error {
            id,
            code,
            message,
            retry_after,
        } => ReplyOut::Error {
            id: *id,
            code: code.as_str(),
            message,
            temporary: code.is_temporary(),
            retry_after_ms: retry_after.map(|d| {
                // Whole milliseconds, rounded up: a client that waits this long is
                // not too early.
                u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
            }),
        },
    };
    to_json_sized(&out, 512 + text_len(reply))
}

/// The length of the strings of an answer, counted for its buffer.
fn text_len(reply: &Reply) -> usize {
    match reply {
        Reply::Subscribed { topic, .. }
        | Reply::Unsubscribed { topic, .. }
        | Reply::Published { topic, .. } => json::str_len(topic),
        Reply::Error { message, .. } => json::str_len(message),
        Reply::Connected { client, user, .. } => {
            json::str_len(client) + user.as_deref().map_or(0, json::str_len)
        }
        Reply::Pub { .. } | Reply::Refreshed { .. } => 0,
    }
}

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
    Connect {
        id: u64,
        token: &'a str,
    },
    Refresh {
        id: u64,
        token: &'a str,
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
pub(super) enum ReplyOut<'a> {
    Subscribed {
        id: u64,
        topic: &'a str,
        recovered: bool,
        epoch: &'a str,
        offset: u64,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
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
    Connected {
        id: u64,
        client: &'a str,
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
    Refreshed {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires: Option<u64>,
    },
}

/// A message as `data`: the text, or the base64 of the bytes (written in chunks
/// straight into the frame, no base64 string first).
pub(super) struct DataOut<'a>(pub(super) &'a Message);

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

/// A `pub` frame, counted then written into one `String` of its exact length. The bytes
/// are serde's (`ReplyOut::Pub`) exactly.
pub(super) fn pub_frame(topic: &str, publication: &Publication) -> String {
    let len = pub_len(topic, publication);
    let mut out = String::with_capacity(len);
    write_pub(&mut out, topic, publication);
    debug_assert_eq!(out.len(), len, "a pub frame counted wrong");
    out
}

/// The length of `publication`'s `pub` frame, exactly.
pub(super) fn pub_len(topic: &str, publication: &Publication) -> usize {
    let position = &publication.position;
    let binary = matches!(publication.message, Message::Binary(_));
    PUB_FIXED
        + json::str_len(topic)
        + json::str_len(position.epoch())
        + json::u64_len(position.offset())
        + data_len(&publication.message)
        + if binary { PUB_BINARY.len() } else { 0 }
}

/// Append `publication`'s `pub` frame to `out` (the hot path: every publication to
/// wsevents.v1 subscribers, written once).
pub(super) fn write_pub(out: &mut String, topic: &str, publication: &Publication) {
    use std::fmt::Write;
    let position = &publication.position;
    out.push_str(r#"{"op":"pub","topic":"#);
    json::push_str(out, topic);
    out.push_str(r#","epoch":"#);
    json::push_str(out, position.epoch());
    out.push_str(r#","offset":"#);
    // Writing into a String cannot fail.
    let _ = write!(out, "{}", position.offset());
    out.push_str(r#","data":"#);
    match &publication.message {
        Message::Text(text) => json::push_str(out, text.as_str()),
        Message::Binary(bytes) => {
            out.push('"');
            BASE64.encode_string(bytes, out);
            out.push('"');
            out.push_str(PUB_BINARY);
        }
    }
    out.push('}');
}
