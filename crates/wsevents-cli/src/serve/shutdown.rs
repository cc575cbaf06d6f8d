//! The signals that start the shutdown: Ctrl-C (SIGINT) and SIGTERM. The shutdown
//! itself (stop accepting, 1001 to every connection, the grace period, the report) is
//! the library's [`wsevents::Lifecycle`].

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
