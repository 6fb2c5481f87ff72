//! The per-session log: `DIR/logs/<UTC start time>-<pid>.log`, and the same lines on
//! stderr.
//!
//! A daemon that starts and stops by itself is usually not watched by anyone; when records
//! are missing upstream, the question is "what did EchoPost do at 03:12?". So each run
//! keeps its own file next to the data it describes, named so that `ls` sorts runs by start
//! time and the pid ties it to system logs. The file name's stem is also the session id
//! reported by `Status`.
//!
//! Lines are written unbuffered (one `write` per event), so a crash loses nothing that was
//! logged. If the file cannot be created the daemon still runs and logs to stderr: losing
//! the log must not stop records from being stored.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Directory of the session logs inside the state directory.
pub const LOGS_DIR: &str = "logs";

/// The session's identity and where its log goes.
#[derive(Debug, Clone)]
pub struct Session {
    /// `<UTC start time>-<pid>`, e.g. `20260102T030405Z-4242`.
    pub id: String,
    /// The session log file, if it could be created.
    pub log_file: Option<PathBuf>,
    /// Wall-clock start time.
    pub started: SystemTime,
}

/// The session id for a start time and pid.
pub fn session_id(started: SystemTime, pid: u32) -> String {
    format!("{}-{pid}", utc_basic(started))
}

/// Installs the global tracing subscriber: stderr and (if possible) the session log file
/// under `dir/logs/`. `filter` is a tracing filter directive (validated by the config).
/// Returns the session; a problem with the file is reported on stderr and logging goes on
/// without it.
pub fn init(dir: &Path, filter: &str) -> Session {
    let started = SystemTime::now();
    let id = session_id(started, std::process::id());
    let file = open_log_file(dir, &id);

    let make_filter = || EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(make_filter());
    let (file_layer, log_file, file_error) = match file {
        Ok((path, f)) => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Arc::new(f))
                    .with_ansi(false)
                    .with_filter(make_filter()),
            ),
            Some(path),
            None,
        ),
        Err(e) => (None, None, Some(e)),
    };
    // A second init (e.g. in tests that start several daemons in one process) keeps the
    // first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    if let Some(e) = file_error {
        tracing::warn!("cannot create the session log, logging to stderr only: {e}");
    }
    Session {
        id,
        log_file,
        started,
    }
}

fn open_log_file(dir: &Path, id: &str) -> Result<(PathBuf, std::fs::File), String> {
    let logs = dir.join(LOGS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .map_err(|e| format!("{}: {e}", logs.display()))?;
    let path = logs.join(format!("{id}.log"));
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, f))
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format, UTC): sortable and free of `:`, which some
/// file systems and tools dislike in names. The calendar is the `time` crate's; a time
/// outside the years 1970 to 9999 (a clock set far off) is named as 1970-01-01.
pub fn utc_basic(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let utc =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_names() {
        assert_eq!(utc_basic(UNIX_EPOCH), "19700101T000000Z");
        // 2000-02-29 12:34:56 UTC
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(utc_basic(t), "20000229T123456Z");
        // 2026-12-31 23:59:59 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(utc_basic(t), "20261231T235959Z");
        assert_eq!(session_id(UNIX_EPOCH, 42), "19700101T000000Z-42");
    }
}
