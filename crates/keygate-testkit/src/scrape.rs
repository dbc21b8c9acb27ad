//! Reading a daemon's Prometheus endpoint (`[metrics] listen`) the way a
//! scraper does: one GET, the text format parsed just enough to find a
//! series' value or the names of every series exported.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One HTTP/1.0 GET on 127.0.0.1:`port`; the status line and the body.
/// Panics if no whole answer comes within 10 s.
pub fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("no answer to GET {path} within 10 s: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `GET /metrics`, which must answer 200; its body.
pub fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains(" 200 "), "{status}\n{body}");
    body
}

/// The value of the series written exactly as `series` (name and labels,
/// in the order the exporter writes them) in `text`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().unwrap())
    })
}

/// The name of every sample in `text` (`keygate_requests_total`,
/// `keygate_request_duration_seconds_bucket`, ...), labels left out.
pub fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Scrapes until `series` reads `want`; panics with the last scrape after
/// 10 s.
pub fn until(port: u16, series: &str, want: f64) {
    let started = Instant::now();
    loop {
        let text = scrape(port);
        if value(&text, series) == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{series} never {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
