//! `Read`: stored records, oldest first, without consuming them.
//!
//! Records are streamed from a reader on the blocking pool in bounded batches
//! ([`READ_BATCH_RECORDS`], [`READ_BATCH_BYTES`]) through a small bounded channel
//! ([`READ_QUEUE`]), so a slow client holds back the reader instead of filling memory.
//!
//! With `stream` set (issue 14), only that stream's records are returned, in order, and
//! the limit counts those; the reader still passes over the others.

use std::sync::Arc;

use echopost_log::Log;
use echopost_proto::v1::{ReadRequest, ReadResponse, Record, StoredRecord};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::ResponseStream;

/// Records per `ReadResponse` at most.
pub const READ_BATCH_RECORDS: usize = 256;
/// Record bytes per `ReadResponse` at most (a single larger record is sent alone).
pub const READ_BATCH_BYTES: usize = 1 << 20;
/// `ReadResponse`s buffered ahead of a slow client.
pub const READ_QUEUE: usize = 2;
/// Records returned by `Read` when the request's limit is 0.
pub const DEFAULT_READ_LIMIT: u64 = 1000;

/// Serves one `Read` call from `log`; `dir` names the directory in corruption messages.
pub(super) fn serve(
    log: Arc<Log>,
    req: ReadRequest,
    shutdown: watch::Receiver<bool>,
    dir: String,
) -> ResponseStream<ReadResponse> {
    let limit = if req.limit == 0 {
        DEFAULT_READ_LIMIT
    } else {
        u64::from(req.limit)
    };
    let (tx, rx) = mpsc::channel::<Result<ReadResponse, Status>>(READ_QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut reader = log.reader(req.from_sequence);
        let mut remaining = limit;
        let only = (!req.stream.is_empty()).then_some(req.stream.as_str());
        while remaining > 0 && !*shutdown.borrow() {
            let want = if only.is_some() {
                READ_BATCH_RECORDS
            } else {
                usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(READ_BATCH_RECORDS)
            };
            let batch = match reader.next_batch(want, READ_BATCH_BYTES) {
                Ok(b) if b.is_empty() => break,
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.blocking_send(Err(read_error(&e, &dir)));
                    break;
                }
            };
            let mut records = Vec::with_capacity(batch.len());
            let mut failed = None;
            for r in &batch {
                if remaining == 0 {
                    break;
                }
                match Record::decode(r.data) {
                    Ok(rec) if only.is_some_and(|s| s != rec.stream) => {}
                    Ok(rec) => {
                        remaining -= 1;
                        records.push(StoredRecord {
                            sequence: r.seq,
                            record: Some(rec),
                        });
                    }
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
    Box::pin(ReceiverStream::new(rx))
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
