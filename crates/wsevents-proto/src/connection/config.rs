//! Limits and switches of a connection, with the defaults and why.
//!
//! Every limit bounds memory a peer can make this end hold: `max_frame_size` bounds the
//! receive buffer (a frame is held whole until its last byte, unless fragments are
//! streamed), `max_message_size` bounds message assembly and decompression, and
//! `handshake.max_head_size` bounds the HTTP head.
//!
//! The timeouts are deadlines the connection hands out through
//! [`poll_timeout`](crate::Connection::poll_timeout), never timers it runs: the
//! handshake and close timeouts bound the two handshakes, and the keepalive
//! (`ping_interval`, `pong_timeout`) and `idle_timeout` bound how long an open
//! connection lives without hearing from its peer, or without any message at all.

use std::sync::Arc;
use std::time::Duration;

use crate::extension::ExtensionFactory;
use crate::handshake::Limits;

/// Configuration of a [`Connection`](crate::Connection).
///
/// ```
/// use wsevents_proto::Config;
/// let config = Config {
///     max_message_size: 1 << 20,
///     ..Config::default()
/// };
/// assert_eq!(config.max_frame_size, 16 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest frame payload accepted; a larger one fails the connection with 1009.
    /// Default 16 MiB.
    pub max_frame_size: usize,
    /// The largest message accepted (after decompression); a larger one fails the
    /// connection with 1009. Default 64 MiB.
    pub max_message_size: usize,
    /// Bounds on the HTTP head of the opening handshake.
    pub handshake: Limits,
    /// How long the opening handshake may take. Default 10 s.
    pub handshake_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours. Default 5 s.
    pub close_timeout: Option<Duration>,
    /// Keepalive: after this long with nothing received from the peer, send it a ping.
    /// Default 20 s (under the 30–60 s after which NATs, load balancers and proxies
    /// commonly drop a silent TCP connection; python-websockets' default too); `None`
    /// sends no keepalive ping.
    ///
    /// The check is lazy, so receiving costs no clock read: the deadline moves only
    /// when it is reached. If anything was received since it was set, it moves one
    /// interval on; if not, the ping goes out. So a ping goes out only after a whole
    /// interval with nothing received, and between one and two intervals after the
    /// last byte received. The keepalive ping is recorded like one sent with
    /// [`ping_at`](crate::Connection::ping_at), so its pong carries the round-trip.
    pub ping_interval: Option<Duration>,
    /// Keepalive: after a keepalive ping, how long the peer has to send anything (its
    /// pong, or any other byte) before the connection fails: a best-effort close frame
    /// with 1011, then [`Error::Timeout`](crate::Error::Timeout)
    /// ([`Timeout::Pong`](crate::Timeout::Pong)) and a close reported as 1006, not clean,
    /// without waiting for the close handshake (the peer is presumed gone). Default 20 s
    /// (room for a slow or congested link); `None` never fails the connection, pings
    /// then simply keep going out every `ping_interval`. Only used with a
    /// `ping_interval`.
    ///
    /// A peer that never sends is failed exactly `ping_interval + pong_timeout` after the
    /// connection opened (after its deadlines were armed: see
    /// [`Connection::open_at`](crate::Connection::open_at)); a peer that goes silent, at
    /// most `ping_interval + pong_timeout + max(ping_interval, pong_timeout)` after its
    /// last byte (2 × `ping_interval` + `pong_timeout`, 60 s, with the defaults).
    pub pong_timeout: Option<Duration>,
    /// After this long with no data message in either direction (sent with `send` or
    /// `send_fragment`, received as a message or a fragment; pings, pongs and partial
    /// frames do not count), start the close handshake with 1001 and the reason
    /// "idle timeout" (the library's initiative, bounded by `close_timeout` as usual).
    /// Default `None`: idleness is the application's business unless it asks, since a
    /// quiet but live connection (a subscription with nothing to say) is normal.
    ///
    /// Checked lazily like the keepalive: the close comes between one and two
    /// `idle_timeout`s after the last data message.
    pub idle_timeout: Option<Duration>,
    /// Answer pings with pongs automatically. Default on.
    pub auto_pong: bool,
    /// Hand out [`Fragment`](crate::Fragment) events frame by frame instead of whole
    /// messages, for streaming large messages. Default off.
    pub stream_fragments: bool,
    /// Extensions this end offers (client) or accepts (server), most preferred first.
    pub extensions: Vec<Arc<dyn ExtensionFactory>>,
    /// Server only: accept unmasked frames from the client, which RFC 6455 §5.1
    /// forbids. For testing against broken peers only. Default off.
    pub danger_accept_unmasked_frames: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            handshake: Limits::default(),
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Some(Duration::from_secs(5)),
            ping_interval: Some(Duration::from_secs(20)),
            pong_timeout: Some(Duration::from_secs(20)),
            idle_timeout: None,
            auto_pong: true,
            stream_fragments: false,
            extensions: Vec::new(),
            danger_accept_unmasked_frames: false,
        }
    }
}
