//! `ListStreams`' backlog figures with many streams (issue 14): reading the whole backlog
//! per call (what `ListStreams` did before, kept as `streams::backlog::scan`, the tests'
//! reference) against the per-block index kept in the tables (`streams::backlog::figures`,
//! what it does now), in one run on one log, alternating.
//!
//! Fills a log in a temporary directory the way `examples/streams_load.rs` fills a daemon:
//! `STREAMS` streams, one record of 64 bytes each, in batches of 1000 (stored through the
//! daemon's encoding and tables), then delivers `DELIVERED` percent of it so the cursor is
//! inside a block, and times both paths `RUNS` times each, printing the medians.
//!
//! ```text
//! cargo bench -p echopost --bench list_streams
//! ECHOPOST_BENCH_STREAMS=100000 ECHOPOST_BENCH_RUNS=7 ECHOPOST_BENCH_DELIVERED=30 cargo bench -p echopost --bench list_streams
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use echopost::ingest::{RecordRules, encode_request};
use echopost::streams::{Streams, backlog, recover};
use echopost_log::{Log, LogOptions};
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::Record;
use prost::Message;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let streams = env("ECHOPOST_BENCH_STREAMS", 100_000);
    let runs = env("ECHOPOST_BENCH_RUNS", 5) as usize;
    let delivered = env("ECHOPOST_BENCH_DELIVERED", 30);
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogOptions::default())?;
    let (tables, _) = recover(&log, 10_000, streams as usize + 1, true)?;
    let shared = Streams::new(tables);
    let rules = RecordRules::sized(1 << 20);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(1000) {
        let records = chunk.iter().map(|i| {
            Record {
                stream: format!("stream-{i:06}"),
                payload: vec![b'x'; 64],
                timestamp_unix_nanos: 1 + *i as i64,
                ..Record::default()
            }
            .encode_to_vec()
        });
        let req = RawAppendRequest {
            records: records.map(Bytes::from).collect(),
            ..RawAppendRequest::default()
        };
        let (body, id) = encode_request(req, &rules, 0)?;
        let mut w = log.group_writer();
        let a = w.stage(log.prepare(body)?)?;
        w.finish()?;
        log.wait_durable(a.last_seq)?;
        if let Some(id) = id {
            shared.lock().apply(&id, a.first_seq, a.last_seq);
        }
    }
    let last = log.stats().next_seq - 1;
    log.ack(last * delivered / 100)?;
    let (mut full, mut index) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let a = backlog::scan(&log)?;
        full.push(t.elapsed());
        let t = Instant::now();
        let b = backlog::figures(&log, &shared)?;
        index.push(t.elapsed());
        assert_eq!(a, b, "the index disagrees with the backlog");
    }
    let summaries = shared.lock().backlog.summaries();
    let (full, index) = (median(full), median(index));
    println!(
        "{streams} streams, {} buffered records after delivering {delivered}%, {summaries} block summaries: \
         read the backlog {:.1} ms, index {:.1} ms (median of {runs}), {:.0}x",
        log.stats().backlog_records,
        full.as_secs_f64() * 1e3,
        index.as_secs_f64() * 1e3,
        full.as_secs_f64() / index.as_secs_f64()
    );
    Ok(())
}
