//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`):
//! install any recorder (Prometheus, StatsD, OpenTelemetry, …) and the library reports
//! what its connections do. Without the feature this module is empty and every hook
//! compiles to nothing.
//!
//! | name | type | labels | unit | what |
//! |---|---|---|---|---|
//! | `wsevents_connections_open` | gauge | `role` | connections | open now: from the handshake's end until the transport's teardown is over |
//! | `wsevents_connections_total` | counter | `role` | connections | opened (handshake done), ever |
//! | `wsevents_handshakes_refused_total` | counter | `status` | requests | upgrade requests a server answered with an HTTP error: `404` no route, `403` origin, `503` at the connection cap or shutting down, `429` at the cap of connections of its address, `400`/`405`/`426`/`431` a bad request, or the accept hook's own status (`401`, …) |
//! | `wsevents_handshakes_failed_total` | counter | `role`, `reason` | handshakes | opening handshakes that ended without an answer: `timeout`, `tls`, `eof` (the peer left), `io`, `per_ip_cap` (closed at accept: its address had its cap of handshakes in progress); clients also `refused` (the server did not answer 101) and `bad_response` |
//! | `wsevents_messages_received_total` | counter | `role` | messages | whole messages received (text and binary; not pings, pongs or close frames) |
//! | `wsevents_messages_sent_total` | counter | `role` | messages | whole messages queued to send (stream API, event API, prepared and hub messages) |
//! | `wsevents_bytes_received_total` | counter | `role` | bytes | read from the transport |
//! | `wsevents_bytes_sent_total` | counter | `role` | bytes | written to the transport |
//! | `wsevents_close_codes_total` | counter | `role`, `code`, `initiator` | connections | how open connections ended |
//!
//! - `role` is `client` or `server`.
//! - **Bytes are wire bytes** of the WebSocket stream, as the driver reads and writes
//!   them: frame headers, masks, control frames and payloads as sent (compressed by
//!   permessage-deflate when it was negotiated), and the opening handshake's HTTP when
//!   the library does the handshake (clients, `Server`, `Acceptor::accept`,
//!   `Lifecycle::accept`; not when hyper or axum read the request, as in
//!   `wsevents serve`). TLS records add their own overhead below that, not counted. So bytes per message
//!   show framing and compression at work; the payloads' own size is the application's
//!   business.
//! - `close_codes`: `initiator` is `local` (this end's caller closed, or its server
//!   shut down), `remote` (the peer's close frame, or its transport ending) or
//!   `library` (the peer broke the protocol, or a keepalive or close timeout ran out);
//!   `code` is that side's close code: the one sent for `local` and `library`, the one
//!   received for `remote`; `1005` for a close frame without a code, `1006` when no
//!   close frame went that way (an abort, a transport that just ended).
//!
//! **Cost.** The handles are registered once per process and role, on the first
//! connection, and kept in `static`s: the hot path (each message, each read, each
//! write) is one increment of a handle already taken, no key lookup and no
//! allocation. Labels that vary (`status`, `code`, `reason`) are registered when the
//! event happens, once per handshake or per connection's end. So **install the
//! recorder before the first connection**: handles taken before that stay with the
//! no-op recorder.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Any recorder; here Prometheus' (`metrics-exporter-prometheus`), rendered by hand.
//! let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! wsevents::metrics::describe(); // units and help texts, for exporters that show them
//!
//! let server = wsevents::Server::bind("127.0.0.1:0").await?;
//! // ... accept, serve; then, on each scrape:
//! let text = prometheus.render();
//! // # TYPE wsevents_connections_open gauge
//! // wsevents_connections_open{role="server"} 12
//! // wsevents_close_codes_total{role="server",code="1001",initiator="local"} 3
//! # let _ = (server, text);
//! # Ok(()) }
//! ```
//!
//! `wsevents serve --metrics 127.0.0.1:9090` serves them at `/metrics` in Prometheus'
//! text format (with `metrics-exporter-prometheus`).

#[cfg(not(feature = "metrics"))]
pub(crate) use self::disabled::*;
#[cfg(feature = "metrics")]
pub use self::enabled::*;

/// The names, the handles, and the hooks the rest of the crate calls.
#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::OnceLock;

    use ::metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};

    use wsevents_proto::{Closure, Event, Role};

    /// Gauge, by `role`: connections open now.
    pub const CONNECTIONS_OPEN: &str = "wsevents_connections_open";
    /// Counter, by `role`: connections opened.
    pub const CONNECTIONS_TOTAL: &str = "wsevents_connections_total";
    /// Counter, by `status`: upgrade requests answered with an HTTP error.
    pub const HANDSHAKES_REFUSED_TOTAL: &str = "wsevents_handshakes_refused_total";
    /// Counter, by `role` and `reason`: handshakes that ended without an answer.
    pub const HANDSHAKES_FAILED_TOTAL: &str = "wsevents_handshakes_failed_total";
    /// Counter, by `role`: whole messages received.
    pub const MESSAGES_RECEIVED_TOTAL: &str = "wsevents_messages_received_total";
    /// Counter, by `role`: whole messages sent.
    pub const MESSAGES_SENT_TOTAL: &str = "wsevents_messages_sent_total";
    /// Counter, by `role`, in bytes: read from the transport.
    pub const BYTES_RECEIVED_TOTAL: &str = "wsevents_bytes_received_total";
    /// Counter, by `role`, in bytes: written to the transport.
    pub const BYTES_SENT_TOTAL: &str = "wsevents_bytes_sent_total";
    /// Counter, by `role`, `code` and `initiator`: how connections ended.
    pub const CLOSE_CODES_TOTAL: &str = "wsevents_close_codes_total";

    /// Give the installed recorder each metric's unit and help text (exporters show
    /// them: Prometheus' `# HELP` lines). Call it once, after installing the recorder.
    ///
    /// ```
    /// // With no recorder installed, this does nothing.
    /// wsevents::metrics::describe();
    /// ```
    pub fn describe() {
        describe_gauge!(
            CONNECTIONS_OPEN,
            Unit::Count,
            "WebSocket connections open now (handshake done, teardown not yet over)."
        );
        describe_counter!(
            CONNECTIONS_TOTAL,
            Unit::Count,
            "WebSocket connections opened."
        );
        describe_counter!(
            HANDSHAKES_REFUSED_TOTAL,
            Unit::Count,
            "Upgrade requests answered with an HTTP error, by status."
        );
        describe_counter!(
            HANDSHAKES_FAILED_TOTAL,
            Unit::Count,
            "Opening handshakes that ended without an answer, by reason."
        );
        describe_counter!(
            MESSAGES_RECEIVED_TOTAL,
            Unit::Count,
            "Whole WebSocket messages received."
        );
        describe_counter!(
            MESSAGES_SENT_TOTAL,
            Unit::Count,
            "Whole WebSocket messages sent."
        );
        describe_counter!(
            BYTES_RECEIVED_TOTAL,
            Unit::Bytes,
            "Bytes read from the transport (handshake and frames, below TLS)."
        );
        describe_counter!(
            BYTES_SENT_TOTAL,
            Unit::Bytes,
            "Bytes written to the transport (handshake and frames, below TLS)."
        );
        describe_counter!(
            CLOSE_CODES_TOTAL,
            Unit::Count,
            "Connections ended, by close code and initiator."
        );
    }

    /// The handles of one role, registered once.
    struct Handles {
        open: Gauge,
        opened: Counter,
        received: Counter,
        sent: Counter,
        bytes_received: Counter,
        bytes_sent: Counter,
    }

    impl Handles {
        fn register(role: &'static str) -> Handles {
            Handles {
                open: gauge!(CONNECTIONS_OPEN, "role" => role),
                opened: counter!(CONNECTIONS_TOTAL, "role" => role),
                received: counter!(MESSAGES_RECEIVED_TOTAL, "role" => role),
                sent: counter!(MESSAGES_SENT_TOTAL, "role" => role),
                bytes_received: counter!(BYTES_RECEIVED_TOTAL, "role" => role),
                bytes_sent: counter!(BYTES_SENT_TOTAL, "role" => role),
            }
        }
    }

    #[inline]
    fn handles(role: Role) -> &'static Handles {
        static CLIENT: OnceLock<Handles> = OnceLock::new();
        static SERVER: OnceLock<Handles> = OnceLock::new();
        match role {
            Role::Client => CLIENT.get_or_init(|| Handles::register("client")),
            Role::Server => SERVER.get_or_init(|| Handles::register("server")),
        }
    }

    fn role_label(role: Role) -> &'static str {
        match role {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// One connection's place in the metrics: whether it counts as open (the gauge
    /// goes down when the teardown is over, or when the connection is dropped).
    #[derive(Debug)]
    pub(crate) struct ConnMetrics {
        open: Option<Role>,
    }

    impl ConnMetrics {
        /// A connection in its handshake.
        pub(crate) fn new() -> ConnMetrics {
            ConnMetrics { open: None }
        }

        /// A connection that is open already (its handshake was done elsewhere).
        pub(crate) fn opened(role: Role) -> ConnMetrics {
            let mut metrics = ConnMetrics::new();
            metrics.open(role);
            metrics
        }

        fn open(&mut self, role: Role) {
            if self.open.is_none() {
                let handles = handles(role);
                handles.opened.increment(1);
                handles.open.increment(1.0);
                self.open = Some(role);
            }
        }

        /// An event of the core, on its way out of the driver. `io_failed`: the
        /// transport failed (an `UnexpectedEof` is then an I/O error).
        #[inline]
        pub(crate) fn on_event(&mut self, role: Role, event: &Event, io_failed: bool) {
            match event {
                Event::Message(_) => message_received(role),
                Event::Open => self.open(role),
                Event::Error(error) if self.open.is_none() => {
                    handshake_error(role, error, io_failed);
                }
                Event::Closed(closure) if self.open.is_some() => closed(role, closure),
                _ => {}
            }
        }

        /// The transport's teardown is over: no longer open.
        pub(crate) fn torn_down(&mut self) {
            if let Some(role) = self.open.take() {
                handles(role).open.decrement(1.0);
            }
        }
    }

    impl Drop for ConnMetrics {
        fn drop(&mut self) {
            self.torn_down();
        }
    }

    /// A whole message came out of the core.
    #[inline]
    pub(crate) fn message_received(role: Role) {
        handles(role).received.increment(1);
    }

    /// A whole message went into the core's send queue.
    #[inline]
    pub(crate) fn message_sent(role: Role) {
        handles(role).sent.increment(1);
    }

    /// `n` bytes were read from the transport.
    #[inline]
    pub(crate) fn bytes_received(role: Role, n: usize) {
        handles(role).bytes_received.increment(n as u64);
    }

    /// `n` bytes were written to the transport.
    #[inline]
    pub(crate) fn bytes_sent(role: Role, n: usize) {
        handles(role).bytes_sent.increment(n as u64);
    }

    /// A server answered an upgrade request with `status`.
    pub(crate) fn handshake_refused(status: http::StatusCode) {
        counter!(HANDSHAKES_REFUSED_TOTAL, "status" => status.as_str().to_owned()).increment(1);
    }

    /// An opening handshake ended without an answer, for `reason`.
    pub(crate) fn handshake_failed(role: Role, reason: &'static str) {
        counter!(HANDSHAKES_FAILED_TOTAL, "role" => role_label(role), "reason" => reason)
            .increment(1);
    }

    /// The core's error before the connection opened: a request it refused itself
    /// (the status it answered), or a failed handshake.
    fn handshake_error(role: Role, error: &wsevents_proto::Error, io_failed: bool) {
        use wsevents_proto::Error;
        let reason = match error {
            Error::Handshake(e) => match (role, e.status()) {
                (Role::Server, Some(status)) => {
                    if let Ok(status) = http::StatusCode::from_u16(status) {
                        handshake_refused(status);
                    }
                    return;
                }
                (Role::Client, _)
                    if matches!(
                        e,
                        wsevents_proto::handshake::HandshakeError::UnexpectedStatus { .. }
                    ) =>
                {
                    "refused"
                }
                (Role::Client, _) => "bad_response",
                (Role::Server, None) => "bad_request",
            },
            Error::UnexpectedEof if io_failed => "io",
            Error::UnexpectedEof => "eof",
            Error::Timeout(_) => "timeout",
            Error::Aborted => "aborted",
            _ => "error",
        };
        handshake_failed(role, reason);
    }

    /// An open connection ended.
    fn closed(role: Role, closure: &Closure) {
        use wsevents_proto::{CloseCode, Initiator};
        let (initiator, frame) = match closure.initiator {
            Initiator::Local => ("local", &closure.sent),
            Initiator::Library => ("library", &closure.sent),
            Initiator::Remote => ("remote", &closure.received),
        };
        let code = match frame {
            Some(frame) => frame.reported_code(),
            None => CloseCode::ABNORMAL,
        };
        counter!(
            CLOSE_CODES_TOTAL,
            "role" => role_label(role),
            "code" => code.as_u16().to_string(),
            "initiator" => initiator,
        )
        .increment(1);
    }
}

/// The same hooks, doing nothing: the default build pays nothing for metrics.
#[cfg(not(feature = "metrics"))]
mod disabled {
    use wsevents_proto::{Event, Role};

    /// Nothing to remember.
    #[derive(Debug)]
    pub(crate) struct ConnMetrics;

    impl ConnMetrics {
        #[inline(always)]
        pub(crate) fn new() -> ConnMetrics {
            ConnMetrics
        }

        #[inline(always)]
        pub(crate) fn opened(_: Role) -> ConnMetrics {
            ConnMetrics
        }

        #[inline(always)]
        pub(crate) fn on_event(&mut self, _: Role, _: &Event, _: bool) {}

        #[inline(always)]
        pub(crate) fn torn_down(&mut self) {}
    }

    #[inline(always)]
    pub(crate) fn message_received(_: Role) {}

    #[inline(always)]
    pub(crate) fn message_sent(_: Role) {}

    #[inline(always)]
    pub(crate) fn bytes_received(_: Role, _: usize) {}

    #[inline(always)]
    pub(crate) fn bytes_sent(_: Role, _: usize) {}

    #[inline(always)]
    pub(crate) fn handshake_refused(_: http::StatusCode) {}

    #[inline(always)]
    pub(crate) fn handshake_failed(_: Role, _: &'static str) {}
}
