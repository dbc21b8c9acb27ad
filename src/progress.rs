//! A progress bar on stderr, only on a terminal and only once the work has
//! taken more than a second; nothing at all otherwise. A line printed while
//! it is shown ([`print_line`], sync's retries) goes above it.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar on screen, if one is: [`print_line`] prints above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Prints `line` on stderr, above the bar if one is shown (printed
/// plainly, the bar's next redraw would erase it).
pub fn print_line(line: &str) {
    let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match shown {
        Some(bar) => bar.suspend(|| crate::out::errln!("{line}")),
        None => crate::out::errln!("{line}"),
    }
}

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
            *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.bar.clone());
        }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.show_if_long();
    }

    /// Clears the bar before the result is printed.
    pub fn finish(&self) {
        SHOWN.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.bar.finish_and_clear();
    }
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {human_pos} agents ({rate})")
        .map(|style| style.with_key("rate", rate))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// `{rate}`: units per second, rounded (`198,403/s`; indicatif's
/// `{per_sec}` prints `198,402.6174/s`).
fn rate(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let per_sec = state.per_sec();
    let rounded = if per_sec.is_finite() && per_sec > 0.0 {
        per_sec.round() as u64
    } else {
        0
    };
    let _ = write!(w, "{}/s", HumanCount(rounded));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What a bar drew, as a terminal would show it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The spinner's rate is a whole number with thousands separators
    /// (`198,403/s`), never indicatif's four decimals.
    #[test]
    fn the_rate_is_rounded() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            None,
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_style(spinner());
        bar.set_message("listing");
        bar.inc(1_234_567);
        std::thread::sleep(Duration::from_millis(20));
        bar.inc(1);
        bar.tick();
        let drawn = screen.0.lock().unwrap().clone();
        let rate = drawn
            .rsplit('(')
            .next()
            .and_then(|r| r.split(')').next())
            .unwrap_or_default()
            .to_owned();
        let digits = rate
            .strip_suffix("/s")
            .unwrap_or_else(|| panic!("{drawn:?}"));
        assert!(
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == ','),
            "{drawn:?}"
        );
        assert!(drawn.contains("1,234,568 agents"), "{drawn:?}");
    }
}
