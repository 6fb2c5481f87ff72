//! The acknowledgement cursor when things go wrong (issue 13).
//!
//! * An unreadable cursor (missing, empty, wrong length, no valid slot) is not
//!   corruption: open and `verify` resume from the oldest segment on disk and report the
//!   records that will be delivered again; every record on disk comes back exactly.
//! * A cursor in the earlier single-slot format is read and migrated in place.
//! * A full disk can be drained: with zero free bytes the log reopens, acknowledges and
//!   deletes what was delivered (the cursor is updated in place), and appends succeed
//!   again once space is free. The simulated device (`SimFs::set_capacity`) refuses any
//!   write that needs a new block.
//! * A crash (power loss with torn writes, or a process kill) at every operation of that
//!   drain loses nothing that was not acknowledged, and the next start on the still-full
//!   disk drains the rest.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::support::common::*;
use echopost_log::format::{self, CURSOR_RESERVE_LEN};
use echopost_log::sim::{Fault, FaultError, SimFs};
use echopost_log::{Log, LogOptions, verify, verify_with_fs};

fn fill(log: &Log, n: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in 1..=n {
        let r = rec(i, 180);
        let a = log.append(std::slice::from_ref(&r)).expect("append");
        out.insert(a.first_seq, r);
    }
    out
}

/// Damages the cursor of `dir` in one of the ways an operator or a broken disk can.
fn damage(dir: &Path, how: &str) {
    let p = dir.join("cursor");
    match how {
        "missing" => std::fs::remove_file(&p).expect("remove"),
        "empty" => std::fs::write(&p, b"").expect("truncate"),
        "garbage" => std::fs::write(&p, b"not a cursor").expect("write"),
        "bad checksum" => {
            let mut b = std::fs::read(&p).expect("read");
            for at in format::CURSOR_SLOT_OFFSETS {
                b[at as usize + 18] ^= 0x40;
            }
            std::fs::write(&p, b).expect("write");
        }
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn an_unreadable_cursor_resumes_from_the_oldest_segment_and_says_so() {
    for how in ["missing", "empty", "garbage", "bad checksum"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(dir.path(), small_segments()).expect("open");
        let records = fill(&log, 300);
        log.ack(150).expect("ack");
        let first_on_disk = log.stats().first_unacked_seq.min(
            segment_files(dir.path())
                .first()
                .and_then(|p| format::parse_segment_name(&p.file_name()?.to_string_lossy()))
                .expect("segments"),
        );
        assert!(first_on_disk > 1, "the first segments were deleted");
        drop(log);
        damage(dir.path(), how);

        let v = verify(dir.path()).unwrap_or_else(|e| panic!("{how}: verify: {e}"));
        let reset = v.cursor_reset.clone().expect("verify reports the reset");
        let log = Log::open(dir.path(), small_segments())
            .unwrap_or_else(|e| panic!("{how}: an unreadable cursor is not corruption: {e}"));
        let report = log
            .recovery_report()
            .cursor_reset
            .clone()
            .expect("reported");
        assert_eq!(report, reset, "{how}: verify and open agree");
        assert_eq!(report.acked, first_on_disk - 1, "{how}: {report}");
        assert_eq!(report.redelivered, Some((first_on_disk, 300)), "{how}");
        assert_eq!(report.damage.is_none(), how == "missing", "{how}: {report}");
        let text = report.to_string();
        assert!(
            text.contains(&format!("records {first_on_disk}..=300")),
            "{how}: {text}"
        );
        let got = read_all(&log, 0, 17).expect("read");
        assert_eq!(got.len() as u64, 301 - first_on_disk, "{how}");
        for r in &got {
            assert_eq!(
                Some(&r.data.to_vec()),
                records.get(&r.seq),
                "{how}: record {}",
                r.seq
            );
        }
        println!(
            "cursor {how}: resumed after {} (was 150), {} records re-read from the oldest segment",
            report.acked,
            got.len()
        );
        // The cursor is whole again: the next open resumes silently.
        log.ack(200).expect("ack after the reset");
        drop(log);
        let log = Log::open(dir.path(), small_segments()).expect("reopen");
        assert!(log.recovery_report().cursor_reset.is_none(), "{how}");
        assert_eq!(log.stats().acked, 200, "{how}");
    }
}

#[test]
fn a_cursor_in_the_earlier_single_slot_format_is_read_and_migrated_in_place() {
    let fs = SimFs::new(11);
    let log = open_sim(&fs, small_segments()).expect("open");
    fill(&log, 100);
    log.ack(40).expect("ack");
    drop(log);
    format::write_legacy_cursor(&fs, &sim_dir(), 40).expect("legacy cursor");
    let path = format::cursor_path(&sim_dir());
    assert_eq!(fs.read_file(&path).expect("cursor").len(), 32);

    let log = open_sim(&fs, small_segments()).expect("open an old directory");
    assert!(log.recovery_report().cursor_reset.is_none());
    assert_eq!(log.stats().acked, 40);
    assert_eq!(
        fs.read_file(&path).expect("cursor").len() as u64,
        CURSOR_RESERVE_LEN
    );
    log.ack(60).expect("ack");
    drop(log);
    fs.crash(true);
    let log = open_sim(&fs, small_segments()).expect("reopen");
    assert_eq!(log.stats().acked, 60);
    assert!(log.recovery_report().cursor_reset.is_none());
}

fn full_disk_opts() -> LogOptions {
    LogOptions {
        segment_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

/// Fills a simulated device of `capacity` bytes until an append fails with ENOSPC, as a
/// daemon on a full disk does; returns the records acknowledged.
fn fill_until_full(fs: &SimFs, capacity: u64) -> BTreeMap<u64, Vec<u8>> {
    fs.set_capacity(Some(capacity));
    let log = open_sim(fs, full_disk_opts()).expect("open");
    let mut records = BTreeMap::new();
    for i in 1.. {
        let r = rec(i, 700);
        match log.append(std::slice::from_ref(&r)) {
            Ok(a) => {
                records.insert(a.first_seq, r);
            }
            Err(e) => {
                assert!(e.is_no_space(), "the device filled up: {e}");
                break;
            }
        }
    }
    drop(log);
    records
}

#[test]
fn a_full_disk_is_drained_with_zero_free_bytes() {
    let capacity = 256 << 10;
    let fs = SimFs::new(5);
    let records = fill_until_full(&fs, capacity);
    let used = fs.used_bytes();
    assert!(
        capacity - used < 4096,
        "no whole block is free: {used} of {capacity}"
    );

    // The next start on the still-full disk: open, deliver, acknowledge, delete.
    let log = open_sim(&fs, full_disk_opts()).expect("a full disk must still open");
    let got = read_all(&log, 0, 50).expect("read");
    assert_eq!(got.len(), records.len());
    let mut acks = 0;
    for chunk in got.chunks(37) {
        let last = chunk.last().expect("chunk").seq;
        log.ack(last)
            .unwrap_or_else(|e| panic!("acknowledging needs no space, but: {e}"));
        acks += 1;
    }
    assert!(log.stats().poisoned.is_none());
    let freed = used - fs.used_bytes();
    assert!(
        freed > capacity / 2,
        "delivered segments were deleted: {freed}"
    );
    let a = log.append(&[b"after".to_vec()]).expect("room again");
    assert_eq!(a.first_seq, records.len() as u64 + 1);
    println!(
        "full disk: {} records stored until ENOSPC ({used} of {capacity} bytes), {} delivered \
         and acknowledged in {acks} acks with zero free bytes, {freed} bytes freed",
        records.len(),
        got.len()
    );
}

/// The whole backlog in the one, active segment: giving it back needs a new segment file,
/// for which the cursor's reserve is released; the next open writes the reserve again.
#[test]
fn a_full_disk_whose_backlog_is_one_segment_is_given_back_through_the_reserve() {
    let capacity = 256 << 10;
    let fs = SimFs::new(6);
    fs.set_capacity(Some(capacity));
    let opts = LogOptions {
        segment_bytes: 4 << 20,
        ..LogOptions::default()
    };
    let log = open_sim(&fs, opts.clone()).expect("open");
    let mut n = 0;
    while log.append(&[rec(n, 900)]).is_ok() {
        n += 1;
    }
    drop(log);
    let segments = fs
        .files()
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .count();
    assert_eq!(segments, 1, "the backlog is one segment");
    let used = fs.used_bytes();
    let log = open_sim(&fs, opts.clone()).expect("open on the full disk");
    let got = read_all(&log, 0, 100).expect("read");
    assert_eq!(got.len() as u64, n);
    log.ack(n).expect("ack");
    assert!(
        log.reclaim_delivered().expect("reclaim"),
        "the drained active segment is given back"
    );
    let freed = used - fs.used_bytes();
    assert!(
        freed > capacity / 2,
        "the delivered active segment was given back: {freed} bytes freed"
    );
    let cursor = format::cursor_path(&sim_dir());
    assert!(fs.read_file(&cursor).expect("cursor").len() as u64 <= 1024);
    drop(log);
    let log = open_sim(&fs, opts).expect("reopen");
    assert_eq!(log.stats().acked, n);
    assert_eq!(
        fs.read_file(&cursor).expect("cursor").len() as u64,
        CURSOR_RESERVE_LEN,
        "the reserve is back"
    );
    assert!(log.append(&[b"again".to_vec()]).is_ok());
    println!(
        "one-segment full disk: {n} records delivered, {freed} bytes freed through the reserve"
    );
}

/// One drain of the full disk, stopping at the first error; returns the last sequence an
/// `ack` call returned Ok for, and the last one any `ack` was called with (a failed `ack`
/// may or may not have made its cursor durable).
fn drain(log: &Log) -> (u64, u64) {
    let mut acked = log.stats().acked;
    let mut attempted = acked;
    let mut reader = log.reader(0);
    // Deliver and acknowledge batch by batch, as the replayer does.
    while let Ok(batch) = reader.next_batch(23, 1 << 20) {
        let Some(last) = batch.last().map(|r| r.seq) else {
            break;
        };
        attempted = last;
        if log.ack(last).is_err() {
            break;
        }
        acked = last;
    }
    (acked, attempted)
}

#[test]
fn a_crash_at_any_step_of_draining_a_full_disk_loses_nothing_and_the_next_start_drains() {
    let capacity = 128 << 10;
    let base = SimFs::new(9);
    let records = fill_until_full(&base, capacity);
    let n = records.len() as u64;

    // Count the drain's operations once.
    let probe = base.deep_clone(0);
    let log = open_sim(&probe, full_disk_opts()).expect("open");
    let start = probe.op_count();
    assert_eq!(drain(&log), (n, n));
    let ops = probe.op_count() - start;
    drop(log);

    let mut cases = 0;
    let mut resets = 0;
    for k in 0..ops {
        for (variant, torn) in [(0, true), (1, false), (2, false)] {
            let fs = base.deep_clone(k * 3 + variant);
            let log = open_sim(&fs, full_disk_opts()).expect("open");
            fs.set_fault(Some(Fault {
                at_op: fs.op_count() + k,
                error: FaultError::Eio,
                persistent: true,
            }));
            let (acked, attempted) = drain(&log);
            drop(log);
            match variant {
                2 => fs.kill_process(),
                _ => fs.crash(torn),
            }
            let ctx = format!("crash at drain operation {k} of {ops} (variant {variant})");
            verify_with_fs(Arc::new(fs.clone()), sim_dir())
                .unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
            let log = open_sim(&fs, full_disk_opts())
                .unwrap_or_else(|e| panic!("{ctx}: the next start on the full disk: {e}"));
            resets += u64::from(log.recovery_report().cursor_reset.is_some());
            let resumed = log.stats().acked;
            assert!(
                resumed >= acked && resumed <= n,
                "{ctx}: resumed after {resumed}, but {acked} was acknowledged"
            );
            let got = read_all(&log, 0, 64).unwrap_or_else(|e| panic!("{ctx}: read: {e}"));
            // Nothing after the last sequence ever passed to `ack` was deleted.
            assert!(
                got.first().is_none_or(|r| r.seq <= attempted + 1),
                "{ctx}: records after {attempted} (the last ack attempted) are missing: first \
                 is {:?}",
                got.first().map(|r| r.seq)
            );
            for r in &got {
                assert_eq!(
                    Some(&r.data.to_vec()),
                    records.get(&r.seq),
                    "{ctx}: record {}",
                    r.seq
                );
            }
            assert_eq!(got.last().map_or(resumed, |r| r.seq), n, "{ctx}");
            assert_eq!(drain(&log), (n, n), "{ctx}: the next start drains the rest");
            assert!(
                log.append(&[b"x".to_vec()]).is_ok(),
                "{ctx}: appends work again"
            );
            cases += 1;
        }
    }
    println!(
        "full-disk drain: {n} records, crashes at each of its {ops} operations ({cases} cases, \
         {resets} resumed from a torn cursor slot with a report); nothing unacknowledged lost, \
         every next start drained the disk"
    );
    assert!(ops > 10 && cases == ops * 3, "{ops} {cases}");
    assert!(
        resets > 0,
        "no case tore a cursor slot: the suite lost its point"
    );
}
