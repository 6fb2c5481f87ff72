//! Engine benchmarks: `cargo bench -p echopost-log`.
//!
//! * `append/*`: durable appends (policy `always`) of 256-byte records in batches of 1,
//!   100 and 1000, each next to a raw baseline that `pwrite`s the same number of bytes
//!   to an appended file and `fdatasync`s it, in the same run. The summary at the end
//!   prints engine/raw throughput ratios (1.0 = as fast as the bare syscalls), and the
//!   same ratio for frames as the daemon stores them for an idempotent producer writing
//!   to a stream (issue 14): each record a `Record` with its `stream` set, each frame
//!   with the producer's id and number as its metadata entry, written the daemon's way
//!   (`prepare`, a group writer, `wait_durable`), against raw writes of as many bytes.
//! * `append_concurrent/64_threads_x1`: 64 threads appending single records at once,
//!   where group commit shares `fdatasync`s.
//! * `read/sequential`: reading a 256 MiB backlog front to back (CRC checked): owned records
//!   in batches of 1000 (copied) and of 4 MiB (cut from the read buffers), and borrowed ones.
//! * `open/*`: opening a log holding a 1 GiB backlog versus a 32 MiB one.
//!
//! Benchmarks write real files under `ECHOPOST_BENCH_DIR` (default: the system temp dir),
//! which should be on the disk you care about.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use echopost_log::{BatchBody, Log, LogOptions, SyncPolicy};

const RECORD: usize = 256;
/// Bytes one record occupies in a frame body (payload + length prefix).
const RECORD_ON_DISK: usize = RECORD + 4;
const FRAME_HEADER: usize = 32;
const SEGMENT_BYTES: u64 = 64 << 20;

fn bench_root() -> PathBuf {
    std::env::var_os("ECHOPOST_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("echopost-bench-{name}-"))
        .tempdir_in(bench_root())
        .expect("bench scratch directory")
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = vec![0u8; RECORD];
            r[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r
        })
        .collect()
}

/// Appends writes to a file with `pwrite` + `fdatasync`, starting a new file every
/// segment's worth and keeping the old ones, as the engine does when nothing is
/// acknowledged. The engine's lower bound.
struct RawAppender {
    dir: PathBuf,
    file: File,
    offset: u64,
    files: u64,
}

impl RawAppender {
    fn new(dir: &Path) -> Self {
        let file = Self::create(dir, 0);
        RawAppender {
            dir: dir.to_owned(),
            file,
            offset: 0,
            files: 0,
        }
    }

    fn create(dir: &Path, n: u64) -> File {
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join(format!("raw-{n}")))
            .expect("raw file")
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.offset + bytes.len() as u64 > SEGMENT_BYTES {
            self.files += 1;
            self.file = Self::create(&self.dir, self.files);
            self.offset = 0;
        }
        self.file.write_all_at(bytes, self.offset).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.offset += bytes.len() as u64;
    }
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(6));
    for batch in [1usize, 100, 1000] {
        let recs = records(batch);
        let frame_bytes = FRAME_HEADER + batch * RECORD_ON_DISK;
        g.throughput(Throughput::Bytes((batch * RECORD) as u64));
        // Interleave: raw first, then the engine, on fresh directories.
        {
            let dir = scratch("raw");
            let mut raw = RawAppender::new(dir.path());
            let buf = vec![7u8; frame_bytes];
            g.bench_function(BenchmarkId::new("raw_write_fdatasync", batch), |b| {
                b.iter(|| raw.append(black_box(&buf)))
            });
        }
        {
            let dir = scratch("log");
            let log = Log::open(dir.path(), LogOptions::default()).expect("open");
            g.bench_function(BenchmarkId::new("echopost_log", batch), |b| {
                b.iter(|| log.append(black_box(&recs)).expect("append"))
            });
        }
    }
    g.finish();
}

fn bench_concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_concurrent");
    g.measurement_time(Duration::from_secs(6));
    g.sample_size(20);
    const THREADS: usize = 64;
    const PER_THREAD: usize = 50;
    g.throughput(Throughput::Elements((THREADS * PER_THREAD) as u64));
    let dir = scratch("conc");
    let log = Arc::new(Log::open(dir.path(), LogOptions::default()).expect("open"));
    let rec = records(1);
    g.bench_function("64_threads_x1", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..THREADS {
                        let log = &log;
                        let rec = &rec;
                        s.spawn(move || {
                            for _ in 0..PER_THREAD {
                                log.append(rec).expect("append");
                            }
                        });
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Fills a log with `bytes` of 256-byte records in batches of 1000, quickly (policy
/// `never` plus one final sync: the content is what matters here, not the fill speed).
fn fill(dir: &Path, bytes: u64) {
    let opts = LogOptions {
        sync: SyncPolicy::Never,
        segment_bytes: SEGMENT_BYTES,
        ..LogOptions::default()
    };
    let log = Log::open(dir, opts).expect("open");
    let recs = records(1000);
    let mut written = 0u64;
    while written < bytes {
        log.append(&recs).expect("append");
        written += (1000 * RECORD) as u64;
    }
    log.close().expect("close");
}

fn bench_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    const BACKLOG: u64 = 256 << 20;
    let dir = scratch("read");
    fill(dir.path(), BACKLOG);
    let log = Log::open(dir.path(), LogOptions::default()).expect("open");
    let total = log.stats().backlog_records;
    g.throughput(Throughput::Bytes(total * RECORD as u64));
    g.bench_function("sequential_256MiB", |b| {
        b.iter(|| drain_in_batches(&log, 1000, total))
    });
    // The same read in 4 MiB batches, the shape `shared/peers` drains with: large enough
    // that `next_batch` cuts the records from its read buffers instead of copying them
    // (issue 17; a batch under half the buffers it would keep alive is copied).
    g.bench_function("sequential_256MiB_4MiB_batches", |b| {
        b.iter(|| drain_in_batches(&log, 16384, total))
    });
    // The same read with the records lent from the frame buffer (issue 17): no copy and
    // no allocation per record.
    g.bench_function("sequential_256MiB_borrowed", |b| {
        b.iter(|| {
            let mut r = log.reader(1);
            let mut n = 0u64;
            let mut sum = 0u64;
            loop {
                let got = r
                    .read_each(1000, 4 << 20, |_, data| {
                        sum = sum.wrapping_add(data.len() as u64);
                        true
                    })
                    .expect("read");
                if got == 0 {
                    break;
                }
                n += got as u64;
            }
            assert_eq!(n, total);
            black_box(sum)
        })
    });
    g.finish();
}

fn bench_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    for (name, bytes) in [("backlog_32MiB", 32u64 << 20), ("backlog_1GiB", 1 << 30)] {
        let dir = scratch("open");
        fill(dir.path(), bytes);
        g.bench_function(name, |b| {
            b.iter(|| {
                let log = Log::open(dir.path(), LogOptions::default()).expect("open");
                black_box(log.stats().next_seq)
            })
        });
    }
    g.finish();
}

/// Reads the whole log with `next_batch(max_records, 4 MiB)`, looking at every record as
/// a consumer does; checks that it got `total` records.
fn drain_in_batches(log: &Log, max_records: usize, total: u64) -> u64 {
    let mut r = log.reader(1);
    let mut n = 0u64;
    let mut sum = 0u64;
    loop {
        let batch = r.next_batch(max_records, 4 << 20).expect("read");
        if batch.is_empty() {
            break;
        }
        for rec in &batch {
            sum = sum.wrapping_add(rec.data.len() as u64);
        }
        n += batch.len() as u64;
    }
    assert_eq!(n, total);
    black_box(sum)
}

/// The frame checksum: the `crc-fast` implementation the engine uses (`crc.rs`) against the
/// `crc32c` crate it replaced (issue 17), on one 1000-record frame's body.
fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    let body: Vec<u8> = records(1000).concat();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("crc32c_256KB/crc_fast", |b| {
        b.iter(|| crc_fast::crc32_iscsi(black_box(&body)))
    });
    g.bench_function("crc32c_256KB/crc32c_crate", |b| {
        b.iter(|| crc32c::crc32c(black_box(&body)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_concurrent,
    bench_read,
    bench_open,
    bench_checksum
);

/// Reads criterion's point estimate (mean, ns per iteration) for one benchmark.
fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // {"mean":{"confidence_interval":{...},"point_estimate":123.4,...
    let mean = text.split("\"mean\"").nth(1)?;
    let pe = mean.split("\"point_estimate\":").nth(1)?;
    pe.split([',', '}']).next()?.trim().parse().ok()
}

/// Engine/raw throughput ratio measured by alternating rounds of raw and engine appends,
/// so that load from anything else on the machine affects both sides alike.
fn paired_ratio(batch: usize, rounds: usize, per_round: usize) -> (f64, f64, f64) {
    let recs = records(batch);
    let buf = vec![7u8; FRAME_HEADER + batch * RECORD_ON_DISK];
    let raw_dir = scratch("pair-raw");
    let log_dir = scratch("pair-log");
    let mut raw = RawAppender::new(raw_dir.path());
    let log = Log::open(log_dir.path(), LogOptions::default()).expect("open");
    for _ in 0..per_round {
        raw.append(&buf);
        log.append(&recs).expect("append");
    }
    let (mut t_raw, mut t_log) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            raw.append(black_box(&buf));
        }
        t_raw += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_round {
            log.append(black_box(&recs)).expect("append");
        }
        t_log += t.elapsed();
    }
    let ops = (rounds * per_round) as f64;
    let mb = |d: Duration| ops * (batch * RECORD) as f64 / d.as_secs_f64() / 1e6;
    (
        mb(t_log),
        mb(t_raw),
        t_raw.as_secs_f64() / t_log.as_secs_f64(),
    )
}

/// Appends a protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `n` encoded `echopost.v1.Record`s of `RECORD` bytes each: `stream` (field 2) set,
/// the rest payload (field 3). Encoded by hand: the engine does not depend on the proto.
fn stream_records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let stream = b"orders-0007";
            let mut r = vec![0x12, stream.len() as u8];
            r.extend_from_slice(stream);
            let payload = RECORD - r.len() - 3;
            r.push(0x1A);
            varint(payload as u64, &mut r);
            r.extend((0..payload).map(|j| (i + j) as u8));
            assert_eq!(r.len(), RECORD);
            r
        })
        .collect()
}

/// The daemon's frame metadata for producer `producer-0042` at `number`: `FrameMeta {
/// string producer_id = 1; uint64 producer_sequence = 2; }`.
fn producer_meta(number: u64) -> Vec<u8> {
    let id = b"producer-0042";
    let mut m = vec![0x0A, id.len() as u8];
    m.extend_from_slice(id);
    m.push(0x10);
    varint(number, &mut m);
    m
}

/// One append the daemon's way: body with the producer's metadata, `prepare`, a group
/// writer, `wait_durable`.
fn append_as_daemon(log: &Log, recs: &[Vec<u8>], number: u64) -> u64 {
    let mut body = BatchBody::with_meta(recs.len() * RECORD_ON_DISK, &producer_meta(number));
    for r in recs {
        body.push(r);
    }
    let batch = log.prepare(body).expect("prepare");
    let mut w = log.group_writer();
    let a = w.stage(batch).expect("stage");
    w.finish().expect("write");
    log.wait_durable(a.last_seq).expect("sync");
    a.last_seq
}

/// [`paired_ratio`] for frames with a producer id and streams set (see the module
/// documentation); the raw side writes as many bytes as the engine's frame.
fn paired_ratio_streams(batch: usize, rounds: usize, per_round: usize) -> (f64, f64, f64) {
    let recs = stream_records(batch);
    let raw_dir = scratch("pair-raw-streams");
    let log_dir = scratch("pair-log-streams");
    let log = Log::open(log_dir.path(), LogOptions::default()).expect("open");
    let frame = {
        let mut body = BatchBody::with_meta(0, &producer_meta(u64::MAX));
        for r in &recs {
            body.push(r);
        }
        log.prepare(body).expect("prepare").frame_len()
    };
    let buf = vec![7u8; frame];
    let mut raw = RawAppender::new(raw_dir.path());
    let mut number = 1;
    for _ in 0..per_round {
        raw.append(&buf);
        append_as_daemon(&log, &recs, number);
        number += batch as u64;
    }
    let (mut t_raw, mut t_log) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            raw.append(black_box(&buf));
        }
        t_raw += t.elapsed();
        let t = Instant::now();
        for _ in 0..per_round {
            black_box(append_as_daemon(&log, black_box(&recs), number));
            number += batch as u64;
        }
        t_log += t.elapsed();
    }
    let ops = (rounds * per_round) as f64;
    let mb = |d: Duration| ops * (batch * RECORD) as f64 / d.as_secs_f64() / 1e6;
    (
        mb(t_log),
        mb(t_raw),
        t_raw.as_secs_f64() / t_log.as_secs_f64(),
    )
}

fn summary() {
    println!(
        "\n== paired ratio: engine vs raw pwrite+fdatasync of the same bytes, alternating rounds"
    );
    for (batch, rounds, per_round) in [(1usize, 40, 100), (100, 40, 50), (1000, 40, 25)] {
        let (log_mb, raw_mb, ratio) = paired_ratio(batch, rounds, per_round);
        println!(
            "batch {batch:>4}: echopost {:>10.0} records/s {log_mb:>7.1} MB/s | raw {raw_mb:>7.1} MB/s | ratio {ratio:.3}",
            log_mb * 1e6 / RECORD as f64
        );
    }
    println!(
        "\n== paired ratio with producer ids and streams set (issue 14): daemon-style frames vs raw of the same bytes"
    );
    for (batch, rounds, per_round) in [(1usize, 40, 100), (1000, 40, 25)] {
        let (log_mb, raw_mb, ratio) = paired_ratio_streams(batch, rounds, per_round);
        println!(
            "batch {batch:>4}: echopost {:>10.0} records/s {log_mb:>7.1} MB/s | raw {raw_mb:>7.1} MB/s | ratio {ratio:.3}",
            log_mb * 1e6 / RECORD as f64
        );
    }
    println!("\n== criterion means (separate runs; sensitive to load drift between them)");
    for batch in [1, 100, 1000] {
        let raw = mean_ns("append", &format!("raw_write_fdatasync/{batch}"));
        let log = mean_ns("append", &format!("echopost_log/{batch}"));
        if let (Some(raw), Some(log)) = (raw, log) {
            let recs_per_s = batch as f64 / (log / 1e9);
            let mb_s = recs_per_s * RECORD as f64 / 1e6;
            println!(
                "batch {batch:>4}: echopost {recs_per_s:>10.0} records/s {mb_s:>7.1} MB/s | raw {:>7.1} MB/s | ratio {:.3}",
                batch as f64 * RECORD as f64 / (raw / 1e9) / 1e6,
                raw / log
            );
        }
    }
    if let Some(ns) = mean_ns("append_concurrent", "64_threads_x1") {
        println!(
            "64 threads x single-record appends: {:.0} durable appends/s",
            (64 * 50) as f64 / (ns / 1e9)
        );
    }
    for bench in [
        "sequential_256MiB",
        "sequential_256MiB_4MiB_batches",
        "sequential_256MiB_borrowed",
    ] {
        if let Some(ns) = mean_ns("read", bench) {
            println!(
                "read {bench}: {:.0} MB/s of records",
                (256u64 << 20) as f64 / (ns / 1e9) / 1e6
            );
        }
    }
    if let (Some(small), Some(big)) = (
        mean_ns("open", "backlog_32MiB"),
        mean_ns("open", "backlog_1GiB"),
    ) {
        println!(
            "open: 32 MiB backlog {:.2} ms, 1 GiB backlog {:.2} ms",
            small / 1e6,
            big / 1e6
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
