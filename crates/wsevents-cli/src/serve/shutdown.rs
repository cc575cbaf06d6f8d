//! Graceful shutdown in two small types (the mini-redis pattern): the process-wide
//! [`ShutdownSignal`] (Ctrl-C / SIGTERM) that stops the accept loop, and the
//! per-connection [`Shutdown`] each connection task waits on beside its socket.

use tokio::sync::watch;

/// Ctrl-C (SIGINT) or SIGTERM, registered when made so that a signal arriving early is
/// not the default one that kills the process.
pub(super) struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Take over SIGINT and SIGTERM.
    pub(super) fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignal {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    /// Resolves at the first signal.
    pub(super) async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("Ctrl-C (SIGINT)"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM"),
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A connection's view of the shutdown: [`recv`](Shutdown::recv) resolves once the
/// server is shutting down (and keeps resolving at once after that).
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    pub(super) fn new(notify: watch::Receiver<bool>) -> Self {
        Shutdown { notify }
    }

    /// Wait for the shutdown. Cancel-safe, so it can sit in a `select!` loop.
    pub(super) async fn recv(&mut self) {
        // An error means the sender is gone: the server is going away too.
        let _ = self.notify.wait_for(|&shutting_down| shutting_down).await;
    }
}
