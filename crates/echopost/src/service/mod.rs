//! The `echopost.v1.EchoPost` gRPC service, one file per RPC.
//!
//! | RPC | file | what it reaches |
//! |---|---|---|
//! | `Append` | here (one line) | [`crate::ingest::Ingest`] |
//! | `AppendStream` | [`append_stream`] | [`crate::ingest::Ingest`], pipelined |
//! | `Read` | [`read`] | the engine's reader |
//! | `Status` | [`status`] | engine figures + replay progress ([`StatusReporter`]) |
//! | `ListStreams`, `Peek` | [`streams`] | the stream tables ([`crate::streams`]) and the reader |
//!
//! This layer is thin on purpose: it turns calls into calls on the ingest path, the log
//! and the status reporter, and their results into responses. It sits beside `ingest/`
//! rather than inside it because most of its RPCs (`Read`, `Status`, `ListStreams`,
//! `Peek`) are not ingest.

pub mod append_stream;
pub mod read;
pub mod status;
pub mod streams;

use std::pin::Pin;
use std::sync::Arc;

use echopost_proto::ingest::echo_post_server::EchoPost;
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::{
    AppendResponse, ListStreamsRequest, ListStreamsResponse, PeekRequest, PeekResponse,
    ReadRequest, ReadResponse, StatusRequest, StatusResponse,
};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::Ingest;
pub use status::{StaticInfo, StatusReporter};

/// A streamed response.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC service handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct EchoPostService {
    ingest: Arc<Ingest>,
    status: Arc<StatusReporter>,
    /// Becomes true when the daemon has decided to exit: open streams end with
    /// `UNAVAILABLE`, reads stop.
    shutdown: watch::Receiver<bool>,
}

impl EchoPostService {
    /// The service over the ingest path and the status reporter.
    pub fn new(
        ingest: Arc<Ingest>,
        status: Arc<StatusReporter>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        EchoPostService {
            ingest,
            status,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl EchoPost for EchoPostService {
    async fn append(
        &self,
        request: Request<RawAppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        self.ingest
            .append(request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendStreamStream = ResponseStream<AppendResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<RawAppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Ok(Response::new(append_stream::serve(
            Arc::clone(&self.ingest),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.status.status().await.map(Response::new)
    }

    type ReadStream = ResponseStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        Ok(Response::new(read::serve(
            Arc::clone(self.ingest.log()),
            request.into_inner(),
            self.shutdown.clone(),
            self.status.dir().to_owned(),
        )))
    }

    async fn list_streams(
        &self,
        _request: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        streams::list(
            Arc::clone(self.ingest.log()),
            Arc::clone(self.ingest.streams()),
            self.ingest.log().dir().to_path_buf(),
        )
        .await
        .map(Response::new)
    }

    async fn peek(&self, request: Request<PeekRequest>) -> Result<Response<PeekResponse>, Status> {
        streams::peek(
            Arc::clone(self.ingest.log()),
            Arc::clone(self.ingest.streams()),
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }
}
