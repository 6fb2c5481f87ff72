//! Corruption detection: damage the files of a log at random and demand that the engine
//! either recovers exactly or names the damage.
//!
//! Base logs (uncompressed, zstd, one-record batches) have several sealed segments, an
//! active one with several frames, a cursor in the middle of the first segment, and a
//! `LOCK` file. Each case (a seed) picks a file — a sealed segment, the active segment,
//! the cursor, `LOCK`, or a junk file it creates — and an action: flip 1–3 bytes (often in
//! a segment or frame header), zero a range, truncate at a random offset, delete the file,
//! append random garbage, or append a copy of a valid frame. Then it runs `verify`, opens
//! the log, reads everything, and appends one more batch.
//!
//! Acceptable outcomes:
//! * **exact recovery**: open and the full read succeed, and return exactly the original
//!   records after the original cursor; the next append continues the sequence;
//! * **torn tail** (damage confined to the last frame of the active segment, which a torn
//!   write also produces): a suffix of whole batches is dropped, *only the last frame* for
//!   damage that leaves the rest of the file in place, and `recovery_report().torn_tail`
//!   names the active segment, the byte range from that frame's offset to the end of the
//!   file, and the frame's sequences (when its header still names the sequence that was
//!   due; the count is then the header's);
//! * **a shorter log** (truncation of the active segment exactly at a frame boundary, or
//!   inside its header): nothing tells this apart from a log that never got those appends
//!   (no file records where the log should end), so the rest must come back exactly; a
//!   truncated header is reported as `recreated_segment_header`. This is the one case that
//!   is not detected, by design; it is counted separately;
//! * **cursor reset** (the cursor file damaged, truncated, grown or deleted): not
//!   corruption (issue 13). Open and `verify` both report the same `cursor_reset`, resume
//!   after a sequence no later than the original cursor and no earlier than the oldest
//!   segment, and every record from there comes back exactly (some delivered ones again);
//! * **corruption**: open, read or verify returns `Error::Corruption`, and `verify` fails
//!   too, whose `file` is the damaged file (never the cursor). For a deleted segment the
//!   error names what revealed the absence: `MissingSuccessor` or `SegmentGap` whose
//!   expected first sequence is the deleted segment's, or `CursorOutOfRange` whose first
//!   stored sequence is past the cursor (the oldest segment was deleted).
//!
//! And `verify` agrees with open+read: it passes exactly when they succeed, reporting the
//! same torn tail. Nothing else is acceptable: in particular a damaged byte of a record
//! must never come back as data.
//!
//! # Running
//! * CI: 10,000 cases; the counts per outcome are printed and asserted.
//! * `ECHOPOST_CORRUPTION_CASES=N`: run N cases.
//! * `ECHOPOST_CORRUPTION_SEED=N`: replay exactly case N.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::support::sim_model::{self, dir, name, open, run_case};
use echopost_log::format::{
    self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, cursor_path, parse_segment_name,
};
use echopost_log::sim::{SimFs, SimRng};
use echopost_log::{
    Compression, CorruptionKind, Error, FileSystem, LOCK_FILE, LogOptions, StoredRecord,
    verify_with_fs,
};

const REPRO: &str = "ECHOPOST_CORRUPTION_SEED={seed} cargo test -p echopost-log --test it -- corruption:: --nocapture";

/// One frame of a base log.
#[derive(Debug, Clone, Copy)]
struct FrameInfo {
    offset: u64,
    len: u64,
    /// Sequences of a batch frame (`None` for a seal).
    seqs: Option<(u64, u64)>,
}

#[derive(Debug)]
struct Base {
    opts: LogOptions,
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Every record on disk, delivered or not.
    records: BTreeMap<u64, Vec<u8>>,
    acked: u64,
    /// First sequence of the oldest segment.
    first_on_disk: u64,
    next_seq: u64,
    /// Frames of each segment file, by path.
    frames: BTreeMap<PathBuf, Vec<FrameInfo>>,
    active: PathBuf,
}

fn build_base(variant: u64) -> Base {
    let mut rng = SimRng::new(0xBA5E + variant);
    let opts = LogOptions {
        segment_bytes: 4096,
        compression: if variant == 1 {
            Compression::Zstd { level: 1 }
        } else {
            Compression::None
        },
        ..LogOptions::default()
    };
    let fs = SimFs::new(variant);
    let log = open(&fs, &opts).expect("open base");
    let mut records = BTreeMap::new();
    let mut n_batches = 0;
    let active_frames = |fs: &SimFs| {
        let b = fs
            .read_file(&sim_model::segments(fs).pop().expect("segment"))
            .expect("file");
        let mut at = SEGMENT_HEADER_LEN as usize;
        let mut n = 0;
        while let Ok((h, _)) = format::parse_frame(&b[at..]) {
            at += h.frame_len() as usize;
            n += 1;
        }
        n
    };
    while log.stats().segments < 6 || n_batches < 40 || active_frames(&fs) < 4 {
        let k = if variant == 2 {
            1
        } else {
            1 + rng.below(4) as usize
        };
        let batch: Vec<Vec<u8>> = (0..k)
            .map(|_| {
                let len = rng.below(260) as usize;
                let compressible = rng.chance(50);
                sim_model::bytes(&mut rng, len, compressible)
            })
            .collect();
        let a = log.append(&batch).expect("append");
        for (i, r) in batch.into_iter().enumerate() {
            records.insert(a.first_seq + i as u64, r);
        }
        n_batches += 1;
    }
    // A few frames in the active segment, then acknowledge into the second segment so the
    // first is deleted and the cursor sits inside the (new) first segment.
    let seg_firsts: Vec<u64> = sim_model::segments(&fs)
        .iter()
        .filter_map(|p| parse_segment_name(&name(p)))
        .collect();
    let acked = seg_firsts[1] + (seg_firsts[2] - seg_firsts[1]) / 2;
    log.ack(acked).expect("ack");
    let st = log.stats();
    drop(log);
    let files: Vec<(PathBuf, Vec<u8>)> = fs
        .files()
        .into_iter()
        .map(|p| {
            let b = fs.read_file(&p).expect("file");
            (p, b)
        })
        .collect();
    let mut frames = BTreeMap::new();
    for (p, b) in &files {
        if p.extension().is_some_and(|e| e == "seg") {
            let mut at = SEGMENT_HEADER_LEN as usize;
            let mut v = Vec::new();
            while at < b.len() {
                let (h, _) = format::parse_frame(&b[at..]).expect("base frames are valid");
                v.push(FrameInfo {
                    offset: at as u64,
                    len: h.frame_len(),
                    seqs: (h.kind == format::FrameKind::Batch)
                        .then(|| (h.first_seq, h.end_seq() - 1)),
                });
                at += h.frame_len() as usize;
            }
            frames.insert(p.clone(), v);
        }
    }
    let active = sim_model::segments(&fs).pop().expect("segments");
    assert!(
        frames.len() >= 5,
        "base log too small: {} segments",
        frames.len()
    );
    assert!(
        frames[&active].len() >= 2,
        "active segment needs several frames"
    );
    let first_on_disk = seg_firsts[1];
    records.retain(|&s, _| s >= first_on_disk);
    Base {
        opts,
        files,
        records,
        acked,
        first_on_disk,
        next_seq: st.next_seq,
        frames,
        active,
    }
}

fn bases() -> &'static [Base] {
    static B: OnceLock<Vec<Base>> = OnceLock::new();
    B.get_or_init(|| (0..3).map(build_base).collect())
}

#[derive(Debug, Clone)]
enum Action {
    /// XOR these bytes (offset, nonzero mask).
    Flip(Vec<(u64, u8)>),
    Zero {
        at: u64,
        len: u64,
    },
    Truncate(u64),
    Delete,
    AppendGarbage(Vec<u8>),
    AppendFrameCopy(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Sealed,
    Active,
    Cursor,
    Lock,
    Junk,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    cases: u64,
    exact: u64,
    torn_tail: u64,
    shorter_log: u64,
    corruption: u64,
    cursor_reset: u64,
    records_verified: u64,
}

fn pick_target(rng: &mut SimRng, base: &Base) -> (Target, PathBuf) {
    let sealed: Vec<&PathBuf> = base.frames.keys().filter(|p| **p != base.active).collect();
    match rng.below(100) {
        0..=44 => (
            Target::Sealed,
            sealed[rng.below(sealed.len() as u64) as usize].clone(),
        ),
        45..=79 => (Target::Active, base.active.clone()),
        80..=91 => (Target::Cursor, cursor_path(&dir())),
        92..=95 => (Target::Lock, dir().join(LOCK_FILE)),
        _ => {
            let junk = [
                "cursor.tmp",
                "notes.txt",
                "0000000000000000001.seg",
                "x.seg",
            ];
            (
                Target::Junk,
                dir().join(junk[rng.below(junk.len() as u64) as usize]),
            )
        }
    }
}

fn pick_action(rng: &mut SimRng, base: &Base, target: Target, path: &Path, len: u64) -> Action {
    let frames = base.frames.get(path);
    let pos = |rng: &mut SimRng| -> u64 {
        // Often inside a header, where a flip changes the meaning rather than the data.
        if let Some(frames) = frames
            && rng.chance(35)
        {
            if rng.chance(20) {
                return rng.below(SEGMENT_HEADER_LEN);
            }
            let f = frames[rng.below(frames.len() as u64) as usize];
            return f.offset + rng.below(FRAME_HEADER_LEN as u64);
        }
        if let Some(frames) = frames
            && target == Target::Active
            && rng.chance(30)
        {
            // The last frame, the one place where damage may pass for a torn write.
            let f = frames[frames.len() - 1];
            return f.offset + rng.below(f.len);
        }
        rng.below(len.max(1))
    };
    match rng.below(100) {
        0..=44 if len > 0 => {
            let n = 1 + rng.below(3);
            Action::Flip(
                (0..n)
                    .map(|_| (pos(rng), 1 + rng.below(255) as u8))
                    .collect(),
            )
        }
        45..=52 if len > 0 => {
            let at = pos(rng);
            Action::Zero {
                at,
                len: 1 + rng.below(512).min(len - at - 1),
            }
        }
        53..=72 if len > 0 => {
            // Often exactly at a frame boundary.
            if let Some(frames) = frames
                && rng.chance(30)
            {
                let f = frames[rng.below(frames.len() as u64) as usize];
                Action::Truncate(f.offset)
            } else {
                Action::Truncate(rng.below(len))
            }
        }
        73..=82 if len > 0 || target == Target::Junk => Action::Delete,
        83..=92 => {
            let n = 1 + rng.below(100) as usize;
            let compressible = rng.chance(30);
            Action::AppendGarbage(sim_model::bytes(rng, n, compressible))
        }
        _ => {
            // A valid frame copied from anywhere in the log.
            let all: Vec<(&PathBuf, &FrameInfo)> = base
                .frames
                .iter()
                .flat_map(|(p, fs)| fs.iter().map(move |f| (p, f)))
                .collect();
            let (p, f) = all[rng.below(all.len() as u64) as usize];
            let bytes = &base.files.iter().find(|(q, _)| q == p).expect("file").1;
            Action::AppendFrameCopy(bytes[f.offset as usize..(f.offset + f.len) as usize].to_vec())
        }
    }
}

/// The result of open + read everything + one more append.
struct Opened {
    records: Vec<StoredRecord>,
    acked: u64,
    next_seq: u64,
    report: echopost_log::RecoveryReport,
}

fn open_and_read(fs: &SimFs, base: &Base, rng: &mut SimRng) -> Result<Opened, Error> {
    let log = open(fs, &base.opts)?;
    let st = log.stats();
    let records = sim_model::read_all(&log, 1 + rng.below(st.acked + 1), rng)?;
    let a = log.append(&[b"after".as_slice()])?;
    assert_eq!(
        a.first_seq, st.next_seq,
        "the next append continues the sequence"
    );
    let mut r = log.reader(a.first_seq);
    let got = r.next_batch(10, 1 << 20)?;
    assert_eq!(got.len(), 1);
    assert_eq!(got.first().map(|r| r.data), Some(&b"after"[..]));
    Ok(Opened {
        records,
        acked: st.acked,
        next_seq: st.next_seq,
        report: log.recovery_report().clone(),
    })
}

fn run_case_seed(seed: u64) -> Result<Counts, String> {
    let mut rng = SimRng::new(seed);
    let bases = bases();
    let base = &bases[(seed % bases.len() as u64) as usize];
    let fs = SimFs::new(seed);
    fs.create_dir_all(&dir()).expect("mkdir");
    for (p, b) in &base.files {
        fs.write_file(p, b);
    }
    let (target, path) = pick_target(&mut rng, base);
    let original = fs.read_file(&path);
    let len = original.as_ref().map_or(0, |b| b.len() as u64);
    let action = pick_action(&mut rng, base, target, &path, len);
    let ctx = format!(
        "base {} ({:?}), {:?} {} ({len} bytes): {}",
        seed % bases.len() as u64,
        base.opts.compression,
        target,
        name(&path),
        describe(&action)
    );
    let mut content = original.clone().unwrap_or_default();
    match &action {
        Action::Flip(v) => {
            for &(at, mask) in v {
                content[at as usize] ^= mask;
            }
        }
        Action::Zero { at, len } => {
            content[*at as usize..(*at + *len) as usize].fill(0);
        }
        Action::Truncate(at) => content.truncate(*at as usize),
        Action::Delete => {}
        Action::AppendGarbage(g) | Action::AppendFrameCopy(g) => content.extend_from_slice(g),
    }
    let unchanged = original.as_deref() == Some(&content[..]) && !matches!(action, Action::Delete);
    if matches!(action, Action::Delete) {
        fs.delete_file(&path);
    } else {
        fs.write_file(&path, &content);
    }

    let verified = verify_with_fs(Arc::new(fs.clone()), dir());
    let opened = open_and_read(&fs, base, &mut rng);
    let mut c = Counts {
        cases: 1,
        ..Counts::default()
    };
    match (&verified, &opened) {
        (Ok(v), Ok(o)) => {
            ensure!(
                v.torn_tail == o.report.torn_tail,
                "{ctx}: verify reports torn tail {:?}, open {:?}",
                v.torn_tail,
                o.report.torn_tail
            );
            ensure!(
                v.cursor_reset == o.report.cursor_reset,
                "{ctx}: verify reports cursor reset {:?}, open {:?}",
                v.cursor_reset,
                o.report.cursor_reset
            );
            if let Some(reset) = &o.report.cursor_reset {
                ensure!(
                    target == Target::Cursor,
                    "{ctx}: cursor reset ({reset}) though the cursor was not touched"
                );
                ensure!(
                    o.acked == reset.acked
                        && o.acked <= base.acked
                        && o.acked + 1 >= base.first_on_disk,
                    "{ctx}: cursor reset to {} (report {reset}), outside {}..={}",
                    o.acked,
                    base.first_on_disk - 1,
                    base.acked
                );
                c.cursor_reset += 1;
            } else {
                ensure!(
                    o.acked == base.acked,
                    "{ctx}: cursor came back as {} instead of {}",
                    o.acked,
                    base.acked
                );
            }
            // Records: exactly the original ones, up to where the log now ends.
            let mut want = o.acked + 1;
            for r in &o.records {
                ensure!(
                    r.seq == want,
                    "{ctx}: read sequence {} where {want} was due",
                    r.seq
                );
                let orig = base.records.get(&r.seq).ok_or_else(|| {
                    format!(
                        "{ctx}: sequence {} did not exist in the original log",
                        r.seq
                    )
                })?;
                ensure!(
                    r.data == orig,
                    "{ctx}: record {} came back different ({} bytes vs {}): damaged data \
                     returned as valid",
                    r.seq,
                    r.data.len(),
                    orig.len()
                );
                want += 1;
                c.records_verified += 1;
            }
            ensure!(
                o.next_seq == want,
                "{ctx}: next_seq {} but records end before {want}",
                o.next_seq
            );
            if want == base.next_seq {
                ensure!(
                    o.report
                        .torn_tail
                        .as_ref()
                        .is_none_or(|t| t.dropped_seqs.is_none() && t.file == base.active),
                    "{ctx}: nothing was lost but a torn tail with records was reported: {:?}",
                    o.report.torn_tail
                );
                c.exact += 1;
            } else {
                ensure!(
                    target == Target::Active,
                    "{ctx}: records {want}..{} are gone although the damage is outside the \
                     active segment",
                    base.next_seq
                );
                let frames = &base.frames[&base.active];
                let dropped_at = frames
                    .iter()
                    .find(|f| f.seqs.is_some_and(|(a, _)| a == want))
                    .ok_or_else(|| format!("{ctx}: the log now ends at {want}, inside a batch"))?;
                let last = frames[frames.len() - 1];
                match (&o.report.torn_tail, &action) {
                    (Some(t), _) => {
                        ensure!(
                            t.file == base.active
                                && t.start == dropped_at.offset
                                && t.end == content.len() as u64,
                            "{ctx}: torn tail {t:?} should name {} bytes {}..{}",
                            name(&base.active),
                            dropped_at.offset,
                            content.len()
                        );
                        let (a, b) = dropped_at.seqs.expect("batch");
                        if let Some((x, y)) = t.dropped_seqs {
                            ensure!(
                                x == a && (y == b || header_count_damaged(&action, dropped_at)),
                                "{ctx}: torn tail reports sequences {x}..={y} dropped, but \
                                 the dropped frame held {a}..={b}"
                            );
                        }
                        if !matches!(action, Action::Truncate(_)) {
                            // Never drop a frame that a valid frame follows: every dropped
                            // frame must itself be damaged.
                            let intact = frames
                                .iter()
                                .filter(|f| f.offset >= dropped_at.offset)
                                .find(|f| !touched(&action, f));
                            ensure!(
                                intact.is_none(),
                                "{ctx}: recovery dropped frames from {} on, but the frame at {} \
                                 is intact: a valid frame followed the damage",
                                dropped_at.offset,
                                intact.map_or(0, |f| f.offset)
                            );
                            ensure!(
                                touched(&action, &last),
                                "{ctx}: frames dropped though the last frame is intact"
                            );
                        }
                        c.torn_tail += 1;
                    }
                    (None, Action::Truncate(at)) if *at == dropped_at.offset => {
                        c.shorter_log += 1;
                    }
                    (None, Action::Truncate(at)) if *at < SEGMENT_HEADER_LEN => {
                        ensure!(
                            o.report.recreated_segment_header,
                            "{ctx}: the active segment's header was truncated away but the \
                             report does not say it was re-created"
                        );
                        c.shorter_log += 1;
                    }
                    (None, _) => {
                        return Err(format!(
                            "{ctx}: records {want}..{} silently dropped (no torn tail \
                             reported)",
                            base.next_seq
                        ));
                    }
                }
            }
        }
        (Err(Error::Corruption(vc)), Err(Error::Corruption(oc))) => {
            ensure!(
                target != Target::Cursor,
                "{ctx}: damage to the cursor reported as corruption ({oc}): an unreadable \
                 cursor means starting from the oldest segment"
            );
            for (who, cor) in [("verify", vc), ("open/read", oc)] {
                if matches!(action, Action::Delete) {
                    let first = parse_segment_name(&name(&path));
                    let ok = match (&cor.kind, first) {
                        (
                            CorruptionKind::MissingSuccessor { expected_first_seq }
                            | CorruptionKind::SegmentGap {
                                expected_first_seq, ..
                            },
                            Some(f),
                        ) => *expected_first_seq == f,
                        (
                            CorruptionKind::CursorOutOfRange {
                                first_seq, acked, ..
                            },
                            Some(_),
                        ) => *first_seq > acked + 1,
                        _ => false,
                    };
                    ensure!(
                        ok,
                        "{ctx}: {who} reported {cor}, which does not reveal the deleted file"
                    );
                } else {
                    ensure!(
                        cor.file == path,
                        "{ctx}: {who} reported {cor}, naming the wrong file"
                    );
                }
            }
            c.corruption += 1;
        }
        (Ok(v), Err(e)) => {
            return Err(format!(
                "{ctx}: verify passed ({v:?}) but open/read failed: {e}"
            ));
        }
        (Err(e), Ok(o)) => {
            return Err(format!(
                "{ctx}: verify failed ({e}) but open/read succeeded ({} records)",
                o.records.len()
            ));
        }
        (v, o) => {
            return Err(format!(
                "{ctx}: unexpected outcome: verify {:?}, open/read {:?}",
                v.as_ref().err(),
                o.as_ref().err()
            ));
        }
    }
    if unchanged || matches!(target, Target::Lock | Target::Junk) {
        ensure!(c.exact == 1, "{ctx}: harmless change but no exact recovery");
    }
    Ok(c)
}

/// Whether a flip or zeroing changed a byte of the frame.
fn touched(action: &Action, f: &FrameInfo) -> bool {
    let bytes = f.offset..f.offset + f.len;
    match action {
        Action::Flip(v) => v.iter().any(|(at, _)| bytes.contains(at)),
        Action::Zero { at, len } => *at < bytes.end && at + len > bytes.start,
        _ => false,
    }
}

/// Whether a flip or zeroing touched the count field of the frame's header,
/// so that the sequences it announces are not the ones it held.
fn header_count_damaged(action: &Action, f: &FrameInfo) -> bool {
    let fields = f.offset + 12..f.offset + 16;
    match action {
        Action::Flip(v) => v.iter().any(|(at, _)| fields.contains(at)),
        Action::Zero { at, len } => *at < fields.end && at + len > fields.start,
        _ => false,
    }
}

fn describe(a: &Action) -> String {
    match a {
        Action::Flip(v) => format!("flip {v:?}"),
        Action::Zero { at, len } => format!("zero {len} bytes at {at}"),
        Action::Truncate(at) => format!("truncate at {at}"),
        Action::Delete => "delete".to_owned(),
        Action::AppendGarbage(g) => format!("append {} garbage bytes", g.len()),
        Action::AppendFrameCopy(g) => format!("append a copy of a {}-byte frame", g.len()),
    }
}

#[test]
fn random_damage_is_recovered_exactly_or_reported() {
    let started = Instant::now();
    if let Some(seed) = sim_model::env_u64("ECHOPOST_CORRUPTION_SEED") {
        let c = run_case(seed, REPRO, run_case_seed);
        println!("corruption replayed seed={seed}: {c:?}");
        return;
    }
    let cases = sim_model::env_u64("ECHOPOST_CORRUPTION_CASES").unwrap_or(10_000);
    let mut t = Counts::default();
    for seed in 0..cases {
        let c = run_case(seed, REPRO, run_case_seed);
        t.cases += c.cases;
        t.exact += c.exact;
        t.torn_tail += c.torn_tail;
        t.shorter_log += c.shorter_log;
        t.corruption += c.corruption;
        t.cursor_reset += c.cursor_reset;
        t.records_verified += c.records_verified;
    }
    let msg = format!(
        "corruption: {} corruptions tried: {} recovered exactly, {} reported corruption naming \
         the file, {} dropped a torn last frame with a report, {} undetectable truncations of \
         the active segment (a shorter log), {} of the exact recoveries resumed from a damaged \
         or missing cursor with a report; {} records verified byte for byte; {:.1?}",
        t.cases,
        t.exact,
        t.corruption,
        t.torn_tail,
        t.shorter_log,
        t.cursor_reset,
        t.records_verified,
        started.elapsed()
    );
    sim_model::report(&msg);
    assert_eq!(
        t.cases,
        t.exact + t.torn_tail + t.shorter_log + t.corruption,
        "{msg}"
    );
    assert!(t.cases >= cases && t.corruption > cases / 3, "{msg}");
    assert!(
        t.torn_tail > 0 && t.exact > 0 && t.cursor_reset > 0,
        "{msg}"
    );
}

/// Replays one case as a named regression test.
fn regression(seed: u64) {
    let c = run_case(seed, REPRO, run_case_seed);
    assert_eq!(c.cases, 1);
}

/// A flip in the sequence field of the active segment's last frame header: recovery dropped
/// the frame (right) but reported the garbage sequences the damaged header announced.
/// Fixed in `recovery::header_seqs_at`: only a header naming the sequence that was due is
/// believed.
#[test]
fn regression_seed_62_torn_tail_reports_only_believable_sequences() {
    regression(62);
}

/// A copy of a sealed segment's own seal appended after it: `verify` called it data after
/// the seal, but readers stopped at the first seal and never noticed. Fixed in
/// `Reader::load_frame`: a seal must end its segment.
#[test]
fn regression_seed_790_bytes_after_a_seal_are_seen_by_readers() {
    regression(790);
}

/// A seal copied from another segment appended to a sealed one: the error named the
/// successor segment (byte 0) instead of the segment whose seal is wrong. Fixed in
/// `recovery.rs` (`analyze_with_fs`): `SegmentGap` names the segment whose end disagrees, at its seal.
#[test]
fn regression_seed_796_segment_gap_names_the_segment_that_makes_the_claim() {
    regression(796);
}
