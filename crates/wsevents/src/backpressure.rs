//! The bound on a socket's send queue (`bufferedAmount`) and the rule applied when a
//! `send` would pass it, and the bound on the received events waiting for a handler.
//!
//! A browser's `send` never blocks and never refuses: it queues, and the WHATWG
//! standard's only rule for a full buffer is to close the connection. A server that
//! queues for thousands of peers needs a number instead: uWebSockets'
//! `maxBackpressure` with `closeOnBackpressureLimit`, python-websockets'
//! `write_limit`. [`Backpressure`] is that number and its rule, per socket; its doc
//! gathers every queue bound of the crate in one table.

use wsevents_proto::{CloseCode, CloseFrame};

use crate::error::{Error, Result};

/// How many received events may wait for a handler that awaits
/// ([`WebSocket::on_message_async`](crate::WebSocket::on_message_async)), or for
/// [`next_event`](crate::WebSocket::next_event) to take them, before the socket is no
/// longer read: python-websockets' `max_queue`, and its default. Set per socket with
/// [`WebSocket::set_max_queue`](crate::WebSocket::set_max_queue), for a server's with
/// [`Acceptor::max_queue`](crate::Acceptor::max_queue).
pub const DEFAULT_MAX_QUEUE: usize = 16;

/// How much a socket may hold in its send queue, and what [`send`] does when a
/// message does not fit.
///
/// **The rule.** A message is refused when it would take
/// [`buffered_amount`](crate::WebSocket::buffered_amount) over `limit`, unless the
/// queue is empty: a single message larger than the limit still goes out, alone. So
/// `buffered_amount() <= max(limit, the largest message sent)`, which is at most
/// `limit` plus one message. A refused message is not queued, not even in part, and
/// `send` returns [`Error::BufferFull`]; what happens to the socket is
/// [`when_full`](Self::when_full) ([`WhenFull`]). Pings, pongs and the close frame are
/// never refused (they are at most 125 bytes each).
///
/// **The default**, [`Backpressure::default()`]: 16 MiB
/// ([`DEFAULT_LIMIT`](Self::DEFAULT_LIMIT)) and [`WhenFull::Error`]. 16 MiB is the
/// receive side's own bound (`Config::max_frame_size`), so by default a connection
/// holds at most about as much on the way out as on the way in; it is far above what a
/// program that sends in bursts ever queues on a live peer (so code that works in a
/// browser works here unchanged), yet it caps what a peer that stopped reading can make
/// this end hold. The error rule is the default because only the caller knows whether
/// the message may be dropped, retried once `buffered_amount` has fallen, or whether
/// the peer should go: nothing is lost without it being told. A server fanning out to
/// many clients usually wants [`WhenFull::Close`] instead (uWebSockets'
/// `closeOnBackpressureLimit`).
///
/// [`send`]: crate::WebSocket::send
///
/// # Every queue bound, in one place
///
/// | queue | bound (default) | when it is reached | set with |
/// |---|---|---|---|
/// | event API, what `send` queues (`buffered_amount`) | [`Backpressure`] (16 MiB) | `send` refuses with [`Error::BufferFull`]; with [`WhenFull::Close`] the socket also closes | [`Acceptor::backpressure`](crate::Acceptor::backpressure) for every server socket (`Server`, `Lifecycle`, hyper, axum), [`ClientBuilder::backpressure`](crate::ClientBuilder::backpressure), [`WebSocket::set_backpressure`](crate::WebSocket::set_backpressure) |
/// | stream API, what the sink queues | write limit ([`DEFAULT_WRITE_LIMIT`](crate::DEFAULT_WRITE_LIMIT), 128 KiB) | the sink's `poll_ready` waits until the peer reads: at most the limit plus one message | [`Acceptor::write_limit`](crate::Acceptor::write_limit), [`WebSocketStream::set_write_limit`](crate::WebSocketStream::set_write_limit) |
/// | the hub, per subscriber (unsent publications) | `max_backlog` ([`DEFAULT_MAX_BACKLOG`](crate::hub::DEFAULT_MAX_BACKLOG), 1 MiB) | the subscriber is closed with 1008 "slow subscriber"; the publisher never waits | [`HubBuilder::max_backlog`](crate::hub::HubBuilder::max_backlog) |
/// | event API, received events waiting for a handler that awaits or for `next_event` | `max_queue` ([`DEFAULT_MAX_QUEUE`], 16 events) | the socket is not read: TCP holds the peer back | [`Acceptor::max_queue`](crate::Acceptor::max_queue), [`WebSocket::set_max_queue`](crate::WebSocket::set_max_queue) |
/// | reconnecting client, messages sent while disconnected | [`DEFAULT_MAX_QUEUED`](crate::DEFAULT_MAX_QUEUED) (1024) | `send` refuses with [`Error::QueueFull`] | [`Reconnect::max_queued`](crate::Reconnect::max_queued) |
///
/// A server socket takes its acceptor's bounds, whichever way it was accepted; a route
/// with an acceptor of its own ([`Acceptor::at`](crate::Acceptor::at)) takes that
/// acceptor's. Publications of the hub obey the hub's bound, not the socket's
/// [`Backpressure`].
///
/// ```
/// use wsevents::{Backpressure, CloseCode, WhenFull};
/// assert_eq!(Backpressure::default(), Backpressure { limit: 16 << 20, when_full: WhenFull::Error });
/// // A broadcast server: at most 1 MiB per client, then 1013 "try again later".
/// let strict = Backpressure::close(1 << 20, CloseCode::TRY_AGAIN_LATER);
/// assert_eq!(strict.when_full, WhenFull::Close(CloseCode::TRY_AGAIN_LATER));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backpressure {
    /// The most `buffered_amount` may reach with more than one message queued, in
    /// bytes of application data (text as UTF-8, binary as is, before compression and
    /// framing).
    pub limit: usize,
    /// What happens when a message does not fit.
    pub when_full: WhenFull,
}

/// What a socket does when [`send`](crate::WebSocket::send) would pass its
/// [`Backpressure`] limit. In both cases the message is not queued and `send` returns
/// [`Error::BufferFull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WhenFull {
    /// Only the error: the socket stays open, and a later `send` succeeds once the
    /// peer has read enough for the message to fit.
    Error,
    /// The error, and the socket starts the closing handshake with this code and the
    /// reason `"send buffer full"` (as the WHATWG standard does on a full buffer). The
    /// close frame is queued after what is already buffered, so a peer that reads
    /// again sees every message sent before it; a peer that does not is dropped when
    /// `Config::close_timeout` runs out (the local `close` event then says 1006). The
    /// usual codes: 1008 ([`CloseCode::POLICY_VIOLATION`]) or 1013
    /// ([`CloseCode::TRY_AGAIN_LATER`]); it must be one valid in a close frame.
    Close(CloseCode),
}

impl Backpressure {
    /// The default limit: 16 MiB.
    pub const DEFAULT_LIMIT: usize = 16 << 20;

    /// The reason sent with [`WhenFull::Close`].
    pub const CLOSE_REASON: &'static str = "send buffer full";

    /// At most `limit` bytes buffered; a message that does not fit is an error.
    ///
    /// ```
    /// use wsevents::{Backpressure, WhenFull};
    /// assert_eq!(Backpressure::error(1 << 20).when_full, WhenFull::Error);
    /// ```
    pub const fn error(limit: usize) -> Backpressure {
        Backpressure {
            limit,
            when_full: WhenFull::Error,
        }
    }

    /// At most `limit` bytes buffered; a message that does not fit closes the socket
    /// with `code` (and is an error).
    ///
    /// ```
    /// use wsevents::{Backpressure, CloseCode};
    /// let rule = Backpressure::close(4 << 20, CloseCode::POLICY_VIOLATION);
    /// assert_eq!(rule.limit, 4 << 20);
    /// ```
    pub const fn close(limit: usize, code: CloseCode) -> Backpressure {
        Backpressure {
            limit,
            when_full: WhenFull::Close(code),
        }
    }

    /// [`Error::InvalidAccess`] for a close code that may not be sent in a close frame
    /// (1005, 1006, 1015, 0–999, …).
    pub(crate) fn checked(self) -> Result<Backpressure> {
        if let WhenFull::Close(code) = self.when_full {
            CloseFrame::new(code, String::new())
                .check()
                .map_err(Error::from)?;
        }
        Ok(self)
    }

    /// Whether a message of `len` bytes may be queued on top of `buffered`.
    pub(crate) fn admits(self, buffered: usize, len: usize) -> bool {
        buffered == 0 || buffered.saturating_add(len) <= self.limit
    }
}

impl Default for Backpressure {
    fn default() -> Self {
        Backpressure::error(Backpressure::DEFAULT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_fits_up_to_the_limit_and_alone_whatever_its_size() {
        let rule = Backpressure::error(100);
        assert!(rule.admits(0, 100));
        assert!(rule.admits(60, 40));
        assert!(!rule.admits(60, 41));
        assert!(rule.admits(0, 1000), "alone on an empty queue");
        assert!(!rule.admits(1, usize::MAX), "no overflow");
    }

    #[test]
    fn a_close_rule_needs_a_code_valid_on_the_wire() {
        assert!(
            Backpressure::close(1, CloseCode::TRY_AGAIN_LATER)
                .checked()
                .is_ok()
        );
        assert!(matches!(
            Backpressure::close(1, CloseCode::ABNORMAL).checked(),
            Err(Error::InvalidAccess(_))
        ));
        assert!(Backpressure::default().checked().is_ok());
    }
}
