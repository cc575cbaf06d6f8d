//! permessage-deflate (RFC 7692): compression of each message, negotiated in the
//! opening handshake.
//!
//! - `params.rs`: the four parameters, their grammar, and the negotiation rules (what a
//!   server answers to an offer, which answers a client refuses).
//! - `codec.rs`: the compressor and decompressor on an open connection (flate2 on the
//!   zlib-rs backend; no hand-written DEFLATE).
//! - here: [`DeflateConfig`], the caller's policy for both roles, and
//!   [`PerMessageDeflate`], the [`ExtensionFactory`] the connection negotiates with.
//!
//! The connection never names this extension: it sees an [`Extension`] that owns RSV1
//! (see `extension/`). Limits stay the connection's: the decompressor is handed the
//! room left under `max_message_size` and stops as soon as the output passes it.
//!
//! ```
//! use std::sync::Arc;
//! use wsevents_proto::Config;
//! use wsevents_proto::deflate::{DeflateConfig, PerMessageDeflate};
//!
//! let config = Config {
//!     extensions: vec![Arc::new(PerMessageDeflate::new(DeflateConfig::default()))],
//!     ..Config::default()
//! };
//! # let _ = config;
//! ```

mod codec;
mod params;

pub use params::{ClientWindow, DeflateParams, MAX_WINDOW_BITS, MIN_WINDOW_BITS, NAME, ParamError};

use crate::extension::{Extension, ExtensionFactory};
use crate::handshake::{ExtensionOffer, HandshakeError};
use codec::DeflateCodec;
use params::{ServerPolicy, answer_offer, check_answer};

/// What this end asks for and allows, in either role.
///
/// As a client, the fields are the offer: `server_*` ask the server, `client_*` promise
/// what this end will do (`client_max_window_bits: None` offers the parameter without a
/// value, "the server may limit my window", as browsers do). As a server, they are the
/// policy applied to each offer: `server_*` are limits on this end, `client_*` are asked
/// of the client (an offer that cannot meet them is declined).
///
/// ```
/// use wsevents_proto::deflate::DeflateConfig;
/// let config = DeflateConfig {
///     client_no_context_takeover: true, // a server that keeps no state per client
///     threshold: 256,                   // only compress messages of 256 bytes or more
///     ..DeflateConfig::default()
/// };
/// assert_eq!(config.level, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The server resets its compressor after each message. Default off.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message. Default off.
    pub client_no_context_takeover: bool,
    /// The largest window (8–15 bits) the server compresses with; `None` for no limit
    /// (15). Default `None`.
    pub server_max_window_bits: Option<u8>,
    /// The largest window (8–15 bits) the client compresses with; `None` for no limit
    /// (15). Default `None`.
    pub client_max_window_bits: Option<u8>,
    /// The zlib compression level, 0 (stored) to 9 (smallest). Default 1, as in
    /// gorilla/websocket: several times faster than 6 for a few percent in size, the
    /// right trade for messages on their way to a waiting peer.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed (they rarely shrink
    /// and always cost CPU). Default 64.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            level: 1,
            threshold: 64,
        }
    }
}

impl DeflateConfig {
    fn bits(value: Option<u8>) -> u8 {
        value.map_or(MAX_WINDOW_BITS, |bits| {
            bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
        })
    }

    /// The client's offer.
    fn offer(&self) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: self.server_max_window_bits.map(|b| Self::bits(Some(b))),
            client_max_window_bits: match self.client_max_window_bits {
                None => ClientWindow::Any,
                Some(bits) => ClientWindow::Bits(Self::bits(Some(bits))),
            },
        }
    }

    fn policy(&self) -> ServerPolicy {
        ServerPolicy {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: Self::bits(self.server_max_window_bits),
            client_max_window_bits: Self::bits(self.client_max_window_bits),
        }
    }
}

/// The permessage-deflate [`ExtensionFactory`]: put it in
/// [`Config::extensions`](crate::Config::extensions) to offer it (client) or accept it
/// (server).
///
/// ```
/// use wsevents_proto::deflate::{DeflateConfig, PerMessageDeflate};
/// use wsevents_proto::extension::ExtensionFactory;
///
/// let client = PerMessageDeflate::new(DeflateConfig::default());
/// assert_eq!(client.offers()[0].to_string(), "permessage-deflate; client_max_window_bits");
/// ```
#[derive(Debug, Clone, Default)]
pub struct PerMessageDeflate {
    config: DeflateConfig,
}

impl PerMessageDeflate {
    /// The factory for `config`.
    pub fn new(config: DeflateConfig) -> Self {
        PerMessageDeflate { config }
    }

    /// The configuration.
    pub fn config(&self) -> &DeflateConfig {
        &self.config
    }
}

impl ExtensionFactory for PerMessageDeflate {
    fn name(&self) -> &str {
        NAME
    }

    fn offers(&self) -> Vec<ExtensionOffer> {
        vec![self.config.offer().to_offer()]
    }

    fn accept_response(
        &self,
        response: &ExtensionOffer,
    ) -> Result<Box<dyn Extension>, HandshakeError> {
        let answer = DeflateParams::parse(response)
            .map_err(|e| HandshakeError::InvalidExtensionParams(e.to_string()))?;
        let agreement = check_answer(&self.config.offer(), &answer)
            .map_err(|e| HandshakeError::InvalidExtensionParams(e.to_string()))?;
        Ok(Box::new(DeflateCodec::new(
            agreement,
            self.config.level,
            self.config.threshold,
        )))
    }

    fn accept_offers(
        &self,
        offers: &[&ExtensionOffer],
    ) -> Option<(ExtensionOffer, Box<dyn Extension>)> {
        let policy = self.config.policy();
        offers.iter().find_map(|offer| {
            // Invalid parameters decline the offer (RFC 7692 §5); try the next one.
            let params = DeflateParams::parse(offer).ok()?;
            let (answer, agreement) = answer_offer(&params, &policy)?;
            let codec = DeflateCodec::new(agreement, self.config.level, self.config.threshold);
            Some((answer.to_offer(), Box::new(codec) as Box<dyn Extension>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_extensions;

    #[test]
    fn server_declines_invalid_offers_and_takes_the_next() {
        let factory = PerMessageDeflate::default();
        let offers = parse_extensions(
            "permessage-deflate; server_max_window_bits=7, permessage-deflate; foo, permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        let refs: Vec<_> = offers.iter().collect();
        let (answer, extension) = factory.accept_offers(&refs).unwrap();
        assert_eq!(answer.to_string(), "permessage-deflate");
        assert_eq!(extension.rsv_bits(), crate::frame::RSV1);
        assert!(factory.accept_offers(&refs[..2]).is_none());
    }

    #[test]
    fn client_refuses_an_invalid_answer() {
        let factory = PerMessageDeflate::default();
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            let answer = &parse_extensions(bad).unwrap()[0];
            assert!(
                matches!(
                    factory.accept_response(answer),
                    Err(HandshakeError::InvalidExtensionParams(_))
                ),
                "{bad}"
            );
        }
    }
}
