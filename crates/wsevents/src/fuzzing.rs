//! What the fuzz targets in `fuzz/` reach inside the crate: thin wrappers around
//! internal parsers, compiled only with `--cfg fuzzing` (`cargo fuzz`, `fuzz/run` and
//! `scripts/test` set it). Not an API: hidden, and absent from every other build.

#[cfg(feature = "redis")]
pub use self::redis::*;

/// The Redis backend's parsers (feature `redis`): its envelopes and the history read's
/// answer.
#[cfg(feature = "redis")]
mod redis {
    use bytes::Bytes;

    use crate::Message;
    use crate::hub::{Position, Publication, Recovery, RedisBackend};

    /// Open a `wse1` envelope (`b"wse1"`, node id, kind, payload): the node and the
    /// message.
    pub fn open_envelope(data: &[u8]) -> Option<(u64, Message)> {
        RedisBackend::fuzz_open_envelope(data)
    }

    /// Seal `message` of node `node` in a `wse1` envelope, as the publisher does.
    pub fn seal_envelope(node: u64, message: &Message) -> Bytes {
        RedisBackend::fuzz_seal_envelope(node, message)
    }

    /// Open a `wse2` envelope (`wse2 EPOCH:OFFSET KIND PAYLOAD`).
    pub fn open_stored(data: &[u8]) -> Option<Publication> {
        RedisBackend::fuzz_open_stored(data)
    }

    /// Parse `resp` as a Redis reply (RESP), then as the answer of the history read
    /// for a subscriber that last saw `since`; `None` if either is malformed.
    pub fn parse_recovery(resp: &[u8], since: Option<&Position>) -> Option<Recovery> {
        RedisBackend::fuzz_parse_recovery(resp, since)
    }
}
