//! Dispatch: events to handlers one at a time, in order, with handlers that await and a
//! connection that stays driven while they do.
//!
//! A sync handler runs on the task that drives the socket, between two polls of the
//! core: nothing else happens while it runs, and it cannot await. An async handler
//! ([`WebSocket::on_message_async`]) is started the same way, and then the driving task
//! polls two things until it ends: the handler's future, and the connection. Polling
//! the connection writes what is queued (the handler's own sends, other clones', the
//! hub's), answers pings, fires the keepalive and close deadlines, obeys a server's
//! shutdown, and reads: the events that arrive meanwhile wait in a queue, and are
//! dispatched, in order, once the handler is done. So the events of one connection are
//! still handled one at a time, in order, and the socket is never left undriven.
//!
//! **The bound.** At most `max_queue` events wait (`DEFAULT_MAX_QUEUE`, 16, set with
//! [`WebSocket::set_max_queue`]); then the driving task stops reading the socket and
//! parsing what it already read (`Driver::poll_event_unread`), so TCP holds the peer
//! back, and tells the core that the silence is its own (no keepalive failure for a
//! peer it does not read). Everything else goes on. Reading resumes as soon as the
//! queue is below the bound again. Memory: at most `max_queue` messages (each at most
//! `Config::max_message_size`) plus the events made without input (a close timeout,
//! an abort), a handful.
//!
//! **`next_event`** ([`WebSocket::next_event`]) cannot be polled while its caller
//! awaits something else, so its first call hands the driver to a task of its own
//! (`start_pulling`): that task drives the connection as above and queues the events
//! (`Pulled`, the same bound: reading pauses once `max_queue` wait); `next_event`
//! takes them in order and runs their handlers then, awaiting an async one, as before.
//! The task holds the socket weakly, so dropping every clone still drops the
//! connection (the socket's drop wakes it to notice).
//!
//! **Panics.** A sync handler that panics is reported as an `error` event and the
//! dispatch goes on (as before). An async handler that panics is reported as an
//! `error` event too, and the connection is closed with 1011 (its `close` event
//! follows): its work was cut short at an await, and the peer waiting for its answer
//! should not wait forever.
//!
//! **Cost.** `run`'s path with sync handlers only is the loop it was, plus two
//! branches per event (no handler in flight, nothing waiting): no lock, allocation or
//! task more. An async handler costs its boxed future per message.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use wsevents_proto::{CloseCode, CloseFrame};

use super::{BoxedDriver, WebSocket};
use crate::api::events::{CloseEvent, ErrorEvent, Event, EventType, HandlerFuture, Snapshot};

/// The reason of the 1011 close that follows an async handler's panic.
const PANIC_CLOSE_REASON: &str = "internal error";

/// One drive of the connection: the callbacks in use, the handler in flight and the
/// events waiting for it.
#[derive(Default)]
pub(super) struct Dispatch {
    callbacks: Snapshot,
    /// Boxed: an idle connection's driving task keeps one pointer for it, and an async
    /// handler allocates its work per message anyway.
    busy: Option<Box<Busy>>,
    /// Events read while a handler awaited, in order (at most `max_queue`, plus events
    /// made without input).
    waiting: VecDeque<Event>,
    /// The driver handed out its last event.
    ended: bool,
}

/// An async handler at work on `event`.
struct Busy {
    future: HandlerFuture,
    event: Event,
    /// The callbacks the event is dispatched to (the DOM's rule: those registered when
    /// its dispatch began).
    callbacks: Snapshot,
    /// Where its dispatch goes on once the handler is done.
    next: usize,
}

/// The events `next_event`'s task queued, and the caller waiting for them.
#[derive(Default)]
pub(super) struct Pulled {
    events: VecDeque<Event>,
    waker: Option<Waker>,
    /// The task is over: no more events.
    ended: bool,
}

impl WebSocket {
    /// Drive the connection and dispatch its events until the close event (returned)
    /// or the end of the connection (`None`): `run`'s loop.
    pub(super) fn poll_dispatch(
        &self,
        driver: &mut BoxedDriver,
        dispatch: &mut Dispatch,
        cx: &mut Context<'_>,
    ) -> Poll<Option<CloseEvent>> {
        loop {
            if dispatch.busy.is_some() {
                match self.poll_busy(driver, dispatch, cx) {
                    Poll::Ready(Some(close)) => return Poll::Ready(Some(close)),
                    Poll::Ready(None) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let event = if dispatch.waiting.is_empty() {
                let mut core = self.core();
                match self.poll_locked::<true>(&mut core, driver, cx) {
                    Poll::Ready(Some(event)) => {
                        core.registry.refresh(&mut dispatch.callbacks);
                        event
                    }
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match self.next_waiting(dispatch) {
                    Some(event) => event,
                    None => continue,
                }
            };
            if let Some((future, next)) = self.dispatch_from(&event, &dispatch.callbacks, 0) {
                dispatch.busy = Some(Box::new(Busy {
                    future,
                    event,
                    callbacks: dispatch.callbacks.clone(),
                    next,
                }));
                continue;
            }
            if let Event::Close(close) = event {
                return Poll::Ready(Some(close));
            }
        }
    }

    /// The handler in flight: polled, and while it awaits, the connection driven.
    /// `Ready(None)`: it is done and its event dispatched to the end (go on with the
    /// next); `Ready(Some)`: that event was the close event.
    #[cold]
    fn poll_busy(
        &self,
        driver: &mut BoxedDriver,
        dispatch: &mut Dispatch,
        cx: &mut Context<'_>,
    ) -> Poll<Option<CloseEvent>> {
        let Some(busy) = dispatch.busy.as_mut() else {
            return Poll::Ready(None);
        };
        let panicked = match catch_unwind(AssertUnwindSafe(|| busy.future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {
                self.drive_while_busy(driver, dispatch, cx);
                return Poll::Pending;
            }
            Ok(Poll::Ready(())) => None,
            Err(panic) => Some(panic_message(&*panic)),
        };
        let Some(mut busy) = dispatch.busy.take() else {
            return Poll::Ready(None);
        };
        if let Some(what) = panicked {
            self.handler_panicked(&busy.event, what, true);
        }
        if let Some((future, next)) = self.dispatch_from(&busy.event, &busy.callbacks, busy.next) {
            busy.future = future;
            busy.next = next;
            dispatch.busy = Some(busy);
            return Poll::Ready(None);
        }
        Poll::Ready(match busy.event {
            Event::Close(close) => Some(close),
            _ => None,
        })
    }

    /// While a handler awaits: drive the connection until it has nothing more to do,
    /// queueing the events that come; read only while fewer than `max_queue` wait.
    fn drive_while_busy(
        &self,
        driver: &mut BoxedDriver,
        dispatch: &mut Dispatch,
        cx: &mut Context<'_>,
    ) {
        while !dispatch.ended {
            let mut core = self.core();
            let polled = if dispatch.waiting.len() < core.max_queue {
                self.poll_locked::<true>(&mut core, driver, cx)
            } else {
                self.poll_locked::<false>(&mut core, driver, cx)
            };
            match polled {
                Poll::Ready(Some(event)) => dispatch.waiting.push_back(event),
                Poll::Ready(None) => dispatch.ended = true,
                Poll::Pending => return,
            }
        }
    }

    /// The next event that waited, with the callbacks as they are now.
    #[cold]
    fn next_waiting(&self, dispatch: &mut Dispatch) -> Option<Event> {
        let event = dispatch.waiting.pop_front()?;
        self.core().registry.refresh(&mut dispatch.callbacks);
        Some(event)
    }

    /// Run `callbacks` for `event` from position `start`, one at a time, without any
    /// lock held; a sync one that panics is reported as an `error` event. At the first
    /// async one, stop: its work and the position after it, for the caller to await
    /// before going on.
    #[inline]
    pub(super) fn dispatch_from(
        &self,
        event: &Event,
        callbacks: &Snapshot,
        start: usize,
    ) -> Option<(HandlerFuture, usize)> {
        for (position, callback) in callbacks.callbacks_from(event.event_type(), start) {
            if callback.is_async() {
                match catch_unwind(AssertUnwindSafe(|| callback.start(event))) {
                    Ok(Some(future)) => return Some((future, position + 1)),
                    Ok(None) => {}
                    Err(panic) => self.handler_panicked(event, panic_message(&*panic), true),
                }
                continue;
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| callback.call(event))) {
                self.handler_panicked(event, panic_message(&*panic), false);
            }
        }
        if let Event::Close(_) = event {
            // Handlers often hold a clone of their socket: drop them to break the cycle.
            self.core().registry.clear();
        }
        None
    }

    /// A handler panicked on `event`: an `error` event to the error handlers (unless
    /// it was one of them), and for an async handler the close with 1011.
    #[cold]
    fn handler_panicked(&self, event: &Event, what: String, close: bool) {
        tracing::warn!(%what, "event handler panicked");
        if event.event_type() != EventType::Error {
            let report = Event::Error(ErrorEvent::handler_panicked(what));
            let handlers = self.core().registry.snapshot();
            for handler in handlers.callbacks(EventType::Error) {
                let _ = catch_unwind(AssertUnwindSafe(|| handler.call(&report)));
            }
        }
        if close {
            // Valid code, short reason: cannot fail; nothing to do if closing already.
            let _ = self.close_frame(CloseFrame::new(
                CloseCode::INTERNAL_ERROR,
                PANIC_CLOSE_REASON,
            ));
        }
    }

    /// Dispatch `event` to its callbacks as they are now, awaiting an async one
    /// (`next_event`'s dispatch, on its caller's task, while `next_event`'s own task
    /// keeps the connection driven).
    pub(super) async fn dispatch_awaiting(&self, event: &Event) {
        let callbacks = self.core().registry.snapshot();
        let mut start = 0;
        while let Some((future, next)) = self.dispatch_from(event, &callbacks, start) {
            if let Err(panic) = AssertUnwindSafe(future).catch_unwind().await {
                self.handler_panicked(event, panic_message(&*panic), true);
            }
            start = next;
        }
    }

    // ----- next_event's task -----

    /// Drive the connection in a task of its own, for `next_event`, which takes the
    /// events it queues. The task holds the socket weakly and ends with the
    /// connection, or when every clone is dropped (dropping the driver, so the
    /// transport, with it).
    pub(super) fn start_pulling(&self, driver: BoxedDriver) {
        self.core().pull.get_or_insert_with(Box::default);
        let socket = self.downgrade();
        let mut driver = driver;
        tokio::spawn(std::future::poll_fn(move |cx| {
            let Some(ws) = socket.upgrade() else {
                return Poll::Ready(());
            };
            ws.poll_pull(&mut driver, cx)
        }));
    }

    /// `next_event`'s task: queue the events as they come, reading only while fewer
    /// than `max_queue` wait; done after the close event or the end of the connection.
    fn poll_pull(&self, driver: &mut BoxedDriver, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut core = self.core();
            let waiting = core.pull.as_ref().map_or(0, |p| p.events.len());
            core.read_paused = waiting >= core.max_queue;
            let polled = if core.read_paused {
                self.poll_locked::<false>(&mut core, driver, cx)
            } else {
                self.poll_locked::<true>(&mut core, driver, cx)
            };
            let (event, last) = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(event)) => {
                    let last = matches!(event, Event::Close(_));
                    (Some(event), last)
                }
                Poll::Ready(None) => (None, true),
            };
            let Some(pulled) = core.pull.as_mut() else {
                return Poll::Ready(());
            };
            pulled.events.extend(event);
            pulled.ended = last;
            let waker = pulled.waker.take();
            drop(core);
            if let Some(waker) = waker {
                waker.wake();
            }
            if last {
                return Poll::Ready(());
            }
        }
    }

    /// The next event `next_event`'s task queued; `None` once it is over. Taking one
    /// from a task paused at the bound wakes it (it reads again).
    pub(super) async fn take_pulled(&self) -> Option<Event> {
        std::future::poll_fn(|cx| {
            let mut core = self.core();
            let Some(pulled) = core.pull.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(event) = pulled.events.pop_front() {
                if core.read_paused {
                    core.read_paused = false;
                    self.wake_driver(core);
                }
                return Poll::Ready(Some(event));
            }
            if pulled.ended {
                return Poll::Ready(None);
            }
            match &pulled.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => pulled.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// What a panic says, for people.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
