//! What `echopost run` starts once the log is open, and the order it stops it in.
//!
//! `Services::start`, `Services::serve` and `Services::shutdown` are the numbered
//! startup and shutdown steps of the [lifecycle](super::lifecycle); one value carries what
//! was started from one step to the next.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost_log::Log;
use echopost_proto::ingest::echo_post_server::EchoPostServer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::exit::DaemonError;
use super::lifecycle::{
    COMMITTER_GRACE, DRAIN_TIMEOUT, REPLAY_GRACE, SERVER_GRACE, Signals, StopReason,
};
use super::linger::linger_watch;
use super::monitor::monitor;
use super::peer::{PeerCheckLayer, PeerPolicy};
use super::session_log::Session;
use super::socket::{self, Previous, SocketAccess, SocketError, SocketFile};
use super::{activation, platform, source_id};
use crate::config::Config;
use crate::disk_quota::DiskQuota;
use crate::front_door::{self, Capture, FrontDoorLayer};
use crate::ingest::gate::AppendGate;
use crate::ingest::limits::{MAX_MESSAGE_BYTES, OversizeLayer};
use crate::ingest::{Ingest, RecordRules};
use crate::replay::{self, ForwardKind, Progress, ReplayError};
use crate::service::{EchoPostService, StaticInfo, StatusReporter};

/// Reads or creates the directory's source id on the blocking pool.
async fn load_source_id(dir: &Path) -> Result<String, DaemonError> {
    let d = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || source_id::load_or_create(&d))
        .await
        .map_err(|e| DaemonError::Internal(format!("the source id task failed: {e}")))?;
    match loaded {
        Ok((id, created)) => {
            if created {
                tracing::info!(source_id = %id, "created the directory's source id");
            }
            Ok(id)
        }
        Err(e) => Err(match e {
            source_id::SourceIdError::Invalid { .. } => DaemonError::Corruption {
                dir: dir.to_path_buf(),
                detail: e.to_string(),
            },
            source_id::SourceIdError::Io { op, path, source } => {
                DaemonError::io(format!("cannot {op} {}", path.display()), source)
            }
        }),
    }
}

/// Binds the socket with the permissions the peer policy needs and registers it with the
/// runtime.
fn bind_socket(
    path: &Path,
    access: &SocketAccess,
) -> Result<(tokio::net::UnixListener, SocketFile), DaemonError> {
    let (std_listener, socket_file, previous) =
        socket::bind(path, access).map_err(|e| match e {
            SocketError::Live { path } => DaemonError::SocketInUse { path },
            SocketError::NotASocket { .. } => DaemonError::Config(e.to_string()),
            SocketError::Io {
                context,
                path,
                source,
            } => DaemonError::io(format!("{context} {}", path.display()), source),
        })?;
    if previous == Previous::ReplacedStale {
        tracing::info!(socket = %path.display(), "replaced a stale socket left by an earlier run");
    }
    match tokio::net::UnixListener::from_std(std_listener) {
        Ok(l) => Ok((l, socket_file)),
        Err(e) => {
            let _ = socket_file.remove_if_ours();
            Err(DaemonError::io("cannot register the socket", e))
        }
    }
}

/// The listening socket: the one a service manager passed ([`activation`]; its file is the
/// manager's, `None` here), or one bound at `path`.
fn open_listener(
    path: &Path,
    access: &SocketAccess,
) -> Result<(tokio::net::UnixListener, Option<SocketFile>), DaemonError> {
    match activation::inherited(|k| std::env::var(k).ok()).map_err(DaemonError::Config)? {
        Some((std_listener, manager)) => {
            let at = std_listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "an unnamed socket".to_owned());
            tracing::info!(socket = %at, ?manager, "using the socket passed by the service manager (socket activation)");
            let l = tokio::net::UnixListener::from_std(std_listener)
                .map_err(|e| DaemonError::io("cannot register the socket", e))?;
            Ok((l, None))
        }
        None => bind_socket(path, access).map(|(l, f)| (l, Some(f))),
    }
}

/// Removes the socket file this process bound, if it bound one (on a failed start).
fn remove_bound(socket_file: &Option<SocketFile>) {
    if let Some(f) = socket_file {
        let _ = f.remove_if_ours();
    }
}

/// Everything [`Services::start`] started, owned until [`Services::shutdown`].
pub(super) struct Services {
    log: Arc<Log>,
    gate: Arc<AppendGate>,
    progress: Arc<Progress>,
    /// Held here so that the commit thread lives exactly as long as the services.
    ingest: Arc<Ingest>,
    /// Ends when the commit thread ends: `Err` with the panic message if it died.
    committer: JoinHandle<Result<(), String>>,
    health: tonic_health::server::HealthReporter,
    /// `None` when the socket came from a service manager (never removed by us).
    socket_file: Option<SocketFile>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    server_stop: oneshot::Sender<()>,
    replay: Option<JoinHandle<Result<(), ReplayError>>>,
    monitor: JoinHandle<()>,
    linger: JoinHandle<()>,
    linger_rx: mpsc::Receiver<Duration>,
    fatal_rx: mpsc::Receiver<echopost_log::Error>,
    /// `true` once the daemon has decided to exit: streams, reads and the replayer stop.
    shutdown_tx: watch::Sender<bool>,
}

impl Services {
    /// Startup steps 4 to 6 (see the module documentation), over an opened `log`. On
    /// error nothing is left running and the socket file is removed; the caller closes
    /// the log.
    pub(super) async fn start(
        mut config: Config,
        session: Session,
        log: Arc<Log>,
    ) -> Result<Services, DaemonError> {
        let started = Instant::now();
        // 4. The source id.
        let source_id = load_source_id(&config.dir).await?;
        config.replay = config
            .replay
            .take()
            .map(|r| r.with_source_id(source_id.clone()));

        // The stream and producer state (before the socket: nothing to clean up on error).
        let streams = super::store::recover_streams(&config, &log).await?;

        // 5. The socket, the ingest path and the server.
        let access = SocketAccess::for_policy(platform::current_uid(), &config.allowed_uids);
        let (listener, socket_file) = open_listener(&config.socket, &access)?;
        let gate = AppendGate::new();
        let progress = Arc::new(Progress::default());
        let quota = Arc::new(DiskQuota::new(
            config.log.max_disk_bytes,
            Arc::clone(&session.log_bytes),
        ));
        match crate::replay::dead_letters::figures(&config.dir) {
            Ok(f) => quota.set_dead_letters(f.records, f.bytes),
            Err(e) => tracing::warn!(error = %e, "cannot read the dead-letter log's size"),
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (fatal_tx, fatal_rx) = mpsc::channel::<echopost_log::Error>(4);
        let (ingest, committer) = match Ingest::new(
            Arc::clone(&log),
            streams,
            Arc::clone(&gate),
            Arc::clone(&quota),
            RecordRules {
                max_record_bytes: config.max_record_bytes,
                forward: config.replay.as_ref().and_then(ForwardKind::of),
            },
            fatal_tx,
        ) {
            Ok((i, c)) => (Arc::new(i), c),
            Err(e) => {
                remove_bound(&socket_file);
                return Err(DaemonError::io("cannot start the commit thread", e));
            }
        };
        let committer = tokio::spawn(committer.exited());
        let status = Arc::new(StatusReporter::new(
            Arc::clone(&log),
            Arc::clone(&progress),
            Arc::clone(&quota),
            StaticInfo {
                dir: config.dir.display().to_string(),
                dir_path: config.dir.clone(),
                sync_policy: config.sync_policy_name(),
                upstream: config.replay.as_ref().map(|r| r.upstream().display.clone()),
                max_disk_bytes: config.log.max_disk_bytes.unwrap_or(0),
                session_id: session.id.clone(),
                source_id,
                started,
            },
        ));
        let service = EchoPostService::new(Arc::clone(&ingest), status, shutdown_rx.clone());
        let (health, server, server_stop) = match start_server(
            &config,
            listener,
            service,
            Arc::clone(&ingest),
            shutdown_rx.clone(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                remove_bound(&socket_file);
                return Err(e);
            }
        };
        tracing::info!(
            socket = %config.socket.display(),
            own_uid = platform::current_uid(),
            allowed_uids = ?config.allowed_uids,
            socket_mode = format!("{:o}", access.socket_mode()),
            startup_ms = started.elapsed().as_millis() as u64,
            "accepting records"
        );

        // 6. The replayer, the monitor and the linger watch.
        let replay = config.replay.clone().map(|cfg| {
            let stats = log.stats();
            tracing::info!(
                upstream = %cfg.upstream().display,
                sink = ?cfg.sink(),
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
                Arc::clone(&quota),
                shutdown_rx.clone(),
            ))
        });
        if replay.is_none() {
            tracing::info!(
                "no --upstream: records are kept until a run with --upstream delivers them"
            );
        }
        let monitor = tokio::spawn(monitor(
            Arc::clone(&log),
            Arc::clone(&progress),
            config.replay.is_some(),
        ));
        let (linger_tx, linger_rx) = mpsc::channel::<Duration>(1);
        let linger = tokio::spawn(linger_watch(
            Arc::clone(&log),
            Arc::clone(&gate),
            config.linger,
            linger_tx,
        ));
        Ok(Services {
            log,
            gate,
            progress,
            ingest,
            committer,
            health,
            socket_file,
            server,
            server_stop,
            replay,
            monitor,
            linger,
            linger_rx,
            fatal_rx,
            shutdown_tx,
        })
    }

    /// Runs until the first stop reason.
    pub(super) async fn serve(mut self, signals: &mut Signals) -> (Services, StopReason) {
        let reason = loop {
            tokio::select! {
                _ = signals.term.recv() => break StopReason::Signal("SIGTERM"),
                _ = signals.int.recv() => break StopReason::Signal("SIGINT"),
                Some(e) = self.fatal_rx.recv() => break StopReason::Storage(e),
                Some(idle) = self.linger_rx.recv() => break StopReason::Linger { idle },
                res = &mut self.committer => break StopReason::Committer(match res {
                    Ok(Ok(())) => "it ended while the daemon was running".to_owned(),
                    Ok(Err(panic)) => panic,
                    Err(e) => e.to_string(),
                }),
                res = &mut self.server => break StopReason::Server(match res {
                    Ok(Ok(())) => "the server stopped unexpectedly".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                }),
                res = join_opt(&mut self.replay) => {
                    self.replay = None;
                    match res {
                        Ok(Ok(())) => tracing::warn!("the replayer stopped on its own; records are kept for a later run"),
                        Ok(Err(e)) => break StopReason::Replay(e),
                        Err(e) => tracing::error!(error = %e, "the replayer task failed; records are kept for a later run"),
                    }
                }
            }
        };
        (self, reason)
    }

    /// Shutdown steps 1 to 7 (see the module documentation). Returns the stop reason,
    /// replaced by the replayer's error if a clean stop met one.
    pub(super) async fn shutdown(self, reason: StopReason) -> StopReason {
        let Services {
            log,
            gate,
            progress,
            ingest,
            committer,
            health,
            socket_file,
            mut server,
            server_stop,
            replay,
            monitor,
            mut linger,
            linger_rx: _,
            fatal_rx: _,
            shutdown_tx,
        } = self;
        let stats = log.stats();
        if reason.is_clean() {
            tracing::info!(
                reason = %reason.describe(),
                backlog_records = stats.backlog_records,
                next_seq = stats.next_seq,
                in_flight = gate.in_flight(),
                "shutting down"
            );
        } else {
            tracing::error!(
                reason = %reason.describe(),
                backlog_records = stats.backlog_records,
                next_seq = stats.next_seq,
                in_flight = gate.in_flight(),
                "shutting down"
            );
        }

        // 1. The linger watch must not reopen the gate once shutdown has closed it.
        linger.abort();
        let _ = (&mut linger).await;

        // 2. No new appends; wait for those in flight.
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

        // 3. Streams, reads and the replayer stop; health says so.
        let _ = shutdown_tx.send(true);
        health
            .set_not_serving::<EchoPostServer<EchoPostService>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;

        // 4. The socket file.
        // An activated socket is the service manager's: it keeps listening.
        if let Some(socket_file) = &socket_file {
            match socket_file.remove_if_ours() {
                Ok(true) => {
                    tracing::info!(socket = %socket_file.path().display(), "socket removed")
                }
                Ok(false) => {
                    tracing::warn!(socket = %socket_file.path().display(), "the socket file was replaced or removed by someone else; left alone")
                }
                Err(e) => {
                    tracing::warn!(socket = %socket_file.path().display(), error = %e, "cannot remove the socket file")
                }
            }
        }

        // 5. The server, with a grace period for open connections.
        let _ = server_stop.send(());
        if !server.is_finished()
            && tokio::time::timeout(SERVER_GRACE, &mut server)
                .await
                .is_err()
        {
            tracing::warn!(
                grace_ms = SERVER_GRACE.as_millis() as u64,
                "client connections still open after the grace period; closing them"
            );
            server.abort();
            let _ = server.await;
        }

        // 6. The replayer.
        let mut reason = reason;
        if let Some(task) = replay
            && let Some(e) = stop_replay(task, &progress).await
            && reason.is_clean()
        {
            reason = StopReason::Replay(e);
        }

        // 7. The monitor, and the ingest path with its commit thread.
        monitor.abort();
        let _ = monitor.await;
        drop(ingest);
        if !committer.is_finished() {
            match tokio::time::timeout(COMMITTER_GRACE, committer).await {
                Ok(Ok(Err(panic))) => {
                    tracing::error!(error = %panic, "the commit thread failed while stopping")
                }
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    grace_ms = COMMITTER_GRACE.as_millis() as u64,
                    "the commit thread is still busy (a stream task holds the ingest path); continuing"
                ),
            }
        }
        reason
    }
}

/// Builds the gRPC server (health, reflection, the EchoPost service behind the peer check
/// and the size limit, the front door in front of it all) and serves `listener` on a task.
async fn start_server(
    config: &Config,
    listener: tokio::net::UnixListener,
    service: EchoPostService,
    ingest: Arc<Ingest>,
    shutdown: watch::Receiver<bool>,
) -> Result<
    (
        tonic_health::server::HealthReporter,
        JoinHandle<Result<(), tonic::transport::Error>>,
        oneshot::Sender<()>,
    ),
    DaemonError,
> {
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
                return Err(DaemonError::Server(format!(
                    "cannot build the reflection service: {e}"
                )));
            }
        };
    let policy = Arc::new(PeerPolicy::new(
        platform::current_uid(),
        config.allowed_uids.iter().copied(),
    ));
    let door = Arc::new(config.front_door.clone());
    let capture = Arc::new(Capture::new(
        ingest,
        Arc::clone(&policy),
        config.max_record_bytes,
    ));
    log_front_door(config);
    let incoming: Incoming = if door.http {
        Box::pin(front_door::listener::incoming(
            listener,
            Arc::clone(&policy),
            Arc::clone(&capture),
            shutdown,
        ))
    } else {
        Box::pin(socket::incoming(listener, Arc::clone(&policy)))
    };
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .layer(FrontDoorLayer::new(door, capture))
        .layer(PeerCheckLayer::new(policy))
        .layer(OversizeLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(EchoPostServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = server_stop_rx.await;
    }));
    Ok((health, server, server_stop_tx))
}

/// Accepted connections for tonic.
type Incoming = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = std::io::Result<socket::PeerStream>> + Send + 'static>,
>;

/// Says what the front door captures, and warns when the upstream cannot take it.
fn log_front_door(config: &Config) {
    let door = &config.front_door;
    if !door.is_open() {
        return;
    }
    let patterns: Vec<String> = door.grpc.iter().map(|p| p.to_string()).collect();
    tracing::info!(accept_grpc = ?patterns, accept_http = door.http, "front door open: unmodified clients' requests are stored");
    let forward = config.replay.as_ref().and_then(ForwardKind::of);
    if forward == Some(ForwardKind::Grpc) && door.http {
        tracing::warn!(
            "--accept-http with a gRPC upstream: HTTP requests cannot be replayed as gRPC calls and are refused with 400"
        );
    }
    if forward == Some(ForwardKind::Http) && !door.grpc.is_empty() {
        tracing::warn!(
            "--accept-grpc with an HTTP upstream: gRPC calls cannot be replayed as HTTP requests and are refused with INVALID_ARGUMENT"
        );
    }
}

/// Tells nothing new (the shutdown watch already did), waits for the replayer within
/// [`REPLAY_GRACE`], and reports what it delivered. Returns its error, if it had one.
async fn stop_replay(
    mut task: JoinHandle<Result<(), ReplayError>>,
    progress: &Progress,
) -> Option<ReplayError> {
    let mut error = None;
    match tokio::time::timeout(REPLAY_GRACE, &mut task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "the replayer reported an error while stopping");
            error = Some(e);
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
    error
}

/// Awaits an optional task; pending forever when there is none.
async fn join_opt<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}
