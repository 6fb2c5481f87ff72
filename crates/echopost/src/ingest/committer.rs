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
//! * The thread only ends when every [`Committer`] handle is gone. If it ends earlier (a
//!   panic), every later append would be refused as "shutting down" while the process
//!   lived on, so the lifecycle watches [`CommitterThread::exited`] and stops the daemon.

use std::sync::Arc;
use std::thread::JoinHandle;

use echopost_log::{Appended, Log, PreparedBatch, SyncPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::ingest::gate::GatePass;

/// Requests waiting for the committer at most (beyond that, submitters wait).
const QUEUE_LEN: usize = 4096;
/// Record bytes queued for the committer at most. A larger single request is admitted
/// alone (it takes the whole budget).
pub const QUEUE_BYTES: usize = 32 << 20;
/// Requests written before syncing, at most, so a flood cannot delay the sync that the
/// first requests of a group are waiting for.
const MAX_GROUP: usize = 512;

struct Job {
    /// Taken when the batch is written (each job is written once).
    batch: Option<PreparedBatch>,
    reply: oneshot::Sender<Result<Appended, CommitError>>,
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

/// A queued request; [`PendingAppend::wait`] gives its outcome.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<Appended, CommitError>>);

impl PendingAppend {
    /// Waits until the batch is stored (durable under the sync policy) or refused.
    pub async fn wait(self) -> Result<Appended, CommitError> {
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
}

/// Handle to the committer thread. Dropping every handle stops the thread once the queue
/// is empty.
#[derive(Debug)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
    budget: Arc<Semaphore>,
}

impl Committer {
    /// Starts the committer thread for `log`.
    pub fn start(log: Arc<Log>) -> std::io::Result<(Committer, CommitterThread)> {
        let wait = log.options().sync == SyncPolicy::Always;
        Committer::spawn(move |rx| commit_loop(&log, rx, wait))
    }

    /// Starts a thread running `body` over the queue (the committer loop; tests give
    /// others).
    fn spawn(
        body: impl FnOnce(mpsc::Receiver<Job>) + Send + 'static,
    ) -> std::io::Result<(Committer, CommitterThread)> {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let handle = std::thread::Builder::new()
            .name("echopost-commit".into())
            .spawn(move || body(rx))?;
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
    ) -> Result<Appended, CommitError> {
        self.enqueue(batch, pass, None).await?.wait().await
    }

    /// Queues one batch; the returned [`PendingAppend`] gives the outcome. Batches are
    /// stored in the order they were queued. Once queued, the batch is written whether or
    /// not anyone waits for the outcome, and `pass` is held until then.
    pub async fn enqueue(
        &self,
        batch: PreparedBatch,
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
            .send(Job {
                batch: Some(batch),
                reply,
                chain,
                _pass: pass,
                _budget: budget,
            })
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

fn commit_loop(log: &Log, mut rx: mpsc::Receiver<Job>, wait: bool) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut results: Vec<Result<Appended, CommitError>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut writer = log.group_writer();
        for job in &mut group {
            let result = match (&job.chain, job.batch.take()) {
                (Some(chain), _) if chain.broken() => Err(CommitError::ChainBroken),
                (_, Some(batch)) => writer.stage(batch).map_err(CommitError::Log),
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
            fail_all_ok(&mut results, e);
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
                fail_all_ok(&mut results, e);
            }
        }
        for (job, result) in group.drain(..).zip(results.drain(..)) {
            // The requester may have gone away; the batch is stored regardless.
            let _ = job.reply.send(result);
        }
    }
}

/// Turns every Ok of a group into an error: `e` for the first, the same reason (as
/// [`echopost_log::Error::Poisoned`]) for the rest.
fn fail_all_ok(results: &mut [Result<Appended, CommitError>], e: echopost_log::Error) {
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

    fn sim_log(fs: &SimFs) -> Arc<Log> {
        Arc::new(Log::open_with_fs(Arc::new(fs.clone()), "/d", LogOptions::default()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_stored_in_order_and_durable() {
        let fs = SimFs::new(1);
        let log = sim_log(&fs);
        let (c, _h) = Committer::start(Arc::clone(&log)).unwrap();
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
        let (c, _h) = Committer::start(Arc::clone(&log)).unwrap();
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
        let (c, _h) = Committer::start(Arc::clone(&log)).unwrap();
        let gate = AppendGate::new();
        let chain = Chain::default();
        let mut pending = Vec::new();
        for rec in [vec![1u8; 10], vec![2u8; 70_000], vec![3u8; 10]] {
            pending.push(
                c.enqueue(
                    batch(&log, &[&rec]),
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

        let (c, thread) = Committer::start(Arc::clone(&log)).unwrap();
        drop(c);
        assert_eq!(thread.exited().await, Ok(()));
    }
}
