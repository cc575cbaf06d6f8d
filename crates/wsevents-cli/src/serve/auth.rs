//! `serve`'s permissions: the JWT keys and the anonymous rules from the flags, as the
//! library's [`Access`], and the gate of the plain topic routes (`/topic/NAME`,
//! `/chat`), whose clients cannot send a `connect`: their token comes with the
//! handshake (`?token=`, `Authorization: Bearer`) and is judged there.
//!
//! - a refused token: `401 Unauthorized` at the handshake;
//! - a topic the connection may not subscribe to: `403 Forbidden`;
//! - a message from a connection that may not publish to its topic: the connection is
//!   closed with 1008 (policy violation), nothing published;
//! - a token that expires: the connection is closed with 4003 after the grace, as on
//!   `/pubsub` (no refresh on these routes: the client reconnects with a new token).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wsevents::pubsub::auth::{
    Access, Action, Check, Claims, ClientId, Decision, Identity, JwtKey, JwtVerifier, TopicPattern,
    TopicPatterns,
};
use wsevents::{Accept, UpgradeRequest};

/// The flags this module reads (kept in `serve`'s `Args`, where the config file finds
/// them).
pub(super) struct AuthFlags<'a> {
    pub(super) secret_file: Option<&'a Path>,
    pub(super) public_keys: &'a [PathBuf],
    pub(super) audience: Option<&'a str>,
    pub(super) issuer: Option<&'a str>,
    pub(super) anonymous_subscribe: &'a [TopicPattern],
    pub(super) anonymous_publish: &'a [TopicPattern],
}

/// A pattern flag's parser: clap refuses a bad one with the reason (exit 2).
pub(super) fn pattern(s: &str) -> Result<TopicPattern, String> {
    s.parse::<TopicPattern>().map_err(|e| e.to_string())
}

/// The [`Access`] the flags describe: open without any; with a JWT option, tokens
/// verified and anonymous connections limited to the anonymous patterns (none given:
/// nothing). The error names the flag and the file.
pub(super) fn access(flags: &AuthFlags<'_>) -> Result<Access, String> {
    let anonymous = anonymous(flags)?;
    let has_jwt = flags.secret_file.is_some() || !flags.public_keys.is_empty();
    if !has_jwt {
        return Ok(match anonymous {
            Some(claims) => Access::open().anonymous(claims),
            None => Access::open(),
        });
    }
    let mut verifier = JwtVerifier::new();
    if let Some(path) = flags.secret_file {
        let secret = read(path, "--jwt-secret-file")?;
        // `echo secret > file` adds a newline that is not part of the secret.
        let secret = secret
            .strip_suffix(b"\n")
            .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
            .unwrap_or(&secret);
        let key = JwtKey::hs256(secret)
            .map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?;
        verifier = verifier.key(key);
    }
    for path in flags.public_keys {
        let pem = read(path, "--jwt-public-key")?;
        let key = JwtKey::from_pem(&pem)
            .map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
        verifier = verifier.key(key);
    }
    if let Some(audience) = flags.audience {
        verifier = verifier.audience(audience);
    }
    if let Some(issuer) = flags.issuer {
        verifier = verifier.issuer(issuer);
    }
    Ok(Access::open()
        .tokens(verifier)
        .anonymous(anonymous.unwrap_or_else(Claims::nothing)))
}

/// The anonymous rules, when a pattern flag is given.
fn anonymous(flags: &AuthFlags<'_>) -> Result<Option<Claims>, String> {
    if flags.anonymous_subscribe.is_empty() && flags.anonymous_publish.is_empty() {
        return Ok(None);
    }
    let list = |patterns: &[TopicPattern], flag: &str| {
        TopicPatterns::new(patterns.to_vec()).map_err(|e| format!("{flag}: {e}"))
    };
    Ok(Some(Claims {
        subscribe: list(flags.anonymous_subscribe, "--anonymous-subscribe")?,
        publish: list(flags.anonymous_publish, "--anonymous-publish")?,
        ..Claims::nothing()
    }))
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The startup log's line about who may do what.
pub(super) fn describe(access: &Access, flags: &AuthFlags<'_>) -> String {
    if access.is_open() {
        return "none: every client may subscribe and publish anywhere \
                (--jwt-secret-file, --jwt-public-key, --anonymous-subscribe/-publish)"
            .to_owned();
    }
    let anonymous = access.anonymous_claims();
    let mut keys = Vec::new();
    if flags.secret_file.is_some() {
        keys.push("HS256".to_owned());
    }
    if !flags.public_keys.is_empty() {
        keys.push(format!("{} public key(s)", flags.public_keys.len()));
    }
    let tokens = if keys.is_empty() {
        "no tokens".to_owned()
    } else {
        format!("JWT ({})", keys.join(", "))
    };
    format!(
        "{tokens}; without a token: subscribe {}, publish {}",
        anonymous.subscribe, anonymous.publish
    )
}

/// The gate's answer, to come.
pub(super) type Gating =
    std::pin::Pin<Box<dyn std::future::Future<Output = wsevents::Decision> + Send>>;

/// The handshake's gate of a topic route: the token (`401` when refused) and the
/// right to subscribe to the topic (`403`). `fixed`: the route's topic (`/chat`), else
/// its `name` parameter.
pub(super) fn gate(
    access: Access,
    fixed: Option<&'static str>,
) -> impl Fn(UpgradeRequest) -> Gating + Send + Sync + 'static {
    move |request: UpgradeRequest| {
        let access = access.clone();
        Box::pin(async move {
            let topic = match fixed {
                Some(topic) => topic.to_owned(),
                None => request.param("name").unwrap_or_default().to_owned(),
            };
            let identity = access
                .identify(ClientId::next(), request.request())
                .map_err(|e| super::refuse(http::StatusCode::UNAUTHORIZED, format!("{e}\n")))?;
            let check = Check::new(
                Arc::new(identity),
                request.peer_addr(),
                Some(Arc::new(request.request().clone())),
                Action::Subscribe,
                topic.clone(),
            );
            match access.check(check).await {
                Decision::Allow => Ok(Accept::new()),
                Decision::Deny => Err(super::refuse(
                    http::StatusCode::FORBIDDEN,
                    format!("not allowed to subscribe to {topic:?}\n"),
                )),
            }
        })
    }
}

/// What an accepted topic connection may do: publish to its topic or not, and when its
/// token's expiry (plus `grace`) closes it.
pub(super) struct TopicRights {
    pub(super) publish: bool,
    pub(super) closes_at: Option<tokio::time::Instant>,
}

/// [`TopicRights`] of an accepted connection (its token was judged at the handshake;
/// judged again here, where its claims are needed). `Err`: refused now (it expired
/// meanwhile), with the close code.
pub(super) async fn topic_rights(
    access: &Access,
    request: Option<&http::Request<()>>,
    peer: Option<std::net::SocketAddr>,
    topic: &str,
    grace: Duration,
) -> Result<TopicRights, (wsevents::CloseCode, &'static str)> {
    let identity = match request {
        Some(request) => access
            .identify(ClientId::next(), request)
            .map_err(|e| wsevents::pubsub::auth::close_for(&e))?,
        None => access.anonymous_identity(),
    };
    let closes_at = identity.expires().map(|expires| {
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + left + grace
    });
    let publish = decide(access, identity, request, peer, topic).await;
    Ok(TopicRights { publish, closes_at })
}

async fn decide(
    access: &Access,
    identity: Identity,
    request: Option<&http::Request<()>>,
    peer: Option<std::net::SocketAddr>,
    topic: &str,
) -> bool {
    if let Some(decision) = access.decide_now(&identity, Action::Publish, topic) {
        return decision == Decision::Allow;
    }
    let check = Check::new(
        Arc::new(identity),
        peer,
        request.cloned().map(Arc::new),
        Action::Publish,
        topic,
    );
    access.check(check).await == Decision::Allow
}
