//! The replay loop: probing, sending, backing off, dead-lettering, acknowledging.
//! The rules it implements are in the module documentation of `replay`.

mod identity;
mod isolate;
mod notices;
mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use echopost_log::Log;
use echopost_proto::v1::Record;
use prost::Message;
use tokio::sync::watch;

use crate::config::{ReplayConfig, Upstream};
use crate::disk_quota::DiskQuota;

use super::acker::Acker;
use super::backoff::{Backoff, with_retry_after};
use super::classify::{Cause, Class, Failure, Policy, looks_like_tls};
use super::clients::{self, Sink};
use super::dead_letters;
use super::deliver::{DeliverBatch, source_len};
use super::feed::{self, Batch, Feed, Item, Shape};
use super::health::Prober;
use super::reporter::Reporter;
use super::{HEALTHY_PROBE_INTERVAL, Progress, ReplayError, UNHEALTHY, UpstreamState};

/// Longest wait for new records before looking at the shutdown flag again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Consecutive transient failures of one batch, each after a good health probe, before its
/// records are sent one by one to find out whether one of them is the problem (and only
/// once the batch has been failing for `--isolate-after`).
pub const SPLIT_AFTER: u32 = 3;
/// Consecutive transient failures of one record sent alone (over at least
/// `--isolate-after`) before the next record is sent as a test: if the main server accepts
/// it and the record fails once more, the record is dead-lettered (the server works, this
/// record does not go through); if the next record fails too, the outage is server-wide
/// and nothing is dead-lettered. So one record blocks the rest for about twice
/// `--isolate-after` plus the backoff (at most 30 s a round).
pub const SUSPECT_AFTER: u32 = 3;
/// A server-level failure is logged at error on the first occurrence and then every this
/// many in a row (the state and reason are always in `status`).
const SERVER_LOG_EVERY: u64 = 20;

/// What is being delivered, kept across backoff and re-probing until it is done.
enum Work {
    /// One `Sink/Deliver` request.
    Batch(Arc<DeliverBatch>),
    /// Records sent one at a time (forward mode, or a rejected batch being split).
    Singles(VecDeque<Item>),
}

/// Consecutive transient failures of the work at the head of the backlog.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    failures: u32,
    since: Instant,
}

impl Head {
    /// At least `n` failures over at least `after`.
    fn reached(&self, n: u32, after: Duration) -> bool {
        self.failures >= n && self.since.elapsed() >= after
    }
}

enum Step {
    /// Delivered (or dead-lettered); a delivered batch comes back to be recycled.
    Done(Option<(Vec<Item>, Option<BytesMut>)>),
    /// A transient or server-level failure; the work is to be sent again after backoff
    /// and re-probing.
    Retry(Work, Failure, Class),
    /// The server refused the request as too large: these smaller pieces go first, and
    /// later batches hold at most `max_records`.
    Split(Vec<Work>, usize),
    /// A failure was resolved one request at a time; these records, not sent yet, go back
    /// to the delivery window (`--in-flight` above 1).
    Rest(VecDeque<Item>),
    /// The window delivered everything there was (`--in-flight` above 1).
    CaughtUp,
    Shutdown,
}

pub(crate) struct Replayer {
    log: Arc<Log>,
    cfg: ReplayConfig,
    progress: Arc<Progress>,
    shutdown: watch::Receiver<bool>,
    upstream: Upstream,
    prober: Prober,
    sink: Sink,
    source: Arc<str>,
    timeout: Duration,
    acker: Acker,
    /// `None` only while a dead letter is being written on the blocking pool.
    dead: Option<dead_letters::Writer>,
    /// The session log's lines about dead letters (rate-limited).
    notices: notices::DeadLetterNotices,
    /// `--max-disk` over the log, the dead letters and the session logs.
    quota: Arc<DiskQuota>,
    backoff: Backoff,
    report: Reporter,
    /// The failure classes, with the operator's `--status-class` overrides.
    policy: Policy,
    /// Transient failures of the head of the backlog, for splitting and isolation.
    head: Option<Head>,
    /// Server-level failures in a row (for rate-limited logging).
    server_failures: u64,
    /// The last request failed: the delivery window stays closed (one request at a time)
    /// until one succeeds.
    failing: bool,
    /// Units the main server accepted behind a failed one (see `window.rs`).
    ahead: window::Ahead,
    /// An error met while requests were in flight, returned once they were answered.
    deferred: Option<ReplayError>,
}

impl Replayer {
    /// Sets up the clients for an already validated configuration (nothing is connected
    /// yet). Fails only on what settings cannot tell: no trusted CA roots for TLS.
    pub(crate) fn new(
        log: Arc<Log>,
        cfg: ReplayConfig,
        progress: Arc<Progress>,
        quota: Arc<DiskQuota>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, ReplayError> {
        let upstream = cfg.upstream.clone();
        let timeout = cfg.request_timeout;
        let (prober, sink) = clients::build(&cfg)?;
        let source: Arc<str> = Arc::from(cfg.source_id.as_str());
        let cfg_policy = cfg.policy.clone();
        let dead = Some(dead_letters::Writer::new(&cfg.dir));
        Ok(Replayer {
            acker: Acker::new(Arc::clone(&log)),
            log,
            cfg,
            progress,
            shutdown,
            upstream,
            prober,
            sink,
            source,
            timeout,
            dead,
            notices: notices::DeadLetterNotices::default(),
            quota,
            backoff: Backoff::delivery(),
            report: Reporter::new(),
            policy: cfg_policy,
            head: None,
            server_failures: 0,
            failing: false,
            ahead: window::Ahead::default(),
            deferred: None,
        })
    }

    pub(crate) async fn run(mut self) -> Result<(), ReplayError> {
        tracing::info!(
            upstream = %self.upstream.display,
            sink = ?self.cfg.sink,
            health = %self.prober.describe(),
            "replayer started"
        );
        let res = self.replay().await;
        // Whatever happened, what was delivered stays delivered.
        let flushed = self.acker.flush().await;
        let closed = self.close_dead_letters().await;
        match res {
            Err(e) => {
                if let Err(fe) = &flushed {
                    tracing::error!(error = %fe, "could not acknowledge the last delivered records (they will be delivered again)");
                }
                match &e {
                    ReplayError::Corruption(c) => tracing::error!(
                        error = %c,
                        delivered_up_to = self.acker.acked,
                        "replay stopped on storage corruption: records before the damage were delivered; nothing at or after it was acknowledged or deleted"
                    ),
                    other => tracing::error!(error = %other, "replay stopped"),
                }
                Err(e)
            }
            Ok(()) => {
                flushed?;
                closed?;
                tracing::info!(acked = self.acker.acked, "replayer stopped");
                Ok(())
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps `d`; false if shutdown came first.
    async fn sleep(&self, d: Duration) -> bool {
        let mut sd = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = wait_shutdown(&mut sd) => false,
        }
    }

    async fn replay(&mut self) -> Result<(), ReplayError> {
        let deliver = matches!(self.sink, Sink::Deliver(_));
        let shape = Shape {
            max_records: self.cfg.batch_records.max(1),
            max_bytes: if deliver {
                // The request's own field counts against the limit too.
                self.cfg
                    .batch_bytes
                    .saturating_sub(source_len(&self.source))
                    .max(1)
            } else {
                self.cfg.batch_bytes.max(1)
            },
            source: deliver.then(|| Arc::clone(&self.source)),
        };
        let mut feed = Feed::new(Arc::clone(&self.log), shape);
        let mut pending: VecDeque<Work> = VecDeque::new();
        loop {
            if !self.wait_healthy().await {
                return Ok(());
            }
            self.progress.set_state(UpstreamState::Replaying);
            loop {
                if self.stopping() {
                    return Ok(());
                }
                let step = if self.windowed() {
                    self.run_window(&mut pending, &mut feed).await?
                } else {
                    let work = match pending.pop_front() {
                        Some(w) => w,
                        None => match self.next_work(&mut feed).await? {
                            Some(w) => w,
                            None => {
                                self.idle(&feed).await?;
                                continue;
                            }
                        },
                    };
                    let may_read = pending.is_empty() && self.deferred.is_none();
                    self.process(work, &mut feed, may_read, None).await?
                };
                match step {
                    Step::Done(spent) => {
                        if let Some((items, buffer)) = spent {
                            feed.recycle(items, buffer);
                        }
                        self.acker.maybe_ack().await?;
                        self.report.maybe_log(&self.log, &self.progress);
                    }
                    Step::Split(pieces, max_records) => {
                        feed.limit_records(max_records);
                        for w in pieces.into_iter().rev() {
                            pending.push_front(w);
                        }
                    }
                    Step::Rest(items) => {
                        self.acker.maybe_ack().await?;
                        pending.push_front(Work::Singles(items));
                    }
                    Step::CaughtUp => self.idle(&feed).await?,
                    Step::Retry(work, failure, class) => {
                        pending.push_front(work);
                        if !self.back_off(&failure, class).await? {
                            return Ok(());
                        }
                        break; // back to probing
                    }
                    Step::Shutdown => return Ok(()),
                }
            }
        }
    }

    /// Probes until `healthy_after` consecutive good answers; false on shutdown.
    async fn wait_healthy(&mut self) -> bool {
        self.progress.set_state(UpstreamState::Probing);
        let need = self.cfg.healthy_after.max(1);
        let mut backoff = Backoff::probe();
        let mut good = 0u32;
        let mut failures = 0u64;
        let mut sd = self.shutdown.clone();
        loop {
            if self.stopping() {
                return false;
            }
            let r = tokio::select! {
                r = self.prober.probe(self.timeout) => r,
                _ = wait_shutdown(&mut sd) => return false,
            };
            let delay = match r {
                Ok(()) => {
                    self.progress.note_healthy();
                    good += 1;
                    if good >= need {
                        tracing::info!(probe = %self.prober.describe(), "main server is healthy: replaying");
                        return true;
                    }
                    HEALTHY_PROBE_INTERVAL
                }
                Err(unhealthy) => {
                    good = 0;
                    failures += 1;
                    let why = unhealthy.reason;
                    if looks_like_tls(&why) {
                        self.reload_ca_after_tls_failure();
                    }
                    // The first failure and then one in twenty: an outage can be long.
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(probe = %self.prober.describe(), failures, error = %why, retry_after_s = unhealthy.retry_after.map(|d| d.as_secs()), "main server not healthy yet");
                    }
                    let stats = self.log.stats();
                    let stuck = if stats.backlog_records > 0 {
                        stats.first_unacked_seq
                    } else {
                        0
                    };
                    self.progress.note_failure(UNHEALTHY, stuck, &why);
                    with_retry_after(backoff.next_delay(), unhealthy.retry_after)
                }
            };
            if !self.wait_before_next_attempt(delay).await {
                return false;
            }
        }
    }

    /// After a transient or server-level failure: flush acks, wait; false on shutdown.
    async fn back_off(&mut self, failure: &Failure, class: Class) -> Result<bool, ReplayError> {
        self.progress.set_state(UpstreamState::BackingOff);
        if failure.cause == Cause::Tls {
            self.reload_ca_after_tls_failure();
        }
        let delay = with_retry_after(self.backoff.next_delay(), failure.retry_after);
        if class == Class::Server {
            self.server_failures += 1;
            if self.server_failures == 1 || self.server_failures.is_multiple_of(SERVER_LOG_EVERY) {
                tracing::error!(
                    failures = self.server_failures,
                    delay_ms = delay.as_millis() as u64,
                    error = %failure.reason,
                    "the main server refuses every delivery for a reason that is not about the records (credentials, a missing service or route, a redirect, TLS); replay is paused and nothing is dead-lettered: fix the main server or --upstream / --upstream-header"
                );
            }
        } else {
            tracing::warn!(
                attempt = self.backoff.attempts(),
                delay_ms = delay.as_millis() as u64,
                retry_after_s = failure.retry_after.map(|d| d.as_secs()),
                error = %failure.reason,
                "delivery failed; backing off, then probing again"
            );
        }
        self.acker.flush().await?;
        Ok(self.wait_before_next_attempt(delay).await)
    }

    /// After a TLS handshake failure: reads `--upstream-ca` again and, if the file changed,
    /// rebuilds the clients with it, so that a rotated CA (the main server's new
    /// certificate signed by a new CA, the file replaced by the operator) recovers without
    /// a restart. A file that cannot be read or parsed now keeps the old certificates,
    /// with a warning.
    fn reload_ca_after_tls_failure(&mut self) {
        let Some(current) = &self.cfg.upstream_ca else {
            return;
        };
        let fresh = match crate::config::replay::load_ca(&current.path) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::warn!(error = %e, "TLS handshake failed and --upstream-ca cannot be read again; keeping the certificates read before");
                return;
            }
        };
        if fresh.pem == current.pem {
            return;
        }
        let mut cfg = self.cfg.clone();
        cfg.upstream_ca = Some(fresh);
        let (prober, sink) = match clients::build(&cfg) {
            Ok(clients) => clients,
            Err(e) => {
                tracing::warn!(error = %e, "TLS handshake failed and the new --upstream-ca cannot be used; keeping the certificates read before");
                return;
            }
        };
        tracing::info!(
            ca = %current.path.display(),
            "TLS handshake failed and --upstream-ca has changed since it was read: using the new certificates"
        );
        self.prober = prober;
        self.sink = sink;
        self.cfg = cfg;
    }

    /// Records a failure of the work starting at `seq` for `status`: the class, the
    /// reason (never a stale one), the attempts, since when.
    fn note_failure(&mut self, f: &Failure, class: Class, seq: u64) {
        self.failing = true;
        self.progress.note_failure(class.name(), seq, &f.reason);
    }

    /// After a success: the backoff starts over and old failures are forgotten.
    fn note_success(&mut self) {
        self.failing = false;
        self.backoff.reset();
        self.head = None;
        self.server_failures = 0;
        self.progress.note_success();
    }

    /// Sleeps `d` before the next attempt, showing when it is due in `status`; false if
    /// shutdown came first.
    async fn wait_before_next_attempt(&self, d: Duration) -> bool {
        self.progress
            .set_next_attempt(SystemTime::now().checked_add(d));
        let slept = self.sleep(d).await;
        self.progress.set_next_attempt(None);
        slept
    }

    /// Counts one more transient failure of the work starting at `seq`.
    fn bump_head(&mut self, seq: u64) -> Head {
        let h = match self.head {
            Some(h) if h.seq == seq => Head {
                failures: h.failures + 1,
                ..h
            },
            _ => Head {
                seq,
                failures: 1,
                since: Instant::now(),
            },
        };
        self.head = Some(h);
        h
    }

    /// Caught up: make everything durable-acked, release the dead-letter log, and wait
    /// for new records.
    async fn idle(&mut self, feed: &Feed) -> Result<(), ReplayError> {
        self.acker.flush().await?;
        self.close_dead_letters().await?;
        self.report.caught_up(&self.log, &self.progress);
        let mut sd = self.shutdown.clone();
        tokio::select! {
            _ = feed.wait_for_records(IDLE_POLL) => {}
            _ = wait_shutdown(&mut sd) => {}
        }
        Ok(())
    }

    async fn next_work(&mut self, feed: &mut Feed) -> Result<Option<Work>, ReplayError> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        Ok(match feed.next_batch().await? {
            b if b.is_empty() => None,
            Batch::Deliver(b) => Some(Work::Batch(Arc::new(b))),
            Batch::Records(items) => Some(Work::Singles(items.into())),
        })
    }

    /// One record through the configured sink. The outer error is fatal (a stored record
    /// that does not decode), the inner one a delivery failure.
    async fn send_one(&mut self, item: &Item) -> Result<Result<(), Failure>, ReplayError> {
        match &mut self.sink {
            Sink::Deliver(sink) => {
                let batch = Arc::new(DeliverBatch::new(vec![item.clone()], &self.source));
                Ok(sink.send(&batch).await)
            }
            Sink::Http(sink) => {
                let mut record = decode(&self.log, item)?;
                identity::add_idempotency_key(&mut record, &self.source, item.seq);
                Ok(sink.send(&record).await)
            }
            Sink::Grpc(sink) => {
                let mut record = decode(&self.log, item)?;
                identity::add_identity_metadata(&mut record, &self.source, item.seq);
                Ok(sink.send(&record).await)
            }
        }
    }

    fn done(&mut self, items: &[Item]) {
        let Some(last) = items.last() else {
            return;
        };
        let payload: u64 = items.iter().map(|i| i.payload_len).sum();
        let bytes: u64 = items.iter().map(|i| i.data.len() as u64).sum();
        self.progress.record_delivered(items.len() as u64, payload);
        self.acker.mark(last.seq, bytes);
        self.report.delivered();
    }

    /// Durably records a rejected record in the dead-letter log (once: see
    /// [`dead_letters::Writer::write`]), then lets its sequence be acknowledged. Waits,
    /// paused, while the dead letter does not fit `--max-disk`.
    async fn dead_letter(&mut self, item: Item, reason: &str) -> Result<(), ReplayError> {
        let letter = dead_letters::make_dead_letter(item.seq, &item.data, reason).map_err(|e| {
            ReplayError::Corruption(feed::corruption(
                &self.log,
                item.seq,
                format!("record {} does not decode: {e}", item.seq),
            ))
        })?;
        if !self
            .wait_for_dead_letter_room(letter.encoded_len() as u64)
            .await?
        {
            return Ok(());
        }
        let mut writer = self
            .dead
            .take()
            .unwrap_or_else(|| dead_letters::Writer::new(&self.cfg.dir));
        let main_acked = self.log.stats().acked;
        let (writer, res) = tokio::task::spawn_blocking(move || {
            let r = writer.write(&letter, main_acked);
            (writer, r)
        })
        .await
        .map_err(join_error)?;
        if let Some(f) = writer.figures() {
            self.quota.set_dead_letters(f.records, f.bytes);
        }
        self.dead = Some(writer);
        match res.map_err(|e| dead_letter_error(&self.cfg.dir, e))? {
            dead_letters::Written::Stored => {
                self.progress.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.notices.note(
                    item.seq,
                    reason,
                    &dead_letters::dead_letter_dir(&self.cfg.dir),
                );
            }
            dead_letters::Written::AlreadyThere => tracing::info!(
                seq = item.seq,
                "record rejected again; it is a dead letter already (from before a restart), so it is not written twice"
            ),
        }
        self.acker.mark(item.seq, item.data.len() as u64);
        Ok(())
    }

    /// Waits until a dead letter of `needed` bytes fits `--max-disk` (issue 13: at the
    /// cap, replay pauses rather than dropping anything). Acknowledges what was delivered
    /// first, which may free segments; then re-reads the dead-letter log's size once a
    /// second (an operator's `dead-letters purge` or `requeue` frees it). Returns false
    /// when shutdown was asked for meanwhile.
    async fn wait_for_dead_letter_room(&mut self, needed: u64) -> Result<bool, ReplayError> {
        let Some(segment_size) = self.quota.limit().map(|q| (q / 8).max(4096)) else {
            return Ok(true);
        };
        let mut paused = false;
        loop {
            let over =
                self.quota
                    .dead_letter_fits(self.log.stats().disk_bytes, needed, segment_size);
            let Err(over) = over else {
                if paused {
                    tracing::info!("the dead letters fit --max-disk again; replay goes on");
                    self.progress.set_paused(None);
                }
                return Ok(true);
            };
            if !paused {
                self.acker.flush().await?;
                // The writer releases the log, so that `purge` and `requeue` can take it.
                self.close_dead_letters().await?;
                if self
                    .quota
                    .dead_letter_fits(self.log.stats().disk_bytes, needed, segment_size)
                    .is_ok()
                {
                    continue;
                }
                let why = format!(
                    "paused: the next dead letter does not fit --max-disk ({over}); review them with `echopost dead-letters list --dir {dir}`, then `echopost dead-letters purge --dir {dir}` or `requeue`",
                    dir = self.cfg.dir.display()
                );
                tracing::error!("replay {why}");
                self.progress.set_paused(Some(why));
                paused = true;
            }
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = wait_shutdown(&mut sd) => {
                    self.progress.set_paused(None);
                    return Ok(false);
                }
            }
            let dir = self.cfg.dir.clone();
            if let Ok(Ok(f)) =
                tokio::task::spawn_blocking(move || dead_letters::figures(&dir)).await
            {
                self.quota.set_dead_letters(f.records, f.bytes);
            }
        }
    }

    async fn close_dead_letters(&mut self) -> Result<(), ReplayError> {
        self.notices
            .flush(&dead_letters::dead_letter_dir(&self.cfg.dir));
        let Some(mut writer) = self.dead.take() else {
            return Ok(());
        };
        let (writer, res) = tokio::task::spawn_blocking(move || {
            let r = writer.close();
            (writer, r)
        })
        .await
        .map_err(join_error)?;
        self.dead = Some(writer);
        res.map_err(ReplayError::Storage)
    }
}

fn unwrap_batch(batch: Arc<DeliverBatch>) -> VecDeque<Item> {
    match Arc::try_unwrap(batch) {
        Ok(b) => b.items.into(),
        Err(shared) => shared.items.iter().cloned().collect(),
    }
}

fn decode(log: &Log, item: &Item) -> Result<Record, ReplayError> {
    Record::decode(&item.data[..]).map_err(|e| {
        ReplayError::Corruption(feed::corruption(
            log,
            item.seq,
            format!("record {} does not decode: {e}", item.seq),
        ))
    })
}

/// Resolves when shutdown is requested (or nobody can request it any more).
async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A failure of the dead-letter log: the engine's errors as the engine's, a dead letter
/// that does not decode as a storage failure naming it (exit 5: `verify` tells more).
fn dead_letter_error(dir: &std::path::Path, e: dead_letters::DeadLetterError) -> ReplayError {
    match e {
        dead_letters::DeadLetterError::Log(e) => ReplayError::from_log(e),
        other => ReplayError::Storage(echopost_log::Error::Io {
            op: "read",
            path: dead_letters::dead_letter_dir(dir),
            source: std::io::Error::other(other.to_string()),
        }),
    }
}

pub(super) fn join_error(e: tokio::task::JoinError) -> ReplayError {
    ReplayError::Storage(echopost_log::Error::Io {
        op: "run a blocking task for",
        path: std::path::PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    })
}
