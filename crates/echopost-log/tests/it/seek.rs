//! Readers opened in the middle of a segment start from the log's seek index (the sampled
//! frame starts the writer and earlier readers noted), not from the segment's first frame
//! (issue 16: a daemon polled for its status re-read its whole active segment per call).
//! Whatever the start, they return exactly the records at and after their position.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use crate::support::common::*;
use echopost_log::{Log, LogOptions};

/// 64 batches of 100 records of 1 KiB: about 6.5 MiB in one segment, several marks.
fn fill(log: &Log) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for b in 0..64u64 {
        let batch: Vec<Vec<u8>> = (0..100).map(|i| rec(b * 100 + i, 1024)).collect();
        log.append(&batch).unwrap();
        all.extend(batch);
    }
    all
}

/// Flips one byte inside the first frame's body, on disk, under the open log.
fn damage_first_frame(dir: &std::path::Path) {
    let seg = segment_files(dir).into_iter().next().expect("a segment");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8; 1];
    let at = 4096;
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5A], at).unwrap();
}

#[test]
fn a_reader_opened_mid_segment_reads_exactly_from_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let all = fill(&log);
    assert_eq!(
        log.stats().segments,
        1,
        "one segment, so every start is mid-segment"
    );
    for from in [1u64, 2, 99, 100, 101, 1234, 3333, 5000, 6399, 6400] {
        let got = read_all(&log, from, 700).unwrap();
        assert_eq!(got.len() as u64, 6401 - from, "from {from}");
        for r in &got {
            assert_eq!(&r.data[..], &all[(r.seq - 1) as usize][..], "from {from}");
        }
    }
}

#[test]
fn written_frames_are_found_without_reading_the_segment_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let all = fill(&log);
    damage_first_frame(dir.path());
    // The writer marked where its frames start: a reader far into the segment never
    // reads the damaged first frame.
    let got = read_all(&log, 5001, 1000).unwrap();
    assert_eq!(got.len(), 1400);
    assert_eq!(&got[0].data[..], &all[5000][..]);
    // One starting at the front reads it and says so: the damage is real.
    let err = read_all(&log, 1, 1000).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn after_reopen_readers_fill_the_index_as_they_pass() {
    let dir = tempfile::tempdir().unwrap();
    let all = {
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let all = fill(&log);
        log.close().unwrap();
        all
    };
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    // A fresh index: the first reader scans from the segment's start, noting frames.
    let got = read_all(&log, 1, 1000).unwrap();
    assert_eq!(got.len(), 6400);
    damage_first_frame(dir.path());
    let got = read_all(&log, 4321, 1000).unwrap();
    assert_eq!(got.len(), 6400 - 4320);
    assert_eq!(&got[0].data[..], &all[4320][..]);
    assert!(
        read_all(&log, 1, 1000).is_err(),
        "the damage is before the mark"
    );
}
