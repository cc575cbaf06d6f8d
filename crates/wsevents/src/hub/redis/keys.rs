//! The names a topic has in Redis: its channel and, on a hub with history, its keys.
//! One place, so that every name is made the same way and none stands for two topics.
//!
//! Under the prefix ([`RedisConfig::prefix`](super::RedisConfig::prefix)), a topic `T` is
//! the channel `T`, the hash `meta:T` (epoch, latest offset, bytes), the stream
//! `history:T` and, per idempotency key `K`, the string `key:LEN:T:K` where `LEN` is the
//! length of `T` in bytes (decimal): without it, topic `a` with key `b:c` and topic
//! `a:b` with key `c` would be one key. (Keys written as `key:T:K` before are not found
//! after the upgrade: a retry across it may be stored twice.)
//!
//! Beside the topics, one channel of the hub's own: `control`, in the sharded pub/sub
//! namespace, for commands to every node (`control.rs`).
//!
//! On a Redis Cluster every name has its topic's partition's hash tag right after the
//! prefix (`{TAG}`, [`slots`](super::slots)), so that a topic's names share a slot:
//! the channel `{TAG}T`, `{TAG}meta:T`, `{TAG}history:T`, `{TAG}key:LEN:T:K`. The
//! prefix must then hold no `{` (the tag must be the first).

use super::slots;

/// Makes the channel and key names of topics, under a prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    /// Names carry their topic's hash tag (a Redis Cluster).
    tagged: bool,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            tagged: false,
        }
    }

    /// Names for a Redis Cluster: each with its topic's hash tag.
    pub(super) fn tagged(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            tagged: true,
        }
    }

    /// What comes before every name of `topic`: the prefix, and the tag on a cluster.
    fn head(&self, topic: &str) -> String {
        if self.tagged {
            format!("{}{{{}}}", self.prefix, slots::tag(topic))
        } else {
            self.prefix.clone()
        }
    }

    /// The channel a topic's publications go on.
    pub(super) fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.head(topic))
    }

    /// Where the topic starts in a channel, if the channel is one of ours.
    fn topic_start(&self, channel: &str) -> Option<usize> {
        let rest = channel.strip_prefix(&self.prefix)?;
        if !self.tagged {
            return Some(self.prefix.len());
        }
        let tag = rest.strip_prefix('{')?;
        let close = tag.find('}')?;
        Some(self.prefix.len() + close + 2)
    }

    /// The topic of a channel; `None` for a channel not ours.
    pub(super) fn topic<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.get(self.topic_start(channel)?..)
    }

    /// The topic of a channel, made of the channel's own bytes; `None` for a channel
    /// not ours.
    pub(super) fn topic_of_channel(&self, mut channel: String) -> Option<String> {
        let start = self.topic_start(&channel)?;
        channel.drain(..start);
        Some(channel)
    }

    /// The control channel (`control.rs`), in the sharded pub/sub namespace: on one
    /// Redis topics use the classic one, on a cluster every topic's channel has a hash
    /// tag after the prefix and this one has none, so no topic is ever this channel.
    pub(super) fn control(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// The hash of a topic's epoch and latest offset.
    pub(super) fn meta(&self, topic: &str) -> String {
        format!("{}meta:{topic}", self.head(topic))
    }

    /// The stream of a topic's history (entry ids `0-OFFSET`).
    pub(super) fn stream(&self, topic: &str) -> String {
        format!("{}history:{topic}", self.head(topic))
    }

    /// A name in the topic's slot that is never written: what a store on a cluster
    /// declares as its key when it has none.
    pub(super) fn no_key(&self, topic: &str) -> String {
        format!("{}nokey", self.head(topic))
    }

    /// An idempotency key seen on a topic: the topic's length first, so that where
    /// the topic ends is never in doubt.
    pub(super) fn publish_key(&self, topic: &str, key: &str) -> String {
        format!("{}key:{}:{topic}:{key}", self.head(topic), topic.len())
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

    #[test]
    fn on_a_cluster_a_topics_names_share_its_slot() {
        let keys = Keys::tagged("p:");
        for topic in ["t", "{x}", "a}b{c", "", "meta:t"] {
            let channel = keys.channel(topic);
            let slot = slots::key_slot(channel.as_bytes());
            for name in [
                keys.meta(topic),
                keys.stream(topic),
                keys.publish_key(topic, "k{}"),
                keys.no_key(topic),
            ] {
                assert_eq!(slots::key_slot(name.as_bytes()), slot, "{name}");
            }
            assert_eq!(keys.topic(&channel), Some(topic));
            assert_eq!(keys.topic_of_channel(channel).as_deref(), Some(topic));
        }
        assert_eq!(keys.channel("t"), format!("p:{{{}}}t", slots::tag("t")));
        assert_eq!(keys.topic("p:t"), None, "no tag");
        assert_eq!(keys.topic("p:{t"), None, "no end of tag");
    }
}
