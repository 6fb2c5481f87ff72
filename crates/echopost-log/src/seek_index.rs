//! Where frames start inside segments, sampled: a reader that starts at sequence `s` (a
//! `Status` looking up the oldest record, a `Read` or `Peek` at a position, the replayer
//! after a restart of its reader) begins scanning at the nearest known frame before `s`
//! instead of at the segment's first frame.
//!
//! Without it, opening a reader in the middle of a 64 MiB segment read and checksummed
//! everything before its position: a daemon polled for its status while replaying spent a
//! sixth of its CPU re-reading frames it had already delivered (issue 16's profile).
//!
//! The index lives in memory only and starts empty at [`crate::Log::open`], so open time
//! still does not depend on the backlog. It is filled by the two parties that learn where a
//! frame starts for free: the writer (every frame it writes) and readers (every frame they
//! check on their way). A mark is only ever added for a frame that was written whole (the
//! writer, after its `write` succeeded) or that passed its checksum and sequence checks (a
//! reader), and marks are dropped with their segment. A reader starting at a mark still
//! checks every frame from there on exactly as from the segment's start.
//!
//! Memory: at most about two marks per [`MARK_SPACING`] of segment (16 bytes each), i.e.
//! about 2 KiB for a full 64 MiB segment.

use std::collections::BTreeMap;

/// Least distance in bytes between a mark and the one before it: how far at most a reader
/// scans before the frame it wants (plus that frame's own length).
pub(crate) const MARK_SPACING: u64 = 1 << 20;

/// A frame start: the first sequence the frame carries and its byte offset in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub seq: u64,
    pub offset: u64,
}

/// Sampled frame starts of every segment still on disk, keyed by the segment's first
/// sequence. Marks within a segment are sorted by offset, hence also by sequence.
#[derive(Debug, Default)]
pub(crate) struct SeekIndex {
    segments: BTreeMap<u64, Vec<Mark>>,
}

impl SeekIndex {
    /// Notes that a frame starting with `seq` begins at `offset` in the segment whose first
    /// sequence is `segment`. Kept only if it lies at least [`MARK_SPACING`] past the
    /// nearest mark before it.
    pub(crate) fn note(&mut self, segment: u64, seq: u64, offset: u64) {
        let marks = self.segments.entry(segment).or_default();
        let at = marks.partition_point(|m| m.offset <= offset);
        if let Some(before) = at.checked_sub(1).map(|i| marks[i])
            && offset < before.offset + MARK_SPACING
        {
            return;
        }
        marks.insert(at, Mark { seq, offset });
    }

    /// The last mark in `segment` at or before sequence `seq`: where a reader that wants
    /// `seq` can start scanning.
    pub(crate) fn find(&self, segment: u64, seq: u64) -> Option<Mark> {
        let marks = self.segments.get(&segment)?;
        let at = marks.partition_point(|m| m.seq <= seq);
        at.checked_sub(1).map(|i| marks[i])
    }

    /// Drops the marks of every segment whose first sequence is below `first_kept` (they
    /// were deleted).
    pub(crate) fn forget_before(&mut self, first_kept: u64) {
        self.segments = self.segments.split_off(&first_kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_mark_at_or_before_a_sequence() {
        let mut ix = SeekIndex::default();
        assert_eq!(ix.find(1, 5), None);
        ix.note(1, 1, 32);
        ix.note(1, 100, 32 + MARK_SPACING);
        ix.note(1, 200, 32 + 2 * MARK_SPACING);
        assert_eq!(ix.find(1, 1), Some(Mark { seq: 1, offset: 32 }));
        assert_eq!(ix.find(1, 99), Some(Mark { seq: 1, offset: 32 }));
        assert_eq!(
            ix.find(1, 150),
            Some(Mark {
                seq: 100,
                offset: 32 + MARK_SPACING
            })
        );
        assert_eq!(ix.find(1, 10_000).map(|m| m.seq), Some(200));
        assert_eq!(ix.find(2, 150), None, "another segment has no marks");
    }

    #[test]
    fn keeps_marks_spaced_and_sorted_whatever_the_order_they_come_in() {
        let mut ix = SeekIndex::default();
        // A writer marks the end of a segment, then a reader scanning from its start
        // notes earlier frames.
        ix.note(1, 10_000, 10 * MARK_SPACING);
        for i in 0..20u64 {
            ix.note(1, 1 + i * 50, 32 + i * (MARK_SPACING / 2));
        }
        let marks = &ix.segments[&1];
        assert!(
            marks
                .windows(2)
                .all(|w| w[0].offset < w[1].offset && w[0].seq < w[1].seq)
        );
        assert!(
            marks
                .windows(2)
                .all(|w| w[1].offset >= w[0].offset + MARK_SPACING / 2),
            "{marks:?}"
        );
        assert!(marks.len() <= 12, "{} marks for 10 MiB", marks.len());
    }

    #[test]
    fn forgets_deleted_segments() {
        let mut ix = SeekIndex::default();
        for seg in [1, 1000, 2000] {
            ix.note(seg, seg, 32);
        }
        ix.forget_before(2000);
        assert_eq!(ix.find(1, 5), None);
        assert_eq!(ix.find(1000, 1500), None);
        assert_eq!(ix.find(2000, 2500).map(|m| m.seq), Some(2000));
    }
}
