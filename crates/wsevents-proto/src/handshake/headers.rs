//! Header pieces both roles share: the `Sec-WebSocket-Accept` computation (§1.3),
//! comma-separated token lists (`Connection: keep-alive, Upgrade`), and the
//! `Sec-WebSocket-Extensions` grammar (§9.1).
//!
//! Whether an extension's parameters are acceptable is not decided here; that is
//! `extension/`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::HandshakeError;

/// The GUID RFC 6455 appends to the key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key ++ GUID)).
///
/// ```
/// use wsevents_proto::handshake::accept_key;
/// // RFC 6455 §1.3.
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Whether `s` is an RFC 9110 token (non-empty, `tchar`s only).
///
/// ```
/// use wsevents_proto::handshake::is_token;
/// assert!(is_token("chat.v2"));
/// assert!(!is_token("two words") && !is_token(""));
/// ```
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The elements of a comma-separated list, trimmed, empty ones skipped.
///
/// ```
/// use wsevents_proto::handshake::tokens;
/// let list: Vec<&[u8]> = tokens(b"keep-alive, , Upgrade").collect();
/// assert_eq!(list, [&b"keep-alive"[..], &b"Upgrade"[..]]);
/// ```
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated list contains `token`, ignoring ASCII case.
///
/// ```
/// use wsevents_proto::handshake::has_token;
/// assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
/// ```
pub fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// One extension in a `Sec-WebSocket-Extensions` header, with its parameters.
///
/// ```
/// use wsevents_proto::handshake::{ExtensionOffer, parse_extensions};
/// let offers = parse_extensions("permessage-deflate; client_max_window_bits, x-foo").unwrap();
/// assert_eq!(offers[0].name, "permessage-deflate");
/// assert_eq!(offers[0].to_string(), "permessage-deflate; client_max_window_bits");
/// assert_eq!(offers[1], ExtensionOffer::new("x-foo"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension's name.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<ExtensionParam>,
}

/// One parameter of an [`ExtensionOffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// The parameter's name.
    pub name: String,
    /// Its value, if it has one (quotes removed).
    pub value: Option<String>,
}

impl ExtensionOffer {
    /// An offer with no parameters.
    pub fn new(name: impl Into<String>) -> Self {
        ExtensionOffer {
            name: name.into(),
            params: Vec::new(),
        }
    }

    /// Add a parameter.
    pub fn param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push(ExtensionParam {
            name: name.into(),
            value,
        });
        self
    }
}

impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for param in &self.params {
            write!(f, "; {}", param.name)?;
            if let Some(value) = &param.value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// Parse a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1):
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( ";" extension-param )
/// extension-param = token [ "=" (token | quoted-string) ]
/// ```
/// A quoted value must be a token once unquoted.
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let bad = |why: &str| HandshakeError::InvalidExtensionHeader(format!("{why} in {value:?}"));
    let mut offers = Vec::new();
    for element in split_outside_quotes(value, ',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        let mut parts = split_outside_quotes(element, ';').into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(bad("invalid extension name"));
        }
        let mut offer = ExtensionOffer::new(name);
        for param in parts {
            let (pname, pvalue) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (param.trim(), None),
            };
            if !is_token(pname) {
                return Err(bad("invalid parameter name"));
            }
            let pvalue = match pvalue {
                None => None,
                Some(v) => {
                    let unquoted = match v.strip_prefix('"') {
                        Some(rest) => rest
                            .strip_suffix('"')
                            .ok_or_else(|| bad("unterminated quoted string"))?,
                        None => v,
                    };
                    if !is_token(unquoted) {
                        return Err(bad("invalid parameter value"));
                    }
                    Some(unquoted.to_owned())
                }
            };
            offer.params.push(ExtensionParam {
                name: pname.to_owned(),
                value: pvalue,
            });
        }
        offers.push(offer);
    }
    if offers.is_empty() {
        return Err(bad("empty extension list"));
    }
    Ok(offers)
}

/// Split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn token_lists_ignore_case_and_space() {
        assert!(has_token(b"Upgrade", "upgrade"));
        assert!(has_token(b"keep-alive,UPGRADE", "upgrade"));
        assert!(!has_token(b"keep-alive", "upgrade"));
        assert!(!has_token(b"upgraded", "upgrade"));
    }

    #[test]
    fn extension_grammar_accepted() {
        let offers = parse_extensions(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\" , , x-webkit ;a=b",
        )
        .unwrap();
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[0].params[1].value.as_deref(), Some("10"));
        assert_eq!(offers[1].to_string(), "x-webkit; a=b");
    }

    #[test]
    fn extension_grammar_refused() {
        for bad in [
            "",
            " , ",
            "a b",
            "ext; =1",
            "ext; p=\"1",
            "ext; p=\"a b\"",
            "ext; p=a b",
            "ext;;",
        ] {
            assert!(parse_extensions(bad).is_err(), "{bad:?}");
        }
    }
}
