//! What is on disk, and what a crash may have left half-done.
//!
//! [`analyze`] reads the directory without changing it and either returns a [`Layout`]
//! (the segments, where the valid data ends, and which crash leftovers need repair) or a
//! corruption error. [`crate::Log::open`] applies the repairs; [`crate::verify()`] reports
//! them. Both use this one function, so they cannot disagree about what is a torn write
//! and what is corruption.
//!
//! The cost does not grow with the backlog: for every segment but the last two it reads the
//! 32-byte header and the 32-byte seal at the end; only the last segment (at most one
//! segment's worth of bytes) is scanned frame by frame.
//!
//! Crash leftovers that are repaired (everything else is corruption):
//! * **torn tail**: the last segment ends in bytes that are not a valid frame and are not
//!   followed by any valid frame: a write that was cut short. They are truncated away.
//!   Under the `always` policy such a frame was never acknowledged.
//! * **torn segment header**: the last segment is shorter than its header (crash while it
//!   was being created); it is re-created empty.
//! * **interrupted roll**: the second-to-last segment is unsealed and the last is empty.
//!   A roll syncs the old segment, creates and syncs the new one, then writes the seal; a
//!   crash before the seal is durable leaves exactly this, possibly with a torn prefix of
//!   the seal (never anything else) after the last frame. The seal is written.
//! * fully acknowledged segments whose deletion had not reached the disk, and a stale
//!   `cursor.tmp` (left by earlier versions): removed.
//!
//! An unreadable acknowledgement cursor (missing, empty, no valid slot; or a damaged slot
//! whose valid twin is older than the oldest segment) is not corruption either: the
//! cursor only says what may be skipped, so recovery starts from the oldest segment on
//! disk and reports what will be delivered again ([`CursorReset`]; issue 13). With a
//! fully readable cursor, a cursor before the oldest segment still means a segment is
//! missing, and is corruption.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cursor::{self, CURSOR_TMP_FILE, CursorRead};
use crate::error::{CorruptionKind, Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN, FrameKind};
use crate::fs::{FileHandle, FileSystem, OpenMode, RealFs, read_exact_at};
use crate::segment::{self, FrameScanner, SEGMENT_HEADER_LEN, Scanned};

/// A segment found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentOnDisk {
    /// First sequence (from the name, checked against the header).
    pub first_seq: u64,
    /// File length, in bytes. For a last segment still pre-sized (after a crash, or
    /// while a daemon runs) this is its full pre-sized length, most of it an unwritten,
    /// sparse tail that takes no space (issue 17).
    pub len: u64,
}

/// Bytes at the end of the last segment that recovery drops as a torn write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset in `file` where the dropped bytes start (the file is truncated here).
    pub start: u64,
    /// Byte offset where they end: the file's length before the repair or, in a segment
    /// still pre-sized (issue 17), the end of its last non-zero byte (the zeros after
    /// it are unwritten space, cut as well).
    pub end: u64,
    /// Sequences of the dropped frame (`first..=last`), when its header was still readable
    /// and named the sequence that was due (`first` is then always right; `last` comes
    /// from the header's record count, which the failed checksum cannot vouch for). These
    /// were never acknowledged under the `always` policy.
    pub dropped_seqs: Option<(u64, u64)>,
    /// Why the bytes are not a valid frame.
    pub reason: CorruptionKind,
}

/// The acknowledgement cursor was missing or (partly) unreadable, so recovery resumes from
/// what is certain: the oldest segment on disk, or a still valid older slot of the cursor
/// when that is within the segments. Already delivered records in `redelivered` will be
/// delivered again (at-least-once allows it; none is skipped). Issue 13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorReset {
    /// The cursor file.
    pub file: PathBuf,
    /// Why it was not used as it is: `None` when the file is missing, else where (byte
    /// offset) and what is wrong.
    pub damage: Option<(u64, CorruptionKind)>,
    /// The value of the cursor's remaining valid slot, if any (possibly older than the
    /// damaged one).
    pub valid_slot: Option<u64>,
    /// The acknowledgement recovery resumes after.
    pub acked: u64,
    /// Sequences on disk that will be delivered, some of them again: `first..=last`;
    /// `None` when the segments hold no record after `acked`.
    pub redelivered: Option<(u64, u64)>,
}

impl std::fmt::Display for CursorReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.damage {
            None => write!(
                f,
                "the acknowledgement cursor {} is missing",
                self.file.display()
            )?,
            Some((offset, kind)) => write!(
                f,
                "the acknowledgement cursor {} is unreadable at byte {offset}: {kind}",
                self.file.display()
            )?,
        }
        match self.valid_slot {
            Some(v) if v == self.acked => {
                write!(f, "; resuming after its other, valid slot ({v})")?
            }
            Some(v) => write!(
                f,
                "; its other slot ({v}) is older than the oldest segment, so resuming from the oldest segment on disk"
            )?,
            None => write!(f, "; resuming from the oldest segment on disk")?,
        }
        match self.redelivered {
            Some((first, last)) => write!(
                f,
                ": records {first}..={last} ({} records) will be delivered, those already delivered again",
                last - first + 1
            ),
            None => write!(f, ": no record is waiting"),
        }
    }
}

/// What is in a log directory, as [`analyze`] found it: the segments, where valid data
/// ends, and the crash leftovers opening the log would repair. Offsets and lengths are in
/// bytes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Segments in log order, including the last (active) one.
    pub segments: Vec<SegmentOnDisk>,
    /// The persisted acknowledgement cursor (0 for a new log).
    pub acked: u64,
    /// Whether the cursor file exists.
    pub cursor_exists: bool,
    /// The cursor was unreadable: recovery starts from the oldest segment on disk.
    pub cursor_reset: Option<CursorReset>,
    /// What the cursor file held (for opening it for in-place updates).
    pub(crate) cursor_found: CursorRead,
    /// The sequence the next append gets (after the repairs).
    pub next_seq: u64,
    /// End of valid data in the last segment (where the next frame goes); 0 without
    /// segments.
    pub active_valid_len: u64,
    /// Torn write at the end of the last segment, to be truncated.
    pub torn_tail: Option<TornTail>,
    /// The last segment's header is torn; it must be re-created.
    pub torn_segment_header: bool,
    /// The second-to-last segment lacks its seal after an interrupted roll; the seal goes
    /// at this offset.
    pub unfinished_seal_at: Option<u64>,
    /// A stale `cursor.tmp` exists.
    pub stale_cursor_tmp: bool,
    /// The length the last segment's header says it was pre-sized to (0: not pre-sized,
    /// or no segment).
    pub(crate) active_presized: u64,
}

impl Layout {
    /// First sequence still on disk.
    pub fn first_seq_on_disk(&self) -> u64 {
        self.segments.first().map_or(self.next_seq, |s| s.first_seq)
    }
}

/// Lists segment files in log order as `(first_seq, len)`.
pub fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<(Vec<SegmentOnDisk>, bool)> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let stale_tmp = names.iter().any(|n| n == CURSOR_TMP_FILE);
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_segment_name(n))
        .collect();
    seqs.sort_unstable();
    let mut out = Vec::with_capacity(seqs.len());
    for first_seq in seqs {
        let path = segment::segment_path(dir, first_seq);
        let file = open_read(fs, &path)?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        out.push(SegmentOnDisk { first_seq, len });
    }
    Ok((out, stale_tmp))
}

pub(crate) fn open_read(fs: &dyn FileSystem, path: &Path) -> Result<Arc<dyn FileHandle>> {
    fs.open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))
}

/// Reads the seal at the end of a segment that must be sealed; returns the successor's
/// first sequence.
fn read_seal(file: &dyn FileHandle, path: &Path, len: u64) -> Result<u64> {
    let min = SEGMENT_HEADER_LEN + FRAME_HEADER_LEN as u64;
    if len < min {
        return Err(Error::corrupt(path, len, CorruptionKind::MissingSeal));
    }
    let at = len - FRAME_HEADER_LEN as u64;
    let mut b = [0u8; FRAME_HEADER_LEN];
    read_exact_at(file, &mut b, at).map_err(|e| Error::io("read", path, e))?;
    match frame::parse_frame(&b) {
        Ok((h, _)) if h.kind == FrameKind::Seal => Ok(h.first_seq),
        _ => Err(Error::corrupt(path, at, CorruptionKind::MissingSeal)),
    }
}

/// True if the bytes of `file` from `at` to `data_end` (past its last non-zero byte; only
/// zeros follow) are a strict, non-empty prefix of the seal naming `successor`: what a
/// crash leaves when it tears the seal of a roll (of a pre-sized segment too, whose tail
/// after the torn seal is zeros).
fn is_torn_seal(
    file: &dyn FileHandle,
    path: &Path,
    at: u64,
    data_end: u64,
    successor: u64,
) -> Result<bool> {
    let seal = frame::encode_seal(successor);
    let Some(n) = data_end
        .checked_sub(at)
        .filter(|&n| n > 0 && n < seal.len() as u64)
    else {
        return Ok(false);
    };
    let mut b = vec![0u8; n as usize];
    read_exact_at(file, &mut b, at).map_err(|e| Error::io("read", path, e))?;
    Ok(b[..] == seal[..n as usize])
}

/// Invalid bytes at the end of a segment that no valid frame follows (and that are not
/// all zero: a zero tail is the unwritten end of a pre-sized segment, not damage).
#[derive(Debug, Clone)]
pub struct TailDamage {
    /// Where the invalid bytes start.
    pub offset: u64,
    /// Why they are not a valid frame.
    pub kind: CorruptionKind,
    /// Sequences the damaged frame announces, if its header still decodes.
    pub seqs: Option<(u64, u64)>,
    /// Just past the last non-zero byte of the segment (its length, unless the segment
    /// was pre-sized and the damage is followed by its zero tail).
    pub data_end: u64,
}

/// Outcome of scanning one segment frame by frame.
#[derive(Debug, Default, Clone)]
pub struct SegmentScan {
    /// Offset just after the last valid frame.
    pub valid_len: u64,
    /// Sequence after the last record.
    pub next_seq: u64,
    /// The successor's first sequence, if the segment ends with a seal.
    pub sealed: Option<u64>,
    /// Damage at the end with nothing valid after it.
    pub torn: Option<TailDamage>,
    pub frames: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// Sequences recorded as lost by `salvage` (gap frames), `first..=last` each.
    pub gaps: Vec<(u64, u64)>,
    /// The length the header says the segment was pre-sized to (0: it was not).
    pub presized: u64,
    /// The file is exactly that long: zeros after the last frame are its unwritten tail.
    pub in_presized_file: bool,
}

/// Scans a whole segment, checking every frame's CRC and sequence continuity. With
/// `decode`, frame bodies are also decompressed and split into records.
pub fn scan_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    seg: &SegmentOnDisk,
    decode: bool,
) -> Result<SegmentScan> {
    let path = segment::segment_path(dir, seg.first_seq);
    let file = open_read(fs, &path)?;
    let presized = segment::read_segment_header(&*file, &path, seg.first_seq)?;
    let mut scanner = FrameScanner::new(file, path.clone(), SEGMENT_HEADER_LEN, seg.len);
    let mut out = SegmentScan {
        valid_len: SEGMENT_HEADER_LEN,
        next_seq: seg.first_seq,
        presized,
        in_presized_file: presized > 0 && seg.len == presized,
        ..SegmentScan::default()
    };
    loop {
        match scanner.next_frame()? {
            Scanned::End => return Ok(out),
            Scanned::Frame {
                offset,
                header,
                body,
            } => {
                if out.sealed.is_some() {
                    return Err(Error::corrupt(&path, offset, CorruptionKind::DataAfterSeal));
                }
                if header.first_seq != out.next_seq {
                    return Err(Error::corrupt(
                        &path,
                        offset,
                        CorruptionKind::SequenceMismatch {
                            expected: out.next_seq,
                            found: header.first_seq,
                        },
                    ));
                }
                match header.kind {
                    FrameKind::Seal => out.sealed = Some(header.first_seq),
                    FrameKind::Gap => {
                        out.next_seq = header.end_seq();
                        out.gaps.push((header.first_seq, header.end_seq() - 1));
                    }
                    FrameKind::Batch => {
                        if decode {
                            let d = frame::decode_body(&header, &scanner.bytes()[body])
                                .map_err(|k| Error::corrupt(&path, offset, k))?;
                            out.payload_bytes +=
                                d.ranges.iter().map(|r| r.len() as u64).sum::<u64>();
                        }
                        out.next_seq = header.end_seq();
                        out.records += u64::from(header.count);
                    }
                }
                out.frames += 1;
                out.valid_len = scanner.position();
            }
            Scanned::Bad { offset, kind } => {
                // Zeros from here to the end of a file exactly as long as it was
                // pre-sized: its unwritten tail (`src/segment.rs`). Nothing was written
                // there, so the log ends here: nothing is torn, nothing is dropped,
                // nothing after it is looked at. (Anywhere else zeros are checked like
                // any other bytes.)
                let data_end = scanner.nonzero_end(offset)?;
                if data_end == offset && out.in_presized_file {
                    return Ok(out);
                }
                if out.sealed.is_some() {
                    return Err(Error::corrupt(&path, offset, CorruptionKind::DataAfterSeal));
                }
                let seqs = header_seqs_at(&scanner, offset, out.next_seq)?;
                if let Some(valid_at) = scanner.find_valid_frame_after(offset, out.next_seq)? {
                    return Err(Error::corrupt(
                        &path,
                        offset,
                        CorruptionKind::DamageBeforeValidData {
                            valid_frame_at: valid_at,
                        },
                    ));
                }
                out.torn = Some(TailDamage {
                    offset,
                    kind,
                    seqs,
                    data_end,
                });
                return Ok(out);
            }
        }
    }
}

/// The sequences a damaged frame announces, if its header still decodes and names the
/// sequence that was due (`expected`): a header naming any other one is itself damaged,
/// and its numbers mean nothing.
fn header_seqs_at(
    scanner: &FrameScanner,
    offset: u64,
    expected: u64,
) -> Result<Option<(u64, u64)>> {
    let mut b = [0u8; FRAME_HEADER_LEN];
    match read_exact_at(scanner.file(), &mut b, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("read", scanner.path(), e)),
    }
    Ok(frame::decode_header(&b)
        .ok()
        .filter(|h| h.kind == FrameKind::Batch && h.first_seq == expected)
        .map(|h| (h.first_seq, h.end_seq() - 1)))
}

/// Reads the log directory `dir` on the real file system and decides what is data, what
/// is a crash leftover that opening would repair, and what is corruption. Changes nothing
/// and takes no lock, so it can run beside a live daemon (whose in-progress write may then
/// show up as a torn tail). Costs a header and seal read per segment plus one scan of the
/// last segment, whatever the backlog.
///
/// A directory without segments (new, or not a log at all) is an empty [`Layout`]
/// (`next_seq` 1 or one past the cursor).
///
/// # Errors
/// [`Error::Corruption`] for anything a crash cannot produce (naming file, byte offset and
/// reason: the same verdict [`crate::Log::open`] would reach), [`Error::Io`] if a file
/// cannot be listed, opened or read.
pub fn analyze(dir: impl AsRef<Path>) -> Result<Layout> {
    analyze_with_fs(&RealFs, dir.as_ref())
}

/// [`analyze`] on any file system: what [`crate::Log::open`] and [`crate::verify()`] use.
pub(crate) fn analyze_with_fs(fs: &dyn FileSystem, dir: &Path) -> Result<Layout> {
    let (segments, stale_cursor_tmp) = list_segments(fs, dir)?;
    let found = cursor::inspect_cursor(fs, dir)?;
    let cursor_path = cursor::cursor_path(dir);
    let (cursor, damage) = match &found {
        CursorRead::Absent => (None, None),
        CursorRead::Valid { acked, damaged, .. } => (
            Some(*acked),
            damaged.as_ref().map(|d| (d.offset, d.kind.clone())),
        ),
        CursorRead::Unreadable(d) => (None, Some((d.offset, d.kind.clone()))),
    };
    let mut layout = Layout {
        segments: segments.clone(),
        acked: cursor.unwrap_or(0),
        cursor_exists: !matches!(found, CursorRead::Absent),
        cursor_reset: None,
        cursor_found: found,
        next_seq: cursor.map_or(1, |a| a + 1),
        active_valid_len: 0,
        torn_tail: None,
        torn_segment_header: false,
        unfinished_seal_at: None,
        stale_cursor_tmp,
        active_presized: 0,
    };
    let Some(last) = segments.last() else {
        if cursor.is_none()
            && let Some((offset, kind)) = damage
        {
            // Without segments the cursor is the only record of where sequences
            // continue; guessing 1 could reuse delivered sequences.
            return Err(Error::corrupt(cursor_path, offset, kind));
        }
        return Ok(layout);
    };
    // The last segment is scanned first: whether it holds any frame decides what its
    // predecessor must look like (a pre-sized empty segment is as long as a full one).
    // Its errors are reported after those of the segments before it, as they always were.
    // An I/O error is not damage: it is returned at once (as the scan after the loop
    // would), never taken for a segment that is not empty.
    let last_scan =
        match (last.len >= SEGMENT_HEADER_LEN).then(|| scan_segment(fs, dir, last, false)) {
            Some(Err(e)) if !matches!(e, Error::Corruption(_)) => return Err(e),
            other => other,
        };
    let last_is_empty = match &last_scan {
        None => true,
        Some(Ok(s)) => s.frames == 0 && s.torn.is_none(),
        Some(Err(_)) => false,
    };
    let n = segments.len();
    for (i, seg) in segments.iter().enumerate().take(n - 1) {
        let path = segment::segment_path(dir, seg.first_seq);
        let file = open_read(fs, &path)?;
        segment::read_segment_header(&*file, &path, seg.first_seq)?;
        let successor = segments[i + 1].first_seq;
        // Where the segment says what comes next: its seal, or (interrupted roll) the end
        // of its last frame.
        let seal_at = seg.len.saturating_sub(FRAME_HEADER_LEN as u64);
        let (next, claim_at) = if i == n - 2 && last_is_empty {
            match read_seal(&*file, &path, seg.len) {
                Ok(next) => (next, seal_at),
                Err(Error::Corruption(_)) => {
                    // Possibly an interrupted roll: the whole segment must be clean, except
                    // that the seal write itself may have been torn by the crash.
                    let scan = scan_segment(fs, dir, seg, false)?;
                    if let Some(t) = scan.torn
                        && !is_torn_seal(&*file, &path, t.offset, t.data_end, successor)?
                    {
                        return Err(Error::corrupt(path, t.offset, t.kind));
                    }
                    if let Some(next) = scan.sealed {
                        if scan.valid_len == seg.len {
                            return Err(Error::corrupt(
                                path,
                                scan.valid_len,
                                CorruptionKind::DataAfterSeal,
                            ));
                        }
                        // The seal is written but the pre-sized tail after it was not yet
                        // given back (only zeros follow it): write it again and cut there.
                        let at = scan.valid_len - FRAME_HEADER_LEN as u64;
                        layout.unfinished_seal_at = Some(at);
                        (next, at)
                    } else {
                        layout.unfinished_seal_at = Some(scan.valid_len);
                        (scan.next_seq, scan.valid_len)
                    }
                }
                Err(e) => return Err(e),
            }
        } else {
            (read_seal(&*file, &path, seg.len)?, seal_at)
        };
        if next != successor {
            // Named after the segment whose end disagrees with the file that follows it:
            // either the segment in between is missing, or this one is damaged.
            return Err(Error::corrupt(
                path,
                claim_at,
                CorruptionKind::SegmentGap {
                    expected_first_seq: next,
                    found_first_seq: successor,
                },
            ));
        }
    }

    let path = segment::segment_path(dir, last.first_seq);
    if last.len < SEGMENT_HEADER_LEN {
        // The sequence comes from the name alone here; the header would have bounded it.
        if last.first_seq > frame::MAX_SEQ {
            return Err(Error::corrupt(
                path,
                0,
                CorruptionKind::InvalidHeader("sequence out of range"),
            ));
        }
        layout.torn_segment_header = true;
        layout.next_seq = last.first_seq;
        layout.active_valid_len = SEGMENT_HEADER_LEN;
    } else {
        let scan = match last_scan {
            Some(scan) => scan?,
            None => scan_segment(fs, dir, last, false)?,
        };
        if let Some(next) = scan.sealed {
            return Err(Error::corrupt(
                path,
                scan.valid_len - FRAME_HEADER_LEN as u64,
                CorruptionKind::MissingSuccessor {
                    expected_first_seq: next,
                },
            ));
        }
        if let Some(t) = scan.torn {
            layout.torn_tail = Some(TornTail {
                file: path,
                start: t.offset,
                // In a pre-sized file the zeros after the torn bytes are unwritten space.
                end: if scan.in_presized_file {
                    t.data_end
                } else {
                    last.len
                },
                dropped_seqs: t.seqs,
                reason: t.kind,
            });
        }
        layout.next_seq = scan.next_seq;
        layout.active_valid_len = scan.valid_len;
        layout.active_presized = scan.presized;
    }

    let first = segments[0].first_seq;
    // A missing or unreadable cursor, or a damaged slot: resume from what is certain (the
    // valid slot if it lies within the segments, else the oldest segment) and say so.
    if cursor.is_none() || damage.is_some() {
        if cursor.is_none() || layout.acked + 1 < first {
            layout.acked = first.saturating_sub(1);
        }
        if layout.acked < layout.next_seq {
            layout.cursor_reset = Some(CursorReset {
                file: cursor_path,
                damage,
                valid_slot: cursor,
                acked: layout.acked,
                redelivered: (layout.acked + 1 < layout.next_seq)
                    .then(|| (layout.acked + 1, layout.next_seq - 1)),
            });
        }
    }
    if layout.acked + 1 < first || layout.acked >= layout.next_seq {
        return Err(Error::corrupt(
            cursor::cursor_path(dir),
            16,
            CorruptionKind::CursorOutOfRange {
                acked: layout.acked,
                first_seq: first,
                next_seq: layout.next_seq,
            },
        ));
    }
    Ok(layout)
}
