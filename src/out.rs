//! Command output that ends the process quietly when its reader has gone
//! (`keygate check | head -1`). Rust ignores SIGPIPE, so a plain `println!`
//! panics on a closed pipe; every command prints through [`outln!`] and
//! [`errln!`] instead. (Exec mode writes its one line itself and ignores a
//! failed write: Wazuh has gone then.)

use std::io::{ErrorKind, Write};

/// Exit status after the reader closed the pipe: 128 + SIGPIPE, what a
/// shell reports for a program that SIGPIPE ended.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Exit status when the output cannot be written for another reason
/// (sysexits' EX_IOERR).
const EXIT_IO_ERROR: i32 = 74;

/// Writes one line to stdout (or stderr); exits quietly if it cannot.
pub fn line(to_stderr: bool, args: std::fmt::Arguments<'_>) {
    let written = if to_stderr {
        writeln!(std::io::stderr().lock(), "{args}")
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{args}").and_then(|()| out.flush())
    };
    if let Err(e) = written {
        std::process::exit(if e.kind() == ErrorKind::BrokenPipe {
            EXIT_BROKEN_PIPE
        } else {
            EXIT_IO_ERROR
        });
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
