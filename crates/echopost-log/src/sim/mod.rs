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
//! * a capacity ([`SimFs::set_capacity`]) makes it a device that fills up: a write or
//!   extension that needs a new block beyond it fails with `ENOSPC` and changes nothing
//!   (blocks of [`SIM_BLOCK_BYTES`], as ext4 and tmpfs allocate; overwriting allocated
//!   bytes, removing files and extending a file with `set_len` need no space: the new
//!   tail is sparse, reads as zeros and is allocated only when written);
//! * [`Fault`]s fail the N-th operation (counted over every call on the file system and
//!   its handles) with EIO or ENOSPC, once or from then on; a failed write may leave a
//!   prefix of its bytes behind, as a real short write does.
//!
//! Everything random comes from one [`SimRng`] seed, so a failing case replays exactly.
//! Handles opened before a crash fail with an error afterwards, like the file
//! descriptors of a killed process.
//!
//! # Files
//! [`SimFs`] and its controls (crash, kill, faults, inspection) are here; `file.rs` holds
//! a file's content and its handles, `namespace.rs` the directory entries, their durable
//! copy and locks (the [`FileSystem`] side), `fault.rs` the injected errors and `rng.rs`
//! the seeded generator. [`image`] turns a directory into one byte string and back (for
//! the `log_recovery` fuzz target).

mod fault;
mod file;
pub mod image;
mod namespace;
mod rng;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(doc)]
use crate::fs::FileSystem;

pub use fault::{Fault, FaultError};
use file::{Content, PendingOp, SimFile, apply, write_into};
pub use rng::SimRng;

#[derive(Debug, Clone)]
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
    capacity: Option<u64>,
    rng: SimRng,
}

/// Allocation unit of the simulated device, in bytes.
pub const SIM_BLOCK_BYTES: u64 = 4096;

fn blocks(len: usize) -> u64 {
    (len as u64).div_ceil(SIM_BLOCK_BYTES)
}

impl SimState {
    /// Blocks in use by the files that have a name.
    fn used_blocks(&self) -> u64 {
        let live: HashSet<u64> = self.entries.values().copied().collect();
        live.iter()
            .filter_map(|i| self.files.get(i))
            .map(|f| f.current.allocated_blocks())
            .sum()
    }

    /// Fails with `ENOSPC` if file `inode` would need more blocks than the capacity leaves
    /// (`after` gives its blocks after the operation; extending a file with `set_len`
    /// needs none: the new tail is sparse).
    fn check_space(&self, inode: u64, after: impl Fn(&Content) -> u64) -> io::Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let Some(file) = self.files.get(&inode) else {
            return Ok(());
        };
        let old = file.current.allocated_blocks();
        let new = after(&file.current);
        if new > old && (self.used_blocks() + new - old) * SIM_BLOCK_BYTES > cap {
            return Err(io::Error::from_raw_os_error(28));
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
                capacity: None,
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

    /// An independent copy of the whole file system as it is now (durable and unsynced
    /// content, faults, capacity), without its locks and with its randomness from `seed`:
    /// a test can run one prepared state many times, each differently torn. Handles
    /// opened on `self` keep using `self`.
    pub fn deep_clone(&self, seed: u64) -> SimFs {
        let mut st = self.lock().clone();
        st.locks.clear();
        st.rng = SimRng::new(seed);
        SimFs {
            state: Arc::new(Mutex::new(st)),
        }
    }

    /// Makes the device hold at most `bytes` (rounded down to whole blocks of
    /// [`SIM_BLOCK_BYTES`]), or with `None` unlimited. Writes and extensions that need
    /// more fail with `ENOSPC`; what is already stored stays. Survives crashes.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes in use, in whole blocks of [`SIM_BLOCK_BYTES`] (what [`SimFs::set_capacity`]
    /// counts against).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_blocks() * SIM_BLOCK_BYTES
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
        st.files.get(inode).map(|f| f.current.to_vec())
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
                durable: Content::from_bytes(content),
                current: Content::from_bytes(content),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, OpenMode};

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
