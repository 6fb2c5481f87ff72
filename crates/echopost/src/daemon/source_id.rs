//! The directory's stable source id (`DIR/source-id`).
//!
//! Replayed records are identified upstream by `(source, sequence)`. Sequences are stable
//! per directory, so the source must be too: it is created once, the first time a daemon
//! runs on the directory, and kept for the directory's life (across restarts, and across
//! runs that replay to different upstreams). It is random (128 bits, hex) rather than
//! derived from the host name or path, because directories get copied and hosts renamed.
//!
//! It is written atomically (temp file, fsync, rename, directory fsync): a crash leaves
//! either no id or the complete one, never a torn or empty id that would later change.
//! Callers hold the directory lock, so two daemons cannot race to create it.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File name of the id inside the directory.
pub const SOURCE_ID_FILE: &str = "source-id";
const SOURCE_ID_TMP: &str = "source-id.tmp";

/// Why the id could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SourceIdError {
    /// The file exists but does not hold an id this daemon wrote.
    #[error(
        "{} does not hold a valid source id (expected 32 hex digits, found {found:?}); it was damaged or edited. Restore it from a backup if records were already replayed from this directory, or remove it to get a new id",
        path.display()
    )]
    Invalid { path: PathBuf, found: String },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads `DIR/source-id`, creating it if missing. Returns the id and whether it was
/// created now.
pub fn load_or_create(dir: &Path) -> Result<(String, bool), SourceIdError> {
    let path = dir.join(SOURCE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim();
            if is_valid(id) {
                Ok((id.to_owned(), false))
            } else {
                Err(SourceIdError::Invalid {
                    path,
                    found: id.chars().take(64).collect(),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let id = format!("{:032x}", rand::random::<u128>());
            write_atomically(dir, &id)?;
            Ok((id, true))
        }
        Err(e) => Err(SourceIdError::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

fn is_valid(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_atomically(dir: &Path, id: &str) -> Result<(), SourceIdError> {
    let tmp = dir.join(SOURCE_ID_TMP);
    let path = dir.join(SOURCE_ID_FILE);
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| SourceIdError::Io {
            op,
            path: p,
            source,
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(format!("{id}\n").as_bytes())
        .map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (id, created) = load_or_create(tmp.path()).unwrap();
        assert!(created);
        assert!(is_valid(&id), "{id}");
        let (again, created) = load_or_create(tmp.path()).unwrap();
        assert!(!created);
        assert_eq!(id, again);
        assert!(!tmp.path().join(SOURCE_ID_TMP).exists());
    }

    #[test]
    fn damaged_id_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(SOURCE_ID_FILE), "").unwrap();
        let e = load_or_create(tmp.path()).unwrap_err();
        assert!(matches!(e, SourceIdError::Invalid { .. }), "{e}");
    }
}
