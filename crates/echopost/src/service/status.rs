//! `Status`: what the daemon reports about itself, aggregated from the engine's figures,
//! the replayer's progress and the settings fixed at start.
//!
//! Kept apart from the ingest path on purpose: appending never needs to know how replay is
//! doing, and this is the one place that reads both.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use echopost_log::Log;
use echopost_proto::v1::{Record, StatusResponse};
use prost::Message;
use tonic::Status;

use crate::disk_quota::DiskQuota;
use crate::replay::dead_letters;
use crate::replay::{Failing, Progress};

/// Shortest time between two reads of the dead-letter log's figures from the directory.
const DEAD_LETTER_FIGURES_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Settings and figures `Status` reports that do not change while running.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub dir: String,
    /// The state directory, for the dead-letter log's figures.
    pub dir_path: std::path::PathBuf,
    pub sync_policy: String,
    pub upstream: Option<String>,
    /// 0 when no quota is set.
    pub max_disk_bytes: u64,
    pub session_id: String,
    pub source_id: String,
    pub started: Instant,
}

/// Answers `Status` calls.
#[derive(Debug)]
pub struct StatusReporter {
    log: Arc<Log>,
    progress: Arc<Progress>,
    info: StaticInfo,
    /// `(sequence, timestamp)` of the oldest record last looked up.
    oldest_cache: std::sync::Mutex<(u64, i64)>,
    quota: Arc<DiskQuota>,
    /// When the dead-letter figures were last read from the directory.
    dead_letters_read: std::sync::Mutex<Option<Instant>>,
}

impl StatusReporter {
    /// A reporter over `log`, the replayer's `progress` (idle without `--upstream`) and the
    /// fixed `info`.
    pub fn new(
        log: Arc<Log>,
        progress: Arc<Progress>,
        quota: Arc<DiskQuota>,
        info: StaticInfo,
    ) -> StatusReporter {
        StatusReporter {
            log,
            progress,
            info,
            oldest_cache: std::sync::Mutex::new((0, 0)),
            quota,
            dead_letters_read: std::sync::Mutex::new(None),
        }
    }

    /// Whether the dead-letter figures are due for a read from the directory (they change
    /// behind the daemon's back: `dead-letters purge` and `requeue`).
    fn dead_letters_due(&self) -> bool {
        let Ok(mut last) = self.dead_letters_read.lock() else {
            return false;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < DEAD_LETTER_FIGURES_TTL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// The directory, as shown to operators.
    pub fn dir(&self) -> &str {
        &self.info.dir
    }

    /// The `Status` figures.
    pub async fn status(&self) -> Result<StatusResponse, Status> {
        let log = Arc::clone(&self.log);
        let cached = self.oldest_cache.lock().map(|c| *c).unwrap_or((0, 0));
        let dl = self
            .dead_letters_due()
            .then(|| (self.info.dir_path.clone(), Arc::clone(&self.quota)));
        let (stats, oldest) = tokio::task::spawn_blocking(move || {
            if let Some((dir, quota)) = dl {
                match dead_letters::figures(&dir) {
                    Ok(f) => quota.set_dead_letters(f.records, f.bytes),
                    Err(e) => tracing::debug!(error = %e, "cannot read the dead-letter log's figures for Status"),
                }
            }
            let stats = log.stats();
            // Only look at the oldest record when it is durable already: a reader asks for
            // a sync otherwise, and `Status` must not change the sync behaviour. Reading it
            // means scanning its segment up to it, so it is done once per oldest record,
            // not once per `Status` call.
            let oldest =
                if stats.backlog_records > 0 && stats.durable_next > stats.first_unacked_seq {
                    if cached.0 == stats.first_unacked_seq && cached.1 != 0 {
                        cached.1
                    } else {
                        oldest_timestamp(&log, stats.first_unacked_seq)
                    }
                } else {
                    0
                };
            (stats, oldest)
        })
        .await
        .map_err(|e| Status::internal(format!("status failed: {e}")))?;
        if oldest != 0
            && let Ok(mut c) = self.oldest_cache.lock()
        {
            *c = (stats.first_unacked_seq, oldest);
        }
        let progress = self.progress.snapshot(stats.backlog_records);
        let upstream_state = match self.info.upstream {
            None => echopost_proto::v1::UpstreamState::None as i32,
            Some(_) => self.progress.state() as u8 as i32,
        };
        let failing = progress.failing.clone().unwrap_or(Failing {
            class: "",
            attempts: 0,
            sequence: 0,
            since: UNIX_EPOCH,
            next_attempt: None,
        });
        Ok(StatusResponse {
            first_sequence: stats.first_unacked_seq,
            next_sequence: stats.next_seq,
            backlog_records: stats.backlog_records,
            backlog_bytes: stats.backlog_bytes,
            disk_bytes: stats.disk_bytes,
            max_disk_bytes: self.info.max_disk_bytes,
            sync_policy: self.info.sync_policy.clone(),
            upstream: self.info.upstream.clone().unwrap_or_default(),
            upstream_state,
            upstream_detail: self.progress.last_error(),
            delivered_records: self.progress.delivered_records.load(Ordering::Relaxed),
            dead_lettered_records: self.progress.dead_lettered.load(Ordering::Relaxed),
            uptime_seconds: self.info.started.elapsed().as_secs_f64(),
            session_id: self.info.session_id.clone(),
            source_id: self.info.source_id.clone(),
            delivery_records_per_second: progress.records_per_second,
            delivery_bytes_per_second: progress.bytes_per_second,
            estimated_drain_seconds: progress.estimated_drain_seconds,
            oldest_record_unix_nanos: oldest,
            dir: self.info.dir.clone(),
            pid: std::process::id(),
            version: crate::VERSION.to_owned(),
            upstream_failure_class: failing.class.to_owned(),
            upstream_failed_attempts: failing.attempts,
            stuck_sequence: failing.sequence,
            failing_since_unix_nanos: unix_nanos(failing.since),
            next_attempt_unix_nanos: failing.next_attempt.map_or(0, unix_nanos),
            dead_letter_records: self.quota.dead_letters().0,
            dead_letter_bytes: self.quota.dead_letters().1,
            session_log_bytes: self.quota.session_log_bytes(),
            replay_paused: progress.paused.clone().unwrap_or_default(),
        })
    }
}

/// `t` in UNIX nanoseconds (0 for the epoch itself or earlier).
fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Timestamp of the record at `seq`, or 0 if it cannot be read.
fn oldest_timestamp(log: &Log, seq: u64) -> i64 {
    match log.reader(seq).next_batch(1, 1) {
        Ok(batch) => batch
            .first()
            .and_then(|r| Record::decode(r.data).ok())
            .map_or(0, |r| r.timestamp_unix_nanos),
        Err(e) => {
            tracing::debug!(error = %e, seq, "cannot read the oldest record for Status");
            0
        }
    }
}
