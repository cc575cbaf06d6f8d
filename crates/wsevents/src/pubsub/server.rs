//! The server side of wsevents.v1: requests from one socket, in order, onto the hub.
//!
//! Subscriptions go through one task per connection, so a connection's `subscribe`
//! and `unsubscribe` take effect in the order it sent them even when a subscription
//! waits for its history (Redis). Publishes are handed to the hub as they arrive
//! (that fixes their order: the hub stores them in the order it is given them) and
//! answered when stored. The tasks hold the socket weakly: a closed socket ends them.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::wire::{ErrorCode, Reply, Request, V1Framing, WireError};
use crate::api::data::Data;
use crate::api::websocket::{WeakWebSocket, WebSocket};
use crate::error::Error;
use crate::hub::{Framing, Hub, Position};

/// The default most topics one connection may subscribe to: 1,024.
pub const DEFAULT_MAX_TOPICS: usize = 1024;

/// The most subscription requests of one connection waiting for the one before.
const MAX_WAITING: usize = 256;

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
}

impl std::fmt::Debug for PubsubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubServer")
            .field("max_topics", &self.max_topics)
            .field("max_publication", &self.max_publication)
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
            hub,
            framing: Arc::new(V1Framing),
            max_topics: DEFAULT_MAX_TOPICS,
            max_publication: 16 << 20,
        }
    }

    /// The most topics one connection may subscribe to ([`DEFAULT_MAX_TOPICS`]);
    /// past it `subscribe` is answered `too_many_topics`.
    pub fn max_topics(mut self, n: usize) -> Self {
        self.max_topics = n;
        self
    }

    /// The largest publication accepted, in bytes of data (16 MiB); past it
    /// `publish` is answered `too_large`.
    pub fn max_publication(mut self, bytes: usize) -> Self {
        self.max_publication = bytes;
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
        let (requests, queue) = mpsc::channel(MAX_WAITING);
        tokio::spawn(subscriptions(self.clone(), ws.downgrade(), queue));
        let this = self.clone();
        let me = ws.downgrade();
        ws.on_message(move |e| {
            let Some(ws) = me.upgrade() else { return };
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
                    this.publish(&ws, id, topic, data, key);
                }
                Ok(request) => {
                    if let Err(mpsc::error::TrySendError::Full(request)) =
                        requests.try_send(request)
                    {
                        let id = match request {
                            Request::Subscribe { id, .. } | Request::Unsubscribe { id, .. } => {
                                Some(id)
                            }
                            Request::Publish { id, .. } => Some(id),
                        };
                        answer(
                            &ws,
                            error(id, ErrorCode::BadRequest, "too many subscriptions waiting"),
                        );
                    }
                }
                Err(e) => answer(&ws, error(e.id, e.code, &e.message)),
            }
        });
    }

    fn publish(
        &self,
        ws: &WebSocket,
        id: u64,
        topic: String,
        data: wsevents_proto::Message,
        key: Option<String>,
    ) {
        let len = match &data {
            wsevents_proto::Message::Text(text) => text.len(),
            wsevents_proto::Message::Binary(bytes) => bytes.len(),
        };
        if len > self.max_publication {
            let message = format!("over {} bytes", self.max_publication);
            return answer(ws, error(Some(id), ErrorCode::TooLarge, &message));
        }
        // Handed to the hub now, in the order the requests came; answered when stored.
        let stored = self.hub.publish_confirmed(&topic, data, key.as_deref());
        let me = ws.downgrade();
        tokio::spawn(async move {
            let reply = match stored.await {
                Ok(position) => Reply::Published {
                    id,
                    topic,
                    position,
                },
                Err(e) => hub_error(Some(id), &e),
            };
            if let Some(ws) = me.upgrade() {
                answer(&ws, reply);
            }
        });
    }
}

/// Subscribe and unsubscribe requests of one connection, one after the other.
async fn subscriptions(
    server: PubsubServer,
    ws: WeakWebSocket,
    mut queue: mpsc::Receiver<Request>,
) {
    while let Some(request) = queue.recv().await {
        let Some(socket) = ws.upgrade() else { return };
        match request {
            Request::Subscribe { id, topic, since } => {
                subscribe(&server, &socket, id, topic, since).await;
            }
            Request::Unsubscribe { id, topic } => {
                server.hub.unsubscribe(&socket, &topic);
                answer(&socket, Reply::Unsubscribed { id, topic });
            }
            Request::Publish { .. } => {}
        }
    }
}

async fn subscribe(
    server: &PubsubServer,
    ws: &WebSocket,
    id: u64,
    topic: String,
    since: Option<Position>,
) {
    let topics = server.hub.topics(ws);
    if topics.len() >= server.max_topics && !topics.contains(&topic) {
        let message = format!("at most {} topics per connection", server.max_topics);
        return answer(ws, error(Some(id), ErrorCode::TooManyTopics, &message));
    }
    let subscribed = server
        .hub
        .subscribe_from(ws, &topic, since.as_ref(), server.framing.clone(), |s| {
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
            tracing::debug!(topic, recovered = s.recovered, count = s.count, position = %s.position, "subscribed")
        }
        // Closed meanwhile: nobody to answer.
        Err(Error::InvalidState) => {}
        Err(e) => answer(ws, hub_error(Some(id), &e)),
    }
}

fn hub_error(id: Option<u64>, error: &Error) -> Reply {
    let code = match error {
        Error::InvalidAccess(_) => ErrorCode::BadRequest,
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

fn answer(ws: &WebSocket, reply: Reply) {
    // Fails only once the socket is closing: nobody to tell.
    let _ = ws.send(reply.to_message());
}
