//! A topic's queue of work, and the one thread at a time that runs it: deliveries in
//! the topic's order, without holding the topic's lock across code that is not the
//! hub's.
//!
//! A delivery needs frames made by [`Framing`](super::Framing)s (code of the protocol
//! on top) and may hand the message to the backend; holding the topic's lock across
//! either would let that code deadlock the hub by calling back into it, and would make
//! every publisher of the topic wait for it. Releasing the lock between the steps of
//! a delivery would let two deliveries interleave, and order is the hub's first
//! promise. So every delivery (and every subscription going live) is queued on its
//! topic ([`Work`]); the thread that finds nobody running the queue runs it until it
//! is empty (the others only queue and return), taking the lock only to read and change
//! the topic's state: to see which frames are needed, then, after making them with the
//! lock released, to queue them on the subscribers.

use std::sync::Arc;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use wsevents_proto::PreparedMessage;

use super::history::Position;
use super::topics::{CatchingUp, Delivery, Mode, Source, TopicCell, TopicState, Work};
use super::{Framing, HubInner, SLOW_CLOSE_REASON, payload_len};
use crate::api::websocket::{Offer, WebSocket};

/// The most payload bytes of live deliveries held back for one topic while it catches
/// up (past it they resume, and the catch-up's older publications are skipped).
const MAX_HELD_WHILE_CATCHING_UP: usize = 16 << 20;

/// What a delivery left to do once the topic's lock is released.
#[derive(Default)]
struct After {
    /// Sockets that went away: forget them everywhere.
    gone: Vec<u64>,
    /// Subscribers whose held publications passed the bound: close them as slow.
    slow: Vec<(u64, WebSocket)>,
    /// The topic lost its last subscriber: tell the backend.
    emptied: bool,
}

impl HubInner {
    /// Queue `work` on `cell` (`state` is its lock) and, unless another thread runs the
    /// queue, run it until it is empty. The count of subscribers the first work run
    /// here queued a message for: the caller's own, since a queue nobody runs is empty.
    pub(super) fn push_work<'a>(
        &self,
        cell: &'a Arc<TopicCell>,
        mut state: MutexGuard<'a, TopicState>,
        work: Work,
    ) -> usize {
        state.work.push_back(work);
        if state.running {
            return 0;
        }
        state.running = true;
        let mut first = None;
        while let Some(work) = state.work.pop_front() {
            let queued;
            (state, queued) = match work {
                Work::Deliver(delivery) => self.deliver(cell, state, delivery),
                Work::GoLive {
                    id,
                    generation,
                    through,
                } => (self.go_live(cell, state, id, generation, through), 0),
                Work::CaughtUp => (self.caught_up(cell, state), 0),
            };
            first.get_or_insert(queued);
        }
        state.running = false;
        drop(state);
        self.topics.remove_if_idle(cell);
        first.unwrap_or(0)
    }

    /// Queue `delivery` on the topic's subscribers: held ones keep it, live ones get
    /// the frame of their framing (made once per framing, with the lock released).
    fn deliver<'a>(
        &self,
        cell: &'a Arc<TopicCell>,
        mut state: MutexGuard<'a, TopicState>,
        delivery: Delivery,
    ) -> (MutexGuard<'a, TopicState>, usize) {
        let Delivery {
            message,
            publication,
            source,
        } = delivery;
        if source == Source::Backend
            && let Some(catching_up) = &mut state.catching_up
        {
            let len = payload_len(&message);
            if catching_up.bytes + len <= MAX_HELD_WHILE_CATCHING_UP {
                catching_up.bytes += len;
                catching_up.held.push(Delivery {
                    message,
                    publication,
                    source,
                });
                return (state, 0);
            }
            // Past the bound: give up holding (what the catch-up then finds past the
            // live deliveries is skipped; positioned subscribers see the hole).
            tracing::warn!(
                topic = &*cell.name,
                "catching up took too long: live deliveries resume"
            );
            let held = state.catching_up.take().map(|c| c.held).unwrap_or_default();
            state.work.push_front(Work::Deliver(Delivery {
                message,
                publication,
                source,
            }));
            for delivery in held.into_iter().rev() {
                state.work.push_front(Work::Deliver(delivery));
            }
            return (state, 0);
        }
        if let Some(publication) = &publication {
            let position = &publication.position;
            let skip = match source {
                Source::Local { .. } => false,
                Source::Backend => state.live.as_ref().is_some_and(|l| !position.is_past(l)),
                Source::Own => !state.live.as_ref().is_some_and(|l| is_next(l, position)),
                Source::Missed => state.latest.as_ref().is_some_and(|l| !position.is_past(l)),
            };
            if skip {
                return (state, 0);
            }
            if source != (Source::Local { forward: false }) {
                state.live = Some(position.clone());
            }
            state.advance_latest(position);
        }
        let forward = source == Source::Local { forward: true };
        if state.subscribers.is_empty() {
            if forward {
                drop(state);
                self.backend.publish(&cell.name, &message);
                return (cell.lock(), 0);
            }
            return (state, 0);
        }
        // What to make, read under the lock; made without it.
        let mut bare_needed = false;
        let mut framings: Vec<Arc<dyn Framing>> = Vec::new();
        for subscriber in state.subscribers.values() {
            if !matches!(subscriber.mode, Mode::Live) {
                continue;
            }
            match &subscriber.framing {
                None => bare_needed = true,
                Some(framing) => {
                    if !framings.iter().any(|f| Arc::ptr_eq(f, framing)) {
                        framings.push(framing.clone());
                    }
                }
            }
        }
        drop(state);
        let mut bare = bare_needed.then(|| PreparedMessage::new(&message));
        let framed: Vec<(Arc<dyn Framing>, PreparedMessage)> = match &publication {
            Some(publication) => framings
                .into_iter()
                .map(|framing| {
                    let prepared = framing.prepare(&cell.name, publication);
                    (framing, prepared)
                })
                .collect(),
            None => Vec::new(),
        };

        let mut state = cell.lock();
        let len = payload_len(&message);
        let mut queued = 0;
        let mut slow = 0;
        let mut late = Vec::new();
        let mut after = After::default();
        for (&id, subscriber) in state.subscribers.iter_mut() {
            let Some(ws) = subscriber.socket.upgrade() else {
                after.gone.push(id);
                continue;
            };
            if let Mode::Held {
                publications,
                bytes,
            } = &mut subscriber.mode
            {
                if let Some(publication) = &publication {
                    if *bytes + len > self.max_backlog && !publications.is_empty() {
                        after.slow.push((id, ws));
                    } else {
                        publications.push(publication.clone());
                        *bytes += len;
                    }
                }
                continue;
            }
            if let (Some(through), Some(publication)) = (&subscriber.through, &publication)
                && !publication.position.is_past(through)
            {
                continue;
            }
            let prepared = match (&subscriber.framing, &publication) {
                (None, _) => &*bare.get_or_insert_with(|| PreparedMessage::new(&message)),
                (Some(framing), Some(_)) => {
                    match framed.iter().find(|(f, _)| Arc::ptr_eq(f, framing)) {
                        Some((_, prepared)) => prepared,
                        None => {
                            // Live since the frames were made: framed below.
                            late.push((id, ws, framing.clone()));
                            continue;
                        }
                    }
                }
                // A positioned subscriber on a hub without positions: not made.
                (Some(_), None) => continue,
            };
            match self.offer(&ws, prepared, self.max_backlog) {
                Offer::Queued => queued += 1,
                Offer::TooSlow => slow += 1,
                Offer::Gone if ws.is_closed() => after.gone.push(id),
                Offer::Gone => {}
            }
        }
        for id in after.gone.iter().chain(after.slow.iter().map(|(id, _)| id)) {
            state.subscribers.remove(id);
        }
        after.emptied =
            state.subscribers.is_empty() && !(after.gone.is_empty() && after.slow.is_empty());
        drop(state);

        if let Some(publication) = &publication {
            for (id, ws, framing) in late {
                let frame = framing.prepare(&cell.name, publication);
                let state = cell.lock();
                let still = state
                    .subscribers
                    .get(&id)
                    .is_some_and(|s| matches!(s.mode, Mode::Live));
                // Queued under the lock, so nothing of the topic comes between.
                if still && self.offer(&ws, &frame, self.max_backlog) == Offer::Queued {
                    queued += 1;
                }
                drop(state);
            }
        }
        slow += after.slow.len() as u64;
        for (_, ws) in &after.slow {
            tracing::info!(
                topic = &*cell.name,
                "closing a subscriber whose recovery fell behind"
            );
            let _ = ws.close_with_code(self.slow_code, SLOW_CLOSE_REASON);
        }
        self.finish(cell, after);
        if forward {
            self.backend.publish(&cell.name, &message);
        }
        self.delivered.fetch_add(queued as u64, Ordering::Relaxed);
        self.dropped_slow.fetch_add(slow, Ordering::Relaxed);
        (cell.lock(), queued)
    }

    /// Subscriber `id`'s answer and recovery are queued: queue what was held back for
    /// it past `through` (with the lock released: only this runner delivers on the
    /// topic, so nothing more is held meanwhile), then make it live.
    fn go_live<'a>(
        &self,
        cell: &'a Arc<TopicCell>,
        mut state: MutexGuard<'a, TopicState>,
        id: u64,
        generation: u64,
        through: Position,
    ) -> MutexGuard<'a, TopicState> {
        state.advance_latest(&through);
        let Some(subscriber) = state
            .subscribers
            .get_mut(&id)
            .filter(|s| s.generation == generation)
        else {
            return state;
        };
        let held = match std::mem::replace(&mut subscriber.mode, Mode::Live) {
            Mode::Held { publications, .. } => publications,
            Mode::Live => return state,
        };
        if held.is_empty() {
            subscriber.through = Some(through);
            return state;
        }
        // Still held (empty) until the held ones are queued.
        subscriber.mode = Mode::Held {
            publications: Vec::new(),
            bytes: 0,
        };
        let socket = subscriber.socket.clone();
        let framing = subscriber.framing.clone();
        drop(state);
        let mut last = through;
        if let (Some(ws), Some(framing)) = (socket.upgrade(), framing) {
            for publication in &held {
                if !publication.position.is_past(&last) {
                    continue;
                }
                let frame = framing.prepare(&cell.name, publication);
                // Bounded already: held publications are at most the backlog bound.
                self.offer(&ws, &frame, usize::MAX);
                last = publication.position.clone();
            }
        }
        let mut state = cell.lock();
        if let Some(subscriber) = state
            .subscribers
            .get_mut(&id)
            .filter(|s| s.generation == generation)
        {
            subscriber.mode = Mode::Live;
            subscriber.through = Some(last);
        }
        state
    }

    /// A catch-up delivered what it read: what the backend delivered meanwhile goes
    /// next, before anything queued after it; then, if the subscription was lost again
    /// meanwhile, another catch-up.
    fn caught_up<'a>(
        &self,
        cell: &'a Arc<TopicCell>,
        mut state: MutexGuard<'a, TopicState>,
    ) -> MutexGuard<'a, TopicState> {
        let Some(catching_up) = state.catching_up.take() else {
            return state;
        };
        for delivery in catching_up.held.into_iter().rev() {
            state.work.push_front(Work::Deliver(delivery));
        }
        if catching_up.again
            && let Some(since) = state.latest.clone()
            && let Some(runtime) = catching_up.runtime
        {
            state.catching_up = Some(CatchingUp {
                runtime: Some(runtime.clone()),
                ..CatchingUp::default()
            });
            runtime.spawn(super::catch_up::catch_up(
                super::backend::Inbound {
                    hub: self.me.clone(),
                },
                cell.name.to_string(),
                since,
            ));
        }
        state
    }

    /// Queue `prepared` on `ws` unless that takes its unsent bytes over `limit` (then
    /// it is closed as slow).
    pub(super) fn offer(&self, ws: &WebSocket, prepared: &PreparedMessage, limit: usize) -> Offer {
        let offer = ws.offer_prepared(prepared, limit, self.slow_code, SLOW_CLOSE_REASON);
        if offer == Offer::TooSlow {
            tracing::info!(
                backlog = ws.buffered_amount(),
                limit,
                "closing a slow subscriber"
            );
        }
        offer
    }

    /// What a delivery left for after the lock: forget sockets that went away, and tell
    /// the backend when the topic lost its last subscriber.
    fn finish(&self, cell: &Arc<TopicCell>, after: After) {
        if after.emptied {
            self.live_topics.fetch_sub(1, Ordering::Relaxed);
            self.sync_backend(cell);
        }
        for id in after.gone {
            self.leave_all(id);
        }
        for (id, ws) in after.slow {
            if let Some(listener) = self.members.remove(id, &cell.name) {
                ws.remove_event_listener(listener);
            }
        }
    }
}

/// Whether `position` comes right after `latest` (same epoch, next offset).
fn is_next(latest: &Position, position: &Position) -> bool {
    latest.epoch() == position.epoch() && Some(position.offset()) == latest.offset().checked_add(1)
}
