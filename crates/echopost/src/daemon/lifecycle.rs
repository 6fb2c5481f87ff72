//! Startup order, the running daemon, and the numbered shutdown.
//!
//! [`run`] reads top to bottom: open the log, `Services::start`, `Services::serve`
//! until a `StopReason`, `Services::shutdown`, close the log. What the steps started
//! travels in one `Services` value, so no step takes a long argument list.
//!
//! # Startup
//! 1. Create the directory (`0700`) and start logging (stderr; the session log's lines
//!    are held until step 3 succeeds, see [`session_log`]).
//! 2. Install the SIGTERM/SIGINT handlers (a signal during recovery then means "stop after
//!    recovery", not "die half-way").
//! 3. Open the log: take `DIR/LOCK` (held by a running instance → exit 3) and recover
//!    (corruption → exit 4). This happens *before* the socket exists, so no client can
//!    reach a daemon whose storage is not ready. With the lock held, the session log file
//!    is created (older ones beyond `--keep-session-logs` are deleted); a start that lost
//!    the lock leaves no file.
//! 4. Read or create the source id.
//! 5. Bind the socket (a live one → exit 3, a stale one is replaced), start the commit
//!    thread, and serve at once.
//! 6. Start the replayer (with `--upstream`), the progress [monitor](super::monitor) and
//!    the [linger watch](super::linger).
//!
//! # Running
//! The daemon stops for one of: SIGTERM/SIGINT, the linger exit, a fatal storage error
//! reported by an append (exit 5, or 4 for corruption), the replayer returning an error
//! (Corruption → 4, Storage → 5, Config → 2), the commit thread dying (5), or the gRPC
//! server failing (5). Each reason maps to its exit code in [`super::exit`].
//!
//! # Shutdown (every reason), in `Services::shutdown`
//! 1. Stop the linger watch (it must not reopen the gate).
//! 2. Close the gate and wait for appends in flight (each is durable or failed when it
//!    returns).
//! 3. Tell open streams, reads and the replayer to stop; mark health NOT_SERVING.
//! 4. Remove the socket file (only if it is still ours).
//! 5. Stop the server (connections get a grace period).
//! 6. Stop the replayer (a grace period) and report what it delivered.
//! 7. Stop the monitor; release the ingest path, which ends the commit thread.
//! 8. Sync and close the log, which releases the lock ([`run`]).
//!
//! Every step and the figures that matter go to the session log.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_log::Log;
use tokio::signal::unix::{SignalKind, signal};

use super::exit::{DaemonError, ExitCode};
use super::services::Services;
use super::session_log::{self, Session};
use super::store::{close_log, log_final, open_log, prepare_dir, warn_if_shared};
use crate::config::Config;
use crate::replay::ReplayError;

/// How long shutdown waits for appends in flight. They end when the engine returns
/// (durable or failed), so this only matters for a device that stopped answering.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after the server stops accepting.
pub const SERVER_GRACE: Duration = Duration::from_secs(3);
/// How long the replayer gets to stop after being told to.
pub const REPLAY_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for the commit thread to end once the ingest path is released.
pub const COMMITTER_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon stopped.
#[derive(Debug)]
pub(super) enum StopReason {
    Signal(&'static str),
    Linger {
        idle: Duration,
    },
    Storage(echopost_log::Error),
    Replay(ReplayError),
    /// The commit thread ended while the daemon was running (it panicked).
    Committer(String),
    Server(String),
}

impl StopReason {
    pub(super) fn describe(&self) -> String {
        match self {
            StopReason::Signal(s) => format!("received {s}"),
            StopReason::Linger { idle } => format!(
                "backlog empty and no append for {} ms (--linger)",
                idle.as_millis()
            ),
            StopReason::Storage(e) => format!("storage failure: {e}"),
            StopReason::Replay(e) => format!("replay stopped: {e}"),
            StopReason::Committer(e) => format!("the commit thread stopped: {e}"),
            StopReason::Server(e) => format!("gRPC server failed: {e}"),
        }
    }

    /// A clean stop: asked for, or nothing left to do.
    pub(super) fn is_clean(&self) -> bool {
        matches!(self, StopReason::Signal(_) | StopReason::Linger { .. })
    }

    pub(super) fn into_result(self, dir: &Path) -> Result<(), DaemonError> {
        match self {
            StopReason::Signal(_) | StopReason::Linger { .. } => Ok(()),
            StopReason::Storage(e) => Err(DaemonError::from_log(dir, e)),
            StopReason::Replay(e) => Err(DaemonError::from_replay(dir, e)),
            StopReason::Committer(e) => Err(DaemonError::Internal(format!(
                "the commit thread stopped unexpectedly ({e}); appends could no longer be stored"
            ))),
            StopReason::Server(e) => Err(DaemonError::Server(e)),
        }
    }
}
/// Runs the daemon to completion on `runtime` and returns the exit code. Everything,
/// including the final error, is reported through the session log (and stderr); only
/// failures before the log exists are printed directly.
pub fn run(config: Config, runtime: &tokio::runtime::Runtime) -> ExitCode {
    if let Err(e) = prepare_dir(&config.dir) {
        eprintln!("echopost: {e}");
        return e.exit_code();
    }
    let dir = config.dir.clone();
    let keep = config.keep_session_logs;
    let mut session = session_log::init(&config.log_level);
    let started = Instant::now();
    match runtime.block_on(daemon(config, &mut session)) {
        Ok(()) => {
            tracing::info!(
                session = %session.id,
                exit_code = 0,
                uptime_ms = started.elapsed().as_millis() as u64,
                "echopost exited cleanly"
            );
            ExitCode::Clean
        }
        Err(e) => {
            let code = e.exit_code();
            if session.log_file.is_none() {
                if code == ExitCode::Locked {
                    // Another daemon owns the directory: leave no file in it.
                    session.discard_file();
                } else {
                    session.attach_file(&dir, keep);
                }
            }
            tracing::error!(
                session = %session.id,
                exit_code = code.code(),
                uptime_ms = started.elapsed().as_millis() as u64,
                "echopost exited with an error: {e}"
            );
            code
        }
    }
}
async fn daemon(config: Config, session: &mut Session) -> Result<(), DaemonError> {
    let dir = config.dir.clone();
    log_start(&config, session);
    warn_if_shared(&dir);
    let mut signals = Signals::install()?;
    // Lock and recover before anything can connect.
    let log = open_log(&config).await?;
    // The directory is ours: its session log may exist now.
    session.attach_file(&dir, config.keep_session_logs);
    let services = match Services::start(config, session.clone(), Arc::clone(&log)).await {
        Ok(s) => s,
        Err(e) => {
            close_log(log).await;
            return Err(e);
        }
    };
    let (services, reason) = services.serve(&mut signals).await;
    let reason = services.shutdown(reason).await;
    close_log_reporting(log, reason, &dir).await
}

fn log_start(config: &Config, session: &Session) {
    tracing::info!(
        version = crate::VERSION,
        pid = std::process::id(),
        session = %session.id,
        dir = %config.dir.display(),
        socket = %config.socket.display(),
        sync = %config.sync_policy_name(),
        max_disk_bytes = config.log.max_disk_bytes.unwrap_or(0),
        max_record_bytes = config.max_record_bytes,
        linger_ms = config.linger.as_millis() as u64,
        upstream = config.replay.as_ref().map_or("", |r| r.upstream().display.as_str()),
        keep_session_logs = config.keep_session_logs,
        "echopost starting"
    );
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        Ok(Signals {
            term: signal(SignalKind::terminate())
                .map_err(|e| DaemonError::io("cannot install the SIGTERM handler", e))?,
            int: signal(SignalKind::interrupt())
                .map_err(|e| DaemonError::io("cannot install the SIGINT handler", e))?,
        })
    }
}
/// The stop signals, installed before the log is opened.
pub(super) struct Signals {
    pub(super) term: tokio::signal::unix::Signal,
    pub(super) int: tokio::signal::unix::Signal,
}

/// Closes the log (sync, release the lock) and folds its result into the exit outcome.
async fn close_log_reporting(
    log: Arc<Log>,
    reason: StopReason,
    dir: &Path,
) -> Result<(), DaemonError> {
    let description = reason.describe();
    let stats = log.stats();
    let closed = close_log(log).await;
    log_final(&stats, &description);
    match (reason.into_result(dir), closed) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(e)) => Err(DaemonError::from_log(dir, e)),
        (Ok(()), None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit thread that died stops the daemon with a message that says so and exit
    /// code 5, not as a clean stop (issue: a dying committer is fatal, not silent).
    #[test]
    fn a_dead_commit_thread_is_a_fatal_stop() {
        let reason = StopReason::Committer("injected committer failure".into());
        assert!(!reason.is_clean());
        assert!(reason.describe().contains("commit thread"));
        let e = reason
            .into_result(Path::new("/d"))
            .expect_err("must not be a clean exit");
        assert_eq!(e.exit_code(), ExitCode::Fatal);
        let msg = e.to_string();
        assert!(msg.contains("commit thread"), "{msg}");
        assert!(msg.contains("injected committer failure"), "{msg}");
        assert!(!msg.contains("gRPC server"), "{msg}");
    }
}
