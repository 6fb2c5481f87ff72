//! Sequential reading, bounded in memory whatever the backlog.
//!
//! A [`Reader`] walks the segments in order through a read-ahead buffer, checks every
//! frame's CRC and that sequences continue without gap or repetition, and hands out
//! records in batches bounded by count and bytes. It holds one read-ahead chunk (1 MiB, or
//! one frame if larger) and one decoded frame, plus the earlier chunks that records it
//! returned still refer to (a few, kept for reuse: `read_buffer.rs`).
//!
//! It never returns a record that is not durable: it stops at the writer's durable
//! position. If records were written but not yet synced (policies `interval` and
//! `never`), it asks for a sync first, so a record is never delivered and then lost in a
//! power failure, which would let its sequence be reused for a different record.

use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::error::{CorruptionKind, Error, Result};
use crate::frame::{self, DecodedBody, FrameKind};
use crate::log::Inner;
use crate::read_batch::{Entry, ReadBatch};
use crate::read_buffer::ReadBuffer;
use crate::segment::{self, FrameScanner, SEGMENT_HEADER_LEN, Scanned};

/// A record read back from the log, owning (a share of) its bytes.
///
/// Taken out of a [`ReadBatch`] (`into_iter`), `data` is a reference-counted slice of the
/// buffer the reader read the frame into (for an uncompressed frame), or of the one
/// buffer the batch was copied into (issue 17). Keeping any record keeps its whole buffer
/// alive: a read buffer (1 MiB, or one frame if larger) or the batch's copy buffer. A
/// batch never keeps more than twice its own size of read buffers alive (a smaller batch
/// is copied instead); a caller that keeps a few records long after the rest are dropped
/// should copy them (`Bytes::copy_from_slice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its sequence number (from 1).
    pub seq: u64,
    /// The bytes that were appended, unchanged (decompressed if the log compresses).
    pub data: Bytes,
}

/// One frame read back whole ([`Reader::next_frame`]): the records of one append and the
/// metadata it was written with ([`crate::BatchBody::with_meta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFrame {
    /// Sequence of the first record in `records`.
    pub first_seq: u64,
    /// The frame's metadata entry, if it has one.
    pub meta: Option<Vec<u8>>,
    /// The records, in order (those of the frame at or after the reader's position).
    pub records: Vec<Vec<u8>>,
}

/// The smallest batch [`Reader::next_batch`] cuts from its read buffers rather than copying:
/// half a read buffer, so that a batch keeps at most twice its size alive.
const LEND_MIN_BATCH: usize = segment::READ_CHUNK / 2;

/// Most bytes [`Reader::next_batch`] reserves at once for a batch's buffer: a full batch of
/// the replayer's or a typical reader's size without regrowing.
const BATCH_BUFFER_RESERVE: usize = 4 << 20;

#[derive(Debug)]
struct OpenSegment {
    first_seq: u64,
    scanner: FrameScanner,
    /// First sequence the next frame in this segment must carry.
    expect: u64,
}

#[derive(Debug)]
struct CurrentFrame {
    first_seq: u64,
    body: DecodedBody,
    /// `Some(start)`: an uncompressed body left in the segment scanner's buffer at
    /// `start` (`body.raw` is empty and `body.ranges` index from `start`); it stays valid
    /// until the scanner reads again, which only `load_frame` makes it do, once this frame
    /// is used up. `None`: the records are in `body.raw` (a decompressed frame).
    in_scanner: Option<usize>,
    idx: usize,
}

/// The bytes a frame's `body.ranges` index: its decoded body (`raw`), or the part of the scanner's
/// buffer the frame's body starts at. `None` if that scanner is gone (the frame must then
/// be read again).
fn frame_bytes<'a>(
    in_scanner: Option<usize>,
    raw: &'a [u8],
    seg: Option<&'a OpenSegment>,
) -> Option<&'a [u8]> {
    match in_scanner {
        None => Some(raw),
        Some(start) => seg.and_then(|s| s.scanner.bytes().get(start..)),
    }
}

/// Appends `data` to `buf` and returns where it starts. When `buf` is full, it is grown
/// for the rest of the batch, estimated as this record's size times the `left` records
/// still wanted, within the `budget` of bytes left (so one small record asked for with a
/// huge `max_bytes` reserves only itself) and [`BATCH_BUFFER_RESERVE`]. The previous
/// batch's allocation is reused when every record of it was dropped (`BytesMut::reserve`
/// reclaims a buffer no `Bytes` refers to any more).
fn copy_into(buf: &mut BytesMut, data: &[u8], left: usize, budget: usize) -> usize {
    if buf.capacity() - buf.len() < data.len() {
        let rest = data
            .len()
            .saturating_mul(left)
            .min(budget)
            .min(BATCH_BUFFER_RESERVE);
        buf.reserve(rest.max(data.len()));
    }
    let at = buf.len();
    buf.extend_from_slice(data);
    at
}

/// Reads records in sequence order. Created by [`crate::Log::reader`].
#[derive(Debug)]
pub struct Reader {
    inner: Arc<Inner>,
    next: u64,
    seg: Option<OpenSegment>,
    frame: Option<CurrentFrame>,
    /// Also return acknowledged records still on disk (see
    /// [`crate::Log::reader_including_acked`]).
    include_acked: bool,
    /// Lost ranges (`first..=last`) passed since the last [`Reader::take_gaps`].
    gaps: Vec<(u64, u64)>,
    /// The buffers of the last frame read, reused for the next one.
    spare: DecodedBody,
    /// A frame start this reader checked, to be added to the log's seek index the next
    /// time it takes the state lock anyway (segment, first sequence, offset).
    mark: Option<(u64, u64, u64)>,
    /// What is left of the last [`Reader::next_batch`] buffer, for the next one.
    batch_buf: BytesMut,
    /// The read buffers of the last segment read, for the next one's scanner.
    read_buffer: ReadBuffer,
}

/// Where a segment ends for a reader: its full length if sealed, the durable length if it
/// is the active one.
enum Extent {
    Sealed(u64),
    Active(u64),
}

impl Reader {
    pub(crate) fn new(inner: Arc<Inner>, from_seq: u64, include_acked: bool) -> Self {
        Reader {
            inner,
            next: from_seq.max(1),
            seg: None,
            frame: None,
            include_acked,
            gaps: Vec::new(),
            spare: DecodedBody::default(),
            mark: None,
            batch_buf: BytesMut::new(),
            read_buffer: ReadBuffer::default(),
        }
    }

    /// The rest of the next frame, whole: its records at or after the reader's position
    /// and its metadata. `None` means the reader has caught up with the durable end.
    /// Memory: one frame. Errors as [`Reader::next_batch`].
    pub fn next_frame(&mut self) -> Result<Option<StoredFrame>> {
        loop {
            if let Some(cur) = self.frame.take() {
                let skip = usize::try_from(self.next.saturating_sub(cur.first_seq))
                    .unwrap_or(usize::MAX)
                    .max(cur.idx);
                let Some(raw) = frame_bytes(cur.in_scanner, &cur.body.raw, self.seg.as_ref())
                else {
                    self.spare = cur.body;
                    continue;
                };
                let body = &cur.body;
                let frame = (skip < body.ranges.len()).then(|| {
                    let first_seq = cur.first_seq + skip as u64;
                    let records: Vec<Vec<u8>> = body.ranges[skip..]
                        .iter()
                        .map(|r| raw[r.clone()].to_vec())
                        .collect();
                    StoredFrame {
                        first_seq,
                        meta: body.meta.clone().map(|m| raw[m].to_vec()),
                        records,
                    }
                });
                self.spare = cur.body;
                if let Some(f) = frame {
                    self.next = f.first_seq + f.records.len() as u64;
                    return Ok(Some(f));
                }
                continue;
            }
            if !self.load_frame()? {
                return Ok(None);
            }
        }
    }

    /// The ranges of sequences (`first..=last`, in order) that `salvage` recorded as lost
    /// and this reader skipped since the last call: the records returned after one
    /// continue past it. Empty for a log that was never salvaged.
    pub fn take_gaps(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.gaps)
    }

    /// Sequence of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next records in sequence order: up to `max_records` (at least 1) records whose
    /// data totals at most `max_bytes` bytes (a single larger record is still returned
    /// alone). An empty batch means the reader has caught up with the durable end of the
    /// log; call again later for more. Records written but not yet durable (policies
    /// `interval` and `never`) are synced first, so what is returned is never lost.
    ///
    /// # Errors
    /// * [`Error::Corruption`]: a frame fails its checksum, a sequence is missing or
    ///   repeated, a seal is missing or a body does not decode; it names file, byte offset
    ///   and reason.
    /// * [`Error::Io`]: reading a segment failed, or the sync it asked for did (which
    ///   poisons the log); [`Error::Poisoned`]: that sync found the log stopped.
    ///
    /// On error the reader's position is unchanged: the records the call read before the
    /// failure are not returned, and the next call reads them again.
    ///
    /// Memory and cost: see [`ReadBatch`]; borrowing its records costs nothing per record,
    /// taking them as [`StoredRecord`]s costs a reference count each.
    pub fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Result<ReadBatch> {
        // Records of an uncompressed frame are cut from the scanner's read buffer, which
        // is lent out for that (`read_buffer.rs`): no copy. Records of a decompressed
        // frame are copied into one batch buffer, as are all of them when the batch is
        // small next to the read buffers it would keep alive: a record pins its whole
        // buffer, so a batch keeps at most twice its own size of memory alive.
        let (start, gaps_before) = (self.next, self.gaps.len());
        let mut copied = std::mem::take(&mut self.batch_buf);
        // `buffers[0]` will be the copy buffer; read buffers lent to the batch follow.
        let mut buffers: Vec<Bytes> = vec![Bytes::new()];
        // Allocated at the first record, so a reader that has caught up allocates nothing.
        let mut entries: Vec<Entry> = Vec::new();
        let mut lent_bytes = 0usize;
        let mut used = 0usize;
        let read = self.visit_records(max_records, max_bytes, true, |seq, data, src| {
            if entries.is_empty() {
                entries.reserve(max_records.clamp(1, 4096));
            }
            match src {
                Some((buffer, range)) => {
                    if buffers[1..]
                        .last()
                        .is_none_or(|b| b.as_ptr() != buffer.as_ptr())
                    {
                        buffers.push(buffer.clone());
                    }
                    lent_bytes += range.len();
                    entries.push(Entry {
                        seq,
                        buffer: buffers.len() - 1,
                        range,
                    });
                }
                None => {
                    let left = max_records.saturating_sub(entries.len());
                    let at = copy_into(&mut copied, data, left, max_bytes.saturating_sub(used));
                    entries.push(Entry {
                        seq,
                        buffer: 0,
                        range: at..at + data.len(),
                    });
                }
            }
            used += data.len();
            true
        });
        if let Err(e) = read {
            // Back to where the call started, so that the records before the failure
            // are not skipped by a caller that retries: they are read (and checked)
            // again, from the nearest frame the seek index knows.
            copied.clear();
            self.batch_buf = copied;
            self.next = start;
            self.gaps.truncate(gaps_before);
            self.frame = None;
            self.close_segment();
            return Err(e);
        }
        let pinned: usize = buffers[1..].iter().map(Bytes::len).sum();
        if lent_bytes.saturating_mul(2) < pinned {
            let mut left = lent_bytes;
            for e in &mut entries {
                if e.buffer != 0 {
                    let data = &buffers[e.buffer][e.range.clone()];
                    let at = copy_into(&mut copied, data, usize::MAX, left);
                    left -= data.len();
                    *e = Entry {
                        seq: e.seq,
                        buffer: 0,
                        range: at..at + data.len(),
                    };
                }
            }
            buffers.truncate(1);
        }
        if !copied.is_empty() {
            // (An empty split would still share, and so pin, the copy buffer's memory.)
            buffers[0] = copied.split().freeze();
        }
        self.batch_buf = copied;
        Ok(ReadBatch::new(buffers, entries))
    }

    /// The next records in sequence order, like [`Reader::next_batch`] (same bounds, same
    /// checks, only durable records), each lent to `visit` as `(seq, bytes)` straight from
    /// the reader's frame buffer: no copy and no allocation per record, for a caller that
    /// does not need to own them (issue 17). `visit` returns false to stop after that
    /// record. Returns how many records it was given; 0 means the reader has caught up
    /// with the durable end.
    ///
    /// # Errors
    /// As [`Reader::next_batch`]. Records visited before the error were read correctly;
    /// the reader's position is after them.
    pub fn read_each(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<usize> {
        self.visit_records(max_records, max_bytes, false, |seq, data, _| {
            visit(seq, data)
        })
    }

    /// The walk behind [`Reader::read_each`] and [`Reader::next_batch`]: gives `visit`
    /// each record as `(seq, bytes, source)`. With `lend`, `source` is the scanner's
    /// (lent) read buffer and the record's range in it, for a record of an uncompressed
    /// frame of a batch that can reach [`LEND_MIN_BATCH`]; otherwise `None` (the bytes
    /// are only borrowed for the call).
    fn visit_records(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        lend: bool,
        mut visit: impl FnMut(u64, &[u8], Option<(&Bytes, Range<usize>)>) -> bool,
    ) -> Result<usize> {
        let max_records = max_records.max(1);
        let mut n = 0usize;
        let mut bytes = 0usize;
        let mut lending = (!lend).then_some(false);
        loop {
            if let Some(cur) = &mut self.frame {
                // Lend only to a batch that can cover half a read buffer (judged from the
                // first record's size): a smaller one would be copied in the end anyway,
                // and lending costs it the in-place reuse of the buffer.
                let lend_now = *lending.get_or_insert_with(|| {
                    let hint = cur.body.ranges.get(cur.idx).map_or(0, |r| r.len()).max(1);
                    max_records.saturating_mul(hint).min(max_bytes) >= LEND_MIN_BATCH
                });
                let buffer = match (lend_now, cur.in_scanner, &mut self.seg) {
                    (true, Some(_), Some(seg)) => Some(seg.scanner.lend()),
                    _ => None,
                };
                let Some(raw) = frame_bytes(cur.in_scanner, &cur.body.raw, self.seg.as_ref())
                else {
                    // Unreachable (the scanner outlives its frame), and harmless: the
                    // frame is read again from where the reader is.
                    self.frame = None;
                    continue;
                };
                let start = cur.in_scanner.unwrap_or(0);
                while cur.idx < cur.body.ranges.len() {
                    let seq = cur.first_seq + cur.idx as u64;
                    let range = cur.body.ranges[cur.idx].clone();
                    if seq < self.next {
                        cur.idx += 1;
                        continue;
                    }
                    if n > 0 && bytes + range.len() > max_bytes {
                        return Ok(n);
                    }
                    bytes += range.len();
                    cur.idx += 1;
                    self.next = seq + 1;
                    n += 1;
                    let source = buffer
                        .as_ref()
                        .map(|b| (b, start + range.start..start + range.end));
                    let more = visit(seq, &raw[range], source);
                    if !more || n >= max_records {
                        return Ok(n);
                    }
                }
                if let Some(done) = self.frame.take() {
                    self.spare = done.body;
                }
            }
            if !self.load_frame()? {
                return Ok(n);
            }
        }
    }

    /// Loads the next frame holding `self.next`. Returns false at the durable end.
    fn load_frame(&mut self) -> Result<bool> {
        let mut synced = false;
        loop {
            let (durable_next, written_next, extent) = {
                let mut st = self.inner.lock_state();
                if let Some((segment, seq, offset)) = self.mark.take() {
                    st.seek.note(segment, seq, offset);
                }
                if !self.include_acked && self.next <= st.acked {
                    // Those records were delivered (and their segment may be gone).
                    self.next = st.acked + 1;
                    self.frame = None;
                }
                let first_stored = st
                    .sealed
                    .front()
                    .map_or(st.active.first_seq, |s| s.first_seq);
                if self
                    .seg
                    .as_ref()
                    .is_some_and(|s| s.first_seq < first_stored)
                    && let Some(seg) = self.seg.take()
                {
                    // Deleted after delivery; its buffers serve the next segment.
                    self.read_buffer = seg.scanner.into_buffer();
                }
                let extent = self.seg.as_ref().map(|s| {
                    if s.first_seq == st.active.first_seq {
                        Extent::Active(st.durable_len)
                    } else {
                        let len = st
                            .sealed
                            .iter()
                            .find(|x| x.first_seq == s.first_seq)
                            .map_or(0, |x| x.len);
                        Extent::Sealed(len)
                    }
                });
                (st.durable_next, st.next_seq, extent)
            };
            if self.next >= durable_next {
                if written_next > durable_next && !synced {
                    self.inner.sync_now()?;
                    synced = true;
                    continue;
                }
                return Ok(false);
            }
            let Some(seg) = &mut self.seg else {
                // `None`: the segment was deleted after being delivered; the clamp at the
                // top of the loop moves past it.
                self.seg = self.open_segment_for(self.next)?;
                if self.seg.is_none() && self.include_acked {
                    // Deleted after delivery: go on from the oldest record still stored.
                    let st = self.inner.lock_state();
                    let first_stored = st
                        .sealed
                        .front()
                        .map_or(st.active.first_seq, |s| s.first_seq);
                    self.next = self.next.max(first_stored);
                    self.frame = None;
                }
                continue;
            };
            let (sealed, limit) = match extent {
                Some(Extent::Sealed(len)) => {
                    seg.scanner.set_limit(len);
                    (true, len)
                }
                Some(Extent::Active(len)) => {
                    seg.scanner.set_limit(len);
                    (false, len)
                }
                // A segment deleted under us: it was fully delivered, move on.
                None => {
                    self.close_segment();
                    continue;
                }
            };
            match seg.scanner.next_frame()? {
                Scanned::End => {
                    if sealed {
                        return Err(Error::corrupt(
                            seg.scanner.path(),
                            seg.scanner.position(),
                            CorruptionKind::MissingSeal,
                        ));
                    }
                    // The durable end moved into a newer segment between our look at the
                    // state and now (a roll); look again.
                    if synced {
                        return Ok(false);
                    }
                    synced = true;
                }
                Scanned::Bad { offset, kind } => {
                    return Err(Error::corrupt(seg.scanner.path(), offset, kind));
                }
                Scanned::Frame {
                    offset,
                    header,
                    body,
                } => {
                    if header.first_seq != seg.expect {
                        return Err(Error::corrupt(
                            seg.scanner.path(),
                            offset,
                            CorruptionKind::SequenceMismatch {
                                expected: seg.expect,
                                found: header.first_seq,
                            },
                        ));
                    }
                    if header.kind != FrameKind::Seal {
                        self.mark = Some((seg.first_seq, header.first_seq, offset));
                    }
                    match header.kind {
                        FrameKind::Seal => {
                            if !sealed || seg.scanner.position() != limit {
                                // A seal ends its segment; bytes after it are damage.
                                return Err(Error::corrupt(
                                    seg.scanner.path(),
                                    seg.scanner.position(),
                                    CorruptionKind::DataAfterSeal,
                                ));
                            }
                            self.close_segment();
                        }
                        FrameKind::Gap => {
                            // Sequences salvage recorded as lost: nothing to hand out,
                            // and the next record due is after them.
                            seg.expect = header.end_seq();
                            if header.end_seq() > self.next {
                                self.gaps
                                    .push((self.next.max(header.first_seq), header.end_seq() - 1));
                                self.next = header.end_seq();
                            }
                        }
                        FrameKind::Batch => {
                            seg.expect = header.end_seq();
                            if header.end_seq() <= self.next {
                                continue;
                            }
                            let mut decoded = std::mem::take(&mut self.spare);
                            let bytes = &seg.scanner.bytes()[body.clone()];
                            let in_scanner = if header.compressed {
                                frame::decode_body_into(&header, bytes, &mut decoded).map(|()| None)
                            } else {
                                frame::split_body_into(&header, bytes, &mut decoded)
                                    .map(|()| Some(body.start))
                            }
                            .map_err(|k| Error::corrupt(seg.scanner.path(), offset, k))?;
                            self.frame = Some(CurrentFrame {
                                first_seq: header.first_seq,
                                body: decoded,
                                in_scanner,
                                idx: 0,
                            });
                            return Ok(true);
                        }
                    }
                }
            }
        }
    }

    /// Lets go of the current segment, keeping its read buffers for the next one.
    fn close_segment(&mut self) {
        if let Some(seg) = self.seg.take() {
            self.read_buffer = seg.scanner.into_buffer();
        }
    }

    /// Opens the segment that holds `seq`; `None` if it was deleted meanwhile because
    /// everything in it was acknowledged.
    fn open_segment_for(&mut self, seq: u64) -> Result<Option<OpenSegment>> {
        let (first_seq, start) = {
            let st = self.inner.lock_state();
            let mut firsts: Vec<u64> = st.sealed.iter().map(|s| s.first_seq).collect();
            firsts.push(st.active.first_seq);
            let idx = firsts.partition_point(|&f| f <= seq);
            let first_seq = firsts[idx.saturating_sub(1)];
            (first_seq, st.seek.find(first_seq, seq))
        };
        let path: PathBuf = segment::segment_path(&self.inner.dir, first_seq);
        let file = match self.inner.fs.open(&path, crate::fs::OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let st = self.inner.lock_state();
                let first_stored = st
                    .sealed
                    .front()
                    .map_or(st.active.first_seq, |s| s.first_seq);
                if first_seq < first_stored {
                    return Ok(None);
                }
                return Err(Error::corrupt(
                    path,
                    0,
                    CorruptionKind::SegmentGap {
                        expected_first_seq: first_seq,
                        found_first_seq: 0,
                    },
                ));
            }
            Err(e) => return Err(Error::io("open", path, e)),
        };
        segment::read_segment_header(&*file, &path, first_seq)?;
        // From the nearest frame known to start at or before `seq` (checked from there on
        // like any other), else from the segment's first frame.
        let (pos, expect) = start.map_or((SEGMENT_HEADER_LEN, first_seq), |m| (m.offset, m.seq));
        Ok(Some(OpenSegment {
            first_seq,
            scanner: FrameScanner::new(file, path, pos, pos)
                .with_buffer(std::mem::take(&mut self.read_buffer)),
            expect,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, LogOptions};

    /// Whether `data` lies in the buffer the reader reads into now.
    fn in_read_buffer(r: &Reader, data: &[u8]) -> bool {
        r.seg
            .as_ref()
            .is_some_and(|s| s.scanner.bytes().as_ptr_range().contains(&data.as_ptr()))
    }

    /// Record `i` (0-based) of [`large_log`].
    fn rec(i: usize) -> Vec<u8> {
        vec![(i % 251) as u8; 1000]
    }

    /// A log of 30 frames of 100 records of 1000 bytes: several 1 MiB read chunks.
    fn large_log(dir: &std::path::Path) -> Log {
        let log = Log::open(dir, LogOptions::default()).unwrap();
        for f in 0..30 {
            let batch: Vec<Vec<u8>> = (0..100).map(|i| rec(f * 100 + i)).collect();
            log.append(&batch).unwrap();
        }
        log
    }

    #[test]
    fn a_batch_with_nothing_copied_leaves_the_copy_buffer_free() {
        let dir = tempfile::tempdir().unwrap();
        let log = large_log(dir.path());
        let mut r = log.reader(1);
        // Copied into the copy buffer, then dropped: the buffer is free to reuse...
        drop(r.next_batch(1, 1 << 20).unwrap());
        // ...and stays so while a batch cut from the read buffers is alive.
        let big = r.next_batch(5000, 2 << 20).unwrap();
        assert!(big.len() > 1000);
        assert!(
            r.batch_buf.try_reclaim(1000),
            "a batch with nothing copied keeps the copy buffer's memory alive"
        );
    }

    #[test]
    fn a_large_batch_is_cut_from_the_read_buffer_and_a_small_one_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let log = large_log(dir.path());
        let mut r = log.reader(1);
        // One record out of a 1 MiB read: copied, so it keeps no read buffer alive.
        let one = r.next_batch(1, 1 << 20).unwrap();
        let first = one.first().unwrap();
        assert_eq!(first.data, rec(0));
        assert!(
            !in_read_buffer(&r, first.data),
            "a one-record batch pins the read buffer"
        );
        // Two megabytes: cut from the read buffers, not copied.
        let big = r.next_batch(5000, 2 << 20).unwrap();
        assert!(big.len() > 1000);
        assert!(
            big.iter().any(|x| in_read_buffer(&r, x.data)),
            "a large batch was copied"
        );
        for x in big.iter().chain(&one) {
            assert_eq!(x.data[..], rec(x.seq as usize - 1)[..], "record {}", x.seq);
        }
    }
}
