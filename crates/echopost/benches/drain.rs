//! Drain throughput: how fast the replayer empties a backlog into a `deliver` sink.
//!
//! Fills a log in a temporary directory with N records of 256-byte payload, starts a
//! `echopost.v1.Sink` on loopback that does nothing but answer OK (it does not even
//! decode the request: the replayer is what is measured, not prost on the receiving
//! side), runs `echopost::replay::run` until the backlog is empty, and prints records/s
//! and MB/s of payload. Everything (replayer, engine, sink) shares one 2-thread runtime.
//!
//! ```text
//! cargo bench -p echopost --bench drain
//! ECHOPOST_BENCH_RECORDS=2000000 ECHOPOST_BENCH_RUNS=5 cargo bench -p echopost --bench drain
//! ```
//! Each run also prints the CPU time the process used (replayer, engine and sink
//! together) and the load average, since wall-clock figures on a shared machine say as
//! much about the neighbours as about the code.
//!
//! `ECHOPOST_BENCH_LATENCY_MS=20` makes the sink hold each answer that long (a main server
//! that far away) and `ECHOPOST_BENCH_IN_FLIGHT=8` sets the replayer's `--in-flight`
//! (issue 16):
//! `ECHOPOST_BENCH_LATENCY_MS=20 ECHOPOST_BENCH_IN_FLIGHT=8 cargo bench -p echopost --bench drain`.
//!
//! `ECHOPOST_BENCH_SETTING=0|1|2` runs one setting only; `ECHOPOST_BENCH_PAUSE=1` waits 1 s
//! between filling and draining (to attach a profiler). Filling is not timed. The clock starts when the replayer starts (including its first
//! health probe and connection) and stops when the last record is acknowledged, i.e. the
//! backlog is empty and its segments deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost::commands::bench::noop_sink::NoopSink;
use echopost::config::{ReplaySettings, SinkKind};
use echopost::replay::{self, Progress};
use echopost_log::{Log, LogOptions, SyncPolicy};
use echopost_proto::v1::Record;
use prost::Message;
use tokio::sync::watch;

const PAYLOAD: usize = 256;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(dir: &std::path::Path, n: u64) -> std::io::Result<()> {
    let log = Log::open(
        dir,
        LogOptions {
            sync: SyncPolicy::Never,
            ..LogOptions::default()
        },
    )
    .map_err(std::io::Error::other)?;
    let mut i = 1u64;
    while i <= n {
        let end = (i + 4095).min(n);
        let batch: Vec<Vec<u8>> = (i..=end)
            .map(|j| {
                Record {
                    id: format!("{j:016x}"),
                    stream: "bench".into(),
                    payload: vec![(j % 251) as u8; PAYLOAD],
                    timestamp_unix_nanos: 1_700_000_000_000_000_000 + j as i64,
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        log.append(&batch).map_err(std::io::Error::other)?;
        i = end + 1;
    }
    log.close().map_err(std::io::Error::other)
}

struct Outcome {
    secs: f64,
    /// CPU time (user + system, all threads: replayer, engine and sink) during the drain.
    cpu_secs: f64,
    calls: u64,
    wire_bytes: u64,
}

async fn run_once(
    n: u64,
    batch_records: usize,
    batch_bytes: usize,
    window: Option<u32>,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || fill(&d, n)).await??;
    let log = Arc::new(Log::open(dir.path(), LogOptions::default())?);
    assert_eq!(log.stats().backlog_records, n);
    if std::env::var_os("ECHOPOST_BENCH_PAUSE").is_some() {
        // For attaching a profiler to the drain only.
        eprintln!("filled; draining in 1 s (pid {})", std::process::id());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let latency = Duration::from_millis(env_or("ECHOPOST_BENCH_LATENCY_MS", 0));
    let sink = NoopSink::start(window, latency).await?;
    sink.set_serving(true).await;

    let cfg = ReplaySettings {
        sink: Some(SinkKind::Deliver),
        batch_records: batch_records as u64,
        batch_bytes: batch_bytes as u64,
        request_timeout: Duration::from_secs(30),
        in_flight: u32::try_from(env_or("ECHOPOST_BENCH_IN_FLIGHT", 1)).unwrap_or(1),
        ..ReplaySettings::new(sink.url(), dir.path())
    }
    .validate()?
    .with_source_id("bench");
    let progress = Arc::new(Progress::default());
    let (tx, rx) = watch::channel(false);
    let started = Instant::now();
    let cpu_before = cpu_time();
    let task = tokio::spawn(replay::run(
        Arc::clone(&log),
        cfg,
        Arc::clone(&progress),
        Arc::new(echopost::disk_quota::DiskQuota::unlimited()),
        rx,
    ));
    while log.stats().backlog_records > 0 {
        if task.is_finished() {
            return Err("replayer stopped before the backlog was drained".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_time() - cpu_before;
    let _ = tx.send(true);
    task.await??;
    let delivered = progress.delivered_records.load(Ordering::Relaxed);
    if delivered != n {
        return Err(format!("delivered {delivered} of {n}").into());
    }
    Ok(Outcome {
        secs,
        cpu_secs,
        calls: sink.calls(),
        wire_bytes: sink.wire_bytes(),
    })
}

/// User + system CPU seconds of this process so far.
fn cpu_time() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = env_or("ECHOPOST_BENCH_RECORDS", 1_000_000);
    let runs = env_or("ECHOPOST_BENCH_RUNS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "drain: {n} records x {PAYLOAD} B payload ({:.0} MB), {runs} runs per setting, deliver sink answering OK",
        (n as f64 * PAYLOAD as f64) / 1e6
    );
    // The sink's HTTP/2 receive window bounds how much the replayer may send before the
    // sink acknowledges it; a main server that takes 4 MiB batches should offer a window
    // of that order (grpc-go grows its own; tonic/hyper default to 1 MiB).
    let settings: [(usize, usize, Option<u32>, &str); 3] = [
        (
            16_384,
            4 << 20,
            Some(8 << 20),
            "batch 16384 rec / 4 MiB, sink window 8 MiB",
        ),
        (
            1000,
            4 << 20,
            Some(8 << 20),
            "batch 1000 rec (CLI default) / 4 MiB, sink window 8 MiB",
        ),
        (
            16_384,
            4 << 20,
            None,
            "batch 16384 rec / 4 MiB, sink window 1 MiB (hyper default)",
        ),
    ];
    let only: Option<usize> = std::env::var("ECHOPOST_BENCH_SETTING")
        .ok()
        .and_then(|v| v.parse().ok());
    for (k, (batch_records, batch_bytes, window, label)) in settings.into_iter().enumerate() {
        if only.is_some_and(|o| o != k) {
            continue;
        }
        let mut best = f64::MAX;
        let mut all = Vec::new();
        for _ in 0..runs {
            let o = rt.block_on(run_once(n, batch_records, batch_bytes, window))?;
            let rps = n as f64 / o.secs;
            let mbps = rps * PAYLOAD as f64 / 1e6;
            let payload_gb = n as f64 * PAYLOAD as f64 / 1e9;
            println!(
                "  {label}: {:.3} s, {:.0} records/s, {:.0} MB/s payload ({} requests, {:.0} MB/s on the wire); CPU {:.2} s = {:.2} CPU-s per GB of payload; load {}",
                o.secs,
                rps,
                mbps,
                o.calls,
                o.wire_bytes as f64 / o.secs / 1e6,
                o.cpu_secs,
                o.cpu_secs / payload_gb,
                loadavg()
            );
            best = best.min(o.secs);
            all.push(o.secs);
        }
        all.sort_by(f64::total_cmp);
        let median = all[all.len() / 2];
        println!(
            "  {label}: median {:.0} records/s = {:.0} MB/s payload; best {:.0} MB/s",
            n as f64 / median,
            n as f64 / median * PAYLOAD as f64 / 1e6,
            n as f64 / best * PAYLOAD as f64 / 1e6
        );
    }
    Ok(())
}
