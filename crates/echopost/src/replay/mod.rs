//! Replay to the main server: health probing, sinks, retries, dead letters.
//!
//! This module is the seam between the daemon's lifecycle and delivery. The daemon builds
//! a [`ReplayConfig`] from the command line, creates one shared [`Progress`], and spawns
//! [`run`]. `run` returns only on shutdown (Ok) or on a condition that must stop the daemon
//! (Err, mapped to an exit code by the daemon). The daemon decides when to exit on its own
//! by watching the log's backlog (`Log::stats().backlog_records == 0`) and the linger timer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use echopost_log::Log;
use tokio::sync::watch;

/// How replayed records are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Batches to `echopost.v1.Sink/Deliver`.
    Deliver,
    /// Each record replayed verbatim as the request the application would have sent.
    Forward,
}

/// Everything the replayer needs to know, resolved from the command line.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// `grpc://`, `grpcs://`, `http://` or `https://` URL of the main server.
    pub upstream: String,
    pub sink: SinkKind,
    /// Service name for `grpc.health.v1.Health/Check` (gRPC upstreams).
    pub health_service: String,
    /// URL probed with GET for HTTP upstreams (default `<upstream>/healthz`).
    pub health_url: Option<String>,
    /// Consecutive good probes needed before replay starts.
    pub healthy_after: u32,
    pub batch_records: usize,
    pub batch_bytes: usize,
    /// PEM file of a private CA for TLS upstreams.
    pub upstream_ca: Option<PathBuf>,
    /// Extra headers (name, value) added to every replayed request.
    pub upstream_headers: Vec<(String, String)>,
    /// Stable id of this EchoPost directory (`DeliverRequest.source`).
    pub source_id: String,
    /// The EchoPost directory (the dead-letter log lives below it).
    pub dir: PathBuf,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// Upstream state, shared with `Status` (values mirror `echopost.v1.UpstreamState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum UpstreamState {
    None = 1,
    Probing = 2,
    Replaying = 3,
    BackingOff = 4,
    Stopped = 5,
}

/// Live figures of the replayer, read by `Status` and the session log.
#[derive(Debug)]
pub struct Progress {
    state: AtomicU8,
    /// Records delivered by this session.
    pub delivered_records: AtomicU64,
    /// Payload bytes delivered by this session.
    pub delivered_bytes: AtomicU64,
    /// Records moved to the dead-letter log by this session.
    pub dead_lettered: AtomicU64,
    last_error: Mutex<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: AtomicU8::new(UpstreamState::None as u8),
            delivered_records: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }
}

impl Progress {
    pub fn state(&self) -> UpstreamState {
        match self.state.load(Ordering::Relaxed) {
            2 => UpstreamState::Probing,
            3 => UpstreamState::Replaying,
            4 => UpstreamState::BackingOff,
            5 => UpstreamState::Stopped,
            _ => UpstreamState::None,
        }
    }

    pub fn set_state(&self, s: UpstreamState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    pub fn set_last_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e.into();
        }
    }
}

/// Why replay stopped the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Storage corruption met while reading the backlog: exit code 4.
    #[error(transparent)]
    Corruption(echopost_log::Error),
    /// Fatal local I/O (e.g. acknowledging failed): exit code 5.
    #[error(transparent)]
    Storage(echopost_log::Error),
    /// The configuration cannot work (bad URL, unreadable CA file): exit code 2.
    #[error("{0}")]
    Config(String),
}

/// Replays the backlog until `shutdown` becomes true. See the module documentation.
pub async fn run(
    log: Arc<Log>,
    cfg: ReplayConfig,
    progress: Arc<Progress>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ReplayError> {
    // Replaced by the replay implementation; until then nothing is delivered and the
    // backlog is kept, which is safe (records are never dropped).
    let _ = (log, cfg);
    progress.set_state(UpstreamState::Probing);
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}
