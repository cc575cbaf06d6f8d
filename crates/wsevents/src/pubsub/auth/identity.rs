//! Who a connection is: the [`Claims`] a token (or the server's anonymous rules) gave
//! it, and the [`ClientId`] the server gave the connection. Made once at connect (and
//! again at each refresh) and shared, read-only, by every check of its requests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::Value;

use super::pattern::TopicPatterns;

/// What a connection may do and who it is: a verified token's claims, or the server's
/// rules for connections without one.
///
/// ```
/// use wsevents::pubsub::auth::{Claims, TopicPatterns};
/// let claims = Claims {
///     user: Some("alice".into()),
///     subscribe: TopicPatterns::parse(["news", "chat:*"])?,
///     publish: TopicPatterns::parse(["chat:*"])?,
///     ..Claims::nothing()
/// };
/// assert!(claims.subscribe.matches("news") && !claims.publish.matches("news"));
/// # Ok::<(), wsevents::pubsub::auth::PatternError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The user (a token's `sub`); `None`: anonymous.
    pub user: Option<String>,
    /// What the user shows others (a token's `info`, a JSON object; `Null` when none).
    pub info: Value,
    /// The topics it may subscribe to (and read the history and presence of).
    pub subscribe: TopicPatterns,
    /// The topics it may publish to.
    pub publish: TopicPatterns,
    /// When the token expires (its `exp`); `None`: never.
    pub expires: Option<SystemTime>,
}

impl Claims {
    /// Anyone may do anything: what every connection is given when a server has no
    /// tokens and no anonymous rules (the library's behaviour before permissions).
    pub fn anyone() -> Claims {
        Claims {
            subscribe: TopicPatterns::any(),
            publish: TopicPatterns::any(),
            ..Claims::nothing()
        }
    }

    /// Anonymous, and may do nothing: what a connection without a token is given by a
    /// server that verifies tokens and was given no anonymous rules.
    pub fn nothing() -> Claims {
        Claims {
            user: None,
            info: Value::Null,
            subscribe: TopicPatterns::none(),
            publish: TopicPatterns::none(),
            expires: None,
        }
    }
}

/// A connection's number, unique in this process (it starts at a random value, so
/// two processes are unlikely to share one); shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    /// A fresh id.
    pub fn next() -> ClientId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let start = *START.get_or_init(wsevents_proto::random::u64);
        ClientId(start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// The number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What an action is checked against: the [`Claims`] in force and the connection's
/// [`ClientId`]. Read-only; a refresh makes a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    client: ClientId,
    claims: Claims,
    token: bool,
}

impl Identity {
    /// The identity of connection `client` with `claims`; `token`: whether they came
    /// from a verified token (rather than the anonymous rules).
    pub fn new(client: ClientId, claims: Claims, token: bool) -> Identity {
        Identity {
            client,
            claims,
            token,
        }
    }

    /// The user (a token's `sub`); `None`: anonymous.
    pub fn user(&self) -> Option<&str> {
        self.claims.user.as_deref()
    }

    /// The connection's id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// What the user shows others (a token's `info`).
    pub fn info(&self) -> &Value {
        &self.claims.info
    }

    /// The claims in force.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// When the token expires; `None`: never (no token, or one without `exp`).
    pub fn expires(&self) -> Option<SystemTime> {
        self.claims.expires
    }

    /// Whether the claims came from a verified token.
    pub fn has_token(&self) -> bool {
        self.token
    }

    /// Whether the claims allow `action` on `topic`: [`Action::Publish`] by the
    /// `publish` patterns, the others (subscribe, history, presence) by the
    /// `subscribe` patterns. What a server decides when it has no
    /// [`Authorize`](super::Authorize) hook.
    ///
    /// [`Action::Publish`]: super::Action::Publish
    pub fn allows(&self, action: super::Action, topic: &str) -> bool {
        match action {
            super::Action::Publish => self.claims.publish.matches(topic),
            super::Action::Subscribe | super::Action::History | super::Action::Presence => {
                self.claims.subscribe.matches(topic)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::auth::Action;

    #[test]
    fn client_ids_differ() {
        let (a, b) = (ClientId::next(), ClientId::next());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 16);
    }

    #[test]
    fn publish_is_checked_against_publish_and_the_rest_against_subscribe() {
        let claims = Claims {
            subscribe: TopicPatterns::parse(["news", "chat:*"]).unwrap(),
            publish: TopicPatterns::parse(["chat:*"]).unwrap(),
            ..Claims::nothing()
        };
        let who = Identity::new(ClientId::next(), claims, true);
        for action in [Action::Subscribe, Action::History, Action::Presence] {
            assert!(who.allows(action, "news") && who.allows(action, "chat:1"));
            assert!(!who.allows(action, "admin"));
        }
        assert!(who.allows(Action::Publish, "chat:1"));
        assert!(!who.allows(Action::Publish, "news"));
        let anyone = Identity::new(ClientId::next(), Claims::anyone(), false);
        assert!(anyone.allows(Action::Publish, "x") && anyone.user().is_none());
    }
}
