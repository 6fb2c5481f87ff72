//! Group commit of the daemon's appends on one dedicated thread.
//!
//! # Why
//! The engine's `Log::append` blocks its caller until an `fdatasync` covers the batch.
//! Calling it from a blocking task per request costs two thread hand-offs per request and
//! wakes every waiting thread on each sync; and one `AppendStream` could keep only one
//! request in flight, paying one `fdatasync` per request.
//!
//! Instead every request is encoded and checksummed on its own task ([`Log::prepare`])
//! and queued here. One thread takes everything queued, stages each batch with a
//! [`Log::group_writer`] (sequences assigned in queue order; small frames written
//! together with one `pwrite`), then makes the whole group durable with one
//! [`Log::wait_durable`], and only then answers every request of the group. Requests that arrive during that `fdatasync`
//! form the next group, so the group size follows the load by itself: one request alone
//! costs one write and one sync; sixty-four concurrent ones share a sync.
//!
//! # Invariants
//! * A request is answered Ok only after its batch is durable under the sync policy
//!   (`always`: after a `wait_durable` covering it; `interval` / `never`: once written,
//!   which is what those policies promise).
//! * If making a group durable fails, no request of that group is answered Ok: the log is
//!   poisoned and every one of them gets the error.
//! * The queue is FIFO and one thread writes, so batches are stored in submission order.
//!   A stream may therefore submit its next request before the previous one is answered.
//! * Each request's [`GatePass`] is released only after the engine has finished with it,
//!   so the exit path never misses a write in progress.
//! * Queued data is bounded by [`QUEUE_BYTES`]: a submitter waits for room before queuing.
//! * Requests of one stream share a [`Chain`]: once one of them fails, the committer
//!   refuses the ones queued behind it, so a stream's stored requests are always a prefix
//!   of what it sent.
//! * Batches of idempotent producers and batches with streams are decided here
//!   ([`Tables::admit`](crate::streams::tables::Tables::admit)) right before they are
//!   staged, on this one thread: so of concurrent appends expecting one stream version
//!   exactly one is stored, and a retry racing its original is a duplicate, not a second
//!   copy. A duplicate is answered with the rest of its group, after the group's sync.
//! * Between groups the thread writes the stream state checkpoint when one is due
//!   ([`Checkpointer`]; a timer asks every [`CHECKPOINT_EVERY`] so an idle daemon
//!   checkpoints too), and once more when it ends.
//! * The thread only ends when every [`Committer`] handle is gone. If it ends earlier (a
//!   panic), every later append would be refused as "shutting down" while the process
//!   lived on, so the lifecycle watches [`CommitterThread::exited`] and stops the daemon.

use std::sync::Arc;
use std::thread::JoinHandle;

use echopost_log::{Appended, GroupWriter, Log, PreparedBatch, SyncPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::ingest::gate::GatePass;
use crate::streams::tables::{Admission, BatchIdentity, Refusal};
use crate::streams::{CHECKPOINT_EVERY, Checkpointer, Streams};

/// Requests waiting for the committer at most (beyond that, submitters wait).
const QUEUE_LEN: usize = 4096;
/// Record bytes queued for the committer at most. A larger single request is admitted
/// alone (it takes the whole budget).
pub const QUEUE_BYTES: usize = 32 << 20;
/// Requests written before syncing, at most, so a flood cannot delay the sync that the
/// first requests of a group are waiting for.
const MAX_GROUP: usize = 512;

/// What the queue carries.
enum Work {
    Append(Job),
    /// The timer's nudge: write the stream state checkpoint if one is due.
    Checkpoint,
}

struct Job {
    /// Taken when the batch is written (each job is written once).
    batch: Option<PreparedBatch>,
    /// What the stream and producer tables check and record; `None` for a batch with
    /// neither a producer nor streams.
    identity: Option<BatchIdentity>,
    reply: oneshot::Sender<Result<Stored, CommitError>>,
    chain: Option<Chain>,
    _pass: GatePass,
    _budget: OwnedSemaphorePermit,
}

/// Links the requests of one stream: after the first failure, the rest are refused.
#[derive(Debug, Clone, Default)]
pub struct Chain(Arc<std::sync::atomic::AtomicBool>);

impl Chain {
    fn broken(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    fn break_it(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The outcome of a stored (or already stored) batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub first_seq: u64,
    pub last_seq: u64,
    /// A retry of a batch already stored: these are the original sequences.
    pub duplicate: bool,
    /// The stream's version after the batch, for a single-stream batch.
    pub stream_version: Option<u64>,
}

impl From<Appended> for Stored {
    fn from(a: Appended) -> Stored {
        Stored {
            first_seq: a.first_seq,
            last_seq: a.last_seq,
            duplicate: false,
            stream_version: None,
        }
    }
}

/// A queued request; [`PendingAppend::wait`] gives its outcome.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<Stored, CommitError>>);

impl PendingAppend {
    /// Waits until the batch is stored (durable under the sync policy) or refused.
    pub async fn wait(self) -> Result<Stored, CommitError> {
        self.0.await.map_err(|_| CommitError::Stopped)?
    }
}

/// Why a request got no answer from the committer.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The engine refused or failed the batch.
    #[error(transparent)]
    Log(#[from] echopost_log::Error),
    /// The committer thread is gone (the daemon is shutting down).
    #[error("echopost is shutting down")]
    Stopped,
    /// An earlier request of the same stream failed, so this one was not stored.
    #[error("not stored: an earlier request of this stream failed")]
    ChainBroken,
    /// The producer or stream rules refused the batch (issue 14).
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Handle to the committer thread. Dropping every handle stops the thread once the queue
/// is empty.
#[derive(Debug)]
pub struct Committer {
    tx: mpsc::Sender<Work>,
    budget: Arc<Semaphore>,
}

impl Committer {
    /// Starts the committer thread for `log`, deciding and recording batches in
    /// `streams` (recovered from `log`).
    pub fn start(
        log: Arc<Log>,
        streams: Arc<Streams>,
    ) -> std::io::Result<(Committer, CommitterThread)> {
        let wait = log.options().sync == SyncPolicy::Always;
        Committer::spawn(move |rx| commit_loop(&log, &streams, rx, wait))
    }

    /// Starts a thread running `body` over the queue (the committer loop; tests give
    /// others), and, inside a tokio runtime, the checkpoint timer.
    fn spawn(
        body: impl FnOnce(mpsc::Receiver<Work>) + Send + 'static,
    ) -> std::io::Result<(Committer, CommitterThread)> {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let handle = std::thread::Builder::new()
            .name("echopost-commit".into())
            .spawn(move || body(rx))?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = tx.downgrade();
            rt.spawn(async move {
                let mut every = tokio::time::interval(CHECKPOINT_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    // Ends with the last handle; a full queue skips one nudge.
                    let Some(tx) = weak.upgrade() else { break };
                    let _ = tx.try_send(Work::Checkpoint);
                }
            });
        }
        Ok((
            Committer {
                tx,
                budget: Arc::new(Semaphore::new(QUEUE_BYTES)),
            },
            CommitterThread(handle),
        ))
    }

    /// Queues one batch and waits until it is stored (durable under the sync policy).
    pub async fn submit(
        &self,
        batch: PreparedBatch,
        pass: GatePass,
    ) -> Result<Stored, CommitError> {
        self.enqueue(batch, None, pass, None).await?.wait().await
    }

    /// Queues one batch; the returned [`PendingAppend`] gives the outcome. Batches are
    /// stored in the order they were queued. Once queued, the batch is written whether or
    /// not anyone waits for the outcome, and `pass` is held until then.
    pub async fn enqueue(
        &self,
        batch: PreparedBatch,
        identity: Option<BatchIdentity>,
        pass: GatePass,
        chain: Option<Chain>,
    ) -> Result<PendingAppend, CommitError> {
        let want = batch.frame_len().clamp(1, QUEUE_BYTES);
        // `want` <= QUEUE_BYTES (32 MiB), so it fits in u32.
        let budget = Arc::clone(&self.budget)
            .acquire_many_owned(want as u32)
            .await
            .map_err(|_| CommitError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Work::Append(Job {
                batch: Some(batch),
                identity,
                reply,
                chain,
                _pass: pass,
                _budget: budget,
            }))
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(PendingAppend(answer))
    }
}

/// The committer thread, to be watched by the lifecycle.
#[derive(Debug)]
pub struct CommitterThread(JoinHandle<()>);

impl CommitterThread {
    /// Resolves when the thread has ended: `Ok` if it ended because every [`Committer`]
    /// was dropped (shutdown), `Err(message)` if it panicked.
    pub async fn exited(self) -> Result<(), String> {
        let handle = self.0;
        match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(panic)) => Err(panic_message(panic.as_ref())),
            Err(e) => Err(format!("cannot watch the commit thread: {e}")),
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

fn commit_loop(log: &Log, streams: &Streams, mut rx: mpsc::Receiver<Work>, wait: bool) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut results: Vec<Result<Stored, CommitError>> = Vec::with_capacity(MAX_GROUP);
    let mut checkpointer = Checkpointer::default();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(work) = next.take() {
            if let Work::Append(job) = work {
                group.push(job);
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        if !group.is_empty() {
            commit_group(
                log,
                streams,
                &mut group,
                &mut results,
                wait,
                &mut checkpointer,
            );
        }
        if checkpointer.due() {
            checkpointer.write(log, streams);
        }
    }
    // Every handle is gone: the last checkpoint, so the next open replays nothing.
    checkpointer.write(log, streams);
}

/// Stages, syncs and answers one group.
fn commit_group(
    log: &Log,
    streams: &Streams,
    group: &mut Vec<Job>,
    results: &mut Vec<Result<Stored, CommitError>>,
    wait: bool,
    checkpointer: &mut Checkpointer,
) {
    let mut writer = log.group_writer();
    for job in group.iter_mut() {
        let result = match (&job.chain, job.batch.take()) {
            (Some(chain), _) if chain.broken() => Err(CommitError::ChainBroken),
            (_, Some(batch)) => store(
                &mut writer,
                batch,
                job.identity.as_ref(),
                streams,
                checkpointer,
            ),
            // Unreachable: a job is taken from the queue, and written, once.
            (_, None) => Err(CommitError::Stopped),
        };
        if result.is_err()
            && let Some(chain) = &job.chain
        {
            chain.break_it();
        }
        results.push(result);
    }
    if let Err(e) = writer.finish() {
        // The group's frames may not be on disk; the log is poisoned now.
        fail_all_ok(results, e);
    }
    if wait {
        let last = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|a| a.last_seq)
            .max();
        if let Some(last) = last
            && let Err(e) = log.wait_durable(last)
        {
            // Nothing written in this group may be acknowledged. The log is poisoned
            // now, so every later request fails too.
            fail_all_ok(results, e);
        }
    }
    stall_after_sync(group, results);
    for (job, result) in group.drain(..).zip(results.drain(..)) {
        // The requester may have gone away; the batch is stored regardless.
        let _ = job.reply.send(result);
    }
}

/// Decides on one batch (when it has an identity) and stages it if it is to be stored.
/// The tables are changed only after the batch was staged, by this thread alone. Also
/// called by the streams crash simulation (`streams/crash_simulation/`), which drives
/// this same decision and staging without the thread.
pub(crate) fn store(
    writer: &mut GroupWriter<'_>,
    batch: PreparedBatch,
    identity: Option<&BatchIdentity>,
    streams: &Streams,
    checkpointer: &mut Checkpointer,
) -> Result<Stored, CommitError> {
    let len = batch.frame_len() as u64;
    let Some(id) = identity else {
        let a = writer.stage(batch)?;
        checkpointer.wrote(len);
        return Ok(a.into());
    };
    let admission = streams.lock().admit(id)?;
    match admission {
        Admission::Duplicate(orig) => Ok(Stored {
            first_seq: orig.first_seq,
            last_seq: orig.last_seq,
            duplicate: true,
            stream_version: orig.stream_version,
        }),
        Admission::Store => {
            let a = writer.stage(batch)?;
            checkpointer.wrote(len);
            let stream_version = streams.lock().apply(id, a.first_seq, a.last_seq);
            Ok(Stored {
                stream_version,
                ..a.into()
            })
        }
    }
}

/// Environment variable naming a file: once a group holding a newly stored batch of an
/// idempotent producer is durable, the committer creates that file and stops before
/// answering, so a test can `kill -9` the daemon exactly between the sync and the answer
/// (issue 14's retry test). For tests only; unset in normal use (then one cached lookup
/// per group).
pub const STALL_AFTER_SYNC_ENV: &str = "ECHOPOST_TEST_STALL_AFTER_SYNC";

fn stall_after_sync(group: &[Job], results: &[Result<Stored, CommitError>]) {
    static STALL: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let Some(marker) = STALL.get_or_init(|| std::env::var_os(STALL_AFTER_SYNC_ENV).map(Into::into))
    else {
        return;
    };
    let hit = group.iter().zip(results).any(|(job, r)| {
        matches!(r, Ok(s) if !s.duplicate)
            && job.identity.as_ref().is_some_and(|i| i.producer.is_some())
    });
    if hit {
        tracing::warn!(marker = %marker.display(), "test hook: stalled after sync, before answering");
        let _ = std::fs::write(marker, b"synced\n");
        loop {
            std::thread::park();
        }
    }
}

/// Turns every Ok of a group into an error: `e` for the first, the same reason (as
/// [`echopost_log::Error::Poisoned`]) for the rest.
fn fail_all_ok(results: &mut [Result<Stored, CommitError>], e: echopost_log::Error) {
    let why: Arc<str> = Arc::from(e.to_string());
    let mut first_error = Some(e);
    for r in results.iter_mut().filter(|r| r.is_ok()) {
        *r = Err(CommitError::Log(first_error.take().unwrap_or_else(|| {
            echopost_log::Error::Poisoned(Arc::clone(&why))
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::gate::AppendGate;
    use echopost_log::LogOptions;
    use echopost_log::sim::{Fault, FaultError, SimFs};

    fn batch(log: &Log, records: &[&[u8]]) -> PreparedBatch {
        log.prepare(echopost_log::BatchBody::from_records(records))
            .unwrap()
    }

    fn fresh_streams() -> Arc<Streams> {
        Streams::new(crate::streams::tables::Tables::new(10, 10))
    }

    fn sim_log(fs: &SimFs) -> Arc<Log> {
        Arc::new(Log::open_with_fs(Arc::new(fs.clone()), "/d", LogOptions::default()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_stored_in_order_and_durable() {
        let fs = SimFs::new(1);
        let log = sim_log(&fs);
        let (c, _h) = Committer::start(Arc::clone(&log), fresh_streams()).unwrap();
        let c = Arc::new(c);
        let gate = AppendGate::new();
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let c = Arc::clone(&c);
            let pass = gate.enter().unwrap();
            let b = batch(&log, &[&i.to_le_bytes()]);
            tasks.push(tokio::spawn(async move {
                let a = c.submit(b, pass).await.unwrap();
                (a.first_seq, i)
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort();
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=64).collect::<Vec<_>>());
        // Acknowledged means durable: a power loss now keeps all 64.
        assert_eq!(log.stats().durable_next, 65);
        drop(c);
        drop(log);
        fs.crash(true);
        let log = sim_log(&fs);
        let mut r = log.reader(1);
        let mut stored = std::collections::HashMap::new();
        loop {
            let b = r.next_batch(100, 1 << 20).unwrap();
            if b.is_empty() {
                break;
            }
            for rec in b {
                stored.insert(rec.seq, rec.data);
            }
        }
        for (seq, i) in got {
            assert_eq!(stored[&seq], i.to_le_bytes().to_vec());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_acknowledges_nothing_of_its_group() {
        let fs = SimFs::new(2);
        let log = sim_log(&fs);
        let (c, _h) = Committer::start(Arc::clone(&log), fresh_streams()).unwrap();
        let gate = AppendGate::new();
        c.submit(batch(&log, &[b"ok"]), gate.enter().unwrap())
            .await
            .unwrap();
        // The next operation is the write, the one after it the fdatasync: fail the sync.
        fs.set_fault(Some(Fault {
            at_op: fs.op_count() + 1,
            error: FaultError::Eio,
            persistent: false,
        }));
        let err = c
            .submit(batch(&log, &[b"lost"]), gate.enter().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommitError::Log(ref e) if e.is_fatal()),
            "{err}"
        );
        let err = c
            .submit(batch(&log, &[b"later"]), gate.enter().unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommitError::Log(echopost_log::Error::Poisoned(_))),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_stops_storing_at_its_first_failure() {
        // The middle request fails when it is written (over the disk quota), after the
        // ones around it were queued: the one behind it must not be stored.
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            max_disk_bytes: Some(64 << 10),
            ..LogOptions::default()
        };
        let log = Arc::new(Log::open(dir.path(), opts).unwrap());
        let (c, _h) = Committer::start(Arc::clone(&log), fresh_streams()).unwrap();
        let gate = AppendGate::new();
        let chain = Chain::default();
        let mut pending = Vec::new();
        for rec in [vec![1u8; 10], vec![2u8; 70_000], vec![3u8; 10]] {
            pending.push(
                c.enqueue(
                    batch(&log, &[&rec]),
                    None,
                    gate.enter().unwrap(),
                    Some(chain.clone()),
                )
                .await
                .unwrap(),
            );
        }
        let mut outcomes = Vec::new();
        for p in pending {
            outcomes.push(p.wait().await);
        }
        assert!(outcomes[0].is_ok());
        assert!(matches!(
            outcomes[1],
            Err(CommitError::Log(echopost_log::Error::Full { .. }))
        ));
        assert!(matches!(outcomes[2], Err(CommitError::ChainBroken)));
        assert_eq!(
            log.stats().next_seq,
            2,
            "only the request before the failure is stored"
        );
    }

    /// A committer thread that dies is reported with its panic message, and appends are
    /// refused from then on (not left waiting); a thread that ends because its handles
    /// were dropped is a clean exit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_committer_thread_is_reported() {
        let fs = SimFs::new(3);
        let log = sim_log(&fs);
        let (c, thread) = Committer::spawn(|_rx| panic!("injected committer failure")).unwrap();
        let err = thread.exited().await.unwrap_err();
        assert!(err.contains("injected committer failure"), "{err}");
        let gate = AppendGate::new();
        let r = c.submit(batch(&log, &[b"x"]), gate.enter().unwrap()).await;
        assert!(matches!(r, Err(CommitError::Stopped)), "{r:?}");

        let (c, thread) = Committer::start(Arc::clone(&log), fresh_streams()).unwrap();
        drop(c);
        assert_eq!(thread.exited().await, Ok(()));
    }
}
