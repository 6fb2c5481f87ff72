//! The session log's lines about dead letters, rate-limited (issue 13: a main server that
//! rejects everything must not write one warning per record: 45 MB of log for 229 MB of
//! dead letters was seen).
//!
//! The first [`FIRST_EACH`] dead letters of a session are logged one by one, with their
//! sequence and reason. After that, at most one summary line per [`SUMMARY_EVERY`] says
//! how many were dead-lettered since the last line, their sequence range and the last
//! reason; [`DeadLetterNotices::flush`] writes what is pending when replay goes idle or
//! stops. Nothing is lost: `echopost dead-letters list` has every record and reason, and
//! `status` the count.

use std::path::Path;
use std::time::{Duration, Instant};

/// Dead letters logged one line each at the start of a session.
pub(super) const FIRST_EACH: u64 = 10;
/// Shortest time between two summary lines.
pub(super) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Counts dead letters and decides which ones get a line of their own.
#[derive(Debug, Default)]
pub(super) struct DeadLetterNotices {
    logged: u64,
    pending: u64,
    first_pending: u64,
    last_pending: u64,
    last_reason: String,
    last_line: Option<Instant>,
}

impl DeadLetterNotices {
    /// A record `seq` was dead-lettered for `reason` (in `dir`, the dead-letter log).
    pub(super) fn note(&mut self, seq: u64, reason: &str, dir: &Path) {
        self.note_at(seq, reason, dir, Instant::now());
    }

    fn note_at(&mut self, seq: u64, reason: &str, dir: &Path, now: Instant) {
        if self.logged < FIRST_EACH {
            self.logged += 1;
            tracing::warn!(
                seq,
                reason,
                dir = %dir.display(),
                "record rejected by the main server; moved to the dead-letter log{}",
                if self.logged == FIRST_EACH {
                    " (further dead letters are summarised, one line per 10 s at most)"
                } else {
                    ""
                }
            );
            self.last_line = Some(now);
            return;
        }
        if self.pending == 0 {
            self.first_pending = seq;
        }
        self.pending += 1;
        self.last_pending = seq;
        reason.clone_into(&mut self.last_reason);
        if self
            .last_line
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY)
        {
            self.flush_at(dir, now);
        }
    }

    /// Writes the summary of what is pending, if anything is.
    pub(super) fn flush(&mut self, dir: &Path) {
        self.flush_at(dir, Instant::now());
    }

    fn flush_at(&mut self, dir: &Path, now: Instant) {
        if self.pending == 0 {
            return;
        }
        tracing::warn!(
            records = self.pending,
            first_seq = self.first_pending,
            last_seq = self.last_pending,
            last_reason = %self.last_reason,
            dir = %dir.display(),
            "more records rejected by the main server and moved to the dead-letter log (`echopost dead-letters list` shows each one)"
        );
        self.logged += self.pending;
        self.pending = 0;
        self.last_line = Some(now);
    }

    /// Dead letters not yet in a line of the log.
    #[cfg(test)]
    fn pending(&self) -> u64 {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ones_each_then_one_summary_per_interval() {
        let dir = Path::new("/d/dead-letters");
        let mut n = DeadLetterNotices::default();
        let t0 = Instant::now();
        for seq in 1..=FIRST_EACH {
            n.note_at(seq, "400", dir, t0);
            assert_eq!(n.pending(), 0);
        }
        // 1,000 more within the interval: held, then one line when it has passed.
        for seq in 11..=1010 {
            n.note_at(seq, "400", dir, t0 + Duration::from_secs(1));
        }
        assert_eq!(n.pending(), 1000);
        n.note_at(1011, "400", dir, t0 + SUMMARY_EVERY);
        assert_eq!(n.pending(), 0);
        assert_eq!(n.logged, 1011);
        n.note_at(
            1012,
            "last",
            dir,
            t0 + SUMMARY_EVERY + Duration::from_secs(1),
        );
        assert_eq!(
            (n.pending(), n.first_pending, n.last_reason.as_str()),
            (1, 1012, "last")
        );
        n.flush(dir);
        assert_eq!(n.pending(), 0);
    }
}
