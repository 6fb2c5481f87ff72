//! Size limits, and how an oversized request is answered.
//!
//! Three limits apply to an append, from the outside in:
//!
//! 1. [`MAX_MESSAGE_BYTES`]: the gRPC message limit. tonic refuses a larger request before
//!    the service sees it, so the daemon never buffers more than this per request.
//! 2. `--max-record-bytes` (default [`DEFAULT_MAX_RECORD_BYTES`]): the largest single
//!    record, checked by the ingest path ([`crate::ingest::batch`]).
//! 3. The engine's batch limit ([`MAX_BATCH_BYTES`]), which a request that passed (1) can
//!    never reach; it only guards the engine.
//!
//! tonic answers (1) with `OUT_OF_RANGE`, but the documented answer for "request too big"
//! is `RESOURCE_EXHAUSTED` (the code gRPC itself uses for exceeded message limits), with a
//! message naming the limit. [`OversizeLayer`] rewrites the status of such responses; the
//! streaming path maps it in the service, where the error surfaces as a stream item.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::{Code, Status};
use tower::{Layer, Service};

/// Largest gRPC request the daemon decodes: 64 MiB. Large enough for a batch of many
/// default-sized (4 MiB) records, small enough that a buggy client cannot make the daemon
/// buffer gigabytes per request.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Default of `--max-record-bytes`: 4 MiB, the usual gRPC default message size, so every
/// stored record can be replayed in a default-sized gRPC message.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;

/// The engine's per-append limit. The engine adds 4 bytes per record while protobuf needs
/// at least 2 per record in the request, so twice the message limit can never be reached
/// by a request tonic accepted; the engine check stays as a guard only.
pub const MAX_BATCH_BYTES: u64 = 2 * MAX_MESSAGE_BYTES as u64;

/// The status for a request above [`MAX_MESSAGE_BYTES`], given tonic's decode error.
pub fn oversized_request_status(tonic_message: &str) -> Status {
    let found = tonic_message
        .split("found ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    let msg = match found {
        Some(n) => format!(
            "request of {n} bytes exceeds the gRPC message limit of {MAX_MESSAGE_BYTES} bytes (64 MiB); split the batch into smaller appends"
        ),
        None => format!(
            "request exceeds the gRPC message limit of {MAX_MESSAGE_BYTES} bytes (64 MiB); split the batch into smaller appends"
        ),
    };
    Status::resource_exhausted(msg)
}

/// True for tonic's "decoded message length too large" error.
pub fn is_oversized_decode_error(s: &Status) -> bool {
    s.code() == Code::OutOfRange && s.message().contains("message length too large")
}

/// Tower layer that turns tonic's `OUT_OF_RANGE` "message too large" answers into
/// `RESOURCE_EXHAUSTED` naming the limit. Only trailers-only responses (status in the
/// headers) are rewritten: that is how tonic answers a unary request it could not decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct OversizeLayer;

impl<S> Layer<S> for OversizeLayer {
    type Service = Oversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Oversize { inner }
    }
}

/// The service of [`OversizeLayer`].
#[derive(Debug, Clone)]
pub struct Oversize<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Oversize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            rewrite_oversized(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Rewrites the `grpc-status`/`grpc-message` headers of an oversized-request answer.
pub fn rewrite_oversized(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if !is_oversized_decode_error(&status) {
        return;
    }
    let replacement = oversized_request_status(status.message());
    let mut fresh = http::HeaderMap::new();
    if replacement.add_header(&mut fresh).is_ok() {
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        for (name, value) in fresh.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_answers_become_resource_exhausted() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
        );
        let mut headers = http::HeaderMap::new();
        tonic_says.add_header(&mut headers).unwrap();
        rewrite_oversized(&mut headers);
        let s = Status::from_header_map(&headers).unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("70000000"), "{}", s.message());
        assert!(s.message().contains("67108864"), "{}", s.message());
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let mut headers = http::HeaderMap::new();
        Status::out_of_range("something else")
            .add_header(&mut headers)
            .unwrap();
        rewrite_oversized(&mut headers);
        assert_eq!(
            Status::from_header_map(&headers).unwrap().code(),
            Code::OutOfRange
        );
    }
}
