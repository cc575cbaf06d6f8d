//! JSON strings written straight into a buffer sized for them, for the frame on the
//! hub's hot path (a `pub`, made once per publication for all its subscribers): its
//! length is counted first, so the frame is one allocation of the right size, and the
//! bytes written are exactly serde_json's (the tests compare them with the derived
//! codec's).

/// What serde_json adds to each byte of a string it writes: 1 for `"`, `\` and the
/// control characters with a short escape (`\b \t \n \f \r`), 5 for the other control
/// characters (`\u00XX`), 0 for everything else (UTF-8 is written as it is).
static EXTRA: [u8; 256] = {
    let mut extra = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        extra[b] = 5;
        b += 1;
    }
    extra[0x08] = 1;
    extra[0x09] = 1;
    extra[0x0a] = 1;
    extra[0x0c] = 1;
    extra[0x0d] = 1;
    extra[b'"' as usize] = 1;
    extra[b'\\' as usize] = 1;
    extra
};

/// The length of `s` as a JSON string: quoted and escaped as serde_json does.
pub(super) fn str_len(s: &str) -> usize {
    let extra: usize = s.bytes().map(|b| usize::from(EXTRA[usize::from(b)])).sum();
    s.len() + extra + 2
}

/// Append `s` as a JSON string, quoted and escaped as serde_json does.
pub(super) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (at, b) in s.bytes().enumerate() {
        if EXTRA[usize::from(b)] == 0 {
            continue;
        }
        // Escapes are ASCII: `at` is on a character boundary.
        out.push_str(&s[start..at]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x09 => out.push_str("\\t"),
            0x0a => out.push_str("\\n"),
            0x0c => out.push_str("\\f"),
            0x0d => out.push_str("\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = at + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The number of decimal digits of `n`.
pub(super) fn u64_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |digits| digits as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_and_counted_as_serde_json_writes_them() {
        let mut every_byte = String::new();
        for c in (0u8..0x80).map(char::from) {
            every_byte.push(c);
        }
        for s in [
            "",
            "plain",
            "hé \"x\" \\ / \u{7f} κόσμε 🎉",
            "\u{0}\u{1f}\u{8}\t\n\u{c}\r",
            &every_byte,
        ] {
            let expected = serde_json::to_string(s).unwrap();
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, expected);
            assert_eq!(str_len(s), expected.len(), "{s:?}");
        }
    }

    #[test]
    fn digits_are_counted() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX - 1, u64::MAX] {
            assert_eq!(u64_len(n), n.to_string().len(), "{n}");
        }
    }
}
