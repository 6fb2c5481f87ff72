//! Writing several prepared batches with as few `write` calls as possible.
//!
//! # Why
//! A daemon that group-commits many small requests (one record each, say) would otherwise
//! pay one `pwrite` per request on top of the group's shared `fdatasync`. A
//! [`GroupWriter`] holds the writer lock for the whole group, gives each batch its
//! sequences as it is staged (so the caller learns at once whether it was admitted: quota,
//! poisoned log), and collects small frames in one contiguous buffer (the first frame's
//! own, so a group of one is not copied) that is written with a single call when the
//! group is finished. Large frames are written directly (after whatever is staged before
//! them), so big batches are never copied twice.
//!
//! # Invariants
//! * Staged frames are contiguous, start at the active segment's end, and carry
//!   consecutive sequences from the log's `next_seq`; nobody else can write meanwhile,
//!   because the writer lock is held for the writer's whole life.
//! * The log's state (`next_seq`, segment length, disk bytes) only moves past a frame
//!   once the frame is written; readers and syncs never see staged bytes.
//! * A batch's sequences are final only once [`GroupWriter::finish`] returns Ok (and, as
//!   for every write, durable only once a sync covers them). A failed write is sticky:
//!   the log is poisoned, and every later `stage` and the `finish` of this writer fail,
//!   so a caller that checks `finish` never acknowledges a batch staged before the
//!   failure, whichever call the failure surfaced in.
//! * Dropping a writer without `finish` writes what is staged (errors then poison the
//!   log), so sequences handed out are never silently reused.

use std::sync::MutexGuard;

use crate::error::{Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN};
use crate::log::{Appended, Inner, PreparedBatch, State};
use crate::segment::SEGMENT_HEADER_LEN;

/// Frames at least this large are written directly instead of being copied into the
/// group's buffer.
const DIRECT_WRITE_BYTES: usize = 64 << 10;

/// Writes a group of batches under one hold of the writer lock. Made by
/// [`crate::Log::group_writer`]: [`stage`](GroupWriter::stage) each batch (it gets its
/// sequences at once), then [`finish`](GroupWriter::finish) (one `write` for the small
/// frames), then [`crate::Log::wait_durable`] through the last sequence before
/// acknowledging any of them. Other appends wait until the writer is finished or dropped.
pub struct GroupWriter<'a> {
    inner: &'a Inner,
    st: Option<MutexGuard<'a, State>>,
    /// Frames staged but not yet written, starting at the active segment's end.
    staged: Vec<u8>,
    /// Records in `staged`.
    staged_records: u64,
}

impl std::fmt::Debug for GroupWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("staged_bytes", &self.staged.len())
            .field("staged_records", &self.staged_records)
            .finish()
    }
}

impl<'a> GroupWriter<'a> {
    pub(crate) fn new(inner: &'a Inner) -> GroupWriter<'a> {
        GroupWriter {
            inner,
            st: Some(inner.lock_state()),
            staged: Vec::new(),
            staged_records: 0,
        }
    }

    fn state(&mut self) -> &mut State {
        // `st` is only taken by `into_state`, which consumes the writer.
        self.st.as_deref_mut().unwrap_or_else(|| unreachable!())
    }

    /// Admits `batch` into the group and gives it its sequences. [`Error::Full`] (the
    /// quota, counting what is staged) refuses this batch only and changes nothing. An
    /// I/O error (from a segment roll, or from writing frames staged before this one) or
    /// [`Error::Poisoned`] means the log is poisoned: then [`GroupWriter::finish`] fails
    /// too, and no batch of the group may be acknowledged.
    pub fn stage(&mut self, batch: PreparedBatch) -> Result<Appended> {
        let mut prepared = batch.into_frame();
        let frame_len = prepared.bytes.len() as u64;
        let segment_bytes = self.inner.segment_bytes();
        let quota = self.inner.options().max_disk_bytes;
        let staged_len = self.staged.len() as u64;
        let staged_records = self.staged_records;
        let st = self.state();
        if let Some(p) = st.poisoned() {
            return Err(Error::Poisoned(p));
        }
        let end = st.active.len + staged_len;
        let must_roll = end > SEGMENT_HEADER_LEN && end + frame_len > segment_bytes;
        if let Some(quota) = quota {
            let needed = frame_len
                + if must_roll {
                    FRAME_HEADER_LEN as u64 + SEGMENT_HEADER_LEN
                } else {
                    0
                };
            let used = st.disk_bytes() + staged_len;
            if used + needed > quota {
                return Err(Error::Full {
                    used,
                    limit: quota,
                    needed,
                });
            }
        }
        let next_seq = st.next_seq + staged_records;
        if u64::from(prepared.count) > frame::MAX_SEQ - next_seq {
            // Unreachable in practice (2^63 records); refuse rather than overflow.
            self.write_staged()?;
            let inner = self.inner;
            let p = inner.poison(self.state(), "sequence numbers exhausted".to_owned());
            return Err(Error::Poisoned(p));
        }
        if must_roll {
            self.write_staged()?;
            let inner = self.inner;
            inner.roll(self.state())?;
        }
        prepared.seal_header(next_seq);
        let appended = Appended {
            first_seq: next_seq,
            last_seq: next_seq + u64::from(prepared.count) - 1,
        };
        if prepared.bytes.len() >= DIRECT_WRITE_BYTES {
            self.write_staged()?;
            self.write(&prepared.bytes, u64::from(prepared.count))?;
        } else {
            if self.staged.is_empty() {
                // The first frame's own buffer becomes the group's, so a group of one
                // (every `Log::append`) is written without a copy.
                self.staged = prepared.bytes;
            } else {
                self.staged.extend_from_slice(&prepared.bytes);
            }
            self.staged_records += u64::from(prepared.count);
        }
        Ok(appended)
    }

    /// Writes everything staged and releases the writer lock. Once this returns Ok, every
    /// batch staged is written (not yet durable: see [`crate::Log::wait_durable`]).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Poisoned`]: a write of this group failed (whichever call
    /// reported it) or the log was already stopped. The log is poisoned and none of the
    /// group may be acknowledged.
    pub fn finish(mut self) -> Result<()> {
        self.write_staged()?;
        self.check_not_failed()
    }

    /// `finish`, keeping the lock for the caller.
    pub(crate) fn into_state(mut self) -> Result<MutexGuard<'a, State>> {
        self.write_staged()?;
        self.check_not_failed()?;
        Ok(self.st.take().unwrap_or_else(|| unreachable!()))
    }

    /// Fails once the log is poisoned: a write or roll of this group failed (whichever
    /// call reported it), or the log was poisoned before, in which case `stage` refused
    /// every batch anyway.
    fn check_not_failed(&mut self) -> Result<()> {
        match self.state().poisoned() {
            Some(p) => Err(Error::Poisoned(p)),
            None => Ok(()),
        }
    }

    fn write_staged(&mut self) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::take(&mut self.staged);
        let records = std::mem::replace(&mut self.staged_records, 0);
        self.write(&staged, records)
    }

    /// Writes whole frames holding `records` records at the active segment's end, and
    /// only then moves the log's state past them.
    fn write(&mut self, bytes: &[u8], records: u64) -> Result<()> {
        let inner = self.inner;
        let st = self.state();
        let offset = st.active.len;
        if let Err(e) = st.active.file.write_all_at(bytes, offset) {
            let path = st.active.path.clone();
            // Take the partial frames back out so the file ends on a frame boundary; the
            // writer is stopped either way, since the device just failed us.
            let rolled_back = st.active.file.set_len(offset).is_ok();
            if rolled_back {
                st.active.file_len = offset;
            }
            inner.poison(
                st,
                format!(
                    "write to {} failed: {e}{}",
                    path.display(),
                    if rolled_back {
                        " (partial frame removed)"
                    } else {
                        " (partial frame could not be removed; recovery will drop it)"
                    }
                ),
            );
            return Err(Error::io("write", path, e));
        }
        let len = bytes.len() as u64;
        let (segment, first) = (st.active.first_seq, st.next_seq);
        st.seek.note(segment, first, offset);
        st.active.len += len;
        st.active.file_len = st.active.file_len.max(st.active.len);
        st.add_disk_bytes(len);
        st.next_seq += records;
        Ok(())
    }
}

impl Drop for GroupWriter<'_> {
    fn drop(&mut self) {
        if self.st.is_some() && !self.staged.is_empty() {
            // Sequences were handed out for these frames; write them rather than let the
            // next append reuse the sequences. A failure poisons the log.
            let _ = self.write_staged();
        }
    }
}
