//! A log directory as one byte string, for the `log_recovery` fuzz target (`fuzz/`) and
//! the seeds of its corpus.
//!
//! A fuzzer mutates one flat input; [`decode_into`] cuts it into the files of a log
//! directory on a [`SimFs`], and [`encode`] turns a directory that the engine wrote into
//! such an input, so that the corpus starts from real logs. The input is a sequence of
//! entries (at most [`MAX_FILES`]; a trailing partial entry is ignored):
//!
//! ```text
//! kind     u8        kind % 8 picks the file (below)
//! seq      u64 LE    only for kinds 0, 1 and 7: the segment's first sequence
//! len      u16 LE    content length (cut to what is left of the input)
//! content  len bytes
//! zeros    u16 LE    zero bytes after the content (0 when the input ends first)
//! ```
//!
//! (`zeros` keeps a preallocated file short: the cursor is created 64 KiB long, nearly
//! all zeros.)
//!
//! | kind % 8 | file | content |
//! |---|---|---|
//! | 0 | `segment_name(seq)` | the frames: a valid segment header for `seq` is put in front, so mutations spend their time on frames |
//! | 1 | `segment_name(seq)` | the whole file, header included (a header that disagrees with the name, or is cut short) |
//! | 2 | `cursor` | as is |
//! | 3 | `cursor.tmp` | as is |
//! | 4 | `checkpoint` | as is |
//! | 5 | `checkpoint.tmp` | as is |
//! | 6 | `LOCK` | as is |
//! | 7 | `segment_name(seq).salvage` (a leftover of an interrupted `salvage`) | as is |

use std::path::Path;

use super::SimFs;
use crate::checkpoint::{CHECKPOINT_FILE, CHECKPOINT_TMP_FILE};
use crate::cursor::{CURSOR_FILE, CURSOR_TMP_FILE};
use crate::log::LOCK_FILE;
use crate::segment::{SEGMENT_HEADER_LEN, encode_segment_header, parse_segment_name, segment_name};

/// Most files one input makes.
pub const MAX_FILES: usize = 16;
/// Largest content of one entry before its trailing zeros (its length is a `u16`).
pub const MAX_FILE_LEN: usize = u16::MAX as usize;

const SALVAGE_SUFFIX: &str = ".salvage";

/// Writes the files that `data` describes into `dir` on `fs` (which must exist), replacing
/// files of the same name (a later entry wins). Never fails: every input is some directory.
pub fn decode_into(fs: &SimFs, dir: &Path, mut data: &[u8]) {
    let mut made = 0;
    while made < MAX_FILES {
        let Some((&kind, rest)) = data.split_first() else {
            return;
        };
        let with_seq = matches!(kind % 8, 0 | 1 | 7);
        let (seq, rest) = if with_seq {
            let Some((seq, rest)) = rest.split_first_chunk::<8>() else {
                return;
            };
            (u64::from_le_bytes(*seq), rest)
        } else {
            (0, rest)
        };
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (content, rest) = rest.split_at(len);
        let (zeros, rest) = match rest.split_first_chunk::<2>() {
            Some((z, rest)) => (usize::from(u16::from_le_bytes(*z)), rest),
            None => (0, rest),
        };
        data = rest;
        made += 1;
        let mut content = content.to_vec();
        content.resize(len + zeros, 0);
        let content = content.as_slice();
        let (name, content) = match kind % 8 {
            0 => {
                let mut c = encode_segment_header(seq).to_vec();
                c.extend_from_slice(content);
                (segment_name(seq), c)
            }
            1 => (segment_name(seq), content.to_vec()),
            2 => (CURSOR_FILE.to_owned(), content.to_vec()),
            3 => (CURSOR_TMP_FILE.to_owned(), content.to_vec()),
            4 => (CHECKPOINT_FILE.to_owned(), content.to_vec()),
            5 => (CHECKPOINT_TMP_FILE.to_owned(), content.to_vec()),
            6 => (LOCK_FILE.to_owned(), content.to_vec()),
            _ => (
                format!("{}{SALVAGE_SUFFIX}", segment_name(seq)),
                content.to_vec(),
            ),
        };
        fs.write_file(&dir.join(name), &content);
    }
}

/// Why a directory has no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A file the format cannot name (a subdirectory's file, or an unknown name).
    #[error("no entry kind for {0}")]
    UnknownFile(String),
    /// A file over [`MAX_FILE_LEN`] bytes (after its segment header, for a segment),
    /// not counting up to `u16::MAX` trailing zeros.
    #[error("{0} is over {MAX_FILE_LEN} bytes and its trailing zeros")]
    TooLong(String),
    /// More than [`MAX_FILES`] files.
    #[error("more than {MAX_FILES} files")]
    TooManyFiles,
}

/// The input that [`decode_into`] turns back into the files directly inside `dir` on `fs`
/// (in name order). A segment that starts with the valid header for its name is stored
/// without it (kind 0); any other segment whole (kind 1).
///
/// # Errors
/// [`ImageError`] when a file has no kind, is too long, or there are too many files.
pub fn encode(fs: &SimFs, dir: &Path) -> Result<Vec<u8>, ImageError> {
    let mut files: Vec<_> = fs
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
        .collect();
    files.sort();
    if files.len() > MAX_FILES {
        return Err(ImageError::TooManyFiles);
    }
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let content = fs.read_file(&path).unwrap_or_default();
        let fixed = |kind: u8| (kind, None, content.as_slice());
        let (kind, seq, body) = if let Some(seq) = parse_segment_name(&name) {
            let header = encode_segment_header(seq);
            match content.strip_prefix(header.as_slice()) {
                Some(frames) if content.len() >= SEGMENT_HEADER_LEN as usize => {
                    (0, Some(seq), frames)
                }
                _ => (1, Some(seq), content.as_slice()),
            }
        } else if let Some(seq) = name
            .strip_suffix(SALVAGE_SUFFIX)
            .and_then(parse_segment_name)
        {
            (7, Some(seq), content.as_slice())
        } else {
            match name.as_str() {
                CURSOR_FILE => fixed(2),
                CURSOR_TMP_FILE => fixed(3),
                CHECKPOINT_FILE => fixed(4),
                CHECKPOINT_TMP_FILE => fixed(5),
                LOCK_FILE => fixed(6),
                _ => return Err(ImageError::UnknownFile(name)),
            }
        };
        let nonzero = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let zeros = u16::try_from(body.len() - nonzero).unwrap_or(u16::MAX);
        let body = &body[..body.len() - usize::from(zeros)];
        let len = u16::try_from(body.len()).map_err(|_| ImageError::TooLong(name.clone()))?;
        out.push(kind);
        if let Some(seq) = seq {
            out.extend_from_slice(&seq.to_le_bytes());
        }
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&zeros.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FileSystem;
    use std::path::PathBuf;

    #[test]
    fn an_image_decodes_to_the_same_files() {
        let dir = PathBuf::from("/d");
        let fs = SimFs::new(0);
        fs.create_dir_all(&dir).expect("mkdir");
        let mut seg = encode_segment_header(9).to_vec();
        seg.extend_from_slice(b"frames");
        fs.write_file(&dir.join(segment_name(9)), &seg);
        fs.write_file(&dir.join(segment_name(1)), b"short");
        let mut cursor = vec![7; 40];
        cursor.resize(65_536, 0);
        fs.write_file(&dir.join(CURSOR_FILE), &cursor);
        fs.write_file(&dir.join(format!("{}.salvage", segment_name(3))), b"x");
        let image = encode(&fs, &dir).expect("encode");

        let again = SimFs::new(0);
        again.create_dir_all(&dir).expect("mkdir");
        decode_into(&again, &dir, &image);
        let mut want = fs.files();
        want.sort();
        let mut got = again.files();
        got.sort();
        assert_eq!(got, want);
        for p in want {
            assert_eq!(again.read_file(&p), fs.read_file(&p), "{}", p.display());
        }
        // In name order: the short segment whole (kind 1), the salvage leftover (7), the
        // segment with a valid header without it (0), the cursor (2) without its zeros.
        let entry = |seq: usize, len: usize| 1 + seq + 2 + len + 2;
        assert_eq!(
            image.len(),
            entry(8, 5) + entry(8, 1) + entry(8, 6) + entry(0, 40)
        );
        assert_eq!((image[0], image[18], image[32], image[51]), (1, 7, 0, 2));
    }

    #[test]
    fn truncated_input_makes_the_files_before_the_cut() {
        let dir = PathBuf::from("/d");
        let fs = SimFs::new(0);
        fs.create_dir_all(&dir).expect("mkdir");
        decode_into(&fs, &dir, &[2, 3, 0, b'a', b'b', b'c', 1, 0, 6, 1]);
        assert_eq!(fs.files(), vec![dir.join(CURSOR_FILE)]);
        assert_eq!(
            fs.read_file(&dir.join(CURSOR_FILE)),
            Some(b"abc\0".to_vec())
        );
    }
}
