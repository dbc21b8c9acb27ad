//! A progress bar on stderr, only on a terminal and only once the work has
//! taken more than a second; nothing at all otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shown after this long.
const DELAY: Duration = Duration::from_secs(1);

/// The bar (hidden until the work is long).
pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    terminal: bool,
}

impl Bar {
    /// A bar for work whose size is not known.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(spinner());
        Self {
            bar,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show_if_long(&self) {
        if self.terminal && self.bar.is_hidden() && self.started.elapsed() > DELAY {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.show_if_long();
    }

    /// Clears the bar before the result is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {human_pos} agents ({per_sec})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl keygate_wazuh::sync::Progress for Bar {
    fn stage(&self, name: &str, total: Option<u64>) {
        self.bar.set_position(0);
        match total {
            Some(t) => {
                self.bar.set_length(t);
                self.bar.set_style(bar());
            }
            None => {
                self.bar.unset_length();
                self.bar.set_style(spinner());
            }
        }
        self.bar.set_message(name.to_owned());
        self.show_if_long();
    }

    fn advance(&self, n: u64) {
        self.inc(n);
    }
}
