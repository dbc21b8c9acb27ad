//! The text log's fields and timestamps, written as tracing-subscriber's
//! defaults write them without colours, for less.
//!
//! Every Wazuh request writes one audit event with about a dozen fields,
//! and with tracing-subscriber's [`DefaultFields`] formatting that event
//! was about 18,000 instructions, two thirds of everything keygate did for
//! a cached answer (callgrind, BENCHMARKS.md): each field name and `=` go
//! through a colour painter even when colours are off, and the timestamp
//! through one `write!` per component. [`PlainFields`] writes `name=value`
//! straight into the line (values as [`DefaultFields`] writes them: `Debug`,
//! so strings quoted and escaped), and hands what needs more care (the
//! errors, `log.` and `r#` names, a message that is neither text nor
//! `Debug`) to [`DefaultVisitor`] itself, so the text
//! is the same byte for byte; a test holds both to that. The message is
//! written as the default writes it, terminal codes escaped the same way,
//! but a clean piece in one write instead of a character at a time.
//! [`Rfc3339Micros`] writes the same `2026-12-02T04:45:35.875756Z` as
//! tracing-subscriber's `SystemTime` with one formatted write.
//!
//! [`DefaultFields`]: tracing_subscriber::fmt::format::DefaultFields

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;

/// The text format's field formatter when colours are off.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's fields; see the module doc.
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is one [`DefaultVisitor`] must write itself (a
    /// message given as text or `Debug`, the usual kinds, is written by
    /// [`message`](Self::message) before this is asked).
    fn special(field: &Field) -> bool {
        let name = field.name();
        name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }

    /// The message, as [`DefaultVisitor`] writes it (no name; terminal
    /// codes escaped when the writer sanitizes them), but through
    /// [`Sanitized`], which copies a clean piece in one write where the
    /// default escapes character by character.
    fn message(&mut self, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        let sanitize = self.writer.sanitizes_ansi_escapes();
        self.result = self.result.and_then(|()| {
            if sanitize {
                write!(Sanitized(&mut self.writer), "{value:?}")
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    /// `field` written by [`DefaultVisitor`], exactly as the default does.
    fn by_default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    /// ` name=` (no space before the first field); false if writing failed.
    fn name(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.is_empty {
            self.result = self.writer.write_char(' ');
        }
        self.is_empty = false;
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(field.name()))
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }
}

impl PlainVisitor<'_> {
    /// Writes `field`: [`DefaultVisitor`] records a special one through
    /// `special`, any other is `name=` followed by what `value` writes.
    fn field(
        &mut self,
        field: &Field,
        special: impl FnOnce(&mut DefaultVisitor<'_>),
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
    ) {
        if Self::special(field) {
            self.by_default(field, special);
        } else if self.name(field) {
            self.result = value(&mut self.writer);
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.message(&format_args!("{value}"));
        }
        // `Debug` leaves printable ASCII but `"` and `\` as it is: such a
        // string (every name, address and label keygate logs) is copied
        // between quotes instead of escaped character by character.
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.field(
            field,
            |d| d.record_str(field, value),
            |w| {
                if plain {
                    w.write_char('"')?;
                    w.write_str(value)?;
                    w.write_char('"')
                } else {
                    write!(w, "{value:?}")
                }
            },
        );
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(
            field,
            |d| d.record_u64(field, value),
            |w| w.write_str(itoa::Buffer::new().format(value)),
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(
            field,
            |d| d.record_i64(field, value),
            |w| w.write_str(itoa::Buffer::new().format(value)),
        );
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.by_default(field, |d| d.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.message(value);
        }
        self.field(
            field,
            |d| d.record_debug(field, value),
            |w| write!(w, "{value:?}"),
        );
    }
}

/// Writes what it is given with the terminal control codes that
/// tracing-subscriber escapes in a message (ESC, BEL, BS, FF, DEL, and
/// C1 `U+0080`–`U+009F`) escaped exactly as it escapes them; a piece
/// without any is copied in one write.
struct Sanitized<'w, 'a>(&'w mut Writer<'a>);

impl fmt::Write for Sanitized<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // 0xC2 leads every C1 character in UTF-8 (and a few others, which
        // the slow path then copies as they are).
        if !s
            .bytes()
            .any(|b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The time now in UTC as RFC 3339 with microseconds, as
/// tracing-subscriber's `SystemTime` timer writes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rfc3339Micros;

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(
            w,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer failed")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Events with every kind of field a keygate event has (and some it
    /// has not), written through `fields`.
    fn written<F>(fields: F) -> String
    where
        F: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let buffer = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(buffer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let none: Option<u32> = None;
            let error = std::io::Error::other("disk \"full\"\n\x1b[31m");
            let chained = Outer(std::io::Error::other("inner \u{9b} cause"));
            tracing::info!(
                frontend = "socket",
                peer_uid = Some(0u32),
                peer_gid = none,
                peer_pid = Some(-12i32),
                query = tracing::field::display("id:001"),
                code = 0u8,
                answered_by = "cache",
                agent_name = "na\"me\twith\u{1b}[0m\u{e9}",
                latency_ms = 0.109f64,
                tiny = 1e-9f64,
                flag = true,
                big = u128::MAX,
                list = ?vec![1, 2],
                r#type = "raw",
                quote = "it's a \\ path",
                plain = "agent-00042 10.0.0.1/24 ~{}|",
                del = "a\x7fb",
                wide = "ü",
                empty = "",
                neg = i64::MIN,
                max = u64::MAX,
                "Key request answered."
            );
            tracing::warn!(%error, "Message with \x1b[31mcolour\x1b[0m and a {}.", "format");
            tracing::error!(
                error = &chained as &(dyn std::error::Error + 'static),
                n = 3i64
            );
            tracing::info!("only a message");
            let hostile = "bel\x07 bs\x08 ff\x0c del\x7f c1\u{85}\u{9f} nbsp\u{a0} \u{e9}";
            tracing::warn!(error = "x", "{hostile} and {:?}", hostile);
            tracing::info!(message = hostile, after = 1u64);
            tracing::info!("only C1: \u{9b}31m and \u{85}");
            tracing::info!(message = 5u64, other = true);
            tracing::info!(first = "no message", second = 2u64);
            let span = tracing::info_span!("req", id = "001", n = 5u64);
            let _in = span.enter();
            tracing::debug!(inside = true, "in a span");
            tracing::info!(after = "x", "in a span");
        });
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The same events give the same text through both formatters, byte
    /// for byte: quoting, escaping, missing options, Display and Debug
    /// values, raw names, errors with their sources, the message's own
    /// escaping of terminal codes, spans.
    #[test]
    fn plain_fields_write_what_the_default_writes() {
        let ours = written(PlainFields);
        let theirs = written(DefaultFields::new());
        assert!(ours.contains("Key request answered. frontend=\"socket\" peer_uid=0"));
        assert!(!ours.contains("peer_gid"), "{ours}");
        assert_eq!(ours, theirs);
    }

    /// The timestamp has the default timer's shape and is now.
    #[test]
    fn timestamps_are_rfc3339_with_microseconds_in_utc() {
        let mut s = String::new();
        Rfc3339Micros.format_time(&mut Writer::new(&mut s)).unwrap();
        assert_eq!(s.len(), "2026-12-02T04:45:35.875756Z".len(), "{s}");
        let b = s.as_bytes();
        for (i, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            assert_eq!(b[i], c, "{s}");
        }
        let parsed = humantime::parse_rfc3339(&s).unwrap();
        let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
        assert!(age < std::time::Duration::from_secs(60), "{s}");
    }
}
