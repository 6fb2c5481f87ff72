//! `echopost-log`: EchoPost's durable log.
//!
//! A segmented, append-only, crash-safe log of opaque records in one directory.
//! Synchronous (no async runtime) and local (no networking): the daemon wraps it.
//!
//! # Promises
//! * **Acknowledged means durable.** Under [`SyncPolicy::Always`] an append returns only
//!   after `fdatasync`; concurrent appenders share one (group commit).
//! * **Order and identity.** Every record gets a global sequence number: from 1, strictly
//!   increasing, gapless, never reused, not even after its segment was deleted or the
//!   process restarted with an empty log.
//! * **Atomic batches.** An append of N records is one checksummed frame; after any crash
//!   all N are there or none.
//! * **Damage is detected, never guessed past.** Every frame carries a CRC32C, checked on
//!   every read. Recovery repairs only what a crash can produce (a torn write at the very
//!   end); anything else is [`Error::Corruption`] naming file, offset and reason.
//! * **Nothing delivered is lost, nothing undelivered is deleted.** Space is given back
//!   only by deleting whole segments below the durable acknowledgement cursor.
//! * **Bounded work.** Opening reads headers and seals plus the last segment, whatever
//!   the backlog; reading holds one chunk and one frame in memory.
//!
//! # On-disk layout
//! ```text
//! DIR/
//!   LOCK                          flock'ed by the one process that owns the log
//!   cursor                        last acknowledged sequence (two slots, updated in place)
//!   checkpoint                    the caller's state as of a sequence (optional,
//!                                 atomically replaced; see `src/checkpoint.rs`)
//!   00000000000000000001.seg      sealed segment: header, frames…, seal(next = 7001)
//!   00000000000000007001.seg      active segment: header, frames…, zeros (pre-sized)
//! ```
//! The active segment is created at its full size with a sparse `set_len` (no block is
//! allocated or written; [`LogOptions::preallocate_segments`]), so appends overwrite
//! zeros and the `fdatasync` after them journals no size change. Its zero tail is the end
//! of the log; sealing it, or closing the log, cuts the tail off again (issue 17).
//! Segment names are the first sequence they hold, zero-padded to 20 digits, so name
//! order is log order. The byte layouts are documented in `src/frame.rs` (records),
//! `src/segment.rs` (file header) and `src/cursor.rs`.
//!
//! # Write path ([`Log::append`])
//! Encode and checksum the body (outside the lock) → lock → roll to a new segment if the
//! frame does not fit → assign sequences, stamp the header → one positional write →
//! unlock → wait until a group-commit `fdatasync` covers the frame. A failed write or
//! sync poisons the log ([`Error::Poisoned`]): the kernel may have dropped the data, so
//! nothing is acknowledged again.
//!
//! # Read path ([`Log::reader`])
//! Find the segment by name, scan frames through a read-ahead buffer, check CRC and
//! sequence continuity, decode, hand out bounded batches. Readers stop at the durable end.
//!
//! # Delete path ([`Log::ack`])
//! Write the cursor in place (the slot not holding the current value, then `fdatasync`:
//! no new block is needed, so a full disk can be drained), then delete every segment
//! that holds only acknowledged records, then sync the directory. A fully acknowledged
//! active segment is then rolled so that it, too, can go (skipped on `ENOSPC`).
//! A missing or unreadable cursor is not corruption: open resumes from the oldest
//! segment on disk and says so ([`RecoveryReport::cursor_reset`]).
//!
//! # Public API
//! Everything is re-exported here; the modules are private.
//! * The log: [`Log`] (open, append, read, acknowledge, close), [`LogOptions`],
//!   [`SyncPolicy`], [`Compression`]; what calls return: [`Appended`], [`LogStats`],
//!   [`RecoveryReport`] (with [`TornTail`]).
//! * Reading: a [`Reader`] returns a [`ReadBatch`] whose records are borrowed
//!   ([`RecordRef`], [`ReadBatchIter`]) or taken out as [`StoredRecord`]s
//!   ([`ReadBatchIntoIter`]), or lends them one by one ([`Reader::read_each`]).
//! * Batches built outside the writer lock: [`BatchBody`] → [`Log::prepare`] →
//!   [`PreparedBatch`] → [`GroupWriter`] ([`Log::group_writer`]) or [`Log::append`];
//!   [`RECORD_OVERHEAD`] for sizing a body.
//! * The caller's own state beside the records: [`BatchBody::with_meta`] (a metadata
//!   entry per frame), [`Log::write_checkpoint`] / [`Log::read_checkpoint`]
//!   ([`Checkpoint`]), and [`Log::reader_including_acked`] with [`Reader::next_frame`]
//!   ([`StoredFrame`]) to replay the frames after the checkpoint.
//! * Errors: [`Error`] (with [`Error::is_fatal`]), [`Corruption`], [`CorruptionKind`],
//!   [`Result`].
//! * Offline inspection, without opening or locking: [`verify`] (every byte) →
//!   [`VerifyReport`]; [`analyze`] (what opening would repair) → [`Layout`] of
//!   [`SegmentOnDisk`]. [`LOCK_FILE`] names the lock file.
//!
//! # Feature `sim` (test support)
//! Off in normal builds; this crate's tests, the daemon's tests and the fuzz targets turn
//! it on. All file access goes through a file-system seam (`FileSystem`, with `RealFs` the
//! operating system's); the feature makes it public together with `sim::SimFs`, an
//! in-memory implementation that crashes, tears writes and injects EIO/ENOSPC
//! deterministically, and what tests plug it into: `Log::open_with_fs`, `verify_with_fs`,
//! the on-disk `format` codec for forging and damaging files, and the write paths only
//! tests use (`Log::append_nowait`, `Log::append_prepared_nowait`).

mod checkpoint;
mod crc;
mod cursor;
mod error;
#[cfg(feature = "sim")]
pub mod format;
mod frame;
mod fs;
mod group;
mod log;
mod read_batch;
mod read_buffer;
mod reader;
mod recovery;
mod salvage;
mod seek_index;
mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod verify;

pub use checkpoint::Checkpoint;
pub use error::{Corruption, CorruptionKind, Error, Result};
pub use frame::{BatchBody, Compression, RECORD_OVERHEAD};
pub use group::GroupWriter;
pub use log::{
    Appended, LOCK_FILE, Log, LogOptions, LogStats, PreparedBatch, RecoveryReport, SyncPolicy,
};
pub use read_batch::{IntoIter as ReadBatchIntoIter, Iter as ReadBatchIter, ReadBatch, RecordRef};
pub use reader::{Reader, StoredFrame, StoredRecord};
pub use recovery::{CursorReset, Layout, SegmentOnDisk, TornTail, analyze};
pub use salvage::{SalvageReport, salvage};
pub use verify::{VerifyReport, verify};

// The file-system seam: only the simulation plugs into it.
#[cfg(feature = "sim")]
pub use fs::{FileHandle, FileSystem, LockGuard, OpenMode, RealFs};
#[cfg(feature = "sim")]
pub use salvage::salvage_with_fs;
#[cfg(feature = "sim")]
pub use verify::verify_with_fs;
