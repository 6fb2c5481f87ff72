//! The seed corpus of the engine's fuzz targets (`fuzz/seeds/frame_decode/`,
//! `fuzz/seeds/log_recovery/`), made here by the real encoders and the real engine, and
//! checked against the committed files so that the seeds follow the on-disk format.
//!
//! After a change of the format, rewrite them with
//! `ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost-log --test it -- fuzz_seeds::`.
//! Other files in those folders (inputs a fuzzer found, kept as regressions) are left alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use echopost_log::format::{self, PreparedFrame, SEGMENT_HEADER_LEN};
use echopost_log::sim::{SimFs, image};
use echopost_log::{
    BatchBody, Compression, FileSystem, LogOptions, salvage_with_fs, verify_with_fs,
};

use crate::support::common::*;

/// `fuzz/seeds/<target>` of this repository.
fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// Writes the seeds (`ECHOPOST_WRITE_FUZZ_SEEDS=1`) or checks that each committed one is
/// what the encoders make now; returns the number of seeds and their bytes.
fn check_or_write(target: &str, seeds: &[(&str, Vec<u8>)]) -> (usize, usize) {
    let dir = seeds_dir(target);
    let write = std::env::var_os("ECHOPOST_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    if write {
        std::fs::create_dir_all(&dir).expect("create the seed folder");
    }
    let mut stale = Vec::new();
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes).expect("write a seed");
        } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or out of date: {stale:?}; rewrite them with \
         ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost-log --test it -- fuzz_seeds::"
    );
    let bytes = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("{target}: {} seeds, {bytes} bytes", seeds.len());
    (seeds.len(), bytes)
}

fn frame(records: &[&[u8]], first_seq: u64, compression: Compression) -> Vec<u8> {
    let mut f = PreparedFrame::encode(records, compression).expect("encode");
    f.seal_header(first_seq);
    f.bytes
}

/// The frames of one segment file, in order.
fn frames_of(segment: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while let Ok((h, _)) = format::parse_frame(&segment[at..]) {
        let end = at + h.frame_len() as usize;
        out.push(segment[at..end].to_vec());
        at = end;
    }
    out
}

fn opts(segment_bytes: u64, compression: Compression) -> LogOptions {
    LogOptions {
        segment_bytes,
        compression,
        ..LogOptions::default()
    }
}

/// A real log: `batches` batches of three 60-byte records over 4 KiB segments (the
/// smallest the engine makes), the first `acked` sequences acknowledged, then closed.
fn written_log(fs: &SimFs, batches: u64, acked: u64, compression: Compression) {
    let log = open_sim(fs, opts(4096, compression)).expect("open");
    for i in 0..batches {
        let recs: Vec<Vec<u8>> = (0..3).map(|j| rec(i * 3 + j, 60)).collect();
        log.append(&recs).expect("append");
    }
    if acked > 0 {
        log.ack(acked).expect("ack");
    }
    log.close().expect("close");
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

fn image_of(fs: &SimFs) -> Vec<u8> {
    image::encode(fs, &sim_dir()).expect("the log fits an image")
}

fn frame_decode_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let hello: &[&[u8]] = &[b"hello", b"", b"world"];
    let text = rec(7, 300);
    // A batch with a metadata entry, as the daemon writes them: from a real segment.
    let fs = SimFs::new(0);
    let log = open_sim(&fs, opts(1 << 20, Compression::None)).expect("open");
    let mut body = BatchBody::with_meta(64, b"producer-7:batch-3");
    body.push(b"with metadata");
    let mut group = log.group_writer();
    group
        .stage(log.prepare(body).expect("prepare"))
        .expect("stage");
    group.finish().expect("finish");
    log.close().expect("close");
    let seg = fs.read_file(&segments(&fs)[0]).expect("segment");
    let meta = frames_of(&seg).remove(0);

    vec![
        ("batch", frame(hello, 1, Compression::None)),
        (
            "batch_zstd",
            frame(&[text.as_slice(); 4], 1000, Compression::Zstd { level: 3 }),
        ),
        ("batch_meta", meta),
        ("seal", format::encode_seal(42).to_vec()),
        ("gap", format::encode_gap(5, 3).to_vec()),
        // Edge cases: an empty record only, the largest sequence a batch may start at.
        (
            "batch_one_empty_record",
            frame(&[b""], 1, Compression::None),
        ),
        (
            "batch_last_sequence",
            frame(&[b"x"], format::MAX_SEQ - 1, Compression::None),
        ),
    ]
}

fn log_recovery_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    let fs = SimFs::new(0);
    open_sim(&fs, opts(4096, Compression::None))
        .expect("open")
        .close()
        .expect("close");
    seeds.push(("new_log", image_of(&fs)));

    let fs = SimFs::new(0);
    written_log(&fs, 40, 4, Compression::None);
    let healthy = fs.deep_clone(0);
    seeds.push(("segments_acked", image_of(&fs)));

    let fs = SimFs::new(0);
    written_log(&fs, 40, 0, Compression::Zstd { level: 1 });
    seeds.push(("zstd", image_of(&fs)));

    // The daemon's checkpoint beside the log.
    let fs = healthy.deep_clone(0);
    let log = open_sim(&fs, opts(4096, Compression::None)).expect("open");
    log.write_checkpoint(30, b"producers: 7=3")
        .expect("checkpoint");
    log.close().expect("close");
    seeds.push(("checkpoint", image_of(&fs)));

    // A torn tail: the last frame of the newest segment cut in half.
    let fs = healthy.deep_clone(0);
    let last = segments(&fs).pop().expect("a segment");
    let bytes = fs.read_file(&last).expect("read");
    fs.write_file(&last, &bytes[..bytes.len() - 30]);
    seeds.push(("torn_tail", image_of(&fs)));

    // A flipped byte in a sealed middle segment (what `salvage` is for), and the log
    // `salvage` makes of it (a gap frame where the damage was).
    let fs = healthy.deep_clone(0);
    let middle = segments(&fs)[1].clone();
    let mut bytes = fs.read_file(&middle).expect("read");
    bytes[SEGMENT_HEADER_LEN as usize + 40] ^= 0x20;
    fs.write_file(&middle, &bytes);
    seeds.push(("flipped_byte_middle", image_of(&fs)));
    salvage_with_fs(
        Arc::new(fs.clone()),
        &sim_dir(),
        &sim_dir().join("quarantine"),
    )
    .expect("salvage");
    seeds.push(("salvaged", image_of(&fs)));

    // Cursors: none, an old-format one, a torn one.
    let fs = healthy.deep_clone(0);
    fs.delete_file(&format::cursor_path(&sim_dir()));
    seeds.push(("no_cursor", image_of(&fs)));
    let fs = healthy.deep_clone(0);
    fs.delete_file(&format::cursor_path(&sim_dir()));
    format::write_legacy_cursor(&fs, &sim_dir(), 40).expect("legacy cursor");
    seeds.push(("legacy_cursor", image_of(&fs)));
    let fs = healthy.deep_clone(0);
    let cursor = format::cursor_path(&sim_dir());
    let bytes = fs.read_file(&cursor).expect("cursor");
    fs.write_file(&cursor, &bytes[..20]);
    seeds.push(("torn_cursor", image_of(&fs)));

    seeds
}

#[test]
fn frame_decode_seeds_are_current() {
    let seeds = frame_decode_seeds();
    for (name, bytes) in &seeds {
        assert!(
            format::parse_frame(bytes).is_ok(),
            "{name} is a valid frame"
        );
    }
    let (n, _) = check_or_write("frame_decode", &seeds);
    assert_eq!(n, 7);
}

#[test]
fn log_recovery_seeds_are_current() {
    let seeds = log_recovery_seeds();
    // Each decodes back to a directory: the damaged one fails `verify`, the others (a torn
    // tail and an unreadable cursor are repaired by recovery) open and read to the end.
    for (name, bytes) in &seeds {
        let fs = SimFs::new(0);
        fs.create_dir_all(&sim_dir()).expect("mkdir");
        image::decode_into(&fs, &sim_dir(), bytes);
        if *name == "flipped_byte_middle" {
            assert!(
                verify_with_fs(Arc::new(fs.clone()), sim_dir()).is_err(),
                "{name} verified"
            );
            continue;
        }
        let log =
            open_sim(&fs, opts(4096, Compression::None)).unwrap_or_else(|e| panic!("{name}: {e}"));
        read_all(&log, 0, 16).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (n, bytes) = check_or_write("log_recovery", &seeds);
    assert_eq!(n, 10);
    assert!(bytes < 128 << 10, "the seeds stay small: {bytes} bytes");
}
