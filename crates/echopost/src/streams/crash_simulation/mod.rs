//! Crash simulation of the producer and stream state (issue 14): the daemon's own code
//! (request encoding [`encode_request`], the committer's decision and staging
//! [`committer::store`], its [`Checkpointer`], and [`recover`] at open) on the engine's
//! simulated file system, driven by a seed.
//!
//! Each cycle opens the log and rebuilds the tables as the daemon does, then appends
//! batches of idempotent producers (next numbers, retries, gaps, old numbers) and of
//! streams (with right and wrong `expected_stream_version`s, several streams, records
//! without a stream), writes checkpoints, delivers and so deletes segments, and syncs,
//! until a file-system fault (EIO or ENOSPC, one-shot or a dead device) stops it; then
//! the machine loses power (unsynced data lost, with or without torn writes) or the
//! process is killed.
//!
//! After every reopen the rebuilt tables must agree exactly with an independent model
//! folded from the batches that survived (every batch whose sequences end at or before
//! the log's `next_seq`, delivered and deleted ones included): each stream's version and
//! newest sequence, the set of streams, and the decision the tables take on probes for
//! every producer (its next number, a retry of each of its recent batches, the same
//! number with another count, a gap, an older number) and for every stream (its version,
//! one more, one less). While no fault has happened, each live decision is also checked
//! against the model. The per-stream backlog figures kept in the tables (blocks plus at
//! most one block read, [`backlog::figures`]) must equal a read of the whole backlog
//! after every reopen and after every acknowledgement (delivery and deletion).
//!
//! The model follows the documented rules and nothing else: a producer series starts at
//! any number, the last [`RECENT_BATCHES`] batches are answered as duplicates, the least
//! recently used producer is forgotten beyond `max_producers`; and a log opened without a
//! checkpoint (new, or after the full-disk give-way removed it) starts counting at its
//! durable end.
//!
//! `ECHOPOST_STREAMS_SEED=N` replays one seed (a failure prints it).

use std::sync::Arc;

use bytes::Bytes;
use echopost_log::sim::{Fault, FaultError, SimFs, SimRng};
use echopost_log::{Log, LogOptions, SyncPolicy};
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::Record;
use prost::Message;

use super::backlog::{self, Backlog};

mod model;
use super::tables::{RECENT_BATCHES, Tables};
use super::{Checkpointer, Streams, recover};
use crate::ingest::RecordRules;
use crate::ingest::committer::{self, CommitError};
use crate::ingest::encode_request;
use model::{Decision, Model, Sent, decision_of, identity, single_named};

const SEEDS: u64 = 300;
const CYCLES: usize = 4;
const PRODUCERS: [&str; 5] = ["p0", "p1", "p2", "p3", "p4"];
const STREAMS: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];
const MAX_PRODUCERS: usize = 3;
const MAX_STREAMS: usize = 6;

fn open(fs: &SimFs, o: &LogOptions) -> echopost_log::Result<Log> {
    Log::open_with_fs(Arc::new(fs.clone()), "/data/log", o.clone())
}

/// What one batch of the workload asks for.
struct Ask {
    producer: Option<(String, u64)>,
    streams: Vec<String>,
    expected: Option<u64>,
}

fn pick_streams(rng: &mut SimRng) -> Vec<String> {
    let n = 1 + rng.below(4) as usize;
    let name = |rng: &mut SimRng| {
        if rng.chance(15) {
            String::new()
        } else {
            STREAMS[rng.below(STREAMS.len() as u64) as usize].to_owned()
        }
    };
    if rng.chance(65) {
        let one = name(rng);
        vec![one; n]
    } else {
        (0..n).map(|_| name(rng)).collect()
    }
}

fn ask(rng: &mut SimRng, live: &Model) -> Ask {
    let streams = pick_streams(rng);
    let producer = rng.chance(75).then(|| {
        let id = PRODUCERS[rng.below(PRODUCERS.len() as u64) as usize];
        let next = live.next_of(id);
        let pseq = match (rng.below(10), next) {
            (0..=5, Some(n)) => n,
            (6 | 7, Some(_)) => {
                let b = &live.producers[id].batches;
                let pick =
                    b[b.len() - 1 - rng.below(b.len().min(RECENT_BATCHES + 2) as u64) as usize];
                pick.pseq
            }
            (8, Some(n)) => n + 1 + rng.below(3),
            _ => rng.below(50),
        };
        (id.to_owned(), pseq)
    });
    // A retry resends the original's records so its count matches (mostly).
    let streams = match &producer {
        Some((id, pseq)) if live.next_of(id) != Some(*pseq) && rng.chance(80) => live
            .producers
            .get(id)
            .and_then(|p| p.batches.iter().rev().find(|b| b.pseq == *pseq))
            .map_or(streams.clone(), |b| {
                vec![streams[0].clone(); b.records as usize]
            }),
        _ => streams,
    };
    let expected = if rng.chance(35) {
        let current = single_named(&streams).map_or(0, |s| live.streams.get(s).map_or(0, |v| v.0));
        Some(match rng.below(5) {
            0 => current + 1,
            1 => current.saturating_sub(1),
            _ => current,
        })
    } else {
        None
    };
    Ask {
        producer,
        streams,
        expected,
    }
}

fn request(a: &Ask) -> RawAppendRequest {
    let records: Vec<Record> = a
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| Record {
            stream: s.clone(),
            payload: format!("record {i} of {s}").into_bytes(),
            timestamp_unix_nanos: 1 + i as i64,
            ..Record::default()
        })
        .collect();
    RawAppendRequest {
        records: records
            .iter()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .collect(),
        producer_id: a.producer.as_ref().map_or(String::new(), |p| p.0.clone()),
        producer_sequence: a.producer.as_ref().map_or(0, |p| p.1),
        expected_stream_version: a.expected,
    }
}

/// Counters of what the suite exercised.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    recoveries: u64,
    stored: u64,
    duplicates: u64,
    refused: u64,
    checkpoints: u64,
    deleted_segments: u64,
    probes: u64,
    backlog_checks: u64,
    blocks: u64,
}

/// One cycle's workload on the daemon's code; stops at the first storage error
/// (`Ok(Err(()))`); `Err` is a failed check.
fn workload(
    log: &Log,
    streams: &Streams,
    rng: &mut SimRng,
    sent: &mut Vec<Sent>,
    live: &mut Model,
    counts: &mut Counts,
) -> Result<Result<(), ()>, String> {
    let rules = RecordRules::sized(1 << 20);
    let mut checkpointer = Checkpointer::default();
    let wait = log.options().sync == SyncPolicy::Always;
    for _ in 0..(20 + rng.below(60)) {
        match rng.below(12) {
            0..=6 => {
                let mut next = log.stats().next_seq;
                let mut writer = log.group_writer();
                let mut last = None;
                let mut failed = false;
                for _ in 0..(1 + rng.below(3)) {
                    let a = ask(rng, live);
                    let want = live.decide(
                        a.producer.as_ref().map(|(i, n)| (i.as_str(), *n)),
                        &a.streams,
                        a.expected,
                    );
                    let (body, id) = encode_request(request(&a), &rules, 0)
                        .map_err(|e| format!("encode_request refused a valid batch: {e}"))?;
                    let batch = log.prepare(body).map_err(|e| format!("prepare: {e}"))?;
                    let candidate = Sent {
                        first_seq: next,
                        producer: a.producer.clone(),
                        streams: a.streams.clone(),
                    };
                    let got = match committer::store(
                        &mut writer,
                        batch,
                        id.as_ref(),
                        streams,
                        &mut checkpointer,
                    ) {
                        Ok(s) if s.duplicate => Decision::Duplicate {
                            first: s.first_seq,
                            last: s.last_seq,
                            version: s.stream_version,
                        },
                        Ok(s) => {
                            if s.first_seq != next {
                                return Err(format!("stored at {}, expected {next}", s.first_seq));
                            }
                            let v = single_named(&a.streams).map(|st| {
                                live.streams.get(st).map_or(0, |v| v.0) + a.streams.len() as u64
                            });
                            if s.stream_version != v {
                                return Err(format!(
                                    "stored {a_s:?}: stream_version {:?}, the model says {v:?}",
                                    s.stream_version,
                                    a_s = a.streams
                                ));
                            }
                            next = candidate.end();
                            live.apply(&candidate);
                            sent.push(candidate);
                            last = Some(s.last_seq);
                            counts.stored += 1;
                            Decision::Store
                        }
                        Err(CommitError::Refused(r)) => {
                            counts.refused += 1;
                            decision_of(Err(r))
                        }
                        Err(_) => {
                            // The frame may be on disk in part or whole: a crash decides.
                            sent.push(candidate);
                            failed = true;
                            break;
                        }
                    };
                    if let Decision::Duplicate { .. } = got {
                        counts.duplicates += 1;
                    }
                    if got != want {
                        return Err(format!(
                            "live decision on {:?} {:?} expecting {:?}: {got:?}, the model says {want:?}",
                            a.producer, a.streams, a.expected
                        ));
                    }
                }
                if writer.finish().is_err() || failed {
                    return Ok(Err(()));
                }
                if wait
                    && let Some(last) = last
                    && log.wait_durable(last).is_err()
                {
                    return Ok(Err(()));
                }
            }
            7 | 8 => {
                let durable = log.stats().durable_next;
                if durable > 1 {
                    let before = log.stats().segments;
                    if log.ack(1 + rng.below(durable - 1)).is_err() {
                        return Ok(Err(()));
                    }
                    counts.deleted_segments += before.saturating_sub(log.stats().segments) as u64;
                    let st = log.stats();
                    if st.durable_next == st.next_seq {
                        check_backlog(log, &mut streams.lock(), counts, true)?;
                    }
                }
            }
            9 | 10 => {
                let before = log.read_checkpoint().ok().flatten().map(|c| c.seq);
                checkpointer.write(log, streams);
                let after = log.read_checkpoint().ok().flatten().map(|c| c.seq);
                if after != before {
                    counts.checkpoints += 1;
                }
                if log.stats().poisoned.is_some() {
                    return Ok(Err(()));
                }
            }
            _ => {
                if log.sync_now().is_err() {
                    return Ok(Err(()));
                }
            }
        }
    }
    Ok(Ok(()))
}

/// Checks the backlog figures kept in `tables` (blocks plus at most one block read)
/// against a read of the whole backlog. With `faults`, a read that fails (an injected
/// fault) skips the check.
fn check_backlog(
    log: &Log,
    tables: &mut Tables,
    counts: &mut Counts,
    faults: bool,
) -> Result<(), String> {
    let first_unacked = log.stats().first_unacked_seq;
    let read = tables
        .backlog
        .snapshot(first_unacked)
        .complete(log)
        .and_then(|got| backlog::scan(log).map(|want| (got, want)));
    let (got, want) = match read {
        Ok(r) => r,
        Err(_) if faults => return Ok(()),
        Err(e) => return Err(format!("reading the backlog: {e}")),
    };
    let sorted = |m: &std::collections::HashMap<String, Backlog>| {
        let mut v: Vec<(String, Backlog)> = m.iter().map(|(k, b)| (k.clone(), *b)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    counts.backlog_checks += 1;
    counts.blocks += tables.backlog.blocks().count() as u64;
    if sorted(&got) != sorted(&want) {
        return Err(format!(
            "backlog figures from the index (first unacknowledged {first_unacked}, counted from {}) are {:?}; reading the backlog gives {:?}",
            tables.backlog.counted_from,
            sorted(&got),
            sorted(&want)
        ));
    }
    Ok(())
}

/// Checks the rebuilt tables against the model of the surviving batches.
fn check(tables: &Tables, model: &Model, counts: &mut Counts) -> Result<(), String> {
    let mut got: Vec<(&String, u64, u64)> = tables
        .streams
        .iter()
        .map(|(k, s)| (k, s.version, s.last_seq))
        .collect();
    let mut want: Vec<(&String, u64, u64)> =
        model.streams.iter().map(|(k, v)| (k, v.0, v.1)).collect();
    got.sort();
    want.sort();
    if got != want {
        return Err(format!(
            "streams (name, version, newest sequence): rebuilt {got:?}, the surviving records give {want:?}"
        ));
    }
    let mut probe = |producer: Option<(&str, u64)>, streams: &[String], expected: Option<u64>| {
        counts.probes += 1;
        let got = decision_of(tables.admit(&identity(producer, streams, expected)));
        let want = model.decide(producer, streams, expected);
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "decision on {producer:?} {streams:?} expecting {expected:?}: rebuilt tables say {got:?}, the surviving records give {want:?}"
            ))
        }
    };
    for id in PRODUCERS {
        let one = vec![String::new()];
        let next = model.next_of(id);
        let mut numbers = vec![
            0,
            7,
            next.unwrap_or(0),
            next.unwrap_or(0) + 1,
            next.unwrap_or(1) - 1,
        ];
        if let Some(p) = model.producers.get(id) {
            for b in p.batches.iter().rev().take(RECENT_BATCHES + 3) {
                let same = vec![String::new(); b.records as usize];
                probe(Some((id, b.pseq)), &same, None)?;
                let more = vec![String::new(); b.records as usize + 1];
                probe(Some((id, b.pseq)), &more, None)?;
                numbers.push(b.pseq);
            }
        }
        for n in numbers {
            probe(Some((id, n)), &one, None)?;
        }
    }
    for s in STREAMS {
        let current = model.streams.get(s).map_or(0, |v| v.0);
        let batch = vec![s.to_owned(); 2];
        for e in [current, current + 1, current.saturating_sub(1)] {
            probe(None, &batch, Some(e))?;
        }
        probe(None, &batch, None)?;
    }
    probe(None, &[String::new()], Some(0))?;
    probe(None, &["s0".to_owned(), "s1".to_owned()], Some(0))?;
    Ok(())
}

fn run_seed(seed: u64) -> Result<Counts, String> {
    let mut rng = SimRng::new(seed);
    let fs = SimFs::new(seed ^ 0x57EA_u64);
    let o = LogOptions {
        segment_bytes: 2048,
        sync: if rng.chance(25) {
            SyncPolicy::Never
        } else {
            SyncPolicy::Always
        },
        ..LogOptions::default()
    };
    let mut sent: Vec<Sent> = Vec::new();
    let mut counts = Counts::default();
    let mut epoch = 1;
    for cycle in 0..CYCLES {
        let log = open(&fs, &o).map_err(|e| format!("cycle {cycle}: open: {e}"))?;
        let next = log.stats().next_seq;
        // Frames are all-or-nothing and the log is a prefix of what was staged.
        sent.retain(|f| f.end() <= next);
        let had_checkpoint = log
            .read_checkpoint()
            .map_err(|e| format!("cycle {cycle}: checkpoint: {e}"))?
            .is_some();
        if !had_checkpoint {
            // The documented start of a log without a checkpoint: its durable end.
            epoch = log.stats().durable_next;
        }
        let (mut tables, _) = recover(&log, MAX_PRODUCERS, MAX_STREAMS, true)
            .map_err(|e| format!("cycle {cycle}: recover: {e}"))?;
        check_backlog(&log, &mut tables, &mut counts, false)
            .map_err(|e| format!("cycle {cycle}, after recovery: {e}"))?;
        counts.recoveries += 1;
        let mut live = Model::fold(sent.iter().filter(|f| f.first_seq >= epoch));
        check(&tables, &live, &mut counts).map_err(|e| {
            format!("cycle {cycle} (next_seq {next}, counting from {epoch}, checkpoint: {had_checkpoint}): {e}")
        })?;
        let streams = Streams::new(tables);
        let one_shot = rng.chance(30);
        fs.set_fault(Some(Fault {
            at_op: fs.op_count() + 1 + rng.below(150),
            error: if rng.chance(50) {
                FaultError::Eio
            } else {
                FaultError::Enospc
            },
            persistent: !one_shot,
        }));
        workload(&log, &streams, &mut rng, &mut sent, &mut live, &mut counts)
            .map_err(|e| format!("cycle {cycle}: {e}"))?
            .ok();
        drop(log);
        match rng.below(3) {
            0 => fs.crash(true),
            1 => fs.crash(false),
            _ => fs.kill_process(),
        }
        fs.set_fault(None);
    }
    Ok(counts)
}

#[test]
fn versions_and_duplicate_decisions_agree_with_the_batches_that_survived_any_crash() {
    let seeds: Vec<u64> = match std::env::var("ECHOPOST_STREAMS_SEED") {
        Ok(v) => vec![
            v.trim()
                .parse()
                .expect("ECHOPOST_STREAMS_SEED must be a number"),
        ],
        Err(_) => (0..SEEDS).collect(),
    };
    let mut total = Counts::default();
    for seed in seeds {
        let c = match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(Ok(c)) => c,
            Ok(Err(msg)) => panic!(
                "seed {seed}: {msg}\nreproduce with: ECHOPOST_STREAMS_SEED={seed} cargo test -p echopost --lib streams::crash_simulation -- --nocapture"
            ),
            Err(_) => panic!(
                "seed {seed} panicked (see above)\nreproduce with: ECHOPOST_STREAMS_SEED={seed} cargo test -p echopost --lib streams::crash_simulation -- --nocapture"
            ),
        };
        total.recoveries += c.recoveries;
        total.stored += c.stored;
        total.duplicates += c.duplicates;
        total.refused += c.refused;
        total.checkpoints += c.checkpoints;
        total.deleted_segments += c.deleted_segments;
        total.probes += c.probes;
        total.backlog_checks += c.backlog_checks;
        total.blocks += c.blocks;
    }
    println!("streams crash simulation: {total:?}");
    assert!(
        total.recoveries > 0
            && total.stored > 0
            && total.checkpoints > 0
            && total.probes > 0
            && total.backlog_checks > 0
            && total.blocks > total.backlog_checks,
        "the suite exercised nothing: {total:?}"
    );
}
