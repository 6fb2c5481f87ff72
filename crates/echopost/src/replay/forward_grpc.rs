//! The `forward` sink for `grpc://` and `grpcs://` upstreams: each record is replayed as
//! the unary call the application would have made.
//!
//! `route` is the full method path (`/pkg.Service/Method`), `payload` the encoded request
//! message, sent as is through a pass-through codec (EchoPost needs no `.proto` of the
//! application), and `headers` become metadata, values verbatim (so a `-bin` key must hold
//! the base64 wire form, as it was on the wire). Headers that belong to the gRPC/HTTP/2
//! framing (`content-type`, `te`, every `grpc-*` key such as `grpc-timeout`, and the
//! connection-specific ones) are not copied: the client sets them for the new call, and HTTP/2 forbids the
//! connection-specific ones. `--upstream-header`s are set last and replace a record header
//! of the same name. The response message is read and ignored; the status decides.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use echopost_proto::v1::Record;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::classify::Failure;

const SKIPPED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Sends and receives messages as opaque bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// Whether a record with this route and these headers can be replayed as a gRPC call: the
/// rules [`GrpcForwarder::build`] applies, run by ingest at append time (a record that
/// could never be sent is refused, not dead-lettered later). Metadata values of keys
/// other than `-bin` ones must be printable ASCII (the gRPC HTTP/2 protocol's
/// `ASCII-Value`, 0x20–0x7E); binary values go under a `-bin` key, base64-encoded.
pub(crate) fn check(
    route: &str,
    headers: &std::collections::HashMap<String, String>,
) -> Result<(), String> {
    method_path(route)?;
    for (name, value) in headers {
        metadata(name, value)?;
    }
    Ok(())
}

/// `"/pkg.Service/Method"` as a request path.
fn method_path(route: &str) -> Result<PathAndQuery, String> {
    let trimmed = route.trim();
    let valid = trimmed
        .strip_prefix('/')
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(svc, method)| {
            !svc.is_empty() && !method.is_empty() && !method.contains('/')
        });
    if !valid {
        return Err(format!(
            "route {route:?} is not a gRPC method path \"/pkg.Service/Method\""
        ));
    }
    let path = PathAndQuery::try_from(trimmed).map_err(|e| format!("route {route:?}: {e}"))?;
    if path.query().is_some() {
        return Err(format!("route {route:?}: a gRPC method path has no query"));
    }
    Ok(path)
}

/// A record header as call metadata, `None` for one the client sets itself, or why it
/// cannot be metadata.
fn metadata(name: &str, value: &str) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("metadata key {name:?} is not valid"))?;
    if SKIPPED_HEADERS.contains(&n.as_str()) || n.as_str().starts_with("grpc-") {
        return Ok(None);
    }
    if !n.as_str().ends_with("-bin") && !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(format!(
            "value of metadata {name:?} is not printable ASCII (gRPC carries other bytes only under a \"-bin\" key, base64-encoded)"
        ));
    }
    let v = HeaderValue::from_str(value)
        .map_err(|_| format!("value of metadata {name:?} is not valid"))?;
    Ok(Some((n, v)))
}

/// Replays records as raw unary gRPC calls.
#[derive(Clone)]
pub(crate) struct GrpcForwarder {
    grpc: tonic::client::Grpc<Channel>,
    extra: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl GrpcForwarder {
    pub(crate) fn new(
        channel: Channel,
        extra: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Self {
        GrpcForwarder {
            grpc: tonic::client::Grpc::new(channel),
            extra,
            timeout,
        }
    }

    /// The method path and metadata for `record`, or why none can be built (permanent;
    /// ingest refuses such records with the same rules, see [`check`]).
    pub(crate) fn build(&self, record: &Record) -> Result<(PathAndQuery, MetadataMap), String> {
        let path = method_path(&record.route)?;
        let mut headers = HeaderMap::new();
        let mut names: Vec<&String> = record.headers.keys().collect();
        names.sort();
        for name in names {
            if let Some((n, v)) = metadata(name, &record.headers[name])? {
                headers.append(n, v);
            }
        }
        for (n, v) in &self.extra {
            headers.insert(n.clone(), v.clone());
        }
        Ok((path, MetadataMap::from_headers(headers)))
    }

    /// Calls the record's method with its payload; OK is success.
    pub(crate) async fn send(&mut self, record: &Record) -> Result<(), Failure> {
        let (path, metadata) = self.build(record).map_err(Failure::unsendable)?;
        let what = path.to_string();
        let payload = Bytes::from(record.payload.clone());
        let timeout = self.timeout;
        let call = async {
            self.grpc
                .ready()
                .await
                .map_err(|e| Failure::transport(format!("connection error: {e}")))?;
            let mut req = tonic::Request::new(payload);
            *req.metadata_mut() = metadata;
            req.set_timeout(timeout);
            self.grpc
                .unary::<_, Bytes, _>(req, path, RawCodec)
                .await
                .map(|_| ())
                .map_err(|s| {
                    let mut f = Failure::from_status(&s);
                    f.reason = format!("{what}: {}", f.reason);
                    f
                })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Failure::timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> GrpcForwarder {
        let ch = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        GrpcForwarder::new(
            ch,
            vec![(
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer new"),
            )],
            Duration::from_secs(1),
        )
    }

    fn record(route: &str, headers: &[(&str, &str)]) -> Record {
        Record {
            route: route.into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn builds_path_and_metadata() {
        let f = fwd();
        let (path, md) = f
            .build(&record(
                "/shop.v1.Orders/Create",
                &[
                    ("x-tenant", "t1"),
                    ("authorization", "Bearer stale"),
                    ("grpc-timeout", "1S"),
                    ("content-type", "application/grpc"),
                    ("trace-bin", "AAEC"),
                ],
            ))
            .unwrap();
        assert_eq!(path.as_str(), "/shop.v1.Orders/Create");
        let h = md.into_headers();
        assert_eq!(h["x-tenant"], "t1");
        assert_eq!(h["authorization"], "Bearer new");
        assert_eq!(h["trace-bin"], "AAEC");
        assert!(h.get("grpc-timeout").is_none());
        assert!(h.get("content-type").is_none());
    }

    #[tokio::test]
    async fn bad_routes_are_reported() {
        let f = fwd();
        for route in [
            "",
            "shop.v1.Orders/Create",
            "/shop.v1.Orders",
            "/shop.v1.Orders/",
            "//Create",
            "/a/b/c",
            "/a/b?x=1",
            "POST /a/b",
        ] {
            assert!(f.build(&record(route, &[])).is_err(), "{route:?}");
        }
        assert!(f.build(&record("/a/b", &[("Bad Key", "v")])).is_err());
    }
}
