//! The names a topic has in Redis: its channel and, on a hub with history, its keys.
//! One place, so that every name is made the same way and none stands for two topics.
//!
//! Under the prefix ([`RedisConfig::prefix`](super::RedisConfig::prefix)), a topic `T` is
//! the channel `T`, the hash `meta:T` (epoch, latest offset, bytes), the stream
//! `history:T` and, per idempotency key `K`, the string `key:LEN:T:K` where `LEN` is the
//! length of `T` in bytes (decimal): without it, topic `a` with key `b:c` and topic
//! `a:b` with key `c` would be one key. (Keys written as `key:T:K` before are not found
//! after the upgrade: a retry across it may be stored twice.)

/// Makes the channel and key names of topics, under a prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The channel a topic's publications go on.
    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// The topic of a channel; `None` for a channel not under the prefix.
    pub(super) fn topic<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)
    }

    /// The topic of a channel, made of the channel's own bytes; `None` for a channel
    /// not under the prefix.
    pub(super) fn topic_of_channel(&self, mut channel: String) -> Option<String> {
        if !channel.starts_with(&self.prefix) {
            return None;
        }
        channel.drain(..self.prefix.len());
        Some(channel)
    }

    /// The hash of a topic's epoch and latest offset.
    pub(super) fn meta(&self, topic: &str) -> String {
        format!("{}meta:{topic}", self.prefix)
    }

    /// The stream of a topic's history (entry ids `0-OFFSET`).
    pub(super) fn stream(&self, topic: &str) -> String {
        format!("{}history:{topic}", self.prefix)
    }

    /// An idempotency key seen on a topic: the topic's length first, so that where
    /// the topic ends is never in doubt.
    pub(super) fn publish_key(&self, topic: &str, key: &str) -> String {
        format!("{}key:{}:{topic}:{key}", self.prefix, topic.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_key_names_its_topic_unambiguously() {
        let keys = Keys::new("p:");
        assert_eq!(keys.publish_key("a", "b:c"), "p:key:1:a:b:c");
        assert_eq!(keys.publish_key("a:b", "c"), "p:key:3:a:b:c");
        assert_ne!(keys.publish_key("a", "b:c"), keys.publish_key("a:b", "c"));
        assert_ne!(keys.publish_key("", "1:x"), keys.publish_key("1", "x"));
        assert_eq!(keys.channel("t"), "p:t");
        assert_eq!(keys.topic("p:t"), Some("t"));
        assert_eq!(keys.topic("q:t"), None);
        assert_eq!(keys.topic_of_channel("p:t".into()).as_deref(), Some("t"));
        assert_eq!(keys.topic_of_channel("q:t".into()), None);
    }
}
