//! The acknowledgement cursor: the highest sequence known to be delivered.
//!
//! It is the checkpoint in checkpoint-then-truncate: the cursor is made durable *before*
//! any segment it covers is deleted, so after any crash the segments on disk always hold
//! every record after the cursor.
//!
//! # Updated in place, so that a full disk can still be drained (issue 13)
//! Replacing the file on every acknowledgement (write a temporary file, rename it over)
//! needs a free block: on a full disk the cursor could never move, nothing delivered
//! could ever be deleted, and every restart re-sent the same records. The cursor is
//! therefore a small file written once and then overwritten in place: two checksummed
//! slots in separate 512-byte sectors, written alternately. An update writes the slot
//! that does *not* hold the current value and `fdatasync`s it; a torn write can only
//! damage that slot, and the other still holds the previous value. Overwriting bytes a
//! file already has allocates nothing on ext4, XFS or tmpfs (copy-on-write file systems
//! such as btrfs may still need a block: stated in docs/failure-model.md).
//!
//! The cursor only grows, so the current value is the largest valid slot; no generation
//! counter is needed. A new file holds the same value in both slots, so every slot of a
//! current-format file is valid unless a crash tore its update or the file was damaged.
//!
//! # A reserve for the one step that needs a block
//! Deleting a fully delivered *active* segment needs its successor created first (a new
//! file, a block). When the whole backlog fits one segment, a full disk could never give
//! it back. So the cursor file is created [`CURSOR_RESERVE_LEN`] long, its tail written
//! (allocated); when that roll hits `ENOSPC`, the tail is truncated away
//! ([`CursorFile::release_reserve`]), which frees enough for the roll, and the next open
//! writes it again when there is room.
//!
//! ```text
//! file (at least CURSOR_FILE_LEN = 1024 bytes; created CURSOR_RESERVE_LEN = 64 KiB)
//!   0    slot 0 (32 bytes)
//!   512  slot 1 (32 bytes)
//!   everything else zero (from 1024 on: the reserve)
//!
//! slot
//! offset size field
//!  0      8   magic       b"ECHOPCUR"
//!  8      4   version     1, u32 LE
//! 12      4   reserved    0
//! 16      8   acked       u64 LE
//! 24      4   reserved    0
//! 28      4   crc         crc32c of bytes 0..28
//! ```
//!
//! Backward compatibility: earlier versions kept the cursor as one 32-byte slot in a file
//! of exactly 32 bytes, replaced through `cursor.tmp`. Such a file reads as slot 0 alone;
//! [`CursorFile::open`] migrates it in place (the file is extended to 1024 bytes, which
//! stays inside its first, already allocated block, and slot 1 is written).
//!
//! An unreadable cursor (missing, empty, no valid slot) is not data corruption: it only
//! says which records may be skipped. Recovery then starts from the oldest segment on
//! disk (at-least-once allows re-delivery; see `recovery.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crc::crc32c;
use crate::error::{CorruptionKind, Error, Result};
use crate::fs::{FileHandle, FileSystem, OpenMode, read_exact_at};

/// File name of the cursor inside the log directory.
pub const CURSOR_FILE: &str = "cursor";
/// File name a new cursor is created under before it is renamed into place; a stale one
/// is removed at open.
pub const CURSOR_TMP_FILE: &str = "cursor.tmp";
/// Length of one slot, and of a whole cursor file in the earlier, single-slot format.
pub const CURSOR_SLOT_LEN: usize = 32;
/// Least length of a cursor file in the current format (the slots).
pub const CURSOR_FILE_LEN: u64 = 1024;
/// Length a cursor file is created with: the slots plus the reserve.
pub const CURSOR_RESERVE_LEN: u64 = 64 << 10;
/// Byte offsets of the two slots (separate 512-byte sectors).
pub const CURSOR_SLOT_OFFSETS: [u64; 2] = [0, 512];
const CURSOR_MAGIC: [u8; 8] = *b"ECHOPCUR";
const CURSOR_VERSION: u32 = 1;

/// Path of the cursor in `dir`.
pub fn cursor_path(dir: &Path) -> PathBuf {
    dir.join(CURSOR_FILE)
}

/// One slot's bytes holding `acked`.
pub fn encode_slot(acked: u64) -> [u8; CURSOR_SLOT_LEN] {
    let mut b = [0u8; CURSOR_SLOT_LEN];
    b[0..8].copy_from_slice(&CURSOR_MAGIC);
    b[8..12].copy_from_slice(&CURSOR_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes one slot; the error is the offset inside the slot and the reason.
fn decode_slot(b: &[u8; CURSOR_SLOT_LEN]) -> Result<u64, (u64, CorruptionKind)> {
    if b[0..8] != CURSOR_MAGIC {
        return Err((0, CorruptionKind::BadMagic));
    }
    let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    let computed = crc32c(&b[..28]);
    if stored != computed {
        return Err((28, CorruptionKind::ChecksumMismatch { stored, computed }));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != CURSOR_VERSION {
        return Err((8, CorruptionKind::UnknownVersion(version)));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[16..24]);
    let acked = u64::from_le_bytes(a);
    if acked >= crate::frame::MAX_SEQ {
        return Err((16, CorruptionKind::InvalidHeader("sequence out of range")));
    }
    Ok(acked)
}

/// A slot that does not hold a valid value: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSlot {
    /// Byte offset in the cursor file where the damage was found.
    pub offset: u64,
    /// Why the slot is not valid.
    pub kind: CorruptionKind,
}

/// What the cursor file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorRead {
    /// No cursor file.
    Absent,
    /// At least one valid slot.
    Valid {
        /// The largest valid slot's value.
        acked: u64,
        /// The slot holding it (0 or 1).
        slot: usize,
        /// The file is in the earlier single-slot format (32 bytes).
        legacy: bool,
        /// A slot that is not valid, if any (torn by a crash, or damaged). The value may
        /// then be older than the one segment deletions were based on.
        damaged: Option<DamagedSlot>,
    },
    /// The file exists but holds no valid slot: the first damage found.
    Unreadable(DamagedSlot),
}

/// Reads and classifies the cursor file in `dir`.
///
/// # Errors
/// [`Error::Io`] if the file exists but cannot be opened or read.
pub fn inspect_cursor(fs: &dyn FileSystem, dir: &Path) -> Result<CursorRead> {
    let path = cursor_path(dir);
    let file = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CursorRead::Absent),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let legacy = len == CURSOR_SLOT_LEN as u64;
    if !legacy && !(CURSOR_FILE_LEN..=CURSOR_RESERVE_LEN).contains(&len) {
        return Ok(CursorRead::Unreadable(DamagedSlot {
            offset: 0,
            kind: CorruptionKind::Truncated {
                needed: CURSOR_FILE_LEN,
                available: len,
            },
        }));
    }
    let slots: &[u64] = if legacy {
        &CURSOR_SLOT_OFFSETS[..1]
    } else {
        &CURSOR_SLOT_OFFSETS
    };
    let mut best: Option<(u64, usize)> = None;
    let mut damaged = None;
    for (i, &at) in slots.iter().enumerate() {
        let mut b = [0u8; CURSOR_SLOT_LEN];
        read_exact_at(&*file, &mut b, at).map_err(|e| Error::io("read", &path, e))?;
        match decode_slot(&b) {
            Ok(acked) => {
                if best.is_none_or(|(a, _)| acked > a) {
                    best = Some((acked, i));
                }
            }
            Err((off, kind)) => {
                damaged.get_or_insert(DamagedSlot {
                    offset: at + off,
                    kind,
                });
            }
        }
    }
    Ok(match (best, damaged) {
        (Some((acked, slot)), damaged) => CursorRead::Valid {
            acked,
            slot,
            legacy,
            damaged,
        },
        // Every file read here has at least one slot, so `damaged` is set.
        (None, damaged) => CursorRead::Unreadable(damaged.unwrap_or(DamagedSlot {
            offset: 0,
            kind: CorruptionKind::BadMagic,
        })),
    })
}

/// Reads the cursor: `Ok(None)` if there is none, a corruption error if it holds no valid
/// slot (what recovery treats as "start from the oldest segment").
///
/// # Errors
/// [`Error::Corruption`] naming the cursor file for an unreadable cursor; [`Error::Io`]
/// if it cannot be read.
#[cfg(any(test, feature = "sim"))]
pub fn read_cursor(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    match inspect_cursor(fs, dir)? {
        CursorRead::Absent => Ok(None),
        CursorRead::Valid { acked, .. } => Ok(Some(acked)),
        CursorRead::Unreadable(d) => Err(Error::corrupt(cursor_path(dir), d.offset, d.kind)),
    }
}

/// Creates (or rewrites) the cursor file with `acked` in both slots, durably. A new file is written as `cursor.tmp`, synced and renamed into place (with
/// the directory synced), so that a crash while a log is being created never leaves a
/// partial cursor. An existing file (unreadable, or being reset) is rewritten in place,
/// which needs no free space; a crash part-way leaves it unreadable, which recovery reads
/// as "start from the oldest segment", exactly what it is being reset to.
///
/// # Errors
/// [`Error::Io`] if creating, writing, renaming or syncing failed.
#[cfg(any(test, feature = "sim"))]
pub fn write_cursor(fs: &dyn FileSystem, dir: &Path, acked: u64) -> Result<()> {
    create_cursor(fs, dir, acked).map(|_| ())
}

/// [`write_cursor`] for the engine's own use (salvage moving the cursor): the same
/// crash-safe create-or-rewrite.
pub(crate) fn write_cursor_in_place(fs: &dyn FileSystem, dir: &Path, acked: u64) -> Result<()> {
    create_cursor(fs, dir, acked).map(|_| ())
}

fn create_cursor(fs: &dyn FileSystem, dir: &Path, acked: u64) -> Result<Arc<dyn FileHandle>> {
    let path = cursor_path(dir);
    let mut content = vec![0u8; CURSOR_RESERVE_LEN as usize];
    for at in CURSOR_SLOT_OFFSETS {
        let at = at as usize;
        content[at..at + CURSOR_SLOT_LEN].copy_from_slice(&encode_slot(acked));
    }
    match fs.open(&path, OpenMode::ReadWrite) {
        Ok(file) => {
            file.set_len(CURSOR_RESERVE_LEN)
                .and_then(|()| file.write_all_at(&content, 0))
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io("rewrite", &path, e))?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = dir.join(CURSOR_TMP_FILE);
            let file = fs
                .open(&tmp, OpenMode::CreateTruncate)
                .map_err(|e| Error::io("create", &tmp, e))?;
            file.write_all_at(&content, 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io("write", &tmp, e))?;
            fs.rename(&tmp, &path)
                .map_err(|e| Error::io("rename", &tmp, e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("sync directory", dir, e))?;
            Ok(file)
        }
        Err(e) => Err(Error::io("open", &path, e)),
    }
}

/// Writes the cursor in the earlier single-slot format (a 32-byte file), durably, for
/// tests of backward compatibility.
///
/// # Errors
/// [`Error::Io`] if creating, writing or syncing failed.
#[cfg(any(test, feature = "sim"))]
pub fn write_legacy_cursor(fs: &dyn FileSystem, dir: &Path, acked: u64) -> Result<()> {
    let path = cursor_path(dir);
    let file = fs
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all_at(&encode_slot(acked), 0)
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// The open cursor of a log, updated in place: no update allocates disk space.
#[derive(Debug)]
pub(crate) struct CursorFile {
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    /// The slot holding the current value; the next update writes the other.
    slot: usize,
}

impl CursorFile {
    /// Opens the cursor of `dir` for updates, given what [`inspect_cursor`] found and the
    /// value recovery settled on. A valid current-format file is used as it is; a
    /// single-slot one is migrated in place; a missing or unreadable one is (re)written
    /// with `acked` (which then allocates its one block).
    pub(crate) fn open(
        fs: &dyn FileSystem,
        dir: &Path,
        found: &CursorRead,
        acked: u64,
    ) -> Result<CursorFile> {
        let path = cursor_path(dir);
        match *found {
            CursorRead::Valid {
                acked: on_disk,
                slot,
                legacy,
                ..
            } if on_disk == acked => {
                let file = fs
                    .open(&path, OpenMode::ReadWrite)
                    .map_err(|e| Error::io("open", &path, e))?;
                // A killed process's update may be in the page cache only (its sync
                // failed); segments are about to be deleted on the strength of it.
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", &path, e))?;
                let mut cursor = CursorFile { file, path, slot };
                if legacy {
                    // Extend to the current length (inside the first block), then store
                    // the value in slot 1 too. A crash part-way leaves slot 0 valid.
                    cursor
                        .file
                        .set_len(CURSOR_FILE_LEN)
                        .map_err(|e| Error::io("extend", &cursor.path, e))?;
                    cursor.update(acked)?;
                    tracing::info!(file = %cursor.path.display(), "migrated the cursor to the in-place format");
                }
                cursor.restore_reserve()?;
                Ok(cursor)
            }
            _ => {
                let file = create_cursor(fs, dir, acked)?;
                Ok(CursorFile {
                    file,
                    path,
                    slot: 0,
                })
            }
        }
    }

    /// Frees the reserve (see the module documentation) by truncating the file to its
    /// slots. True if there was a reserve to free and the truncation worked.
    pub(crate) fn release_reserve(&mut self) -> bool {
        match self.file.len() {
            Ok(len) if len > CURSOR_FILE_LEN => self.file.set_len(CURSOR_FILE_LEN).is_ok(),
            _ => false,
        }
    }

    /// Writes the reserve again if it is missing (released, or a migrated file), when
    /// there is room. Lack of space is not an error (without the reserve only the
    /// `ENOSPC` case of reclaiming a fully delivered active segment is lost; it is
    /// logged, and whatever length the file keeps, at least the slots, reads back).
    ///
    /// # Errors
    /// [`Error::Io`] for any other failure (the cursor file's device is failing).
    fn restore_reserve(&mut self) -> Result<()> {
        let len = self
            .file
            .len()
            .map_err(|e| Error::io("stat", &self.path, e))?;
        if len >= CURSOR_RESERVE_LEN {
            return Ok(());
        }
        let zeros = vec![0u8; (CURSOR_RESERVE_LEN - len) as usize];
        match self
            .file
            .write_all_at(&zeros, len)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(28) => {
                let _ = self.file.set_len(len);
                tracing::warn!(file = %self.path.display(), "no room to write the cursor's disk-space reserve; a full disk may then keep one delivered segment");
                Ok(())
            }
            Err(e) => Err(Error::io("write", &self.path, e)),
        }
    }

    /// Durably stores `acked` in the slot not holding the current value.
    ///
    /// # Errors
    /// [`Error::Io`] if the write or the `fdatasync` failed; the other slot still holds
    /// the previous value, and the next update writes the same slot again.
    pub(crate) fn update(&mut self, acked: u64) -> Result<()> {
        let next = 1 - self.slot;
        self.file
            .write_all_at(&encode_slot(acked), CURSOR_SLOT_OFFSETS[next])
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        self.slot = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;

    fn dir() -> &'static Path {
        Path::new("/log")
    }

    #[test]
    fn round_trip_and_damage_is_detected() {
        let fs = SimFs::new(0);
        fs.create_dir_all(dir()).unwrap();
        assert_eq!(read_cursor(&fs, dir()).unwrap(), None);
        write_cursor(&fs, dir(), 12345).unwrap();
        assert_eq!(read_cursor(&fs, dir()).unwrap(), Some(12345));
        fs.crash(false);
        assert_eq!(
            read_cursor(&fs, dir()).unwrap(),
            Some(12345),
            "cursor is durable"
        );
        let mut b = fs.read_file(&cursor_path(dir())).unwrap();
        b[18] ^= 0x40;
        fs.write_file(&cursor_path(dir()), &b);
        assert_eq!(
            read_cursor(&fs, dir()).unwrap(),
            Some(12345),
            "the other slot still holds it"
        );
        assert!(matches!(
            inspect_cursor(&fs, dir()).unwrap(),
            CursorRead::Valid {
                damaged: Some(DamagedSlot { offset: 28, .. }),
                ..
            }
        ));
        b[512 + 18] ^= 0x40;
        fs.write_file(&cursor_path(dir()), &b);
        let err = read_cursor(&fs, dir()).unwrap_err();
        assert!(err.to_string().contains("cursor"), "{err}");
        assert!(matches!(err, Error::Corruption(_)));
    }

    #[test]
    fn updates_alternate_slots_and_a_torn_update_keeps_the_previous_value() {
        for seed in 0..64 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(dir()).unwrap();
            write_cursor(&fs, dir(), 5).unwrap();
            let found = inspect_cursor(&fs, dir()).unwrap();
            let mut c = CursorFile::open(&fs, dir(), &found, 5).unwrap();
            c.update(9).unwrap();
            c.update(14).unwrap();
            assert_eq!(read_cursor(&fs, dir()).unwrap(), Some(14));
            c.update(20).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            // An update whose sync never ran: a power loss keeps 20, a prefix of the
            // new bytes or nothing, never less than the durable 20 nor anything but
            // 20 or 27.
            let torn_target = 27;
            let b = encode_slot(torn_target);
            // Write without sync through a fresh handle on the same slot `update` uses.
            let f = fs.open(&cursor_path(dir()), OpenMode::ReadWrite).unwrap();
            f.write_all_at(&b, CURSOR_SLOT_OFFSETS[1 - c.slot]).unwrap();
            fs.crash(true);
            let got = inspect_cursor(&fs, dir()).unwrap();
            match got {
                CursorRead::Valid { acked, .. } => {
                    assert!(acked == 20 || acked == 27, "seed {seed}: {acked}")
                }
                other => panic!("seed {seed}: {other:?}"),
            }
            assert_eq!(
                fs.read_file(&cursor_path(dir())).unwrap().len() as u64,
                CURSOR_RESERVE_LEN
            );
        }
    }

    #[test]
    fn legacy_single_slot_file_is_read_and_migrated_in_place() {
        let fs = SimFs::new(3);
        fs.create_dir_all(dir()).unwrap();
        write_legacy_cursor(&fs, dir(), 77).unwrap();
        let found = inspect_cursor(&fs, dir()).unwrap();
        assert!(matches!(
            found,
            CursorRead::Valid {
                acked: 77,
                slot: 0,
                legacy: true,
                damaged: None
            }
        ));
        drop(CursorFile::open(&fs, dir(), &found, 77).unwrap());
        fs.crash(false);
        assert!(matches!(
            inspect_cursor(&fs, dir()).unwrap(),
            CursorRead::Valid {
                acked: 77,
                legacy: false,
                ..
            }
        ));
        let found = inspect_cursor(&fs, dir()).unwrap();
        let mut c = CursorFile::open(&fs, dir(), &found, 77).unwrap();
        c.update(78).unwrap();
        assert_eq!(read_cursor(&fs, dir()).unwrap(), Some(78));
    }

    #[test]
    fn empty_wrong_length_and_zeroed_files_are_unreadable_not_errors() {
        let fs = SimFs::new(4);
        fs.create_dir_all(dir()).unwrap();
        for content in [
            Vec::new(),
            vec![0u8; 7],
            vec![0u8; CURSOR_FILE_LEN as usize],
        ] {
            fs.write_file(&cursor_path(dir()), &content);
            assert!(
                matches!(
                    inspect_cursor(&fs, dir()).unwrap(),
                    CursorRead::Unreadable(_)
                ),
                "{} bytes",
                content.len()
            );
        }
    }
}
