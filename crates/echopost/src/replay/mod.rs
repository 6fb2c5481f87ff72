//! Replay to the main server: health probing, sinks, retries, dead letters.
//!
//! This module is the seam between the daemon's lifecycle and delivery. The daemon gets a
//! validated [`ReplayConfig`] from `crate::config` (every setting is checked there, once),
//! creates one shared [`Progress`], and spawns
//! [`run`]. `run` returns only on shutdown (Ok) or on a condition that must stop the daemon
//! (Err, mapped to an exit code by the daemon). The daemon decides when to exit on its own
//! by watching the log's backlog (`Log::stats().backlog_records == 0`) and the linger timer.
//!
//! # State machine
//! ```text
//!            ┌──────────── transient failure (after backoff) ───────────┐
//!            v                                                          │
//!  start ─> PROBING ── N consecutive good probes ──> REPLAYING ──> BACKING_OFF
//!            ^  │ bad probe: backoff + jitter            │  ^
//!            └──┘                                        │  └── idle: wait for new records
//!                                                        └──> STOPPED (storage corruption)
//! ```
//! * **Probing** (`health`): gRPC upstreams must answer `grpc.health.v1.Health/Check` with
//!   `SERVING`; HTTP upstreams must answer `GET <health-url>` with 2xx. Failed probes back
//!   off exponentially with full jitter ([`backoff`]). `healthy_after` consecutive good
//!   probes, spaced by [`HEALTHY_PROBE_INTERVAL`], are needed to start replaying.
//! * **Replaying**: the oldest undelivered records are read from the log ([`feed`]) and
//!   sent — as `Sink/Deliver` batches (`deliver`) or one verbatim request per record
//!   (`forward_http`, `forward_grpc`). The next batch or request is sent only after the
//!   previous one succeeded, unless `--in-flight` allows more at once.
//! * **Backing off**: a transient or server-level failure ([`classify`]) waits
//!   (exponential backoff with full jitter, at least the server's `Retry-After`), then goes
//!   back to probing; once healthy again the *same* records are sent again. The backoff
//!   starts over after any success, in every sink.
//! * **Stopped**: storage corruption; [`run`] returns [`ReplayError::Corruption`].
//!
//! # Invariants
//! * **Order.** Records are sent in sequence order. With `--in-flight 1` (the default)
//!   there is at most one request in flight; a record is sent only after every record
//!   before it was delivered or dead-lettered, so they reach the main server in order.
//!   With `--in-flight N` up to N requests (verbatim records, or `Deliver` batches) await
//!   their answers at once, counted from the oldest unanswered one, so the main server may
//!   receive them in any order within that window; the first failure closes the window
//!   until a request succeeds again (see `driver/window.rs`). Across restarts the engine's
//!   reader starts at the oldest unacknowledged record, so order holds across crashes too
//!   (with re-deliveries).
//! * **Acknowledge only what is done.** The engine's cursor (`Log::ack`) only ever covers
//!   records the main server accepted, or records durably written to the dead-letter log
//!   ([`dead_letters`]) *before* the ack. Acks are batched (every [`ACK_INTERVAL`] or
//!   [`ACK_BYTES`]) and always flushed before idling, before backing off, on shutdown and
//!   before returning an error. A crash between delivery and ack only re-delivers.
//! * **Never past damage.** A read that meets corruption (bad checksum, missing segment,
//!   a record that is not a valid `echopost.v1.Record`) first delivers and acks the
//!   records before the damage, then stops; nothing at or after the damage is acked, so
//!   the engine deletes nothing the operator may still want to salvage.
//! * **Stable identity.** Every delivered record carries its engine sequence; in `deliver`
//!   mode `(source_id, sequence)` is a dedupe key for the receiver.
//!
//! # Failure model
//! The principle: a record goes to the dead-letter log only when there is evidence that
//! the record, not the server, is the problem. [`classify`] holds the one table (four
//! classes; operators move statuses with `--status-class`); the driver acts on it:
//!
//! | what happens | class | what the replayer does |
//! |---|---|---|
//! | connection refused/reset, timeout, gRPC `UNAVAILABLE`…, HTTP 408/429/5xx | transient | back off, re-probe, resend. A batch failing 3 times (`SPLIT_AFTER`) in a row (each after a good probe) is sent record by record; a record failing 3 times (`SUSPECT_AFTER`) alone is dead-lettered only if the main server then accepts the *next* record (proof it works); otherwise the outage is server-wide and nothing is dead-lettered |
//! | HTTP 3xx/401/403/404/405/407/411/426, gRPC `UNAUTHENTICATED`/`PERMISSION_DENIED`/`UNIMPLEMENTED`, TLS failures | server | pause (backoff up to the cap, re-probe), dead-letter nothing, log at error (rate-limited), show the class and reason in `status` |
//! | HTTP 413, gRPC `RESOURCE_EXHAUSTED`/`OUT_OF_RANGE` about message size | too large | halve the batch (and later ones), down to one record; a record too large alone is dead-lettered with its size |
//! | other HTTP 4xx, gRPC `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, … | record | a batch is split into single records; a record still rejected alone is dead-lettered (durably), then acked |
//! | corruption in the log | — | deliver what precedes it, ack it, return `Corruption` (exit 4) |
//! | ack / dead-letter write fails (I/O) | — | return `Storage` (exit 5) |
//! | no trusted CA roots for a TLS upstream | — | return `Config` (exit 2) before anything is sent |
//! | crash anywhere | — | at-least-once: unacked records are sent again |
//!
//! `status` shows the class and reason of the last failure (`upstream_detail`), cleared by
//! the next success, so it never shows a stale one.
//!
//! # Progress
//! [`Progress`] holds the running totals and the state for `Status`; [`Progress::snapshot`]
//! adds the recent delivery rate and the time to drain. While replaying, a `replay
//! progress` line (backlog, delivered, rate, ETA) goes to the session log every
//! [`PROGRESS_LOG_INTERVAL`], and `backlog drained` once the backlog is empty.

mod acker;
pub mod backoff;
pub mod classify;
mod clients;
pub mod dead_letters;
mod deliver;
mod driver;
pub mod feed;
mod forward_grpc;
mod forward_http;
mod health;
mod rate;
mod reporter;
mod tls;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echopost_log::Log;
use tokio::sync::watch;

use crate::config::ReplayConfig;

/// Time between two good health probes when `healthy_after > 1`.
pub const HEALTHY_PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Delivered records are acknowledged at least this often while replaying. Each ack
/// costs two `fsync`s (cursor file and directory), so acking every batch would cap
/// throughput; re-delivery after a crash is bounded by this interval.
pub const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// ... or after this many delivered bytes, whichever comes first.
pub const ACK_BYTES: u64 = 64 << 20;
/// How often the progress line is written to the session log while replaying.
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

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
    /// Samples of the counters above, for the recent delivery rate.
    window: Mutex<rate::Window>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: AtomicU8::new(UpstreamState::None as u8),
            delivered_records: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            window: Mutex::new(rate::Window::new(Instant::now())),
        }
    }
}

/// A consistent view of [`Progress`] for `Status`, `echopost status` and the session log.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSnapshot {
    pub state: UpstreamState,
    pub delivered_records: u64,
    pub delivered_bytes: u64,
    pub dead_lettered: u64,
    pub last_error: String,
    /// Delivery rate over the last [`RATE_WINDOW`] (0 when nothing was delivered).
    pub records_per_second: f64,
    pub bytes_per_second: f64,
    /// `backlog_records / records_per_second`; 0 when the backlog is empty, -1 when
    /// unknown (backlog but no recent deliveries).
    pub estimated_drain_seconds: f64,
}

/// Width of the window over which the delivery rate is measured.
pub const RATE_WINDOW: Duration = rate::WINDOW;

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

    /// Counts delivered records (called by the replayer after each success).
    pub fn record_delivered(&self, records: u64, payload_bytes: u64) {
        self.delivered_records.fetch_add(records, Ordering::Relaxed);
        self.delivered_bytes
            .fetch_add(payload_bytes, Ordering::Relaxed);
        self.sample(Instant::now());
    }

    /// Delivery rate `(records/s, payload bytes/s)` over the last [`RATE_WINDOW`].
    pub fn rates(&self) -> (f64, f64) {
        let now = Instant::now();
        self.sample(now);
        let (r, b) = self.totals();
        match self.window.lock() {
            Ok(w) => w.rates(now, r, b),
            Err(_) => (0.0, 0.0),
        }
    }

    /// Estimated seconds to deliver `backlog_records` at the recent rate: 0 if there is
    /// nothing to deliver, -1 if unknown (no recent deliveries).
    pub fn estimated_drain_seconds(&self, backlog_records: u64) -> f64 {
        rate::eta(backlog_records, self.rates().0)
    }

    /// Everything at once; `backlog_records` comes from `Log::stats()`.
    pub fn snapshot(&self, backlog_records: u64) -> ProgressSnapshot {
        let (rps, bps) = self.rates();
        ProgressSnapshot {
            state: self.state(),
            delivered_records: self.delivered_records.load(Ordering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            last_error: self.last_error(),
            records_per_second: rps,
            bytes_per_second: bps,
            estimated_drain_seconds: rate::eta(backlog_records, rps),
        }
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.delivered_records.load(Ordering::Relaxed),
            self.delivered_bytes.load(Ordering::Relaxed),
        )
    }

    fn sample(&self, now: Instant) {
        let (r, b) = self.totals();
        if let Ok(mut w) = self.window.lock() {
            w.sample(now, r, b);
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
    /// The configuration cannot work on this machine (a TLS upstream and no trusted CA
    /// roots): exit code 2. Settings themselves are checked earlier, by `crate::config`.
    #[error("{0}")]
    Config(String),
}

impl ReplayError {
    /// Maps an engine error met while reading or acknowledging: corruption stays
    /// corruption, everything else is a storage failure.
    pub(crate) fn from_log(e: echopost_log::Error) -> Self {
        match e {
            echopost_log::Error::Corruption(_) => ReplayError::Corruption(e),
            other => ReplayError::Storage(other),
        }
    }
}

/// Replays the backlog until `shutdown` becomes true. See the module documentation.
///
/// Returns `Ok(())` on shutdown (after acknowledging everything delivered so far), or an
/// error that must stop the daemon. While idle (backlog empty) it keeps waiting for new
/// records; deciding to exit when drained is the daemon's job.
pub async fn run(
    log: Arc<Log>,
    cfg: ReplayConfig,
    progress: Arc<Progress>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplayError> {
    let res = match driver::Replayer::new(log, cfg, Arc::clone(&progress), shutdown) {
        Ok(replayer) => replayer.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        progress.set_state(UpstreamState::Stopped);
        progress.set_last_error(e.to_string());
    }
    res
}
