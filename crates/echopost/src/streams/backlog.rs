//! Per-stream backlog figures for `ListStreams`, `echopost streams` and `status` (issue
//! 14): records, bytes, first and last buffered sequence, oldest timestamp.
//!
//! # Kept as records come and go, not counted per call
//! [`BacklogIndex`] (part of the [`Tables`], so changed by the committer thread as it
//! stores batches, checkpointed with them and rebuilt with them at open) summarises the
//! records of each stream per *block*: a run of consecutive sequences holding about
//! [`BLOCK_BYTES`] of stream records. A block's summary is, per stream, its records,
//! bytes, first and last sequence and oldest timestamp ([`Backlog`]).
//!
//! Delivery moves the engine's cursor; a query ([`figures`]) then
//! * drops the blocks that end before the cursor (delivered whole),
//! * adds up the blocks that start at or after it, from memory,
//! * reads only the records from the cursor to the end of the one block the cursor is
//!   inside (at most about [`BLOCK_BYTES`] of stream records plus the streamless records
//!   between them), and the records before [`BacklogIndex::counted_from`] that are still
//!   buffered: the index counts from where the state started, so a log from before
//!   streams had a state (or whose checkpoint gave way on a full disk) has its older
//!   records read, and only until they are delivered.
//!
//! So a query costs one pass over the block summaries plus at most one block read, not
//! the backlog; memory is one summary per stream per block it has records in (at most one
//! per record, at most one per stream and [`BLOCK_BYTES`] of stream records).
//!
//! Bytes are each record's stored bytes plus its 4-byte length prefix in the frame
//! (`echopost_log::RECORD_OVERHEAD`); frame headers, metadata entries and compression
//! are not counted, so the figure approximates what the stream's records occupy.
//!
//! Dead letters are counted by one pass over the dead-letter log ([`dead_letters`]),
//! which holds only rejected records, not the backlog.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_log::{Log, LogOptions, RECORD_OVERHEAD};
use echopost_proto::raw::check_record;
use echopost_proto::v1::{DeadLetter, StreamInfo};
use prost::Message;

use super::tables::{StreamCounts, Tables};
use crate::replay::dead_letters::dead_letter_dir;

/// Records per read of the backlog.
const PAGE_RECORDS: usize = 1000;
/// Bytes per read of the backlog (a single larger record is still read alone).
const PAGE_BYTES: usize = 4 << 20;
/// How long to wait for the replayer to release the dead-letter log.
const DEAD_LETTER_LOCK_WAIT: Duration = Duration::from_secs(2);
/// Bytes of stream records per block of [`BacklogIndex`]: about the most a query reads.
/// (512 bytes in the daemon's unit tests, so that their few records span many blocks.)
pub const BLOCK_BYTES: u64 = if cfg!(test) { 512 } else { 256 << 10 };

/// One stream's buffered records (or those of one block).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    /// Each record's stored bytes plus its 4-byte length prefix in the frame.
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub oldest_unix_nanos: i64,
}

impl Backlog {
    /// Adds `o` (records of the same stream elsewhere in the log).
    pub fn merge(&mut self, o: &Backlog) {
        if o.records == 0 {
            return;
        }
        if self.records == 0 {
            *self = *o;
            return;
        }
        self.records += o.records;
        self.bytes += o.bytes;
        self.first_seq = self.first_seq.min(o.first_seq);
        self.last_seq = self.last_seq.max(o.last_seq);
        self.oldest_unix_nanos = self.oldest_unix_nanos.min(o.oldest_unix_nanos);
    }
}

/// The summary of one run of sequences `first_seq..end_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub first_seq: u64,
    /// The sequence after its last record.
    pub end_seq: u64,
    /// Stream record bytes in it (decides when the next block starts).
    pub bytes: u64,
    pub streams: HashMap<Arc<str>, Backlog>,
}

/// Per-stream summaries of the records by block (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogIndex {
    /// Records from this sequence on are in the blocks; buffered ones before it are read
    /// when asked.
    pub counted_from: u64,
    blocks: VecDeque<Block>,
    /// Stream names, shared by the blocks.
    names: HashSet<Arc<str>>,
}

impl Default for BacklogIndex {
    fn default() -> Self {
        BacklogIndex::new(1)
    }
}

/// What a query takes from the index under the lock: the whole blocks after the cursor
/// added up, and which ranges still have to be read ([`Snapshot::complete`]).
#[derive(Debug)]
pub struct Snapshot {
    figures: HashMap<String, Backlog>,
    /// `from..to` ranges of sequences to read.
    reads: Vec<(u64, u64)>,
}

impl BacklogIndex {
    /// An empty index counting records from `counted_from` on.
    pub fn new(counted_from: u64) -> BacklogIndex {
        BacklogIndex {
            counted_from,
            blocks: VecDeque::new(),
            names: HashSet::new(),
        }
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        match self.names.get(name) {
            Some(n) => Arc::clone(n),
            None => {
                let n: Arc<str> = Arc::from(name);
                self.names.insert(Arc::clone(&n));
                n
            }
        }
    }

    /// Records a stored batch `first_seq..end_seq` with its records per stream.
    pub fn record(&mut self, first_seq: u64, end_seq: u64, counts: &StreamCounts) {
        if counts.is_empty() {
            return;
        }
        let start_new = self
            .blocks
            .back()
            .is_none_or(|b| b.bytes >= BLOCK_BYTES || b.end_seq > first_seq);
        if start_new {
            self.blocks.push_back(Block {
                first_seq,
                end_seq,
                bytes: 0,
                streams: HashMap::new(),
            });
        }
        let names: Vec<Arc<str>> = counts.iter().map(|c| self.intern(&c.stream)).collect();
        let Some(block) = self.blocks.back_mut() else {
            return;
        };
        block.end_seq = end_seq;
        for (c, name) in counts.iter().zip(names) {
            block.bytes += c.bytes;
            block.streams.entry(name).or_default().merge(&Backlog {
                records: c.records,
                bytes: c.bytes,
                first_seq: first_seq + c.first_index,
                last_seq: first_seq + c.last_index,
                oldest_unix_nanos: c.oldest_unix_nanos,
            });
        }
    }

    /// Forgets the blocks delivered whole: those ending at or before `first_unacked`.
    pub fn release(&mut self, first_unacked: u64) {
        while self
            .blocks
            .front()
            .is_some_and(|b| b.end_seq <= first_unacked)
        {
            self.blocks.pop_front();
        }
        if self.blocks.is_empty() {
            self.names.clear();
        }
    }

    /// The blocks, oldest first.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.iter()
    }

    /// Adds a block restored from a checkpoint (after the ones already there).
    pub fn restore_block(&mut self, first_seq: u64, end_seq: u64, streams: Vec<(String, Backlog)>) {
        let mut block = Block {
            first_seq,
            end_seq,
            bytes: 0,
            streams: HashMap::with_capacity(streams.len()),
        };
        for (name, b) in streams {
            block.bytes += b.bytes;
            block.streams.insert(self.intern(&name), b);
        }
        self.blocks.push_back(block);
    }

    /// Summaries held: one per stream per block.
    pub fn summaries(&self) -> usize {
        self.blocks.iter().map(|b| b.streams.len()).sum()
    }

    /// Takes what a query needs with the records before `first_unacked` delivered: the
    /// blocks wholly after it added up, and the ranges to read.
    pub fn snapshot(&mut self, first_unacked: u64) -> Snapshot {
        self.release(first_unacked);
        let mut figures: HashMap<String, Backlog> = HashMap::new();
        let mut reads = Vec::new();
        if self.counted_from > first_unacked {
            reads.push((first_unacked, self.counted_from));
        }
        for b in &self.blocks {
            if b.first_seq < first_unacked {
                reads.push((first_unacked, b.end_seq));
                continue;
            }
            for (name, s) in &b.streams {
                match figures.get_mut(&**name) {
                    Some(f) => f.merge(s),
                    None => {
                        figures.insert(name.to_string(), *s);
                    }
                }
            }
        }
        Snapshot { figures, reads }
    }
}

impl Snapshot {
    /// Reads the ranges the blocks do not cover and adds them: at most one block's worth
    /// plus the records before the index's start.
    pub fn complete(mut self, log: &Log) -> Result<HashMap<String, Backlog>, echopost_log::Error> {
        for &(from, to) in &self.reads {
            scan_into(log, from, to, &mut self.figures)?;
        }
        Ok(self.figures)
    }
}

/// The backlog figures of every stream with buffered records: from the index in the
/// tables (under their lock, for one pass over the block summaries) and at most one
/// block read from `log` (outside the lock).
pub fn figures(
    log: &Log,
    streams: &super::Streams,
) -> Result<HashMap<String, Backlog>, echopost_log::Error> {
    let first_unacked = log.stats().first_unacked_seq;
    let snapshot = streams.lock().backlog.snapshot(first_unacked);
    snapshot.complete(log)
}

/// Counts the buffered (undelivered) records of every stream by reading the whole
/// backlog (records with an empty stream are skipped). What [`figures`] gives without
/// reading it; kept as the reference the tests hold the index to.
pub fn scan(log: &Log) -> Result<HashMap<String, Backlog>, echopost_log::Error> {
    let mut out = HashMap::new();
    scan_into(log, 0, u64::MAX, &mut out)?;
    Ok(out)
}

/// Adds the buffered records with sequences in `from..to` to `out`.
fn scan_into(
    log: &Log,
    from: u64,
    to: u64,
    out: &mut HashMap<String, Backlog>,
) -> Result<(), echopost_log::Error> {
    let mut reader = log.reader(from);
    loop {
        let page = reader.next_batch(PAGE_RECORDS, PAGE_BYTES)?;
        if page.is_empty() {
            return Ok(());
        }
        for r in &page {
            if r.seq >= to {
                return Ok(());
            }
            let Ok(info) = check_record(r.data) else {
                continue;
            };
            let stream = info.stream(r.data);
            if stream.is_empty() {
                continue;
            }
            let one = Backlog {
                records: 1,
                bytes: (r.data.len() + RECORD_OVERHEAD) as u64,
                first_seq: r.seq,
                last_seq: r.seq,
                oldest_unix_nanos: info.timestamp_unix_nanos,
            };
            match out.get_mut(stream) {
                Some(b) => b.merge(&one),
                None => {
                    out.insert(stream.to_owned(), one);
                }
            }
        }
    }
}

/// Counts the dead letters of every stream in the EchoPost directory `dir`. Waits up to
/// two seconds for the replayer to release the dead-letter log.
pub fn dead_letters(dir: &Path) -> Result<HashMap<String, u64>, echopost_log::Error> {
    let dl = dead_letter_dir(dir);
    let mut out = HashMap::new();
    if !dl.is_dir() {
        return Ok(out);
    }
    let started = Instant::now();
    let log = loop {
        match Log::open(&dl, LogOptions::default()) {
            Err(echopost_log::Error::Locked { .. })
                if started.elapsed() < DEAD_LETTER_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    let mut reader = log.reader(0);
    loop {
        let page = reader.next_batch(PAGE_RECORDS, PAGE_BYTES)?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            if let Ok(letter) = DeadLetter::decode(r.data)
                && let Some(stream) = letter.record.and_then(|s| s.record).map(|r| r.stream)
                && !stream.is_empty()
            {
                *out.entry(stream).or_default() += 1;
            }
        }
    }
    log.close()?;
    Ok(out)
}

/// `ListStreams`' answer: every stream the tables know (and any other one with buffered
/// records or dead letters), sorted by name.
pub fn stream_infos(
    tables: &Tables,
    backlog: &HashMap<String, Backlog>,
    dead: &HashMap<String, u64>,
) -> Vec<StreamInfo> {
    let mut all: BTreeMap<&str, StreamInfo> = BTreeMap::new();
    let names = tables
        .streams
        .keys()
        .chain(backlog.keys())
        .chain(dead.keys());
    for name in names {
        all.entry(name.as_str()).or_insert_with(|| {
            let b = backlog.get(name).copied().unwrap_or_default();
            StreamInfo {
                stream: name.clone(),
                version: tables.streams.get(name).map_or(0, |s| s.version),
                backlog_records: b.records,
                backlog_bytes: b.bytes,
                first_sequence: b.first_seq,
                last_sequence: b.last_seq,
                oldest_record_unix_nanos: b.oldest_unix_nanos,
                dead_lettered_records: dead.get(name).copied().unwrap_or(0),
            }
        });
    }
    all.into_values().collect()
}
