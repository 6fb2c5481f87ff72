//! Pre-sized segments (issue 17): appends overwrite the zeros of a file created at full
//! size, recovery takes the zero tail of such a file for the end of the log, frames left
//! in a file from an earlier life are never read as new records, and logs written before
//! (growing segments, no pre-size in the header) keep opening and reading.
//!
//! The random suites cover the same lifecycle at scale: `crash_simulation` draws
//! pre-sized or growing segments per seed (power loss with and without torn writes, kills,
//! crashes during recovery), `io_faults` and `corruption` run on the default, pre-sized,
//! options.

use crate::support::common::*;
use echopost_log::format::{self, encode_presized_segment_header, segment_name};
use echopost_log::sim::SimFs;
use echopost_log::{CorruptionKind, Error, FileSystem, LogOptions, verify_with_fs};
use std::sync::Arc;

const SEGMENT: u64 = 64 << 10;

fn presized() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT,
        ..LogOptions::default()
    }
}

fn seg_path(first: u64) -> std::path::PathBuf {
    sim_dir().join(segment_name(first))
}

fn file_len(fs: &SimFs, first: u64) -> u64 {
    fs.read_file(&seg_path(first)).map_or(0, |c| c.len() as u64)
}

/// A frame holding `records` from `first_seq`, as the engine writes it.
fn frame_bytes(records: &[Vec<u8>], first_seq: u64) -> Vec<u8> {
    let mut p = format::PreparedFrame::encode(records, echopost_log::Compression::None).unwrap();
    p.seal_header(first_seq);
    p.bytes
}

#[test]
fn a_new_segment_is_created_at_full_size_and_appends_do_not_grow_it() {
    let fs = SimFs::new(1);
    let log = open_sim(&fs, presized()).unwrap();
    assert_eq!(file_len(&fs, 1), SEGMENT, "created at full size");
    let growing = SimFs::new(1);
    let _other = open_sim(
        &growing,
        LogOptions {
            preallocate_segments: false,
            ..presized()
        },
    )
    .unwrap();
    assert_eq!(
        fs.used_bytes(),
        growing.used_bytes(),
        "the pre-sized tail is sparse: it takes no space"
    );
    for i in 0..20 {
        log.append(&[rec(i, 200)]).unwrap();
        assert_eq!(file_len(&fs, 1), SEGMENT, "an append changed the file size");
    }
    // Rolling seals the old segment at its data and pre-sizes the new one.
    while log.stats().segments < 2 {
        log.append(&[rec(99, 4000)]).unwrap();
    }
    let sealed = log.stats();
    let first_len = file_len(&fs, 1);
    assert!(first_len < SEGMENT, "a sealed segment ends with its seal");
    let next = sealed.next_seq - 1;
    assert_eq!(file_len(&fs, next), SEGMENT, "the new segment is pre-sized");
    log.close().unwrap();
    // A clean close gives the unwritten tail back: the file ends at its data.
    let content = fs.read_file(&seg_path(next)).unwrap();
    assert!((content.len() as u64) < SEGMENT);
    assert_ne!(content.last(), Some(&0), "no zero tail after a clean close");
    // Reopening pre-sizes it again, to the length its header records.
    let log = open_sim(&fs, presized()).unwrap();
    assert_eq!(file_len(&fs, next), SEGMENT);
    assert_eq!(read_all(&log, 1, 100).unwrap().len() as u64, next);
}

#[test]
fn after_power_loss_the_zero_tail_is_the_end_of_the_log_not_a_torn_write() {
    for torn in [false, true] {
        for seed in 0..20 {
            let fs = SimFs::new(seed);
            let log = open_sim(&fs, presized()).unwrap();
            let mut durable = Vec::new();
            for i in 0..10 {
                log.append(&[rec(i, 100 + i as usize)]).unwrap();
                durable.push(rec(i, 100 + i as usize));
            }
            // Written, never synced: the crash may keep any prefix of it (with `torn`).
            for i in 10..15 {
                log.append_nowait(&[rec(i, 300)]).unwrap();
            }
            // Power fails while the log is open (its handles then fail: nothing is closed).
            fs.crash(torn);
            drop(log);
            let ctx = format!("seed {seed}, torn {torn}");
            assert_eq!(file_len(&fs, 1), SEGMENT, "{ctx}: still pre-sized");
            let v = verify_with_fs(Arc::new(fs.clone()), sim_dir())
                .unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
            let log = open_sim(&fs, presized()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let rep = log.recovery_report().clone();
            assert_eq!(v.torn_tail, rep.torn_tail, "{ctx}");
            let got = read_all(&log, 1, 100).unwrap();
            assert!(
                got.len() >= 10 && got.len() <= 15,
                "{ctx}: {} records",
                got.len()
            );
            for (i, r) in got.iter().enumerate() {
                assert_eq!(r.seq, i as u64 + 1, "{ctx}");
                let want = if i < 10 {
                    durable[i].clone()
                } else {
                    rec(i as u64, 300)
                };
                assert_eq!(r.data, want, "{ctx}: record {}", r.seq);
            }
            // Only a write the crash cut in the middle is torn; its bytes, not the
            // unwritten space after them, are reported.
            if let Some(t) = &rep.torn_tail {
                assert!(torn, "{ctx}: a clean power loss tears nothing: {t:?}");
                assert!(t.end < SEGMENT && t.start < t.end, "{ctx}: {t:?}");
            }
            if !torn {
                assert_eq!(
                    got.len(),
                    10,
                    "{ctx}: unsynced appends survived a clean power loss"
                );
            }
            // The next append continues right after what survived, and survives itself.
            let next = got.len() as u64 + 1;
            assert_eq!(log.append(&[b"after".to_vec()]).unwrap().first_seq, next);
            fs.crash(false);
            drop(log);
            let log = open_sim(&fs, presized()).unwrap();
            let again = read_all(&log, 1, 100).unwrap();
            assert_eq!(again.len() as u64, next, "{ctx}");
            assert_eq!(again[next as usize - 1].data, &b"after"[..], "{ctx}");
        }
    }
}

/// A pre-sized file whose bytes after the written frames hold frames from an earlier
/// life (valid checksums, but sequences of the past), behind zeros: they are never read
/// as new records. Recovery cuts them off as a torn tail, pre-sizes the file again (zeros),
/// and the appends that follow can never be mistaken for them or joined with them.
#[test]
fn frames_from_an_earlier_life_past_the_end_are_never_read() {
    let fs = SimFs::new(3);
    fs.create_dir_all(&sim_dir()).unwrap();
    let mut file = encode_presized_segment_header(1, SEGMENT).to_vec();
    let old: Vec<Vec<u8>> = (0..3).map(|i| rec(100 + i, 80)).collect();
    let live: Vec<Vec<u8>> = (0..2).map(|i| rec(i, 50)).collect();
    file.extend(frame_bytes(&live[..1], 1));
    file.extend(frame_bytes(&live[1..], 2));
    let end = file.len();
    file.resize(end + 4096, 0);
    // Old frames, as a file used before would hold them: an earlier life whose sequences
    // are all before the ones due now (3).
    file.extend(frame_bytes(&old[..2], 1));
    file.extend(frame_bytes(&old[2..], 2));
    file.resize(SEGMENT as usize, 0);
    fs.write_file(&seg_path(1), &file);
    let v = verify_with_fs(Arc::new(fs.clone()), sim_dir()).unwrap();
    let log = open_sim(&fs, presized()).unwrap();
    let t = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("cut as a torn tail");
    assert_eq!(v.torn_tail.as_ref(), Some(&t));
    assert_eq!((t.start, t.dropped_seqs), (end as u64, None));
    let got = read_all(&log, 1, 100).unwrap();
    assert_eq!(got.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), live);
    // The old bytes are gone, not merely skipped: the file reads zeros after the data.
    let content = fs.read_file(&seg_path(1)).unwrap();
    assert_eq!(content.len() as u64, SEGMENT);
    assert!(content[end..].iter().all(|&b| b == 0));
    let a = log.append(&[b"new".to_vec()]).unwrap();
    assert_eq!(a.first_seq, 3);
    fs.crash(false);
    drop(log);
    let log = open_sim(&fs, presized()).unwrap();
    let got = read_all(&log, 1, 100).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].data, &b"new"[..]);
}

/// An old frame behind the zeros that carries exactly the sequence due next cannot be
/// told from a write the crash reordered: recovery refuses to guess and names it.
#[test]
fn an_old_frame_with_the_next_sequence_behind_zeros_is_reported_not_read() {
    let fs = SimFs::new(4);
    fs.create_dir_all(&sim_dir()).unwrap();
    let mut file = encode_presized_segment_header(1, SEGMENT).to_vec();
    file.extend(frame_bytes(&[rec(0, 50)], 1));
    let end = file.len() as u64;
    file.resize(file.len() + 512, 0);
    let stale_at = file.len() as u64;
    file.extend(frame_bytes(&[rec(7, 50)], 2));
    file.resize(SEGMENT as usize, 0);
    fs.write_file(&seg_path(1), &file);
    match open_sim(&fs, presized()) {
        Err(Error::Corruption(c)) => {
            assert_eq!(c.offset, end);
            assert_eq!(
                c.kind,
                CorruptionKind::DamageBeforeValidData {
                    valid_frame_at: stale_at
                }
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_zeroed_last_frame_of_a_closed_log_is_still_a_reported_torn_write() {
    let fs = SimFs::new(5);
    let log = open_sim(&fs, presized()).unwrap();
    for i in 0..5 {
        log.append(&[rec(i, 100)]).unwrap();
    }
    log.close().unwrap();
    let mut content = fs.read_file(&seg_path(1)).unwrap();
    let n = content.len();
    let last = n - (32 + 4 + 100);
    content[last..].fill(0);
    fs.write_file(&seg_path(1), &content);
    let log = open_sim(&fs, presized()).unwrap();
    let t = log.recovery_report().torn_tail.clone().expect("reported");
    assert_eq!((t.start, t.end), (last as u64, n as u64));
    assert_eq!(read_all(&log, 1, 100).unwrap().len(), 4);
}

#[test]
fn a_log_with_growing_segments_opens_reads_and_continues() {
    let fs = SimFs::new(6);
    let growing = LogOptions {
        preallocate_segments: false,
        ..presized()
    };
    let log = open_sim(&fs, growing.clone()).unwrap();
    for i in 0..30 {
        log.append(&[rec(i, 3000)]).unwrap();
    }
    let segs = log.stats().segments;
    assert!(segs > 1);
    drop(log);
    let active = fs
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    let before = fs.read_file(&active).unwrap();
    assert_eq!(
        &before[12..16],
        &[0; 4],
        "written as before issue 17: no pre-size"
    );
    // Opened with the default (pre-sizing) options: nothing is rewritten, the active
    // segment keeps growing; the next new segment is pre-sized.
    let log = open_sim(&fs, presized()).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    assert_eq!(fs.read_file(&active).unwrap(), before);
    let got = read_all(&log, 1, 7).unwrap();
    assert_eq!(got.len(), 30);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.data, rec(i as u64, 3000));
    }
    while log.stats().segments == segs {
        log.append(&[rec(1, 3000)]).unwrap();
    }
    let new_seg = fs
        .files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap();
    assert_eq!(fs.read_file(&new_seg).unwrap().len() as u64, SEGMENT);
    fs.crash(false);
    drop(log);
    // And with pre-sizing off again, the pre-sized segment reads as well.
    let log = open_sim(&fs, growing).unwrap();
    assert!(read_all(&log, 1, 100).unwrap().len() > 30);
    log.close().unwrap();
}
