//! The load generator's side of the wire: gRPC over one HTTP/2 connection per
//! [`WireConn`], with requests encoded once up front.
//!
//! # Why not the client library
//! The bench shares the machine's CPUs with the daemon it measures, so every cycle the
//! load generator spends is a cycle the daemon does not get. `echopost-client` goes
//! through tonic's `Channel` (a tower buffer task in front of a reconnecting hyper
//! client) and re-encodes the same protobuf message for every append. Here each
//! connection is a bare hyper HTTP/2 client under tonic's gRPC framing, and each
//! producer's `AppendRequest` is encoded once, so an append costs the generator one
//! copy of those bytes into the HTTP/2 frame. The daemon sees the same method paths,
//! the same protobuf message bytes and gRPC framing as from the client library (the
//! HTTP/2 headers differ slightly: no `user-agent`), and every append is still
//! answered only once it is durable. Like the client library, connecting and each call
//! have time limits, so a daemon that stops answering fails the run instead of
//! hanging it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use echopost_client::proto::{AppendRequest, AppendResponse};
use http::uri::PathAndQuery;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::ingest::limits::MAX_MESSAGE_BYTES;

const APPEND: &str = "/echopost.v1.EchoPost/Append";
/// Connecting and the HTTP/2 handshake, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One call (an `Append` until its acknowledgement, or opening an `AppendStream`), at
/// most: far above any durable append, short enough that a stuck daemon ends the run.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const APPEND_STREAM: &str = "/echopost.v1.EchoPost/AppendStream";
/// The application service `--front-door` calls (the daemon captures it with
/// `--accept-grpc`), and its method.
pub const FRONT_DOOR_SERVICE: &str = "bench.v1.Bench";
const FRONT_DOOR_METHOD: &str = "/bench.v1.Bench/Send";

/// An `AppendRequest` already in protobuf form; encoding it copies the bytes.
#[derive(Debug, Clone, Default)]
pub struct PreEncoded(Bytes);

impl PreEncoded {
    pub fn new(request: &AppendRequest) -> PreEncoded {
        PreEncoded(Bytes::from(request.encode_to_vec()))
    }
}

impl Message for PreEncoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent, never received: nothing to keep.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// One HTTP/2 connection to the daemon's socket.
#[derive(Clone)]
pub struct WireConn {
    grpc: tonic::client::Grpc<H2>,
}

impl WireConn {
    pub async fn connect(socket: &Path) -> Result<WireConn, String> {
        let handshake = async {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake::<_, Body>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP/2 handshake with {} failed: {e}", socket.display()))
        };
        let (send, conn) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                format!(
                    "{} did not answer within {}s",
                    socket.display(),
                    CONNECT_TIMEOUT.as_secs()
                )
            })??;
        tokio::spawn(async move {
            // Ends when every handle is dropped or the daemon closes the connection;
            // calls in flight then fail on their own.
            let _ = conn.await;
        });
        let origin = http::Uri::from_static("http://localhost");
        let grpc = tonic::client::Grpc::with_origin(H2(send), origin)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(WireConn { grpc })
    }

    /// One unary `Append`; returns when the daemon acknowledged it (durable).
    pub async fn append(&mut self, request: PreEncoded) -> Result<AppendResponse, Status> {
        within_call_timeout(async {
            self.ready().await?;
            self.grpc
                .unary(
                    Request::new(request),
                    PathAndQuery::from_static(APPEND),
                    codec(),
                )
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// One unary call to [`FRONT_DOOR_METHOD`] carrying `message` as its request, as an
    /// application's own client sends it; returns when the daemon answered (the record is
    /// durable).
    pub async fn front_door_call(&mut self, message: Bytes) -> Result<(), Status> {
        within_call_timeout(async {
            self.ready().await?;
            self.grpc
                .unary(
                    Request::new(message),
                    PathAndQuery::from_static(FRONT_DOOR_METHOD),
                    crate::replay::RawCodec,
                )
                .await
                .map(|_| ())
        })
        .await
    }

    /// Opens an `AppendStream` fed by `requests`.
    pub async fn append_stream(
        &mut self,
        requests: impl Stream<Item = PreEncoded> + Send + 'static,
    ) -> Result<Streaming<AppendResponse>, Status> {
        within_call_timeout(async {
            self.ready().await?;
            self.grpc
                .streaming(
                    Request::new(requests),
                    PathAndQuery::from_static(APPEND_STREAM),
                    codec(),
                )
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the connection to the daemon is gone: {e}")))
    }
}

fn codec() -> ProstCodec<PreEncoded, AppendResponse> {
    ProstCodec::default()
}

async fn within_call_timeout<T>(
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "the daemon did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))
        })
}

/// hyper's HTTP/2 request sender as the tower service tonic's gRPC client drives.
#[derive(Clone)]
struct H2(SendRequest<Body>);

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower::Service<http::Request<Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_client::Record;

    #[test]
    fn a_pre_encoded_request_is_sent_as_the_request_itself() {
        let request = AppendRequest {
            records: vec![
                Record {
                    stream: "bench".into(),
                    payload: vec![7; 300],
                    ..Record::default()
                },
                Record {
                    id: "x".into(),
                    payload: vec![1, 2, 3],
                    ..Record::default()
                },
            ],
            ..AppendRequest::default()
        };
        let pre = PreEncoded::new(&request);
        assert_eq!(pre.encoded_len(), request.encoded_len());
        let wire = pre.encode_to_vec();
        assert_eq!(wire, request.encode_to_vec());
        assert_eq!(AppendRequest::decode(wire.as_slice()).unwrap(), request);
    }
}
