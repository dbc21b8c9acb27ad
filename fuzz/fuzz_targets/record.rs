//! The record rules on arbitrary bytes split like a client.keys line: never
//! panic; an accepted record re-serialises to a line of exactly four fields
//! that parses back to itself.
#![no_main]

use keygate_core::AgentRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f: Vec<&str> = text.splitn(4, ' ').collect();
    if f.len() != 4 {
        return;
    }
    if let Ok(r) = AgentRecord::parse(f[0], f[1], f[2], f[3]) {
        let line = format!(
            "{} {} {} {}",
            r.id.as_str(),
            r.name.as_str(),
            r.ip.as_str(),
            r.key.expose()
        );
        let g: Vec<&str> = line.split(' ').collect();
        assert_eq!(g.len(), 4);
        assert_eq!(AgentRecord::parse(g[0], g[1], g[2], g[3]).ok(), Some(r));
    }
});
