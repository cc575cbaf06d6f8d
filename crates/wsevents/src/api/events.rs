//! The four events of the browser API (`open`, `message`, `error`, `close`), two
//! wsevents extensions beside them (`ping` and `pong`, which browsers keep to
//! themselves), and the registry of handlers (`onmessage = f`) and listeners
//! (`addEventListener`) that receive them.
//!
//! Order is the DOM's: every callback of a type runs in the order it was registered;
//! an `on_x` handler takes the place of the first `on_x` it replaces, so setting it
//! again keeps its position and never touches listeners.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::api::data::Data;
use crate::error::Error;

/// The type of an event: the browser's four, then wsevents' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// The connection opened.
    Open,
    /// A message arrived.
    Message,
    /// Something failed; a `close` follows unless a handler panicked.
    Error,
    /// The connection closed.
    Close,
    /// A ping arrived (a wsevents extension: browsers answer pings without telling the
    /// page). The pong is already queued.
    Ping,
    /// A pong arrived (a wsevents extension), with the round-trip time when it answers
    /// this end's latest ping.
    Pong,
}

/// A `message` event: `e.data` and `e.origin`.
///
/// Made without a copy of anything: `data` holds the core's bytes (see [`Data`]), and
/// `origin` is the socket's one string, shared by every event (an [`Arc<str>`]; it
/// derefs to `&str`).
///
/// ```
/// use wsevents::{Data, MessageEvent};
/// let e = MessageEvent { data: Data::Text("hi".into()), origin: "ws://example.com".into() };
/// assert_eq!(&*e.origin, "ws://example.com");
/// assert_eq!(e.data.as_text(), Some("hi"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The message: text, or binary as the socket's `binary_type` said when it was
    /// dispatched.
    pub data: Data,
    /// The origin of the URL the socket is connected to (`ws://host:port`), shared.
    pub origin: Arc<str>,
}

/// An `error` event. Unlike browsers, which hide the cause, it carries it.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    message: String,
    error: Option<Arc<Error>>,
}

impl ErrorEvent {
    pub(crate) fn new(error: Error) -> Self {
        ErrorEvent {
            message: error.to_string(),
            error: Some(Arc::new(error)),
        }
    }

    pub(crate) fn handler_panicked(what: String) -> Self {
        ErrorEvent {
            message: format!("an event handler panicked: {what}"),
            error: None,
        }
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error, for code to match (`None` when a handler panicked).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_deref()
    }
}

/// A `close` event: `e.code`, `e.reason`, `e.wasClean`.
///
/// 1005 when the peer's close frame had no code; 1006 and `was_clean == false` when the
/// connection ended without a close handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseEvent {
    /// The close code.
    pub code: u16,
    /// The peer's reason.
    pub reason: String,
    /// Whether the close handshake completed.
    pub was_clean: bool,
}

/// A `ping` event (a wsevents extension): the peer sent a ping, and the pong that
/// answers it is already queued (unless `Config::auto_pong` is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingEvent {
    /// The ping's payload (at most 125 bytes).
    pub data: Bytes,
}

/// A `pong` event (a wsevents extension): the peer sent a pong.
///
/// ```
/// use std::time::Duration;
/// use wsevents::PongEvent;
/// let pong = PongEvent { data: "t1".into(), rtt: Some(Duration::from_millis(3)) };
/// assert_eq!(pong.rtt.map(|t| t.as_millis()), Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PongEvent {
    /// The pong's payload (at most 125 bytes).
    pub data: Bytes,
    /// The round-trip time, from queueing the ping to reading this pong, when the pong
    /// answers this end's latest ping (one sent with
    /// [`ping`](crate::WebSocket::ping), or a keepalive ping); `None` for a pong that
    /// answers nothing of ours (an unsolicited heartbeat, or an answer to an older
    /// ping).
    pub rtt: Option<Duration>,
}

/// Any event, as listeners added with
/// [`add_event_listener`](crate::WebSocket::add_event_listener) receive it.
///
/// ```
/// use wsevents::{CloseEvent, Event, EventType};
/// let event = Event::Close(CloseEvent { code: 1000, reason: "bye".into(), was_clean: true });
/// assert_eq!(event.event_type(), EventType::Close);
/// assert_eq!(event.as_close().map(|c| c.code), Some(1000));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// `open`.
    Open,
    /// `message`.
    Message(MessageEvent),
    /// `error`.
    Error(ErrorEvent),
    /// `close`.
    Close(CloseEvent),
    /// `ping` (a wsevents extension).
    Ping(PingEvent),
    /// `pong` (a wsevents extension).
    Pong(PongEvent),
}

impl Event {
    /// Its type (`e.type`).
    pub fn event_type(&self) -> EventType {
        match self {
            Event::Open => EventType::Open,
            Event::Message(_) => EventType::Message,
            Event::Error(_) => EventType::Error,
            Event::Close(_) => EventType::Close,
            Event::Ping(_) => EventType::Ping,
            Event::Pong(_) => EventType::Pong,
        }
    }

    /// The message details, for a `message` event.
    pub fn as_message(&self) -> Option<&MessageEvent> {
        match self {
            Event::Message(e) => Some(e),
            _ => None,
        }
    }

    /// The error details, for an `error` event.
    pub fn as_error(&self) -> Option<&ErrorEvent> {
        match self {
            Event::Error(e) => Some(e),
            _ => None,
        }
    }

    /// The close details, for a `close` event.
    pub fn as_close(&self) -> Option<&CloseEvent> {
        match self {
            Event::Close(e) => Some(e),
            _ => None,
        }
    }

    /// The ping details, for a `ping` event.
    pub fn as_ping(&self) -> Option<&PingEvent> {
        match self {
            Event::Ping(e) => Some(e),
            _ => None,
        }
    }

    /// The pong details, for a `pong` event.
    ///
    /// ```
    /// use wsevents::{Event, EventType, PongEvent};
    /// let event = Event::Pong(PongEvent { data: "x".into(), rtt: None });
    /// assert_eq!(event.event_type(), EventType::Pong);
    /// assert_eq!(event.as_pong().map(|p| p.rtt), Some(None));
    /// ```
    pub fn as_pong(&self) -> Option<&PongEvent> {
        match self {
            Event::Pong(e) => Some(e),
            _ => None,
        }
    }
}

/// Identifies a listener for [`remove_event_listener`](crate::WebSocket::remove_event_listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// What an async handler gives for one event: the work, boxed, run to its end before
/// the next event is handled (see `api/dispatch.rs`).
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

type AnyFn = Arc<dyn Fn(&Event) + Send + Sync>;
type AsyncMessageFn = Arc<dyn Fn(MessageEvent) -> HandlerFuture + Send + Sync>;
type MessageFn = Arc<dyn Fn(&MessageEvent) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&ErrorEvent) + Send + Sync>;
type CloseFn = Arc<dyn Fn(&CloseEvent) + Send + Sync>;
type PingFn = Arc<dyn Fn(&PingEvent) + Send + Sync>;
type PongFn = Arc<dyn Fn(&PongEvent) + Send + Sync>;

/// One registered callback, typed by the view it takes.
#[derive(Clone)]
pub(crate) enum Callback {
    Any(AnyFn),
    Message(MessageFn),
    /// `on_message_async`: started by the dispatch, which drives the connection while
    /// it runs; [`call`](Self::call) does not run it.
    AsyncMessage(AsyncMessageFn),
    Error(ErrorFn),
    Close(CloseFn),
    Ping(PingFn),
    Pong(PongFn),
}

impl Callback {
    /// Call it with `event`, in the view it takes (a sync callback; an async one is
    /// started with [`start`](Self::start)).
    #[inline]
    pub(crate) fn call(&self, event: &Event) {
        match (self, event) {
            (Callback::Any(f), _) => f(event),
            (Callback::Message(f), Event::Message(e)) => f(e),
            (Callback::Error(f), Event::Error(e)) => f(e),
            (Callback::Close(f), Event::Close(e)) => f(e),
            (Callback::Ping(f), Event::Ping(e)) => f(e),
            (Callback::Pong(f), Event::Pong(e)) => f(e),
            _ => {}
        }
    }

    /// An async callback's work for `event` (it gets its own copy of the event: a
    /// reference count per field, no copy of the data); `None` for a sync callback,
    /// or one that does not take this event.
    pub(crate) fn start(&self, event: &Event) -> Option<HandlerFuture> {
        match (self, event) {
            (Callback::AsyncMessage(f), Event::Message(e)) => Some(f(e.clone())),
            _ => None,
        }
    }

    /// Whether it is async (started, then awaited).
    #[inline]
    pub(crate) fn is_async(&self) -> bool {
        matches!(self, Callback::AsyncMessage(_))
    }
}

#[derive(Clone)]
struct Entry {
    id: ListenerId,
    event_type: EventType,
    /// Set by `on_x` (one per type) rather than `add_event_listener`.
    is_handler: bool,
    callback: Callback,
}

/// The callbacks of one socket at one moment, in registration order: what one
/// dispatch runs. Shared, so a dispatch takes it with a reference count, not a copy.
#[derive(Clone, Default)]
pub(crate) struct Snapshot(Option<Arc<[Entry]>>);

impl Snapshot {
    /// The callbacks for `event_type`, in order.
    pub(crate) fn callbacks(&self, event_type: EventType) -> impl Iterator<Item = &Callback> {
        self.callbacks_from(event_type, 0)
            .map(|(_, callback)| callback)
    }

    /// The callbacks for `event_type` from position `start` of the list on, in order,
    /// each with its position (a dispatch that awaited an async callback goes on from
    /// the one after it).
    #[inline]
    pub(crate) fn callbacks_from(
        &self,
        event_type: EventType,
        start: usize,
    ) -> impl Iterator<Item = (usize, &Callback)> {
        self.0
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .skip(start)
            .filter(move |(_, e)| e.event_type == event_type)
            .map(|(position, e)| (position, &e.callback))
    }
}

/// The handlers and listeners of one socket.
///
/// Copy-on-write: registering or removing (rare) builds a new list; dispatching (once
/// per event) only clones the [`Snapshot`]'s `Arc`, so no event allocates for its
/// dispatch, and callbacks run without the lock, on the list as it was when the
/// event was dispatched (the DOM's rule: a listener added during a dispatch does not
/// see that event). An idle socket with no callbacks holds no allocation for them.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Snapshot,
    next_id: u64,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("callbacks", &self.entries().len())
            .finish()
    }
}

impl Registry {
    /// Set the `on_x` handler of `event_type`, in place of the previous one.
    pub(crate) fn set_handler(&mut self, event_type: EventType, callback: Callback) {
        let mut next = self.entries().to_vec();
        match next
            .iter_mut()
            .find(|e| e.is_handler && e.event_type == event_type)
        {
            Some(entry) => entry.callback = callback,
            None => {
                let id = self.next();
                next.push(Entry {
                    id,
                    event_type,
                    is_handler: true,
                    callback,
                });
            }
        }
        self.entries = Snapshot(Some(next.into()));
    }

    /// Add a listener.
    pub(crate) fn add(&mut self, event_type: EventType, callback: Callback) -> ListenerId {
        let id = self.next();
        let mut next = self.entries().to_vec();
        next.push(Entry {
            id,
            event_type,
            is_handler: false,
            callback,
        });
        self.entries = Snapshot(Some(next.into()));
        id
    }

    /// Remove a listener; true if it was there.
    pub(crate) fn remove(&mut self, id: ListenerId) -> bool {
        let entries = self.entries();
        if !entries.iter().any(|e| e.id == id && !e.is_handler) {
            return false;
        }
        let next: Vec<Entry> = entries
            .iter()
            .filter(|e| e.id != id || e.is_handler)
            .cloned()
            .collect();
        self.entries = Snapshot((!next.is_empty()).then(|| next.into()));
        true
    }

    /// The callbacks as they are now, for one dispatch.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.entries.clone()
    }

    /// Make `snapshot` the callbacks as they are now: nothing to do (not even a
    /// reference count) when it already is, which is every event but the first after
    /// a change. The same allocation means the same list: `snapshot` holds it, so it
    /// cannot have been freed and reused.
    pub(crate) fn refresh(&self, snapshot: &mut Snapshot) {
        let same = match (&self.entries.0, &snapshot.0) {
            (Some(now), Some(held)) => Arc::ptr_eq(now, held),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *snapshot = self.snapshot();
        }
    }

    /// Drop every callback (after the close event: breaks cycles through handlers that
    /// hold a clone of their socket).
    pub(crate) fn clear(&mut self) {
        self.entries = Snapshot(None);
    }

    fn entries(&self) -> &[Entry] {
        self.entries.0.as_deref().unwrap_or_default()
    }

    fn next(&mut self) -> ListenerId {
        self.next_id += 1;
        ListenerId(self.next_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recorder(log: &Arc<Mutex<Vec<&'static str>>>, name: &'static str) -> Callback {
        let log = Arc::clone(log);
        Callback::Any(Arc::new(move |_| {
            log.lock().expect("not poisoned").push(name)
        }))
    }

    fn run(snapshot: &Snapshot, event_type: EventType) {
        for callback in snapshot.callbacks(event_type) {
            callback.call(&Event::Open);
        }
    }

    #[test]
    fn handlers_keep_their_place_and_listeners_come_and_go() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        registry.set_handler(EventType::Open, recorder(&log, "on_open 1"));
        let listener = registry.add(EventType::Open, recorder(&log, "listener"));
        registry.add(EventType::Close, recorder(&log, "close"));
        registry.set_handler(EventType::Open, recorder(&log, "on_open 2"));
        run(&registry.snapshot(), EventType::Open);
        assert_eq!(
            *log.lock().expect("not poisoned"),
            ["on_open 2", "listener"]
        );

        assert!(registry.remove(listener));
        assert!(!registry.remove(listener), "already removed");
        log.lock().expect("not poisoned").clear();
        run(&registry.snapshot(), EventType::Open);
        assert_eq!(*log.lock().expect("not poisoned"), ["on_open 2"]);
    }

    #[test]
    fn a_refreshed_snapshot_follows_every_change() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        let mut held = Snapshot::default();
        registry.refresh(&mut held);
        assert_eq!(held.callbacks(EventType::Open).count(), 0);
        registry.set_handler(EventType::Open, recorder(&log, "handler"));
        registry.refresh(&mut held);
        assert_eq!(held.callbacks(EventType::Open).count(), 1);
        let listener = registry.add(EventType::Open, recorder(&log, "listener"));
        registry.refresh(&mut held);
        assert_eq!(held.callbacks(EventType::Open).count(), 2);
        registry.remove(listener);
        registry.refresh(&mut held);
        assert_eq!(held.callbacks(EventType::Open).count(), 1);
        registry.clear();
        registry.refresh(&mut held);
        assert_eq!(held.callbacks(EventType::Open).count(), 0);
    }

    #[test]
    fn a_snapshot_is_the_list_at_the_time_it_was_taken() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        assert_eq!(registry.snapshot().callbacks(EventType::Open).count(), 0);
        registry.add(EventType::Open, recorder(&log, "first"));
        let before = registry.snapshot();
        registry.add(EventType::Open, recorder(&log, "second"));
        run(&before, EventType::Open);
        assert_eq!(*log.lock().expect("not poisoned"), ["first"]);
        registry.clear();
        assert_eq!(registry.snapshot().callbacks(EventType::Open).count(), 0);
        assert_eq!(
            before.callbacks(EventType::Open).count(),
            1,
            "still its own list"
        );
    }
}
