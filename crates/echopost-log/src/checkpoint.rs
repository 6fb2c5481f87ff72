//! The caller's checkpoint: opaque state that covers every frame before a sequence.
//!
//! # Why
//! A caller that derives state from what it appends (the daemon's producer and stream
//! tables, issue 14) must recover that state after a crash so that it agrees exactly
//! with the records that survived, without reading the whole backlog at open. It keeps
//! what it needs in each frame ([`crate::BatchBody::with_meta`]) and, now and then, a
//! checkpoint: its state as of sequence `S` (every frame before `S` applied). Recovery is
//! then the checkpoint plus the frames from `S` on ([`crate::Log::reader_including_acked`]).
//!
//! For that to work the frames from `S` on must still be on disk, even once delivered:
//! while a checkpoint exists, acknowledgements delete only segments that end before `S`
//! (see `log/ack.rs`). Writing a newer checkpoint releases the older frames.
//!
//! The file is replaced atomically like the cursor (`checkpoint.tmp`, sync, rename, sync
//! directory), so a crash leaves the old or the new one, never a mix.
//!
//! ```text
//! offset size field
//!  0      8   magic       b"ECHOPCKP"
//!  8      4   version     1, u32 LE
//! 12      4   data_len    u32 LE
//! 16      8   seq         the first sequence NOT covered by the data, u64 LE
//! 24      4   reserved    0
//! 28      4   crc         crc32c(data) extended with bytes 0..28
//! 32      …   data        the caller's bytes
//! ```

use std::io;
use std::path::{Path, PathBuf};

use crate::crc::{crc32c, crc32c_append};
use crate::error::{CorruptionKind, Error, Result};
use crate::frame::{MAX_BODY_LEN, MAX_SEQ};
use crate::fs::{FileSystem, OpenMode, read_exact_at};

/// File name of the checkpoint inside the log directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// File name of the checkpoint while it is being replaced.
pub const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";
const HEADER_LEN: usize = 32;
const MAGIC: [u8; 8] = *b"ECHOPCKP";
const VERSION: u32 = 1;

/// A checkpoint as stored: the caller's data, covering every frame before `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first sequence the data does not cover: recovery applies the frames from here.
    pub seq: u64,
    /// The caller's bytes, unchanged.
    pub data: Vec<u8>,
}

fn encode(seq: u64, data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|&l| l <= MAX_BODY_LEN)
        .ok_or("checkpoint data over the format limit (1 GiB)")?;
    let mut b = Vec::with_capacity(HEADER_LEN + data.len());
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let crc = crc32c_append(crc32c(data), &b[..28]);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(data);
    Ok(b)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes a whole checkpoint file; on damage, the offset and reason.
fn decode(b: &[u8]) -> Result<Checkpoint, (u64, CorruptionKind)> {
    if b.len() < HEADER_LEN {
        return Err((
            0,
            CorruptionKind::Truncated {
                needed: HEADER_LEN as u64,
                available: b.len() as u64,
            },
        ));
    }
    if b[0..8] != MAGIC {
        return Err((0, CorruptionKind::BadMagic));
    }
    let version = le_u32(&b[8..]);
    if version != VERSION {
        return Err((8, CorruptionKind::UnknownVersion(version)));
    }
    let len = le_u32(&b[12..]) as usize;
    if b.len() != HEADER_LEN + len {
        return Err((
            12,
            CorruptionKind::Truncated {
                needed: (HEADER_LEN + len) as u64,
                available: b.len() as u64,
            },
        ));
    }
    let stored = le_u32(&b[28..]);
    let computed = crc32c_append(crc32c(&b[HEADER_LEN..]), &b[..28]);
    if stored != computed {
        return Err((28, CorruptionKind::ChecksumMismatch { stored, computed }));
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&b[16..24]);
    let seq = u64::from_le_bytes(s);
    if seq == 0 || seq > MAX_SEQ {
        return Err((16, CorruptionKind::InvalidHeader("sequence out of range")));
    }
    Ok(Checkpoint {
        seq,
        data: b[HEADER_LEN..].to_vec(),
    })
}

/// Path of the checkpoint in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Reads the checkpoint: `Ok(None)` if there is none, a corruption error if damaged.
pub fn read_checkpoint(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Checkpoint>> {
    let path = checkpoint_path(dir);
    let file = match fs.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len > (HEADER_LEN as u64) + u64::from(MAX_BODY_LEN) {
        return Err(Error::corrupt(
            path,
            0,
            CorruptionKind::InvalidHeader("checkpoint file over the format limit"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    read_exact_at(&*file, &mut b, 0).map_err(|e| Error::io("read", &path, e))?;
    decode(&b)
        .map(Some)
        .map_err(|(offset, kind)| Error::corrupt(path, offset, kind))
}

/// Durably replaces the checkpoint (write temp, sync, rename, sync directory).
pub fn write_checkpoint(fs: &dyn FileSystem, dir: &Path, seq: u64, data: &[u8]) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    let bytes = encode(seq, data).map_err(|why| {
        Error::io(
            "write",
            &tmp,
            io::Error::new(io::ErrorKind::InvalidInput, why),
        )
    })?;
    let file = fs
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("sync", &tmp, e))?;
    drop(file);
    let path = checkpoint_path(dir);
    fs.rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Removes the checkpoint file (none is fine) and makes that durable.
pub fn remove_checkpoint(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let path = checkpoint_path(dir);
    match fs.remove_file(&path) {
        Ok(()) => fs
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Removes a `checkpoint.tmp` an interrupted write left (it never counts).
pub fn remove_stale_tmp(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let tmp = dir.join(CHECKPOINT_TMP_FILE);
    match fs.remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", tmp, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(seq in 1u64..=MAX_SEQ, data in prop::collection::vec(any::<u8>(), 0..200)) {
            let b = encode(seq, &data).unwrap();
            prop_assert_eq!(decode(&b).unwrap(), Checkpoint { seq, data });
        }

        #[test]
        fn any_damage_is_detected(data in prop::collection::vec(any::<u8>(), 0..64),
                                  bit in any::<prop::sample::Index>(),
                                  cut in any::<prop::sample::Index>()) {
            let b = encode(9, &data).unwrap();
            let mut flipped = b.clone();
            let i = bit.index(b.len() * 8);
            flipped[i / 8] ^= 1 << (i % 8);
            prop_assert!(decode(&flipped).is_err());
            prop_assert!(decode(&b[..cut.index(b.len())]).is_err());
        }
    }
}
