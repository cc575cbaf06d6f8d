//! What joins hubs in many processes into one: the [`Backend`] trait, and the
//! in-process one that joins nothing.

use std::fmt;

use wsevents_proto::Message;

use super::WeakHub;

/// Carries a hub's publishes to the hubs of other processes and theirs back.
///
/// The hub calls it under its own lock, so every method must return at once (queue
/// the work for a task of its own): [`subscribe`](Self::subscribe) when a topic gets
/// its first local subscriber, [`unsubscribe`](Self::unsubscribe) when its last one
/// leaves, [`publish`](Self::publish) after the message was delivered locally. A
/// backend hands what other nodes published to [`Inbound::deliver`], and must not
/// hand back this node's own messages (the hub already delivered them).
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
