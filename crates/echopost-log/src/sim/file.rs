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

#[derive(Debug, Default, Clone)]
pub(super) struct SimFile {
    pub(super) durable: Vec<u8>,
    pub(super) current: Vec<u8>,
    pub(super) pending: Vec<PendingOp>,
}

pub(super) fn apply(buf: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => write_into(buf, *offset, data),
        PendingOp::SetLen(len) => buf.resize(usize_of(*len), 0),
    }
}

pub(super) fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize_of(offset);
    let end = start + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
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
        let start = usize_of(offset);
        if start >= file.current.len() {
            return Ok(0);
        }
        let n = buf.len().min(file.current.len() - start);
        buf[..n].copy_from_slice(&file.current[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut st = self.state()?;
        let end = usize_of(offset).saturating_add(buf.len());
        let new_len = st.file_mut(self.inode)?.current.len().max(end);
        st.check_space(self.inode, new_len)?;
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
        st.check_space(self.inode, usize_of(len))?;
        st.tick(OpKind::Mutate)?;
        let file = st.file_mut(self.inode)?;
        let op = PendingOp::SetLen(len);
        apply(&mut file.current, &op);
        file.pending.push(op);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut st = self.state()?;
        st.tick(OpKind::Read)?;
        Ok(st.file_mut(self.inode)?.current.len() as u64)
    }
}
