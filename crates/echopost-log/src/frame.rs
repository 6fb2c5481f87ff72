//! Frames: the unit of atomicity, checksumming and compression.
//!
//! An append of N records becomes exactly one frame, written with one `write`. Because the
//! CRC covers the whole frame, a crash that leaves part of a frame on disk produces a frame
//! that fails its check, and recovery drops all N records together: batches are
//! all-or-nothing.
//!
//! ```text
//! offset size field
//!  0      4   magic       b"EPfr"
//!  4      1   version     FORMAT_VERSION (1)
//!  5      1   kind        1 = batch of records, 2 = seal (closes a segment)
//!  6      1   flags       bit 0: body is zstd-compressed
//!                         bit 1: the body's first entry is the batch's metadata
//!                         (opaque to the engine), not a record; `count` excludes it
//!  7      1   reserved    0
//!  8      4   body_len    stored body length (after compression), u32 LE
//! 12      4   count       number of records (0 for a seal), u32 LE
//! 16      8   first_seq   batch: sequence of its first record; seal: first sequence
//!                         of the next segment. u64 LE
//! 24      4   raw_len     body length before compression (= body_len if uncompressed)
//! 28      4   crc         crc32c(body) extended with bytes 0..28 of this header
//! 32      …   body        [metadata entry], count × (u32 LE length, bytes)
//! ```
//!
//! The metadata entry ([`BatchBody::with_meta`]) lets a caller keep, in the same atomic,
//! checksummed frame as the records, what it needs to rebuild its own state after a
//! crash (the daemon keeps a batch's producer id and number there). It takes no sequence
//! number and readers of records never see it; [`crate::Reader::next_frame`] returns it.
//!
//! The CRC is computed over the body first and the header second. That order lets an
//! appender encode and checksum its (possibly large, possibly compressed) body *outside*
//! the writer lock; only the 28 header bytes, which carry the sequence number assigned
//! under the lock, are folded in while holding it.

use std::ops::Range;

use crate::crc::{crc32c, crc32c_append};
use crate::error::CorruptionKind;

/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 32;
/// The first four bytes of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"EPfr";
/// The frame format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Hard upper bound on a frame body, whatever the options say (keeps a corrupt length
/// field from making a reader allocate gigabytes).
pub const MAX_BODY_LEN: u32 = 1 << 30;
/// Bytes each record adds to a frame body besides its payload (its `u32` little-endian
/// length prefix). An encoded batch is the sum of `payload + RECORD_OVERHEAD` over its
/// records, the figure [`LogOptions::max_batch_bytes`](crate::LogOptions::max_batch_bytes)
/// bounds.
pub const RECORD_OVERHEAD: usize = 4;
/// Sequences stay below this (2^63). No log gets near it (that many records), so a
/// cursor, segment or frame on disk claiming more is corruption, and sequence arithmetic
/// cannot overflow.
pub const MAX_SEQ: u64 = 1 << 63;

const FLAG_ZSTD: u8 = 1;
const FLAG_META: u8 = 2;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `count` records starting at `first_seq`.
    Batch,
    /// The end of a segment; `first_seq` is the first sequence of the next segment.
    Seal,
    /// `count` sequences from `first_seq` that are lost: written only by
    /// [`crate::salvage`] in place of damaged data, so that the records after the damage
    /// keep their sequences and the log stays continuous. No body; readers skip it.
    Gap,
}

/// A decoded and validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub compressed: bool,
    /// The body starts with a metadata entry (not counted in `count`).
    pub has_meta: bool,
    pub body_len: u32,
    pub count: u32,
    pub first_seq: u64,
    pub raw_len: u32,
    pub crc: u32,
}

impl FrameHeader {
    /// Bytes the whole frame occupies on disk.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.body_len)
    }

    /// Sequence after the frame's last record (for a batch).
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// Compression applied to frame bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Bodies are stored as they are (the default).
    #[default]
    None,
    /// Bodies are zstd-compressed at the given level when that makes them smaller
    /// (whole frame bodies, one by one; readers decompress transparently).
    Zstd {
        /// zstd's level: 1 (fastest) to 22 (smallest), negative for faster still,
        /// 0 for zstd's default (3).
        level: i32,
    },
}

/// The records of one batch being assembled, length-prefixed, behind space for the frame
/// header. Callers may encode a record straight into it ([`BatchBody::push_with`]), so a
/// record is copied once, from the request into the frame.
#[derive(Debug)]
pub struct BatchBody {
    raw: Vec<u8>,
    count: usize,
    /// The first entry is metadata, not a record.
    has_meta: bool,
}

impl Default for BatchBody {
    fn default() -> Self {
        BatchBody::with_capacity(0)
    }
}

impl BatchBody {
    /// An empty batch with room for `bytes` bytes of encoded records (payloads plus
    /// [`RECORD_OVERHEAD`] each) before it reallocates.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut raw = Vec::with_capacity(FRAME_HEADER_LEN + bytes);
        raw.resize(FRAME_HEADER_LEN, 0);
        BatchBody {
            raw,
            count: 0,
            has_meta: false,
        }
    }

    /// An empty batch whose frame carries `meta`, opaque bytes kept with the records in
    /// the same atomic, checksummed frame (see the module documentation), and with room
    /// for `bytes` bytes of encoded records. `meta` counts towards the batch's size limit
    /// like a record (its length plus [`RECORD_OVERHEAD`]) but takes no sequence number.
    pub fn with_meta(bytes: usize, meta: &[u8]) -> Self {
        let mut body = BatchBody::with_capacity(bytes + meta.len() + RECORD_OVERHEAD);
        body.push(meta);
        body.count = 0;
        body.has_meta = true;
        body
    }

    /// A batch holding `records`.
    pub fn from_records<R: AsRef<[u8]>>(records: &[R]) -> Self {
        let bytes = records
            .iter()
            .map(|r| r.as_ref().len() + RECORD_OVERHEAD)
            .sum();
        let mut body = BatchBody::with_capacity(bytes);
        for r in records {
            body.push(r.as_ref());
        }
        body
    }

    /// Adds one record (any bytes, possibly none). Sizes are checked by
    /// [`crate::Log::prepare`], not here.
    pub fn push(&mut self, record: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(record));
    }

    /// Adds one record whose bytes `write` appends to the buffer it is given (it must
    /// only append: the bytes already in the buffer belong to earlier records).
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.raw.len();
        self.raw.extend_from_slice(&[0; RECORD_OVERHEAD]);
        write(&mut self.raw);
        // A record over 4 GiB cannot be stored; the size check in `finish` refuses the
        // batch long before, so saturating here cannot produce a frame.
        let len = u32::try_from(self.raw.len() - at - RECORD_OVERHEAD).unwrap_or(u32::MAX);
        self.raw[at..at + RECORD_OVERHEAD].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// Records added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records added so far, in order (not the metadata).
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let raw = &self.raw[FRAME_HEADER_LEN..];
        let entries = self.count + usize::from(self.has_meta);
        // The body was built by `push_with`, so it always splits into its entries.
        split_records(raw, u32::try_from(entries).unwrap_or(0))
            .unwrap_or_default()
            .into_iter()
            .skip(usize::from(self.has_meta))
            .map(move |r| &raw[r])
    }

    /// Bytes of the encoded records: payloads plus [`RECORD_OVERHEAD`] each, before
    /// compression (the size [`crate::LogOptions::max_batch_bytes`] limits).
    pub fn raw_len(&self) -> u64 {
        (self.raw.len() - FRAME_HEADER_LEN) as u64
    }

    /// Compresses (if asked and worthwhile) and checksums the body. Fails only if the body
    /// exceeds the format's limits; callers bound it earlier.
    pub(crate) fn finish(self, compression: Compression) -> Result<PreparedFrame, &'static str> {
        if self.raw_len() > u64::from(MAX_BODY_LEN) {
            return Err("frame body too large");
        }
        let count = u32::try_from(self.count).map_err(|_| "too many records")?;
        let raw_len = self.raw_len() as u32;
        #[cfg(any(test, feature = "sim"))]
        let payload_bytes = {
            let meta = if self.has_meta {
                u64::from(le_u32(&self.raw[FRAME_HEADER_LEN..])) + RECORD_OVERHEAD as u64
            } else {
                0
            };
            u64::from(raw_len) - meta - self.count as u64 * RECORD_OVERHEAD as u64
        };
        let has_meta = self.has_meta;
        let mut bytes = self.raw;
        let mut compressed = false;
        if let Compression::Zstd { level } = compression
            && let Ok(c) = zstd::bulk::compress(&bytes[FRAME_HEADER_LEN..], level)
            && c.len() < raw_len as usize
        {
            bytes.truncate(FRAME_HEADER_LEN);
            bytes.extend_from_slice(&c);
            compressed = true;
        }
        let body_len = (bytes.len() - FRAME_HEADER_LEN) as u32;
        let body_crc = crc32c(&bytes[FRAME_HEADER_LEN..]);
        bytes[0..4].copy_from_slice(&FRAME_MAGIC);
        bytes[4] = FORMAT_VERSION;
        bytes[5] = 1;
        bytes[6] = if compressed { FLAG_ZSTD } else { 0 } | if has_meta { FLAG_META } else { 0 };
        bytes[8..12].copy_from_slice(&body_len.to_le_bytes());
        bytes[12..16].copy_from_slice(&count.to_le_bytes());
        bytes[24..28].copy_from_slice(&raw_len.to_le_bytes());
        Ok(PreparedFrame {
            bytes,
            body_crc,
            count,
            #[cfg(any(test, feature = "sim"))]
            payload_bytes,
        })
    }
}

/// A batch body encoded outside the writer lock, waiting for its sequence number.
#[derive(Debug)]
pub struct PreparedFrame {
    /// Header space (zeroed) followed by the stored body.
    pub bytes: Vec<u8>,
    body_crc: u32,
    pub count: u32,
    /// Sum of the records' payload lengths. (For tests: the engine does not need it.)
    #[cfg(any(test, feature = "sim"))]
    pub payload_bytes: u64,
}

impl PreparedFrame {
    /// Encodes `records` into a frame body (compressing if asked and worthwhile).
    /// Fails only if the body would exceed `u32` sizes; callers bound it earlier.
    /// (Tests forge frames with it; the engine goes through [`BatchBody`].)
    #[cfg(any(test, feature = "sim"))]
    pub fn encode<R: AsRef<[u8]>>(
        records: &[R],
        compression: Compression,
    ) -> Result<Self, &'static str> {
        BatchBody::from_records(records).finish(compression)
    }

    /// Stamps the first sequence number and completes the checksum.
    pub fn seal_header(&mut self, first_seq: u64) {
        self.bytes[16..24].copy_from_slice(&first_seq.to_le_bytes());
        let crc = crc32c_append(self.body_crc, &self.bytes[..28]);
        self.bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A gap frame: `count` sequences from `first_seq` are lost (see [`FrameKind::Gap`]).
pub fn encode_gap(first_seq: u64, count: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = 3;
    h[12..16].copy_from_slice(&count.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c_append(crc32c(&[]), &h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The seal frame that closes a segment whose successor starts at `next_seq`.
pub fn encode_seal(next_seq: u64) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = 2;
    h[16..24].copy_from_slice(&next_seq.to_le_bytes());
    let crc = crc32c_append(crc32c(&[]), &h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Checks the magic, version and field sanity of a header. The CRC is checked by
/// [`check_crc`] once the body is in hand.
pub fn decode_header(h: &[u8]) -> Result<FrameHeader, CorruptionKind> {
    if h.len() < FRAME_HEADER_LEN {
        return Err(CorruptionKind::Truncated {
            needed: FRAME_HEADER_LEN as u64,
            available: h.len() as u64,
        });
    }
    if h[0..4] != FRAME_MAGIC {
        return Err(CorruptionKind::BadMagic);
    }
    if h[4] != FORMAT_VERSION {
        return Err(CorruptionKind::UnknownVersion(u32::from(h[4])));
    }
    let kind = match h[5] {
        1 => FrameKind::Batch,
        2 => FrameKind::Seal,
        3 => FrameKind::Gap,
        _ => return Err(CorruptionKind::InvalidHeader("unknown frame kind")),
    };
    if h[6] & !(FLAG_ZSTD | FLAG_META) != 0 || h[7] != 0 {
        return Err(CorruptionKind::InvalidHeader("unknown flags"));
    }
    let header = FrameHeader {
        kind,
        compressed: h[6] & FLAG_ZSTD != 0,
        has_meta: h[6] & FLAG_META != 0,
        body_len: le_u32(&h[8..]),
        count: le_u32(&h[12..]),
        first_seq: le_u64(&h[16..]),
        raw_len: le_u32(&h[24..]),
        crc: le_u32(&h[28..]),
    };
    if header.body_len > MAX_BODY_LEN || header.raw_len > MAX_BODY_LEN {
        return Err(CorruptionKind::InvalidHeader(
            "body length over the format limit",
        ));
    }
    match kind {
        FrameKind::Gap => {
            if header.body_len != 0 || header.raw_len != 0 || header.compressed {
                return Err(CorruptionKind::InvalidHeader("gap frame with a body"));
            }
            if header.count == 0
                || header.first_seq == 0
                || header
                    .first_seq
                    .checked_add(u64::from(header.count))
                    .is_none_or(|end| end > MAX_SEQ)
            {
                return Err(CorruptionKind::InvalidHeader("sequence out of range"));
            }
        }
        FrameKind::Seal => {
            if header.body_len != 0
                || header.count != 0
                || header.raw_len != 0
                || header.compressed
                || header.has_meta
            {
                return Err(CorruptionKind::InvalidHeader("seal frame with a body"));
            }
            if header.first_seq == 0 || header.first_seq > MAX_SEQ {
                return Err(CorruptionKind::InvalidHeader("sequence out of range"));
            }
        }
        FrameKind::Batch => {
            if header.count == 0 {
                return Err(CorruptionKind::InvalidHeader("batch without records"));
            }
            if !header.compressed && header.raw_len != header.body_len {
                return Err(CorruptionKind::InvalidHeader("length fields disagree"));
            }
            let entries = u64::from(header.count) + u64::from(header.has_meta);
            if u64::from(header.raw_len) < entries * RECORD_OVERHEAD as u64 {
                return Err(CorruptionKind::InvalidHeader(
                    "body too short for its record count",
                ));
            }
            if header.first_seq == 0
                || header
                    .first_seq
                    .checked_add(u64::from(header.count))
                    .is_none_or(|end| end > MAX_SEQ)
            {
                return Err(CorruptionKind::InvalidHeader("sequence out of range"));
            }
        }
    }
    Ok(header)
}

/// Verifies the frame's CRC over `header_bytes` (the 32 header bytes) and `body`.
pub fn check_crc(
    header: &FrameHeader,
    header_bytes: &[u8],
    body: &[u8],
) -> Result<(), CorruptionKind> {
    let computed = crc32c_append(crc32c(body), &header_bytes[..28]);
    if computed == header.crc {
        Ok(())
    } else {
        Err(CorruptionKind::ChecksumMismatch {
            stored: header.crc,
            computed,
        })
    }
}

/// A frame's records, decoded. `ranges` (the records) and `meta` index into `raw`.
#[derive(Debug, Default)]
pub struct DecodedBody {
    pub raw: Vec<u8>,
    pub ranges: Vec<Range<usize>>,
    /// The metadata entry, when the frame has one.
    pub meta: Option<Range<usize>>,
}

impl DecodedBody {
    /// Empties it, keeping its buffers for the next frame.
    fn clear(&mut self) {
        self.raw.clear();
        self.ranges.clear();
        self.meta = None;
    }
}

/// Decompresses (if needed) and splits a CRC-checked body into its records.
pub fn decode_body(header: &FrameHeader, body: &[u8]) -> Result<DecodedBody, CorruptionKind> {
    let mut out = DecodedBody::default();
    decode_body_into(header, body, &mut out)?;
    Ok(out)
}

/// [`decode_body`] into `out`, reusing its buffers (a reader decodes frame after frame
/// without allocating). On error `out` holds nothing usable.
pub fn decode_body_into(
    header: &FrameHeader,
    body: &[u8],
    out: &mut DecodedBody,
) -> Result<(), CorruptionKind> {
    out.clear();
    if header.compressed {
        let cap = header.raw_len as usize;
        out.raw.reserve(cap);
        let n = zstd::bulk::Decompressor::new()
            .and_then(|mut d| d.decompress_to_buffer(body, &mut out.raw))
            .map_err(|_| CorruptionKind::BadBody("zstd decompression failed"))?;
        if n != cap || out.raw.len() != cap {
            return Err(CorruptionKind::BadBody(
                "decompressed length differs from header",
            ));
        }
    } else {
        out.raw.extend_from_slice(body);
    }
    split_entries(header, &out.raw, &mut out.ranges, &mut out.meta)
}

/// Splits an uncompressed, CRC-checked body into its records **in place**: `out.ranges`
/// and `out.meta` index into `body` itself and `out.raw` is left empty, so a reader lends
/// records straight from its read buffer (issue 17). A compressed body must go through
/// [`decode_body_into`].
pub fn split_body_into(
    header: &FrameHeader,
    body: &[u8],
    out: &mut DecodedBody,
) -> Result<(), CorruptionKind> {
    out.clear();
    if header.compressed {
        return Err(CorruptionKind::BadBody(
            "internal: a compressed body split in place",
        ));
    }
    split_entries(header, body, &mut out.ranges, &mut out.meta)
}

/// The entries of a raw body: the header's records, after the metadata entry if it has
/// one.
fn split_entries(
    header: &FrameHeader,
    raw: &[u8],
    ranges: &mut Vec<Range<usize>>,
    meta: &mut Option<Range<usize>>,
) -> Result<(), CorruptionKind> {
    let entries = header
        .count
        .checked_add(u32::from(header.has_meta))
        .ok_or(CorruptionKind::InvalidHeader("too many records"))?;
    split_records_into(raw, entries, ranges)?;
    if header.has_meta {
        *meta = Some(ranges.remove(0));
    }
    Ok(())
}

/// Splits a raw body into exactly `count` length-prefixed records covering it entirely.
pub fn split_records(raw: &[u8], count: u32) -> Result<Vec<Range<usize>>, CorruptionKind> {
    let mut ranges = Vec::new();
    split_records_into(raw, count, &mut ranges)?;
    Ok(ranges)
}

/// [`split_records`] appending to `ranges`.
fn split_records_into(
    raw: &[u8],
    count: u32,
    ranges: &mut Vec<Range<usize>>,
) -> Result<(), CorruptionKind> {
    // No more records than length prefixes fit: a wild `count` must not reserve
    // gigabytes before the first check fails (found by fuzzing `frame_decode`).
    ranges.reserve((count as usize).min(raw.len() / RECORD_OVERHEAD + 1));
    let mut pos = 0usize;
    for _ in 0..count {
        if raw.len() - pos < RECORD_OVERHEAD {
            return Err(CorruptionKind::BadBody(
                "record length prefix runs past the body",
            ));
        }
        let len = le_u32(&raw[pos..]) as usize;
        pos += RECORD_OVERHEAD;
        if raw.len() - pos < len {
            return Err(CorruptionKind::BadBody("record runs past the body"));
        }
        ranges.push(pos..pos + len);
        pos += len;
    }
    if pos != raw.len() {
        return Err(CorruptionKind::BadBody("bytes after the last record"));
    }
    Ok(())
}

/// Parses one complete frame from the start of `bytes` (header, CRC and body).
/// Returns the header and the body's range within `bytes`.
pub fn parse_frame(bytes: &[u8]) -> Result<(FrameHeader, Range<usize>), CorruptionKind> {
    let header = decode_header(bytes)?;
    let end = FRAME_HEADER_LEN as u64 + u64::from(header.body_len);
    if (bytes.len() as u64) < end {
        return Err(CorruptionKind::Truncated {
            needed: end,
            available: bytes.len() as u64,
        });
    }
    let body = FRAME_HEADER_LEN..end as usize;
    check_crc(&header, &bytes[..FRAME_HEADER_LEN], &bytes[body.clone()])?;
    Ok((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(records: &[Vec<u8>], seq: u64, c: Compression) -> Vec<u8> {
        let mut p = PreparedFrame::encode(records, c).unwrap();
        p.seal_header(seq);
        p.bytes
    }

    #[test]
    fn a_wild_record_count_fails_without_reserving_memory() {
        // Found by fuzzing (`frame_decode`): `u32::MAX` records reserved 96 GiB up front
        // and aborted the process before the first length check could fail.
        assert!(split_records(&[0u8; 8], u32::MAX).is_err());
        assert!(split_records(&[], u32::MAX).is_err());
    }

    #[test]
    fn seal_round_trips() {
        let s = encode_seal(42);
        let (h, body) = parse_frame(&s).unwrap();
        assert_eq!(h.kind, FrameKind::Seal);
        assert_eq!(h.first_seq, 42);
        assert!(body.is_empty());
    }

    #[test]
    fn compression_is_used_only_when_it_helps() {
        let compressible = vec![vec![b'a'; 4096]; 4];
        let f = frame(&compressible, 1, Compression::Zstd { level: 1 });
        let (h, _) = parse_frame(&f).unwrap();
        assert!(h.compressed && (h.body_len as usize) < 4096);
        let random: Vec<Vec<u8>> = vec![(0..64u8).map(|i| i.wrapping_mul(151)).collect()];
        let f = frame(&random, 1, Compression::Zstd { level: 1 });
        assert!(!parse_frame(&f).unwrap().0.compressed);
    }

    #[test]
    fn records_written_in_place_frame_like_copied_ones() {
        let records = [b"alpha".to_vec(), Vec::new(), vec![7u8; 300]];
        let mut in_place = BatchBody::default();
        for r in &records {
            in_place.push_with(|buf| buf.extend_from_slice(r));
        }
        assert_eq!(in_place.len(), 3);
        assert!(in_place.records().eq(records.iter().map(Vec::as_slice)));
        assert_eq!(in_place.raw_len(), 305 + 3 * RECORD_OVERHEAD as u64);
        let mut a = in_place.finish(Compression::None).unwrap();
        let mut b = PreparedFrame::encode(&records, Compression::None).unwrap();
        a.seal_header(9);
        b.seal_header(9);
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.payload_bytes, 305);
    }

    #[test]
    fn unknown_version_is_named() {
        let mut f = frame(&[b"x".to_vec()], 1, Compression::None);
        f[4] = 9;
        assert_eq!(
            parse_frame(&f).unwrap_err(),
            CorruptionKind::UnknownVersion(9)
        );
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40),
                              seq in 1u64..MAX_SEQ - 64, zstd in any::<bool>()) {
            let c = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
            let f = frame(&records, seq, c);
            let (h, body) = parse_frame(&f).unwrap();
            prop_assert_eq!(h.first_seq, seq);
            prop_assert_eq!(h.count as usize, records.len());
            prop_assert_eq!(h.frame_len() as usize, f.len());
            let d = decode_body(&h, &f[body]).unwrap();
            let got: Vec<Vec<u8>> = d.ranges.iter().map(|r| d.raw[r.clone()].to_vec()).collect();
            prop_assert_eq!(got, records);
        }

        #[test]
        fn metadata_round_trips_and_is_not_a_record(meta in prop::collection::vec(any::<u8>(), 0..100),
                              records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 1..10),
                              zstd in any::<bool>()) {
            let c = if zstd { Compression::Zstd { level: 1 } } else { Compression::None };
            let mut body = BatchBody::with_meta(0, &meta);
            for r in &records {
                body.push(r);
            }
            prop_assert_eq!(body.len(), records.len());
            prop_assert!(body.records().eq(records.iter().map(Vec::as_slice)));
            let mut p = body.finish(c).unwrap();
            let payload: usize = records.iter().map(Vec::len).sum();
            prop_assert_eq!(p.payload_bytes, payload as u64);
            p.seal_header(5);
            let (h, b) = parse_frame(&p.bytes).unwrap();
            prop_assert!(h.has_meta);
            prop_assert_eq!(h.count as usize, records.len());
            let d = decode_body(&h, &p.bytes[b]).unwrap();
            let got_meta = d.meta.clone().map(|m| d.raw[m].to_vec());
            prop_assert_eq!(got_meta, Some(meta));
            let got: Vec<Vec<u8>> = d.ranges.iter().map(|r| d.raw[r.clone()].to_vec()).collect();
            prop_assert_eq!(got, records);
        }

        #[test]
        fn any_single_bit_flip_is_detected(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8),
                                           bit in any::<prop::sample::Index>()) {
            let mut f = frame(&records, 7, Compression::None);
            let i = bit.index(f.len() * 8);
            f[i / 8] ^= 1 << (i % 8);
            prop_assert!(parse_frame(&f).is_err());
        }

        #[test]
        fn every_strict_prefix_is_rejected(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8),
                                           cut in any::<prop::sample::Index>()) {
            let f = frame(&records, 3, Compression::Zstd { level: 1 });
            let n = cut.index(f.len());
            prop_assert!(parse_frame(&f[..n]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((h, body)) = parse_frame(&bytes) {
                let _ = decode_body(&h, &bytes[body]);
            }
        }

        #[test]
        fn arbitrary_bodies_with_valid_crc_never_panic(body in prop::collection::vec(any::<u8>(), 0..256),
                                                       count in 1u32..8, zstd in any::<bool>()) {
            // Forge a header with a correct CRC around garbage, so decoding of the body
            // itself (lengths, decompression) is exercised, not just the CRC gate.
            let mut h = [0u8; FRAME_HEADER_LEN];
            h[0..4].copy_from_slice(&FRAME_MAGIC);
            h[4] = FORMAT_VERSION;
            h[5] = 1;
            h[6] = u8::from(zstd);
            h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
            h[12..16].copy_from_slice(&count.to_le_bytes());
            h[16..24].copy_from_slice(&1u64.to_le_bytes());
            let raw_len = if zstd { 1024u32 } else { body.len() as u32 };
            h[24..28].copy_from_slice(&raw_len.to_le_bytes());
            let crc = ::crc32c::crc32c_append(::crc32c::crc32c(&body), &h[..28]);
            h[28..32].copy_from_slice(&crc.to_le_bytes());
            let mut f = h.to_vec();
            f.extend_from_slice(&body);
            if let Ok((hd, b)) = parse_frame(&f) {
                let _ = decode_body(&hd, &f[b]);
            }
        }
    }
}
