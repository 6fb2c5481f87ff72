//! Recent delivery rate and time-to-drain estimate.
//!
//! The replayer bumps counters after every delivered batch; readers (`Status`, the session
//! log) want "how fast lately", not "on average since start", so that a backlog that
//! just started draining after an outage gets a useful estimate. The window keeps a
//! sample of the counters at most every [`SAMPLE_EVERY`] and the rate is the change
//! between the oldest sample still covering [`WINDOW`] and now.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Width of the rate window.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Minimum spacing of samples (bounds the memory to `WINDOW / SAMPLE_EVERY` entries).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct Window {
    /// `(when, records, bytes)`, oldest first; never empty.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Window {
    pub(crate) fn new(now: Instant) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((now, 0, 0));
        Window { samples }
    }

    /// Notes the counters at `now` (at most one sample per [`SAMPLE_EVERY`]) and forgets
    /// samples no longer needed to cover the window.
    pub(crate) fn sample(&mut self, now: Instant, records: u64, bytes: u64) {
        let due = self
            .samples
            .back()
            .is_none_or(|s| now.saturating_duration_since(s.0) >= SAMPLE_EVERY);
        if due {
            self.samples.push_back((now, records, bytes));
        }
        // Keep exactly one sample at or before the window's start.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|s| now.saturating_duration_since(s.0) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// `(records/s, bytes/s)` between the oldest kept sample and `now`.
    pub(crate) fn rates(&self, now: Instant, records: u64, bytes: u64) -> (f64, f64) {
        let Some(&(t0, r0, b0)) = self.samples.front() else {
            return (0.0, 0.0);
        };
        let span = now.saturating_duration_since(t0).as_secs_f64();
        if span < SAMPLE_EVERY.as_secs_f64() {
            return (0.0, 0.0);
        }
        (
            records.saturating_sub(r0) as f64 / span,
            bytes.saturating_sub(b0) as f64 / span,
        )
    }
}

/// Seconds to deliver `backlog` records at `records_per_second`: 0 for an empty backlog,
/// -1 when unknown (no recent deliveries).
pub(crate) fn eta(backlog: u64, records_per_second: f64) -> f64 {
    if backlog == 0 {
        0.0
    } else if records_per_second > 0.0 {
        backlog as f64 / records_per_second
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        for i in 1..=40u64 {
            // 1000 records and 256 KB per 250 ms = 4000 records/s.
            w.sample(t0 + SAMPLE_EVERY * i as u32, i * 1000, i * 256_000);
        }
        let now = t0 + SAMPLE_EVERY * 40;
        let (r, b) = w.rates(now, 40_000, 40 * 256_000);
        assert!((r - 4000.0).abs() < 1.0, "{r}");
        assert!((b - 1_024_000.0).abs() < 300.0, "{b}");
        assert!(w.samples.len() <= (WINDOW.as_millis() / SAMPLE_EVERY.as_millis()) as usize + 1);
    }

    #[test]
    fn rate_decays_to_zero_when_idle() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.sample(t0 + Duration::from_secs(1), 5000, 5000);
        // Nothing delivered for longer than the window.
        let later = t0 + Duration::from_secs(1) + WINDOW + Duration::from_secs(1);
        w.sample(later, 5000, 5000);
        let (r, _) = w.rates(later + Duration::from_secs(1), 5000, 5000);
        assert_eq!(r, 0.0);
    }

    #[test]
    fn too_short_a_span_is_unknown() {
        let t0 = Instant::now();
        let w = Window::new(t0);
        assert_eq!(
            w.rates(t0 + Duration::from_millis(10), 100, 100),
            (0.0, 0.0)
        );
    }

    #[test]
    fn eta_rules() {
        assert_eq!(eta(0, 0.0), 0.0);
        assert_eq!(eta(10, 0.0), -1.0);
        assert_eq!(eta(1000, 250.0), 4.0);
    }
}
