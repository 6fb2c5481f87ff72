//! Per-stream figures counted when asked (`ListStreams`, `echopost streams`, `status`):
//! one pass over the buffered records and one over the dead-letter log, holding one
//! page of records and one entry per stream (see the module documentation of
//! [`super`] for why these are not kept in the state).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use echopost_log::{Log, LogOptions, RECORD_OVERHEAD};
use echopost_proto::raw::check_record;
use echopost_proto::v1::{DeadLetter, StreamInfo};
use prost::Message;

use super::tables::Tables;
use crate::replay::dead_letters::dead_letter_dir;

/// Records per read of the backlog.
const PAGE_RECORDS: usize = 1000;
/// Bytes per read of the backlog (a single larger record is still read alone).
const PAGE_BYTES: usize = 4 << 20;
/// How long to wait for the replayer to release the dead-letter log.
const DEAD_LETTER_LOCK_WAIT: Duration = Duration::from_secs(2);

/// One stream's buffered records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    /// Each record's stored bytes plus its 4-byte length prefix in the frame.
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub oldest_unix_nanos: i64,
}

/// Counts the buffered (undelivered) records of every stream (records with an empty
/// stream are skipped).
pub fn scan(log: &Log) -> Result<HashMap<String, Backlog>, echopost_log::Error> {
    let mut out: HashMap<String, Backlog> = HashMap::new();
    let mut reader = log.reader(0);
    loop {
        let page = reader.next_batch(PAGE_RECORDS, PAGE_BYTES)?;
        if page.is_empty() {
            return Ok(out);
        }
        for r in page {
            let Ok(info) = check_record(&r.data) else {
                continue;
            };
            let stream = info.stream(&r.data);
            if stream.is_empty() {
                continue;
            }
            let b = match out.get_mut(stream) {
                Some(b) => b,
                None => out.entry(stream.to_owned()).or_default(),
            };
            if b.records == 0 {
                b.first_seq = r.seq;
                b.oldest_unix_nanos = info.timestamp_unix_nanos;
            }
            b.oldest_unix_nanos = b.oldest_unix_nanos.min(info.timestamp_unix_nanos);
            b.records += 1;
            b.bytes += (r.data.len() + RECORD_OVERHEAD) as u64;
            b.last_seq = r.seq;
        }
    }
}

/// Counts the dead letters of every stream in the EchoPost directory `dir`. Waits up to
/// two seconds for the replayer to release the dead-letter log.
pub fn dead_letters(dir: &Path) -> Result<HashMap<String, u64>, echopost_log::Error> {
    let dl = dead_letter_dir(dir);
    let mut out = HashMap::new();
    if !dl.is_dir() {
        return Ok(out);
    }
    let started = Instant::now();
    let log = loop {
        match Log::open(&dl, LogOptions::default()) {
            Err(echopost_log::Error::Locked { .. })
                if started.elapsed() < DEAD_LETTER_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    let mut reader = log.reader(0);
    loop {
        let page = reader.next_batch(PAGE_RECORDS, PAGE_BYTES)?;
        if page.is_empty() {
            break;
        }
        for r in page {
            if let Ok(letter) = DeadLetter::decode(r.data.as_slice())
                && let Some(stream) = letter.record.and_then(|s| s.record).map(|r| r.stream)
                && !stream.is_empty()
            {
                *out.entry(stream).or_default() += 1;
            }
        }
    }
    log.close()?;
    Ok(out)
}

/// `ListStreams`' answer: every stream the tables know (and any other one with buffered
/// records or dead letters), sorted by name.
pub fn stream_infos(
    tables: &Tables,
    backlog: &HashMap<String, Backlog>,
    dead: &HashMap<String, u64>,
) -> Vec<StreamInfo> {
    let mut all: BTreeMap<&str, StreamInfo> = BTreeMap::new();
    let names = tables
        .streams
        .keys()
        .chain(backlog.keys())
        .chain(dead.keys());
    for name in names {
        all.entry(name.as_str()).or_insert_with(|| {
            let b = backlog.get(name).copied().unwrap_or_default();
            StreamInfo {
                stream: name.clone(),
                version: tables.streams.get(name).map_or(0, |s| s.version),
                backlog_records: b.records,
                backlog_bytes: b.bytes,
                first_sequence: b.first_seq,
                last_sequence: b.last_seq,
                oldest_record_unix_nanos: b.oldest_unix_nanos,
                dead_lettered_records: dead.get(name).copied().unwrap_or(0),
            }
        });
    }
    all.into_values().collect()
}
