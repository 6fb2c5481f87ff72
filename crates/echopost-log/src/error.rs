//! Typed errors of the engine. [`Error`] says which are fatal and which refuse one call.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can report.
///
/// What matters to callers is *fatal* versus *not fatal* ([`Error::is_fatal`]):
/// * [`Error::Full`], [`Error::EmptyBatch`], [`Error::BatchTooLarge`] and
///   [`Error::AckBeyondDurable`] refuse one call and change nothing; the log stays usable.
///   So does [`Error::Locked`], from opening.
/// * [`Error::Io`] and [`Error::Poisoned`] mean the writer can no longer promise
///   durability. After a failed `fdatasync` the kernel may have dropped the dirty pages,
///   so retrying could report success for data that is gone; the log is therefore
///   poisoned and every later append fails. Reopening (a new process) recovers what is
///   on disk.
/// * [`Error::Corruption`] means the bytes on disk are not what the engine wrote. The
///   engine never guesses past damage: it names the file, the offset and the reason, and
///   stops.
///
/// Non-exhaustive: later versions may add variants, so a `match` needs a wildcard arm
/// (classify it with [`Error::is_fatal`], which every variant answers).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or another `Log` in this process) holds the directory's lock.
    #[error(
        "log directory {dir} is locked by another process (is another echopost instance running on it?)"
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },

    /// The bytes on disk are damaged or inconsistent; see [`Corruption`].
    #[error(transparent)]
    Corruption(Box<Corruption>),

    /// The append would take the log over its disk quota
    /// ([`crate::LogOptions::max_disk_bytes`]). Not fatal: it succeeds again once
    /// acknowledgements have freed space.
    #[error("buffer full: {used} bytes of {limit} in use, this append needs {needed} more")]
    Full {
        /// Bytes of segment files in use.
        used: u64,
        /// The quota, in bytes.
        limit: u64,
        /// Bytes this append would add (its frame, plus a seal and a segment header if it
        /// starts a new segment).
        needed: u64,
    },

    /// An append of zero records.
    #[error("empty batch: an append needs at least one record")]
    EmptyBatch,

    /// The encoded batch is larger than [`crate::LogOptions::max_batch_bytes`] (or the
    /// format's 1 GiB).
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch: payloads plus [`crate::RECORD_OVERHEAD`] each.
        size: u64,
        /// The limit in force, in bytes.
        limit: u64,
    },

    /// `ack` named a sequence that is not durable yet (or was never written).
    #[error("cannot acknowledge sequence {seq}: the last durable sequence is {durable}")]
    AckBeyondDurable {
        /// The sequence `ack` was given.
        seq: u64,
        /// The last durable sequence (0: none).
        durable: u64,
    },

    /// [`crate::Log::write_checkpoint`] named a sequence beyond the durable end or before
    /// the current checkpoint's.
    #[error(
        "cannot checkpoint at sequence {seq}: it must be between the current checkpoint's ({current}) and the durable end ({durable_next})"
    )]
    CheckpointOutOfRange {
        /// The sequence given.
        seq: u64,
        /// The first sequence not yet durable.
        durable_next: u64,
        /// The current checkpoint's sequence (1: none).
        current: u64,
    },

    /// An I/O operation failed. Fatal: on the write path the log is poisoned (see the
    /// type's documentation).
    #[error("I/O error while trying to {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. `"fdatasync"`, `"write"`, `"rename"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// An earlier fatal error stopped the writer; the string says which (the first one,
    /// also in [`crate::LogStats::poisoned`]).
    #[error("log is stopped after a fatal error and accepts no more writes: {0}")]
    Poisoned(Arc<str>),
}

impl Error {
    /// True when the log can no longer accept writes (I/O failure or poisoning) or the
    /// data on disk is damaged: `Io`, `Poisoned`, `Corruption`. A daemon should stop; a
    /// `Full`, `Locked` or bad-input error is not fatal.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Poisoned(_) | Error::Corruption(_)
        )
    }

    /// True for an [`Error::Io`] whose OS cause is "no space left on device" (`ENOSPC`), as
    /// opposed to [`Error::Full`], the log's own quota.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.raw_os_error() == Some(libc_enospc()),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Self {
        Error::Corruption(Box::new(Corruption {
            file: file.into(),
            offset,
            kind,
        }))
    }
}

/// ENOSPC has the value 28 on Linux and macOS alike.
const fn libc_enospc() -> i32 {
    28
}

/// Where and why the on-disk data is not what the engine wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset in `file` where the problem starts.
    pub offset: u64,
    /// What is wrong.
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "storage corruption in {} at byte {}: {}",
            self.file.display(),
            self.offset,
            self.kind
        )
    }
}

impl std::error::Error for Corruption {}

/// The reasons a file can be judged corrupt.
///
/// Non-exhaustive: later versions may detect more kinds of damage, so a `match` needs a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// A frame or file header does not start with the expected magic bytes.
    BadMagic,
    /// The format version is not one this build understands.
    UnknownVersion(u32),
    /// The stored checksum does not match the bytes.
    ChecksumMismatch {
        /// The CRC32C found on disk.
        stored: u32,
        /// The CRC32C of the bytes as read.
        computed: u32,
    },
    /// A frame claims to extend beyond the end of the file, or the file is too short.
    Truncated {
        /// Bytes the frame or file needs from the offset of the error.
        needed: u64,
        /// Bytes there are.
        available: u64,
    },
    /// A header field holds an impossible value.
    InvalidHeader(&'static str),
    /// The frame body does not decode into the records its header announces.
    BadBody(&'static str),
    /// A frame carries a sequence other than the one that must come next.
    SequenceMismatch {
        /// The sequence due.
        expected: u64,
        /// The sequence the frame carries.
        found: u64,
    },
    /// A frame that fails its check is followed by valid frames, so it cannot be a torn write.
    DamageBeforeValidData {
        /// Byte offset of the first valid frame after the damage, in the same file.
        valid_frame_at: u64,
    },
    /// A segment other than the last lacks its closing seal.
    MissingSeal,
    /// The last segment is sealed but the segment that must follow it does not exist.
    MissingSuccessor {
        /// The first sequence the seal names for the missing segment.
        expected_first_seq: u64,
    },
    /// Segment files do not chain: the segment named by the error ends at (its seal names)
    /// `expected_first_seq`, but the next segment file starts at `found_first_seq` (0: the
    /// file is gone). Records between them are missing.
    SegmentGap {
        /// The first sequence the next segment should have.
        expected_first_seq: u64,
        /// The first sequence of the segment file found next (0: none).
        found_first_seq: u64,
    },
    /// Bytes follow a segment's seal.
    DataAfterSeal,
    /// The segment's name and the sequence in its header disagree.
    NameMismatch {
        /// The first sequence the file name says.
        name_seq: u64,
        /// The first sequence the header says.
        header_seq: u64,
    },
    /// The acknowledgement cursor is inconsistent with the segments on disk.
    CursorOutOfRange {
        /// The sequence the cursor says was delivered last.
        acked: u64,
        /// The first sequence the segments hold.
        first_seq: u64,
        /// One past the last sequence they hold.
        next_seq: u64,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadMagic => {
                write!(f, "bad magic bytes (not an EchoPost frame or header)")
            }
            CorruptionKind::UnknownVersion(v) => {
                write!(
                    f,
                    "unknown format version {v} (written by a newer EchoPost?)"
                )
            }
            CorruptionKind::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored crc32c {stored:#010x}, computed {computed:#010x})"
            ),
            CorruptionKind::Truncated { needed, available } => write!(
                f,
                "truncated: {needed} bytes needed but only {available} present"
            ),
            CorruptionKind::InvalidHeader(what) => write!(f, "invalid header: {what}"),
            CorruptionKind::BadBody(what) => write!(f, "undecodable frame body: {what}"),
            CorruptionKind::SequenceMismatch { expected, found } => write!(
                f,
                "sequence mismatch: expected sequence {expected}, found {found}"
            ),
            CorruptionKind::DamageBeforeValidData { valid_frame_at } => write!(
                f,
                "damaged frame followed by a valid frame at byte {valid_frame_at} (not a torn write)"
            ),
            CorruptionKind::MissingSeal => write!(
                f,
                "segment is not sealed although later segments exist (truncated or overwritten)"
            ),
            CorruptionKind::MissingSuccessor { expected_first_seq } => write!(
                f,
                "segment is sealed but the next segment (first sequence {expected_first_seq}) is missing"
            ),
            CorruptionKind::SegmentGap {
                expected_first_seq,
                found_first_seq,
            } => write!(
                f,
                "missing segment: expected a segment starting at sequence {expected_first_seq}, found {found_first_seq}"
            ),
            CorruptionKind::DataAfterSeal => write!(f, "data after the segment's seal"),
            CorruptionKind::NameMismatch {
                name_seq,
                header_seq,
            } => write!(
                f,
                "file name says first sequence {name_seq} but its header says {header_seq}"
            ),
            CorruptionKind::CursorOutOfRange {
                acked,
                first_seq,
                next_seq,
            } => write!(
                f,
                "cursor says sequence {acked} was delivered, but the segments hold sequences {first_seq}..{next_seq} (exclusive)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_message_names_file_offset_and_reason() {
        let e = Error::corrupt(
            "/d/00000000000000000001.seg",
            96,
            CorruptionKind::ChecksumMismatch {
                stored: 1,
                computed: 2,
            },
        );
        let msg = e.to_string();
        assert!(msg.contains("00000000000000000001.seg"), "{msg}");
        assert!(msg.contains("byte 96"), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");
        assert!(e.is_fatal());
    }

    #[test]
    fn enospc_is_recognised() {
        let e = Error::io("write", "/d/x", io::Error::from_raw_os_error(28));
        assert!(e.is_no_space());
        assert!(e.is_fatal());
        assert!(
            !Error::Full {
                used: 1,
                limit: 2,
                needed: 3
            }
            .is_fatal()
        );
    }
}
