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
//! Anything else on a channel (another program's `PUBLISH`) opens to `None`. Sealing
//! writes the envelope straight into the Redis command ([`Sealed`]); opening takes the
//! payload as it came from Redis and slices it: neither copies the payload.

use std::io::Write;

use bytes::Bytes;
use wsevents_proto::{Message, Utf8Bytes};

use crate::hub::history::{Position, Publication};

/// The start of a stored publication's envelope.
const MAGIC_STORED: &[u8] = b"wse2 ";

const MAGIC: &[u8; 4] = b"wse1";
const KIND_TEXT: u8 = 0x01;
const KIND_BINARY: u8 = 0x02;
/// The bytes of a `wse1` envelope before the payload.
pub(super) const HEADER_LEN: usize = 4 + 8 + 1;

/// A message in a `wse1` envelope, written as one Redis argument.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sealed<'a> {
    /// The node that publishes it.
    pub(super) node: u64,
    pub(super) message: &'a Message,
}

impl redis::ToRedisArgs for Sealed<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        let (kind, payload) = match self.message {
            Message::Text(text) => (KIND_TEXT, &text.as_bytes()[..]),
            Message::Binary(data) => (KIND_BINARY, &data[..]),
        };
        out.reserve_space_for_args([HEADER_LEN + payload.len()]);
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's buffer (a `Vec`) cannot fail.
        let _ = arg.write_all(MAGIC);
        let _ = arg.write_all(&self.node.to_be_bytes());
        let _ = arg.write_all(&[kind]);
        let _ = arg.write_all(payload);
    }
}

impl redis::ToSingleRedisArg for Sealed<'_> {}

/// `message`, published on node `node`, in a `wse1` envelope (as [`Sealed`] writes it).
#[cfg(any(test, fuzzing))]
pub(super) fn seal(node: u64, message: &Message) -> Bytes {
    let mut args = redis::ToRedisArgs::to_redis_args(&Sealed { node, message });
    Bytes::from(args.pop().unwrap_or_default())
}

/// The node that sealed a `wse1` envelope, read without opening it.
pub(super) fn sealed_by(data: &[u8]) -> Option<u64> {
    let (node, _) = data.strip_prefix(MAGIC)?.split_first_chunk::<8>()?;
    Some(u64::from_be_bytes(*node))
}

/// Open a `wse1` envelope: the node that sealed it and the message (a slice of `data`).
pub(super) fn open(data: Bytes) -> Option<(u64, Message)> {
    let node = sealed_by(&data)?;
    let kind = *data.get(HEADER_LEN - 1)?;
    let payload = data.slice(HEADER_LEN..);
    let message = match kind {
        KIND_TEXT => Message::Text(Utf8Bytes::try_from(payload).ok()?),
        KIND_BINARY => Message::Binary(payload),
        _ => return None,
    };
    Some((node, message))
}

/// Open `wse2 EPOCH:OFFSET KIND PAYLOAD` (the message a slice of `data`).
pub(super) fn open_stored(data: Bytes) -> Option<Publication> {
    let rest = data.strip_prefix(MAGIC_STORED)?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let position: Position = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let kind_at = MAGIC_STORED.len() + space + 1;
    let kind = data.get(kind_at..kind_at + 1)?;
    if data.get(kind_at + 1) != Some(&b' ') {
        return None;
    }
    let message = message_of(kind, data.slice(kind_at + 2..))?;
    Some(Publication { position, message })
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
    fn an_envelope_opens_to_its_node_and_message_without_a_copy() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 0xff])] {
            let sealed = seal(0x0102_0304_0506_0708, &message);
            assert_eq!(&sealed[..4], b"wse1");
            assert_eq!(sealed_by(&sealed), Some(0x0102_0304_0506_0708));
            let (node, opened) = open(sealed.clone()).unwrap();
            assert_eq!((node, &opened), (0x0102_0304_0506_0708, &message));
            let payload: &[u8] = match &opened {
                Message::Text(text) => text.as_bytes(),
                Message::Binary(data) => data,
            };
            assert_eq!(
                payload.as_ptr(),
                sealed[HEADER_LEN..].as_ptr(),
                "a slice of what came"
            );
        }
        let open = |data: &'static [u8]| open(Bytes::from_static(data));
        assert_eq!(open(b"wse1\0\0\0\0\0\0\0\x01\x01\xff"), None, "bad UTF-8");
        assert_eq!(open(b"wse1\0\0\0\0\0\0\0\x01\x03"), None, "no such kind");
        assert_eq!(open(b"wse1\0\0"), None, "cut short");
        assert_eq!(open(b"other payload"), None);
    }

    #[test]
    fn a_stored_envelope_opens_to_its_position_and_message() {
        let data = Bytes::from_static(b"wse2 7kq3v9xb:41 t h\xc3\xa9llo");
        let publication = open_stored(data.clone()).unwrap();
        assert_eq!(publication.position, Position::new("7kq3v9xb", 41).unwrap());
        assert_eq!(publication.message, Message::text("héllo"));
        let Message::Text(text) = &publication.message else {
            unreachable!()
        };
        assert_eq!(text.as_bytes().as_ptr(), data[19..].as_ptr());
        let binary = open_stored(Bytes::from_static(b"wse2 e:1 b \xff ")).unwrap();
        assert_eq!(binary.message, Message::binary(vec![0xffu8, b' ']));
        let empty = open_stored(Bytes::from_static(b"wse2 e:2 t ")).unwrap();
        assert_eq!(empty.message, Message::text(""));
        for broken in [
            &b"wse2 e:1 t"[..],
            b"wse2 e:1 x payload",
            b"wse2 e:1 tt payload",
            b"wse2 e:x t payload",
            b"wse2 e-1 t payload",
            b"wse2 :1 t payload",
            b"wse2 e:1 t \xff",
            b"wse1 e:1 t payload",
            b"wse2 ",
        ] {
            assert_eq!(open_stored(Bytes::from_static(broken)), None, "{broken:?}");
        }
    }
}
