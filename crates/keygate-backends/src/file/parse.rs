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

use std::io::Read;

use super::index::{Keys, Snapshot};

/// Validates an entry's four raw fields, in id, name, ip, key order, the
/// first failing field reported: absent is `Missing`, bytes that are not
/// UTF-8 break the rule "not UTF-8 text" (as in the Redis and LDAP
/// backends), anything else the field's own rule.
fn record(fields: [Option<&[u8]>; 4]) -> Result<AgentRecord, Box<RecordError>> {
    let [id, name, ip, key] = fields;
    let fields = || {
        Ok(AgentRecord::new(
            AgentId::parse(text(id, Field::Id)?)?,
            AgentName::parse(text(name, Field::Name)?)?,
            AgentAddress::parse(text(ip, Field::Ip)?)?,
            AgentKey::parse(text(key, Field::Key)?)?,
        ))
    };
    fields().map_err(Box::new)
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

/// How much of the file is read and parsed at a time. The file is never
/// in memory whole: at 1,000,000 lines that would be 90 MB more at the peak
/// of a load, next to the records themselves.
const BLOCK: usize = 8 << 20;

/// Parses client.keys from `file`, a block of lines at a time, each block
/// on every core. `size` (the file's length) sizes the indexes.
pub(super) fn client_keys(file: impl Read, size: u64) -> Result<Snapshot, String> {
    client_keys_in_blocks(file, size, BLOCK)
}

/// [`client_keys`] with a given block size (small ones in tests).
fn client_keys_in_blocks(mut file: impl Read, size: u64, block: usize) -> Result<Snapshot, String> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    // Wazuh's lines are about 90 bytes; a guess too high costs a little
    // memory, one too low a rehash or two.
    let guess = usize::try_from(size / 80).unwrap_or(0).min(1 << 24);
    let mut snap = Snapshot::with_capacity(guess);
    let mut buf: Vec<u8> =
        Vec::with_capacity(block.min(usize::try_from(size).unwrap_or(block)) + 1);
    let mut first_line = 0;
    let mut eof = false;
    while !eof {
        // Fill the buffer to a block, reading at least an eighth of one
        // past what is left of the last (so reading 0 bytes means the end).
        let room = block.saturating_sub(buf.len()).max(block / 8).max(1);
        let got = (&mut file)
            .take(room as u64)
            .read_to_end(&mut buf)
            .map_err(|e| format!("read failed: {e}"))?;
        eof = got == 0;
        // Parse up to the last line end; the rest waits for more bytes
        // (a line longer than a block makes the buffer grow).
        let cut = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let text = buf.get(..cut).unwrap_or_default();
        let chunks = split_lines(text, if text.len() < 1 << 20 { 1 } else { threads });
        // (The last block may be empty: a file ending with a line end.)
        let parsed: Vec<(Vec<Line>, usize)> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| scope.spawn(move || client_keys_chunk(chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "a loader thread failed".to_owned()))
                .collect::<Result<Vec<_>, String>>()
        })?;
        for (entries, line_count) in parsed {
            for l in entries {
                snap.add_keyed(line_number(first_line + l.index as usize), l.keys, l.record);
            }
            first_line += line_count;
        }
        buf.drain(..cut);
    }
    Ok(snap)
}

/// One agent line of a chunk, before indexing: everything the index needs
/// was worked out on the loader thread, and nothing borrows the text.
struct Line {
    /// 0-based line index within the chunk.
    index: u32,
    keys: Keys,
    record: Result<AgentRecord, Box<RecordError>>,
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
fn client_keys_chunk(text: &[u8]) -> (Vec<Line>, usize) {
    let mut out = Vec::with_capacity(text.len() / 80 + 1);
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
            _ => Err(Box::new(RecordError::Malformed(
                "a client.keys line needs exactly 4 space-separated fields",
            ))),
        };
        out.push(Line {
            // A block holds far fewer than 4 billion lines.
            index: u32::try_from(index).unwrap_or(u32::MAX),
            keys: Keys::of(id, ip, &record),
            record,
        });
    }
    (out, count)
}

/// Parses CSV whose header names `id`, `name`, `ip` and `key`, read from
/// `file` as it goes. Only a header without those columns fails the whole
/// file. `size` (the file's length) sizes the indexes.
pub(super) fn csv(file: impl Read, size: u64) -> Result<Snapshot, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(file);
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
    let mut snap = Snapshot::with_capacity(usize::try_from(size / 80).unwrap_or(0).min(1 << 24));
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
                        Err(Box::new(RecordError::Malformed("a CSV row cannot be read"))),
                    );
                    continue;
                }
                None => return Err(format!("cannot read CSV: {e}")),
            },
        }
        let line = line_number(row.position().map_or(0, |p| p.line().saturating_sub(1)) as usize);
        let get = |i: usize| row.get(cols[i]);
        let record = if row.len() != headers.len() {
            Err(Box::new(RecordError::Malformed(
                "a CSV row has a different number of fields than the header",
            )))
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

    /// Reading a block at a time gives the same entries, line numbers and
    /// answers as reading the file at once, wherever the blocks end, also
    /// with a line longer than a block and without a final line end.
    #[test]
    fn blocks_give_the_same_snapshot_as_one_read() {
        let long = format!("005 {} 10.0.0.5 k5\n", "n".repeat(100));
        let text = format!(
            "# comment\n001 a 10.0.0.1 k1\n\n002 b 10.0.0.2 k2\r\n003 !removed any k\n004 bad 10.0.0.300 k4\n{long}006 dup 10.0.0.1 k6\n007 last any k7"
        );
        let whole = client_keys_in_blocks(text.as_bytes(), 0, 1 << 20).unwrap();
        let view = |s: &Snapshot| {
            let entries: Vec<(u32, String)> = s
                .entries()
                .iter()
                .map(|e| match &e.record {
                    Ok(r) => (e.line, r.id.as_str().to_owned()),
                    Err(err) => (e.line, err.to_string()),
                })
                .collect();
            let answers: Vec<String> = [
                "id:001",
                "id:004",
                "id:005",
                "id:007",
                "ip:10.0.0.1",
                "ip:10.0.0.2",
            ]
            .iter()
            .map(|req| {
                format!(
                    "{:?}",
                    s.find(&keygate_testkit::q(req))
                        .map(|r| r.map(|r| r.name.as_str().to_owned()))
                        .map_err(|e| e.code())
                )
            })
            .collect();
            (entries, answers)
        };
        let want = view(&whole);
        assert_eq!(want.0.len(), 6);
        assert_eq!(want.0[4], (8, "006".to_owned()));
        assert_eq!(want.0[5], (9, "007".to_owned()));
        for block in [1, 2, 7, 16, 33, 64, 100, 1000] {
            let s = client_keys_in_blocks(text.as_bytes(), text.len() as u64, block).unwrap();
            assert_eq!(view(&s), want, "block {block}");
        }
    }

    #[test]
    fn lines_split_on_newline_only_and_count_every_line() {
        let got: Vec<&[u8]> = lines(b"a\r\n\nb\xfc c\nlast").collect();
        assert_eq!(got, [&b"a\r"[..], b"", b"b\xfc c", b"last"]);
        assert_eq!(client_keys_chunk(b"# x\n\n001 a any k\n").1, 3);
    }
}
