//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use echopost_log::sim::SimFs;
use echopost_log::{Log, LogOptions, StoredRecord};

pub fn sim_dir() -> PathBuf {
    PathBuf::from("/data/log")
}

pub fn open_sim(fs: &SimFs, opts: LogOptions) -> echopost_log::Result<Log> {
    Log::open_with_fs(Arc::new(fs.clone()), sim_dir(), opts)
}

pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    }
}

/// A record whose content is determined by its index, so any mix-up is visible.
pub fn rec(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("record-{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (i as u8 % 26));
    }
    v.truncate(len.max(1));
    v
}

/// Reads everything from `from`, in batches of the given size.
pub fn read_all(log: &Log, from: u64, batch: usize) -> echopost_log::Result<Vec<StoredRecord>> {
    let mut r = log.reader(from);
    let mut out = Vec::new();
    loop {
        let b = r.next_batch(batch, 1 << 20)?;
        if b.is_empty() {
            return Ok(out);
        }
        out.extend(b);
    }
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}
