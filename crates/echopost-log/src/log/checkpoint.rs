//! The caller's checkpoint (see `src/checkpoint.rs`): writing it, reading it back, and the
//! deletion floor it sets.

use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, Result};

use super::Log;

impl Log {
    /// Durably replaces the checkpoint with `data`, the caller's state covering every
    /// frame before `seq` (a frame boundary: the durable end between appends is one;
    /// recovery reads whole frames from `seq` on), then deletes the delivered segments the older checkpoint held
    /// back. From now on acknowledgements delete only segments that end before `seq`, so
    /// the frames from `seq` on stay readable ([`Log::reader_including_acked`]) until a
    /// later checkpoint moves past them.
    ///
    /// # Errors
    /// * [`Error::CheckpointOutOfRange`]: `seq` is beyond the durable end (its frames
    ///   could still be lost, and the checkpoint would claim them) or before the current
    ///   checkpoint's; nothing changes.
    /// * [`Error::Poisoned`]: the log stopped after a fatal error.
    /// * [`Error::Io`]: writing the file failed (the old or the new checkpoint is on disk;
    ///   until a later call succeeds, deletion keeps to the old one), or deleting did.
    pub fn write_checkpoint(&self, seq: u64, data: &[u8]) -> Result<()> {
        let inner = &*self.inner;
        let _serial = inner.ack_lock.lock().unwrap_or_else(|p| p.into_inner());
        {
            let st = inner.lock_state();
            if let Some(p) = st.poisoned() {
                return Err(Error::Poisoned(p));
            }
            let current = st.keep_from.unwrap_or(1);
            if seq > st.durable_next || seq < current || seq == 0 {
                return Err(Error::CheckpointOutOfRange {
                    seq,
                    durable_next: st.durable_next,
                    current,
                });
            }
        }
        if let Err(e) = checkpoint::write_checkpoint(&*inner.fs, &inner.dir, seq, data) {
            // A half-written temporary file would hold on to space a full disk needs.
            let _ = checkpoint::remove_stale_tmp(&*inner.fs, &inner.dir);
            return Err(e);
        }
        inner.lock_state().keep_from = Some(seq);
        inner.delete_acked_segments()?;
        Ok(())
    }

    /// Removes the checkpoint and the deletion floor it set, then deletes every delivered
    /// segment. For a caller that cannot write a newer checkpoint because the device is
    /// full: delivered data must be freed, and a checkpoint that cannot move would keep
    /// it. The caller's state is then rebuilt as if no checkpoint had ever been written.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; [`Error::Io`] if removing the file or deleting segments failed.
    pub fn remove_checkpoint(&self) -> Result<()> {
        let inner = &*self.inner;
        let _serial = inner.ack_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = inner.lock_state().poisoned() {
            return Err(Error::Poisoned(p));
        }
        checkpoint::remove_stale_tmp(&*inner.fs, &inner.dir)?;
        checkpoint::remove_checkpoint(&*inner.fs, &inner.dir)?;
        inner.lock_state().keep_from = None;
        inner.delete_acked_segments()?;
        Ok(())
    }

    /// The checkpoint on disk, if one was ever written (read from the file each time).
    ///
    /// # Errors
    /// [`Error::Corruption`] if the file is damaged; [`Error::Io`] if reading failed.
    pub fn read_checkpoint(&self) -> Result<Option<Checkpoint>> {
        checkpoint::read_checkpoint(&*self.inner.fs, &self.inner.dir)
    }
}
