//! The file-system seam.
//!
//! Every byte the engine reads or writes goes through [`FileSystem`] and [`FileHandle`].
//! There are two implementations: [`RealFs`] (the operating system) and
//! [`crate::sim::SimFs`], an in-memory file system that can crash, tear writes and fail
//! chosen operations deterministically. Keeping the seam this small (positional reads and
//! writes, `fdatasync`, truncate, rename, directory sync, lock) is what makes the simulated
//! one faithful: the engine cannot depend on anything the simulation does not model.
//!
//! Durability contract the engine relies on (and the simulation enforces):
//! * data written to a file is durable only after [`FileHandle::sync_data`] returns Ok;
//! * creating, renaming or removing a file is durable only after [`FileSystem::sync_dir`]
//!   on its directory returns Ok.

use std::fmt::Debug;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// How [`FileSystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// A new file; fails with `AlreadyExists` if it exists.
    // Only tests ask for this; the engine creates with `CreateTruncate`.
    #[cfg(any(test, feature = "sim"))]
    CreateNew,
    /// Create or truncate to zero length.
    CreateTruncate,
}

/// A file opened through a [`FileSystem`]. All access is positional, so a handle can be
/// shared between the writer, the syncing thread and readers without a seek position.
pub trait FileHandle: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`. On error a prefix may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`; `F_FULLFSYNC` on macOS).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the file has no bytes.
    // Only for users of the seam, which is public with `sim` only; the engine uses `len`.
    #[cfg(any(test, feature = "sim"))]
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Proof that a directory lock is held; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// The operations the engine performs on directories and files.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates `path` and its parents if missing.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `path`.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals inside the directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file at `path` (created if missing). Returns `None`
    /// when another holder has it; never blocks.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` at end of file.
pub fn read_exact_at(file: &dyn FileHandle, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl FileHandle for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(&self.0, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        // std maps this to fdatasync on Linux and to fcntl(F_FULLFSYNC) on macOS, where
        // plain fsync does not reach stable storage.
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code)] File);
impl LockGuard for RealLock {}

impl FileSystem for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Private, like every file in it (0600): records are the application's data
        // (issue 13). An existing directory keeps its mode.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            #[cfg(any(test, feature = "sim"))]
            OpenMode::CreateNew => o.read(true).write(true).create_new(true).mode(0o600),
            OpenMode::CreateTruncate => o
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600),
        };
        Ok(Arc::new(RealFile(o.open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(RealLock(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let first = RealFs.try_lock(&path).unwrap();
        assert!(first.is_some());
        assert!(RealFs.try_lock(&path).unwrap().is_none());
        drop(first);
        assert!(RealFs.try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn read_exact_at_reports_eof() {
        let dir = tempfile::tempdir().unwrap();
        let f = RealFs
            .open(&dir.path().join("f"), OpenMode::CreateNew)
            .unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        let mut buf = [0u8; 5];
        read_exact_at(&*f, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        let err = read_exact_at(&*f, &mut buf, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
