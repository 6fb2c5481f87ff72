//! `salvage` (issue 13): after damage that open and `verify` refuse, every record that
//! can still be read is kept (before and after the damage, in order, under its own
//! sequence), the damaged file is moved into the quarantine byte for byte, and the lost
//! sequence ranges are exact.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::support::common::*;
use echopost_log::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use echopost_log::sim::SimFs;
use echopost_log::{Error, Log, salvage_with_fs, verify_with_fs};

fn quarantine() -> PathBuf {
    sim_dir().join("quarantine")
}

/// A log of one-record batches over many segments, the first 20 acknowledged.
fn build(fs: &SimFs) -> BTreeMap<u64, Vec<u8>> {
    let log = open_sim(fs, small_segments()).expect("open");
    let mut records = BTreeMap::new();
    for i in 1..=200 {
        let r = rec(i, 150);
        let a = log.append(std::slice::from_ref(&r)).expect("append");
        records.insert(a.first_seq, r);
    }
    log.ack(20).expect("ack");
    records
}

fn segments(fs: &SimFs) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(&sim_dir()) && p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The `(first, last)` sequences and offset of each batch frame of a segment.
fn frames(bytes: &[u8]) -> Vec<(u64, u64, usize)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while let Ok((h, _)) = format::parse_frame(&bytes[at..]) {
        if h.kind == format::FrameKind::Batch {
            out.push((h.first_seq, h.end_seq() - 1, at));
        }
        at += h.frame_len() as usize;
    }
    out
}

/// Opens the salvaged log and checks every record but the lost ones, in order.
fn check_rest(fs: &SimFs, records: &BTreeMap<u64, Vec<u8>>, lost: &[(u64, u64)]) -> usize {
    let log: Log = open_sim(fs, small_segments()).expect("the salvaged log opens");
    let got = read_all(&log, 0, 13).expect("read everything");
    let is_lost = |s: u64| lost.iter().any(|&(a, b)| (a..=b).contains(&s));
    let want: Vec<u64> = records
        .keys()
        .copied()
        .filter(|&s| s > 20 && !is_lost(s))
        .collect();
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs, want,
        "every readable record, in order, under its sequence"
    );
    for r in &got {
        assert_eq!(
            Some(&r.data.to_vec()),
            records.get(&r.seq),
            "record {}",
            r.seq
        );
    }
    got.len()
}

#[test]
fn a_flipped_byte_in_a_middle_segment_loses_exactly_its_frame() {
    let fs = SimFs::new(1);
    let records = build(&fs);
    let segs = segments(&fs);
    assert!(segs.len() >= 5, "{} segments", segs.len());
    let victim = segs[segs.len() / 2].clone();
    let original = fs.read_file(&victim).expect("segment");
    let fr = frames(&original);
    let (a, b, at) = fr[fr.len() / 2];
    let mut damaged = original.clone();
    damaged[at + FRAME_HEADER_LEN + 5] ^= 0x10;
    fs.write_file(&victim, &damaged);
    assert!(matches!(
        verify_with_fs(Arc::new(fs.clone()), sim_dir()),
        Err(Error::Corruption(_))
    ));

    let report = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine()).expect("salvage");
    assert_eq!(report.lost, vec![(a, b)], "{report:?}");
    assert_eq!(report.quarantined.len(), 1);
    let (from, to) = &report.quarantined[0];
    assert_eq!(from, &victim);
    assert_eq!(
        fs.read_file(to).expect("quarantined"),
        damaged,
        "every byte kept"
    );
    let v = verify_with_fs(Arc::new(fs.clone()), sim_dir()).expect("verifies after salvage");
    assert_eq!(v.lost, vec![(a, b)], "the gap is recorded in the log");
    let kept = check_rest(&fs, &records, &report.lost);
    println!(
        "salvage (flipped byte): lost {a}..={b}, {} records kept in the rewritten segment, {kept} readable in all",
        report.kept_records
    );
    // Salvaging an intact log changes nothing.
    let again = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine()).expect("again");
    assert_eq!(again, echopost_log::SalvageReport::default());
}

#[test]
fn a_missing_middle_segment_loses_exactly_its_range() {
    let fs = SimFs::new(2);
    let records = build(&fs);
    let segs = segments(&fs);
    let gone = segs[segs.len() / 2].clone();
    let first = format::parse_segment_name(&gone.file_name().unwrap().to_string_lossy()).unwrap();
    let next = format::parse_segment_name(
        &segs[segs.len() / 2 + 1]
            .file_name()
            .unwrap()
            .to_string_lossy(),
    )
    .unwrap();
    assert!(fs.delete_file(&gone));
    let report = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine()).expect("salvage");
    assert_eq!(report.lost, vec![(first, next - 1)], "{report:?}");
    check_rest(&fs, &records, &report.lost);
}

#[test]
fn a_missing_oldest_segment_moves_the_cursor_and_a_locked_directory_is_refused() {
    let fs = SimFs::new(3);
    let records = build(&fs);
    let segs = segments(&fs);
    let second =
        format::parse_segment_name(&segs[1].file_name().unwrap().to_string_lossy()).unwrap();
    assert!(fs.delete_file(&segs[0]));
    {
        let log = open_sim(&fs, small_segments());
        assert!(log.is_err(), "the damage is refused by open");
    }
    let owner = {
        // A daemon owning the directory: salvage must not touch it.
        let fs2 = fs.clone();
        echopost_log::FileSystem::try_lock(&fs2, &sim_dir().join("LOCK"))
            .expect("lock")
            .expect("free")
    };
    let e = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    drop(owner);
    let report = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine()).expect("salvage");
    assert_eq!(report.lost, vec![(21, second - 1)], "{report:?}");
    assert_eq!(report.cursor_moved, Some((20, second - 1)));
    check_rest(&fs, &records, &report.lost);
}

/// A segment named by a wild sequence (here 8.1 × 10^18, what a damaged file name can
/// say) after the real ones: the hole before it is no loss of records, so salvage refuses
/// it as corruption, promptly, and changes nothing. Found by fuzzing (`log_recovery`):
/// salvage wrote 1.9 billion gap frames for it and ran out of memory.
#[test]
fn a_successor_named_by_a_wild_sequence_is_refused_not_filled_with_gaps() {
    let fs = SimFs::new(1);
    build(&fs);
    let far = 8_102_099_357_864_587_376u64;
    fs.write_file(
        &sim_dir().join(format::segment_name(far)),
        &format::encode_segment_header(far),
    );
    let before: BTreeMap<PathBuf, Option<Vec<u8>>> = fs
        .files()
        .into_iter()
        .map(|p| {
            let c = fs.read_file(&p);
            (p, c)
        })
        .collect();
    let started = std::time::Instant::now();
    let got = salvage_with_fs(Arc::new(fs.clone()), &sim_dir(), &quarantine());
    assert!(
        matches!(got, Err(Error::Corruption(_))),
        "salvage must refuse the hole: {got:?}"
    );
    let after: BTreeMap<PathBuf, Option<Vec<u8>>> = fs
        .files()
        .into_iter()
        .map(|p| {
            let c = fs.read_file(&p);
            (p, c)
        })
        .collect();
    assert_eq!(after, before, "a refused salvage changes nothing");
    println!("refused in {:?}", started.elapsed());
}
