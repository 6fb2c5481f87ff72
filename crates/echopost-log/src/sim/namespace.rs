//! The directory side of [`SimFs`]: entries (path to file), their durable copy that only
//! `sync_dir` updates (a create, rename or remove without it is undone by a crash), and
//! the exclusive locks a crash or kill releases.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::fs::{FileHandle, FileSystem, LockGuard, OpenMode};

use super::fault::OpKind;
use super::file::{PendingOp, SimFile, SimHandle, apply};
use super::{SimFs, SimState};

#[derive(Debug)]
struct SimLock {
    fs: Arc<Mutex<SimState>>,
    path: PathBuf,
    generation: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock().unwrap_or_else(|p| p.into_inner());
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.tick(OpKind::Mutate)?;
        for anc in path.ancestors() {
            st.dirs.insert(anc.to_owned());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        st.tick(OpKind::Read)?;
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(st
            .entries
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut st = self.lock();
        let kind = if mode == OpenMode::Read {
            OpKind::Read
        } else {
            OpKind::Mutate
        };
        st.tick(kind)?;
        let parent_exists = path.parent().is_some_and(|p| st.dirs.contains(p));
        let existing = st.entries.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, Some(i)) => i,
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: already exists", path.display()),
                ));
            }
            (OpenMode::CreateTruncate, Some(i)) => {
                let file = st.file_mut(i)?;
                let op = PendingOp::SetLen(0);
                apply(&mut file.current, &op);
                file.pending.push(op);
                i
            }
            (OpenMode::CreateNew | OpenMode::CreateTruncate, None) => {
                if !parent_exists {
                    return Err(not_found(path));
                }
                let i = st.next_inode;
                st.next_inode += 1;
                st.files.insert(i, SimFile::default());
                st.entries.insert(path.to_owned(), i);
                i
            }
        };
        Ok(Arc::new(SimHandle {
            fs: Arc::clone(&self.state),
            inode,
            generation: st.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.tick(OpKind::Mutate)?;
        st.entries
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.tick(OpKind::Mutate)?;
        let inode = st.entries.remove(from).ok_or_else(|| not_found(from))?;
        st.entries.insert(to.to_owned(), inode);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.tick(OpKind::Mutate)?;
        let st = &mut *st;
        st.durable_entries.retain(|p, _| p.parent() != Some(path));
        for (p, i) in &st.entries {
            if p.parent() == Some(path) {
                st.durable_entries.insert(p.clone(), *i);
            }
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut st = self.lock();
        st.tick(OpKind::Mutate)?;
        if st.locks.contains(path) {
            return Ok(None);
        }
        st.locks.insert(path.to_owned());
        Ok(Some(Box::new(SimLock {
            fs: Arc::clone(&self.state),
            path: path.to_owned(),
            generation: st.generation,
        })))
    }
}
