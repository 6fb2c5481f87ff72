//! I/O error injection on the caller's checkpoint and on frames carrying metadata (issue
//! 14): every file-system operation of a workload that appends metadata-carrying frames,
//! writes checkpoints (temp file, write, sync, rename, directory sync, then the deletion
//! the new floor allows), acknowledges and restarts fails in turn, with EIO and ENOSPC,
//! once and persistently; then the machine loses power (clean or torn) or the process is
//! killed, and the log is reopened on a healthy file system.
//!
//! Checked:
//! * a call during which an injected fault fired reports an error: an append (then
//!   nothing of it is acknowledged and the workload stops, as the daemon does), a
//!   checkpoint write (then the workload goes on, as the daemon's `Checkpointer` does: the
//!   old checkpoint stays valid);
//! * after reopening: the log opens; every acknowledged frame is there with its metadata,
//!   byte for byte, in order (read back from the cursor); the checkpoint on disk is one
//!   that was written (or attempted); and the caller's state rebuilt from the checkpoint
//!   and the frames after it equals the state of exactly the frames that survived
//!   (the same digest as the `checkpoint` suite, which the daemon's decisions are a
//!   function of: `echopost`'s `streams::crash_simulation` checks those decisions).
//!
//! `ECHOPOST_CKPT_FAULT_SEED=N` replays the case N a failure prints.

use crate::checkpoint::{Digest, Sent, digest_of, recover};
use crate::support::sim_model::{env_u64, open, run_case};
use echopost_log::sim::{Fault, FaultError, SimFs, SimRng};
use echopost_log::{BatchBody, Log, LogOptions, SyncPolicy};

const REPRO: &str = "ECHOPOST_CKPT_FAULT_SEED={seed} cargo test -p echopost-log --test it -- io_faults::checkpoint:: --nocapture";

/// Per operation index: EIO/ENOSPC × once/persistent; how the machine goes down follows
/// from the index.
const VARIANTS: u64 = 4;

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 2048,
        sync: SyncPolicy::Always,
        ..LogOptions::default()
    }
}

/// What a run learned: the frames tried, which were acknowledged, and the checkpoints
/// written or attempted (by their data).
#[derive(Default)]
struct Run {
    sent: Vec<Sent>,
    acknowledged: Vec<(u64, Vec<Vec<u8>>, Vec<u8>)>,
    checkpoints: Vec<(u64, Vec<u8>)>,
    /// Calls during which the fault fired and that failed as they must.
    reported: u64,
    /// Checkpoint writes that failed.
    checkpoint_failures: u64,
}

/// Appends, checkpoints and acknowledgements in a fixed order (the data from `seed`).
/// Returns `Err` for a broken promise; a storage error ends the part it hit.
fn workload(fs: &SimFs, seed: u64, run: &mut Run) -> Result<(), String> {
    let mut rng = SimRng::new(seed);
    for part in 0..2 {
        let log = match open(fs, &opts()) {
            Ok(l) => l,
            Err(_) => return Ok(()),
        };
        if part == 0 && !checkpoint(&log, fs, 1, run)? {
            continue;
        }
        for step in 0..14u64 {
            if !append(&log, fs, &mut rng, run)? {
                break;
            }
            if step % 3 == 2 {
                let seq = log.stats().durable_next;
                checkpoint(&log, fs, seq, run)?;
            }
            if step % 4 == 3 {
                let durable = log.stats().durable_next;
                if durable > 2 {
                    let _ = log.ack(durable - 1 - rng.below(3).min(durable - 2));
                }
            }
        }
        drop(log);
    }
    Ok(())
}

/// One metadata-carrying frame, acknowledged once durable. False once it failed.
fn append(log: &Log, fs: &SimFs, rng: &mut SimRng, run: &mut Run) -> Result<bool, String> {
    let count = 1 + rng.below(3);
    let meta: Vec<u8> = (0..(1 + rng.below(30)))
        .map(|_| rng.below(256) as u8)
        .collect();
    let records: Vec<Vec<u8>> = (0..count)
        .map(|i| vec![i as u8; 40 + rng.below(200) as usize])
        .collect();
    let mut body = BatchBody::with_meta(0, &meta);
    for r in &records {
        body.push(r);
    }
    let first_seq = log.stats().next_seq;
    run.sent.push(Sent {
        first_seq,
        count,
        meta: Some(meta.clone()),
    });
    let hits = fs.faults_hit();
    let outcome = log
        .prepare(body)
        .and_then(|b| log.append_prepared_nowait(b))
        .and_then(|a| log.wait_durable(a.last_seq).map(|()| a));
    match outcome {
        Ok(a) => {
            if fs.faults_hit() != hits {
                return Err(format!(
                    "append at {first_seq}: a fault fired and it succeeded"
                ));
            }
            if a.first_seq != first_seq {
                return Err(format!("append got {}, expected {first_seq}", a.first_seq));
            }
            run.acknowledged.push((first_seq, records, meta));
            Ok(true)
        }
        Err(_) => {
            run.reported += u64::from(fs.faults_hit() != hits);
            Ok(false)
        }
    }
}

/// A checkpoint of the state of every frame before `seq`. False if it failed.
fn checkpoint(log: &Log, fs: &SimFs, seq: u64, run: &mut Run) -> Result<bool, String> {
    let data = digest_of(&run.sent, seq).encode();
    run.checkpoints.push((seq, data.clone()));
    let hits = fs.faults_hit();
    match log.write_checkpoint(seq, &data) {
        Ok(()) if fs.faults_hit() != hits => Err(format!(
            "checkpoint at {seq}: a fault fired and it succeeded"
        )),
        Ok(()) => Ok(true),
        Err(_) => {
            run.checkpoint_failures += 1;
            run.reported += u64::from(fs.faults_hit() != hits);
            Ok(false)
        }
    }
}

fn count_ops() -> u64 {
    let fs = SimFs::new(1);
    let mut run = Run::default();
    if let Err(e) = workload(&fs, 7, &mut run) {
        panic!("fault-free run: {e}");
    }
    assert!(
        run.acknowledged.len() > 20 && run.checkpoint_failures == 0,
        "the fault-free run did too little: {} acknowledged, {} failed checkpoints",
        run.acknowledged.len(),
        run.checkpoint_failures
    );
    fs.op_count()
}

fn run_case_seed(case: u64) -> Result<(u64, u64), String> {
    let (op, v) = (case / VARIANTS, case % VARIANTS);
    let fs = SimFs::new(case ^ 0xC4EC);
    fs.set_fault(Some(Fault {
        at_op: op,
        error: if v % 2 == 0 {
            FaultError::Eio
        } else {
            FaultError::Enospc
        },
        persistent: v >= 2,
    }));
    let mut run = Run::default();
    workload(&fs, 7, &mut run)?;
    let fired = fs.faults_hit() > 0;
    fs.set_fault(None);
    match op % 3 {
        0 => fs.crash(true),
        1 => fs.crash(false),
        _ => fs.kill_process(),
    }
    let log = open(&fs, &opts()).map_err(|e| format!("reopen: {e}"))?;
    let next = log.stats().next_seq;
    for (first, records, _) in &run.acknowledged {
        if first + records.len() as u64 > next {
            return Err(format!(
                "acknowledged frame at {first} lost: the log ends before {next}"
            ));
        }
    }
    // Every acknowledged frame not yet delivered, with its metadata, in order.
    let cursor = log.stats().first_unacked_seq;
    let mut reader = log.reader_including_acked(1);
    let mut want = run
        .acknowledged
        .iter()
        .filter(|(f, r, _)| f + r.len() as u64 > cursor)
        .peekable();
    while let Some(frame) = reader.next_frame().map_err(|e| format!("read: {e}"))? {
        let Some((first, records, meta)) = want.peek() else {
            break;
        };
        if frame.first_seq < *first {
            continue;
        }
        if frame.first_seq != *first
            || frame.records != *records
            || frame.meta.as_deref() != Some(meta.as_slice())
        {
            return Err(format!(
                "frame at {} differs from the acknowledged frame at {first}",
                frame.first_seq
            ));
        }
        want.next();
    }
    if let Some((first, ..)) = want.next() {
        return Err(format!("acknowledged frame at {first} is not readable"));
    }
    if let Some(c) = log
        .read_checkpoint()
        .map_err(|e| format!("checkpoint: {e}"))?
        && !run.checkpoints.contains(&(c.seq, c.data.clone()))
    {
        return Err(format!("a checkpoint at {} that was never written", c.seq));
    }
    run.sent.retain(|f| f.first_seq + f.count <= next);
    let (got, from) = recover(&log)
        .map_err(|e| format!("recovery: {e}"))?
        .map_err(|e| format!("recovery: {e}"))?;
    let want: Digest = digest_of(&run.sent, next);
    if got != want {
        return Err(format!(
            "state rebuilt from the checkpoint at {from} and the frames after it is {got:?}; the surviving frames below {next} give {want:?}"
        ));
    }
    Ok((u64::from(fired), run.reported + run.checkpoint_failures))
}

#[test]
fn every_operation_of_checkpoints_and_metadata_frames_fails() {
    let cases: Vec<u64> = match env_u64("ECHOPOST_CKPT_FAULT_SEED") {
        Some(s) => vec![s],
        None => (0..count_ops() * VARIANTS).collect(),
    };
    let (mut fired, mut reported) = (0, 0);
    for &case in &cases {
        let (f, r) = run_case(case, REPRO, run_case_seed);
        fired += f;
        reported += r;
    }
    println!(
        "io_faults::checkpoint: {} cases, {fired} with a fault fired, {reported} failures reported",
        cases.len()
    );
    assert!(
        fired > cases.len() as u64 / 2 && reported > 0,
        "the faults did not fire"
    );
}
