//! The ingest phase: producers that append as fast as the daemon acknowledges.
//!
//! `--producers` tasks, each with its own connection (or a share of `--connections`),
//! append batches of `--batch` records of `--record-bytes` payload for `--duration`
//! and/or until `--total-bytes` of payload are stored. With `--window 1` (the default)
//! each producer sends one `Append` and waits for its acknowledgement — which the daemon
//! sends only once the batch is durable under its sync policy — so the latency of each
//! append is the time from sending to the durable acknowledgement. With a larger window
//! the producer pipelines that many batches over one `AppendStream`.
//!
//! Latencies go into one [HdrHistogram](hdrhistogram) per producer, merged at the end, so
//! recording is a plain increment and needs no lock, and percentiles of millions of appends
//! need no stored samples. The producers speak gRPC through a lean client of their own
//! ([`wire`]): a bare HTTP/2 connection and each producer's request encoded once, because
//! the bench shares the CPUs with the daemon it measures. Every producer connects first and
//! then waits at a barrier, so the clock excludes connecting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echopost_client::Record;
use echopost_client::proto::AppendRequest;
use hdrhistogram::Histogram;
use tokio::sync::{Barrier, Semaphore, mpsc};

use super::progress::{ProgressLine, eta};
use super::report::{IngestReport, Latency};
use super::wire::{self, PreEncoded, WireConn};
use crate::cli::BenchArgs;
use crate::commands::{CommandError, fmt_count, fmt_mb_per_s};

/// Counters shared by the producers and the progress display.
#[derive(Debug, Default)]
pub struct LoadCounters {
    stop: AtomicBool,
    records: AtomicU64,
    bytes: AtomicU64,
    appends: AtomicU64,
    /// Payload bytes producers have claimed to send (the `--total-bytes` budget).
    claimed: AtomicU64,
}

impl LoadCounters {
    /// Claims one batch of the budget; false once it is spent (or the run is stopping).
    fn claim(&self, batch_payload: u64, total: Option<u64>) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match total {
            None => true,
            Some(t) => self.claimed.fetch_add(batch_payload, Ordering::Relaxed) < t,
        }
    }

    fn acked(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.appends.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one producer did.
struct ProducerResult {
    hist: Histogram<u64>,
    finished: Instant,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct ProducerConfig {
    /// The records' `route` (the HTTP sink's, for verbatim replay; else empty).
    route: &'static str,
    batch: usize,
    record_bytes: usize,
    window: usize,
    total_bytes: Option<u64>,
    /// Unary calls to an application method through the front door instead of `Append`.
    front_door: bool,
}

/// One batch of records with pseudo-random payloads (incompressible, different per
/// producer), built once and cloned for every append.
fn template(producer: u32, cfg: &ProducerConfig) -> Vec<Record> {
    let mut state =
        0x9E37_79B9_7F4A_7C15u64 ^ u64::from(producer).wrapping_mul(0xA24B_AED4_963E_E407);
    (0..cfg.batch)
        .map(|_| {
            let payload = (0..cfg.record_bytes)
                .map(|_| {
                    // xorshift64*
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect();
            Record {
                stream: "bench".to_owned(),
                payload,
                route: cfg.route.to_owned(),
                ..Record::default()
            }
        })
        .collect()
}

/// Append latencies in nanoseconds with 2 significant digits: exact below 256 ns, and
/// 128 buckets per power of two above, so a reported value is never more than 1/128
/// (< 0.8 %) above the true one. The whole `u64` range fits in a fixed 58 KiB, so
/// recording never allocates and never fails.
fn latency_histogram() -> Result<Histogram<u64>, CommandError> {
    Histogram::new_with_bounds(1, u64::MAX, 2)
        .map_err(|e| CommandError::fatal(format!("cannot create a latency histogram: {e}")))
}

/// One producer: appends its batch until the budget is spent or the run stops.
/// `hist` is an empty [`latency_histogram`] to record into.
async fn producer(
    id: u32,
    socket: PathBuf,
    cfg: ProducerConfig,
    shared: Arc<LoadCounters>,
    start: Arc<Barrier>,
    given: Option<WireConn>,
    mut hist: Histogram<u64>,
) -> ProducerResult {
    let records = template(id, &cfg);
    let front_door_message = records
        .first()
        .map(|r| bytes::Bytes::from(r.payload.clone()))
        .unwrap_or_default();
    let batch = PreEncoded::new(&AppendRequest {
        records,
        ..AppendRequest::default()
    });
    let batch_payload = (cfg.batch * cfg.record_bytes) as u64;
    let connected = match given {
        Some(c) => Ok(c),
        None => WireConn::connect(&socket).await,
    };
    // Everyone starts together, connected or not, so the clock excludes connecting.
    start.wait().await;
    let conn = match connected {
        Ok(c) => c,
        Err(e) => {
            shared.stop.store(true, Ordering::Relaxed);
            return ProducerResult {
                hist,
                finished: Instant::now(),
                error: Some(format!("producer {id} cannot connect: {e}")),
            };
        }
    };
    let error = if cfg.front_door {
        let mut conn = conn;
        let mut error = None;
        while shared.claim(batch_payload, cfg.total_bytes) {
            let t0 = Instant::now();
            match conn.front_door_call(front_door_message.clone()).await {
                Ok(()) => {
                    hist.saturating_record(t0.elapsed().as_nanos() as u64);
                    shared.acked(1, batch_payload);
                }
                Err(e) => {
                    error = Some(format!("producer {id}: front-door call failed: {e}"));
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        error
    } else if cfg.window <= 1 {
        let mut conn = conn;
        let mut error = None;
        while shared.claim(batch_payload, cfg.total_bytes) {
            let t0 = Instant::now();
            match conn.append(batch.clone()).await {
                Ok(_) => {
                    hist.saturating_record(t0.elapsed().as_nanos() as u64);
                    shared.acked(cfg.batch as u64, batch_payload);
                }
                Err(e) => {
                    error = Some(format!("producer {id}: append failed: {e}"));
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        error
    } else {
        pipelined(id, conn, &batch, batch_payload, &cfg, &shared, &mut hist).await
    };
    ProducerResult {
        hist,
        finished: Instant::now(),
        error,
    }
}

/// Keeps `window` appends in flight on one `AppendStream`; each acknowledgement is
/// matched (in order) with its send time.
async fn pipelined(
    id: u32,
    mut conn: WireConn,
    batch: &PreEncoded,
    batch_payload: u64,
    cfg: &ProducerConfig,
    shared: &Arc<LoadCounters>,
    hist: &mut Histogram<u64>,
) -> Option<String> {
    let (req_tx, req_rx) = mpsc::channel::<PreEncoded>(cfg.window);
    let mut responses = match conn
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
    {
        Ok(r) => r,
        Err(s) => {
            shared.stop.store(true, Ordering::Relaxed);
            return Some(format!("producer {id}: AppendStream failed: {s}"));
        }
    };
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
    let permits = Arc::new(Semaphore::new(cfg.window));
    let acker = {
        let mut acked = Histogram::<u64>::new_from(hist);
        let permits = Arc::clone(&permits);
        let shared = Arc::clone(shared);
        let records = cfg.batch as u64;
        tokio::spawn(async move {
            let error = loop {
                let next = tokio::time::timeout(wire::CALL_TIMEOUT, responses.message()).await;
                let Ok(next) = next else {
                    break Some(format!(
                        "producer {id}: no acknowledgement within {}s",
                        wire::CALL_TIMEOUT.as_secs()
                    ));
                };
                match next {
                    Ok(Some(_)) => {
                        let Some(t0) = sent_rx.recv().await else {
                            break None;
                        };
                        acked.saturating_record(t0.elapsed().as_nanos() as u64);
                        shared.acked(records, batch_payload);
                        permits.add_permits(1);
                    }
                    Ok(None) => break None,
                    Err(s) => break Some(format!("producer {id}: append failed: {s}")),
                }
            };
            if error.is_some() {
                shared.stop.store(true, Ordering::Relaxed);
            }
            // Whatever ended the stream, a sender waiting for a free slot must not wait
            // forever.
            permits.close();
            (acked, error)
        })
    };
    while shared.claim(batch_payload, cfg.total_bytes) {
        match permits.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => break,
        }
        let _ = sent_tx.send(Instant::now());
        if req_tx.send(batch.clone()).await.is_err() {
            break;
        }
    }
    // End the request stream; the daemon answers what is in flight, then ends its side.
    drop(req_tx);
    match acker.await {
        Ok((h, error)) => {
            let merged = hist
                .add(&h)
                .err()
                .map(|e| format!("producer {id}: cannot merge latencies: {e}"));
            error.or(merged)
        }
        Err(e) => Some(format!("producer {id}: acknowledgement task failed: {e}")),
    }
}

/// Runs the ingest phase against the daemon on `socket`: starts the producers together,
/// stops them at the deadline, when the budget is spent or on Ctrl-C, and merges their
/// figures. The report's `peak_rss_bytes` is left for the driver to fill in.
pub async fn ingest(
    args: &BenchArgs,
    socket: &Path,
    progress: &mut ProgressLine,
    interrupted: &AtomicBool,
) -> Result<IngestReport, CommandError> {
    let cfg = ProducerConfig {
        route: match args.sink {
            crate::cli::BenchSinkArg::Http => super::http_sink::ROUTE,
            crate::cli::BenchSinkArg::Deliver => "",
        },
        batch: args.batch as usize,
        record_bytes: usize::try_from(args.record_bytes).unwrap_or(usize::MAX),
        window: args.window as usize,
        total_bytes: args.total_bytes,
        front_door: args.front_door,
    };
    let duration = args.duration.or(args
        .total_bytes
        .is_none()
        .then_some(super::DEFAULT_DURATION));
    let empty = latency_histogram()?;
    let shared = Arc::new(LoadCounters::default());
    let barrier = Arc::new(Barrier::new(args.producers as usize + 1));
    // Shared connections are opened up front; a producer whose share failed to connect
    // connects on its own (and reports the error if that fails too).
    let mut shared_conns: Vec<WireConn> = Vec::new();
    for _ in 0..args.connections.min(args.producers) {
        shared_conns.extend(WireConn::connect(socket).await.ok());
    }
    let handles: Vec<_> = (0..args.producers)
        .map(|id| {
            let given = (!shared_conns.is_empty())
                .then(|| shared_conns[id as usize % shared_conns.len()].clone());
            tokio::spawn(producer(
                id,
                socket.to_path_buf(),
                cfg,
                Arc::clone(&shared),
                Arc::clone(&barrier),
                given,
                Histogram::new_from(&empty),
            ))
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    while !handles.iter().all(|h| h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) || interrupted.load(Ordering::SeqCst) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let elapsed = now - start;
        let bytes = shared.bytes.load(Ordering::Relaxed);
        let mut fraction: f64 = 0.0;
        if let Some(d) = duration {
            fraction = fraction.max(elapsed.as_secs_f64() / d.as_secs_f64());
        }
        if let Some(t) = args.total_bytes {
            fraction = fraction.max(bytes as f64 / t as f64);
        }
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-9);
        progress.show(
            fraction,
            &format!(
                "ingest  {} records  {}  {}",
                fmt_count(shared.records.load(Ordering::Relaxed)),
                fmt_mb_per_s(rate),
                eta(elapsed, fraction)
            ),
        );
    }
    let mut hist = empty;
    let mut end = start;
    let mut errors = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => {
                if let Err(e) = hist.add(&r.hist) {
                    errors.push(format!("cannot merge latencies: {e}"));
                }
                end = end.max(r.finished);
                if let Some(e) = r.error {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(format!("a producer task failed: {e}")),
        }
    }
    progress.clear();
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(CommandError::fatal(format!(
            "the benchmark stopped: {}",
            errors.join("; ")
        )));
    }
    let secs = (end - start).as_secs_f64().max(1e-9);
    let records = shared.records.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    Ok(IngestReport {
        records,
        bytes,
        appends: shared.appends.load(Ordering::Relaxed),
        seconds: secs,
        records_per_second: records as f64 / secs,
        mb_per_second: bytes as f64 / secs / 1e6,
        latency: Latency::from_nanos(&hist),
        peak_rss_bytes: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_claimed_per_batch() {
        let s = LoadCounters::default();
        let mut n = 0;
        while s.claim(100, Some(1000)) {
            n += 1;
        }
        assert_eq!(n, 10);
        let s = LoadCounters::default();
        assert!(s.claim(100, None));
        s.stop.store(true, Ordering::Relaxed);
        assert!(!s.claim(100, None));
    }

    #[test]
    fn templates_differ_per_producer_and_have_the_requested_size() {
        let cfg = ProducerConfig {
            route: "",
            batch: 3,
            record_bytes: 256,
            window: 1,
            total_bytes: None,
            front_door: false,
        };
        let a = template(0, &cfg);
        let b = template(1, &cfg);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|r| r.payload.len() == 256));
        assert_ne!(a[0].payload, b[0].payload);
        assert_ne!(a[0].payload, a[1].payload);
    }
}
