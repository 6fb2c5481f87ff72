//! Segment rolling: sealing the active segment and starting the next one, in the order
//! that keeps a crash at any step recoverable (sync the old segment, create (pre-sized)
//! and sync the new one, then seal the old one, cut its unwritten pre-sized tail and sync
//! it: a sealed segment ends with its seal, as it always did).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN};
use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::segment::{self, SEGMENT_HEADER_LEN};

use super::{ActiveSegment, Inner, SealedSegment, State};

impl Inner {
    /// Seals the active segment and starts a new one at `next_seq`. Called with the state
    /// locked; rare (once per segment), so holding the lock through its syncs is fine.
    pub(crate) fn roll(&self, st: &mut State) -> Result<()> {
        self.roll_with(st, false)
    }

    /// [`Inner::roll`] for reclaiming a fully delivered active segment: if the successor
    /// cannot be created for lack of space (`ENOSPC`), what was created of it is removed
    /// and the error returned without poisoning the log (nothing else changed: the old
    /// segment is still active and unsealed). Any other failure poisons, as in `roll`.
    pub(crate) fn roll_to_reclaim(&self, st: &mut State) -> Result<()> {
        self.roll_with(st, true)
    }

    fn roll_with(&self, st: &mut State, undo_on_no_space: bool) -> Result<()> {
        let old_path = st.active.path.clone();
        // 1. Everything in the old segment becomes durable before a successor exists
        //    (already so when the last write was synced, as under `SyncPolicy::Always`
        //    between appends: a second `fdatasync` would only cost a device flush).
        let already_durable = st.durable_next == st.next_seq && st.durable_len == st.active.len;
        if !already_durable && let Err(e) = st.active.file.sync_data() {
            self.poison(
                st,
                format!("fdatasync of {} failed: {e}", old_path.display()),
            );
            return Err(Error::io("fdatasync", old_path, e));
        }
        st.durable_next = st.next_seq;
        st.durable_len = st.active.len;
        st.wake_waiters(false);
        self.changed.notify_all();
        // 2. Create the successor durably.
        let new_first = st.next_seq;
        let new_path = segment::segment_path(&self.dir, new_first);
        let presize = self.opts.presize_len();
        let file = match create_segment(&*self.fs, &self.dir, new_first, presize) {
            Ok(f) => f,
            Err(e) => {
                // Remove what was created of it: left empty or torn, the next open would
                // have to write its header again, which a full disk cannot do.
                let discarded = self.discard_successor(&new_path);
                if undo_on_no_space && e.is_no_space() && discarded {
                    return Err(e);
                }
                self.poison(
                    st,
                    format!("could not start segment {}: {e}", new_path.display()),
                );
                return Err(e);
            }
        };
        // 3. Seal the old one, and give back its unwritten pre-sized tail (a sealed
        //    segment ends with its seal). A crash before this is finished at the next open.
        let seal = frame::encode_seal(new_first);
        let old_len = st.active.len;
        let sealed_len = old_len + FRAME_HEADER_LEN as u64;
        let old_file_len = st.active.file_len;
        if let Err(e) = st
            .active
            .file
            .write_all_at(&seal, old_len)
            .and_then(|()| {
                if old_file_len > sealed_len {
                    st.active.file.set_len(sealed_len)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| st.active.file.sync_data())
        {
            self.poison(st, format!("could not seal {}: {e}", old_path.display()));
            return Err(Error::io("seal", old_path, e));
        }
        st.sealed.push_back(SealedSegment {
            first_seq: st.active.first_seq,
            len: sealed_len,
        });
        st.active = ActiveSegment {
            first_seq: new_first,
            file,
            path: new_path,
            len: SEGMENT_HEADER_LEN,
            file_len: presize.unwrap_or(SEGMENT_HEADER_LEN),
        };
        st.durable_len = SEGMENT_HEADER_LEN;
        st.disk_bytes += FRAME_HEADER_LEN as u64 + SEGMENT_HEADER_LEN;
        Ok(())
    }
}

impl Inner {
    /// Removes a successor segment whose creation failed, durably; false if that failed
    /// too (left behind next to an active segment that keeps growing, it would read as
    /// corruption at the next open, so the caller must then poison).
    fn discard_successor(&self, path: &Path) -> bool {
        let removed = match self.fs.remove_file(path) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        removed && self.fs.sync_dir(&self.dir).is_ok()
    }
}

/// Creates segment `first_seq` with its header, durably (file data and directory entry),
/// extended to `presize` bytes if given (from `LogOptions::presize_len`, which is always
/// more than a header; sparse: nothing is allocated or written; see
/// [`LogOptions::preallocate_segments`](crate::LogOptions::preallocate_segments)); the
/// header records it.
pub(super) fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    first_seq: u64,
    presize: Option<u64>,
) -> Result<Arc<dyn FileHandle>> {
    let path = segment::segment_path(dir, first_seq);
    let file = fs
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &path, e))?;
    let presize = presize.filter(|&l| l > SEGMENT_HEADER_LEN);
    file.write_all_at(
        &segment::encode_presized_segment_header(first_seq, presize.unwrap_or(0)),
        0,
    )
    .map_err(|e| Error::io("write", &path, e))?;
    if let Some(len) = presize {
        file.set_len(len)
            .map_err(|e| Error::io("pre-size", &path, e))?;
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(file)
}
