//! Salvage: keep every record that can still be read from a damaged log (issue 13).
//!
//! The engine never guesses past damage: open and `verify` stop at it. [`salvage`] is the
//! operator's explicit step after that. It takes the directory's lock (so no daemon can
//! own it meanwhile), and until `verify` passes, fixes the damage it names:
//!
//! * **a damaged segment** (a flipped byte, a torn or zeroed range, a wrong or missing
//!   seal, a missing successor in the middle): the segment is rewritten with every frame
//!   that is still valid, before and after the damage, in order; the sequences between
//!   them become a *gap frame* ([`crate::format::FrameKind::Gap`]), so the records after
//!   the damage keep their sequences and the log stays continuous. The damaged file is
//!   moved, byte for byte, into the quarantine directory first;
//! * **the oldest segment missing** (a readable cursor before the first segment): the
//!   cursor is moved to just before the oldest segment.
//!
//! The lost sequence ranges are exact: from the first sequence the damage hid to the one
//! before the next valid frame (or the successor segment). Ranges at or below the
//! cursor were already delivered and are not reported as lost.
//!
//! Crash safety: a rewritten segment is written and synced under a temporary name
//! (`NAME.seg.salvage`, which is not a segment name) before the damaged file is moved
//! aside and the new one renamed into place; a crash in between leaves the segment
//! missing, which the next `salvage` finds and fixes (the damaged bytes are in the
//! quarantine).
//!
//! Not fixed (returned as the corruption): a sealed last segment whose successor is
//! missing, and a cursor beyond the end of the log (their sequences cannot be known, and
//! guessing could reuse delivered ones).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cursor::{self, CursorRead};
use crate::error::{CorruptionKind, Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader, FrameKind};
use crate::fs::{FileSystem, OpenMode, RealFs, read_exact_at};
use crate::log::LOCK_FILE;
use crate::recovery;
use crate::segment::{self, SEGMENT_HEADER_LEN};

/// What [`salvage`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Damaged files moved aside: where each was, where it is now (byte for byte).
    pub quarantined: Vec<(PathBuf, PathBuf)>,
    /// Undelivered sequences lost to the damage, `first..=last` each, in order.
    pub lost: Vec<(u64, u64)>,
    /// Records kept in the rewritten segments.
    pub kept_records: u64,
    /// The cursor was moved to just before the oldest segment (which was missing).
    pub cursor_moved: Option<(u64, u64)>,
}

impl SalvageReport {
    /// Number of lost records.
    pub fn lost_records(&self) -> u64 {
        self.lost.iter().map(|(a, b)| b - a + 1).sum()
    }
}

/// Salvages the log in `dir`, moving damaged files into `quarantine` (created if
/// needed). A log that verifies is left alone (an empty report).
///
/// # Errors
/// * [`Error::Locked`]: a daemon (or another process) owns the directory.
/// * [`Error::Corruption`]: damage salvage cannot fix (see the module documentation).
/// * [`Error::Io`]: reading, writing, renaming or syncing failed.
pub fn salvage(dir: impl AsRef<Path>, quarantine: impl AsRef<Path>) -> Result<SalvageReport> {
    salvage_with_fs(Arc::new(RealFs), dir.as_ref(), quarantine.as_ref())
}

/// [`salvage`] on any file system.
pub fn salvage_with_fs(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    quarantine: &Path,
) -> Result<SalvageReport> {
    let lock_path = dir.join(LOCK_FILE);
    let _lock = fs
        .try_lock(&lock_path)
        .map_err(|e| Error::io("lock", &lock_path, e))?
        .ok_or_else(|| Error::Locked {
            dir: dir.to_path_buf(),
        })?;
    let acked = match cursor::inspect_cursor(&*fs, dir)? {
        CursorRead::Valid { acked, .. } => acked,
        _ => 0,
    };
    let mut report = SalvageReport::default();
    // Each round fixes one damage; a log has at most one per segment plus the cursor.
    let rounds = recovery::list_segments(&*fs, dir)?.0.len() + 2;
    for _ in 0..rounds {
        let c = match crate::verify::verify_with_fs(Arc::clone(&fs), dir) {
            Ok(_) => return Ok(report),
            Err(Error::Corruption(c)) => c,
            Err(e) => return Err(e),
        };
        let fixed = match &c.kind {
            CorruptionKind::CursorOutOfRange {
                acked: a,
                first_seq,
                ..
            } if a + 1 < *first_seq => {
                cursor::write_cursor_in_place(&*fs, dir, first_seq - 1)?;
                push_lost(&mut report.lost, *a + 1, first_seq - 1, acked);
                report.cursor_moved = Some((*a, first_seq - 1));
                true
            }
            CorruptionKind::MissingSuccessor { .. } | CorruptionKind::CursorOutOfRange { .. } => {
                false
            }
            _ => match c
                .file
                .file_name()
                .and_then(|n| segment::parse_segment_name(&n.to_string_lossy()))
            {
                Some(first) => rewrite_segment(&*fs, dir, quarantine, first, acked, &mut report)?,
                None => false,
            },
        };
        if !fixed {
            return Err(Error::Corruption(c));
        }
    }
    crate::verify::verify_with_fs(fs, dir).map(|_| report)
}

/// Records `a..=b` as lost, less what the cursor says was delivered.
fn push_lost(lost: &mut Vec<(u64, u64)>, a: u64, b: u64, acked: u64) {
    let a = a.max(acked + 1);
    if a <= b {
        lost.push((a, b));
    }
}

/// The frame at `at` if it is whole, passes its checksum and (a batch) decodes.
fn valid_frame_at(bytes: &[u8], at: usize) -> Option<(FrameHeader, usize)> {
    let rest = bytes.get(at..)?;
    let (h, body) = frame::parse_frame(rest).ok()?;
    frame::check_crc(&h, &rest[..FRAME_HEADER_LEN], &rest[body.clone()]).ok()?;
    if h.kind == FrameKind::Batch {
        frame::decode_body(&h, &rest[body]).ok()?;
    }
    Some((h, usize::try_from(h.frame_len()).ok()?))
}

/// Most gap frames one hole may take: 1,024 frames of `u32::MAX` sequences each (4.4
/// trillion records, far more than a log holds). A larger hole is no loss of records but
/// a damaged name or seal (a successor named by a wild sequence): salvage cannot know the
/// sequences, so it leaves the segment alone and returns the damage. (Found by fuzzing:
/// a segment named 8.1 × 10^18 made salvage write 1.9 billion gap frames, 60 GB.)
const MAX_GAP_FRAMES: u64 = 1024;

/// Gap frames covering `first..end` (a gap frame counts at most `u32::MAX`); false, with
/// nothing written, when that takes more than [`MAX_GAP_FRAMES`].
fn gap_frames(out: &mut Vec<u8>, mut first: u64, end: u64) -> bool {
    if end.saturating_sub(first).div_ceil(u64::from(u32::MAX)) > MAX_GAP_FRAMES {
        return false;
    }
    while first < end {
        let n = u32::try_from(end - first).unwrap_or(u32::MAX);
        out.extend_from_slice(&frame::encode_gap(first, n));
        first += u64::from(n);
    }
    true
}

/// Rewrites segment `first` with its valid frames, gap frames for what is lost, and a
/// seal naming the next segment on disk. False if that changes nothing (or cannot work).
fn rewrite_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    quarantine: &Path,
    first: u64,
    acked: u64,
    report: &mut SalvageReport,
) -> Result<bool> {
    let segs = recovery::list_segments(fs, dir)?.0;
    let Some(idx) = segs.iter().position(|s| s.first_seq == first) else {
        return Ok(false);
    };
    let successor = segs.get(idx + 1).map(|s| s.first_seq);
    let path = segment::segment_path(dir, first);
    let file = recovery::open_read(fs, &path)?;
    let len = usize::try_from(segs[idx].len).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; len];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| Error::io("read", &path, e))?;
    drop(file);

    let mut out = segment::encode_segment_header(first).to_vec();
    let mut lost = Vec::new();
    let mut kept = 0u64;
    let mut expect = first;
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let limit = successor.unwrap_or(frame::MAX_SEQ);
    while pos < bytes.len() {
        match valid_frame_at(&bytes, pos) {
            Some((h, n)) if h.first_seq == expect && h.kind != FrameKind::Seal => {
                out.extend_from_slice(&bytes[pos..pos + n]);
                if h.kind == FrameKind::Batch {
                    kept += u64::from(h.count);
                }
                expect = h.end_seq();
                pos += n;
            }
            Some((h, n)) if h.kind == FrameKind::Seal && pos + n == bytes.len() => break,
            _ => {
                // Damage: resume at the next valid frame that continues the log.
                let next = (pos + 1..bytes.len())
                    .filter(|&j| bytes[j..].starts_with(&FRAME_MAGIC))
                    .find_map(|j| {
                        let (h, n) = valid_frame_at(&bytes, j)?;
                        let fits = match h.kind {
                            FrameKind::Seal => j + n == bytes.len(),
                            _ => h.end_seq() <= limit,
                        };
                        (fits && h.first_seq >= expect && h.first_seq <= limit)
                            .then_some((j, h.first_seq))
                    });
                let Some((j, q)) = next else {
                    break;
                };
                if q > expect {
                    if !gap_frames(&mut out, expect, q) {
                        return Ok(false);
                    }
                    lost.push((expect, q - 1));
                    expect = q;
                }
                pos = j;
            }
        }
    }
    match successor {
        Some(b) if expect > b => return Ok(false),
        Some(b) => {
            if expect < b {
                if !gap_frames(&mut out, expect, b) {
                    return Ok(false);
                }
                lost.push((expect, b - 1));
            }
            out.extend_from_slice(&frame::encode_seal(b));
        }
        None => {}
    }
    if out == bytes {
        return Ok(false);
    }

    // Write the new segment under a temporary name, then swap it in.
    let name = segment::segment_name(first);
    let tmp = dir.join(format!("{name}.salvage"));
    let f = fs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all_at(&out, 0)
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io("write", &tmp, e))?;
    drop(f);
    fs.create_dir_all(quarantine)
        .map_err(|e| Error::io("create directory", quarantine, e))?;
    let mut aside = quarantine.join(&name);
    let mut n = 1;
    while fs.open(&aside, OpenMode::Read).is_ok() {
        aside = quarantine.join(format!("{name}.{n}"));
        n += 1;
    }
    fs.rename(&path, &aside)
        .map_err(|e| Error::io("move aside", &path, e))?;
    fs.sync_dir(quarantine)
        .map_err(|e| Error::io("sync directory", quarantine, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    tracing::warn!(file = %path.display(), quarantined = %aside.display(), lost = ?lost, kept_records = kept, "salvaged a damaged segment");
    report.quarantined.push((path, aside));
    report.kept_records += kept;
    for (a, b) in lost {
        push_lost(&mut report.lost, a, b, acked);
    }
    Ok(true)
}
