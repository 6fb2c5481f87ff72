//! Streams and idempotent producers (issue 14): the state, how it survives crashes, and
//! what `ListStreams`, `Peek` and `Read` by stream learn from it.
//!
//! # The state
//! [`tables::Tables`]: per producer id its next number and last batches (for
//! deduplication), per stream its version and newest sequence. The rules are in
//! [`tables`]; they are applied by the committer thread, the one thread that stores
//! batches, so a decision and the store it allows cannot interleave with another's.
//!
//! # Why it agrees with the log after any crash
//! Nothing in the state is written separately from the records it describes:
//! * a batch's producer id and number are in its own frame (the engine's metadata entry,
//!   [`codec::FrameMeta`]), and each record's stream is in the record; so the state is a
//!   function of the frames, and a frame lost in a crash takes its share of the state
//!   with it;
//! * now and then the committer writes the tables as the engine's checkpoint
//!   ([`echopost_log::Log::write_checkpoint`]) covering every frame before the durable
//!   end ([`Checkpointer`]); the engine keeps every segment from that sequence on, even
//!   once delivered;
//! * [`recover`] at open = the checkpoint + the frames after it. Open time is bounded by
//!   what a checkpoint may leave behind (at most [`CHECKPOINT_BYTES`] of frames, or
//!   [`CHECKPOINT_EVERY`] of appends), not by the backlog. A log that has no checkpoint
//!   yet (new, or from a version without streams state) is not read at all: its tables
//!   start empty, and versions count the records appended from then on.
//!
//! Delivered segments are therefore deleted up to one checkpoint later than they would
//! be otherwise (at most [`CHECKPOINT_EVERY`] while appends arrive; at once at exit).
//!
//! # The backlog figures
//! The per-stream figures of `ListStreams` (records, bytes, first and last buffered
//! sequence, oldest timestamp) come from per-block summaries kept in the tables
//! ([`backlog::BacklogIndex`]), recorded as batches are stored, checkpointed and
//! recovered with the rest; a query reads at most the one block that delivery is in the
//! middle of, not the backlog ([`backlog`] has the details). `Peek` needs no scan: a
//! stream's newest record is at its `last_seq`, buffered unless delivered.

pub mod backlog;
pub mod codec;
pub mod tables;

#[cfg(test)]
mod crash_simulation;
#[cfg(test)]
mod proptests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use echopost_log::{Log, RECORD_OVERHEAD, StoredFrame, SyncPolicy};
use echopost_proto::raw::check_record;
use prost::Message;

use codec::FrameMeta;
use tables::{BatchIdentity, StreamCounts, Tables, count_record};

/// Longest stream name (and producer id), in bytes (issue 14).
pub const MAX_NAME_BYTES: usize = 256;
/// Default of `--max-producers`.
pub const DEFAULT_MAX_PRODUCERS: usize = 10_000;
/// Default of `--max-streams`.
pub const DEFAULT_MAX_STREAMS: usize = 100_000;
/// A checkpoint is written once this many bytes of frames were appended since the last.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// ... or once this much time passed with appends since the last.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// The tables shared by the committer (which changes them) and the RPCs that read them.
#[derive(Debug)]
pub struct Streams {
    tables: Mutex<Tables>,
}

impl Streams {
    /// Shares `tables`.
    pub fn new(tables: Tables) -> Arc<Streams> {
        Arc::new(Streams {
            tables: Mutex::new(tables),
        })
    }

    /// The tables, locked. Held briefly: the committer thread waits on it.
    pub fn lock(&self) -> MutexGuard<'_, Tables> {
        // Every change is a few field updates that leave the tables consistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why the state could not be recovered or checkpointed.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error(transparent)]
    Log(#[from] echopost_log::Error),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("frame metadata at sequence {seq} does not decode: {source}")]
    Meta {
        seq: u64,
        source: prost::DecodeError,
    },
}

/// What a frame read back says about its batch.
pub fn identity_of(frame: &StoredFrame) -> Result<BatchIdentity, StreamsError> {
    let producer = match &frame.meta {
        Some(m) => {
            let meta = FrameMeta::decode(m.as_slice()).map_err(|source| StreamsError::Meta {
                seq: frame.first_seq,
                source,
            })?;
            (!meta.producer_id.is_empty()).then_some((meta.producer_id, meta.producer_sequence))
        }
        None => None,
    };
    let streams = count_records(frame.records.iter().map(Vec::as_slice));
    Ok(BatchIdentity {
        producer,
        records: frame.records.len() as u64,
        streams,
        expected_stream_version: None,
    })
}

/// Counts stored records per stream as ingest counted them when it stored them
/// ([`tables::count_record`]: stream, stored bytes, timestamp). A stored record passed
/// this check at ingest; one that does not now counts as no stream (the replayer reports
/// such damage).
pub fn count_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> StreamCounts {
    let mut out = StreamCounts::new();
    for (i, r) in records.into_iter().enumerate() {
        if let Ok(info) = check_record(r) {
            count_record(
                &mut out,
                info.stream(r),
                i as u64,
                (r.len() + RECORD_OVERHEAD) as u64,
                info.timestamp_unix_nanos,
            );
        }
    }
    out
}

/// Figures of a recovery, for the log line at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Where the frames replayed start: the checkpoint's sequence (the durable end when
    /// there was none).
    pub from_seq: u64,
    /// Frames applied after it.
    pub frames: u64,
}

/// Rebuilds the tables: the engine's checkpoint, then every frame after it (see the
/// module documentation). With `write`, checkpoints the result, so the next open starts
/// from here and the engine's deletion floor is set from the start.
///
/// A log without a checkpoint (new, or written before streams had a state) starts with
/// empty tables at its durable end: its existing records are not read, so opening stays
/// independent of the backlog, and versions count the records appended from then on.
pub fn recover(
    log: &Log,
    max_producers: usize,
    max_streams: usize,
    write: bool,
) -> Result<(Tables, Recovered), StreamsError> {
    let checkpoint = log.read_checkpoint()?;
    let had_checkpoint = checkpoint.is_some();
    let (mut tables, from_seq) = match checkpoint {
        Some(c) => (
            codec::decode_tables(&c.data, max_producers, max_streams, c.seq)?,
            c.seq,
        ),
        None => {
            let durable = log.stats().durable_next;
            let mut t = Tables::new(max_producers, max_streams);
            t.backlog = backlog::BacklogIndex::new(durable);
            (t, durable)
        }
    };
    let mut reader = log.reader_including_acked(from_seq);
    let mut frames = 0;
    while let Some(frame) = reader.next_frame()? {
        let id = identity_of(&frame)?;
        let last = frame.first_seq + id.records.saturating_sub(1);
        tables.apply(&id, frame.first_seq, last);
        frames += 1;
    }
    tables.backlog.release(log.stats().first_unacked_seq);
    if write {
        let durable = log.stats().durable_next;
        if !had_checkpoint || frames > 0 || durable != from_seq {
            match log.write_checkpoint(durable, &codec::encode_tables(&tables)) {
                Ok(()) => {}
                Err(e) if e.is_no_space() => give_way_on_full_disk(log, &e),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((tables, Recovered { from_seq, frames }))
}

/// The device is full and the stream state checkpoint cannot be written: an old
/// checkpoint would keep delivered segments from being deleted (its deletion floor), and
/// freeing delivered data comes first (issue 13: a full disk must drain). So the
/// checkpoint is removed; the next start rebuilds the tables as for a log that never had
/// one (versions and producer numbers count from there; a retry of an older batch may be
/// stored again, which at-least-once allows).
fn give_way_on_full_disk(log: &Log, e: &echopost_log::Error) {
    tracing::warn!(error = %e, "the device is full: cannot write the stream state checkpoint; removing it so that delivered segments can be deleted (stream versions and producer numbers restart at the next start)");
    if let Err(e) = log.remove_checkpoint() {
        tracing::warn!(error = %e, "cannot remove the stream state checkpoint either; delivered segments are kept until one can be written");
    }
}

/// Decides when the committer writes a checkpoint, and writes it.
#[derive(Debug)]
pub struct Checkpointer {
    since_bytes: u64,
    since_frames: u64,
    last: Instant,
}

impl Default for Checkpointer {
    fn default() -> Self {
        Checkpointer {
            since_bytes: 0,
            since_frames: 0,
            last: Instant::now(),
        }
    }
}

impl Checkpointer {
    /// Counts a frame written.
    pub fn wrote(&mut self, bytes: u64) {
        self.since_bytes += bytes;
        self.since_frames += 1;
    }

    /// Whether a checkpoint is due now (`idle`: also when no more appends wait).
    pub fn due(&self) -> bool {
        self.since_frames > 0
            && (self.since_bytes >= CHECKPOINT_BYTES || self.last.elapsed() >= CHECKPOINT_EVERY)
    }

    /// Writes the tables as the engine's checkpoint at the durable end. Called by the
    /// committer thread between groups (nothing is being written, so every frame the
    /// tables hold is below the durable end once synced). A failure is logged and
    /// retried at the next chance: the old checkpoint stays valid, only deletion waits.
    pub fn write(&mut self, log: &Log, streams: &Streams) {
        if self.since_frames == 0 {
            return;
        }
        if log.stats().poisoned.is_some() {
            return;
        }
        if log.options().sync != SyncPolicy::Always
            && let Err(e) = log.sync_now()
        {
            tracing::warn!(error = %e, "cannot sync before a stream state checkpoint");
            return;
        }
        let data = {
            let mut tables = streams.lock();
            tables.backlog.release(log.stats().first_unacked_seq);
            codec::encode_tables(&tables)
        };
        let seq = log.stats().durable_next;
        match log.write_checkpoint(seq, &data) {
            Ok(()) => {
                self.since_bytes = 0;
                self.since_frames = 0;
                self.last = Instant::now();
            }
            Err(e) if e.is_no_space() => {
                give_way_on_full_disk(log, &e);
                self.last = Instant::now();
            }
            Err(e) => {
                tracing::warn!(error = %e, seq, "cannot write the stream state checkpoint; delivered segments are kept until one succeeds");
                self.last = Instant::now();
            }
        }
    }
}
