//! What a message carries, in the browser's vocabulary: text as [`Utf8Bytes`], binary
//! as a [`Blob`] or an `ArrayBuffer` ([`Bytes`]) as [`BinaryType`] says, and what
//! [`send`](crate::WebSocket::send) accepts.
//!
//! **No copies.** A received payload reaches the handler as the very bytes the protocol
//! core cut out of its receive buffer (reference-counted [`Bytes`]): text is the core's
//! [`Utf8Bytes`], validated once by the core and read as `&str` without a second check;
//! an `ArrayBuffer` is the core's `Bytes`; a [`Blob`] wraps them. Sending them back
//! ([`send`](crate::WebSocket::send) of a [`Data`], a `&Data`, [`Utf8Bytes`], `Bytes`
//! or a `Blob`) hands the same bytes to the send queue: cloning any of them is a
//! reference count, never a copy. Only `&str`, `&[u8]` and `&String` are copied on
//! `send` (they are borrowed); `String` and `Vec<u8>` are moved in.

use std::fmt;

use bytes::Bytes;
use wsevents_proto::{Message, Utf8Bytes};

/// How binary messages are handed to handlers (`ws.binaryType`).
///
/// ```
/// assert_eq!(wsevents::BinaryType::default(), wsevents::BinaryType::Blob);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BinaryType {
    /// As a [`Blob`] (the browser's default).
    #[default]
    Blob,
    /// As an `ArrayBuffer`: [`Bytes`], the core's own, without a copy.
    ArrayBuffer,
}

/// The data of a [`MessageEvent`](crate::MessageEvent) (`e.data`).
///
/// **No copies.** Every variant holds the bytes the protocol core cut out of its
/// receive buffer, shared (reference-counted), not copied: `Data::Text` the core's
/// [`Utf8Bytes`] (validated once, by the core, as the frames arrived; it derefs to
/// `&str` with no second check), `Data::ArrayBuffer` its [`Bytes`], `Data::Blob` a
/// [`Blob`] around them. Cloning a `Data` clones a reference count, and
/// [`send`](crate::WebSocket::send) takes a `Data` or a `&Data` back as it came: an
/// echo is `ws.send(&e.data)`, text as text and binary as binary, the same bytes
/// handed to the send queue. `&*text` or `text.as_str()` reads a text as a `&str`,
/// `&buffer[..]` an array buffer as a `&[u8]`.
///
/// ```
/// use wsevents::{Blob, Data};
/// let data = Data::Blob(Blob::from("blob contents"));
/// assert!(matches!(&data, Data::Blob(b) if b.size() == 13));
///
/// let text = Data::Text("κόσμε".into());
/// assert!(matches!(&text, Data::Text(t) if t == "κόσμε"));
/// assert_eq!(text.as_text(), Some("κόσμε"));
///
/// let buffer = Data::ArrayBuffer(bytes::Bytes::from_static(b"\x01\x02"));
/// assert_eq!(buffer.as_bytes(), [1, 2]);
/// assert_eq!(buffer.to_bytes(), bytes::Bytes::from_static(b"\x01\x02"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Data {
    /// A text message (`typeof e.data === "string"`): UTF-8 the core validated, read it
    /// as `&str` (`text.as_str()`, or through `Deref`).
    Text(Utf8Bytes),
    /// A binary message while `binaryType` is `"blob"`.
    Blob(Blob),
    /// A binary message while `binaryType` is `"arraybuffer"`: the core's bytes.
    ArrayBuffer(Bytes),
}

impl Data {
    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(text) => Some(text.as_str()),
            _ => None,
        }
    }

    /// The bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Text(text) => text.as_bytes(),
            Data::Blob(blob) => &blob.data,
            Data::ArrayBuffer(buffer) => buffer,
        }
    }

    /// The bytes, whatever the kind, shared (a reference count, not a copy).
    ///
    /// ```
    /// let data = wsevents::Data::Text("hello".into());
    /// let bytes: bytes::Bytes = data.to_bytes();
    /// assert_eq!(&bytes[..], b"hello");
    /// ```
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Data::Text(text) => text.as_bytes().clone(),
            Data::Blob(blob) => blob.data.clone(),
            Data::ArrayBuffer(buffer) => buffer.clone(),
        }
    }

    /// The bytes, whatever the kind, owned, without a copy.
    ///
    /// ```
    /// let data = wsevents::Data::ArrayBuffer(bytes::Bytes::from_static(b"\x00\xff"));
    /// assert_eq!(data.into_bytes(), bytes::Bytes::from_static(b"\x00\xff"));
    /// ```
    pub fn into_bytes(self) -> Bytes {
        match self {
            Data::Text(text) => text.into_bytes(),
            Data::Blob(blob) => blob.data,
            Data::ArrayBuffer(buffer) => buffer,
        }
    }
}

/// Immutable binary data with a MIME type, like the browser's `Blob`.
///
/// The seed's `new Blob("blob contents")` is `new Blob(["blob contents"])` in valid
/// JavaScript, and `Blob::from("blob contents")` here.
///
/// ```
/// use wsevents::Blob;
/// let blob = Blob::new(&b"hello world"[..], "text/plain");
/// assert_eq!(blob.size(), 11);
/// assert_eq!(blob.type_(), "text/plain");
/// assert_eq!(blob.slice(0, 5).text(), "hello");
/// assert_eq!(&blob.bytes()[6..], b"world");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob {
    data: Bytes,
    type_: String,
}

impl Blob {
    /// A blob of `data` with MIME type `type_` (may be empty).
    pub fn new(data: impl Into<Bytes>, type_: impl Into<String>) -> Self {
        Blob {
            data: data.into(),
            type_: type_.into(),
        }
    }

    /// A blob made of several parts, concatenated (`new Blob([a, b, c])`).
    ///
    /// ```
    /// let blob = wsevents::Blob::from_parts([&b"blob "[..], b"contents"], "");
    /// assert_eq!(blob.text(), "blob contents");
    /// ```
    pub fn from_parts<'a>(
        parts: impl IntoIterator<Item = &'a [u8]>,
        type_: impl Into<String>,
    ) -> Self {
        let data: Vec<u8> = parts.into_iter().flatten().copied().collect();
        Blob::new(data, type_)
    }

    /// Its size in bytes (`blob.size`).
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Its MIME type, empty when unknown (`blob.type`).
    pub fn type_(&self) -> &str {
        &self.type_
    }

    /// Its bytes (`blob.arrayBuffer()`), without a copy.
    pub fn bytes(&self) -> Bytes {
        self.data.clone()
    }

    /// Its bytes decoded as UTF-8, invalid sequences replaced (`blob.text()`).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The bytes from `start` to `end`, clamped to the blob (`blob.slice(start, end)`),
    /// without a copy.
    pub fn slice(&self, start: usize, end: usize) -> Blob {
        let end = end.min(self.data.len());
        let start = start.min(end);
        Blob {
            data: self.data.slice(start..end),
            type_: String::new(),
        }
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Blob {{ size: {}, type: {:?} }}",
            self.data.len(),
            self.type_
        )
    }
}

impl From<&str> for Blob {
    fn from(text: &str) -> Self {
        Blob::new(Bytes::copy_from_slice(text.as_bytes()), "")
    }
}

impl From<Vec<u8>> for Blob {
    fn from(data: Vec<u8>) -> Self {
        Blob::new(data, "")
    }
}

impl From<Bytes> for Blob {
    fn from(data: Bytes) -> Self {
        Blob::new(data, "")
    }
}

/// Whatever [`WebSocket::send`](crate::WebSocket::send) accepts: text (`&str`,
/// `String`, [`Utf8Bytes`]) goes as a text message; bytes (`&[u8]`, `Vec<u8>`, `Bytes`,
/// [`Blob`]) as a binary message; a received [`Data`] (or `&Data`) as the kind it came
/// as. Owned and shared forms are taken without a copy; borrowed slices are copied.
/// A borrowed form (`&str`, `&[u8]`, `&Data`, …) shorter than
/// [`COPIED_PAYLOAD_LEN`](wsevents_proto::COPIED_PAYLOAD_LEN) (4 KiB) is copied
/// straight into the send queue, as any payload that short is, with no owned or
/// shared copy made first: `ws.send(&e.data)` in a handler costs what sending owned
/// bytes costs.
///
/// ```
/// use wsevents::{Data, IntoMessage, Message};
/// let data = Data::Text("hi".into());
/// assert_eq!((&data).into_message(), Message::text("hi"));
/// let bytes = Data::ArrayBuffer(bytes::Bytes::from_static(b"\x01"));
/// assert_eq!(bytes.into_message(), Message::binary(vec![1u8]));
/// ```
pub trait IntoMessage {
    /// The message to send.
    fn into_message(self) -> Message;

    /// The message's text or bytes, when it is a borrowed form that can be sent
    /// without being owned first; `None` (the default): by [`into_message`](Self::into_message).
    #[doc(hidden)]
    fn borrowed(&self) -> Option<MessageRef<'_>> {
        None
    }
}

/// A message's payload as borrowed by [`IntoMessage::borrowed`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum MessageRef<'a> {
    /// Text.
    Text(&'a str),
    /// Bytes.
    Binary(&'a [u8]),
}

impl MessageRef<'_> {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            MessageRef::Text(text) => text.len(),
            MessageRef::Binary(data) => data.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl IntoMessage for &str {
    fn into_message(self) -> Message {
        Message::text(self.to_owned())
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Text(self))
    }
}

impl IntoMessage for String {
    fn into_message(self) -> Message {
        Message::text(self)
    }
}

impl IntoMessage for &String {
    fn into_message(self) -> Message {
        Message::text(self.clone())
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Text(self.as_str()))
    }
}

impl IntoMessage for Utf8Bytes {
    fn into_message(self) -> Message {
        Message::Text(self)
    }
}

impl IntoMessage for &Utf8Bytes {
    fn into_message(self) -> Message {
        Message::Text(self.clone())
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Text(self.as_str()))
    }
}

impl IntoMessage for Data {
    fn into_message(self) -> Message {
        match self {
            Data::Text(text) => Message::Text(text),
            Data::Blob(blob) => Message::Binary(blob.data),
            Data::ArrayBuffer(buffer) => Message::Binary(buffer),
        }
    }
}

impl IntoMessage for &Data {
    fn into_message(self) -> Message {
        self.clone().into_message()
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(match self {
            Data::Text(text) => MessageRef::Text(text.as_str()),
            Data::Blob(blob) => MessageRef::Binary(&blob.data),
            Data::ArrayBuffer(buffer) => MessageRef::Binary(buffer),
        })
    }
}

impl IntoMessage for &Bytes {
    fn into_message(self) -> Message {
        Message::binary(self.clone())
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Binary(self))
    }
}

impl IntoMessage for &[u8] {
    fn into_message(self) -> Message {
        Message::binary(Bytes::copy_from_slice(self))
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Binary(self))
    }
}

impl<const N: usize> IntoMessage for &[u8; N] {
    fn into_message(self) -> Message {
        Message::binary(Bytes::copy_from_slice(self))
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Binary(&self[..]))
    }
}

impl IntoMessage for Vec<u8> {
    fn into_message(self) -> Message {
        Message::binary(self)
    }
}

impl IntoMessage for Bytes {
    fn into_message(self) -> Message {
        Message::binary(self)
    }
}

impl IntoMessage for Blob {
    fn into_message(self) -> Message {
        Message::binary(self.data)
    }
}

impl IntoMessage for &Blob {
    fn into_message(self) -> Message {
        Message::binary(self.data.clone())
    }

    fn borrowed(&self) -> Option<MessageRef<'_>> {
        Some(MessageRef::Binary(&self.data))
    }
}

impl IntoMessage for Message {
    fn into_message(self) -> Message {
        self
    }
}

/// The data of a received message as `binary_type` asks: the core's bytes as they are.
pub(crate) fn data_of(message: Message, binary_type: BinaryType) -> Data {
    match message {
        Message::Text(text) => Data::Text(text),
        Message::Binary(bytes) => match binary_type {
            BinaryType::Blob => Data::Blob(Blob::new(bytes, "")),
            BinaryType::ArrayBuffer => Data::ArrayBuffer(bytes),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_received_payload_is_handed_out_and_sent_back_without_a_copy() {
        let payload = Bytes::from(vec![7u8; 64]);
        let at = payload.as_ptr();
        let data = data_of(Message::Binary(payload), BinaryType::ArrayBuffer);
        assert!(matches!(&data, Data::ArrayBuffer(b) if b.as_ptr() == at));
        assert_eq!((&data).into_message().payload().as_ptr(), at);
        assert_eq!(data.into_message().payload().as_ptr(), at);

        let text = Utf8Bytes::from(String::from("κόσμε, κόσμε"));
        let at = text.as_ptr();
        let data = data_of(Message::Text(text), BinaryType::ArrayBuffer);
        assert!(matches!(&data, Data::Text(t) if t.as_ptr() == at));
        let message = (&data).into_message();
        assert_eq!(message.as_text(), Some("κόσμε, κόσμε"));
        assert_eq!(message.payload().as_ptr(), at);
    }

    #[test]
    fn a_blob_shares_the_payload_too() {
        let payload = Bytes::from(vec![1u8, 2, 3]);
        let at = payload.as_ptr();
        let data = data_of(Message::Binary(payload), BinaryType::Blob);
        assert!(matches!(&data, Data::Blob(b) if b.bytes().as_ptr() == at));
        assert_eq!(data.to_bytes().as_ptr(), at);
        assert_eq!(data.into_message().payload().as_ptr(), at);
    }
}
