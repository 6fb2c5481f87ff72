//! `ListStreams` and `Peek` (issue 14): what the stream tables say, with the backlog
//! figures from their per-block summaries (see [`crate::streams::backlog`]).

use std::path::PathBuf;
use std::sync::Arc;

use echopost_log::Log;
use echopost_proto::v1::{ListStreamsResponse, PeekRequest, PeekResponse, Record, StoredRecord};
use prost::Message;
use tonic::Status;

use crate::streams::{Streams, backlog};

/// Every stream with its version, backlog and dead letters, sorted by name, on the
/// blocking pool: the backlog index (at most one block read) and one pass over the
/// dead-letter log.
pub(super) async fn list(
    log: Arc<Log>,
    streams: Arc<Streams>,
    dir: PathBuf,
) -> Result<ListStreamsResponse, Status> {
    tokio::task::spawn_blocking(move || {
        let backlog = backlog::figures(&log, &streams).map_err(|e| storage(&e))?;
        let dead = backlog::dead_letters(&dir).map_err(|e| storage(&e))?;
        let tables = streams.lock();
        Ok(ListStreamsResponse {
            streams: backlog::stream_infos(&tables, &backlog, &dead),
        })
    })
    .await
    .map_err(|e| Status::internal(format!("the ListStreams task failed: {e}")))?
}

/// The newest buffered record of a stream: the one at its newest sequence, unless that
/// was delivered (then every older one of the stream was too: delivery is in order).
pub(super) async fn peek(
    log: Arc<Log>,
    streams: Arc<Streams>,
    req: PeekRequest,
) -> Result<PeekResponse, Status> {
    let Some(s) = streams.lock().streams.get(&req.stream).copied() else {
        return Err(Status::not_found(format!(
            "stream {:?} has no records",
            req.stream
        )));
    };
    tokio::task::spawn_blocking(move || {
        let gone = || {
            Status::not_found(format!(
                "stream {:?} has no buffered records (version {}: all delivered)",
                req.stream, s.version
            ))
        };
        if s.last_seq <= log.stats().acked {
            return Err(gone());
        }
        let mut reader = log.reader(s.last_seq);
        let batch = reader.next_batch(1, 1).map_err(|e| storage(&e))?;
        let Some(r) = batch.into_iter().next().filter(|r| r.seq == s.last_seq) else {
            return Err(gone());
        };
        let record = Record::decode(&r.data[..]).map_err(|e| {
            Status::data_loss(format!(
                "stored record {} is not a valid echopost.v1.Record: {e}",
                r.seq
            ))
        })?;
        Ok(PeekResponse {
            record: Some(StoredRecord {
                sequence: r.seq,
                record: Some(record),
            }),
            stream_version: s.version,
        })
    })
    .await
    .map_err(|e| Status::internal(format!("the Peek task failed: {e}")))?
}

fn storage(e: &echopost_log::Error) -> Status {
    match e {
        echopost_log::Error::Corruption(_) => Status::data_loss(e.to_string()),
        other => Status::unavailable(format!("reading the log failed: {other}")),
    }
}
