//! Reading a daemon's reply (exec mode) on arbitrary bytes: never panics;
//! whatever is accepted re-encodes to one line of valid JSON.
#![no_main]

use keygate_core::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = Request::parse(b"id:001") else {
        return;
    };
    if let Ok(reply) = Reply::decode(data, &query) {
        let line = reply.encode();
        assert!(!line.contains(&b'\n'));
        assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
        assert_eq!(Reply::decode(&line, &query).ok(), Some(reply));
    }
});
