//! What a [`Connection`](crate::Connection) hands out: events, messages and the record of
//! how the connection ended.
//!
//! Messages carry their payload as [`Bytes`] taken straight from the receive buffer
//! (single-frame messages are never copied; fragmented ones are copied once, into the
//! assembled message). Text is [`Utf8Bytes`]: bytes that have already been validated, so
//! reading them as `&str` costs nothing.

use std::fmt;
use std::ops::Deref;
use std::time::Instant;

use bytes::Bytes;

use crate::close::{CloseCode, CloseFrame};
use crate::error::Error;
use crate::handshake::Request;

/// Something that happened on a connection, handed out by
/// [`Connection::poll_event`](crate::Connection::poll_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Server role: a valid upgrade request arrived. Answer it with
    /// [`Connection::accept`](crate::Connection::accept) or
    /// [`Connection::reject`](crate::Connection::reject).
    Request(Box<Request>),
    /// The opening handshake is complete; the connection is open.
    Open,
    /// A whole message arrived.
    Message(Message),
    /// A piece of a message arrived (only when
    /// [`Config::stream_fragments`](crate::Config::stream_fragments) is on).
    Fragment(Fragment),
    /// A ping arrived. When auto-pong is on (the default) the pong is already queued.
    Ping(Bytes),
    /// A pong arrived; it says when the ping it answers was sent, if this end recorded
    /// that ping.
    Pong(Pong),
    /// The connection failed: the peer broke the protocol, the handshake failed or
    /// timed out. [`Event::Closed`] follows.
    Error(Error),
    /// The connection is closed: no frame will be read or sent any more. Always the last
    /// event, and always exactly once.
    Closed(Closure),
}

/// A pong received, with the time of the ping it answers when that is known.
///
/// `ping_sent_at` is `Some(t)` when the payload equals that of the latest ping this end
/// recorded (sent with [`Connection::ping_at`](crate::Connection::ping_at), or a
/// keepalive ping); the record is then cleared, so a second pong with the same payload
/// gets `None`. The round-trip time is the caller's own `now - t`: the core reads no
/// clock. Unsolicited pongs, pongs to unrecorded pings ([`Connection::ping`]) and
/// pongs to an older ping get `None`.
///
/// [`Connection::ping`]: crate::Connection::ping
///
/// ```
/// use std::time::{Duration, Instant};
/// use bytes::Bytes;
/// use wsevents_proto::{Config, Connection, Event, Role};
/// let sent = Instant::now();
/// let mut client = Connection::open(Role::Client, Config::default());
/// client.ping_at(Bytes::from_static(b"42"), sent).unwrap();
/// client.handle_input(b"\x8a\x0242"); // the server's pong
/// let Some(Event::Pong(pong)) = client.poll_event() else { panic!() };
/// assert_eq!(pong.payload, &b"42"[..]);
/// let rtt = (sent + Duration::from_millis(3)) - pong.ping_sent_at.unwrap();
/// assert_eq!(rtt, Duration::from_millis(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pong {
    /// The pong's payload.
    pub payload: Bytes,
    /// When the ping with this payload was sent, if it was this end's latest recorded
    /// ping.
    pub ping_sent_at: Option<Instant>,
}

/// A whole WebSocket message.
///
/// ```
/// use wsevents_proto::Message;
/// let text = Message::text("hello");
/// assert_eq!(text.as_text(), Some("hello"));
/// assert_eq!(Message::binary(vec![1, 2, 3]).payload().len(), 3);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// The payload bytes, whatever the kind.
    pub fn payload(&self) -> &Bytes {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(data) => data,
        }
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The kind of this message.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => f.debug_tuple("Text").field(&text.as_str()).finish(),
            Message::Binary(data) => write!(f, "Binary({} bytes)", data.len()),
        }
    }
}

/// Text or binary: the two kinds of data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

/// A piece of a message, for callers that stream large messages instead of waiting for
/// them whole.
///
/// Text fragments are validated as they come, but a fragment may end inside a
/// multi-byte character; only the whole message is guaranteed to be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The kind of the message this piece belongs to.
    pub kind: MessageKind,
    /// The payload of this piece.
    pub data: Bytes,
    /// Whether this is the first piece of its message.
    pub first: bool,
    /// Whether this is the last piece of its message.
    pub fin: bool,
}

/// Bytes that are valid UTF-8: the payload of a text message, readable as `&str`
/// without a copy or a second validation.
///
/// ```
/// use wsevents_proto::Utf8Bytes;
/// let text = Utf8Bytes::from("κόσμε");
/// assert_eq!(text.as_str(), "κόσμε");
/// assert!(Utf8Bytes::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wrap bytes the caller has already validated.
    ///
    /// Only for bytes that passed validation inside this crate; everything else goes
    /// through `TryFrom<Bytes>`.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// The text.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks UTF-8 (`From<&str>`, `From<String>`,
        // `TryFrom<Bytes>`) or takes bytes this crate has validated (`from_validated`),
        // and the inner `Bytes` is never exposed mutably.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// Compares the text: `utf8 == "text"` (and the reverse).
///
/// ```
/// use wsevents_proto::Utf8Bytes;
/// let text = Utf8Bytes::from("hi");
/// assert!(text == "hi" && "hi" == text && text == String::from("hi"));
/// assert!(&text == "hi");
/// ```
impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Utf8Bytes {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Utf8Bytes> for str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Utf8Bytes> for &str {
    fn eq(&self, other: &Utf8Bytes) -> bool {
        *self == other.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(text: &String) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

/// Who started the end of a connection (h2's `Initiator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This end's caller: `close`, or `fail` while connecting.
    Local,
    /// The peer: its close frame, or its transport ending.
    Remote,
    /// This library: the peer broke the protocol, or a timeout ran out.
    Library,
}

/// How a connection ended: the record behind the browser's `CloseEvent`.
///
/// `code()`, `reason()` and `was_clean()` follow from what was sent and received, not
/// from guesses: a clean close is one where close frames went both ways; the code is
/// the one in the peer's close frame, 1005 if that frame had none, 1006 if no close
/// frame was received.
///
/// ```
/// use wsevents_proto::{CloseCode, CloseFrame, Closure, Initiator};
/// let closure = Closure {
///     initiator: Initiator::Remote,
///     sent: Some(CloseFrame::new(CloseCode::NORMAL, "")),
///     received: Some(CloseFrame::new(CloseCode::NORMAL, "bye")),
/// };
/// assert!(closure.was_clean());
/// assert_eq!((closure.code(), closure.reason()), (CloseCode::NORMAL, "bye"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Who started the end.
    pub initiator: Initiator,
    /// The close frame this end sent, if any.
    pub sent: Option<CloseFrame>,
    /// The close frame the peer sent, if any.
    pub received: Option<CloseFrame>,
}

impl Closure {
    /// Whether close frames went both ways.
    pub fn was_clean(&self) -> bool {
        self.sent.is_some() && self.received.is_some()
    }

    /// The close code to report: the peer's, 1005 for an empty close frame, 1006 when
    /// none was received.
    pub fn code(&self) -> CloseCode {
        match &self.received {
            Some(frame) => frame.reported_code(),
            None => CloseCode::ABNORMAL,
        }
    }

    /// The peer's reason, empty when it gave none.
    pub fn reason(&self) -> &str {
        self.received
            .as_ref()
            .map_or("", |frame| frame.reason.as_str())
    }
}
