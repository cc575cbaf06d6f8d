//! Randomness, in one place for the workspace: the operating system's bytes for what a
//! peer must not predict (masking keys, `Sec-WebSocket-Key`), and a cheap generator for
//! what only has to spread (backoff jitter, epochs, node ids, idempotency key
//! prefixes), which costs no system call.
//!
//! ```
//! use wsevents_proto::random;
//!
//! let mut key = [0u8; 16];
//! random::fill(&mut key);
//! let jitter = random::unit();
//! assert!((0.0..1.0).contains(&jitter));
//! assert_ne!(random::u64(), random::u64());
//! ```

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// Fill `buf` from the operating system's generator (`getrandom`). Where it has none
/// (not on any supported system), from [`u64()`], whose keys std seeds randomly: still
/// unpredictable to a peer, though not cryptographically strong.
pub fn fill(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        fill_from_u64(buf);
    }
}

/// The fallback of [`fill`].
fn fill_from_u64(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let word = u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// 64 bits of good statistical quality, not for secrets: SipHash of a process-wide
/// counter under std's randomly seeded hash keys (seeded per thread, then stepped per
/// use), so two calls, two threads or two processes do not repeat one another.
pub fn u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Uniform in `[0, 1)`: the 53 bits of an `f64`'s mantissa from [`u64()`].
pub fn unit() -> f64 {
    (u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_stays_in_the_interval_and_spreads_over_it() {
        let draws: Vec<f64> = (0..1000).map(|_| unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        // Each tenth of the interval gets some of 1,000 draws (a miss: p < 1e-45).
        for tenth in 0..10 {
            let low = f64::from(tenth) / 10.0;
            assert!(
                draws.iter().any(|u| (low..low + 0.1).contains(u)),
                "nothing in [{low}, {})",
                low + 0.1
            );
        }
    }

    #[test]
    fn draws_do_not_repeat() {
        let mut seen: Vec<u64> = (0..10_000).map(|_| u64()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10_000);
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill(&mut a);
        fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn both_ways_of_filling_cover_lengths_that_are_not_words() {
        for fill in [fill, fill_from_u64] {
            for len in [0, 1, 7, 9, 4096 + 3] {
                let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                fill(&mut a);
                fill(&mut b);
                if len >= 7 {
                    assert!(a.iter().any(|&x| x != 0), "{len}");
                    assert_ne!(a, b, "{len}");
                }
            }
        }
    }
}
