//! What a caller can tune: when an append counts as done, segment size, compression,
//! quota and batch limit. Read once at open; the log never changes them.

use std::time::Duration;

#[cfg(doc)]
use super::Log;
#[cfg(doc)]
use crate::error::Error;
use crate::frame::Compression;

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
    /// cursor and lock file are not counted, nor the unwritten tail of a pre-sized
    /// segment, which is sparse and takes no space). An append that would go over it fails with
    /// [`Error::Full`] and changes nothing. `None` (default) means no limit.
    pub max_disk_bytes: Option<u64>,
    /// Largest batch one append accepts, in bytes of encoded records (payloads plus
    /// [`RECORD_OVERHEAD`](crate::RECORD_OVERHEAD) each, before compression); larger ones
    /// fail with [`Error::BatchTooLarge`]. Default 64 MiB; the format caps it at 1 GiB.
    pub max_batch_bytes: u64,
    /// Pre-size every new (and, at open, the active) segment file to `segment_bytes`
    /// with a sparse extension (`ftruncate`, no block is allocated or written), so that
    /// an append's `fdatasync` finds the file size unchanged and has no size update to
    /// journal (issue 17). The unwritten tail reads as zeros, which recovery takes as the
    /// end of the log; a cleanly closed log gives the tail back (the file ends at its
    /// data again). Costs no disk space and is not counted by
    /// [`max_disk_bytes`](LogOptions::max_disk_bytes). Default true; turn it off on a file
    /// system without sparse files, where extending a file writes zeros.
    pub preallocate_segments: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            sync: SyncPolicy::Always,
            compression: Compression::None,
            max_disk_bytes: None,
            max_batch_bytes: 64 << 20,
            preallocate_segments: true,
        }
    }
}

impl LogOptions {
    /// The length a new segment file is extended to, if segments are pre-sized: the
    /// segment size rounded up to whole 4 KiB pages (`src/segment.rs`).
    pub(super) fn presize_len(&self) -> Option<u64> {
        if self.preallocate_segments {
            crate::segment::presize_len(self.effective_segment_bytes())
        } else {
            None
        }
    }

    pub(super) fn effective_segment_bytes(&self) -> u64 {
        let base = self.segment_bytes.max(4096);
        match self.max_disk_bytes {
            Some(q) => base.min((q / 8).max(4096)),
            None => base,
        }
    }
}
