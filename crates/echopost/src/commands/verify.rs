//! `echopost verify`: a full integrity scan, and what to do when it fails.
//!
//! Runs [`echopost_log::verify`] on the directory (every frame's checksum, sequence
//! continuity, seals, the cursor) and on the dead-letter log if there is one. It only
//! reads and takes no lock, so it is safe beside a running daemon; an append the daemon is
//! writing at that moment may show up as a torn tail, which is reported as a note, not as
//! damage (the daemon drops a torn tail itself on its next start).
//!
//! On damage it exits 4 and names the file, the byte offset and the reason — the same
//! words the daemon uses when it refuses to start — followed by the operator's options.
//! Those options are stated carefully: EchoPost never repairs damage by guessing, so the
//! way forward is always "keep a copy, salvage what reads, start a fresh directory".

use std::path::{Path, PathBuf};

use echopost_log::{Corruption, VerifyReport};
use serde::Serialize;

use super::{
    CommandError, CommandResult, Target, fmt_bytes, fmt_count, nothing_there, print_stdout, resolve,
};
use crate::cli::VerifyArgs;
use crate::daemon::exit::ExitCode;
use crate::replay::dead_letters;

/// A torn write at the end of a log, in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct TornTailJson {
    pub file: String,
    pub start: u64,
    pub end: u64,
    pub reason: String,
}

/// What an intact log holds, in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct LogSummary {
    pub segments: usize,
    pub frames: u64,
    pub records: u64,
    pub payload_bytes: u64,
    pub disk_bytes: u64,
    pub first_sequence: u64,
    pub next_sequence: u64,
    pub acknowledged: u64,
    /// Records stored and not yet delivered.
    pub backlog_records: u64,
    pub torn_tail: Option<TornTailJson>,
    pub unfinished_roll: bool,
    /// The cursor is missing or unreadable (not damage: the next start resumes from the
    /// oldest segment and delivers these records, some again); issue 13.
    pub cursor_reset: Option<String>,
}

impl From<&VerifyReport> for LogSummary {
    fn from(r: &VerifyReport) -> Self {
        LogSummary {
            segments: r.segments,
            frames: r.frames,
            records: r.records,
            payload_bytes: r.payload_bytes,
            disk_bytes: r.disk_bytes,
            first_sequence: r.first_seq,
            next_sequence: r.next_seq,
            acknowledged: r.acked,
            backlog_records: r.next_seq.saturating_sub(1).saturating_sub(r.acked),
            torn_tail: r.torn_tail.as_ref().map(|t| TornTailJson {
                file: t.file.display().to_string(),
                start: t.start,
                end: t.end,
                reason: t.reason.to_string(),
            }),
            unfinished_roll: r.unfinished_roll,
            cursor_reset: r.cursor_reset.as_ref().map(|c| c.to_string()),
        }
    }
}

/// The damage found, in `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct DamageJson {
    /// `"log"` or `"dead-letters"`.
    pub log: &'static str,
    pub file: String,
    pub offset: u64,
    pub reason: String,
}

/// The whole `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyJson {
    pub intact: bool,
    pub dir: String,
    /// The main log, when intact.
    pub log: Option<LogSummary>,
    /// The dead-letter log, when there is one and it is intact.
    pub dead_letters: Option<LogSummary>,
    pub damage: Option<DamageJson>,
    /// What the operator can do, when damaged.
    pub next_steps: Vec<String>,
}

/// Runs `echopost verify`.
pub fn run(args: &VerifyArgs) -> CommandResult {
    let target = resolve(&args.dirs)?;
    let (doc, text) = check(&target)?;
    let out = if args.json {
        let mut s = crate::escape::json_pretty(&doc)
            .map_err(|e| CommandError::fatal(format!("cannot encode the report: {e}")))?;
        s.push('\n');
        s
    } else {
        text
    };
    print_stdout(&out)?;
    Ok(if doc.intact {
        ExitCode::Clean
    } else {
        ExitCode::Corruption
    })
}

/// Verifies `target.dir`; returns the JSON document and the text report.
pub fn check(target: &Target) -> Result<(VerifyJson, String), CommandError> {
    let dir = &target.dir;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CommandError::usage(format!(
                "{} is not a directory; pass the EchoPost state directory with --dir",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(nothing_there(target, "does not exist: nothing to verify"));
        }
        Err(e) => {
            return Err(CommandError::fatal(format!(
                "cannot access {}: {e}",
                dir.display()
            )));
        }
    }
    let mut doc = VerifyJson {
        intact: true,
        dir: dir.display().to_string(),
        log: None,
        dead_letters: None,
        damage: None,
        next_steps: Vec::new(),
    };
    let main = match scan(dir, "log")? {
        Ok(r) => r,
        Err(c) => return Ok(damaged(doc, dir, "log", &c)),
    };
    doc.log = Some(LogSummary::from(&main));
    let dl_dir = dead_letters::dead_letter_dir(dir);
    let dl = if dl_dir.is_dir() {
        match scan(&dl_dir, "dead-letters")? {
            Ok(r) => Some(r),
            Err(c) => return Ok(damaged(doc, dir, "dead-letters", &c)),
        }
    } else {
        None
    };
    doc.dead_letters = dl.as_ref().map(LogSummary::from);
    let text = intact_text(dir, &main, dl.as_ref());
    Ok((doc, text))
}

/// Verifies one log directory: `Ok(Ok)` intact, `Ok(Err)` damaged, `Err` could not check.
fn scan(dir: &Path, what: &str) -> Result<Result<VerifyReport, Corruption>, CommandError> {
    match echopost_log::verify(dir) {
        Ok(r) => Ok(Ok(r)),
        Err(echopost_log::Error::Corruption(c)) => Ok(Err(*c)),
        Err(e) => Err(CommandError::fatal(format!(
            "cannot verify the {what} in {}: {e}",
            dir.display()
        ))),
    }
}

fn intact_text(dir: &Path, main: &VerifyReport, dl: Option<&VerifyReport>) -> String {
    let s = LogSummary::from(main);
    let mut out = format!("intact: {}\n", dir.display());
    out.push_str(&format!(
        "  checked    {} segment(s), {} frame(s), {} on disk\n",
        s.segments,
        fmt_count(s.frames),
        fmt_bytes(s.disk_bytes)
    ));
    out.push_str(&format!(
        "  records    {} stored ({} of record data); sequences {} to {}\n",
        fmt_count(s.records),
        fmt_bytes(s.payload_bytes),
        s.first_sequence,
        s.next_sequence.saturating_sub(1)
    ));
    let delivered = if s.acknowledged == 0 {
        "nothing yet".to_owned()
    } else {
        format!("up to sequence {}", s.acknowledged)
    };
    out.push_str(&format!(
        "  delivered  {delivered}; backlog {} record(s)\n",
        fmt_count(s.backlog_records)
    ));
    out.push_str(&notes(main));
    match dl {
        Some(d) => {
            out.push_str(&format!(
                "  dead letters intact: {} record(s) not yet requeued (`echopost dead-letters list`)\n",
                fmt_count(d.next_seq.saturating_sub(1).saturating_sub(d.acked))
            ));
            out.push_str(&notes(d));
        }
        None => out.push_str("  dead letters none\n"),
    }
    out
}

/// Notes about states that are not damage: a torn tail, an unfinished roll.
fn notes(r: &VerifyReport) -> String {
    let mut out = String::new();
    if let Some(t) = &r.torn_tail {
        out.push_str(&format!(
            "  note       torn write at the end of {} (bytes {} to {}: {}); not damage: an append interrupted by a crash (or being written right now by a running daemon). The next start drops it; it was never acknowledged.\n",
            t.file.display(),
            t.start,
            t.end,
            t.reason
        ));
    }
    if r.unfinished_roll {
        out.push_str("  note       a segment switch was interrupted by a crash; the next start completes it.\n");
    }
    if let Some(c) = &r.cursor_reset {
        out.push_str(&format!(
            "  note       {c}. Not damage: the cursor only says what may be skipped; the next start rewrites it.\n"
        ));
    }
    out
}

/// The report for damage in `log` (`"log"` or `"dead-letters"`).
fn damaged(
    mut doc: VerifyJson,
    dir: &Path,
    log: &'static str,
    c: &Corruption,
) -> (VerifyJson, String) {
    let steps = next_steps(dir, log, c);
    doc.intact = false;
    doc.log = None;
    doc.damage = Some(DamageJson {
        log,
        file: c.file.display().to_string(),
        offset: c.offset,
        reason: c.kind.to_string(),
    });
    doc.next_steps = steps.clone();
    let what = if log == "log" {
        "the log"
    } else {
        "the dead-letter log"
    };
    let mut text = format!("DAMAGED: {what} in {} is corrupt\n", dir.display());
    text.push_str(&format!("  file    {}\n", c.file.display()));
    text.push_str(&format!("  offset  byte {}\n", c.offset));
    text.push_str(&format!("  reason  {}\n", c.kind));
    text.push_str("\nWhat you can do:\n");
    for (i, s) in steps.iter().enumerate() {
        text.push_str(&format!("  {}. {s}\n", i + 1));
    }
    (doc, text)
}

fn next_steps(dir: &Path, log: &str, c: &Corruption) -> Vec<String> {
    let d = dir.display();
    let aside: PathBuf = {
        let mut name = dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".damaged");
        dir.with_file_name(name)
    };
    let a = aside.display();
    if log == "log" {
        vec![
            "Nothing was changed. `echopost run` refuses this directory (exit 4) until it is dealt with; EchoPost never repairs damage by guessing.".to_owned(),
            format!(
                "Recommended: stop any echopost on it, then run `echopost salvage --dir {d}`: it moves {} aside into {d}/quarantine/ (every byte kept), keeps every record still readable before and after byte {}, prints the exact sequences lost, and the next `echopost run --dir {d}` delivers the rest.",
                c.file.display(),
                c.offset
            ),
            format!(
                "Or keep the whole directory as evidence: stop any echopost on it and move it aside (mv {d} {a}); the next `echopost run --dir {d}` then starts a fresh, empty directory (applications using the fallback helper do this by themselves)."
            ),
            "Check the disk and the file system (dmesg, smartctl, fsck): damage in a checksummed log usually means the storage lost or altered data.".to_owned(),
        ]
    } else {
        vec![
            "Nothing was changed. The main log is intact and keeps replaying; only the dead letters (records the main server rejected permanently) are affected.".to_owned(),
            format!(
                "Keep a copy for analysis: cp -a {} {a}-dead-letters",
                dead_letters::dead_letter_dir(dir).display()
            ),
            format!(
                "`echopost dead-letters list --dir {d}` prints the dead letters before the damage; once you have what you need, stop echopost and remove {} so new dead letters can be written.",
                dead_letters::dead_letter_dir(dir).display()
            ),
            "Check the disk and the file system (dmesg, smartctl, fsck).".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_log::{Log, LogOptions};

    #[test]
    fn intact_and_damaged() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        {
            let log = Log::open(&dir, LogOptions::default()).unwrap();
            log.append(&[b"one"]).unwrap();
            log.append(&[b"two"]).unwrap();
            log.close().unwrap();
        }
        let t = Target {
            dir: dir.clone(),
            socket: dir.join("s"),
        };
        let (doc, text) = check(&t).unwrap();
        assert!(doc.intact, "{text}");
        assert_eq!(doc.log.as_ref().unwrap().records, 2);
        assert!(text.starts_with("intact:"), "{text}");

        // Flip a byte inside the first frame's body (the second frame stays valid, so this
        // cannot pass for a torn tail).
        let seg = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = echopost_log::format::SEGMENT_HEADER_LEN as usize
            + echopost_log::format::FRAME_HEADER_LEN
            + 1;
        bytes[at] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let (doc, text) = check(&t).unwrap();
        assert!(!doc.intact);
        let damage = doc.damage.unwrap();
        assert_eq!(damage.file, seg.display().to_string());
        assert!(text.contains("What you can do"), "{text}");
        assert!(text.contains(&seg.display().to_string()), "{text}");
    }
}
