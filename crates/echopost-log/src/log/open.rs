//! Opening a log: the directory lock, recovery's repairs of what a crash left half-done,
//! and the in-memory state built from what is on disk. Everything a later step builds on
//! is made durable here first, so that nothing new depends on page-cache-only state.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::checkpoint;
use crate::cursor::{CURSOR_TMP_FILE, CursorFile};
use crate::error::{Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN};
use crate::fs::{FileSystem, OpenMode, RealFs};
use crate::recovery;
use crate::segment::{self, SEGMENT_HEADER_LEN};

use super::durability::spawn_syncer;
use super::roll::create_segment;
use super::{
    ActiveSegment, Inner, LOCK_FILE, Log, LogOptions, RecoveryReport, SealedSegment, State,
    SyncPolicy,
};

impl Log {
    /// Opens the log in `dir`, creating the directory and an empty log if needed.
    ///
    /// Takes the directory lock ([`LOCK_FILE`]), reads the cursor, the headers and seals
    /// of the segments and the last segment in full (so the time does not grow with the
    /// backlog), and repairs what a crash may have left half-done (a torn write at the
    /// end, an interrupted segment roll; listed in [`Log::recovery_report`]). Under
    /// [`SyncPolicy::Interval`] it starts the background sync thread.
    ///
    /// # Errors
    /// * [`Error::Locked`]: another process (or another `Log` in this one) has the lock.
    /// * [`Error::Corruption`]: damage a crash cannot produce, naming file, byte offset
    ///   and reason. Nothing is changed.
    /// * [`Error::Io`]: creating, locking, reading, repairing or syncing failed.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log> {
        Log::open_on(Arc::new(RealFs), dir.as_ref(), opts)
    }

    /// [`Log::open`] on the given file system, e.g. `sim::SimFs` (feature `sim`).
    #[cfg(feature = "sim")]
    pub fn open_with_fs(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: LogOptions,
    ) -> Result<Log> {
        Log::open_on(fs, dir.as_ref(), opts)
    }

    /// Takes the directory lock, reads the cursor and the tail of the last segment, and
    /// repairs what a crash may have left half-done (see `recovery.rs`). Any other
    /// inconsistency is returned as [`Error::Corruption`] and nothing is changed.
    pub(crate) fn open_on(fs: Arc<dyn FileSystem>, dir: &Path, opts: LogOptions) -> Result<Log> {
        let started = Instant::now();
        let dir = dir.to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs
            .try_lock(&lock_path)
            .map_err(|e| Error::io("lock", &lock_path, e))?
            .ok_or_else(|| Error::Locked { dir: dir.clone() })?;

        let layout = recovery::analyze_with_fs(&*fs, &dir)?;
        // A killed process may have left directory entries that are not durable: a segment
        // it created, the cursor it renamed, when their directory sync never ran. Repairs
        // and new records build on them (e.g. a completed roll's seal names the new
        // segment), so make them durable before anything else.
        fs.sync_dir(&dir)
            .map_err(|e| Error::io("sync directory", &dir, e))?;
        let mut report = RecoveryReport {
            acked: layout.acked,
            next_seq: layout.next_seq,
            created: layout.segments.is_empty() && !layout.cursor_exists,
            ..RecoveryReport::default()
        };
        if layout.stale_cursor_tmp {
            let tmp = dir.join(CURSOR_TMP_FILE);
            fs.remove_file(&tmp)
                .map_err(|e| Error::io("remove", &tmp, e))?;
        }
        // Reported in `recovery_report().cursor_reset`; the caller says it in its own words
        // (the daemon adds what it means for the main server).
        report.cursor_reset = layout.cursor_reset.clone().map(Box::new);
        let cursor = CursorFile::open(&*fs, &dir, &layout.cursor_found, layout.acked)?;
        checkpoint::remove_stale_tmp(&*fs, &dir)?;
        let keep_from = checkpoint::read_checkpoint(&*fs, &dir)?.map(|c| c.seq);
        if let Some(k) = keep_from
            && k > layout.next_seq
        {
            // Only durable frames are ever checkpointed, so they cannot be missing.
            return Err(Error::corrupt(
                checkpoint::checkpoint_path(&dir),
                16,
                crate::error::CorruptionKind::InvalidHeader(
                    "checkpoint covers sequences beyond the end of the log",
                ),
            ));
        }

        let mut sealed: VecDeque<SealedSegment> = VecDeque::new();
        let active = match layout.segments.split_last() {
            None => {
                let presize = opts.presize_len();
                let file = create_segment(&*fs, &dir, layout.next_seq, presize)?;
                ActiveSegment {
                    first_seq: layout.next_seq,
                    file,
                    path: segment::segment_path(&dir, layout.next_seq),
                    len: SEGMENT_HEADER_LEN,
                    file_len: presize.unwrap_or(SEGMENT_HEADER_LEN),
                }
            }
            Some((last, rest)) => {
                for (i, s) in rest.iter().enumerate() {
                    let mut len = s.len;
                    if i + 1 == rest.len()
                        && let Some(at) = layout.unfinished_seal_at
                    {
                        let path = segment::segment_path(&dir, s.first_seq);
                        let f = fs
                            .open(&path, OpenMode::ReadWrite)
                            .map_err(|e| Error::io("open", &path, e))?;
                        f.write_all_at(&frame::encode_seal(last.first_seq), at)
                            .and_then(|()| f.set_len(at + FRAME_HEADER_LEN as u64))
                            .and_then(|()| f.sync_data())
                            .map_err(|e| Error::io("seal", &path, e))?;
                        len = at + FRAME_HEADER_LEN as u64;
                        report.completed_roll = true;
                        tracing::warn!(file = %path.display(), "completed a segment roll interrupted by a crash");
                    }
                    sealed.push_back(SealedSegment {
                        first_seq: s.first_seq,
                        len,
                    });
                }
                let path = segment::segment_path(&dir, last.first_seq);
                let mut file_len = last.len;
                let file = if layout.torn_segment_header {
                    report.recreated_segment_header = true;
                    tracing::warn!(file = %path.display(), "re-created a segment whose header was torn by a crash");
                    let presize = opts.presize_len();
                    file_len = presize.unwrap_or(SEGMENT_HEADER_LEN);
                    create_segment(&*fs, &dir, last.first_seq, presize)?
                } else {
                    let f = fs
                        .open(&path, OpenMode::ReadWrite)
                        .map_err(|e| Error::io("open", &path, e))?;
                    if let Some(t) = &layout.torn_tail {
                        f.set_len(t.start)
                            .map_err(|e| Error::io("truncate", &path, e))?;
                        file_len = t.start;
                        tracing::warn!(
                            file = %t.file.display(), start = t.start, end = t.end,
                            dropped = ?t.dropped_seqs, reason = %t.reason,
                            "dropped a torn write at the end of the log"
                        );
                    }
                    // Pre-size the active segment again (a clean close gave its tail back)
                    // to the length its header records: only there is a zero tail the
                    // end of the log. A segment that was not pre-sized (written before
                    // issue 17, or with the option off) keeps growing until the next roll.
                    // The torn tail, if any, was cut first, so everything after the valid
                    // data reads as zeros: no stale frame can follow what is written next.
                    if opts.preallocate_segments && layout.active_presized > file_len {
                        f.set_len(layout.active_presized)
                            .map_err(|e| Error::io("pre-size", &path, e))?;
                        file_len = layout.active_presized;
                    }
                    // Data recovered from the page cache after a process crash may not
                    // be on stable storage yet; make it so before anyone reads it.
                    f.sync_data()
                        .map_err(|e| Error::io("fdatasync", &path, e))?;
                    f
                };
                report.torn_tail = layout.torn_tail.clone();
                ActiveSegment {
                    first_seq: last.first_seq,
                    file,
                    path,
                    len: layout.active_valid_len,
                    file_len,
                }
            }
        };

        // The seal of the segment a killed process was rolling away from may be in the page
        // cache only (the roll's sync failed); new records will depend on it.
        if let Some(prev) = sealed.back()
            && !report.completed_roll
        {
            let path = segment::segment_path(&dir, prev.first_seq);
            fs.open(&path, OpenMode::ReadWrite)
                .and_then(|f| f.sync_data())
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }

        let segment_bytes = opts.effective_segment_bytes();
        let disk_bytes = sealed.iter().map(|s| s.len).sum::<u64>() + active.len;
        let state = State {
            sealed,
            durable_len: active.len,
            active,
            next_seq: layout.next_seq,
            durable_next: layout.next_seq,
            syncing: false,
            acked: layout.acked,
            keep_from,
            poisoned: None,
            disk_bytes,
            waiters: Vec::new(),
            seek: Default::default(),
        };
        let inner = Arc::new(Inner {
            fs,
            dir,
            opts,
            segment_bytes,
            state: Mutex::new(state),
            changed: Condvar::new(),
            ack_lock: Mutex::new(cursor),
            stop: AtomicBool::new(false),
            _lock: lock,
        });
        report.removed_acked_segments = inner.delete_acked_segments()?;
        {
            let st = inner.lock_state();
            report.segments = st.sealed.len() + 1;
        }
        report.duration = started.elapsed();
        let syncer = match inner.opts.sync {
            SyncPolicy::Interval(every) => Some(
                spawn_syncer(Arc::clone(&inner), every)
                    .map_err(|e| Error::io("start the sync thread for", &inner.dir, e))?,
            ),
            _ => None,
        };
        Ok(Log {
            inner,
            report,
            syncer,
        })
    }
}
