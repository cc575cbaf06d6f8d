//! Limits and switches of a connection, with the defaults and why.
//!
//! Every limit bounds memory a peer can make this end hold: `max_frame_size` bounds the
//! receive buffer (a frame is held whole until its last byte, unless fragments are
//! streamed), `max_message_size` bounds message assembly and decompression, and
//! `handshake.max_head_size` bounds the HTTP head.

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
            auto_pong: true,
            stream_fragments: false,
            extensions: Vec::new(),
            danger_accept_unmasked_frames: false,
        }
    }
}
