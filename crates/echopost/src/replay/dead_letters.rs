//! The dead-letter log: records the main server rejected permanently, with the reason.
//!
//! It is a second engine log in `DIR/dead-letters/` (the engine ignores subdirectories of
//! `DIR`), so it has the same guarantees: checksummed, crash-safe, durable before the
//! append returns. Each entry is an encoded `echopost.v1.DeadLetter` holding the record
//! with its original sequence, the reason and the time.
//!
//! # Contracts
//! * **Replayer** ([`Writer`]): a rejected record is appended here, durably, *before* its
//!   sequence is acknowledged in the main log, so loss is not possible. Each record is
//!   held **once** (issue 13): a crash (or a failed `fdatasync`, after which the frame may
//!   still reach the disk) between the two leaves the record in both logs, and it is
//!   replayed and rejected again; the writer then finds its sequence among the dead
//!   letters it read when it opened the log (those above the main log's acknowledged
//!   sequence) and does not write it a second time.
//! * **`echopost dead-letters list`** ([`list`]): every dead letter not yet requeued, oldest
//!   first. Reads only; but opening the log takes its lock, so it fails with
//!   [`DeadLetterError::Log`]`(Locked)` at the moment a running replayer is writing one
//!   (retry). A directory without dead letters lists nothing and is not created.
//! * **`echopost dead-letters requeue`** ([`requeue_with`]): puts every dead letter's
//!   record back at the end of the backlog (a new sequence; the content unchanged but for
//!   the [`ORIGINAL_SEQUENCE_HEADER`] that keeps its dedupe identity), durably, and only
//!   then removes the dead letters (acknowledges them in the dead-letter log). A crash in
//!   between requeues a record twice, never zero times. With a daemon running, the
//!   records go through its `Append` (the command does that); without one, straight into
//!   the main log ([`requeue`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use echopost_log::{Log, LogOptions};
use echopost_proto::v1::{DeadLetter, Record, StoredRecord};
use prost::Message;

/// Name of the dead-letter log's directory inside the EchoPost directory.
pub const DIR_NAME: &str = "dead-letters";

/// Records per engine read and per append when requeueing.
const REQUEUE_BATCH_RECORDS: usize = 1024;
const REQUEUE_BATCH_BYTES: usize = 4 << 20;
/// How long the replayer waits for a concurrent `dead-letters list` to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Errors of the dead-letter log.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The engine failed (I/O, corruption, or the log is locked by another process).
    #[error(transparent)]
    Log(#[from] echopost_log::Error),
    /// An entry is not an encoded `DeadLetter`.
    #[error("dead letter {seq} in {dir} does not decode: {source}")]
    Decode {
        dir: PathBuf,
        seq: u64,
        #[source]
        source: prost::DecodeError,
    },
    /// An entry holds no record to requeue.
    #[error("dead letter {seq} in {dir} holds no record")]
    Empty { dir: PathBuf, seq: u64 },
    /// The running daemon did not take the requeued records (its answer says why); they
    /// are still dead letters.
    #[error("the daemon did not store the requeued records: {0}")]
    Refused(String),
    /// `purge --through SEQ` names a sequence no dead letter has.
    #[error(
        "no dead letter has sequence {through} (`echopost dead-letters list` shows them); nothing was purged"
    )]
    NoSuchSequence { through: u64 },
}

/// The dead-letter log's size: what `status` shows and the disk quota counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Dead letters not yet requeued or purged.
    pub records: u64,
    /// Bytes of its segment files.
    pub bytes: u64,
}

/// The figures of the dead-letter log in `dir` (zero without one), read without its lock
/// and without changing anything, so beside a running replayer too (a write in progress
/// may then be missing from them). Costs a header read per segment and one scan of the
/// last segment.
pub fn figures(dir: &Path) -> Result<Figures, DeadLetterError> {
    let dl_dir = dead_letter_dir(dir);
    if !dl_dir.is_dir() {
        return Ok(Figures::default());
    }
    let layout = echopost_log::analyze(&dl_dir)?;
    // The last segment's file may be pre-sized (a sparse tail that takes no space):
    // what counts is its data.
    let sealed: u64 = layout.segments.iter().rev().skip(1).map(|s| s.len).sum();
    let last = if layout.segments.is_empty() {
        0
    } else {
        layout.active_valid_len
    };
    Ok(Figures {
        records: layout.next_seq.saturating_sub(layout.acked + 1),
        bytes: sealed + last,
    })
}

/// `DIR/dead-letters`.
pub fn dead_letter_dir(dir: &Path) -> PathBuf {
    dir.join(DIR_NAME)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Builds the entry for a rejected record (`data` is the stored, encoded `Record`).
pub fn make_dead_letter(
    seq: u64,
    data: &[u8],
    reason: &str,
) -> Result<DeadLetter, prost::DecodeError> {
    Ok(DeadLetter {
        record: Some(StoredRecord {
            sequence: seq,
            record: Some(Record::decode(data)?),
        }),
        reason: reason.to_string(),
        dead_lettered_unix_nanos: now_nanos(),
    })
}

/// Every dead letter not yet requeued, oldest first. See the module documentation.
pub fn list(dir: &Path) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let dl_dir = dead_letter_dir(dir);
    if !dl_dir.is_dir() {
        return Ok(Vec::new());
    }
    let log = Log::open(&dl_dir, LogOptions::default())?;
    let mut reader = log.reader(0);
    let mut out = Vec::new();
    loop {
        let batch = reader.next_batch(REQUEUE_BATCH_RECORDS, REQUEUE_BATCH_BYTES)?;
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            out.push(decode(&dl_dir, r.seq, r.data)?);
        }
    }
    log.close()?;
    Ok(out)
}

/// The header a requeued record carries: the sequence it had when it was first stored
/// (and dead-lettered). The replayer's dedupe identity uses it instead of the new
/// sequence (`Idempotency-Key`, `echopost-sequence` metadata), so a receiver that saw
/// the record before sees the same key; `Sink/Deliver` receivers find it in the record's
/// headers. A record requeued more than once keeps the first one.
pub const ORIGINAL_SEQUENCE_HEADER: &str = "echopost-original-sequence";

/// The sequence a record was first stored under: its [`ORIGINAL_SEQUENCE_HEADER`], or
/// `seq` (the one it has now) when it was never requeued.
pub fn original_sequence(record: &Record, seq: u64) -> u64 {
    record
        .headers
        .get(ORIGINAL_SEQUENCE_HEADER)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(seq)
}

/// Moves every dead letter back into `main_log` (the daemon is not running); returns how
/// many. A dead letter whose record is still in `main_log`'s backlog is removed instead
/// (see the module documentation). See [`requeue_with`].
pub fn requeue(dir: &Path, main_log: &Log) -> Result<usize, DeadLetterError> {
    let st = main_log.stats();
    requeue_filtered(dir, st.first_unacked_seq..st.next_seq, |records| {
        let encoded: Vec<Vec<u8>> = records.iter().map(Message::encode_to_vec).collect();
        main_log.append(&encoded)?;
        // Durable in the main log first (whatever its sync policy), then forgotten here.
        main_log.sync_now()?;
        Ok(())
    })
}

/// Moves every dead letter present when it starts back into the backlog through `store`,
/// oldest first, in chunks; returns how many. `store` must make a chunk durable before it
/// returns (the main log directly, or a running daemon's `Append`, which answers once
/// the records are durable).
///
/// Each record goes back unchanged except for [`ORIGINAL_SEQUENCE_HEADER`]: same id,
/// stream, payload, route, timestamp, other headers; it gets a new sequence at the end of
/// the backlog, after records stored meanwhile, and the requeued records keep their
/// relative order. A chunk is removed from the dead-letter log only after `store`
/// succeeded; a crash in between requeues it twice (with the same original sequence),
/// never zero times.
///
/// The dead-letter log is opened once per chunk and closed again, so a running replayer
/// that must write a dead letter meanwhile waits for one chunk at most; dead letters it
/// writes after this started are left for the next requeue.
pub fn requeue_with(
    dir: &Path,
    store: impl FnMut(&[Record]) -> Result<(), DeadLetterError>,
) -> Result<usize, DeadLetterError> {
    requeue_filtered(dir, 0..0, store)
}

/// [`requeue_with`], leaving out (but removing) the dead letters whose sequence is in
/// `still_buffered`: their records are still in the main log's backlog.
fn requeue_filtered(
    dir: &Path,
    still_buffered: std::ops::Range<u64>,
    mut store: impl FnMut(&[Record]) -> Result<(), DeadLetterError>,
) -> Result<usize, DeadLetterError> {
    let dl_dir = dead_letter_dir(dir);
    if !dl_dir.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    let mut end: Option<u64> = None;
    loop {
        let log = open_waiting(&dl_dir)?;
        // The last dead letter when requeue started: later ones are not taken.
        let end = *end.get_or_insert_with(|| log.stats().next_seq.saturating_sub(1));
        let mut reader = log.reader(0);
        let batch = reader.next_batch(REQUEUE_BATCH_RECORDS, REQUEUE_BATCH_BYTES)?;
        let batch: Vec<_> = batch.into_iter().filter(|r| r.seq <= end).collect();
        let Some(last) = batch.last().map(|r| r.seq) else {
            log.close()?;
            break;
        };
        let mut records = Vec::with_capacity(batch.len());
        for r in &batch {
            let letter = decode(&dl_dir, r.seq, &r.data)?;
            let stored = letter.record.ok_or_else(|| DeadLetterError::Empty {
                dir: dl_dir.clone(),
                seq: r.seq,
            })?;
            if still_buffered.contains(&stored.sequence) {
                continue;
            }
            let mut record = stored.record.ok_or_else(|| DeadLetterError::Empty {
                dir: dl_dir.clone(),
                seq: r.seq,
            })?;
            let original = original_sequence(&record, stored.sequence);
            record
                .headers
                .insert(ORIGINAL_SEQUENCE_HEADER.to_owned(), original.to_string());
            records.push(record);
        }
        if !records.is_empty() {
            store(&records)?;
        }
        log.ack(last)?;
        log.close()?;
        total += records.len();
        if last >= end {
            break;
        }
    }
    Ok(total)
}

/// What [`purge`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Dead letters deleted.
    pub records: u64,
    /// The log's figures after the purge.
    pub left: Figures,
}

/// Deletes dead letters for good, oldest first: all of them present when it starts, or,
/// with `through`, those up to and including the dead letter of (original) sequence
/// `through` as `list` shows it, which must exist ([`DeadLetterError::NoSuchSequence`]
/// otherwise, and nothing is deleted). Works beside a running replayer: the log is held
/// only for the purge, and dead letters written after it began are kept. Segments that
/// hold only purged dead letters are deleted, which frees their space.
pub fn purge(dir: &Path, through: Option<u64>) -> Result<Purged, DeadLetterError> {
    let dl_dir = dead_letter_dir(dir);
    if !dl_dir.is_dir() {
        return match through {
            Some(t) => Err(DeadLetterError::NoSuchSequence { through: t }),
            None => Ok(Purged::default()),
        };
    }
    let log = open_waiting(&dl_dir)?;
    let stats = log.stats();
    let end = match through {
        None => stats.next_seq.saturating_sub(1),
        Some(t) => {
            let mut reader = log.reader(0);
            let mut found = None;
            'scan: loop {
                let batch = reader.next_batch(REQUEUE_BATCH_RECORDS, REQUEUE_BATCH_BYTES)?;
                if batch.is_empty() {
                    break;
                }
                for r in &batch {
                    let letter = decode(&dl_dir, r.seq, r.data)?;
                    if letter.record.as_ref().map(|s| s.sequence) == Some(t) {
                        found = Some(r.seq);
                        break 'scan;
                    }
                }
            }
            match found {
                Some(seq) => seq,
                None => {
                    log.close()?;
                    return Err(DeadLetterError::NoSuchSequence { through: t });
                }
            }
        }
    };
    let records = end.saturating_sub(stats.acked);
    if records > 0 {
        log.ack(end)?;
        log.reclaim_delivered()?;
    }
    log.close()?;
    Ok(Purged {
        records,
        left: figures(dir)?,
    })
}

/// Opens the dead-letter log, waiting up to [`LOCK_WAIT`] while a running replayer holds
/// it for a moment.
fn open_waiting(dl_dir: &Path) -> Result<Log, echopost_log::Error> {
    let started = Instant::now();
    loop {
        match Log::open(dl_dir, LogOptions::default()) {
            Err(echopost_log::Error::Locked { .. }) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn decode(dir: &Path, seq: u64, data: &[u8]) -> Result<DeadLetter, DeadLetterError> {
    DeadLetter::decode(data).map_err(|source| DeadLetterError::Decode {
        dir: dir.to_path_buf(),
        seq,
        source,
    })
}

/// The replayer's handle: opens the log on first use, keeps it open while dead letters
/// keep coming, and closes it when replay goes idle so that `list` can read it. Blocking.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    log: Option<Log>,
    /// Main-log sequences held as dead letters and not yet acknowledged in the main log:
    /// read from the log when it is opened after a start or a failed write, then kept up
    /// to date. Small: a dead letter's sequence is acknowledged right after it is written.
    present: Option<BTreeSet<u64>>,
    /// The simulated file system of the crash and fault tests.
    #[cfg(test)]
    fs: Option<std::sync::Arc<dyn echopost_log::FileSystem>>,
}

/// What [`Writer::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The dead letter is stored (durably).
    Stored,
    /// The record was already a dead letter (written before a crash or a failed sync);
    /// nothing was written.
    AlreadyThere,
}

impl Writer {
    /// A writer for the EchoPost directory `dir`; nothing is opened yet.
    pub fn new(dir: &Path) -> Self {
        Writer {
            dir: dead_letter_dir(dir),
            log: None,
            present: None,
            #[cfg(test)]
            fs: None,
        }
    }

    /// Appends `letter` durably (returns only once it is on stable storage), unless its
    /// record is already a dead letter. `main_acked` is the main log's acknowledged
    /// sequence: dead letters at or below it can no longer come back.
    pub fn write(
        &mut self,
        letter: &DeadLetter,
        main_acked: u64,
    ) -> Result<Written, DeadLetterError> {
        let log = match self.log.take() {
            Some(log) => log,
            None => self.open()?,
        };
        if self.present.is_none() {
            match present_above(&self.dir, &log, main_acked) {
                Ok(p) => self.present = Some(p),
                Err(e) => {
                    let _ = log.close();
                    return Err(e);
                }
            }
        }
        let seq = letter.record.as_ref().map_or(0, |r| r.sequence);
        let present = self.present.get_or_insert_with(BTreeSet::new);
        *present = present.split_off(&(main_acked + 1));
        if present.contains(&seq) {
            self.log = Some(log);
            return Ok(Written::AlreadyThere);
        }
        match log.append(&[letter.encode_to_vec()]) {
            Ok(_) => {
                present.insert(seq);
                self.log = Some(log);
                Ok(Written::Stored)
            }
            Err(e) => {
                // A log that failed a write is poisoned; the next attempt reopens (and
                // recovers) it, and reads again what it holds: the failed frame may
                // have reached the disk after all.
                self.present = None;
                Err(e.into())
            }
        }
    }

    /// The figures of the open log (`None` when it is closed).
    pub fn figures(&self) -> Option<Figures> {
        self.log.as_ref().map(|log| {
            let st = log.stats();
            Figures {
                records: st.backlog_records,
                bytes: st.disk_bytes,
            }
        })
    }

    /// Releases the log (and its lock).
    pub fn close(&mut self) -> Result<(), echopost_log::Error> {
        match self.log.take() {
            Some(log) => log.close(),
            None => Ok(()),
        }
    }

    fn open(&self) -> Result<Log, echopost_log::Error> {
        #[cfg(test)]
        if let Some(fs) = &self.fs {
            return Log::open_with_fs(std::sync::Arc::clone(fs), &self.dir, LogOptions::default());
        }
        open_waiting(&self.dir)
    }
}

/// The main-log sequences above `main_acked` among the dead letters in `log`.
fn present_above(dir: &Path, log: &Log, main_acked: u64) -> Result<BTreeSet<u64>, DeadLetterError> {
    let mut out = BTreeSet::new();
    let mut reader = log.reader(0);
    loop {
        let batch = reader.next_batch(REQUEUE_BATCH_RECORDS, REQUEUE_BATCH_BYTES)?;
        if batch.is_empty() {
            return Ok(out);
        }
        for r in &batch {
            let letter = decode(dir, r.seq, r.data)?;
            if let Some(seq) = letter.record.map(|s| s.sequence)
                && seq > main_acked
            {
                out.insert(seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> Record {
        Record {
            id: format!("id-{i}"),
            payload: vec![i as u8; 10],
            route: "POST /x".into(),
            timestamp_unix_nanos: 1_000 + i as i64,
            ..Default::default()
        }
    }

    #[test]
    fn write_list_requeue() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(dir.path()).unwrap().is_empty());
        assert!(
            !dead_letter_dir(dir.path()).exists(),
            "list must not create it"
        );

        let mut w = Writer::new(dir.path());
        for i in [5u64, 9, 12] {
            let l = make_dead_letter(i, &rec(i).encode_to_vec(), &format!("rejected {i}")).unwrap();
            assert_eq!(w.write(&l, 0).unwrap(), Written::Stored);
        }
        // While the writer holds it, list waits for nobody: it reports the lock.
        assert!(matches!(
            list(dir.path()),
            Err(DeadLetterError::Log(echopost_log::Error::Locked { .. }))
        ));
        w.close().unwrap();

        let got = list(dir.path()).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].reason, "rejected 9");
        let sr = got[1].record.as_ref().unwrap();
        assert_eq!(sr.sequence, 9);
        assert_eq!(sr.record.as_ref().unwrap(), &rec(9));
        assert!(got[1].dead_lettered_unix_nanos > 0);

        let main_dir = tempfile::tempdir().unwrap();
        let main = Log::open(main_dir.path(), LogOptions::default()).unwrap();
        main.append(&[b"x".to_vec()]).unwrap();
        assert_eq!(requeue(dir.path(), &main).unwrap(), 3);
        assert!(list(dir.path()).unwrap().is_empty());
        assert_eq!(requeue(dir.path(), &main).unwrap(), 0);
        let mut r = main.reader(0);
        let all = r.next_batch(100, 1 << 20).unwrap();
        assert_eq!(all.len(), 4);
        let back: Vec<Record> = all
            .iter()
            .skip(1)
            .map(|s| Record::decode(s.data).unwrap())
            .collect();
        // Unchanged but for the header that keeps each record's dedupe identity.
        let want: Vec<Record> = [5u64, 9, 12]
            .iter()
            .map(|&i| {
                let mut r = rec(i);
                r.headers
                    .insert(ORIGINAL_SEQUENCE_HEADER.into(), i.to_string());
                r
            })
            .collect();
        assert_eq!(back, want);
        // Dead-lettered again (and acknowledged in the main log, as the replayer does) and
        // requeued again, a record keeps its first sequence.
        let mut w = Writer::new(dir.path());
        w.write(
            &make_dead_letter(3, &back[1].encode_to_vec(), "again").unwrap(),
            0,
        )
        .unwrap();
        main.ack(3).unwrap();
        // A dead letter whose acknowledgement a crash lost: its record (4) is still in the
        // backlog, so requeue removes the dead letter and leaves the record where it is.
        w.write(
            &make_dead_letter(4, &back[2].encode_to_vec(), "crashed").unwrap(),
            3,
        )
        .unwrap();
        w.close().unwrap();
        assert_eq!(requeue(dir.path(), &main).unwrap(), 1);
        assert!(list(dir.path()).unwrap().is_empty());
        assert_eq!(main.stats().next_seq, 6, "only the one record went back");
        let again = main.reader(5).next_batch(1, 1 << 20).unwrap();
        let again = Record::decode(again.first().unwrap().data).unwrap();
        assert_eq!(again.headers[ORIGINAL_SEQUENCE_HEADER], "9");
        assert_eq!(original_sequence(&again, 5), 9);
        assert_eq!(
            all.get(1).unwrap().seq,
            2,
            "requeued records get new sequences at the end"
        );
    }

    #[test]
    fn garbage_entries_are_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = Log::open(dead_letter_dir(dir.path()), LogOptions::default()).unwrap();
            l.append(&[vec![0xff, 0xff, 0xff]]).unwrap();
            l.close().unwrap();
        }
        assert!(matches!(
            list(dir.path()),
            Err(DeadLetterError::Decode { seq: 1, .. })
        ));
        let main_dir = tempfile::tempdir().unwrap();
        let main = Log::open(main_dir.path(), LogOptions::default()).unwrap();
        assert!(requeue(dir.path(), &main).is_err());
        assert_eq!(main.stats().backlog_records, 0, "nothing half-requeued");
    }

    /// Issue 13: a failed `fdatasync` (or a crash) between the dead letter and the main
    /// log's acknowledgement must not leave the record dead-lettered twice. Every
    /// operation of the write fails in turn; the process then dies (its page cache
    /// survives, as after a failed sync) or the power fails; the restarted writer is
    /// handed the same record again.
    #[test]
    fn each_record_is_dead_lettered_once_whatever_fails() {
        use echopost_log::sim::{Fault, FaultError, SimFs};
        use std::sync::Arc;
        let dir = Path::new("/sim/echopost");
        let letter = |seq: u64| make_dead_letter(seq, &rec(seq).encode_to_vec(), "400").unwrap();
        let writer = |fs: &SimFs| {
            let mut w = Writer::new(dir);
            w.fs = Some(Arc::new(fs.clone()) as Arc<dyn echopost_log::FileSystem>);
            w
        };
        let held = |fs: &SimFs| -> Vec<u64> {
            let log = Log::open_with_fs(
                Arc::new(fs.clone()),
                dead_letter_dir(dir),
                LogOptions::default(),
            )
            .unwrap();
            let got = log.reader(0).next_batch(1000, 1 << 20).unwrap();
            got.iter()
                .map(|r| decode(dir, r.seq, r.data).unwrap().record.unwrap().sequence)
                .collect()
        };
        // The dead-letter log already holds 7 (delivered long ago: main acked 9) and 10.
        let base = SimFs::new(1);
        {
            let mut w = writer(&base);
            w.write(&letter(7), 0).unwrap();
            w.write(&letter(10), 9).unwrap();
            w.close().unwrap();
        }
        let ops = {
            let fs = base.deep_clone(0);
            let before = fs.op_count();
            let mut w = writer(&fs);
            w.write(&letter(11), 9).unwrap();
            fs.op_count() - before
        };
        assert!(ops > 3, "the write took {ops} operations");
        let mut failures = 0;
        for at in 0..ops {
            for power_loss in [false, true] {
                let seed = at * 2 + u64::from(power_loss);
                let fs = base.deep_clone(seed);
                let mut w = writer(&fs);
                fs.set_fault(Some(Fault {
                    at_op: fs.op_count() + at,
                    error: FaultError::Eio,
                    persistent: false,
                }));
                if w.write(&letter(11), 9).is_ok() {
                    // Some operations are allowed to fail silently (none here so far),
                    // but the record must then be held.
                    assert!(held(&fs).contains(&11), "seed {seed}");
                    continue;
                }
                failures += 1;
                drop(w);
                if power_loss {
                    fs.crash(true)
                } else {
                    fs.kill_process()
                }
                // After the restart the record (main acked 9) is rejected again, and 10
                // (written before the crash, its acknowledgement lost) comes back too.
                let mut w = writer(&fs);
                assert_eq!(
                    w.write(&letter(10), 9).unwrap(),
                    Written::AlreadyThere,
                    "seed {seed}"
                );
                w.write(&letter(11), 9).unwrap();
                assert_eq!(
                    w.write(&letter(11), 9).unwrap(),
                    Written::AlreadyThere,
                    "seed {seed}"
                );
                w.close().unwrap();
                assert_eq!(
                    held(&fs),
                    vec![7, 10, 11],
                    "seed {seed}: op {at} failed, power loss {power_loss}"
                );
            }
        }
        assert!(failures > 0);
    }

    #[test]
    fn purge_through_a_reviewed_sequence_keeps_the_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(purge(dir.path(), None).unwrap(), Purged::default());
        assert!(matches!(
            purge(dir.path(), Some(3)),
            Err(DeadLetterError::NoSuchSequence { through: 3 })
        ));
        let mut w = Writer::new(dir.path());
        for i in [5u64, 9, 12, 20] {
            w.write(
                &make_dead_letter(i, &rec(i).encode_to_vec(), "400").unwrap(),
                0,
            )
            .unwrap();
        }
        w.close().unwrap();
        let before = figures(dir.path()).unwrap();
        assert_eq!(before.records, 4);
        assert!(before.bytes > 0);
        // A sequence no dead letter has: nothing is purged.
        assert!(matches!(
            purge(dir.path(), Some(10)),
            Err(DeadLetterError::NoSuchSequence { through: 10 })
        ));
        assert_eq!(list(dir.path()).unwrap().len(), 4);
        let p = purge(dir.path(), Some(9)).unwrap();
        assert_eq!((p.records, p.left.records), (2, 2));
        let left: Vec<u64> = list(dir.path())
            .unwrap()
            .iter()
            .map(|l| l.record.as_ref().unwrap().sequence)
            .collect();
        assert_eq!(left, [12, 20]);
        let p = purge(dir.path(), None).unwrap();
        assert_eq!((p.records, p.left.records), (2, 0));
        assert!(list(dir.path()).unwrap().is_empty());
        assert_eq!(purge(dir.path(), None).unwrap().records, 0);
    }
}
