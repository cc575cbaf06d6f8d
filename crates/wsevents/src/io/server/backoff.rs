//! Accepting TCP connections through resource exhaustion.
//!
//! `accept` fails for two kinds of reasons. One connection's own trouble (it was reset
//! or aborted while queued) says nothing about the next: accept again at once. The
//! process or the system out of something (EMFILE, ENFILE: no file descriptor left;
//! ENOBUFS, ENOMEM) says the next call fails too: retrying in a loop would spin a core
//! and flood the log, so wait, doubling the wait from 1 ms up to 1 s, until an accept
//! succeeds (mini-redis `server.rs` does the same).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The first wait after a failed accept.
const MIN_DELAY: Duration = Duration::from_millis(1);
/// The longest wait between accepts that fail.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// An accept that waits out resource exhaustion: see the module doc.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let mut backoff = wsevents::AcceptBackoff::new();
/// loop {
///     let (tcp, peer) = backoff.accept(&listener).await;
///     # let _ = (tcp, peer);
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    delay: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff::new()
    }
}

impl AcceptBackoff {
    /// Waits of 1 ms, doubling up to 1 s.
    pub fn new() -> Self {
        AcceptBackoff { delay: MIN_DELAY }
    }

    /// The next TCP connection; failures are logged and waited out, never returned.
    /// Cancel-safe.
    pub async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.delay = MIN_DELAY;
                    return accepted;
                }
                Err(error) => {
                    if let Some(wait) = self.failed(&error) {
                        tracing::warn!(%error, ?wait, "accept failed: backing off");
                        tokio::time::sleep(wait).await;
                    } else {
                        tracing::debug!(%error, "accept failed for one connection");
                    }
                }
            }
        }
    }

    /// An accept failed with `error`: how long to wait before the next one (`None`:
    /// not at all).
    fn failed(&mut self, error: &io::Error) -> Option<Duration> {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
        ) {
            return None;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_doubles_the_wait_up_to_a_second() {
        let mut backoff = AcceptBackoff::new();
        // EMFILE, as std reports it.
        let emfile = io::Error::other("Too many open files");
        let waits: Vec<_> = (0..12).filter_map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(waits[0], Duration::from_millis(1));
        assert_eq!(waits[1], Duration::from_millis(2));
        assert_eq!(waits[10], Duration::from_secs(1));
        assert_eq!(waits[11], Duration::from_secs(1));
    }

    #[test]
    fn one_connections_trouble_is_not_waited_for() {
        let mut backoff = AcceptBackoff::new();
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&reset), None);
        assert_eq!(backoff.delay, MIN_DELAY);
    }
}
