//! The `echopost.v1.EchoPost` gRPC service: `Append`, `AppendStream`, `Status`, `Read`.
//!
//! # Appends
//! One request is one atomic, checksummed frame in the log. What is stored per record is
//! the record's protobuf encoding as the client sent it: requests arrive as
//! [`RawAppendRequest`] (each record a slice of the received message), each record is
//! checked with [`check_record`] (it must decode as a `Record`; the replayer runs the
//! same check) and copied into the frame once, with a timestamp field appended when its
//! timestamp is zero ("time of receipt"). Replay and `Read` decode those bytes, so they
//! return exactly what was sent. Validation happens before anything touches the log, so a
//! bad request stores nothing: an empty batch, a record that is not a valid `Record`, or
//! a record above `--max-record-bytes` is `INVALID_ARGUMENT`.
//!
//! The frame is encoded and checksummed on the request's task, then queued for the
//! [`Committer`] thread, which writes it and answers only once it is durable under the
//! sync policy; concurrent requests share one `fdatasync`. Each append holds a
//! [`GatePass`] until the engine is done with it (see [`crate::gate`]).
//!
//! Engine errors map to statuses: `Full` → `RESOURCE_EXHAUSTED` ("buffer full: N bytes of
//! M"), not fatal, appends succeed again once replay frees space; `Io`/`Poisoned` →
//! `UNAVAILABLE`, and the lifecycle is told to shut down with exit code 5.
//!
//! # AppendStream
//! Requests are processed strictly in order (they are stored in arrival order, one
//! response each, in order). A receiving task reads ahead of the appending task through a
//! bounded queue, limited both in requests ([`STREAM_QUEUE`]) and in bytes
//! ([`STREAM_BYTES_BUDGET`]), so network and disk overlap without unbounded buffering. The
//! first failing request ends the stream with its status; the responses before it stand.
//! A client that disconnects loses only requests it had no response for.
//!
//! # Read
//! Stored records are streamed from a reader on the blocking pool in bounded batches
//! ([`READ_BATCH_RECORDS`], [`READ_BATCH_BYTES`]) through a small bounded channel, so a
//! slow client holds back the reader instead of filling memory. Reading does not consume.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use echopost_log::{BatchBody, Log};
use echopost_proto::ingest::echo_post_server::EchoPost;
use echopost_proto::raw::{
    RawAppendRequest, check_record, put_timestamp_field, timestamp_field_len,
};
use echopost_proto::v1::{
    AppendResponse, ReadRequest, ReadResponse, Record, StatusRequest, StatusResponse, StoredRecord,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::committer::{Chain, CommitError, Committer, PendingAppend};
use crate::gate::{AppendGate, GateClosed};
use crate::limits;
use crate::replay::Progress;

/// Requests of one `AppendStream` that may be received ahead of the one being stored.
pub const STREAM_QUEUE: usize = 16;
/// Bytes of one `AppendStream` that may be received ahead (a larger single request is
/// still admitted, alone).
pub const STREAM_BYTES_BUDGET: usize = 8 << 20;
/// Records per `ReadResponse` at most.
pub const READ_BATCH_RECORDS: usize = 256;
/// Record bytes per `ReadResponse` at most (a single larger record is sent alone).
pub const READ_BATCH_BYTES: usize = 1 << 20;
/// `ReadResponse`s buffered ahead of a slow client.
pub const READ_QUEUE: usize = 2;
/// Records returned by `Read` when the request's limit is 0.
pub const DEFAULT_READ_LIMIT: u64 = 1000;

/// Settings and figures `Status` reports that do not change while running.
#[derive(Debug, Clone)]
pub struct StaticInfo {
    pub dir: String,
    pub sync_policy: String,
    pub upstream: Option<String>,
    /// 0 when no quota is set.
    pub max_disk_bytes: u64,
    pub session_id: String,
    pub source_id: String,
    pub started: Instant,
}

/// Everything the service shares with the lifecycle.
#[derive(Debug)]
pub struct Ingest {
    pub log: Arc<Log>,
    pub gate: Arc<AppendGate>,
    pub max_record_bytes: usize,
    pub progress: Arc<Progress>,
    pub info: StaticInfo,
    /// Fatal storage errors go to the lifecycle, which shuts down with exit code 5 (or 4).
    pub fatal: mpsc::Sender<echopost_log::Error>,
    /// Becomes true when the daemon has decided to exit: open streams end with
    /// `UNAVAILABLE`, reads stop.
    pub shutdown: watch::Receiver<bool>,
    /// A "buffer full" warning was logged and no append succeeded since (so a client
    /// retrying against a full buffer does not flood the log).
    full_reported: AtomicBool,
    /// A fatal storage error was already logged.
    fatal_reported: AtomicBool,
    /// Writes and group-commits every append (see [`crate::committer`]).
    committer: Committer,
    /// `(sequence, timestamp)` of the oldest record `Status` last looked up.
    oldest_cache: std::sync::Mutex<(u64, i64)>,
}

/// An append queued to the committer, with the figures needed to report its outcome.
#[derive(Debug)]
pub struct QueuedAppend {
    pending: PendingAppend,
    records: usize,
    bytes: usize,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: Arc<Log>,
        gate: Arc<AppendGate>,
        max_record_bytes: usize,
        progress: Arc<Progress>,
        info: StaticInfo,
        fatal: mpsc::Sender<echopost_log::Error>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Ingest> {
        // The thread stops by itself once this `Ingest` (the only sender) is dropped.
        let (committer, _thread) = Committer::start(Arc::clone(&log))?;
        Ok(Ingest {
            log,
            gate,
            max_record_bytes,
            progress,
            info,
            fatal,
            shutdown,
            full_reported: AtomicBool::new(false),
            fatal_reported: AtomicBool::new(false),
            committer,
            oldest_cache: std::sync::Mutex::new((0, 0)),
        })
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
        let body = encode_batch(&req.records, self.max_record_bytes, now_unix_nanos())?;
        let count = body.len();
        let bytes = usize::try_from(body.raw_len()).unwrap_or(usize::MAX);
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
            .enqueue(batch, pass, chain)
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
                let msg =
                    format!("echopost cannot store records any more and is shutting down: {e}");
                if !self.fatal_reported.swap(true, Ordering::SeqCst) {
                    let stats = self.log.stats();
                    tracing::error!(
                        error = %e,
                        no_space = e.is_no_space(),
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
                Status::unavailable(msg)
            }
            other => Status::internal(format!("append failed: {other}")),
        }
    }

    /// The `Status` figures.
    pub async fn status(&self) -> Result<StatusResponse, Status> {
        let log = Arc::clone(&self.log);
        let cached = self.oldest_cache.lock().map(|c| *c).unwrap_or((0, 0));
        let (stats, oldest) = tokio::task::spawn_blocking(move || {
            let stats = log.stats();
            // Only look at the oldest record when it is durable already: a reader asks for
            // a sync otherwise, and `Status` must not change the sync behaviour. Reading it
            // means scanning its segment up to it, so it is done once per oldest record,
            // not once per `Status` call.
            let oldest =
                if stats.backlog_records > 0 && stats.durable_next > stats.first_unacked_seq {
                    if cached.0 == stats.first_unacked_seq && cached.1 != 0 {
                        cached.1
                    } else {
                        oldest_timestamp(&log, stats.first_unacked_seq)
                    }
                } else {
                    0
                };
            (stats, oldest)
        })
        .await
        .map_err(|e| Status::internal(format!("status failed: {e}")))?;
        if oldest != 0
            && let Ok(mut c) = self.oldest_cache.lock()
        {
            *c = (stats.first_unacked_seq, oldest);
        }
        let progress = self.progress.snapshot(stats.backlog_records);
        let upstream_state = match self.info.upstream {
            None => echopost_proto::v1::UpstreamState::None as i32,
            Some(_) => self.progress.state() as u8 as i32,
        };
        Ok(StatusResponse {
            first_sequence: stats.first_unacked_seq,
            next_sequence: stats.next_seq,
            backlog_records: stats.backlog_records,
            backlog_bytes: stats.backlog_bytes,
            disk_bytes: stats.disk_bytes,
            max_disk_bytes: self.info.max_disk_bytes,
            sync_policy: self.info.sync_policy.clone(),
            upstream: self.info.upstream.clone().unwrap_or_default(),
            upstream_state,
            upstream_detail: self.progress.last_error(),
            delivered_records: self.progress.delivered_records.load(Ordering::Relaxed),
            dead_lettered_records: self.progress.dead_lettered.load(Ordering::Relaxed),
            uptime_seconds: self.info.started.elapsed().as_secs_f64(),
            session_id: self.info.session_id.clone(),
            source_id: self.info.source_id.clone(),
            delivery_records_per_second: progress.records_per_second,
            delivery_bytes_per_second: progress.bytes_per_second,
            estimated_drain_seconds: progress.estimated_drain_seconds,
            oldest_record_unix_nanos: oldest,
            dir: self.info.dir.clone(),
            pid: std::process::id(),
            version: crate::VERSION.to_owned(),
        })
    }
}

/// Timestamp of the record at `seq`, or 0 if it cannot be read.
fn oldest_timestamp(log: &Log, seq: u64) -> i64 {
    match log.reader(seq).next_batch(1, 1) {
        Ok(batch) => batch
            .first()
            .and_then(|r| Record::decode(r.data.as_slice()).ok())
            .map_or(0, |r| r.timestamp_unix_nanos),
        Err(e) => {
            tracing::debug!(error = %e, seq, "cannot read the oldest record for Status");
            0
        }
    }
}

/// Nanoseconds since the UNIX epoch now.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks a batch and builds the body of one log frame from it: each record's bytes as
/// received, with a timestamp field appended when its timestamp is zero (`now_nanos`).
/// Refuses an empty batch, a record that does not decode as a `Record`, and a record
/// whose stored form would exceed `max_record_bytes`, naming the limit.
pub fn encode_batch(
    records: &[Bytes],
    max_record_bytes: usize,
    now_nanos: i64,
) -> Result<BatchBody, Status> {
    if records.is_empty() {
        return Err(Status::invalid_argument(
            "empty batch: an append needs at least one record",
        ));
    }
    let stamp_len = timestamp_field_len(now_nanos);
    let capacity = records
        .iter()
        .map(|r| r.len() + echopost_log::RECORD_OVERHEAD + stamp_len)
        .sum();
    let mut body = BatchBody::with_capacity(capacity);
    for (i, raw) in records.iter().enumerate() {
        let info = check_record(raw).map_err(|e| {
            Status::invalid_argument(format!("record {i} of the batch: {e}; nothing was stored"))
        })?;
        let stamp = (info.timestamp_unix_nanos == 0).then_some(now_nanos);
        let len = raw.len() + if stamp.is_some() { stamp_len } else { 0 };
        if len > max_record_bytes {
            return Err(Status::invalid_argument(format!(
                "record {i} of the batch is {len} bytes (encoded), above the limit of {max_record_bytes} bytes set by --max-record-bytes; nothing was stored"
            )));
        }
        body.push_with(|buf| {
            buf.extend_from_slice(raw);
            if let Some(now) = stamp {
                put_timestamp_field(now, buf);
            }
        });
    }
    Ok(body)
}

/// Resolves once the daemon decided to exit (or the lifecycle is gone).
async fn until_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The status of a failed receive on an `AppendStream`.
fn inbound_error(s: Status) -> Status {
    if limits::is_oversized_decode_error(&s) {
        limits::oversized_request_status(s.message())
    } else {
        s
    }
}

/// The gRPC service handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct EchoPostService {
    inner: Arc<Ingest>,
}

impl EchoPostService {
    pub fn new(inner: Arc<Ingest>) -> Self {
        EchoPostService { inner }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl EchoPost for EchoPostService {
    async fn append(
        &self,
        request: Request<RawAppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        self.inner
            .append(request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendStreamStream = ResponseStream<AppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<RawAppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel::<Result<AppendResponse, Status>>(STREAM_QUEUE);
        let (work_tx, mut work_rx) =
            mpsc::channel::<Result<(RawAppendRequest, OwnedSemaphorePermit), Status>>(STREAM_QUEUE);
        let budget = Arc::new(Semaphore::new(STREAM_BYTES_BUDGET));
        let mut shutdown = self.inner.shutdown.clone();

        // Receiver: reads ahead, bounded by the queue and the byte budget.
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    biased;
                    () = until_shutdown(&mut shutdown) => Err(Status::unavailable(GateClosed.to_string())),
                    m = inbound.message() => match m {
                        Ok(Some(req)) => {
                            let want = req.encoded_len().clamp(1, STREAM_BYTES_BUDGET);
                            // `want` <= 8 MiB, so it fits in u32.
                            match Arc::clone(&budget).acquire_many_owned(want as u32).await {
                                Ok(permit) => Ok((req, permit)),
                                Err(_) => break,
                            }
                        }
                        Ok(None) => break,
                        Err(s) => Err(inbound_error(s)),
                    },
                };
                let last = item.is_err();
                if work_tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });

        // Queuer: hands requests to the committer in order without waiting for each to be
        // durable (pipelining), so one stream's requests share fsyncs. The chain makes the
        // committer refuse everything queued behind a failed request.
        let (queued_tx, mut queued_rx) =
            mpsc::channel::<Result<QueuedAppend, Status>>(STREAM_QUEUE);
        let ingest = Arc::clone(&self.inner);
        let out_closed = out_tx.clone();
        tokio::spawn(async move {
            let chain = Chain::default();
            while let Some(item) = work_rx.recv().await {
                let queued = match item {
                    Ok((req, permit)) => {
                        if out_closed.is_closed() {
                            // The client is gone: nothing more is stored for it.
                            break;
                        }
                        let q = ingest.enqueue(req, Some(chain.clone())).await;
                        drop(permit);
                        q
                    }
                    Err(s) => Err(s),
                };
                let last = queued.is_err();
                if queued_tx.send(queued).await.is_err() || last {
                    break;
                }
            }
        });

        // Answerer: answers in order, stops at the first error.
        let ingest = Arc::clone(&self.inner);
        tokio::spawn(async move {
            while let Some(item) = queued_rx.recv().await {
                let resp = match item {
                    Ok(q) => ingest.finish(q).await,
                    Err(s) => Err(s),
                };
                let last = resp.is_err();
                if out_tx.send(resp).await.is_err() || last {
                    break;
                }
            }
        });

        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.inner.status().await.map(Response::new)
    }

    type ReadStream = ResponseStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            DEFAULT_READ_LIMIT
        } else {
            u64::from(req.limit)
        };
        let (tx, rx) = mpsc::channel::<Result<ReadResponse, Status>>(READ_QUEUE);
        let log = Arc::clone(&self.inner.log);
        let shutdown = self.inner.shutdown.clone();
        let dir = self.inner.info.dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = log.reader(req.from_sequence);
            let mut remaining = limit;
            while remaining > 0 && !*shutdown.borrow() {
                let want = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(READ_BATCH_RECORDS);
                let batch = match reader.next_batch(want, READ_BATCH_BYTES) {
                    Ok(b) if b.is_empty() => break,
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(read_error(&e, &dir)));
                        break;
                    }
                };
                remaining -= batch.len() as u64;
                let mut records = Vec::with_capacity(batch.len());
                let mut failed = None;
                for r in batch {
                    match Record::decode(r.data.as_slice()) {
                        Ok(rec) => records.push(StoredRecord {
                            sequence: r.seq,
                            record: Some(rec),
                        }),
                        Err(e) => {
                            failed = Some(Status::data_loss(format!(
                                "stored record {} is not a valid echopost.v1.Record: {e}",
                                r.seq
                            )));
                            break;
                        }
                    }
                }
                if !records.is_empty() && tx.blocking_send(Ok(ReadResponse { records })).is_err() {
                    break;
                }
                if let Some(s) = failed {
                    let _ = tx.blocking_send(Err(s));
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The status for a reader error.
fn read_error(e: &echopost_log::Error, dir: &str) -> Status {
    match e {
        echopost_log::Error::Corruption(_) => {
            tracing::error!(error = %e, "Read met storage corruption");
            Status::data_loss(format!(
                "{e}. Run `echopost verify --dir {dir}` for a full report"
            ))
        }
        other => Status::unavailable(format!("reading the log failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn rec(payload: &[u8]) -> Record {
        Record {
            payload: payload.to_vec(),
            ..Record::default()
        }
    }

    fn raw(records: &[Record]) -> Vec<Bytes> {
        RawAppendRequest::from_records(records).records
    }

    #[test]
    fn empty_batch_is_invalid() {
        let e = encode_batch(&[], 100, 1).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("empty batch"));
    }

    #[test]
    fn oversized_record_is_invalid_and_names_the_limit() {
        let e = encode_batch(&raw(&[rec(b"ok"), rec(&[0; 200])]), 100, 1).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("record 1"), "{}", e.message());
        assert!(e.message().contains("100 bytes"), "{}", e.message());
        assert!(
            e.message().contains("--max-record-bytes"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn zero_timestamps_are_stamped_others_kept() {
        let mut with_ts = rec(b"b");
        with_ts.timestamp_unix_nanos = 7;
        let out = encode_batch(&raw(&[rec(b"a"), with_ts]), 1000, 42).unwrap();
        let out: Vec<&[u8]> = out.records().collect();
        let a = Record::decode(out[0]).unwrap();
        let b = Record::decode(out[1]).unwrap();
        assert_eq!(a.timestamp_unix_nanos, 42);
        assert_eq!(a.payload, b"a");
        assert_eq!(b.timestamp_unix_nanos, 7);
    }

    fn ingest(log: Log) -> (Ingest, mpsc::Receiver<echopost_log::Error>) {
        let (fatal_tx, fatal_rx) = mpsc::channel(4);
        let (_shutdown_tx, shutdown_rx) = watch::channel(false);
        let ingest = Ingest::new(
            Arc::new(log),
            AppendGate::new(),
            1 << 20,
            Arc::new(Progress::default()),
            StaticInfo {
                dir: "/sim".into(),
                sync_policy: "always".into(),
                upstream: None,
                max_disk_bytes: 0,
                session_id: "s".into(),
                source_id: "0".repeat(32),
                started: Instant::now(),
            },
            fatal_tx,
            shutdown_rx,
        )
        .unwrap();
        (ingest, fatal_rx)
    }

    fn one(p: &[u8]) -> RawAppendRequest {
        RawAppendRequest::from_records(&[rec(p)])
    }

    /// An fsync failure poisons the log: that append and every later one get UNAVAILABLE,
    /// and the lifecycle is told (it exits with code 5).
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
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            let reported = fatal.try_recv().expect("the lifecycle must be told");
            assert!(reported.is_fatal());
            assert_eq!(reported.is_no_space(), error == FaultError::Enospc);
            let code = crate::exit::DaemonError::from_log(std::path::Path::new("/sim"), reported)
                .exit_code();
            assert_eq!(code, crate::exit::ExitCode::Fatal);

            // Poisoned: later appends are refused too, and reported only once.
            fs.set_fault(None);
            let e = ingest.append(one(b"after")).await.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
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

    #[test]
    fn stream_receive_errors_for_oversized_messages_become_resource_exhausted() {
        let s = inbound_error(Status::out_of_range(
            "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
        ));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let other = inbound_error(Status::cancelled("gone"));
        assert_eq!(other.code(), Code::Cancelled);
    }
}
