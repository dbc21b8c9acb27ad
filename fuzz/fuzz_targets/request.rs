//! The request parser on arbitrary bytes: never panics; an accepted request
//! prints back to itself and its value holds only address or digit bytes.
#![no_main]

use keygate_core::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::parse(data) {
        assert_eq!(Request::parse(req.to_string().as_bytes()), Ok(req.clone()));
        assert!(req
            .value()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':'));
    }
});
