//! The RPC stack's ceiling on this machine: serves `echopost.v1.EchoPost` on a UNIX
//! socket with appends that store nothing and are answered at once, so
//! `echopost bench --socket PATH --no-drain` against it measures what tonic, hyper and
//! the kernel cost per call (server and load generator together), without the log.
//! It decodes requests as the daemon does (each record's bytes split out of the message,
//! not decoded), so the daemon's own figures read against these show what checking and
//! storing records adds.
//!
//! `cargo run --release --example rpc_ceiling -- /tmp/ceiling.sock`

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use echopost_proto::ingest::echo_post_server::{EchoPost, EchoPostServer};
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::{
    AppendResponse, ListStreamsRequest, ListStreamsResponse, PeekRequest, PeekResponse,
    ReadRequest, ReadResponse, StatusRequest, StatusResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct NoStorage {
    next: Arc<AtomicU64>,
}

/// Hands out `n` sequence numbers, as the daemon would, without storing anything.
fn answer(next: &AtomicU64, n: u64) -> AppendResponse {
    let first = next.fetch_add(n, Ordering::Relaxed) + 1;
    AppendResponse {
        first_sequence: first,
        last_sequence: first + n.saturating_sub(1),
        ..AppendResponse::default()
    }
}

type Resp<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EchoPost for NoStorage {
    async fn append(
        &self,
        r: Request<RawAppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        Ok(Response::new(answer(
            &self.next,
            r.get_ref().records.len() as u64,
        )))
    }

    type AppendStreamStream = Resp<AppendResponse>;
    async fn append_stream(
        &self,
        r: Request<Streaming<RawAppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let next = Arc::clone(&self.next);
        let answers = r
            .into_inner()
            .map(move |req| req.map(|req| answer(&next, req.records.len() as u64)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            pid: std::process::id(),
            dir: std::env::temp_dir().display().to_string(),
            sync_policy: "none (rpc ceiling: nothing is stored)".into(),
            version: "rpc-ceiling".into(),
            ..StatusResponse::default()
        }))
    }

    type ReadStream = Resp<ReadResponse>;
    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        Err(Status::unimplemented("nothing is stored"))
    }

    async fn list_streams(
        &self,
        _: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        Ok(Response::new(ListStreamsResponse::default()))
    }

    async fn peek(&self, _: Request<PeekRequest>) -> Result<Response<PeekResponse>, Status> {
        Err(Status::not_found("nothing is stored"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: rpc_ceiling SOCKET")?;
    // A socket left by an earlier run is replaced; anything else at that path is not.
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
    {
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    eprintln!("rpc_ceiling: serving on {path}, pid {}", std::process::id());
    tonic::transport::Server::builder()
        .add_service(EchoPostServer::new(NoStorage::default()))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
