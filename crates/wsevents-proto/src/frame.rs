//! Frame headers: decoding and encoding the RFC 6455 §5.2 base framing.
//!
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-------+-+-------------+-------------------------------+
//!  |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//!  |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//!  |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//!  | |1|2|3|       |K|             |                               |
//!  +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//!  |     Extended payload length continued, if payload len == 127  |
//!  + - - - - - - - - - - - - - - - +-------------------------------+
//!  |                               |Masking-key, if MASK set to 1  |
//!  +-------------------------------+-------------------------------+
//! ```
//!
//! This module owns the *shape* of a header: the three length forms and their
//! minimal-encoding rule, the opcode space, the RSV bits and the mask key. It checks
//! only what a header alone can tell (reserved opcodes, control-frame rules, length
//! encoding). What depends on the connection (which RSV bits an extension owns, whether
//! this role expects a mask, fragmentation order, size limits) is checked by
//! `connection/`. Payloads never pass through here.

use crate::error::ProtocolError;

/// The largest header: 2 bytes + 8 bytes of extended length + 4 bytes of mask key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest payload whose length fits the header's 7-bit field (two-byte header).
pub(crate) const MAX_SHORT_PAYLOAD: usize = 125;

/// The FIN bit of the first header byte.
pub(crate) const FIN: u8 = 0x80;

/// The MASK bit of the second header byte.
pub(crate) const MASK_BIT: u8 = 0x80;

/// RSV1, the bit permessage-deflate uses to mark a compressed message.
pub const RSV1: u8 = 0x40;
/// RSV2.
pub const RSV2: u8 = 0x20;
/// RSV3.
pub const RSV3: u8 = 0x10;

/// A frame opcode (§5.2). Reserved opcodes are refused when decoding.
///
/// ```
/// use wsevents_proto::frame::OpCode;
/// assert_eq!(OpCode::from_u8(0x1), Some(OpCode::Text));
/// assert_eq!(OpCode::from_u8(0x3), None);
/// assert!(OpCode::Ping.is_control());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, `None` for the reserved ones.
    pub const fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit value on the wire.
    pub const fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub const fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded or to-be-encoded frame header.
///
/// ```
/// use wsevents_proto::frame::{FrameHeader, OpCode};
/// // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
/// let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
/// let (header, len) = FrameHeader::decode(&wire).unwrap().unwrap();
/// assert_eq!((header.fin, header.opcode, header.payload_len, len), (true, OpCode::Text, 5, 2));
/// let mut out = [0u8; 14];
/// let n = header.encode(&mut out);
/// assert_eq!(&out[..n], &wire[..2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of a message.
    pub fin: bool,
    /// The RSV1–RSV3 bits, in place (a mask of [`RSV1`], [`RSV2`], [`RSV3`]).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// A final, unmasked header with no RSV bits.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let ext = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + ext + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Decode a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, else the header
    /// and how many bytes it took. Refuses reserved opcodes, fragmented or oversized
    /// control frames, non-minimal lengths and 64-bit lengths with the top bit set.
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = b0 & (RSV1 | RSV2 | RSV3);
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;

        let (payload_len, ext_len) = match len7 {
            126 => {
                let Some(ext) = rest.first_chunk::<2>() else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes(*ext));
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 2)
            }
            127 => {
                let Some(ext) = rest.first_chunk::<8>() else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(*ext);
                if len & (1 << 63) != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                if len <= 0xFFFF {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 8)
            }
            short => (u64::from(short), 0),
        };

        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLarge(payload_len));
            }
        }

        let rest = &rest[ext_len..];
        let mask = if masked {
            let Some(key) = rest.first_chunk::<4>() else {
                return Ok(None);
            };
            Some(*key)
        } else {
            None
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, 2 + ext_len + if masked { 4 } else { 0 })))
    }

    /// Encode this header into `dst`, returning how many bytes were written.
    ///
    /// Always uses the minimal length form.
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        dst[0] = u8::from(self.fin) << 7 | (self.rsv & (RSV1 | RSV2 | RSV3)) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = match self.payload_len {
            len @ 0..=125 => {
                dst[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                dst[1] = mask_bit | 126;
                dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                dst[1] = mask_bit | 127;
                dst[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            dst[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::decode(wire).unwrap().unwrap()
    }

    fn round_trip(header: FrameHeader) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        assert_eq!(n, header.encoded_len());
        assert_eq!(decode_all(&buf[..n]), (header, n));
        // Every strict prefix is incomplete, never an error.
        for cut in 0..n {
            assert_eq!(FrameHeader::decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn rfc_6455_5_7_masked_hello_header() {
        let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d];
        let (header, n) = decode_all(&wire);
        assert_eq!(n, 6);
        assert_eq!(header.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(header.payload_len, 5);
    }

    #[test]
    fn rfc_6455_5_7_256_bytes_uses_16_bit_length() {
        let wire = [0x82, 0x7E, 0x01, 0x00];
        let (header, n) = decode_all(&wire);
        assert_eq!(
            (header.opcode, header.payload_len, n),
            (OpCode::Binary, 256, 4)
        );
        round_trip(header);
    }

    #[test]
    fn rfc_6455_5_7_64_kib_uses_64_bit_length() {
        let wire = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (header, n) = decode_all(&wire);
        assert_eq!((header.payload_len, n), (65536, 10));
        round_trip(header);
    }

    #[test]
    fn every_length_boundary_round_trips() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                round_trip(FrameHeader {
                    fin: len % 2 == 0,
                    rsv: RSV1,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                });
            }
        }
    }

    #[test]
    fn non_minimal_lengths_are_refused() {
        assert_eq!(
            FrameHeader::decode(&[0x82, 0x7E, 0x00, 0x7D]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            FrameHeader::decode(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength)
        );
    }

    #[test]
    fn length_with_top_bit_is_refused() {
        assert_eq!(
            FrameHeader::decode(&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthOverflow)
        );
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op, 0x00]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn control_frames_must_be_final_and_small() {
        assert_eq!(
            FrameHeader::decode(&[0x09, 0x00]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::decode(&[0x89, 0x7E, 0x00, 0x7E]),
            Err(ProtocolError::ControlFrameTooLarge(126))
        );
        assert!(FrameHeader::decode(&[0x89, 0x7D]).unwrap().is_some());
    }

    #[test]
    fn rsv_bits_are_reported_in_place() {
        let (header, _) = decode_all(&[0xF1, 0x00]);
        assert_eq!(header.rsv, RSV1 | RSV2 | RSV3);
    }
}
