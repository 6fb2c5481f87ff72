//! The replay policy's one table: what a failed delivery says, and what the replayer does
//! about it.
//!
//! The principle (issue "replay that survives real main servers"): **a record goes to the
//! dead-letter log only when there is evidence that the record, not the server, is the
//! problem.** So there are four classes, not two:
//!
//! | class | what it means | what the replayer does |
//! |---|---|---|
//! | [`Class::Transient`] | the server is down, busy or slow | back off, re-probe, send the same records again; a batch that keeps failing while the server is healthy is split to find a culprit (see `driver`) |
//! | [`Class::Server`] | the server or the configuration is wrong: credentials, a missing service or route, a redirect, TLS | pause (backoff up to the cap, re-probe), dead-letter nothing, say so loudly in `status` and the session log |
//! | [`Class::TooLarge`] | the request was larger than the server accepts | halve the batch, down to one record; only a record too large alone is dead-lettered, with its size |
//! | [`Class::Record`] | the server refuses these records | send them one by one; a record refused alone is dead-lettered |
//!
//! The default table:
//!
//! | outcome | class |
//! |---|---|
//! | connection refused/reset, a status tonic made up from a transport error | transient |
//! | no answer within `--request-timeout` ([`Cause::Timeout`]) | transient (a `Deliver` batch is halved) |
//! | gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `ABORTED`, `INTERNAL`, `UNKNOWN` | transient |
//! | gRPC `RESOURCE_EXHAUSTED`, `OUT_OF_RANGE` whose message is about a message size ("larger than max", "message length too large") | too large |
//! | gRPC `RESOURCE_EXHAUSTED` otherwise (quota, rate limit) | transient |
//! | gRPC `UNAUTHENTICATED`, `PERMISSION_DENIED`, `UNIMPLEMENTED` | server |
//! | gRPC `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `NOT_FOUND`, `ALREADY_EXISTS`, `CANCELLED`, `DATA_LOSS` | record |
//! | HTTP 2xx | success |
//! | HTTP 408, 429, 5xx | transient |
//! | HTTP 413 | too large |
//! | HTTP 3xx (not followed), 401, 403, 404, 405, 407, 411, 426, 1xx | server |
//! | HTTP other 4xx (400, 409, 410, 415, 422, …) | record |
//! | a TLS handshake failure | server |
//! | a record that cannot be sent at all (its route or headers cannot form a request) | record |
//!
//! Operators move statuses between classes with `--status-class` (e.g.
//! `--status-class http:409=transient`, `--status-class grpc:NOT_FOUND=server`): see
//! [`Policy`].

use std::collections::HashMap;
use std::time::Duration;

use super::forward_http::error_chain;

/// What the replayer does about a failure (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Retry the same records later (backoff, re-probe).
    Transient,
    /// The server or the configuration is wrong: pause, dead-letter nothing.
    Server,
    /// The request was too large for the server: halve the batch.
    TooLarge,
    /// The main server rejects these records: split, dead-letter what is rejected alone.
    Record,
}

impl Class {
    /// The name used by `--status-class` and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Server => "server",
            Class::TooLarge => "too-large",
            Class::Record => "record",
        }
    }

    fn parse(s: &str) -> Option<Class> {
        match s.to_ascii_lowercase().as_str() {
            "transient" | "retry" => Some(Class::Transient),
            "server" | "pause" => Some(Class::Server),
            "too-large" | "too_large" | "shrink" => Some(Class::TooLarge),
            "record" | "dead-letter" | "reject" => Some(Class::Record),
            _ => None,
        }
    }
}

/// What went wrong, as the sink saw it (the class is the [`Policy`]'s decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// No answer: connection refused or reset, a transport error.
    Connection,
    /// No answer within `--request-timeout`. Transient; but a `Deliver` batch that times
    /// out is retried at half the size (see `driver`): a server that needs longer than
    /// the timeout to take a batch takes smaller ones.
    Timeout,
    /// The TLS handshake failed (untrusted or mismatched certificate).
    Tls,
    /// A gRPC status the server sent, with its message.
    Grpc(tonic::Code, String),
    /// An HTTP status.
    Http(u16),
    /// The record cannot be turned into a request (bad route, header or metadata).
    Unsendable,
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    /// Human-readable cause; becomes `Status.upstream_detail` and a dead letter's reason.
    pub reason: String,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// No answer (connection failure, transport error).
    pub fn connection(reason: impl Into<String>) -> Self {
        Failure::new(Cause::Connection, reason)
    }

    /// The record cannot be sent at all.
    pub fn unsendable(reason: impl Into<String>) -> Self {
        Failure::new(Cause::Unsendable, reason)
    }

    /// An HTTP status other than 2xx.
    pub fn http(status: u16, reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Failure {
            retry_after,
            ..Failure::new(Cause::Http(status), reason)
        }
    }

    fn new(cause: Cause, reason: impl Into<String>) -> Self {
        Failure {
            cause,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A gRPC call's error status. A status tonic made up locally from a transport error
    /// (it carries the error as its `source`) is a connection failure whatever its code: a
    /// main server that dies mid-request can surface as `CANCELLED` or `INTERNAL` from the
    /// HTTP/2 layer, and that must never dead-letter a record. A TLS failure among the
    /// sources is [`Cause::Tls`].
    pub fn from_status(status: &tonic::Status) -> Self {
        match std::error::Error::source(status) {
            Some(src) if is_timeout(src) => Failure::new(
                Cause::Timeout,
                format!(
                    "no answer in time (--request-timeout): {}",
                    status.message()
                ),
            ),
            Some(src) => {
                let chain = error_chain(src);
                let cause = if looks_like_tls(&chain) {
                    Cause::Tls
                } else {
                    Cause::Connection
                };
                Failure::new(
                    cause,
                    format!("connection error: {}: {chain}", status.message()),
                )
            }
            None => Failure::new(
                Cause::Grpc(status.code(), status.message().to_owned()),
                format!("gRPC status {:?}: {}", status.code(), status.message()),
            ),
        }
    }

    /// A transport error of a gRPC call: a timeout if tonic's own deadline (the
    /// `grpc-timeout` it enforces on the client side) expired, else as
    /// [`Failure::transport`].
    pub fn grpc_transport(e: &(dyn std::error::Error + 'static), timeout: Duration) -> Self {
        if is_timeout(e) {
            return Failure::timeout(timeout);
        }
        Failure::transport(format!("connection error: {}", error_chain(e)))
    }

    /// A connection failure described by `reason`, or a TLS one if it says so.
    pub fn transport(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let cause = if looks_like_tls(&reason) {
            Cause::Tls
        } else {
            Cause::Connection
        };
        Failure::new(cause, reason)
    }

    /// A request that did not complete within the request timeout.
    pub fn timeout(after: Duration) -> Self {
        Failure::new(
            Cause::Timeout,
            format!("no answer within {after:?} (--request-timeout)"),
        )
    }

    /// The class under the default table (tests and places without a policy).
    pub fn default_class(&self) -> Class {
        Policy::default().class(self)
    }
}

/// Whether `e` or one of its sources is tonic's "Timeout expired".
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Whether an error text is about TLS (rustls and hyper-rustls wording).
pub(crate) fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "invalid peer certificate",
        "certificate",
        "tls handshake",
        "handshake failure",
        "unknownissuer",
        "bad certificate",
    ]
    .iter()
    .any(|k| t.contains(k))
}

/// Whether a gRPC message says the request was above a message size limit: grpc-core
/// ("Received message larger than max (N vs. M)"), grpc-java ("exceeds maximum"), tonic
/// ("decoded message length too large").
fn is_size_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "larger than max",
        "message length too large",
        "exceeds maximum",
        "message too large",
        "max message size",
    ]
    .iter()
    .any(|k| m.contains(k))
}

/// The default class of a gRPC code sent by the server, given its message.
pub fn grpc_class(code: tonic::Code, message: &str) -> Class {
    use tonic::Code;
    match code {
        Code::ResourceExhausted | Code::OutOfRange if is_size_message(message) => Class::TooLarge,
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown => Class::Transient,
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => Class::Server,
        Code::Ok
        | Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::DataLoss => Class::Record,
    }
}

/// The default class of an HTTP status; `None` for success (2xx).
pub fn http_class(status: u16) -> Option<Class> {
    match status {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(Class::Transient),
        413 => Some(Class::TooLarge),
        100..=199 | 300..=399 | 401 | 403 | 404 | 405 | 407 | 411 | 426 => Some(Class::Server),
        _ => Some(Class::Record),
    }
}

/// The classification the replayer runs with: the default table plus the operator's
/// `--status-class` overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    http: HashMap<u16, Class>,
    grpc: HashMap<i32, Class>,
}

impl Policy {
    /// Parses `--status-class` values: `http:STATUS=CLASS` (STATUS a code such as 409, or
    /// a range such as 4xx) or `grpc:CODE=CLASS` (CODE a name such as `NOT_FOUND` or a
    /// number), CLASS one of `transient`, `server`, `too-large`, `record`.
    ///
    /// # Errors
    /// A message naming the bad value and what is accepted.
    pub fn with_overrides(specs: &[String]) -> Result<Policy, String> {
        let mut p = Policy::default();
        for spec in specs {
            let bad = |why: &str| format!("--status-class {spec:?}: {why}");
            let (lhs, class) = spec
                .split_once('=')
                .ok_or_else(|| bad("expected http:STATUS=CLASS or grpc:CODE=CLASS"))?;
            let class = Class::parse(class.trim())
                .ok_or_else(|| bad("the class must be transient, server, too-large or record"))?;
            let (kind, what) = lhs
                .split_once(':')
                .ok_or_else(|| bad("expected http:STATUS=CLASS or grpc:CODE=CLASS"))?;
            match kind.trim().to_ascii_lowercase().as_str() {
                "http" => {
                    let what = what.trim().to_ascii_lowercase();
                    if let Some(first) = what.strip_suffix("xx") {
                        let d: u16 = first
                            .parse()
                            .ok()
                            .filter(|d| (1..=5).contains(d))
                            .ok_or_else(|| bad("a range is 1xx to 5xx"))?;
                        for s in d * 100..d * 100 + 100 {
                            p.http.insert(s, class);
                        }
                    } else {
                        let s: u16 = what
                            .parse()
                            .ok()
                            .filter(|s| (100..=599).contains(s) && !(200..=299).contains(s))
                            .ok_or_else(|| {
                                bad("an HTTP status is 100 to 599, not 2xx (success)")
                            })?;
                        p.http.insert(s, class);
                    }
                }
                "grpc" => {
                    let code = grpc_code_named(what.trim())
                        .filter(|c| *c != tonic::Code::Ok)
                        .ok_or_else(|| {
                            bad("unknown gRPC code (use a name such as NOT_FOUND or 1 to 16)")
                        })?;
                    p.grpc.insert(code as i32, class);
                }
                _ => return Err(bad("the status kind must be http or grpc")),
            }
        }
        Ok(p)
    }

    /// The class of `f`.
    pub fn class(&self, f: &Failure) -> Class {
        match &f.cause {
            Cause::Connection | Cause::Timeout => Class::Transient,
            Cause::Tls => Class::Server,
            Cause::Unsendable => Class::Record,
            Cause::Grpc(code, message) => self
                .grpc
                .get(&(*code as i32))
                .copied()
                .unwrap_or_else(|| grpc_class(*code, message)),
            Cause::Http(status) => self
                .http
                .get(status)
                .copied()
                .or_else(|| http_class(*status))
                .unwrap_or(Class::Record),
        }
    }
}

/// A gRPC code from its name (`NOT_FOUND`, `not-found`, `NotFound`) or number.
fn grpc_code_named(s: &str) -> Option<tonic::Code> {
    if let Ok(n) = s.parse::<i32>() {
        return (0..=16).contains(&n).then(|| tonic::Code::from(n));
    }
    let norm: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    (0..=16)
        .map(tonic::Code::from)
        .find(|c| format!("{c:?}").to_ascii_lowercase() == norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_grpc_code() {
        let table = [
            (Code::Unavailable, Class::Transient),
            (Code::DeadlineExceeded, Class::Transient),
            (Code::ResourceExhausted, Class::Transient),
            (Code::Aborted, Class::Transient),
            (Code::Internal, Class::Transient),
            (Code::Unknown, Class::Transient),
            (Code::Unauthenticated, Class::Server),
            (Code::PermissionDenied, Class::Server),
            (Code::Unimplemented, Class::Server),
            (Code::Cancelled, Class::Record),
            (Code::InvalidArgument, Class::Record),
            (Code::NotFound, Class::Record),
            (Code::AlreadyExists, Class::Record),
            (Code::FailedPrecondition, Class::Record),
            (Code::OutOfRange, Class::Record),
            (Code::DataLoss, Class::Record),
        ];
        for (c, class) in table {
            assert_eq!(grpc_class(c, "whatever"), class, "{c:?}");
        }
        // Every code but OK is listed (tonic has 17).
        assert_eq!(table.len() + 1, 17);
        for m in [
            "Received message larger than max (4194350 vs. 4194304)",
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ] {
            assert_eq!(
                grpc_class(Code::ResourceExhausted, m),
                Class::TooLarge,
                "{m}"
            );
            assert_eq!(grpc_class(Code::OutOfRange, m), Class::TooLarge, "{m}");
        }
    }

    #[test]
    fn every_http_status() {
        for s in 200..=299 {
            assert_eq!(http_class(s), None, "{s}");
        }
        for s in [408, 429].into_iter().chain(500..=599) {
            assert_eq!(http_class(s), Some(Class::Transient), "{s}");
        }
        assert_eq!(http_class(413), Some(Class::TooLarge));
        for s in (100..=199)
            .chain(300..=399)
            .chain([401, 403, 404, 405, 407, 411, 426])
        {
            assert_eq!(http_class(s), Some(Class::Server), "{s}");
        }
        for s in [
            400, 402, 406, 409, 410, 412, 414, 415, 416, 417, 418, 421, 422, 451,
        ] {
            assert_eq!(http_class(s), Some(Class::Record), "{s}");
        }
    }

    #[test]
    fn server_statuses_follow_the_table() {
        let f = Failure::from_status(&tonic::Status::invalid_argument("bad record"));
        assert_eq!(f.default_class(), Class::Record);
        assert!(f.reason.contains("InvalidArgument"), "{}", f.reason);
        assert!(f.reason.contains("bad record"), "{}", f.reason);
        let f = Failure::from_status(&tonic::Status::unavailable("busy"));
        assert_eq!(f.default_class(), Class::Transient);
        let f = Failure::from_status(&tonic::Status::unimplemented("no Sink here"));
        assert_eq!(f.default_class(), Class::Server);
    }

    #[test]
    fn locally_made_statuses_are_connection_errors() {
        // What tonic returns when the HTTP/2 stream dies under a request: a status built
        // from the error, with the error as its source.
        let err: Box<dyn std::error::Error + Send + Sync> = Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        let s = tonic::Status::from_error(err);
        assert!(std::error::Error::source(&s).is_some());
        let f = Failure::from_status(&s);
        assert_eq!(f.default_class(), Class::Transient);
        assert!(f.reason.starts_with("connection error"), "{}", f.reason);
        let tls = Failure::transport("invalid peer certificate: UnknownIssuer");
        assert_eq!(tls.default_class(), Class::Server);
    }

    #[test]
    fn timeouts_are_transient() {
        assert_eq!(
            Failure::timeout(Duration::from_secs(1)).default_class(),
            Class::Transient
        );
    }

    #[test]
    fn operators_move_statuses_between_classes() {
        let p = Policy::with_overrides(&[
            "http:409=transient".into(),
            "http:5xx=server".into(),
            "grpc:NOT_FOUND=server".into(),
            "grpc:14=record".into(),
        ])
        .unwrap();
        let http = |s| Failure::http(s, "x", None);
        assert_eq!(p.class(&http(409)), Class::Transient);
        assert_eq!(p.class(&http(503)), Class::Server);
        assert_eq!(p.class(&http(400)), Class::Record);
        let grpc = |c| Failure::from_status(&tonic::Status::new(c, "x"));
        assert_eq!(p.class(&grpc(Code::NotFound)), Class::Server);
        assert_eq!(p.class(&grpc(Code::Unavailable)), Class::Record);
        for bad in [
            "http:200=transient",
            "http:9xx=server",
            "grpc:NOPE=server",
            "http:409",
            "ftp:1=server",
            "http:409=maybe",
        ] {
            let e = Policy::with_overrides(&[bad.into()]).unwrap_err();
            assert!(e.contains("--status-class"), "{bad}: {e}");
        }
    }
}
