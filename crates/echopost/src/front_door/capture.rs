//! One captured request → one record, stored through the same ingest path as `Append`.
//!
//! [`Capture::store`] builds the `Record` (`route`, `headers`, `payload`, and the time of
//! receipt as its timestamp, so that its stored size is known before it is stored), checks
//! its size against `--max-record-bytes`, and hands it to [`Ingest::append`]: the quota,
//! the forward-sink check, durability and ordering are exactly those of `Append`. The
//! peer-uid check is the caller's ([`Capture::check_peer`]), because each protocol answers
//! a refused peer its own way.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use echopost_proto::raw::RawAppendRequest;
use echopost_proto::v1::{AppendResponse, Record};
use http::HeaderMap;
use prost::Message as _;
use tonic::Status;

use crate::daemon::peer::{PeerInfo, PeerPolicy, PeerRefused};
use crate::ingest::Ingest;
use crate::ingest::batch::now_unix_nanos;

/// What the front door needs to store a captured request.
#[derive(Debug, Clone)]
pub struct Capture {
    ingest: Arc<Ingest>,
    policy: Arc<PeerPolicy>,
    max_record_bytes: usize,
}

/// Why a captured request was not stored.
#[derive(Debug)]
pub enum Refusal {
    /// The record (payload, route and headers) is larger than `--max-record-bytes`.
    TooLarge {
        /// The record's encoded size in bytes.
        size: usize,
        /// `--max-record-bytes`.
        limit: usize,
    },
    /// The request cannot become a record (e.g. a header value that is not UTF-8).
    Invalid(String),
    /// The ingest path refused it, as it would have refused an `Append`.
    Ingest(Status),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge { size, limit } => write!(
                f,
                "the request is {size} bytes once stored (body, route and headers), above the limit of {limit} bytes set by --max-record-bytes; nothing was stored"
            ),
            Refusal::Invalid(m) => write!(f, "{m}; nothing was stored"),
            Refusal::Ingest(s) => f.write_str(s.message()),
        }
    }
}

impl Capture {
    /// A capture storing through `ingest`, admitting the peers `policy` admits.
    pub fn new(ingest: Arc<Ingest>, policy: Arc<PeerPolicy>, max_record_bytes: usize) -> Capture {
        Capture {
            ingest,
            policy,
            max_record_bytes,
        }
    }

    /// `--max-record-bytes`: no captured payload can be larger.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The peer-uid decision for a request (no [`PeerInfo`]: refused, as in
    /// [`crate::daemon::peer::PeerCheckLayer`]).
    pub fn check_peer(&self, peer: Option<&PeerInfo>) -> Result<(), PeerRefused> {
        self.policy.check(peer.and_then(|p| p.uid))
    }

    /// Stores one record and answers once it is durable (see the module documentation).
    pub async fn store(
        &self,
        route: String,
        headers: HashMap<String, String>,
        payload: Bytes,
    ) -> Result<AppendResponse, Refusal> {
        let record = Record {
            route,
            headers,
            payload: payload.into(),
            timestamp_unix_nanos: now_unix_nanos(),
            ..Record::default()
        };
        let size = record.encoded_len();
        if size > self.max_record_bytes {
            return Err(Refusal::TooLarge {
                size,
                limit: self.max_record_bytes,
            });
        }
        let req = RawAppendRequest::from_records(std::slice::from_ref(&record));
        self.ingest.append(req).await.map_err(Refusal::Ingest)
    }
}

/// Headers every protocol leaves out of a record: they describe one connection or the
/// body's framing on it (RFC 9110 §7.6.1, RFC 9113 §8.2.2), and the replaying client sets
/// its own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
];

/// A request's headers as a record's `headers`, without the hop-by-hop ones, those named
/// in its `Connection` header, and those `skip` names. Repeated fields are joined as
/// HTTP allows (RFC 9110 §5.3: `", "`; `cookie` with `"; "`, RFC 9113 §8.2.3). A value that
/// is not UTF-8 cannot be a record header (a `map<string, string>`) and is refused.
pub fn record_headers(
    headers: &HeaderMap,
    skip: impl Fn(&str) -> bool,
) -> Result<HashMap<String, String>, String> {
    let connection_listed: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let mut out: HashMap<String, String> = HashMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || connection_listed.iter().any(|c| c == n) || skip(n) {
            continue;
        }
        let v = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            format!("the value of header {n:?} is not UTF-8 text; a record's headers are strings")
        })?;
        match out.get_mut(n) {
            Some(joined) => {
                joined.push_str(if n == "cookie" { "; " } else { ", " });
                joined.push_str(v);
            }
            None => {
                out.insert(n.to_owned(), v.to_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_left_out_repeats_joined() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("localhost"));
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.insert("x-skip", HeaderValue::from_static("1"));
        h.insert("user-agent", HeaderValue::from_static("curl/8"));
        let got = record_headers(&h, |n| n == "x-skip").unwrap();
        let mut keys: Vec<&String> = got.keys().collect();
        keys.sort();
        assert_eq!(keys, ["accept", "cookie", "user-agent"]);
        assert_eq!(got["accept"], "a/b, c/d");
        assert_eq!(got["cookie"], "a=1; b=2");
    }

    #[test]
    fn a_value_that_is_not_text_is_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-raw", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        let e = record_headers(&h, |_| false).unwrap_err();
        assert!(e.contains("x-raw"), "{e}");
    }
}
