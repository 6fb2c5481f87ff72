//! The log: appends with group commit, segment rolling, acknowledgements and reclamation.
//!
//! # Concurrency
//! One mutex guards the writer state. An append encodes and checksums its body *before*
//! taking it, then under the lock assigns sequences, stamps the header and issues one
//! positional `write`. Durability is a separate step, done by whichever waiting appender
//! finds no sync in flight (the *leader*): it notes how far the segment was written,
//! releases the lock, calls `fdatasync`, and publishes the new durable position to every
//! waiter. Appenders that wrote while a sync was in flight are covered by the next one, so
//! N concurrent appenders cost about two `fdatasync`s, not N. Waiters park individually
//! and a sync wakes only those it covered plus one next leader, not every waiting thread.
//!
//! # Invariants
//! * `durable_next <= next_seq <= frame::MAX_SEQ`; sequences below `durable_next` are on
//!   stable storage.
//! * Readers never see a record at or beyond `durable_next`, so a record is never
//!   delivered and then lost in a power failure (its sequence would be reused).
//! * `acked < durable_next`; the cursor file holds `acked` before any segment that
//!   only covers sequences `<= acked` is deleted.
//! * When a segment has a successor on disk, all of its frames are durable (a roll syncs
//!   the old segment before creating the new one) and, once the roll finishes, it ends
//!   with a seal naming the successor's first sequence.
//! * After an I/O error on the write path the log is *poisoned*: no append is
//!   acknowledged again, because the kernel may have dropped the data that failed.
//!
//! # Files
//! The `Log` type, its shared state and its lifecycle (readers, close) are here; each
//! other concern has a file of its own, an `impl Log` or `impl Inner` block each:
//! * `options.rs`: [`LogOptions`] and [`SyncPolicy`], what a caller can tune.
//! * `open.rs`: [`Log::open`], taking the lock and repairing what a crash left.
//! * `append.rs`: the write path ([`Log::append`], [`Log::prepare`], the entry to
//!   [`GroupWriter`](crate::GroupWriter)).
//! * `durability.rs`: group commit (the sync leader, parked waiters), waiting for
//!   durability, the background syncer of [`SyncPolicy::Interval`].
//! * `roll.rs`: sealing the active segment and starting the next one.
//! * `ack.rs`: the acknowledgement cursor and deleting delivered segments.
//! * `checkpoint.rs`: the caller's checkpoint and the deletion floor it sets.
//! * `stats.rs`: [`LogStats`] and [`RecoveryReport`], what the log reports.

mod ack;
mod append;
mod checkpoint;
mod durability;
mod open;
mod options;
mod roll;
mod stats;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fs::{FileHandle, FileSystem, LockGuard};
use crate::seek_index::SeekIndex;

pub use append::{Appended, PreparedBatch};
use durability::Waiter;
pub use options::{LogOptions, SyncPolicy};
pub use stats::{LogStats, RecoveryReport};

/// Name of the lock file inside the log directory (`DIR/LOCK`). The process that owns the
/// log holds an exclusive `flock` on it from [`Log::open`] until the `Log` is closed or
/// dropped.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, Clone, Copy)]
pub(crate) struct SealedSegment {
    pub first_seq: u64,
    pub len: u64,
}

#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub first_seq: u64,
    pub file: Arc<dyn FileHandle>,
    pub path: PathBuf,
    /// End of the frames written (where the next one goes).
    pub len: u64,
    /// The file's length: `len`, or more while it is pre-sized (issue 17). Whatever lies
    /// between `len` and `file_len` is unwritten (zeros).
    pub file_len: u64,
}

impl ActiveSegment {
    /// Gives back the unwritten pre-sized tail, so that the file ends at its data.
    pub(crate) fn trim(&mut self) -> std::io::Result<()> {
        if self.file_len > self.len {
            self.file.set_len(self.len)?;
            self.file_len = self.len;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub sealed: VecDeque<SealedSegment>,
    pub active: ActiveSegment,
    pub next_seq: u64,
    pub durable_next: u64,
    /// Bytes of the active segment known durable; readers stop here.
    pub durable_len: u64,
    syncing: bool,
    pub acked: u64,
    /// The checkpoint's sequence, if one exists: segments holding any sequence from
    /// here on are kept even once delivered (see `src/checkpoint.rs`).
    pub keep_from: Option<u64>,
    poisoned: Option<Arc<str>>,
    disk_bytes: u64,
    /// Appenders parked until `durable_next` reaches their target (see `wait_durable`).
    waiters: Vec<(u64, Arc<Waiter>)>,
    /// Sampled frame starts, so that a reader opened mid-segment skips ahead (see
    /// `src/seek_index.rs`).
    pub seek: SeekIndex,
}

impl State {
    pub(crate) fn poisoned(&self) -> Option<Arc<str>> {
        self.poisoned.clone()
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub(crate) fn add_disk_bytes(&mut self, bytes: u64) {
        self.disk_bytes += bytes;
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub fs: Arc<dyn FileSystem>,
    pub dir: PathBuf,
    opts: LogOptions,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Signalled whenever `durable_next` advances, the writer is poisoned, or the
    /// background syncer should stop.
    changed: Condvar,
    /// The cursor, updated in place; its lock serialises acknowledgements without
    /// blocking appends.
    ack_lock: Mutex<crate::cursor::CursorFile>,
    stop: AtomicBool,
    _lock: Box<dyn LockGuard>,
}

/// A durable, segmented, append-only log in one directory. See the crate documentation.
///
/// `Log` is `Send + Sync`: share it with `Arc` and append from many threads at once.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    report: RecoveryReport,
    syncer: Option<JoinHandle<()>>,
}

impl Inner {
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state is only mutated in small steps that keep it consistent; a panic in
        // another thread does not leave it half-updated, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn options(&self) -> &LogOptions {
        &self.opts
    }

    pub(crate) fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    pub(crate) fn poison(&self, st: &mut State, why: String) -> Arc<str> {
        let p: Arc<str> = Arc::from(why);
        if st.poisoned.is_none() {
            tracing::error!(reason = %p, "log writer stopped after a fatal error");
            st.poisoned = Some(Arc::clone(&p));
        }
        st.wake_waiters(true);
        self.changed.notify_all();
        p
    }
}

impl Log {
    /// A reader starting at `from_seq` (0 counts as 1), or at the oldest unacknowledged
    /// record if that is later (delivered records are never handed out again by a new
    /// reader). Readers see only durable records. Opening one does no I/O; several may
    /// read at once, beside appenders.
    pub fn reader(&self, from_seq: u64) -> crate::reader::Reader {
        crate::reader::Reader::new(Arc::clone(&self.inner), from_seq, false)
    }

    /// A reader starting at `from_seq` (0 counts as 1) that also returns acknowledged
    /// records whose segment is still on disk (from the oldest stored one if `from_seq`
    /// was deleted). This is how a caller rebuilds its state from the frames after its
    /// checkpoint ([`Log::write_checkpoint`] keeps those on disk). Only durable records,
    /// as [`Log::reader`].
    pub fn reader_including_acked(&self, from_seq: u64) -> crate::reader::Reader {
        crate::reader::Reader::new(Arc::clone(&self.inner), from_seq, true)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.opts
    }

    /// Syncs everything, gives back the unwritten tail of a pre-sized active segment (the
    /// file then ends at its data; see [`LogOptions::preallocate_segments`]), stops the
    /// background sync thread (if any) and releases the directory lock, once no
    /// [`Reader`](crate::Reader) of this log is left (readers share the open files).
    /// Dropping a `Log` does the same without the sync.
    ///
    /// A poisoned log is not synced again (its device already failed, and the call that
    /// hit the failure returned the error): `close` then only releases the lock and
    /// returns Ok. Records that were not durable yet ([`LogStats::durable_next`]) stay
    /// exposed to a power failure, as under `interval` and `never` they always are.
    ///
    /// # Errors
    /// As [`Log::sync_now`], if the final sync failed; the lock is released anyway.
    pub fn close(mut self) -> Result<()> {
        let res = if self.inner.lock_state().poisoned.is_some() {
            Ok(())
        } else {
            self.inner.sync_now().and_then(|()| {
                // Give back the unwritten pre-sized tail (not synced: a crash that undoes
                // it leaves a zero tail, which the next open takes for the end of the log).
                let mut st = self.inner.lock_state();
                let path = st.active.path.clone();
                st.active
                    .trim()
                    .map_err(|e| Error::io("truncate the pre-sized tail of", path, e))
            })
        };
        self.stop_syncer();
        res
    }

    fn stop_syncer(&mut self) {
        {
            // Raise the flag under the state lock: the syncer tests it under that lock right
            // before it waits, so it either sees the flag or is already waiting when the
            // notification comes. (Raised without the lock, the notification could fall
            // between its test and its wait, and closing would hang for a whole interval.)
            let _st = self.inner.lock_state();
            self.inner.stop.store(true, Ordering::SeqCst);
        }
        self.inner.changed.notify_all();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    /// Gives back the unwritten pre-sized tail of the active segment if
    /// [`Log::close`] did not (a dropped log), so that a closed log ends at its data.
    /// Errors are ignored: the tail is then there at the next open, which takes it for
    /// the end of the log. Runs once the last reader is gone and before the directory
    /// lock is released; a poisoned log is left as it is, for recovery.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.poisoned.is_none() {
            let _ = st.active.trim();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}
