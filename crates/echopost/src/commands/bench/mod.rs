//! `echopost bench`: a load generator for the daemon, and the source of its quoted figures.
//!
//! # What it measures
//! 1. **Ingest.** `--producers` tasks, each with its own connection, append batches of
//!    `--batch` records of `--record-bytes` payload for `--duration` and/or until
//!    `--total-bytes` of payload are stored. With `--window 1` (the default) each producer
//!    sends one `Append` and waits for its acknowledgement — which the daemon sends only
//!    once the batch is durable under its sync policy — so the latency of each append is
//!    the time from sending to the durable acknowledgement. With a larger window the
//!    producer pipelines that many batches over one `AppendStream`. Latencies go into an
//!    HdrHistogram per producer (< 0.8 % error) → p50/p90/p99/p99.9.
//!    The producers speak gRPC through a lean client of their own (`wire`): a bare
//!    HTTP/2 connection and each producer's request encoded once, because the bench
//!    shares the CPUs with the daemon it measures.
//! 2. **Drain.** The daemon the bench starts has a built-in no-op sink as its upstream:
//!    an in-process gRPC server on 127.0.0.1 answering `echopost.v1.Sink/Deliver` with OK
//!    without decoding (so it costs the shared CPUs as little as possible), plus the
//!    standard health service; or, with `--sink http`, an HTTP/1.1 server that answers
//!    every verbatim replay (`--sink forward`) with 204. `--sink-latency` holds every
//!    answer that long (a main server that far away), and `--in-flight` is passed to the
//!    daemon, so the figures show what the delivery window buys at a given round trip. The health service says NOT_SERVING during ingest, so the
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
//!
//! # Layout
//! This module is the driver: it checks the flags, starts the daemon and the sink, runs
//! the phases in order and prints the report. Each concern has its own module:
//!
//! | module | concern |
//! |---|---|
//! | `load` | the ingest phase: producers, their counters and latency histograms |
//! | `wire` | the producers' lean gRPC client (one HTTP/2 connection, pre-encoded requests) |
//! | `drain` | the drain phase: replay of the backlog into the sink, timed |
//! | [`noop_sink`] | the `Sink/Deliver` server that accepts everything (also used by `benches/drain.rs`) |
//! | [`http_sink`] | the HTTP server that accepts every verbatim replay (`--sink http`) |
//! | `sink` | which of the two the daemon replays to, and its `--sink-latency` |
//! | `daemon` | the `echopost run` child the bench starts, stops and cleans up after |
//! | `probe` | the machine's description and the daemon's peak RSS |
//! | `progress` | the progress line on stderr |
//! | `report` | the report's shape (`--json`) and its text form |

mod daemon;
mod drain;
pub mod http_sink;
mod load;
pub mod noop_sink;
mod probe;
mod progress;
mod report;
mod sink;
mod wire;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use echopost_client::{Client, StatusResponse};

use super::{CommandError, CommandResult, fmt_bytes, print_stdout};
use crate::cli::BenchArgs;
use crate::daemon::exit::ExitCode;
use crate::ingest::limits::MAX_MESSAGE_BYTES;
use probe::rss;
use progress::ProgressLine;
use sink::BenchSink;

pub use probe::Machine;
pub use report::{
    BenchReport, DaemonInfo, DrainReport, DrainSink, IngestReport, Latency, LoadSettings, human,
};

/// Ingest time when neither `--duration` nor `--total-bytes` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Largest encoded append the bench builds (the daemon's limit is 64 MiB per message).
const MAX_APPEND_BYTES: u64 = (MAX_MESSAGE_BYTES as u64) - (4 << 20);

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
    if args.front_door
        && (args.batch != 1 || args.window != 1 || args.sink != crate::cli::BenchSinkArg::Deliver)
    {
        return Err(CommandError::usage(
            "--front-door makes one unary call per record, one at a time per producer (use --producers for concurrency), replayed to the deliver sink: use it with --batch 1, --window 1 and --sink deliver",
        ));
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

/// Starts the daemon (unless `--socket`), measures, stops the daemon whatever happened.
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
            let sink = BenchSink::start(args.sink, args.sink_latency)
                .await
                .map_err(|e| CommandError::fatal(format!("cannot start the no-op sink: {e}")))?;
            let area = daemon::Area::new(args.dirs.dir.as_deref())?;
            let daemon = daemon::SpawnedDaemon::start(area, &sink, args).await?;
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

/// The phases, in order, against the daemon on `socket`: ingest, then drain.
async fn measure(
    args: &BenchArgs,
    socket: &Path,
    sink: Option<&BenchSink>,
    started_by_bench: bool,
    interrupted: &Arc<AtomicBool>,
) -> Result<BenchReport, CommandError> {
    let client = Client::connect(socket).await.map_err(|e| {
        CommandError::usage(format!("cannot benchmark the daemon on --socket: {e}"))
    })?;
    let st = status(&client).await?;
    let pid = st.pid;
    let machine = Machine::probe(Path::new(&st.dir));
    let load = LoadSettings {
        producers: args.producers,
        connections: args.connections,
        batch_records: args.batch,
        record_bytes: args.record_bytes,
        window: args.window,
        front_door: args.front_door,
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
    let mut progress = ProgressLine::new();

    rss::reset_peak(pid);
    let ingest = load::ingest(args, socket, &mut progress, interrupted).await?;
    let ingest_rss = rss::peak(pid);
    let ingest = IngestReport {
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
            let d = drain::drain(
                &client,
                sink,
                before.backlog_records,
                args.record_bytes,
                &mut progress,
                interrupted,
            )
            .await?;
            d.map(|d| DrainReport {
                peak_rss_bytes: rss::peak(pid),
                sink: sink.map(|s| DrainSink {
                    kind: match s {
                        BenchSink::Deliver(_) => "deliver".to_owned(),
                        BenchSink::Http(_) => "http".to_owned(),
                    },
                    latency_seconds: args.sink_latency.as_secs_f64(),
                    in_flight: args.in_flight,
                }),
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

/// `Status` of the daemon under test, within the client's deadline
/// ([`echopost_client::DEFAULT_TIMEOUT`]).
async fn status(client: &Client) -> Result<StatusResponse, CommandError> {
    client
        .status()
        .await
        .map_err(|e| CommandError::fatal(format!("Status failed: {e}")))
}
