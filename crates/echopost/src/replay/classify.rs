//! Transient or permanent: the one table that decides whether a failed delivery is
//! retried as is (forever) or the records are rejected (split, then dead-lettered).
//!
//! The guiding question is "could sending exactly the same bytes later succeed?".
//!
//! | outcome                                                      | class     |
//! |--------------------------------------------------------------|-----------|
//! | connection refused/reset, TLS handshake failure, timeout     | transient |
//! | gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `ABORTED`, `INTERNAL`, `UNKNOWN` | transient |
//! | any other gRPC status sent by the server (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `UNIMPLEMENTED`, `OUT_OF_RANGE`, `ALREADY_EXISTS`, `CANCELLED`, `DATA_LOSS`) | permanent |
//! | HTTP 2xx                                                     | success   |
//! | HTTP 408, 429, 500–599                                       | transient |
//! | any other HTTP status (1xx, 3xx, other 4xx)                  | permanent |
//!
//! A gRPC status that tonic made up locally from a transport error (it carries the error
//! as its `source`) is a connection failure, hence transient, whatever code tonic chose:
//! a main server that dies mid-request can surface as `CANCELLED` or `INTERNAL` from the
//! HTTP/2 layer, and that must never dead-letter a record. Statuses sent by the server
//! (parsed from `grpc-status`) have no source and follow the table.

use std::time::Duration;

/// Whether retrying the same request can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Retry the same records later (backoff, re-probe), forever.
    Transient,
    /// The main server rejects these records; retrying as is will not help.
    Permanent,
}

/// The class of a gRPC status code sent by the main server.
pub fn grpc_code(code: tonic::Code) -> Class {
    use tonic::Code;
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown => Class::Transient,
        Code::Ok
        | Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => Class::Permanent,
    }
}

/// The class of an HTTP status; `None` for success (2xx).
pub fn http_status(status: u16) -> Option<Class> {
    match status {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(Class::Transient),
        _ => Some(Class::Permanent),
    }
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: Class,
    /// Human-readable cause; becomes `Status.upstream_detail` and a dead letter's reason.
    pub reason: String,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Self {
        Failure {
            class: Class::Transient,
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure {
            class: Class::Permanent,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// Classifies a gRPC call's error status (see the module table).
    pub fn from_status(status: &tonic::Status) -> Self {
        let local = std::error::Error::source(status).is_some();
        let class = if local {
            Class::Transient
        } else {
            grpc_code(status.code())
        };
        let reason = if local {
            format!("connection error: {}", status.message())
        } else {
            format!("gRPC status {:?}: {}", status.code(), status.message())
        };
        Failure {
            class,
            reason,
            retry_after: None,
        }
    }

    /// A request that did not complete within the request timeout.
    pub fn timeout(after: Duration) -> Self {
        Failure::transient(format!("no answer within {after:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_grpc_code() {
        let transient = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
        ];
        let permanent = [
            Code::Cancelled,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        for c in transient {
            assert_eq!(grpc_code(c), Class::Transient, "{c:?}");
        }
        for c in permanent {
            assert_eq!(grpc_code(c), Class::Permanent, "{c:?}");
        }
        // Every code is in one of the lists (tonic has 17 codes, OK included).
        assert_eq!(transient.len() + permanent.len() + 1, 17);
    }

    #[test]
    fn every_http_status() {
        for s in 200..=299 {
            assert_eq!(http_status(s), None, "{s}");
        }
        for s in [408, 429] {
            assert_eq!(http_status(s), Some(Class::Transient), "{s}");
        }
        for s in 500..=599 {
            assert_eq!(http_status(s), Some(Class::Transient), "{s}");
        }
        for s in (100..=199).chain(300..=399) {
            assert_eq!(http_status(s), Some(Class::Permanent), "{s}");
        }
        for s in (400..=499).filter(|s| *s != 408 && *s != 429) {
            assert_eq!(http_status(s), Some(Class::Permanent), "{s}");
        }
    }

    #[test]
    fn server_statuses_follow_the_table() {
        let f = Failure::from_status(&tonic::Status::invalid_argument("bad record"));
        assert_eq!(f.class, Class::Permanent);
        assert!(f.reason.contains("InvalidArgument"), "{}", f.reason);
        assert!(f.reason.contains("bad record"), "{}", f.reason);
        let f = Failure::from_status(&tonic::Status::unavailable("busy"));
        assert_eq!(f.class, Class::Transient);
        let f = Failure::from_status(&tonic::Status::cancelled("server said so"));
        assert_eq!(f.class, Class::Permanent);
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
        assert_eq!(f.class, Class::Transient);
        assert!(f.reason.starts_with("connection error"), "{}", f.reason);
    }

    #[test]
    fn timeouts_are_transient() {
        assert_eq!(
            Failure::timeout(Duration::from_secs(1)).class,
            Class::Transient
        );
    }
}
