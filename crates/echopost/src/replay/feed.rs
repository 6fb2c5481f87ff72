//! Reading the backlog: bounded batches of checked records, in sequence order.
//!
//! The engine is synchronous, so every read runs on the blocking pool. To keep the
//! network busy the next batch is read, checked, cut and (in `deliver` mode) encoded
//! while the current one is in flight (*read-ahead*; how many requests are outstanding
//! is the driver's `--in-flight` window). The memory of delivered batches is freed there too.
//!
//! # Damage
//! Two kinds of damage stop replay: the engine's own (checksum, missing segment, ...) and
//! a record whose bytes are not a valid `echopost.v1.Record` (the daemon only ever stores
//! encoded `Record`s, so such bytes mean the log was damaged in a way the checksum did
//! not catch, or written by something else). Either way the feed hands out every record
//! *before* the damage first and only then reports the error, so that everything that
//! can be delivered is delivered and acknowledged, and nothing at or after the damage is.
//! An engine read that fails returns none of the records it had gathered, so after the
//! first failure the feed re-reads from the last record it handed out, one record at a
//! time, until it meets the damage again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use echopost_log::{Corruption, CorruptionKind, Log, Reader, StoredRecord};
use echopost_proto::raw::check_record;
use tokio::task::JoinHandle;

use super::ReplayError;
use super::deliver::{self, DeliverBatch, item_encoded_len};

/// One record ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Engine sequence.
    pub seq: u64,
    /// The encoded `echopost.v1.Record`, as stored: a slice of the engine's read buffer
    /// (shared by the records of one read, not copied per record).
    pub data: Bytes,
    /// Length of its `payload` (for the delivered-bytes figures).
    pub payload_len: u64,
}

/// How batches are cut.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    /// Most records per batch.
    pub max_records: usize,
    /// Most bytes per batch: of the encoded `DeliverRequest` when `source` is set, of the
    /// stored records otherwise. A single larger record still makes a batch alone.
    pub max_bytes: usize,
    /// `deliver` mode: batches are encoded ahead as `DeliverRequest`s with this source.
    pub source: Option<Arc<str>>,
}

impl Shape {
    fn cost(&self, item: &Item) -> usize {
        if self.source.is_some() {
            item_encoded_len(item)
        } else {
            item.data.len()
        }
    }
}

/// A batch ready to be sent.
pub(crate) enum Batch {
    /// `deliver` mode: the request, encoded while the previous one was in flight.
    Deliver(DeliverBatch),
    /// `forward` mode: records to send one by one.
    Records(Vec<Item>),
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Batch::Deliver(b) => b.items.is_empty(),
            Batch::Records(v) => v.is_empty(),
        }
    }
}

enum ReadError {
    /// The engine's read failed (its records gathered so far are lost with it).
    Engine(echopost_log::Error),
    /// A record is not a valid `Record` (everything before it was kept).
    Record(echopost_log::Error),
}

/// A read on the blocking pool: what goes in ...
struct Job {
    reader: Reader,
    carry: Vec<Item>,
    expect: u64,
    careful: bool,
    /// False once damage was met: only what is in `carry` is left to hand out.
    read: bool,
    shape: Shape,
    garbage: Vec<Vec<Item>>,
    buffer: Option<BytesMut>,
}

/// ... and what comes out.
struct Done {
    reader: Reader,
    carry: Vec<Item>,
    expect: u64,
    batch: Vec<Item>,
    encoded: Option<bytes::Bytes>,
    /// The request buffer, unused (empty batch).
    spare: Option<BytesMut>,
    error: Option<ReadError>,
}

/// Hands out batches from the log. See the module documentation.
pub(crate) struct Feed {
    log: Arc<Log>,
    shape: Shape,
    /// `None` while a read runs on the blocking pool (reader and carry move into it).
    reader: Option<Reader>,
    /// Checked records read beyond the last batch, in order.
    carry: Vec<Item>,
    /// Sequence of the record after the last one read.
    next_seq: u64,
    inflight: Option<JoinHandle<Done>>,
    /// Damage met after the records in `carry`; reported once they are handed out.
    pending_error: Option<echopost_log::Error>,
    /// After a failed engine read: read one record at a time up to the damage.
    careful: bool,
    /// Delivered batches, freed on the blocking pool by the next read rather than on the
    /// sender's critical path (thousands of small buffers each).
    garbage: Vec<Vec<Item>>,
    /// The buffer of a delivered request, reused for the next one.
    buffer: Option<BytesMut>,
}

impl Feed {
    /// A feed starting at the oldest unacknowledged record.
    pub(crate) fn new(log: Arc<Log>, shape: Shape) -> Self {
        let start = log.stats().first_unacked_seq;
        let reader = log.reader(start);
        let shape = Shape {
            max_records: shape.max_records.max(1),
            max_bytes: shape.max_bytes.max(1),
            source: shape.source,
        };
        Feed {
            log,
            shape,
            reader: Some(reader),
            carry: Vec::new(),
            next_seq: start,
            inflight: None,
            pending_error: None,
            careful: false,
            garbage: Vec::new(),
            buffer: None,
        }
    }

    /// The next batch; empty means caught up. Err only once every record before the
    /// damage was handed out.
    pub(crate) async fn next_batch(&mut self) -> Result<Batch, ReplayError> {
        loop {
            let (batch, again) = self.fetch().await?;
            if !batch.is_empty() {
                // Read ahead while the caller sends this batch.
                self.start();
                return Ok(batch);
            }
            if again {
                continue;
            }
            if self.carry.is_empty()
                && let Some(e) = self.pending_error.take()
            {
                return Err(ReplayError::from_log(e));
            }
            return Ok(batch);
        }
    }

    /// Later batches hold at most `max_records` (the main server refused a larger one as
    /// too large; the session keeps the size that works).
    pub(crate) fn limit_records(&mut self, max_records: usize) {
        self.shape.max_records = self.shape.max_records.min(max_records.max(1));
    }

    /// Hands back a delivered batch so that its memory is freed (records) or reused
    /// (request buffer) off the critical path.
    pub(crate) fn recycle(&mut self, items: Vec<Item>, buffer: Option<BytesMut>) {
        self.garbage.push(items);
        if buffer.is_some() {
            self.buffer = buffer;
        }
    }

    /// Waits up to `timeout` for records after the ones read so far. Returns at once if
    /// some are already there.
    pub(crate) async fn wait_for_records(&self, timeout: Duration) {
        let log = Arc::clone(&self.log);
        let seq = self.next_seq;
        let _ =
            tokio::task::spawn_blocking(move || log.wait_for_durable_end_past(seq, timeout)).await;
    }

    fn start(&mut self) {
        if self.inflight.is_some() {
            return;
        }
        let Some(reader) = self.reader.take() else {
            return;
        };
        let job = Job {
            reader,
            carry: std::mem::take(&mut self.carry),
            expect: self.next_seq,
            careful: self.careful,
            read: self.pending_error.is_none(),
            shape: self.shape.clone(),
            garbage: std::mem::take(&mut self.garbage),
            buffer: self.buffer.take(),
        };
        let log = Arc::clone(&self.log);
        self.inflight = Some(tokio::task::spawn_blocking(move || run_job(&log, job)));
    }

    /// Runs (or collects the read-ahead) job; `again` asks for another round at once.
    async fn fetch(&mut self) -> Result<(Batch, bool), ReplayError> {
        self.start();
        let Some(handle) = self.inflight.take() else {
            return Ok((self.wrap(Vec::new(), None), false));
        };
        let done = handle.await.map_err(join_error)?;
        self.reader = Some(done.reader);
        self.carry = done.carry;
        self.next_seq = done.expect;
        if done.spare.is_some() {
            self.buffer = done.spare;
        }
        let (mut items, mut encoded) = (done.batch, done.encoded);
        if items.len() > self.shape.max_records {
            // Read ahead before `limit_records`: cut it to the new limit, or the main
            // server would be sent a batch of the size it just refused.
            let mut rest = items.split_off(self.shape.max_records);
            rest.append(&mut self.carry);
            self.carry = rest;
            encoded = None;
        }
        let batch = self.wrap(items, encoded);
        match done.error {
            None => Ok((batch, false)),
            Some(ReadError::Engine(e @ echopost_log::Error::Corruption(_))) if !self.careful => {
                // The failed engine read dropped whatever it had gathered before the
                // damage. Go back to the last record we hold and creep up to the damage.
                tracing::warn!(error = %e, from = self.next_seq,
                    "damage in the log: delivering what precedes it record by record");
                self.careful = true;
                self.reader = Some(self.log.reader(self.next_seq));
                Ok((batch, true))
            }
            Some(
                ReadError::Engine(e @ echopost_log::Error::Corruption(_)) | ReadError::Record(e),
            ) => {
                self.pending_error = Some(e);
                Ok((batch, true))
            }
            Some(ReadError::Engine(e)) => Err(ReplayError::Storage(e)),
        }
    }

    fn wrap(&self, items: Vec<Item>, encoded: Option<bytes::Bytes>) -> Batch {
        match (&self.shape.source, encoded) {
            (Some(_), Some(encoded)) => Batch::Deliver(DeliverBatch::from_parts(items, encoded)),
            (Some(source), None) => Batch::Deliver(DeliverBatch::new(items, source)),
            (None, _) => Batch::Records(items),
        }
    }
}

/// Most bytes asked of the engine at once: the records just read are checked and
/// encoded while they are still in the CPU's cache.
const READ_CHUNK: usize = 256 << 10;

/// One round on the blocking pool: frees old batches, reads until a batch is full (or
/// the log is caught up, or damaged), checking each record and, in `deliver` mode,
/// encoding it into the request right away.
fn run_job(log: &Log, job: Job) -> Done {
    let Job {
        mut reader,
        carry,
        mut expect,
        careful,
        read,
        shape,
        garbage,
        buffer,
    } = job;
    drop(garbage);
    let mut cut = Cutter::new(&shape, buffer);
    for item in carry {
        cut.push(item);
    }
    let mut error = None;
    while read && !cut.full() {
        let (n, b) = cut.room();
        let b = b.min(READ_CHUNK);
        let (records, read_error) = if careful {
            read_carefully(&mut reader, n, b)
        } else {
            match reader.next_batch(n, b) {
                Ok(v) => (v.into_records(), None),
                Err(e) => (Vec::new(), Some(ReadError::Engine(e))),
            }
        };
        let caught_up = records.is_empty();
        // Sequences `echopost salvage` recorded as lost (issue 13) are skipped, not damage.
        let gaps = reader.take_gaps();
        error = check(log, records, &gaps, &mut expect, &mut cut).or(read_error);
        if let Some(&(first, last)) = gaps.last()
            && expect == first
        {
            // The read ended right after a gap: the next record continues past it.
            expect = last + 1;
        }
        if error.is_some() || caught_up {
            break;
        }
    }
    let (batch, encoded, carry, spare) = cut.finish();
    Done {
        reader,
        carry,
        expect,
        batch,
        encoded,
        spare,
        error,
    }
}

/// Builds one batch from records pushed in order; what does not fit goes to the carry.
struct Cutter<'a> {
    shape: &'a Shape,
    items: Vec<Item>,
    cost: usize,
    carry: Vec<Item>,
    /// `deliver` mode: the request being encoded.
    buf: Option<BytesMut>,
}

impl<'a> Cutter<'a> {
    fn new(shape: &'a Shape, buffer: Option<BytesMut>) -> Self {
        let buf = shape.source.as_ref().map(|_| {
            let mut b = buffer.unwrap_or_default();
            deliver::begin(&mut b, shape.max_bytes);
            b
        });
        Cutter {
            shape,
            items: Vec::new(),
            cost: 0,
            carry: Vec::new(),
            buf,
        }
    }

    fn push(&mut self, item: Item) {
        let c = self.shape.cost(&item);
        let fits = self.items.is_empty()
            || (self.carry.is_empty()
                && self.items.len() < self.shape.max_records
                && self.cost.saturating_add(c) <= self.shape.max_bytes);
        if !fits {
            self.carry.push(item);
            return;
        }
        if let Some(buf) = &mut self.buf {
            deliver::encode_item(buf, &item);
        }
        self.cost = self.cost.saturating_add(c);
        self.items.push(item);
    }

    fn full(&self) -> bool {
        !self.carry.is_empty()
            || self.items.len() >= self.shape.max_records
            || self.cost >= self.shape.max_bytes
    }

    /// Records and bytes still wanted (call only when not full).
    fn room(&self) -> (usize, usize) {
        (
            self.shape.max_records - self.items.len(),
            (self.shape.max_bytes - self.cost).max(1),
        )
    }

    /// The batch, its encoding (`deliver` mode), the carry, and the request buffer back
    /// when the batch is empty (kept for the next round rather than freed).
    fn finish(self) -> (Vec<Item>, Option<bytes::Bytes>, Vec<Item>, Option<BytesMut>) {
        match (self.buf, self.shape.source.as_deref()) {
            (Some(buf), _) if self.items.is_empty() => (self.items, None, self.carry, Some(buf)),
            (Some(buf), Some(source)) => (
                self.items,
                Some(deliver::finish(buf, source)),
                self.carry,
                None,
            ),
            _ => (self.items, None, self.carry, None),
        }
    }
}

/// One record per engine read, so a read that fails loses nothing before the damage.
fn read_carefully(
    reader: &mut Reader,
    n: usize,
    b: usize,
) -> (Vec<StoredRecord>, Option<ReadError>) {
    let mut got = Vec::new();
    let mut bytes = 0;
    while got.len() < n && bytes < b {
        match reader.next_batch(1, usize::MAX) {
            Ok(v) if v.is_empty() => break,
            Ok(v) => {
                bytes += v.data_len();
                got.extend(v);
            }
            Err(e) => return (got, Some(ReadError::Engine(e))),
        }
    }
    (got, None)
}

/// Checks records (gapless sequence, valid `Record`) and hands them to `cut` as items;
/// stops at the first bad one.
fn check(
    log: &Log,
    records: Vec<StoredRecord>,
    gaps: &[(u64, u64)],
    expect: &mut u64,
    cut: &mut Cutter<'_>,
) -> Option<ReadError> {
    for r in records {
        if let Some(&(first, last)) = gaps.iter().find(|g| g.0 == *expect && g.1 < r.seq) {
            tracing::warn!(
                first,
                last,
                "skipping sequences lost to damage (recorded by echopost salvage)"
            );
            *expect = last + 1;
        }
        if r.seq != *expect {
            // The engine promises gapless order; anything else is damage.
            let e = corruption(
                log,
                r.seq,
                format!("record {}: expected sequence {} instead", r.seq, *expect),
            );
            return Some(ReadError::Record(e));
        }
        // The check ingest ran before storing the record: failing it now is damage.
        match check_record(&r.data) {
            Ok(info) => {
                *expect = r.seq + 1;
                cut.push(Item {
                    seq: r.seq,
                    data: r.data,
                    payload_len: info.payload_len,
                });
            }
            Err(why) => {
                let e = corruption(log, r.seq, format!("record {}: {why}", r.seq));
                return Some(ReadError::Record(e));
            }
        }
    }
    None
}

fn join_error(e: tokio::task::JoinError) -> ReplayError {
    ReplayError::Storage(echopost_log::Error::Io {
        op: "read (the reading task failed)",
        path: PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A corruption error naming the segment file that holds `seq` and the sequence itself.
///
/// The engine's `CorruptionKind::BadBody` carries a `&'static str`; the message is leaked
/// to build it. This happens at most once per process, on the path that stops replay.
pub(crate) fn corruption(log: &Log, seq: u64, what: String) -> echopost_log::Error {
    let file = segment_holding(log.dir(), seq).unwrap_or_else(|| log.dir().to_path_buf());
    let msg: &'static str = Box::leak(what.into_boxed_str());
    echopost_log::Error::Corruption(Box::new(Corruption {
        file,
        offset: 0,
        kind: CorruptionKind::BadBody(msg),
    }))
}

/// The segment file whose name (its first sequence) is the largest one `<= seq`.
fn segment_holding(dir: &std::path::Path, seq: u64) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if first <= seq && best.as_ref().is_none_or(|(b, _)| first > *b) {
            best = Some((first, entry.path()));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_lookup_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for first in [1u64, 7001, 14001] {
            std::fs::write(dir.path().join(format!("{first:020}.seg")), b"").unwrap();
        }
        std::fs::write(dir.path().join("cursor"), b"").unwrap();
        let f = |s| segment_holding(dir.path(), s).map(|p| p.file_name().unwrap().to_owned());
        assert_eq!(f(1).unwrap(), "00000000000000000001.seg");
        assert_eq!(f(7000).unwrap(), "00000000000000000001.seg");
        assert_eq!(f(7001).unwrap(), "00000000000000007001.seg");
        assert_eq!(f(99999).unwrap(), "00000000000000014001.seg");
        assert_eq!(f(0), None);
    }
}
