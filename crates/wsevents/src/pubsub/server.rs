//! The server side of wsevents.v1: requests from one socket, in order, onto the hub.
//!
//! The socket's message handler never waits: it parses each request, answers what is
//! wrong at once, takes `connect` and `refresh` (a token is verified where it is read,
//! so every later request is decided under it), hands publishes the claims allow to
//! the hub as they arrive (which fixes their order: the hub stores them in the order
//! it is given them) and passes the rest to the connection's one task, which does
//! what takes time:
//!
//! ```text
//!  on_message ─┬─ connect / refresh ─► the identity, now
//!              ├─ publish ─► (claims) hub.publish_confirmed ─► its store ─────┐
//!              │          └► (hook) in line ─► the hook, ≤ 16 at once ─► in order ─┤
//!              └─ subscribe / unsubscribe ─► waiting (bounded) ───────────────┤
//!                                                                             ▼
//!  the connection's task: answers each store when it completes (any number at
//!  once), hands hook-allowed publishes to the hub in the order they came, takes
//!  the subscriptions one after the other (the hook first, then once the socket's
//!  unsent bytes are within the hub's backlog bound), takes the topics the server
//!  takes away, and closes the connection when its token expires unrefreshed
//! ```
//!
//! So a connection's `subscribe` and `unsubscribe` take effect in the order it sent
//! them, even when a subscription waits for the hook or its history (Redis), and each
//! subscription is paced by what the client reads: the hub queues an answer and its
//! recovery only on a socket within its bound (else it closes it as a slow
//! subscriber), so a client that resubscribes 1,024 topics at once gets them one by
//! one as it reads, rather than being closed.
//!
//! **Permissions** ([`Access`]): each request is decided under the identity the
//! connection had when the request arrived (the anonymous rules, or a handshake
//! token's, until `connect`; a `refresh`'s from then on). Without a hook the claims'
//! patterns decide at once; with one, the hook is awaited on the task (never under a
//! lock, never on the socket's handler): a denial is `forbidden` and nothing is
//! subscribed or stored. Existing subscriptions are not checked again at a refresh.
//!
//! **Bounds, per connection** (docs/protocol.md, "Limits"): `max(max_topics, 256)`
//! subscription requests waiting for the one before (the hook of a subscription is
//! asked when its turn comes: one at a time), and [`MAX_PENDING_PUBLISHES`]
//! publishes waiting for the hook or handed to the hub and not yet answered, of which
//! [`MAX_HOOKS_IN_FLIGHT`] are being asked at once; past either bound, the request is
//! answered `too_many_requests`, which is temporary (the client retries after a
//! delay, a publish with its key); and a publish rate (`rate.rs`: a token bucket,
//! [`DEFAULT_PUBLISH_RATE`] 100 a second with bursts of 200), past which a publish is
//! answered `rate_limited` with `retry_after_ms` (temporary too: the client retries
//! after that delay, with its key). Answers go out with the socket's `send`, bounded by
//! its [`Backpressure`](crate::Backpressure) (16 MiB by default): an answer that does
//! not fit is never dropped, the connection is closed instead ([`SLOW_CLOSE_CODE`],
//! [`SLOW_CLOSE_REASON`]), and its client reconnects and recovers. The task holds the
//! socket weakly: a closed socket ends it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use wsevents_proto::{CloseCode, Message};

use super::auth::{
    Access, Action, Check, DISCONNECTED_CLOSE_CODE, Decision, Identity, TOKEN_EXPIRED_CLOSE_CODE,
    TokenError, close_for,
};
use super::rate::{DEFAULT_PUBLISH_RATE, PublishRate, TokenBucket};
use super::users::{Registration, Shared, Users};
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

/// The default most connections one user may have open on a server: 128.
///
/// A person holds a connection per tab and per device: a few, a few dozen with many
/// tabs open; 128 leaves them room. The cap holds whatever the addresses (a token
/// shared or leaked is used from many), where the caps per address cannot. A service
/// account whose many workers connect as one user needs it raised.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 128;

/// The close code of a connection past its user's cap: 4029 (the 4000 range is the
/// application's; 29 as in HTTP's 429). Clients reconnect after it with their usual
/// backoff, as after any close other than the final ones.
pub const TOO_MANY_CONNECTIONS_CLOSE_CODE: CloseCode = CloseCode::new(4029);

/// The close reason of a connection past its user's cap.
pub const TOO_MANY_CONNECTIONS_REASON: &str = "too many connections for this user";

/// The code a connection that does not read its answers is closed with: 1008, policy
/// violation, as the hub closes a slow subscriber ([`crate::hub::SLOW_CLOSE_CODE`]):
/// the peer broke the rule that it reads what it asks for (1013, try again later,
/// would blame the server). Clients reconnect after it and recover.
pub const SLOW_CLOSE_CODE: CloseCode = crate::hub::SLOW_CLOSE_CODE;

/// The reason a connection that does not read its answers is closed with.
pub const SLOW_CLOSE_REASON: &str = "slow client";

/// The default time a connection whose token expired is given to refresh it before it
/// is closed with [`TOKEN_EXPIRED_CLOSE_CODE`]: 5 s past its `exp`
/// ([`PubsubServer::expiry_grace`]).
pub const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(5);

/// The most [`Authorize`](super::auth::Authorize) hook calls one connection's
/// publishes have in flight at once: 16. More publishes wait, in order, behind them
/// (within [`MAX_PENDING_PUBLISHES`]); their hooks run concurrently, and the
/// publishes are handed to the hub in the order they came whatever order the hooks
/// answer in.
pub const MAX_HOOKS_IN_FLIGHT: usize = 16;

/// The reason a connection closed by its server's operator is closed with (code
/// [`DISCONNECTED_CLOSE_CODE`], 4009).
pub const DISCONNECTED_REASON: &str = "disconnected by the server";

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
    /// Each connection's publish rate (`None`: no limit).
    publish_rate: Option<PublishRate>,
    /// The most connections one user may have open on this server.
    max_connections_per_user: usize,
    access: Access,
    expiry_grace: Duration,
    users: Arc<Users>,
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
            .field("publish_rate", &self.publish_rate)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .field("access", &self.access)
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
            publish_rate: Some(DEFAULT_PUBLISH_RATE),
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            access: Access::open(),
            expiry_grace: DEFAULT_EXPIRY_GRACE,
            users: Arc::new(Users::default()),
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

    /// Each connection's publish rate ([`DEFAULT_PUBLISH_RATE`]: 100 a second, bursts
    /// of 200); `None`: no limit. Past it a publish is answered `rate_limited` with
    /// `retry_after_ms`, nothing is stored, and the connection goes on (the clients of
    /// this crate wait that long and re-send it with its key).
    ///
    /// ```
    /// use wsevents::hub::{History, Hub};
    /// use wsevents::pubsub::{PublishRate, PubsubServer};
    /// let hub = Hub::builder().history(History::default()).build();
    /// // A backend's connections: more, and longer bursts.
    /// let backend = PubsubServer::new(hub.clone()).publish_rate(Some(PublishRate::new(5_000, 10_000)));
    /// // Browsers: the default.
    /// let browsers = PubsubServer::new(hub);
    /// # let _ = (backend, browsers);
    /// ```
    pub fn publish_rate(mut self, rate: Option<PublishRate>) -> Self {
        self.publish_rate = rate;
        self
    }

    /// The most connections one user (a token's `sub`) may have open on this server
    /// at once ([`DEFAULT_MAX_CONNECTIONS_PER_USER`], 128; `usize::MAX`: no cap).
    /// Counted when a connection gets its user (a handshake token, `connect`); past
    /// it the new connection is answered `too_many_connections` and closed with
    /// [`TOO_MANY_CONNECTIONS_CLOSE_CODE`] (its client reconnects later), and the
    /// user's other connections go on. Anonymous connections are not counted here
    /// (the caps per address bound them). Per node: on Redis, each node counts its own.
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.max_connections_per_user = n.max(1);
        self
    }

    /// Who may do what ([`Access::open`] by default: everyone everything): the token
    /// verifier, the anonymous rules, the authorization hook.
    ///
    /// ```
    /// use wsevents::hub::{History, Hub};
    /// use wsevents::pubsub::PubsubServer;
    /// use wsevents::pubsub::auth::{Access, Action, Check};
    /// let hub = Hub::builder().history(History::default()).build();
    /// // Anyone may subscribe; only the `ops` user's connections may publish.
    /// let pubsub = PubsubServer::new(hub).access(Access::open().authorize(|c: Check| async move {
    ///     c.action != Action::Publish || c.identity.user() == Some("ops")
    /// }));
    /// # let _ = pubsub;
    /// ```
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// How long past its token's `exp` an unrefreshed connection stays open before it
    /// is closed with [`TOKEN_EXPIRED_CLOSE_CODE`] ([`DEFAULT_EXPIRY_GRACE`]).
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// The hub it serves on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Who may do what.
    pub fn access_rules(&self) -> &Access {
        &self.access
    }

    /// Close every connection of `user` on this server (this node) with
    /// [`DISCONNECTED_CLOSE_CODE`] (4009, [`DISCONNECTED_REASON`]); clients do not
    /// reconnect after it. How many were closed.
    pub fn disconnect_user(&self, user: &str) -> usize {
        self.users
            .of(user)
            .iter()
            .filter_map(|shared| shared.ws.upgrade())
            .filter(|ws| {
                ws.close_with_code(DISCONNECTED_CLOSE_CODE, DISCONNECTED_REASON)
                    .is_ok()
            })
            .count()
    }

    /// Take `topic` away from every connection of `user` on this server (this node)
    /// that is in it (or being subscribed to it): each is unsubscribed, in order with
    /// its own subscription requests, and told `{"op":"unsubscribed","topic":…}`
    /// without an id. How many connections were in it. It does not stop them from
    /// subscribing again: for that, change what their tokens or the hook allow.
    pub fn unsubscribe_user(&self, user: &str, topic: &str) -> usize {
        self.users.drop_topic(user, topic)
    }

    /// How many connections `user` has open on this server.
    pub fn connections_of(&self, user: &str) -> usize {
        self.users.count(user)
    }

    /// Speak wsevents.v1 on `ws` (a server socket whose subprotocol is
    /// [`PROTOCOL`](super::wire::PROTOCOL)): its messages are requests from now on.
    /// Drive the socket as usual (`ws.run().await`); it leaves its topics when it
    /// closes.
    ///
    /// With tokens ([`Access::tokens`]), a token in the opening handshake
    /// (`Authorization: Bearer`, `?token=`) is verified now: a refused one is answered
    /// `unauthorized` and the socket closed ([`close_for`]). Without one the
    /// connection starts anonymous, until a `connect`.
    pub fn serve(&self, ws: &WebSocket) {
        let request = ws.request().map(Arc::new);
        let client = super::auth::ClientId::next();
        let identity = match &request {
            Some(request) => self.access.identify(client, request.as_ref()),
            None => Ok(self.access.anonymous_identity()),
        };
        let identity = match identity {
            Ok(identity) => identity,
            Err(e) => {
                refuse(ws, None, &e);
                return;
            }
        };
        let waiting_bound = self.max_topics.clamp(
            MIN_WAITING_SUBSCRIPTIONS,
            tokio::sync::Semaphore::MAX_PERMITS,
        );
        let (requests, waiting) = mpsc::channel(waiting_bound);
        let (stores, stored) = mpsc::unbounded_channel();
        let (expiry, expiries) = watch::channel(identity.expires());
        let user = identity.user().map(str::to_owned);
        let shared = Arc::new(Shared::new(ws.downgrade(), identity));
        let registration = Arc::new(Registration::new(self.users.clone(), shared.clone()));
        if !registration.claim_user(user.as_deref(), self.max_connections_per_user) {
            return too_many_connections(ws, None, self.max_connections_per_user);
        }
        let connection = Connection {
            server: self.clone(),
            ws: ws.downgrade(),
            max_publication: self.publication_limit(ws),
            publishing: Arc::new(AtomicUsize::new(0)),
            shared,
            peer: ws.peer_addr(),
            request,
            registration,
            expiry: Arc::new(expiry),
        };
        tokio::spawn(run(connection.clone(), waiting, stored, expiries));
        let bucket = self
            .publish_rate
            .map(|rate| std::sync::Mutex::new(TokenBucket::new(rate, tokio::time::Instant::now())));
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
            // Decided under the identity the connection has now, when it arrives.
            let identity = connection.shared.identity();
            match request {
                Ok(Request::Publish {
                    id,
                    topic,
                    data,
                    key,
                }) => {
                    if let Some(wait) = rate_limited(bucket.as_ref()) {
                        answer(&ws, slow_down(id, wait));
                        return;
                    }
                    let publish = Publish {
                        id,
                        topic,
                        data,
                        key,
                    };
                    if let Some(handed) = connection.publish(&ws, &identity, publish) {
                        // Refused only once the task is gone, with the socket.
                        let _ = stores.send(handed);
                    }
                }
                Ok(Request::Connect { id, token }) => {
                    connection.connect(&ws, &identity, id, &token)
                }
                Ok(Request::Refresh { id, token }) => {
                    connection.refresh(&ws, &identity, id, &token)
                }
                Ok(request) => match requests.try_send(Queued { request, identity }) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    Err(mpsc::error::TrySendError::Full(queued)) => {
                        let message = "too many subscriptions waiting: retry later";
                        let id = request_id(&queued.request);
                        answer(&ws, error(id, ErrorCode::TooManyRequests, message));
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
    /// Publishes waiting for the hook, or handed to the hub and not answered yet
    /// ([`MAX_PENDING_PUBLISHES`]).
    publishing: Arc<AtomicUsize>,
    /// The identity, the topics, the server's take-aways.
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    request: Option<Arc<http::Request<()>>>,
    /// Its place among the user's connections, until it closes.
    registration: Arc<Registration>,
    /// The token's `exp`, for the task's timer.
    expiry: Arc<watch::Sender<Option<SystemTime>>>,
}

/// A subscription request and the identity it is decided under.
struct Queued {
    request: Request,
    identity: Arc<Identity>,
}

/// A publish request.
struct Publish {
    id: u64,
    topic: String,
    data: Message,
    key: Option<String>,
}

/// What the handler hands the task about publishes, in the order they came.
enum Handed {
    /// Handed to the hub: to be answered when stored.
    Store(Store),
    /// To be handed to the hub once the hook allows it.
    Authorize(Publish, Arc<Identity>),
}

/// A publish handed to the hub and not stored yet: its id, topic and store.
struct Store {
    id: u64,
    topic: String,
    stored: Pending<Position>,
}

impl Connection {
    /// Check a publish and, when the claims decide it, hand it to the hub now, in the
    /// order the requests came; what the task is to follow up (`None`: answered
    /// already, refused or stored at once).
    fn publish(
        &self,
        ws: &WebSocket,
        identity: &Arc<Identity>,
        publish: Publish,
    ) -> Option<Handed> {
        let id = publish.id;
        if publish.data.payload().len() > self.max_publication {
            let message = format!("over {} bytes", self.max_publication);
            answer(ws, error(Some(id), ErrorCode::TooLarge, &message));
            return None;
        }
        if self.publishing.load(Ordering::Relaxed) >= MAX_PENDING_PUBLISHES {
            let message = format!("{MAX_PENDING_PUBLISHES} publishes waiting: retry later");
            answer(ws, error(Some(id), ErrorCode::TooManyRequests, &message));
            return None;
        }
        match self
            .server
            .access
            .decide_now(identity, Action::Publish, &publish.topic)
        {
            Some(Decision::Allow) => self.hand(ws, publish).map(Handed::Store),
            Some(Decision::Deny) => {
                answer(ws, forbidden(id, Action::Publish, &publish.topic));
                None
            }
            None => {
                // Counted while it waits for the hook, too.
                self.publishing.fetch_add(1, Ordering::Relaxed);
                Some(Handed::Authorize(publish, identity.clone()))
            }
        }
    }

    /// Hand an allowed publish to the hub; its store, counted in `publishing`, unless
    /// stored (and answered) at once.
    fn hand(&self, ws: &WebSocket, publish: Publish) -> Option<Store> {
        let Publish {
            id,
            topic,
            data,
            key,
        } = publish;
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

    /// The question to the hook about `action` on `topic`.
    fn check(&self, identity: Arc<Identity>, action: Action, topic: &str) -> Check {
        Check::new(
            identity,
            self.peer,
            self.request.clone(),
            action,
            topic.to_owned(),
        )
    }

    /// `connect`: the token's identity from now on, for every request after it.
    fn connect(&self, ws: &WebSocket, identity: &Identity, id: u64, token: &str) {
        if identity.has_token() {
            let message = "connected already: refresh the token instead";
            answer(ws, error(Some(id), ErrorCode::BadRequest, message));
            return;
        }
        let claims = match self.server.access.verify(token) {
            Ok(claims) => claims,
            Err(e) => return refuse(ws, Some(id), &e),
        };
        let has_token = self.server.access.has_tokens();
        let identity = Identity::new(identity.client(), claims, has_token);
        let max = self.server.max_connections_per_user;
        if !self.registration.claim_user(identity.user(), max) {
            return too_many_connections(ws, Some(id), max);
        }
        let reply = Reply::Connected {
            id,
            client: identity.client().to_string(),
            user: identity.user().map(str::to_owned),
            expires: identity.expires().map(unix_seconds),
        };
        self.become_(identity);
        answer(ws, reply);
    }

    /// `refresh`: a new token for the same user, and a new expiry.
    fn refresh(&self, ws: &WebSocket, identity: &Identity, id: u64, token: &str) {
        if !identity.has_token() {
            let message = "no token to refresh: connect first";
            answer(ws, error(Some(id), ErrorCode::BadRequest, message));
            return;
        }
        let claims = match self.server.access.verify(token) {
            Ok(claims) if claims.user.as_deref() == identity.user() => claims,
            Ok(_) => return refuse(ws, Some(id), &TokenError::OtherUser),
            Err(e) => return refuse(ws, Some(id), &e),
        };
        let identity = Identity::new(identity.client(), claims, true);
        let reply = Reply::Refreshed {
            id,
            expires: identity.expires().map(unix_seconds),
        };
        self.become_(identity);
        answer(ws, reply);
    }

    /// Take `identity` for the requests that come next.
    fn become_(&self, identity: Identity) {
        self.registration.set_user(identity.user());
        self.expiry.send_replace(identity.expires());
        self.shared.set_identity(identity);
    }
}

/// Refuse a token: `unauthorized`, then the close its error calls for.
fn refuse(ws: &WebSocket, id: Option<u64>, error: &TokenError) {
    tracing::debug!(%error, "wsevents.v1: token refused");
    answer(
        ws,
        Reply::Error {
            id,
            code: ErrorCode::Unauthorized,
            message: error.to_string(),
            retry_after: None,
        },
    );
    let (code, reason) = close_for(error);
    // Fails only when closing already.
    let _ = ws.close_with_code(code, reason);
}

/// Past the user's cap: `too_many_connections`, then close with
/// [`TOO_MANY_CONNECTIONS_CLOSE_CODE`].
fn too_many_connections(ws: &WebSocket, id: Option<u64>, max: usize) {
    tracing::debug!(max, "wsevents.v1: a user past its connections");
    let message = format!("at most {max} connections per user");
    answer(ws, error(id, ErrorCode::TooManyConnections, &message));
    // Fails only when closing already.
    let _ = ws.close_with_code(TOO_MANY_CONNECTIONS_CLOSE_CODE, TOO_MANY_CONNECTIONS_REASON);
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A subscription being made: the topic, and whether the socket is in it now
/// (`None`: as it was, nothing done).
type Subscribing = Pin<Box<dyn Future<Output = (String, Option<bool>)> + Send>>;

/// A publish whose hook is being asked, with its decision.
type Authorizing = Pin<Box<dyn Future<Output = (Publish, Decision)> + Send>>;

/// The connection's task: answers every store as it completes, makes the
/// subscription requests one after the other, hands the publishes the hook allows to
/// the hub in the order they came, closes the connection when its token expires
/// unrefreshed. Ends when the socket is gone (its handler, and the senders with it,
/// are dropped at its close).
async fn run(
    connection: Connection,
    mut waiting: mpsc::Receiver<Queued>,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    mut expiry: watch::Receiver<Option<SystemTime>>,
) {
    let mut stored = FuturesUnordered::new();
    let mut subscribing: Option<Subscribing> = None;
    // Publishes waiting for the hook: at most MAX_HOOKS_IN_FLIGHT asked at once, the
    // rest in line behind them (all within MAX_PENDING_PUBLISHES).
    let mut authorizing: FuturesOrdered<Authorizing> = FuturesOrdered::new();
    let mut in_line = std::collections::VecDeque::new();
    let (mut requests_open, mut handed_open) = (true, true);
    let mut deadline = expiry_deadline(*expiry.borrow_and_update(), connection.server.expiry_grace);
    loop {
        while authorizing.len() < MAX_HOOKS_IN_FLIGHT {
            let Some((publish, identity)) = in_line.pop_front() else {
                break;
            };
            authorizing.push_back(connection.authorize(publish, identity));
        }
        tokio::select! {
            Some((id, topic, result)) = stored.next(), if !stored.is_empty() => {
                connection.publishing.fetch_sub(1, Ordering::Relaxed);
                let Some(ws) = connection.ws.upgrade() else { return };
                answer(&ws, published(id, topic, result));
            }
            Some((publish, decision)) = authorizing.next(), if !authorizing.is_empty() => {
                connection.publishing.fetch_sub(1, Ordering::Relaxed);
                let Some(ws) = connection.ws.upgrade() else { return };
                if decision == Decision::Deny {
                    answer(&ws, forbidden(publish.id, Action::Publish, &publish.topic));
                } else if let Some(Store { id, topic, stored: store }) = connection.hand(&ws, publish) {
                    stored.push(storing(id, topic, store));
                }
            }
            (topic, joined) = async {
                match subscribing.as_mut() {
                    Some(subscription) => subscription.await,
                    None => std::future::pending().await,
                }
            }, if subscribing.is_some() => {
                subscribing = None;
                match joined {
                    Some(true) => connection.shared.add_topic(&topic),
                    Some(false) => {
                        connection.shared.remove_topic(&topic);
                    }
                    None => {}
                }
            }
            () = connection.shared.wake.notified(), if subscribing.is_none() && requests_open => {
                let Some(ws) = connection.ws.upgrade() else { return };
                for topic in connection.shared.take_drops() {
                    if connection.shared.remove_topic(&topic) {
                        connection.server.hub.unsubscribe(&ws, &topic);
                        answer(&ws, Reply::Unsubscribed { id: None, topic });
                    }
                }
            }
            request = waiting.recv(), if subscribing.is_none() && requests_open => match request {
                Some(Queued { request, identity }) => {
                    let Some(ws) = connection.ws.upgrade() else { return };
                    subscribing = connection.take(&ws, request, identity);
                }
                None => requests_open = false,
            },
            item = handed.recv(), if handed_open => match item {
                Some(Handed::Store(Store { id, topic, stored: store })) => {
                    stored.push(storing(id, topic, store));
                }
                Some(Handed::Authorize(publish, identity)) => in_line.push_back((publish, identity)),
                None => handed_open = false,
            },
            changed = expiry.changed(), if requests_open => {
                if changed.is_err() {
                    deadline = None;
                    continue;
                }
                deadline = expiry_deadline(*expiry.borrow_and_update(), connection.server.expiry_grace);
            }
            () = sleep_until(deadline), if requests_open && deadline.is_some() => {
                deadline = None;
                let Some(ws) = connection.ws.upgrade() else { return };
                tracing::debug!(client = %connection.shared.client, "wsevents.v1: token expired unrefreshed");
                let _ = ws.close_with_code(TOKEN_EXPIRED_CLOSE_CODE, "token expired");
            }
            else => return,
        }
    }
}

/// A store's answer, when it completes.
async fn storing(
    id: u64,
    topic: String,
    store: Pending<Position>,
) -> (u64, String, Result<Position, Error>) {
    (id, topic, store.await)
}

/// When an expiry closes the connection: `exp` + the grace, on the runtime's clock.
fn expiry_deadline(expires: Option<SystemTime>, grace: Duration) -> Option<tokio::time::Instant> {
    let expires = expires?;
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + left + grace)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Ask the hook about a publish; the publish and the decision.
    fn authorize(&self, publish: Publish, identity: Arc<Identity>) -> Authorizing {
        let deciding =
            self.server
                .access
                .check(self.check(identity, Action::Publish, &publish.topic));
        Box::pin(async move { (publish, deciding.await) })
    }

    /// Act on a subscription request: an unsubscribe or a refusal at once, a
    /// subscription as the future that makes it (once allowed).
    fn take(
        &self,
        ws: &WebSocket,
        request: Request,
        identity: Arc<Identity>,
    ) -> Option<Subscribing> {
        match request {
            Request::Subscribe { id, topic, since } => {
                let max = self.server.max_topics;
                if self.shared.topic_count() >= max && !self.shared.has_topic(&topic) {
                    let message = format!("at most {max} topics per connection");
                    answer(ws, error(Some(id), ErrorCode::TooManyTopics, &message));
                    return None;
                }
                let decision =
                    match self
                        .server
                        .access
                        .decide_now(&identity, Action::Subscribe, &topic)
                    {
                        Some(Decision::Deny) => {
                            answer(ws, forbidden(id, Action::Subscribe, &topic));
                            return None;
                        }
                        Some(Decision::Allow) => None,
                        None => Some(self.server.access.check(self.check(
                            identity,
                            Action::Subscribe,
                            &topic,
                        ))),
                    };
                let was_in = self.shared.has_topic(&topic);
                // Counted from now: `unsubscribe_user` finds it while it is made.
                self.shared.add_topic(&topic);
                let connection = self.clone();
                Some(Box::pin(async move {
                    if let Some(deciding) = decision
                        && deciding.await == Decision::Deny
                    {
                        if !was_in {
                            connection.shared.remove_topic(&topic);
                        }
                        if let Some(ws) = connection.ws.upgrade() {
                            answer(&ws, forbidden(id, Action::Subscribe, &topic));
                        }
                        return (topic, None);
                    }
                    let (topic, joined) = subscribe(connection, id, topic, since).await;
                    (topic, Some(joined))
                }))
            }
            Request::Unsubscribe { id, topic } => {
                self.shared.remove_topic(&topic);
                self.server.hub.unsubscribe(ws, &topic);
                answer(
                    ws,
                    Reply::Unsubscribed {
                        id: Some(id),
                        topic,
                    },
                );
                None
            }
            Request::Publish { .. } | Request::Connect { .. } | Request::Refresh { .. } => None,
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

/// Past the connection's publish rate: how long to wait.
fn rate_limited(bucket: Option<&std::sync::Mutex<TokenBucket>>) -> Option<std::time::Duration> {
    let mut bucket = bucket?.lock().unwrap_or_else(|e| e.into_inner());
    bucket.take(tokio::time::Instant::now()).err()
}

/// The answer to a publish past the rate.
fn slow_down(id: u64, wait: std::time::Duration) -> Reply {
    Reply::Error {
        id: Some(id),
        code: ErrorCode::RateLimited,
        message: "publishing too fast: retry after retry_after_ms".to_owned(),
        retry_after: Some(wait),
    }
}

fn forbidden(id: u64, action: Action, topic: &str) -> Reply {
    Reply::Error {
        id: Some(id),
        code: ErrorCode::Forbidden,
        message: format!("not allowed to {} {topic:?}", action.as_str()),
        retry_after: None,
    }
}

fn request_id(request: &Request) -> Option<u64> {
    match request {
        Request::Subscribe { id, .. }
        | Request::Unsubscribe { id, .. }
        | Request::Publish { id, .. }
        | Request::Connect { id, .. }
        | Request::Refresh { id, .. } => Some(*id),
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
        retry_after: None,
    }
}

fn error(id: Option<u64>, code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        id,
        code,
        message: message.to_owned(),
        retry_after: None,
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
