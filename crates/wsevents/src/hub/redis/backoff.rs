//! The wait before reconnecting to Redis: full-jitter exponential backoff, the same for
//! both connections, so that nodes cut off together do not come back together.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::publisher::Job;
use super::{RedisConfig, Shared};

/// Sleep before reconnecting attempt `attempts` (full jitter: uniform in
/// `0..min(max, min * 2^attempts)`), dropping what is published meanwhile (counted).
/// False when the backend stopped.
pub(super) async fn backoff(
    config: &RedisConfig,
    shared: &Shared,
    attempts: u32,
    mut queue: Option<&mut mpsc::Receiver<Job>>,
) -> bool {
    let ceiling = config
        .backoff_min
        .saturating_mul(1u32 << attempts.min(16))
        .min(config.backoff_max);
    let delay = ceiling.mul_f64(jitter(shared.node ^ u64::from(attempts)));
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        let dropped = async {
            match queue.as_mut() {
                Some(queue) => queue.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut sleep => return true,
            () = shared.stop.cancelled() => return false,
            more = dropped => {
                if !more {
                    return false;
                }
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A number in [0, 1) from `seed` and the clock (splitmix64): spreads reconnects.
fn jitter(seed: u64) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut z = seed
        .wrapping_add(u64::from(nanos))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for seed in 0..1000 {
            let j = jitter(seed);
            assert!((0.0..1.0).contains(&j));
        }
    }
}
