//! Errors, typed by who is at fault.
//!
//! - [`ProtocolError`]: the *peer* broke RFC 6455. Each maps to the close code the
//!   connection fails with, in exactly one place: `impl From<&ProtocolError> for
//!   CloseCode` (the habit of python-websockets' `Protocol.parse()` and rustls'
//!   `From<PeerMisbehaved> for AlertDescription`).
//! - [`Error`]: what a *caller's* command returns: a command issued in the wrong state, a
//!   close code or reason the caller may not use, a limit the caller hit, or the protocol
//!   or handshake failure that already ended the connection.
//!
//! Handshake failures have their own type, [`HandshakeError`],
//! because they end the connection before any frame flows and carry an HTTP status.

use crate::State;
use crate::close::CloseCode;
use crate::handshake::HandshakeError;

/// The peer broke the WebSocket protocol; the connection fails with
/// [`CloseCode::from(&error)`](CloseCode).
///
/// ```
/// use wsevents_proto::{CloseCode, ProtocolError};
/// assert_eq!(CloseCode::from(&ProtocolError::InvalidUtf8), CloseCode::INVALID_PAYLOAD);
/// assert_eq!(CloseCode::from(&ProtocolError::ReservedOpcode(0x3)), CloseCode::PROTOCOL_ERROR);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An RSV bit was set that no negotiated extension owns (§5.2).
    #[error("reserved bits {0:#x} set without a negotiated extension")]
    ReservedBits(u8),
    /// The opcode is one of the reserved values 0x3–0x7 or 0xB–0xF (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame had FIN clear (§5.5: control frames must not be fragmented).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame's payload was over 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLarge(u64),
    /// A payload length used more bytes than needed (§5.2: "the minimal number of bytes
    /// MUST be used").
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// The most significant bit of a 64-bit payload length was set (§5.2).
    #[error("64-bit payload length with the most significant bit set")]
    LengthOverflow,
    /// A server received an unmasked frame (§5.1).
    #[error("client frame not masked")]
    UnmaskedFrame,
    /// A client received a masked frame (§5.1).
    #[error("server frame masked")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was unfinished
    /// (§5.4).
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    /// A frame's payload exceeded the configured maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The payload length the frame header announced.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message exceeded the configured maximum message size.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// A text message was not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A close frame's payload was one byte: a truncated code (§5.5.1).
    #[error("close frame with a one-byte payload")]
    TruncatedCloseCode,
    /// A close frame carried a code that may not appear on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame's reason was not valid UTF-8 (§5.5.1).
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A negotiated extension could not process the frame (for example, a compressed
    /// payload that does not inflate).
    #[error("extension error: {0}")]
    Extension(String),
}

impl From<&ProtocolError> for CloseCode {
    fn from(error: &ProtocolError) -> CloseCode {
        use ProtocolError::*;
        match error {
            ReservedBits(_)
            | ReservedOpcode(_)
            | FragmentedControlFrame
            | ControlFrameTooLarge(_)
            | NonMinimalLength
            | LengthOverflow
            | UnmaskedFrame
            | MaskedFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | TruncatedCloseCode
            | InvalidCloseCode(_) => CloseCode::PROTOCOL_ERROR,
            FrameTooLarge { .. } | MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            InvalidUtf8 | InvalidCloseReason | Extension(_) => CloseCode::INVALID_PAYLOAD,
        }
    }
}

impl ProtocolError {
    /// The close code the connection fails with for this error.
    pub fn close_code(&self) -> CloseCode {
        CloseCode::from(self)
    }
}

/// What a command on a [`Connection`](crate::Connection) can fail with.
///
/// The caller's mistakes (`InvalidState`, `InvalidCloseCode`, `ReasonTooLong`,
/// `ControlPayloadTooLarge`) leave the connection as it was; `Protocol` and `Handshake`
/// report the failure that already ended it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command is not allowed in the connection's current state (sending before the
    /// handshake is done or after a close frame was sent).
    #[error("not allowed while the connection is {0:?}")]
    InvalidState(State),
    /// The close code may not be sent by the caller.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// The close reason is over 123 bytes of UTF-8.
    #[error("close reason of {0} bytes exceeds 123")]
    ReasonTooLong(usize),
    /// A ping or pong payload is over 125 bytes.
    #[error("control payload of {0} bytes exceeds 125")]
    ControlPayloadTooLarge(usize),
    /// A fragmented message is being sent with `send_fragment`; finish it before sending
    /// another message.
    #[error("a fragmented message is still being sent")]
    MessageInProgress,
    /// [`Connection::send_prepared`](crate::Connection::send_prepared) on a client:
    /// prepared frames are unmasked, for servers only.
    #[error("a prepared message can only be sent by a server")]
    PreparedOnClient,
    /// The transport ended before the close handshake did.
    #[error("the connection ended without a close handshake")]
    UnexpectedEof,
    /// A handshake took longer than its configured timeout, or the peer stopped
    /// answering keepalive pings.
    #[error("{0}")]
    Timeout(Timeout),
    /// The caller closed the connection before the opening handshake completed.
    #[error("the connection was closed before it opened")]
    Aborted,
    /// The peer broke the protocol; the connection is failing or failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Which deadline ran out.
///
/// ```
/// use wsevents_proto::{Error, Timeout};
/// assert_eq!(Error::Timeout(Timeout::Handshake).to_string(), "the opening handshake timed out");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// The opening handshake.
    Handshake,
    /// The close handshake: the peer's close frame never came.
    Close,
    /// Keepalive: after a keepalive ping, nothing at all came from the peer within
    /// [`Config::pong_timeout`](crate::Config::pong_timeout).
    Pong,
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Timeout::Handshake => "the opening handshake timed out",
            Timeout::Close => "the close handshake timed out",
            Timeout::Pong => "the peer sent nothing, not even a pong, after a keepalive ping",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per error: the close code it must fail the connection with.
    #[test]
    fn protocol_errors_map_to_close_codes() {
        let table = [
            (ProtocolError::ReservedBits(0x40), 1002),
            (ProtocolError::ReservedOpcode(0x3), 1002),
            (ProtocolError::FragmentedControlFrame, 1002),
            (ProtocolError::ControlFrameTooLarge(126), 1002),
            (ProtocolError::NonMinimalLength, 1002),
            (ProtocolError::LengthOverflow, 1002),
            (ProtocolError::UnmaskedFrame, 1002),
            (ProtocolError::MaskedFrame, 1002),
            (ProtocolError::UnexpectedContinuation, 1002),
            (ProtocolError::ExpectedContinuation, 1002),
            (ProtocolError::TruncatedCloseCode, 1002),
            (ProtocolError::InvalidCloseCode(1005), 1002),
            (ProtocolError::FrameTooLarge { size: 10, max: 1 }, 1009),
            (ProtocolError::MessageTooLarge { max: 1 }, 1009),
            (ProtocolError::InvalidUtf8, 1007),
            (ProtocolError::InvalidCloseReason, 1007),
            (ProtocolError::Extension("bad".into()), 1007),
        ];
        for (error, code) in table {
            assert_eq!(error.close_code().as_u16(), code, "{error:?}");
        }
    }

    #[test]
    fn timeouts_say_what_ran_out() {
        let table = [
            (Timeout::Handshake, "the opening handshake timed out"),
            (Timeout::Close, "the close handshake timed out"),
            (
                Timeout::Pong,
                "the peer sent nothing, not even a pong, after a keepalive ping",
            ),
        ];
        for (timeout, text) in table {
            assert_eq!(Error::Timeout(timeout).to_string(), text);
        }
    }
}
