//! Recent delivery rate, for `Status` (records and bytes per second, and the estimated
//! time to drain the backlog).
//!
//! The replayer only keeps running totals ([`crate::replay::Progress`]). A background task
//! samples them once a second into a short window; the rate is the difference across the
//! window. A window (rather than "since start") makes the estimate follow the upstream's
//! current speed, which is what an operator asking "when will this be done?" needs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How often the lifecycle samples the totals.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    records: u64,
    bytes: u64,
}

/// Sliding-window rate of two monotonically increasing totals.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: Mutex<VecDeque<Sample>>,
}

/// Rates over the recent window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub records_per_second: f64,
    pub bytes_per_second: f64,
}

impl RateMeter {
    /// Records the totals now.
    pub fn sample(&self, records: u64, bytes: u64) {
        self.sample_at(Instant::now(), records, bytes);
    }

    fn sample_at(&self, at: Instant, records: u64, bytes: u64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back(Sample { at, records, bytes });
        // Keep one sample at or beyond the window's start so the window stays full.
        while s.len() > 2 && at.duration_since(s[1].at) >= WINDOW {
            s.pop_front();
        }
    }

    /// The rates across the window (zero until two samples half a second apart exist).
    pub fn rates(&self) -> Rates {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (s.front(), s.back()) else {
            return Rates {
                records_per_second: 0.0,
                bytes_per_second: 0.0,
            };
        };
        let dt = last.at.duration_since(first.at).as_secs_f64();
        if dt < 0.5 {
            return Rates {
                records_per_second: 0.0,
                bytes_per_second: 0.0,
            };
        }
        Rates {
            records_per_second: last.records.saturating_sub(first.records) as f64 / dt,
            bytes_per_second: last.bytes.saturating_sub(first.bytes) as f64 / dt,
        }
    }
}

/// Seconds to drain `backlog_records` at `records_per_second`; `-1` if unknown (no
/// recent progress), `0` for an empty backlog.
pub fn estimated_drain_seconds(backlog_records: u64, records_per_second: f64) -> f64 {
    if backlog_records == 0 {
        0.0
    } else if records_per_second > 0.0 {
        backlog_records as f64 / records_per_second
    } else {
        -1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let m = RateMeter::default();
        assert_eq!(m.rates().records_per_second, 0.0);
        let t0 = Instant::now();
        for i in 0..=20u64 {
            m.sample_at(t0 + Duration::from_secs(i), i * 100, i * 1000);
        }
        let r = m.rates();
        assert!((r.records_per_second - 100.0).abs() < 1e-6, "{r:?}");
        assert!((r.bytes_per_second - 1000.0).abs() < 1e-6, "{r:?}");
        // Old samples are dropped.
        assert!(m.samples.lock().unwrap().len() <= 12);
    }

    #[test]
    fn drain_estimate() {
        assert_eq!(estimated_drain_seconds(0, 0.0), 0.0);
        assert_eq!(estimated_drain_seconds(10, 0.0), -1.0);
        assert_eq!(estimated_drain_seconds(100, 50.0), 2.0);
    }
}
