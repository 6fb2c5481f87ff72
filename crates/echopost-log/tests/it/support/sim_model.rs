//! Shared harness of the simulation suites (`crash_simulation`, `io_faults`, `corruption`):
//! an oracle of what the log must contain, seeded workload generators, and the seed runner
//! that turns any failure into a `seed=N` line plus a one-line reproduction command.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use echopost_log::format::PreparedFrame;
use echopost_log::sim::{SimFs, SimRng};
use echopost_log::{Compression, Error, Log, LogOptions, ReadBatch, StoredRecord};

/// Directory of the log inside every simulated file system.
pub fn dir() -> PathBuf {
    PathBuf::from("/data/log")
}

/// Opens the log in [`dir`] on `fs`.
pub fn open(fs: &SimFs, opts: &LogOptions) -> echopost_log::Result<Log> {
    Log::open_with_fs(Arc::new(fs.clone()), dir(), opts.clone())
}

/// Reads every record from `from` on, in batches of random size.
pub fn read_all(log: &Log, from: u64, rng: &mut SimRng) -> echopost_log::Result<Vec<StoredRecord>> {
    let mut r = log.reader(from);
    let mut out = Vec::new();
    loop {
        let n = 1 + rng.below(64) as usize;
        let bytes = 1 + rng.below(16 << 10) as usize;
        let b = r.next_batch(n, bytes)?;
        if b.is_empty() {
            return Ok(out);
        }
        out.extend(b);
    }
}

/// Reads an environment variable as a number (`None` if unset; a panic if malformed, so
/// that a typo does not silently run the default).
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

/// Runs `case(seed)`, turning an `Err` or a panic into a panic that names the seed and how
/// to replay it.
pub fn run_case<T>(seed: u64, repro: &str, case: impl FnOnce(u64) -> Result<T, String>) -> T {
    let outcome = catch_unwind(AssertUnwindSafe(|| case(seed)));
    let msg = match outcome {
        Ok(Ok(v)) => return v,
        Ok(Err(msg)) => msg,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".to_owned());
            format!("panicked: {what}")
        }
    };
    let repro = repro.replace("{seed}", &seed.to_string());
    eprintln!("FAILED seed={seed}: {msg}\nreproduce with: {repro}");
    panic!("seed={seed}: {msg}\nreproduce with: {repro}");
}

/// Turns a condition into an `Err` carrying a message (the suites return `Result<_, String>`
/// so that the seed runner can print the seed before failing).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

// ---------------------------------------------------------------------------------------
// Workload data
// ---------------------------------------------------------------------------------------

/// Fills `len` bytes, either incompressible or (with `compressible`) repetitive.
pub fn bytes(rng: &mut SimRng, len: usize, compressible: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    if compressible {
        let b = rng.next_u64().to_le_bytes();
        let period = 1 + rng.below(8) as usize;
        while v.len() < len {
            v.push(b[v.len() % period]);
        }
    } else {
        while v.len() < len {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        v.truncate(len);
    }
    v
}

/// A valid frame encoding (header, CRC, body) of a few records, as a record's payload:
/// recovery must not mistake such bytes inside a torn frame for a real frame that follows
/// the damage. The embedded frame announces an earlier sequence of this log (a record may
/// carry a copy of data read from the log); one announcing a sequence at or after the torn
/// frame's own would be indistinguishable from a real later frame, and recovery then
/// reports corruption rather than guess (see `FrameScanner::find_valid_frame_after`).
pub fn embedded_frame(rng: &mut SimRng, seq_hint: u64) -> Vec<u8> {
    let n = 1 + rng.below(3) as usize;
    let records: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let len = rng.below(24) as usize;
            bytes(rng, len, false)
        })
        .collect();
    let mut f = PreparedFrame::encode(&records, Compression::None).expect("small frame");
    // `seq_hint` is the sequence the batch holding this record will get.
    let seq = 1 + rng.below(seq_hint.saturating_sub(1).max(1));
    if seq >= seq_hint {
        return bytes(rng, 40, false); // no earlier sequence exists yet
    }
    f.seal_header(seq);
    let mut out = Vec::new();
    if rng.chance(50) {
        let n = rng_len(rng, 40);
        out.extend(bytes(rng, n, false));
    }
    out.extend_from_slice(&f.bytes);
    if rng.chance(50) {
        let n = rng_len(rng, 40);
        out.extend(bytes(rng, n, false));
    }
    out
}

fn rng_len(rng: &mut SimRng, max: u64) -> usize {
    rng.below(max + 1) as usize
}

/// One record of a random workload: mostly small, sometimes empty, sometimes big enough to
/// force segment rolls in 4 KiB segments, sometimes an embedded frame.
pub fn record(rng: &mut SimRng, seq_hint: u64) -> Vec<u8> {
    let compressible = rng.chance(40);
    match rng.below(100) {
        0..=7 => Vec::new(),
        8..=64 => {
            let len = 1 + rng_len(rng, 63);
            bytes(rng, len, compressible)
        }
        65..=87 => {
            let len = 64 + rng_len(rng, 536);
            bytes(rng, len, compressible)
        }
        88..=94 => {
            let len = 600 + rng_len(rng, 2600);
            bytes(rng, len, compressible)
        }
        _ => embedded_frame(rng, seq_hint),
    }
}

/// A batch of random records: usually a handful, occasionally dozens.
pub fn batch(rng: &mut SimRng, seq_hint: u64) -> Vec<Vec<u8>> {
    let n = if rng.chance(90) {
        1 + rng.below(5)
    } else {
        6 + rng.below(30)
    };
    (0..n).map(|_| record(rng, seq_hint)).collect()
}

// ---------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------

/// A batch the caller appended and the oracle knows the sequences of.
#[derive(Debug, Clone)]
pub struct Batch {
    pub first: u64,
    pub records: Vec<Vec<u8>>,
    /// Must survive any crash: the append returned under `always`, or the log declared it
    /// durable (`stats().durable_next`), or recovery found it on disk.
    pub durable: bool,
}

impl Batch {
    pub fn last(&self) -> u64 {
        self.first + self.records.len() as u64 - 1
    }
}

/// What the log must contain, derived only from what its API returned.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// Batches the engine accepted (append returned Ok) or recovery found, by first
    /// sequence. Batches at or below the acknowledged cursor are pruned.
    pub batches: BTreeMap<u64, Batch>,
    /// The appends that failed with an I/O error (or were cut by a crash), in order: one
    /// batch, or the batches of a group written together. Their frames may or may not be
    /// on disk, so after a crash any prefix of them may come back, each batch whole or not
    /// at all, from `next_seq` on.
    pub in_flight: Vec<Vec<Vec<u8>>>,
    /// Sequence the engine gives the next append.
    pub next_seq: u64,
    /// Acknowledgement known persisted (an `ack` returned Ok).
    pub acked_min: u64,
    /// Highest acknowledgement attempted (a failed `ack` may still have reached the disk).
    pub acked_max: u64,
    /// Highest sequence ever handed to a caller by a successful append that must survive:
    /// never to be reissued.
    pub max_durable_seq: u64,
    /// Records compared byte for byte (for the printed counts).
    pub records_verified: u64,
}

/// How a check of the log against the model ended.
#[derive(Debug)]
pub enum CheckError {
    /// The log broke a promise: a bug.
    Violation(String),
    /// An operation failed with an injected fault (the simulated machine is dying).
    Interrupted(Error),
}

impl From<String> for CheckError {
    fn from(s: String) -> Self {
        CheckError::Violation(s)
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            next_seq: 1,
            ..Model::default()
        }
    }

    /// The record the oracle expects at `seq`, if it knows one.
    pub fn expected(&self, seq: u64) -> Option<&[u8]> {
        let (_, b) = self.batches.range(..=seq).next_back()?;
        if seq > b.last() {
            return None;
        }
        Some(&b.records[(seq - b.first) as usize])
    }

    /// Where each in-flight batch would start, and its record count.
    pub fn in_flight_batches(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut first = self.next_seq;
        self.in_flight.iter().map(move |b| {
            let at = first;
            first += b.len() as u64;
            (at, b.len() as u64)
        })
    }

    fn in_flight_record(&self, seq: u64) -> Option<&[u8]> {
        self.in_flight_batches()
            .zip(&self.in_flight)
            .find(|((first, len), _)| seq >= *first && seq < first + len)
            .map(|((first, _), b)| b[(seq - first) as usize].as_slice())
    }

    /// Records a successful append.
    pub fn appended(
        &mut self,
        first: u64,
        last: u64,
        records: Vec<Vec<u8>>,
        durable: bool,
    ) -> Result<(), String> {
        ensure!(
            first == self.next_seq && last == first + records.len() as u64 - 1,
            "append of {} records got sequences {first}..={last}, expected {}..={} (gapless, \
             never reused)",
            records.len(),
            self.next_seq,
            self.next_seq + records.len() as u64 - 1
        );
        self.next_seq = last + 1;
        if durable {
            self.max_durable_seq = self.max_durable_seq.max(last);
        }
        self.batches.insert(
            first,
            Batch {
                first,
                records,
                durable,
            },
        );
        Ok(())
    }

    /// The log declared every sequence below `durable_next` durable.
    pub fn mark_durable(&mut self, durable_next: u64) {
        for b in self.batches.values_mut() {
            if b.last() < durable_next && !b.durable {
                b.durable = true;
                self.max_durable_seq = self.max_durable_seq.max(b.last());
            }
        }
    }

    /// An `ack(seq)` returned Ok.
    pub fn acked(&mut self, seq: u64) {
        self.acked_min = self.acked_min.max(seq);
        self.acked_max = self.acked_max.max(seq);
        self.prune();
    }

    /// An `ack(seq)` failed with an I/O error: it may or may not have been persisted.
    pub fn ack_failed(&mut self, seq: u64) {
        self.acked_max = self.acked_max.max(seq);
    }

    fn prune(&mut self) {
        let keep = self.batches.split_off(&(self.acked_min + 1));
        let below = std::mem::replace(&mut self.batches, keep);
        // A batch straddling the cursor is still partly readable: keep it.
        if let Some((_, b)) = below.into_iter().next_back()
            && b.last() > self.acked_min
        {
            self.batches.insert(b.first, b);
        }
    }

    /// Checks a batch of records returned by a reader of the live log, which started at
    /// `from` and has handed out everything before `expect_next` so far.
    pub fn check_read(&mut self, records: &ReadBatch, start: u64) -> Result<u64, String> {
        let mut next = start;
        for r in records {
            ensure!(
                r.seq == next,
                "reader returned sequence {} where {next} was due (gap, repeat or reorder)",
                r.seq
            );
            let want = self.expected(r.seq).ok_or_else(|| {
                format!(
                    "reader returned sequence {} which no successful append produced",
                    r.seq
                )
            })?;
            ensure!(
                r.data == want,
                "record {} differs from what was appended ({} bytes read, {} appended)",
                r.seq,
                r.data.len(),
                want.len()
            );
            self.records_verified += 1;
            next += 1;
        }
        Ok(next)
    }

    /// After a crash and a successful open: checks everything the log holds against the
    /// oracle, then adopts what recovery found (lost tentative batches are forgotten, a
    /// surviving in-flight batch becomes a known one, everything is durable now).
    ///
    /// `strict_durability`: every accepted append must survive (the crash kept all
    /// writes, or the policy is `always`). Otherwise only batches declared durable must.
    pub fn check_recovered(
        &mut self,
        log: &Log,
        rng: &mut SimRng,
        strict_durability: bool,
    ) -> Result<(), CheckError> {
        let st = log.stats();
        let acked = st.acked;
        if acked < self.acked_min || acked > self.acked_max {
            return Err(format!(
                "after reopen the cursor is {acked}, but acknowledgements returned Ok up to \
                 {} and were attempted up to {}",
                self.acked_min, self.acked_max
            )
            .into());
        }
        let from = 1 + rng.below(acked + 1);
        let records = read_all(log, from, rng).map_err(CheckError::Interrupted)?;
        let mut next = acked + 1;
        for r in &records {
            if r.seq != next {
                return Err(format!(
                    "after reopen, reading from {from} returned sequence {} where {next} was \
                     due (cursor {acked}; acknowledged records must not come back, the rest \
                     must be gapless)",
                    r.seq
                )
                .into());
            }
            let want = self
                .expected(r.seq)
                .or_else(|| self.in_flight_record(r.seq))
                .ok_or_else(|| {
                    format!(
                        "after reopen, sequence {} holds {} bytes that no append produced \
                         (garbage or a reissued sequence); known next_seq {}",
                        r.seq,
                        r.data.len(),
                        self.next_seq
                    )
                })?;
            if r.data != want {
                return Err(format!(
                    "after reopen, record {} differs from what was appended ({} bytes read, \
                     {} appended)",
                    r.seq,
                    r.data.len(),
                    want.len()
                )
                .into());
            }
            self.records_verified += 1;
            next += 1;
        }
        let end = next; // first sequence not stored
        if st.next_seq != end {
            return Err(format!(
                "after reopen next_seq is {} but the records end before {end}",
                st.next_seq
            )
            .into());
        }
        if st.durable_next != st.next_seq {
            return Err(format!(
                "after reopen durable_next {} != next_seq {}",
                st.durable_next, st.next_seq
            )
            .into());
        }
        if end <= self.max_durable_seq {
            return Err(format!(
                "sequence {} was acknowledged as durable but the log now ends before {end} \
                 (lost, and its sequence would be reissued)",
                self.max_durable_seq
            )
            .into());
        }
        // Batches are all-or-nothing: the log ends on a batch boundary.
        let in_flight_end = self
            .in_flight_batches()
            .any(|(first, len)| first + len == end);
        // (`end == acked + 1`: nothing above the cursor; that the batch holding the cursor
        // was durable, hence whole, is checked below.)
        let on_boundary =
            end == acked + 1 || self.batches.values().any(|b| b.last() + 1 == end) || in_flight_end;
        if !on_boundary {
            return Err(format!(
                "after reopen the log ends inside a batch (next_seq {end}): a partial batch \
                 survived"
            )
            .into());
        }
        for b in self.batches.values() {
            let lost = b.last() >= end;
            if lost && (b.durable || strict_durability) {
                return Err(format!(
                    "batch {}..={} ({} records, acknowledged{}) is missing after reopen",
                    b.first,
                    b.last(),
                    b.records.len(),
                    if b.durable {
                        " and durable"
                    } else {
                        ", process crash only"
                    }
                )
                .into());
            }
            if lost && b.first < end {
                return Err(format!(
                    "batch {}..={} survived only in part (log ends at {end})",
                    b.first,
                    b.last()
                )
                .into());
            }
        }
        // Adopt what recovery found.
        self.batches.retain(|&first, _| first < end);
        let mut first = self.next_seq;
        for f in std::mem::take(&mut self.in_flight) {
            if first >= end {
                break;
            }
            let n = f.len() as u64;
            debug_assert!(first + n <= end);
            self.batches.insert(
                first,
                Batch {
                    first,
                    records: f,
                    durable: true,
                },
            );
            first += n;
        }
        for b in self.batches.values_mut() {
            b.durable = true;
        }
        self.next_seq = end;
        self.max_durable_seq = self.max_durable_seq.max(end - 1);
        self.acked_min = acked;
        self.acked_max = acked;
        self.prune();
        Ok(())
    }
}

/// Lists the segment files of the log in [`dir`] on `fs`, in log order.
pub fn segments(fs: &SimFs) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(&dir()) && p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Short form of a path for messages.
pub fn name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `name(length)` of every file, for failure messages.
pub fn listing(fs: &SimFs) -> Vec<String> {
    fs.files()
        .iter()
        .map(|p| format!("{}({})", name(p), fs.read_file(p).map_or(0, |b| b.len())))
        .collect()
}

/// Prints a suite's counts so that they show in CI logs even though `cargo test` captures
/// test output: libtest captures the `print!` family, not direct writes to stderr.
pub fn report(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}
