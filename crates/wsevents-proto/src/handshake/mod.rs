//! The opening handshake (RFC 6455 §4): HTTP/1.1 Upgrade, both roles.
//!
//! PLACEHOLDER: being written (client.rs, server.rs, headers.rs).

/// The opening handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Placeholder.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
}
