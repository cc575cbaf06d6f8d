//! What joins hubs in many processes into one: the [`Backend`] trait, and the
//! in-process one that joins nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use wsevents_proto::Message;

use super::WeakHub;
use super::history::{HistoryPage, Position, Recovery};
use crate::error::{Error, Result};

/// Carries a hub's publishes to the hubs of other processes and theirs back.
///
/// The hub calls it with none of its locks held (so a backend may call back into the
/// hub), but on the thread of a publish or a subscription, so every method must
/// return at once (queue the work for a task of its own):
/// [`subscribe`](Self::subscribe) when a topic gets its first local subscriber,
/// [`unsubscribe`](Self::unsubscribe) when its last one leaves (for one topic these
/// two are never called at once, and the last call matches whether the topic has
/// local subscribers; it may come a moment after the subscription that caused it
/// returned, when another thread is telling the backend about the topic),
/// [`publish`](Self::publish) after the message was delivered locally, by the thread
/// that delivered it, so in the topic's order. A backend hands what other nodes
/// published to [`Inbound::deliver`], and must not hand back this node's own messages
/// (the hub already delivered them).
///
/// Implementations: [`InProcess`] (the default, nothing to join), `RedisBackend`
/// (feature `redis`).
pub trait Backend: Send + Sync + 'static {
    /// Called once, by [`HubBuilder::build`](super::HubBuilder::build), inside the
    /// runtime: start the tasks; deliver other nodes' messages with `inbound`.
    fn start(&self, inbound: Inbound);
    /// `topic` has its first local subscriber: receive its messages from now on.
    fn subscribe(&self, topic: &str);
    /// `topic`'s last local subscriber left: stop receiving them.
    fn unsubscribe(&self, topic: &str);
    /// Carry `message`, published on this node, to the other nodes.
    fn publish(&self, topic: &str, message: &Message);
    /// Whether the backend is connected.
    fn status(&self) -> BackendStatus;

    /// Whether this backend keeps the history of a hub built with
    /// [`HubBuilder::history`](super::HubBuilder::history) (shared by every node)
    /// instead of the hub. Then [`store`](Self::store) and [`recover`](Self::recover)
    /// are called instead of [`publish`](Self::publish), and the backend hands every
    /// publication, this node's own included, to [`Inbound::deliver_at`]. False by
    /// default.
    fn stores_history(&self) -> bool {
        false
    }

    /// Store `message` in `topic`'s history (once per `key`), give it a position and
    /// carry it to every node, this one included. Must not wait: the work is queued,
    /// the returned [`Pending`] resolves when it is done.
    fn store(&self, topic: &str, message: &Message, key: Option<&str>) -> Pending<Position> {
        let _ = (topic, message, key);
        Pending::ready(Err(Error::InvalidAccess(
            "this backend keeps no history".into(),
        )))
    }

    /// Read what a subscriber of `topic` that last saw `since` missed, once this
    /// node receives the topic's live publications (so that nothing falls between
    /// the two).
    fn recover(&self, topic: &str, since: Option<&Position>) -> Pending<Recovery> {
        let _ = (topic, since);
        Pending::ready(Err(Error::InvalidAccess(
            "this backend keeps no history".into(),
        )))
    }

    /// Send `message` (a command or an answer of [`Hub::command`](super::Hub::command),
    /// opaque here) to every node of the hub, this one included, each of which hands
    /// it to [`Inbound::command`] and sends on what that returns. Must not wait: the
    /// returned [`Pending`] sends it when awaited and resolves to the number of nodes
    /// it reached. `None` (the default): this backend joins no other node, and the
    /// hub runs commands here only.
    fn send_command(&self, message: Bytes) -> Option<Pending<usize>> {
        let _ = message;
        None
    }

    /// Read up to `limit` publications of `topic`'s history after `since` (from the
    /// oldest kept when `since` is absent or no longer followed by all it missed),
    /// for [`Hub::read_history`](super::Hub::read_history); nothing is subscribed.
    fn read_history(
        &self,
        topic: &str,
        since: Option<&Position>,
        limit: usize,
    ) -> Pending<HistoryPage> {
        let _ = (topic, since, limit);
        Pending::ready(Err(Error::InvalidAccess(
            "this backend keeps no history".into(),
        )))
    }
}

/// A result on its way: a boxed future, or one that is ready.
///
/// ```
/// # async fn demo() {
/// use wsevents::hub::Pending;
/// let ready: Pending<u32> = Pending::ready(Ok(7));
/// assert_eq!(ready.await.ok(), Some(7));
/// # }
/// ```
#[must_use = "a Pending does nothing unless awaited (the work itself is already queued)"]
pub struct Pending<T>(PendingInner<T>);

enum PendingInner<T> {
    Ready(Option<Result<T>>),
    Future(Pin<Box<dyn Future<Output = Result<T>> + Send>>),
}

impl<T> Pending<T> {
    /// A result that is already there.
    pub fn ready(result: Result<T>) -> Pending<T> {
        Pending(PendingInner::Ready(Some(result)))
    }

    /// A result `future` will give.
    pub fn new(future: impl Future<Output = Result<T>> + Send + 'static) -> Pending<T> {
        Pending(PendingInner::Future(Box::pin(future)))
    }
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pending")
    }
}

impl<T: Unpin> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        match &mut self.get_mut().0 {
            PendingInner::Ready(result) => {
                Poll::Ready(result.take().unwrap_or_else(|| Err(Error::InvalidState)))
            }
            PendingInner::Future(future) => future.as_mut().poll(cx),
        }
    }
}

/// A backend's health, as [`Hub::backend_status`](super::Hub::backend_status) reports
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendStatus {
    /// One process is the whole hub: there is nothing to be cut off from.
    InProcess,
    /// Connected: publishes reach the other nodes.
    Connected,
    /// Cut off and reconnecting with backoff: local subscribers still get every
    /// local publish; other nodes get none of them until reconnected, and
    /// `dropped` of them have been lost so far (since the hub was made).
    Reconnecting {
        /// Failed attempts since the connection was lost.
        attempts: u32,
        /// The latest error.
        error: String,
        /// Publishes not carried to other nodes, since the hub was made.
        dropped: u64,
    },
}

/// The in-process backend: the hub is this process's alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl Backend for InProcess {
    fn start(&self, _: Inbound) {}
    fn subscribe(&self, _: &str) {}
    fn unsubscribe(&self, _: &str) {}
    fn publish(&self, _: &str, _: &Message) {}
    fn status(&self) -> BackendStatus {
        BackendStatus::InProcess
    }
}

/// A backend's way into its hub: delivers other nodes' messages to local subscribers.
/// Holds the hub weakly, so a backend's tasks do not keep a dropped hub alive.
#[derive(Clone)]
pub struct Inbound {
    pub(super) hub: WeakHub,
}

impl fmt::Debug for Inbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("alive", &self.is_alive())
            .finish()
    }
}
