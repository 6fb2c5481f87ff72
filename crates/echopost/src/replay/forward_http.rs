//! The `forward` sink for `http://` and `https://` upstreams: each record is replayed as
//! the HTTP request the application would have sent.
//!
//! * `route` is `"METHOD /path?query"`; the request goes to the upstream's origin, with
//!   the upstream's base path (if any) in front of `/path`.
//! * `headers` become request headers, except the ones that describe the original
//!   connection or body framing and would be wrong on a new one (`host`, `content-length`,
//!   `transfer-encoding`, `connection`, `keep-alive`, `proxy-connection`, `te`, `upgrade`,
//!   `expect`); the client sets those itself. `--upstream-header`s are set last and
//!   replace a record header of the same name (they carry the operator's current
//!   credentials).
//! * `payload` is the body.
//!
//! A record whose route or headers cannot form a valid request is a permanent failure (it
//! is dead-lettered with the reason), never a silent drop.

use std::time::Duration;

use bytes::Bytes;
use echopost_proto::v1::Record;
use http::header::{DATE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::backoff::parse_retry_after;
use super::classify::Failure;

/// The HTTP/1.1 client shared by forwarding and health probes (keeps connections alive).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most response body bytes read (to reuse the connection and quote in errors).
const MAX_RESPONSE_BODY: usize = 1 << 20;
/// Most characters of a response body quoted in a failure reason.
const MAX_QUOTED: usize = 200;

const SKIPPED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
];

/// `max_idle`: keep-alive connections kept open per host, `--in-flight` (HTTP/1.1 has one
/// request per connection at a time, so a window of N needs N connections; an HTTP/2
/// server multiplexes them all on one).
pub(crate) fn build_client(
    connector: HttpsConnector<HttpConnector>,
    max_idle: usize,
) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle.max(1))
        .build(connector)
}

/// Replays records as HTTP requests.
#[derive(Clone)]
pub(crate) struct HttpForwarder {
    client: HttpClient,
    /// `http(s)://host:port` plus the base path, without a trailing slash.
    prefix: String,
    extra: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl HttpForwarder {
    pub(crate) fn new(
        client: HttpClient,
        prefix: String,
        extra: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Self {
        HttpForwarder {
            client,
            prefix,
            extra,
            timeout,
        }
    }

    /// [`HttpForwarder::build_with`], making the body from `record.payload`.
    #[cfg(test)]
    pub(crate) fn build(&self, record: &Record) -> Result<Request<Full<Bytes>>, String> {
        self.build_with(record, Bytes::from(record.payload.clone()))
    }

    /// The request for `record` with `body` (`record.payload`'s bytes, made once by the
    /// caller, who keeps a cheap clone to resend on a redirect), or why none can be built
    /// (a permanent failure; ingest refuses such records with the same rules, see
    /// [`check`]).
    fn build_with(&self, record: &Record, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let (method, target) = parse_route(&record.route)?;
        let uri: Uri = format!("{}{}", self.prefix, target)
            .parse()
            .map_err(|e| format!("route {:?}: {e}", record.route))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| format!("route {:?}: {e}", record.route))?;
        let headers = req.headers_mut();
        // Sorted, so that repeated replays of a record send identical requests.
        let mut names: Vec<&String> = record.headers.keys().collect();
        names.sort();
        for name in names {
            if let Some((n, v)) = header(name, &record.headers[name])? {
                headers.append(n, v);
            }
        }
        for (n, v) in &self.extra {
            headers.insert(n.clone(), v.clone());
        }
        // A request that may carry a body always says how long it is, 0 included: the
        // HTTP client leaves the header out for an empty body, and servers that require
        // a length answer 411 (RFC 9110 §8.6: a user agent should send it for POST/PUT).
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            req.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(record.payload.len()),
            );
        }
        Ok(req)
    }

    /// Sends one record; 2xx is success. A 307 or 308 to the same origin is followed
    /// (see [`request_following`]).
    pub(crate) async fn send(&self, record: &Record) -> Result<(), Failure> {
        let body = Bytes::from(record.payload.clone());
        let req = self
            .build_with(record, body.clone())
            .map_err(Failure::unsendable)?;
        let what = Sent {
            method: req.method().clone(),
            uri: req.uri().clone(),
        };
        match tokio::time::timeout(self.timeout, request_following(&self.client, req, body)).await {
            Err(_) => Err(Failure::timeout(self.timeout)),
            Ok(Err(e)) => Err(Failure::transport(format!("{what}: {e}"))),
            Ok(Ok((answer, what))) => answer.into_result(&what),
        }
    }
}

/// Whether a record with this route and these headers can be replayed as an HTTP request:
/// the rules [`HttpForwarder::build`] applies, run by ingest at append time so that a
/// record that could never be sent is refused (`INVALID_ARGUMENT`) instead of
/// dead-lettered later. Header values may hold any UTF-8 except control characters
/// (CR, LF, NUL, …; RFC 9110 §5.5): non-ASCII text is sent as its UTF-8 bytes, which
/// HTTP carries as `obs-text`; a server that wants only ASCII must be sent ASCII
/// (percent-encoded, or RFC 8187's `UTF-8''…`) by the application.
pub(crate) fn check(
    route: &str,
    headers: &std::collections::HashMap<String, String>,
) -> Result<(), String> {
    let (_, target) = parse_route(route)?;
    format!("http://localhost{target}")
        .parse::<Uri>()
        .map_err(|e| format!("route {route:?}: {e}"))?;
    for (name, value) in headers {
        header(name, value)?;
    }
    Ok(())
}

/// `"METHOD /path?query"` → the method and the request target.
fn parse_route(route: &str) -> Result<(Method, &str), String> {
    let trimmed = route.trim();
    let (method, target) = trimmed
        .split_once(' ')
        .ok_or_else(|| format!("route {route:?} is not \"METHOD /path\""))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("route {route:?}: bad method"))?;
    let target = target.trim();
    if !target.starts_with('/') {
        return Err(format!("route {route:?}: the path must start with '/'"));
    }
    Ok((method, target))
}

/// A record header as an HTTP header, `None` for one the client sets itself
/// ([`SKIPPED_HEADERS`]), or why it cannot be one.
fn header(name: &str, value: &str) -> Result<Option<(HeaderName, HeaderValue)>, String> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name {name:?} is not valid in HTTP"))?;
    if SKIPPED_HEADERS.contains(&n.as_str()) {
        return Ok(None);
    }
    let v = HeaderValue::from_str(value).map_err(|_| {
        format!("value of header {name:?} is not valid in HTTP (a control character)")
    })?;
    Ok(Some((n, v)))
}

/// A request as failures quote it, `METHOD URI`: kept as parts and formatted only when a
/// reason needs it (not for every request that succeeds).
pub(crate) struct Sent {
    pub method: Method,
    pub uri: Uri,
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

/// What an HTTP server answered.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The `Location` header, for redirects.
    pub location: Option<String>,
    pub body: Bytes,
}

/// Most redirects followed for one request (RFC 9110 §15.4 leaves the limit to the
/// client; browsers and curl use a few dozen, a main server needs one).
pub const MAX_REDIRECTS: usize = 5;

/// Sends `req` (whose body is `body`) and follows `307 Temporary Redirect` and `308
/// Permanent Redirect` to the **same origin** (scheme, host and port), up to
/// [`MAX_REDIRECTS`] hops, with the method, headers and body unchanged (RFC 9110
/// §15.4.8 and §15.4.9: these two forbid changing the method). Anything else is
/// returned as it is: a redirect to another origin is not followed, so the request's
/// credentials (`--upstream-header`s, the record's own `Authorization`) never go to a
/// host the operator did not name, and 301/302/303 would turn a POST into a GET. Those
/// answers are server-level failures whose reason says where the server points
/// (`Answer::into_result`). Returns the last answer and what was sent last.
pub(crate) async fn request_following(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    body: Bytes,
) -> Result<(Answer, Sent), String> {
    let (parts, _) = req.into_parts();
    let mut uri = parts.uri.clone();
    let mut hops = 0;
    loop {
        let mut next = Request::new(Full::new(body.clone()));
        *next.method_mut() = parts.method.clone();
        *next.uri_mut() = uri.clone();
        *next.headers_mut() = parts.headers.clone();
        let answer = request(client, next).await?;
        let sent = |uri: &Uri| Sent {
            method: parts.method.clone(),
            uri: uri.clone(),
        };
        if !matches!(answer.status, 307 | 308) || hops >= MAX_REDIRECTS {
            return Ok((answer, sent(&uri)));
        }
        let Some(target) = answer.location.as_deref().and_then(|l| resolve(&uri, l)) else {
            return Ok((answer, sent(&uri)));
        };
        if !same_origin(&uri, &target) {
            return Ok((answer, sent(&uri)));
        }
        tracing::debug!(from = %uri, to = %target, status = answer.status, "following a redirect");
        uri = target;
        hops += 1;
    }
}

/// `location` resolved against `base`: an absolute URI, or an absolute path (with its
/// query) on `base`'s origin. `None` for anything else (relative paths are not used by
/// servers for redirects in practice and are not resolved here).
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.trim().parse().ok()?;
    if loc.scheme().is_some() && loc.authority().is_some() {
        return Some(loc);
    }
    let path = loc.path_and_query()?;
    if !path.as_str().starts_with('/') {
        return None;
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).ok()
}

/// Same scheme, host and port (the default port counted for an absent one).
fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn port(u: &Uri) -> Option<u16> {
        u.port_u16().or(match u.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        })
    }
    a.scheme() == b.scheme()
        && a.host().map(str::to_ascii_lowercase) == b.host().map(str::to_ascii_lowercase)
        && port(a) == port(b)
}

impl Answer {
    /// Success for 2xx, else a classified failure quoting the start of the body.
    pub(crate) fn into_result(
        self,
        what: &(impl std::fmt::Display + ?Sized),
    ) -> Result<(), Failure> {
        if (200..=299).contains(&self.status) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.body);
        let quoted: String = text.chars().take(MAX_QUOTED).collect();
        let mut reason = if quoted.trim().is_empty() {
            format!("{what}: HTTP {}", self.status)
        } else {
            format!("{what}: HTTP {}: {}", self.status, quoted.trim())
        };
        if (300..=399).contains(&self.status) {
            let to: String = self
                .location
                .as_deref()
                .unwrap_or("nowhere (no Location header)")
                .chars()
                .take(MAX_QUOTED)
                .collect();
            reason.push_str(&format!(
                " (a redirect to {to} that is not followed: only 307/308 to the same origin are; fix --upstream to name where the server now is)"
            ));
        }
        Err(Failure::http(self.status, reason, self.retry_after))
    }
}

/// Sends `req` and reads the answer (body capped at [`MAX_RESPONSE_BODY`]).
pub(crate) async fn request(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, response_time(resp.headers())));
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        location,
        body,
    })
}

/// The "now" a `Retry-After` HTTP-date is measured against: the response's `Date`
/// header (RFC 9110 §10.2.3: the delay is the date minus the time the response was
/// generated, so a clock difference between the two machines does not shorten or lengthen
/// it). The local clock without a usable `Date`.
fn response_time(headers: &http::HeaderMap) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .unwrap_or(now)
}

/// `e` and its sources, so "connection error" says what actually failed.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::classify::Class;

    fn fwd(prefix: &str) -> HttpForwarder {
        let cfg = super::super::tls::client_config(false, None).unwrap();
        let client = build_client(
            super::super::tls::http_connector(cfg, Duration::from_secs(1)),
            1,
        );
        HttpForwarder::new(
            client,
            prefix.to_string(),
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
            payload: b"{\"x\":1}".to_vec(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn builds_the_original_request() {
        let f = fwd("http://127.0.0.1:8080/api");
        let r = record(
            "PUT /v1/items/7?dry=1",
            &[
                ("Content-Type", "application/json"),
                ("x-request-id", "abc"),
                ("authorization", "Bearer stale"),
                ("host", "original.example"),
                ("content-length", "999"),
            ],
        );
        let req = f.build(&r).unwrap();
        assert_eq!(req.method(), Method::PUT);
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:8080/api/v1/items/7?dry=1"
        );
        let h = req.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["authorization"], "Bearer new");
        assert!(h.get("host").is_none());
        // The record's own content-length is not copied; the real length is set.
        assert_eq!(h["content-length"], r.payload.len().to_string().as_str());
    }

    #[test]
    fn bad_routes_and_headers_are_reported() {
        let f = fwd("http://127.0.0.1:8080");
        for route in ["", "POST", "POST v1/x", "P@ST /x", "GET /a b"] {
            assert!(f.build(&record(route, &[])).is_err(), "{route:?}");
        }
        assert!(f.build(&record("GET /x", &[("bad name", "v")])).is_err());
        assert!(f.build(&record("GET /x", &[("n", "line\nbreak")])).is_err());
    }

    #[test]
    fn answers_are_classified() {
        let a = |status, body: &'static str| Answer {
            status,
            retry_after: Some(Duration::from_secs(3)),
            location: None,
            body: Bytes::from_static(body.as_bytes()),
        };
        assert!(a(204, "").into_result("x").is_ok());
        let f = a(429, "slow down").into_result("POST /x").unwrap_err();
        assert_eq!(f.default_class(), Class::Transient);
        assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
        assert!(f.reason.contains("429") && f.reason.contains("slow down"));
        let f = a(422, "bad field").into_result("POST /x").unwrap_err();
        assert_eq!(f.default_class(), Class::Record);
        let f = a(401, "token expired").into_result("POST /x").unwrap_err();
        assert_eq!(f.default_class(), Class::Server);
        let f = a(413, "").into_result("POST /x").unwrap_err();
        assert_eq!(f.default_class(), Class::TooLarge);
    }

    #[test]
    fn only_same_origin_redirect_targets_are_followed() {
        let base: Uri = "http://127.0.0.1:8080/api/orders?x=1".parse().unwrap();
        let t = resolve(&base, "/v2/orders?y=2").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8080/v2/orders?y=2");
        assert!(same_origin(&base, &t));
        for (loc, same) in [
            ("http://127.0.0.1:8080/x", true),
            ("HTTP://127.0.0.1:8080/x", true),
            ("http://localhost:8080/x", false),
            ("http://127.0.0.1:8081/x", false),
            ("https://127.0.0.1:8080/x", false),
        ] {
            let t = resolve(&base, loc).unwrap();
            assert_eq!(same_origin(&base, &t), same, "{loc}");
        }
        let dflt: Uri = "http://h/a".parse().unwrap();
        assert!(same_origin(&dflt, &"http://h:80/b".parse().unwrap()));
        assert!(resolve(&base, "relative/path").is_none());
        assert!(resolve(&base, "").is_none());
        let a = Answer {
            status: 302,
            retry_after: None,
            location: Some("http://elsewhere/x".into()),
            body: Bytes::new(),
        };
        let f = a.into_result("POST http://h/x").unwrap_err();
        assert_eq!(f.default_class(), Class::Server);
        assert!(f.reason.contains("http://elsewhere/x") && f.reason.contains("fix --upstream"));
    }

    #[test]
    fn bodies_always_carry_their_length() {
        let f = fwd("http://h");
        for (route, payload, want) in [
            ("POST /x", &b""[..], Some("0")),
            ("PUT /x", &b"abc"[..], Some("3")),
            ("DELETE /x", &b""[..], Some("0")),
            ("GET /x", &b""[..], None),
        ] {
            let rec = Record {
                route: route.into(),
                payload: payload.to_vec(),
                ..Record::default()
            };
            let req = f.build(&rec).unwrap();
            assert_eq!(
                req.headers()
                    .get(http::header::CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap()),
                want,
                "{route}"
            );
        }
    }
}
