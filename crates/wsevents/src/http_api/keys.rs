//! API keys: who may call the API. A request carries `Authorization: Bearer KEY`; the
//! key is compared with every configured one in constant time: both sides are hashed
//! (SHA-256) to digests of one length, and the digests compared with `subtle`, over
//! every key, without stopping at a match, so the time says nothing about which key
//! (or which byte of one) matched. Keys are never logged, and their `Debug` shows
//! their count only.

use std::fmt;

use ring::digest::{SHA256, digest};
use subtle::{Choice, ConstantTimeEq};

/// The shortest key accepted, in bytes: 16.
pub const MIN_KEY_LEN: usize = 16;

/// The most keys one API takes: 64.
pub const MAX_KEYS: usize = 64;

/// The keys an API accepts (one or more: rotate by adding the new one, then removing
/// the old).
///
/// ```
/// use wsevents::http_api::ApiKeys;
/// let keys = ApiKeys::parse("# the backend's\n0123456789abcdef0123\n\nfedcba9876543210fedc\n")?;
/// assert_eq!(keys.len(), 2);
/// assert!(keys.accepts("fedcba9876543210fedc") && !keys.accepts("nope"));
/// # Ok::<(), wsevents::http_api::KeyError>(())
/// ```
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

/// Why a keys file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key in it (only blank lines and `#` comments).
    #[error("no API key in it (one per line)")]
    None,
    /// A key shorter than [`MIN_KEY_LEN`] bytes, on this line (1-based).
    #[error("line {0}: an API key is at least {MIN_KEY_LEN} bytes")]
    TooShort(usize),
    /// A key with a space, tab or control character inside, on this line.
    #[error("line {0}: an API key has no spaces or control characters")]
    BadCharacter(usize),
    /// More than [`MAX_KEYS`] keys.
    #[error("more than {MAX_KEYS} API keys")]
    TooMany,
}

impl ApiKeys {
    /// The keys of a keys file: one per line, surrounding spaces ignored; blank lines
    /// and lines starting with `#` skipped.
    pub fn parse(text: &str) -> Result<ApiKeys, KeyError> {
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            if key.len() < MIN_KEY_LEN {
                return Err(KeyError::TooShort(n + 1));
            }
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(KeyError::BadCharacter(n + 1));
            }
            if digests.len() == MAX_KEYS {
                return Err(KeyError::TooMany);
            }
            digests.push(sha256(key.as_bytes()));
        }
        if digests.is_empty() {
            return Err(KeyError::None);
        }
        Ok(ApiKeys { digests })
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Never: a set of keys has one at least.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys (in constant time, see the module).
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = sha256(presented.as_bytes());
        let mut found = Choice::from(0);
        for key in &self.digests {
            found |= key.ct_eq(&presented);
        }
        found.into()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_is_refused_with_its_line() {
        assert_eq!(ApiKeys::parse("\n# none\n").err(), Some(KeyError::None));
        assert_eq!(
            ApiKeys::parse("0123456789abcdef\nshort\n").err(),
            Some(KeyError::TooShort(2))
        );
        assert_eq!(
            ApiKeys::parse("0123456789 abcdef").err(),
            Some(KeyError::BadCharacter(1))
        );
        let many: String = (0..=MAX_KEYS).map(|n| format!("key-{n:016}\n")).collect();
        assert_eq!(ApiKeys::parse(&many).err(), Some(KeyError::TooMany));
    }

    #[test]
    fn only_a_whole_key_is_accepted() {
        let keys = ApiKeys::parse("  0123456789abcdef  \r\n").unwrap();
        assert!(keys.accepts("0123456789abcdef"));
        for wrong in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
        ] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{keys:?}"), "ApiKeys(1 keys)");
    }
}
