//! The server HTTP API (feature `http-api`): how an application's backend pushes
//! through a wsevents server and acts on its connections, with plain HTTP and JSON,
//! behind API keys. docs/api.md has every endpoint with `curl`.
//!
//! ```text
//!  http::Request ─► /healthz, /readyz (no key) ─► 200, or 503 while Redis is away
//!               └─► /api/… ─► key (401) ─► bound on requests in progress (503)
//!                          ─► route (404, 405) ─► body, bounded (413, 408) ─► JSON (400)
//!                          ─► the hub: publish, broadcast, history ─► 200 or 503
//!                          ─► every node (Hub::command): disconnect, unsubscribe, info
//! ```
//!
//! | endpoint | takes | answers |
//! |---|---|---|
//! | `POST /api/publish` | `{"topic", "data"[, "binary": true][, "key"]}` | `{"epoch", "offset"}` |
//! | `POST /api/broadcast` | `{"topics": […], "data"[, "binary"][, "key"]}` | `{"positions": [{"topic", "epoch", "offset"}]}` |
//! | `GET /api/history?topic=T[&since=EPOCH:OFFSET][&limit=N]` | | `{"topic", "epoch", "offset", "publications", "gap", "more"}` |
//! | `POST /api/disconnect` | `{"user"}` | `{"connections", "nodes", "answered"}` |
//! | `POST /api/unsubscribe` | `{"user", "topic"}` | `{"connections", "nodes", "answered"}` |
//! | `GET /api/info` | | `{"backend", "nodes", "answered", "connections", "subscribers", "per_node"}` |
//! | `GET /healthz`, `GET /readyz` | (no key) | `{"status"}` |
//!
//! Every error is `{"error": {"code", "message"}}` with the status of its
//! [`ErrorCode`]. The API is a handler of `http::Request` → `http::Response`
//! ([`HttpApi::handle`]) for any hyper (or axum) server; `wsevents serve` mounts it on
//! its listener with `--api-key-file`.
//!
//! **Bounds.** A body is read up to [`HttpApiBuilder::max_body`] (by default what the
//! largest publication takes as base64 plus [`ENVELOPE`]), refused at once by its
//! `Content-Length` and otherwise as it arrives (413), within
//! [`HttpApiBuilder::body_timeout`] (10 s; 408 past it); at most
//! [`HttpApiBuilder::max_in_progress`] requests (16) are served at once, past them 503
//! with `Retry-After`. So the API holds at most that many bodies. A broadcast names at
//! most [`MAX_BROADCAST_TOPICS`] topics; a history page holds at most
//! [`MAX_HISTORY_LIMIT`] publications ([`DEFAULT_HISTORY_LIMIT`] unless `limit`
//! says).
//!
//! **Across nodes.** Publications go through the hub, so on Redis they reach every
//! node's subscribers. `disconnect`, `unsubscribe` and `info` are commands to every
//! node ([`Hub::command`]): each node acts on its own connections and answers; the
//! answer sums the answers that came within [`HttpApiBuilder::command_wait`] (2 s),
//! and says how many nodes the command reached (`nodes`) and how many answered
//! (`answered`), so a node that did not answer in time is visible, not hidden.

use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use wsevents_proto::Message;

use crate::hub::{BackendStatus, HistoryPage, Hub, MAX_KEY_LEN, Position};
use crate::pubsub::PubsubServer;
use crate::pubsub::wire::MAX_TOPIC_LEN;

mod keys;
mod reply;

pub use keys::{ApiKeys, KeyError, MAX_KEYS, MIN_KEY_LEN};
use reply::{ApiError, json};
pub use reply::{Body, ErrorCode};

/// What a body holds besides a publication's data, at most, in the default body
/// limit: 64 KiB (a broadcast's topics, the key, the JSON around them).
pub const ENVELOPE: usize = 64 * 1024;

/// The most topics one broadcast names: 1,000.
pub const MAX_BROADCAST_TOPICS: usize = 1000;

/// The publications a history page holds unless `limit` says: 100.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// The most publications a history page holds (`limit`): 1,000.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// The longest user name `disconnect` and `unsubscribe` take, in bytes: 1,024.
pub const MAX_USER_LEN: usize = 1024;

/// The longest publication by default, in bytes of data: the v1 protocol's
/// ([`crate::pubsub::DEFAULT_MAX_PUBLICATION`], 8 MiB).
pub const DEFAULT_MAX_PUBLICATION: usize = crate::pubsub::DEFAULT_MAX_PUBLICATION;

/// A node's side of `disconnect` and `unsubscribe`: what it does to the connections
/// of a user on this node (the server that knows its connections' identities
/// implements it). Called on the backend's task with no lock of the hub held: keep it
/// quick.
pub trait UserConnections: Send + Sync + 'static {
    /// Close every connection of `user` on this node; how many.
    fn disconnect(&self, user: &str) -> usize;
    /// Unsubscribe every connection of `user` on this node from `topic`; how many
    /// were subscribed.
    fn unsubscribe(&self, user: &str, topic: &str) -> usize;
}

/// A wsevents.v1 server's connections, by the users their tokens name
/// ([`PubsubServer::disconnect_user`], [`PubsubServer::unsubscribe_user`]).
impl UserConnections for PubsubServer {
    fn disconnect(&self, user: &str) -> usize {
        self.disconnect_user(user)
    }

    fn unsubscribe(&self, user: &str, topic: &str) -> usize {
        self.unsubscribe_user(user, topic)
    }
}

/// The server HTTP API on a hub (see the [module](self)); a cheap clone.
///
/// ```no_run
/// use wsevents::http_api::{ApiKeys, HttpApi};
/// use wsevents::hub::{History, Hub};
/// # async fn demo(request: http::Request<hyper::body::Incoming>) -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::builder().history(History::default()).build();
/// let api = HttpApi::builder(hub, ApiKeys::parse("0123456789abcdef0123")?).build();
/// // In a hyper service, for the paths the API serves:
/// if HttpApi::serves(request.uri().path()) {
///     let response = api.handle(request).await;
///     # let _ = response;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpApi {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    keys: ApiKeys,
    max_publication: usize,
    max_body: usize,
    body_timeout: Duration,
    command_wait: Duration,
    retry_after: Duration,
    in_progress: Semaphore,
    max_in_progress: usize,
    users: Option<Arc<dyn UserConnections>>,
    connections: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("keys", &self.inner.keys)
            .field("max_publication", &self.inner.max_publication)
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

/// Options of an [`HttpApi`].
pub struct HttpApiBuilder {
    hub: Hub,
    keys: ApiKeys,
    max_publication: usize,
    max_body: Option<usize>,
    body_timeout: Duration,
    command_wait: Duration,
    retry_after: Duration,
    max_in_progress: usize,
    users: Option<Arc<dyn UserConnections>>,
    connections: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl std::fmt::Debug for HttpApiBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApiBuilder")
            .field("keys", &self.keys)
            .field("max_publication", &self.max_publication)
            .finish_non_exhaustive()
    }
}

impl HttpApiBuilder {
    /// The largest publication, in bytes of data (text as UTF-8, binary decoded);
    /// past it 413 ([`DEFAULT_MAX_PUBLICATION`]; use the v1 server's, so that both
    /// ways in take the same).
    pub fn max_publication(mut self, bytes: usize) -> Self {
        self.max_publication = bytes;
        self
    }

    /// The largest body read, in bytes; past it 413 (by default the largest
    /// publication as base64 plus [`ENVELOPE`]). Text data that JSON escapes heavily
    /// takes more than its bytes: such a body may reach this before the publication
    /// reaches its limit.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// How long a body may take to arrive (10 s); past it 408.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long `disconnect`, `unsubscribe` and `info` wait for the nodes' answers
    /// (2 s).
    pub fn command_wait(mut self, wait: Duration) -> Self {
        self.command_wait = wait;
        self
    }

    /// What a 503 asks the caller to wait (`Retry-After`, 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// API requests served at once, at most (16); past it 503. Each holds at most
    /// one body of [`max_body`](Self::max_body).
    pub fn max_in_progress(mut self, n: usize) -> Self {
        self.max_in_progress = n.max(1);
        self
    }

    /// What this node does for `disconnect` and `unsubscribe`; without it both answer
    /// 501 (a server without user identities).
    pub fn users(mut self, users: impl UserConnections) -> Self {
        self.users = Some(Arc::new(users));
        self
    }

    /// This node's open connections, for `info` (without it, `info` counts the hub's
    /// subscribers only).
    pub fn connections(mut self, count: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        self.connections = Some(Arc::new(count));
        self
    }

    /// The API; it answers the hub's commands from now on (this node's part of
    /// `disconnect`, `unsubscribe` and `info`, [`Hub::on_command`]).
    pub fn build(self) -> HttpApi {
        let max_body = self
            .max_body
            .unwrap_or_else(|| self.max_publication.div_ceil(3).saturating_mul(4) + ENVELOPE);
        let inner = Arc::new(Inner {
            hub: self.hub,
            keys: self.keys,
            max_publication: self.max_publication,
            max_body,
            body_timeout: self.body_timeout,
            command_wait: self.command_wait,
            retry_after: self.retry_after,
            in_progress: Semaphore::new(self.max_in_progress),
            max_in_progress: self.max_in_progress,
            users: self.users,
            connections: self.connections,
        });
        // Weakly: the hub keeps its handler, and the API keeps the hub.
        let api: Weak<Inner> = Arc::downgrade(&inner);
        inner
            .hub
            .on_command(move |hub, command| match api.upgrade() {
                Some(api) => api.run_command(hub, command),
                None => Value::Null,
            });
        HttpApi { inner }
    }
}

impl HttpApi {
    /// An API on `hub` (which must keep history: publications get positions) that
    /// takes `keys`.
    pub fn builder(hub: Hub, keys: ApiKeys) -> HttpApiBuilder {
        HttpApiBuilder {
            hub,
            keys,
            max_publication: DEFAULT_MAX_PUBLICATION,
            max_body: None,
            body_timeout: Duration::from_secs(10),
            command_wait: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
            max_in_progress: 16,
            users: None,
            connections: None,
        }
    }

    /// Whether the API answers `path`: `/api` and below, `/healthz`, `/readyz`.
    pub fn serves(path: &str) -> bool {
        path == "/api" || path.starts_with("/api/") || path == "/healthz" || path == "/readyz"
    }

    /// The answer to `request` (any path: one the API does not serve is 404).
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.respond(request).await {
            Ok(response) => response,
            Err(error) => error.response(),
        }
    }

    async fn respond<B>(&self, request: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let api = &*self.inner;
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if let Some(response) = health(&api.hub, &request, api.retry_after) {
            return Ok(response);
        }
        match path.as_str() {
            _ if !HttpApi::serves(&path) => {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no endpoint {path}"),
                ));
            }
            _ => {}
        }
        api.authorize(&request)?;
        let _permit = api.in_progress.try_acquire().map_err(|_| {
            ApiError::unavailable(
                format!(
                    "{} API requests are in progress already",
                    api.max_in_progress
                ),
                api.retry_after,
            )
        })?;
        match (path.as_str(), &method) {
            ("/api/publish", &Method::POST) => api.publish(api.body(request).await?).await,
            ("/api/broadcast", &Method::POST) => api.broadcast(api.body(request).await?).await,
            ("/api/disconnect", &Method::POST) => api.disconnect(api.body(request).await?).await,
            ("/api/unsubscribe", &Method::POST) => api.unsubscribe(api.body(request).await?).await,
            ("/api/history", &Method::GET | &Method::HEAD) => {
                api.history(request.uri().query().unwrap_or_default()).await
            }
            ("/api/info", &Method::GET | &Method::HEAD) => api.info().await,
            ("/api/publish" | "/api/broadcast" | "/api/disconnect" | "/api/unsubscribe", _) => {
                Err(ApiError::method("POST"))
            }
            ("/api/history" | "/api/info", _) => Err(ApiError::method("GET, HEAD")),
            _ => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no endpoint {path} (docs/api.md lists them)"),
            )),
        }
    }
}

/// `POST /api/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    data: Value,
    #[serde(default)]
    binary: bool,
    key: Option<String>,
}

/// `POST /api/broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    topics: Vec<String>,
    data: Value,
    #[serde(default)]
    binary: bool,
    key: Option<String>,
}

/// `POST /api/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: String,
}

/// `POST /api/unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    user: String,
    topic: String,
}

impl Inner {
    fn authorize<B>(&self, request: &Request<B>) -> Result<(), ApiError> {
        let presented = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, key) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            });
        match presented {
            None => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "an API key is required: Authorization: Bearer KEY",
            )),
            Some(key) if self.keys.accepts(key) => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the API key is not one of this server's",
            )),
        }
    }

    /// The body as `T`: bounded by `max_body` (by its `Content-Length` first) and by
    /// the body timeout.
    async fn body<T, B>(&self, request: Request<B>) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = || {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("a body is at most {} bytes", self.max_body),
            )
        };
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        let limited = http_body_util::Limited::new(request.into_body(), self.max_body);
        let collected = tokio::time::timeout(self.body_timeout, limited.collect())
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Timeout,
                    format!("the body did not arrive within {:?}", self.body_timeout),
                )
            })?;
        let bytes: Bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(too_large());
            }
            Err(error) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("the body could not be read: {error}"),
                ));
            }
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("the body: {e}")))
    }

    /// `data` (and `binary`) as the message to publish.
    fn message(&self, data: Value, binary: bool) -> Result<Message, ApiError> {
        let message = match (data, binary) {
            (Value::String(encoded), true) => {
                Message::binary(BASE64.decode(&encoded).map_err(|e| {
                    ApiError::new(ErrorCode::BadRequest, format!("data: not base64 ({e})"))
                })?)
            }
            (_, true) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "data: with binary, a base64 string",
                ));
            }
            (Value::String(text), false) => Message::text(text),
            (Value::Null, false) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "data: a string, or any JSON value but null",
                ));
            }
            (other, false) => Message::text(other.to_string()),
        };
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        };
        if len > self.max_publication {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("data is at most {} bytes, not {len}", self.max_publication),
            ));
        }
        Ok(message)
    }

    async fn publish(&self, body: PublishBody) -> Result<Response<Body>, ApiError> {
        check_topic(&body.topic)?;
        check_key(body.key.as_deref())?;
        let message = self.message(body.data, body.binary)?;
        let position = self
            .hub
            .publish_confirmed(&body.topic, message, body.key.as_deref())
            .await
            .map_err(|e| ApiError::from_hub(e, self.retry_after))?;
        Ok(json(
            StatusCode::OK,
            &json!({"epoch": position.epoch(), "offset": position.offset()}),
        ))
    }

    async fn broadcast(&self, body: BroadcastBody) -> Result<Response<Body>, ApiError> {
        if body.topics.is_empty() || body.topics.len() > MAX_BROADCAST_TOPICS {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("topics: 1 to {MAX_BROADCAST_TOPICS} of them"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for topic in &body.topics {
            check_topic(topic)?;
            if !seen.insert(topic.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("topics: {topic:?} twice"),
                ));
            }
        }
        check_key(body.key.as_deref())?;
        let message = self.message(body.data, body.binary)?;
        let stores = body.topics.iter().map(|topic| {
            self.hub
                .publish_confirmed(topic, message.clone(), body.key.as_deref())
        });
        let stored = futures_util::future::join_all(stores).await;
        let mut positions = Vec::with_capacity(stored.len());
        for (topic, position) in body.topics.iter().zip(stored) {
            let position = position.map_err(|e| ApiError::from_hub(e, self.retry_after))?;
            positions.push(json!({
                "topic": topic,
                "epoch": position.epoch(),
                "offset": position.offset(),
            }));
        }
        Ok(json(StatusCode::OK, &json!({ "positions": positions })))
    }

    async fn history(&self, query: &str) -> Result<Response<Body>, ApiError> {
        let (mut topic, mut since, mut limit) = (None, None, DEFAULT_HISTORY_LIMIT);
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "topic" => topic = Some(value.into_owned()),
                "since" => {
                    since = Some(value.parse::<Position>().map_err(|e| {
                        ApiError::new(ErrorCode::BadRequest, format!("since: {e}"))
                    })?);
                }
                "limit" => {
                    limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::BadRequest,
                                format!("limit: 1 to {MAX_HISTORY_LIMIT}, not {value:?}"),
                            )
                        })?;
                }
                other => {
                    return Err(ApiError::new(
                        ErrorCode::BadRequest,
                        format!("no parameter {other:?} (topic, since, limit)"),
                    ));
                }
            }
        }
        let topic = topic
            .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "topic: required (?topic=NAME)"))?;
        check_topic(&topic)?;
        let page = self
            .hub
            .read_history(&topic, since.as_ref(), limit)
            .await
            .map_err(|e| ApiError::from_hub(e, self.retry_after))?;
        Ok(json(StatusCode::OK, &history_json(&topic, &page)))
    }

    async fn disconnect(&self, body: DisconnectBody) -> Result<Response<Body>, ApiError> {
        self.users_or_501()?;
        check_user(&body.user)?;
        self.tally(json!({"op": "disconnect", "user": body.user}))
            .await
    }

    async fn unsubscribe(&self, body: UnsubscribeBody) -> Result<Response<Body>, ApiError> {
        self.users_or_501()?;
        check_user(&body.user)?;
        check_topic(&body.topic)?;
        self.tally(json!({"op": "unsubscribe", "user": body.user, "topic": body.topic}))
            .await
    }

    fn users_or_501(&self) -> Result<(), ApiError> {
        match self.users {
            Some(_) => Ok(()),
            None => Err(ApiError::new(
                ErrorCode::NotImplemented,
                "this server has no user identities (connection tokens) to act on",
            )),
        }
    }

    /// Send `command` to every node; the sum of the connections they acted on.
    async fn tally(&self, command: Value) -> Result<Response<Body>, ApiError> {
        let got = self
            .hub
            .command(command, self.command_wait)
            .await
            .map_err(|e| ApiError::from_hub(e, self.retry_after))?;
        let connections: u64 = got
            .answers
            .iter()
            .filter_map(|a| a["connections"].as_u64())
            .sum();
        Ok(json(
            StatusCode::OK,
            &json!({
                "connections": connections,
                "nodes": got.reached,
                "answered": got.answers.len(),
            }),
        ))
    }

    async fn info(&self) -> Result<Response<Body>, ApiError> {
        let status = self.hub.backend_status();
        let backend = match status {
            BackendStatus::InProcess => "in_process",
            _ => "redis",
        };
        let got = self
            .hub
            .command(json!({"op": "info"}), self.command_wait)
            .await
            .map_err(|e| ApiError::from_hub(e, self.retry_after))?;
        let sum =
            |field: &str| -> u64 { got.answers.iter().filter_map(|a| a[field].as_u64()).sum() };
        Ok(json(
            StatusCode::OK,
            &json!({
                "backend": backend,
                "nodes": got.reached,
                "answered": got.answers.len(),
                "connections": sum("connections"),
                "subscribers": sum("subscribers"),
                "per_node": got.answers,
            }),
        ))
    }

    /// This node's part of a command of another node's API (or this one's).
    fn run_command(&self, hub: &Hub, command: &Value) -> Value {
        let text = |field: &str| command[field].as_str();
        match (text("op"), &self.users) {
            (Some("info"), _) => {
                let stats = hub.stats();
                json!({
                    "connections": self.connections.as_ref().map_or(stats.subscribers, |count| count()),
                    "subscribers": stats.subscribers,
                    "topics": stats.topics,
                })
            }
            (Some("disconnect"), Some(users)) => match text("user") {
                Some(user) => json!({"connections": users.disconnect(user)}),
                None => Value::Null,
            },
            (Some("unsubscribe"), Some(users)) => match (text("user"), text("topic")) {
                (Some(user), Some(topic)) => json!({"connections": users.unsubscribe(user, topic)}),
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }
}

/// The answer to `/healthz` (the process is alive: 200) and `/readyz` (it can serve:
/// 200, or 503 with `Retry-After` while its Redis is unreachable), without a key, for
/// load balancers and orchestrators; `None` for any other path. [`HttpApi::handle`]
/// answers them too; a server without the API may answer them with this.
///
/// ```
/// let hub = wsevents::hub::Hub::new();
/// let request = http::Request::get("/readyz").body(()).unwrap();
/// let ready = wsevents::http_api::health(&hub, &request, std::time::Duration::from_secs(1));
/// assert_eq!(ready.map(|r| r.status()), Some(http::StatusCode::OK));
/// ```
pub fn health<B>(hub: &Hub, request: &Request<B>, retry_after: Duration) -> Option<Response<Body>> {
    let answer = match request.uri().path() {
        "/healthz" => {
            get_only(request.method()).map(|()| json(StatusCode::OK, &json!({"status": "ok"})))
        }
        "/readyz" => get_only(request.method()).and_then(|()| ready(hub, retry_after)),
        _ => return None,
    };
    Some(answer.unwrap_or_else(|error| error.response()))
}

fn ready(hub: &Hub, retry_after: Duration) -> Result<Response<Body>, ApiError> {
    match hub.backend_status() {
        BackendStatus::InProcess => Ok(json(
            StatusCode::OK,
            &json!({"status": "ready", "backend": "in_process"}),
        )),
        BackendStatus::Connected => Ok(json(
            StatusCode::OK,
            &json!({"status": "ready", "backend": "redis"}),
        )),
        BackendStatus::Reconnecting { error, .. } => Err(ApiError::unavailable(
            format!("Redis is unreachable: {error}"),
            retry_after,
        )),
    }
}

/// A history page as JSON.
fn history_json(topic: &str, page: &HistoryPage) -> Value {
    let publications: Vec<Value> = page
        .publications
        .iter()
        .map(|p| {
            let mut out = json!({"epoch": p.position.epoch(), "offset": p.position.offset()});
            match &p.message {
                Message::Text(text) => out["data"] = json!(text.as_str()),
                Message::Binary(data) => {
                    out["data"] = json!(BASE64.encode(data));
                    out["binary"] = json!(true);
                }
            }
            out
        })
        .collect();
    json!({
        "topic": topic,
        "epoch": page.position.as_ref().map(Position::epoch),
        "offset": page.position.as_ref().map(Position::offset),
        "publications": publications,
        "gap": page.gap,
        "more": page.more,
    })
}

fn get_only(method: &Method) -> Result<(), ApiError> {
    match *method {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(ApiError::method("GET, HEAD")),
    }
}

fn check_topic(topic: &str) -> Result<(), ApiError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(ApiError::new(
            ErrorCode::BadTopic,
            format!("a topic is 1 to {MAX_TOPIC_LEN} bytes, not {}", topic.len()),
        ));
    }
    Ok(())
}

fn check_key(key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(key) if key.is_empty() || key.len() > MAX_KEY_LEN => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("key: 1 to {MAX_KEY_LEN} bytes, not {}", key.len()),
        )),
        _ => Ok(()),
    }
}

fn check_user(user: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("user: 1 to {MAX_USER_LEN} bytes, not {}", user.len()),
        ));
    }
    Ok(())
}
