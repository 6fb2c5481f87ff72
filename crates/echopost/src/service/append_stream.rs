//! `AppendStream`: many append requests on one call, stored in arrival order.
//!
//! Requests are processed strictly in order (stored in arrival order, one response each,
//! in order). A receiving task reads ahead of the appending task through a bounded queue,
//! limited both in requests ([`STREAM_QUEUE`]) and in bytes ([`STREAM_BYTES_BUDGET`]), so
//! network and disk overlap without unbounded buffering. The first failing request ends
//! the stream with its status; the responses before it stand. A client that disconnects
//! loses only requests it had no response for.

use std::sync::Arc;

use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::AppendResponse;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::ResponseStream;
use crate::ingest::committer::Chain;
use crate::ingest::gate::GateClosed;
use crate::ingest::limits;
use crate::ingest::{Ingest, QueuedAppend};

/// Requests of one `AppendStream` that may be received ahead of the one being stored.
pub const STREAM_QUEUE: usize = 16;
/// Bytes of one `AppendStream` that may be received ahead (a larger single request is
/// still admitted, alone).
pub const STREAM_BYTES_BUDGET: usize = 8 << 20;

/// Serves one `AppendStream` call: spawns the receiver, the queuer and the answerer, and
/// returns the stream of answers. `shutdown` ends the call with `UNAVAILABLE` once the
/// daemon decided to exit.
pub(super) fn serve(
    ingest: Arc<Ingest>,
    mut inbound: Streaming<RawAppendRequest>,
    mut shutdown: watch::Receiver<bool>,
) -> ResponseStream<AppendResponse> {
    let (out_tx, out_rx) = mpsc::channel::<Result<AppendResponse, Status>>(STREAM_QUEUE);
    let (work_tx, mut work_rx) =
        mpsc::channel::<Result<(RawAppendRequest, OwnedSemaphorePermit), Status>>(STREAM_QUEUE);
    let budget = Arc::new(Semaphore::new(STREAM_BYTES_BUDGET));

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
    let (queued_tx, mut queued_rx) = mpsc::channel::<Result<QueuedAppend, Status>>(STREAM_QUEUE);
    let queuer = Arc::clone(&ingest);
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
                    let q = queuer.enqueue(req, Some(chain.clone())).await;
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

    Box::pin(ReceiverStream::new(out_rx))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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
