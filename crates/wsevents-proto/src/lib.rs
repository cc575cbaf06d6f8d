//! # wsevents-proto
//!
//! The WebSocket protocol ([RFC 6455]) as a sans-I/O state machine: bytes in, events
//! and bytes out. It is the core under the `wsevents` client, server and event API, and
//! it can sit under any other I/O layer (blocking, another runtime, a fuzzer, a test).
//!
//! ```text
//!   transport bytes ──► Connection::handle_input ──► frame::FrameHeader::decode
//!                                                    mask::apply_mask (in place)
//!                                                    utf8 (as bytes arrive)
//!                                                    connection/assemble (messages)
//!                                                    extension::Extension::decode
//!                       Connection::poll_event   ◄── Event::{Open, Message, Ping, Pong,
//!                                                           Error, Closed, ...}
//!   caller ──► Connection::send_* / close ──► frame header + payload ──► TransmitQueue
//!   transport ◄── Connection::poll_transmit (a bytes::Buf, vectored)
//!   timer     ◄── Connection::poll_timeout / handle_timeout(now)
//! ```
//!
//! ## What it does
//! - The opening handshake in both roles ([`handshake`]), bounded in size.
//! - Framing, masking, fragmentation, control frames, UTF-8 checks as bytes arrive,
//!   limits, and the close handshake ([`Connection`]), every violation mapped to its
//!   close code in one place ([`ProtocolError`] → [`CloseCode`]).
//! - A plug-in point for extensions ([`extension`]) and permessage-deflate on it
//!   ([`deflate`], RFC 7692).
//!
//! ## What it does not do
//! - No sockets, no TLS, no async runtime, no clock: the caller moves the bytes and
//!   passes `now` in where a deadline is set.
//! - No URL parsing or DNS: the client request is given a host and a target.
//! - No threads and no locks: one `Connection` is driven by one task.
//!
//! [RFC 6455]: https://www.rfc-editor.org/rfc/rfc6455

pub mod close;
mod connection;
pub mod deflate;
pub mod error;
mod event;
pub mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod random;
mod role;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{
    COPIED_PAYLOAD_LEN, Config, Connection, PreparedMessage, State, TransmitQueue,
};
pub use error::{Error, ProtocolError, Timeout};
pub use event::{Closure, Event, Fragment, Initiator, Message, MessageKind, Pong, Utf8Bytes};
pub use handshake::HandshakeError;
pub use role::Role;
