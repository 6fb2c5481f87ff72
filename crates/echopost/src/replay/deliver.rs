//! The `deliver` sink: batches to `echopost.v1.Sink/Deliver`.
//!
//! The request is written straight from the stored bytes: a `StoredRecord` is field 1
//! (varint sequence) and field 2 (the `Record`, length-delimited), and the engine hands
//! out exactly the encoded `Record`, so each record is copied once into the outgoing
//! buffer instead of being decoded and re-encoded (the feed has checked it). The encoding
//! is byte-for-byte what prost produces for the same `DeliverRequest` (see the tests), so
//! any gRPC server decodes it normally.
//!
//! The feed builds that buffer, gRPC message framing included, on the blocking pool while
//! the previous batch is in flight. The call itself is a plain unary gRPC exchange over
//! the tonic [`Channel`] (HTTP/2 POST, `application/grpc`, status from the trailers)
//! whose body *is* that buffer: going through tonic's codec layer would copy every batch
//! once more into a freshly allocated buffer on the critical path, which measurably cost
//! drain throughput (see `benches/drain.rs`). Everything else (connection management,
//! TLS, HTTP/2, user agent, origin) is tonic's.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

use super::classify::Failure;
use super::feed::Item;

/// The method called.
pub(crate) const DELIVER_PATH: &str = "/echopost.v1.Sink/Deliver";

/// Bytes of the gRPC message prefix (compression flag, big-endian length).
pub(crate) const GRPC_PREFIX: usize = 5;

/// One `DeliverRequest`: the records (kept for splitting and dead letters) and the
/// request already encoded and framed. Shared, so that a retry resends it as is.
#[derive(Debug)]
pub(crate) struct DeliverBatch {
    pub items: Vec<Item>,
    framed: Bytes,
}

impl DeliverBatch {
    /// Encodes `items` with `source`.
    pub(crate) fn new(items: Vec<Item>, source: &str) -> Self {
        let framed = encode(&items, source, BytesMut::new());
        DeliverBatch { items, framed }
    }

    /// `framed` must be `encode(&items, source, _)`.
    pub(crate) fn from_parts(items: Vec<Item>, framed: Bytes) -> Self {
        DeliverBatch { items, framed }
    }

    /// Size of the `DeliverRequest` message.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        self.framed.len() - GRPC_PREFIX
    }

    /// Takes the batch apart after delivery: the records, and the buffer for reuse.
    pub(crate) fn into_parts(self) -> (Vec<Item>, Option<BytesMut>) {
        (self.items, self.framed.try_into_mut().ok())
    }
}

/// The gRPC-framed, encoded `DeliverRequest` of `items` and `source`, written into
/// `buf` (cleared; reused when large enough, which saves page faults on every batch).
pub(crate) fn encode(items: &[Item], source: &str, mut buf: BytesMut) -> Bytes {
    let len = items.iter().map(item_encoded_len).sum::<usize>() + source_len(source);
    begin(&mut buf, len);
    for item in items {
        encode_item(&mut buf, item);
    }
    finish(buf, source)
}

/// Starts a framed request in `buf`: clears it, makes room for `len` more bytes, and
/// writes the gRPC prefix (its length is filled in by [`finish`]).
pub(crate) fn begin(buf: &mut BytesMut, len: usize) {
    buf.clear();
    buf.reserve(GRPC_PREFIX + len);
    buf.put_bytes(0, GRPC_PREFIX);
}

/// Ends a request started by [`begin`]: appends `source` and fills in the length.
pub(crate) fn finish(mut buf: BytesMut, source: &str) -> Bytes {
    if !source.is_empty() {
        buf.put_u8(0x12); // DeliverRequest.source (2, LEN)
        put_varint(&mut buf, source.len() as u64);
        buf.put_slice(source.as_bytes());
    }
    // The feed bounds batches far below 4 GiB; a larger one would be refused anyway.
    let len = u32::try_from(buf.len() - GRPC_PREFIX).unwrap_or(u32::MAX);
    buf[0] = 0; // not compressed
    buf[1..GRPC_PREFIX].copy_from_slice(&len.to_be_bytes());
    buf.freeze()
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits (1 for zero).
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn stored_record_len(item: &Item) -> usize {
    1 + varint_len(item.seq) + 1 + varint_len(item.data.len() as u64) + item.data.len()
}

/// Bytes `item` adds to a `DeliverRequest` (its `records` entry).
pub(crate) fn item_encoded_len(item: &Item) -> usize {
    let inner = stored_record_len(item);
    1 + varint_len(inner as u64) + inner
}

/// Bytes of the `source` field (omitted when empty, as proto3 does).
pub(crate) fn source_len(source: &str) -> usize {
    if source.is_empty() {
        0
    } else {
        1 + varint_len(source.len() as u64) + source.len()
    }
}

fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// Longest per-record header: three one-byte keys and three varints of at most 10 bytes.
const HEADER_MAX: usize = 3 + 3 * 10;

/// Writes `v` at `buf[at..]`; returns the new position.
#[inline(always)]
fn write_varint(buf: &mut [u8; HEADER_MAX], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        buf[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    buf[at] = v as u8;
    at + 1
}

/// Appends one `records` entry: a small header built on the stack, then the stored bytes.
#[inline]
pub(crate) fn encode_item(dst: &mut impl BufMut, item: &Item) {
    let mut hdr = [0u8; HEADER_MAX];
    // records (1, LEN), length; sequence (1, VARINT), value; record (2, LEN), length.
    hdr[0] = 0x0a;
    let mut at = write_varint(&mut hdr, 1, stored_record_len(item) as u64);
    hdr[at] = 0x08;
    at = write_varint(&mut hdr, at + 1, item.seq);
    hdr[at] = 0x12;
    at = write_varint(&mut hdr, at + 1, item.data.len() as u64);
    dst.put_slice(&hdr[..at]);
    dst.put_slice(&item.data);
}

/// Writes `items` and `source` as an encoded `DeliverRequest` (no gRPC framing).
#[cfg(test)]
pub(crate) fn encode_batch(items: &[Item], source: &str, dst: &mut impl BufMut) {
    for item in items {
        encode_item(dst, item);
    }
    if !source.is_empty() {
        dst.put_u8(0x12);
        put_varint(dst, source.len() as u64);
        dst.put_slice(source.as_bytes());
    }
}

/// Sends batches to `Sink/Deliver` over one HTTP/2 channel.
#[derive(Clone)]
pub(crate) struct DeliverSink {
    channel: Channel,
    /// `--upstream-header`s, validated.
    metadata: HeaderMap,
    timeout: Duration,
}

impl DeliverSink {
    pub(crate) fn new(channel: Channel, metadata: HeaderMap, timeout: Duration) -> Self {
        DeliverSink {
            channel,
            metadata,
            timeout,
        }
    }

    /// OK means the whole batch was accepted.
    pub(crate) async fn send(&mut self, batch: &Arc<DeliverBatch>) -> Result<(), Failure> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.call(batch.framed.clone())).await {
            Ok(r) => r,
            Err(_) => Err(Failure::timeout(timeout)),
        }
    }

    async fn call(&mut self, framed: Bytes) -> Result<(), Failure> {
        let mut req = http::Request::new(tonic::body::Body::new(Full::new(framed)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = Uri::from_static(DELIVER_PATH);
        *req.version_mut() = http::Version::HTTP_2;
        let h = req.headers_mut();
        h.extend(self.metadata.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        if let Ok(v) = HeaderValue::from_str(&grpc_timeout(self.timeout)) {
            h.insert("grpc-timeout", v);
        }
        let svc = self
            .channel
            .ready()
            .await
            .map_err(|e| Failure::grpc_transport(&e, self.timeout))?;
        let resp = svc
            .call(req)
            .await
            .map_err(|e| Failure::grpc_transport(&e, self.timeout))?;
        let (parts, body) = resp.into_parts();
        // A trailers-only answer (an error, typically) carries the status in the headers.
        if let Some(status) = grpc_status(&parts.headers) {
            return status;
        }
        if parts.status != http::StatusCode::OK {
            return Err(Failure::from_status(&tonic::Status::new(
                code_of_http_status(parts.status),
                format!("HTTP status {} instead of a gRPC answer", parts.status),
            )));
        }
        let collected = body
            .collect()
            .await
            .map_err(|e| Failure::grpc_transport(&e, self.timeout))?;
        match collected.trailers().and_then(grpc_status) {
            Some(status) => status,
            None => Err(Failure::from_status(&tonic::Status::internal(
                "the answer ended without a grpc-status",
            ))),
        }
    }
}

/// The outcome a `grpc-status` header or trailer announces, if there is one.
fn grpc_status(headers: &HeaderMap) -> Option<Result<(), Failure>> {
    let code = headers.get("grpc-status")?;
    // Only status and message: tonic's parser panics on malformed binary details.
    let mut only = HeaderMap::new();
    only.insert("grpc-status", code.clone());
    if let Some(m) = headers.get("grpc-message") {
        only.insert("grpc-message", m.clone());
    }
    let status = tonic::Status::from_header_map(&only)?;
    Some(if status.code() == tonic::Code::Ok {
        Ok(())
    } else {
        Err(Failure::from_status(&status))
    })
}

/// The gRPC code of an HTTP status without `grpc-status`, as gRPC clients infer it
/// (<https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md>).
fn code_of_http_status(s: http::StatusCode) -> tonic::Code {
    match s.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

/// `grpc-timeout` value: at most 8 digits, in the finest unit that fits.
fn grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{}m", ms.max(1))
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_proto::v1::{DeliverRequest, Record, StoredRecord};
    use prost::Message;

    fn item(seq: u64, payload_len: usize) -> (Item, Record) {
        let r = Record {
            id: format!("r{seq}"),
            payload: vec![7; payload_len],
            ..Default::default()
        };
        (
            Item {
                seq,
                data: r.encode_to_vec().into(),
                payload_len: payload_len as u64,
            },
            r,
        )
    }

    #[test]
    fn encoding_matches_prost() {
        for (seqs, source) in [
            (vec![1u64], "src-1"),
            (vec![127, 128, 16_383, 16_384, u64::MAX], ""),
            ((1..500).collect(), "a-much-longer-source-id-0123456789"),
        ] {
            let mut items = Vec::new();
            let mut expect = DeliverRequest {
                records: Vec::new(),
                source: source.to_string(),
            };
            for (i, seq) in seqs.iter().enumerate() {
                let (it, rec) = item(*seq, (i * 37) % 300);
                items.push(it);
                expect.records.push(StoredRecord {
                    sequence: *seq,
                    record: Some(rec),
                });
            }
            let batch = DeliverBatch::new(items, source);
            let mut out = Vec::new();
            encode_batch(&batch.items, source, &mut out);
            assert_eq!(out, expect.encode_to_vec());
            assert_eq!(batch.encoded_len(), out.len());
            // gRPC framing: uncompressed, big-endian length, then the message.
            assert_eq!(batch.framed[0], 0);
            assert_eq!(
                u32::from_be_bytes(batch.framed[1..5].try_into().unwrap()) as usize,
                out.len()
            );
            assert_eq!(&batch.framed[GRPC_PREFIX..], out.as_slice());
            // A reused buffer gives the same bytes.
            let reused = encode(&batch.items, source, BytesMut::from(&b"leftover"[..]));
            assert_eq!(reused, batch.framed);
            assert_eq!(DeliverRequest::decode(out.as_slice()).unwrap(), expect);
        }
    }

    #[test]
    fn timeouts_and_statuses() {
        assert_eq!(grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        let mut h = HeaderMap::new();
        assert!(grpc_status(&h).is_none());
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(grpc_status(&h), Some(Ok(())));
        h.insert("grpc-status", HeaderValue::from_static("3"));
        h.insert("grpc-message", HeaderValue::from_static("bad%20record"));
        // Malformed binary details must not matter.
        h.insert("grpc-status-details-bin", HeaderValue::from_static("!!!"));
        let f = grpc_status(&h).unwrap().unwrap_err();
        assert_eq!(f.default_class(), super::super::classify::Class::Record);
        assert!(f.reason.contains("bad record"), "{}", f.reason);
        assert_eq!(
            code_of_http_status(http::StatusCode::SERVICE_UNAVAILABLE),
            tonic::Code::Unavailable
        );
        assert_eq!(
            code_of_http_status(http::StatusCode::NOT_FOUND),
            tonic::Code::Unimplemented
        );
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), n, "{v}");
        }
    }
}
