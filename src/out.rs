//! Command output that ends the process quietly when its reader has gone
//! (`keygate check | head -1`). Rust ignores SIGPIPE, so a plain `println!`
//! panics on a closed pipe; every command prints through [`outln!`] and
//! [`errln!`] instead. (Exec mode writes its one line itself and ignores a
//! failed write: Wazuh has gone then.)

use std::io::{ErrorKind, Write};

use crate::exit::Code;

/// Writes one line to stdout (or stderr); exits quietly if it cannot.
pub fn line(to_stderr: bool, args: std::fmt::Arguments<'_>) {
    let written = if to_stderr {
        writeln!(std::io::stderr().lock(), "{args}")
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{args}").and_then(|()| out.flush())
    };
    if let Err(e) = written {
        let code = if e.kind() == ErrorKind::BrokenPipe {
            Code::BrokenPipe
        } else {
            Code::Output
        };
        std::process::exit(i32::from(code.number()));
    }
}

/// `println!` that exits quietly when stdout is gone.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::line(false, format_args!($($arg)*)) };
}

/// `eprintln!` that exits quietly when stderr is gone.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::out::line(true, format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// Most lines of one kind a text report prints (invalid records,
/// duplicates, warnings); `--json` has them all.
pub const SHOWN: usize = 10;

/// `items` as report lines (`indent` + `line(item)`), at most [`SHOWN`],
/// then `... and N more (--json lists all)`: 200,000 agents can have
/// hundreds of duplicates, and a report of them all hides its summary.
pub fn capped<T>(items: &[T], indent: &str, line: impl Fn(&T) -> String) -> String {
    let mut out = String::new();
    for item in items.iter().take(SHOWN) {
        out.push_str(indent);
        out.push_str(&line(item));
        out.push('\n');
    }
    if items.len() > SHOWN {
        out.push_str(&format!(
            "{indent}... and {} more (--json lists all)\n",
            items.len() - SHOWN
        ));
    }
    out
}

/// An error and its causes as one message, each cause said once: a cause
/// whose text the message already holds (a context that repeats its
/// source, an error that prints its source and also chains it) is left
/// out. anyhow's `{:#}` would print it again (`No such file or directory:
/// No such file or directory (os error 2)`).
pub fn chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // An I/O error printed by its context without Rust's suffix.
        let bare = text
            .find(" (os error ")
            .map_or(text.as_str(), |at| &text[..at]);
        if bare.is_empty() || message.contains(bare) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// At most SHOWN lines, then how many more; all of them when they fit.
    #[test]
    fn a_report_caps_repeated_lines() {
        let items: Vec<u32> = (1..=781).collect();
        let text = capped(&items, "  ", |n| format!("duplicate {n}"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), SHOWN + 1, "{text}");
        assert_eq!(lines[0], "  duplicate 1");
        assert_eq!(lines[SHOWN], "  ... and 771 more (--json lists all)");
        let few = capped(&items[..SHOWN], "", |n| n.to_string());
        assert_eq!(few.lines().count(), SHOWN);
        assert!(!few.contains("more"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the API said no: {0}")]
    struct Repeats(#[source] std::io::Error);

    /// Each cause once: a context repeating its source, an error printing
    /// its source and chaining it, and a cause printed without its
    /// `(os error N)` suffix are not repeated; distinct causes all stay.
    #[test]
    fn a_message_says_each_cause_once() {
        let io = || std::io::Error::from_raw_os_error(2);
        let e = anyhow::Error::new(Repeats(io()));
        assert_eq!(
            chain(&e),
            "the API said no: No such file or directory (os error 2)"
        );
        let e = Err::<(), _>(io())
            .context("password_file: cannot read /p: No such file or directory")
            .context("backend 'db'")
            .unwrap_err();
        assert_eq!(
            chain(&e),
            "backend 'db': password_file: cannot read /p: No such file or directory"
        );
        let e = anyhow::anyhow!("no daemon")
            .context("keygate sync: no daemon")
            .context("cannot sync");
        assert_eq!(chain(&e), "cannot sync: keygate sync: no daemon");
        let e = Err::<(), _>(io()).context("cannot read /p").unwrap_err();
        assert_eq!(
            chain(&e),
            "cannot read /p: No such file or directory (os error 2)"
        );
    }
}
