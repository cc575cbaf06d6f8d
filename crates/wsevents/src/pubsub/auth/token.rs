//! Connection tokens: the [`VerifyToken`] trait a server verifies them with (the JWT
//! one is [`JwtVerifier`](super::JwtVerifier), feature `jwt`), its typed errors, and
//! where a token is found in an opening handshake.
//!
//! Verification is synchronous on purpose: a signature check is CPU work of tens to
//! hundreds of microseconds, and doing it where the `connect` request is read keeps
//! every later request of the connection in order behind it without a queue. A token
//! that needs a round trip to be checked is better checked in the accept hook
//! ([`Acceptor::on_request`](crate::Acceptor::on_request)) or the [`Authorize`]
//! hook.
//!
//! [`Authorize`]: super::Authorize

use super::identity::Claims;

/// Verifies a connection token into the [`Claims`] it grants.
///
/// ```
/// use wsevents::pubsub::auth::{Claims, TokenError, VerifyToken};
/// /// One fixed token for one user (a test double of a real verifier).
/// struct Fixed;
/// impl VerifyToken for Fixed {
///     fn verify(&self, token: &str) -> Result<Claims, TokenError> {
///         match token {
///             "let-me-in" => Ok(Claims { user: Some("alice".into()), ..Claims::anyone() }),
///             _ => Err(TokenError::BadSignature),
///         }
///     }
/// }
/// assert!(Fixed.verify("nope").is_err());
/// ```
pub trait VerifyToken: Send + Sync + 'static {
    /// The claims of `token`, or why it is refused.
    fn verify(&self, token: &str) -> Result<Claims, TokenError>;
}

/// Why a token is refused. Every one is answered `unauthorized` and closes the
/// connection: [`TokenError::Expired`] with
/// [`TOKEN_EXPIRED_CLOSE_CODE`](super::TOKEN_EXPIRED_CLOSE_CODE) (a client gets a new
/// token and reconnects), the others with
/// [`UNAUTHORIZED_CLOSE_CODE`](super::UNAUTHORIZED_CLOSE_CODE) (a client stops).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token at all: not three base64url parts, not JSON, truncated.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// An algorithm the server does not take for it: `none`, or one its key is not
    /// for (an HMAC token against an RSA key's PEM: algorithm confusion).
    #[error("algorithm refused: {0}")]
    Algorithm(String),
    /// No key of the server's has the token's `kid` (or, without one, no key without a
    /// kid verifies it).
    #[error("no key for this token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past its `exp` (and the leeway).
    #[error("token expired")]
    Expired,
    /// Before its `nbf` (less the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// Its `aud` is not the server's.
    #[error("wrong audience")]
    Audience,
    /// Its `iss` is not the server's.
    #[error("wrong issuer")]
    Issuer,
    /// A claim of the wrong shape (`subscribe` not a list of patterns, `info` not an
    /// object, `sub` not a string, …).
    #[error("bad claims: {0}")]
    Claims(String),
    /// A refresh for another user than the connection's.
    #[error("a refresh token is for the connection's user")]
    OtherUser,
    /// Refused by a verifier of one's own, for its own reason.
    #[error("token refused: {0}")]
    Refused(String),
}

/// The token an opening handshake carries: `Authorization: Bearer TOKEN`, else the
/// URL's `token` query parameter (percent-decoded), else none (another scheme in
/// `Authorization`, a proxy's, is not a token). For routes whose
/// clients cannot send a first message (`/topic/NAME`), and for clients that can set
/// headers.
///
/// ```
/// use wsevents::pubsub::auth::handshake_token;
/// let request = http::Request::get("/topic/news?x=1&token=a%2Eb").body(()).unwrap();
/// assert_eq!(handshake_token(&request).as_deref(), Some("a.b"));
/// let request = http::Request::get("/pubsub")
///     .header("authorization", "Bearer t0k3n").body(()).unwrap();
/// assert_eq!(handshake_token(&request).as_deref(), Some("t0k3n"));
/// ```
pub fn handshake_token<B>(request: &http::Request<B>) -> Option<String> {
    let bearer = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    if bearer.is_some() {
        return bearer;
    }
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> http::request::Builder {
        http::Request::get(uri)
    }

    #[test]
    fn a_handshake_token_is_a_bearer_header_or_the_query() {
        let token = |b: http::request::Builder| handshake_token(&b.body(()).unwrap());
        assert_eq!(token(get("/p")), None);
        assert_eq!(token(get("/p?token=")).as_deref(), Some(""));
        assert_eq!(token(get("/p?a=b&token=x+y")).as_deref(), Some("x y"));
        assert_eq!(
            token(get("/p").header("Authorization", "bearer  abc ")).as_deref(),
            Some("abc")
        );
        // Another scheme: the query's, if any.
        assert_eq!(
            token(get("/p?token=q").header("Authorization", "Basic abc")).as_deref(),
            Some("q")
        );
        assert_eq!(token(get("/p").header("Authorization", "Bearer")), None);
    }
}
