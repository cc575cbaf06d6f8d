//! wsevents-proto: the WebSocket protocol (RFC 6455) as a sans-I/O state machine.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod close;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod role;

pub use close::{CloseCode, CloseFrame};
pub use error::{Error, ProtocolError};
pub use handshake::HandshakeError;
pub use role::Role;

/// Placeholder until connection/ lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// x
    Connecting,
}
/// Placeholder.
pub struct Connection;
