//! Masking (RFC 6455 §5.3): XOR of a payload with a 4-byte key, and the source of the
//! keys a client masks with.
//!
//! The hot loop is here and nowhere else, beside its byte-wise reference
//! ([`apply_mask_bytewise`]), with a randomized test that the two agree and a criterion
//! bench (`benches/mask.rs`). The fast version XORs 64-byte blocks as eight 64-bit words
//! against the key repeated, a shape LLVM turns into SIMD without `unsafe`, and short
//! buffers (most frames are small) a word at a time.
//!
//! `offset` is the position of the buffer's first byte within the frame payload, so a
//! payload unmasked piece by piece as it arrives gives the same bytes as unmasking it
//! whole.

/// XOR `buf` with `key`, where `buf[0]` is byte `offset` of the payload.
///
/// ```
/// use wsevents_proto::mask::apply_mask;
/// // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    // Most frames are short: their masking is inlined where it is needed.
    if buf.len() < 64 {
        mask_short(buf, key);
    } else {
        mask_long(buf, key);
    }
}

/// How much of a long payload [`extend_masked`] masks at a time: small enough to stay
/// in the L1 cache, a multiple of 4 so that the key stays in phase.
const MASK_BLOCK: usize = 4096;

/// Append `payload` masked with `key` (from its first byte) to `dst`.
///
/// Copying the payload and then masking the copy in place passes over it twice; for a
/// long payload that is twice the memory traffic, since the copy has left the cache by
/// the time it is masked. Here each block is copied to the stack, masked there and
/// appended: the payload is read once and written once.
pub(crate) fn extend_masked(dst: &mut bytes::BytesMut, payload: &[u8], key: [u8; 4]) {
    let word_key = repeat_key(key);
    let mut block = [0u8; MASK_BLOCK];
    for piece in payload.chunks(MASK_BLOCK) {
        let masked = &mut block[..piece.len()];
        let mut out = masked.chunks_exact_mut(8);
        let mut from = piece.chunks_exact(8);
        for (o, i) in (&mut out).zip(&mut from) {
            let mut word = [0u8; 8];
            word.copy_from_slice(i);
            o.copy_from_slice(&(u64::from_ne_bytes(word) ^ word_key).to_ne_bytes());
        }
        let rest = out.into_remainder();
        rest.copy_from_slice(from.remainder());
        mask_short(rest, key);
        dst.extend_from_slice(masked);
    }
}

/// 64-byte blocks of eight words (LLVM turns this into SIMD), then the short rest.
/// On x86-64 with AVX2 (checked at run time, once: the standard library caches the
/// answer) the same loop compiled for 256-bit registers: half the instructions of the
/// baseline's SSE2 per block, where unmasking is most of what a large frame costs
/// (`bench/README.md`, "Masking with AVX2").
#[inline(never)]
fn mask_long(buf: &mut [u8], key: [u8; 4]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: `mask_long_avx2` needs nothing but AVX2, which the CPU was just found
        // to have; the code itself is the safe loop below.
        unsafe {
            mask_long_avx2(buf, key);
        }
        return;
    }
    mask_blocks(buf, key);
}

/// [`mask_blocks`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask_long_avx2(buf: &mut [u8], key: [u8; 4]) {
    mask_blocks(buf, key);
}

/// The loop of [`mask_long`], inlined into each of its compilations.
#[inline(always)]
fn mask_blocks(buf: &mut [u8], key: [u8; 4]) {
    let word_key = repeat_key(key);
    let mut blocks = buf.chunks_exact_mut(64);
    for block in &mut blocks {
        for word in block.chunks_exact_mut(8) {
            xor_word(word, word_key);
        }
    }
    mask_short(blocks.into_remainder(), key);
}

/// Fewer than 64 bytes: a word at a time, then half a word, then at most 3 single
/// bytes. Every piece starts at a multiple of 4, so the key stays in phase.
#[inline(always)]
fn mask_short(buf: &mut [u8], key: [u8; 4]) {
    let word_key = repeat_key(key);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        xor_word(word, word_key);
    }
    let rest = words.into_remainder();
    let (half_word, bytes) = rest.split_at_mut(rest.len() & 4);
    if let Ok(half_word) = <&mut [u8; 4]>::try_from(half_word) {
        *half_word = (u32::from_ne_bytes(*half_word) ^ u32::from_ne_bytes(key)).to_ne_bytes();
    }
    for (b, k) in bytes.iter_mut().zip(key) {
        *b ^= k;
    }
}

/// The key twice over, as the word that XORs 8 payload bytes in memory order (both
/// halves are the same, so the byte order of the platform does not matter).
#[inline(always)]
fn repeat_key(key: [u8; 4]) -> u64 {
    let half = u64::from(u32::from_ne_bytes(key));
    half << 32 | half
}

/// XOR one 8-byte piece with the key repeated twice.
#[inline(always)]
fn xor_word(word: &mut [u8], word_key: u64) {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(word);
    word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word_key).to_ne_bytes());
}

/// The obvious byte-at-a-time version, kept as the reference.
///
/// ```
/// use wsevents_proto::mask::{apply_mask, apply_mask_bytewise};
/// let mut a = vec![7u8; 100];
/// let mut b = a.clone();
/// apply_mask(&mut a, [1, 2, 3, 4], 3);
/// apply_mask_bytewise(&mut b, [1, 2, 3, 4], 3);
/// assert_eq!(a, b);
/// ```
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

/// The key as seen from payload position `offset`.
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Little-endian: the first byte is the lowest, so moving bytes left is a right
    // rotation of the word.
    let shift = 8 * (offset % 4) as u32;
    u32::from_le_bytes(key).rotate_right(shift).to_le_bytes()
}

/// How many random bytes one refill of [`MaskKeys`] fetches (256 keys).
const POOL_SIZE: usize = 1024;

/// The source of client masking keys: unpredictable, as §5.3 requires ("derived from a
/// strong source of entropy"), from the operating system's RNG, fetched in bulk so that
/// one system call serves 256 frames.
///
/// ```
/// use wsevents_proto::mask::MaskKeys;
/// let mut keys = MaskKeys::new();
/// let a = keys.next_key();
/// let b = keys.next_key();
/// assert_ne!((a, b), ([0; 4], [0; 4]));
/// ```
pub struct MaskKeys {
    pool: Box<[u8; POOL_SIZE]>,
    next: usize,
}

impl MaskKeys {
    /// A key source with a fresh pool.
    pub fn new() -> Self {
        let mut keys = MaskKeys {
            pool: Box::new([0; POOL_SIZE]),
            next: 0,
        };
        keys.refill();
        keys
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 4] {
        if self.next + 4 > POOL_SIZE {
            self.refill();
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.pool[self.next..self.next + 4]);
        self.next += 4;
        key
    }

    fn refill(&mut self) {
        // From the OS: keys the peer cannot predict.
        crate::random::fill(&mut self.pool[..]);
        self.next = 0;
    }
}

impl Default for MaskKeys {
    fn default() -> Self {
        MaskKeys::new()
    }
}

impl std::fmt::Debug for MaskKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskKeys").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_6455_5_7_masked_hello() {
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn large_buffers_agree_with_the_reference() {
        for len in [64, 65, 1000, 4096, 65_537] {
            for offset in 0..8 {
                let mut fast: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut slow = fast.clone();
                apply_mask(&mut fast, [0xde, 0xad, 0xbe, 0xef], offset);
                apply_mask_bytewise(&mut slow, [0xde, 0xad, 0xbe, 0xef], offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn the_portable_loop_agrees_with_the_reference_too() {
        // `apply_mask` takes the AVX2 compilation where the CPU has it; this is the
        // other one.
        for len in [64, 127, 128, 4096, 16_385] {
            let mut portable: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let mut slow = portable.clone();
            mask_blocks(&mut portable, [0x37, 0xfa, 0x21, 0x3d]);
            apply_mask_bytewise(&mut slow, [0x37, 0xfa, 0x21, 0x3d], 0);
            assert_eq!(portable, slow, "len {len}");
        }
    }

    #[test]
    fn extend_masked_appends_what_masking_a_copy_gives() {
        for len in [0, 1, 7, 8, 63, 64, 4095, 4096, 4097, 10_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
            let key = [0x12, 0x34, 0x56, 0x78];
            let mut dst = bytes::BytesMut::from(&b"head"[..]);
            extend_masked(&mut dst, &payload, key);
            let mut expected = payload.clone();
            apply_mask_bytewise(&mut expected, key, 0);
            assert_eq!(&dst[..4], b"head", "len {len}");
            assert_eq!(&dst[4..], &expected[..], "len {len}");
        }
    }

    #[test]
    fn keys_are_not_constant_across_refills() {
        let mut keys = MaskKeys::new();
        let all: Vec<[u8; 4]> = (0..600).map(|_| keys.next_key()).collect();
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(
            distinct.len() > 500,
            "{} distinct keys of 600",
            distinct.len()
        );
    }

    proptest! {
        #[test]
        fn fast_equals_bytewise(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key, offset);
            apply_mask_bytewise(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn masking_twice_is_the_identity(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..8) {
            let mut buf = data.clone();
            apply_mask(&mut buf, key, offset);
            apply_mask(&mut buf, key, offset);
            prop_assert_eq!(buf, data);
        }

        #[test]
        fn masking_in_pieces_equals_masking_whole(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], cut in any::<prop::sample::Index>()) {
            let cut = cut.index(data.len() + 1);
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            prop_assert_eq!(pieces, whole);
        }
    }
}
