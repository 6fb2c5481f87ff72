//! A captured HTTP request (`--accept-http`): HTTP/1.1 connections on the socket, and
//! HTTP/2 requests that are not gRPC.
//!
//! Stored: `route` = `"METHOD /path?query"`, `headers` = the request's headers without the
//! hop-by-hop ones, `Host` and `Content-Length` (and `Expect`, which hyper has already
//! answered), `payload` = the body, de-chunked by hyper. Answered once durable with
//! `202 Accepted` and `{"first_sequence":N,"last_sequence":N}`.
//!
//! Refusals, each with a JSON body `{"error":"…"}`:
//!
//! | status | when |
//! |---|---|
//! | 400 | a request that cannot be a record or replayed (`INVALID_ARGUMENT` for `Append`) |
//! | 403 | a peer uid that is not allowed (`--allow-uid`) |
//! | 413 | a body, or the whole record, above `--max-record-bytes` |
//! | 503 + `Retry-After` | the quota is full (`--max-disk`; space is freed as replay delivers), or the daemon is stopping or cannot store any more |
//! | 500 | anything else |

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tonic::Code;

use super::capture::{Capture, Refusal, record_headers};
use crate::daemon::peer::PeerInfo;

/// Seconds a client is told to wait (`Retry-After`) when the quota is full: replay frees
/// space as it delivers.
pub const RETRY_AFTER_FULL_SECS: u32 = 5;
/// Seconds a client is told to wait (`Retry-After`) when the daemon is stopping: a service
/// manager starts the next one on the next connection.
pub const RETRY_AFTER_UNAVAILABLE_SECS: u32 = 1;

/// Stores one HTTP request and answers it (see the module documentation).
pub async fn capture_request<B>(capture: &Capture, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(why) = capture.check_peer(req.extensions().get::<PeerInfo>()) {
        return refuse(StatusCode::FORBIDDEN, why.to_string(), None);
    }
    let limit = capture.max_record_bytes();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let Some(n) = declared
        && n > limit as u64
    {
        // A client that sent `Expect: 100-continue` waits for the answer and never sends
        // the body. One that did not is sending it now: the body is read and dropped (up
        // to a bound) before the answer, so that the client reads the 413 instead of
        // losing it to a connection reset while it writes.
        if !expects_continue && n <= DRAIN_MAX_BYTES {
            discard_body(req.into_body()).await;
        }
        return closing(too_large(n, limit));
    }
    let Some(target) = req.uri().path_and_query().map(|p| p.as_str().to_owned()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "a {} request without a path cannot be stored; echopost stores requests to \"/path\"",
                req.method()
            ),
            None,
        );
    };
    if !target.starts_with('/') {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "request target {target:?} is not a path; echopost stores requests to \"/path\""
            ),
            None,
        );
    }
    let route = format!("{} {target}", req.method());
    let headers = match record_headers(req.headers(), |n| n == "expect") {
        Ok(h) => h,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{e}; nothing was stored"),
                None,
            );
        }
    };
    let body = match read_body(req.into_body(), limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return closing(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than --max-record-bytes ({limit} bytes); nothing was stored"
                ),
                None,
            ));
        }
        Err(BodyError::Read(e)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}; nothing was stored"),
                None,
            );
        }
    };
    match capture.store(route, headers, body).await {
        Ok(a) => json(
            StatusCode::ACCEPTED,
            serde_json::json!({"first_sequence": a.first_sequence, "last_sequence": a.last_sequence}),
            None,
        ),
        Err(Refusal::TooLarge { size, limit }) => too_large(size as u64, limit),
        Err(r @ Refusal::Invalid(_)) => refuse(StatusCode::BAD_REQUEST, r.to_string(), None),
        Err(Refusal::Ingest(s)) => {
            let (status, retry) = match s.code() {
                Code::InvalidArgument => (StatusCode::BAD_REQUEST, None),
                Code::PermissionDenied => (StatusCode::FORBIDDEN, None),
                Code::ResourceExhausted => {
                    (StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_AFTER_FULL_SECS))
                }
                Code::Unavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(RETRY_AFTER_UNAVAILABLE_SECS),
                ),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
            };
            refuse(status, s.message().to_owned(), retry)
        }
    }
}

/// Most bytes of a refused body read and dropped before the 413 (see
/// [`capture_request`]); a larger one is refused at once.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Longest time spent dropping a refused body.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

enum BodyError {
    TooLarge,
    Read(String),
}

/// The whole body, if it is at most `limit` bytes. A larger one is read on and dropped
/// (up to [`DRAIN_MAX_BYTES`] in all), so that the client gets to read the answer.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.into().to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                let seen = (buf.len() + data.len()) as u64;
                drop(buf);
                if seen <= DRAIN_MAX_BYTES {
                    discard_body(body).await;
                }
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops what is left of `body`: at most [`DRAIN_MAX_BYTES`], for at most
/// [`DRAIN_TIMEOUT`].
async fn discard_body<B>(body: B)
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DRAIN_MAX_BYTES {
                    break;
                }
            }
        }
    })
    .await;
}

/// `resp` with `Connection: close`: after a refused body the connection is not reused.
fn closing(mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn too_large(size: u64, limit: usize) -> Response<Full<Bytes>> {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request is {size} bytes, above the limit of {limit} bytes set by --max-record-bytes; nothing was stored"
        ),
        None,
    )
}

fn refuse(status: StatusCode, message: String, retry_after: Option<u32>) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }), retry_after)
}

fn json(
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<u32>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(s) = retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}
