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
pub mod salvage;
pub mod send;
pub mod status;
pub mod streams;
pub mod verify;

mod output;
pub use output::{
    RecordJson, fmt_bytes, fmt_count, fmt_duration, fmt_mb_per_s, fmt_ranges, merge_ranges,
    now_unix_nanos, payload_text, print_stdout, record_json, utc_rfc3339,
};

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use echopost_client::{Client, ClientError};
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
/// returns the exit code. The message may quote a daemon's or a record's text: its
/// control characters are escaped.
pub fn finish(name: &str, result: CommandResult) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "echopost {name}: {}",
                crate::escape::terminal_safe(&e.message)
            );
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
    if let Some(reset) = &layout.cursor_reset {
        out.push(format!("rewrite the cursor: {reset}"));
    } else if !layout.cursor_exists {
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

#[cfg(test)]
mod tests {
    use super::*;

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
