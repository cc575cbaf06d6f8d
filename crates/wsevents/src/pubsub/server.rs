//! The server side of wsevents.v1: requests from one socket, in order, onto the hub.
//!
//! The socket's message handler never waits: it parses each request, answers what is
//! wrong at once, hands publishes to the hub as they arrive (which fixes their order:
//! the hub stores them in the order it is given them) and passes the rest to the
//! connection's one task, which does what takes time:
//!
//! ```text
//!  on_message ─┬─ publish ─► hub.publish_confirmed ─► its store ─┐
//!              └─ subscribe / unsubscribe ─► waiting (bounded) ──┤
//!                                                                ▼
//!  the connection's task: answers each store when it completes (any number at
//!  once), and takes the subscriptions one after the other, each once the socket's
//!  unsent bytes are within the hub's backlog bound
//! ```
//!
//! So a connection's `subscribe` and `unsubscribe` take effect in the order it sent
//! them, even when a subscription waits for its history (Redis), and each
//! subscription is paced by what the client reads: the hub queues an answer and its
//! recovery only on a socket within its bound (else it closes it as a slow
//! subscriber), so a client that resubscribes 1,024 topics at once gets them one by
//! one as it reads, rather than being closed.
//!
//! **Bounds, per connection** (docs/protocol.md, "Limits"): `max(max_topics, 256)`
//! subscription requests waiting for the one before, and [`MAX_PENDING_PUBLISHES`]
//! publishes handed to the hub and not yet answered; past either, the request is
//! answered `too_many_requests`, which is temporary (the client retries after a
//! delay, a publish with its key). Answers go out with the socket's `send`, bounded by
//! its [`Backpressure`](crate::Backpressure) (16 MiB by default): an answer that does
//! not fit is never dropped, the connection is closed instead ([`SLOW_CLOSE_CODE`],
//! [`SLOW_CLOSE_REASON`]), and its client reconnects and recovers. The task holds the
//! socket weakly: a closed socket ends it.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use wsevents_proto::{CloseCode, Message};

use super::wire::{
    ErrorCode, Reply, Request, V1Framing, WireError, max_publication_in, publish_frame_len,
};
use crate::api::data::Data;
use crate::api::websocket::{WeakWebSocket, WebSocket};
use crate::error::Error;
use crate::hub::{Framing, Hub, Pending, Position};

/// The default most topics one connection may subscribe to: 1,024.
pub const DEFAULT_MAX_TOPICS: usize = 1024;

/// The default largest publication, in bytes of data: 8 MiB. Its longest `publish`
/// frame (binary, as base64, with the envelope at its longest:
/// [`publish_frame_len`]) is 10.7 MiB, within the default 16 MiB frame limit
/// ([`Config::max_frame_size`](crate::Config)) with a third of it to spare, so a
/// publication one byte past it is answered `too_large` rather than failing the
/// connection with 1009.
pub const DEFAULT_MAX_PUBLICATION: usize = 8 << 20;

/// The most publishes of one connection handed to the hub and not yet answered (on
/// Redis, waiting for its round trip; in process a publish is stored, and answered, at
/// once); past it a publish is answered `too_many_requests` (temporary: nothing was
/// done). A publish counts until its answer is sent, not until it is delivered: on
/// Redis a publication comes back on the channel, and reaches its subscribers, before
/// the pipeline of stores it went in is answered, so a client bounds its publishes by
/// the answers. `wsevents pub` keeps at most 1,024 unanswered
/// (`--pipeline`), the Rust client and wsevents.js [`Reconnect::max_queued`] (1,024
/// by default).
///
/// [`Reconnect::max_queued`]: crate::Reconnect::max_queued
pub const MAX_PENDING_PUBLISHES: usize = 1024;

/// The fewest subscription requests of one connection that may wait for the one
/// before (more when [`PubsubServer::max_topics`] is larger: a client that
/// resubscribes every topic it may have at once is never refused for it).
pub const MIN_WAITING_SUBSCRIPTIONS: usize = 256;

/// The code a connection that does not read its answers is closed with: 1008, policy
/// violation, as the hub closes a slow subscriber ([`crate::hub::SLOW_CLOSE_CODE`]):
/// the peer broke the rule that it reads what it asks for (1013, try again later,
/// would blame the server). Clients reconnect after it and recover.
pub const SLOW_CLOSE_CODE: CloseCode = crate::hub::SLOW_CLOSE_CODE;

/// The reason a connection that does not read its answers is closed with.
pub const SLOW_CLOSE_REASON: &str = "slow client";

/// Serves wsevents.v1 on server sockets (see the [module](super)); a cheap clone.
///
/// ```
/// use wsevents::hub::{History, Hub};
/// use wsevents::pubsub::PubsubServer;
/// let pubsub = PubsubServer::new(Hub::builder().history(History::default()).build())
///     .max_topics(64)
///     .max_publication(64 * 1024);
/// # let _ = pubsub;
/// ```
#[derive(Clone)]
pub struct PubsubServer {
    hub: Hub,
    framing: Arc<dyn Framing>,
    max_topics: usize,
    max_publication: usize,
    max_backlog: usize,
    /// A socket whose frame limit cannot carry the largest publication was warned
    /// about (once per server: it is a configuration, not a connection, matter).
    warned: Arc<AtomicBool>,
}

impl std::fmt::Debug for PubsubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubServer")
            .field("max_topics", &self.max_topics)
            .field("max_publication", &self.max_publication)
            .field("max_backlog", &self.max_backlog)
            .finish_non_exhaustive()
    }
}

impl PubsubServer {
    /// Serve on `hub`, which should keep history ([`HubBuilder::history`]; without
    /// it every `subscribe` is answered `bad_request`).
    ///
    /// [`HubBuilder::history`]: crate::hub::HubBuilder::history
    pub fn new(hub: Hub) -> PubsubServer {
        PubsubServer {
            framing: Arc::new(V1Framing),
            max_topics: DEFAULT_MAX_TOPICS,
            max_publication: DEFAULT_MAX_PUBLICATION,
            max_backlog: hub.max_backlog(),
            warned: Arc::new(AtomicBool::new(false)),
            hub,
        }
    }

    /// The most topics one connection may subscribe to ([`DEFAULT_MAX_TOPICS`]);
    /// past it `subscribe` is answered `too_many_topics`. Up to this many
    /// subscription requests may wait at once (at least
    /// [`MIN_WAITING_SUBSCRIPTIONS`]).
    pub fn max_topics(mut self, n: usize) -> Self {
        self.max_topics = n;
        self
    }

    /// The largest publication accepted, in bytes of data (text as UTF-8, binary
    /// decoded; [`DEFAULT_MAX_PUBLICATION`]); past it `publish` is answered
    /// `too_large` and the connection goes on.
    ///
    /// The rule that makes `too_large` reachable: a socket's frame limit (the smaller
    /// of [`Config`](crate::Config)'s `max_frame_size` and `max_message_size`) must
    /// hold [`publish_frame_len`]`(max_publication)`, the longest frame of a
    /// publication at the limit. A socket whose limit is smaller is served with the
    /// largest publication its frames can carry instead
    /// ([`max_publication_in`](super::wire::max_publication_in)), and a warning is
    /// logged (once); otherwise a publication between the two would fail its
    /// connection with 1009 instead of being answered.
    pub fn max_publication(mut self, bytes: usize) -> Self {
        self.max_publication = bytes;
        self
    }

    /// The most unsent bytes a socket may have when one of its subscriptions is made:
    /// each subscription waits until the socket is within it. By default the hub's
    /// [`max_backlog`](crate::hub::HubBuilder::max_backlog), which is right: the hub
    /// queues a subscription's answer and its recovery only within that bound, and
    /// closes the subscriber as slow past it. A smaller value paces subscriptions
    /// more; a larger one lets the hub close subscribers that would have waited.
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes;
        self
    }

    /// The hub it serves on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Speak wsevents.v1 on `ws` (a server socket whose subprotocol is
    /// [`PROTOCOL`](super::wire::PROTOCOL)): its messages are requests from now on.
    /// Drive the socket as usual (`ws.run().await`); it leaves its topics when it
    /// closes.
    pub fn serve(&self, ws: &WebSocket) {
        let waiting_bound = self.max_topics.clamp(
            MIN_WAITING_SUBSCRIPTIONS,
            tokio::sync::Semaphore::MAX_PERMITS,
        );
        let (requests, waiting) = mpsc::channel(waiting_bound);
        let (stores, stored) = mpsc::unbounded_channel();
        let publishing = Arc::new(AtomicUsize::new(0));
        let connection = Connection {
            server: self.clone(),
            ws: ws.downgrade(),
            max_publication: self.publication_limit(ws),
            publishing: publishing.clone(),
        };
        tokio::spawn(run(connection.clone(), waiting, stored));
        ws.on_message(move |e| {
            let Some(ws) = connection.ws.upgrade() else {
                return;
            };
            let request = match &e.data {
                Data::Text(text) => Request::parse(text.as_str()),
                _ => Err(WireError {
                    id: None,
                    code: ErrorCode::BadRequest,
                    message: "wsevents.v1 requests are text frames".into(),
                }),
            };
            match request {
                Ok(Request::Publish {
                    id,
                    topic,
                    data,
                    key,
                }) => {
                    if let Some(store) = connection.publish(&ws, id, topic, data, key) {
                        // Refused only once the task is gone, with the socket.
                        let _ = stores.send(store);
                    }
                }
                Ok(request) => match requests.try_send(request) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    Err(mpsc::error::TrySendError::Full(request)) => {
                        let message = "too many subscriptions waiting: retry later";
                        answer(
                            &ws,
                            error(request_id(&request), ErrorCode::TooManyRequests, message),
                        );
                    }
                },
                Err(e) => answer(&ws, error(e.id, e.code, &e.message)),
            }
        });
    }

    /// The largest publication `ws`'s frames can carry, within `max_publication`.
    fn publication_limit(&self, ws: &WebSocket) -> usize {
        let Some(frame) = ws.max_incoming_message() else {
            return self.max_publication;
        };
        if publish_frame_len(self.max_publication) <= frame {
            return self.max_publication;
        }
        let fits = max_publication_in(frame);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_publication = self.max_publication,
                frame_limit = frame,
                served = fits,
                "wsevents.v1: a connection's frame limit cannot carry the largest publication \
                 (as base64 in its envelope); its publications are limited to what fits"
            );
        }
        fits
    }
}

/// One served connection: what its handler and its task share.
#[derive(Clone)]
struct Connection {
    server: PubsubServer,
    ws: WeakWebSocket,
    /// The server's `max_publication`, or less if this socket's frames are smaller.
    max_publication: usize,
    /// Publishes handed to the hub and not answered yet ([`MAX_PENDING_PUBLISHES`]).
    publishing: Arc<AtomicUsize>,
}

/// A publish handed to the hub and not stored yet: its id, topic and store.
struct Store {
    id: u64,
    topic: String,
    stored: Pending<Position>,
}

impl Connection {
    /// Check a publish and hand it to the hub, now, in the order the requests came;
    /// its store, to be answered when it completes (`None`: answered already, refused
    /// or stored at once).
    fn publish(
        &self,
        ws: &WebSocket,
        id: u64,
        topic: String,
        data: Message,
        key: Option<String>,
    ) -> Option<Store> {
        if data.payload().len() > self.max_publication {
            let message = format!("over {} bytes", self.max_publication);
            answer(ws, error(Some(id), ErrorCode::TooLarge, &message));
            return None;
        }
        if self.publishing.load(Ordering::Relaxed) >= MAX_PENDING_PUBLISHES {
            let message = format!("{MAX_PENDING_PUBLISHES} publishes waiting: retry later");
            answer(ws, error(Some(id), ErrorCode::TooManyRequests, &message));
            return None;
        }
        let mut stored = self
            .server
            .hub
            .publish_confirmed(&topic, data, key.as_deref());
        // Stored already (in process): answered now, in order, without the task.
        if let Some(result) = (&mut stored).now_or_never() {
            answer(ws, published(id, topic, result));
            return None;
        }
        self.publishing.fetch_add(1, Ordering::Relaxed);
        Some(Store { id, topic, stored })
    }
}

/// A subscription being made: the topic, and whether the socket is in it now.
type Subscribing = Pin<Box<dyn Future<Output = (String, bool)> + Send>>;

/// The connection's task: answers every store as it completes, and makes the
/// subscription requests one after the other. Ends when the socket is gone (its
/// handler, and the senders with it, are dropped at its close).
async fn run(
    connection: Connection,
    mut waiting: mpsc::Receiver<Request>,
    mut stores: mpsc::UnboundedReceiver<Store>,
) {
    let mut stored = FuturesUnordered::new();
    let mut subscribing: Option<Subscribing> = None;
    // The topics the socket is in (what `max_topics` counts): kept here rather than
    // asked of the hub, which would list them all for every subscription.
    let mut topics = HashSet::new();
    let (mut requests_open, mut stores_open) = (true, true);
    loop {
        tokio::select! {
            Some((id, topic, result)) = stored.next(), if !stored.is_empty() => {
                connection.publishing.fetch_sub(1, Ordering::Relaxed);
                let Some(ws) = connection.ws.upgrade() else { return };
                answer(&ws, published(id, topic, result));
            }
            (topic, joined) = async {
                match subscribing.as_mut() {
                    Some(subscription) => subscription.await,
                    None => std::future::pending().await,
                }
            }, if subscribing.is_some() => {
                subscribing = None;
                if joined {
                    topics.insert(topic);
                } else {
                    topics.remove(&topic);
                }
            }
            request = waiting.recv(), if subscribing.is_none() && requests_open => match request {
                Some(request) => {
                    let Some(ws) = connection.ws.upgrade() else { return };
                    subscribing = connection.take(&ws, request, &mut topics);
                }
                None => requests_open = false,
            },
            store = stores.recv(), if stores_open => match store {
                Some(Store { id, topic, stored: store }) => {
                    stored.push(async move { (id, topic, store.await) });
                }
                None => stores_open = false,
            },
            else => return,
        }
    }
}

impl Connection {
    /// Act on a subscription request: an unsubscribe or a refusal at once, a
    /// subscription as the future that makes it.
    fn take(
        &self,
        ws: &WebSocket,
        request: Request,
        topics: &mut HashSet<String>,
    ) -> Option<Subscribing> {
        match request {
            Request::Subscribe { id, topic, since } => {
                let max = self.server.max_topics;
                if topics.len() >= max && !topics.contains(&topic) {
                    let message = format!("at most {max} topics per connection");
                    answer(ws, error(Some(id), ErrorCode::TooManyTopics, &message));
                    return None;
                }
                Some(Box::pin(subscribe(self.clone(), id, topic, since)))
            }
            Request::Unsubscribe { id, topic } => {
                topics.remove(&topic);
                self.server.hub.unsubscribe(ws, &topic);
                answer(ws, Reply::Unsubscribed { id, topic });
                None
            }
            Request::Publish { .. } => None,
        }
    }
}

/// Subscribe the socket to `topic`, once its unsent bytes are within the hub's bound
/// (the hub queues the answer and the recovery then); the topic and whether the
/// socket is in it now.
async fn subscribe(
    connection: Connection,
    id: u64,
    topic: String,
    since: Option<Position>,
) -> (String, bool) {
    let server = &connection.server;
    let room = match connection.ws.upgrade() {
        Some(ws) => ws.buffered_at_most(server.max_backlog),
        None => return (topic, false),
    };
    // Closing meanwhile: nobody to answer.
    if room.await.is_err() {
        return (topic, false);
    }
    let Some(ws) = connection.ws.upgrade() else {
        return (topic, false);
    };
    let subscribed = server
        .hub
        .subscribe_from(&ws, &topic, since.as_ref(), server.framing.clone(), |s| {
            Reply::Subscribed {
                id,
                topic: topic.clone(),
                recovered: s.recovered,
                position: s.position.clone(),
            }
            .to_message()
        })
        .await;
    match subscribed {
        Ok(s) => {
            tracing::debug!(topic, recovered = s.recovered, count = s.count, position = %s.position, "subscribed");
            (topic, true)
        }
        // Closed meanwhile: nobody to answer.
        Err(Error::InvalidState) => (topic, false),
        Err(e) => {
            answer(&ws, hub_error(Some(id), &e));
            (topic, false)
        }
    }
}

/// The answer to a publish.
fn published(id: u64, topic: String, stored: Result<Position, Error>) -> Reply {
    match stored {
        Ok(position) => Reply::Published {
            id,
            topic,
            position,
        },
        Err(e) => hub_error(Some(id), &e),
    }
}

fn request_id(request: &Request) -> Option<u64> {
    match request {
        Request::Subscribe { id, .. }
        | Request::Unsubscribe { id, .. }
        | Request::Publish { id, .. } => Some(*id),
    }
}

fn hub_error(id: Option<u64>, error: &Error) -> Reply {
    let code = match error {
        Error::InvalidAccess(_) => ErrorCode::BadRequest,
        // The hub's own bound on what waits for the backend: nothing was done.
        Error::QueueFull { .. } => ErrorCode::TooManyRequests,
        _ => ErrorCode::Unavailable,
    };
    Reply::Error {
        id,
        code,
        message: error.to_string(),
    }
}

fn error(id: Option<u64>, code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        id,
        code,
        message: message.to_owned(),
    }
}

/// Queue `reply` on `ws`. An answer is never dropped: a socket that cannot take it
/// (its send buffer full: the client does not read) is closed with
/// [`SLOW_CLOSE_CODE`], and its client reconnects and recovers; a socket closing
/// already has nobody to tell.
fn answer(ws: &WebSocket, reply: Reply) {
    match ws.send(reply.to_message()) {
        Ok(()) | Err(Error::InvalidState) => {}
        Err(error) => {
            tracing::info!(%error, "closing a wsevents.v1 connection that does not read its answers");
            // Fails only when closing already.
            let _ = ws.close_with_code(SLOW_CLOSE_CODE, SLOW_CLOSE_REASON);
        }
    }
}
