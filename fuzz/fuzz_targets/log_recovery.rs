//! Log recovery over arbitrary directory contents: the input is cut into the files of an
//! in-memory log directory (`SimFs`; the layout is `echopost_log::sim::image`), which is
//! then verified, opened, read to the end, appended to and acknowledged, and salvaged.
//! Must never panic: only Ok or typed errors. And the promises between them hold:
//! * when `verify` passes, opening and reading succeed;
//! * when `salvage` succeeds, `verify` passes on what it left, and the log opens and reads
//!   to the end (issue 13: "after it, `run` delivers the rest").
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use echopost_log::sim::{SimFs, image};
use echopost_log::{FileSystem, Log, LogOptions, salvage_with_fs, verify_with_fs};
use libfuzzer_sys::fuzz_target;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    }
}

/// Opens the log and reads every record; `Err` names the first step that failed.
fn open_and_read(fs: &SimFs, dir: &Path) -> Result<Log, String> {
    let log = Log::open_with_fs(Arc::new(fs.clone()), dir, options())
        .map_err(|e| format!("open: {e}"))?;
    let mut reader = log.reader(1);
    loop {
        match reader.next_batch(64, 1 << 16) {
            Ok(b) if b.is_empty() => return Ok(log),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir: PathBuf = Path::new("/fuzz/log").to_path_buf();
    let fs = SimFs::new(0);
    fs.create_dir_all(&dir)
        .expect("mkdir on the in-memory file system");
    image::decode_into(&fs, &dir, data);
    let salvage_fs = fs.deep_clone(0);

    let verified = verify_with_fs(Arc::new(fs.clone()), &dir);
    match open_and_read(&fs, &dir) {
        Ok(log) => {
            if let Ok(a) = log.append(&[b"fuzz".as_slice()]) {
                let _ = log.ack(a.first_seq);
            }
            let _ = log.stats();
        }
        Err(e) => assert!(verified.is_err(), "verify passed but {e}"),
    }

    let quarantine = dir.join("quarantine");
    if salvage_with_fs(Arc::new(salvage_fs.clone()), &dir, &quarantine).is_ok() {
        if let Err(e) = verify_with_fs(Arc::new(salvage_fs.clone()), &dir) {
            panic!("salvage succeeded but verify fails: {e}");
        }
        if let Err(e) = open_and_read(&salvage_fs, &dir) {
            panic!("salvage succeeded but {e}");
        }
    }
});
