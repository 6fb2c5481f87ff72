//! `Reader::read_each` (issue 17): records lent from the reader's frame buffer must be
//! exactly what `next_batch` returns (same records, same bounds, same order), across
//! segments, compressed frames, partial frames and early stops.

use crate::support::common::*;
use echopost_log::sim::SimFs;
use echopost_log::{Compression, LogOptions};

/// Appends `frames` frames, frame `b` holding `frame(b)`; returns every record in order.
fn fill_frames(
    fs: &SimFs,
    opts: LogOptions,
    frames: u64,
    frame: impl Fn(u64) -> Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let log = open_sim(fs, opts).unwrap();
    let mut all = Vec::new();
    for b in 0..frames {
        let batch = frame(b);
        log.append(&batch).unwrap();
        all.extend(batch);
    }
    log.close().unwrap();
    all
}

/// 60 frames of 1 to 9 records of 40 to 340 bytes.
fn fill(fs: &SimFs, opts: LogOptions) -> Vec<Vec<u8>> {
    fill_frames(fs, opts, 60, |b| {
        (0..(b % 9 + 1))
            .map(|i| rec(b * 10 + i, 40 + (b * 37 + i * 11) as usize % 300))
            .collect()
    })
}

#[test]
fn read_each_lends_exactly_what_next_batch_returns() {
    for compression in [Compression::None, Compression::Zstd { level: 1 }] {
        let opts = LogOptions {
            compression,
            ..small_segments()
        };
        let fs = SimFs::new(9);
        let all = fill(&fs, opts.clone());
        let log = open_sim(&fs, opts).unwrap();
        assert!(log.stats().segments > 1, "several segments");
        for (max_records, max_bytes) in [(1, 1 << 20), (7, 1 << 20), (1000, 500), (1000, 1 << 20)] {
            let mut owned = log.reader(3);
            let mut lent = log.reader(3);
            loop {
                let a = owned.next_batch(max_records, max_bytes).unwrap();
                let mut b = Vec::new();
                let n = lent
                    .read_each(max_records, max_bytes, |seq, data| {
                        b.push((seq, data.to_vec()));
                        true
                    })
                    .unwrap();
                assert_eq!(n, b.len());
                let a: Vec<(u64, Vec<u8>)> =
                    a.into_iter().map(|r| (r.seq, r.data.to_vec())).collect();
                assert_eq!(a, b, "bounds {max_records}/{max_bytes}");
                if n == 0 {
                    break;
                }
                for (seq, data) in &b {
                    assert_eq!(data, &all[*seq as usize - 1]);
                }
            }
            assert_eq!(lent.position(), all.len() as u64 + 1);
        }
    }
}

#[test]
fn read_each_stops_when_asked_and_resumes_after_the_last_record_lent() {
    let fs = SimFs::new(10);
    let all = fill(&fs, small_segments());
    let log = open_sim(&fs, small_segments()).unwrap();
    let mut r = log.reader(1);
    let mut seen = Vec::new();
    loop {
        // Stop after every third record, in the middle of frames.
        let mut k = 0;
        let n = r
            .read_each(1000, 1 << 20, |seq, data| {
                seen.push((seq, data.to_vec()));
                k += 1;
                k < 3
            })
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 3);
    }
    assert_eq!(seen.len(), all.len());
    for (i, (seq, data)) in seen.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(data, &all[i]);
    }
}

/// A log of `frames` frames of 100 records of ~1000 bytes: several 1 MiB read chunks.
fn fill_large(fs: &SimFs, opts: LogOptions, frames: u64) -> Vec<Vec<u8>> {
    fill_frames(fs, opts, frames, |b| {
        (0..100)
            .map(|i| rec(b * 100 + i, 900 + (b * 31 + i * 7) as usize % 200))
            .collect()
    })
}

#[test]
fn records_kept_from_a_batch_survive_every_later_read() {
    // `next_batch` cuts records from the reader's read buffer; the reader must never read
    // into a buffer a kept record still refers to, whichever batches were dropped since.
    let opts = LogOptions {
        segment_bytes: 3 << 20,
        ..LogOptions::default()
    };
    let fs = SimFs::new(11);
    let all = fill_large(&fs, opts.clone(), 200);
    let log = open_sim(&fs, opts).unwrap();
    assert!(log.stats().segments > 1, "several segments");
    for (max_records, max_bytes) in [(5000, 4 << 20), (700, 1 << 20), (3000, 2 << 20)] {
        let mut r = log.reader(1);
        let mut kept = Vec::new();
        let mut owned = Vec::new();
        let mut k = 0;
        loop {
            let batch = r.next_batch(max_records, max_bytes).unwrap();
            if batch.is_empty() {
                break;
            }
            // Keep every third batch whole, a few records taken out of the next one (the
            // rest of it dropped), and drop the third (its buffers are reused).
            match k % 3 {
                0 => kept.push(batch),
                1 => owned.extend(batch.into_iter().step_by(37)),
                _ => {}
            }
            k += 1;
        }
        assert!(k > 3, "several batches");
        assert!(!owned.is_empty(), "records taken out of a batch");
        let owned = owned.iter().map(|r| (r.seq, &r.data[..]));
        for (seq, data) in kept.iter().flatten().map(|r| (r.seq, r.data)).chain(owned) {
            assert_eq!(
                data,
                &all[seq as usize - 1][..],
                "record {seq} changed after later reads (bounds {max_records}/{max_bytes})",
            );
        }
    }
}

#[test]
fn a_failed_batch_leaves_the_position_where_it_was_so_no_record_is_skipped() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let log = echopost_log::Log::open(dir.path(), LogOptions::default()).unwrap();
    let all: Vec<Vec<u8>> = (0..5u64)
        .flat_map(|b| {
            let batch: Vec<Vec<u8>> = (0..100).map(|i| rec(b * 100 + i, 1024)).collect();
            log.append(&batch).unwrap();
            batch
        })
        .collect();
    // Flip a byte inside the third frame (frames are 100 * (1024 + 4) + 32 bytes).
    let seg = segment_files(dir.path()).into_iter().next().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg)
        .unwrap();
    let at = 2 * 102_832 + 10_000;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5A], at).unwrap();

    let mut r = log.reader(1);
    let err = r.next_batch(10_000, 8 << 20).unwrap_err();
    assert!(matches!(err, echopost_log::Error::Corruption(_)), "{err}");
    assert_eq!(
        r.position(),
        1,
        "a failed call leaves the position unchanged"
    );
    // A retry in smaller batches gets every record before the damage, then the damage.
    let got = r.next_batch(150, 8 << 20).unwrap();
    assert_eq!(got.len(), 150);
    let err = r.next_batch(150, 8 << 20).unwrap_err();
    assert!(matches!(err, echopost_log::Error::Corruption(_)), "{err}");
    assert_eq!(r.position(), 151);
    let rest = r.next_batch(50, 8 << 20).unwrap();
    for x in got.iter().chain(&rest) {
        assert_eq!(x.data[..], all[x.seq as usize - 1][..]);
    }
    assert_eq!(rest.last().map(|x| x.seq), Some(200));
    assert!(r.next_batch(1, 8 << 20).is_err());
    assert_eq!(r.position(), 201, "nothing after the damage was handed out");
}
