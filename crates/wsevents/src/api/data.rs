//! What a message carries, in the browser's vocabulary: text as a `String`, binary as
//! a [`Blob`] or an `ArrayBuffer` (a `Vec<u8>`) as [`BinaryType`] says, and what
//! [`send`](crate::WebSocket::send) accepts.

use std::fmt;

use bytes::Bytes;
use wsevents_proto::Message;

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
    /// As an `ArrayBuffer`: a `Vec<u8>`.
    ArrayBuffer,
}

/// The data of a [`MessageEvent`](crate::MessageEvent) (`e.data`).
///
/// ```
/// use wsevents::{Blob, Data};
/// let data = Data::Blob(Blob::from("blob contents"));
/// assert!(matches!(&data, Data::Blob(b) if b.size() == 13));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Data {
    /// A text message (`typeof e.data === "string"`).
    Text(String),
    /// A binary message while `binaryType` is `"blob"`.
    Blob(Blob),
    /// A binary message while `binaryType` is `"arraybuffer"`.
    ArrayBuffer(Vec<u8>),
}

impl Data {
    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(text) => Some(text),
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
/// `String`) goes as a text message; bytes (`&[u8]`, `Vec<u8>`, `Bytes`, [`Blob`]) as
/// a binary message.
pub trait IntoMessage {
    /// The message to send.
    fn into_message(self) -> Message;
}

impl IntoMessage for &str {
    fn into_message(self) -> Message {
        Message::text(self.to_owned())
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
}

impl IntoMessage for &[u8] {
    fn into_message(self) -> Message {
        Message::binary(Bytes::copy_from_slice(self))
    }
}

impl<const N: usize> IntoMessage for &[u8; N] {
    fn into_message(self) -> Message {
        Message::binary(Bytes::copy_from_slice(self))
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
}

impl IntoMessage for Message {
    fn into_message(self) -> Message {
        self
    }
}

/// The data of a received message as `binary_type` asks.
pub(crate) fn data_of(message: Message, binary_type: BinaryType) -> Data {
    match message {
        Message::Text(text) => Data::Text(bytes_to_string(text.into_bytes())),
        Message::Binary(bytes) => match binary_type {
            BinaryType::Blob => Data::Blob(Blob::new(bytes, "")),
            BinaryType::ArrayBuffer => Data::ArrayBuffer(Vec::from(bytes)),
        },
    }
}

/// Text bytes (already validated by the protocol core) as a `String`, reusing the
/// allocation when the bytes own it alone.
fn bytes_to_string(bytes: Bytes) -> String {
    String::from_utf8(Vec::from(bytes))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
