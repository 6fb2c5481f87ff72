//! The state directory and the log, as the daemon opens and closes them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_log::{Log, LogStats};

use super::exit::DaemonError;
use crate::config::Config;

/// How long closing the log waits for other holders of it to let go.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Creates the state directory `0700` if needed.
pub(super) fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DaemonError::Config(format!(
            "--dir {} exists and is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                DaemonError::io(
                    format!("cannot create the state directory {}", dir.display()),
                    e,
                )
            }),
        Err(e) => Err(DaemonError::io(
            format!("cannot access the state directory {}", dir.display()),
            e,
        )),
    }
}

pub(super) fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the state directory is accessible to other users; consider chmod 700"
            );
        }
    }
}

/// Rebuilds the stream and producer tables from the log's checkpoint and the frames
/// after it (see [`crate::streams`]), on the blocking pool, and checkpoints them.
pub(super) async fn recover_streams(
    config: &Config,
    log: &Arc<Log>,
) -> Result<Arc<crate::streams::Streams>, DaemonError> {
    let started = std::time::Instant::now();
    let l = Arc::clone(log);
    let (producers, streams) = (config.max_producers, config.max_streams);
    let recovered =
        tokio::task::spawn_blocking(move || crate::streams::recover(&l, producers, streams, true))
            .await
            .map_err(|e| {
                DaemonError::Internal(format!("the stream state recovery task failed: {e}"))
            })?;
    let (tables, r) = match recovered {
        Ok(t) => t,
        Err(crate::streams::StreamsError::Log(e)) => {
            return Err(DaemonError::from_log(&config.dir, e));
        }
        Err(e) => {
            return Err(DaemonError::Corruption {
                dir: config.dir.clone(),
                detail: e.to_string(),
            });
        }
    };
    tracing::info!(
        streams = tables.streams.len(),
        producers = tables.producers.len(),
        checkpoint_seq = r.from_seq,
        frames_replayed = r.frames,
        duration_ms = started.elapsed().as_millis() as u64,
        "stream state recovered"
    );
    Ok(crate::streams::Streams::new(tables))
}

/// Opens the log on the blocking pool and reports what recovery did.
pub(super) async fn open_log(config: &Config) -> Result<Arc<Log>, DaemonError> {
    let dir = config.dir.clone();
    let opts = config.log.clone();
    let opened = tokio::task::spawn_blocking(move || Log::open(&dir, opts))
        .await
        .map_err(|e| DaemonError::Internal(format!("the log open task failed: {e}")))?;
    let log = match opened {
        Ok(l) => l,
        Err(e) => {
            let err = DaemonError::from_log(&config.dir, e);
            if let DaemonError::Corruption { .. } = err {
                tracing::error!(dir = %config.dir.display(), "recovery found storage corruption; nothing was changed");
            }
            return Err(err);
        }
    };
    let r = log.recovery_report();
    let stats = log.stats();
    tracing::info!(
        created = r.created,
        segments = r.segments,
        acked = r.acked,
        next_seq = r.next_seq,
        backlog_records = stats.backlog_records,
        backlog_bytes = stats.backlog_bytes,
        disk_bytes = stats.disk_bytes,
        first_unacked_seq = stats.first_unacked_seq,
        torn_tail = r.torn_tail.is_some(),
        completed_roll = r.completed_roll,
        recreated_segment_header = r.recreated_segment_header,
        removed_acked_segments = r.removed_acked_segments,
        cursor_reset = r.cursor_reset.is_some(),
        duration_ms = r.duration.as_millis() as u64,
        "log recovered"
    );
    // A torn tail's details (file, byte range, dropped sequences) are logged by the engine
    // itself, into the same session log.
    if let Some(reset) = &r.cursor_reset {
        // Not corruption (issue 13): the cursor only says what may be skipped.
        tracing::warn!(
            redelivered_first = reset.redelivered.map(|(a, _)| a),
            redelivered_last = reset.redelivered.map(|(_, b)| b),
            "{reset}; the main server may receive these records again (at-least-once)"
        );
    }
    Ok(Arc::new(log))
}

pub(super) fn log_final(stats: &LogStats, reason: &str) {
    tracing::info!(
        reason,
        first_unacked_seq = stats.first_unacked_seq,
        next_seq = stats.next_seq,
        backlog_records = stats.backlog_records,
        backlog_bytes = stats.backlog_bytes,
        disk_bytes = stats.disk_bytes,
        segments = stats.segments,
        "log synced and closed; lock released"
    );
}

/// Syncs and closes the log, releasing the directory lock. Waits briefly for other holders
/// (finishing tasks) to let go; if they do not, syncs without closing (the lock is then
/// released when the process exits). Returns the error of the final sync, if any.
pub(super) async fn close_log(mut log: Arc<Log>) -> Option<echopost_log::Error> {
    let deadline = Instant::now() + CLOSE_WAIT;
    let res = loop {
        match Arc::try_unwrap(log) {
            Ok(l) => {
                break tokio::task::spawn_blocking(move || {
                    // A drained log leaves no delivered data behind, even the active
                    // segment: on a full disk that is what lets the next start store
                    // again (issue 13).
                    if l.stats().backlog_records == 0 && l.stats().poisoned.is_none() {
                        match l.reclaim_delivered() {
                            Ok(true) => tracing::info!("gave back the delivered active segment"),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "could not give back the delivered active segment"),
                        }
                    }
                    l.close()
                })
                .await;
            }
            Err(shared) if Instant::now() >= deadline => {
                tracing::warn!(
                    "the log is still in use by a finishing task; syncing without closing"
                );
                break tokio::task::spawn_blocking(move || {
                    if shared.stats().poisoned.is_some() {
                        Ok(())
                    } else {
                        shared.sync_now()
                    }
                })
                .await;
            }
            Err(shared) => {
                log = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    match res {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::error!(error = %e, no_space = e.is_no_space(), "the final sync of the log failed");
            Some(e)
        }
        Err(e) => {
            tracing::error!(error = %e, "the task closing the log failed");
            None
        }
    }
}
