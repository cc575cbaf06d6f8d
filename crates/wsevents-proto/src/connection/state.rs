//! The connection's state machine: every transition between phases happens here.
//!
//! ```text
//!                 client: request sent          server: request read,
//!                 101 validated                 caller accept()s
//!  ┌────────────┐ ─────────────────────────────────────────────► ┌──────┐ ◄─┐ keepalive or idle
//!  │ CONNECTING │                                                │ OPEN │   │ deadline: re-arm,
//!  └────────────┘                                                └──────┘ ──┘ or send a ping
//!     │  handshake error / timeout / close()                       │    │
//!     │  / reject()                          close() or the idle   │    │peer's close frame:
//!     │                                      deadline: sends a     │    │reply (its code and
//!     │                                      close frame           ▼    │reason) sent at once
//!     │                                                    ┌─────────┐  │
//!     │                                                    │ CLOSING │  │
//!     │                                                    └─────────┘  │
//!     │                         peer's close frame (clean) /   │        │
//!     │                         timeout / EOF (unclean)        │        │
//!     ▼                                                        ▼        ▼
//!  ┌──────────────────────────────────────────────────────────────────────┐
//!  │ CLOSED  (terminal: no frame read or sent; `Closure` says who and how) │
//!  └──────────────────────────────────────────────────────────────────────┘
//!        ▲
//!        └── from OPEN or CLOSING: a protocol error (close frame with its code
//!            sent first, when none was sent yet) or the transport's EOF; from OPEN
//!            the pong deadline (a best-effort 1011 close frame, no close handshake)
//! ```
//!
//! Data for a phase lives in its variant (the handshake request while connecting, the
//! keepalive and idle deadlines while open, the close frame we sent and its deadline
//! while closing, the [`Closure`] once closed), so impossible combinations cannot be
//! written down. Each transition that ends the connection emits [`Event::Error`] first
//! when the end is unclean, then [`Event::Closed`], exactly once.
//!
//! # Keepalive and idle, lazily
//!
//! While OPEN, [`Liveness`] holds two deadlines, re-armed the way uWebSockets does it so
//! that receiving reads no clock and costs one store: `handle_input` only sets
//! `Connection::heard` ("something arrived since the keepalive deadline was armed"), and
//! sending or receiving a data message sets `Connection::active` (the same for the idle
//! deadline). Only when a deadline is reached does `on_timeout` look at its flag:
//!
//! | deadline | flag set | flag clear |
//! |---|---|---|
//! | keepalive check | check again at `now + ping_interval` | send a recorded ping, wait for anything until `now + pong_timeout` (or, without a pong timeout, check again at `now + ping_interval`) |
//! | pong | check again at `now + ping_interval` | fail: 1011 close frame, [`Timeout::Pong`], CLOSED (1006, not clean) |
//! | idle | again at `now + idle_timeout` | → CLOSING with 1001 "idle timeout" (the library's) |
//!
//! Each flag is cleared whenever its deadline is armed, so the deadlines change only
//! when they fire and `poll_timeout` is stable in between. They are armed from a `now`:
//! [`Connection::open_at`]'s, or else the first `handle_timeout` after the connection
//! opened (a connection that opens by a handshake asks for that call at once: until
//! armed, its deadline is the last instant it was given, already past).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::close::{CloseCode, CloseFrame};
use crate::connection::{Config, Connection};
use crate::error::{Error, Timeout};
use crate::event::{Closure, Event, Initiator};
use crate::frame::{FrameHeader, OpCode};
use crate::handshake::ClientRequest;

/// The ready state of a connection, as the browser API names it.
///
/// ```
/// use wsevents_proto::{Config, Connection, Role, State};
/// let conn = Connection::open(Role::Server, Config::default());
/// assert_eq!(conn.state(), State::Open);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The opening handshake is under way.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// This end sent a close frame and waits for the peer's.
    Closing,
    /// Nothing flows any more.
    Closed,
}

/// The phase of a connection, with the data that phase needs.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Client: the request is queued; waiting for the server's 101.
    AwaitingResponse {
        request: Box<ClientRequest>,
        deadline: Option<Instant>,
    },
    /// Server: waiting for the client's request.
    AwaitingRequest { deadline: Option<Instant> },
    /// Server: the request was handed out; waiting for `accept` or `reject`.
    AwaitingAnswer { deadline: Option<Instant> },
    /// Messages flow both ways; the keepalive and idle deadlines run.
    Open(Liveness),
    /// We sent `sent` and wait for the peer's close frame until `deadline`.
    Closing {
        sent: CloseFrame,
        initiator: Initiator,
        deadline: Option<Instant>,
    },
    /// Terminal.
    Closed(Closure),
}

impl Phase {
    /// The public view of this phase.
    pub(crate) fn state(&self) -> State {
        match self {
            Phase::AwaitingResponse { .. }
            | Phase::AwaitingRequest { .. }
            | Phase::AwaitingAnswer { .. } => State::Connecting,
            Phase::Open(_) => State::Open,
            Phase::Closing { .. } => State::Closing,
            Phase::Closed(_) => State::Closed,
        }
    }

    /// The next deadline of this phase.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::AwaitingResponse { deadline, .. }
            | Phase::AwaitingRequest { deadline }
            | Phase::AwaitingAnswer { deadline }
            | Phase::Closing { deadline, .. } => *deadline,
            Phase::Open(liveness) => liveness.deadline(),
            Phase::Closed(_) => None,
        }
    }
}

/// The keepalive and idle deadlines of an open connection (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Liveness {
    /// Not armed yet: the first `handle_timeout` arms them. `asap` is the latest
    /// instant the connection was given (so already past: the driver calls at once), or
    /// `None` when it was given none (`Connection::open`).
    Unarmed { asap: Option<Instant> },
    /// Armed: the keepalive state and the idle deadline, if on.
    Armed {
        keepalive: Keepalive,
        idle: Option<Instant>,
    },
}

/// Where the keepalive stands.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keepalive {
    /// No keepalive (`ping_interval` is `None`).
    Off,
    /// At this instant, ping unless something arrived since this was armed.
    Check(Instant),
    /// A keepalive ping went out: at this instant, fail unless something arrived since.
    AwaitingPong(Instant),
}

impl Liveness {
    /// Nothing to arm, ever.
    const OFF: Liveness = Liveness::Armed {
        keepalive: Keepalive::Off,
        idle: None,
    };

    /// The deadlines of a connection that has just opened, knowing `asap` as the latest
    /// instant it was given: unarmed unless `config` turns both off.
    pub(crate) fn unarmed(config: &Config, asap: Option<Instant>) -> Liveness {
        if config.ping_interval.is_none() && config.idle_timeout.is_none() {
            Liveness::OFF
        } else {
            Liveness::Unarmed { asap }
        }
    }

    /// The deadlines armed at `now`.
    pub(crate) fn armed(config: &Config, now: Instant) -> Liveness {
        Liveness::Armed {
            keepalive: Keepalive::check(config, now),
            idle: later(now, config.idle_timeout),
        }
    }

    #[inline]
    fn deadline(&self) -> Option<Instant> {
        match *self {
            Liveness::Unarmed { asap } => asap,
            Liveness::Armed { keepalive, idle } => match (keepalive.deadline(), idle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

impl Keepalive {
    /// The next check, one interval from `now`.
    fn check(config: &Config, now: Instant) -> Keepalive {
        config
            .ping_interval
            .and_then(|interval| now.checked_add(interval))
            .map_or(Keepalive::Off, Keepalive::Check)
    }

    #[inline]
    fn deadline(self) -> Option<Instant> {
        match self {
            Keepalive::Off => None,
            Keepalive::Check(at) | Keepalive::AwaitingPong(at) => Some(at),
        }
    }
}

impl Connection {
    /// CONNECTING → OPEN: the handshake is done. The keepalive and idle deadlines are
    /// armed by the next `handle_timeout`, which `poll_timeout` asks for at once.
    pub(crate) fn enter_open(&mut self) {
        self.phase = Phase::Open(Liveness::unarmed(&self.config, self.clock));
        self.events.push_back(Event::Open);
    }

    /// OPEN → CLOSING: send our close frame, wait for the peer's until the close
    /// timeout. Anywhere else this does nothing (CONNECTING is `abort`'s case).
    pub(crate) fn enter_closing(&mut self, frame: CloseFrame, initiator: Initiator, now: Instant) {
        if !matches!(self.phase, Phase::Open(_)) {
            return;
        }
        self.queue_close_frame(&frame);
        self.phase = Phase::Closing {
            sent: frame,
            initiator,
            deadline: later(now, self.config.close_timeout),
        };
    }

    /// The peer's close frame arrived: from OPEN reply with the same code and reason
    /// and close (the peer initiated); from CLOSING the handshake is complete (we
    /// initiated). Both ends are clean.
    pub(crate) fn on_close_received(&mut self, received: CloseFrame) {
        let (initiator, sent) = match std::mem::replace(&mut self.phase, Phase::Open(Liveness::OFF))
        {
            Phase::Closing {
                sent, initiator, ..
            } => (initiator, sent),
            _ => {
                // The echo (RFC 6455 §5.5.1: "typically echos the status code it
                // received"), reason included: `CloseFrame::parse` checked the code is
                // valid on the wire and the reason UTF-8 within 123 bytes, so it is
                // as valid to send as it was to receive.
                let reply = received.clone();
                self.queue_close_frame(&reply);
                (Initiator::Remote, reply)
            }
        };
        self.end(Closure {
            initiator,
            sent: Some(sent),
            received: Some(received),
        });
    }

    /// Any phase → CLOSED, uncleanly, because of `error`.
    ///
    /// While OPEN, a protocol error sends a close frame with its mapped code first, and
    /// the pong timeout one with 1011 (best effort: the peer is presumed gone, so no
    /// close handshake is waited for); other errors (the transport ended, a handshake
    /// timeout) send nothing. A server that fails a handshake answers with the matching
    /// HTTP status instead.
    pub(crate) fn fail(&mut self, error: Error, initiator: Initiator) {
        let sent = match std::mem::replace(&mut self.phase, Phase::Open(Liveness::OFF)) {
            Phase::Closed(closure) => {
                self.phase = Phase::Closed(closure);
                return;
            }
            Phase::Open(_) => {
                let frame = match &error {
                    Error::Protocol(e) => Some(CloseFrame::new(e.close_code(), "")),
                    Error::Timeout(Timeout::Pong) => Some(CloseFrame::new(
                        CloseCode::INTERNAL_ERROR,
                        "keepalive timeout",
                    )),
                    _ => None,
                };
                if let Some(frame) = &frame {
                    self.queue_close_frame(frame);
                }
                frame
            }
            Phase::Closing { sent, .. } => Some(sent),
            Phase::AwaitingRequest { .. } | Phase::AwaitingAnswer { .. } => {
                if let Error::Handshake(e) = &error {
                    let mut head = bytes::BytesMut::new();
                    e.encode_response(&mut head);
                    self.transmit.push_raw(&head);
                }
                None
            }
            Phase::AwaitingResponse { .. } => None,
        };
        self.events.push_back(Event::Error(error));
        self.end(Closure {
            initiator,
            sent,
            received: None,
        });
    }

    /// Time passed: while OPEN, the keepalive and idle deadlines (see the module doc);
    /// otherwise a handshake or the close handshake may have taken too long.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        self.clock = Some(now);
        if let Phase::Open(liveness) = self.phase {
            self.on_liveness_timeout(liveness, now);
            return;
        }
        if self.phase.deadline().is_none_or(|d| now < d) {
            return;
        }
        let timeout = match self.phase.state() {
            State::Connecting => Timeout::Handshake,
            _ => Timeout::Close,
        };
        self.fail(Error::Timeout(timeout), Initiator::Library);
    }

    /// OPEN: arm the deadlines, or act on those that are reached, each by its flag.
    fn on_liveness_timeout(&mut self, liveness: Liveness, now: Instant) {
        let Liveness::Armed {
            mut keepalive,
            mut idle,
        } = liveness
        else {
            self.phase = Phase::Open(Liveness::armed(&self.config, now));
            self.heard = false;
            self.active = false;
            return;
        };
        match keepalive {
            Keepalive::Check(at) if now >= at => {
                if self.heard {
                    keepalive = Keepalive::check(&self.config, now);
                } else {
                    self.send_keepalive_ping(now);
                    keepalive = match later(now, self.config.pong_timeout) {
                        Some(at) => Keepalive::AwaitingPong(at),
                        None => Keepalive::check(&self.config, now),
                    };
                }
                self.heard = false;
            }
            Keepalive::AwaitingPong(at) if now >= at => {
                if !self.heard {
                    self.fail(Error::Timeout(Timeout::Pong), Initiator::Library);
                    return;
                }
                keepalive = Keepalive::check(&self.config, now);
                self.heard = false;
            }
            _ => {}
        }
        if let Some(at) = idle
            && now >= at
        {
            if !self.active {
                let frame = CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout");
                self.enter_closing(frame, Initiator::Library, now);
                return;
            }
            idle = later(now, self.config.idle_timeout);
            self.active = false;
        }
        self.phase = Phase::Open(Liveness::Armed { keepalive, idle });
    }

    /// A keepalive ping, recorded like `ping_at`'s: an 8-byte counter as payload, so
    /// that its pong is told apart from older ones.
    fn send_keepalive_ping(&mut self, now: Instant) {
        self.keepalive_pings = self.keepalive_pings.wrapping_add(1);
        let payload = Bytes::copy_from_slice(&self.keepalive_pings.to_be_bytes());
        let header = self.outgoing_header(OpCode::Ping, 0, true, payload.len());
        self.transmit.push_frame(&header, payload.clone());
        self.ping_sent = Some((payload, now));
    }

    /// → CLOSED, with no error (a clean close, or a server's `reject`).
    pub(crate) fn end(&mut self, closure: Closure) {
        self.reading = None;
        self.input.clear();
        self.pending_pong = None;
        self.events.push_back(Event::Closed(closure.clone()));
        self.phase = Phase::Closed(closure);
    }

    fn queue_close_frame(&mut self, frame: &CloseFrame) {
        let payload = frame.encode();
        let header = self.outgoing_header(OpCode::Close, 0, true, payload.len());
        self.transmit.push_frame(&header, payload);
    }

    /// The header for an outgoing frame: masked with a fresh key in the client role.
    pub(crate) fn outgoing_header(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        fin: bool,
        len: usize,
    ) -> FrameHeader {
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask: self.mask_keys.as_mut().map(|keys| keys.next_key()),
            payload_len: len as u64,
        }
    }
}

/// The deadline `timeout` after `now`; none when there is no timeout, or when it is too
/// far to represent (a configured duration of years: never, rather than a panic).
pub(crate) fn later(now: Instant, timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| now.checked_add(t))
}
