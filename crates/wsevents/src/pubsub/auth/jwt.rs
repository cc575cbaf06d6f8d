//! JWT connection tokens (feature `jwt`, on the `jsonwebtoken` crate): HS256 with a
//! shared secret, RS256 and ES256 with PEM public keys, several keys at once chosen by
//! the token's `kid` (key rotation).
//!
//! **The algorithm is the key's, never the token's.** Each [`JwtKey`] is made for one
//! algorithm (a secret for HS256; a PEM's key type decides RS256 or ES256), and a token
//! is verified only by keys of the algorithm its header names: `alg: none` is no
//! algorithm at all, and an HS256 token signed with an RSA key's public PEM as the
//! secret (algorithm confusion) finds no HS256 key that is that PEM. `exp` and `nbf`
//! are checked with a leeway ([`DEFAULT_LEEWAY`]); `aud` and `iss` when configured
//! (then required), and a token with an `aud` is refused by a verifier configured
//! without one (RFC 7519 §4.1.3).
//!
//! The claims: `sub` (the user; absent = anonymous), `exp` (seconds since the epoch;
//! absent = never expires), `subscribe` and `publish` (lists of
//! [topic patterns](super::TopicPattern); absent = none), `info` (a JSON object).

use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::identity::Claims;
use super::pattern::TopicPatterns;
use super::token::{TokenError, VerifyToken};

/// The leeway on `exp` and `nbf`: 5 s of clock skew between the token's issuer and the
/// server ([`JwtVerifier::leeway`]).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The shortest HS256 secret taken: 32 bytes, the hash's length (RFC 7518 §3.2).
const MIN_SECRET: usize = 32;

/// One verification key, bound to its algorithm.
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    /// The kid and the algorithm; never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// An HS256 secret shorter than 32 bytes.
    #[error("an HS256 secret is at least {MIN_SECRET} bytes (this one is {0})")]
    WeakSecret(usize),
    /// A PEM holding a private key: give the public one.
    #[error("this PEM holds a private key: give the public key (openssl pkey -pubout)")]
    PrivateKey,
    /// Not a PEM of an RSA or an EC (P-256) public key.
    #[error("not a PEM RSA or EC public key: {0}")]
    BadPem(String),
}

impl JwtKey {
    /// An HS256 key: the shared `secret` (at least 32 bytes).
    pub fn hs256(secret: &[u8]) -> Result<JwtKey, JwtError> {
        if secret.len() < MIN_SECRET {
            return Err(JwtError::WeakSecret(secret.len()));
        }
        Ok(JwtKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// An RS256 or ES256 key, by the type of the public key in `pem` (`-----BEGIN
    /// PUBLIC KEY-----`, SPKI; or `BEGIN RSA PUBLIC KEY`, PKCS#1).
    pub fn from_pem(pem: &[u8]) -> Result<JwtKey, JwtError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            return Err(JwtError::PrivateKey);
        }
        let (algorithm, key) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(rsa) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => (Algorithm::ES256, key),
                Err(ec) => return Err(JwtError::BadPem(format!("as RSA: {rsa}; as EC: {ec}"))),
            },
        };
        Ok(JwtKey {
            kid: None,
            algorithm,
            key,
        })
    }

    /// The key for tokens whose header's `kid` is `kid` (only those).
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Its kid.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Its algorithm's name: `HS256`, `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            _ => "ES256",
        }
    }
}

/// Verifies JWTs (feature `jwt`) with a set of keys: HS256 with a shared secret,
/// RS256 and ES256 with PEM public keys, chosen by the token's `kid` (key rotation).
///
/// **The algorithm is the key's, never the token's.** Each [`JwtKey`] is made for one
/// algorithm, and a token is verified only by keys of the algorithm its header names:
/// `alg: none` is no algorithm at all, and an HS256 token signed with an RSA or EC key's
/// public PEM as the secret (algorithm confusion) finds no HS256 key that is that PEM. A
/// token with a `kid` is verified by the key with that kid; one without, by each key
/// without a kid in turn. `exp` and `nbf` are checked with a leeway
/// ([`DEFAULT_LEEWAY`]); `aud` and `iss` when configured (then required), and a token
/// with an `aud` is refused by a verifier configured without one (RFC 7519 §4.1.3).
///
/// The claims read: `sub` (the user; absent = anonymous), `exp` (seconds since the
/// epoch; absent = never expires), `subscribe` and `publish` (lists of
/// [topic patterns](super::TopicPattern); absent = none), `info` (a JSON object); a
/// claim of another shape refuses the token ([`TokenError::Claims`]).
///
/// ```
/// use wsevents::pubsub::auth::{Access, JwtKey, JwtVerifier};
/// let verifier = JwtVerifier::new()
///     .key(JwtKey::hs256(b"a shared secret of 32 bytes or more")?.with_kid("2026-12"))
///     .audience("wsevents")
///     .leeway(std::time::Duration::from_secs(2));
/// let access = Access::open().tokens(verifier);
/// # let _ = access;
/// # Ok::<(), wsevents::pubsub::auth::JwtError>(())
/// ```
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<JwtKey>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

impl Default for JwtVerifier {
    fn default() -> Self {
        JwtVerifier::new()
    }
}

impl JwtVerifier {
    /// No keys yet (every token refused until one is added).
    pub fn new() -> JwtVerifier {
        JwtVerifier {
            keys: Vec::new(),
            audience: None,
            issuer: None,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Add a key. A token with a `kid` is verified by the key with that kid; one
    /// without, by each key without a kid of the token's algorithm in turn.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Require `aud` to be (or contain) `audience`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Require `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The leeway on `exp` and `nbf` ([`DEFAULT_LEEWAY`]), whole seconds.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The keys.
    pub fn keys(&self) -> &[JwtKey] {
        &self.keys
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        // Off by default in jsonwebtoken 9.
        validation.validate_nbf = true;
        let mut required = Vec::new();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

impl VerifyToken for JwtVerifier {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        // The header names the algorithm and the kid; `none` and unknown names fail
        // here (jsonwebtoken's `Algorithm` has no `none`).
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(e) if e.to_string().contains("unknown variant") => {
                TokenError::Algorithm(format!("not one this server takes ({e})"))
            }
            _ => malformed(&e),
        })?;
        let algorithm = header.alg;
        if !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(TokenError::Algorithm(format!("{algorithm:?}")));
        }
        let candidates: Vec<&JwtKey> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            None => self.keys.iter().filter(|key| key.kid.is_none()).collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let mut last =
            TokenError::Algorithm(format!("{algorithm:?}: no key of this server is for it"));
        for key in candidates.into_iter().filter(|k| k.algorithm == algorithm) {
            let decoded =
                jsonwebtoken::decode::<Value>(token, &key.key, &self.validation(algorithm));
            match decoded {
                Ok(data) => return claims_of(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    last = TokenError::BadSignature;
                }
                Err(e) => return Err(refusal(&e)),
            }
        }
        Err(last)
    }
}

fn malformed(error: &jsonwebtoken::errors::Error) -> TokenError {
    TokenError::Malformed(error.to_string())
}

/// A refusal from jsonwebtoken's error, by who is at fault.
fn refusal(error: &jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::Issuer,
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::Algorithm(error.to_string())
        }
        _ => malformed(error),
    }
}

/// The protocol's claims from a verified payload.
fn claims_of(payload: Value) -> Result<Claims, TokenError> {
    let bad = |what: &str| TokenError::Claims(what.to_owned());
    let Value::Object(mut fields) = payload else {
        return Err(bad("the payload is a JSON object"));
    };
    let user = match fields.remove("sub") {
        None | Some(Value::Null) => None,
        Some(Value::String(sub)) => Some(sub),
        Some(_) => return Err(bad("sub is a string")),
    };
    // jsonwebtoken skips an `exp` it cannot read as a number: here it is one or absent.
    let expires = match fields.remove("exp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
            None => return Err(bad("exp is whole seconds since 1970")),
        },
        Some(_) => return Err(bad("exp is whole seconds since 1970")),
    };
    if fields
        .get("nbf")
        .is_some_and(|nbf| !nbf.is_null() && !nbf.is_u64())
    {
        return Err(bad("nbf is whole seconds since 1970"));
    }
    let patterns = |value: Option<Value>, name: &str| -> Result<TopicPatterns, TokenError> {
        match value {
            None | Some(Value::Null) => Ok(TopicPatterns::none()),
            Some(list) => {
                serde_json::from_value(list).map_err(|e| TokenError::Claims(format!("{name}: {e}")))
            }
        }
    };
    let subscribe = patterns(fields.remove("subscribe"), "subscribe")?;
    let publish = patterns(fields.remove("publish"), "publish")?;
    let info = match fields.remove("info") {
        None | Some(Value::Null) => Value::Null,
        Some(info @ Value::Object(_)) => info,
        Some(_) => return Err(bad("info is a JSON object")),
    };
    Ok(Claims {
        user,
        info,
        subscribe,
        publish,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const A: &[u8] = b"key a: a shared secret of 32 bytes or more";
    const B: &[u8] = b"key b: a shared secret of 32 bytes or more";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn alice() -> Value {
        serde_json::json!({"sub": "alice", "exp": now() + 60})
    }

    #[test]
    fn the_kid_picks_the_key_and_without_one_each_key_is_tried() {
        let by_kid = JwtVerifier::new()
            .key(JwtKey::hs256(A).unwrap().with_kid("a"))
            .key(JwtKey::hs256(B).unwrap().with_kid("b"));
        assert!(by_kid.verify(&hs(B, Some("b"), &alice())).is_ok());
        assert_eq!(
            by_kid.verify(&hs(B, Some("a"), &alice())),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            by_kid.verify(&hs(A, Some("c"), &alice())),
            Err(TokenError::UnknownKey)
        );
        // A token without a kid is not tried against keys with one.
        assert_eq!(
            by_kid.verify(&hs(A, None, &alice())),
            Err(TokenError::UnknownKey)
        );
        let rotating = JwtVerifier::new()
            .key(JwtKey::hs256(A).unwrap())
            .key(JwtKey::hs256(B).unwrap());
        let claims = rotating.verify(&hs(B, None, &alice())).unwrap();
        assert_eq!(claims.user.as_deref(), Some("alice"));
    }

    #[test]
    fn the_algorithm_is_the_key_s() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = pair.public_key_pem();
        let es_only = JwtVerifier::new().key(JwtKey::from_pem(pem.as_bytes()).unwrap());
        assert_eq!(es_only.keys()[0].algorithm(), "ES256");
        // An HS256 token signed with the public key's PEM as the secret.
        let confused = hs(pem.as_bytes(), None, &alice());
        assert!(matches!(
            es_only.verify(&confused),
            Err(TokenError::Algorithm(_))
        ));
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                r#"{"alg":"none"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                alice().to_string()
            ),
        );
        assert!(matches!(
            es_only.verify(&none),
            Err(TokenError::Algorithm(_))
        ));
        let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let es = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &alice(), &signing).unwrap();
        assert!(es_only.verify(&es).is_ok());
    }

    #[test]
    fn exp_and_nbf_have_the_leeway() {
        let verifier = JwtVerifier::new().key(JwtKey::hs256(A).unwrap());
        let at = |field: &str, t: u64| hs(A, None, &serde_json::json!({ field: t }));
        assert!(verifier.verify(&at("exp", now() - 2)).is_ok(), "within 5 s");
        assert_eq!(
            verifier.verify(&at("exp", now() - 30)),
            Err(TokenError::Expired)
        );
        assert!(verifier.verify(&at("nbf", now() + 2)).is_ok(), "within 5 s");
        assert_eq!(
            verifier.verify(&at("nbf", now() + 30)),
            Err(TokenError::NotYetValid)
        );
        let strict = verifier.leeway(Duration::ZERO);
        assert_eq!(
            strict.verify(&at("exp", now() - 2)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let verifier = JwtVerifier::new()
            .key(JwtKey::hs256(A).unwrap())
            .audience("push")
            .issuer("app");
        let with = |claims: Value| verifier.verify(&hs(A, None, &claims));
        assert!(with(serde_json::json!({"aud": "push", "iss": "app"})).is_ok());
        assert!(with(serde_json::json!({"aud": ["x", "push"], "iss": "app"})).is_ok());
        assert_eq!(
            with(serde_json::json!({"iss": "app"})),
            Err(TokenError::Audience)
        );
        assert_eq!(
            with(serde_json::json!({"aud": "x", "iss": "app"})),
            Err(TokenError::Audience)
        );
        assert_eq!(
            with(serde_json::json!({"aud": "push"})),
            Err(TokenError::Issuer)
        );
        assert_eq!(
            with(serde_json::json!({"aud": "push", "iss": "x"})),
            Err(TokenError::Issuer)
        );
        let plain = JwtVerifier::new().key(JwtKey::hs256(A).unwrap());
        assert_eq!(
            plain.verify(&hs(A, None, &serde_json::json!({"aud": "push"}))),
            Err(TokenError::Audience),
            "an aud the server does not claim"
        );
    }

    #[test]
    fn weak_secrets_and_private_pems_are_refused() {
        assert_eq!(
            JwtKey::hs256(b"short").unwrap_err(),
            JwtError::WeakSecret(5)
        );
        let pem = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(JwtKey::from_pem(pem).unwrap_err(), JwtError::PrivateKey);
        assert!(matches!(
            JwtKey::from_pem(b"not a pem").unwrap_err(),
            JwtError::BadPem(_)
        ));
    }

    #[test]
    fn claims_of_the_wrong_shape_are_refused() {
        let claims = |v: Value| claims_of(v);
        assert!(claims(serde_json::json!({})).is_ok());
        let full = claims(serde_json::json!({
            "sub": "alice", "exp": 2_000_000_000u64, "subscribe": ["news", "chat:*"],
            "publish": ["chat:*"], "info": {"name": "Alice"}
        }))
        .unwrap();
        assert_eq!(full.user.as_deref(), Some("alice"));
        assert!(full.subscribe.matches("chat:x") && !full.publish.matches("news"));
        for bad in [
            serde_json::json!({"sub": 5}),
            serde_json::json!({"exp": "tomorrow"}),
            serde_json::json!({"exp": 1.5}),
            serde_json::json!({"nbf": "now"}),
            serde_json::json!({"subscribe": "news"}),
            serde_json::json!({"publish": ["a*b"]}),
            serde_json::json!({"info": "Alice"}),
        ] {
            assert!(
                matches!(claims(bad.clone()), Err(TokenError::Claims(_))),
                "{bad}"
            );
        }
    }
}
