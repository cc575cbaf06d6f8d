//! Fuzz what a wsevents.v1 client sends a server: `Request::parse` on arbitrary text
//! (the server parses text frames, valid UTF-8 by then; arbitrary bytes are read
//! lossily, so every input is text). Nothing may panic; an error carries an id only
//! when it is one a client may use (≥ 1); a request that parses has a topic and a key
//! within their bounds, and its JSON (`to_json`, what a client sends) parses back to
//! the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsevents::pubsub::wire::{MAX_TOPIC_LEN, Request};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Request::parse(&text) {
        Ok(request) => {
            let (topic, key) = match &request {
                Request::Subscribe { topic, .. } | Request::Unsubscribe { topic, .. } => {
                    (topic, None)
                }
                Request::Publish { topic, key, .. } => (topic, key.as_ref()),
                _ => return,
            };
            assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC_LEN);
            assert!(key.is_none_or(|key| key.len() <= wsevents::hub::MAX_KEY_LEN));
            let json = request.to_json();
            assert_eq!(Request::parse(&json).as_ref(), Ok(&request), "{json}");
        }
        Err(error) => assert_ne!(error.id, Some(0), "{error}"),
    }
});
