//! `wsevents serve`: one port for the demo page and the WebSocket endpoints, bounded,
//! with a graceful shutdown.
//!
//! ```text
//!  TCP ─► (TLS) ─► hyper, HTTP/1.1 ─┬─ /api/, /healthz, /readyz: the HTTP API (HttpApi)
//!                                   ├─ not an upgrade: the page, a file, 404 or 426 (http.rs)
//!                                   └─ upgrade: Lifecycle::upgrade ─┬─ echo (stream API)
//!                                                                   └─ topic (event API, hub)
//! ```
//!
//! The library's own `Server` serves WebSocket upgrades only, by design; the page
//! needs plain HTTP on the same port (the page derives its socket URL from
//! `location`), so this module has an accept loop of its own and serves each
//! connection with hyper, handing upgrade requests to the library's [`Acceptor`]
//! through [`Lifecycle::upgrade`], the same negotiation and bounds as `Server`'s.
//!
//! Two kinds of route, two faces of the library, each the right tool for its job:
//! - **echo** uses the stream API: `Sink` backpressure means a client that sends
//!   without reading stalls its own reads instead of growing our queue, and messages
//!   go back without a copy. It is also what `bench` measures.
//! - **topics** use the event API, as a browser would, on the library's
//!   [`Hub`]: `/chat` is the topic `chat`, `/topic/NAME` the topic
//!   `NAME` (percent-decoded; the library's route `/topic/{*name}`); a connection is subscribed to its topic and what it sends is published
//!   there, to every subscriber, itself included. Slow subscribers follow the hub's
//!   rule (closed with 1008 past 1 MiB unsent). With `--redis redis://HOST:PORT` the
//!   hub is on Redis, so every `serve` on that Redis is one set of topics; with
//!   `--redis-cluster redis://H1:P1,redis://H2:P2` on a Redis Cluster (sharded
//!   pub/sub, topics spread over its masters).
//!
//! Bounds and shutdown are the library's [`Lifecycle`], the same types its `Server`
//! runs on; this module only adds the signals (`shutdown.rs`):
//! - at most `--max-handshakes` (1024) connections between TCP accept and the end of
//!   the handshake, each within `--handshake-timeout` (10 s) for TLS, the request head
//!   and the answer together: a client that trickles its request in is closed then;
//! - at most `--max-connections` (10,000) open WebSocket connections: past them an
//!   upgrade request gets `503 Service Unavailable` with `Retry-After`
//!   (`--retry-after`, 5 s);
//! - per client address, at most `--max-handshakes-per-ip` (64) of those handshakes
//!   (past it its next TCP connection is closed at once) and
//!   `--max-connections-per-ip` (1,000) of those connections (past it `429 Too Many
//!   Requests` with `Retry-After`), so that one address cannot take every slot;
//! - accept failures (out of file descriptors) are waited out ([`AcceptBackoff`]);
//! - the connection's own deadlines pass through to its `Config`: a keepalive ping
//!   after `--ping-interval` (20 s) of silence, dropped after `--pong-timeout` (20 s)
//!   more, and an optional `--idle-timeout` (off);
//! - Ctrl-C or SIGTERM stops accepting; every connection closes with 1001 *after* what
//!   is already queued for it (the close frame takes its place at the end of the same
//!   queue) and waits for the close handshake; after `--grace` (10 s) the connections
//!   left (an echo client that stopped reading holds its task in backpressure) are
//!   aborted. The process prints `shutdown: N closed cleanly, M forced` and exits 0.
//!
//! For an application's backend, `--api-key-file FILE` mounts the library's server
//! HTTP API ([`HttpApi`], docs/api.md) under `/api/` on the same listener: publish,
//! broadcast, history, and disconnect, unsubscribe and info across every node of the
//! Redis; `/healthz` and `/readyz` are answered with or without it. Its requests are
//! plain HTTP requests like the page's: bounded by the same handshake permits and
//! timeout, one per connection. Every flag is also a key of `--config FILE`
//! (`config.rs`).
//!
//! And three switches for trying things by hand: `--protocol NAME` (the subprotocols
//! spoken, the first of the client's list that is one of them wins), `--dir PATH`
//! (static files beside the page, `files.rs`) and `--stdin` (each line typed goes to
//! every connected client as a text message, like `wscat -l`).

mod auth;
pub(crate) mod config;
mod files;
mod http;
mod metrics;
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
use tracing::Instrument;
use wsevents::http_api::{ApiKeys, HttpApi};
use wsevents::hub::{BackendStatus, History, Hub, RedisBackend, RedisConfig};
use wsevents::pubsub::auth::{Access, TopicPattern};
use wsevents::pubsub::wire::PROTOCOL;
use wsevents::pubsub::{PublishRate, PubsubServer};
use wsevents::{
    AcceptBackoff, Acceptor, CancellationToken, HandshakePermit, Lifecycle, MaybeTlsStream,
    ServerLimits, ShutdownReport, WebSocket, WebSocketStream,
};

use self::shutdown::ShutdownSignal;
use crate::Result;
use crate::seconds::{positive_seconds, seconds, unless_zero};

/// Options of `wsevents serve`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("on_redis").args(["redis", "redis_cluster"])))]
#[command(group(clap::ArgGroup::new("jwt").args(["jwt_secret_file", "jwt_public_keys"]).multiple(true)))]
pub(crate) struct Args {
    /// Read the settings from this TOML file (docs/wsevents.example.toml): each key is
    /// a flag's name without `--`; flags given here override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed at start)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// PEM certificate chain: serve https:// and wss:// (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA in this PEM file (mutual TLS; needs
    /// --tls-cert): a client without one, or with another, fails the TLS handshake
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Only echo: every path is an echo endpoint (no page, no chat)
    #[arg(long, conflicts_with = "broadcast")]
    echo: bool,
    /// Only broadcast: every path is one chat room (no page, no echo)
    #[arg(long)]
    broadcast: bool,
    /// Put the topics on this Redis (redis://HOST:PORT): every `serve` on it shares
    /// them
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Put the topics on this Redis Cluster (Redis 7; a few of its masters,
    /// comma-separated: redis://H1:P1,redis://H2:P2): every `serve` on it shares them,
    /// sharded by topic over the masters
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        conflicts_with = "redis"
    )]
    redis_cluster: Vec<String>,
    /// With --redis or --redis-cluster: bytes of publications waiting to be sent to
    /// Redis at most; past them a publish is refused (unavailable) until Redis catches
    /// up
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, requires = "on_redis")]
    redis_max_pending_bytes: usize,
    /// With --redis or --redis-cluster: bytes of messages from Redis waiting to be
    /// delivered at most; past them a topic's messages are dropped and the topic caught
    /// up from the history
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, requires = "on_redis")]
    redis_max_inbound_bytes: usize,
    /// Publications kept per topic for clients that come back (/pubsub's recovery;
    /// in Redis with --redis); 0 keeps none
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    history_size: usize,
    /// Seconds a publication is kept for clients that come back (and a publish key
    /// is remembered)
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = positive_seconds)]
    history_ttl: Duration,
    /// Bytes of payload kept per topic for clients that come back (the oldest go
    /// first; the latest publication always stays)
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    history_bytes: usize,
    /// Bytes of history kept in this process, all topics together (payloads plus a
    /// fixed cost per topic and per publication); past it the least recently published
    /// topics are evicted (a client recovering from one is told recovered: false). Not
    /// used with --redis, where Redis keeps the history
    #[arg(long, value_name = "BYTES", default_value_t = wsevents::hub::DEFAULT_MAX_HISTORY_BYTES)]
    max_history_bytes: usize,
    /// Unsent bytes a topic subscriber may have; a publish past it closes the
    /// subscriber with 1008 "slow subscriber" (it reconnects and recovers)
    #[arg(long, value_name = "BYTES", default_value_t = wsevents::hub::DEFAULT_MAX_BACKLOG)]
    max_backlog: usize,
    /// Topics one /pubsub connection may subscribe to; past it `too_many_topics`
    #[arg(long, value_name = "N", default_value_t = wsevents::pubsub::DEFAULT_MAX_TOPICS)]
    max_topics: usize,
    /// Bytes of data one /pubsub publication may have (text, or binary decoded); past
    /// it `too_large` (lowered to what the message limit can carry)
    #[arg(long, value_name = "BYTES", default_value_t = wsevents::pubsub::DEFAULT_MAX_PUBLICATION)]
    max_publication: usize,
    /// Publishes a second one /pubsub connection may make, sustained; past it (and the
    /// burst) `rate_limited` with `retry_after_ms`; 0 = no limit
    #[arg(long, value_name = "N", default_value_t = wsevents::pubsub::DEFAULT_PUBLISH_RATE.per_second)]
    publish_rate: u32,
    /// Publishes one /pubsub connection may make at once after a quiet spell (the
    /// bucket of --publish-rate)
    #[arg(long, value_name = "N", default_value_t = wsevents::pubsub::DEFAULT_PUBLISH_RATE.burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    publish_burst: u32,
    /// Connections one user (a token's `sub`) may have open on /pubsub at once; past
    /// it `too_many_connections` and close 4029; 0 = no cap
    #[arg(long, value_name = "N", default_value_t = wsevents::pubsub::DEFAULT_MAX_CONNECTIONS_PER_USER as u32)]
    max_connections_per_user: u32,
    /// Refuse permessage-deflate (accepted by default, as browsers offer it)
    #[arg(long)]
    no_deflate: bool,
    /// Open WebSocket connections at most; past them an upgrade gets 503 with
    /// Retry-After (keep it below the file-descriptor limit, `ulimit -n`)
    #[arg(long, value_name = "N", default_value_t = wsevents::DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Handshakes (TLS, request head, answer) in progress at most; further TCP
    /// connections wait in the listen backlog
    #[arg(long, value_name = "N", default_value_t = wsevents::DEFAULT_MAX_HANDSHAKES as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_handshakes: u32,
    /// Handshakes in progress at most from one address (an IPv4 address, an IPv6
    /// /64); past it the address's next TCP connection is closed at once, others are
    /// served as usual. Keep it well below --max-handshakes; 0 = no cap (behind a
    /// reverse proxy, where every client has the proxy's address)
    #[arg(long, value_name = "N", default_value_t = wsevents::DEFAULT_MAX_HANDSHAKES_PER_IP as u32)]
    max_handshakes_per_ip: u32,
    /// Open WebSocket connections at most from one address (an IPv4 address, an IPv6
    /// /64); past it an upgrade gets 429 with Retry-After; 0 = no cap
    #[arg(long, value_name = "N", default_value_t = wsevents::DEFAULT_MAX_CONNECTIONS_PER_IP as u32)]
    max_connections_per_ip: u32,
    /// Seconds a client has for TLS, its request head and the answer together; a
    /// client that sends its request byte by byte is closed then
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = positive_seconds)]
    handshake_timeout: Duration,
    /// Seconds a 503 past --max-connections (or a 429 past --max-connections-per-ip)
    /// asks the client to wait (Retry-After)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = clap::value_parser!(u64))]
    retry_after: u64,
    /// Seconds the connections get to close after Ctrl-C/SIGTERM before the rest are
    /// forced
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    grace: Duration,
    /// Seconds with nothing received after which a connection is pinged (keepalive);
    /// 0 = no keepalive pings
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = seconds)]
    ping_interval: Duration,
    /// Seconds a pinged client has to send anything before it is dropped (1011); 0 =
    /// never dropped for it
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = seconds)]
    pong_timeout: Duration,
    /// Seconds without a message either way after which a connection is closed (1001
    /// "idle timeout"); 0 = off
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = seconds)]
    idle_timeout: Duration,
    /// Speak this subprotocol (repeatable): of the client's list, the first one given
    /// here is chosen (`new WebSocket(url, ["chat"])` needs it); other clients connect
    /// without one
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Serve the files of this directory on the paths that are not the page or a
    /// WebSocket endpoint (a directory: its index.html; nothing outside PATH)
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Send each line typed on standard input to every connected client (text)
    #[arg(long)]
    stdin: bool,
    /// Serve the metrics (connections, handshakes refused, messages, bytes, close codes)
    /// in Prometheus' text format at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the HTTP API under /api/ (publish, broadcast, history, disconnect,
    /// unsubscribe, info: docs/api.md) to callers with one of the keys in this file
    /// (one per line, at least 16 bytes each; `Authorization: Bearer KEY`)
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Verify connection tokens (JWT, HS256) with the secret in this file (32 bytes at
    /// least; a final newline is not part of it). Clients without a token get the
    /// --anonymous-* rules (none given: nothing)
    #[arg(long, value_name = "PATH")]
    jwt_secret_file: Option<PathBuf>,
    /// Verify connection tokens (JWT, RS256 or ES256 by the key's type) with the PEM
    /// public key in this file; repeatable (each is tried: key rotation)
    #[arg(long = "jwt-public-key", value_name = "PATH")]
    jwt_public_keys: Vec<PathBuf>,
    /// Require tokens' `aud` to be this
    #[arg(long, value_name = "AUD", requires = "jwt")]
    jwt_audience: Option<String>,
    /// Require tokens' `iss` to be this
    #[arg(long, value_name = "ISS", requires = "jwt")]
    jwt_issuer: Option<String>,
    /// Seconds a connection whose token expired keeps for a refresh before it is closed
    /// with 4003
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    jwt_expiry_grace: Duration,
    /// Topics a connection without a token may subscribe to: a name, or a prefix
    /// ending in `*` (repeatable)
    #[arg(long = "anonymous-subscribe", value_name = "PATTERN", value_parser = auth::pattern)]
    anonymous_subscribe: Vec<TopicPattern>,
    /// Topics a connection without a token may publish to: a name, or a prefix ending
    /// in `*` (repeatable)
    #[arg(long = "anonymous-publish", value_name = "PATTERN", value_parser = auth::pattern)]
    anonymous_publish: Vec<TopicPattern>,
}

impl Args {
    fn auth_flags(&self) -> auth::AuthFlags<'_> {
        auth::AuthFlags {
            secret_file: self.jwt_secret_file.as_deref(),
            public_keys: &self.jwt_public_keys,
            audience: self.jwt_audience.as_deref(),
            issuer: self.jwt_issuer.as_deref(),
            anonymous_subscribe: &self.anonymous_subscribe,
            anonymous_publish: &self.anonymous_publish,
        }
    }
}

/// What the server does with each WebSocket path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The page at `/`, echo at `/ws`, chat at `/chat`, topics at `/topic/NAME`.
    Demo,
    /// Echo on every path.
    Echo,
    /// One chat room on every path.
    Broadcast,
}

/// What a WebSocket connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Echo,
    /// Subscribed to this topic, and publishing to it what it sends.
    Topic(String),
    /// wsevents.v1: topics with history, as the client asks (docs/protocol.md).
    Pubsub,
}

/// What a connection is for, in `mode`, from the library's route it matched
/// (`Acceptor::route`: the path and its parameters were matched during the
/// handshake, and only matched paths are upgraded).
fn route<S>(mode: Mode, stream: &WebSocketStream<S>) -> Option<Route>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match (mode, stream.route()) {
        (Mode::Echo, _) => Some(Route::Echo),
        (Mode::Broadcast, _) => Some(Route::Topic("chat".into())),
        (Mode::Demo, Some(ECHO_ROUTE)) => Some(Route::Echo),
        (Mode::Demo, Some(CHAT_ROUTE)) => Some(Route::Topic("chat".into())),
        (Mode::Demo, Some(PUBSUB_ROUTE)) => Some(Route::Pubsub),
        (Mode::Demo, Some(TOPIC_ROUTE)) => stream.param("name").map(|n| Route::Topic(n.into())),
        (Mode::Demo, _) => None,
    }
}

/// The demo's WebSocket routes.
const ECHO_ROUTE: &str = "/ws";
const CHAT_ROUTE: &str = "/chat";
/// A topic's name is the rest of the path, percent-decoded (`/topic/a/b` is `a/b`).
const TOPIC_ROUTE: &str = "/topic/{*name}";
const PUBSUB_ROUTE: &str = "/pubsub";

/// What every connection task shares.
struct Shared {
    mode: Mode,
    acceptor: Acceptor,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The bounds, the tracking of connections, the shutdown.
    lifecycle: Lifecycle,
    /// TLS, the request head and the answer, together.
    handshake_timeout: Duration,
    /// The topics of `/chat`, `/topic/NAME` and `/pubsub`.
    hub: Hub,
    /// `/pubsub`, on the same hub.
    pubsub: PubsubServer,
    next_id: AtomicU64,
    /// `--dir`.
    files: Option<files::Dir>,
    /// `--stdin`: the lines typed, for every connection.
    typed: Option<tokio::sync::broadcast::Sender<wsevents::Message>>,
    /// `--api-key-file`: the HTTP API under `/api/`.
    api: Option<HttpApi>,
    /// Who may do what (`--jwt-*`, `--anonymous-*`).
    access: Access,
    /// `--jwt-expiry-grace`.
    expiry_grace: Duration,
}

/// Run the server until Ctrl-C (or SIGTERM).
pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let mode = match (args.echo, args.broadcast) {
        (true, _) => Mode::Echo,
        (_, true) => Mode::Broadcast,
        _ => Mode::Demo,
    };
    // Bad key files are a usage error, found before anything starts.
    let access = match auth::access(&args.auth_flags()) {
        Ok(access) => access,
        Err(error) => {
            eprintln!("wsevents: error: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(match &args.client_ca {
            Some(ca) => crate::tls::server_config_with_client_ca(cert, key, ca)?,
            None => crate::tls::server_config(cert, key)?,
        })),
        _ => None,
    };
    // Listen for the signal before anything else, so an early Ctrl-C is not the
    // default (abrupt) one.
    let signal = ShutdownSignal::listen()?;
    if let Some(addr) = args.metrics {
        metrics::install(addr)?;
    }
    let listener = wsevents::bind_listener(&args.listen, wsevents::DEFAULT_BACKLOG)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = wsevents::Config {
        handshake_timeout: Some(args.handshake_timeout),
        ping_interval: unless_zero(args.ping_interval),
        pong_timeout: unless_zero(args.pong_timeout),
        idle_timeout: unless_zero(args.idle_timeout),
        ..wsevents::Config::default()
    };
    let files = args.dir.as_deref().map(files::Dir::new).transpose()?;
    let endpoint = Acceptor::new()
        .protocols(&args.protocols)
        .config(config)
        .deflate((!args.no_deflate).then(wsevents::DeflateConfig::default));
    // Topic routes: the token and the right to subscribe judged at the handshake
    // (nothing to judge when everyone may do everything).
    let topic_route = |fixed: Option<&'static str>| match access.is_open() {
        true => endpoint.clone(),
        false => endpoint
            .clone()
            .on_request(auth::gate(access.clone(), fixed)),
    };
    let acceptor = match mode {
        // The paths are the library's routes (others get 404 in the handshake);
        // `/pubsub` speaks wsevents.v1, whatever --protocol says, and a client that
        // does not offer it is told so; a token it brings in the handshake is judged
        // there (401).
        Mode::Demo => endpoint
            .clone()
            .route(ECHO_ROUTE)
            .at(CHAT_ROUTE, topic_route(Some("chat")))
            .at(TOPIC_ROUTE, topic_route(None))
            .at(PUBSUB_ROUTE, {
                let access = access.clone();
                endpoint.on_request(move |request| {
                    let judged = access
                        .identify(wsevents::pubsub::auth::ClientId::next(), request.request())
                        .map(|_| ());
                    async move {
                        if !request.protocols().iter().any(|p| p == PROTOCOL) {
                            return Err(refuse(
                                ::http::StatusCode::BAD_REQUEST,
                                format!(
                                    "/pubsub speaks the subprotocol {PROTOCOL} \
                                     (docs/protocol.md): offer it"
                                ),
                            ));
                        }
                        match judged {
                            Ok(()) => Ok(wsevents::Accept::new().protocol(PROTOCOL)),
                            Err(e) => {
                                Err(refuse(::http::StatusCode::UNAUTHORIZED, format!("{e}\n")))
                            }
                        }
                    }
                })
            }),
        Mode::Echo => endpoint,
        Mode::Broadcast => topic_route(Some("chat")),
    };
    let limits = ServerLimits {
        max_connections: args.max_connections as usize,
        max_handshakes: args.max_handshakes as usize,
        max_handshakes_per_ip: no_cap_if_zero(args.max_handshakes_per_ip),
        max_connections_per_ip: no_cap_if_zero(args.max_connections_per_ip),
        retry_after: Duration::from_secs(args.retry_after),
    };
    let history = History {
        size: args.history_size,
        ttl: args.history_ttl,
        max_bytes: args.history_bytes,
    };
    let redis_config = RedisConfig {
        max_pending_bytes: args.redis_max_pending_bytes,
        max_inbound_bytes: args.redis_max_inbound_bytes,
        ..RedisConfig::default()
    };
    let cluster: Vec<&str> = args.redis_cluster.iter().map(String::as_str).collect();
    let hub = match &args.redis {
        None if cluster.is_empty() => Hub::builder()
            .history(history)
            .max_backlog(args.max_backlog)
            .max_history_bytes(args.max_history_bytes)
            .build(),
        None => Hub::builder()
            .history(history)
            .backend(
                RedisBackend::cluster_with_config(&cluster, redis_config)
                    .map_err(|e| format!("--redis-cluster: {e}"))?,
            )
            .build(),
        Some(url) => Hub::builder()
            .history(history)
            .max_backlog(args.max_backlog)
            .backend(
                RedisBackend::with_config(url, redis_config)
                    .map_err(|e| format!("--redis: {e}"))?,
            )
            .build(),
    };
    let on_redis = match &args.redis {
        Some(url) => Some(url.clone()),
        None if cluster.is_empty() => None,
        None => Some(format!("the Redis Cluster of {}", cluster.join(","))),
    };
    let lifecycle = Lifecycle::new(limits, CancellationToken::new());
    let pubsub = PubsubServer::new(hub.clone())
        .max_topics(args.max_topics)
        .max_publication(args.max_publication)
        .access(access.clone())
        .expiry_grace(args.jwt_expiry_grace)
        .publish_rate(
            (args.publish_rate > 0)
                .then(|| PublishRate::new(args.publish_rate, args.publish_burst)),
        )
        .max_connections_per_user(no_cap_if_zero(args.max_connections_per_user));
    let api = match &args.api_key_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?;
            let keys = ApiKeys::parse(&text)
                .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?;
            let open = lifecycle.clone();
            Some(
                HttpApi::builder(hub.clone(), keys)
                    .max_publication(args.max_publication)
                    .users(pubsub.clone())
                    .connections(move || open.open_connections())
                    .build(),
            )
        }
    };
    let shared = Arc::new(Shared {
        mode,
        acceptor,
        tls,
        lifecycle,
        handshake_timeout: args.handshake_timeout,
        pubsub,
        hub,
        next_id: AtomicU64::new(1),
        files,
        typed: args.stdin.then(|| typed_lines(TYPED_BACKLOG)),
        api,
        expiry_grace: args.jwt_expiry_grace,
        access,
    });
    let who = auth::describe(&shared.access, &args.auth_flags());
    print_banner(
        addr,
        mode,
        shared.tls.is_some(),
        on_redis.as_deref(),
        &who,
        shared.api.is_some(),
    );
    if shared.access.is_open() && mode != Mode::Echo {
        tracing::warn!("no auth: every client may subscribe and publish anywhere");
    } else {
        tracing::info!(auth = %who, "permissions");
    }
    if on_redis.is_some() {
        tokio::spawn(watch_backend(shared.hub.clone()));
    }
    let report = serve(listener, shared, signal, args.grace).await;
    // One line, for people and for scripts.
    println!("shutdown: {report}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// What `/readyz` asks a caller to wait while Redis is away, without the API.
const API_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A cap per address from its flag: 0 is none.
fn no_cap_if_zero(n: u32) -> usize {
    match n {
        0 => usize::MAX,
        n => n as usize,
    }
}

/// `--stdin`: lines not yet sent that a connection may lag behind by; past them it
/// misses the oldest (and the log says so).
const TYPED_BACKLOG: usize = 1024;

/// `--stdin`: read standard input line by line onto a broadcast channel, until it ends
/// (the server keeps serving).
fn typed_lines(backlog: usize) -> tokio::sync::broadcast::Sender<wsevents::Message> {
    use tokio::io::AsyncBufReadExt;
    let (sender, _) = tokio::sync::broadcast::channel(backlog);
    let typed = sender.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            let clients = typed.send(wsevents::Message::text(line)).unwrap_or(0);
            tracing::info!(clients, "line sent from stdin");
        }
        tracing::info!("standard input ended");
    });
    sender
}

fn print_banner(
    addr: SocketAddr,
    mode: Mode,
    secure: bool,
    redis: Option<&str>,
    auth: &str,
    api: bool,
) {
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
            banner += &format!("  topics     {ws}://{addr}/topic/NAME\n");
            banner += &format!("  pubsub     {ws}://{addr}/pubsub (wsevents.v1, with history)\n");
        }
        Mode::Echo => banner += &format!("  echo       {ws}://{addr}/ (every path)\n"),
        Mode::Broadcast => banner += &format!("  broadcast  {ws}://{addr}/ (every path)\n"),
    }
    if let Some(redis) = redis {
        banner += &format!("  topics on  {redis} (shared with every serve on it)\n");
    }
    if mode != Mode::Echo {
        banner += &format!("  auth       {auth}\n");
    }
    if api {
        banner +=
            &format!("  http api   {http}://{addr}/api/ (docs/api.md; a key of --api-key-file)\n");
    }
    banner += &format!("  health     {http}://{addr}/healthz, {http}://{addr}/readyz\n");
    banner += "  Ctrl-C to stop (clients get close 1001)";
    // Printed whole and flushed: tests and scripts read the address from it.
    println!("{banner}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Accept until the signal, then shut every connection down; how that went.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    signal: ShutdownSignal,
    grace: Duration,
) -> ShutdownReport {
    let lifecycle = shared.lifecycle.clone();
    let stop = lifecycle.shutdown_token().clone();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signal.recv().await;
        on_signal.cancel();
    });
    let mut backoff = AcceptBackoff::new();
    while let Some((permit, tcp, peer)) = lifecycle.next_connection(&listener, &mut backoff).await {
        lifecycle.spawn(connection(tcp, peer, shared.clone(), permit));
    }
    drop(listener);
    tracing::info!(
        open = lifecycle.open_connections(),
        subscribers = shared.hub.stats().subscribers,
        ?grace,
        "shutting down: closing every connection with 1001"
    );
    let report = lifecycle.shutdown(grace).await;
    tracing::info!(report.clean, report.forced, "bye");
    report
}

/// One TCP connection: TLS (within the handshake timeout), then HTTP/1.1 on hyper
/// until it ends, is upgraded, or the shutdown comes (then hyper finishes the request
/// in progress and stops).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: HandshakePermit,
) {
    let _ = tcp.set_nodelay(true);
    let stop = shared.lifecycle.shutdown_token().clone();
    let io = match &shared.tls {
        None => MaybeTlsStream::Plain(tcp),
        Some(tls) => {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => return tracing::debug!("shutting down: handshake dropped"),
                accepted = tokio::time::timeout(shared.handshake_timeout, tls.accept(tcp)) => accepted,
            };
            match accepted {
                Ok(Ok(stream)) => MaybeTlsStream::Tls(Box::new(stream.into())),
                Ok(Err(error)) => return tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            }
        }
    };
    // Held until the first request is answered: a connection counts as a handshake
    // in progress until then, whatever it asks for.
    let permit = Arc::new(std::sync::Mutex::new(Some(permit)));
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |request| {
            let shared = shared.clone();
            let permit = permit.clone();
            async move {
                let response = respond(request, peer, &shared).await;
                drop(permit.lock().unwrap_or_else(|e| e.into_inner()).take());
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        .max_header_size(http::MAX_HEAD)
        .title_case_headers(true);
    let conn = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "http");
    }
}

/// One request: an upgrade (through the lifecycle: 503 past the cap), the page, a
/// file, or why none.
async fn respond(
    request: ::http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> ::http::Response<http::Body> {
    let path = request.uri().path().to_owned();
    if !http::is_upgrade(&request) {
        if HttpApi::serves(&path) {
            let method = request.method().clone();
            let mut response = match &shared.api {
                Some(api) => api.handle(request).await,
                None => match wsevents::http_api::health(&shared.hub, &request, API_RETRY_AFTER) {
                    Some(health) => health,
                    None => http::respond_plain(&method, &path, shared.mode == Mode::Demo),
                },
            };
            // One request per connection, as for every plain answer.
            response.headers_mut().insert(
                ::http::header::CONNECTION,
                ::http::HeaderValue::from_static("close"),
            );
            tracing::debug!(%method, %path, status = %response.status(), "api");
            return response;
        }
        let page = shared.mode == Mode::Demo && matches!(path.as_str(), "/" | "/index.html");
        if let Some(files) = shared.files.as_ref().filter(|_| !page)
            && let Some(file) = files.respond(request.method(), &path).await
        {
            tracing::debug!(%path, "file");
            return file;
        }
        let response = http::respond_plain(request.method(), &path, shared.mode == Mode::Demo);
        tracing::debug!(method = %request.method(), %path, status = %response.status(), "http");
        return response;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", id, %peer, %path);
    let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
    let host = request
        .headers()
        .get(::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let url = format!("{scheme}://{host}{}", request.uri());
    let upgrade = shared
        .lifecycle
        .upgrade(&shared.acceptor, request, Some(peer));
    let (response, upgrading) = match tokio::time::timeout(shared.handshake_timeout, upgrade).await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => {
            span.in_scope(|| tracing::info!(status = %refusal.status(), "upgrade refused"));
            return http::from_library(refusal);
        }
        Err(_) => {
            span.in_scope(|| tracing::info!("upgrade timed out"));
            return http::plain(
                ::http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the upgrade took too long\n",
            );
        }
    };
    let task_shared = shared.clone();
    shared.lifecycle.spawn(
        async move {
            let stream = match upgrading.stream().await {
                Ok(stream) => stream,
                Err(error) => return tracing::debug!(%error, "the upgrade did not complete"),
            };
            tracing::info!(url, extensions = stream.extensions(), "open");
            let typed = task_shared.typed.as_ref().map(|typed| typed.subscribe());
            match route(task_shared.mode, &stream) {
                Some(Route::Echo) => echo(stream, typed).await,
                Some(Route::Topic(topic)) => {
                    subscriber(stream, url, &task_shared, topic, typed).await;
                }
                Some(Route::Pubsub) => pubsub(stream, url, &task_shared.pubsub).await,
                None => {}
            }
        }
        .instrument(span),
    );
    http::from_library(response)
}

/// Echo every message back, until the client closes or the server shuts down (the
/// stream then ends by itself, after the close handshake).
async fn echo<S>(mut ws: WebSocketStream<S>, mut typed: Option<Typed>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            line = next_typed(&mut typed) => {
                if let Err(error) = ws.send(line).await {
                    tracing::debug!(%error, "sending a typed line failed");
                }
                continue;
            }
        };
        let Some(message) = message else { break };
        match message {
            Ok(message) => {
                if let Err(error) = echo_batch(&mut ws, message).await {
                    tracing::debug!(%error, "echo failed");
                }
            }
            Err(error) => tracing::info!(%error, "error"),
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

/// A subscriber of `topic` that publishes there what it sends (when it may), with the
/// event API, until the client leaves, its token expires or the server shuts down (it
/// leaves the topic by itself); with `--stdin`, the lines typed too.
async fn subscriber<S>(
    stream: WebSocketStream<S>,
    url: String,
    shared: &Shared,
    topic: String,
    typed: Option<Typed>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug + 'static,
{
    let hub = &shared.hub;
    let ws = WebSocket::from_stream(stream, url);
    let request = ws.request();
    let rights = auth::topic_rights(
        &shared.access,
        request.as_ref(),
        ws.peer_addr(),
        &topic,
        shared.expiry_grace,
    )
    .await;
    let rights = match rights {
        Ok(rights) => rights,
        Err((code, reason)) => {
            let _ = ws.close_with_code(code, reason);
            log_close(&ws.run().await);
            return;
        }
    };
    if let Some(mut typed) = typed {
        let to = ws.clone();
        // Ends with the connection: sending fails once it is closed.
        tokio::spawn(async move {
            while let Some(line) = recv_typed(&mut typed).await {
                if to.send(line).is_err() {
                    break;
                }
            }
        });
    }
    if let Err(error) = hub.subscribe(&ws, &topic) {
        tracing::info!(%error, topic, "cannot subscribe");
    }
    let publish_to = hub.clone();
    let to = topic.clone();
    let may_publish = rights.publish;
    let closer = ws.clone();
    // The message's own bytes, shared: text stays text, binary binary.
    ws.on_message(move |e| {
        if may_publish {
            publish_to.publish(&to, &e.data);
        } else {
            let reason = "not allowed to publish here";
            let _ = closer.close_with_code(wsevents::CloseCode::POLICY_VIOLATION, reason);
        }
    });
    ws.on_error(|e| tracing::info!(error = %e.message(), "error"));
    let closed = ws.run();
    tokio::pin!(closed);
    let close = match rights.closes_at {
        None => closed.await,
        Some(at) => tokio::select! {
            close = &mut closed => close,
            () = tokio::time::sleep_until(at) => {
                tracing::info!("token expired");
                let code = wsevents::pubsub::auth::TOKEN_EXPIRED_CLOSE_CODE;
                let _ = ws.close_with_code(code, "token expired");
                closed.await
            }
        },
    };
    log_close(&close);
}

/// The end of an event-API connection, in its span.
fn log_close(close: &wsevents::CloseEvent) {
    tracing::info!(
        code = close.code,
        reason = %close.reason,
        clean = close.was_clean,
        "closed"
    );
}

/// The hook's refusal: `status` with `body`.
fn refuse(status: ::http::StatusCode, body: String) -> ::http::Response<String> {
    let mut response = ::http::Response::new(body);
    *response.status_mut() = status;
    response
}

/// A wsevents.v1 connection: its requests go to the hub, until it leaves or the
/// server shuts down.
async fn pubsub<S>(stream: WebSocketStream<S>, url: String, server: &PubsubServer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug + 'static,
{
    let ws = WebSocket::from_stream(stream, url);
    server.serve(&ws);
    ws.on_error(|e| tracing::info!(error = %e.message(), "error"));
    log_close(&ws.run().await);
}

/// Log the Redis backend's changes of state (the backend logs the details).
async fn watch_backend(hub: Hub) {
    let mut last = None;
    loop {
        let status = hub.backend_status();
        let up = status == BackendStatus::Connected;
        if last != Some(up) {
            match &status {
                BackendStatus::Connected => tracing::info!("topics: connected to Redis"),
                other => tracing::warn!(?other, "topics: Redis unreachable, local only"),
            }
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `--stdin`'s lines, as a connection receives them.
type Typed = tokio::sync::broadcast::Receiver<wsevents::Message>;

/// The next line typed; never, without `--stdin` or once standard input has ended.
async fn next_typed(typed: &mut Option<Typed>) -> wsevents::Message {
    if let Some(receiver) = typed {
        match recv_typed(receiver).await {
            Some(line) => return line,
            None => *typed = None,
        }
    }
    std::future::pending().await
}

/// The next line typed, `None` once standard input has ended. A connection that fell
/// [`TYPED_BACKLOG`] lines behind goes on with the oldest it still can get.
async fn recv_typed(typed: &mut Typed) -> Option<wsevents::Message> {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match typed.recv().await {
            Ok(line) => return Some(line),
            Err(RecvError::Lagged(missed)) => {
                tracing::info!(missed, "typed lines missed (the client is slow)");
            }
            Err(RecvError::Closed) => return None,
        }
    }
}
