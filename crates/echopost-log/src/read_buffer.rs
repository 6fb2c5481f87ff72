//! The read-ahead buffer of a [`crate::segment::FrameScanner`], which a reader can lend out.
//!
//! # Why
//! Draining a backlog is one `pread` per chunk, a CRC over it, and handing the records
//! out. Copying each batch out of the read buffer again cost as much as the checksum
//! (issue 17). A batch ([`crate::Reader::next_batch`]) can instead hold the buffer the
//! records were read into (and hand out reference-counted slices of it), if the buffer is
//! not overwritten while the batch or any record taken out of it lives.
//!
//! So the buffer is either owned (read into in place, as before) or lent (frozen, shared
//! with the records cut from it). Before the scanner reads again it takes the buffer back
//! if no record refers to it any more; otherwise it reads into another one: a retired
//! buffer whose records were all dropped meanwhile, or a new one. Retired buffers are
//! kept (at most [`MAX_RETIRED`]) so that a reader draining batch after batch reuses the
//! same memory instead of allocating (and zeroing) a megabyte per read.
//!
//! # Invariants
//! * Bytes of a lent buffer are never written: the scanner writes only into a buffer it
//!   owns, which it has back only once no `Bytes` refers to it (`Bytes::try_into_mut`).
//! * Memory: the buffer in use (1 MiB, or one frame if larger, and only until a smaller
//!   one will do), plus at most [`MAX_RETIRED`] retired buffers of at most
//!   [`RETIRED_MAX_LEN`] bytes each while their records are alive (and after, for
//!   reuse). Buffers are allocated at the size read into them (`refill`), not doubled.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Most retired buffers kept for reuse: enough for a drain of 4 MiB batches over 1 MiB
/// reads (a batch touches up to six buffers: four full ones and parts of two more). A
/// reader of smaller batches retires (and keeps) only as many as one of its batches
/// touches.
const MAX_RETIRED: usize = 6;

/// Buffers larger than this (grown for one large frame) are not kept for reuse.
const RETIRED_MAX_LEN: usize = 2 << 20;

/// A read buffer: `len()` bytes, all initialized (their content may be stale).
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    /// The buffer while the scanner owns it (empty while lent).
    own: BytesMut,
    /// The buffer while lent: records may hold slices of it.
    lent: Option<Bytes>,
    /// Earlier buffers some record may still refer to, kept for reuse once none does.
    retired: Vec<Bytes>,
}

impl ReadBuffer {
    /// The buffer's bytes (including stale ones past what the scanner read).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.lent {
            Some(b) => b,
            None => &self.own,
        }
    }

    /// A shared handle on the whole buffer, to cut records from. The buffer stays lent
    /// (read-only) until the next [`ReadBuffer::writable`].
    pub(crate) fn lend(&mut self) -> Bytes {
        match &self.lent {
            Some(b) => b.clone(),
            None => {
                let b = std::mem::take(&mut self.own).freeze();
                self.lent = Some(b.clone());
                b
            }
        }
    }

    /// Whether the buffer is lent (records may refer to it).
    #[cfg(test)]
    pub(crate) fn is_lent(&self) -> bool {
        self.lent.is_some()
    }

    /// The buffer, writable, holding what was at `keep` at its start and `min_len` bytes
    /// or more in all. An owned buffer is used in place; a lent one is taken back if
    /// nothing refers to it any more, otherwise `keep` is copied into a retired buffer
    /// nothing refers to any more, or into a new one. A buffer grown for one large frame
    /// is let go once a smaller one will do, so it is not kept for the reader's life.
    pub(crate) fn writable(&mut self, keep: Range<usize>, min_len: usize) -> &mut [u8] {
        if let Some(lent) = self.lent.take() {
            match lent.try_into_mut() {
                Ok(own) => self.own = own,
                Err(lent) => {
                    let fresh = self
                        .take_retired()
                        .filter(|b| fits(b.len(), min_len))
                        .unwrap_or_default();
                    self.own = refill(fresh, &lent[keep], min_len);
                    if self.retired.len() < MAX_RETIRED && lent.len() <= RETIRED_MAX_LEN {
                        self.retired.push(lent);
                    }
                    return &mut self.own;
                }
            }
        }
        if fits(self.own.len(), min_len) {
            self.own.copy_within(keep, 0);
        } else {
            let own = std::mem::take(&mut self.own);
            self.own = refill(BytesMut::new(), &own[keep], min_len);
        }
        &mut self.own
    }

    /// A retired buffer no record refers to any more, if there is one.
    fn take_retired(&mut self) -> Option<BytesMut> {
        let i = self.retired.iter().position(Bytes::is_unique)?;
        self.retired.swap_remove(i).try_into_mut().ok()
    }
}

/// Whether a buffer of `len` bytes serves a read of `min_len`: large enough, and not one
/// grown for a large frame when a standard one will do.
fn fits(len: usize, min_len: usize) -> bool {
    len >= min_len && (len <= RETIRED_MAX_LEN || min_len > RETIRED_MAX_LEN)
}

/// `buf` (stale content, reused when it fits) holding `kept` at its start and `min_len`
/// bytes in all; a new one is allocated at exactly that size, so that what a reader
/// keeps is what it reads.
fn refill(mut buf: BytesMut, kept: &[u8], min_len: usize) -> BytesMut {
    let len = min_len.max(kept.len());
    if !fits(buf.len(), len) {
        buf = BytesMut::with_capacity(len);
        buf.extend_from_slice(kept);
        buf.resize(len, 0);
    } else {
        buf[..kept.len()].copy_from_slice(kept);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_buffer_is_written_in_place_keeping_the_tail() {
        let mut b = ReadBuffer::default();
        b.writable(0..0, 8).copy_from_slice(b"abcdefgh");
        let w = b.writable(6..8, 8);
        assert_eq!(&w[..2], b"gh");
        assert_eq!(w.len(), 8);
    }

    #[test]
    fn a_lent_buffer_is_never_written_while_a_record_refers_to_it() {
        let mut b = ReadBuffer::default();
        b.writable(0..0, 8).copy_from_slice(b"abcdefgh");
        let rec = b.lend().slice(2..4);
        assert!(b.is_lent());
        let w = b.writable(4..8, 8);
        assert_eq!(&w[..4], b"efgh");
        w.fill(b'x');
        assert_eq!(&rec[..], b"cd", "a lent record was overwritten");
        assert_eq!(b.retired.len(), 1);
    }

    #[test]
    fn a_lent_buffer_is_taken_back_once_its_records_are_dropped() {
        let mut b = ReadBuffer::default();
        b.writable(0..0, 8).copy_from_slice(b"abcdefgh");
        let ptr = b.bytes().as_ptr();
        let rec = b.lend().slice(0..2);
        drop(rec);
        let w = b.writable(0..0, 8);
        assert_eq!(w.as_ptr(), ptr, "the same memory is reused");
        assert!(b.retired.is_empty());
    }

    #[test]
    fn a_retired_buffer_is_reused_once_its_records_are_dropped() {
        let mut b = ReadBuffer::default();
        b.writable(0..0, 8).copy_from_slice(b"abcdefgh");
        let first = b.bytes().as_ptr();
        let r1 = b.lend().slice(0..1);
        b.writable(0..0, 8); // r1 alive: a new buffer
        let r2 = b.lend().slice(0..1);
        drop(r1);
        let w = b.writable(0..0, 8); // r2 alive: the first buffer, retired, is free again
        assert_eq!(w.as_ptr(), first);
        drop(r2);
    }

    #[test]
    fn a_buffer_grown_for_a_large_frame_is_let_go_once_a_standard_one_will_do() {
        let mut b = ReadBuffer::default();
        assert_eq!(b.writable(0..0, 5 << 20).len(), 5 << 20);
        let w = b.writable(0..0, 1 << 20);
        assert_eq!(w.len(), 1 << 20);
        assert_eq!(b.own.capacity(), 1 << 20, "allocated at the size read");
    }
}
