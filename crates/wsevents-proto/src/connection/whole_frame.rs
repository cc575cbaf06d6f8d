//! The common case of reading, in one step: a whole message in one frame.
//!
//! Most messages are small and arrive as one frame, often many to a read. The general
//! path (`read_frame` in `mod.rs`) serves every case (partial frames unmasked piece by
//! piece, fragments, control frames, extensions, errors) through a `Reading` record,
//! the assembler and a `Step` per frame; for a 20-byte message that bookkeeping costs
//! several times the parsing itself. Here a frame that is complete in the buffer, FIN,
//! no RSV bits, text or binary, masked as the role requires, with a header of at most
//! 8 bytes, within the limits, and not part of a fragmented message, is decoded,
//! unmasked, checked and handed out directly.
//!
//! Anything else returns `None` with the buffer untouched, and the general path reads
//! the frame, so it alone decides every error and close code. The two agree on every
//! frame this one takes (a property test in `tests` feeds both the same frames).

use bytes::Buf;

use crate::event::{Message, Utf8Bytes};
use crate::mask;
use crate::role::Role;
use crate::utf8;

use super::Connection;
use super::state::Phase;

/// FIN set, RSV bits clear: the first header byte's high nibble.
const FIN_ONLY: u8 = 0x80;

impl Connection {
    /// Read one whole single-frame message from the front of the input, if that is
    /// what is there (see the module doc); `None` leaves the input as it was.
    ///
    /// Most calls find the input empty (every poll after the last message of a read
    /// asks once more): that answer is inlined, without the call and its register
    /// saves, which would come several times per message (`bench/README.md`, "A
    /// whole message in one frame is read in one step").
    #[inline]
    pub(super) fn read_whole_frame(&mut self) -> Option<Message> {
        if self.input.len() < 2 {
            return None;
        }
        self.decode_whole_frame()
    }

    /// [`read_whole_frame`](Self::read_whole_frame) with at least a frame's first two
    /// bytes in the input.
    fn decode_whole_frame(&mut self) -> Option<Message> {
        if !matches!(self.phase, Phase::Open(_))
            || self.reading.is_some()
            || self.config.stream_fragments
            || !self.assembler.is_idle()
        {
            return None;
        }
        let input = &self.input[..];
        let (&b0, &b1) = (input.first()?, input.get(1)?);
        if b0 & 0xF0 != FIN_ONLY {
            return None;
        }
        let text = match b0 & 0x0F {
            0x1 => true,
            0x2 => false,
            _ => return None,
        };
        let masked = b1 & 0x80 != 0;
        if masked != (self.role == Role::Server) {
            return None;
        }
        let (len, mut header_len) = match b1 & 0x7F {
            len @ 0..=125 => (usize::from(len), 2),
            126 => {
                let len = usize::from(u16::from_be_bytes([*input.get(2)?, *input.get(3)?]));
                if len < 126 {
                    return None; // not minimal: the general path reports it
                }
                (len, 4)
            }
            _ => return None,
        };
        let key = if masked {
            let key: [u8; 4] = input.get(header_len..header_len + 4)?.try_into().ok()?;
            header_len += 4;
            Some(key)
        } else {
            None
        };
        let frame_len = header_len + len;
        if input.len() < frame_len
            || len > self.config.max_frame_size
            || len > self.config.max_message_size
        {
            return None;
        }

        let payload = &mut self.input[header_len..frame_len];
        if let Some(key) = key {
            mask::apply_mask(payload, key, 0);
        }
        if text && utf8::validate(payload).is_err() {
            // Put the bytes back as they came: the general path fails the connection.
            if let Some(key) = key {
                mask::apply_mask(payload, key, 0);
            }
            return None;
        }
        // The frame as one piece, then past its header: advancing a `Bytes` is a
        // pointer bump, a `BytesMut` would check its representation first.
        let mut payload = self.take_input(frame_len).freeze();
        payload.advance(header_len);
        self.active = true;
        Some(if text {
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use crate::event::Event;
    use crate::role::Role;
    use crate::{Config, Connection};

    /// An open connection of `role`, past the handshake.
    fn open(role: Role) -> Connection {
        Connection::open(role, Config::default())
    }

    /// Every event the connection hands out for `wire`, read either way, with limits
    /// small enough for the generated frames to cross them.
    fn events(role: Role, wire: &[u8], whole_frames: bool) -> Vec<String> {
        let config = Config {
            max_frame_size: 200,
            max_message_size: 250,
            ..Config::default()
        };
        let mut conn = Connection::open(role, config);
        conn.whole_frames = whole_frames;
        conn.handle_input(wire);
        let mut out = Vec::new();
        while let Some(event) = conn.poll_event() {
            out.push(format!("{event:?}"));
        }
        out.push(format!("{:?}", conn.state()));
        out
    }

    /// The same, taking each event with `poll_message` where `picks` says (falling back
    /// to `poll_event` when it has none) and with `poll_event` elsewhere.
    fn events_mixed(role: Role, wire: &[u8], picks: &[bool]) -> Vec<String> {
        let config = Config {
            max_frame_size: 200,
            max_message_size: 250,
            ..Config::default()
        };
        let mut conn = Connection::open(role, config);
        conn.handle_input(wire);
        let mut out = Vec::new();
        for i in 0.. {
            if picks.get(i).copied().unwrap_or(false)
                && let Some(message) = conn.poll_message()
            {
                out.push(format!("{:?}", Event::Message(message)));
                continue;
            }
            match conn.poll_event() {
                Some(event) => out.push(format!("{event:?}")),
                None => break,
            }
        }
        out.push(format!("{:?}", conn.state()));
        out
    }

    fn frame(b0: u8, masked: bool, len7: u8, ext: &[u8], key: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut wire = vec![b0, u8::from(masked) << 7 | len7];
        wire.extend_from_slice(ext);
        if masked {
            wire.extend_from_slice(&key);
        }
        wire.extend(payload.iter().enumerate().map(
            |(i, b)| {
                if masked { b ^ key[i % 4] } else { *b }
            },
        ));
        wire
    }

    #[test]
    fn takes_small_messages_and_leaves_the_rest() {
        let mut conn = open(Role::Server);
        let hello = frame(0x81, true, 5, &[], [1, 2, 3, 4], b"hello");
        conn.handle_input(&hello);
        assert!(matches!(conn.read_whole_frame(), Some(m) if m.as_text() == Some("hello")));
        // A fragment, a ping, a partial frame, an unmasked frame: left alone.
        for wire in [
            frame(0x01, true, 2, &[], [0; 4], b"hi"),
            frame(0x89, true, 0, &[], [0; 4], b""),
            frame(0x82, true, 5, &[], [0; 4], b"hel"),
            frame(0x82, false, 2, &[], [0; 4], b"hi"),
        ] {
            let mut conn = open(Role::Server);
            conn.handle_input(&wire);
            assert!(conn.read_whole_frame().is_none());
            assert_eq!(conn.buffered_input(), wire.len(), "untouched");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_general_path(
            frames in proptest::collection::vec(
                (any::<u8>(), any::<u8>(), prop_oneof![0u8..=125, Just(126u8), Just(127u8)],
                 any::<[u8; 4]>(), proptest::collection::vec(any::<u8>(), 0..300)),
                1..6),
            server in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            picks in proptest::collection::vec(any::<bool>(), 0..12),
        ) {
            let role = if server { Role::Server } else { Role::Client };
            let mut wire = Vec::new();
            for (b0, twist, len7, key, mut payload) in frames {
                // Mostly FIN text or binary, masked as the role wants, text mostly ASCII;
                // now and then any first byte, the wrong masking, any bytes.
                let b0 = if b0 % 5 == 0 { b0 } else { 0x80 | (b0 % 2 + 1) };
                let masked = server != (twist % 7 == 0);
                if twist % 3 != 0 {
                    payload.iter_mut().for_each(|b| *b &= 0x7F);
                }
                let (len7, ext) = match len7 {
                    126 => (126, (payload.len() as u16).to_be_bytes().to_vec()),
                    127 => (127, (payload.len() as u64).to_be_bytes().to_vec()),
                    short => {
                        payload.truncate(usize::from(short));
                        (payload.len() as u8, Vec::new())
                    }
                };
                wire.extend(frame(b0, masked, len7, &ext, key, &payload));
            }
            let wire = &wire[..cut.index(wire.len() + 1)];
            let general = events(role, wire, false);
            prop_assert_eq!(events(role, wire, true), general.clone());
            prop_assert_eq!(events_mixed(role, wire, &picks), general);
        }
    }
}
