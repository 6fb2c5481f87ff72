//! The replayer's lines in the session log: `replay progress` every
//! [`PROGRESS_LOG_INTERVAL`] while records are delivered, `backlog drained` once caught
//! up, so an operator watching the log can tell a slow drain from a stuck one.

use std::time::Instant;

use echopost_log::Log;

use super::{PROGRESS_LOG_INTERVAL, Progress};

/// The progress line in the session log.
pub(super) struct Reporter {
    last: Instant,
    delivered_since: bool,
    drained_logged: bool,
}

impl Reporter {
    pub(super) fn new() -> Self {
        Reporter {
            last: Instant::now(),
            delivered_since: false,
            drained_logged: true,
        }
    }

    pub(super) fn delivered(&mut self) {
        self.delivered_since = true;
        self.drained_logged = false;
    }

    pub(super) fn maybe_log(&mut self, log: &Log, progress: &Progress) {
        if self.last.elapsed() < PROGRESS_LOG_INTERVAL || !self.delivered_since {
            return;
        }
        self.last = Instant::now();
        self.delivered_since = false;
        let stats = log.stats();
        let s = progress.snapshot(stats.backlog_records);
        tracing::info!(
            backlog_records = stats.backlog_records,
            backlog_bytes = stats.backlog_bytes,
            delivered_records = s.delivered_records,
            delivered_bytes = s.delivered_bytes,
            dead_lettered = s.dead_lettered,
            records_per_s = format!("{:.0}", s.records_per_second),
            mb_per_s = format!("{:.1}", s.bytes_per_second / 1e6),
            eta_s = format!("{:.1}", s.estimated_drain_seconds),
            "replay progress"
        );
    }

    pub(super) fn caught_up(&mut self, log: &Log, progress: &Progress) {
        if self.drained_logged {
            return;
        }
        self.drained_logged = true;
        let stats = log.stats();
        if stats.backlog_records == 0 {
            let s = progress.snapshot(0);
            tracing::info!(
                delivered_records = s.delivered_records,
                delivered_bytes = s.delivered_bytes,
                dead_lettered = s.dead_lettered,
                "backlog drained"
            );
        }
    }
}
