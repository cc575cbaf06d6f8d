//! The per-message compressor of RFC 7692 §7.2: raw DEFLATE (flate2 on zlib-rs), one
//! sync-flushed block run per message with its `00 00 ff ff` tail stripped on the way
//! out and put back on the way in.
//!
//! Memory: a compressor holds ~256 KiB at 15 window bits (less with a smaller window)
//! and a decompressor ~40 KiB at any window (zlib-rs allocates the 32 KiB window of 15
//! bits whatever it is told), so both are made on first use, not at the handshake: ten thousand idle connections
//! with permessage-deflate negotiated cost nothing more than without. A side with
//! `no_context_takeover` is reset after each message instead of being freed, because
//! making one again per message costs more than the reset.
//!
//! Inflating checks the output size as it grows: a small frame that would expand past
//! the message limit fails with 1009 once the output passes the limit, having
//! allocated at most the limit.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::params::{Agreement, NAME};
use crate::error::ProtocolError;
use crate::event::MessageKind;
use crate::extension::Extension;
use crate::frame::RSV1;

/// What RFC 7692 §7.2.1 strips from the end of each compressed message.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output grows in steps of at least this many bytes.
const MIN_GROWTH: usize = 1024;

/// permessage-deflate on an open connection.
#[derive(Debug)]
pub(crate) struct DeflateCodec {
    agreement: Agreement,
    level: Compression,
    threshold: usize,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
    /// The peer ended its DEFLATE stream (a block with BFINAL) inside this message:
    /// the rest of the message is ignored and the stream starts afresh with the next.
    stream_ended: bool,
}

impl DeflateCodec {
    pub(crate) fn new(agreement: Agreement, level: u32, threshold: usize) -> Self {
        DeflateCodec {
            agreement,
            level: Compression::new(level.min(9)),
            threshold,
            compressor: None,
            decompressor: None,
            stream_ended: false,
        }
    }

    fn compress(&mut self, input: &[u8]) -> Option<Vec<u8>> {
        // zlib cannot make a raw DEFLATE stream with a 256-byte window; with 512 bytes
        // its matches reach back at most 512 - 262 = 250 bytes, within the 256 the peer
        // keeps, so 9 is the faithful stand-in for 8 (zlib itself does the same).
        let bits = self.agreement.local_window_bits.max(9);
        let level = self.level;
        let compressor = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let mut out = Vec::with_capacity(input.len() / 2 + 16);
        let mut rest = input;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(MIN_GROWTH));
            }
            let before = compressor.total_in();
            if compressor
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .is_err()
            {
                // Never seen with valid parameters. The output is dropped and the
                // compressor forgotten, so nothing the peer lacks is referred to later.
                self.compressor = None;
                return None;
            }
            let consumed = usize::try_from(compressor.total_in() - before).unwrap_or(rest.len());
            rest = rest.get(consumed..).unwrap_or_default();
            // A sync flush is complete when all input is in and output space is left.
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.agreement.local_no_context_takeover {
            compressor.reset();
        }
        Some(out)
    }

    /// Inflate `input` onto `out`, failing once `out` holds more than `max` bytes.
    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        if self.stream_ended {
            return Ok(());
        }
        let decompressor = self
            .decompressor
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
        let mut rest = input;
        loop {
            if out.len() == out.capacity() {
                // Room for one byte past the limit, to see it crossed.
                let allowed = max.saturating_add(1).saturating_sub(out.len());
                if allowed == 0 {
                    return Err(ProtocolError::MessageTooLarge { max });
                }
                let want = out.capacity().max(rest.len() * 2).max(MIN_GROWTH);
                out.reserve_exact(want.min(allowed));
            }
            let (in_before, out_before) = (decompressor.total_in(), out.len());
            let status = decompressor
                .decompress_vec(rest, out, FlushDecompress::Sync)
                .map_err(|e| ProtocolError::Extension(format!("{NAME}: {e}")))?;
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge { max });
            }
            let consumed =
                usize::try_from(decompressor.total_in() - in_before).unwrap_or(rest.len());
            rest = rest.get(consumed..).unwrap_or_default();
            if status == Status::StreamEnd {
                self.stream_ended = true;
                return Ok(());
            }
            let progressed = consumed > 0 || out.len() > out_before;
            if (rest.is_empty() && out.len() < out.capacity()) || !progressed {
                return Ok(());
            }
        }
    }
}

impl Extension for DeflateCodec {
    fn name(&self) -> &str {
        NAME
    }

    fn rsv_bits(&self) -> u8 {
        RSV1
    }

    fn decode(
        &mut self,
        payload: Bytes,
        fin: bool,
        max_size: usize,
    ) -> Result<Bytes, ProtocolError> {
        let mut out = Vec::new();
        self.inflate(&payload, &mut out, max_size)?;
        if fin {
            self.inflate(&TAIL, &mut out, max_size)?;
            if self.stream_ended || self.agreement.remote_no_context_takeover {
                if let Some(decompressor) = self.decompressor.as_mut() {
                    decompressor.reset(false);
                }
                self.stream_ended = false;
            }
        }
        Ok(Bytes::from(out))
    }

    fn encode(&mut self, _kind: MessageKind, payload: Bytes) -> (Bytes, u8) {
        if payload.len() < self.threshold {
            return (payload, 0);
        }
        match self.compress(&payload) {
            Some(compressed) => (Bytes::from(compressed), RSV1),
            None => (payload, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(bits: u8, no_context_takeover: bool) -> Agreement {
        Agreement {
            local_window_bits: bits,
            local_no_context_takeover: no_context_takeover,
            remote_no_context_takeover: no_context_takeover,
        }
    }

    #[test]
    fn rfc7692_example_hello() {
        // RFC 7692 §7.2.3.1: "Hello" in one fixed-Huffman block, tail stripped.
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 0);
        let out = codec
            .decode(
                Bytes::from_static(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
                true,
                100,
            )
            .unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.2: the second "Hello" refers back into the first (context takeover).
        let out = codec
            .decode(
                Bytes::from_static(&[0xf2, 0x00, 0x11, 0x00, 0x00]),
                true,
                100,
            )
            .unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn rfc7692_example_stored_block_and_split() {
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 0);
        // §7.2.3.3: an uncompressed (stored) block.
        let out = codec
            .decode(
                Bytes::from_static(&[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ]),
                true,
                100,
            )
            .unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.1's message split over two frames.
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 0);
        let a = codec
            .decode(Bytes::from_static(&[0xf2, 0x48, 0xcd]), false, 100)
            .unwrap();
        let b = codec
            .decode(Bytes::from_static(&[0xc9, 0xc9, 0x07, 0x00]), true, 100)
            .unwrap();
        assert_eq!([&a[..], &b[..]].concat(), b"Hello");
    }

    #[test]
    fn final_block_then_next_message() {
        // §7.2.3.4: a message whose block has BFINAL set; the next message starts a
        // new stream.
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 0);
        let out = codec
            .decode(
                Bytes::from_static(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]),
                true,
                100,
            )
            .unwrap();
        assert_eq!(&out[..], b"Hello");
        let out = codec
            .decode(
                Bytes::from_static(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
                true,
                100,
            )
            .unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn round_trip_with_and_without_context_takeover_at_every_window() {
        for bits in 8..=15 {
            for no_context_takeover in [false, true] {
                let mut sender = DeflateCodec::new(agreement(bits, no_context_takeover), 6, 0);
                let mut receiver = DeflateCodec::new(agreement(15, no_context_takeover), 6, 0);
                for i in 0..50u32 {
                    let text = format!(
                        "message {i}: {}",
                        "the same words again and again ".repeat(i as usize % 7 + 1)
                    );
                    let (wire, rsv) = sender.encode(MessageKind::Text, Bytes::from(text.clone()));
                    assert_eq!(rsv, RSV1);
                    assert!(!wire.ends_with(&TAIL));
                    let back = receiver.decode(wire, true, 1 << 20).unwrap();
                    assert_eq!(back, text.as_bytes(), "bits {bits}");
                }
            }
        }
    }

    #[test]
    fn context_takeover_makes_repeats_small() {
        let text = Bytes::from("a sentence that will be said twice, word for word.".repeat(3));
        let mut with = DeflateCodec::new(agreement(15, false), 6, 0);
        let mut without = DeflateCodec::new(agreement(15, true), 6, 0);
        let _ = with.encode(MessageKind::Text, text.clone());
        let _ = without.encode(MessageKind::Text, text.clone());
        let (second_with, _) = with.encode(MessageKind::Text, text.clone());
        let (second_without, _) = without.encode(MessageKind::Text, text);
        assert!(
            second_with.len() < second_without.len() / 2,
            "{} vs {}",
            second_with.len(),
            second_without.len()
        );
    }

    #[test]
    fn below_the_threshold_goes_out_as_it_is() {
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 64);
        let (wire, rsv) = codec.encode(MessageKind::Binary, Bytes::from_static(b"short"));
        assert_eq!((&wire[..], rsv), (&b"short"[..], 0));
        assert!(codec.compressor.is_none(), "no compressor made for it");
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let mut sender = DeflateCodec::new(agreement(15, false), 9, 0);
        let (wire, _) = sender.encode(MessageKind::Binary, Bytes::from(vec![0u8; 8 << 20]));
        assert!(wire.len() < 16 * 1024, "{}", wire.len());
        let mut receiver = DeflateCodec::new(agreement(15, false), 6, 0);
        let error = receiver.decode(wire, true, 1 << 20).unwrap_err();
        assert_eq!(error, ProtocolError::MessageTooLarge { max: 1 << 20 });
    }

    #[test]
    fn garbage_is_an_extension_error() {
        let mut codec = DeflateCodec::new(agreement(15, false), 6, 0);
        let error = codec
            .decode(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]), true, 100)
            .unwrap_err();
        assert!(matches!(error, ProtocolError::Extension(_)), "{error:?}");
    }
}
