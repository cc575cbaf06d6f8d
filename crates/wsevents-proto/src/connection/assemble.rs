//! Reassembly of incoming messages from their frames (RFC 6455 §5.4).
//!
//! The assembler owns the order rules of fragmentation (a continuation needs a message
//! to continue; a new message must wait for the previous one's last frame), the
//! message-size limit, and the UTF-8 check of text, which runs as bytes arrive (on the
//! unmasked payload, even before a frame is complete) so that invalid text fails the
//! connection at the first bad byte.
//!
//! Payload copies: a single-frame message is handed out as the very bytes of the
//! receive buffer; a fragmented one is copied once, into the message being built. It
//! does not parse headers or unmask (that is `connection/mod.rs` with `frame` and
//! `mask`), nor decompress (that is the negotiated [`Extension`]).

use bytes::{Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::event::{Fragment, Message, MessageKind, Utf8Bytes};
use crate::extension::Extension;
use crate::frame::{FrameHeader, OpCode};
use crate::utf8::Utf8Validator;

/// The message being received.
#[derive(Debug)]
struct InProgress {
    kind: MessageKind,
    /// The first frame carried the extension's RSV bits: payloads must be decoded.
    encoded: bool,
    /// Decoded bytes received so far.
    size: usize,
    /// Bytes of earlier frames (unused when fragments are streamed).
    parts: BytesMut,
    /// No frame of this message has been completed yet.
    first: bool,
}

/// What a completed data frame produced.
#[derive(Debug)]
pub(crate) enum Assembled {
    /// The message is not complete yet.
    Nothing,
    /// A whole message.
    Message(Message),
    /// A piece of a message (streaming mode).
    Fragment(Fragment),
}

/// Reassembles frames into messages.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    current: Option<InProgress>,
    utf8: Utf8Validator,
}

impl Assembler {
    /// Check a data frame's header against the fragmentation order and the message-size
    /// limit, and start a message on its first frame. `encoded` says whether the frame
    /// carries a negotiated extension's RSV bits.
    pub(crate) fn begin_frame(
        &mut self,
        header: &FrameHeader,
        encoded: bool,
        max_message_size: usize,
    ) -> Result<(), ProtocolError> {
        let kind = match header.opcode {
            OpCode::Text => MessageKind::Text,
            OpCode::Binary => MessageKind::Binary,
            _ => {
                // A continuation: it must continue something.
                let current = self
                    .current
                    .as_ref()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                return check_size(
                    current.encoded,
                    current.size,
                    header.payload_len,
                    max_message_size,
                );
            }
        };
        if self.current.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        }
        check_size(encoded, 0, header.payload_len, max_message_size)?;
        self.utf8.reset();
        self.current = Some(InProgress {
            kind,
            encoded,
            size: 0,
            parts: BytesMut::new(),
            first: true,
        });
        Ok(())
    }

    /// Whether no message is in progress (the next data frame must start one).
    pub(crate) fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Whether the frame being read should have its bytes checked as UTF-8 as they
    /// arrive: uncoded text. (Coded text is checked after decoding.)
    pub(crate) fn checks_on_arrival(&self, opcode: OpCode) -> bool {
        !opcode.is_control()
            && self
                .current
                .as_ref()
                .is_some_and(|m| m.kind == MessageKind::Text && !m.encoded)
    }

    /// Check bytes of uncoded text as they arrive.
    pub(crate) fn check_arrival(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        self.utf8
            .feed(bytes)
            .map_err(|_| ProtocolError::InvalidUtf8)
    }

    /// A data frame is complete: decode it if coded, then build the message or hand out
    /// the fragment.
    pub(crate) fn finish_frame(
        &mut self,
        fin: bool,
        payload: BytesMut,
        extension: Option<&mut (dyn Extension + 'static)>,
        max_message_size: usize,
        stream_fragments: bool,
    ) -> Result<Assembled, ProtocolError> {
        let Some(current) = self.current.as_mut() else {
            // begin_frame ran for this frame's header; without a message it would have
            // failed. Treat a broken invariant as the peer's continuation error.
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let data = match (current.encoded, extension) {
            (true, Some(extension)) => {
                let room = max_message_size.saturating_sub(current.size);
                let data = extension.decode(payload.freeze(), fin, room)?;
                if current.kind == MessageKind::Text {
                    self.utf8
                        .feed(&data)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                data
            }
            _ => payload.freeze(),
        };
        current.size += data.len();
        if current.size > max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                max: max_message_size,
            });
        }
        let kind = current.kind;
        if fin && kind == MessageKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }

        if stream_fragments {
            let first = std::mem::replace(&mut current.first, false);
            if fin {
                self.current = None;
            }
            return Ok(Assembled::Fragment(Fragment {
                kind,
                data,
                first,
                fin,
            }));
        }

        if !fin {
            current.first = false;
            current.parts.extend_from_slice(&data);
            return Ok(Assembled::Nothing);
        }
        let whole: Bytes = if current.first {
            data
        } else {
            current.parts.extend_from_slice(&data);
            current.parts.split().freeze()
        };
        self.current = None;
        Ok(Assembled::Message(match kind {
            MessageKind::Text => Message::Text(Utf8Bytes::from_validated(whole)),
            MessageKind::Binary => Message::Binary(whole),
        }))
    }

    /// Make room for the next frame of a fragmented message.
    pub(crate) fn reserve(&mut self, additional: usize) {
        if let Some(current) = self.current.as_mut()
            && !current.first
        {
            current.parts.reserve(additional);
        }
    }
}

/// The message-size limit, checked from a frame header when the message is not coded
/// (a coded message's size is only known after decoding; the extension enforces it).
fn check_size(
    encoded: bool,
    size: usize,
    payload_len: u64,
    max: usize,
) -> Result<(), ProtocolError> {
    if !encoded && (size as u64).saturating_add(payload_len) > max as u64 {
        return Err(ProtocolError::MessageTooLarge { max });
    }
    Ok(())
}
