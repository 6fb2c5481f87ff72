//! The acknowledgement cursor: the highest sequence known to be delivered.
//!
//! It is the checkpoint in checkpoint-then-truncate: the cursor is made durable *before*
//! any segment it covers is deleted, so after any crash the segments on disk always hold
//! every record after the cursor. It is replaced atomically: written to `cursor.tmp`,
//! synced, renamed over `cursor`, and the directory synced. A torn write can only damage
//! the temporary file, which recovery discards.
//!
//! ```text
//! offset size field
//!  0      8   magic       b"ECHOPCUR"
//!  8      4   version     1, u32 LE
//! 12      4   reserved    0
//! 16      8   acked       u64 LE
//! 24      4   reserved    0
//! 28      4   crc         crc32c of bytes 0..28
//! ```

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::fs::{FileSystem, OpenMode, read_exact_at};

/// File name of the cursor inside the log directory.
pub const CURSOR_FILE: &str = "cursor";
/// File name of the cursor while it is being replaced.
pub const CURSOR_TMP_FILE: &str = "cursor.tmp";
const CURSOR_LEN: usize = 32;
const CURSOR_MAGIC: [u8; 8] = *b"ECHOPCUR";
const CURSOR_VERSION: u32 = 1;

/// Path of the cursor in `dir`.
pub fn cursor_path(dir: &Path) -> PathBuf {
    dir.join(CURSOR_FILE)
}

fn encode(acked: u64) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[0..8].copy_from_slice(&CURSOR_MAGIC);
    b[8..12].copy_from_slice(&CURSOR_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32c::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Result<u64, (u64, CorruptionKind)> {
    if b.len() != CURSOR_LEN {
        return Err((
            0,
            CorruptionKind::Truncated {
                needed: CURSOR_LEN as u64,
                available: b.len() as u64,
            },
        ));
    }
    if b[0..8] != CURSOR_MAGIC {
        return Err((0, CorruptionKind::BadMagic));
    }
    let stored = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    let computed = crc32c::crc32c(&b[..28]);
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

/// Reads the cursor: `Ok(None)` if there is none, a corruption error if it is damaged.
pub fn read_cursor(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let path = cursor_path(dir);
    let file = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != CURSOR_LEN as u64 {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::Truncated {
                needed: CURSOR_LEN as u64,
                available: len,
            },
        ));
    }
    let mut b = [0u8; CURSOR_LEN];
    read_exact_at(&*file, &mut b, 0).map_err(|e| Error::io("read", &path, e))?;
    decode(&b)
        .map(Some)
        .map_err(|(offset, kind)| Error::corrupt(path, offset, kind))
}

/// Durably replaces the cursor with `acked` (write temp, sync, rename, sync directory).
pub fn write_cursor(fs: &dyn FileSystem, dir: &Path, acked: u64) -> Result<()> {
    let tmp = dir.join(CURSOR_TMP_FILE);
    let file = fs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&encode(acked), 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("sync", &tmp, e))?;
    drop(file);
    let path = cursor_path(dir);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimFs;

    #[test]
    fn round_trip_and_damage_is_detected() {
        let fs = SimFs::new(0);
        let dir = Path::new("/log");
        fs.create_dir_all(dir).unwrap();
        assert_eq!(read_cursor(&fs, dir).unwrap(), None);
        write_cursor(&fs, dir, 12345).unwrap();
        assert_eq!(read_cursor(&fs, dir).unwrap(), Some(12345));
        fs.crash(false);
        assert_eq!(
            read_cursor(&fs, dir).unwrap(),
            Some(12345),
            "cursor is durable"
        );
        let mut b = fs.read_file(&cursor_path(dir)).unwrap();
        b[18] ^= 0x40;
        fs.write_file(&cursor_path(dir), &b);
        let err = read_cursor(&fs, dir).unwrap_err();
        assert!(err.to_string().contains("cursor"), "{err}");
        assert!(matches!(err, Error::Corruption(_)));
    }
}
