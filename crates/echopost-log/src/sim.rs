//! An in-memory file system that crashes, tears writes and fails on cue.
//!
//! [`SimFs`] implements [`FileSystem`] with the *weakest* durability a POSIX file system
//! may legally offer, so that a bug in the engine's ordering of writes, syncs and renames
//! shows up as lost data in a test instead of in production:
//!
//! * every file keeps its durable content and the list of operations since its last
//!   `sync_data`; [`SimFs::crash`] throws the unsynced operations away, or (with torn
//!   writes enabled) keeps a seeded-random prefix of them, cutting the last kept write
//!   at a random byte;
//! * the directory namespace has a durable copy too, updated only by `sync_dir`: a file
//!   created, renamed or removed without a directory sync is back to its old state after
//!   a crash;
//! * [`Fault`]s fail the N-th operation (counted over every call on the file system and
//!   its handles) with EIO or ENOSPC, once or from then on; a failed write may leave a
//!   prefix of its bytes behind, as a real short write does.
//!
//! Everything random comes from one [`SimRng`] seed, so a failing case replays exactly.
//! Handles opened before a crash fail with an error afterwards, like the file
//! descriptors of a killed process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileHandle, FileSystem, LockGuard, OpenMode};

/// A small, fast, seedable generator (SplitMix64). Deterministic on every platform, so a
/// seed printed by a failing test reproduces the same run anywhere.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n` must be non-zero).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Which error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: no space left on the device.
    Enospc,
}

impl FaultError {
    fn to_io(self) -> io::Error {
        match self {
            FaultError::Eio => io::Error::from_raw_os_error(5),
            FaultError::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// Fail the operation with index `at_op` (0-based, see [`SimFs::op_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Index of the first failing operation.
    pub at_op: u64,
    /// The error returned.
    pub error: FaultError,
    /// If true, every *mutating* operation from `at_op` on fails too (a dead or full
    /// device); reads keep working. If false only operation `at_op` fails.
    pub persistent: bool,
}

#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<PendingOp>,
}

fn apply(buf: &mut Vec<u8>, op: &PendingOp) {
    match op {
        PendingOp::Write { offset, data } => write_into(buf, *offset, data),
        PendingOp::SetLen(len) => buf.resize(usize_of(*len), 0),
    }
}

fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
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
struct SimState {
    generation: u64,
    next_inode: u64,
    files: HashMap<u64, SimFile>,
    dirs: HashSet<PathBuf>,
    entries: BTreeMap<PathBuf, u64>,
    durable_entries: BTreeMap<PathBuf, u64>,
    locks: HashSet<PathBuf>,
    op_count: u64,
    fault: Option<Fault>,
    faults_hit: u64,
    rng: SimRng,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Mutate,
}

impl SimState {
    /// Counts the operation and decides whether it fails.
    fn tick(&mut self, kind: OpKind) -> io::Result<()> {
        let idx = self.op_count;
        self.op_count += 1;
        if let Some(f) = self.fault {
            let hit = if f.persistent {
                idx >= f.at_op && (idx == f.at_op || kind == OpKind::Mutate)
            } else {
                idx == f.at_op
            };
            if hit {
                self.faults_hit += 1;
                return Err(f.error.to_io());
            }
        }
        Ok(())
    }

    fn file_mut(&mut self, inode: u64) -> io::Result<&mut SimFile> {
        self.files
            .get_mut(&inode)
            .ok_or_else(|| io::Error::other("simulated file vanished"))
    }
}

/// The simulated file system. Cloning gives another handle on the same state.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

impl SimFs {
    /// An empty file system whose randomness (torn writes, partial failed writes) comes
    /// from `seed`.
    pub fn new(seed: u64) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(SimState {
                generation: 0,
                next_inode: 1,
                files: HashMap::new(),
                dirs: HashSet::from([PathBuf::from("/")]),
                entries: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
                locks: HashSet::new(),
                op_count: 0,
                fault: None,
                faults_hit: 0,
                rng: SimRng::new(seed),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding this lock can only come from a bug in a test; the state
        // is still consistent enough to keep using, so recover from poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of operations performed so far (the index the next one will get).
    pub fn op_count(&self) -> u64 {
        self.lock().op_count
    }

    /// How many operations an injected fault has failed.
    pub fn faults_hit(&self) -> u64 {
        self.lock().faults_hit
    }

    /// Installs (or with `None`, removes) the fault.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    /// Simulates power loss: everything not made durable is lost. With `torn`, each file
    /// may keep a random prefix of its unsynced operations, the last one cut at a random
    /// byte. Open handles become stale, locks are released and the fault is cleared.
    pub fn crash(&self, torn: bool) {
        let mut st = self.lock();
        let st = &mut *st;
        st.generation += 1;
        st.locks.clear();
        st.fault = None;
        st.entries = st.durable_entries.clone();
        let live: HashSet<u64> = st.entries.values().copied().collect();
        st.files.retain(|inode, _| live.contains(inode));
        let mut inodes: Vec<u64> = st.files.keys().copied().collect();
        inodes.sort_unstable(); // HashMap order is random; the rng draws must not be.
        for inode in inodes {
            let Some(file) = st.files.get_mut(&inode) else {
                continue;
            };
            let mut content = std::mem::take(&mut file.durable);
            if torn && !file.pending.is_empty() {
                let keep = st.rng.below(file.pending.len() as u64 + 1) as usize;
                for op in &file.pending[..keep] {
                    apply(&mut content, op);
                }
                if let Some(PendingOp::Write { offset, data }) = file.pending.get(keep)
                    && !data.is_empty()
                {
                    let cut = st.rng.below(data.len() as u64) as usize;
                    write_into(&mut content, *offset, &data[..cut]);
                }
            }
            file.current = content.clone();
            file.durable = content;
            file.pending.clear();
        }
    }

    /// Simulates a process crash (kill -9): the process's handles and locks go away but
    /// everything written reaches the disk, as the OS page cache survives.
    pub fn kill_process(&self) {
        let mut st = self.lock();
        st.generation += 1;
        st.locks.clear();
        st.fault = None;
    }

    /// The current content of a file, if it exists (for tests that inspect or damage it).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let inode = st.entries.get(path)?;
        st.files.get(inode).map(|f| f.current.clone())
    }

    /// Replaces a file's content durably, bypassing fault injection (for corruption tests).
    pub fn write_file(&self, path: &Path, content: &[u8]) {
        let mut st = self.lock();
        let st = &mut *st;
        let inode = match st.entries.get(path) {
            Some(i) => *i,
            None => {
                let i = st.next_inode;
                st.next_inode += 1;
                st.entries.insert(path.to_owned(), i);
                st.durable_entries.insert(path.to_owned(), i);
                i
            }
        };
        st.files.insert(
            inode,
            SimFile {
                durable: content.to_vec(),
                current: content.to_vec(),
                pending: Vec::new(),
            },
        );
    }

    /// Removes a file durably, bypassing fault injection (for corruption tests).
    pub fn delete_file(&self, path: &Path) -> bool {
        let mut st = self.lock();
        let a = st.entries.remove(path).is_some();
        let b = st.durable_entries.remove(path).is_some();
        a || b
    }

    /// Paths of all files that currently exist.
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().entries.keys().cloned().collect()
    }
}

#[derive(Debug)]
struct SimHandle {
    fs: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
    writable: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    #[test]
    fn unsynced_data_and_unsynced_create_are_lost_on_crash() {
        let fs = SimFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let a = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap();
        a.write_all_at(b"durable", 0).unwrap();
        a.sync_data().unwrap();
        fs.sync_dir(&dir()).unwrap();
        a.write_all_at(b"-lost", 7).unwrap();
        let b = fs.open(&dir().join("b"), OpenMode::CreateNew).unwrap();
        b.write_all_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, but the directory entry is not
        fs.crash(false);
        assert_eq!(fs.read_file(&dir().join("a")).unwrap(), b"durable");
        assert!(fs.read_file(&dir().join("b")).is_none());
        assert!(a.write_all_at(b"z", 0).is_err(), "stale handle must fail");
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_unsynced_writes() {
        let mut saw_partial = false;
        for seed in 0..64 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let a = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(&dir()).unwrap();
            a.write_all_at(b"0123456789", 0).unwrap();
            fs.crash(true);
            let got = fs.read_file(&dir().join("a")).unwrap();
            assert!(b"0123456789".starts_with(&got), "not a prefix: {got:?}");
            saw_partial |= !got.is_empty() && got.len() < 10;
        }
        assert!(saw_partial);
    }

    #[test]
    fn faults_fire_at_the_chosen_operation() {
        let fs = SimFs::new(7);
        fs.create_dir_all(&dir()).unwrap(); // op 0
        let a = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap(); // op 1
        fs.set_fault(Some(Fault {
            at_op: 3,
            error: FaultError::Enospc,
            persistent: false,
        }));
        a.write_all_at(b"ok", 0).unwrap(); // op 2
        let err = a.write_all_at(b"full", 2).unwrap_err(); // op 3
        assert_eq!(err.raw_os_error(), Some(28));
        a.write_all_at(b"ok", 2).unwrap(); // op 4: a one-shot fault is gone
        fs.set_fault(Some(Fault {
            at_op: 5,
            error: FaultError::Eio,
            persistent: true,
        }));
        assert!(a.sync_data().is_err());
        let mut buf = [0u8; 2];
        assert_eq!(a.read_at(&mut buf, 0).unwrap(), 2, "reads survive");
        assert!(a.sync_data().is_err(), "persistent fault keeps failing");
        assert_eq!(fs.faults_hit(), 3);
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let fs = SimFs::new(3);
        fs.create_dir_all(&dir()).unwrap();
        fs.write_file(&dir().join("old"), b"1");
        fs.rename(&dir().join("old"), &dir().join("new")).unwrap();
        fs.crash(false);
        assert!(fs.read_file(&dir().join("old")).is_some());
        fs.rename(&dir().join("old"), &dir().join("new")).unwrap();
        fs.sync_dir(&dir()).unwrap();
        fs.crash(false);
        assert!(fs.read_file(&dir().join("new")).is_some());
        assert!(fs.read_file(&dir().join("old")).is_none());
    }

    #[test]
    fn locks_are_exclusive_until_dropped_or_crash() {
        let fs = SimFs::new(0);
        fs.create_dir_all(&dir()).unwrap();
        let g = fs.try_lock(&dir().join("LOCK")).unwrap();
        assert!(g.is_some());
        assert!(fs.try_lock(&dir().join("LOCK")).unwrap().is_none());
        fs.crash(false);
        assert!(fs.try_lock(&dir().join("LOCK")).unwrap().is_some());
    }
}
