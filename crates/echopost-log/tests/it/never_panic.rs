//! Property tests: whatever bytes are in the log directory, the engine never panics.
//!
//! Opening, reading everything, appending, acknowledging and `verify` over arbitrary
//! directory contents return Ok or a typed error (`Error::Corruption`, since the simulated
//! disk itself never fails here), never a panic, an overflow or an absurd allocation. And
//! `verify` agrees with the engine: when it passes, opening and reading everything succeed.
//!
//! Inputs range from pure noise to almost-valid logs: random files under segment-like
//! names, valid segment headers followed by noise, frames forged with *correct* checksums
//! around arbitrary header fields and bodies (so that the checks behind the CRC are
//! exercised), cursors holding any value with a correct checksum, and valid logs with a
//! few bytes changed.
//!
//! `PROPTEST_CASES=N` runs N cases per property (default 1,024; the count is printed and
//! asserted). Failures are shrunk and printed by proptest, and their seeds saved in
//! `tests/it/never_panic.proptest-regressions` (next to this file), which is replayed
//! first on every run (it holds the inputs that found the sequence overflows fixed in the
//! engine).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::support::sim_model::{self, dir, open};
use echopost_log::format::{
    self, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MAGIC, encode_segment_header, segment_name,
};
use echopost_log::sim::{SimFs, SimRng};
use echopost_log::{Compression, Error, FileSystem, LogOptions, verify_with_fs};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    }
}

fn fresh_fs() -> SimFs {
    let fs = SimFs::new(7);
    fs.create_dir_all(&dir()).expect("mkdir");
    fs
}

/// Runs everything the engine does with a directory; fails the property on a broken
/// promise (a panic fails it by itself).
fn exercise(fs: &SimFs) -> Result<(), TestCaseError> {
    let verified = verify_with_fs(Arc::new(fs.clone()), dir());
    if let Err(e) = &verified {
        prop_assert!(matches!(e, Error::Corruption(_)), "verify: {e}");
    }
    let log = match open(fs, &opts()) {
        Ok(log) => log,
        Err(e) => {
            prop_assert!(matches!(e, Error::Corruption(_)), "open: {e}");
            prop_assert!(verified.is_err(), "verify passed but open failed: {e}");
            return Ok(());
        }
    };
    let mut rng = SimRng::new(1);
    let read = sim_model::read_all(&log, 1, &mut rng);
    match &read {
        Ok(records) => {
            let st = log.stats();
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(r.seq, st.acked + 1 + i as u64, "gapless from the cursor");
            }
        }
        Err(e) => {
            prop_assert!(matches!(e, Error::Corruption(_)), "read: {e}");
            prop_assert!(verified.is_err(), "verify passed but reading failed: {e}");
        }
    }
    let st = log.stats();
    prop_assert!(
        st.acked < st.next_seq && st.durable_next <= st.next_seq,
        "{st:?}"
    );
    // The log keeps working (or refuses cleanly) after whatever recovery did.
    match log.append(&[b"one".as_slice(), b"two"]) {
        Ok(a) => {
            prop_assert_eq!(a.first_seq, st.next_seq);
            if read.is_ok() {
                let again = sim_model::read_all(&log, a.first_seq, &mut rng);
                prop_assert!(again.is_ok(), "reading the new batch: {:?}", again.err());
                let again = again.unwrap_or_default();
                prop_assert_eq!(again.len(), 2);
                prop_assert_eq!(&again[1].data[..], b"two");
            }
            let _ = log.ack(a.first_seq);
        }
        Err(e) => {
            prop_assert!(
                !matches!(e, Error::EmptyBatch | Error::BatchTooLarge { .. }),
                "append: {e}"
            );
        }
    }
    let _ = log.sync_now();
    drop(log);
    // Whatever recovery repaired, the result opens again.
    if read.is_ok() {
        let again = open(fs, &opts());
        prop_assert!(again.is_ok(), "reopen: {:?}", again.err());
    }
    Ok(())
}

/// File names the engine cares about, plus others.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (1u64..200).prop_map(segment_name),
        1 => any::<u64>().prop_map(segment_name),
        1 => Just(format::CURSOR_FILE.to_owned()),
        1 => Just(format::CURSOR_TMP_FILE.to_owned()),
        1 => Just("LOCK".to_owned()),
        1 => "[a-z0-9.]{1,24}",
    ]
}

/// A frame with a correct checksum around arbitrary header fields and body.
fn forged_frame() -> impl Strategy<Value = (u8, u8, u32, u64, Option<u32>, Vec<u8>)> {
    (
        prop_oneof![4 => Just(1u8), 1 => Just(2u8), 1 => any::<u8>()],
        prop_oneof![3 => Just(0u8), 2 => Just(1u8), 1 => any::<u8>()],
        prop_oneof![3 => 1u32..6, 1 => any::<u32>()],
        prop_oneof![
            3 => Just(0u64), // "chain": the sequence that is due
            1 => any::<u64>(),
            1 => u64::MAX - 8..=u64::MAX,
        ],
        prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..200),
    )
}

fn encode_forged(
    (kind, flags, count, seq, raw_len, body): &(u8, u8, u32, u64, Option<u32>, Vec<u8>),
    due: u64,
) -> Vec<u8> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = *kind;
    h[6] = *flags;
    h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&count.to_le_bytes());
    let seq = if *seq == 0 { due } else { *seq };
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let raw = raw_len.unwrap_or(body.len() as u32);
    h[24..28].copy_from_slice(&raw.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut f = h.to_vec();
    f.extend_from_slice(body);
    f
}

/// A valid log: several sealed segments and an active one, with a cursor.
/// The files of a log directory: path and content.
type Files = Vec<(PathBuf, Vec<u8>)>;

fn valid_log(seed: u64, zstd: bool) -> Files {
    let fs = SimFs::new(seed);
    let o = LogOptions {
        compression: if zstd {
            Compression::Zstd { level: 1 }
        } else {
            Compression::None
        },
        ..opts()
    };
    let log = open(&fs, &o).expect("open");
    let mut rng = SimRng::new(seed);
    for _ in 0..30 {
        let b = sim_model::batch(&mut rng, log.stats().next_seq);
        log.append(&b).expect("append");
    }
    log.ack(1 + rng.below(log.stats().next_seq - 1))
        .expect("ack");
    drop(log);
    fs.files()
        .into_iter()
        .map(|p| {
            let b = fs.read_file(&p).expect("file");
            (p, b)
        })
        .collect()
}

/// Runs a property over `cases()` inputs (failures are shrunk, printed and saved like the
/// `proptest!` macro does) and prints how many inputs it tried.
fn run_property<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let cases = sim_model::env_u64("PROPTEST_CASES").unwrap_or(1024) as u32;
    let config = ProptestConfig {
        cases,
        // Next to this file, as the `proptest!` macro would place it (`SourceParallel`);
        // an absolute path, so that it is found whatever the working directory.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/never_panic.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    };
    let ran = Cell::new(0u64);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        ran.set(ran.get() + 1);
        test(v)
    });
    if let Err(e) = result {
        panic!("never_panic[{name}]: {e}");
    }
    sim_model::report(&format!(
        "never_panic[{name}]: {} inputs (incl. saved regressions), no panic, only typed errors",
        ran.get()
    ));
    assert!(
        ran.get() >= u64::from(cases),
        "ran only {} of {cases}",
        ran.get()
    );
}

#[test]
fn arbitrary_files_never_panic() {
    run_property(
        "arbitrary files",
        prop::collection::vec(
            (file_name(), prop::collection::vec(any::<u8>(), 0..400)),
            0..6,
        ),
        |files| {
            let fs = fresh_fs();
            for (n, b) in &files {
                fs.write_file(&dir().join(n), b);
            }
            exercise(&fs)
        },
    );
}

#[test]
fn valid_segment_headers_then_noise_never_panic() {
    run_property(
        "segment headers then noise",
        (
            prop::collection::vec(
                (1u64..300, prop::collection::vec(any::<u8>(), 0..600)),
                1..4,
            ),
            prop_oneof![
                Just(None),
                (0u64..300).prop_map(Some),
                any::<u64>().prop_map(Some)
            ],
        ),
        |(segs, acked)| {
            let fs = fresh_fs();
            for (first, noise) in &segs {
                let mut b = encode_segment_header(*first).to_vec();
                b.extend_from_slice(noise);
                fs.write_file(&dir().join(segment_name(*first)), &b);
            }
            if let Some(a) = acked {
                format::write_cursor(&fs, &dir(), a).expect("cursor");
            }
            exercise(&fs)
        },
    );
}

#[test]
fn forged_frames_with_valid_checksums_never_panic() {
    run_property(
        "forged frames with valid checksums",
        (
            prop::collection::vec(
                (
                    prop_oneof![3 => 1u64..100, 1 => any::<u64>(), 1 => u64::MAX - 4..=u64::MAX],
                    prop::collection::vec(forged_frame(), 0..6),
                ),
                1..4,
            ),
            prop_oneof![2 => 0u64..100, 1 => any::<u64>(), 1 => u64::MAX - 4..=u64::MAX],
        ),
        |(segs, acked)| {
            let fs = fresh_fs();
            for (first, frames) in &segs {
                let mut b = encode_segment_header(*first).to_vec();
                let mut due = *first;
                for f in frames {
                    b.extend_from_slice(&encode_forged(f, due));
                    due = due.wrapping_add(u64::from(f.2));
                }
                fs.write_file(&dir().join(segment_name(*first)), &b);
            }
            format::write_cursor(&fs, &dir(), acked).expect("cursor");
            exercise(&fs)
        },
    );
}

#[test]
fn any_cursor_value_never_panics() {
    run_property(
        "any cursor value",
        (
            prop_oneof![
                any::<u64>(),
                u64::MAX - 4..=u64::MAX,
                0u64..4,
                (1u64 << 63) - 4..(1u64 << 63) + 4
            ],
            any::<bool>(),
        ),
        |(acked, with_segment)| {
            let fs = fresh_fs();
            format::write_cursor(&fs, &dir(), acked).expect("cursor");
            if with_segment {
                let first = acked.wrapping_add(1);
                fs.write_file(
                    &dir().join(segment_name(first)),
                    &encode_segment_header(first),
                );
            }
            exercise(&fs)
        },
    );
}

#[test]
fn damaged_valid_logs_never_panic() {
    static LOGS: OnceLock<Vec<Files>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| (0..8).map(|i| valid_log(i / 2, i % 2 == 1)).collect());
    run_property(
        "damaged valid logs",
        (
            0usize..8,
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    any::<prop::sample::Index>(),
                    any::<u8>(),
                    0u8..4,
                ),
                1..6,
            ),
        ),
        |(which, edits)| {
            let fs = fresh_fs();
            let mut files = logs[which].clone();
            for (file, at, byte, how) in &edits {
                let n = files.len();
                let (_, b) = &mut files[file.index(n)];
                if b.is_empty() {
                    continue;
                }
                let i = at.index(b.len());
                match how {
                    0 | 1 => b[i] ^= (*byte).max(1),
                    2 => b.truncate(i),
                    _ => b.extend(std::iter::repeat_n(*byte, i % 64 + 1)),
                }
            }
            for (p, b) in &files {
                fs.write_file(p, b);
            }
            exercise(&fs)
        },
    );
}

// Regressions for what the properties found: sequence arithmetic overflowed (a panic in
// debug builds, wrap-around in release) for cursors, segments and frames near u64::MAX.
// Fixed by `format::MAX_SEQ`: sequences stay below 2^63, anything on disk claiming more is
// corruption, and an append that would pass it is refused.

fn open_err(fs: &SimFs) -> Error {
    open(fs, &opts()).expect_err("must not open")
}

#[test]
fn regression_cursor_at_u64_max_is_corruption_not_an_overflow() {
    // Without segments the cursor is the only record of where sequences continue: an
    // impossible one is corruption. With a segment it is an unreadable cursor (issue 13):
    // resume from the oldest segment, without overflowing anywhere.
    for with_segment in [false, true] {
        let fs = fresh_fs();
        format::write_cursor(&fs, &dir(), u64::MAX).expect("cursor");
        if with_segment {
            fs.write_file(&dir().join(segment_name(1)), &encode_segment_header(1));
            let log = open(&fs, &opts()).expect("an unreadable cursor is not corruption");
            let reset = log
                .recovery_report()
                .cursor_reset
                .clone()
                .expect("reported");
            assert_eq!((reset.acked, reset.redelivered), (0, None), "{reset}");
            assert_eq!(log.append(&[b"a"]).expect("append").first_seq, 1);
            drop(log);
            assert!(verify_with_fs(Arc::new(fs.clone()), dir()).is_ok());
        } else {
            let e = open_err(&fs);
            assert!(
                matches!(&e, Error::Corruption(c) if c.file == format::cursor_path(&dir())),
                "{e}"
            );
            assert!(verify_with_fs(Arc::new(fs.clone()), dir()).is_err());
        }
    }
}

#[test]
fn regression_cursor_near_u64_max_is_corruption_not_an_overflowing_append() {
    let fs = fresh_fs();
    format::write_cursor(&fs, &dir(), u64::MAX - 2).expect("cursor");
    let e = open_err(&fs);
    assert!(matches!(e, Error::Corruption(_)), "{e}");
}

#[test]
fn regression_segment_named_near_u64_max_is_corruption() {
    let fs = fresh_fs();
    let first = u64::MAX - 1;
    fs.write_file(
        &dir().join(segment_name(first)),
        &encode_segment_header(first),
    );
    format::write_cursor(&fs, &dir(), 0).expect("cursor");
    let e = open_err(&fs);
    assert!(
        matches!(&e, Error::Corruption(c) if c.file == dir().join(segment_name(first))),
        "{e}"
    );
}

#[test]
fn regression_appends_stop_at_the_end_of_the_sequence_space() {
    let max = format::MAX_SEQ;
    let fs = fresh_fs();
    let first = max - 2;
    fs.write_file(
        &dir().join(segment_name(first)),
        &encode_segment_header(first),
    );
    format::write_cursor(&fs, &dir(), first - 1).expect("cursor");
    let log = open(&fs, &opts()).expect("open");
    assert_eq!(log.append(&[b"a", b"b"]).expect("fits").last_seq, max - 1);
    let e = log.append(&[b"c"]).expect_err("sequence space exhausted");
    assert!(
        matches!(&e, Error::Poisoned(m) if m.contains("exhausted")),
        "{e}"
    );
    let got = sim_model::read_all(&log, 1, &mut SimRng::new(0)).expect("read");
    assert_eq!(got.len(), 2);
    drop(log);
    let log = open(&fs, &opts()).expect("reopen");
    assert_eq!(log.stats().next_seq, max);
}

#[test]
fn torn_header_segment_named_past_the_sequence_space_is_corruption() {
    for extra in [false, true] {
        let fs = fresh_fs();
        let name = segment_name(u64::MAX);
        fs.write_file(&dir().join(&name), b"short");
        if extra {
            // A predecessor whose seal names it.
            let mut b = encode_segment_header(1).to_vec();
            b.extend_from_slice(&format::encode_seal(u64::MAX));
            fs.write_file(&dir().join(segment_name(1)), &b);
        }
        format::write_cursor(&fs, &dir(), 0).expect("cursor");
        let e = open_err(&fs);
        assert!(matches!(e, Error::Corruption(_)), "{e}");
        assert!(verify_with_fs(Arc::new(fs.clone()), dir()).is_err());
    }
}
