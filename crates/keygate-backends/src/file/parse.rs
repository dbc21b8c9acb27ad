//! The two file formats, read on bytes, line by line, as Wazuh's own
//! client.keys reader does: one bad byte costs one line, never the file.
//!
//! client.keys: lines starting with `#` or a space are skipped, and so are
//! removed agents (name starting with `!` or `#`), whatever other bytes the
//! line holds. Every other non-empty line is an entry: a record, or the
//! rule it broke (a field that is not UTF-8 is invalid: "not UTF-8 text"). CSV: a header naming `id`, `name`,
//! `ip` and `key`, then one entry per row, read the same way.

use keygate_core::record::Field;
use keygate_core::{AgentAddress, AgentId, AgentKey, AgentName, AgentRecord, RecordError};

use super::index::Snapshot;

/// Validates an entry's four raw fields, in id, name, ip, key order, the
/// first failing field reported: absent is `Missing`, bytes that are not
/// UTF-8 break the rule "not UTF-8 text" (as in the Redis and LDAP
/// backends), anything else the field's own rule.
fn record(fields: [Option<&[u8]>; 4]) -> Result<AgentRecord, RecordError> {
    let [id, name, ip, key] = fields;
    Ok(AgentRecord {
        id: AgentId::parse(text(id, Field::Id)?)?,
        name: AgentName::parse(text(name, Field::Name)?)?,
        ip: AgentAddress::parse(text(ip, Field::Ip)?)?,
        key: AgentKey::parse(text(key, Field::Key)?)?,
    })
}

/// A field's bytes as text: `Missing` when absent, "not UTF-8 text" when
/// they are not.
fn text(bytes: Option<&[u8]>, field: Field) -> Result<&str, RecordError> {
    let bytes = bytes.ok_or(RecordError::Missing(field))?;
    std::str::from_utf8(bytes).map_err(|_| RecordError::Invalid {
        field,
        rule: "not UTF-8 text",
    })
}

/// `line` as a 1-based `u32` line number (saturating: no file in memory
/// has 4 billion lines).
fn line_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// The lines of `text`, without their `\n`.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        Some(line)
    })
}

/// Parses client.keys bytes.
pub(super) fn client_keys(text: &[u8]) -> Result<Snapshot, String> {
    // Validating records is most of the work: do it on every core, in
    // chunks cut at line ends, then index the results in file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunks = split_lines(text, if text.len() < 1 << 20 { 1 } else { threads });
    let parsed: Vec<(Vec<Line<'_>>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| scope.spawn(move || client_keys_chunk(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a loader thread failed".to_owned()))
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut snap = Snapshot::with_capacity(parsed.iter().map(|(l, _)| l.len()).sum());
    let mut first_line = 0;
    for (entries, line_count) in parsed {
        for l in entries {
            snap.add(line_number(first_line + l.index), l.id, l.ip, l.record);
        }
        first_line += line_count;
    }
    Ok(snap)
}

/// One agent line of a chunk, before indexing.
struct Line<'a> {
    /// 0-based line index within the chunk.
    index: usize,
    id: &'a [u8],
    ip: Option<&'a [u8]>,
    record: Result<AgentRecord, RecordError>,
}

/// Cuts `text` into about `n` pieces, each but the last ending at a line
/// end.
fn split_lines(text: &[u8], n: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    for i in (1..n).rev() {
        let target = rest.len() / (i + 1);
        match memchr::memchr(b'\n', &rest[target..]) {
            Some(p) => {
                let (head, tail) = rest.split_at(target + p + 1);
                pieces.push(head);
                rest = tail;
            }
            None => break,
        }
    }
    pieces.push(rest);
    pieces
}

/// The entries of one chunk and how many lines it has.
fn client_keys_chunk(text: &[u8]) -> (Vec<Line<'_>>, usize) {
    let mut out = Vec::with_capacity(text.len() / 100 + 1);
    let mut count = 0;
    for (index, line) in lines(text).enumerate() {
        count = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), None | Some(b'#' | b' ')) {
            continue;
        }
        let mut fields = line.split(|&b| b == b' ');
        let id = fields.next().unwrap_or_default();
        let name = fields.next().unwrap_or_default();
        if matches!(name.first(), Some(b'!' | b'#')) {
            continue;
        }
        let ip = fields.next();
        let key = fields.next();
        let record = match (ip, key, fields.next()) {
            (Some(ip), Some(key), None) => record([Some(id), Some(name), Some(ip), Some(key)]),
            _ => Err(RecordError::Malformed(
                "a client.keys line needs exactly 4 space-separated fields",
            )),
        };
        out.push(Line {
            index,
            id,
            ip,
            record,
        });
    }
    (out, count)
}

/// Parses CSV bytes whose header names `id`, `name`, `ip` and `key`. Only
/// a header without those columns fails the whole file.
pub(super) fn csv(text: &[u8]) -> Result<Snapshot, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(text);
    let headers = reader
        .byte_headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let column = |want: &str| {
        headers
            .iter()
            .position(|h| h.trim_ascii().eq_ignore_ascii_case(want.as_bytes()))
            .ok_or_else(|| {
                format!("the CSV header has no '{want}' column (expected id,name,ip,key)")
            })
    };
    let cols = [
        column("id")?,
        column("name")?,
        column("ip")?,
        column("key")?,
    ];
    let mut snap = Snapshot::with_capacity(memchr::memchr_iter(b'\n', text).count());
    let mut row = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            // Reading from memory with `flexible` leaves no row error the
            // csv crate documents; should one come, it costs its row only.
            Err(e) => match e.position() {
                Some(p) => {
                    snap.add(
                        line_number(p.line().saturating_sub(1) as usize),
                        b"",
                        None,
                        Err(RecordError::Malformed("a CSV row cannot be read")),
                    );
                    continue;
                }
                None => return Err(format!("cannot read CSV: {e}")),
            },
        }
        let line = line_number(row.position().map_or(0, |p| p.line().saturating_sub(1)) as usize);
        let get = |i: usize| row.get(cols[i]);
        let record = if row.len() != headers.len() {
            Err(RecordError::Malformed(
                "a CSV row has a different number of fields than the header",
            ))
        } else {
            record([get(0), get(1), get(2), get(3)])
        };
        snap.add(line, get(0).unwrap_or_default(), get(2), record);
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_cuts_at_line_ends_and_loses_nothing() {
        let text = b"001 a 10.0.0.1 k\n002 b 10.0.0.2 k\n003 c 10.0.0.3 k\n004 d any k";
        for n in 1..6 {
            let pieces = split_lines(text, n);
            assert_eq!(pieces.concat(), text, "{n}");
            assert!(
                pieces
                    .iter()
                    .take(pieces.len() - 1)
                    .all(|p| p.ends_with(b"\n")),
                "{n}: {pieces:?}"
            );
        }
    }

    #[test]
    fn lines_split_on_newline_only_and_count_every_line() {
        let got: Vec<&[u8]> = lines(b"a\r\n\nb\xfc c\nlast").collect();
        assert_eq!(got, [&b"a\r"[..], b"", b"b\xfc c", b"last"]);
        assert_eq!(client_keys_chunk(b"# x\n\n001 a any k\n").1, 3);
    }
}
