//! Log recovery over arbitrary directory contents: the input is cut into files of an
//! in-memory directory (`SimFs`), then the log is opened, read to the end, appended to and
//! verified. Must never panic: only Ok or typed errors. When `verify` passes, opening and
//! reading must succeed too.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use echopost_log::format::{encode_segment_header, segment_name};
use echopost_log::sim::SimFs;
use echopost_log::{FileSystem, Log, LogOptions, verify_with_fs};
use libfuzzer_sys::fuzz_target;

/// Input format, repeated: one byte choosing the file name, two bytes of length (LE), then
/// that many bytes of content. Names 0–2 get a valid segment header prepended, so the
/// fuzzer spends its time on frames rather than on rediscovering the header.
fn files(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < 8 {
        let sel = data[0];
        let len = usize::from(u16::from_le_bytes([data[1], data[2]])).min(data.len() - 3);
        let body = &data[3..3 + len];
        data = &data[3 + len..];
        let first = u64::from(sel % 4) * 7 + 1;
        let (name, content) = match sel % 8 {
            0..=2 => {
                let mut c = encode_segment_header(first).to_vec();
                c.extend_from_slice(body);
                (segment_name(first), c)
            }
            3 => (segment_name(u64::from(sel)), body.to_vec()),
            4 => ("cursor".to_owned(), body.to_vec()),
            5 => ("cursor.tmp".to_owned(), body.to_vec()),
            6 => ("LOCK".to_owned(), body.to_vec()),
            _ => (format!("junk{sel}"), body.to_vec()),
        };
        out.push((name, content));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let dir: PathBuf = Path::new("/fuzz/log").to_path_buf();
    let fs = SimFs::new(0);
    fs.create_dir_all(&dir).expect("mkdir");
    for (name, content) in files(data) {
        fs.write_file(&dir.join(name), &content);
    }
    let verified = verify_with_fs(Arc::new(fs.clone()), &dir);
    let opts = LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    };
    let Ok(log) = Log::open_with_fs(Arc::new(fs.clone()), &dir, opts) else {
        assert!(verified.is_err(), "verify passed but open failed");
        return;
    };
    let mut reader = log.reader(1);
    let mut read_ok = true;
    loop {
        match reader.next_batch(64, 1 << 16) {
            Ok(b) if b.is_empty() => break,
            Ok(_) => {}
            Err(_) => {
                read_ok = false;
                break;
            }
        }
    }
    assert!(
        read_ok || verified.is_err(),
        "verify passed but reading failed"
    );
    if let Ok(a) = log.append(&[b"fuzz".as_slice()]) {
        let _ = log.ack(a.first_seq);
    }
    let _ = log.stats();
});
