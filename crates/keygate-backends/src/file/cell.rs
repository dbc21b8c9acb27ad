//! CSV cells that a spreadsheet shows instead of running (OWASP's "CSV
//! injection"): `keygate export --format csv` writes a cell that starts
//! with `=`, `+`, `-`, `@`, a tab or a carriage return with a `'` in
//! front, and the file backend's CSV reader takes it off again, so an
//! exported file reads back as the same records.
//!
//! Why a `'` and not quotes: spreadsheets run a quoted `"=1+1"` all the
//! same; a leading `'` is what OWASP recommends and what spreadsheets
//! themselves use to mark text. A cell that starts with `'` itself gets
//! one more (`''x`), so the escape is reversible for every value: a name
//! like `-x` (legal for keygate and Wazuh) is written `'-x` and read back
//! as `-x`. Only a key can start with `'` or `=`, `+`, `@`; Wazuh's own
//! keys are hexadecimal, so in practice only names starting with `-` are
//! written escaped.

use std::borrow::Cow;

/// Whether a cell starting with `first` is escaped.
fn escaped(first: u8) -> bool {
    matches!(first, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'')
}

/// `value` as written in a CSV cell: with a `'` in front when a
/// spreadsheet would take it for a formula, or when it starts with `'`.
pub fn escape(value: &str) -> Cow<'_, str> {
    match value.bytes().next() {
        Some(first) if escaped(first) => Cow::Owned(format!("'{value}")),
        _ => Cow::Borrowed(value),
    }
}

/// A CSV cell's value: [`escape`] undone (a `'` followed by one of the
/// escaped characters is taken off; anything else is the value as it is).
pub fn unescape(cell: &[u8]) -> &[u8] {
    match cell {
        [b'\'', second, ..] if escaped(*second) => &cell[1..],
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell a spreadsheet would run gets a `'`; the reader gives back
    /// exactly the value written, for every first character.
    #[test]
    fn escaped_cells_read_back_as_written() {
        assert_eq!(escape("=1+1"), "'=1+1");
        assert_eq!(escape("-x"), "'-x");
        assert_eq!(escape("+x"), "'+x");
        assert_eq!(escape("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(escape("'=x"), "''=x");
        assert_eq!(escape("'x"), "''x");
        assert_eq!(escape("web-01"), "web-01");
        assert_eq!(escape(""), "");
        for first in 0u8..128 {
            for value in [format!("{}", first as char), format!("{}ab", first as char)] {
                let written = escape(&value);
                assert_eq!(
                    unescape(written.as_bytes()),
                    value.as_bytes(),
                    "{value:?} written as {written:?}"
                );
            }
        }
        assert_eq!(unescape(b"'abc"), b"'abc");
    }
}
