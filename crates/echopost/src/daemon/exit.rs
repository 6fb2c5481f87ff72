//! Exit codes, and the mapping from what went wrong to them.
//!
//! The exit code is the daemon's contract with whatever started it (the application, a
//! service manager, a script): it must tell "try again later" apart from "a human must look
//! at the disk". So every error that can end the daemon is a [`DaemonError`] variant, and
//! each variant has exactly one [`ExitCode`].

use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::replay::ReplayError;

/// The process exit codes of `echopost run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Clean exit: signalled, or everything delivered and the linger time passed.
    Clean = 0,
    /// Usage or configuration error (also what clap uses for bad flags).
    Usage = 2,
    /// The directory (or the socket) belongs to a running instance.
    Locked = 3,
    /// Storage corruption: manual intervention needed.
    Corruption = 4,
    /// Fatal: fsync failed, disk full on the device, unusable directory, or the daemon's
    /// own machinery failed (the gRPC server, the commit thread).
    Fatal = 5,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

/// Everything that stops the daemon with a non-zero exit code.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad flags or settings.
    #[error("{0}")]
    Config(String),

    /// Another process holds `DIR/LOCK`.
    #[error(
        "another echopost is running on {}: its lock file {} is held. Stop that instance first, or use another --dir",
        dir.display(),
        dir.join(echopost_log::LOCK_FILE).display()
    )]
    Locked { dir: PathBuf },

    /// A live daemon answers on the socket path.
    #[error(
        "another echopost is already listening on {}; stop it first, or use another --socket",
        path.display()
    )]
    SocketInUse { path: PathBuf },

    /// The log (or another file of the directory) is damaged.
    #[error(
        "{detail}\nechopost stopped without changing anything. Run `echopost verify --dir {dir}` for a full report. To start fresh, stop echopost and move the damaged directory aside (its undelivered records stay in it); a new run on an empty directory then starts cleanly.",
        dir = dir.display()
    )]
    Corruption { dir: PathBuf, detail: String },

    /// The storage engine can no longer write (I/O failure, fsync failure, disk full).
    #[error("fatal storage error in {}: {source}{}", dir.display(), no_space_hint(source))]
    Storage {
        dir: PathBuf,
        #[source]
        source: echopost_log::Error,
    },

    /// Any other I/O failure that prevents running (creating the directory, binding).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Server(String),

    /// A part of the daemon itself failed: a background task or the commit thread died.
    #[error("internal failure: {0}")]
    Internal(String),
}

fn no_space_hint(e: &echopost_log::Error) -> &'static str {
    if e.is_no_space() {
        " (the device is full: free space on it, or lower --max-disk so EchoPost refuses appends before the device fills)"
    } else {
        ""
    }
}

impl From<ConfigError> for DaemonError {
    fn from(e: ConfigError) -> DaemonError {
        DaemonError::Config(e.message().to_owned())
    }
}

impl DaemonError {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DaemonError::Config(_) => ExitCode::Usage,
            DaemonError::Locked { .. } | DaemonError::SocketInUse { .. } => ExitCode::Locked,
            DaemonError::Corruption { .. } => ExitCode::Corruption,
            DaemonError::Storage { .. }
            | DaemonError::Io { .. }
            | DaemonError::Server(_)
            | DaemonError::Internal(_) => ExitCode::Fatal,
        }
    }

    /// Classifies an engine error: `Locked` → 3, `Corruption` → 4, anything else → 5.
    pub fn from_log(dir: &Path, e: echopost_log::Error) -> DaemonError {
        match e {
            echopost_log::Error::Locked { dir } => DaemonError::Locked { dir },
            echopost_log::Error::Corruption(c) => DaemonError::Corruption {
                dir: dir.to_path_buf(),
                detail: c.to_string(),
            },
            other => DaemonError::Storage {
                dir: dir.to_path_buf(),
                source: other,
            },
        }
    }

    /// Classifies why replay stopped the daemon: corruption → 4, storage → 5, config → 2.
    pub fn from_replay(dir: &Path, e: ReplayError) -> DaemonError {
        match e {
            ReplayError::Corruption(e) => match DaemonError::from_log(dir, e) {
                // The replayer classified it as corruption; keep that even if the engine
                // error is of another kind.
                DaemonError::Storage { source, .. } => DaemonError::Corruption {
                    dir: dir.to_path_buf(),
                    detail: source.to_string(),
                },
                other => other,
            },
            ReplayError::Storage(e) => DaemonError::Storage {
                dir: dir.to_path_buf(),
                source: e,
            },
            ReplayError::Config(msg) => DaemonError::Config(format!("replay: {msg}")),
        }
    }

    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: io::Error) -> DaemonError {
        DaemonError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_log::{Corruption, CorruptionKind, Error};

    fn corruption() -> Error {
        Error::Corruption(Box::new(Corruption {
            file: PathBuf::from("/d/00000000000000000001.seg"),
            offset: 96,
            kind: CorruptionKind::BadMagic,
        }))
    }

    #[test]
    fn engine_errors_map_to_documented_codes() {
        let d = Path::new("/d");
        assert_eq!(
            DaemonError::from_log(
                d,
                Error::Locked {
                    dir: PathBuf::from("/d")
                }
            )
            .exit_code(),
            ExitCode::Locked
        );
        let c = DaemonError::from_log(d, corruption());
        assert_eq!(c.exit_code(), ExitCode::Corruption);
        let msg = c.to_string();
        assert!(msg.contains("00000000000000000001.seg"), "{msg}");
        assert!(msg.contains("byte 96"), "{msg}");
        assert!(msg.contains("echopost verify --dir /d"), "{msg}");
        assert!(msg.contains("move the damaged directory aside"), "{msg}");
        let io = Error::Io {
            op: "fdatasync",
            path: PathBuf::from("/d/x.seg"),
            source: io::Error::from_raw_os_error(28),
        };
        let s = DaemonError::from_log(d, io);
        assert_eq!(s.exit_code(), ExitCode::Fatal);
        assert!(s.to_string().contains("device is full"), "{s}");
        assert_eq!(
            DaemonError::from_log(d, Error::Poisoned("fdatasync failed".into())).exit_code(),
            ExitCode::Fatal
        );
    }

    #[test]
    fn replay_errors_map_to_documented_codes() {
        let d = Path::new("/d");
        assert_eq!(
            DaemonError::from_replay(d, ReplayError::Corruption(corruption())).exit_code(),
            ExitCode::Corruption
        );
        assert_eq!(
            DaemonError::from_replay(d, ReplayError::Storage(Error::Poisoned("x".into())))
                .exit_code(),
            ExitCode::Fatal
        );
        assert_eq!(
            DaemonError::from_replay(d, ReplayError::Config("bad CA".into())).exit_code(),
            ExitCode::Usage
        );
    }
}
