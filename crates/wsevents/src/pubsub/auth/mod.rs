//! Who a connection is and what it may do: identities, topic permissions, connection
//! tokens and the authorization hook, for [`PubsubServer`](super::PubsubServer) and
//! for the plain routes of a server of one's own (`wsevents serve`'s `/topic/NAME`).
//!
//! ```text
//!  handshake (Authorization: Bearer, ?token=) ─┐
//!  {"op":"connect","token"} / {"op":"refresh"} ┴─► VerifyToken ─► Claims ─► Identity
//!                                                                              │
//!  subscribe / publish / history / presence ─► Access::check(Check) ◄──────────┘
//!                         (the Authorize hook if any, else the claims' patterns)
//! ```
//!
//! - [`TopicPattern`] / [`TopicPatterns`]: `news`, `chat:*`;
//! - [`Claims`] (what a token grants) and [`Identity`] (the claims a connection holds,
//!   with its [`ClientId`]);
//! - [`VerifyToken`] and its errors [`TokenError`]; [`JwtVerifier`] (feature `jwt`):
//!   HS256, RS256, ES256, keys chosen by `kid`;
//! - [`Authorize`]: the async hook, asked with a [`Check`] (identity, peer address,
//!   handshake request, [`Action`], topic) for a [`Decision`];
//! - [`Access`]: the three together, as a server holds them.
//!
//! Without tokens and without a hook ([`Access::open`], the default) every connection
//! may do everything, as before permissions existed.

mod hook;
mod identity;
#[cfg(feature = "jwt")]
mod jwt;
mod pattern;
mod token;

use std::sync::Arc;

use wsevents_proto::CloseCode;

pub use hook::{Action, Authorize, Check, Deciding, Decision};
pub use identity::{Claims, ClientId, Identity};
#[cfg(feature = "jwt")]
pub use jwt::{DEFAULT_LEEWAY, JwtError, JwtKey, JwtVerifier};
pub use pattern::{MAX_PATTERNS, PatternError, TopicPattern, TopicPatterns};
pub use token::{TokenError, VerifyToken, handshake_token};

/// The close code of a connection whose token is refused (bad, for another user at
/// refresh, or none where one is required): 4001. Clients do not reconnect after it.
pub const UNAUTHORIZED_CLOSE_CODE: CloseCode = CloseCode::new(4001);

/// The close code of a connection whose token expired (at connect, or unrefreshed past
/// its `exp` and the grace): 4003. Clients get a new token and reconnect, recovering
/// their topics from their positions.
pub const TOKEN_EXPIRED_CLOSE_CODE: CloseCode = CloseCode::new(4003);

/// The close code of a connection the server's operator disconnected
/// ([`PubsubServer::disconnect_user`](super::PubsubServer::disconnect_user)): 4009.
/// Clients do not reconnect after it.
pub const DISCONNECTED_CLOSE_CODE: CloseCode = CloseCode::new(4009);

/// What a server checks connections with: a token verifier (if any), the rules for
/// connections without a token, and the hook (if any). A cheap clone.
///
/// ```
/// use wsevents::pubsub::auth::{Access, Action, Claims, TopicPatterns};
/// // Anonymous connections may read `public:*`; tokens (a verifier of one's own, or
/// // `JwtVerifier` with the `jwt` feature) grant the rest.
/// let access = Access::open().anonymous(Claims {
///     subscribe: TopicPatterns::parse(["public:*"])?,
///     ..Claims::nothing()
/// });
/// let who = access.anonymous_identity();
/// assert!(who.allows(Action::Subscribe, "public:news"));
/// assert!(!who.allows(Action::Publish, "public:news"));
/// # Ok::<(), wsevents::pubsub::auth::PatternError>(())
/// ```
#[derive(Clone, Default)]
pub struct Access {
    tokens: Option<Arc<dyn VerifyToken>>,
    anonymous: Option<Claims>,
    hook: Option<Arc<dyn Authorize>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.tokens.is_some())
            .field("anonymous", &self.anonymous_claims())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Access {
    /// No tokens, no hook: every connection may do everything.
    pub fn open() -> Access {
        Access::default()
    }

    /// Verify connection tokens with `verifier`. Connections without a token get the
    /// [`anonymous`](Access::anonymous) rules, which are then
    /// [`Claims::nothing`] unless given.
    pub fn tokens(mut self, verifier: impl VerifyToken) -> Self {
        self.tokens = Some(Arc::new(verifier));
        self
    }

    /// [`tokens`](Access::tokens), shared.
    pub fn tokens_shared(mut self, verifier: Arc<dyn VerifyToken>) -> Self {
        self.tokens = Some(verifier);
        self
    }

    /// What a connection without a token may do (by default [`Claims::anyone`]
    /// without a verifier, [`Claims::nothing`] with one).
    pub fn anonymous(mut self, claims: Claims) -> Self {
        self.anonymous = Some(claims);
        self
    }

    /// Ask `hook` before every subscribe, publish, history and presence read, instead
    /// of the claims' patterns (a hook that narrows them starts from
    /// [`Check::claims_allow`]).
    pub fn authorize(mut self, hook: impl Authorize) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Whether tokens are verified.
    pub fn has_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether there is a hook (then every check awaits it).
    pub fn has_hook(&self) -> bool {
        self.hook.is_some()
    }

    /// Whether every connection may do everything (no hook, and connections without a
    /// token may publish and subscribe anywhere): what `wsevents serve` warns about.
    pub fn is_open(&self) -> bool {
        let anonymous = self.anonymous_claims();
        self.hook.is_none()
            && anonymous.subscribe == crate::pubsub::auth::TopicPatterns::any()
            && anonymous.publish == crate::pubsub::auth::TopicPatterns::any()
    }

    /// The claims of a connection without a token.
    pub fn anonymous_claims(&self) -> Claims {
        match (&self.anonymous, &self.tokens) {
            (Some(claims), _) => claims.clone(),
            (None, None) => Claims::anyone(),
            (None, Some(_)) => Claims::nothing(),
        }
    }

    /// A fresh connection's identity without a token.
    pub fn anonymous_identity(&self) -> Identity {
        Identity::new(ClientId::next(), self.anonymous_claims(), false)
    }

    /// The claims `token` grants. A server without a verifier takes no tokens and
    /// gives the anonymous claims to every connection, token or not (so a client that
    /// always sends one works with it).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match &self.tokens {
            Some(verifier) => verifier.verify(token),
            None => Ok(self.anonymous_claims()),
        }
    }

    /// The identity of a connection that opened with `request`: its
    /// [`handshake_token`]'s claims, or the anonymous ones without a token.
    pub fn identify<B>(
        &self,
        client: ClientId,
        request: &http::Request<B>,
    ) -> Result<Identity, TokenError> {
        match handshake_token(request) {
            Some(token) if self.tokens.is_some() => {
                Ok(Identity::new(client, self.verify(&token)?, true))
            }
            _ => Ok(Identity::new(client, self.anonymous_claims(), false)),
        }
    }

    /// The decision for `check` when it needs no waiting (no hook: the claims');
    /// `None` when the hook must be asked ([`Access::check`]).
    pub fn decide_now(&self, identity: &Identity, action: Action, topic: &str) -> Option<Decision> {
        match self.hook {
            Some(_) => None,
            None => Some(identity.allows(action, topic).into()),
        }
    }

    /// The decision for `check`: the hook's, or the claims' without one. Await it
    /// with no lock held (it is user code).
    ///
    /// A hook that panics denies (and the panic is logged): a bug in it refuses,
    /// never allows, and never takes the connection's task down.
    pub fn check(&self, check: Check) -> Deciding {
        use futures_util::FutureExt;
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let Some(hook) = &self.hook else {
            let decision = Decision::from(check.claims_allow());
            return Box::pin(std::future::ready(decision));
        };
        let denied = |_| {
            tracing::error!("the authorization hook panicked: denied");
            Decision::Deny
        };
        match catch_unwind(AssertUnwindSafe(|| hook.authorize(check))) {
            Ok(deciding) => Box::pin(
                AssertUnwindSafe(deciding)
                    .catch_unwind()
                    .map(move |r| r.unwrap_or_else(denied)),
            ),
            Err(panic) => Box::pin(std::future::ready(denied(panic))),
        }
    }
}

/// The close code and reason for a refused token.
pub fn close_for(error: &TokenError) -> (CloseCode, &'static str) {
    match error {
        TokenError::Expired => (TOKEN_EXPIRED_CLOSE_CODE, "token expired"),
        _ => (UNAUTHORIZED_CLOSE_CODE, "unauthorized"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(access: &Access, action: Action, topic: &str) -> Check {
        Check::new(
            Arc::new(access.anonymous_identity()),
            None,
            None,
            action,
            topic,
        )
    }

    #[test]
    fn the_anonymous_rules_follow_the_tokens() {
        assert!(Access::open().is_open());
        assert_eq!(Access::open().anonymous_claims(), Claims::anyone());
        struct No;
        impl VerifyToken for No {
            fn verify(&self, _: &str) -> Result<Claims, TokenError> {
                Err(TokenError::BadSignature)
            }
        }
        let strict = Access::open().tokens(No);
        assert!(!strict.is_open());
        assert_eq!(strict.anonymous_claims(), Claims::nothing());
        let who = strict.anonymous_identity();
        assert_eq!(
            strict.decide_now(&who, Action::Subscribe, "news"),
            Some(Decision::Deny)
        );
        // Without tokens, a token is not looked at: the anonymous claims.
        assert_eq!(Access::open().verify("anything"), Ok(Claims::anyone()));
        assert_eq!(strict.verify("anything"), Err(TokenError::BadSignature));
        let request = http::Request::get("/p?token=t").body(()).unwrap();
        assert!(strict.identify(ClientId::next(), &request).is_err());
        let anonymous = http::Request::get("/p").body(()).unwrap();
        assert!(
            !strict
                .identify(ClientId::next(), &anonymous)
                .unwrap()
                .has_token()
        );
    }

    #[tokio::test]
    async fn a_hook_decides_instead_of_the_claims_and_a_panicking_one_denies() {
        let access = Access::open().authorize(|c: Check| async move { c.topic == "ok" });
        assert!(!access.is_open() && access.has_hook());
        let who = access.anonymous_identity();
        assert_eq!(access.decide_now(&who, Action::Publish, "ok"), None);
        assert_eq!(
            access.check(check(&access, Action::Publish, "ok")).await,
            Decision::Allow
        );
        assert_eq!(
            access.check(check(&access, Action::Publish, "no")).await,
            Decision::Deny
        );
        let panics = Access::open().authorize(|c: Check| async move {
            assert!(c.topic != "boom", "a bug in the hook");
            true
        });
        assert_eq!(
            panics
                .check(check(&panics, Action::Subscribe, "boom"))
                .await,
            Decision::Deny
        );
        assert_eq!(
            panics
                .check(check(&panics, Action::Subscribe, "fine"))
                .await,
            Decision::Allow
        );
        struct PanicsAtOnce;
        impl Authorize for PanicsAtOnce {
            fn authorize(&self, _: Check) -> Deciding {
                panic!("before any future")
            }
        }
        let at_once = Access::open().authorize(PanicsAtOnce);
        assert_eq!(
            at_once.check(check(&at_once, Action::Subscribe, "x")).await,
            Decision::Deny
        );
    }
}
