//! The wait before trying again, in one place: full-jitter exponential backoff (AWS's
//! "Exponential Backoff and Jitter"). The wait before retry `n` is uniform in
//! `0..min(max, initial · 2^n)`, so clients cut off together do not come back
//! together. The reconnecting socket ([`Reconnect`](crate::Reconnect)), the wsevents.v1
//! client's retries (and through them the CLI's `sub` and `pub`) and the Redis
//! backend's reconnects all wait by it. (A server's [`AcceptBackoff`](crate::AcceptBackoff)
//! waits out its own exhaustion, with no one to collide with: it doubles without
//! jitter.)

use std::time::Duration;

/// Full-jitter exponential backoff from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The bound of the first wait.
    pub(crate) initial: Duration,
    /// The largest bound.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The bound of the wait before retry `n` (0 first): `min(max, initial · 2^n)`,
    /// saturating (no overflow for any `n` or duration).
    pub(crate) fn bound(self, n: u32) -> Duration {
        let factor = 1u32 << n.min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `n` for `unit` in `[0, 1)`: `unit · bound(n)`, at most
    /// the bound (`Duration::mul_f64` would panic where a bound near `Duration::MAX`
    /// rounds up past it).
    pub(crate) fn delay_at(self, n: u32, unit: f64) -> Duration {
        let bound = self.bound(n);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        Duration::try_from_secs_f64(bound.as_secs_f64() * unit)
            .map_or(bound, |wait| wait.min(bound))
    }

    /// The wait before retry `n`: uniform in `0..bound(n)`.
    // The Redis backend's reconnects (and the tests) draw their own number this way.
    #[cfg_attr(not(any(feature = "redis", test)), allow(dead_code))]
    pub(crate) fn delay(self, n: u32) -> Duration {
        self.delay_at(n, wsevents_proto::random::unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bounds_double_up_to_the_max_and_saturate() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(5_000),
        };
        let bounds: Vec<_> = (0..8).map(|n| backoff.bound(n)).collect();
        assert_eq!(
            bounds,
            [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000].map(ms)
        );
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.bound(u32::MAX), Duration::MAX);
        assert_eq!(huge.delay_at(u32::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn waits_are_uniform_under_the_bound() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(5_000),
        };
        assert_eq!(backoff.delay_at(3, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay_at(3, 0.5), ms(400));
        assert_eq!(backoff.delay_at(3, f64::NAN), Duration::ZERO);
        assert_eq!(backoff.delay_at(3, 7.0), ms(800));
        let waits: Vec<_> = (0..200).map(|_| backoff.delay(3)).collect();
        assert!(waits.iter().all(|w| *w < ms(800)));
        assert!(waits.iter().any(|w| *w < ms(400)));
        assert!(waits.iter().any(|w| *w >= ms(400)));
    }
}
