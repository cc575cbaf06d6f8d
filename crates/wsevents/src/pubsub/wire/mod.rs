//! The messages of wsevents.v1 (docs/protocol.md), both directions, as Rust values:
//! parsed from and written to the JSON text frames the protocol is made of.
//!
//! One module for both ends, so the server ([`PubsubServer`](super::PubsubServer)) and
//! the clients cannot drift apart: every message type has one `parse` and one
//! `to_json`, and the tests check that each reads back what it wrote.
//!
//! The codec is serde's derive: each direction is a `#[serde(tag = "op")]` enum whose
//! variants are the frames, with borrowed fields (`read.rs`: `RequestIn`/`ReplyIn`;
//! `write.rs`: `RequestOut`/`ReplyOut`), so a field cannot be read on one side and
//! forgotten on the other. The public [`Request`] and [`Reply`] own their data and are checked
//! as they are made from them (ids, topic lengths, positions, keys, base64).
//!
//! A publication's data is copied **once on the way in** (a text `data` borrowed from
//! the frame into the message's bytes; with escapes, serde_json's unescaped copy *is*
//! the message's bytes; binary: base64-decoded into them) and **once on the way out**:
//! a `pub` ([`V1Framing`], made once per publication for all its subscribers) is
//! counted first and written into one buffer of its exact size, behind room for the
//! frame's header, which becomes the frame the hub queues without another copy.
//!
//! ```text
//!  frame text ──serde_json──► RequestIn<'frame> ──check──► Request  (data: one copy)
//!  Publication ──count, then write──► one buffer ──► the hub's frame  (data: one copy)
//! ```

use wsevents_proto::{Message, PreparedMessage};

use crate::hub::{Framing, Position, Publication};

mod json;
mod read;
mod write;

/// The subprotocol name: `wsevents.v1`.
pub const PROTOCOL: &str = "wsevents.v1";

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// The longest connection token taken by `connect` and `refresh`, in bytes: 16 KiB
/// (a JWT with a few hundred topic patterns); longer is `bad_request`.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

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
    /// Present a connection token (the first request, when the client has one).
    Connect {
        /// The request's id.
        id: u64,
        /// The token (a JWT for `wsevents serve`).
        token: String,
    },
    /// Replace the connection's token with a fresh one, before it expires.
    Refresh {
        /// The request's id.
        id: u64,
        /// The new token (for the same user).
        token: String,
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
    /// The answer to `unsubscribe`; without an id, the server unsubscribed the
    /// connection by itself (its operator's [`PubsubServer::unsubscribe_user`]).
    ///
    /// [`PubsubServer::unsubscribe_user`]: super::PubsubServer::unsubscribe_user
    Unsubscribed {
        /// The request's id; `None`: the server's own doing.
        id: Option<u64>,
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
        /// How long to wait before retrying (`retry_after_ms` on the wire, whole
        /// milliseconds): given with [`ErrorCode::RateLimited`].
        retry_after: Option<std::time::Duration>,
    },
    /// A publication (`pub`).
    Pub {
        /// The topic.
        topic: String,
        /// Its position and message.
        publication: Publication,
    },
    /// The answer to `connect`: who the connection is now.
    Connected {
        /// The request's id.
        id: u64,
        /// The connection's id on the server (for logs and support).
        client: String,
        /// The token's user (`None`: anonymous).
        user: Option<String>,
        /// When the token expires, in seconds since 1970 (`None`: never); refresh
        /// before.
        expires: Option<u64>,
    },
    /// The answer to `refresh`.
    Refreshed {
        /// The request's id.
        id: u64,
        /// When the new token expires, in seconds since 1970 (`None`: never).
        expires: Option<u64>,
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
    /// for the one before, publishes not yet answered): nothing was done; retry
    /// after a delay (with the same key for a publish).
    TooManyRequests,
    /// The broker is unreachable: nothing was stored; retry with the same key.
    Unavailable,
    /// Past the connection's publish rate (a token bucket: a sustained rate and a
    /// burst): nothing was done; retry after the error's `retry_after` (with the same
    /// key).
    RateLimited,
    /// The connection's token is refused (bad, expired, for another user), or it
    /// has none where one is required; the server closes the connection
    /// ([`UNAUTHORIZED_CLOSE_CODE`](super::auth::UNAUTHORIZED_CLOSE_CODE) or
    /// [`TOKEN_EXPIRED_CLOSE_CODE`](super::auth::TOKEN_EXPIRED_CLOSE_CODE)).
    Unauthorized,
    /// The connection may not do this to this topic: nothing was done; the
    /// connection goes on. Not retried.
    Forbidden,
    /// The connection's user has as many connections on this server as it may
    /// ([`PubsubServer::max_connections_per_user`](super::PubsubServer::max_connections_per_user)):
    /// the connection is closed with
    /// [`TOO_MANY_CONNECTIONS_CLOSE_CODE`](super::TOO_MANY_CONNECTIONS_CLOSE_CODE);
    /// a client reconnects later, with a backoff.
    TooManyConnections,
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
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyConnections => "too_many_connections",
        }
    }

    /// Whether retrying later may succeed (the `error`'s `temporary`).
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorCode::TooManyRequests
                | ErrorCode::Unavailable
                | ErrorCode::RateLimited
                | ErrorCode::TooManyConnections
        )
    }

    fn parse(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "bad_request" => ErrorCode::BadRequest,
            "bad_topic" => ErrorCode::BadTopic,
            "too_large" => ErrorCode::TooLarge,
            "too_many_topics" => ErrorCode::TooManyTopics,
            "too_many_requests" => ErrorCode::TooManyRequests,
            "unavailable" => ErrorCode::Unavailable,
            "rate_limited" => ErrorCode::RateLimited,
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            "too_many_connections" => ErrorCode::TooManyConnections,
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
        read::request(text)
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        write::request(self)
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
        read::reply(text)
    }

    /// The frame's JSON.
    pub fn to_json(&self) -> String {
        write::reply(self)
    }

    /// The frame: a text message of the JSON.
    pub fn to_message(&self) -> Message {
        Message::text(self.to_json())
    }
}

/// The hub's framing for wsevents.v1 subscribers: each publication as a `pub`, made
/// once per publication for all the subscribers of the topic. The hub's
/// [`prepare`](Framing::prepare) counts the frame, then writes it once, straight
/// behind room for its header ([`PreparedMessage::text_with`]): one allocation, and
/// the data copied once on its way out.
#[derive(Debug, Clone, Copy, Default)]
pub struct V1Framing;

impl Framing for V1Framing {
    fn frame(&self, topic: &str, publication: &Publication) -> Message {
        Message::text(write::pub_frame(topic, publication))
    }

    fn prepare(&self, topic: &str, publication: &Publication) -> PreparedMessage {
        PreparedMessage::text_with(write::pub_len(topic, publication), |out| {
            write::write_pub(out, topic, publication);
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::Value;

    use super::read::{
        BAD_DATA, BAD_KEY, BAD_SINCE, BAD_TOKEN, BAD_TOPIC, NO_ID, RequestIn, message_of,
    };
    use super::write::{DataOut, ReplyOut, pub_frame};
    use super::*;
    use crate::hub::MAX_KEY_LEN;

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
            Request::Connect {
                id: 6,
                token: "a.b.c".into(),
            },
            Request::Refresh {
                id: 7,
                token: "d.e.f".into(),
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
                id: Some(3),
                topic: "a".into(),
            },
            Reply::Unsubscribed {
                id: None,
                topic: "a".into(),
            },
            Reply::Connected {
                id: 1,
                client: "00ff".into(),
                user: Some("alice".into()),
                expires: Some(1_800_000_000),
            },
            Reply::Connected {
                id: 1,
                client: "00ff".into(),
                user: None,
                expires: None,
            },
            Reply::Refreshed {
                id: 2,
                expires: Some(1_800_000_060),
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
                retry_after: None,
            },
            Reply::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: "?".into(),
                retry_after: None,
            },
            Reply::Error {
                id: Some(6),
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after: Some(std::time::Duration::from_millis(1250)),
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
        // A token that is not a string, or too long: refused with the id.
        for text in [
            r#"{"id":7,"op":"connect"}"#.to_owned(),
            r#"{"id":7,"op":"refresh","token":5}"#.to_owned(),
            format!(
                r#"{{"id":7,"op":"connect","token":"{}"}}"#,
                "t".repeat(MAX_TOKEN_LEN + 1)
            ),
        ] {
            assert_eq!(err(&text), bad(BAD_TOKEN), "{text}");
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
                message: String::new(),
                retry_after: None,
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
            (ErrorCode::RateLimited, true),
            (ErrorCode::Unauthorized, false),
            (ErrorCode::Forbidden, false),
            (ErrorCode::TooManyConnections, true),
        ];
        for (code, temporary) in codes {
            let reply = Reply::Error {
                id: Some(1),
                code,
                message: "m".into(),
                retry_after: None,
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
                    let prepared = V1Framing.prepare(topic, &publication);
                    assert_eq!(prepared, PreparedMessage::new(&framed), "written in place");
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
