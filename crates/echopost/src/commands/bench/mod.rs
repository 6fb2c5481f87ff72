//! `echopost bench`: a load generator for the daemon, and the source of its quoted figures.
//!
//! # What it measures
//! 1. **Ingest.** `--producers` tasks, each with its own connection, append batches of
//!    `--batch` records of `--record-bytes` payload for `--duration` and/or until
//!    `--total-bytes` of payload are stored. With `--window 1` (the default) each producer
//!    sends one `Append` and waits for its acknowledgement — which the daemon sends only
//!    once the batch is durable under its sync policy — so the latency of each append is
//!    the time from sending to the durable acknowledgement. With a larger window the
//!    producer pipelines that many batches over one `AppendStream`. Latencies go into a
//!    log-bucketed [`Histogram`] per producer (< 0.8 % error) → p50/p90/p99/p99.9.
//!    The producers speak gRPC through a lean client of their own ([`wire`]): a bare
//!    HTTP/2 connection and each producer's request encoded once, because the bench
//!    shares the CPUs with the daemon it measures.
//! 2. **Drain.** The daemon the bench starts has a built-in no-op sink as its upstream:
//!    an in-process gRPC server on 127.0.0.1 answering `echopost.v1.Sink/Deliver` with OK
//!    without decoding (so it costs the shared CPUs as little as possible), plus the
//!    standard health service. The health service says NOT_SERVING during ingest, so the
//!    backlog piles up, and SERVING once ingest is over. The drain is timed from the first
//!    `Deliver` the sink receives until `Status` shows an empty backlog (every record
//!    delivered *and* acknowledged); the wait for the replayer's next health probe is
//!    reported separately, because it is backoff, not throughput.
//! 3. **Memory.** The daemon's peak RSS is read from `VmHWM` in `/proc/PID/status`, and
//!    reset between phases by writing `5` to `/proc/PID/clear_refs`, so the ingest peak
//!    and the replay peak are reported separately (Linux; "n/a" elsewhere).
//!
//! The bench also prints the machine (CPUs, CPU model, kernel, memory, the file system of
//! the directory), because a throughput figure means nothing without it — in particular,
//! `fdatasync` on tmpfs is free and on a network disk is not.
//!
//! # The daemon
//! Without `--socket`, the bench starts `echopost run` from its own executable, in
//! `--dir` or a temporary directory (removed afterwards), in its own process group (so a
//! Ctrl-C at the terminal reaches only the bench, which then stops the daemon cleanly),
//! with every `ECHOPOST_*` variable removed from its environment (so the figures do not
//! depend on the operator's shell). With `--socket` it appends to that daemon instead and
//! times a drain only if the daemon has an upstream of its own.

mod wire;

use std::collections::VecDeque;
use std::io::{IsTerminal, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echopost_client::proto::{AppendRequest, UpstreamState};
use echopost_client::{Client, Record, StatusResponse};
use serde::Serialize;
use tokio::sync::{Barrier, Semaphore, mpsc};

use super::histogram::Histogram;
use super::{
    CommandError, CommandResult, RPC_TIMEOUT, fmt_bytes, fmt_count, fmt_duration, fmt_mb_per_s,
    print_stdout,
};
use crate::cli::BenchArgs;
use crate::daemon::exit::ExitCode;
use crate::ingest::limits::MAX_MESSAGE_BYTES;
use crate::noop_sink::NoopSink;
use wire::{PreEncoded, WireConn};

/// Ingest time when neither `--duration` nor `--total-bytes` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long the started daemon gets to answer its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the started daemon gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the drain phase asks `Status` whether the backlog is empty.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// A drain with no delivery for this long has stalled.
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// Progress refresh on a terminal.
const PROGRESS_TTY: Duration = Duration::from_millis(250);
/// Progress lines when stderr is not a terminal (logs of long runs).
const PROGRESS_PLAIN: Duration = Duration::from_secs(10);
/// Largest encoded append the bench builds (the daemon's limit is 64 MiB per message).
const MAX_APPEND_BYTES: u64 = (MAX_MESSAGE_BYTES as u64) - (4 << 20);

// ---------------------------------------------------------------------------------------
// Report

/// The machine the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub os: String,
    pub memory_bytes: Option<u64>,
    /// File system type of the daemon's directory (ext4, xfs, tmpfs, ...), Linux only.
    pub storage_fs: Option<String>,
}

/// The load that was generated.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub producers: u32,
    /// Connections the producers share; 0 = one each.
    pub connections: u32,
    pub batch_records: u32,
    pub record_bytes: u64,
    pub window: u32,
    pub duration_seconds: Option<f64>,
    pub total_bytes: Option<u64>,
}

/// Append latency in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

/// The ingest phase.
#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    pub records: u64,
    /// Payload bytes acknowledged.
    pub bytes: u64,
    pub appends: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Payload, in 10^6 bytes per second.
    pub mb_per_second: f64,
    /// From sending an append to its (durable) acknowledgement.
    pub latency: Latency,
    pub peak_rss_bytes: Option<u64>,
}

/// The drain phase.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Payload (`records × record_bytes`), in 10^6 bytes per second.
    pub mb_per_second: f64,
    /// As received by the no-op sink (encoded `DeliverRequest`s); `null` with --socket.
    pub wire_mb_per_second: Option<f64>,
    /// From the sink turning SERVING to the first `Deliver` (the replayer's probe backoff).
    pub wait_for_first_delivery_seconds: Option<f64>,
    pub peak_rss_bytes: Option<u64>,
}

/// The daemon that was measured.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub dir: String,
    pub sync_policy: String,
    pub started_by_bench: bool,
    /// Exit code after the bench stopped it (started daemons only).
    pub exit_code: Option<i32>,
}

/// Everything `bench` prints, in the shape of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub load: Load,
    pub daemon: DaemonInfo,
    pub ingest: Ingest,
    pub drain: Option<Drain>,
    /// Why there is no drain figure, when there is none.
    pub drain_skipped: Option<String>,
    /// True when Ctrl-C cut the run short.
    pub interrupted: bool,
}

// ---------------------------------------------------------------------------------------
// Entry point

/// Runs `echopost bench`.
pub fn run(args: &BenchArgs) -> CommandResult {
    let batch_bytes = u64::from(args.batch).saturating_mul(args.record_bytes + 16);
    if args.record_bytes == 0 {
        return Err(CommandError::usage("--record-bytes must be at least 1"));
    }
    if batch_bytes > MAX_APPEND_BYTES {
        return Err(CommandError::usage(format!(
            "--batch {} × --record-bytes {} is about {}: above the {} an append may carry; lower one of them",
            args.batch,
            args.record_bytes,
            fmt_bytes(batch_bytes),
            fmt_bytes(MAX_APPEND_BYTES)
        )));
    }
    if args.duration.is_some_and(|d| d.is_zero()) || args.total_bytes == Some(0) {
        return Err(CommandError::usage(
            "--duration and --total-bytes must be above zero",
        ));
    }
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("echopost-bench")
        .build()
        .map_err(|e| CommandError::fatal(format!("cannot start the async runtime: {e}")))?;
    let report = rt.block_on(bench(args))?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        s.push('\n');
        s
    } else {
        human(&report)
    };
    print_stdout(&text)?;
    Ok(ExitCode::Clean)
}

async fn bench(args: &BenchArgs) -> Result<BenchReport, CommandError> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }

    // The daemon: started here (with the no-op sink as upstream), or the one on --socket.
    let (sink, mut spawned, socket) = match &args.dirs.socket {
        Some(s) => {
            let s = std::path::absolute(s).map_err(|e| {
                CommandError::usage(format!("cannot resolve --socket {}: {e}", s.display()))
            })?;
            (None, None, s)
        }
        None => {
            let sink = NoopSink::start(None)
                .await
                .map_err(|e| CommandError::fatal(format!("cannot start the no-op sink: {e}")))?;
            let area = Area::new(args.dirs.dir.as_deref())?;
            let daemon = SpawnedDaemon::start(area, &sink, args).await?;
            let socket = daemon.area.socket.clone();
            (Some(sink), Some(daemon), socket)
        }
    };
    let result = measure(
        args,
        &socket,
        sink.as_ref(),
        spawned.is_some(),
        &interrupted,
    )
    .await;
    // Stop the daemon whatever happened, then report.
    let exit = match spawned.as_mut() {
        Some(d) => Some(d.stop().await),
        None => None,
    };
    let mut report = result?;
    if let Some(status) = exit {
        report.daemon.exit_code = status.code();
    }
    if let Some(d) = spawned.take() {
        d.cleanup();
    }
    Ok(report)
}

async fn measure(
    args: &BenchArgs,
    socket: &Path,
    sink: Option<&NoopSink>,
    started_by_bench: bool,
    interrupted: &Arc<AtomicBool>,
) -> Result<BenchReport, CommandError> {
    let client = Client::connect(socket).await.map_err(|e| {
        CommandError::usage(format!("cannot benchmark the daemon on --socket: {e}"))
    })?;
    let st = status(&client).await?;
    let pid = st.pid;
    let machine = Machine::probe(Path::new(&st.dir));
    let load = Load {
        producers: args.producers,
        connections: args.connections,
        batch_records: args.batch,
        record_bytes: args.record_bytes,
        window: args.window,
        duration_seconds: args
            .duration
            .or(args.total_bytes.is_none().then_some(DEFAULT_DURATION))
            .map(|d| d.as_secs_f64()),
        total_bytes: args.total_bytes,
    };
    let daemon = DaemonInfo {
        pid,
        version: st.version.clone(),
        dir: st.dir.clone(),
        sync_policy: st.sync_policy.clone(),
        started_by_bench,
        exit_code: None,
    };
    let mut progress = Progress::new();

    rss::reset_peak(pid);
    let ingest = ingest(args, socket, &mut progress, interrupted).await?;
    let ingest_rss = rss::peak(pid);
    let ingest = Ingest {
        peak_rss_bytes: ingest_rss,
        ..ingest
    };

    let mut drain_skipped = None;
    let drain = if args.no_drain {
        drain_skipped = Some("--no-drain".to_owned());
        None
    } else if interrupted.load(Ordering::SeqCst) {
        drain_skipped = Some("interrupted".to_owned());
        None
    } else {
        let before = status(&client).await?;
        if before.backlog_records == 0 {
            drain_skipped = Some("the backlog was empty after ingest".to_owned());
            None
        } else if sink.is_none() && before.upstream.is_empty() {
            drain_skipped = Some(
                "the daemon on --socket has no upstream, so nothing drains the backlog".to_owned(),
            );
            None
        } else {
            rss::reset_peak(pid);
            let d = drain(
                &client,
                sink,
                before.backlog_records,
                args.record_bytes,
                &mut progress,
                interrupted,
            )
            .await?;
            d.map(|d| Drain {
                peak_rss_bytes: rss::peak(pid),
                ..d
            })
        }
    };
    progress.clear();
    Ok(BenchReport {
        machine,
        load,
        daemon,
        ingest,
        drain,
        drain_skipped,
        interrupted: interrupted.load(Ordering::SeqCst),
    })
}

async fn status(client: &Client) -> Result<StatusResponse, CommandError> {
    match tokio::time::timeout(RPC_TIMEOUT, client.status()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(CommandError::fatal(format!("Status failed: {e}"))),
        Err(_) => Err(CommandError::fatal(format!(
            "the daemon did not answer Status within {}",
            fmt_duration(RPC_TIMEOUT)
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Ingest

/// Counters shared by the producers and the progress display.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    records: AtomicU64,
    bytes: AtomicU64,
    appends: AtomicU64,
    /// Payload bytes producers have claimed to send (the `--total-bytes` budget).
    claimed: AtomicU64,
}

impl Shared {
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
    hist: Histogram,
    finished: Instant,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct ProducerConfig {
    batch: usize,
    record_bytes: usize,
    window: usize,
    total_bytes: Option<u64>,
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
                ..Record::default()
            }
        })
        .collect()
}

async fn producer(
    id: u32,
    socket: PathBuf,
    cfg: ProducerConfig,
    shared: Arc<Shared>,
    start: Arc<Barrier>,
    given: Option<WireConn>,
) -> ProducerResult {
    let batch = PreEncoded::new(&AppendRequest {
        records: template(id, &cfg),
    });
    let batch_payload = (cfg.batch * cfg.record_bytes) as u64;
    let connected = match given {
        Some(c) => Ok(c),
        None => WireConn::connect(&socket).await,
    };
    // Everyone starts together, connected or not, so the clock excludes connecting.
    start.wait().await;
    let mut hist = Histogram::new();
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
    let error = if cfg.window <= 1 {
        let mut conn = conn;
        let mut error = None;
        while shared.claim(batch_payload, cfg.total_bytes) {
            let t0 = Instant::now();
            match conn.append(batch.clone()).await {
                Ok(_) => {
                    hist.record(t0.elapsed().as_nanos() as u64);
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
    shared: &Arc<Shared>,
    hist: &mut Histogram,
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
        let permits = Arc::clone(&permits);
        let shared = Arc::clone(shared);
        let records = cfg.batch as u64;
        tokio::spawn(async move {
            let mut hist = Histogram::new();
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
                        hist.record(t0.elapsed().as_nanos() as u64);
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
            (hist, error)
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
            hist.merge(&h);
            error
        }
        Err(e) => Some(format!("producer {id}: acknowledgement task failed: {e}")),
    }
}

async fn ingest(
    args: &BenchArgs,
    socket: &Path,
    progress: &mut Progress,
    interrupted: &AtomicBool,
) -> Result<Ingest, CommandError> {
    let cfg = ProducerConfig {
        batch: args.batch as usize,
        record_bytes: usize::try_from(args.record_bytes).unwrap_or(usize::MAX),
        window: args.window as usize,
        total_bytes: args.total_bytes,
    };
    let duration = args
        .duration
        .or(args.total_bytes.is_none().then_some(DEFAULT_DURATION));
    let shared = Arc::new(Shared::default());
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
    let mut hist = Histogram::new();
    let mut end = start;
    let mut errors = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => {
                hist.merge(&r.hist);
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
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(Ingest {
        records,
        bytes,
        appends: shared.appends.load(Ordering::Relaxed),
        seconds: secs,
        records_per_second: records as f64 / secs,
        mb_per_second: bytes as f64 / secs / 1e6,
        latency: Latency {
            p50_us: us(hist.quantile(0.50)),
            p90_us: us(hist.quantile(0.90)),
            p99_us: us(hist.quantile(0.99)),
            p999_us: us(hist.quantile(0.999)),
            max_us: us(hist.max()),
            mean_us: hist.mean() / 1000.0,
        },
        peak_rss_bytes: None,
    })
}

fn eta(elapsed: Duration, fraction: f64) -> String {
    if fraction <= 0.0 {
        return format!("{} elapsed", fmt_duration(elapsed));
    }
    let total = elapsed.as_secs_f64() / fraction.min(1.0);
    let left = (total - elapsed.as_secs_f64()).max(0.0);
    format!(
        "{} elapsed, ETA {}",
        fmt_duration(elapsed),
        fmt_duration(Duration::from_secs_f64(left))
    )
}

// ---------------------------------------------------------------------------------------
// Drain

async fn drain(
    client: &Client,
    sink: Option<&NoopSink>,
    backlog: u64,
    record_bytes: u64,
    progress: &mut Progress,
    interrupted: &AtomicBool,
) -> Result<Option<Drain>, CommandError> {
    let turned_on = Instant::now();
    if let Some(s) = sink {
        s.set_serving(true).await;
    }
    let mut last_left = backlog;
    let mut last_change = Instant::now();
    let end = loop {
        tokio::time::sleep(DRAIN_POLL).await;
        let st = status(client).await?;
        let now = Instant::now();
        if st.backlog_records == 0 {
            break now;
        }
        if interrupted.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if st.upstream_state == UpstreamState::Stopped as i32 {
            return Err(CommandError::fatal(format!(
                "replay stopped during the drain: {}",
                st.upstream_detail
            )));
        }
        if st.backlog_records != last_left {
            last_left = st.backlog_records;
            last_change = now;
        } else if now - last_change > DRAIN_STALL {
            return Err(CommandError::fatal(format!(
                "the drain stalled: {} records left and none delivered for {} (upstream state {}, {})",
                fmt_count(st.backlog_records),
                fmt_duration(DRAIN_STALL),
                st.upstream_state,
                st.upstream_detail
            )));
        }
        let done = backlog.saturating_sub(st.backlog_records);
        let since = sink.and_then(NoopSink::first_call).unwrap_or(turned_on);
        let elapsed = now.saturating_duration_since(since);
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        let fraction = done as f64 / backlog.max(1) as f64;
        progress.show(
            fraction,
            &format!(
                "drain   {} of {} records  {:.0} records/s  {}",
                fmt_count(done),
                fmt_count(backlog),
                rate,
                eta(elapsed, fraction)
            ),
        );
    };
    progress.clear();
    let first = sink.and_then(NoopSink::first_call);
    let began = first.unwrap_or(turned_on);
    let secs = end.saturating_duration_since(began).as_secs_f64().max(1e-9);
    let rps = backlog as f64 / secs;
    Ok(Some(Drain {
        records: backlog,
        seconds: secs,
        records_per_second: rps,
        mb_per_second: rps * record_bytes as f64 / 1e6,
        wire_mb_per_second: sink.map(|s| s.wire_bytes() as f64 / secs / 1e6),
        wait_for_first_delivery_seconds: first
            .map(|f| f.saturating_duration_since(turned_on).as_secs_f64()),
        peak_rss_bytes: None,
    }))
}

// ---------------------------------------------------------------------------------------
// The started daemon

/// Where a started daemon keeps its data: `--dir`, or a temporary directory.
struct Area {
    dir: PathBuf,
    socket: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Area {
    fn new(dir: Option<&Path>) -> Result<Area, CommandError> {
        match dir {
            Some(d) => {
                let dir = std::path::absolute(d).map_err(|e| {
                    CommandError::usage(format!("cannot resolve --dir {}: {e}", d.display()))
                })?;
                Ok(Area {
                    socket: dir.join(crate::config::DEFAULT_SOCKET_NAME),
                    dir,
                    temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("echopost-bench-")
                    .tempdir()
                    .map_err(|e| {
                        CommandError::fatal(format!(
                            "cannot create a temporary directory (set TMPDIR, or pass --dir): {e}"
                        ))
                    })?;
                let dir = temp.path().join("dir");
                Ok(Area {
                    socket: dir.join(crate::config::DEFAULT_SOCKET_NAME),
                    dir,
                    temp: Some(temp),
                })
            }
        }
    }
}

/// `echopost run` started by the bench.
struct SpawnedDaemon {
    child: Child,
    area: Area,
    stderr: Arc<Mutex<VecDeque<u8>>>,
}

/// Bytes of the daemon's stderr kept for error messages.
const STDERR_TAIL: usize = 8 << 10;

impl SpawnedDaemon {
    async fn start(area: Area, sink: &NoopSink, args: &BenchArgs) -> Result<Self, CommandError> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| {
            CommandError::fatal(format!(
                "cannot find this executable to start the daemon: {e}"
            ))
        })?;
        let max_record = (args.record_bytes + 1024).clamp(4 << 20, MAX_MESSAGE_BYTES as u64);
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("run")
            .arg("--dir")
            .arg(&area.dir)
            .arg("--socket")
            .arg(&area.socket)
            .arg("--upstream")
            .arg(sink.url())
            .arg("--sync")
            .arg(args.sync.to_string())
            .arg("--linger")
            .arg("24h")
            .arg("--max-record-bytes")
            .arg(max_record.to_string())
            .arg("--log-level")
            .arg("warn");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ECHOPOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| CommandError::fatal(format!("cannot start {} run: {e}", exe.display())))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            let _ = std::thread::Builder::new()
                .name("echopost-bench-stderr".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut t) = tail.lock() {
                            t.extend(&buf[..n]);
                            let excess = t.len().saturating_sub(STDERR_TAIL);
                            t.drain(..excess);
                        }
                    }
                });
        }
        let mut d = SpawnedDaemon {
            child,
            area,
            stderr,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                // Give the stderr thread a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(CommandError::fatal(format!(
                    "the daemon exited with {status} while starting:\n{}",
                    d.stderr_tail()
                )));
            }
            if let Some(c) = super::connect_live(&d.area.socket).await
                && c.is_serving().await
            {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                let tail = d.stderr_tail();
                d.kill();
                return Err(CommandError::fatal(format!(
                    "the daemon did not answer on {} within {}:\n{tail}",
                    d.area.socket.display(),
                    fmt_duration(START_TIMEOUT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|t| String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).into_owned())
            .unwrap_or_default()
    }

    /// SIGTERM, then waits (SIGKILL after [`STOP_TIMEOUT`]).
    async fn stop(&mut self) -> ExitStatus {
        if let Ok(Some(s)) = self.child.try_wait() {
            return s;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return s,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => {
                    eprintln!(
                        "echopost bench: the daemon did not stop within {}; killing it",
                        fmt_duration(STOP_TIMEOUT)
                    );
                    return self.kill();
                }
            }
        }
    }

    fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(s) => s,
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
        }
    }

    /// Removes the temporary directory (a `--dir` is kept).
    fn cleanup(mut self) {
        if let Some(t) = self.area.temp.take()
            && let Err(e) = t.close()
        {
            eprintln!("echopost bench: cannot remove the temporary directory: {e}");
        }
    }
}

impl Drop for SpawnedDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Progress

/// A one-line progress display on stderr: redrawn a few times per second on a terminal,
/// a plain line every [`PROGRESS_PLAIN`] otherwise (so long runs in CI logs show life),
/// nothing for short runs that are not on a terminal.
struct Progress {
    tty: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    fn show(&mut self, fraction: f64, text: &str) {
        let now = Instant::now();
        let every = if self.tty {
            PROGRESS_TTY
        } else {
            PROGRESS_PLAIN
        };
        match self.last {
            None => {
                // The first line waits a full period: short runs print nothing.
                self.last = Some(now);
                return;
            }
            Some(t) if now - t < every => return,
            _ => {}
        }
        self.last = Some(now);
        let width = 24usize;
        let filled = ((fraction.clamp(0.0, 1.0) * width as f64) as usize).min(width);
        let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled));
        let pct = (fraction.clamp(0.0, 1.0) * 100.0) as u32;
        if self.tty {
            eprint!("\r\x1b[2K{bar} {pct:>3}%  {text}");
            self.shown = true;
        } else {
            eprintln!("{bar} {pct:>3}%  {text}");
        }
    }

    fn clear(&mut self) {
        if self.tty && self.shown {
            eprint!("\r\x1b[2K");
        }
        self.shown = false;
        self.last = None;
    }
}

// ---------------------------------------------------------------------------------------
// Machine and memory

impl Machine {
    fn probe(dir: &Path) -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            os: os_name(),
            memory_bytes: memory_total(),
            storage_fs: fs_type(dir),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("cpu model")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn memory_total() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&info, "MemTotal:")
}

/// A `Name:   1234 kB` field of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

fn os_name() -> String {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: uname fills the struct it is given; it is zeroed, so on failure every field
    // is an empty NUL-terminated string.
    let rc = unsafe { libc::uname(u.as_mut_ptr()) };
    if rc != 0 {
        return std::env::consts::OS.to_owned();
    }
    // SAFETY: initialised by uname (or zeroed).
    let u = unsafe { u.assume_init() };
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname's fields are NUL-terminated within their arrays.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    format!(
        "{} {} {}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    )
}

#[cfg(target_os = "linux")]
fn fs_type(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `buf` is valid for writes.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statfs succeeded and initialised the struct.
    let magic = unsafe { buf.assume_init() }.f_type as u64 & 0xFFFF_FFFF;
    Some(
        match magic {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x794C_7630 => "overlayfs",
            0x2FC1_2FC1 => "zfs",
            0xF2F5_2010 => "f2fs",
            0x6969 => "nfs",
            0x6573_5546 => "fuse",
            0x0000_9FA0 => "proc",
            _ => return Some(format!("unknown (magic {magic:#x})")),
        }
        .to_owned(),
    )
}

#[cfg(not(target_os = "linux"))]
fn fs_type(_path: &Path) -> Option<String> {
    None
}

/// The daemon's peak resident memory (Linux `/proc`); `None` elsewhere.
mod rss {
    /// `VmHWM` of `pid`, in bytes.
    #[cfg(target_os = "linux")]
    pub fn peak(pid: u32) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        super::kib_field(&s, "VmHWM:")
    }

    /// Resets `VmHWM` to the current RSS, so the next [`peak`] covers only what follows.
    #[cfg(target_os = "linux")]
    pub fn reset_peak(pid: u32) {
        // Best effort: without it the peaks are "since start", which is still an upper
        // bound; the report then says so through equal figures.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }

    #[cfg(not(target_os = "linux"))]
    pub fn peak(_pid: u32) -> Option<u64> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub fn reset_peak(_pid: u32) {}
}

// ---------------------------------------------------------------------------------------
// Text report

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_rss(b: Option<u64>) -> String {
    b.map_or_else(|| "n/a".to_owned(), fmt_bytes)
}

/// The text form of the report.
pub fn human(r: &BenchReport) -> String {
    let mut o = String::new();
    let m = &r.machine;
    o.push_str("echopost bench\n");
    o.push_str(&format!(
        "  machine     {} CPU(s){}, {}{}\n",
        m.cpus,
        m.cpu_model
            .as_ref()
            .map_or(String::new(), |c| format!(" ({c})")),
        m.os,
        m.memory_bytes
            .map_or(String::new(), |b| format!(", {} RAM", fmt_bytes(b)))
    ));
    let d = &r.daemon;
    o.push_str(&format!(
        "  daemon      echopost {}, pid {}, {}, sync {}{}\n",
        d.version,
        d.pid,
        if d.started_by_bench {
            "started by the bench"
        } else {
            "given by --socket"
        },
        d.sync_policy,
        r.machine
            .storage_fs
            .as_ref()
            .map_or(String::new(), |f| format!(", directory on {f}"))
    ));
    let l = &r.load;
    let mut limit = Vec::new();
    if let Some(s) = l.duration_seconds {
        limit.push(format!("for {}", fmt_duration(Duration::from_secs_f64(s))));
    }
    if let Some(b) = l.total_bytes {
        limit.push(format!("up to {} of payload", fmt_bytes(b)));
    }
    o.push_str(&format!(
        "  load        {} producer(s){}, batches of {} record(s) of {} B, {}, {}\n",
        l.producers,
        if l.connections == 0 {
            String::new()
        } else {
            format!(" sharing {} connection(s)", l.connections.min(l.producers))
        },
        fmt_count(u64::from(l.batch_records)),
        l.record_bytes,
        if l.window <= 1 {
            "one append in flight each (unary Append)".to_owned()
        } else {
            format!("{} appends in flight each (AppendStream)", l.window)
        },
        limit.join(" or ")
    ));
    let i = &r.ingest;
    o.push_str("\ningest\n");
    o.push_str(&format!(
        "  stored      {} records in {} appends, {:.2} s\n",
        fmt_count(i.records),
        fmt_count(i.appends),
        i.seconds
    ));
    o.push_str(&format!(
        "  throughput  {} records/s, {:.1} MB/s of payload\n",
        fmt_count(i.records_per_second as u64),
        i.mb_per_second
    ));
    o.push_str(&format!(
        "  latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (per append, send to durable ack)\n",
        fmt_us(i.latency.p50_us),
        fmt_us(i.latency.p90_us),
        fmt_us(i.latency.p99_us),
        fmt_us(i.latency.p999_us),
        fmt_us(i.latency.max_us)
    ));
    o.push_str(&format!(
        "  daemon RSS  peak {} while ingesting\n",
        fmt_rss(i.peak_rss_bytes)
    ));
    match (&r.drain, &r.drain_skipped) {
        (Some(dr), _) => {
            o.push_str("\ndrain (to the no-op sink)\n");
            o.push_str(&format!(
                "  replayed    {} records in {:.2} s{}\n",
                fmt_count(dr.records),
                dr.seconds,
                dr.wait_for_first_delivery_seconds
                    .map_or(String::new(), |w| format!(
                        " (first delivery {:.2} s after the sink turned healthy)",
                        w
                    ))
            ));
            o.push_str(&format!(
                "  throughput  {} records/s, {:.1} MB/s of payload{}\n",
                fmt_count(dr.records_per_second as u64),
                dr.mb_per_second,
                dr.wire_mb_per_second
                    .map_or(String::new(), |w| format!(" ({w:.1} MB/s on the wire)"))
            ));
            o.push_str(&format!(
                "  daemon RSS  peak {} while replaying\n",
                fmt_rss(dr.peak_rss_bytes)
            ));
        }
        (None, Some(why)) => o.push_str(&format!("\ndrain: skipped ({why})\n")),
        (None, None) => {}
    }
    if r.interrupted {
        o.push_str("\ninterrupted: the figures cover the run until Ctrl-C\n");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_claimed_per_batch() {
        let s = Shared::default();
        let mut n = 0;
        while s.claim(100, Some(1000)) {
            n += 1;
        }
        assert_eq!(n, 10);
        let s = Shared::default();
        assert!(s.claim(100, None));
        s.stop.store(true, Ordering::Relaxed);
        assert!(!s.claim(100, None));
    }

    #[test]
    fn templates_differ_per_producer_and_have_the_requested_size() {
        let cfg = ProducerConfig {
            batch: 3,
            record_bytes: 256,
            window: 1,
            total_bytes: None,
        };
        let a = template(0, &cfg);
        let b = template(1, &cfg);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|r| r.payload.len() == 256));
        assert_ne!(a[0].payload, b[0].payload);
        assert_ne!(a[0].payload, a[1].payload);
    }

    #[test]
    fn proc_fields() {
        let status = "Name:\techopost\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(23456 * 1024));
        assert_eq!(kib_field(status, "VmPeak:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_peak_rss_is_readable() {
        let p = rss::peak(std::process::id()).unwrap();
        assert!(p > 0);
    }
}
