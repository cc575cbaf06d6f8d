//! The publish rate of one wsevents.v1 connection: a token bucket, so that one client
//! cannot flood a topic's subscribers (and its history) as fast as it can write,
//! while a client that was quiet may still send a burst at once.
//!
//! The bucket holds up to `burst` tokens and gains `per_second` a second; a publish
//! takes one, and a publish that finds none is refused `rate_limited` with how long to
//! wait. That wait counts the publishes refused in a row, up to the burst: a client that
//! sent 1,000 at once and had 800 refused is told, by the last refusal, to come back
//! once the bucket is full again, and its retry of the 800 then passes a burst's worth
//! at once instead of one publish per retry.
//!
//! Once a publish is refused, every later one is refused too until the time it was
//! told (even if a token came meanwhile), so a connection's publications are stored
//! in the order it sent them: none overtakes a refused one that its client re-sends
//! when told.
//!
//! The time comes from the runtime (`tokio::time::Instant`: paused and advanced in
//! tests), read by the caller and passed in, so the bucket itself is plain arithmetic.

use std::time::Duration;

use tokio::time::Instant;

/// A publish rate: a sustained rate and a burst (the bucket's size).
///
/// ```
/// use wsevents::pubsub::{DEFAULT_PUBLISH_RATE, PublishRate};
/// assert_eq!(DEFAULT_PUBLISH_RATE, PublishRate::new(100, 200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    /// Publishes a second, sustained (at least 1).
    pub per_second: u32,
    /// Publishes at once after a quiet spell: the bucket's size (at least 1).
    pub burst: u32,
}

impl PublishRate {
    /// `per_second` sustained, `burst` at once (each at least 1).
    pub const fn new(per_second: u32, burst: u32) -> PublishRate {
        PublishRate {
            per_second: if per_second == 0 { 1 } else { per_second },
            burst: if burst == 0 { 1 } else { burst },
        }
    }
}

/// The default publish rate of a connection: 100 a second, bursts of 200.
///
/// A person's client publishes a few messages a second (a chat, reactions); an app
/// that streams state (a cursor, a game) at display rate sends 60 a second: both fit
/// under 100 a second with room. The burst is two seconds' worth: a client that was
/// quiet may send that many at once (a page restoring its state, a client re-sending
/// what it queued while reconnecting) without a refusal. Past it, publishes pass at the
/// sustained rate. A backend that pushes more belongs on its own connection with its
/// own rate ([`PubsubServer::publish_rate`](super::PubsubServer::publish_rate)).
pub const DEFAULT_PUBLISH_RATE: PublishRate = PublishRate::new(100, 200);

/// A connection's bucket.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
    /// Publishes refused since the last one that passed.
    refused_in_row: u32,
    /// The latest time told to a refused publish: none passes before it.
    closed_until: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: PublishRate, now: Instant) -> TokenBucket {
        let rate = PublishRate::new(rate.per_second, rate.burst);
        TokenBucket {
            per_second: f64::from(rate.per_second),
            burst: f64::from(rate.burst),
            tokens: f64::from(rate.burst),
            last: now,
            refused_in_row: 0,
            closed_until: None,
        }
    }

    /// Take a token for one publish at `now`; refused (no token, or a publish refused
    /// before was told a later time), how long until the bucket holds one for this
    /// publish and for each refused in a row before it (at most a full bucket), rounded
    /// up to the millisecond.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        let open = self.closed_until.is_none_or(|until| now >= until);
        // (A hair of slack for the float sums: a token due now is there now.)
        if open && self.tokens >= 1.0 - 1e-9 {
            self.closed_until = None;
            self.tokens = (self.tokens - 1.0).max(0.0);
            self.refused_in_row = 0;
            return Ok(());
        }
        self.refused_in_row = self.refused_in_row.saturating_add(1);
        let wanted = f64::from(self.refused_in_row).min(self.burst);
        let seconds = (wanted - self.tokens) / self.per_second;
        let millis = (seconds * 1000.0).ceil().max(1.0);
        let wait = Duration::from_millis(millis as u64);
        let until = now + wait;
        self.closed_until = Some(self.closed_until.map_or(until, |t| t.max(until)));
        Err(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_passes_a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(PublishRate::new(100, 5), start);
        for _ in 0..5 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        // Empty: one token comes every 10 ms.
        assert_eq!(bucket.take(start), Err(ms(10)));
        assert_eq!(bucket.take(start + ms(10)), Ok(()));
        assert!(bucket.take(start + ms(15)).is_err());
        assert_eq!(bucket.take(start + ms(20)), Ok(()));
        // A quiet second fills it, but only up to the burst.
        let later = start + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn refusals_in_a_row_are_told_to_wait_for_their_share_up_to_a_full_bucket() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(PublishRate::new(100, 3), start);
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        // The 1st, 2nd, 3rd refused need 1, 2, 3 tokens; later ones a full bucket.
        assert_eq!(bucket.take(start), Err(ms(10)));
        assert_eq!(bucket.take(start), Err(ms(20)));
        assert_eq!(bucket.take(start), Err(ms(30)));
        assert_eq!(bucket.take(start), Err(ms(30)));
        // Retried when told, the three pass; a pass starts the count again.
        let retry = start + ms(30);
        for _ in 0..3 {
            assert_eq!(bucket.take(retry), Ok(()));
        }
        assert_eq!(bucket.take(retry), Err(ms(10)));
    }

    #[test]
    fn after_a_refusal_none_passes_before_the_time_it_was_told() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(PublishRate::new(100, 2), start);
        bucket.take(start).unwrap();
        bucket.take(start).unwrap();
        assert_eq!(bucket.take(start), Err(ms(10)));
        assert_eq!(bucket.take(start), Err(ms(20)));
        // A token came at 10 ms, but the second refused was told 20 ms: a publish
        // sent after it may not overtake it.
        assert!(bucket.take(start + ms(15)).is_err());
        // (Told 5 ms: three refused in a row want the full bucket of 2; still 20 ms.)
        let retry = start + ms(30);
        assert_eq!(bucket.take(retry), Ok(()));
        assert_eq!(bucket.take(retry), Ok(()));
        assert!(bucket.take(retry).is_err());
    }

    #[test]
    fn waits_are_rounded_up_to_the_millisecond() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(PublishRate::new(3, 1), start);
        bucket.take(start).unwrap();
        // One token every 333.3 ms: 334 ms, never 333.
        assert_eq!(bucket.take(start), Err(ms(334)));
        assert!(bucket.take(start + ms(333)).is_err());
        // Two refusals in a row by then, but the bucket holds one token at most: due
        // at 334 ms.
        assert_eq!(bucket.take(start + ms(334)), Ok(()));
    }

    #[test]
    fn zero_is_raised_to_one() {
        assert_eq!(PublishRate::new(0, 0), PublishRate::new(1, 1));
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            PublishRate {
                per_second: 0,
                burst: 0,
            },
            start,
        );
        assert_eq!(bucket.take(start), Ok(()));
        assert_eq!(bucket.take(start), Err(ms(1000)));
    }
}
