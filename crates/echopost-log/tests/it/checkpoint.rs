//! A caller's state rebuilt from its checkpoint plus the frames after it, under crashes
//! and I/O faults on [`SimFs`], driven by a seed.
//!
//! The "caller" here folds every frame it appends (first sequence, record count, the
//! frame's metadata entry) into a small digest, like the daemon's producer and stream
//! tables. It writes checkpoints of that digest at random durable points, acknowledges and
//! so deletes delivered segments, and crashes at random file-system operations (power
//! loss with or without torn writes, process kill), sometimes after one-shot EIO/ENOSPC
//! faults instead. After every reopen the digest rebuilt from `read_checkpoint` and
//! `reader_including_acked` must equal the digest of exactly the frames the log holds
//! below its `next_seq`, computed from what the test appended: the state agrees with the
//! records that survived, whatever was delivered and deleted meanwhile.
//!
//! `ECHOPOST_CKPT_SEED=N` replays one seed (a failure prints it).

use std::sync::Arc;

use crate::support::sim_model::{env_u64, run_case};
use echopost_log::sim::{Fault, FaultError, SimFs, SimRng};
use echopost_log::{BatchBody, Log, LogOptions, SyncPolicy};

const REPRO: &str =
    "ECHOPOST_CKPT_SEED={seed} cargo test -p echopost-log --test it -- checkpoint:: --nocapture";

/// The caller's state: a digest of every frame applied, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Digest {
    frames: u64,
    records: u64,
    hash: u64,
}

impl Digest {
    pub(crate) fn apply(&mut self, first_seq: u64, count: u64, meta: Option<&[u8]>) {
        self.frames += 1;
        self.records += count;
        let mut h = self.hash ^ first_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for &b in meta.unwrap_or(b"-none-") {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        self.hash = h.rotate_left(17) ^ count;
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        [self.frames, self.records, self.hash]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    fn decode(b: &[u8]) -> Result<Digest, String> {
        if b.len() != 24 {
            return Err(format!("checkpoint data of {} bytes", b.len()));
        }
        let v = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(a)
        };
        Ok(Digest {
            frames: v(0),
            records: v(1),
            hash: v(2),
        })
    }
}

/// A frame the test appended (or tried to: `ok == false` was cut by a fault).
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
    pub(crate) meta: Option<Vec<u8>>,
}

pub(crate) fn digest_of(sent: &[Sent], below: u64) -> Digest {
    let mut d = Digest::default();
    for f in sent.iter().filter(|f| f.first_seq + f.count <= below) {
        d.apply(f.first_seq, f.count, f.meta.as_deref());
    }
    d
}

/// The caller's recovery: checkpoint, then every frame from its sequence on.
pub(crate) fn recover(log: &Log) -> echopost_log::Result<Result<(Digest, u64), String>> {
    let (mut d, from) = match log.read_checkpoint()? {
        Some(c) => match Digest::decode(&c.data) {
            Ok(d) => (d, c.seq),
            Err(e) => return Ok(Err(e)),
        },
        None => (Digest::default(), 1),
    };
    let mut r = log.reader_including_acked(from);
    let mut expect = from;
    while let Some(f) = r.next_frame()? {
        if f.first_seq != expect {
            return Ok(Err(format!(
                "frames after the checkpoint ({from}) are missing: expected {expect}, got {}",
                f.first_seq
            )));
        }
        expect = f.first_seq + f.records.len() as u64;
        d.apply(f.first_seq, f.records.len() as u64, f.meta.as_deref());
    }
    Ok(Ok((d, from)))
}

fn opts(rng: &mut SimRng) -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        sync: match rng.below(4) {
            0 => SyncPolicy::Never,
            _ => SyncPolicy::Always,
        },
        ..LogOptions::default()
    }
}

fn open(fs: &SimFs, o: &LogOptions) -> echopost_log::Result<Log> {
    Log::open_with_fs(Arc::new(fs.clone()), "/data/log", o.clone())
}

/// One cycle's workload; stops at the first error (a fault).
fn workload(
    log: &Log,
    rng: &mut SimRng,
    sent: &mut Vec<Sent>,
    checkpoints: &mut u64,
) -> echopost_log::Result<()> {
    for _ in 0..(20 + rng.below(60)) {
        match rng.below(10) {
            0..=5 => {
                let count = 1 + rng.below(5);
                let meta: Option<Vec<u8>> = if rng.chance(70) {
                    let n = rng.below(40);
                    Some((0..n).map(|_| rng.below(256) as u8).collect())
                } else {
                    None
                };
                let mut body = match &meta {
                    Some(m) => BatchBody::with_meta(0, m),
                    None => BatchBody::default(),
                };
                for _ in 0..count {
                    body.push(&vec![7u8; 50 + rng.below(400) as usize]);
                }
                let first_seq = log.stats().next_seq;
                // Recorded before the append: a crash may keep a frame whose append failed.
                sent.push(Sent {
                    first_seq,
                    count,
                    meta,
                });
                let a = log.append_prepared_nowait(log.prepare(body)?)?;
                assert_eq!(a.first_seq, first_seq);
                if log.options().sync == SyncPolicy::Always {
                    log.wait_durable(a.last_seq)?;
                }
            }
            6 | 7 => {
                let durable = log.stats().durable_next;
                if durable > 1 {
                    log.ack(1 + rng.below(durable - 1))?;
                }
            }
            8 => {
                let st = log.stats();
                let floor = log.read_checkpoint()?.map_or(1, |c| c.seq);
                // The caller's state covers whole frames: a checkpoint sits on a frame
                // boundary (the durable end is one).
                let mut ends: Vec<u64> = sent
                    .iter()
                    .map(|f| f.first_seq + f.count)
                    .filter(|&e| e >= floor && e <= st.durable_next)
                    .collect();
                ends.push(st.durable_next);
                let seq = ends[rng.below(ends.len() as u64) as usize];
                log.write_checkpoint(seq, &digest_of(sent, seq).encode())?;
                *checkpoints += 1;
            }
            _ => log.sync_now()?,
        }
    }
    Ok(())
}

fn run_seed(seed: u64) -> Result<(u64, u64), String> {
    let mut rng = SimRng::new(seed);
    let fs = SimFs::new(seed ^ 0x5EED);
    let o = opts(&mut rng);
    let mut sent: Vec<Sent> = Vec::new();
    let mut checkpoints = 0;
    let mut reopens = 0;
    for cycle in 0..4 {
        let log = match open(&fs, &o) {
            Ok(l) => l,
            Err(e) => return Err(format!("cycle {cycle}: open failed: {e}")),
        };
        let next = log.stats().next_seq;
        // Frames are all-or-nothing and the log is a prefix: what survived is exactly the
        // frames that end at or before next_seq; later sequences may be reused.
        sent.retain(|f| f.first_seq + f.count <= next);
        let (got, from) = recover(&log).map_err(|e| format!("cycle {cycle}: recovery: {e}"))??;
        let want = digest_of(&sent, next);
        if got != want {
            return Err(format!(
                "cycle {cycle}: state rebuilt from the checkpoint at {from} and the frames after it is {got:?}, the surviving frames below {next} give {want:?}"
            ));
        }
        reopens += 1;
        if cycle == 0 && log.read_checkpoint().map_err(|e| e.to_string())?.is_none() {
            // The daemon checkpoints right after its first open; so does this caller.
            let _ = log.write_checkpoint(next, &want.encode());
        }
        let one_shot = rng.chance(30);
        fs.set_fault(Some(Fault {
            at_op: fs.op_count() + 1 + rng.below(120),
            error: if rng.chance(50) {
                FaultError::Eio
            } else {
                FaultError::Enospc
            },
            persistent: !one_shot,
        }));
        let _ = workload(&log, &mut rng, &mut sent, &mut checkpoints);
        drop(log);
        match rng.below(3) {
            0 => fs.crash(true),
            1 => fs.crash(false),
            _ => fs.kill_process(),
        }
        fs.set_fault(None);
    }
    Ok((reopens, checkpoints))
}

#[test]
fn state_from_checkpoint_and_frames_agrees_with_what_survived() {
    let seeds: Vec<u64> = match env_u64("ECHOPOST_CKPT_SEED") {
        Some(s) => vec![s],
        None => (0..400).collect(),
    };
    let (mut reopens, mut checkpoints) = (0, 0);
    for seed in seeds {
        let (r, c) = run_case(seed, REPRO, run_seed);
        reopens += r;
        checkpoints += c;
    }
    println!("checkpoint suite: {reopens} recoveries checked, {checkpoints} checkpoints written");
    assert!(
        reopens > 0 && checkpoints > 0,
        "the suite exercised nothing"
    );
}

/// Delivered segments from the checkpoint's sequence on stay on disk; a newer checkpoint
/// releases them.
#[test]
fn a_checkpoint_holds_back_deletion_until_a_newer_one() {
    let fs = SimFs::new(1);
    let o = LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    };
    let log = open(&fs, &o).unwrap();
    log.write_checkpoint(1, b"empty").unwrap();
    let mut last = 0;
    for _ in 0..40 {
        last = log.append(&[vec![1u8; 500]]).unwrap().last_seq;
    }
    log.ack(last).unwrap();
    let held = log.stats().disk_bytes;
    assert!(held > 16 << 10, "delivered segments kept: {held}");
    let mut r = log.reader_including_acked(1);
    assert_eq!(r.next_frame().unwrap().unwrap().first_seq, 1);
    assert!(
        log.write_checkpoint(last + 2, b"x").is_err(),
        "beyond durable"
    );
    log.write_checkpoint(last + 1, b"all").unwrap();
    assert!(
        log.stats().disk_bytes < held / 4,
        "released once checkpointed"
    );
    assert!(
        log.write_checkpoint(last, b"back").is_err(),
        "never backwards"
    );
    let c = log.read_checkpoint().unwrap().unwrap();
    assert_eq!((c.seq, c.data.as_slice()), (last + 1, &b"all"[..]));
}

/// A damaged checkpoint file: open refuses it, so `verify` must name it as well rather
/// than pass the directory. Found by fuzzing (`log_recovery`: "verify passed but open
/// failed" on a checkpoint with bad magic bytes).
#[test]
fn a_damaged_checkpoint_fails_verify_as_it_fails_open() {
    let fs = SimFs::new(3);
    let dir = crate::support::common::sim_dir();
    let log = crate::support::common::open_sim(&fs, crate::support::common::small_segments())
        .expect("open");
    log.append(&[b"one".as_slice(), b"two"]).expect("append");
    log.write_checkpoint(1, b"state").expect("checkpoint");
    log.close().expect("close");
    let path = dir.join("checkpoint");
    let mut bytes = fs.read_file(&path).expect("the checkpoint exists");
    bytes[0] ^= 0xff;
    fs.write_file(&path, &bytes);

    let opened = crate::support::common::open_sim(&fs, crate::support::common::small_segments());
    assert!(opened.is_err(), "open refuses the damaged checkpoint");
    match echopost_log::verify_with_fs(Arc::new(fs.clone()), &dir) {
        Err(echopost_log::Error::Corruption(c)) => {
            assert_eq!(c.file, path, "verify names the checkpoint: {c}")
        }
        other => panic!("verify must name the damaged checkpoint, got {other:?}"),
    }
}
