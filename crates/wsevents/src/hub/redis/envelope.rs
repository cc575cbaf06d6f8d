//! What travels on a topic's channel: a publication in an envelope, sealed by the
//! node that sends it and opened by every node that receives it.
//!
//! - `wse1` (a hub without history): `b"wse1"`, the sending node's id (8 bytes,
//!   big-endian), the kind (`0x01` text, `0x02` binary), the payload. A node drops
//!   its own (it delivered them locally already).
//! - `wse2` (a hub with history): `wse2 EPOCH:OFFSET KIND PAYLOAD`, with `KIND` `t`
//!   (text) or `b` (binary), made by the store script (`store.lua`) in Redis, so the
//!   position is Redis's; every node delivers it, the publishing one included.
//!
//! Anything else on a channel (another program's `PUBLISH`) opens to `None`.

use bytes::{BufMut, Bytes, BytesMut};
use wsevents_proto::{Message, Utf8Bytes};

use crate::hub::history::{Position, Publication};

/// The start of a stored publication's envelope.
const MAGIC_STORED: &[u8] = b"wse2 ";

const MAGIC: &[u8; 4] = b"wse1";
const KIND_TEXT: u8 = 0x01;
const KIND_BINARY: u8 = 0x02;
const HEADER_LEN: usize = 4 + 8 + 1;

/// Seal `message`, published on node `node`, in a `wse1` envelope.
pub(super) fn seal(node: u64, message: &Message) -> Bytes {
    let (kind, payload) = match message {
        Message::Text(text) => (KIND_TEXT, text.as_bytes()),
        Message::Binary(data) => (KIND_BINARY, data),
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_slice(MAGIC);
    out.put_u64(node);
    out.put_u8(kind);
    out.put_slice(payload);
    out.freeze()
}

/// Open a `wse1` envelope: the node that sealed it and the message.
pub(super) fn open(data: &[u8]) -> Option<(u64, Message)> {
    let rest = data.strip_prefix(MAGIC)?;
    let (node, rest) = rest.split_first_chunk::<8>()?;
    let (&kind, payload) = rest.split_first()?;
    let payload = Bytes::copy_from_slice(payload);
    let message = match kind {
        KIND_TEXT => Message::Text(Utf8Bytes::try_from(payload).ok()?),
        KIND_BINARY => Message::Binary(payload),
        _ => return None,
    };
    Some((u64::from_be_bytes(*node), message))
}

/// Open `wse2 EPOCH:OFFSET KIND PAYLOAD`.
pub(super) fn open_stored(data: &[u8]) -> Option<Publication> {
    let rest = data.strip_prefix(MAGIC_STORED)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let position: Position = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let rest = &rest[space + 1..];
    let (kind, payload) = (rest.get(..1)?, rest.get(2..)?);
    if rest.get(1) != Some(&b' ') {
        return None;
    }
    Some(Publication {
        position,
        message: message_of(kind, Bytes::copy_from_slice(payload))?,
    })
}

/// The kind of a stored publication (`t` text, `b` binary) and its payload.
pub(super) fn kind_and_payload(message: &Message) -> (&'static str, &[u8]) {
    match message {
        Message::Text(text) => ("t", text.as_bytes()),
        Message::Binary(data) => ("b", data),
    }
}

/// The message of a stored publication of `kind` (`t`, `b`); `None` for another kind
/// or text that is not UTF-8.
pub(super) fn message_of(kind: &[u8], payload: Bytes) -> Option<Message> {
    match kind {
        b"t" => Some(Message::Text(Utf8Bytes::try_from(payload).ok()?)),
        b"b" => Some(Message::Binary(payload)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_its_node_and_message() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 0xff])] {
            let sealed = seal(0x0102_0304_0506_0708, &message);
            assert_eq!(&sealed[..4], b"wse1");
            assert_eq!(open(&sealed), Some((0x0102_0304_0506_0708, message)));
        }
        assert_eq!(open(b"wse1\0\0\0\0\0\0\0\x01\x01\xff"), None, "bad UTF-8");
        assert_eq!(open(b"wse1\0\0"), None, "cut short");
        assert_eq!(open(b"other payload"), None);
    }
}
