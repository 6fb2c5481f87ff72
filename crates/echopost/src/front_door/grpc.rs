//! A captured unary gRPC call (`--accept-grpc`).
//!
//! The call is received with tonic's own server machinery over an opaque-bytes codec, so
//! message framing, `grpc-encoding` (gzip, deflate and zstd are accepted; anything else is
//! `UNIMPLEMENTED`, as tonic answers it) and the message size limit are tonic's. Stored:
//! `route` = the method path, `headers` = the metadata without the framing and transport
//! keys ([`SKIPPED_METADATA`], every `grpc-*` key, the hop-by-hop ones), `payload` = the
//! request message, decompressed. Answered OK with an empty response message once durable.
//!
//! Whether a method is unary is written only in the application's `.proto`, which the
//! daemon does not have; on the wire a call is unary when the client sends exactly one
//! message and half-closes. A call that sends a second message (client or bidirectional
//! streaming), or none, is answered `UNIMPLEMENTED` and nothing is stored. A
//! server-streaming call looks like a unary one on the wire and is captured as one; its
//! client sees an empty stream.

use std::sync::Arc;

use bytes::Bytes;
use tonic::codec::{CompressionEncoding, Streaming};
use tonic::{Code, Status};

use super::capture::{Capture, Refusal, record_headers};
use crate::replay::RawCodec;

/// Metadata keys that belong to the call's framing, not to the application; with every
/// `grpc-*` key (`grpc-timeout`, `grpc-encoding`, `grpc-accept-encoding`, …) they are not
/// stored. `user-agent` is the application's and is kept.
pub const SKIPPED_METADATA: &[&str] = &["content-type", "content-encoding", "accept-encoding"];

/// Answers one captured call: stores it and says OK, or says why not.
pub async fn capture_call(
    capture: Arc<Capture>,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let route = req.uri().path().to_owned();
    let headers = match record_headers(req.headers(), |n| {
        n.starts_with("grpc-") || SKIPPED_METADATA.contains(&n)
    }) {
        Ok(h) => h,
        Err(e) => {
            return Status::invalid_argument(format!("{e}; nothing was stored")).into_http();
        }
    };
    let limit = capture.max_record_bytes();
    let svc = tower::service_fn(move |call: tonic::Request<Streaming<Bytes>>| {
        let capture = Arc::clone(&capture);
        let route = route.clone();
        let headers = headers.clone();
        async move {
            let mut messages = call.into_inner();
            let payload = match messages.message().await.map_err(|s| oversized(s, limit))? {
                Some(m) => m,
                None => {
                    return Err(Status::unimplemented(format!(
                        "{route}: the call sent no request message; echopost captures unary calls only (exactly one request message)"
                    )));
                }
            };
            if messages
                .message()
                .await
                .map_err(|s| oversized(s, limit))?
                .is_some()
            {
                return Err(Status::unimplemented(format!(
                    "{route}: a streaming call (more than one request message); echopost captures unary calls only, nothing was stored"
                )));
            }
            match capture.store(route, headers, payload).await {
                Ok(_) => Ok(tonic::Response::new(Bytes::new())),
                Err(Refusal::Ingest(s)) => Err(s),
                Err(r @ Refusal::TooLarge { .. }) => Err(Status::resource_exhausted(r.to_string())),
                Err(r @ Refusal::Invalid(_)) => Err(Status::invalid_argument(r.to_string())),
            }
        }
    });
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(limit);
    grpc.client_streaming(svc, req).await
}

/// tonic's "message too large" (`OUT_OF_RANGE`) as `RESOURCE_EXHAUSTED` naming
/// `--max-record-bytes`, the code gRPC uses for exceeded message limits.
fn oversized(s: Status, limit: usize) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("too large") {
        Status::resource_exhausted(format!(
            "the request message is larger than --max-record-bytes ({limit} bytes); nothing was stored"
        ))
    } else {
        s
    }
}
