//! Header pieces both roles share: the `Sec-WebSocket-Accept` computation (§1.3, §4.2.2),
//! comma-separated token lists (`Connection: keep-alive, Upgrade`), and the
//! `Sec-WebSocket-Extensions` grammar (§9.1).
//!
//! This module owns syntax only. Whether an extension's parameters are acceptable is not
//! decided here; that is `extension/`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::HandshakeError;

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key ++ GUID)).
///
/// `key` is the base64 text as it appears in the header, not the 16 bytes it encodes.
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

/// Whether `s` is an RFC 9110 `token`: one or more `tchar`s.
///
/// ```
/// use wsevents_proto::handshake::is_token;
/// assert!(is_token("chat.v2") && is_token("permessage-deflate"));
/// assert!(!is_token("two words") && !is_token("") && !is_token("a,b") && !is_token("é"));
/// ```
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" /
/// "|" / "~" / DIGIT / ALPHA` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Optional whitespace (RFC 9110 §5.6.3): spaces and horizontal tabs only.
fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The elements of a comma-separated list (`#element`, RFC 9110 §5.6.1), with
/// surrounding spaces and tabs trimmed and empty elements skipped.
///
/// ```
/// use wsevents_proto::handshake::tokens;
/// let list: Vec<&[u8]> = tokens(b" keep-alive, ,\tUpgrade ,").collect();
/// assert_eq!(list, [&b"keep-alive"[..], &b"Upgrade"[..]]);
/// ```
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Whether a comma-separated list contains `token`, ignoring ASCII case.
///
/// ```
/// use wsevents_proto::handshake::has_token;
/// assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
/// assert!(!has_token(b"upgraded", "upgrade"));
/// ```
pub fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// One extension in a `Sec-WebSocket-Extensions` header, with its parameters: an offer
/// in a client's request, or the answer to one in a server's response.
///
/// ```
/// use wsevents_proto::handshake::{ExtensionOffer, parse_extensions};
///
/// let offer = ExtensionOffer::new("permessage-deflate")
///     .param("client_max_window_bits", None)
///     .param("server_max_window_bits", Some("10".into()));
/// let header = offer.to_string();
/// assert_eq!(header, "permessage-deflate; client_max_window_bits; server_max_window_bits=10");
/// assert_eq!(parse_extensions(&header).unwrap(), [offer]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension's name, a token.
    pub name: String,
    /// Its parameters, in order.
    pub params: Vec<ExtensionParam>,
}

/// One parameter of an [`ExtensionOffer`]: `name` or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    /// The parameter's name, a token.
    pub name: String,
    /// Its value, if it has one, with quotes and escapes removed.
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

    /// Add a parameter (builder style).
    pub fn param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push(ExtensionParam {
            name: name.into(),
            value,
        });
        self
    }
}

/// The header syntax: `name; param; param=value`. A value that is not a token is
/// written as a quoted string, so the output always parses.
impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for param in &self.params {
            write!(f, "; {}", param.name)?;
            match &param.value {
                None => {}
                Some(value) if is_token(value) => write!(f, "={value}")?,
                Some(value) => {
                    f.write_str("=\"")?;
                    for c in value.chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Parse a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1, with the list and
/// whitespace rules of RFC 9110 §5.6):
///
/// ```text
/// extension-list  = 1#extension
/// extension       = extension-token *( OWS ";" OWS extension-param )
/// extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
/// ```
///
/// A quoted value must be a token once unquoted (`"10"` is `10`). Empty list elements
/// (`a, , b`) are skipped, but the list must name at least one extension. Whether the
/// parameters are *acceptable* is not decided here.
///
/// ```
/// use wsevents_proto::handshake::parse_extensions;
/// let offers = parse_extensions("permessage-deflate; server_max_window_bits=\"10\", x-foo").unwrap();
/// assert_eq!(offers.len(), 2);
/// assert_eq!(offers[0].params[0].value.as_deref(), Some("10"));
/// assert!(parse_extensions("permessage-deflate; bits=1 0").is_err());
/// ```
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut cursor = Cursor {
        input: value.as_bytes(),
        pos: 0,
    };
    let mut offers = Vec::new();
    loop {
        cursor.skip_ows();
        match cursor.peek() {
            None => break,
            Some(b',') => {
                cursor.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = cursor
            .token()
            .ok_or_else(|| cursor.error("expected an extension name"))?;
        let mut offer = ExtensionOffer::new(name);
        loop {
            cursor.skip_ows();
            match cursor.peek() {
                None => break,
                Some(b',') => {
                    cursor.pos += 1;
                    break;
                }
                Some(b';') => {
                    cursor.pos += 1;
                    offer.params.push(cursor.param()?);
                }
                Some(_) => return Err(cursor.error("expected \";\" or \",\"")),
            }
        }
        offers.push(offer);
    }
    if offers.is_empty() {
        return Err(HandshakeError::InvalidExtensionHeader(
            "no extension in the list".into(),
        ));
    }
    Ok(offers)
}

/// A position in a header value being parsed.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.pos += 1;
        }
    }

    /// The token at the cursor, or `None` (and no move) if there is none.
    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        let token = self.input.get(start..self.pos)?;
        // Invariant: tchars are ASCII, so this is UTF-8; an empty token is `None`.
        match std::str::from_utf8(token) {
            Ok(token) if !token.is_empty() => Some(token.to_owned()),
            _ => None,
        }
    }

    /// `OWS token [ OWS "=" OWS ( token / quoted-string ) ]`, after a `;`.
    fn param(&mut self) -> Result<ExtensionParam, HandshakeError> {
        self.skip_ows();
        let name = self
            .token()
            .ok_or_else(|| self.error("expected a parameter name"))?;
        self.skip_ows();
        if self.peek() != Some(b'=') {
            return Ok(ExtensionParam { name, value: None });
        }
        self.pos += 1;
        self.skip_ows();
        let value = if self.peek() == Some(b'"') {
            let start = self.pos;
            let value = self.quoted_string()?;
            if !is_token(&value) {
                self.pos = start;
                return Err(self.error("quoted parameter value is not a token"));
            }
            value
        } else {
            self.token()
                .ok_or_else(|| self.error("expected a parameter value"))?
        };
        Ok(ExtensionParam {
            name,
            value: Some(value),
        })
    }

    /// `DQUOTE *( qdtext / quoted-pair ) DQUOTE` (RFC 9110 §5.6.4), unescaped.
    fn quoted_string(&mut self) -> Result<String, HandshakeError> {
        let start = self.pos;
        self.pos += 1;
        let mut content = Vec::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("unterminated quoted string"));
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if is_qpair_char(b) => content.push(b),
                        _ => return Err(self.error("invalid escape in quoted string")),
                    }
                }
                Some(b) if is_qdtext(b) => content.push(b),
                Some(_) => return Err(self.error("invalid character in quoted string")),
            }
            self.pos += 1;
        }
        // Non-UTF-8 content (obs-text) is never a token; say so in the caller's terms.
        String::from_utf8(content).map_err(|_| self.error("quoted parameter value is not a token"))
    }

    fn error(&self, what: &str) -> HandshakeError {
        HandshakeError::InvalidExtensionHeader(format!("{what} at byte {}", self.pos))
    }
}

/// `qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text`.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What may follow a backslash: `HTAB / SP / VCHAR / obs-text`.
fn is_qpair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        params
            .iter()
            .fold(ExtensionOffer::new(name), |offer, (n, v)| {
                offer.param(*n, v.map(str::to_owned))
            })
    }

    #[test]
    fn rfc_6455_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(GUID.len(), 36);
    }

    #[test]
    fn tokens_are_rfc_9110_tchars() {
        for good in ["a", "chat", "x-1.2_3", "!#$%&'*+-.^_`|~", "Z9"] {
            assert!(is_token(good), "{good:?}");
        }
        for bad in [
            "", " ", "a b", "a,b", "a;b", "a=b", "\"a\"", "a/b", "a\tb", "é", "a\x7f",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn token_lists_trim_ows_and_skip_empty_elements() {
        let list: Vec<&[u8]> = tokens(b",, a ,\tb\t,c,,").collect();
        assert_eq!(list, [&b"a"[..], b"b", b"c"]);
        assert_eq!(tokens(b"").count(), 0);
        assert_eq!(tokens(b" , ,").count(), 0);
        // Only SP and HTAB are whitespace here.
        let odd: Vec<&[u8]> = tokens(b"\x0ba\x0b").collect();
        assert_eq!(odd, [&b"\x0ba\x0b"[..]]);
    }

    #[test]
    fn token_lists_ignore_case_and_space() {
        assert!(has_token(b"Upgrade", "upgrade"));
        assert!(has_token(b"UPGRADE", "upgrade"));
        assert!(has_token(b"keep-alive,UPGRADE", "upgrade"));
        assert!(has_token(b"keep-alive, Upgrade", "Upgrade"));
        assert!(has_token(b"WebSocket", "websocket"));
        assert!(!has_token(b"keep-alive", "upgrade"));
        assert!(!has_token(b"upgraded", "upgrade"));
        assert!(!has_token(b"up grade", "upgrade"));
        assert!(!has_token(b"", "upgrade"));
    }

    #[test]
    fn extension_grammar_accepted() {
        let pmd = "permessage-deflate";
        let table: &[(&str, Vec<ExtensionOffer>)] = &[
            ("x", vec![offer("x", &[])]),
            (
                "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
                vec![offer(
                    pmd,
                    &[
                        ("client_max_window_bits", None),
                        ("server_max_window_bits", Some("10")),
                    ],
                )],
            ),
            // Quoted values are unquoted; escapes are removed.
            (
                "permessage-deflate;server_max_window_bits=\"10\"",
                vec![offer(pmd, &[("server_max_window_bits", Some("10"))])],
            ),
            ("e; p=\"1\\0\"", vec![offer("e", &[("p", Some("10"))])]),
            // A quoted comma or semicolon would not be a token, but a quoted token is.
            (
                "e; p=\"a.b\", f",
                vec![offer("e", &[("p", Some("a.b"))]), offer("f", &[])],
            ),
            // Spaces and tabs around every separator.
            (
                " \tpermessage-deflate \t;\t client_max_window_bits = 15 ,x-foo ",
                vec![
                    offer(pmd, &[("client_max_window_bits", Some("15"))]),
                    offer("x-foo", &[]),
                ],
            ),
            // Empty list elements are skipped.
            (
                ", , a ,, b; c ,",
                vec![offer("a", &[]), offer("b", &[("c", None)])],
            ),
            // The same extension offered twice, with different parameters (RFC 7692 §5).
            (
                "permessage-deflate; client_max_window_bits=10, permessage-deflate",
                vec![
                    offer(pmd, &[("client_max_window_bits", Some("10"))]),
                    offer(pmd, &[]),
                ],
            ),
        ];
        for (input, expected) in table {
            assert_eq!(&parse_extensions(input).unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn extension_grammar_refused() {
        for bad in [
            "",
            " ",
            " , ,",
            "a b",
            "a; b c",
            "ext; =1",
            "ext;",
            "ext;;",
            "ext; p=",
            "ext; p= ,",
            "ext; p==1",
            "ext; p=\"1",
            "ext; p=\"1\\",
            "ext; p=\"\"",
            "ext; p=\"a b\"",
            "ext; p=\"a,b\"",
            "ext; p=\"é\"",
            "ext; p=a b",
            "ext; p=\"1\"x",
            "ext; p=é",
            "\"ext\"",
            "ext/1",
            "ext; p=1/2",
            "é",
            ";p",
            "ext, ; p",
        ] {
            let result = parse_extensions(bad);
            assert!(
                matches!(result, Err(HandshakeError::InvalidExtensionHeader(_))),
                "{bad:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn display_round_trips_through_the_parser() {
        let offers = [
            offer("permessage-deflate", &[]),
            offer("e", &[("a", None), ("b", Some("1")), ("c", None)]),
            // A value that is not a token is written quoted and escaped.
            offer("e", &[("p", Some("a \"b\" \\c"))]),
        ];
        assert_eq!(offers[1].to_string(), "e; a; b=1; c");
        assert_eq!(offers[2].to_string(), "e; p=\"a \\\"b\\\" \\\\c\"");
        for offer in &offers[..2] {
            assert_eq!(
                parse_extensions(&offer.to_string()).unwrap(),
                std::slice::from_ref(offer)
            );
        }
        // Syntactically valid, but its unquoted value is no token: refused.
        assert!(parse_extensions(&offers[2].to_string()).is_err());
    }
}
