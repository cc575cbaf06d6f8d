//! The client side of wsevents.v1, on a [`ReconnectingWebSocket`]: subscriptions that
//! survive reconnects and recover what was missed, and publishes that are neither
//! lost nor stored twice.
//!
//! The state is a position kept per topic and a table of publishes not yet answered;
//! the socket's handlers apply the protocol's rules (docs/protocol.md, "What a client
//! keeps") to them:
//!
//! ```text
//!  open ──► subscribe(topic, since = kept) for every topic; re-send every pending publish
//!  subscribed ──► kept = since (recovered) or the answer's position (not recovered)
//!  pub ──► offset = kept+1: handle, kept = it │ ≤ kept: repeat, drop │ else: resubscribe
//!  published ──► the publish's future resolves      error(temporary) ──► retry later
//!  close ──► nothing is in flight any more: the next open starts again from the top
//! ```
//!
//! A publish carries a key made once for it (random per client, then a counter) and
//! keeps it across every re-send, so the server stores it once however often it
//! arrives (within its history window). Requests go out only while a connection is
//! open; what waits for one is the pending table, bounded by
//! [`Reconnect::max_queued`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use wsevents_proto::Message;

use super::wire::{MAX_TOPIC_LEN, PROTOCOL, Reply, Request, WireError};
use crate::api::data::{Data, IntoMessage};
use crate::api::events::ErrorEvent;
use crate::api::reconnecting::{
    OpenEvent, Reconnect, ReconnectCloseEvent, ReconnectingWebSocket, random_u64, unit_random,
};
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

#[derive(Default, Clone)]
struct Handlers {
    publication: Option<PublicationFn>,
    subscribed: Option<SubscribedFn>,
    open: Option<OpenFn>,
    close: Option<CloseFn>,
    error: Option<ErrorFn>,
}

/// One subscribed topic.
#[derive(Debug, Default)]
struct Topic {
    /// The position of the last publication handled (or the subscription's start).
    kept: Option<Position>,
    /// The subscribe in flight, and the `since` it carried: the topic's publications
    /// are dropped until its answer.
    awaiting: Option<(u64, Option<Position>)>,
    /// Temporary failures of its subscribe in a row (the retry's backoff).
    failures: u32,
}

/// A publish not answered yet.
struct Pending {
    topic: String,
    data: Message,
    key: String,
    /// Refused with a temporary error: waits for the next retry (or open).
    refused: bool,
    answer: oneshot::Sender<Result<Position>>,
}

struct State {
    /// Request ids, from 1.
    next_id: u64,
    /// Keys: this client's random prefix, then a counter.
    key_prefix: String,
    next_key: u64,
    /// A connection is open and every topic and pending publish was sent on it.
    open: bool,
    topics: BTreeMap<String, Topic>,
    /// By request id, so re-sends go in the order of the calls.
    publishes: BTreeMap<u64, Pending>,
    /// The bound on `publishes`.
    max_pending: usize,
    /// Temporary publish errors in a row (the retry's backoff); reset by an answer.
    publish_failures: u32,
    /// A retry of the refused publishes is scheduled.
    retry_scheduled: bool,
}

struct Shared {
    ws: ReconnectingWebSocket,
    state: Mutex<State>,
    handlers: Mutex<Handlers>,
}

/// What a handler found to do once the lock is released.
enum Action {
    Publication(PublicationEvent),
    Subscribed(SubscribedEvent),
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
///   temporary (`unavailable`) error, until answered.
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
        let ws = builder.protocols(&[PROTOCOL])?.reconnect(options);
        let max_pending = ws.max_queued();
        let inner = Arc::new(Shared {
            ws: ws.clone(),
            state: Mutex::new(State {
                next_id: 1,
                key_prefix: format!("{:016x}", random_u64()),
                next_key: 0,
                open: false,
                topics: BTreeMap::new(),
                publishes: BTreeMap::new(),
                max_pending,
                publish_failures: 0,
                retry_scheduled: false,
            }),
            handlers: Mutex::new(Handlers::default()),
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

    /// The connections' errors, and the server's refusals of a subscription
    /// ([`Error::Rejected`]).
    pub fn on_error(&self, f: impl Fn(&ErrorEvent) + Send + Sync + 'static) {
        self.handlers().error = Some(Arc::new(f));
    }

    // ----- requests -----

    /// Subscribe to `topic`, from `since` when given (a position kept from an earlier
    /// run: what was published after it is recovered if the server still has it).
    /// Subscribing again to a topic replaces its kept position when `since` is given.
    /// [`Error::Syntax`] for a name that is empty or over 256 bytes.
    pub fn subscribe(&self, topic: &str, since: Option<Position>) -> Result<()> {
        check_topic(topic)?;
        let mut state = self.state();
        let entry = state.topics.entry(topic.to_owned()).or_default();
        if since.is_some() {
            entry.kept = since;
        }
        if state.open {
            self.send_subscribe(&mut state, topic);
        }
        Ok(())
    }

    /// Stop receiving `topic` and forget its position.
    pub fn unsubscribe(&self, topic: &str) {
        let mut state = self.state();
        if state.topics.remove(topic).is_some() && state.open {
            let id = next_id(&mut state);
            let request = Request::Unsubscribe {
                id,
                topic: topic.to_owned(),
            };
            let _ = self.inner.ws.send_if_open(request.to_json());
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
            refused: false,
            answer,
        };
        if state.open {
            self.send_publish(id, &pending);
        }
        state.publishes.insert(id, pending);
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

    /// A connection opened: subscribe every topic from its kept position, re-send
    /// every pending publish (with its key), in that order.
    fn opened(&self, e: &OpenEvent) {
        let protocol = self.inner.ws.protocol();
        if protocol != PROTOCOL {
            self.report(Error::InvalidAccess(format!(
                "the server did not select {PROTOCOL} (it chose {protocol:?})"
            )));
            let _ = self.inner.ws.close_with(1000, "wsevents.v1 required");
            return;
        }
        {
            let mut state = self.state();
            state.open = true;
            let topics: Vec<String> = state.topics.keys().cloned().collect();
            for topic in topics {
                self.send_subscribe(&mut state, &topic);
            }
            for pending in state.publishes.values_mut() {
                pending.refused = false;
            }
            for (id, pending) in &state.publishes {
                self.send_publish(*id, pending);
            }
        }
        if let Some(f) = self.handlers().open.clone() {
            f(e);
        }
    }

    /// A connection ended: nothing is in flight on it any more. For good: the
    /// pending publishes fail.
    fn closed(&self, e: &ReconnectCloseEvent) {
        let failed = {
            let mut state = self.state();
            state.open = false;
            for topic in state.topics.values_mut() {
                topic.awaiting = None;
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
            self.apply(&mut state, reply)
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
            Some(Action::Error(error)) => self.report(error),
            None => {}
        }
    }

    /// The protocol's rules for one frame from the server.
    fn apply(&self, state: &mut State, reply: Reply) -> Option<Action> {
        match reply {
            Reply::Subscribed {
                id,
                topic,
                recovered,
                position,
            } => {
                let entry = state.topics.get_mut(&topic)?;
                let (awaited, since) = entry.awaiting.clone()?;
                if awaited != id {
                    return None; // an answer to a subscribe replaced since
                }
                entry.awaiting = None;
                entry.failures = 0;
                entry.kept = match (recovered, since) {
                    // The recovered publications advance it one by one.
                    (true, Some(since)) => Some(since),
                    _ => Some(position.clone()),
                };
                Some(Action::Subscribed(SubscribedEvent {
                    topic,
                    recovered,
                    position,
                }))
            }
            Reply::Pub { topic, publication } => {
                let entry = state.topics.get_mut(&topic)?;
                if entry.awaiting.is_some() {
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
                    self.send_subscribe(state, &topic);
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
            Reply::Error { id, code, message } => {
                let id = id?;
                let error = WireError {
                    id: Some(id),
                    code,
                    message,
                };
                if state.publishes.contains_key(&id) {
                    if code.is_temporary() {
                        // One retry for every publish refused meanwhile, re-sent in the
                        // order of the calls: a burst refused together (the broker
                        // down) is stored in order when it comes back.
                        state.publishes.get_mut(&id)?.refused = true;
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
                    t.awaiting
                        .as_ref()
                        .is_some_and(|(awaited, _)| *awaited == id)
                        .then(|| topic.clone())
                })?;
                if code.is_temporary() {
                    let entry = state.topics.get_mut(&topic)?;
                    entry.awaiting = None;
                    entry.failures += 1;
                    self.retry_later(Retry::Subscribe(topic), entry.failures);
                    return None;
                }
                state.topics.remove(&topic);
                Some(Action::Error(Error::Rejected(error)))
            }
            Reply::Unsubscribed { .. } => None,
        }
    }

    /// Send `topic`'s subscribe from its kept position, and wait for its answer.
    fn send_subscribe(&self, state: &mut State, topic: &str) {
        let id = next_id(state);
        let Some(entry) = state.topics.get_mut(topic) else {
            return;
        };
        let since = entry.kept.clone();
        entry.awaiting = Some((id, since.clone()));
        let request = Request::Subscribe {
            id,
            topic: topic.to_owned(),
            since,
        };
        // Refused only when the connection is going: the next open sends it again.
        let _ = self.inner.ws.send_if_open(request.to_json());
    }

    fn send_publish(&self, id: u64, pending: &Pending) {
        let request = Request::Publish {
            id,
            topic: pending.topic.clone(),
            data: pending.data.clone(),
            key: Some(pending.key.clone()),
        };
        // Refused only when the connection is going (or gone: then not queued behind
        // the offline queue, which could overtake older publishes): the next open
        // sends it again, after the older ones.
        let _ = self.inner.ws.send_if_open(request.to_json());
    }

    /// After a temporary error: try again after a full-jitter backoff, if still
    /// wanted and connected (a reconnect meanwhile re-sends it anyway).
    fn retry_later(&self, what: Retry, failures: u32) {
        let delay = Reconnect::new()
            .delay(failures.saturating_sub(1), unit_random())
            .max(std::time::Duration::from_millis(50));
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            with(&weak, |c| {
                let mut state = c.state();
                if !state.open {
                    // The next open re-sends everything pending anyway.
                    state.retry_scheduled = false;
                    return;
                }
                match what {
                    Retry::Publishes => {
                        state.retry_scheduled = false;
                        for (id, pending) in state.publishes.iter_mut() {
                            if std::mem::take(&mut pending.refused) {
                                c.send_publish(*id, pending);
                            }
                        }
                    }
                    Retry::Subscribe(topic) => {
                        let waiting = state
                            .topics
                            .get(&topic)
                            .is_some_and(|t| t.awaiting.is_none());
                        if waiting {
                            c.send_subscribe(&mut state, &topic);
                        }
                    }
                }
            });
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

/// What a retry after a temporary error re-sends.
enum Retry {
    /// Every publish refused since the last retry, in the order of the calls.
    Publishes,
    Subscribe(String),
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
            Some(Action::Error(e)) => format!("error:{e}"),
            None => "-".into(),
        }
    }

    fn awaiting(c: &Client, topic: &str) -> Option<(u64, Option<Position>)> {
        c.state().topics.get(topic)?.awaiting.clone()
    }

    #[test]
    fn a_client_keeps_positions_by_the_rules() {
        let c = client();
        c.subscribe("t", Some(at("e1", 4))).unwrap();
        {
            let mut state = c.state();
            c.send_subscribe(&mut state, "t");
        }
        let (id, since) = awaiting(&c, "t").unwrap();
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
        let (id, since) = awaiting(&c, "t").unwrap();
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
        assert!(awaiting(&c, "t").is_some());
    }

    #[test]
    fn an_answer_to_a_replaced_subscribe_is_ignored() {
        let c = client();
        c.subscribe("t", None).unwrap();
        let first = {
            let mut state = c.state();
            c.send_subscribe(&mut state, "t");
            let first = state.topics["t"].awaiting.clone().unwrap().0;
            c.send_subscribe(&mut state, "t");
            first
        };
        let stale = Reply::Subscribed {
            id: first,
            topic: "t".into(),
            recovered: false,
            position: at("e1", 1),
        };
        assert_eq!(apply(&c, stale), "-");
        assert!(awaiting(&c, "t").is_some());
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
