//! The bench's progress line on stderr.
//!
//! A run can take minutes (a 2 GiB backlog), so the operator should see that it is alive
//! and when it will end; but the figures go to stdout and must stay clean for `--json`
//! and pipes, and a short run in a script should print nothing at all. Hence one line on
//! stderr, redrawn in place on a terminal and printed rarely otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::commands::fmt_duration;

/// Progress refresh on a terminal.
const PROGRESS_TTY: Duration = Duration::from_millis(250);
/// Progress lines when stderr is not a terminal (logs of long runs).
const PROGRESS_PLAIN: Duration = Duration::from_secs(10);

/// A one-line progress display on stderr: redrawn a few times per second on a terminal,
/// a plain line every [`PROGRESS_PLAIN`] otherwise (so long runs in CI logs show life),
/// nothing for short runs that are not on a terminal.
pub struct ProgressLine {
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl ProgressLine {
    pub fn new() -> Self {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    /// Shows `text` after a bar filled to `fraction` (0 to 1), if it is time to.
    pub fn show(&mut self, fraction: f64, text: &str) {
        let now = Instant::now();
        let every = if self.tty {
            PROGRESS_TTY
        } else {
            PROGRESS_PLAIN
        };
        match self.last {
            None => {
                // The first line waits a full period: short runs print nothing.
                self.last = Some(now);
                return;
            }
            Some(t) if now - t < every => return,
            _ => {}
        }
        self.last = Some(now);
        let width = 24usize;
        let filled = ((fraction.clamp(0.0, 1.0) * width as f64) as usize).min(width);
        let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled));
        let pct = (fraction.clamp(0.0, 1.0) * 100.0) as u32;
        if self.tty {
            eprint!("\r\x1b[2K{bar} {pct:>3}%  {text}");
            self.shown = true;
        } else {
            eprintln!("{bar} {pct:>3}%  {text}");
        }
    }

    /// Erases the line (on a terminal) and starts over: the next phase waits a full
    /// period again before its first line.
    pub fn clear(&mut self) {
        if self.tty && self.shown {
            eprint!("\r\x1b[2K");
        }
        self.shown = false;
        self.last = None;
    }
}

/// `3.0 s elapsed, ETA 7.0 s`: the time left, extrapolated from the fraction done.
pub fn eta(elapsed: Duration, fraction: f64) -> String {
    if fraction <= 0.0 {
        return format!("{} elapsed", fmt_duration(elapsed));
    }
    let total = elapsed.as_secs_f64() / fraction.min(1.0);
    let left = (total - elapsed.as_secs_f64()).max(0.0);
    format!(
        "{} elapsed, ETA {}",
        fmt_duration(elapsed),
        fmt_duration(Duration::from_secs_f64(left))
    )
}
