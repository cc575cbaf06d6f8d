//! The life of a server's connections, in small named types (the mini-redis
//! `server.rs` / `shutdown.rs` pattern), on tokio-util's [`CancellationToken`] and
//! [`TaskTracker`]:
//!
//! - [`ServerLimits`]: the bounds and their defaults.
//! - [`Lifecycle`]: shared by an accept loop and every connection it opened. It caps
//!   the handshakes in progress ([`HandshakePermit`]) and the open connections (past
//!   the cap an upgrade request is answered `503 Service Unavailable` with
//!   `Retry-After`), both also per peer address (`peers.rs`: past the handshake cap of
//!   an address its next TCP connection is closed at once, past its connection cap an
//!   upgrade request is answered `429 Too Many Requests` with `Retry-After`), tracks
//!   each open connection until its teardown is over, and shuts them all down:
//!   [`Lifecycle::shutdown`] returns a [`ShutdownReport`].
//! - Inside the crate, a `Slot` (one admitted connection: its permit and its tracker
//!   token) and a `Tracked` (the slot plus the two signals, held by the connection's
//!   driver).
//!
//! Shutdown, step by step:
//!
//! 1. The shutdown token is cancelled (by [`Lifecycle::shutdown`], or by the caller who
//!    supplied the token): accept loops stop accepting, handshakes in progress are
//!    refused with 503.
//! 2. Every open connection's driver notices (see below) and closes with 1001
//!    ([`CloseCode::GOING_AWAY`](crate::CloseCode::GOING_AWAY)) and
//!    [`SHUTDOWN_REASON`]: the close frame takes its place at the end of the core's
//!    transmit queue, so everything queued before it is written first.
//! 3. The close handshakes run for up to the grace period; a connection counts as open
//!    until its transport's teardown is done (its tracker token is dropped then).
//! 4. Past the grace period the force token is cancelled: every connection still open
//!    is aborted (no close frame, its transport given up) and counted as forced.
//!
//! How a driver notices, at the least cost on its hot path: a busy connection (one that
//! always has input) checks one atomic, the lifecycle's stage, once per poll; an idle
//! one registers its wakeup with the two tokens only when it is about to return
//! `Pending`. A connection nobody tracks (a client, or one accepted on a caller's
//! transport) has no `Tracked` at all and pays one branch on a `None`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::peers::{PastCap, PeerClaim, PeerLoad, Peers};
use crate::error::Result;
use crate::io::server::Acceptor;
use crate::io::stream::WebSocketStream;

/// The default cap on open connections.
///
/// Ten thousand: every connection costs a file descriptor and, while idle, a few KiB
/// (the driver gives its buffers back when it waits), so this is tens of MiB, which one
/// process serves comfortably. A fixed number is predictable from machine to machine;
/// it is useful only below the process's file-descriptor limit (`ulimit -n`): raise
/// that limit above the cap, else `accept` fails first (EMFILE, see [`AcceptBackoff`]),
/// and a client gets no answer at all instead of a 503.
///
/// [`AcceptBackoff`]: crate::AcceptBackoff
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default cap on opening handshakes in progress (TLS, the HTTP head, the 101).
///
/// Each one holds a connection and, for TLS, some tens of KiB; with the handshake
/// timeout (10 s by default) this bounds what slow or idle clients can hold.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// The default cap on opening handshakes in progress from one peer address (an IPv4
/// address, or an IPv6 /64).
///
/// Sixty-four: a browser opens one WebSocket handshake at a time per server (RFC 6455
/// §4.1: no more than one connection in the CONNECTING state per address), and a
/// handshake lasts a round trip or three, so 64 at once is 64 browsers behind one NAT
/// (an office, a campus) connecting in the same instant, a few thousand a second. It
/// is a sixteenth of [`DEFAULT_MAX_HANDSHAKES`]: the rule is that it stays well below
/// the server-wide cap, so that one address can never hold every handshake slot (2,000
/// slowloris sockets from one address hold 64 and the others are closed at once).
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 64;

/// The default cap on open connections from one peer address (an IPv4 address, or an
/// IPv6 /64).
///
/// One thousand: a person holds a connection per tab, so an office or a campus of a
/// few hundred people behind one NAT fits, while one address can take at most a tenth
/// of [`DEFAULT_MAX_CONNECTIONS`]. Behind a carrier-grade NAT with more users per
/// address, or behind a reverse proxy (every connection then comes from the proxy's
/// address), raise it or turn it off (`usize::MAX`).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;

/// The default `Retry-After` of a 503 past the connection cap: long enough for a few
/// connections to end, short enough that a client comes back soon.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The default grace period of a shutdown: how long close handshakes may take before
/// the connections still open are forced.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The close reason every connection gets, with 1001, when its server shuts down.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// After the force, how long to wait for connections to notice it: a connection whose
/// owner does not poll it cannot notice, and is counted as forced without waiting for.
const FORCE_WAIT: Duration = Duration::from_secs(1);

/// The stages of a lifecycle, in order (the `stage` atomic).
const RUNNING: u8 = 0;
const GOING_AWAY: u8 = 1;
const FORCING: u8 = 2;

/// The bounds of a server.
///
/// ```
/// use std::time::Duration;
/// let limits = wsevents::ServerLimits {
///     max_connections: 50_000,
///     retry_after: Duration::from_secs(30),
///     ..wsevents::ServerLimits::default()
/// };
/// assert_eq!(limits.max_handshakes, wsevents::DEFAULT_MAX_HANDSHAKES);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// How many connections may be open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]); past it an upgrade request gets 503 with
    /// `Retry-After`. A connection counts from the moment its request is accepted
    /// until its transport's teardown is over.
    pub max_connections: usize,
    /// How many opening handshakes may run at once (default
    /// [`DEFAULT_MAX_HANDSHAKES`]); further TCP connections wait in the listen backlog.
    pub max_handshakes: usize,
    /// How many opening handshakes one peer address (an IPv4 address, an IPv6 /64) may
    /// have in progress at once (default [`DEFAULT_MAX_HANDSHAKES_PER_IP`]; `usize::MAX`:
    /// no cap); past it the address's next TCP connection is closed at once, without
    /// an answer (its request is not read; on a TLS port an HTTP answer could not be
    /// read anyway), and counted ([`Lifecycle::refused_per_ip`]). Keep it well below
    /// `max_handshakes`, so that one address cannot hold every handshake slot. Applied
    /// by [`Lifecycle::next_connection`] (so by [`Server`](crate::Server)).
    pub max_handshakes_per_ip: usize,
    /// How many connections one peer address may have open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_IP`]; `usize::MAX`: no cap); past it an upgrade
    /// request is answered `429 Too Many Requests` with `Retry-After`. Applied to
    /// connections whose peer address is known (a `Server`'s, or those accepted
    /// with [`Lifecycle::accept_from`] or upgraded with a peer address).
    pub max_connections_per_ip: usize,
    /// The `Retry-After` of a 503 or a 429, in whole seconds (default
    /// [`DEFAULT_RETRY_AFTER`]).
    pub retry_after: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

/// How a shutdown went for the connections open when it began; its `Display` is the
/// line `wsevents serve` prints.
///
/// ```
/// let report = wsevents::ShutdownReport::default();
/// assert_eq!((report.clean, report.forced), (0, 0));
/// assert_eq!(report.to_string(), "0 closed cleanly, 0 forced");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Ended with a clean close handshake within the grace period.
    pub clean: usize,
    /// Ended otherwise: aborted after the grace period (a peer that did not answer the
    /// close, or that stopped reading), gone without a close handshake, or still held
    /// by an owner that did not poll it.
    pub forced: usize,
}

impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} closed cleanly, {} forced", self.clean, self.forced)
    }
}

/// The cap on open connections, the cap on handshakes, the tracking of connections
/// and their graceful shutdown, shared by an accept loop and its connections (a cheap
/// clone).
///
/// [`Server`](crate::Server) runs on one; an accept loop of one's own (one that also
/// serves plain HTTP on the port, as `wsevents serve` does) uses it like this:
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use std::time::Duration;
/// use wsevents::{AcceptBackoff, Acceptor, CancellationToken, Lifecycle, ServerLimits};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let lifecycle = Lifecycle::new(ServerLimits::default(), CancellationToken::new());
/// let acceptor = Acceptor::new();
/// let mut backoff = AcceptBackoff::new();
/// let stop = lifecycle.shutdown_token().clone();
/// // Elsewhere (a signal handler): `stop.cancel()`.
/// loop {
///     let permit = tokio::select! {
///         () = stop.cancelled() => break,
///         permit = lifecycle.handshake_permit() => permit,
///     };
///     let (tcp, _peer) = tokio::select! {
///         () = stop.cancelled() => break,
///         accepted = backoff.accept(&listener) => accepted,
///     };
///     let (lifecycle, acceptor) = (lifecycle.clone(), acceptor.clone());
///     lifecycle.clone().spawn(async move {
///         let timeout = Duration::from_secs(10);
///         let opened = tokio::time::timeout(timeout, lifecycle.accept(&acceptor, tcp)).await;
///         drop(permit);
///         let Ok(Ok((mut ws, _request))) = opened else { return };
///         // ... use `ws`: on shutdown it closes with 1001 by itself.
///     });
/// }
/// let report = lifecycle.shutdown(Duration::from_secs(10)).await;
/// println!("shutdown: {report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lifecycle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("limits", &self.shared.limits)
            .field("open", &self.open_connections())
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

/// What a lifecycle's accept loop and connections share.
struct Shared {
    limits: ServerLimits,
    /// The `Retry-After` header of a 503.
    retry_after: (String, String),
    /// `RUNNING`, `GOING_AWAY` or `FORCING`: what busy connections check.
    stage: AtomicU8,
    /// Cancelled when the shutdown begins (the caller's token, or ours).
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over.
    force: CancellationToken,
    /// Every open connection holds a token of it; tasks spawned on the lifecycle too.
    tracker: TaskTracker,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// The counts and caps per peer address.
    peers: Arc<Peers>,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    /// Refused for the caps per address: connections closed at accept, 429s.
    refused_per_ip: AtomicU64,
    report: OnceCell<ShutdownReport>,
}

/// Connections open, and how those that ended during the shutdown ended.
#[derive(Debug, Default)]
struct Counts {
    open: usize,
    clean: usize,
    forced: usize,
}

impl Lifecycle {
    /// A lifecycle with these limits, shut down when `shutdown` is cancelled (by
    /// [`shutdown`](Self::shutdown), or by whoever else holds the token) — pass
    /// `CancellationToken::new()` when nothing else should trigger it.
    pub fn new(limits: ServerLimits, shutdown: CancellationToken) -> Lifecycle {
        let retry_after = limits.retry_after.as_secs().to_string();
        let permits = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        Lifecycle {
            shared: Arc::new(Shared {
                connections: permits(limits.max_connections),
                handshakes: permits(limits.max_handshakes),
                peers: Peers::new(limits.max_handshakes_per_ip, limits.max_connections_per_ip),
                limits,
                retry_after: ("Retry-After".to_owned(), retry_after),
                stage: AtomicU8::new(RUNNING),
                shutdown,
                force: CancellationToken::new(),
                tracker: TaskTracker::new(),
                counts: Mutex::new(Counts::default()),
                refused: AtomicU64::new(0),
                refused_per_ip: AtomicU64::new(0),
                report: OnceCell::new(),
            }),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ServerLimits {
        &self.shared.limits
    }

    /// The token whose cancellation starts the shutdown: an accept loop stops
    /// accepting when it is cancelled.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shared.shutdown
    }

    /// The shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.stage.load(Ordering::Acquire) != RUNNING || self.shared.shutdown.is_cancelled()
    }

    /// How many connections are open (admitted and not yet torn down).
    pub fn open_connections(&self) -> usize {
        self.shared.counts().open
    }

    /// How many upgrade requests were refused with 503 (at the cap, or shutting down).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// How many connections were refused for the caps per peer address: TCP
    /// connections closed at accept past [`max_handshakes_per_ip`], and upgrade
    /// requests answered 429 past [`max_connections_per_ip`].
    ///
    /// [`max_handshakes_per_ip`]: ServerLimits::max_handshakes_per_ip
    /// [`max_connections_per_ip`]: ServerLimits::max_connections_per_ip
    pub fn refused_per_ip(&self) -> u64 {
        self.shared.refused_per_ip.load(Ordering::Relaxed)
    }

    /// What the address of `ip` (its IPv6 /64) holds now: handshakes in progress and
    /// open connections, as the caps per address count them.
    ///
    /// ```
    /// use wsevents::{Lifecycle, ServerLimits};
    /// let lifecycle = Lifecycle::new(ServerLimits::default(), Default::default());
    /// let load = lifecycle.peer_load("192.0.2.1".parse().unwrap());
    /// assert_eq!((load.handshakes, load.connections), (0, 0));
    /// ```
    pub fn peer_load(&self, ip: std::net::IpAddr) -> PeerLoad {
        self.shared.peers.load(ip)
    }

    /// Wait for room for one more opening handshake (cancel-safe). Take it before
    /// accepting the TCP connection, so that connections past the cap wait in the
    /// kernel's listen backlog, and drop it once the handshake is over. The cap per
    /// peer address is [`next_connection`](Self::next_connection)'s (it knows the
    /// address): an accept loop of one's own should use that.
    pub async fn handshake_permit(&self) -> HandshakePermit {
        // The semaphore is never closed, so this waits and never fails.
        let permit = self.shared.handshakes.clone().acquire_owned().await.ok();
        HandshakePermit {
            _permit: permit,
            _peer: None,
        }
    }

    /// The next TCP connection of an accept loop, with its handshake permit: first room
    /// for one more handshake ([`handshake_permit`](Self::handshake_permit)), then a
    /// connection from `listener` (through `backoff`, which waits out EMFILE and the
    /// like) whose address is under its cap of handshakes in progress
    /// ([`ServerLimits::max_handshakes_per_ip`]: a connection past it is closed at
    /// once, and the next one accepted); `None` once the shutdown has begun, whichever
    /// of the two it interrupts.
    ///
    /// ```no_run
    /// # async fn demo(listener: tokio::net::TcpListener) {
    /// use wsevents::{AcceptBackoff, Lifecycle, ServerLimits};
    /// let lifecycle = Lifecycle::new(ServerLimits::default(), Default::default());
    /// let mut backoff = AcceptBackoff::new();
    /// while let Some((permit, tcp, peer)) = lifecycle.next_connection(&listener, &mut backoff).await {
    ///     // the handshake, then drop(permit)
    /// #   let _ = (permit, tcp, peer);
    /// }
    /// # }
    /// ```
    pub async fn next_connection(
        &self,
        listener: &tokio::net::TcpListener,
        backoff: &mut super::AcceptBackoff,
    ) -> Option<(HandshakePermit, tokio::net::TcpStream, std::net::SocketAddr)> {
        let stop = self.shutdown_token();
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            permit = self.handshake_permit() => permit,
        };
        let mut permit = permit;
        loop {
            let (tcp, peer) = tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                accepted = backoff.accept(listener) => accepted,
            };
            match self.shared.peers.handshake(peer) {
                Ok(claim) => {
                    permit._peer = claim;
                    return Some((permit, tcp, peer));
                }
                Err(PastCap) => {
                    // Closed without reading: the cheapest answer, and one a TLS
                    // client understands as well as any.
                    self.shared.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::handshake_failed(crate::Role::Server, "per_ip_cap");
                    tracing::debug!(%peer, "closed: past its cap of handshakes in progress");
                    drop(tcp);
                }
            }
        }
    }

    /// Spawn `task` on the lifecycle's tracker: the shutdown waits for it (up to the
    /// grace period) as for a connection, for example a connection's own task, which
    /// still has work to do after its socket closed.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.shared.tracker.spawn(task)
    }

    /// Run the server side of the opening handshake on `io` with `acceptor`, and track
    /// the connection: past [`max_connections`](ServerLimits::max_connections), or once
    /// the shutdown has begun, the request is answered `503 Service Unavailable` with
    /// `Retry-After` and [`Error::Refused`](crate::Error::Refused)`(503)` returned. The
    /// open connection closes with 1001 by itself when the shutdown comes, whichever
    /// API it is used with (the stream API, or the event API through
    /// [`WebSocket::from_stream`](crate::WebSocket::from_stream)).
    ///
    /// Bound the whole handshake, TLS and any HTTP read before it included, with a
    /// timeout of the caller's (`Config::handshake_timeout`).
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        acceptor: &Acceptor,
        io: S,
    ) -> Result<(WebSocketStream<S>, http::Request<()>)> {
        acceptor.accept_inner(io, None, Some(self)).await
    }

    /// [`accept`](Self::accept), for a transport whose peer is at `peer_addr` (the
    /// accept hook and the connection's [`peer_addr`](WebSocketStream::peer_addr)
    /// see it).
    pub async fn accept_from<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        acceptor: &Acceptor,
        io: S,
        peer_addr: SocketAddr,
    ) -> Result<(WebSocketStream<S>, http::Request<()>)> {
        acceptor.accept_inner(io, Some(peer_addr), Some(self)).await
    }

    /// Shut down: stop accepting, close every open connection with 1001 and
    /// [`SHUTDOWN_REASON`] after what is queued for it, wait up to `grace` for the close
    /// handshakes, then abort the rest; how it went. Calling it again (or from several
    /// tasks) waits for the same shutdown and returns the same report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        *shared
            .report
            .get_or_init(|| async move {
                self.begin_shutdown();
                shared.tracker.close();
                if tokio::time::timeout(grace, shared.tracker.wait())
                    .await
                    .is_err()
                {
                    tracing::info!(?grace, "grace period over: forcing the connections left");
                    shared.stage.store(FORCING, Ordering::Release);
                    shared.force.cancel();
                    let _ = tokio::time::timeout(FORCE_WAIT, shared.tracker.wait()).await;
                }
                let counts = shared.counts();
                ShutdownReport {
                    clean: counts.clean,
                    // Connections still open now are held by owners that do not poll
                    // them: forced too.
                    forced: counts.forced + counts.open,
                }
            })
            .await
    }

    /// Mark the shutdown begun (busy connections see the stage) and tell everyone.
    pub(crate) fn begin_shutdown(&self) {
        self.shared.stage.fetch_max(GOING_AWAY, Ordering::Release);
        self.shared.shutdown.cancel();
    }

    /// Admit one more connection from `peer` (when known), if under the caps and not
    /// shutting down.
    pub(crate) fn admit(&self, peer: Option<SocketAddr>) -> std::result::Result<Slot, Refused> {
        if self.is_shutting_down() {
            return Err(Refused::AtCapacity);
        }
        let claim = match peer {
            Some(peer) => self
                .shared
                .peers
                .connection(peer)
                .map_err(|PastCap| Refused::PeerAtCapacity)?,
            None => None,
        };
        let permit = self
            .shared
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::AtCapacity)?;
        self.shared.counts().open += 1;
        Ok(Slot {
            shared: self.shared.clone(),
            clean: false,
            _permit: permit,
            _peer: claim,
            _token: self.shared.tracker.token(),
        })
    }

    /// A request was refused for `why`: count it; the status, the body and the
    /// `Retry-After` header to answer with.
    pub(crate) fn refuse(
        &self,
        why: Refused,
    ) -> (http::StatusCode, &'static str, &(String, String)) {
        let (status, body) = match why {
            Refused::AtCapacity => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "server at capacity or shutting down\n",
                )
            }
            Refused::PeerAtCapacity => {
                self.shared.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                (
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address\n",
                )
            }
        };
        (status, body, &self.shared.retry_after)
    }
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Counters only: consistent even after a panic elsewhere.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Room for one opening handshake (and, from [`Lifecycle::next_connection`], one of
/// its address's), given back when dropped (see [`Lifecycle::handshake_permit`]; the
/// [`Lifecycle`] example shows it in an accept loop).
#[derive(Debug)]
pub struct HandshakePermit {
    _permit: Option<OwnedSemaphorePermit>,
    _peer: Option<PeerClaim>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// At the server-wide cap, or shutting down: 503.
    AtCapacity,
    /// At its address's cap: 429.
    PeerAtCapacity,
}

/// One admitted connection: its place under the cap and its tracker token, held until
/// its teardown is over (or it is dropped). How it ended is counted if the shutdown had
/// begun by then.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    clean: bool,
    _permit: OwnedSemaphorePermit,
    _peer: Option<PeerClaim>,
    _token: TaskTrackerToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Counted before the token goes (fields drop after this), so the report, made
        // once the tracker is empty, sees it.
        let shutting_down = self.shared.stage.load(Ordering::Acquire) != RUNNING;
        let mut counts = self.shared.counts();
        counts.open = counts.open.saturating_sub(1);
        if shutting_down {
            if self.clean {
                counts.clean += 1;
            } else {
                counts.forced += 1;
            }
        }
    }
}

/// What a tracked connection's driver is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Close with 1001 and [`SHUTDOWN_REASON`].
    GoingAway,
    /// Abort: the grace period is over.
    Force,
}

/// A slot and the two signals, as a connection's driver holds them.
pub(crate) struct Tracked {
    slot: Slot,
    /// The stage this connection has acted on.
    seen: u8,
    going_away: Pin<Box<WaitForCancellationFutureOwned>>,
    force: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").field("seen", &self.seen).finish()
    }
}

impl Tracked {
    pub(crate) fn new(slot: Slot) -> Box<Tracked> {
        // Child tokens: each connection waits on a node of its own, so the wakeups of
        // thousands of idle connections do not contend on one lock.
        let going_away = Box::pin(slot.shared.shutdown.child_token().cancelled_owned());
        let force = Box::pin(slot.shared.force.child_token().cancelled_owned());
        Box::new(Tracked {
            slot,
            seen: RUNNING,
            going_away,
            force,
        })
    }

    /// The busy path: one atomic load, and a signal only when the stage moved on.
    #[inline]
    pub(crate) fn signal(&mut self) -> Option<Signal> {
        let stage = self.slot.shared.stage.load(Ordering::Relaxed);
        if stage > self.seen {
            Some(self.saw(stage))
        } else {
            None
        }
    }

    /// The path to `Pending`: register the wakeups, and a signal if one came.
    pub(crate) fn poll_signal(&mut self, cx: &mut Context<'_>) -> Option<Signal> {
        if self.seen < FORCING && self.force.as_mut().poll(cx).is_ready() {
            return Some(self.saw(FORCING));
        }
        if self.seen < GOING_AWAY && self.going_away.as_mut().poll(cx).is_ready() {
            // The token was cancelled by its holder: let busy connections see it too.
            self.slot
                .shared
                .stage
                .fetch_max(GOING_AWAY, Ordering::Release);
            return Some(self.saw(GOING_AWAY));
        }
        None
    }

    fn saw(&mut self, stage: u8) -> Signal {
        self.seen = stage;
        if stage >= FORCING {
            Signal::Force
        } else {
            Signal::GoingAway
        }
    }

    /// The teardown is over: record how, and give the slot back.
    pub(crate) fn finish(mut self, clean: bool) {
        self.slot.clean = clean;
    }
}
