//! The ingest path: a request from the socket becomes a durable frame in the log.
//!
//! ```text
//! service (Append / AppendStream) → Ingest::enqueue: check + encode (batch.rs), checksum
//!   → gate pass (gate.rs) → committer thread (committer.rs): write + one fdatasync per group
//!   → answer with the first and last sequence
//! ```
//!
//! # Appends
//! One request is one atomic, checksummed frame in the log ([`batch`] says what is stored
//! per record). Validation happens before anything touches the log, so a bad request
//! stores nothing: an empty batch, a record that is not a valid `Record`, a record above
//! `--max-record-bytes`, or, when the daemon replays with `--sink forward`, a record that
//! could not be sent as its request (no route, a header the protocol cannot carry) is
//! `INVALID_ARGUMENT`.
//!
//! The frame is encoded and checksummed on the request's task, then queued for the
//! [`Committer`] thread, which writes it and answers only once it is durable under the
//! sync policy; concurrent requests share one `fdatasync`. Each append holds a
//! [`GatePass`](gate::GatePass) until the engine is done with it (see [`gate`]).
//!
//! Engine errors map to statuses: `Full` → `RESOURCE_EXHAUSTED` ("buffer full: N bytes of
//! M"), not fatal, appends succeed again once replay frees space; `Io`/`Poisoned` →
//! `UNAVAILABLE`, and the lifecycle is told to shut down with exit code 5.
//!
//! The committer thread is supervised: [`CommitterThread::exited`] resolves if it ever
//! stops while the daemon runs (a panic), and the lifecycle then stops the daemon.

pub mod batch;
pub mod committer;
pub mod gate;
pub mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use echopost_log::{BatchBody, Log};
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::AppendResponse;
use tokio::sync::mpsc;
use tonic::Status;

pub use batch::RecordRules;
use batch::{encode_batch, now_unix_nanos};
use committer::{Chain, CommitError, Committer, CommitterThread, PendingAppend};
use gate::{AppendGate, GateClosed};
use prost::Message;

use crate::disk_quota::DiskQuota;
use crate::streams::codec::FrameMeta;
use crate::streams::tables::{BatchIdentity, Refusal};
use crate::streams::{MAX_NAME_BYTES, Streams};

/// The ingest path's shared state: the log, the gate, the committer.
#[derive(Debug)]
pub struct Ingest {
    log: Arc<Log>,
    /// The producer and stream tables the committer decides with.
    streams: Arc<Streams>,
    gate: Arc<AppendGate>,
    /// `--max-disk` over the segments, the dead letters and the session logs.
    quota: Arc<DiskQuota>,
    rules: RecordRules,
    /// Fatal storage errors go to the lifecycle, which shuts down with exit code 5 (or 4).
    fatal: mpsc::Sender<echopost_log::Error>,
    /// A "buffer full" warning was logged and no append succeeded since (so a client
    /// retrying against a full buffer does not flood the log).
    full_reported: AtomicBool,
    /// A fatal storage error was already logged.
    fatal_reported: AtomicBool,
    /// The fatal error was a full device: later appends (refused as `Poisoned`) are
    /// answered as the first one was.
    fatal_no_space: AtomicBool,
    /// Writes and group-commits every append (see [`committer`]).
    committer: Committer,
}

/// An append queued to the committer, with the figures needed to report its outcome.
#[derive(Debug)]
pub struct QueuedAppend {
    pending: PendingAppend,
    records: usize,
    bytes: usize,
}

impl Ingest {
    /// Starts the committer thread for `log`. The thread stops by itself once this
    /// `Ingest` (the only sender) is dropped; the returned [`CommitterThread`] tells if it
    /// stops before that.
    pub fn new(
        log: Arc<Log>,
        streams: Arc<Streams>,
        gate: Arc<AppendGate>,
        quota: Arc<DiskQuota>,
        rules: RecordRules,
        fatal: mpsc::Sender<echopost_log::Error>,
    ) -> std::io::Result<(Ingest, CommitterThread)> {
        let (committer, thread) = Committer::start(Arc::clone(&log), Arc::clone(&streams))?;
        Ok((
            Ingest {
                log,
                streams,
                gate,
                quota,
                rules,
                fatal,
                full_reported: AtomicBool::new(false),
                fatal_reported: AtomicBool::new(false),
                fatal_no_space: AtomicBool::new(false),
                committer,
            },
            thread,
        ))
    }

    /// The log appends go to.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The producer and stream tables.
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// Validates, encodes and stores one request. See the module documentation.
    pub async fn append(&self, req: RawAppendRequest) -> Result<AppendResponse, Status> {
        let queued = self.enqueue(req, None).await?;
        self.finish(queued).await
    }

    /// Validates and encodes one request and queues it for the committer. Requests are
    /// stored in the order they are queued; `chain` links the requests of one stream so
    /// that none is stored after one of them failed.
    pub async fn enqueue(
        &self,
        req: RawAppendRequest,
        chain: Option<Chain>,
    ) -> Result<QueuedAppend, Status> {
        let (body, identity) = encode_request(req, &self.rules, now_unix_nanos())?;
        let count = body.len();
        let bytes = usize::try_from(body.raw_len()).unwrap_or(usize::MAX);
        // The dead letters and session logs share the quota with the segments (the
        // engine checks the segments alone). Without a quota there is nothing to check,
        // and the log's figures (a lock and a pass over its segments) are not read.
        if self.quota.limit().is_some()
            && let Err(over) = self.quota.admit(self.log.stats().disk_bytes, bytes as u64)
        {
            if !self.full_reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(%over, records = count, bytes, "disk quota reached (--max-disk): refusing appends until replay frees space or dead letters are purged");
            }
            return Err(Status::resource_exhausted(format!(
                "buffer full: {over}; this append needs {bytes} more. Appends succeed again once replay frees space or dead letters are purged (`echopost dead-letters`)"
            )));
        }
        // Encoding and checksumming happen here, on the request's task, so that the
        // committer thread only writes and syncs.
        let batch = self
            .log
            .prepare(body)
            .map_err(|e| self.storage_error(e, count, bytes))?;
        let pass = self
            .gate
            .enter()
            .map_err(|e: GateClosed| Status::unavailable(e.to_string()))?;
        let pending = self
            .committer
            .enqueue(batch, identity, pass, chain)
            .await
            .map_err(|e| self.commit_error(e, count, bytes))?;
        Ok(QueuedAppend {
            pending,
            records: count,
            bytes,
        })
    }

    /// Waits for a queued append to be stored and turns the outcome into the answer.
    pub async fn finish(&self, queued: QueuedAppend) -> Result<AppendResponse, Status> {
        let QueuedAppend {
            pending,
            records,
            bytes,
        } = queued;
        match pending.wait().await {
            Ok(a) => {
                self.full_reported.store(false, Ordering::Relaxed);
                tracing::trace!(
                    first = a.first_seq,
                    last = a.last_seq,
                    records,
                    bytes,
                    "stored"
                );
                Ok(AppendResponse {
                    first_sequence: a.first_seq,
                    last_sequence: a.last_seq,
                    duplicate: a.duplicate,
                    stream_version: a.stream_version.unwrap_or(0),
                })
            }
            Err(e) => Err(self.commit_error(e, records, bytes)),
        }
    }

    fn commit_error(&self, e: CommitError, records: usize, bytes: usize) -> Status {
        match e {
            CommitError::Log(e) => self.storage_error(e, records, bytes),
            CommitError::Stopped => Status::unavailable(GateClosed.to_string()),
            CommitError::ChainBroken => Status::aborted(CommitError::ChainBroken.to_string()),
            CommitError::Refused(r) => refusal_status(&r),
        }
    }

    /// Maps an engine error of an append to the client's status, logging and escalating
    /// what needs it.
    fn storage_error(&self, e: echopost_log::Error, records: usize, bytes: usize) -> Status {
        use echopost_log::Error as E;
        match e {
            E::Full {
                used,
                limit,
                needed,
            } => {
                if !self.full_reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        used_bytes = used,
                        limit_bytes = limit,
                        needed_bytes = needed,
                        records,
                        bytes,
                        "disk quota reached (--max-disk): refusing appends until replay frees space"
                    );
                }
                Status::resource_exhausted(format!(
                    "buffer full: {used} bytes of {limit} in use (--max-disk); this append needs {needed} more. Appends succeed again once replay frees space"
                ))
            }
            E::EmptyBatch => Status::invalid_argument(E::EmptyBatch.to_string()),
            E::BatchTooLarge { size, limit } => Status::invalid_argument(format!(
                "batch of {size} bytes exceeds the limit of {limit} bytes per append; split it into smaller appends"
            )),
            e if e.is_fatal() => {
                if e.is_no_space() {
                    self.fatal_no_space.store(true, Ordering::SeqCst);
                }
                let no_space = self.fatal_no_space.load(Ordering::SeqCst);
                let detail = e.to_string();
                let msg =
                    format!("echopost cannot store records any more and is shutting down: {e}");
                if !self.fatal_reported.swap(true, Ordering::SeqCst) {
                    let stats = self.log.stats();
                    tracing::error!(
                        error = %e,
                        no_space,
                        records,
                        bytes,
                        next_seq = stats.next_seq,
                        durable_next = stats.durable_next,
                        backlog_records = stats.backlog_records,
                        disk_bytes = stats.disk_bytes,
                        "storage failure: appends can no longer be made durable"
                    );
                    // Capacity is ample and only the first error matters.
                    let _ = self.fatal.try_send(e);
                }
                if no_space {
                    // Not UNAVAILABLE: a client (or `Fallback`) would answer that by
                    // starting another daemon on the same full disk (issue 13).
                    Status::resource_exhausted(format!(
                        "no space left on the device holding {}: echopost cannot store records and is shutting down (exit 5); free space on that device (the next start drains what the main server accepts): {detail}",
                        self.log.dir().display()
                    ))
                } else {
                    Status::unavailable(msg)
                }
            }
            other => Status::internal(format!("append failed: {other}")),
        }
    }
}

/// Checks and encodes one request: the frame body ([`encode_batch`], with the producer id
/// and number as the frame's metadata entry) and what the producer and stream tables are
/// to decide and record (`None` for a plain batch). Refuses a producer id over
/// [`MAX_NAME_BYTES`] and whatever [`encode_batch`] refuses, with `INVALID_ARGUMENT`.
/// Shared by [`Ingest::enqueue`] and the streams crash simulation, so both store batches
/// exactly alike.
pub fn encode_request(
    req: RawAppendRequest,
    rules: &RecordRules,
    now_nanos: i64,
) -> Result<(BatchBody, Option<BatchIdentity>), Status> {
    let producer = (!req.producer_id.is_empty()).then_some(req.producer_id);
    if let Some(id) = &producer
        && id.len() > MAX_NAME_BYTES
    {
        return Err(Status::invalid_argument(format!(
            "producer_id of {} bytes is above the limit of {MAX_NAME_BYTES} bytes; nothing was stored",
            id.len()
        )));
    }
    let meta = producer.as_ref().map(|id| {
        FrameMeta {
            producer_id: id.clone(),
            producer_sequence: req.producer_sequence,
        }
        .encode_to_vec()
    });
    let (body, streams) = encode_batch(&req.records, rules, now_nanos, meta.as_deref())?;
    let identity = BatchIdentity {
        producer: producer.map(|id| (id, req.producer_sequence)),
        records: body.len() as u64,
        streams,
        expected_stream_version: req.expected_stream_version,
    };
    let identity = (!identity.is_plain()).then_some(identity);
    Ok((body, identity))
}

/// The status of a batch the producer or stream rules refused (issue 14): a producer
/// number out of series is `FAILED_PRECONDITION`, a stream version other than expected
/// `ABORTED`, too many streams `RESOURCE_EXHAUSTED`, the rest `INVALID_ARGUMENT`. The
/// message names the expected number, the current version or the limit.
fn refusal_status(r: &Refusal) -> Status {
    let msg = format!("{r}; nothing was stored");
    match r {
        Refusal::Sequence { .. } => Status::failed_precondition(msg),
        Refusal::Version { .. } => Status::aborted(msg),
        Refusal::TooManyStreams { .. } => Status::resource_exhausted(msg),
        Refusal::NotSingleStream { .. } | Refusal::Overflow { .. } => Status::invalid_argument(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_proto::v1::Record;
    use tonic::Code;

    fn rec(payload: &[u8]) -> Record {
        Record {
            payload: payload.to_vec(),
            ..Record::default()
        }
    }

    fn ingest(log: Log) -> (Ingest, mpsc::Receiver<echopost_log::Error>) {
        let (fatal_tx, fatal_rx) = mpsc::channel(4);
        let streams = Streams::new(crate::streams::tables::Tables::new(10, 10));
        let (ingest, _thread) = Ingest::new(
            Arc::new(log),
            streams,
            AppendGate::new(),
            Arc::new(crate::disk_quota::DiskQuota::unlimited()),
            RecordRules::sized(1 << 20),
            fatal_tx,
        )
        .unwrap();
        (ingest, fatal_rx)
    }

    fn one(p: &[u8]) -> RawAppendRequest {
        RawAppendRequest::from_records(&[rec(p)])
    }

    /// An fsync failure poisons the log: that append gets UNAVAILABLE (RESOURCE_EXHAUSTED
    /// naming the directory for ENOSPC), every later one UNAVAILABLE, and the lifecycle
    /// is told (it exits with code 5).
    #[tokio::test]
    async fn storage_failure_is_unavailable_for_every_later_append_and_escalated() {
        use echopost_log::sim::{Fault, FaultError, SimFs};
        for error in [FaultError::Eio, FaultError::Enospc] {
            let fs = SimFs::new(7);
            let log = Log::open_with_fs(
                Arc::new(fs.clone()),
                "/sim",
                echopost_log::LogOptions::default(),
            )
            .unwrap();
            let (ingest, mut fatal) = ingest(log);
            let ok = ingest.append(one(b"before")).await.unwrap();
            assert_eq!(ok.first_sequence, 1);

            fs.set_fault(Some(Fault {
                at_op: fs.op_count(),
                error,
                persistent: true,
            }));
            let e = ingest.append(one(b"fails")).await.unwrap_err();
            if error == FaultError::Enospc {
                // A full device is RESOURCE_EXHAUSTED naming the directory (issue 13).
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message()
                        .contains("no space left on the device holding /sim"),
                    "{e:?}"
                );
            } else {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            }
            let reported = fatal.try_recv().expect("the lifecycle must be told");
            assert!(reported.is_fatal());
            assert_eq!(reported.is_no_space(), error == FaultError::Enospc);
            let code =
                crate::daemon::exit::DaemonError::from_log(std::path::Path::new("/sim"), reported)
                    .exit_code();
            assert_eq!(code, crate::daemon::exit::ExitCode::Fatal);

            // Poisoned: later appends are refused too (the same way), and reported only once.
            fs.set_fault(None);
            let e = ingest.append(one(b"after")).await.unwrap_err();
            let later = if error == FaultError::Enospc {
                Code::ResourceExhausted
            } else {
                Code::Unavailable
            };
            assert_eq!(e.code(), later, "{e:?}");
            assert!(fatal.try_recv().is_err());
            assert!(ingest.log.stats().poisoned.is_some());
        }
    }

    /// Over the quota: RESOURCE_EXHAUSTED "buffer full", and appends succeed again once
    /// delivered records are acknowledged (what the replayer does).
    #[tokio::test]
    async fn buffer_full_clears_once_records_are_acknowledged() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Log::open(
            tmp.path(),
            echopost_log::LogOptions {
                max_disk_bytes: Some(64 << 10),
                ..echopost_log::LogOptions::default()
            },
        )
        .unwrap();
        let (ingest, mut fatal) = ingest(log);
        let payload = vec![9u8; 1000];
        let mut last = 0;
        let full = loop {
            match ingest.append(one(&payload)).await {
                Ok(a) => last = a.last_sequence,
                Err(e) => break e,
            }
        };
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert!(
            full.message().starts_with("buffer full: "),
            "{}",
            full.message()
        );
        assert!(full.message().contains("of 65536"), "{}", full.message());
        assert!(fatal.try_recv().is_err(), "a full buffer is not fatal");

        ingest.log.ack(last).unwrap();
        let a = ingest.append(one(&payload)).await.unwrap();
        assert_eq!(a.first_sequence, last + 1);
    }
}
