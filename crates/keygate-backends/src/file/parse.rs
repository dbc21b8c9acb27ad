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
use std::sync::mpsc;

use super::index::{Keys, Pending, Snapshot};

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

/// How much of the file is read at a time and handed to a parser thread
/// as one piece. The file is never in memory whole (at 1,000,000 lines that
/// would be 90 MB more at the peak of a load, next to the records): a few
/// pieces are in flight at a time, and small ones keep every parser busy
/// while this thread indexes what they returned.
const BLOCK: usize = 1 << 20;

/// How many pieces each parser thread may have been handed ahead of the
/// indexing: enough that it does not wait for the next one, few enough that
/// the text and parsed lines in flight stay a few MiB.
const AHEAD_PER_PARSER: usize = 4;

/// Parses client.keys from `file`, a piece at a time: parser threads (one
/// per core) validate the lines of each piece while this thread reads the
/// next pieces and indexes the ones parsed, in file order. `size` (the
/// file's length) sizes the indexes.
pub(super) fn client_keys(file: impl Read, size: u64) -> Result<Snapshot, String> {
    let parsers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    // A file of one piece is parsed here: no thread is worth starting.
    let parsers = if size <= BLOCK as u64 { 0 } else { parsers };
    client_keys_in_blocks(file, size, BLOCK, parsers)
}

/// [`client_keys`] with a given piece size (small ones in tests) and number
/// of parser threads (0: every piece is parsed on this thread).
fn client_keys_in_blocks(
    file: impl Read,
    size: u64,
    block: usize,
    parsers: usize,
) -> Result<Snapshot, String> {
    // Wazuh's lines are about 90 bytes; a guess too high costs a little
    // memory, one too low a rehash or two.
    let guess = usize::try_from(size / 80).unwrap_or(0).min(1 << 24);
    let mut indexer = Indexer {
        snap: Snapshot::with_capacity(guess),
        pending: Pending::with_capacity(guess),
        first_line: 0,
    };
    let mut pieces = Pieces {
        file,
        block,
        buf: Vec::with_capacity(block.min(usize::try_from(size).unwrap_or(block)) + 1),
    };
    if parsers == 0 {
        let (mut spare, mut lines) = (Vec::new(), Vec::new());
        while let Some(piece) = pieces.next(spare)? {
            let count = client_keys_chunk(&piece, &mut lines);
            indexer.add(&mut lines, count);
            spare = piece;
        }
        return Ok(indexer.finish());
    }
    let failed = || "a loader thread failed".to_owned();
    std::thread::scope(|scope| {
        // One queue each way per parser; piece `n` goes to parser
        // `n % parsers`, so taking the results round-robin keeps file order.
        let mut to_parsers = Vec::with_capacity(parsers);
        let mut from_parsers = Vec::with_capacity(parsers);
        let mut handles = Vec::with_capacity(parsers);
        for _ in 0..parsers {
            let (to_parser, pieces) = mpsc::channel::<(Vec<u8>, Vec<Line>)>();
            let (to_indexer, parsed) = mpsc::channel::<(Vec<u8>, Vec<Line>, usize)>();
            handles.push(scope.spawn(move || {
                for (piece, mut lines) in pieces {
                    let count = client_keys_chunk(&piece, &mut lines);
                    if to_indexer.send((piece, lines, count)).is_err() {
                        break;
                    }
                }
            }));
            to_parsers.push(to_parser);
            from_parsers.push(parsed);
        }
        // Text buffers and line lists come back with each result and are
        // handed out again: no fresh pages to fault in for every piece.
        let mut spare_text: Vec<Vec<u8>> = Vec::new();
        let mut spare_lines: Vec<Vec<Line>> = Vec::new();
        let (mut sent, mut indexed) = (0usize, 0usize);
        let mut index_one = |indexed: &mut usize,
                             spare_text: &mut Vec<Vec<u8>>,
                             spare_lines: &mut Vec<Vec<Line>>|
         -> Result<(), String> {
            let from = from_parsers.get(*indexed % parsers).ok_or_else(failed)?;
            let (piece, mut lines, count) = from.recv().map_err(|_| failed())?;
            indexer.add(&mut lines, count);
            spare_text.push(piece);
            spare_lines.push(lines);
            *indexed += 1;
            Ok(())
        };
        let result = (|| {
            while let Some(piece) = pieces.next(spare_text.pop().unwrap_or_default())? {
                let lines = spare_lines.pop().unwrap_or_default();
                let to = to_parsers.get(sent % parsers).ok_or_else(failed)?;
                to.send((piece, lines)).map_err(|_| failed())?;
                sent += 1;
                while sent - indexed > parsers * AHEAD_PER_PARSER {
                    index_one(&mut indexed, &mut spare_text, &mut spare_lines)?;
                }
            }
            while indexed < sent {
                index_one(&mut indexed, &mut spare_text, &mut spare_lines)?;
            }
            Ok(())
        })();
        // Closing the queues ends the parsers; a parser that panicked is an
        // error here (joined by hand, so the panic does not spread).
        drop(to_parsers);
        let joined = handles.into_iter().all(|h| h.join().is_ok());
        result.and_then(|()| if joined { Ok(()) } else { Err(failed()) })
    })?;
    Ok(indexer.finish())
}

/// The file read in pieces of about a block, each ending at a line end (the
/// last one at the end of the file).
struct Pieces<R> {
    file: R,
    block: usize,
    /// What has been read and not handed out yet: the start of a line.
    buf: Vec<u8>,
}

impl<R: Read> Pieces<R> {
    /// The next piece, or `None` at the end of the file. `spare` (a piece
    /// handed out before, or an empty `Vec`) becomes the buffer for what
    /// follows.
    fn next(&mut self, mut spare: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        loop {
            // Fill the buffer to a block, reading at least an eighth of one
            // past what is left (so reading 0 bytes means the end).
            let room = self
                .block
                .saturating_sub(self.buf.len())
                .max(self.block / 8)
                .max(1);
            let got = (&mut self.file)
                .take(room as u64)
                .read_to_end(&mut self.buf)
                .map_err(|e| format!("read failed: {e}"))?;
            if got == 0 {
                return Ok((!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf)));
            }
            // Hand out up to the last line end; the rest waits for more
            // bytes (a line longer than a block makes the buffer grow).
            if let Some(i) = memchr::memrchr(b'\n', &self.buf) {
                spare.clear();
                spare.reserve(self.block + 1);
                spare.extend_from_slice(self.buf.get(i + 1..).unwrap_or_default());
                self.buf.truncate(i + 1);
                return Ok(Some(std::mem::replace(&mut self.buf, spare)));
            }
        }
    }
}

/// Adds parsed pieces to the snapshot, in file order.
struct Indexer {
    snap: Snapshot,
    /// Keys to index once every piece is in.
    pending: Pending,
    /// Lines in the pieces added so far.
    first_line: usize,
}

impl Indexer {
    /// Adds the entries of the next piece (emptying `lines`), which has
    /// `count` lines.
    fn add(&mut self, lines: &mut Vec<Line>, count: usize) {
        for l in lines.drain(..) {
            let line = line_number(self.first_line + l.index as usize);
            self.snap
                .add_pending(line, l.keys, l.record, &mut self.pending);
        }
        self.first_line += count;
    }

    /// The snapshot, indexed.
    fn finish(mut self) -> Snapshot {
        self.snap.index(self.pending);
        self.snap
    }
}

/// One agent line of a chunk, before indexing: everything the index needs
/// was worked out on the loader thread, and nothing borrows the text.
struct Line {
    /// 0-based line index within the chunk.
    index: u32,
    keys: Keys,
    record: Result<AgentRecord, Box<RecordError>>,
}

/// Appends the entries of one chunk to `out`; returns how many lines it
/// has.
fn client_keys_chunk(text: &[u8], out: &mut Vec<Line>) -> usize {
    out.reserve(text.len() / 80 + 1);
    let mut count = 0;
    for (index, line) in lines(text).enumerate() {
        count = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), None | Some(b'#' | b' ')) {
            continue;
        }
        // One UTF-8 check of the whole line rather than one per field: the
        // fields of a line of text are text, and `AgentRecord::parse` checks
        // them in the order `record` does.
        let entry = match std::str::from_utf8(line) {
            Ok(text) => text_entry(text),
            Err(_) => bytes_entry(line),
        };
        let Some((keys, record)) = entry else {
            continue;
        };
        out.push(Line {
            // A block holds far fewer than 4 billion lines.
            index: u32::try_from(index).unwrap_or(u32::MAX),
            keys,
            record,
        });
    }
    count
}

/// What a client.keys line that is not UTF-8 text claims, and its record
/// or the rule it broke; `None` for a removed agent.
fn bytes_entry(line: &[u8]) -> Option<(Keys, Result<AgentRecord, Box<RecordError>>)> {
    let mut next = spaces(line);
    entry(
        || next().map(|field| &line[field]),
        |id, name, ip, key| record([Some(id), Some(name), Some(ip), Some(key)]),
    )
}

/// [`bytes_entry`] for a line of text (checked once for UTF-8 as a whole),
/// cut the same way.
fn text_entry(line: &str) -> Option<(Keys, Result<AgentRecord, Box<RecordError>>)> {
    let mut next = spaces(line.as_bytes());
    entry(
        || next().and_then(|field| line.get(field)),
        |id, name, ip, key| AgentRecord::parse(id, name, ip, key).map_err(Box::new),
    )
}

/// The byte ranges of a line's space-separated fields, one per call, found
/// with `memchr` (`split` took a fifth of the parse).
fn spaces(line: &[u8]) -> impl FnMut() -> Option<std::ops::Range<usize>> + '_ {
    let mut start = Some(0);
    move || {
        let from = start?;
        let rest = line.get(from..)?;
        match memchr::memchr(b' ', rest) {
            Some(i) => {
                start = Some(from + i + 1);
                Some(from..from + i)
            }
            None => {
                start = None;
                Some(from..line.len())
            }
        }
    }
}

/// A client.keys entry from its fields as `next` yields them, validated by
/// `validate` when there are exactly four; `None` for a removed agent (a
/// name starting with `!` or `#`).
fn entry<T: Copy + Default + AsRef<[u8]>>(
    mut next: impl FnMut() -> Option<T>,
    validate: impl FnOnce(T, T, T, T) -> Result<AgentRecord, Box<RecordError>>,
) -> Option<(Keys, Result<AgentRecord, Box<RecordError>>)> {
    let id = next().unwrap_or_default();
    let name = next().unwrap_or_default();
    if matches!(name.as_ref().first(), Some(b'!' | b'#')) {
        return None;
    }
    let ip = next();
    let key = next();
    let record = match (ip, key, next()) {
        (Some(ip), Some(key), None) => validate(id, name, ip, key),
        _ => Err(Box::new(RecordError::Malformed(FOUR_FIELDS))),
    };
    Some((
        Keys::of(id.as_ref(), ip.as_ref().map(AsRef::as_ref), &record),
        record,
    ))
}

/// Why a client.keys line without four fields is invalid.
const FOUR_FIELDS: &str = "a client.keys line needs exactly 4 space-separated fields";

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
        let get = |i: usize| row.get(cols[i]).map(super::cell::unescape);
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

    /// Reading a block at a time gives the same entries, line numbers and
    /// answers as reading the file at once, wherever the blocks end, also
    /// with a line longer than a block and without a final line end, and
    /// whether the pieces are parsed here or by 1 to 3 parser threads.
    #[test]
    fn blocks_give_the_same_snapshot_as_one_read() {
        let long = format!("005 {} 10.0.0.5 k5\n", "n".repeat(100));
        let text = format!(
            "# comment\n001 a 10.0.0.1 k1\n\n002 b 10.0.0.2 k2\r\n003 !removed any k\n004 bad 10.0.0.300 k4\n{long}006 dup 10.0.0.1 k6\n007 last any k7"
        );
        let whole = client_keys_in_blocks(text.as_bytes(), 0, 1 << 20, 0).unwrap();
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
            for parsers in 0..=3 {
                let s = client_keys_in_blocks(text.as_bytes(), text.len() as u64, block, parsers)
                    .unwrap();
                assert_eq!(view(&s), want, "block {block}, {parsers} parsers");
            }
        }
    }

    /// A line of text is read as the byte path reads it: the same fields,
    /// skips, records and first broken rule, in id, name, ip, key order.
    #[test]
    fn text_lines_read_as_the_byte_path_reads_them() {
        let show = |e: Option<(Keys, Result<AgentRecord, Box<RecordError>>)>| {
            e.map(|(k, r)| {
                let r = r.map(|r| {
                    let (id, name, ip) = (r.id.as_str(), r.name.as_str(), r.ip.as_str());
                    format!("{id} {name} {ip} {}", r.key.expose())
                });
                format!("{:?} {:?} {r:?}", k.id, k.address)
            })
        };
        for line in [
            "001 a 10.0.0.1 k",
            "001 a 10.0.0.1",
            "001 a 10.0.0.1 k extra",
            "001 a 10.0.0.1 k ",
            "001  10.0.0.1 k",
            "01 a! 10.0.0.300 k k",
            "01 a! 10.0.0.300 k",
            "001 a! 10.0.0.300 ké",
            "001 a 10.0.0.300 ké",
            "001 agént any k",
            "001 !removed any k",
            "001 #removed",
            "000 a any k",
            "abc",
            "",
        ] {
            assert_eq!(
                show(text_entry(line)),
                show(bytes_entry(line.as_bytes())),
                "{line:?}"
            );
        }
    }

    #[test]
    fn lines_split_on_newline_only_and_count_every_line() {
        let got: Vec<&[u8]> = lines(b"a\r\n\nb\xfc c\nlast").collect();
        assert_eq!(got, [&b"a\r"[..], b"", b"b\xfc c", b"last"]);
        assert_eq!(
            client_keys_chunk(b"# x\n\n001 a any k\n", &mut Vec::new()),
            3
        );
    }
}
