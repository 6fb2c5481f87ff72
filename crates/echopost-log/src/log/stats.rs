//! What the log reports: [`RecoveryReport`] (what opening found and repaired) and
//! [`LogStats`] (a consistent snapshot of its figures, for status and backlog checks).

use std::time::Duration;

use crate::recovery::TornTail;

use super::Log;
#[cfg(doc)]
use super::LogOptions;
#[cfg(doc)]
use crate::error::Error;

/// What recovery found and repaired when the log was opened.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segments present after recovery.
    pub segments: usize,
    /// The persisted acknowledgement cursor.
    pub acked: u64,
    /// The next sequence to be assigned.
    pub next_seq: u64,
    /// A torn write that was truncated away, if any.
    pub torn_tail: Option<TornTail>,
    /// The last segment's header was torn and the segment re-created.
    pub recreated_segment_header: bool,
    /// An interrupted segment roll was completed (the seal written).
    pub completed_roll: bool,
    /// Fully acknowledged segments deleted at open (their deletion had not reached disk).
    pub removed_acked_segments: usize,
    /// The directory was new.
    pub created: bool,
    /// The cursor was unreadable (missing, empty, damaged) and recovery started from the
    /// oldest segment on disk; says what will be delivered again.
    pub cursor_reset: Option<Box<crate::recovery::CursorReset>>,
    /// How long opening took (lock, analysis and repairs).
    pub duration: Duration,
}

/// A point-in-time view of the log's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// Oldest sequence not yet acknowledged (`acked + 1`).
    pub first_unacked_seq: u64,
    /// Sequence the next append gets.
    pub next_seq: u64,
    /// Sequences below this are durable.
    pub durable_next: u64,
    /// Highest acknowledged sequence (persisted).
    pub acked: u64,
    /// Records stored and not yet acknowledged (`next_seq - first_unacked_seq`, durable
    /// or not).
    pub backlog_records: u64,
    /// Bytes of the segments holding unacknowledged records (an upper bound of the
    /// backlog's size: a partly acknowledged segment counts whole).
    pub backlog_bytes: u64,
    /// Bytes of all segment files (what [`LogOptions::max_disk_bytes`] limits).
    pub disk_bytes: u64,
    /// Number of segment files, the active one included.
    pub segments: usize,
    /// Why the writer stopped ([`Error::Poisoned`]), if it did.
    pub poisoned: Option<String>,
}

impl Log {
    /// Current figures (a consistent snapshot; no I/O).
    pub fn stats(&self) -> LogStats {
        let st = self.inner.lock_state();
        let first_unacked_seq = st.acked + 1;
        let mut backlog_bytes = 0;
        let mut segs: Vec<(u64, u64)> = st.sealed.iter().map(|s| (s.first_seq, s.len)).collect();
        segs.push((st.active.first_seq, st.active.len));
        for (i, (_, len)) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).map_or(st.next_seq, |s| s.0);
            if next_first > first_unacked_seq {
                backlog_bytes += len;
            }
        }
        if st.next_seq == first_unacked_seq {
            backlog_bytes = 0;
        }
        LogStats {
            first_unacked_seq,
            next_seq: st.next_seq,
            durable_next: st.durable_next,
            acked: st.acked,
            backlog_records: st.next_seq - first_unacked_seq,
            backlog_bytes,
            disk_bytes: st.disk_bytes,
            segments: segs.len(),
            poisoned: st.poisoned.as_deref().map(str::to_owned),
        }
    }

    /// What [`Log::open`] found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }
}
