//! Segment files: naming, the file header, and a buffered frame scanner.
//!
//! A segment is `NNNNNNNNNNNNNNNNNNNN.seg`, its first sequence zero-padded to 20 digits so
//! that a plain sort of the names is log order. It starts with a 32-byte header and holds
//! frames back to back; a sealed segment ends with a seal frame naming the first sequence
//! of its successor.
//!
//! ```text
//! offset size field
//!  0      8   magic       b"ECHOPSEG"
//!  8      4   version     1, u32 LE
//! 12      4   presized    the length the file was created with, in 4 KiB pages, u32 LE;
//!                         0: not pre-sized (issue 17; versions before it wrote 0 here and
//!                         never read it, so both read each other's segments)
//! 16      8   first_seq   u64 LE (must equal the file name)
//! 24      4   reserved    0
//! 28      4   crc         crc32c of bytes 0..28
//! ```
//!
//! # Pre-sized segments (issue 17)
//! A new segment is extended to its full size (`LogOptions::preallocate_segments`) with a
//! sparse `set_len` right after its header is written, and the header says so. Appends
//! then overwrite zeros inside the file, so the `fdatasync` that makes them durable finds
//! the file size unchanged and has no size update to journal. Whatever was not written
//! reads as zeros: in a file still exactly as long as its header says it was pre-sized,
//! zeros from a frame boundary to the end are the unwritten end of the log (nothing torn,
//! nothing dropped, nothing after it looked at). Everywhere else (a sealed segment, a
//! cleanly closed one, which gives its tail back, a segment that was never pre-sized) the
//! file ends at its data, and zeros are checked like any other bytes: a zeroed last frame
//! is a torn write, zeros before valid data are corruption. Stale frames cannot hide in
//! the tail: the tail is created sparse (zeros), and recovery cuts a torn tail before it
//! pre-sizes the file again, so only frames written in this life of the file are there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crc::crc32c;
use crate::error::{CorruptionKind, Error, Result};
use crate::frame::{self, FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader};
use crate::fs::{FileHandle, read_exact_at};
use crate::read_buffer::ReadBuffer;

/// Length of the segment file header.
pub const SEGMENT_HEADER_LEN: u64 = 32;
const SEGMENT_MAGIC: [u8; 8] = *b"ECHOPSEG";
const SEGMENT_VERSION: u32 = 1;
const SEGMENT_SUFFIX: &str = ".seg";

/// How much a scanner reads at once.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// The file name of the segment whose first sequence is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence encoded in a segment file name, or `None` if `name` is not one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Path of a segment inside `dir`.
pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment_name(first_seq))
}

/// Unit of the header's `presized` field.
pub const PRESIZE_UNIT: u64 = 4096;

/// The length a segment is pre-sized to for a target of `bytes`: rounded up to whole
/// [`PRESIZE_UNIT`]s, `None` if the header cannot express it.
pub fn presize_len(bytes: u64) -> Option<u64> {
    let units = bytes.div_ceil(PRESIZE_UNIT);
    (units > 0 && units <= u64::from(u32::MAX)).then(|| units * PRESIZE_UNIT)
}

/// The header of a segment that is not pre-sized.
pub fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    encode_presized_segment_header(first_seq, 0)
}

/// The header of a segment pre-sized to `presized` bytes (a multiple of
/// [`PRESIZE_UNIT`] from [`presize_len`]; 0: not pre-sized).
pub fn encode_presized_segment_header(
    first_seq: u64,
    presized: u64,
) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let units = u32::try_from(presized / PRESIZE_UNIT).unwrap_or(0);
    h[12..16].copy_from_slice(&units.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Reads and validates a segment header, checking it against the sequence in the name.
/// Returns the length the segment was pre-sized to (0: it was not).
pub fn read_segment_header(file: &dyn FileHandle, path: &Path, name_seq: u64) -> Result<u64> {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len < SEGMENT_HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::Truncated {
                needed: SEGMENT_HEADER_LEN,
                available: len,
            },
        ));
    }
    read_exact_at(file, &mut h, 0).map_err(|e| Error::io("read", path, e))?;
    decode_segment_header(&h, name_seq).map_err(|k| Error::corrupt(path, 0, k))
}

fn decode_segment_header(h: &[u8], name_seq: u64) -> Result<u64, CorruptionKind> {
    if h[0..8] != SEGMENT_MAGIC {
        return Err(CorruptionKind::BadMagic);
    }
    let stored = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    let computed = crc32c(&h[..28]);
    if stored != computed {
        return Err(CorruptionKind::ChecksumMismatch { stored, computed });
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != SEGMENT_VERSION {
        return Err(CorruptionKind::UnknownVersion(version));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&h[16..24]);
    let header_seq = u64::from_le_bytes(s);
    if header_seq != name_seq {
        return Err(CorruptionKind::NameMismatch {
            name_seq,
            header_seq,
        });
    }
    if header_seq == 0 || header_seq > frame::MAX_SEQ {
        return Err(CorruptionKind::InvalidHeader("sequence out of range"));
    }
    let units = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    Ok(u64::from(units) * PRESIZE_UNIT)
}

/// One step of a [`FrameScanner`].
#[derive(Debug)]
pub enum Scanned {
    /// A frame whose header, length and CRC are valid. `body` indexes the scanner's buffer
    /// (see [`FrameScanner::bytes`]).
    Frame {
        offset: u64,
        header: FrameHeader,
        body: std::ops::Range<usize>,
    },
    /// The bytes at `offset` are not a valid frame.
    Bad { offset: u64, kind: CorruptionKind },
    /// Reached `limit` exactly.
    End,
}

/// Reads frames sequentially from a segment through a read-ahead buffer, so small frames
/// cost no syscall each and memory stays at one chunk (or one frame, if larger).
#[derive(Debug)]
pub struct FrameScanner {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    /// Read-ahead; a reader may lend it out ([`FrameScanner::lend`]).
    buf: ReadBuffer,
    /// How much of `buf` holds bytes read from the file (the rest is stale).
    valid: usize,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Offset of the next frame.
    pos: u64,
    /// Never read at or beyond this offset.
    limit: u64,
}

impl FrameScanner {
    /// A scanner over `file` from `pos` up to `limit`.
    pub fn new(file: Arc<dyn FileHandle>, path: PathBuf, pos: u64, limit: u64) -> Self {
        FrameScanner {
            file,
            path,
            buf: ReadBuffer::default(),
            valid: 0,
            buf_off: pos,
            pos,
            limit,
        }
    }

    /// The scanner reading into `buf` (e.g. the buffers of a reader's previous segment)
    /// instead of buffers of its own.
    pub(crate) fn with_buffer(mut self, buf: ReadBuffer) -> Self {
        self.buf = buf;
        self.valid = 0;
        self
    }

    /// The scanner's buffers, for another scanner ([`FrameScanner::with_buffer`]).
    pub(crate) fn into_buffer(self) -> ReadBuffer {
        self.buf
    }

    /// Offset of the next frame.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Raises (or lowers) the read limit, e.g. as the active segment grows.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The scanner's buffer, which the ranges in [`Scanned::Frame`] index.
    pub fn bytes(&self) -> &[u8] {
        &self.buf.bytes()[..self.valid]
    }

    /// A shared handle on the scanner's buffer, which the ranges in [`Scanned::Frame`]
    /// index (bytes past [`FrameScanner::bytes`] are stale): records cut from it stay
    /// valid for as long as they live, because the scanner never writes into a buffer
    /// that is still referred to (see `read_buffer.rs`).
    pub(crate) fn lend(&mut self) -> bytes::Bytes {
        self.buf.lend()
    }

    /// The file being scanned.
    pub fn file(&self) -> &dyn FileHandle {
        &*self.file
    }

    /// Path of the file being scanned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `buf` hold `[pos, pos + need)` as far as `limit` allows; returns how many of
    /// those bytes are available.
    fn fill(&mut self, need: usize) -> Result<usize> {
        let want_end = (self.pos + need as u64).min(self.limit);
        let have_end = self.buf_off + self.valid as u64;
        if self.buf_off <= self.pos && have_end >= want_end {
            return Ok((want_end - self.pos) as usize);
        }
        // Keep the unread tail (moved to the front), then read a chunk (or the frame, if
        // larger). The buffer is only ever grown, never cleared: zeroing a megabyte per
        // read cost more than the checksum of what was read into it.
        let keep_from = (self.pos.saturating_sub(self.buf_off) as usize).min(self.valid);
        let keep = if self.buf_off <= self.pos {
            keep_from..self.valid
        } else {
            0..0
        };
        self.valid = keep.len();
        self.buf_off = self.pos;
        let read_end = (self.pos + need.max(READ_CHUNK) as u64).min(self.limit);
        let mut at = self.buf_off + self.valid as u64;
        let end = self.valid + read_end.saturating_sub(at) as usize;
        let buf = self.buf.writable(keep, end);
        while at < read_end {
            let n = self
                .file
                .read_at(&mut buf[self.valid..end], at)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                break;
            }
            self.valid += n;
            at += n as u64;
        }
        let have_end = self.buf_off + self.valid as u64;
        Ok((have_end.min(want_end) - self.pos) as usize)
    }

    /// Reads the next frame, validating header, length and CRC.
    pub fn next_frame(&mut self) -> Result<Scanned> {
        if self.pos >= self.limit {
            return Ok(Scanned::End);
        }
        let offset = self.pos;
        let got = self.fill(FRAME_HEADER_LEN)?;
        let start = (self.pos - self.buf_off) as usize;
        let header = match frame::decode_header(&self.buf.bytes()[start..start + got]) {
            Ok(h) => h,
            Err(kind) => return Ok(Scanned::Bad { offset, kind }),
        };
        let total = header.frame_len();
        let got = self.fill(total as usize)?;
        let start = (self.pos - self.buf_off) as usize;
        if (got as u64) < total {
            return Ok(Scanned::Bad {
                offset,
                kind: CorruptionKind::Truncated {
                    needed: total,
                    available: got as u64,
                },
            });
        }
        let body = start + FRAME_HEADER_LEN..start + total as usize;
        if let Err(kind) = frame::check_crc(
            &header,
            &self.buf.bytes()[start..start + FRAME_HEADER_LEN],
            &self.buf.bytes()[body.clone()],
        ) {
            return Ok(Scanned::Bad { offset, kind });
        }
        self.pos += total;
        Ok(Scanned::Frame {
            offset,
            header,
            body,
        })
    }

    /// Offset just past the last non-zero byte in `from..limit`, or `from` if every byte
    /// there is zero: where the written data of a segment ends when the rest of it is the
    /// unwritten, zero (sparse) tail of a pre-sized file. One pass over the range.
    pub fn nonzero_end(&mut self, from: u64) -> Result<u64> {
        let mut end = from;
        let mut at = from;
        while at < self.limit {
            self.pos = at;
            let got = self.fill(READ_CHUNK)?;
            if got == 0 {
                break;
            }
            let start = (self.pos - self.buf_off) as usize;
            if let Some(i) = last_nonzero(&self.buf.bytes()[start..start + got]) {
                end = at + i as u64 + 1;
            }
            at += got as u64;
        }
        Ok(end)
    }

    /// Offset of the first valid frame strictly after `after` and before `limit` that
    /// could follow the damage at `after` in this log: one whose first sequence is at least
    /// `min_first_seq`, the sequence the damaged frame should have carried. This is what
    /// separates a torn tail (nothing valid follows the damage) from corruption (valid data
    /// follows it). A valid frame announcing an earlier sequence cannot come after the
    /// damaged one; it can only be bytes inside a record (a record may hold anything,
    /// including a copy of a frame), e.g. in the body of a torn last frame, so it is not
    /// counted. Every frame really following the damage carries a sequence at least
    /// `min_first_seq`, so none is overlooked.
    ///
    /// It looks at every offset where the frame magic appears, so it costs one pass over
    /// the rest of the segment.
    pub fn find_valid_frame_after(
        &mut self,
        after: u64,
        min_first_seq: u64,
    ) -> Result<Option<u64>> {
        let mut at = after + 1;
        while at + FRAME_HEADER_LEN as u64 <= self.limit {
            self.pos = at;
            let got = self.fill(READ_CHUNK)?;
            let start = (self.pos - self.buf_off) as usize;
            let window = &self.buf.bytes()[start..start + got];
            let Some(i) = window
                .windows(FRAME_MAGIC.len())
                .position(|w| w == FRAME_MAGIC)
            else {
                // No magic in this window; continue after it, keeping 3 bytes of overlap.
                if got < FRAME_MAGIC.len() {
                    break;
                }
                at += (got - (FRAME_MAGIC.len() - 1)) as u64;
                continue;
            };
            let candidate = at + i as u64;
            self.pos = candidate;
            if let Scanned::Frame { header, .. } = self.next_frame()?
                && header.first_seq >= min_first_seq
            {
                return Ok(Some(candidate));
            }
            at = candidate + 1;
        }
        Ok(None)
    }
}

/// Index of the last non-zero byte of `bytes`. Zero blocks are skipped with a
/// branch-free OR over each (which the compiler vectorises), so a long zero tail costs
/// about a memory read.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_end_of_data() {
        assert_eq!(last_nonzero(&[]), None);
        assert_eq!(last_nonzero(&[0; 10_000]), None);
        let mut b = vec![0u8; 10_000];
        b[4100] = 1;
        assert_eq!(last_nonzero(&b), Some(4100));
        b[0] = 7;
        assert_eq!(last_nonzero(&b), Some(4100));
        b[9_999] = 1;
        assert_eq!(last_nonzero(&b), Some(9_999));
    }

    #[test]
    fn names_sort_in_log_order_and_round_trip() {
        let mut names: Vec<String> = [1u64, 10, 2, 999_999, u64::MAX]
            .iter()
            .map(|&s| segment_name(s))
            .collect();
        names.sort();
        let seqs: Vec<u64> = names
            .iter()
            .map(|n| parse_segment_name(n).unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 10, 999_999, u64::MAX]);
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000a.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.tmp"), None);
    }

    #[test]
    fn header_round_trips_and_checks_name() {
        let h = encode_segment_header(77);
        assert_eq!(decode_segment_header(&h, 77), Ok(0));
        let p = encode_presized_segment_header(77, 64 << 20);
        assert_eq!(decode_segment_header(&p, 77), Ok(64 << 20));
        assert_eq!(presize_len(5000), Some(8192));
        assert_eq!(presize_len(0), None);
        assert_eq!(
            decode_segment_header(&h, 78),
            Err(CorruptionKind::NameMismatch {
                name_seq: 78,
                header_seq: 77
            })
        );
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad, 77),
            Err(CorruptionKind::ChecksumMismatch { .. })
        ));
    }
}
