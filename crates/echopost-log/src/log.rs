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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cursor::{self, CURSOR_TMP_FILE};
use crate::error::{Error, Result};
use crate::frame::{
    self, BatchBody, Compression, FRAME_HEADER_LEN, PreparedFrame, RECORD_OVERHEAD,
};
use crate::fs::{FileHandle, FileSystem, LockGuard, OpenMode, RealFs};
use crate::group::GroupWriter;
use crate::recovery::{self, TornTail};
use crate::segment::{self, SEGMENT_HEADER_LEN};

/// Name of the lock file inside the log directory (`DIR/LOCK`). The process that owns the
/// log holds an exclusive `flock` on it from [`Log::open`] until the `Log` is closed or
/// dropped.
pub const LOCK_FILE: &str = "LOCK";

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// `fdatasync` before the append returns (group-committed). Nothing acknowledged is
    /// ever lost, even on power loss. The default.
    #[default]
    Always,
    /// The append returns once written to the OS; a background thread syncs at this
    /// interval. A process crash loses nothing; power loss loses at most one interval.
    /// Shown (`Display`) as `interval:<milliseconds>`.
    Interval(Duration),
    /// The append returns once written to the OS; the OS decides when to flush. A process
    /// crash loses nothing; power loss may lose anything not yet flushed.
    Never,
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            SyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Settings of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Largest size of a segment file, in bytes: an append whose frame would take the
    /// active segment past it starts a new segment (a single larger frame gets a segment of
    /// its own). Default 64 MiB; values below 4096 count as 4096. With a disk quota,
    /// segments are capped at an eighth of it (at least 4096) so that acknowledgements
    /// free space in useful steps.
    pub segment_bytes: u64,
    /// Durability of appends. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Per-frame compression. Default none.
    pub compression: Compression,
    /// Disk quota for segment files, in bytes (their headers, frames and seals; the
    /// cursor and lock file are not counted). An append that would go over it fails with
    /// [`Error::Full`] and changes nothing. `None` (default) means no limit.
    pub max_disk_bytes: Option<u64>,
    /// Largest batch one append accepts, in bytes of encoded records (payloads plus
    /// [`RECORD_OVERHEAD`](crate::RECORD_OVERHEAD) each, before compression); larger ones
    /// fail with [`Error::BatchTooLarge`]. Default 64 MiB; the format caps it at 1 GiB.
    pub max_batch_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            sync: SyncPolicy::Always,
            compression: Compression::None,
            max_disk_bytes: None,
            max_batch_bytes: 64 << 20,
        }
    }
}

impl LogOptions {
    fn effective_segment_bytes(&self) -> u64 {
        let base = self.segment_bytes.max(4096);
        match self.max_disk_bytes {
            Some(q) => base.min((q / 8).max(4096)),
            None => base,
        }
    }
}

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

/// What recovery found and repaired when the log was opened.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segments present after recovery.
    pub segments: usize,
    /// The persisted acknowledgement cursor.
    pub acked: u64,
    /// The next sequence to be assigned.
    pub next_seq: u64,
    /// A torn write that was truncated away, if any.
    pub torn_tail: Option<TornTail>,
    /// The last segment's header was torn and the segment re-created.
    pub recreated_segment_header: bool,
    /// An interrupted segment roll was completed (the seal written).
    pub completed_roll: bool,
    /// Fully acknowledged segments deleted at open (their deletion had not reached disk).
    pub removed_acked_segments: usize,
    /// The directory was new.
    pub created: bool,
    /// How long opening took (lock, analysis and repairs).
    pub duration: Duration,
}

/// A point-in-time view of the log's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// Oldest sequence not yet acknowledged (`acked + 1`).
    pub first_unacked_seq: u64,
    /// Sequence the next append gets.
    pub next_seq: u64,
    /// Sequences below this are durable.
    pub durable_next: u64,
    /// Highest acknowledged sequence (persisted).
    pub acked: u64,
    /// Records stored and not yet acknowledged (`next_seq - first_unacked_seq`, durable
    /// or not).
    pub backlog_records: u64,
    /// Bytes of the segments holding unacknowledged records (an upper bound of the
    /// backlog's size: a partly acknowledged segment counts whole).
    pub backlog_bytes: u64,
    /// Bytes of all segment files (what [`LogOptions::max_disk_bytes`] limits).
    pub disk_bytes: u64,
    /// Number of segment files, the active one included.
    pub segments: usize,
    /// Why the writer stopped ([`Error::Poisoned`]), if it did.
    pub poisoned: Option<String>,
}

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
    pub len: u64,
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
    poisoned: Option<Arc<str>>,
    disk_bytes: u64,
    /// Appenders parked until `durable_next` reaches their target (see `wait_durable`).
    waiters: Vec<(u64, Arc<Waiter>)>,
}

/// A parked appender. Woken individually, so that a sync wakes only the appenders it made
/// durable (plus one to lead the next sync), not every waiting thread: with many
/// concurrent appenders, waking all of them on every sync costs more CPU than the sync.
#[derive(Debug)]
struct Waiter {
    woken: AtomicBool,
    thread: std::thread::Thread,
}

impl Waiter {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
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

    /// Wakes the waiters whose records are durable now and, if others remain, the first of
    /// them to lead the next sync. With `all`, wakes everyone (the log was poisoned).
    fn wake_waiters(&mut self, all: bool) {
        let durable = self.durable_next;
        let mut leader_woken = false;
        self.waiters.retain(|(target, w)| {
            let covered = *target <= durable;
            if all || covered || !leader_woken {
                leader_woken |= !covered;
                w.wake();
                false
            } else {
                true
            }
        });
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
    /// Serialises acknowledgements (cursor writes) without blocking appends.
    ack_lock: Mutex<()>,
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

    /// Blocks until every sequence below `target` is durable, syncing as the group-commit
    /// leader when no sync is in flight.
    pub(crate) fn wait_durable<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<()> {
        loop {
            if st.durable_next >= target {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(Error::Poisoned(Arc::clone(p)));
            }
            if st.syncing {
                // Park until the sync in flight (or a later one) covers us, or we are
                // picked to lead the next one. The flag makes spurious unparks harmless.
                let me = Arc::new(Waiter {
                    woken: AtomicBool::new(false),
                    thread: std::thread::current(),
                });
                st.waiters.push((target, Arc::clone(&me)));
                drop(st);
                while !me.woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                st = self.lock_state();
                continue;
            }
            st.syncing = true;
            let file = Arc::clone(&st.active.file);
            let path = st.active.path.clone();
            let seg = st.active.first_seq;
            let upto_next = st.next_seq;
            let upto_len = st.active.len;
            drop(st);
            let res = file.sync_data();
            st = self.lock_state();
            st.syncing = false;
            match res {
                Ok(()) => {
                    if upto_next > st.durable_next {
                        st.durable_next = upto_next;
                    }
                    if st.active.first_seq == seg && upto_len > st.durable_len {
                        st.durable_len = upto_len;
                    }
                    st.wake_waiters(false);
                    self.changed.notify_all();
                }
                Err(e) => {
                    self.poison(
                        &mut st,
                        format!("fdatasync of {} failed: {e}", path.display()),
                    );
                    return Err(Error::io("fdatasync", path, e));
                }
            }
        }
    }

    /// Seals the active segment and starts a new one at `next_seq`. Called with the state
    /// locked; rare (once per segment), so holding the lock through its syncs is fine.
    pub(crate) fn roll(&self, st: &mut State) -> Result<()> {
        let old_path = st.active.path.clone();
        // 1. Everything in the old segment becomes durable before a successor exists.
        if let Err(e) = st.active.file.sync_data() {
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
        let file = match create_segment(&*self.fs, &self.dir, new_first) {
            Ok(f) => f,
            Err(e) => {
                self.poison(
                    st,
                    format!("could not start segment {}: {e}", new_path.display()),
                );
                return Err(e);
            }
        };
        // 3. Seal the old one. A crash before this is finished at the next open.
        let seal = frame::encode_seal(new_first);
        let old_len = st.active.len;
        if let Err(e) = st
            .active
            .file
            .write_all_at(&seal, old_len)
            .and_then(|()| st.active.file.sync_data())
        {
            self.poison(st, format!("could not seal {}: {e}", old_path.display()));
            return Err(Error::io("seal", old_path, e));
        }
        st.sealed.push_back(SealedSegment {
            first_seq: st.active.first_seq,
            len: old_len + FRAME_HEADER_LEN as u64,
        });
        st.active = ActiveSegment {
            first_seq: new_first,
            file,
            path: new_path,
            len: SEGMENT_HEADER_LEN,
        };
        st.durable_len = SEGMENT_HEADER_LEN;
        st.disk_bytes += FRAME_HEADER_LEN as u64 + SEGMENT_HEADER_LEN;
        Ok(())
    }

    pub(crate) fn sync_now(&self) -> Result<()> {
        let st = self.lock_state();
        let target = st.next_seq;
        self.wait_durable(st, target)
    }
}

/// Creates segment `first_seq` with its header, durably (file data and directory entry).
fn create_segment(fs: &dyn FileSystem, dir: &Path, first_seq: u64) -> Result<Arc<dyn FileHandle>> {
    let path = segment::segment_path(dir, first_seq);
    let file = fs
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all_at(&segment::encode_segment_header(first_seq), 0)
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(file)
}

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
        if !layout.cursor_exists {
            cursor::write_cursor(&*fs, &dir, layout.acked)?;
        }

        let mut sealed: VecDeque<SealedSegment> = VecDeque::new();
        let active = match layout.segments.split_last() {
            None => {
                let file = create_segment(&*fs, &dir, layout.next_seq)?;
                ActiveSegment {
                    first_seq: layout.next_seq,
                    file,
                    path: segment::segment_path(&dir, layout.next_seq),
                    len: SEGMENT_HEADER_LEN,
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
                let file = if layout.torn_segment_header {
                    report.recreated_segment_header = true;
                    tracing::warn!(file = %path.display(), "re-created a segment whose header was torn by a crash");
                    create_segment(&*fs, &dir, last.first_seq)?
                } else {
                    let f = fs
                        .open(&path, OpenMode::ReadWrite)
                        .map_err(|e| Error::io("open", &path, e))?;
                    if let Some(t) = &layout.torn_tail {
                        f.set_len(t.start)
                            .map_err(|e| Error::io("truncate", &path, e))?;
                        tracing::warn!(
                            file = %t.file.display(), start = t.start, end = t.end,
                            dropped = ?t.dropped_seqs, reason = %t.reason,
                            "dropped a torn write at the end of the log"
                        );
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
            poisoned: None,
            disk_bytes,
            waiters: Vec::new(),
        };
        let inner = Arc::new(Inner {
            fs,
            dir,
            opts,
            segment_bytes,
            state: Mutex::new(state),
            changed: Condvar::new(),
            ack_lock: Mutex::new(()),
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

    /// Blocks until every sequence up to and including `seq` is durable, syncing if
    /// needed (group-committed with concurrent appenders). A `seq` not handed out yet
    /// counts as the last one handed out: everything written so far becomes durable.
    ///
    /// # Errors
    /// [`Error::Io`] if the `fdatasync` this call led failed (the log is then poisoned);
    /// [`Error::Poisoned`] if the log stopped before `seq` was durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let st = self.inner.lock_state();
        // A poisoned log vouches only for what was durable before it stopped: a sequence
        // handed out but never written must not come back Ok (the clamp below would
        // otherwise make it look covered).
        if let Some(p) = &st.poisoned
            && seq >= st.durable_next
        {
            return Err(Error::Poisoned(Arc::clone(p)));
        }
        let target = seq.saturating_add(1).min(st.next_seq);
        self.inner.wait_durable(st, target)
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

    /// Makes everything appended so far durable (a barrier for tests and shutdown).
    ///
    /// # Errors
    /// As [`Log::wait_durable`]: [`Error::Io`] (the sync failed; now poisoned) or
    /// [`Error::Poisoned`].
    pub fn sync_now(&self) -> Result<()> {
        self.inner.sync_now()
    }

    /// Records that every sequence up to and including `seq` was delivered: persists the
    /// cursor atomically, then deletes segments holding only acknowledged records (rolling
    /// the active segment first once it is fully acknowledged and at least a quarter of
    /// [`LogOptions::segment_bytes`], clamped to 4 KiB..1 MiB). Acknowledging an already
    /// acknowledged sequence is a no-op.
    ///
    /// # Errors
    /// * [`Error::AckBeyondDurable`]: `seq` is not durable yet; nothing changes.
    /// * [`Error::Io`]: writing the cursor, rolling or deleting failed. The cursor on disk
    ///   is the old or the new one; segments left behind are deleted by a later `ack` or
    ///   at the next open. A failed roll poisons the log.
    pub fn ack(&self, seq: u64) -> Result<()> {
        let inner = &*self.inner;
        let _serial = inner.ack_lock.lock().unwrap_or_else(|p| p.into_inner());
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
        cursor::write_cursor(&*inner.fs, &inner.dir, seq)?;
        {
            let mut st = inner.lock_state();
            st.acked = seq;
            // The active segment can only be given back by rolling past it. Do that once
            // it is fully delivered and big enough to be worth a new file.
            let reclaim_at = (inner.segment_bytes / 4).clamp(4096, 1 << 20);
            if st.poisoned.is_none() && seq + 1 == st.next_seq && st.active.len >= reclaim_at {
                inner.roll(&mut st)?;
            }
        }
        inner.delete_acked_segments()?;
        Ok(())
    }

    /// A reader starting at `from_seq` (0 counts as 1), or at the oldest unacknowledged
    /// record if that is later (delivered records are never handed out again by a new
    /// reader). Readers see only durable records. Opening one does no I/O; several may
    /// read at once, beside appenders.
    pub fn reader(&self, from_seq: u64) -> crate::reader::Reader {
        crate::reader::Reader::new(Arc::clone(&self.inner), from_seq)
    }

    /// Current figures (a consistent snapshot; no I/O).
    pub fn stats(&self) -> LogStats {
        let st = self.inner.lock_state();
        let first_unacked_seq = st.acked + 1;
        let mut backlog_bytes = 0;
        let mut segs: Vec<(u64, u64)> = st.sealed.iter().map(|s| (s.first_seq, s.len)).collect();
        segs.push((st.active.first_seq, st.active.len));
        for (i, (_, len)) in segs.iter().enumerate() {
            let next_first = segs.get(i + 1).map_or(st.next_seq, |s| s.0);
            if next_first > first_unacked_seq {
                backlog_bytes += len;
            }
        }
        if st.next_seq == first_unacked_seq {
            backlog_bytes = 0;
        }
        LogStats {
            first_unacked_seq,
            next_seq: st.next_seq,
            durable_next: st.durable_next,
            acked: st.acked,
            backlog_records: st.next_seq - first_unacked_seq,
            backlog_bytes,
            disk_bytes: st.disk_bytes,
            segments: segs.len(),
            poisoned: st.poisoned.as_deref().map(str::to_owned),
        }
    }

    /// Blocks until the durable end ([`LogStats::durable_next`], the first sequence not
    /// yet durable) is past `seq`, i.e. until record `seq` is durable; or until the log is
    /// poisoned or `timeout` has passed, whichever comes first. Returns the durable end at
    /// that moment (`> seq` once record `seq` is durable). For a replayer idling on an
    /// empty backlog, with `seq` the next sequence it wants to read.
    ///
    /// Unlike [`Log::wait_durable`] it makes nothing durable: it never syncs, it only
    /// watches the syncs of others (appenders under [`SyncPolicy::Always`], the
    /// background thread under [`SyncPolicy::Interval`], [`Log::sync_now`], a
    /// [`Reader`](crate::Reader) catching up). Under [`SyncPolicy::Never`] a record
    /// written but not yet synced therefore keeps it waiting the whole `timeout`; a
    /// reader syncs it when it gets there. Never fails: a poisoned log just returns early.
    pub fn wait_for_durable_end_past(&self, seq: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.lock_state();
        while st.durable_next <= seq && st.poisoned.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .inner
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.durable_next
    }

    /// What [`Log::open`] found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.opts
    }

    /// Syncs everything, stops the background sync thread (if any) and releases the
    /// directory lock, once no [`Reader`](crate::Reader) of this log is left (readers
    /// share the open files). Dropping a `Log` does the same without the sync.
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
            self.inner.sync_now()
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

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

impl Inner {
    /// Deletes sealed segments whose records are all acknowledged, oldest first. The cursor
    /// covering them is already durable, so a crash (or a failed removal) at any point here
    /// only leaves extra files at the front of the log that the next call (or the next open)
    /// removes.
    fn delete_acked_segments(&self) -> Result<usize> {
        let doomed: Vec<SealedSegment> = {
            let mut st = self.lock_state();
            let mut out = Vec::new();
            loop {
                let next_first = match st.sealed.get(1) {
                    Some(s) => s.first_seq,
                    None => st.active.first_seq,
                };
                match st.sealed.front() {
                    Some(front) if next_first <= st.acked + 1 => {
                        let front = *front;
                        st.disk_bytes -= front.len;
                        st.sealed.pop_front();
                        out.push(front);
                    }
                    _ => break,
                }
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

fn spawn_syncer(inner: Arc<Inner>, every: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("echopost-log-sync".into())
        .spawn(move || {
            loop {
                {
                    let st = inner.lock_state();
                    let (st, _) = inner
                        .changed
                        .wait_timeout_while(st, every, |_| !inner.stop.load(Ordering::SeqCst))
                        .unwrap_or_else(|p| p.into_inner());
                    if inner.stop.load(Ordering::SeqCst) || st.poisoned.is_some() {
                        return;
                    }
                }
                // Errors poison the log; appenders see them on their next call.
                let _ = inner.sync_now();
            }
        })
}
