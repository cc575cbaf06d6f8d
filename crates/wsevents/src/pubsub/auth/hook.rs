//! The authorization hook: user code asked, before each subscribe, publish, history
//! read and presence read, whether this connection may do this to this topic.
//!
//! It is async (a database, another service) and is never called under a lock of
//! ours: the server clones what the check needs into an owned [`Check`] and awaits the
//! hook's future on the connection's own task, in the order the requests came (see
//! [`PubsubServer`](crate::pubsub::PubsubServer)'s bounds on what may wait for it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::identity::Identity;

/// What a connection asks to do to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Receive the topic's publications (a `subscribe`, with or without `since`: a
    /// recovery is part of the subscription).
    Subscribe,
    /// Publish to the topic.
    Publish,
    /// Read the topic's history outside a subscription.
    History,
    /// Read who is on the topic.
    Presence,
}

impl Action {
    /// The action's name, as docs and logs write it (`subscribe`, `publish`,
    /// `history`, `presence`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::History => "history",
            Action::Presence => "presence",
        }
    }
}

/// One question to the hook: who, from where, with which handshake, wants to do what
/// to which topic. Owned (cheap: the identity and the request are shared), so the
/// hook's future may keep it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Check {
    /// The connection's identity when the request arrived.
    pub identity: Arc<Identity>,
    /// The peer's address, when the server knows it.
    pub peer: Option<SocketAddr>,
    /// The opening handshake's request (URI and headers), when the server has it.
    pub request: Option<Arc<http::Request<()>>>,
    /// What it asks.
    pub action: Action,
    /// The topic.
    pub topic: String,
}

impl Check {
    /// A check (for hooks' own tests; servers make them).
    pub fn new(
        identity: Arc<Identity>,
        peer: Option<SocketAddr>,
        request: Option<Arc<http::Request<()>>>,
        action: Action,
        topic: impl Into<String>,
    ) -> Check {
        Check {
            identity,
            peer,
            request,
            action,
            topic: topic.into(),
        }
    }

    /// Whether the identity's claims allow it ([`Identity::allows`]): what a hook that
    /// only narrows the claims starts from.
    pub fn claims_allow(&self) -> bool {
        self.identity.allows(self.action, &self.topic)
    }
}

/// The hook's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// Refuse: the request is answered `forbidden` (permanent: clients do not retry
    /// it) and nothing is subscribed, stored or sent; the connection goes on.
    Deny,
}

impl From<bool> for Decision {
    /// `true`: [`Decision::Allow`].
    fn from(allow: bool) -> Decision {
        if allow {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

/// The future a hook returns.
pub type Deciding = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// Decides whether a connection may do an [`Action`] to a topic. Implemented for
/// every `Fn(Check) -> impl Future<Output = impl Into<Decision>>`.
///
/// A server with a hook asks it instead of the claims' patterns; a hook that only
/// narrows what the token allows starts from [`Check::claims_allow`]:
///
/// ```
/// use wsevents::pubsub::auth::{Access, Action, Check};
/// let access = Access::open().authorize(|check: Check| async move {
///     // The claims, and no one publishes to `system:*` but the user `ops`.
///     check.claims_allow()
///         && (check.action != Action::Publish
///             || !check.topic.starts_with("system:")
///             || check.identity.user() == Some("ops"))
/// });
/// # let _ = access;
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// The decision for `check`.
    fn authorize(&self, check: Check) -> Deciding;
}

impl<F, Fut> Authorize for F
where
    F: Fn(Check) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Into<Decision>,
{
    fn authorize(&self, check: Check) -> Deciding {
        let decided = self(check);
        Box::pin(async move { decided.await.into() })
    }
}
