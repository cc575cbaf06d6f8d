//! Extensions: where permessage-deflate (RFC 7692) and any other extension plug in.
//!
//! Two concerns, kept apart as python-websockets does (`extensions/base.py`):
//!
//! - **Negotiation** ([`ExtensionFactory`]): during the opening handshake, a client
//!   offers parameters and checks the server's answer; a server picks an offer it can
//!   accept. Both produce an [`Extension`] for the open connection.
//! - **Coding** ([`Extension`]): on the open connection, the extension transforms the
//!   payloads of data frames whose RSV bits it owns, on the way in (`decode`) and out
//!   (`encode`).
//!
//! The connection state machine (`connection/`) knows only this trait: it admits the
//! RSV bits of negotiated extensions on the first frame of a message, passes payloads
//! through, and enforces its size limits on what comes out. It never names an
//! extension. This module does not parse the `Sec-WebSocket-Extensions` header; the
//! grammar lives in `handshake/headers.rs`.

use std::fmt;

use bytes::Bytes;

use crate::error::ProtocolError;
use crate::event::MessageKind;
use crate::handshake::{ExtensionOffer, HandshakeError};

/// The per-connection side of a negotiated extension: transforms data payloads.
///
/// Implementations must bound their output by `max_size`, and fail with
/// [`ProtocolError::MessageTooLarge`] *as the output grows past it* (a decompression
/// bomb must be refused without allocating its expansion).
pub trait Extension: Send + fmt::Debug {
    /// The registered name, as in the handshake (`permessage-deflate`).
    fn name(&self) -> &str;

    /// The RSV bits this extension owns (for example [`RSV1`](crate::frame::RSV1)).
    fn rsv_bits(&self) -> u8;

    /// Decode one frame of an incoming message whose first frame carried this
    /// extension's RSV bits. `fin` marks the message's last frame; `max_size` is how many
    /// decoded bytes the message may still grow by.
    fn decode(
        &mut self,
        payload: Bytes,
        fin: bool,
        max_size: usize,
    ) -> Result<Bytes, ProtocolError>;

    /// Encode a whole outgoing message. Returns the payload to send and the RSV bits to
    /// set on its first frame (0 to send it as it is, for example below a size
    /// threshold).
    fn encode(&mut self, kind: MessageKind, payload: Bytes) -> (Bytes, u8);
}

/// The negotiation side of an extension, configured once and shared by connections.
pub trait ExtensionFactory: Send + Sync + fmt::Debug {
    /// The registered name.
    fn name(&self) -> &str;

    /// Client: the offers to put in the request, most preferred first.
    fn offers(&self) -> Vec<ExtensionOffer>;

    /// Client: check the server's answer to our offers and build the extension.
    fn accept_response(
        &self,
        response: &ExtensionOffer,
    ) -> Result<Box<dyn Extension>, HandshakeError>;

    /// Server: pick the first acceptable offer among the client's offers of this
    /// extension (in the client's order); return the answer for the response header and
    /// the extension, or `None` to decline.
    fn accept_offers(
        &self,
        offers: &[&ExtensionOffer],
    ) -> Option<(ExtensionOffer, Box<dyn Extension>)>;
}
