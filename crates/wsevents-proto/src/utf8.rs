//! UTF-8 validation of text messages (RFC 6455 §8.1), incremental and fail-fast.
//!
//! A text message may arrive in many frames and each frame in many reads, and a
//! character may be split anywhere. [`Utf8Validator`] checks each piece as it comes
//! (with `simdutf8`), carrying at most three bytes of an unfinished character between
//! pieces, and fails at the first byte that no valid text could continue with, without
//! waiting for the end of the message. The Autobahn 6.* cases test exactly that.
//!
//! It owns no message bytes and does not know about frames.

/// The bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct InvalidUtf8;

/// Check a whole buffer.
///
/// ```
/// use wsevents_proto::utf8::validate;
/// assert!(validate("κόσμε".as_bytes()).is_ok());
/// assert!(validate(&[0xed, 0xa0, 0x80]).is_err());
/// ```
pub fn validate(data: &[u8]) -> Result<(), InvalidUtf8> {
    simdutf8::basic::from_utf8(data)
        .map(|_| ())
        .map_err(|_| InvalidUtf8)
}

/// Incremental UTF-8 validation across pieces.
///
/// ```
/// use wsevents_proto::utf8::Utf8Validator;
/// let mut v = Utf8Validator::new();
/// let text = "κόσμε".as_bytes();
/// v.feed(&text[..1]).unwrap(); // half of κ
/// v.feed(&text[1..]).unwrap();
/// v.finish().unwrap();
/// // A surrogate fails as soon as its second byte is seen.
/// assert!(v.feed(&[0xed]).is_ok());
/// assert!(v.feed(&[0xa0]).is_err());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of an unfinished character.
    partial: [u8; 4],
    partial_len: usize,
}

impl Utf8Validator {
    /// A validator at a character boundary.
    pub fn new() -> Self {
        Utf8Validator::default()
    }

    /// Check the next piece. Fails at the first byte that makes the text invalid.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let need = char_width(self.partial[0]).saturating_sub(self.partial_len);
            let take = need.min(data.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&data[..take]);
            self.partial_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.partial[..self.partial_len]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()), // still unfinished
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // A valid prefix of a character at the end: keep it for the next piece.
                let tail = &data[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// The message ended: fails if a character is unfinished. Resets the validator.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.partial_len > 0;
        self.reset();
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }

    /// Forget any unfinished character.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }

    /// Whether no character is unfinished.
    pub fn is_at_boundary(&self) -> bool {
        self.partial_len == 0
    }
}

/// The length of the character a leading byte starts (1 for anything that cannot
/// lead, which then fails validation).
fn char_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    /// The index of the byte at which feeding one byte at a time first fails.
    fn fails_at(bytes: &[u8]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        bytes.iter().position(|b| v.feed(&[*b]).is_err())
    }

    #[test]
    fn valid_text_split_at_every_position() {
        let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 你好 😀 \u{10FFFF}".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(feed_all(&[&text[..cut], &text[cut..]]), Ok(()), "cut {cut}");
        }
        let singles: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(feed_all(&singles), Ok(()));
    }

    #[test]
    fn fails_at_the_first_impossible_byte() {
        // Autobahn 6.4.1: κόσμε then a surrogate.
        let bytes = [
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64,
        ];
        assert_eq!(fails_at(&bytes), Some(10));
        assert_eq!(
            fails_at(&[0xf4, 0x90, 0x80, 0x80]),
            Some(1),
            "over U+10FFFF"
        );
        assert_eq!(fails_at(&[0xc0, 0xaf]), Some(0), "overlong");
        assert_eq!(fails_at(&[0x80]), Some(0), "lone continuation");
        assert_eq!(fails_at(&[0xe0, 0x80]), Some(1), "overlong three-byte");
        assert_eq!(fails_at(&[0x61, 0xff]), Some(1));
    }

    #[test]
    fn truncated_character_fails_only_at_finish() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xe2, 0x82]).is_ok());
        assert!(!v.is_at_boundary());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert!(v.is_at_boundary(), "finish resets");
    }

    proptest! {
        #[test]
        fn incremental_agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            points.extend([0, data.len()]);
            points.sort_unstable();
            let pieces: Vec<&[u8]> = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
            prop_assert_eq!(feed_all(&pieces).is_ok(), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn valid_strings_split_anywhere_pass(text in "\\PC{0,40}", cut in any::<prop::sample::Index>()) {
            let bytes = text.as_bytes();
            let cut = cut.index(bytes.len() + 1);
            prop_assert_eq!(feed_all(&[&bytes[..cut], &bytes[cut..]]), Ok(()));
        }
    }
}
