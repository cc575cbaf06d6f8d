//! Where topics live: a sharded map of topic cells, each topic behind its own lock.
//!
//! A hub with one lock serialises every publish, subscribe and close of the process;
//! publishers of different topics have nothing to wait for each other about. So the map
//! from names to topics is split into [`SHARDS`] maps, each behind a lock held only to
//! find, add or remove a cell, and each topic's state ([`TopicState`]) sits behind a
//! lock of its own, held only to change that state: never while framing, calling the
//! backend or running a callback (see [`super::run`]).
//!
//! A cell leaves its map when it holds nothing (no subscriber, no history, no work, no
//! backend subscription). A thread may have found the cell just before: it sees
//! [`TopicState::removed`] once it takes the cell's lock, and looks the topic up again,
//! so nothing is ever added to a cell that has left the map.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use wsevents_proto::Message;

use super::Framing;
use super::history::{Position, Publication, TopicHistory};
use crate::api::websocket::WeakWebSocket;

/// A topic name, shared by the map, the cell and the members' sets.
pub(super) type Topic = Arc<str>;

/// How many maps the topics are spread over (a power of two).
pub(super) const SHARDS: usize = 64;

/// One shard of the topic map.
type Shard = Mutex<HashMap<Topic, Arc<TopicCell>>>;

/// Every topic of a hub that has subscribers, history or work.
pub(super) struct Topics {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

/// One topic: its name and its state behind its lock.
pub(super) struct TopicCell {
    pub(super) name: Topic,
    state: Mutex<TopicState>,
}

/// What a hub knows of one topic.
#[derive(Default)]
pub(super) struct TopicState {
    /// Taken out of the map: look the topic up again.
    pub(super) removed: bool,
    /// Its local subscribers, by socket id.
    pub(super) subscribers: HashMap<u64, Subscriber>,
    /// Its history, on a hub that keeps it in process.
    pub(super) history: Option<TopicHistory>,
    /// The latest position its local subscribers were given (by a delivery or a
    /// recovery): where a catch-up reads from once the backend's lost subscription is
    /// back ([`super::Inbound::resubscribed`]).
    pub(super) latest: Option<Position>,
    /// The latest position delivered live (from the backend, or this node's own
    /// publication delivered as soon as it was stored): what the other one skips.
    pub(super) live: Option<Position>,
    /// Deliveries and subscriptions going live, in order ([`super::run`]).
    pub(super) work: VecDeque<Work>,
    /// A thread is running `work`: others only queue.
    pub(super) running: bool,
    /// What the backend was last told: subscribed or not.
    pub(super) backend_subscribed: bool,
    /// A thread is telling the backend: others leave it to that one.
    pub(super) syncing: bool,
    /// When it was last published to, on the history budget's clock (least recently
    /// published topics are evicted first).
    pub(super) touched: u64,
    /// Bytes charged to the history budget for this topic.
    pub(super) charged: usize,
    /// Subscriptions made, to tell a subscription from the one that replaced it.
    pub(super) generation: u64,
    /// A catch-up is reading the history: deliveries from the backend wait here until
    /// what it read is delivered ([`super::catch_up`]).
    pub(super) catching_up: Option<CatchingUp>,
}

/// The live deliveries held back while a topic catches up, and their payload bytes.
#[derive(Default)]
pub(super) struct CatchingUp {
    pub(super) held: Vec<Delivery>,
    pub(super) bytes: usize,
    /// The backend's subscription was lost again meanwhile: catch up once more after.
    pub(super) again: bool,
    /// Where the catch-up runs (a runner may be any thread): the next one runs there.
    pub(super) runtime: Option<tokio::runtime::Handle>,
}

/// One socket's subscription to one topic.
pub(super) struct Subscriber {
    pub(super) socket: WeakWebSocket,
    /// `None`: the bare message; else a frame of a protocol, with the position.
    pub(super) framing: Option<Arc<dyn Framing>>,
    /// Live, or holding publications back while its recovery is read and queued.
    pub(super) mode: Mode,
    /// The position its recovery went up to: a publication at or before it that
    /// arrives late is not queued again.
    pub(super) through: Option<Position>,
    /// Which subscription of this socket to this topic it is.
    pub(super) generation: u64,
}

/// Whether a subscriber gets publications as they are delivered.
pub(super) enum Mode {
    Live,
    /// Publications kept for it until its recovery is queued, and their payload bytes
    /// (bounded by the hub's backlog bound: past it, the subscriber is closed as slow).
    Held {
        publications: Vec<Publication>,
        bytes: usize,
    },
}

/// What a topic's runner does, in order.
pub(super) enum Work {
    /// Queue a message on the topic's subscribers.
    Deliver(Delivery),
    /// A subscription's answer and recovery are queued: queue what was held back for
    /// it, then make it live.
    GoLive {
        id: u64,
        generation: u64,
        through: Position,
    },
    /// A catch-up's missed publications are delivered: deliver what was held back
    /// meanwhile, in order.
    CaughtUp,
}

/// A message to deliver, and where it came from (which decides whether it is
/// delivered: see [`Source`]).
pub(super) struct Delivery {
    pub(super) message: Message,
    pub(super) publication: Option<Publication>,
    pub(super) source: Source,
}

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A publish on this node; `forward`: hand it to the backend after (a hub whose
    /// backend does not keep the history).
    Local { forward: bool },
    /// The backend: another node's message, or (history in the backend) any stored
    /// publication. Skipped when this node delivered it already ([`Source::Own`]).
    Backend,
    /// This node's publication, stored by the backend: delivered at once when it is
    /// the next one after the latest live delivery, else left to the backend.
    Own,
    /// Read from the history after a lost subscription: skipped unless it is past what
    /// the subscribers were given meanwhile.
    Missed,
}

impl Topics {
    pub(super) fn new() -> Topics {
        Topics {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, topic: &str) -> MutexGuard<'_, HashMap<Topic, Arc<TopicCell>>> {
        let index = (self.hasher.hash_one(topic) as usize) & (SHARDS - 1);
        lock(&self.shards[index])
    }

    /// The cell of `topic`, if it has one.
    pub(super) fn get(&self, topic: &str) -> Option<Arc<TopicCell>> {
        self.shard(topic).get(topic).cloned()
    }

    /// The cell of `topic`, made if it has none. The caller checks
    /// [`TopicState::removed`] once it holds the cell's lock, and asks again if set.
    pub(super) fn entry(&self, topic: &str) -> Arc<TopicCell> {
        let mut shard = self.shard(topic);
        if let Some(cell) = shard.get(topic) {
            return cell.clone();
        }
        let name: Topic = Arc::from(topic);
        let cell = Arc::new(TopicCell {
            name: name.clone(),
            state: Mutex::default(),
        });
        shard.insert(name, cell.clone());
        cell
    }

    /// Take `cell` out of the map if it holds nothing.
    pub(super) fn remove_if_idle(&self, cell: &Arc<TopicCell>) {
        let mut shard = self.shard(&cell.name);
        let Some(current) = shard.get(&cell.name) else {
            return;
        };
        if !Arc::ptr_eq(current, cell) {
            return;
        }
        // Lock order: a shard, then a topic.
        let mut state = cell.lock();
        if state.is_idle() {
            state.removed = true;
            drop(state);
            shard.remove(&cell.name);
        }
    }

    /// Every cell now (a snapshot: cells may leave or come meanwhile).
    pub(super) fn cells(&self) -> Vec<Arc<TopicCell>> {
        let mut cells = Vec::new();
        for shard in self.shards.iter() {
            cells.extend(lock(shard).values().cloned());
        }
        cells
    }

    /// The cells of shard `index` (a part of a sweep).
    pub(super) fn shard_cells(&self, index: usize) -> Vec<Arc<TopicCell>> {
        lock(&self.shards[index % SHARDS])
            .values()
            .cloned()
            .collect()
    }
}

impl TopicCell {
    /// Its state, locked. A panic while it was held left it consistent (every change
    /// is one insert, remove or assignment); carry on with it.
    pub(super) fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TopicState {
    /// Nothing to keep the cell for.
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.history.is_none()
            && self.work.is_empty()
            && !self.running
            && !self.backend_subscribed
            && !self.syncing
    }

    /// `position` was given to the subscribers: the latest moves to it if it is later
    /// (or of another epoch: the history started again).
    pub(super) fn advance_latest(&mut self, position: &Position) {
        match &mut self.latest {
            Some(latest) if !position.is_past(latest) => {}
            latest => *latest = Some(position.clone()),
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few inserts, removes or assignments.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
