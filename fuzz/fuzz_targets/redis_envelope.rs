//! Fuzz what a node reads from Redis: the envelopes on a topic's channel (`wse1` from
//! a hub without history, `wse2` from the store script) and the history read's answer
//! (a Redis reply, parsed from RESP first). Each comes from the network: nothing may
//! panic, and what opens must be what seals:
//!
//! - a `wse1` envelope that opens seals back to exactly its bytes;
//! - a `wse2` envelope that opens holds the rest of the input as its payload, and
//!   sealed again from its parts it opens to the same publication;
//! - a history read that parses gives publications at contiguous offsets right after
//!   the position asked from, up to the topic's latest, in its epoch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsevents::Message;
use wsevents::fuzzing::{open_envelope, open_stored, parse_recovery, seal_envelope};
use wsevents::hub::Position;

fuzz_target!(|data: &[u8]| {
    if let Some((node, message)) = open_envelope(data) {
        assert_eq!(&seal_envelope(node, &message)[..], data);
    }

    if let Some(publication) = open_stored(data) {
        let (kind, payload): (&str, &[u8]) = match &publication.message {
            Message::Text(text) => ("t", text.as_bytes()),
            Message::Binary(bytes) => ("b", bytes),
        };
        assert!(data.ends_with(payload));
        let mut sealed = format!("wse2 {} {kind} ", publication.position).into_bytes();
        sealed.extend_from_slice(payload);
        assert_eq!(open_stored(&sealed), Some(publication));
    }

    // The position asked from: none, or an offset from the first byte.
    let since = match data.first() {
        Some(&b) if b & 0x80 == 0 => Position::new("since", u64::from(b & 0x0f)).ok(),
        _ => None,
    };
    if let Some(recovery) = parse_recovery(data, since.as_ref())
        && let Some(publications) = &recovery.publications
    {
        let since = since.expect("publications only for a position asked from");
        let mut offset = since.offset();
        for publication in publications {
            offset += 1;
            assert_eq!(publication.position.offset(), offset);
            assert_eq!(publication.position.epoch(), recovery.position.epoch());
        }
        assert_eq!(offset, recovery.position.offset());
    }
});
