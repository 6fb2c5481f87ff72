//! A warm drain of the shape `../shared/peers/run` measures, alone in a process, for
//! profiling the reader (issue 17): fills `DIR` with 256-byte records in 1000-record
//! frames (once, if it holds no log yet), then reads everything back `PASSES` times and
//! prints MB/s per pass.
//!
//! ```text
//! cargo build --release -p echopost-log --example drain
//! target/release/examples/drain DIR [batch|each] [PASSES] [MB]
//! perf record -g target/release/examples/drain DIR batch 8
//! ```
//! `batch` reads with `Reader::next_batch(16384, 4 MiB)` and looks at every record, as the
//! harness does; `each` with `Reader::read_each` (same bounds). `MB` (default 256) is the
//! backlog written on the first run.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use echopost_log::{Log, LogOptions};

const RECORD: usize = 256;
const FRAME_RECORDS: usize = 1000;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: drain DIR [batch|each] [PASSES] [MB]")?,
    );
    let mode = args.next().unwrap_or_else(|| "batch".into());
    let passes: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let mb: usize = args.next().map_or(Ok(256), |s| s.parse())?;
    if mode != "batch" && mode != "each" {
        return Err(format!("mode must be batch or each, not {mode:?}").into());
    }
    let log = Log::open(&dir, LogOptions::default())?;
    if log.stats().backlog_records == 0 {
        let mut payload = vec![0u8; RECORD * FRAME_RECORDS];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for frame in 0..(mb << 20) / payload.len() {
            for chunk in payload.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let records: Vec<&[u8]> = payload.chunks_exact(RECORD).collect();
            log.append(&records)
                .map_err(|e| format!("append of frame {frame}: {e}"))?;
        }
    }
    for _ in 0..passes {
        let mut reader = log.reader(1);
        let (mut records, mut bytes, mut check) = (0u64, 0u64, 0u64);
        let t = Instant::now();
        loop {
            let n = if mode == "batch" {
                let batch = reader.next_batch(16384, 4 << 20)?;
                for r in &batch {
                    bytes += r.data.len() as u64;
                    check ^= r.seq ^ u64::from(r.data[0]);
                }
                batch.len()
            } else {
                reader.read_each(16384, 4 << 20, |seq, data| {
                    bytes += data.len() as u64;
                    check ^= seq ^ u64::from(data[0]);
                    true
                })?
            };
            if n == 0 {
                break;
            }
            records += n as u64;
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "{mode}: {records} records, {:.0} MB/s (check {check:#x})",
            bytes as f64 / s / 1e6
        );
    }
    Ok(())
}
