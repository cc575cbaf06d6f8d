//! Where a topic lives on a Redis Cluster: the hash slot of its names, set by a hash
//! tag of its partition.
//!
//! Redis Cluster puts a key (or a sharded channel) in one of 16,384 slots: the CRC16
//! of the key, or of the part between the first `{` and the next `}` when there is
//! one (a hash tag). A topic's meta, history stream, idempotency keys and channel must
//! share a slot (the store script touches all of them and publishes on the channel),
//! and the channels a node subscribes to should share few slots, so that one
//! `SSUBSCRIBE` covers many topics and a resubscription is a few commands, not one per
//! topic. So topics are hashed into [`PARTITIONS`] partitions (Centrifugo's 128), and
//! each partition's names carry its tag: a short string chosen so that the partitions'
//! slots are spread evenly, one in each 128-slot range (what Centrifugo tunes its tags
//! for), so that masters that split the slots evenly get as many partitions each.
//! Any topic name works: the tag comes first and never holds a brace.

use std::sync::LazyLock;

/// Hash slots in a Redis Cluster.
pub(super) const SLOTS: u16 = 16_384;

/// Partitions of the topics, each with a hash tag of its own.
pub(super) const PARTITIONS: usize = 128;

/// The CRC16 of Redis Cluster (XMODEM: polynomial 0x1021, initial 0).
pub(super) fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key or sharded channel, hash tags included (the Redis Cluster
/// specification's `HASH_SLOT`).
pub(super) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// The partition of a topic.
pub(super) fn partition(topic: &str) -> usize {
    usize::from(crc16(topic.as_bytes())) % PARTITIONS
}

/// The hash tag of each partition: partition `p`'s slot is in
/// `p * 128 .. (p + 1) * 128`.
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let width = usize::from(SLOTS) / PARTITIONS;
    let mut tags = vec![String::new(); PARTITIONS];
    let mut found = 0;
    let mut n: u32 = 0;
    while found < PARTITIONS {
        let candidate = base36(n);
        let p = usize::from(crc16(candidate.as_bytes()) % SLOTS) / width;
        if tags[p].is_empty() {
            tags[p] = candidate;
            found += 1;
        }
        n += 1;
    }
    tags
});

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// The hash tag (without braces) of a topic's partition.
pub(super) fn tag(topic: &str) -> &'static str {
    &TAGS[partition(topic)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_cluster_specifications() {
        // The specification's check value, and slots Redis 7 gave (CLUSTER KEYSLOT).
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: all"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn partitions_spread_one_per_slot_range() {
        let width = usize::from(SLOTS) / PARTITIONS;
        for p in 0..PARTITIONS {
            let tag = &TAGS[p];
            assert!(!tag.contains(['{', '}']));
            let slot = usize::from(key_slot(format!("x{{{tag}}}y").as_bytes()));
            assert_eq!(slot / width, p, "tag {tag:?}");
        }
        // Three masters that split the slots evenly get 42 or 43 partitions each.
        let mut per_master = [0; 3];
        for tag in TAGS.iter() {
            let slot = key_slot(tag.as_bytes());
            per_master[match slot {
                0..=5460 => 0,
                5461..=10922 => 1,
                _ => 2,
            }] += 1;
        }
        assert!(
            per_master.iter().all(|n| (42..=43).contains(n)),
            "{per_master:?}"
        );
        // Topics spread over the partitions.
        let mut used = [0u32; PARTITIONS];
        for i in 0..12_800 {
            used[partition(&format!("topic-{i}"))] += 1;
        }
        assert!(used.iter().all(|&n| (50..=150).contains(&n)), "{used:?}");
    }
}
