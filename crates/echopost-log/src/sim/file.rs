//! A simulated file: its durable content, its current content and the operations since
//! the last `sync_data` (what a crash may lose or tear), and the handles that read and
//! write it. A handle from before a crash fails, like a killed process's descriptor.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::FileHandle;

use super::SimState;
use super::fault::OpKind;

#[derive(Debug, Clone)]
pub(super) enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file's bytes: `data`, then zeros up to `len`. A file extended by `set_len` is sparse,
/// as on ext4, xfs or btrfs: its new tail reads as zeros and takes no block until it is
/// written, so pre-sizing a segment costs no space (issue 17). Writing past `data`
/// materialises (and allocates) everything up to the end of the write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Content {
    data: Vec<u8>,
    len: u64,
}

impl Content {
    pub(super) fn from_bytes(bytes: &[u8]) -> Content {
        Content {
            data: bytes.to_vec(),
            len: bytes.len() as u64,
        }
    }

    /// The logical length (what `stat` reports).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Blocks the content occupies on the device: the written part only.
    pub(super) fn allocated_blocks(&self) -> u64 {
        super::blocks(self.data.len())
    }

    /// Blocks the content would occupy after writing `len` bytes at `offset`.
    pub(super) fn blocks_after_write(&self, offset: u64, len: usize) -> u64 {
        super::blocks(self.data.len().max(usize_of(offset).saturating_add(len)))
    }

    /// Blocks the content would occupy after `set_len(len)` (extending allocates nothing).
    pub(super) fn blocks_after_set_len(&self, len: u64) -> u64 {
        super::blocks(self.data.len().min(usize_of(len)))
    }

    /// Copies the bytes at `offset` into `buf`; returns how many there were.
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> usize {
        if offset >= self.len {
            return 0;
        }
        let n = buf.len().min(usize_of(self.len - offset));
        let start = usize_of(offset);
        let from_data = self.data.len().saturating_sub(start).min(n);
        if from_data > 0 {
            buf[..from_data].copy_from_slice(&self.data[start..start + from_data]);
        }
        buf[from_data..n].fill(0);
        n
    }

    /// The whole content, sparse tail included.
    pub(super) fn to_vec(&self) -> Vec<u8> {
        let mut v = self.data.clone();
        v.resize(usize_of(self.len), 0);
        v
    }
}

pub(super) fn apply(content: &mut Content, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => write_into(content, *offset, data),
        PendingOp::SetLen(len) => {
            content.data.truncate(usize_of(*len));
            content.len = *len;
        }
    }
}

pub(super) fn write_into(content: &mut Content, offset: u64, data: &[u8]) {
    let start = usize_of(offset);
    let end = start + data.len();
    if content.data.len() < end {
        content.data.resize(end, 0);
    }
    content.data[start..end].copy_from_slice(data);
    content.len = content.len.max(end as u64);
}

#[derive(Debug, Default, Clone)]
pub(super) struct SimFile {
    pub(super) durable: Content,
    pub(super) current: Content,
    pub(super) pending: Vec<PendingOp>,
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[derive(Debug)]
pub(super) struct SimHandle {
    pub(super) fs: Arc<Mutex<SimState>>,
    pub(super) inode: u64,
    pub(super) generation: u64,
    pub(super) writable: bool,
}

impl SimHandle {
    fn state(&self) -> io::Result<MutexGuard<'_, SimState>> {
        let st = self.fs.lock().unwrap_or_else(|p| p.into_inner());
        if st.generation != self.generation {
            return Err(io::Error::other(
                "stale handle: the simulated machine crashed",
            ));
        }
        Ok(st)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }
}

impl FileHandle for SimHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.state()?;
        st.tick(OpKind::Read)?;
        let file = st.file_mut(self.inode)?;
        Ok(file.current.read_at(buf, offset))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state()?;
        st.check_space(self.inode, |c| c.blocks_after_write(offset, buf.len()))?;
        if let Err(e) = st.tick(OpKind::Mutate) {
            // A failing write may still have put a prefix of its bytes in the file.
            let cut = if buf.is_empty() {
                0
            } else {
                st.rng.below(buf.len() as u64) as usize
            };
            if cut > 0 {
                let op = PendingOp::Write {
                    offset,
                    data: buf[..cut].to_vec(),
                };
                let file = st.file_mut(self.inode)?;
                apply(&mut file.current, &op);
                file.pending.push(op);
            }
            return Err(e);
        }
        let op = PendingOp::Write {
            offset,
            data: buf.to_vec(),
        };
        let file = st.file_mut(self.inode)?;
        apply(&mut file.current, &op);
        file.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state()?;
        st.tick(OpKind::Mutate)?;
        let file = st.file_mut(self.inode)?;
        for op in std::mem::take(&mut file.pending) {
            apply(&mut file.durable, &op);
        }
        debug_assert_eq!(file.durable, file.current);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state()?;
        st.check_space(self.inode, |c| c.blocks_after_set_len(len))?;
        let op = PendingOp::SetLen(len);
        st.tick(OpKind::Mutate)?;
        let file = st.file_mut(self.inode)?;
        apply(&mut file.current, &op);
        file.pending.push(op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.state()?;
        st.tick(OpKind::Read)?;
        Ok(st.file_mut(self.inode)?.current.len())
    }
}
