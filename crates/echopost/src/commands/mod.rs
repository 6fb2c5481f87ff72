//! The operator subcommands: `status`, `inspect`, `verify`, `send`, `bench` and
//! `dead-letters`.
//!
//! # How they reach the data
//! A running daemon owns its directory (it holds `DIR/LOCK`), so commands that read or add
//! records talk to it over its socket through [`echopost_client`]. When nothing answers on
//! the socket, `status`, `inspect` and `dead-letters` open the directory *offline* with
//! the engine instead, and say so in their output. The engine's lock makes this safe: if a
//! daemon holds the directory but does not answer (it is starting, stopping, stuck, or
//! listens on another socket), opening fails with `Locked` and the command says exactly
//! that instead of reading a log someone else is writing. `verify` never takes the lock:
//! it only reads (see [`echopost_log::verify`]).
//!
//! Looking offline never changes the directory. A directory without a cursor or segment
//! file is reported as empty (or missing) rather than initialised, so `echopost status` on
//! a wrong path does not leave an empty log behind. And before opening, the layout is
//! analysed read-only ([`echopost_log::analyze`]): if a crash left something the
//! engine repairs on open (a torn write at the end, an interrupted segment switch), the
//! command does *not* open the log — that repair drops bytes, and it is the daemon's to
//! make, not a side effect of looking. `status` then reports what the layout shows and
//! names the pending repair; `inspect` explains how to read such a directory.
//!
//! # Deadlines
//! Every wait on the daemon is bounded by `--timeout` (`ECHOPOST_TIMEOUT`, default 10 s):
//! connecting, each call, each message of a stream, and (`send --start-daemon`) the wait
//! for a daemon to answer. A daemon that accepts connections but does not answer (stopped
//! with `SIGSTOP`, stuck) therefore ends the command with exit 3 after that long; it
//! never hangs it.
//!
//! # Permissions
//! A socket the command may not open (`EACCES`: the daemon runs as another user whose
//! socket, or its directory, is closed to this one), or a daemon that refuses this uid,
//! is reported as a permission error naming the socket and what to change (exit 5),
//! never as "no daemon answers".
//!
//! # Exit codes
//! Shared by every operator command (and listed under each one's `--help`):
//! 0 success; 2 usage error, or nothing to talk to (no daemon answers and the directory
//! holds no log); 3 a daemon holds the directory but does not answer on the socket (or not
//! within `--timeout`); 4 storage corruption; 5 anything else (I/O failure, permission
//! denied on the socket, the daemon refused the request).
//!
//! # Output
//! Human-readable text by default, one JSON document (or JSON lines for record listings)
//! with `--json`. Writing to a closed pipe (`echopost inspect | head`) ends the command
//! quietly with code 0 instead of panicking.

pub mod bench;
pub mod dead_letters;
pub mod inspect;
pub mod send;
pub mod status;
pub mod verify;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use echopost_client::{Client, ClientError, Record};
use echopost_log::{Log, LogOptions};

use crate::cli::DirArgs;
use crate::config::DEFAULT_SOCKET_NAME;
use crate::daemon::exit::ExitCode;
use crate::daemon::platform;

/// The exit codes of the operator commands, shown under their `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  2  usage error, or nothing to talk to: no daemon answers and the directory holds no log
  3  a daemon holds the directory but does not answer on the socket, or not within
     --timeout (it is stopped, stuck, or listening on another socket)
  4  storage corruption: the message names the file, the offset and the reason
  5  any other failure (I/O error, permission denied on the socket, the daemon refused
     the request)";

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub struct CommandError {
    pub code: ExitCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
        }
    }

    /// Exit 2: bad flags, or nothing to talk to.
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError::new(ExitCode::Usage, message)
    }

    /// Exit 5: any other failure.
    pub fn fatal(message: impl Into<String>) -> Self {
        CommandError::new(ExitCode::Fatal, message)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every command returns: the exit code of a completed run (verify's 4 is a result,
/// not an error), or an error to print.
pub type CommandResult = Result<ExitCode, CommandError>;

/// Prints a command's error (if any) on stderr, prefixed with the command's name, and
/// returns the exit code.
pub fn finish(name: &str, result: CommandResult) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("echopost {name}: {}", e.message);
            e.code
        }
    }
}

/// The directory and socket a command works on, resolved exactly as `echopost run`
/// resolves them (same flags, same `ECHOPOST_*` variables, same defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dir: PathBuf,
    pub socket: PathBuf,
}

/// Resolves `--dir` / `--socket` against the process environment.
pub fn resolve(dirs: &DirArgs) -> Result<Target, CommandError> {
    resolve_with_env(dirs, |k| std::env::var(k).ok())
}

/// Resolves `--dir` / `--socket`, reading the environment through `var` (for tests).
pub fn resolve_with_env(
    dirs: &DirArgs,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Target, CommandError> {
    let dir = match &dirs.dir {
        Some(d) if d.as_os_str().is_empty() => {
            return Err(CommandError::usage("--dir must not be empty"));
        }
        Some(d) => d.clone(),
        None => platform::default_state_dir(var).ok_or_else(|| {
            CommandError::usage(
                "cannot find the default state directory: neither $XDG_STATE_HOME nor $HOME is set; pass --dir",
            )
        })?,
    };
    let dir = absolute(&dir, "--dir")?;
    let socket = match &dirs.socket {
        Some(s) if s.as_os_str().is_empty() => {
            return Err(CommandError::usage("--socket must not be empty"));
        }
        Some(s) => absolute(s, "--socket")?,
        None => dir.join(DEFAULT_SOCKET_NAME),
    };
    Ok(Target { dir, socket })
}

fn absolute(p: &Path, flag: &str) -> Result<PathBuf, CommandError> {
    std::path::absolute(p)
        .map_err(|e| CommandError::usage(format!("cannot resolve {flag} {}: {e}", p.display())))
}

/// A small runtime for the commands that talk to the daemon. One thread is plenty: they
/// do one request at a time (`bench` builds its own, larger runtime).
pub fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::fatal(format!("cannot start the async runtime: {e}")))
}

/// A client of the daemon answering on `socket` whose every call is bounded by
/// `timeout`, or `None` when nothing does (no socket file, a stale one, or no connection
/// within `timeout`). A socket this user may not open is an error (exit 5), not "nothing
/// there": the daemon is there, and the message says what to change.
pub async fn connect_live(
    socket: &Path,
    timeout: Duration,
) -> Result<Option<Client>, CommandError> {
    match Client::builder(socket).timeout(timeout).connect().await {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is_permission_denied() => Err(CommandError::fatal(e.to_string())),
        Err(_) => Ok(None),
    }
}

/// A failed call on the daemon as the command's error: permission denied is exit 5,
/// no answer in time exit 3 (with the session log to look at), storage corruption exit
/// 4, anything else 5.
pub fn client_error(target: &Target, e: &ClientError) -> CommandError {
    match e {
        ClientError::Timeout { .. } => CommandError::new(
            ExitCode::Locked,
            format!(
                "{e}. Its session log is in {}",
                target
                    .dir
                    .join(crate::daemon::session_log::LOGS_DIR)
                    .display()
            ),
        ),
        _ if e.is_timeout() => CommandError::new(ExitCode::Locked, e.to_string()),
        ClientError::Status(s) if s.code() == tonic::Code::DataLoss => {
            CommandError::new(ExitCode::Corruption, s.message().to_owned())
        }
        _ => CommandError::fatal(e.to_string()),
    }
}

/// What is found when looking at the directory without a daemon.
#[derive(Debug)]
pub enum Offline {
    /// The directory does not exist.
    Missing,
    /// The directory exists but holds no log (no cursor, no segment).
    Empty,
    /// A crash left repairs that opening the log would make; it was not opened.
    NeedsRepair {
        layout: Box<echopost_log::Layout>,
        /// What the daemon's next start will do, for people.
        repairs: Vec<String>,
    },
    /// The log, opened and locked by this process.
    Log(Log),
}

/// The repairs opening a log with `layout` would make (empty: opening changes no data).
pub fn pending_repairs(layout: &echopost_log::Layout) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = &layout.torn_tail {
        out.push(format!(
            "drop a torn write at the end of {} (bytes {} to {}: {}), left by a crash; it was never acknowledged",
            t.file.display(),
            t.start,
            t.end,
            t.reason
        ));
    }
    if layout.torn_segment_header {
        out.push("re-create the last segment, whose header a crash tore".to_owned());
    }
    if layout.unfinished_seal_at.is_some() {
        out.push("complete a segment switch a crash interrupted".to_owned());
    }
    if layout.stale_cursor_tmp {
        out.push("remove a temporary cursor file left by a crash".to_owned());
    }
    if !layout.cursor_exists {
        out.push("create the missing cursor file".to_owned());
    }
    if layout.segments.is_empty() {
        out.push("create the missing active segment".to_owned());
    }
    out
}

/// Holds `DIR/LOCK` (a non-blocking `flock`, the engine's lock) while offline figures are
/// read without the engine, so that a daemon cannot start writing meanwhile. `Ok(None)`
/// when there is no lock file (no daemon ever ran here).
fn probe_lock(target: &Target) -> Result<Option<std::fs::File>, CommandError> {
    let path = target.dir.join(echopost_log::LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CommandError::fatal(format!(
                "cannot open {}: {e}",
                path.display()
            )));
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(locked_error(target)),
        Err(std::fs::TryLockError::Error(e)) => Err(CommandError::fatal(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// True if `dir` holds an engine log: a cursor file or at least one segment.
pub fn has_log(dir: &Path) -> io::Result<bool> {
    if dir.join("cursor").exists() {
        return Ok(true);
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".seg") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens the log in `target.dir` offline. Never creates one and never repairs one (see
/// the module documentation). A daemon holding the lock becomes exit 3 with a message
/// naming the socket; corruption becomes exit 4 pointing at `echopost verify`.
pub fn open_offline(target: &Target) -> Result<Offline, CommandError> {
    let dir = &target.dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CommandError::usage(format!(
                "{} is not a directory; pass the EchoPost state directory with --dir",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Offline::Missing),
        Err(e) => {
            return Err(CommandError::fatal(format!(
                "cannot access {}: {e}",
                dir.display()
            )));
        }
    }
    match has_log(dir) {
        Ok(false) => return Ok(Offline::Empty),
        Ok(true) => {}
        Err(e) => {
            return Err(CommandError::fatal(format!(
                "cannot list {}: {e}",
                dir.display()
            )));
        }
    }
    let layout = {
        let _guard = probe_lock(target)?;
        echopost_log::analyze(dir).map_err(|e| log_error(target, e))?
    };
    let repairs = pending_repairs(&layout);
    if !repairs.is_empty() {
        return Ok(Offline::NeedsRepair {
            layout: Box::new(layout),
            repairs,
        });
    }
    Log::open(dir, LogOptions::default())
        .map(Offline::Log)
        .map_err(|e| log_error(target, e))
}

/// Maps an engine error met offline to the command's error and exit code.
pub fn log_error(target: &Target, e: echopost_log::Error) -> CommandError {
    match e {
        echopost_log::Error::Locked { .. } => locked_error(target),
        echopost_log::Error::Corruption(c) => CommandError::new(
            ExitCode::Corruption,
            format!(
                "{c}. Run `echopost verify --dir {}` for the full report and what to do next",
                target.dir.display()
            ),
        ),
        other => CommandError::fatal(format!("cannot read {}: {other}", target.dir.display())),
    }
}

/// Exit 3: the directory is locked by a daemon that does not answer on the socket.
pub fn locked_error(target: &Target) -> CommandError {
    CommandError::new(
        ExitCode::Locked,
        format!(
            "a daemon is running on {} (it holds {}) but is not answering on {}. If it was started with another --socket, pass that one; otherwise it may be starting up, shutting down or stuck: see its session log in {}",
            target.dir.display(),
            target.dir.join(echopost_log::LOCK_FILE).display(),
            target.socket.display(),
            target
                .dir
                .join(crate::daemon::session_log::LOGS_DIR)
                .display()
        ),
    )
}

/// Exit 2: no daemon answers and the directory holds nothing.
pub fn nothing_there(target: &Target, what: &str) -> CommandError {
    CommandError::usage(format!(
        "no daemon answers on {} and {} {what}. Check --dir / --socket (or ECHOPOST_DIR / ECHOPOST_SOCKET)",
        target.socket.display(),
        target.dir.display()
    ))
}

/// Writes `text` to stdout. A closed pipe is not an error (the reader has seen enough).
pub fn print_stdout(text: &str) -> Result<(), CommandError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CommandError::fatal(format!("cannot write to stdout: {e}"))),
    }
}

/// A record as one JSON object, fields in a fixed, readable order: every field of the
/// record, the payload as UTF-8 text when it is valid UTF-8 and as base64 otherwise
/// (`payload_encoding` says which), the timestamp both as nanoseconds and as RFC 3339 UTC.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordJson {
    pub sequence: u64,
    pub id: String,
    pub stream: String,
    pub route: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub timestamp_unix_nanos: i64,
    pub timestamp: String,
    pub payload_encoding: &'static str,
    pub payload: String,
}

impl RecordJson {
    pub fn new(sequence: u64, r: &Record) -> Self {
        let (payload, payload_encoding) = payload_text(&r.payload);
        RecordJson {
            sequence,
            id: r.id.clone(),
            stream: r.stream.clone(),
            route: r.route.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timestamp_unix_nanos: r.timestamp_unix_nanos,
            timestamp: utc_rfc3339(r.timestamp_unix_nanos),
            payload_encoding,
            payload,
        }
    }
}

/// [`RecordJson`] as one line of JSON (without the newline).
pub fn record_json(sequence: u64, r: &Record) -> String {
    serde_json::to_string(&RecordJson::new(sequence, r))
        // A struct of strings and integers always serialises.
        .unwrap_or_default()
}

/// The payload as text: itself if valid UTF-8 (`"utf8"`), base64 otherwise (`"base64"`).
pub fn payload_text(payload: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(payload) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    }
}

/// Nanoseconds since the UNIX epoch now.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `2026-01-02T03:04:05.123Z` for a time in nanoseconds since the UNIX epoch (before
/// 1970 too: a record's timestamp is whatever its client set). The calendar is the `time`
/// crate's; every `i64` of nanoseconds (1677 to 2262) is within its range.
pub fn utc_rfc3339(unix_nanos: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos)) {
        Ok(utc) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second(),
            utc.millisecond()
        ),
        Err(_) => format!("{unix_nanos} ns after 1970-01-01T00:00:00Z"),
    }
}

/// `12,345,678`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in binary units: `512 B`, `3.1 KiB`, `45.6 MiB`, `1.20 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.2} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

/// A rate in decimal megabytes per second (10^6 bytes, as throughput is usually quoted).
pub fn fmt_mb_per_s(bytes_per_second: f64) -> String {
    format!("{:.1} MB/s", bytes_per_second / 1e6)
}

/// A duration for people: `850 ms`, `12.3 s`, `4m 05s`, `2h 03m`, `3d 04h`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// Sequence ranges for people: `1 to 50`, `1 to 10, 21 to 30`. Adjacent ranges are merged.
pub fn fmt_ranges(ranges: &[(u64, u64)]) -> String {
    merge_ranges(ranges)
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a} to {b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Merges ranges that touch (`(1,10),(11,20)` → `(1,20)`), keeping order.
pub fn merge_ranges(ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(a) => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_rfc3339(1_767_323_045_123_000_000),
            "2026-01-02T03:04:05.123Z"
        );
        assert_eq!(
            utc_rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(utc_rfc3339(-1_000_000_000), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn counts_bytes_durations() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(12_345_678), "12,345,678");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(3 << 10), "3.00 KiB");
        assert_eq!(fmt_bytes(45 << 20), "45.0 MiB");
        assert_eq!(fmt_bytes(2 << 30), "2.00 GiB");
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(fmt_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(fmt_duration(Duration::from_secs(245)), "4m 05s");
        assert_eq!(fmt_duration(Duration::from_secs(7380)), "2h 03m");
        assert_eq!(fmt_mb_per_s(31_600_000.0), "31.6 MB/s");
    }

    #[test]
    fn ranges() {
        assert_eq!(fmt_ranges(&[(1, 10), (11, 20), (31, 31)]), "1 to 20, 31");
        assert_eq!(fmt_ranges(&[]), "");
    }

    #[test]
    fn payloads() {
        assert_eq!(payload_text(b"hello"), ("hello".to_owned(), "utf8"));
        assert_eq!(payload_text(&[0xff, 0x00]), ("/wA=".to_owned(), "base64"));
    }

    #[test]
    fn resolve_matches_run() {
        let args = DirArgs {
            dir: Some(PathBuf::from("/tmp/ep")),
            socket: None,
        };
        let t = resolve_with_env(&args, |_| None).unwrap();
        assert_eq!(t.dir, PathBuf::from("/tmp/ep"));
        assert_eq!(t.socket, PathBuf::from("/tmp/ep/echopost.sock"));
        let none = DirArgs {
            dir: None,
            socket: None,
        };
        let e = resolve_with_env(&none, |_| None).unwrap_err();
        assert_eq!(e.code, ExitCode::Usage);
        let t = resolve_with_env(&none, |k| (k == "HOME").then(|| "/home/u".to_owned())).unwrap();
        assert!(t.dir.starts_with("/home/u"));
    }

    #[test]
    fn offline_never_creates_a_log() {
        let tmp = tempfile::tempdir().unwrap();
        let target = Target {
            dir: tmp.path().join("missing"),
            socket: tmp.path().join("s.sock"),
        };
        assert!(matches!(open_offline(&target).unwrap(), Offline::Missing));
        std::fs::create_dir(&target.dir).unwrap();
        assert!(matches!(open_offline(&target).unwrap(), Offline::Empty));
        assert_eq!(std::fs::read_dir(&target.dir).unwrap().count(), 0);
        // A log, locked by "a daemon": exit 3 naming the socket.
        let held = Log::open(&target.dir, LogOptions::default()).unwrap();
        let e = open_offline(&target).unwrap_err();
        assert_eq!(e.code, ExitCode::Locked);
        assert!(e.message.contains("s.sock"), "{}", e.message);
        drop(held);
        assert!(matches!(open_offline(&target).unwrap(), Offline::Log(_)));
    }

    #[test]
    fn offline_never_repairs_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let target = Target {
            dir: tmp.path().to_path_buf(),
            socket: tmp.path().join("s.sock"),
        };
        {
            let log = Log::open(&target.dir, LogOptions::default()).unwrap();
            log.append(&[b"kept"]).unwrap();
            log.append(&[b"torn"]).unwrap();
            log.close().unwrap();
        }
        let seg = target.dir.join("00000000000000000001.seg");
        let len = std::fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the second append.
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        match open_offline(&target).unwrap() {
            Offline::NeedsRepair { layout, repairs } => {
                assert_eq!(layout.next_seq, 2);
                assert!(repairs[0].contains("torn write"), "{repairs:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len - 3, "changed");
    }
}
