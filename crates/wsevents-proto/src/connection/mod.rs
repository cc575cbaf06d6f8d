//! The WebSocket connection: a sans-I/O state machine, from the opening handshake to
//! the closed TCP connection's last word.
//!
//! [`Connection`] takes the bytes a transport received and the current time, and gives
//! back events, the bytes to write and the next deadline. It never reads a socket,
//! never sleeps and never calls a clock, so every path, timeouts included, is tested
//! without I/O (see the quinn-proto `Connection` it is modelled on).
//!
//! - `state.rs`: the phases and every transition between them, diagram first.
//! - `assemble.rs`: fragments into messages, UTF-8 and size checks.
//! - `transmit.rs`: the outgoing queue, a [`bytes::Buf`].
//! - `whole_frame.rs`: the common case of reading (a whole message in one frame) in
//!   one step.
//! - `config.rs`: limits and switches.
//!
//! Reading is lazy: a frame is parsed when [`Connection::poll_event`] asks for the next
//! event, so a caller that stops polling stops the parsing, and the receive buffer
//! (bounded by the frame-size limit) is all the memory a fast peer can make it hold.

mod assemble;
mod config;
mod state;
mod transmit;
mod whole_frame;

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::error::{Error, ProtocolError};
use crate::event::{Closure, Event, Initiator, Message, MessageKind, Pong, Utf8Bytes};
use crate::extension::Extension;
use crate::frame::{FrameHeader, MAX_CONTROL_PAYLOAD, MAX_SHORT_PAYLOAD, OpCode};
use crate::handshake::{self, ClientRequest, Request, Response};
use crate::mask::{self, MaskKeys};
use crate::role::Role;

use assemble::{Assembled, Assembler};
pub use config::Config;
pub use state::State;
use state::{Liveness, Phase};
pub use transmit::{PreparedMessage, TransmitQueue};

/// Payloads shorter than this are copied into the send queue (a longer one is queued
/// as its own chunk, by reference): the bound under which
/// [`Connection::send_text_ref`] and [`Connection::send_binary_ref`] cost what `send`
/// costs, without the caller owning the bytes.
pub const COPIED_PAYLOAD_LEN: usize = transmit::OWN_CHUNK_THRESHOLD;

/// The frame being received: its header is parsed and consumed from the input; the
/// first `processed` bytes of its payload, at the front of the input, are unmasked and
/// (for text) checked.
#[derive(Debug, Clone, Copy)]
struct Reading {
    header: FrameHeader,
    len: usize,
    processed: usize,
}

/// What one step of reading produced.
enum Step {
    /// An event to hand out.
    Event(Event),
    /// Progress without an event (a frame consumed, a transition queued): read on.
    Again,
    /// More input is needed.
    Blocked,
}

/// One WebSocket connection, client or server, as a state machine.
///
/// # Calling protocol
///
/// Methods fall in four groups (quinn-proto's layout):
///
/// - **getters**: [`role`](Self::role), [`state`](Self::state),
///   [`protocol`](Self::protocol), [`extensions`](Self::extensions),
///   [`request`](Self::request), [`response`](Self::response), [`closure`](Self::closure),
///   [`buffered_amount`](Self::buffered_amount);
/// - **`handle_*`**, what happened outside: [`handle_input`](Self::handle_input) (or
///   append to [`input_buffer`](Self::input_buffer) then
///   [`handle_buffered_input`](Self::handle_buffered_input)),
///   [`handle_eof`](Self::handle_eof), [`handle_timeout`](Self::handle_timeout);
/// - **commands**: [`send`](Self::send), [`send_text`](Self::send_text),
///   [`send_binary`](Self::send_binary), [`send_fragment`](Self::send_fragment),
///   [`ping`](Self::ping), [`ping_at`](Self::ping_at), [`pong`](Self::pong),
///   [`close`](Self::close),
///   [`abort`](Self::abort), and for a server [`accept`](Self::accept) /
///   [`reject`](Self::reject);
/// - **`poll_*`**, what to do next: [`poll_event`](Self::poll_event),
///   [`poll_transmit`](Self::poll_transmit), [`poll_timeout`](Self::poll_timeout).
///
/// After any `handle_*` or command, drain `poll_event` until it returns `None` (this is
/// what parses the input), then write everything `poll_transmit` gives, then arm a timer
/// for `poll_timeout`; when it fires, call `handle_timeout` and poll again (a keepalive
/// ping or a close may be queued). [`Event::Closed`] is the last event; once the
/// connection is [`State::Closed`] and the transmit queue is empty, a server closes the
/// transport (RFC 6455 §7.1.1) and a client waits, up to the close timeout, for the
/// server to do so.
///
/// Input never reads the clock: the keepalive and idle deadlines are checked lazily
/// when they fire (see [`Config::ping_interval`]). They are armed by
/// [`open_at`](Self::open_at), or else by the first `handle_timeout` after the
/// connection opened, which `poll_timeout` asks for at once by returning an instant
/// already past (with [`open`](Self::open), which knows no time, call `handle_timeout`
/// once yourself).
///
/// ```
/// use bytes::Buf;
/// use wsevents_proto::{Config, Connection, Event, Message, Role};
///
/// let mut server = Connection::open(Role::Server, Config::default());
/// // RFC 6455 §5.7: a single-frame masked text message "Hello".
/// server.handle_input(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// match server.poll_event() {
///     Some(Event::Message(Message::Text(text))) => assert_eq!(text.as_str(), "Hello"),
///     other => panic!("unexpected {other:?}"),
/// }
/// server.send_text("Hello").unwrap();
/// let out = server.poll_transmit().unwrap();
/// assert_eq!(out.chunk(), b"\x81\x05Hello");
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    /// Tests turn the whole-frame shortcut off to compare it with the general path.
    #[cfg(test)]
    whole_frames: bool,
    phase: Phase,
    input: BytesMut,
    reading: Option<Reading>,
    assembler: Assembler,
    extension: Option<Box<dyn Extension>>,
    extension_rsv: u8,
    extensions_header: String,
    protocol: Option<String>,
    response: Option<Box<Response>>,
    /// Client: the request sent, kept for [`request`](Self::request) (the phase's copy
    /// goes once open).
    request: Option<Box<ClientRequest>>,
    transmit: TransmitQueue,
    pending_pong: Option<Bytes>,
    /// The latest recorded ping (`ping_at`, keepalive): its payload and when it went out.
    ping_sent: Option<(Bytes, Instant)>,
    /// Keepalive pings sent so far: the next one's payload.
    keepalive_pings: u64,
    /// Input arrived since the keepalive deadline was armed (`state.rs`).
    heard: bool,
    /// A data message went either way since the idle deadline was armed.
    active: bool,
    /// The latest instant the caller gave (constructor, `handle_timeout`): the core
    /// reads no clock, this is all it knows of the time.
    clock: Option<Instant>,
    events: VecDeque<Event>,
    mask_keys: Option<MaskKeys>,
    sending: Option<MessageKind>,
}

impl Connection {
    fn new(role: Role, config: Config, phase: Phase) -> Self {
        Connection {
            role,
            phase,
            input: BytesMut::new(),
            reading: None,
            assembler: Assembler::default(),
            extension: None,
            extension_rsv: 0,
            extensions_header: String::new(),
            protocol: None,
            response: None,
            request: None,
            transmit: TransmitQueue::default(),
            pending_pong: None,
            ping_sent: None,
            keepalive_pings: 0,
            heard: false,
            active: false,
            clock: None,
            events: VecDeque::new(),
            mask_keys: role.masks_outgoing().then(MaskKeys::new),
            sending: None,
            config,
            #[cfg(test)]
            whole_frames: true,
        }
    }

    /// A client that will send `request` (plus the offers of the configured extensions)
    /// and wait for the server's 101.
    ///
    /// ```
    /// use std::time::Instant;
    /// use wsevents_proto::{Config, Connection, State};
    /// use wsevents_proto::handshake::ClientRequest;
    /// let mut client = Connection::client(ClientRequest::new("example.com", "/chat"), Config::default(), Instant::now());
    /// assert_eq!(client.state(), State::Connecting);
    /// assert!(client.poll_transmit().is_some(), "the request is queued");
    /// ```
    pub fn client(request: ClientRequest, config: Config, now: Instant) -> Self {
        let mut request = request;
        for factory in &config.extensions {
            for offer in factory.offers() {
                request = request.extension(offer);
            }
        }
        let mut head = BytesMut::new();
        request.encode(&mut head);
        let deadline = state::later(now, config.handshake_timeout);
        let kept = Box::new(request.clone());
        let phase = Phase::AwaitingResponse {
            request: Box::new(request),
            deadline,
        };
        let mut conn = Connection::new(Role::Client, config, phase);
        conn.request = Some(kept);
        conn.clock = Some(now);
        conn.transmit.push_raw(&head);
        conn
    }

    /// A server waiting for a client's upgrade request.
    pub fn server(config: Config, now: Instant) -> Self {
        let deadline = state::later(now, config.handshake_timeout);
        let mut conn = Connection::new(Role::Server, config, Phase::AwaitingRequest { deadline });
        conn.clock = Some(now);
        conn
    }

    /// A connection whose handshake was done elsewhere (for example by an HTTP server
    /// that hands over the upgraded stream): it starts open, with no extension.
    ///
    /// It knows no time yet, so its keepalive and idle deadlines are armed by the first
    /// [`handle_timeout`](Self::handle_timeout) call (at that `now`); until then
    /// [`poll_timeout`](Self::poll_timeout) is `None`. A driver that wants them from
    /// the start uses [`open_at`](Self::open_at).
    pub fn open(role: Role, config: Config) -> Self {
        let liveness = Liveness::unarmed(&config, None);
        Connection::new(role, config, Phase::Open(liveness))
    }

    /// Like [`open`](Self::open), opened at `now`: the keepalive and idle deadlines are
    /// armed from `now`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use wsevents_proto::{Config, Connection, Role};
    /// let now = Instant::now();
    /// let conn = Connection::open_at(Role::Server, Config::default(), now);
    /// assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(20)), "the first keepalive check");
    /// ```
    pub fn open_at(role: Role, config: Config, now: Instant) -> Self {
        let liveness = Liveness::armed(&config, now);
        let mut conn = Connection::new(role, config, Phase::Open(liveness));
        conn.clock = Some(now);
        conn
    }

    // ----- getters -----

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The ready state.
    #[inline]
    pub fn state(&self) -> State {
        self.phase.state()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The negotiated subprotocol, once open.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The negotiated extensions as the `Sec-WebSocket-Extensions` header said them
    /// (empty when none), once open.
    pub fn extensions(&self) -> &str {
        &self.extensions_header
    }

    /// Client: the server's handshake response, once open.
    pub fn response(&self) -> Option<&Response> {
        self.response.as_deref()
    }

    /// Client: the upgrade request, with the extension offers it carried, from the
    /// start (also after a failed handshake); its [`encode`](ClientRequest::encode)
    /// gives the bytes sent.
    pub fn request(&self) -> Option<&ClientRequest> {
        self.request.as_deref()
    }

    /// How the connection ended, once closed.
    pub fn closure(&self) -> Option<&Closure> {
        match &self.phase {
            Phase::Closed(closure) => Some(closure),
            _ => None,
        }
    }

    /// The browser's `bufferedAmount`: application bytes (text as UTF-8, binary as
    /// is, before compression, without framing) of messages sent and not yet
    /// completely handed to the transport.
    ///
    /// ```
    /// use bytes::Buf;
    /// use wsevents_proto::{Config, Connection, Role};
    /// let mut conn = Connection::open(Role::Server, Config::default());
    /// conn.send_text("hello").unwrap();
    /// assert_eq!(conn.buffered_amount(), 5);
    /// assert_eq!(conn.queued_bytes(), 7, "with the 2-byte header");
    /// let out = conn.poll_transmit().unwrap();
    /// let n = out.remaining();
    /// out.advance(n);
    /// assert_eq!(conn.buffered_amount(), 0);
    /// ```
    pub fn buffered_amount(&self) -> usize {
        self.transmit.application_bytes()
    }

    /// Wire bytes (frames, compressed, with headers) queued for the transport and
    /// not yet written: what a transport compares with its write-buffer limit.
    #[inline]
    pub fn queued_bytes(&self) -> usize {
        self.transmit.len() + self.pending_pong.as_ref().map_or(0, |p| p.len() + 2)
    }

    // ----- handle_* -----

    /// Bytes arrived from the transport. They are parsed by the next
    /// [`poll_event`](Self::poll_event) calls.
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.state() == State::Closed {
            return;
        }
        // The whole of the keepalive's work here: the deadline looks at it when reached.
        self.heard = true;
        if self.input.capacity() == 0 {
            // Nothing buffered (the usual case): one exact-size allocation, which a
            // frame that is all of it then becomes the message without another.
            self.input = BytesMut::from(data);
        } else {
            self.input.extend_from_slice(data);
        }
    }

    /// Bytes received and not yet parsed (a partial frame or handshake). A transport
    /// with a shared read buffer uses it while this is 0 and hands over what arrived
    /// with [`handle_input`](Self::handle_input); in the middle of a frame it reads
    /// into [`input_buffer`](Self::input_buffer) instead.
    ///
    /// ```
    /// use wsevents_proto::{Config, Connection, Role};
    /// let mut conn = Connection::open(Role::Server, Config::default());
    /// conn.handle_input(&[0x82, 0x85]); // a masked binary frame's header, no more
    /// assert!(conn.poll_event().is_none());
    /// assert_eq!(conn.buffered_input(), 2);
    /// ```
    #[inline]
    pub fn buffered_input(&self) -> usize {
        self.input.len()
    }

    /// The receive buffer, for a transport that reads straight into it (saving the copy
    /// `handle_input` makes). Only append to it; call
    /// [`handle_buffered_input`](Self::handle_buffered_input) after.
    ///
    /// While a frame larger than `reserve` is arriving, the room made is what the rest
    /// of the frame needs (up to 4 MiB at a time), so its payload is read into place
    /// instead of being copied each time the buffer grows.
    pub fn input_buffer(&mut self, reserve: usize) -> bytes::buf::Limit<&mut BytesMut> {
        use bytes::BufMut;
        const MAX_FRAME_RESERVE: usize = 4 << 20;
        let frame_rest = self
            .reading
            .map_or(0, |r| r.len.saturating_sub(self.input.len()));
        self.input
            .reserve(reserve.max(frame_rest.min(MAX_FRAME_RESERVE)));
        let room = self.input.capacity() - self.input.len();
        (&mut self.input).limit(room)
    }

    /// Give back the memory of buffers that hold nothing: the receive buffer when no
    /// partial frame is in it, the transmit buffer when everything was written. A
    /// transport calls this when a read found nothing and it is about to wait, so an idle
    /// connection holds no buffer at all and costs only its own state; the next read or
    /// send allocates again.
    ///
    /// ```
    /// use wsevents_proto::{Config, Connection, Role};
    /// let mut conn = Connection::open(Role::Server, Config::default());
    /// let _ = conn.input_buffer(64 * 1024);
    /// conn.release_idle_buffers();
    /// assert_eq!(conn.buffered_amount(), 0);
    /// ```
    pub fn release_idle_buffers(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = BytesMut::new();
        }
        self.transmit.release_if_empty();
    }

    /// Bytes were appended to [`input_buffer`](Self::input_buffer).
    #[inline]
    pub fn handle_buffered_input(&mut self) {
        if self.state() == State::Closed {
            self.input.clear();
        }
        self.heard = true;
    }

    /// The transport's read side ended (EOF). Unless the connection is closed already,
    /// this ends it uncleanly: an [`Event::Error`] with [`Error::UnexpectedEof`], then
    /// [`Event::Closed`] with code 1006.
    pub fn handle_eof(&mut self) {
        // Frames already received are still handed out first, in order.
        let mut queued = std::mem::take(&mut self.events);
        while let Some(event) = self.next_read_event() {
            queued.push_back(event);
        }
        queued.append(&mut self.events);
        self.events = queued;
        self.fail(Error::UnexpectedEof, Initiator::Remote);
    }

    /// Time passed: act on the deadlines that `now` reached. While connecting or
    /// closing, a handshake deadline that is over fails the connection. While open, the
    /// first call arms the keepalive and idle deadlines (unless
    /// [`open_at`](Self::open_at) did); later calls send a keepalive ping after an
    /// interval with nothing received, fail the connection when nothing came within the
    /// pong timeout after it ([`Timeout::Pong`](crate::Timeout::Pong), with a 1011 close
    /// frame), and start the close handshake with 1001 after the idle timeout (see
    /// [`Config`]). Calling it early, or more often, is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.on_timeout(now);
    }

    /// The caller holds the peer's input back on purpose: its application is behind
    /// (messages wait to be handled) and it stopped reading the transport, so that TCP
    /// slows the peer down. The silence that follows is this end's, not the peer's:
    /// the keepalive must not take it for a dead peer (no keepalive ping, no pong
    /// timeout) and the idle timeout must not take it for an idle connection. Call it
    /// while reading is paused, before each [`handle_timeout`](Self::handle_timeout);
    /// once reading resumes, the deadlines look at what really arrives again.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use wsevents_proto::{Config, Connection, Role, State};
    /// let config = Config {
    ///     ping_interval: Some(Duration::from_secs(1)),
    ///     pong_timeout: Some(Duration::from_secs(1)),
    ///     ..Config::default()
    /// };
    /// let t0 = Instant::now();
    /// let mut server = Connection::open_at(Role::Server, config, t0);
    /// for s in 1..10 {
    ///     server.handle_read_paused();
    ///     server.handle_timeout(t0 + Duration::from_secs(s));
    /// }
    /// assert_eq!(server.state(), State::Open);
    /// assert!(server.poll_transmit().is_none(), "no keepalive ping either");
    /// ```
    pub fn handle_read_paused(&mut self) {
        self.heard = true;
        self.active = true;
    }

    // ----- commands -----

    /// Send a whole message (compressed by a negotiated extension if it chooses to).
    ///
    /// Fails with [`Error::InvalidState`] unless the connection is open.
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        self.send_message(message, true)
    }

    /// Send a whole message as it is, even when an extension such as permessage-deflate
    /// would compress it (already compressed data, or a latency-sensitive message).
    ///
    /// Fails with [`Error::InvalidState`] unless the connection is open.
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), Error> {
        self.send_message(message, false)
    }

    fn send_message(&mut self, message: Message, encode: bool) -> Result<(), Error> {
        self.check_open()?;
        if self.sending.is_some() {
            return Err(Error::MessageInProgress);
        }
        self.active = true;
        let (kind, payload) = match message {
            Message::Text(text) => (MessageKind::Text, text.into_bytes()),
            Message::Binary(data) => (MessageKind::Binary, data),
        };
        if payload.len() <= MAX_SHORT_PAYLOAD && (self.extension.is_none() || !encode) {
            // The common case in one step: a short frame as it is.
            let mask = self.mask_keys.as_mut().map(MaskKeys::next_key);
            self.transmit
                .push_short_data_frame(data_opcode(kind), &payload, mask);
            return Ok(());
        }
        let app_len = payload.len();
        let (payload, rsv) = match self.extension.as_mut() {
            Some(extension) if encode => extension.encode(kind, payload),
            _ => (payload, 0),
        };
        self.queue_data_frame(data_opcode(kind), rsv, true, payload, app_len);
        Ok(())
    }

    /// Server: queue a message framed once for many connections (see
    /// [`PreparedMessage`]): its bytes are shared, not copied, and count into
    /// [`buffered_amount`](Self::buffered_amount) like [`send`](Self::send). It goes
    /// out uncompressed even when permessage-deflate was negotiated (RFC 7692 §6.1 lets
    /// a sender leave any message uncompressed, RSV1 clear), and after everything
    /// queued before it.
    ///
    /// Fails with [`Error::InvalidState`] unless the connection is open, with
    /// [`Error::MessageInProgress`] while a fragmented message is being sent, and with
    /// [`Error::PreparedOnClient`] on a client, whose frames must be masked each with a
    /// key of its own.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        if self.role == Role::Client {
            return Err(Error::PreparedOnClient);
        }
        self.check_open()?;
        if self.sending.is_some() {
            return Err(Error::MessageInProgress);
        }
        self.active = true;
        self.transmit
            .push_shared_frame(message.frame().clone(), message.payload_len());
        Ok(())
    }

    /// Send a text message from borrowed text. A payload shorter than
    /// [`COPIED_PAYLOAD_LEN`] (without an extension that encodes it) is copied straight
    /// into the send queue, which is what [`send`](Self::send) does with such a payload
    /// too: a caller that holds the text elsewhere (an event handler echoing what it
    /// received) saves the owned copy or the shared reference it would make for
    /// `send`. A longer one is copied into a message of its own first (prefer `send`
    /// with the bytes you own).
    ///
    /// ```
    /// use wsevents_proto::{Config, Connection, Role};
    /// let mut conn = Connection::open(Role::Server, Config::default());
    /// conn.send_text_ref("hi")?;
    /// assert_eq!(conn.buffered_amount(), 2);
    /// # Ok::<(), wsevents_proto::Error>(())
    /// ```
    pub fn send_text_ref(&mut self, text: &str) -> Result<(), Error> {
        self.send_borrowed(MessageKind::Text, text.as_bytes())
    }

    /// Send a binary message from borrowed bytes, as
    /// [`send_text_ref`](Self::send_text_ref) does text.
    pub fn send_binary_ref(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send_borrowed(MessageKind::Binary, data)
    }

    /// `payload` is valid UTF-8 when `kind` is text (the two callers above).
    fn send_borrowed(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), Error> {
        if self.extension.is_none() && payload.len() < COPIED_PAYLOAD_LEN {
            self.check_open()?;
            if self.sending.is_some() {
                return Err(Error::MessageInProgress);
            }
            self.active = true;
            if payload.len() <= MAX_SHORT_PAYLOAD {
                let mask = self.mask_keys.as_mut().map(MaskKeys::next_key);
                self.transmit
                    .push_short_data_frame(data_opcode(kind), payload, mask);
            } else {
                let header = self.outgoing_header(data_opcode(kind), 0, true, payload.len());
                self.transmit.push_copied_data_frame(&header, payload);
            }
            return Ok(());
        }
        let payload = Bytes::copy_from_slice(payload);
        let message = match kind {
            MessageKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            MessageKind::Binary => Message::Binary(payload),
        };
        self.send_message(message, true)
    }

    /// Send a text message.
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), Error> {
        self.send(Message::Text(text.into()))
    }

    /// Send a binary message.
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.send(Message::Binary(data.into()))
    }

    /// Send one frame of a fragmented message, uncompressed: the first call starts a
    /// message of `kind`, later calls continue it (their `kind` must match), and the
    /// call with `fin` ends it. Other messages cannot be sent in between; pings, pongs
    /// and close can.
    ///
    /// Text fragments may split a character; the receiver checks the whole message.
    pub fn send_fragment(
        &mut self,
        kind: MessageKind,
        data: Bytes,
        fin: bool,
    ) -> Result<(), Error> {
        self.check_open()?;
        let opcode = match self.sending {
            None => data_opcode(kind),
            Some(sending) if sending == kind => OpCode::Continuation,
            Some(_) => return Err(Error::MessageInProgress),
        };
        self.sending = (!fin).then_some(kind);
        self.active = true;
        let app_len = data.len();
        self.queue_data_frame(opcode, 0, fin, data, app_len);
        Ok(())
    }

    /// Send a ping with up to 125 bytes of payload, unrecorded: its pong reports no
    /// send time (see [`ping_at`](Self::ping_at)).
    pub fn ping(&mut self, data: Bytes) -> Result<(), Error> {
        self.send_control(OpCode::Ping, data)
    }

    /// Send a ping with up to 125 bytes of payload and record that it went out at
    /// `now`: the pong with the same payload reports `now` as its
    /// [`Pong::ping_sent_at`](crate::Pong::ping_sent_at), from which the caller computes
    /// the round-trip time. Only the latest recorded ping is remembered (a keepalive ping
    /// is recorded the same way and replaces it), so use distinct payloads.
    pub fn ping_at(&mut self, data: Bytes, now: Instant) -> Result<(), Error> {
        self.send_control(OpCode::Ping, data.clone())?;
        self.ping_sent = Some((data, now));
        Ok(())
    }

    /// Send an unsolicited pong (a heartbeat) with up to 125 bytes of payload.
    pub fn pong(&mut self, data: Bytes) -> Result<(), Error> {
        self.send_control(OpCode::Pong, data)
    }

    /// Start the close handshake: send `frame` and wait for the peer's close frame.
    ///
    /// Does nothing when already closing or closed. While connecting, aborts the
    /// connection (see [`abort`](Self::abort)). The code must be valid on the wire and
    /// the reason at most 123 bytes; an empty frame (no code) is allowed.
    pub fn close(&mut self, frame: CloseFrame, now: Instant) -> Result<(), Error> {
        frame.check()?;
        match self.state() {
            State::Connecting => self.abort(),
            State::Open => self.enter_closing(frame, Initiator::Local, now),
            State::Closing | State::Closed => {}
        }
        Ok(())
    }

    /// End the connection at once, without a close handshake: an [`Event::Error`]
    /// ([`Error::Aborted`]) then [`Event::Closed`] with code 1006. The transport should
    /// be dropped. Does nothing once closed.
    pub fn abort(&mut self) {
        self.transmit.clear();
        self.fail(Error::Aborted, Initiator::Local);
    }

    /// Server: accept the upgrade request handed out in [`Event::Request`], with the
    /// chosen subprotocol (one the client offered, or none) and extra response headers.
    /// Configured extensions are negotiated against the client's offers.
    pub fn accept(
        &mut self,
        request: &Request,
        protocol: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<(), Error> {
        if !matches!(self.phase, Phase::AwaitingAnswer { .. }) {
            return Err(Error::InvalidState(self.state()));
        }
        let answers = self.negotiate(request, protocol);
        let mut head = BytesMut::new();
        handshake::encode_accept(request, protocol, &answers, headers, &mut head);
        self.transmit.push_raw(&head);
        self.enter_open();
        Ok(())
    }

    /// Server: replace the configuration before answering the request handed out in
    /// [`Event::Request`], for example with the limits, extensions and timeouts of the
    /// route the request asked for. The handshake limits already did their work (the
    /// head is read); everything else applies from the answer on.
    ///
    /// ```
    /// use std::time::Instant;
    /// use wsevents_proto::{Config, Connection, Event};
    /// let mut server = Connection::server(Config::default(), Instant::now());
    /// server.handle_input(b"GET /big HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
    /// Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    /// Sec-WebSocket-Version: 13\r\n\r\n");
    /// let Some(Event::Request(request)) = server.poll_event() else { unreachable!() };
    /// server.reconfigure(Config { max_message_size: 1 << 30, ..Config::default() }).unwrap();
    /// server.accept(&request, None, &[]).unwrap();
    /// assert_eq!(server.config().max_message_size, 1 << 30);
    /// ```
    pub fn reconfigure(&mut self, config: Config) -> Result<(), Error> {
        if !matches!(self.phase, Phase::AwaitingAnswer { .. }) {
            return Err(Error::InvalidState(self.state()));
        }
        self.config = config;
        Ok(())
    }

    /// Server: a connection whose upgrade request was read by another HTTP server (an
    /// HTTP/1.1 upgrade, or an HTTP/2 extended CONNECT, RFC 8441), answered by that
    /// server with the extensions returned here: the configured extensions are
    /// negotiated against `request`'s offers exactly as [`accept`](Self::accept) does,
    /// and the connection starts open at `now`, with `protocol` as its subprotocol.
    /// The caller writes the answers into its response's `Sec-WebSocket-Extensions`
    /// (and `Sec-WebSocket-Accept` from [`handshake::accept_key`] on HTTP/1.1).
    ///
    /// ```
    /// use std::time::Instant;
    /// use wsevents_proto::deflate::{DeflateConfig, PerMessageDeflate};
    /// use wsevents_proto::handshake::check_request;
    /// use wsevents_proto::{Config, Connection, State};
    /// let headers = vec![
    ///     ("Host".to_owned(), b"h".to_vec()),
    ///     ("Upgrade".to_owned(), b"websocket".to_vec()),
    ///     ("Connection".to_owned(), b"Upgrade".to_vec()),
    ///     ("Sec-WebSocket-Key".to_owned(), b"dGhlIHNhbXBsZSBub25jZQ==".to_vec()),
    ///     ("Sec-WebSocket-Version".to_owned(), b"13".to_vec()),
    ///     ("Sec-WebSocket-Extensions".to_owned(), b"permessage-deflate".to_vec()),
    /// ];
    /// let request = check_request("GET", "/", headers).unwrap();
    /// let mut config = Config::default();
    /// config.extensions.push(std::sync::Arc::new(PerMessageDeflate::new(DeflateConfig::default())));
    /// let (conn, answers) = Connection::accepted(config, &request, None, Instant::now());
    /// assert_eq!(conn.state(), State::Open);
    /// assert_eq!(answers[0].to_string(), "permessage-deflate");
    /// assert_eq!(conn.extensions(), "permessage-deflate");
    /// ```
    pub fn accepted(
        config: Config,
        request: &Request,
        protocol: Option<&str>,
        now: Instant,
    ) -> (Self, Vec<handshake::ExtensionOffer>) {
        let mut conn = Connection::open_at(Role::Server, config, now);
        let answers = conn.negotiate(request, protocol);
        (conn, answers)
    }

    /// Negotiate the configured extensions against `request`'s offers (the first
    /// factory with an acceptable offer wins) and record the subprotocol; the answers
    /// for the response's `Sec-WebSocket-Extensions`.
    fn negotiate(
        &mut self,
        request: &Request,
        protocol: Option<&str>,
    ) -> Vec<handshake::ExtensionOffer> {
        let mut answers = Vec::new();
        for factory in self.config.extensions.clone() {
            if self.extension.is_some() {
                break;
            }
            let offers: Vec<_> = request
                .extensions
                .iter()
                .filter(|offer| offer.name.eq_ignore_ascii_case(factory.name()))
                .collect();
            if offers.is_empty() {
                continue;
            }
            if let Some((answer, extension)) = factory.accept_offers(&offers) {
                answers.push(answer);
                self.set_extension(extension);
            }
        }
        self.extensions_header = answers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.protocol = protocol.map(str::to_owned);
        answers
    }

    /// Server: refuse the upgrade request with an HTTP `status` and a text `body`; the
    /// connection closes once the response is written.
    pub fn reject(
        &mut self,
        status: u16,
        body: &str,
        headers: &[(String, String)],
    ) -> Result<(), Error> {
        if !matches!(self.phase, Phase::AwaitingAnswer { .. }) {
            return Err(Error::InvalidState(self.state()));
        }
        let mut head = BytesMut::new();
        handshake::encode_reject(status, body, headers, &mut head);
        self.transmit.push_raw(&head);
        self.end(Closure {
            initiator: Initiator::Local,
            sent: None,
            received: None,
        });
        Ok(())
    }

    // ----- poll_* -----

    /// The next event, parsing buffered input as needed; `None` when more input (or a
    /// caller's answer) is needed.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if self.input.is_empty() {
            // Nothing to parse, so nothing to hand out: commands and timeouts queue
            // their events. (Every caller asks once more after the last event.)
            return None;
        }
        self.next_read_event().or_else(|| self.events.pop_front())
    }

    /// The next event already made, without parsing any input: what commands, deadlines
    /// and the end of input queued (a failure by the keepalive, the close of a close
    /// timeout, an abort). For a caller that holds the peer's input back (see
    /// [`handle_read_paused`](Self::handle_read_paused)): the events of the input
    /// already received wait for [`poll_event`](Self::poll_event), in order.
    ///
    /// ```
    /// use wsevents_proto::{Config, Connection, Event, Role};
    /// let mut server = Connection::open(Role::Server, Config::default());
    /// // A masked text frame "Hi": received, not parsed.
    /// server.handle_input(&[0x81, 0x82, 0, 0, 0, 0, b'H', b'i']);
    /// assert!(server.poll_queued_event().is_none());
    /// server.abort();
    /// assert!(matches!(server.poll_queued_event(), Some(Event::Error(_))));
    /// ```
    #[inline]
    pub fn poll_queued_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next event if it is a message ready to hand out, else `None`: a shortcut for
    /// the most common event, cheaper than [`poll_event`](Self::poll_event) (no
    /// [`Event`] to build and take apart). `None` says nothing more: the next event may
    /// be anything else, or need more input; `poll_event` tells. The two may be mixed
    /// freely, and between them hand out every event once, in order.
    ///
    /// ```
    /// use wsevents_proto::{Config, Connection, Event, Role};
    /// let mut conn = Connection::open(Role::Client, Config::default());
    /// // From the server: a text message, then a ping.
    /// conn.handle_input(b"\x81\x02hi\x89\x00");
    /// assert_eq!(conn.poll_message().unwrap().as_text(), Some("hi"));
    /// assert!(conn.poll_message().is_none(), "a ping is not a message");
    /// assert!(matches!(conn.poll_event(), Some(Event::Ping(_))));
    /// ```
    #[inline]
    pub fn poll_message(&mut self) -> Option<Message> {
        match self.events.front() {
            Some(Event::Message(_)) => match self.events.pop_front() {
                Some(Event::Message(message)) => Some(message),
                _ => None,
            },
            Some(_) => None,
            None => {
                #[cfg(test)]
                if !self.whole_frames {
                    return None;
                }
                self.read_whole_frame()
            }
        }
    }

    /// The bytes to write to the transport, if any: write them (vectored, as a
    /// [`Buf`]) and `advance` the queue by what was written.
    #[inline]
    pub fn poll_transmit(&mut self) -> Option<&mut TransmitQueue> {
        if let Some(payload) = self.pending_pong.take() {
            let header = self.outgoing_header(OpCode::Pong, 0, true, payload.len());
            self.transmit.push_frame(&header, payload);
        }
        (!self.transmit.is_empty()).then_some(&mut self.transmit)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever: the
    /// earliest deadline of the phase (the opening handshake, the close handshake) and,
    /// while open, of the keepalive and idle checks. It changes only when a command or
    /// `handle_timeout` moves it (input only ends the keepalive and idle deadlines, with
    /// the transition to CLOSING or CLOSED it causes), so a driver re-arms its timer
    /// only when the value changes. An instant already past (a connection that has just
    /// opened, asking for its deadlines to be armed) means: call at once.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.phase.deadline()
    }

    // ----- reading -----

    /// Read until an event comes out or input runs short; failures are turned into
    /// the events that report them.
    fn next_read_event(&mut self) -> Option<Event> {
        #[cfg(test)]
        let whole_frames = self.whole_frames;
        #[cfg(not(test))]
        let whole_frames = true;
        if whole_frames && let Some(message) = self.read_whole_frame() {
            return Some(Event::Message(message));
        }
        loop {
            let step = match self.phase {
                Phase::AwaitingResponse { .. } => self.read_response(),
                Phase::AwaitingRequest { .. } => self.read_request(),
                Phase::Open(_) | Phase::Closing { .. } => {
                    self.read_frame().map_err(Error::Protocol)
                }
                Phase::AwaitingAnswer { .. } | Phase::Closed(_) => Ok(Step::Blocked),
            };
            match step {
                Ok(Step::Event(event)) => return Some(event),
                Ok(Step::Again) => {}
                Ok(Step::Blocked) => return None,
                Err(error) => {
                    self.fail(error, Initiator::Library);
                    return self.events.pop_front();
                }
            }
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
        }
    }

    fn read_response(&mut self) -> Result<Step, Error> {
        let Phase::AwaitingResponse { request, .. } = &self.phase else {
            return Ok(Step::Blocked);
        };
        let Some((response, consumed)) =
            request.parse_response(&self.input, &self.config.handshake)?
        else {
            return Ok(Step::Blocked);
        };
        self.input.advance(consumed);
        for answer in &response.extensions {
            let factory = self
                .config
                .extensions
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(&answer.name))
                .ok_or_else(|| {
                    handshake::HandshakeError::UnrequestedExtension(answer.name.clone())
                })?;
            if self.extension.is_some() {
                return Err(
                    handshake::HandshakeError::UnrequestedExtension(answer.name.clone()).into(),
                );
            }
            let extension = factory.accept_response(answer)?;
            self.set_extension(extension);
        }
        self.extensions_header = response
            .extensions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.protocol = response.protocol.clone();
        self.response = Some(Box::new(response));
        self.enter_open();
        Ok(Step::Again)
    }

    fn read_request(&mut self) -> Result<Step, Error> {
        let Some((request, consumed)) =
            handshake::parse_request(&self.input, &self.config.handshake)?
        else {
            return Ok(Step::Blocked);
        };
        self.input.advance(consumed);
        let Phase::AwaitingRequest { deadline } = self.phase else {
            return Ok(Step::Blocked);
        };
        self.phase = Phase::AwaitingAnswer { deadline };
        Ok(Step::Event(Event::Request(Box::new(request))))
    }

    fn read_frame(&mut self) -> Result<Step, ProtocolError> {
        let mut reading = match self.reading {
            Some(reading) => reading,
            None => {
                let Some((header, header_len)) = FrameHeader::decode(&self.input)? else {
                    return Ok(Step::Blocked);
                };
                let len = self.check_header(&header)?;
                self.input.advance(header_len);
                Reading {
                    header,
                    len,
                    processed: 0,
                }
            }
        };

        // Unmask (and check, for text) whatever arrived since the last call.
        let available = self.input.len().min(reading.len);
        if available > reading.processed {
            let fresh = &mut self.input[reading.processed..available];
            if let Some(key) = reading.header.mask {
                mask::apply_mask(fresh, key, reading.processed);
            }
            if self.assembler.checks_on_arrival(reading.header.opcode) {
                self.assembler.check_arrival(fresh)?;
            }
            reading.processed = available;
        }
        if available < reading.len {
            self.reading = Some(reading);
            return Ok(Step::Blocked);
        }
        self.reading = None;
        let payload = self.take_input(reading.len);

        match reading.header.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.config.auto_pong && self.state() == State::Open {
                    // Only the latest ping is owed a pong (RFC 6455 §5.5.3).
                    self.pending_pong = Some(payload.clone());
                }
                Ok(Step::Event(Event::Ping(payload)))
            }
            OpCode::Pong => {
                let payload = payload.freeze();
                let ping_sent_at = match &self.ping_sent {
                    Some((ping, _)) if *ping == payload => self.ping_sent.take().map(|(_, t)| t),
                    _ => None,
                };
                Ok(Step::Event(Event::Pong(Pong {
                    payload,
                    ping_sent_at,
                })))
            }
            OpCode::Close => {
                let frame = CloseFrame::parse(&payload)?;
                self.on_close_received(frame);
                Ok(Step::Again)
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.active = true;
                let assembled = self.assembler.finish_frame(
                    reading.header.fin,
                    payload,
                    self.extension.as_deref_mut(),
                    self.config.max_message_size,
                    self.config.stream_fragments,
                )?;
                Ok(match assembled {
                    Assembled::Nothing => Step::Again,
                    Assembled::Message(message) => Step::Event(Event::Message(message)),
                    Assembled::Fragment(fragment) => Step::Event(Event::Fragment(fragment)),
                })
            }
        }
    }

    /// The first `len` bytes of the input, as a buffer of their own. When they are all
    /// it holds (one message per read, the usual case) the buffer is taken whole:
    /// splitting it would allocate to share it.
    fn take_input(&mut self, len: usize) -> BytesMut {
        if len == self.input.len() {
            std::mem::take(&mut self.input)
        } else {
            self.input.split_to(len)
        }
    }

    /// The rules a header breaks only in the context of this connection: masking by
    /// role, RSV bits of negotiated extensions, the frame-size limit, fragmentation
    /// order and the message-size limit. Returns the payload length as `usize`.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) if !self.config.danger_accept_unmasked_frames => {
                return Err(ProtocolError::UnmaskedFrame);
            }
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let allowed_rsv = match header.opcode {
            OpCode::Text | OpCode::Binary => self.extension_rsv,
            _ => 0,
        };
        if header.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits(header.rsv & !allowed_rsv));
        }
        let len = usize::try_from(header.payload_len)
            .ok()
            .filter(|len| *len <= self.config.max_frame_size)
            .ok_or(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                max: self.config.max_frame_size,
            })?;
        if !header.opcode.is_control() {
            let encoded = header.rsv != 0;
            self.assembler
                .begin_frame(header, encoded, self.config.max_message_size)?;
            self.assembler.reserve(len);
        }
        Ok(len)
    }

    // ----- writing -----

    fn check_open(&self) -> Result<(), Error> {
        match self.state() {
            State::Open => Ok(()),
            state => Err(Error::InvalidState(state)),
        }
    }

    fn send_control(&mut self, opcode: OpCode, data: Bytes) -> Result<(), Error> {
        self.check_open()?;
        if data.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::ControlPayloadTooLarge(data.len()));
        }
        let header = self.outgoing_header(opcode, 0, true, data.len());
        self.transmit.push_frame(&header, data);
        Ok(())
    }

    fn queue_data_frame(
        &mut self,
        opcode: OpCode,
        rsv: u8,
        fin: bool,
        payload: Bytes,
        app_len: usize,
    ) {
        let header = self.outgoing_header(opcode, rsv, fin, payload.len());
        self.transmit.push_data_frame(&header, payload, app_len);
    }

    fn set_extension(&mut self, extension: Box<dyn Extension>) {
        self.extension_rsv = extension.rsv_bits();
        self.extension = Some(extension);
    }
}

fn data_opcode(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}
