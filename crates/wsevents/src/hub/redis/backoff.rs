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
    let delay = config.backoff().delay(attempts);
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
