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
/// file systems and tools dislike in names.
pub fn utc_basic(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
