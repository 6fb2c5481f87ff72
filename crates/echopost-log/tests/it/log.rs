//! Behaviour of the log through its public API, on the real file system and the simulated one.

use std::sync::Arc;
use std::time::Duration;

use crate::support::common::*;
use echopost_log::sim::{Fault, FaultError, SimFs};
use echopost_log::{
    Compression, CorruptionKind, Error, Log, LogOptions, SyncPolicy, verify, verify_with_fs,
};

#[test]
fn appends_come_back_in_order_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert!(log.recovery_report().created);
    let mut expected = Vec::new();
    for b in 0..50u64 {
        let batch: Vec<Vec<u8>> = (0..(b % 7 + 1)).map(|i| rec(b * 100 + i, 100)).collect();
        let a = log.append(&batch).unwrap();
        assert_eq!(a.first_seq, expected.len() as u64 + 1);
        assert_eq!(a.last_seq - a.first_seq + 1, batch.len() as u64);
        expected.extend(batch);
    }
    assert!(segment_files(dir.path()).len() > 3, "segments should roll");
    let got = read_all(&log, 1, 13).unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.data, expected[i]);
    }
    drop(log);

    let log = Log::open(dir.path(), small_segments()).unwrap();
    let rep = log.recovery_report();
    assert!(rep.torn_tail.is_none() && !rep.created);
    assert_eq!(rep.next_seq, expected.len() as u64 + 1);
    let got: Vec<Vec<u8>> = read_all(&log, 1, 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.data.to_vec())
        .collect();
    assert_eq!(got, expected);
    // Reading from the middle starts exactly there.
    let mid = read_all(&log, 77, 5).unwrap();
    assert_eq!(mid[0].seq, 77);
    assert_eq!(mid.len(), expected.len() - 76);
    let v = verify(dir.path()).unwrap();
    assert_eq!(v.records, expected.len() as u64);
    assert!(v.segments > 3);
}

#[test]
fn batches_are_bounded_by_count_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let batch: Vec<Vec<u8>> = (0..100).map(|i| rec(i, 100)).collect();
    log.append(&batch).unwrap();
    let mut r = log.reader(1);
    assert_eq!(r.next_batch(10, 1 << 20).unwrap().len(), 10);
    assert_eq!(r.next_batch(1000, 450).unwrap().len(), 4);
    let one = r.next_batch(1000, 1).unwrap();
    assert_eq!(
        one.len(),
        1,
        "a record larger than the byte bound still comes alone"
    );
    assert_eq!(r.position(), 16);
}

#[test]
fn sequences_are_never_reused_after_everything_is_acked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        log.append(&[rec(i, 200)]).unwrap();
    }
    log.ack(100).unwrap();
    let st = log.stats();
    assert_eq!(st.backlog_records, 0);
    assert_eq!(st.segments, 1, "fully acked segments are deleted");
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.append(&[b"next"]).unwrap().first_seq, 101);
    assert!(read_all(&log, 1, 10).unwrap().iter().all(|r| r.seq == 101));
}

#[test]
fn reading_resumes_after_the_persisted_ack() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..60 {
        log.append(&[rec(i, 150)]).unwrap();
    }
    log.ack(25).unwrap();
    assert_eq!(log.stats().first_unacked_seq, 26);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let st = log.stats();
    assert_eq!((st.acked, st.backlog_records), (25, 35));
    let got = read_all(&log, st.first_unacked_seq, 7).unwrap();
    assert_eq!(got.first().unwrap().seq, 26);
    assert_eq!(got.len(), 35);
    // A reader asked for deleted records starts at the oldest one still stored.
    let first_stored = read_all(&log, 1, 1).unwrap()[0].seq;
    assert!(first_stored <= 26);
}

#[test]
fn ack_beyond_durable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&[b"a"]).unwrap();
    assert!(matches!(
        log.ack(2),
        Err(Error::AckBeyondDurable { seq: 2, durable: 1 })
    ));
    log.ack(1).unwrap();
    log.ack(1).unwrap();
}

#[test]
fn bad_input_is_refused_without_effect() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_batch_bytes: 1000,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let empty: [&[u8]; 0] = [];
    assert!(matches!(log.append(&empty), Err(Error::EmptyBatch)));
    assert!(matches!(
        log.append(&[vec![0u8; 2000]]),
        Err(Error::BatchTooLarge { limit: 1000, .. })
    ));
    assert_eq!(log.append(&[b"ok"]).unwrap().first_seq, 1);
}

#[test]
fn second_opener_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    drop(log);
    Log::open(dir.path(), LogOptions::default()).unwrap();
}

#[test]
fn quota_refuses_with_full_and_recovers_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        max_disk_bytes: Some(64 * 1024),
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let mut n = 0u64;
    let err = loop {
        match log.append(&[rec(n, 1000)]) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Full { limit: 65536, .. }), "{err}");
    assert!(!err.is_fatal());
    assert!(n > 40, "quota should hold most of 64 KiB, took {n}");
    assert!(log.stats().disk_bytes <= 64 * 1024);
    log.ack(n).unwrap();
    log.append(&[rec(n, 1000)]).unwrap();
    assert!(log.stats().disk_bytes < 16 * 1024);
}

#[test]
fn compressed_frames_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        compression: Compression::Zstd { level: 3 },
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let batch: Vec<Vec<u8>> = (0..200).map(|i| rec(i, 500)).collect();
    log.append(&batch).unwrap();
    assert!(
        log.stats().disk_bytes < 200 * 500 / 4,
        "compression should pay off here"
    );
    drop(log);
    // Reading does not depend on the option: the flag is per frame.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = read_all(&log, 1, 64)
        .unwrap()
        .into_iter()
        .map(|r| r.data.to_vec())
        .collect();
    assert_eq!(got, batch);
}

#[test]
fn concurrent_appenders_get_gapless_unique_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_segments()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..50u64)
                    .map(|i| {
                        let a = log.append(&[rec(t * 1000 + i, 64)]).unwrap();
                        (a.first_seq, rec(t * 1000 + i, 64))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acked.sort();
    let got = read_all(&log, 1, 100).unwrap();
    assert_eq!(got.len(), 400);
    for ((seq, data), r) in acked.iter().zip(&got) {
        assert_eq!((*seq, data), (r.seq, &r.data.to_vec()));
    }
}

#[test]
fn interval_and_never_policies_are_visible_to_readers_after_sync() {
    for policy in [
        SyncPolicy::Interval(Duration::from_millis(5)),
        SyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            sync: policy,
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), opts).unwrap();
        for i in 0..10 {
            log.append(&[rec(i, 10)]).unwrap();
        }
        // The reader syncs on demand, so it sees everything written.
        assert_eq!(read_all(&log, 1, 100).unwrap().len(), 10, "{policy}");
        log.close().unwrap();
    }
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for i in 0..10 {
        log.append(&[rec(i, 100)]).unwrap();
    }
    drop(log);
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last frame in half, as a crash mid-write would.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 50).unwrap();
    drop(f);
    let v = verify(dir.path()).unwrap();
    assert!(
        v.torn_tail.is_some(),
        "verify reports the torn tail without failing"
    );
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let t = log
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(t.dropped_seqs, Some((10, 10)));
    assert_eq!(t.end, len - 50);
    assert_eq!(read_all(&log, 1, 100).unwrap().len(), 9);
    assert_eq!(log.append(&[b"x"]).unwrap().first_seq, 10);
}

#[test]
fn damage_followed_by_valid_frames_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for i in 0..10 {
        log.append(&[rec(i, 100)]).unwrap();
    }
    drop(log);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 136 * 3 + 40] ^= 0xff; // inside the 4th frame's body
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    let Error::Corruption(c) = &err else {
        panic!("{err}")
    };
    assert_eq!(c.file, seg);
    assert_eq!(c.offset, 32 + 136 * 3);
    assert!(matches!(
        c.kind,
        CorruptionKind::DamageBeforeValidData { .. }
    ));
    let verr = verify(dir.path()).unwrap_err();
    assert_eq!(verr.to_string(), err.to_string(), "verify agrees with open");
}

#[test]
fn damage_in_a_sealed_segment_is_found_by_readers_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        log.append(&[rec(i, 200)]).unwrap();
    }
    drop(log);
    let segs = segment_files(dir.path());
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&segs[1], &bytes).unwrap();
    // Open does not read sealed segments (bounded open time)...
    let log = Log::open(dir.path(), small_segments()).unwrap();
    // ...but no reader gets past the damage, and verify pinpoints it.
    let err = read_all(&log, 1, 10).unwrap_err();
    let Error::Corruption(c) = &err else {
        panic!("{err}")
    };
    assert_eq!(c.file, segs[1]);
    let verr = verify(dir.path()).unwrap_err();
    let Error::Corruption(vc) = &verr else {
        panic!("{verr}")
    };
    assert_eq!(vc.file, segs[1]);
}

#[test]
fn missing_middle_or_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        log.append(&[rec(i, 200)]).unwrap();
    }
    drop(log);
    let segs = segment_files(dir.path());
    std::fs::rename(&segs[2], dir.path().join("elsewhere")).unwrap();
    let err = Log::open(dir.path(), small_segments()).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption(c) if matches!(c.kind, CorruptionKind::SegmentGap { .. })),
        "{err}"
    );
    // (A missing cursor is not corruption: see the `cursor_recovery` suite.)
    // Deleting the active (last) segment is detected too: its predecessor's seal names it.
    let log_dir = tempfile::tempdir().unwrap();
    let log = Log::open(log_dir.path(), small_segments()).unwrap();
    for i in 0..100 {
        log.append(&[rec(i, 200)]).unwrap();
    }
    drop(log);
    std::fs::remove_file(segment_files(log_dir.path()).pop().unwrap()).unwrap();
    let err = Log::open(log_dir.path(), small_segments()).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption(c) if matches!(c.kind, CorruptionKind::MissingSuccessor { .. })),
        "{err}"
    );
}

#[test]
fn unknown_format_version_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    log.append(&[b"a"]).unwrap();
    log.append(&[b"b"]).unwrap();
    drop(log);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 4] = 77; // version byte of the first frame, which a valid frame follows
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(err.to_string().contains("byte 32"), "{err}");
}

#[test]
fn failed_fsync_poisons_the_writer() {
    let fs = SimFs::new(11);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    log.append(&[b"durable"]).unwrap();
    let at = fs.op_count() + 1; // the write succeeds, its fdatasync fails
    fs.set_fault(Some(Fault {
        at_op: at,
        error: FaultError::Eio,
        persistent: false,
    }));
    let err = log.append(&[b"lost"]).unwrap_err();
    assert!(err.is_fatal(), "{err}");
    // The fault was one-shot, but the log must not trust the device again.
    let err = log.append(&[b"later"]).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    assert!(log.stats().poisoned.is_some());
    drop(log);
    fs.crash(true);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    let got = read_all(&log, 1, 10).unwrap();
    assert_eq!(got[0].data, &b"durable"[..]);
    assert!(got.len() <= 2);
}

#[test]
fn enospc_during_write_rolls_back_the_partial_frame() {
    let fs = SimFs::new(5);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    log.append(&[b"first"]).unwrap();
    fs.set_fault(Some(Fault {
        at_op: fs.op_count(),
        error: FaultError::Enospc,
        persistent: false,
    }));
    let err = log.append(&[vec![7u8; 5000]]).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(matches!(log.append(&[b"x"]), Err(Error::Poisoned(_))));
    drop(log);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    assert!(
        log.recovery_report().torn_tail.is_none(),
        "rolled back, nothing torn"
    );
    let got = read_all(&log, 1, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(log.append(&[b"again"]).unwrap().first_seq, 2);
    verify_with_fs(Arc::new(fs.clone()), sim_dir()).unwrap();
}

#[test]
fn open_time_does_not_depend_on_sealed_segments_contents() {
    // Recovery reads only headers and seals of sealed segments: damage inside them is not
    // seen at open (it is seen by readers and verify), which proves they are not scanned.
    let fs = SimFs::new(2);
    let log = open_sim(&fs, small_segments()).unwrap();
    for i in 0..200 {
        log.append(&[rec(i, 300)]).unwrap();
    }
    drop(log);
    let ops_before = fs.op_count();
    let log = open_sim(&fs, small_segments()).unwrap();
    let open_ops = fs.op_count() - ops_before;
    let segments = log.stats().segments as u64;
    assert!(segments > 10);
    assert!(
        open_ops < segments * 6 + 40,
        "{open_ops} operations for {segments} segments"
    );
}

#[test]
fn append_nowait_is_durable_only_after_wait_durable() {
    let fs = SimFs::new(9);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    let a = log.append_nowait(&[b"one"]).unwrap();
    let b = log.append_nowait(&[&b"two"[..], b"three"]).unwrap();
    assert_eq!((a.first_seq, b.first_seq, b.last_seq), (1, 2, 3));
    assert_eq!(log.stats().durable_next, 1, "nothing synced yet");
    log.wait_durable(b.last_seq).unwrap();
    assert_eq!(log.stats().durable_next, 4);
    log.append_nowait(&[b"not synced"]).unwrap();
    drop(log);
    fs.crash(false);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = read_all(&log, 1, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.data.to_vec())
        .collect();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    assert_eq!(log.append(&[b"four"]).unwrap().first_seq, 4);
}

#[test]
fn a_failed_sync_wakes_every_parked_appender_with_an_error() {
    // Many threads park waiting for group commits; a persistent EIO then fails the sync.
    // Every thread must return (no lost wake-up), and none may report success for a record
    // that is not durable.
    for seed in 0..20u64 {
        let fs = SimFs::new(seed);
        let log = Arc::new(open_sim(&fs, LogOptions::default()).unwrap());
        fs.set_fault(Some(Fault {
            at_op: fs.op_count() + 40 + seed * 7,
            error: FaultError::Eio,
            persistent: true,
        }));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..20u64 {
                        match log.append(&[rec(t * 100 + i, 32)]) {
                            Ok(a) => acked.push((a.first_seq, rec(t * 100 + i, 32))),
                            Err(e) => {
                                assert!(e.is_fatal(), "{e}");
                                break;
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        let acked: Vec<(u64, Vec<u8>)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(log.stats().poisoned.is_some(), "seed {seed}");
        drop(log);
        fs.crash(true);
        let log = open_sim(&fs, LogOptions::default()).unwrap();
        let stored: std::collections::HashMap<u64, Vec<u8>> = read_all(&log, 1, 1000)
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.data.to_vec()))
            .collect();
        for (seq, data) in acked {
            assert_eq!(
                stored.get(&seq),
                Some(&data),
                "seed {seed}: acknowledged seq {seq} lost"
            );
        }
    }
}

#[test]
fn prepared_batches_are_checked_before_the_log_and_written_in_order() {
    use echopost_log::BatchBody;
    let fs = SimFs::new(4);
    let opts = LogOptions {
        max_batch_bytes: 1000,
        ..LogOptions::default()
    };
    let log = open_sim(&fs, opts).unwrap();
    assert!(matches!(
        log.prepare(BatchBody::default()),
        Err(Error::EmptyBatch)
    ));
    let mut big = BatchBody::default();
    big.push(&[0u8; 2000]);
    assert!(matches!(
        log.prepare(big),
        Err(Error::BatchTooLarge { limit: 1000, .. })
    ));
    assert_eq!(log.stats().next_seq, 1, "refused batches take no sequence");

    let mut first = BatchBody::default();
    first.push_with(|buf| buf.extend_from_slice(b"one"));
    first.push(b"two");
    let first = log.prepare(first).unwrap();
    let second = log.prepare(BatchBody::from_records(&[b"three"])).unwrap();
    assert_eq!((first.records(), second.records()), (2, 1));
    let a = log.append_prepared_nowait(first).unwrap();
    let b = log.append_prepared_nowait(second).unwrap();
    assert_eq!((a.first_seq, a.last_seq, b.first_seq), (1, 2, 3));
    log.wait_durable(b.last_seq).unwrap();
    drop(log);
    fs.crash(false);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = read_all(&log, 1, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.data.to_vec())
        .collect();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

fn prepared(log: &Log, records: &[Vec<u8>]) -> echopost_log::PreparedBatch {
    log.prepare(echopost_log::BatchBody::from_records(records))
        .unwrap()
}

fn data(log: &Log) -> Vec<Vec<u8>> {
    read_all(log, 1, 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.data.to_vec())
        .collect()
}

#[test]
fn a_group_of_small_batches_is_written_with_one_write() {
    let fs = SimFs::new(21);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    log.append(&[b"before"]).unwrap();
    let batches: Vec<Vec<Vec<u8>>> = (0..10u64)
        .map(|b| (0..=b % 3).map(|i| rec(b * 10 + i, 50)).collect())
        .collect();
    let ops = fs.op_count();
    let mut w = log.group_writer();
    let mut next = 2;
    for b in &batches {
        let a = w.stage(prepared(&log, b)).unwrap();
        assert_eq!(a.first_seq, next);
        assert_eq!(a.last_seq, next + b.len() as u64 - 1);
        next = a.last_seq + 1;
    }
    assert_eq!(fs.op_count(), ops, "staging touches no file");
    w.finish().unwrap();
    assert_eq!(fs.op_count(), ops + 1, "one write for the whole group");
    assert_eq!(log.stats().next_seq, next);
    assert_eq!(log.stats().durable_next, 2, "written, not yet durable");
    log.wait_durable(next - 1).unwrap();

    let mut expected = vec![b"before".to_vec()];
    expected.extend(batches.concat());
    drop(log);
    fs.crash(true);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    assert_eq!(data(&log), expected);
    assert_eq!(log.append(&[b"after"]).unwrap().first_seq, next);
}

#[test]
fn a_group_rolls_segments_between_frames_and_writes_large_frames_directly() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let mut expected = Vec::new();
    let mut w = log.group_writer();
    for b in 0..40u64 {
        // Mostly ~600-byte frames (rolls every few), and two above the direct-write size.
        let len = if b % 20 == 7 { 100 << 10 } else { 600 };
        let batch = vec![rec(b, len)];
        w.stage(prepared(&log, &batch)).unwrap();
        expected.extend(batch);
    }
    w.finish().unwrap();
    log.sync_now().unwrap();
    assert!(segment_files(dir.path()).len() > 5, "segments should roll");
    assert_eq!(data(&log), expected);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert!(log.recovery_report().torn_tail.is_none());
    assert_eq!(data(&log), expected);
    assert_eq!(verify(dir.path()).unwrap().records, 40);
}

#[test]
fn a_group_refuses_a_batch_over_the_quota_and_admits_the_next_that_fits() {
    let fs = SimFs::new(22);
    let opts = LogOptions {
        max_disk_bytes: Some(64 << 10),
        ..LogOptions::default()
    };
    let log = open_sim(&fs, opts.clone()).unwrap();
    let mut w = log.group_writer();
    let a = w.stage(prepared(&log, &[rec(1, 3000)])).unwrap();
    // The quota counts what this group staged: 40 more of these do not fit.
    let mut refused = 0;
    let mut last = a.last_seq;
    for i in 0..40 {
        match w.stage(prepared(&log, &[rec(100 + i, 3000)])) {
            Ok(b) => {
                assert_eq!(b.first_seq, last + 1, "no gap after a refusal");
                last = b.last_seq;
            }
            Err(Error::Full { used, limit, .. }) => {
                assert!(used <= limit);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "the quota must refuse some");
    let small = w.stage(prepared(&log, &[b"tiny".to_vec()])).unwrap();
    assert_eq!(small.first_seq, last + 1);
    w.finish().unwrap();
    log.sync_now().unwrap();
    assert_eq!(data(&log).len() as u64, small.last_seq);
    assert!(log.stats().disk_bytes <= 64 << 10);
}

#[test]
fn a_failed_group_write_poisons_the_log_and_keeps_at_most_a_prefix_of_the_group() {
    let fs = SimFs::new(23);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    log.append(&[b"kept"]).unwrap();
    let mut w = log.group_writer();
    let group: Vec<Vec<u8>> = (0..5).map(|i| rec(i, 200)).collect();
    for r in &group {
        w.stage(prepared(&log, std::slice::from_ref(r))).unwrap();
    }
    // The next file operation is the group's write.
    fs.set_fault(Some(Fault {
        at_op: fs.op_count(),
        error: FaultError::Enospc,
        persistent: false,
    }));
    let e = w.finish().unwrap_err();
    assert!(e.is_fatal(), "{e}");
    assert!(log.stats().poisoned.is_some());
    assert!(matches!(log.append(&[b"no"]), Err(Error::Poisoned(_))));
    drop(log);
    fs.crash(true);
    // Nothing of the group was acknowledged, so none of it has to be there; what a torn
    // crash leaves of the failed write (the rollback was not synced either) is whole
    // frames from its start, never a gap or a frame out of order.
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    let got = data(&log);
    assert_eq!(got[0], b"kept");
    let survived = &got[1..];
    assert_eq!(survived, &group[..survived.len()]);
    let next = log.append(&[b"next"]).unwrap().first_seq;
    assert_eq!(next, got.len() as u64 + 1);
}

#[test]
fn a_group_writer_dropped_without_finish_still_writes_what_it_staged() {
    let fs = SimFs::new(24);
    let log = open_sim(&fs, LogOptions::default()).unwrap();
    {
        let mut w = log.group_writer();
        w.stage(prepared(&log, &[b"a".to_vec()])).unwrap();
        w.stage(prepared(&log, &[b"b".to_vec()])).unwrap();
    }
    assert_eq!(log.stats().next_seq, 3);
    assert_eq!(log.append(&[b"c"]).unwrap().first_seq, 3);
    assert_eq!(
        data(&log),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

/// A write that fails inside `stage` (writing what was staged before a large frame, or
/// before a roll) must fail the whole group: `finish` errs, and `wait_durable` does not
/// vouch for sequences handed out before the failure.
#[test]
fn a_write_failing_inside_stage_fails_the_whole_group() {
    for (name, opts, trigger) in [
        ("direct write", LogOptions::default(), rec(99, 100 << 10)),
        ("roll", small_segments(), rec(99, 3000)),
    ] {
        let fs = SimFs::new(25);
        let log = open_sim(&fs, opts).unwrap();
        log.append(&[b"kept"]).unwrap();
        let mut w = log.group_writer();
        let mut earlier = Vec::new();
        for i in 0..3 {
            earlier.push(w.stage(prepared(&log, &[rec(i, 300)])).unwrap());
        }
        // The next file operation writes the staged frames.
        fs.set_fault(Some(Fault {
            at_op: fs.op_count(),
            error: FaultError::Eio,
            persistent: false,
        }));
        let e = w.stage(prepared(&log, &[trigger])).unwrap_err();
        assert!(e.is_fatal(), "{name}: {e}");
        assert!(
            matches!(
                w.stage(prepared(&log, &[b"x".to_vec()])),
                Err(Error::Poisoned(_))
            ),
            "{name}: staging after the failure"
        );
        assert!(
            matches!(w.finish(), Err(Error::Poisoned(_))),
            "{name}: finish must report the failure"
        );
        for a in earlier {
            assert!(
                matches!(log.wait_durable(a.last_seq), Err(Error::Poisoned(_))),
                "{name}: sequence {} was never written",
                a.last_seq
            );
        }
        log.wait_durable(1).unwrap();
    }
}
