//! The connection's state machine: every transition between phases happens here.
//!
//! ```text
//!                 client: request sent          server: request read,
//!                 101 validated                 caller accept()s
//!  ┌────────────┐ ─────────────────────────────────────────────► ┌──────┐
//!  │ CONNECTING │                                                │ OPEN │
//!  └────────────┘                                                └──────┘
//!     │  handshake error / timeout / close()                       │    │
//!     │  / reject()                                   close() sends│    │peer's close frame:
//!     │                                               a close frame│    │reply sent at once
//!     │                                                            ▼    │
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
//!            sent first, when none was sent yet) or the transport's EOF
//! ```
//!
//! Data for a phase lives in its variant (the handshake request while connecting, the
//! close frame we sent and its deadline while closing, the [`Closure`] once closed), so
//! impossible combinations cannot be written down. Each transition that ends the
//! connection emits [`Event::Error`] first when the end is unclean, then
//! [`Event::Closed`], exactly once.

use std::time::Instant;

use crate::close::CloseFrame;
use crate::connection::Connection;
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
    /// Messages flow both ways.
    Open,
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
            Phase::Open => State::Open,
            Phase::Closing { .. } => State::Closing,
            Phase::Closed(_) => State::Closed,
        }
    }

    /// The next deadline of this phase.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::AwaitingResponse { deadline, .. }
            | Phase::AwaitingRequest { deadline }
            | Phase::AwaitingAnswer { deadline }
            | Phase::Closing { deadline, .. } => *deadline,
            Phase::Open | Phase::Closed(_) => None,
        }
    }
}

impl Connection {
    /// CONNECTING → OPEN: the handshake is done.
    pub(crate) fn enter_open(&mut self) {
        self.phase = Phase::Open;
        self.events.push_back(Event::Open);
    }

    /// OPEN → CLOSING: send our close frame, wait for the peer's until the close
    /// timeout. Anywhere else this does nothing (CONNECTING is `abort`'s case).
    pub(crate) fn enter_closing(&mut self, frame: CloseFrame, initiator: Initiator, now: Instant) {
        if !matches!(self.phase, Phase::Open) {
            return;
        }
        self.queue_close_frame(&frame);
        self.phase = Phase::Closing {
            sent: frame,
            initiator,
            deadline: self.config.close_timeout.map(|t| now + t),
        };
    }

    /// The peer's close frame arrived: from OPEN reply with the same code and close
    /// (the peer initiated); from CLOSING the handshake is complete (we initiated).
    /// Both ends are clean.
    pub(crate) fn on_close_received(&mut self, received: CloseFrame) {
        let (initiator, sent) = match std::mem::replace(&mut self.phase, Phase::Open) {
            Phase::Closing {
                sent, initiator, ..
            } => (initiator, sent),
            _ => {
                let reply = match received.code {
                    Some(code) => CloseFrame::new(code, ""),
                    None => CloseFrame::empty(),
                };
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
    /// While OPEN, a protocol error sends a close frame with its mapped code first; other
    /// errors (the transport ended, a timeout) send nothing. A server that fails a
    /// handshake answers with the matching HTTP status instead.
    pub(crate) fn fail(&mut self, error: Error, initiator: Initiator) {
        let sent = match std::mem::replace(&mut self.phase, Phase::Open) {
            Phase::Closed(closure) => {
                self.phase = Phase::Closed(closure);
                return;
            }
            Phase::Open => {
                let frame = match &error {
                    Error::Protocol(e) => Some(CloseFrame::new(e.close_code(), "")),
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

    /// A deadline passed: the handshake or the close handshake took too long.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.phase.deadline().is_none_or(|d| now < d) {
            return;
        }
        let timeout = match self.phase.state() {
            State::Connecting => Timeout::Handshake,
            _ => Timeout::Close,
        };
        self.fail(Error::Timeout(timeout), Initiator::Library);
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
