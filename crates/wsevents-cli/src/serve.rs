//! `wsevents serve`: one port for the demo page and the WebSocket endpoints, with a
//! graceful shutdown.
//!
//! ```text
//!  TCP ─► (TLS) ─► http::read_head ─┬─ not an upgrade: the page, 404 or 426 (http.rs)
//!                                   └─ upgrade: Acceptor::accept(Rewind) ─┬─ echo (stream API)
//!                                                                         └─ chat (event API, room.rs)
//! ```
//!
//! The library serves WebSocket upgrades only, by design; the page needs plain HTTP on
//! the same port (the page derives its socket URL from `location`), so this module
//! reads the request head itself and hands upgrade requests, bytes included, to the
//! library's [`Acceptor`].
//!
//! Two routes, two faces of the library, each the right tool for its job:
//! - **echo** uses the stream API: `Sink` backpressure means a client that sends
//!   without reading stalls its own reads instead of growing our queue, and messages
//!   go back without a copy. It is also what `bench` measures.
//! - **chat** uses the event API, as a browser would: `on_message` publishes to every
//!   member of the room (see `room.rs` for the rule for slow members).
//!
//! Shutdown (mini-redis style, `shutdown.rs`): Ctrl-C or SIGTERM stops accepting and
//! tells every connection task; each closes with 1001 *after* what is already queued
//! for it (the close frame takes its place in the same queue), waits for the close
//! handshake, and reports done. The process exits 0 once all are done or the grace
//! period (10 s) ran out: an echo client that stopped reading holds its task in
//! backpressure, and is given up on then.

mod http;
mod room;
mod shutdown;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::Instrument;
use wsevents::{Acceptor, CloseCode, MaybeTlsStream, WebSocket, WebSocketStream};

use self::http::Rewind;
use self::room::Room;
use self::shutdown::{Shutdown, ShutdownSignal};
use crate::Result;

/// How long a client may take to send its request (and finish TLS).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the connections get to close after Ctrl-C before the process exits anyway.
const GRACE: Duration = Duration::from_secs(10);
/// The close reason every client gets on shutdown.
const SHUTDOWN_REASON: &str = "server shutting down";

/// Options of `wsevents serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// PEM certificate chain: serve https:// and wss:// (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Only echo: every path is an echo endpoint (no page, no chat)
    #[arg(long, conflicts_with = "broadcast")]
    echo: bool,
    /// Only broadcast: every path is one chat room (no page, no echo)
    #[arg(long)]
    broadcast: bool,
    /// Refuse permessage-deflate (accepted by default, as browsers offer it)
    #[arg(long)]
    no_deflate: bool,
}

/// What the server does with each WebSocket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The page at `/`, echo at `/ws`, chat at `/chat`.
    Demo,
    /// Echo on every path.
    Echo,
    /// One chat room on every path.
    Broadcast,
}

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Echo,
    Chat,
}

/// What every connection task shares.
struct Shared {
    mode: Mode,
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    room: Arc<Room>,
    next_id: AtomicU64,
}

impl Shared {
    fn route(&self, path: &str) -> Option<Route> {
        match (self.mode, path) {
            (Mode::Echo, _) => Some(Route::Echo),
            (Mode::Broadcast, _) => Some(Route::Chat),
            (Mode::Demo, "/ws") => Some(Route::Echo),
            (Mode::Demo, "/chat") => Some(Route::Chat),
            // The acceptor answers 404.
            (Mode::Demo, _) => None,
        }
    }
}

/// Run the server until Ctrl-C (or SIGTERM).
pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let mode = match (args.echo, args.broadcast) {
        (true, _) => Mode::Echo,
        (_, true) => Mode::Broadcast,
        _ => Mode::Demo,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(cert, key)?,
        )),
        _ => None,
    };
    // Listen for the signal before anything else, so an early Ctrl-C is not the
    // default (abrupt) one.
    let signal = ShutdownSignal::listen()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let acceptor = match mode {
        Mode::Demo => Acceptor::new().route("/ws").route("/chat"),
        Mode::Echo | Mode::Broadcast => Acceptor::new(),
    }
    .deflate((!args.no_deflate).then(wsevents::DeflateConfig::default));
    let shared = Arc::new(Shared {
        mode,
        acceptor,
        tls,
        room: Arc::new(Room::default()),
        next_id: AtomicU64::new(1),
    });
    print_banner(addr, mode, shared.tls.is_some());
    serve(listener, shared, signal).await;
    Ok(ExitCode::SUCCESS)
}

fn print_banner(addr: SocketAddr, mode: Mode, secure: bool) {
    let (http, ws) = if secure {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let mut banner = format!("wsevents serve: listening on {addr}\n");
    match mode {
        Mode::Demo => {
            banner += &format!("  demo page  {http}://{addr}/   <- open this in a browser\n");
            banner += &format!("  echo       {ws}://{addr}/ws\n");
            banner += &format!("  chat       {ws}://{addr}/chat\n");
        }
        Mode::Echo => banner += &format!("  echo       {ws}://{addr}/ (every path)\n"),
        Mode::Broadcast => banner += &format!("  broadcast  {ws}://{addr}/ (every path)\n"),
    }
    banner += "  Ctrl-C to stop (clients get close 1001)";
    // Printed whole and flushed: tests and scripts read the address from it.
    println!("{banner}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Accept until the signal, then shut down every connection and wait for them.
async fn serve(listener: TcpListener, shared: Arc<Shared>, signal: ShutdownSignal) {
    let (notify, shutdown) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; `recv` ends once all are dropped.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut backoff = Duration::from_millis(1);
    let signal = signal.recv();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(1);
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let span = tracing::info_span!("conn", id, %peer, path = tracing::field::Empty);
                    let task = connection(tcp, shared.clone(), Shutdown::new(shutdown.clone()));
                    let done = done_tx.clone();
                    tokio::spawn(async move {
                        task.await;
                        drop(done);
                    }.instrument(span));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait, then try again.
                    tracing::warn!(%error, ?backoff, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
    drop(listener);
    let live = shared.room.len();
    tracing::info!(
        chat_members = live,
        "shutting down: closing every connection with 1001"
    );
    let _ = notify.send(true);
    drop(done_tx);
    if tokio::time::timeout(GRACE, done_rx.recv()).await.is_err() {
        tracing::warn!(grace = ?GRACE, "some connections did not close in time");
    } else {
        tracing::info!("every connection closed; bye");
    }
}

/// One TCP connection: TLS, the request head, then the page or a WebSocket.
async fn connection(tcp: TcpStream, shared: Arc<Shared>, shutdown: Shutdown) {
    let _ = tcp.set_nodelay(true);
    let io = match &shared.tls {
        None => MaybeTlsStream::Plain(tcp),
        Some(tls) => match tokio::time::timeout(REQUEST_TIMEOUT, tls.accept(tcp)).await {
            Ok(Ok(stream)) => MaybeTlsStream::Tls(Box::new(stream.into())),
            Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
    };
    let mut io = io;
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, http::read_head(&mut io)).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => return tracing::debug!(%error, "bad request"),
        Err(_) => return tracing::debug!("request timed out"),
    };
    if !head.upgrade {
        let response = http::respond_plain(&head, shared.mode == Mode::Demo);
        tracing::debug!(method = %head.method, path = %head.path, status = response.status, "http");
        if let Err(error) = http::write_response(&mut io, &response, &head.method).await {
            tracing::debug!(%error, "writing the response failed");
        }
        return;
    }
    let route = shared.route(&head.path);
    tracing::Span::current().record("path", head.path.as_str());
    let io = Rewind::new(head.buffered, io);
    let (stream, request) = match shared.acceptor.accept(io).await {
        Ok(accepted) => accepted,
        Err(error) => return tracing::info!(path = %head.path, %error, "upgrade refused"),
    };
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}{}", request.host, request.target);
    tracing::info!(
        path = request.path(),
        extensions = stream.extensions(),
        "open"
    );
    match route {
        Some(Route::Echo) => echo(stream, shutdown).await,
        Some(Route::Chat) => chat(stream, url, &shared.room, shutdown).await,
        None => {}
    }
}

/// Echo every message back, until the client closes or the server shuts down.
async fn echo<S>(mut ws: WebSocketStream<S>, mut shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            () = shutdown.recv() => {
                // The close frame goes after every echo already queued.
                if let Err(error) = ws.close(CloseCode::GOING_AWAY, SHUTDOWN_REASON).await {
                    tracing::debug!(%error, "closing failed");
                }
                break;
            }
            message = ws.next() => match message {
                Some(Ok(message)) => {
                    if let Err(error) = echo_batch(&mut ws, message).await {
                        tracing::debug!(%error, "echo failed");
                    }
                }
                Some(Err(error)) => tracing::info!(%error, "error"),
                None => break,
            },
        }
    }
    match ws.closure() {
        Some(closure) => tracing::info!(
            code = closure.code().as_u16(),
            reason = %closure.reason(),
            clean = closure.was_clean(),
            "closed"
        ),
        None => tracing::info!("closed"),
    }
}

/// Queue `first` and every further message already readable, then write them in one
/// go: pipelined clients get one write per batch, not one per message.
async fn echo_batch<S>(ws: &mut WebSocketStream<S>, first: wsevents::Message) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.feed(first).await?;
    while let Some(Some(Ok(message))) = ws.next().now_or_never() {
        ws.feed(message).await?;
    }
    ws.flush().await?;
    Ok(())
}

/// A member of the chat room, with the event API.
async fn chat<S>(stream: WebSocketStream<S>, url: String, room: &Arc<Room>, mut shutdown: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug + 'static,
{
    let ws = WebSocket::from_stream(stream, url);
    let id = room.join(ws.clone());
    let publish_to = room.clone();
    ws.on_message(move |e| publish_to.publish(&e.data));
    ws.on_error(|e| tracing::info!(error = %e.message(), "error"));
    let closer = ws.clone();
    let close = tokio::select! {
        close = ws.run() => close,
        () = shutdown.recv() => {
            let _ = closer.close_with_code(CloseCode::GOING_AWAY, SHUTDOWN_REASON);
            ws.run().await
        }
    };
    room.leave(id);
    tracing::info!(
        code = close.code,
        reason = %close.reason,
        clean = close.was_clean,
        "closed"
    );
}
