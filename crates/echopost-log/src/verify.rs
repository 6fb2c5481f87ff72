//! Offline integrity check of a whole log directory.
//!
//! `verify` applies the same rules as recovery ([`crate::analyze`]) and then reads
//! every byte of every segment: each frame's CRC, sequence continuity, seals, and that every
//! body decodes into the records its header announces. It changes nothing and takes no
//! lock, so it can run beside a live daemon (whose in-progress write may then show up as a
//! torn tail, which is not corruption).

use std::path::Path;
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::fs::{FileSystem, RealFs};
use crate::recovery::{self, TornTail};
use crate::segment;

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Frames checked (including seals).
    pub frames: u64,
    /// Records found.
    pub records: u64,
    /// Sum of the records' payload sizes, in bytes (uncompressed, without length prefixes).
    pub payload_bytes: u64,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// First sequence stored (= `next_seq` when no segment holds a record).
    pub first_seq: u64,
    /// Sequence the next append would get.
    pub next_seq: u64,
    /// The acknowledgement cursor: the last sequence delivered (0: none).
    pub acked: u64,
    /// A torn write at the end that the next open will drop (not corruption).
    pub torn_tail: Option<TornTail>,
    /// An interrupted segment roll that the next open will complete (not corruption).
    pub unfinished_roll: bool,
    /// The cursor is missing or unreadable; the next open resumes as this says (not
    /// corruption: issue 13).
    pub cursor_reset: Option<Box<crate::recovery::CursorReset>>,
    /// Sequences recorded as lost by an earlier `salvage` (`first..=last` each).
    pub lost: Vec<(u64, u64)>,
}

/// Checks the whole log in `dir` offline: the rules recovery applies ([`crate::analyze`]),
/// then every byte of every segment (each frame's CRC, sequence continuity, seals, and
/// that every body decodes into the records its header announces). Reads everything, so
/// it takes time proportional to the log's size; holds one chunk and one frame in memory.
/// Changes nothing and takes no lock, so it can run beside a live daemon (whose
/// in-progress write may then show up as a torn tail, which is not corruption).
///
/// # Errors
/// The first problem found, as [`Error::Corruption`] naming the file, byte offset and
/// reason; [`Error::Io`] if a file cannot be listed, opened or read.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    verify_with_fs(Arc::new(RealFs), dir)
}

/// [`verify`] on the given file system, e.g. `sim::SimFs` (public with feature `sim`).
pub fn verify_with_fs(fs: Arc<dyn FileSystem>, dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let layout = recovery::analyze_with_fs(&*fs, dir)?;
    // Open refuses a damaged checkpoint, so verify must name it too (found by fuzzing
    // `log_recovery`: verify passed a directory that open then refused).
    crate::checkpoint::read_checkpoint(&*fs, dir)?;
    let mut report = VerifyReport {
        segments: layout.segments.len(),
        frames: 0,
        records: 0,
        payload_bytes: 0,
        disk_bytes: layout.segments.iter().map(|s| s.len).sum(),
        first_seq: layout.first_seq_on_disk(),
        next_seq: layout.next_seq,
        acked: layout.acked,
        torn_tail: layout.torn_tail.clone(),
        unfinished_roll: layout.unfinished_seal_at.is_some(),
        cursor_reset: layout.cursor_reset.clone().map(Box::new),
        lost: Vec::new(),
    };
    let n = layout.segments.len();
    for (i, seg) in layout.segments.iter().enumerate() {
        let is_last = i + 1 == n;
        if is_last && layout.torn_segment_header {
            continue;
        }
        let scan = recovery::scan_segment(&*fs, dir, seg, true)?;
        let path = segment::segment_path(dir, seg.first_seq);
        if !is_last {
            let unfinished = i + 2 == n && layout.unfinished_seal_at.is_some();
            match scan.sealed {
                Some(_) => {}
                None if unfinished => {}
                None => {
                    return Err(Error::corrupt(
                        path,
                        scan.valid_len,
                        CorruptionKind::MissingSeal,
                    ));
                }
            }
            if let Some(t) = scan.torn
                && !(unfinished && layout.unfinished_seal_at == Some(t.offset))
            {
                return Err(Error::corrupt(path, t.offset, t.kind));
            }
        }
        report.frames += scan.frames;
        report.records += scan.records;
        report.payload_bytes += scan.payload_bytes;
        report.lost.extend(scan.gaps);
    }
    Ok(report)
}
