//! The per-session log: `DIR/logs/<UTC start time>-<pid>.log`, and the same lines on
//! stderr.
//!
//! A daemon that starts and stops by itself is usually not watched by anyone; when records
//! are missing upstream, the question is "what did EchoPost do at 03:12?". So each run
//! keeps its own file next to the data it describes, named so that `ls` sorts runs by start
//! time and the pid ties it to system logs. The file name's stem is also the session id
//! reported by `Status`.
//!
//! # When the file exists (issue 13)
//! The file is created only once the process owns the directory (holds `DIR/LOCK`):
//! until [`Session::attach_file`], lines go to stderr and into a bounded memory buffer
//! that is written at the top of the file when it is created. A process that loses the
//! race for the directory (exit 3: `Fallback` clients start daemons freely) calls
//! [`Session::discard_file`] and leaves no file behind, so racing starts cannot fill
//! `logs/`.
//!
//! # Retention
//! [`Session::attach_file`] keeps the newest `keep` session logs, this one included, and
//! deletes older ones, at startup only (the seed: no background cleanup). Files in
//! `logs/` that are not named like a session log are left alone. Repeated warnings are
//! rate-limited where they are raised (the dead letters: `replay::driver`), so one
//! session's file stays small.
//!
//! # Safety of the lines
//! Every line passes a [`LineEscaper`]: control characters in logged values (a main
//! server's response body, a record's stream name) are escaped, so the file cannot carry
//! terminal escapes or forged lines.
//!
//! Lines are written unbuffered (one `write` per event), so a crash loses nothing that was
//! logged after the file was created. If the file cannot be created the daemon still runs
//! and logs to stderr: losing the log must not stop records from being stored. Files are
//! created `0600` in a `0700` folder.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::escape::LineEscaper;

/// Directory of the session logs inside the state directory.
pub const LOGS_DIR: &str = "logs";

/// Default of `--keep-session-logs`: session logs kept, the running one included.
pub const DEFAULT_KEEP: usize = 20;

/// Most bytes of early lines held in memory until the file is created; later early lines
/// go to stderr only (the daemon logs a few dozen lines before it owns the directory).
const EARLY_BUFFER_BYTES: usize = 256 << 10;

/// The session's identity and where its log goes.
#[derive(Debug, Clone)]
pub struct Session {
    /// `<UTC start time>-<pid>`, e.g. `20260102T030405Z-4242`.
    pub id: String,
    /// The session log file, once it was created ([`Session::attach_file`]).
    pub log_file: Option<PathBuf>,
    /// Wall-clock start time.
    pub started: SystemTime,
    /// Bytes of all session log files in `logs/` (this one included, as it grows);
    /// counted at [`Session::attach_file`], then kept up to date by this session's writes.
    pub log_bytes: Arc<AtomicU64>,
    sink: Arc<FileSink>,
}

/// Where the file layer's lines go: a memory buffer, then the file.
#[derive(Debug)]
struct FileSink {
    state: Mutex<SinkState>,
    bytes: Arc<AtomicU64>,
}

#[derive(Debug)]
enum SinkState {
    Early(Vec<u8>),
    File(std::fs::File),
    Off,
}

impl FileSink {
    fn write_line(&self, line: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *st {
            SinkState::Early(buf) => {
                if buf.len() + line.len() <= EARLY_BUFFER_BYTES {
                    buf.extend_from_slice(line);
                }
            }
            SinkState::File(f) => {
                // A failed write to the log must not stop the daemon; stderr has the line.
                if f.write_all(line).is_ok() {
                    self.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
                }
            }
            SinkState::Off => {}
        }
    }
}

/// The file layer's writer for one event.
struct SinkWriter(Arc<FileSink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The session id for a start time and pid.
pub fn session_id(started: SystemTime, pid: u32) -> String {
    format!("{}-{pid}", utc_basic(started))
}

/// Installs the global tracing subscriber: stderr, and the session log, which is held in
/// memory until [`Session::attach_file`] creates the file under `dir/logs/`. `filter` is
/// a tracing filter directive (validated by the config).
pub fn init(filter: &str) -> Session {
    let started = SystemTime::now();
    let id = session_id(started, std::process::id());
    let log_bytes = Arc::new(AtomicU64::new(0));
    let sink = Arc::new(FileSink {
        state: Mutex::new(SinkState::Early(Vec::new())),
        bytes: Arc::clone(&log_bytes),
    });

    let make_filter = || EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LineEscaper(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(make_filter());
    let file_sink = Arc::clone(&sink);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(move || LineEscaper(SinkWriter(Arc::clone(&file_sink))))
        .with_ansi(false)
        .with_filter(make_filter());
    // A second init (e.g. in tests that start several daemons in one process) keeps the
    // first subscriber.
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    Session {
        id,
        log_file: None,
        started,
        log_bytes,
        sink,
    }
}

impl Session {
    /// Creates the session log in `dir/logs/` (the process now owns `dir`), writes the
    /// lines logged so far into it, and deletes all but the newest `keep - 1` older
    /// session logs. A problem is logged and the daemon goes on with stderr only.
    pub fn attach_file(&mut self, dir: &Path, keep: usize) {
        let logs = dir.join(LOGS_DIR);
        match prune(&logs, keep.saturating_sub(1)) {
            Ok(removed) if removed > 0 => tracing::info!(
                removed,
                keep,
                dir = %logs.display(),
                "deleted the oldest session logs (--keep-session-logs)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot prune old session logs: {e}"),
        }
        let opened = open_log_file(&logs, &self.id);
        let mut st = self
            .sink
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let early = match std::mem::replace(&mut *st, SinkState::Off) {
            SinkState::Early(buf) => buf,
            _ => Vec::new(),
        };
        match opened {
            Ok((path, mut f)) => {
                let others = logs_bytes(&logs, &path);
                let written = if f.write_all(&early).is_ok() {
                    early.len() as u64
                } else {
                    0
                };
                self.log_bytes.store(others + written, Ordering::Relaxed);
                *st = SinkState::File(f);
                drop(st);
                tracing::info!(log_file = %path.display(), "session log created");
                self.log_file = Some(path);
            }
            Err(e) => {
                drop(st);
                tracing::warn!("cannot create the session log, logging to stderr only: {e}");
            }
        }
    }

    /// Drops the lines held for the file and never creates it: this process does not own
    /// the directory (another daemon does), so it leaves no trace in it.
    pub fn discard_file(&self) {
        let mut st = self
            .sink
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if matches!(*st, SinkState::Early(_)) {
            *st = SinkState::Off;
        }
    }
}

fn open_log_file(logs: &Path, id: &str) -> Result<(PathBuf, std::fs::File), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(logs)
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

/// Whether `name` is a session log's file name: `YYYYMMDDTHHMMSSZ-<pid>.log`.
fn is_session_log(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".log") else {
        return false;
    };
    let Some((time, pid)) = stem.split_once('-') else {
        return false;
    };
    let b = time.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && !pid.is_empty()
        && pid.bytes().all(|c| c.is_ascii_digit())
}

/// The session logs in `logs`, oldest first (their names sort by start time).
fn session_logs(logs: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = match std::fs::read_dir(logs) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_session_log(n))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    // Same second: the pid decides, numerically.
    names.sort_by_key(|n| {
        let (time, pid) = n
            .trim_end_matches(".log")
            .split_once('-')
            .unwrap_or((n, "0"));
        (time.to_owned(), pid.parse::<u64>().unwrap_or(0))
    });
    Ok(names.into_iter().map(|n| logs.join(n)).collect())
}

/// Deletes the oldest session logs so that at most `keep` remain; returns how many it
/// deleted.
fn prune(logs: &Path, keep: usize) -> Result<usize, String> {
    let all = session_logs(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let excess = all.len().saturating_sub(keep);
    for p in &all[..excess] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    Ok(excess)
}

/// Bytes of the session logs of the state directory `dir` (for `status` offline).
pub fn logs_bytes_in(dir: &Path) -> u64 {
    logs_bytes(&dir.join(LOGS_DIR), Path::new(""))
}

/// Bytes of the session logs in `logs` other than `this`.
fn logs_bytes(logs: &Path, this: &Path) -> u64 {
    session_logs(logs)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.as_path() != this)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
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

    #[test]
    fn session_log_names() {
        assert!(is_session_log("20260102T030405Z-4242.log"));
        assert!(!is_session_log("20260102T030405Z-.log"));
        assert!(!is_session_log("20260102T030405Z-42.txt"));
        assert!(!is_session_log("notes.log"));
        assert!(!is_session_log("2026010xT030405Z-42.log"));
    }

    #[test]
    fn prune_keeps_the_newest_and_leaves_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "20260102T030405Z-10.log",
            "20260102T030405Z-9.log",
            "20260101T000000Z-77.log",
            "20260103T000000Z-1.log",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        std::fs::write(dir.path().join("keep-me.txt"), "x").unwrap();
        assert_eq!(prune(dir.path(), 2).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20260102T030405Z-10.log",
                "20260103T000000Z-1.log",
                "keep-me.txt"
            ]
        );
        assert_eq!(prune(dir.path(), 5).unwrap(), 0);
        assert_eq!(prune(&dir.path().join("missing"), 1).unwrap(), 0);
    }
}
