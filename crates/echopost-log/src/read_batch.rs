//! The records of one [`crate::Reader::next_batch`]: a few shared buffers and where each
//! record is in them.
//!
//! Why not a `Vec` of owned records: giving every record its own reference-counted handle
//! on the buffer it lies in costs two atomic operations per record (one to hand it out,
//! one to drop it) plus a 40-byte element to build and walk, which was about 30% of the
//! CPU time of a warm drain of 256-byte records (issue 17, `perf` of
//! `examples/drain.rs`, the shape `../shared/peers/run` drains with). A batch instead holds each buffer once; a caller that only looks at its
//! records (encodes them, checks them, writes them elsewhere) borrows them as
//! [`RecordRef`]s and pays nothing per record. A caller that keeps records takes them
//! out as [`StoredRecord`]s (`into_iter`), each a handle on its buffer, as before.
//!
//! Memory: a batch keeps alive the read buffers its records were cut from (at most twice
//! its own bytes: smaller batches are copied, see `reader.rs`) or the one buffer they were
//! copied into, plus 32 bytes per record, until it and every [`StoredRecord`] taken from
//! it are dropped.

use std::ops::Range;

use bytes::Bytes;

use crate::reader::StoredRecord;

/// A record of a [`ReadBatch`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its sequence number (from 1).
    pub seq: u64,
    /// The bytes that were appended, unchanged (decompressed if the log compresses).
    pub data: &'a [u8],
}

/// Where one record is: `range` of `buffers[buffer]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) buffer: usize,
    pub(crate) range: Range<usize>,
}

impl Entry {
    /// The record this entry places in `buffers`, borrowed.
    fn borrow<'a>(&self, buffers: &'a [Bytes]) -> RecordRef<'a> {
        RecordRef {
            seq: self.seq,
            data: &buffers[self.buffer][self.range.clone()],
        }
    }
}

/// The records returned by [`crate::Reader::next_batch`], in sequence order (consecutive
/// except across ranges `salvage` recorded as lost).
///
/// Borrow them with [`ReadBatch::iter`] (or `for r in &batch`), or take them as owned
/// [`StoredRecord`]s with `into_iter` (each keeps its buffer alive; see the module docs).
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    /// `buffers[0]` holds the records that were copied (empty if none were); the others
    /// are read buffers records were cut from.
    buffers: Vec<Bytes>,
    entries: Vec<Entry>,
}

impl ReadBatch {
    /// A batch of `entries` indexing `buffers` (the copy buffer first).
    pub(crate) fn new(buffers: Vec<Bytes>, entries: Vec<Entry>) -> Self {
        debug_assert!(entries.iter().all(|e| {
            buffers
                .get(e.buffer)
                .is_some_and(|b| e.range.end <= b.len())
        }));
        ReadBatch { buffers, entries }
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none: the reader had caught up with the durable end.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`-th record (0-based), if there is one.
    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.entries.get(i).map(|e| e.borrow(&self.buffers))
    }

    /// The first record, if any.
    pub fn first(&self) -> Option<RecordRef<'_>> {
        self.get(0)
    }

    /// The last record, if any.
    pub fn last(&self) -> Option<RecordRef<'_>> {
        self.entries.last().map(|e| e.borrow(&self.buffers))
    }

    /// Total bytes of the records' data.
    pub fn data_len(&self) -> usize {
        self.entries.iter().map(|e| e.range.len()).sum()
    }

    /// The records in order, borrowed.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            buffers: &self.buffers,
            entries: self.entries.iter(),
        }
    }

    /// The records as owned [`StoredRecord`]s (what `into_iter` yields, collected).
    pub fn into_records(self) -> Vec<StoredRecord> {
        self.into_iter().collect()
    }
}

/// Borrowing iterator over a [`ReadBatch`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    buffers: &'a [Bytes],
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        Some(self.entries.next()?.borrow(self.buffers))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        Some(self.entries.next_back()?.borrow(self.buffers))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a ReadBatch {
    type Item = RecordRef<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Owning iterator over a [`ReadBatch`]: each record a handle on its buffer.
#[derive(Debug)]
pub struct IntoIter {
    buffers: Vec<Bytes>,
    entries: std::vec::IntoIter<Entry>,
}

impl IntoIter {
    fn record(&self, e: Entry) -> StoredRecord {
        StoredRecord {
            seq: e.seq,
            data: self.buffers[e.buffer].slice(e.range),
        }
    }
}

impl Iterator for IntoIter {
    type Item = StoredRecord;

    fn next(&mut self) -> Option<StoredRecord> {
        let e = self.entries.next()?;
        Some(self.record(e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<StoredRecord> {
        let e = self.entries.next_back()?;
        Some(self.record(e))
    }
}

impl ExactSizeIterator for IntoIter {}

impl IntoIterator for ReadBatch {
    type Item = StoredRecord;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter {
            buffers: self.buffers,
            entries: self.entries.into_iter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> ReadBatch {
        let copied = Bytes::from_static(b"xyz");
        let lent = Bytes::from_static(b"hello world");
        ReadBatch::new(
            vec![copied, lent],
            vec![
                Entry {
                    seq: 7,
                    buffer: 1,
                    range: 0..5,
                },
                Entry {
                    seq: 8,
                    buffer: 0,
                    range: 1..3,
                },
                Entry {
                    seq: 9,
                    buffer: 1,
                    range: 6..11,
                },
            ],
        )
    }

    #[test]
    fn borrowed_and_owned_records_agree() {
        let b = batch();
        let want: [(u64, &[u8]); 3] = [(7, b"hello"), (8, b"yz"), (9, b"world")];
        let borrowed: Vec<(u64, &[u8])> = b.iter().map(|r| (r.seq, r.data)).collect();
        assert_eq!(borrowed, want);
        assert_eq!(b.len(), 3);
        assert_eq!(b.data_len(), 12);
        assert_eq!(b.first().map(|r| r.seq), Some(7));
        assert_eq!(b.last().map(|r| r.data), Some(&b"world"[..]));
        assert_eq!(b.get(1).map(|r| r.data), Some(&b"yz"[..]));
        assert_eq!(b.get(3), None);
        assert_eq!(b.iter().next_back().map(|r| r.seq), Some(9));
        let owned: Vec<(u64, Vec<u8>)> = b.into_iter().map(|r| (r.seq, r.data.to_vec())).collect();
        let want: Vec<(u64, Vec<u8>)> = want.iter().map(|(s, d)| (*s, d.to_vec())).collect();
        assert_eq!(owned, want);
    }

    #[test]
    fn an_empty_batch_is_empty() {
        let b = ReadBatch::default();
        assert!(b.is_empty());
        assert_eq!(b.first(), None);
        assert_eq!(b.iter().count(), 0);
        assert!(b.into_records().is_empty());
    }
}
