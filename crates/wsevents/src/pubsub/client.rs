//! The client side of wsevents.v1, on a [`ReconnectingWebSocket`]: subscriptions that
//! survive reconnects and recover what was missed, and publishes that are neither
//! lost nor stored twice.
//!
//! The state is a position kept per topic and a table of publishes not yet answered;
//! the socket's handlers apply the protocol's rules (docs/protocol.md, "What a client
//! keeps") to them:
//!
//! ```text
//!  open ──► every pending publish again, then subscribe(topic, since = kept) for every
//!           topic, at most SUBSCRIBE_WINDOW of them unanswered at once
//!  subscribed ──► kept = since (recovered) or the answer's position (not recovered)
//!  pub ──► offset = kept+1: handle, kept = it │ ≤ kept: repeat, drop │ else: resubscribe
//!  published ──► the publish's future resolves      error(temporary) ──► retry later
//!  close ──► nothing is in flight any more: the next open starts again from the top
//! ```
//!
//! With a [token provider](Client::token_provider), every open first asks it for a
//! token and sends `connect`; the requests above wait for its answer. Before the
//! token's `exp` the provider is asked again and the token sent as `refresh`. A close
//! with 4001 (unauthorized) or 4009 (disconnected by the server) ends the client; 4003
//! (token expired) reconnects, with a new token, from the kept positions.
//!
//! A publish carries a key made once for it (random per client, then a counter) and
//! keeps it across every re-send, so the server stores it once however often it
//! arrives (within its history window). Requests go out only while a connection is
//! open; what waits for one is the pending table, bounded by
//! [`Reconnect::max_queued`], and the topics.
//!
//! **Nothing is dropped.** Requests wait in the client's own state (the topics, the
//! pending table, unsubscribes in order) and are written by one pump while they fit:
//! a request the connection's send buffer refuses
//! ([`Backpressure`](crate::Backpressure), 16 MiB by default) stays first in line and
//! the pump goes on once the buffer has drained enough for it, so a reconnect that
//! re-sends more than the buffer holds is paced, not refused. A request refused for any
//! other reason ends the connection (1011): the next one sends everything again.
//! Subscribes are windowed ([`SUBSCRIBE_WINDOW`] unanswered at most): a client with
//! 1,024 topics resubscribes them in step with the answers, well within what a server
//! keeps waiting per connection (docs/protocol.md: at least 256).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use wsevents_proto::{Message, random};

use super::wire::{ErrorCode, MAX_TOPIC_LEN, PROTOCOL, Reply, Request, WireError};
use crate::api::data::{Data, IntoMessage};
use crate::api::events::ErrorEvent;
use crate::api::reconnecting::{OpenEvent, Reconnect, ReconnectCloseEvent, ReconnectingWebSocket};
use crate::error::{Error, Result};
use crate::hub::Position;
use crate::io::client::ClientBuilder;

/// A publication received on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationEvent {
    /// The topic.
    pub topic: String,
    /// Its position in the topic.
    pub position: Position,
    /// What was published: text, or binary.
    pub data: Message,
}

/// A subscription took effect (also after every reconnect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedEvent {
    /// The topic.
    pub topic: String,
    /// Whether every publication missed since the kept position follows (`true`),
    /// or nothing of it (`false`: they are lost to this client).
    pub recovered: bool,
    /// The topic's latest position when the subscription took effect.
    pub position: Position,
}

type PublicationFn = Arc<dyn Fn(&PublicationEvent) + Send + Sync>;
type SubscribedFn = Arc<dyn Fn(&SubscribedEvent) + Send + Sync>;
type OpenFn = Arc<dyn Fn(&OpenEvent) + Send + Sync>;
type CloseFn = Arc<dyn Fn(&ReconnectCloseEvent) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&ErrorEvent) + Send + Sync>;
type UnsubscribedFn = Arc<dyn Fn(&str) + Send + Sync>;

/// A token provider's answer, to come: the token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send>>;

/// A token provider, as the client keeps it.
type TokenFn = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

#[derive(Default, Clone)]
struct Handlers {
    publication: Option<PublicationFn>,
    subscribed: Option<SubscribedFn>,
    open: Option<OpenFn>,
    close: Option<CloseFn>,
    error: Option<ErrorFn>,
    unsubscribed: Option<UnsubscribedFn>,
}

/// The longest a token is refreshed before its `exp`: 60 s (less for a token with
/// less than 4 minutes left: when a quarter of what is left remains).
pub const MAX_REFRESH_AHEAD: std::time::Duration = std::time::Duration::from_secs(60);

/// The wait before a failed token request is made again: 1 s.
const TOKEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a token is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Connect,
    Refresh,
}

/// The most subscribes one connection has unanswered at once: a reconnect with many
/// topics resubscribes them in step with the answers. A server keeps at least 256
/// waiting per connection (docs/protocol.md), so a client never overflows it.
pub const SUBSCRIBE_WINDOW: usize = 64;

/// One subscribed topic.
#[derive(Debug)]
struct Topic {
    /// The position of the last publication handled (or the subscription's start).
    kept: Option<Position>,
    /// Where its subscription is on the open connection. Its publications are handled
    /// only when `Active`, dropped otherwise (a resubscription's answer comes first).
    sub: Sub,
    /// Temporary failures of its subscribe in a row (the retry's backoff).
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    /// A subscribe is to be sent: in `State::subscribes` while a connection is open,
    /// else at the next open.
    Waiting,
    /// Sent with this id and `since`; its answer is awaited.
    Sent { id: u64, since: Option<Position> },
    /// Refused with a temporary error: queued again by the retry with this number.
    Backoff(u64),
    /// Subscribed on this connection.
    Active,
}

/// A publish not answered yet.
struct Pending {
    topic: String,
    data: Message,
    key: String,
    state: PublishState,
    answer: oneshot::Sender<Result<Position>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublishState {
    /// To be sent: in `State::outbox` while a connection is open, else at the next
    /// open.
    Unsent,
    /// Sent on this connection; its answer is awaited.
    Sent,
    /// Refused with a temporary error: sent again by the next retry (or open).
    Refused,
}

/// A request other than a subscribe, waiting for its turn on the open connection.
#[derive(Debug)]
enum Out {
    /// The pending publish with this id.
    Publish(u64),
    Unsubscribe(String),
}

struct State {
    /// Request ids, from 1.
    next_id: u64,
    /// Keys: this client's random prefix, then a counter.
    key_prefix: String,
    next_key: u64,
    /// A connection is open (its number: `connection`): requests are written to it.
    open: bool,
    connection: u64,
    /// The open connection's send buffer refused a request: a task waits for it to
    /// drain, and the pump stops until then.
    blocked: bool,
    topics: BTreeMap<String, Topic>,
    /// Topics whose subscribe is to be sent, in order; at most one entry per topic
    /// (exactly those `Waiting`, while open).
    subscribes: VecDeque<String>,
    /// Subscribes sent and not answered: at most [`SUBSCRIBE_WINDOW`].
    in_flight: usize,
    /// Publishes and unsubscribes to be sent, in order (bounded by the pending table and
    /// the unsubscribe calls, and emptied at every close).
    outbox: VecDeque<Out>,
    /// By request id, so re-sends go in the order of the calls.
    publishes: BTreeMap<u64, Pending>,
    /// The bound on `publishes`.
    max_pending: usize,
    /// Temporary publish errors in a row (the retry's backoff); reset by an answer.
    publish_failures: u32,
    /// A retry of the refused publishes is scheduled.
    retry_scheduled: bool,
    /// Told `rate_limited`: no publish is sent before this (the latest `retry_after`
    /// told on this connection), then the refused ones go first, in order, then the
    /// rest. A task waits for it; `None` when not rate limited.
    publish_hold: Option<tokio::time::Instant>,
    /// The number of the latest subscribe retry scheduled.
    retries: u64,
    /// Requests may go out on the open connection: at once without a token provider,
    /// once `connect` is answered with one.
    authenticated: bool,
    /// The `connect` and `refresh` sent on this connection and not answered.
    connect_id: Option<u64>,
    refresh_id: Option<u64>,
}

struct Shared {
    ws: ReconnectingWebSocket,
    state: Mutex<State>,
    handlers: Mutex<Handlers>,
    provider: Mutex<Option<TokenFn>>,
}

/// What a handler found to do once the lock is released.
enum Action {
    Publication(PublicationEvent),
    Subscribed(SubscribedEvent),
    Unsubscribed(String),
    Error(Error),
}

/// A wsevents.v1 client (docs/protocol.md) that reconnects: a cheap clone; one
/// clone drives it ([`run`](Self::run)), others subscribe and publish.
///
/// - [`subscribe`](Self::subscribe) keeps a position per topic and, on every
///   (re)connect, subscribes again from it: a client that comes back within the
///   server's history window gets everything it missed, in order, exactly once
///   ([`SubscribedEvent::recovered`] says whether it did).
/// - [`publish`](Self::publish) gives a future of the publication's position; the
///   publish is re-sent, with the same idempotency key, after a reconnect or a
///   temporary (`unavailable`) error, until answered; told `rate_limited`, it holds
///   every publish until the delay the server gave (`retry_after_ms`), then re-sends
///   the refused ones first, in the order of the calls.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsevents::Error> {
/// use wsevents::pubsub::Client;
/// let client = Client::new("ws://127.0.0.1:8080/pubsub")?;
/// client.on_subscribed(|s| eprintln!("{} from {} (recovered: {})", s.topic, s.position, s.recovered));
/// client.on_publication(|p| println!("{} {}: {:?}", p.topic, p.position, p.data));
/// client.subscribe("news", None)?;
/// let driver = client.clone();
/// tokio::spawn(async move { driver.run().await });
/// let position = client.publish("news", "hello").await?;
/// println!("stored at {position}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("ws", &self.inner.ws)
            .field("positions", &self.positions())
            .finish()
    }
}

impl Client {
    /// A client of `url` with the default options ([`Reconnect::new`]); nothing is
    /// connected until it is driven. [`Error::Syntax`] for a bad URL.
    pub fn new(url: &str) -> Result<Client> {
        Client::with_options(ClientBuilder::new(url)?, Reconnect::new())
    }

    /// A client that connects with `builder`'s options (its subprotocols are
    /// replaced by `wsevents.v1`) and reconnects with `options`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wsevents::Error> {
    /// use wsevents::{ClientBuilder, Reconnect};
    /// use wsevents::pubsub::Client;
    /// let client = Client::with_options(
    ///     ClientBuilder::new("ws://node-1.example:8080/pubsub")?,
    ///     Reconnect::new().servers(&["ws://node-2.example:8080/pubsub"])?,
    /// )?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn with_options(builder: ClientBuilder, options: Reconnect) -> Result<Client> {
        // Told it may not (4001) or disconnected by the operator (4009): not again.
        let options = options.final_codes(&[
            super::auth::UNAUTHORIZED_CLOSE_CODE.as_u16(),
            super::auth::DISCONNECTED_CLOSE_CODE.as_u16(),
        ]);
        let ws = builder.protocols(&[PROTOCOL])?.reconnect(options);
        let max_pending = ws.max_queued();
        let inner = Arc::new(Shared {
            ws: ws.clone(),
            state: Mutex::new(State {
                next_id: 1,
                key_prefix: format!("{:016x}", random::u64()),
                next_key: 0,
                open: false,
                connection: 0,
                blocked: false,
                topics: BTreeMap::new(),
                subscribes: VecDeque::new(),
                in_flight: 0,
                outbox: VecDeque::new(),
                publishes: BTreeMap::new(),
                max_pending,
                publish_failures: 0,
                retry_scheduled: false,
                publish_hold: None,
                retries: 0,
                authenticated: false,
                connect_id: None,
                refresh_id: None,
            }),
            handlers: Mutex::new(Handlers::default()),
            provider: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        ws.on_open(move |e| with(&weak, |c| c.opened(e)));
        let weak = Arc::downgrade(&inner);
        ws.on_message(move |e| {
            with(&weak, |c| match &e.data {
                Data::Text(text) => c.received(text.as_str()),
                _ => c.report(Error::Syntax("wsevents.v1 frames are text".into())),
            });
        });
        let weak = Arc::downgrade(&inner);
        ws.on_close(move |e| with(&weak, |c| c.closed(e)));
        let weak = Arc::downgrade(&inner);
        ws.on_error(move |e| {
            with(&weak, |c| {
                if let Some(f) = c.handlers().error.clone() {
                    f(e);
                }
            });
        });
        Ok(Client { inner })
    }

    /// The socket underneath (its URL, ready state; do not replace its handlers).
    pub fn socket(&self) -> &ReconnectingWebSocket {
        &self.inner.ws
    }

    // ----- handlers -----

    /// Every publication handled, once each, in order per topic.
    pub fn on_publication(&self, f: impl Fn(&PublicationEvent) + Send + Sync + 'static) {
        self.handlers().publication = Some(Arc::new(f));
    }

    /// Every subscription that took effect, after each (re)connect too.
    pub fn on_subscribed(&self, f: impl Fn(&SubscribedEvent) + Send + Sync + 'static) {
        self.handlers().subscribed = Some(Arc::new(f));
    }

    /// Every connection that opened (after the subscriptions were sent on it).
    pub fn on_open(&self, f: impl Fn(&OpenEvent) + Send + Sync + 'static) {
        self.handlers().open = Some(Arc::new(f));
    }

    /// Every connection that ended, with the wait before the next one.
    pub fn on_close(&self, f: impl Fn(&ReconnectCloseEvent) + Send + Sync + 'static) {
        self.handlers().close = Some(Arc::new(f));
    }

    /// The connections' errors, the server's refusals of a subscription
    /// ([`Error::Rejected`]: `forbidden`, `unauthorized`, …) and the token provider's
    /// failures ([`Error::Token`]).
    pub fn on_error(&self, f: impl Fn(&ErrorEvent) + Send + Sync + 'static) {
        self.handlers().error = Some(Arc::new(f));
    }

    /// Every topic the server took away (`{"op":"unsubscribed"}` without an id: its
    /// operator's doing): the client has forgotten it, and does not subscribe again by
    /// itself.
    pub fn on_unsubscribed(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.handlers().unsubscribed = Some(Arc::new(f));
    }

    // ----- tokens -----

    /// Get connection tokens from `provider`: asked on every connect (the token goes
    /// in the first request, `connect`; nothing else is sent before its answer) and
    /// again before the token expires (at [`MAX_REFRESH_AHEAD`] before its `exp` at
    /// most; sent as `refresh`). A provider that fails is asked again: at connect, on
    /// a new connection after the backoff; at refresh, after 1 s (the server closes an
    /// expired connection with 4003, and the client reconnects with a new token,
    /// recovering its topics). A token refused as `unauthorized` (4001) ends the
    /// client for good; `forbidden` fails only the request it answers.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), wsevents::Error> {
    /// use wsevents::pubsub::Client;
    /// let client = Client::new("wss://push.example/pubsub")?;
    /// client.token_provider(|| async {
    ///     // Ask the application's backend for a fresh JWT.
    ///     Ok::<_, std::io::Error>("eyJhbGciOi…".to_owned())
    /// });
    /// # Ok(()) }
    /// ```
    pub fn token_provider<F, Fut, E>(&self, provider: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let provider: TokenFn = Arc::new(move || {
            let token = provider();
            Box::pin(async move { token.await.map_err(|e| e.to_string()) })
        });
        *lock(&self.inner.provider) = Some(provider);
    }

    /// Connect with this token, always (a token that does not expire, or one the
    /// server's expiry ends: see [`token_provider`](Self::token_provider) for fresh
    /// ones).
    pub fn token(&self, token: impl Into<String>) {
        let token = token.into();
        self.token_provider(move || std::future::ready(Ok::<_, String>(token.clone())));
    }

    // ----- requests -----

    /// Subscribe to `topic`, from `since` when given (a position kept from an earlier
    /// run: what was published after it is recovered if the server still has it).
    /// Subscribing again to a topic replaces its kept position when `since` is given.
    /// [`Error::Syntax`] for a name that is empty or over 256 bytes.
    pub fn subscribe(&self, topic: &str, since: Option<Position>) -> Result<()> {
        check_topic(topic)?;
        let mut state = self.state();
        let new = !state.topics.contains_key(topic);
        let entry = state.topics.entry(topic.to_owned()).or_insert(Topic {
            kept: None,
            sub: Sub::Waiting,
            failures: 0,
        });
        if since.is_some() {
            entry.kept = since;
        }
        if state.open {
            if new {
                state.subscribes.push_back(topic.to_owned());
            } else {
                resubscribe(&mut state, topic);
            }
            self.pump(&mut state);
        }
        Ok(())
    }

    /// Stop receiving `topic` and forget its position.
    pub fn unsubscribe(&self, topic: &str) {
        let mut state = self.state();
        let Some(removed) = state.topics.remove(topic) else {
            return;
        };
        match removed.sub {
            Sub::Waiting => state.subscribes.retain(|t| t != topic),
            Sub::Sent { .. } => state.in_flight = state.in_flight.saturating_sub(1),
            Sub::Backoff(_) | Sub::Active => {}
        }
        if state.open {
            state.outbox.push_back(Out::Unsubscribe(topic.to_owned()));
            self.pump(&mut state);
        }
    }

    /// Publish `data` (text or binary) to `topic`. The future gives the position the
    /// server stored it at; the publish is re-sent with the same key after a reconnect
    /// or a temporary error until answered. Errors: [`Error::QueueFull`] when
    /// [`Reconnect::max_queued`] publishes are unanswered already, [`Error::Syntax`]
    /// for a bad topic (both at once: the future is ready), [`Error::Rejected`] for a
    /// publish the server refused for good (too large), [`Error::Closed`] when the
    /// client was closed for good before the answer.
    pub fn publish(&self, topic: &str, data: impl IntoMessage) -> Publishing {
        let (answer, answered) = oneshot::channel();
        let ready = |error| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(error));
            Publishing(rx)
        };
        if let Err(error) = check_topic(topic) {
            return ready(error);
        }
        let mut state = self.state();
        if self.inner.ws.ready_state() == crate::ReadyState::Closed {
            return ready(Error::Closed);
        }
        if state.publishes.len() >= state.max_pending {
            let limit = state.max_pending;
            return ready(Error::QueueFull { limit });
        }
        let id = next_id(&mut state);
        let key = format!("{}-{}", state.key_prefix, state.next_key);
        state.next_key += 1;
        let pending = Pending {
            topic: topic.to_owned(),
            data: data.into_message(),
            key,
            state: PublishState::Unsent,
            answer,
        };
        state.publishes.insert(id, pending);
        if state.open {
            state.outbox.push_back(Out::Publish(id));
            self.pump(&mut state);
        }
        Publishing(answered)
    }

    /// The position kept for each subscribed topic (the last publication handled):
    /// what a program saves to subscribe `since` it in a later run.
    pub fn positions(&self) -> BTreeMap<String, Position> {
        self.state()
            .topics
            .iter()
            .filter_map(|(topic, t)| Some((topic.clone(), t.kept.clone()?)))
            .collect()
    }

    /// Publishes not answered yet.
    pub fn pending(&self) -> usize {
        self.state().publishes.len()
    }

    // ----- driving -----

    /// Connect, reconnect and handle everything until closed for good; returns the
    /// final close ([`ReconnectingWebSocket::run`]).
    pub async fn run(&self) -> ReconnectCloseEvent {
        self.inner.ws.run().await
    }

    /// Close for good: unanswered publishes fail with [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        self.inner.ws.close()
    }

    // ----- the socket's handlers -----

    /// A connection opened: re-send every pending publish (with its key), in the order
    /// of the calls, and subscribe every topic from its kept position.
    fn opened(&self, e: &OpenEvent) {
        let protocol = self.inner.ws.protocol();
        if protocol != PROTOCOL {
            self.report(Error::InvalidAccess(format!(
                "the server did not select {PROTOCOL} (it chose {protocol:?})"
            )));
            let _ = self.inner.ws.close_with(1000, "wsevents.v1 required");
            return;
        }
        let with_token = lock(&self.inner.provider).is_some();
        let connection = {
            let mut state = self.state();
            let state = &mut *state;
            state.open = true;
            state.connection += 1;
            state.authenticated = !with_token;
            state.connect_id = None;
            state.refresh_id = None;
            state.blocked = false;
            state.in_flight = 0;
            // A new connection has a rate of its own: its task ends unheard.
            state.publish_hold = None;
            state.outbox.clear();
            state.subscribes.clear();
            for (id, pending) in state.publishes.iter_mut() {
                pending.state = PublishState::Unsent;
                state.outbox.push_back(Out::Publish(*id));
            }
            for (topic, entry) in state.topics.iter_mut() {
                entry.sub = Sub::Waiting;
                state.subscribes.push_back(topic.clone());
            }
            self.pump(state);
            state.connection
        };
        if with_token {
            self.ask_token(connection, Ask::Connect);
        }
        if let Some(f) = self.handlers().open.clone() {
            f(e);
        }
    }

    /// Ask the provider for a token, for `connection`; sent when it comes, if that
    /// connection is still the open one.
    fn ask_token(&self, connection: u64, ask: Ask) {
        let Some(provider) = lock(&self.inner.provider).clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            // The provider is the caller's code: called with no lock of ours held.
            let token = provider().await;
            with(&weak, |c| c.token_came(connection, ask, token));
        });
    }

    fn token_came(&self, connection: u64, ask: Ask, token: std::result::Result<String, String>) {
        let current = |state: &State| state.open && state.connection == connection;
        let token = match token {
            Ok(token) => token,
            Err(message) => {
                if !current(&self.state()) {
                    return;
                }
                self.report(Error::Token(message));
                match ask {
                    // Made again after the backoff, asking again.
                    Ask::Connect => self
                        .inner
                        .ws
                        .drop_connection(wsevents_proto::CloseCode::INTERNAL_ERROR, "no token"),
                    Ask::Refresh => self.ask_token_later(connection, TOKEN_RETRY),
                }
                return;
            }
        };
        let mut state = self.state();
        if !current(&state) {
            return;
        }
        let id = next_id(&mut state);
        let request = match ask {
            Ask::Connect => Request::Connect { id, token },
            Ask::Refresh => Request::Refresh { id, token },
        };
        if !self.write(&mut state, &request) {
            drop(state);
            if ask == Ask::Refresh {
                self.ask_token_later(connection, TOKEN_RETRY);
            }
            return;
        }
        match ask {
            Ask::Connect => state.connect_id = Some(id),
            Ask::Refresh => state.refresh_id = Some(id),
        }
    }

    /// Ask for a token to refresh with after `delay`, if `connection` is still open.
    fn ask_token_later(&self, connection: u64, delay: std::time::Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            with(&weak, |c| {
                let current = {
                    let state = c.state();
                    state.open && state.connection == connection
                };
                if current {
                    c.ask_token(connection, Ask::Refresh);
                }
            });
        });
    }

    /// Refresh the token of the open connection ahead of `expires` (seconds since
    /// 1970): when a quarter of what is left remains, at most [`MAX_REFRESH_AHEAD`]
    /// before.
    fn refresh_before(&self, connection: u64, expires: Option<u64>) {
        let Some(expires) = expires else { return };
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires);
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let ahead = (left / 4).min(MAX_REFRESH_AHEAD);
        self.ask_token_later(connection, left - ahead);
    }

    /// A connection ended: nothing is in flight on it any more. For good: the
    /// pending publishes fail.
    fn closed(&self, e: &ReconnectCloseEvent) {
        let failed = {
            let mut state = self.state();
            state.open = false;
            state.authenticated = false;
            state.connect_id = None;
            state.refresh_id = None;
            state.blocked = false;
            state.in_flight = 0;
            state.outbox.clear();
            state.subscribes.clear();
            for topic in state.topics.values_mut() {
                topic.sub = Sub::Waiting;
            }
            if e.will_reconnect() {
                BTreeMap::new()
            } else {
                std::mem::take(&mut state.publishes)
            }
        };
        for (_, pending) in failed {
            let _ = pending.answer.send(Err(Error::Closed));
        }
        if let Some(f) = self.handlers().close.clone() {
            f(e);
        }
        if !e.will_reconnect() {
            // Handlers often hold a clone of the client: drop them to break the cycle.
            let handlers = std::mem::take(&mut *self.handlers());
            drop(handlers);
        }
    }

    fn received(&self, text: &str) {
        let reply = match Reply::parse(text) {
            Ok(reply) => reply,
            Err(error) => return self.report(Error::Rejected(error)),
        };
        let action = {
            let mut state = self.state();
            let action = self.apply(&mut state, reply);
            // An answer frees a place in the window, a gap queues a resubscription.
            self.pump(&mut state);
            action
        };
        let handlers = self.handlers().clone();
        match action {
            Some(Action::Publication(p)) => {
                if let Some(f) = handlers.publication {
                    f(&p);
                }
            }
            Some(Action::Subscribed(s)) => {
                if let Some(f) = handlers.subscribed {
                    f(&s);
                }
            }
            Some(Action::Unsubscribed(topic)) => {
                if let Some(f) = handlers.unsubscribed {
                    f(&topic);
                }
            }
            Some(Action::Error(error)) => self.report(error),
            None => {}
        }
    }

    /// The protocol's rules for one frame from the server (what it makes to send is
    /// queued, for the pump).
    fn apply(&self, state: &mut State, reply: Reply) -> Option<Action> {
        match reply {
            Reply::Subscribed {
                id,
                topic,
                recovered,
                position,
            } => {
                let entry = state.topics.get_mut(&topic)?;
                let Sub::Sent { id: sent, since } = &entry.sub else {
                    return None;
                };
                if *sent != id {
                    return None; // an answer to a subscribe replaced since
                }
                entry.kept = match (recovered, since) {
                    // The recovered publications advance it one by one.
                    (true, Some(since)) => Some(since.clone()),
                    _ => Some(position.clone()),
                };
                entry.sub = Sub::Active;
                entry.failures = 0;
                state.in_flight = state.in_flight.saturating_sub(1);
                Some(Action::Subscribed(SubscribedEvent {
                    topic,
                    recovered,
                    position,
                }))
            }
            Reply::Pub { topic, publication } => {
                let entry = state.topics.get_mut(&topic)?;
                if entry.sub != Sub::Active {
                    return None; // a resubscription's answer comes first
                }
                let position = publication.position;
                let next = match &entry.kept {
                    None => true,
                    Some(kept) if kept.epoch() == position.epoch() => {
                        if position.offset() <= kept.offset() {
                            return None; // a repeat
                        }
                        position.offset() == kept.offset() + 1
                    }
                    Some(_) => false,
                };
                if !next {
                    // A hole, or another epoch: recover from what is kept.
                    tracing::debug!(%topic, %position, kept = ?entry.kept, "gap: resubscribing");
                    resubscribe(state, &topic);
                    return None;
                }
                entry.kept = Some(position.clone());
                Some(Action::Publication(PublicationEvent {
                    topic,
                    position,
                    data: publication.message,
                }))
            }
            Reply::Published { id, position, .. } => {
                let pending = state.publishes.remove(&id)?;
                state.publish_failures = 0;
                let _ = pending.answer.send(Ok(position));
                None
            }
            Reply::Error {
                id: None,
                code: ErrorCode::Unauthorized,
                message,
                ..
            } => {
                // A handshake token refused: the close (4001, 4003) follows.
                let error = WireError {
                    id: None,
                    code: ErrorCode::Unauthorized,
                    message,
                };
                Some(Action::Error(Error::Rejected(error)))
            }
            Reply::Error {
                id,
                code,
                message,
                retry_after,
            } => {
                let id = id?;
                let error = WireError {
                    id: Some(id),
                    code,
                    message,
                };
                if state.connect_id == Some(id) || state.refresh_id == Some(id) {
                    // The token refused: the close (4001, 4003) follows.
                    state.connect_id = None;
                    state.refresh_id = None;
                    return Some(Action::Error(Error::Rejected(error)));
                }
                if let Some(pending) = state.publishes.get_mut(&id) {
                    if let (true, Some(wait)) = (code.is_temporary(), retry_after) {
                        // Told when (rate_limited): publishes wait until the latest
                        // time told, then the refused ones go first, in order.
                        pending.state = PublishState::Refused;
                        let until = tokio::time::Instant::now() + wait;
                        match state.publish_hold {
                            Some(held) => state.publish_hold = Some(held.max(until)),
                            None => {
                                state.publish_hold = Some(until);
                                self.retry_when_told(state.connection, wait);
                            }
                        }
                        return None;
                    }
                    if code.is_temporary() {
                        // One retry for every publish refused meanwhile, re-sent in the
                        // order of the calls: a burst refused together (the broker
                        // down) is stored in order when it comes back.
                        pending.state = PublishState::Refused;
                        if !state.retry_scheduled {
                            state.retry_scheduled = true;
                            state.publish_failures += 1;
                            self.retry_later(Retry::Publishes, state.publish_failures);
                        }
                        return None;
                    }
                    let pending = state.publishes.remove(&id)?;
                    let _ = pending.answer.send(Err(Error::Rejected(error)));
                    return None;
                }
                let topic = state.topics.iter().find_map(|(topic, t)| {
                    matches!(&t.sub, Sub::Sent { id: sent, .. } if *sent == id)
                        .then(|| topic.clone())
                })?;
                state.in_flight = state.in_flight.saturating_sub(1);
                if code.is_temporary() {
                    state.retries += 1;
                    let retry = state.retries;
                    let entry = state.topics.get_mut(&topic)?;
                    entry.sub = Sub::Backoff(retry);
                    entry.failures += 1;
                    let failures = entry.failures;
                    self.retry_later(Retry::Subscribe(topic, retry), failures);
                    return None;
                }
                state.topics.remove(&topic);
                Some(Action::Error(Error::Rejected(error)))
            }
            Reply::Connected { id, expires, .. } => {
                if state.connect_id != Some(id) {
                    return None;
                }
                state.connect_id = None;
                state.authenticated = true;
                self.refresh_before(state.connection, expires);
                None
            }
            Reply::Refreshed { id, expires } => {
                if state.refresh_id != Some(id) {
                    return None;
                }
                state.refresh_id = None;
                self.refresh_before(state.connection, expires);
                None
            }
            Reply::Unsubscribed { id: None, topic } => {
                // Taken away by the server: forgotten, not subscribed again.
                let removed = state.topics.remove(&topic)?;
                match removed.sub {
                    Sub::Waiting => state.subscribes.retain(|t| *t != topic),
                    Sub::Sent { .. } => state.in_flight = state.in_flight.saturating_sub(1),
                    Sub::Backoff(_) | Sub::Active => {}
                }
                Some(Action::Unsubscribed(topic))
            }
            Reply::Unsubscribed { .. } => None,
        }
    }

    /// Write what waits, in order, while the connection takes it: publishes and
    /// unsubscribes, then subscribes while fewer than [`SUBSCRIBE_WINDOW`] are
    /// unanswered. A request the send buffer refuses stays first in line until it has
    /// drained enough for it.
    fn pump(&self, state: &mut State) {
        if !state.open || state.blocked || !state.authenticated {
            return;
        }
        while let Some(out) = state.outbox.front() {
            let request = match out {
                // Rate limited: the publishes wait for the retry.
                Out::Publish(_) if state.publish_hold.is_some() => break,
                Out::Publish(id) => match state.publishes.get(id) {
                    Some(pending) if pending.state == PublishState::Unsent => Request::Publish {
                        id: *id,
                        topic: pending.topic.clone(),
                        data: pending.data.clone(),
                        key: Some(pending.key.clone()),
                    },
                    // Answered, or refused and waiting for its retry, meanwhile.
                    _ => {
                        state.outbox.pop_front();
                        continue;
                    }
                },
                Out::Unsubscribe(topic) => Request::Unsubscribe {
                    id: state.next_id,
                    topic: topic.clone(),
                },
            };
            if !self.write(state, &request) {
                return;
            }
            match state.outbox.pop_front() {
                Some(Out::Publish(id)) => {
                    if let Some(pending) = state.publishes.get_mut(&id) {
                        pending.state = PublishState::Sent;
                    }
                }
                _ => state.next_id += 1,
            }
        }
        while state.in_flight < SUBSCRIBE_WINDOW {
            let Some(topic) = state.subscribes.front() else {
                break;
            };
            let since = match state.topics.get(topic) {
                Some(entry) if entry.sub == Sub::Waiting => entry.kept.clone(),
                _ => {
                    state.subscribes.pop_front();
                    continue;
                }
            };
            let request = Request::Subscribe {
                id: state.next_id,
                topic: topic.clone(),
                since: since.clone(),
            };
            if !self.write(state, &request) {
                return;
            }
            let id = next_id(state);
            if let Some(topic) = state.subscribes.pop_front()
                && let Some(entry) = state.topics.get_mut(&topic)
            {
                entry.sub = Sub::Sent { id, since };
                state.in_flight += 1;
            }
        }
    }

    /// Write `request` on the open connection: true if it was queued. Refused for want
    /// of room, the pump waits for the buffer to drain; refused because the connection
    /// is going, the next open sends it again; refused otherwise, the connection is
    /// ended (1011), and the next one sends it again.
    fn write(&self, state: &mut State, request: &Request) -> bool {
        let Some(ws) = self.inner.ws.open_socket() else {
            return false;
        };
        match ws.send(request.to_json()) {
            Ok(()) => true,
            Err(Error::InvalidState) => false,
            Err(Error::BufferFull { message, limit, .. }) => {
                // Room for this request, and then some: half the buffer, or all of it
                // for a request larger than that (alone on an empty buffer it fits).
                let room = limit.saturating_sub(message).min(limit / 2);
                self.wait_for_room(state, &ws, room);
                false
            }
            Err(error) => {
                // Not reported to the error handler here: it could call back into the
                // client, whose state is locked. The close event tells.
                tracing::warn!(%error, "wsevents.v1: a request could not be sent; reconnecting");
                self.inner.ws.drop_connection(
                    wsevents_proto::CloseCode::INTERNAL_ERROR,
                    "a request could not be sent",
                );
                false
            }
        }
    }

    /// Stop the pump until `ws` has at most `room` bytes unsent, then go on (if the
    /// connection is still the same one).
    fn wait_for_room(&self, state: &mut State, ws: &crate::WebSocket, room: usize) {
        state.blocked = true;
        let connection = state.connection;
        let drained = ws.buffered_at_most(room);
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let drained = drained.await;
            with(&weak, |c| {
                let mut state = c.state();
                if state.connection != connection || !state.open {
                    return;
                }
                state.blocked = false;
                if drained.is_ok() {
                    c.pump(&mut state);
                }
            });
        });
    }

    /// After a temporary error: try again after a full-jitter backoff, if still
    /// wanted and connected (a reconnect meanwhile re-sends it anyway).
    fn retry_later(&self, what: Retry, failures: u32) {
        let delay = Reconnect::new()
            .delay(failures.saturating_sub(1), random::unit())
            .max(std::time::Duration::from_millis(50));
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            with(&weak, |c| {
                let mut state = c.state();
                let state = &mut *state;
                if !state.open {
                    // The next open re-sends everything pending anyway.
                    state.retry_scheduled = false;
                    return;
                }
                match what {
                    Retry::Publishes => {
                        state.retry_scheduled = false;
                        for (id, pending) in state.publishes.iter_mut() {
                            if pending.state == PublishState::Refused {
                                pending.state = PublishState::Unsent;
                                state.outbox.push_back(Out::Publish(*id));
                            }
                        }
                    }
                    Retry::Subscribe(topic, retry) => {
                        let due = state
                            .topics
                            .get(&topic)
                            .is_some_and(|t| t.sub == Sub::Backoff(retry));
                        if due {
                            resubscribe(state, &topic);
                        }
                    }
                }
                c.pump(state);
            });
        });
    }

    /// After `rate_limited`: once the latest delay told on `connection` is over, send
    /// the refused publishes again, first and in order, then the rest (if the
    /// connection is still the same: a new one re-sends everything anyway).
    fn retry_when_told(&self, connection: u64, wait: std::time::Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut wait = wait;
            loop {
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let client = Client { inner };
                let mut state = client.state();
                let state = &mut *state;
                if state.connection != connection || !state.open {
                    return;
                }
                let Some(until) = state.publish_hold else {
                    return;
                };
                let now = tokio::time::Instant::now();
                if until > now {
                    // Told a later time meanwhile.
                    wait = until - now;
                    continue;
                }
                state.publish_hold = None;
                let refused: Vec<u64> = state
                    .publishes
                    .iter()
                    .filter(|(_, p)| p.state == PublishState::Refused)
                    .map(|(id, _)| *id)
                    .collect();
                for id in refused.into_iter().rev() {
                    if let Some(pending) = state.publishes.get_mut(&id) {
                        pending.state = PublishState::Unsent;
                    }
                    state.outbox.push_front(Out::Publish(id));
                }
                client.pump(state);
                return;
            }
        });
    }

    fn report(&self, error: Error) {
        if let Some(f) = self.handlers().error.clone() {
            f(&ErrorEvent::new(error));
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn handlers(&self) -> MutexGuard<'_, Handlers> {
        lock(&self.inner.handlers)
    }
}

/// Subscribe `topic` again on the open connection: from its kept position, its
/// publications dropped until the answer. One in flight already is sent again at once
/// (its answer is the new one's: the window does not change); otherwise it waits for
/// its turn.
fn resubscribe(state: &mut State, topic: &str) {
    let Some(entry) = state.topics.get_mut(topic) else {
        return;
    };
    match entry.sub {
        Sub::Waiting => {}
        Sub::Sent { .. } => {
            // Replaced: its answer, when it comes, is ignored; the window keeps its place
            // for the new one, sent first.
            entry.sub = Sub::Waiting;
            state.in_flight = state.in_flight.saturating_sub(1);
            state.subscribes.push_front(topic.to_owned());
        }
        Sub::Backoff(_) | Sub::Active => {
            entry.sub = Sub::Waiting;
            state.subscribes.push_back(topic.to_owned());
        }
    }
}

/// What a retry after a temporary error re-sends.
enum Retry {
    /// Every publish refused since the last retry, in the order of the calls.
    Publishes,
    /// The topic, if its subscribe is still waiting for this retry.
    Subscribe(String, u64),
}

/// The answer to a [`Client::publish`]: the position the publication was stored at.
#[derive(Debug)]
#[must_use = "a publish is sent whether or not its answer is awaited; await it to know it was stored"]
pub struct Publishing(oneshot::Receiver<Result<Position>>);

impl Future for Publishing {
    type Output = Result<Position>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Position>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(Error::Closed)))
    }
}

fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(Error::Syntax(format!(
            "a topic is 1 to {MAX_TOPIC_LEN} bytes, not {}",
            topic.len()
        )));
    }
    Ok(())
}

fn next_id(state: &mut State) -> u64 {
    let id = state.next_id;
    state.next_id += 1;
    id
}

fn with(weak: &Weak<Shared>, f: impl FnOnce(&Client)) {
    if let Some(inner) = weak.upgrade() {
        f(&Client { inner });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position::new(epoch, offset).unwrap()
    }

    fn client() -> Client {
        Client::new("ws://127.0.0.1:9/").unwrap()
    }

    fn publication(topic: &str, position: Position) -> Reply {
        Reply::Pub {
            topic: topic.into(),
            publication: crate::hub::Publication {
                position,
                message: Message::text("x"),
            },
        }
    }

    /// What `apply` made of a reply: `pub:N`, `sub:<recovered>`, or `-`.
    fn apply(c: &Client, reply: Reply) -> String {
        let mut state = c.state();
        match c.apply(&mut state, reply) {
            Some(Action::Publication(p)) => format!("pub:{}", p.position.offset()),
            Some(Action::Subscribed(s)) => format!("sub:{}", s.recovered),
            Some(Action::Unsubscribed(topic)) => format!("unsubscribed:{topic}"),
            Some(Action::Error(e)) => format!("error:{e}"),
            None => "-".into(),
        }
    }

    /// What the pump does on an open connection, without one: `topic`'s subscribe
    /// sent (its id and since).
    fn send_subscribe(c: &Client, topic: &str) -> (u64, Option<Position>) {
        let mut state = c.state();
        let id = next_id(&mut state);
        state.in_flight += 1;
        let entry = state.topics.get_mut(topic).unwrap();
        let since = entry.kept.clone();
        entry.sub = Sub::Sent {
            id,
            since: since.clone(),
        };
        (id, since)
    }

    fn sub(c: &Client, topic: &str) -> Sub {
        c.state().topics[topic].sub.clone()
    }

    #[test]
    fn a_client_keeps_positions_by_the_rules() {
        let c = client();
        c.subscribe("t", Some(at("e1", 4))).unwrap();
        let (id, since) = send_subscribe(&c, "t");
        assert_eq!(since, Some(at("e1", 4)));
        // Publications before the answer are dropped.
        assert_eq!(apply(&c, publication("t", at("e1", 5))), "-");
        // Recovered: kept stays at since; the recovered ones advance it.
        let answer = Reply::Subscribed {
            id,
            topic: "t".into(),
            recovered: true,
            position: at("e1", 6),
        };
        assert_eq!(apply(&c, answer), "sub:true");
        assert_eq!(c.positions()["t"], at("e1", 4));
        assert_eq!(apply(&c, publication("t", at("e1", 5))), "pub:5");
        assert_eq!(apply(&c, publication("t", at("e1", 5))), "-"); // a repeat
        assert_eq!(apply(&c, publication("t", at("e1", 6))), "pub:6");
        assert_eq!(c.positions()["t"], at("e1", 6));
        // A hole: resubscribe from the kept position, drop until the answer.
        assert_eq!(apply(&c, publication("t", at("e1", 8))), "-");
        assert_eq!(sub(&c, "t"), Sub::Waiting);
        assert_eq!(c.state().subscribes, ["t"]);
        assert_eq!(apply(&c, publication("t", at("e1", 9))), "-");
        let (id, since) = send_subscribe(&c, "t");
        assert_eq!(since, Some(at("e1", 6)));
        assert_eq!(apply(&c, publication("t", at("e1", 9))), "-");
        // Not recovered: the answer's position is kept.
        let answer = Reply::Subscribed {
            id,
            topic: "t".into(),
            recovered: false,
            position: at("e2", 3),
        };
        assert_eq!(apply(&c, answer), "sub:false");
        assert_eq!(c.positions()["t"], at("e2", 3));
        // Another epoch: resubscribe.
        assert_eq!(apply(&c, publication("t", at("e3", 1))), "-");
        assert_eq!(sub(&c, "t"), Sub::Waiting);
        assert_eq!(c.state().in_flight, 0, "every answer freed its place");
    }

    #[test]
    fn an_answer_to_a_replaced_subscribe_is_ignored() {
        let c = client();
        c.subscribe("t", None).unwrap();
        let (first, _) = send_subscribe(&c, "t");
        resubscribe(&mut c.state(), "t");
        assert_eq!(c.state().in_flight, 0, "the replaced one is not counted");
        send_subscribe(&c, "t");
        let stale = Reply::Subscribed {
            id: first,
            topic: "t".into(),
            recovered: false,
            position: at("e1", 1),
        };
        assert_eq!(apply(&c, stale), "-");
        assert!(matches!(sub(&c, "t"), Sub::Sent { id, .. } if id != first));
        assert_eq!(c.state().in_flight, 1);
    }

    #[test]
    fn publishes_are_bounded_and_answered_by_id() {
        let c = Client::with_options(
            ClientBuilder::new("ws://127.0.0.1:9/").unwrap(),
            Reconnect::new().max_queued(2),
        )
        .unwrap();
        let mut first = c.publish("t", "a");
        let _second = c.publish("t", "b");
        let mut third = c.publish("t", "c");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut third).poll(&mut cx),
            Poll::Ready(Err(Error::QueueFull { limit: 2 }))
        ));
        let keys: Vec<String> = c
            .state()
            .publishes
            .values()
            .map(|p| p.key.clone())
            .collect();
        assert_ne!(keys[0], keys[1]);
        let answer = Reply::Published {
            id: 1,
            topic: "t".into(),
            position: at("e1", 1),
        };
        assert_eq!(apply(&c, answer), "-");
        match Pin::new(&mut first).poll(&mut cx) {
            Poll::Ready(Ok(p)) => assert_eq!(p, at("e1", 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.pending(), 1);
    }
}
