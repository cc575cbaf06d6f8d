//! Real JWTs for tests: HS256 with a secret, ES256 with a key pair made in the test
//! (rcgen, on ring), and the hostile ones (`alg: none`, truncated, algorithm
//! confusion) written by hand.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The HS256 secret of the tests (32 bytes at least).
pub(crate) const SECRET: &[u8] = b"wsevents tests: a shared secret of 32+ bytes";

/// Seconds since 1970, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `user` that may subscribe to and publish on what is given, valid for an
/// hour.
pub(crate) fn claims(user: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "sub": user,
        "exp": now() + 3600,
        "subscribe": subscribe,
        "publish": publish,
        "info": {"name": user},
    })
}

/// An HS256 token of `claims` with [`SECRET`].
pub(crate) fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, None, claims)
}

/// An HS256 token with another secret, and a kid if given.
pub(crate) fn hs256_with(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// An ES256 key pair: the signing key and the public key's PEM.
pub(crate) struct EsKey {
    signing: EncodingKey,
    pub(crate) public_pem: String,
}

impl EsKey {
    pub(crate) fn generate() -> EsKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        EsKey {
            signing: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    /// An ES256 token of `claims`, with a kid if given.
    pub(crate) fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }
}

/// A token with `alg: none` and no signature (as RFC 7519 §6.1 writes it).
pub(crate) fn unsigned(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// `token` cut short in its signature.
pub(crate) fn truncated(token: &str) -> String {
    token[..token.len() - 10].to_owned()
}
