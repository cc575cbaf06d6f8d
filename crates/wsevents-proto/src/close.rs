//! Close codes and close-frame payloads (RFC 6455 §5.5.1, §7.4).
//!
//! [`CloseCode`] is an open newtype over `u16` (like h2's `Reason`), so application codes
//! 3000–4999 round-trip untouched; the rules for which codes may appear on the wire sit
//! beside it. [`CloseFrame`] parses and builds the body of a close frame: an optional
//! code followed by a UTF-8 reason of at most 123 bytes.
//!
//! This module does not decide *when* to close: that is the connection state machine's
//! job (`connection/state.rs`).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, ProtocolError};

/// The longest reason a close frame can carry: 125 bytes of control payload minus the
/// two-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// Any `u16` can be held, so codes this crate does not name still round-trip; the
/// associated constants name the registered ones.
///
/// ```
/// use wsevents_proto::CloseCode;
/// assert_eq!(CloseCode::from(1000), CloseCode::NORMAL);
/// assert!(CloseCode::from(4000).is_valid_on_wire());
/// assert!(!CloseCode::NO_STATUS_RECEIVED.is_valid_on_wire());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint cannot accept this kind of data.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reserved; reported locally when a close frame carried no code. Never sent.
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: reserved; reported locally when the connection ended without a close
    /// handshake. Never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data did not match its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: reserved; reported locally when the TLS handshake failed. Never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// The code `code` (as `From<u16>`, in a `const`: an application's own codes).
    ///
    /// ```
    /// use wsevents_proto::CloseCode;
    /// const UNAUTHORIZED: CloseCode = CloseCode::new(4001);
    /// assert_eq!(UNAUTHORIZED, CloseCode::from(4001));
    /// ```
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// Valid: 1000–1003, 1007–1014 (the RFC's codes and the IANA-registered 1012–1014)
    /// and 3000–4999 (libraries and applications). Invalid: everything below 1000,
    /// 1004–1006 and 1015 (reserved for local use), 1016–2999 (unassigned) and 5000+.
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether an application may pass this code to `close` (the WHATWG rule: 1000 or
    /// 3000–4999; the 1001–1014 codes are the library's to send).
    pub const fn is_valid_for_application(self) -> bool {
        matches!(self.0, 1000 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The body of a close frame: a code and a reason, or nothing at all.
///
/// `code == None` is an empty close frame, which the receiving side reports as 1005.
///
/// ```
/// use wsevents_proto::{CloseCode, CloseFrame};
/// let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
/// let body = frame.encode();
/// assert_eq!(&body[..], b"\x03\xe8bye");
/// assert_eq!(CloseFrame::parse(&body).unwrap(), frame);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloseFrame {
    /// The status code, `None` for an empty close frame.
    pub code: Option<CloseCode>,
    /// The reason, UTF-8, at most [`MAX_REASON_LEN`] bytes; empty without a code.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        CloseFrame {
            code: Some(code),
            reason: reason.into(),
        }
    }

    /// An empty close frame (no code, no reason).
    pub fn empty() -> Self {
        CloseFrame::default()
    }

    /// Whether a caller may send this frame: a code valid on the wire
    /// ([`CloseCode::is_valid_on_wire`]) or none, and a reason of at most
    /// [`MAX_REASON_LEN`] bytes. The one check behind every close a program asks for
    /// (the connection's `close`, and in `wsevents` the event API's `close_with_code`,
    /// the hub's slow-client code, backpressure's close).
    ///
    /// ```
    /// use wsevents_proto::{CloseCode, CloseFrame, Error};
    /// assert!(CloseFrame::new(CloseCode::GOING_AWAY, "bye").check().is_ok());
    /// assert_eq!(CloseFrame::new(CloseCode::ABNORMAL, "").check(), Err(Error::InvalidCloseCode(1006)));
    /// let long = "r".repeat(124);
    /// assert_eq!(CloseFrame::new(CloseCode::NORMAL, long).check(), Err(Error::ReasonTooLong(124)));
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        self.check_with(CloseCode::is_valid_on_wire)
    }

    /// [`check`](Self::check) with the browser's rule for the code: 1000 or 3000–4999
    /// ([`CloseCode::is_valid_for_application`]), what WHATWG `close(code, reason)`
    /// takes.
    pub fn check_for_application(&self) -> Result<(), Error> {
        self.check_with(CloseCode::is_valid_for_application)
    }

    fn check_with(&self, valid: fn(CloseCode) -> bool) -> Result<(), Error> {
        if let Some(code) = self.code
            && !valid(code)
        {
            return Err(Error::InvalidCloseCode(code.0));
        }
        if self.reason.len() > MAX_REASON_LEN {
            return Err(Error::ReasonTooLong(self.reason.len()));
        }
        Ok(())
    }

    /// The code a receiver reports for this frame: its code, or 1005 when it had none.
    pub fn reported_code(&self) -> CloseCode {
        self.code.unwrap_or(CloseCode::NO_STATUS_RECEIVED)
    }

    /// Parse a received close payload, checking it as RFC 6455 §5.5.1 and §7.4 require.
    ///
    /// A one-byte payload or a code not valid on the wire is a protocol error (1002); a
    /// reason that is not UTF-8 is invalid payload data (1007).
    pub fn parse(payload: &[u8]) -> Result<CloseFrame, ProtocolError> {
        match payload {
            [] => Ok(CloseFrame::empty()),
            [_] => Err(ProtocolError::TruncatedCloseCode),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = simdutf8::basic::from_utf8(reason)
                    .map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(CloseFrame {
                    code: Some(code),
                    reason: reason.to_owned(),
                })
            }
        }
    }

    /// The payload of this frame as it goes on the wire.
    pub fn encode(&self) -> Bytes {
        match self.code {
            None => Bytes::new(),
            Some(code) => {
                let mut body = BytesMut::with_capacity(2 + self.reason.len());
                body.put_u16(code.0);
                body.put_slice(self.reason.as_bytes());
                body.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_class_is_sorted_as_rfc_6455_says() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ];
        let invalid = [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in valid {
            assert!(
                CloseCode::from(code).is_valid_on_wire(),
                "{code} should be valid"
            );
        }
        for code in invalid {
            assert!(
                !CloseCode::from(code).is_valid_on_wire(),
                "{code} should be invalid"
            );
        }
    }

    #[test]
    fn application_codes_are_1000_and_3000_to_4999() {
        assert!(CloseCode::NORMAL.is_valid_for_application());
        assert!(CloseCode::from(3000).is_valid_for_application());
        assert!(CloseCode::from(4999).is_valid_for_application());
        assert!(!CloseCode::GOING_AWAY.is_valid_for_application());
        assert!(!CloseCode::from(2999).is_valid_for_application());
        assert!(!CloseCode::from(5000).is_valid_for_application());
    }

    #[test]
    fn a_close_asked_for_is_checked_by_the_rule_of_who_asks() {
        let frame = |code: u16, reason: &str| CloseFrame::new(CloseCode::from(code), reason);
        for code in [1001, 1008, 1011, 1014] {
            assert_eq!(frame(code, "").check(), Ok(()), "{code}");
            assert_eq!(
                frame(code, "").check_for_application(),
                Err(Error::InvalidCloseCode(code)),
                "{code}"
            );
        }
        for code in [1000, 3000, 4999] {
            assert_eq!(frame(code, "").check(), Ok(()));
            assert_eq!(frame(code, "").check_for_application(), Ok(()));
        }
        for code in [0, 999, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(frame(code, "").check(), Err(Error::InvalidCloseCode(code)));
            assert_eq!(
                frame(code, "").check_for_application(),
                Err(Error::InvalidCloseCode(code))
            );
        }
        // The reason: 123 bytes of UTF-8 at most (62 two-byte characters are 124).
        assert_eq!(frame(1000, &"r".repeat(123)).check(), Ok(()));
        assert_eq!(
            frame(4000, &"é".repeat(62)).check_for_application(),
            Err(Error::ReasonTooLong(124))
        );
        // No code: an empty close frame, allowed.
        assert_eq!(CloseFrame::empty().check(), Ok(()));
    }

    #[test]
    fn empty_payload_reports_1005() {
        let frame = CloseFrame::parse(&[]).unwrap();
        assert_eq!(frame.code, None);
        assert_eq!(frame.reported_code(), CloseCode::NO_STATUS_RECEIVED);
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(ProtocolError::TruncatedCloseCode)
        );
    }

    #[test]
    fn invalid_code_on_the_wire_is_refused() {
        for code in [999u16, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert_eq!(
                CloseFrame::parse(&code.to_be_bytes()),
                Err(ProtocolError::InvalidCloseCode(code))
            );
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xe8, 0xce, 0xba, 0xff]),
            Err(ProtocolError::InvalidCloseReason)
        );
        let ok = CloseFrame::parse(&[0x03, 0xe8, 0xce, 0xba]).unwrap();
        assert_eq!(ok.reason, "κ");
    }

    #[test]
    fn application_code_round_trips() {
        let frame = CloseFrame::new(CloseCode::from(4321), "custom");
        assert_eq!(CloseFrame::parse(&frame.encode()).unwrap(), frame);
    }
}
