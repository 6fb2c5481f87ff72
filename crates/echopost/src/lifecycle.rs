//! Startup order, signals, the linger exit, and shutdown.
//!
//! # Startup
//! 1. Create the directory (`0700`) and start the session log.
//! 2. Install the SIGTERM/SIGINT handlers (a signal during recovery then means "stop after
//!    recovery", not "die half-way").
//! 3. Open the log: take `DIR/LOCK` (held by a running instance → exit 3) and recover
//!    (corruption → exit 4). This happens *before* the socket exists, so no client can
//!    reach a daemon whose storage is not ready.
//! 4. Read or create the source id.
//! 5. Bind the socket (a live one → exit 3, a stale one is replaced) and serve at once.
//! 6. Start the replayer (with `--upstream`), the progress monitor and the linger watch.
//!
//! # Running
//! The daemon stops for one of: SIGTERM/SIGINT, the linger exit, a fatal storage error
//! reported by an append (exit 5, or 4 for corruption), the replayer returning an error
//! (Corruption → 4, Storage → 5, Config → 2), or the gRPC server failing (5).
//!
//! # The linger exit
//! When the backlog is empty and no append arrived for `--linger`, the watch closes the
//! [ingest gate](crate::gate), waits for appends in flight, and checks the backlog again.
//! If an append slipped in, it reopens the gate and keeps running; otherwise it asks to
//! stop with the gate still closed. So an append racing with the exit is either refused
//! with `UNAVAILABLE` or stored and acknowledged before the final check (which then
//! keeps the daemon up); it is never acknowledged and lost.
//!
//! # Shutdown (every reason)
//! Close the gate, wait for appends in flight (each is durable or failed when it
//! returns), end open streams, mark health NOT_SERVING, remove the socket file (only if
//! it is still ours), stop the server (connections get a grace period), stop the
//! replayer, then sync and close the log, which releases the lock. Every step and the
//! figures that matter go to the session log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost_log::{Log, LogStats};
use echopost_proto::ingest::echo_post_server::EchoPostServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::exit::{DaemonError, ExitCode};
use crate::gate::AppendGate;
use crate::limits::{MAX_MESSAGE_BYTES, OversizeLayer};
use crate::peer::{PeerCheckLayer, PeerPolicy};
use crate::replay::{self, Progress, ReplayError};
use crate::server::{EchoPostService, Ingest, StaticInfo};
use crate::session_log::{self, Session};
use crate::socket::{self, Previous, SocketError, SocketFile};
use crate::{platform, source_id};

/// How long shutdown waits for appends in flight. They end when the engine returns
/// (durable or failed), so this only matters for a device that stopped answering.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish after the server stops accepting.
pub const SERVER_GRACE: Duration = Duration::from_secs(3);
/// How long the replayer gets to stop after being told to.
pub const REPLAY_GRACE: Duration = Duration::from_secs(5);
/// How long closing the log waits for other holders of it to let go.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why the daemon stopped.
#[derive(Debug)]
enum StopReason {
    Signal(&'static str),
    Linger { idle: Duration },
    Storage(echopost_log::Error),
    Replay(ReplayError),
    Server(String),
}

impl StopReason {
    fn describe(&self) -> String {
        match self {
            StopReason::Signal(s) => format!("received {s}"),
            StopReason::Linger { idle } => format!(
                "backlog empty and no append for {} ms (--linger)",
                idle.as_millis()
            ),
            StopReason::Storage(e) => format!("storage failure: {e}"),
            StopReason::Replay(e) => format!("replay stopped: {e}"),
            StopReason::Server(e) => format!("gRPC server failed: {e}"),
        }
    }

    fn into_result(self, dir: &Path) -> Result<(), DaemonError> {
        match self {
            StopReason::Signal(_) | StopReason::Linger { .. } => Ok(()),
            StopReason::Storage(e) => Err(DaemonError::from_log(dir, e)),
            StopReason::Replay(e) => Err(DaemonError::from_replay(dir, e)),
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
    let session = session_log::init(&config.dir, &config.log_level);
    let started = Instant::now();
    match runtime.block_on(daemon(config, session.clone())) {
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

/// Creates the state directory `0700` if needed.
fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
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

fn warn_if_shared(dir: &Path) {
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

async fn daemon(mut config: Config, session: Session) -> Result<(), DaemonError> {
    let dir = config.dir.clone();
    tracing::info!(
        version = crate::VERSION,
        pid = std::process::id(),
        session = %session.id,
        dir = %dir.display(),
        socket = %config.socket.display(),
        sync = %config.sync_policy_name(),
        max_disk_bytes = config.log.max_disk_bytes.unwrap_or(0),
        max_record_bytes = config.max_record_bytes,
        linger_ms = config.linger.as_millis() as u64,
        upstream = config.replay.as_ref().map_or("", |r| r.upstream.as_str()),
        log_file = %session.log_file.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        "echopost starting"
    );
    warn_if_shared(&dir);

    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| DaemonError::io("cannot install the SIGTERM handler", e))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| DaemonError::io("cannot install the SIGINT handler", e))?;

    // Lock and recover before anything can connect.
    let log = open_log(&config).await?;

    let source = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || source_id::load_or_create(&d))
            .await
            .map_err(|e| DaemonError::Server(format!("source id task failed: {e}")))?
    };
    let source_id = match source {
        Ok((id, created)) => {
            if created {
                tracing::info!(source_id = %id, "created the directory's source id");
            }
            id
        }
        Err(e) => {
            let e = match e {
                source_id::SourceIdError::Invalid { .. } => DaemonError::Corruption {
                    dir: dir.clone(),
                    detail: e.to_string(),
                },
                source_id::SourceIdError::Io { op, path, source } => {
                    DaemonError::io(format!("cannot {op} {}", path.display()), source)
                }
            };
            close_log(log).await;
            return Err(e);
        }
    };
    if let Some(r) = config.replay.as_mut() {
        r.source_id = source_id.clone();
    }

    let (std_listener, socket_file, previous) = match socket::bind(&config.socket) {
        Ok(b) => b,
        Err(e) => {
            close_log(log).await;
            return Err(match e {
                SocketError::Live { path } => DaemonError::SocketInUse { path },
                SocketError::NotASocket { .. } => DaemonError::Config(e.to_string()),
                SocketError::Io {
                    context,
                    path,
                    source,
                } => DaemonError::io(format!("{context} {}", path.display()), source),
            });
        }
    };
    if previous == Previous::ReplacedStale {
        tracing::info!(socket = %config.socket.display(), "replaced a stale socket left by an earlier run");
    }
    let listener = match tokio::net::UnixListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = socket_file.remove_if_ours();
            close_log(log).await;
            return Err(DaemonError::io("cannot register the socket", e));
        }
    };

    let outcome = serve(
        config,
        session,
        Arc::clone(&log),
        listener,
        socket_file,
        source_id,
        &mut sigterm,
        &mut sigint,
    )
    .await;
    close_log_reporting(log, outcome, &dir).await
}

/// Opens the log on the blocking pool and reports what recovery did.
async fn open_log(config: &Config) -> Result<Arc<Log>, DaemonError> {
    let dir = config.dir.clone();
    let opts = config.log.clone();
    let opened = tokio::task::spawn_blocking(move || Log::open(&dir, opts))
        .await
        .map_err(|e| DaemonError::Server(format!("log open task failed: {e}")))?;
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
        duration_ms = r.duration.as_millis() as u64,
        "log recovered"
    );
    // A torn tail's details (file, byte range, dropped sequences) are logged by the engine
    // itself, into the same session log.
    Ok(Arc::new(log))
}

/// Serves until a stop reason, then shuts everything down except the log itself.
#[allow(clippy::too_many_arguments)]
async fn serve(
    config: Config,
    session: Session,
    log: Arc<Log>,
    listener: tokio::net::UnixListener,
    socket_file: SocketFile,
    source_id: String,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> StopReason {
    let started = Instant::now();
    let gate = AppendGate::new();
    let progress = Arc::new(Progress::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<echopost_log::Error>(4);

    let ingest = match Ingest::new(
        Arc::clone(&log),
        Arc::clone(&gate),
        config.max_record_bytes,
        Arc::clone(&progress),
        StaticInfo {
            dir: config.dir.display().to_string(),
            sync_policy: config.sync_policy_name(),
            upstream: config.replay.as_ref().map(|r| r.upstream.clone()),
            max_disk_bytes: config.log.max_disk_bytes.unwrap_or(0),
            session_id: session.id.clone(),
            source_id,
            started,
        },
        fatal_tx,
        shutdown_rx.clone(),
    ) {
        Ok(i) => Arc::new(i),
        Err(e) => return StopReason::Server(format!("cannot start the commit thread: {e}")),
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<EchoPostServer<EchoPostService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(echopost_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) =
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                let _ = socket_file.remove_if_ours();
                return StopReason::Server(format!("cannot build the reflection service: {e}"));
            }
        };

    let policy = Arc::new(PeerPolicy::new(
        platform::current_uid(),
        config.allowed_uids.iter().copied(),
    ));
    let incoming = socket::incoming(listener, Arc::clone(&policy));
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .layer(PeerCheckLayer::new(policy))
        .layer(OversizeLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            EchoPostServer::new(EchoPostService::new(Arc::clone(&ingest)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
    let mut server_task: JoinHandle<Result<(), tonic::transport::Error>> =
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = server_stop_rx.await;
        }));
    tracing::info!(
        socket = %config.socket.display(),
        own_uid = platform::current_uid(),
        allowed_uids = ?config.allowed_uids,
        startup_ms = started.elapsed().as_millis() as u64,
        "accepting records"
    );

    let mut replay_task: Option<JoinHandle<Result<(), ReplayError>>> =
        config.replay.clone().map(|cfg| {
            let stats = log.stats();
            tracing::info!(
                upstream = %cfg.upstream,
                sink = ?cfg.sink,
                backlog_records = stats.backlog_records,
                backlog_bytes = stats.backlog_bytes,
                first_seq = stats.first_unacked_seq,
                next_seq = stats.next_seq,
                "replay started"
            );
            tokio::spawn(replay::run(
                Arc::clone(&log),
                cfg,
                Arc::clone(&progress),
                shutdown_rx.clone(),
            ))
        });
    if config.replay.is_none() {
        tracing::info!("no --upstream: records are kept until a run with --upstream delivers them");
    }

    let monitor_task = tokio::spawn(monitor(
        Arc::clone(&log),
        Arc::clone(&progress),
        config.replay.is_some(),
    ));
    let (linger_tx, mut linger_rx) = mpsc::channel::<Duration>(1);
    let mut linger_task = tokio::spawn(linger_watch(
        Arc::clone(&log),
        Arc::clone(&gate),
        config.linger,
        linger_tx,
    ));

    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break StopReason::Signal("SIGTERM"),
            _ = sigint.recv() => break StopReason::Signal("SIGINT"),
            Some(e) = fatal_rx.recv() => break StopReason::Storage(e),
            Some(idle) = linger_rx.recv() => break StopReason::Linger { idle },
            res = &mut server_task => break StopReason::Server(match res {
                Ok(Ok(())) => "the server stopped unexpectedly".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }),
            res = join_opt(&mut replay_task) => {
                replay_task = None;
                match res {
                    Ok(Ok(())) => tracing::warn!("the replayer stopped on its own; records are kept for a later run"),
                    Ok(Err(e)) => break StopReason::Replay(e),
                    Err(e) => tracing::error!(error = %e, "the replayer task failed; records are kept for a later run"),
                }
            }
        }
    };

    // ---- shutdown ----
    let stats = log.stats();
    let level_error = !matches!(reason, StopReason::Signal(_) | StopReason::Linger { .. });
    if level_error {
        tracing::error!(
            reason = %reason.describe(),
            backlog_records = stats.backlog_records,
            next_seq = stats.next_seq,
            in_flight = gate.in_flight(),
            "shutting down"
        );
    } else {
        tracing::info!(
            reason = %reason.describe(),
            backlog_records = stats.backlog_records,
            next_seq = stats.next_seq,
            in_flight = gate.in_flight(),
            "shutting down"
        );
    }

    // The linger watch must not reopen the gate once shutdown has closed it.
    linger_task.abort();
    let _ = (&mut linger_task).await;
    gate.close();
    let drain_started = Instant::now();
    if tokio::time::timeout(DRAIN_TIMEOUT, gate.drained())
        .await
        .is_err()
    {
        tracing::error!(
            in_flight = gate.in_flight(),
            waited_ms = DRAIN_TIMEOUT.as_millis() as u64,
            "appends still in flight; the storage device is not answering"
        );
    } else {
        tracing::debug!(
            waited_ms = drain_started.elapsed().as_millis() as u64,
            "appends in flight finished"
        );
    }
    let _ = shutdown_tx.send(true);
    health
        .set_not_serving::<EchoPostServer<EchoPostService>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    match socket_file.remove_if_ours() {
        Ok(true) => tracing::info!(socket = %socket_file.path().display(), "socket removed"),
        Ok(false) => {
            tracing::warn!(socket = %socket_file.path().display(), "the socket file was replaced or removed by someone else; left alone")
        }
        Err(e) => {
            tracing::warn!(socket = %socket_file.path().display(), error = %e, "cannot remove the socket file")
        }
    }
    let _ = server_stop_tx.send(());
    if !server_task.is_finished() {
        match tokio::time::timeout(SERVER_GRACE, &mut server_task).await {
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    grace_ms = SERVER_GRACE.as_millis() as u64,
                    "client connections still open after the grace period; closing them"
                );
                server_task.abort();
                let _ = server_task.await;
            }
        }
    }

    let mut reason = reason;
    if let Some(mut task) = replay_task.take() {
        match tokio::time::timeout(REPLAY_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "the replayer reported an error while stopping");
                if matches!(reason, StopReason::Signal(_) | StopReason::Linger { .. }) {
                    reason = StopReason::Replay(e);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "the replayer task failed"),
            Err(_) => {
                tracing::warn!(
                    grace_ms = REPLAY_GRACE.as_millis() as u64,
                    "the replayer did not stop in time; abandoning it"
                );
                task.abort();
                let _ = task.await;
            }
        }
        tracing::info!(
            delivered_records = progress.delivered_records.load(Ordering::Relaxed),
            delivered_bytes = progress.delivered_bytes.load(Ordering::Relaxed),
            dead_lettered = progress.dead_lettered.load(Ordering::Relaxed),
            "replay stopped"
        );
    }
    monitor_task.abort();
    let _ = monitor_task.await;
    drop(ingest);
    reason
}

/// Awaits an optional task; pending forever when there is none.
async fn join_opt<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
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

fn log_final(stats: &LogStats, reason: &str) {
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
async fn close_log(mut log: Arc<Log>) -> Option<echopost_log::Error> {
    let deadline = Instant::now() + CLOSE_WAIT;
    let res = loop {
        match Arc::try_unwrap(log) {
            Ok(l) => break tokio::task::spawn_blocking(move || l.close()).await,
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

/// How often the monitor looks at replay progress.
const MONITOR_EVERY: Duration = Duration::from_millis(500);

/// Logs replay progress milestones: upstream state changes, and the backlog becoming
/// empty. (Delivery rates for `Status` come from [`Progress::snapshot`].)
async fn monitor(log: Arc<Log>, progress: Arc<Progress>, replaying: bool) {
    if !replaying {
        return;
    }
    let mut tick = tokio::time::interval(MONITOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_state = progress.state();
    let mut last_backlog: Option<u64> = None;
    let mut drain_started = Instant::now();
    loop {
        tick.tick().await;
        let delivered = progress.delivered_records.load(Ordering::Relaxed);
        let delivered_bytes = progress.delivered_bytes.load(Ordering::Relaxed);
        let state = progress.state();
        if state != last_state {
            tracing::info!(from = ?last_state, to = ?state, detail = %progress.last_error(), "upstream state changed");
            last_state = state;
        }
        let l = Arc::clone(&log);
        let Ok(stats) = tokio::task::spawn_blocking(move || l.stats()).await else {
            continue;
        };
        match last_backlog {
            Some(prev) if prev > 0 && stats.backlog_records == 0 => {
                tracing::info!(
                    delivered_records = delivered,
                    delivered_bytes,
                    dead_lettered = progress.dead_lettered.load(Ordering::Relaxed),
                    acked = stats.acked,
                    duration_ms = drain_started.elapsed().as_millis() as u64,
                    "replay complete: everything stored has been delivered"
                );
            }
            Some(0) | None if stats.backlog_records > 0 => drain_started = Instant::now(),
            _ => {}
        }
        last_backlog = Some(stats.backlog_records);
    }
}

/// The linger exit (see the module documentation). Sends the idle time once the daemon
/// should exit, leaving the gate closed.
async fn linger_watch(
    log: Arc<Log>,
    gate: Arc<AppendGate>,
    linger: Duration,
    exit: mpsc::Sender<Duration>,
) {
    let tick = (linger / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let backlog = |log: &Arc<Log>| {
        let l = Arc::clone(log);
        async move {
            tokio::task::spawn_blocking(move || l.stats().backlog_records)
                .await
                .unwrap_or(u64::MAX)
        }
    };
    loop {
        tokio::time::sleep(tick).await;
        let idle = match gate.idle_for() {
            Some(idle) if idle >= linger => idle,
            _ => continue,
        };
        if backlog(&log).await != 0 {
            continue;
        }
        tracing::info!(
            idle_ms = idle.as_millis() as u64,
            "linger time reached with an empty backlog; closing the ingest gate"
        );
        if try_linger_exit(&log, &gate).await {
            let _ = exit.send(idle).await;
            return;
        }
        tracing::info!("an append arrived as the linger exit began; staying up");
    }
}

/// The decisive step of the linger exit: closes the gate, waits for appends in flight,
/// and re-checks the backlog. Returns true (gate left closed) if the daemon may exit;
/// otherwise reopens the gate and returns false.
async fn try_linger_exit(log: &Arc<Log>, gate: &AppendGate) -> bool {
    gate.close();
    gate.drained().await;
    let l = Arc::clone(log);
    let backlog = tokio::task::spawn_blocking(move || l.stats().backlog_records)
        .await
        .unwrap_or(u64::MAX);
    if backlog == 0 {
        return true;
    }
    gate.reopen();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_log::LogOptions;

    fn open() -> (tempfile::TempDir, Arc<Log>) {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
        (tmp, Arc::new(log))
    }

    async fn wait_closed(gate: &AppendGate) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.is_open() {
            assert!(Instant::now() < deadline, "the gate was never closed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linger_exit_is_called_off_when_an_append_slips_in() {
        let (_tmp, log) = open();
        let gate = AppendGate::new();
        // An append got its pass just before the exit began and is still running.
        let pass = gate.enter().unwrap();
        let check = tokio::spawn({
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            async move { try_linger_exit(&log, &gate).await }
        });
        wait_closed(&gate).await;
        // Appends arriving now are refused...
        assert!(gate.enter().is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !check.is_finished(),
            "did not wait for the append in flight"
        );
        // ...while the one in flight is stored (and acknowledged) before the re-check.
        log.append(&[b"slipped in"]).unwrap();
        drop(pass);
        assert!(!check.await.unwrap(), "exited with an acknowledged record");
        assert!(
            gate.is_open(),
            "the gate must reopen when the exit is called off"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn linger_exit_proceeds_with_the_gate_closed_when_nothing_was_stored() {
        let (_tmp, log) = open();
        let gate = AppendGate::new();
        // An append in flight that fails (stores nothing) does not stop the exit.
        let pass = gate.enter().unwrap();
        let check = tokio::spawn({
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            async move { try_linger_exit(&log, &gate).await }
        });
        wait_closed(&gate).await;
        drop(pass);
        assert!(check.await.unwrap());
        assert!(!gate.is_open());
        assert!(
            gate.enter().is_err(),
            "appends after the decision must be refused"
        );
    }
}
