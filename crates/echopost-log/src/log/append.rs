//! The write path's entry points: whole batches ([`Log::append`]), batches prepared
//! outside the writer lock ([`Log::prepare`]) and the [`GroupWriter`] that writes many of
//! them with one call. Sequences are assigned and frames written by the `GroupWriter`
//! (`group.rs`); making them durable is `durability.rs`.

use crate::error::{Error, Result};
use crate::frame::{self, BatchBody, PreparedFrame, RECORD_OVERHEAD};
use crate::group::GroupWriter;

#[cfg(doc)]
use super::LogOptions;
use super::{Log, SyncPolicy};

/// A batch checked, encoded and checksummed by [`Log::prepare`], waiting to be written.
#[derive(Debug)]
pub struct PreparedBatch(PreparedFrame);

impl PreparedBatch {
    /// Bytes the batch will occupy on disk: its frame (32-byte header plus the stored,
    /// possibly compressed, body).
    pub fn frame_len(&self) -> usize {
        self.0.bytes.len()
    }

    /// Records in the batch.
    pub fn records(&self) -> u32 {
        self.0.count
    }

    pub(crate) fn into_frame(self) -> PreparedFrame {
        self.0
    }
}

/// The sequences an append was given: `first_seq..=last_seq`, one per record in the
/// order given (a batch of N records spans N consecutive sequences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence of the batch's first record.
    pub first_seq: u64,
    /// Sequence of the batch's last record (`first_seq + N - 1`).
    pub last_seq: u64,
}

impl Log {
    /// Appends `records` (each an opaque byte string, possibly empty) as one atomic batch
    /// and returns their sequences. Returns once the batch is durable under the sync
    /// policy: under [`SyncPolicy::Always`] after an `fdatasync` covering it (shared with
    /// concurrent appenders), otherwise once written to the OS. Safe to call from many
    /// threads at once.
    ///
    /// # Errors
    /// Refused, changing nothing (the log stays usable): [`Error::EmptyBatch`] (no
    /// records), [`Error::BatchTooLarge`] (over [`LogOptions::max_batch_bytes`]),
    /// [`Error::Full`] (over [`LogOptions::max_disk_bytes`]).
    ///
    /// Fatal: [`Error::Io`] when a write, segment roll or sync fails, which poisons the
    /// log; [`Error::Poisoned`] once it is. The batch must then be treated as not stored
    /// (it may still turn up after a restart if its bytes did reach the disk).
    pub fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Appended> {
        self.append_inner(records, self.inner.opts.sync == SyncPolicy::Always)
    }

    /// Writes `records` as one atomic batch and returns their sequences *without* waiting
    /// for durability, whatever the sync policy. The batch is not safe until a later
    /// [`Log::wait_durable`] (or [`Log::sync_now`]) covering `last_seq` returns Ok; only
    /// then may it be acknowledged to anyone.
    ///
    /// Test support (feature `sim`): tests use it to leave records written but not durable.
    /// Outside tests, a [`GroupWriter`] does this job for many batches at once.
    #[cfg(any(test, feature = "sim"))]
    pub fn append_nowait<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Appended> {
        self.append_inner(records, false)
    }

    /// Checks, encodes, compresses and checksums a batch without touching the log or its
    /// lock, so that this CPU work runs on the caller's thread. Write the result with
    /// [`Log::group_writer`]. Fails with [`Error::EmptyBatch`] or
    /// [`Error::BatchTooLarge`], changing nothing.
    pub fn prepare(&self, body: BatchBody) -> Result<PreparedBatch> {
        if body.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let size = body.raw_len();
        let limit = self.batch_limit();
        if size > limit {
            return Err(Error::BatchTooLarge { size, limit });
        }
        body.finish(self.inner.opts.compression)
            .map(PreparedBatch)
            .map_err(|_| Error::BatchTooLarge { size, limit })
    }

    /// Writes a batch made by [`Log::prepare`], like [`Log::append_nowait`]: not durable
    /// (and not to be acknowledged) until a [`Log::wait_durable`] covering it returns Ok.
    /// Test support (feature `sim`); outside tests, a [`GroupWriter`] writes prepared
    /// batches.
    #[cfg(any(test, feature = "sim"))]
    pub fn append_prepared_nowait(&self, batch: PreparedBatch) -> Result<Appended> {
        self.write_prepared(batch, false)
    }

    /// A writer for several prepared batches at once: each is given its sequences as it
    /// is staged, small frames are written together with one call at
    /// [`GroupWriter::finish`]. Nothing is durable (or to be acknowledged) until a
    /// [`Log::wait_durable`] covering it returns Ok.
    /// Holds the writer lock until finished or dropped: every other append waits.
    pub fn group_writer(&self) -> GroupWriter<'_> {
        GroupWriter::new(&self.inner)
    }

    fn batch_limit(&self) -> u64 {
        self.inner
            .opts
            .max_batch_bytes
            .min(u64::from(frame::MAX_BODY_LEN))
    }

    fn append_inner<R: AsRef<[u8]>>(&self, records: &[R], wait: bool) -> Result<Appended> {
        // Refuse an oversized batch before copying it.
        let size: u64 = records
            .iter()
            .map(|r| (r.as_ref().len() + RECORD_OVERHEAD) as u64)
            .sum();
        let limit = self.batch_limit();
        if size > limit {
            return Err(Error::BatchTooLarge { size, limit });
        }
        let batch = self.prepare(BatchBody::from_records(records))?;
        self.write_prepared(batch, wait)
    }

    /// Takes the lock, assigns sequences, writes the frame, and waits for durability if
    /// asked.
    fn write_prepared(&self, batch: PreparedBatch, wait: bool) -> Result<Appended> {
        let mut writer = GroupWriter::new(&self.inner);
        let appended = writer.stage(batch)?;
        let st = writer.into_state()?;
        if wait {
            self.inner.wait_durable(st, appended.last_seq + 1)?;
        }
        Ok(appended)
    }
}
