//! Acknowledgements: the durable cursor, then deleting the segments it fully covers
//! (and giving their bytes back to the quota). The cursor always reaches the disk before
//! any deletion, so a crash never loses an undelivered record.
//!
//! None of it needs free disk space (issue 13): the cursor is overwritten in place
//! (`cursor.rs`), deleting only frees, and rolling past a fully delivered active segment
//! (which needs a new file) uses the cursor's reserve on `ENOSPC`, and is skipped if that
//! is not enough.

use crate::cursor::CursorFile;
use crate::error::{Error, Result};
use crate::segment;
use crate::segment::SEGMENT_HEADER_LEN;

#[cfg(doc)]
use super::LogOptions;
use super::{Inner, Log, SealedSegment};

impl Log {
    /// Records that every sequence up to and including `seq` was delivered: persists the
    /// cursor (in place, allocating nothing), then deletes segments holding only acknowledged records (rolling
    /// the active segment first once it is fully acknowledged and at least a quarter of
    /// [`LogOptions::segment_bytes`], clamped to 4 KiB..1 MiB). Acknowledging an already
    /// acknowledged sequence is a no-op.
    ///
    /// # Errors
    /// * [`Error::AckBeyondDurable`]: `seq` is not durable yet; nothing changes.
    /// * [`Error::Io`]: writing the cursor, rolling or deleting failed. The cursor on disk
    ///   is the old or the new one; segments left behind are deleted by a later `ack` or
    ///   at the next open. A failed roll poisons the log, except one that could not
    ///   create the next segment for lack of space: that roll is undone and skipped
    ///   (the active segment is reclaimed by a later `ack`), and `ack` succeeds.
    pub fn ack(&self, seq: u64) -> Result<()> {
        let inner = &*self.inner;
        let mut cursor = inner.ack_lock.lock().unwrap_or_else(|p| p.into_inner());
        {
            let st = inner.lock_state();
            if seq <= st.acked {
                return Ok(());
            }
            if seq >= st.durable_next {
                return Err(Error::AckBeyondDurable {
                    seq,
                    durable: st.durable_next.saturating_sub(1),
                });
            }
        }
        cursor.update(seq)?;
        inner.lock_state().acked = seq;
        // Free what can be freed first: the roll below needs room for a new file.
        inner.delete_acked_segments()?;
        // The active segment can only be given back by rolling past it. Do that once it
        // is fully delivered and big enough to be worth a new file.
        let reclaim_at = (inner.segment_bytes / 4).clamp(4096, 1 << 20);
        inner.reclaim_active(&mut cursor, reclaim_at)?;
        Ok(())
    }

    /// Gives back the active segment if every record in it is delivered, whatever its
    /// size (what [`Log::ack`] does only for one of at least a quarter segment), so that
    /// a drained log leaves no delivered data on disk: the daemon calls it before a clean
    /// exit, which matters on a full disk (issue 13). Uses the cursor's reserve on
    /// `ENOSPC`. Returns whether a segment was given back.
    ///
    /// # Errors
    /// As [`Log::ack`]'s roll and deletion; a roll that fails for lack of space even
    /// after the reserve is not an error (false).
    pub fn reclaim_delivered(&self) -> Result<bool> {
        let inner = &*self.inner;
        let mut cursor = inner.ack_lock.lock().unwrap_or_else(|p| p.into_inner());
        let before = inner.lock_state().disk_bytes;
        inner.reclaim_active(&mut cursor, SEGMENT_HEADER_LEN + 1)?;
        Ok(inner.lock_state().disk_bytes < before)
    }
}

impl Inner {
    /// Rolls past the active segment when it is fully delivered and at least `min_len`
    /// long, then deletes it. On `ENOSPC` the cursor's reserve is released and the roll
    /// tried once more; if that fails too, the segment stays (logged, not an error).
    fn reclaim_active(&self, cursor: &mut CursorFile, min_len: u64) -> Result<()> {
        {
            let mut st = self.lock_state();
            if st.poisoned.is_some() || st.acked + 1 != st.next_seq || st.active.len < min_len {
                return Ok(());
            }
            let mut rolled = self.roll_to_reclaim(&mut st);
            if matches!(&rolled, Err(e) if e.is_no_space() && st.poisoned.is_none())
                && cursor.release_reserve()
            {
                tracing::warn!(
                    "the disk is full: released the cursor's reserve to give back the delivered active segment"
                );
                rolled = self.roll_to_reclaim(&mut st);
            }
            match rolled {
                Ok(()) => {}
                Err(e) if e.is_no_space() && st.poisoned.is_none() => {
                    tracing::warn!(error = %e, "the disk is full: the delivered active segment stays until a later acknowledgement");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.delete_acked_segments()?;
        Ok(())
    }
}

impl Inner {
    /// Deletes sealed segments whose records are all acknowledged (and, while a
    /// checkpoint exists, all before its sequence), oldest first. The cursor
    /// covering them is already durable, so a crash (or a failed removal) at any point here
    /// only leaves extra files at the front of the log that the next call (or the next open)
    /// removes.
    pub(super) fn delete_acked_segments(&self) -> Result<usize> {
        let doomed: Vec<SealedSegment> = {
            let mut st = self.lock_state();
            let mut out = Vec::new();
            loop {
                let next_first = match st.sealed.get(1) {
                    Some(s) => s.first_seq,
                    None => st.active.first_seq,
                };
                // The checkpoint's floor: frames from its sequence on rebuild the caller's
                // state, so their segments stay (see `src/checkpoint.rs`).
                let kept = st.keep_from.is_some_and(|k| next_first > k);
                match st.sealed.front() {
                    Some(front) if next_first <= st.acked + 1 && !kept => {
                        let front = *front;
                        st.disk_bytes -= front.len;
                        st.sealed.pop_front();
                        out.push(front);
                    }
                    _ => break,
                }
            }
            if !out.is_empty() {
                let first_kept = st
                    .sealed
                    .front()
                    .map_or(st.active.first_seq, |s| s.first_seq);
                st.seek.forget_before(first_kept);
            }
            out
        };
        for (i, s) in doomed.iter().enumerate() {
            let path = segment::segment_path(&self.dir, s.first_seq);
            match self.fs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Segments go strictly oldest first, so the files on disk always chain
                    // without a gap. Put back the ones still there, to be retried by the
                    // next call (deleting younger ones now would leave this one stranded
                    // before a gap, which the next open would rightly call corruption).
                    let mut st = self.lock_state();
                    for s in doomed[i..].iter().rev() {
                        st.disk_bytes += s.len;
                        st.sealed.push_front(*s);
                    }
                    return Err(Error::io("remove", path, e));
                }
            }
        }
        if !doomed.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        }
        Ok(doomed.len())
    }
}
