//! Which end of the connection this core plays.
//!
//! The role decides the two asymmetric rules of RFC 6455: a client masks every frame it
//! sends and refuses masked frames from the server (§5.1); a server does the opposite.
//! It also decides who speaks first in the opening handshake (the client's request) and
//! who closes the TCP connection first after the close handshake (the server, §7.1.1).

/// The end of a WebSocket connection a [`Connection`](crate::Connection) plays.
///
/// ```
/// use wsevents_proto::Role;
/// assert!(Role::Client.masks_outgoing());
/// assert!(!Role::Server.masks_outgoing());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the upgrade request; masks what it sends.
    Client,
    /// The end that accepted the upgrade; never masks, requires masked input.
    Server,
}

impl Role {
    /// Whether frames this end sends carry a masking key (true for clients).
    pub fn masks_outgoing(self) -> bool {
        matches!(self, Role::Client)
    }

    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}
