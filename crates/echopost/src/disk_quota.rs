//! One bound for everything EchoPost keeps on disk (issue 13): `--max-disk` covers the
//! log's segments, the dead-letter log and the session logs together.
//!
//! The engine enforces the quota on the segments alone (`LogOptions::max_disk_bytes`);
//! the other two stores are counted here and checked beside it:
//!
//! * **Appends** ([`DiskQuota::admit`], in `ingest`): refused with `RESOURCE_EXHAUSTED`
//!   when segments + dead letters + session logs + the batch would pass the quota. The
//!   figures are read without a lock, so appends racing each other may pass it by what
//!   they carry together (the engine's own check still holds the segments under it).
//! * **Dead letters** ([`DiskQuota::dead_letter_fits`], in the replayer): a rejected
//!   record *moves* from the backlog to the dead-letter log, and its segment is freed only
//!   once every record in it is done, so the move may pass the quota by one segment (an
//!   eighth of the quota, the engine's segment size under a quota). Beyond that replay
//!   pauses, says why in `status`, and waits for the operator (`echopost dead-letters
//!   list`, then `purge` or `requeue`): nothing is dropped.
//! * **Session logs** are bounded by `--keep-session-logs` and by rate-limited
//!   warnings; they are counted, never refused (logging must not stop storing).
//!
//! Without `--max-disk` nothing is refused; the figures are still kept for `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shared figures of the stores beside the log, and the quota.
#[derive(Debug)]
pub struct DiskQuota {
    limit: Option<u64>,
    dead_letter_records: AtomicU64,
    dead_letter_bytes: AtomicU64,
    session_log_bytes: Arc<AtomicU64>,
}

/// An append or a dead letter that does not fit: the bytes in use (all stores) and the
/// quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// Segments, dead letters and session logs, in bytes.
    pub used: u64,
    /// `--max-disk`, in bytes.
    pub limit: u64,
    /// Of `used`: the dead-letter log's files.
    pub dead_letter_bytes: u64,
    /// Of `used`: the session logs.
    pub session_log_bytes: u64,
}

impl DiskQuota {
    /// A quota of `limit` bytes (`None`: no limit) over the segments, the dead letters
    /// and the session logs, whose size `session_log_bytes` follows (see
    /// `daemon::session_log::Session::log_bytes`).
    pub fn new(limit: Option<u64>, session_log_bytes: Arc<AtomicU64>) -> Self {
        DiskQuota {
            limit,
            dead_letter_records: AtomicU64::new(0),
            dead_letter_bytes: AtomicU64::new(0),
            session_log_bytes,
        }
    }

    /// No quota, and no session log (for embedding the replayer or the ingest path).
    pub fn unlimited() -> Self {
        DiskQuota::new(None, Arc::new(AtomicU64::new(0)))
    }

    /// `--max-disk`, if set.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Records in the dead-letter log (not requeued or purged) and the bytes of its files.
    pub fn dead_letters(&self) -> (u64, u64) {
        (
            self.dead_letter_records.load(Ordering::Relaxed),
            self.dead_letter_bytes.load(Ordering::Relaxed),
        )
    }

    /// Sets the dead-letter log's figures (read from it).
    pub fn set_dead_letters(&self, records: u64, bytes: u64) {
        self.dead_letter_records.store(records, Ordering::Relaxed);
        self.dead_letter_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Bytes of the session logs.
    pub fn session_log_bytes(&self) -> u64 {
        self.session_log_bytes.load(Ordering::Relaxed)
    }

    fn over(&self, segment_bytes: u64, needed: u64, slack: u64) -> Result<(), OverQuota> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let (_, dead_letter_bytes) = self.dead_letters();
        let session_log_bytes = self.session_log_bytes();
        let used = segment_bytes
            .saturating_add(dead_letter_bytes)
            .saturating_add(session_log_bytes);
        if used.saturating_add(needed) > limit.saturating_add(slack) {
            return Err(OverQuota {
                used,
                limit,
                dead_letter_bytes,
                session_log_bytes,
            });
        }
        Ok(())
    }

    /// Whether an append of `needed` bytes fits beside `segment_bytes` of segments.
    pub fn admit(&self, segment_bytes: u64, needed: u64) -> Result<(), OverQuota> {
        self.over(segment_bytes, needed, 0)
    }

    /// Whether a dead letter of `needed` bytes fits beside `segment_bytes` of segments,
    /// with the slack of one segment of `segment_size` bytes that a move from the backlog
    /// needs (see the module documentation).
    pub fn dead_letter_fits(
        &self,
        segment_bytes: u64,
        needed: u64,
        segment_size: u64,
    ) -> Result<(), OverQuota> {
        self.over(segment_bytes, needed, segment_size)
    }
}

impl std::fmt::Display for OverQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes of {} in use (--max-disk): {} in segments, {} in dead letters, {} in session logs",
            self.used,
            self.limit,
            self.used
                .saturating_sub(self.dead_letter_bytes)
                .saturating_sub(self.session_log_bytes),
            self.dead_letter_bytes,
            self.session_log_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_counts() {
        let logs = Arc::new(AtomicU64::new(100));
        let q = DiskQuota::new(Some(1000), Arc::clone(&logs));
        assert_eq!(q.admit(800, 100), Ok(()));
        q.set_dead_letters(3, 50);
        let over = q.admit(800, 100).unwrap_err();
        assert_eq!(
            (
                over.used,
                over.limit,
                over.dead_letter_bytes,
                over.session_log_bytes
            ),
            (950, 1000, 50, 100)
        );
        assert!(
            over.to_string()
                .contains("800 in segments, 50 in dead letters, 100 in session logs")
        );
        // A dead letter may pass it by one segment while it moves out of the backlog.
        assert_eq!(q.dead_letter_fits(800, 100, 125), Ok(()));
        assert!(q.dead_letter_fits(800, 200, 125).is_err());
        logs.store(0, Ordering::Relaxed);
        assert_eq!(q.admit(800, 100), Ok(()));
        assert_eq!(DiskQuota::new(None, logs).admit(u64::MAX, u64::MAX), Ok(()));
    }
}
