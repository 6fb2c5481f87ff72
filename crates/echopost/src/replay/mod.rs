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

/// Messages as opaque bytes; the front door receives captured calls with it too.
pub(crate) use forward_grpc::RawCodec;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use echopost_log::Log;
use tokio::sync::watch;

use crate::config::ReplayConfig;
use crate::disk_quota::DiskQuota;

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

/// [`Failing::class`] of a failed health probe.
pub const UNHEALTHY: &str = "unhealthy";

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
    /// Why replay is not progressing (`None` after a success); see [`Failing`].
    failing: Mutex<Option<Failing>>,
    /// Whether `failing` is set, so that a success costs no lock when nothing failed.
    is_failing: AtomicBool,
    /// Why replay waits though the main server may be healthy (the dead letters reached
    /// `--max-disk`); `None` while it is not paused.
    paused: Mutex<Option<String>>,
    /// Samples of the counters above, for the recent delivery rate.
    window: Mutex<rate::Window>,
}

/// Failed attempts since the last success: what `status` shows to tell a stuck replay
/// (the same sequence failing for a long time) from a slow one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// The class of the last failure (`Class::name`), or `"unhealthy"` for a failed
    /// health probe.
    pub class: &'static str,
    /// Failed attempts (deliveries and probes) since the last success.
    pub attempts: u32,
    /// The oldest undelivered sequence at the last failure (0: nothing buffered).
    pub sequence: u64,
    /// When the first of these failures happened.
    pub since: SystemTime,
    /// When the next attempt is due, while the replayer waits for it.
    pub next_attempt: Option<SystemTime>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: AtomicU8::new(UpstreamState::None as u8),
            delivered_records: AtomicU64::new(0),
            delivered_bytes: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            failing: Mutex::new(None),
            is_failing: AtomicBool::new(false),
            paused: Mutex::new(None),
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
    /// Failed attempts since the last success, if any.
    pub failing: Option<Failing>,
    /// Why replay is paused, if it is (see [`Progress::set_paused`]).
    pub paused: Option<String>,
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

    /// Sets (`Some`) or clears (`None`) why replay is paused.
    pub fn set_paused(&self, why: Option<String>) {
        if let Ok(mut g) = self.paused.lock() {
            *g = why;
        }
    }

    /// Why replay is paused, if it is.
    pub fn paused(&self) -> Option<String> {
        self.paused.lock().ok().and_then(|g| g.clone())
    }

    pub fn set_last_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e.into();
        }
    }

    /// Records a failed attempt of class `class` (see [`Failing::class`]) while the oldest
    /// undelivered record is `sequence`, with its reason (shown as
    /// `"<class> failure: <reason>"`, or the reason alone for a probe).
    pub fn note_failure(&self, class: &'static str, sequence: u64, reason: &str) {
        let detail = if class == UNHEALTHY {
            reason.to_owned()
        } else {
            format!("{class} failure: {reason}")
        };
        self.set_last_error(detail);
        if let Ok(mut g) = self.failing.lock() {
            let now = SystemTime::now();
            *g = Some(match g.take() {
                Some(f) => Failing {
                    class,
                    attempts: f.attempts.saturating_add(1),
                    sequence,
                    since: if f.sequence == sequence { f.since } else { now },
                    next_attempt: None,
                },
                None => Failing {
                    class,
                    attempts: 1,
                    sequence,
                    since: now,
                    next_attempt: None,
                },
            });
            self.is_failing.store(true, Ordering::Relaxed);
        }
    }

    /// Sets when the next attempt is due (`None`: it is being made now).
    pub fn set_next_attempt(&self, at: Option<SystemTime>) {
        if !self.is_failing.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut g) = self.failing.lock()
            && let Some(f) = g.as_mut()
        {
            f.next_attempt = at;
        }
    }

    /// A delivery succeeded: the failure state and the last error are cleared.
    pub fn note_success(&self) {
        if !self.is_failing.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Ok(mut g) = self.failing.lock() {
            *g = None;
        }
        self.set_last_error(String::new());
    }

    /// A health probe succeeded: a failure state that only probes caused is over (one
    /// left by failed deliveries stays until a delivery succeeds).
    pub fn note_healthy(&self) {
        if !self.is_failing.load(Ordering::Relaxed) {
            return;
        }
        let probe_only = self
            .failing
            .lock()
            .ok()
            .is_some_and(|g| g.as_ref().is_some_and(|f| f.class == UNHEALTHY));
        if probe_only {
            self.note_success();
        }
    }

    /// Failed attempts since the last success, if any.
    pub fn failing(&self) -> Option<Failing> {
        self.failing.lock().ok().and_then(|g| g.clone())
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
            failing: self.failing(),
            paused: self.paused(),
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

/// The verbatim replay a daemon is configured for (`--sink forward`): what ingest checks
/// every record against at append time ([`check_forwardable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    /// Each record becomes the HTTP request its `route` names.
    Http,
    /// Each record becomes the unary gRPC call its `route` names.
    Grpc,
}

impl ForwardKind {
    /// The forward kind of a replay configuration; `None` for the `deliver` sink.
    pub fn of(cfg: &ReplayConfig) -> Option<ForwardKind> {
        match (cfg.sink, &cfg.health) {
            (crate::config::SinkKind::Deliver, _) => None,
            (crate::config::SinkKind::Forward, crate::config::HealthCheck::Http { .. }) => {
                Some(ForwardKind::Http)
            }
            (crate::config::SinkKind::Forward, crate::config::HealthCheck::Grpc { .. }) => {
                Some(ForwardKind::Grpc)
            }
        }
    }
}

/// Whether the record encoded in `raw` (already checked to be a valid `Record`) can be
/// replayed as `kind`'s request: it has a route of the right form and headers the
/// protocol can carry. The same rules the forwarders apply when they build the request
/// (issue "replay that survives real main servers": refused at append time, never
/// dead-lettered at replay time). The error says what is wrong.
pub fn check_forwardable(kind: ForwardKind, raw: &[u8]) -> Result<(), String> {
    use prost::Message as _;
    let routing = echopost_proto::raw::RecordRouting::decode(raw)
        .map_err(|e| format!("not a valid record: {e}"))?;
    if routing.route.trim().is_empty() {
        return Err(match kind {
            ForwardKind::Http => {
                "it has no route: the daemon replays each record as the request its route names (--sink forward), so route must be \"METHOD /path\"".to_owned()
            }
            ForwardKind::Grpc => {
                "it has no route: the daemon replays each record as the call its route names (--sink forward), so route must be \"/pkg.Service/Method\"".to_owned()
            }
        });
    }
    match kind {
        ForwardKind::Http => forward_http::check(&routing.route, &routing.headers),
        ForwardKind::Grpc => forward_grpc::check(&routing.route, &routing.headers),
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
    quota: Arc<DiskQuota>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ReplayError> {
    let res = match driver::Replayer::new(log, cfg, Arc::clone(&progress), quota, shutdown) {
        Ok(replayer) => replayer.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &res {
        progress.set_state(UpstreamState::Stopped);
        progress.set_last_error(e.to_string());
    }
    res
}
