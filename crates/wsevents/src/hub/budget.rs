//! The bound on the history a hub keeps in process, all topics together.
//!
//! Each topic's history is bounded on its own ([`History`]), but any client may publish
//! to any number of topic names, so without a bound for the whole process N topics
//! hold N times the per-topic bound. Every topic's history is charged its payload bytes
//! plus a fixed cost per topic and per publication (the records around them), and the
//! total is kept under [`HubBuilder::max_history_bytes`](super::HubBuilder::max_history_bytes):
//! past it, the least recently published topics are evicted until the total is an
//! eighth below the bound (so that eviction, which visits every topic, runs once per
//! an eighth of the bound published, not once per publish). A topic with subscribers
//! keeps its epoch and offset (its subscribers stay in step; a recovery from before
//! is `recovered: false`); one without loses its whole record (a new epoch next time).
//!
//! Records of idle topics are also swept after [`META_TTL`](super::META_TTL): a shard
//! of the topic map every [`SWEEP_EVERY`] publications.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::HubInner;
use super::history::{History, TopicHistory};
use super::topics::{SHARDS, TopicState};

/// What a topic's record costs beyond its payloads: its cell, its maps' entries, its
/// name and epoch, the allocations around them. With [`PUBLICATION_COST`], fitted to
/// what the process really grows by (`tests/hub_bounds.rs` with `FLOOD_TOPICS=60000`
/// and no eviction: about 2,100 bytes per topic of one 1 KiB publication, x86_64).
pub(crate) const TOPIC_COST: usize = 896;

/// What a kept publication costs beyond its payload: its entry in the ring and the
/// allocations around its bytes.
pub(crate) const PUBLICATION_COST: usize = 160;

/// Sweep one shard of idle histories every this many publications.
const SWEEP_EVERY: u64 = 1024;

/// The history budget of one hub.
pub(super) struct Budget {
    max_bytes: usize,
    used: AtomicUsize,
    /// The clock of "least recently published": one tick per publication.
    clock: AtomicU64,
    /// One eviction at a time (another thread finding it taken leaves it to that one).
    evicting: Mutex<()>,
    evicted: AtomicU64,
}

impl Budget {
    pub(super) fn new(max_bytes: usize) -> Budget {
        Budget {
            max_bytes,
            used: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            evicting: Mutex::new(()),
            evicted: AtomicU64::new(0),
        }
    }

    /// The next tick of the clock.
    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Charge `state` again for its history as it is now.
    pub(super) fn recharge(&self, state: &mut TopicState) {
        let cost = state.history.as_ref().map_or(0, cost);
        if cost >= state.charged {
            self.used.fetch_add(cost - state.charged, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(state.charged - cost, Ordering::Relaxed);
        }
        state.charged = cost;
    }

    pub(super) fn is_over(&self) -> bool {
        self.used() > self.max_bytes
    }

    /// Bytes charged now.
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Topics evicted so far.
    pub(super) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// What `history` costs.
fn cost(history: &TopicHistory) -> usize {
    let (count, bytes) = history.kept();
    TOPIC_COST + bytes + count * PUBLICATION_COST
}

impl HubInner {
    /// Evict the least recently published topics' histories until the budget is an
    /// eighth below its bound.
    pub(super) fn evict(&self) {
        let Ok(_only_one) = self.budget.evicting.try_lock() else {
            return;
        };
        if !self.budget.is_over() {
            return;
        }
        let target = self.budget.max_bytes - self.budget.max_bytes / 8;
        let mut candidates: Vec<_> = self
            .topics
            .cells()
            .into_iter()
            .filter_map(|cell| {
                let state = cell.lock();
                let touched = state.history.as_ref().map(|_| state.touched);
                drop(state);
                Some((touched?, cell))
            })
            .collect();
        candidates.sort_unstable_by_key(|(touched, _)| *touched);
        for (_, cell) in candidates {
            if self.budget.used() <= target {
                break;
            }
            let mut state = cell.lock();
            if state.removed {
                continue;
            }
            let unused = state.subscribers.is_empty() && state.work.is_empty() && !state.running;
            match &mut state.history {
                None => continue,
                Some(_) if unused => state.history = None,
                Some(history) => history.forget_kept(),
            }
            self.budget.recharge(&mut state);
            drop(state);
            self.budget.evicted.fetch_add(1, Ordering::Relaxed);
            self.topics.remove_if_idle(&cell);
        }
        tracing::debug!(
            used = self.budget.used(),
            bound = self.budget.max_bytes,
            "history evicted down to the bound"
        );
    }

    /// Every [`SWEEP_EVERY`] publications, forget the histories of one shard's topics
    /// that hold nothing, have no subscriber and were idle past the meta TTL.
    pub(super) fn sweep_some(&self, config: &History, now: Instant) {
        let tick = self.budget.clock.load(Ordering::Relaxed);
        if tick == 0 || !tick.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let shard = (tick / SWEEP_EVERY) as usize % SHARDS;
        for cell in self.topics.shard_cells(shard) {
            let mut state = cell.lock();
            let stale = state.subscribers.is_empty()
                && state
                    .history
                    .as_mut()
                    .is_some_and(|history| history.is_stale(config, now));
            if stale {
                state.history = None;
                self.budget.recharge(&mut state);
            }
            drop(state);
            self.topics.remove_if_idle(&cell);
        }
    }
}
