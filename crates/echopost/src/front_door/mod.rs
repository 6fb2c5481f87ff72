//! The front door (issue 15): unmodified gRPC and HTTP clients store their requests by
//! pointing at the socket instead of the main server, and the `forward` sink replays each
//! one verbatim once the main server is healthy.
//!
//! ```text
//! connection ─┬─ HTTP/2 ─ tonic ─ FrontDoorLayer ─┬─ gRPC, --accept-grpc match → grpc.rs ─┐
//!             │                                   ├─ not gRPC, --accept-http → http.rs ──┤
//!             │                                   └─ anything else → EchoPost, health, … │
//!             └─ HTTP/1.1 (--accept-http, listener.rs) ─ hyper → http.rs ────────────────┤
//!                                                      capture.rs: one Record → Ingest::append
//! ```
//!
//! | file | concern |
//! |---|---|
//! | [`pattern`] | `--accept-grpc PATTERN`: which services are captured |
//! | [`layer`] | the tower layer in front of tonic's router |
//! | [`grpc`] | a captured unary call → a record; OK with an empty message |
//! | [`http`] | a captured HTTP request → a record; `202 Accepted` and the sequences |
//! | [`listener`] | `--accept-http`: HTTP/2 or HTTP/1.1, told from the first bytes |
//! | [`capture`] | the record, its size check and the ingest path shared by all |
//!
//! Every captured request goes through [`crate::ingest::Ingest::append`], exactly as an
//! `Append` of one record: quota, `--max-record-bytes`, the forward-sink check, durability
//! and ordering are the same, and so is the peer-uid check (answered 403 or
//! `PERMISSION_DENIED`).

pub mod capture;
pub mod grpc;
pub mod http;
pub mod layer;
pub mod listener;
pub mod pattern;

pub use capture::Capture;
pub use layer::FrontDoorLayer;
pub use pattern::ServicePattern;

/// What the front door captures: `--accept-grpc` patterns and `--accept-http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontDoor {
    /// `--accept-grpc`: unary calls to these services are stored.
    pub grpc: Vec<ServicePattern>,
    /// `--accept-http`: HTTP/1.1 requests, and HTTP/2 requests that are not gRPC, are
    /// stored.
    pub http: bool,
}

impl FrontDoor {
    /// Parses `--accept-grpc` values and `--accept-http`.
    pub fn parse(grpc: &[String], http: bool) -> Result<FrontDoor, String> {
        let grpc = grpc
            .iter()
            .map(|p| ServicePattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FrontDoor { grpc, http })
    }

    /// Whether anything is captured at all.
    pub fn is_open(&self) -> bool {
        self.http || !self.grpc.is_empty()
    }

    /// Whether unary calls to `service` (`pkg.Service`) are captured.
    pub fn captures_service(&self, service: &str) -> bool {
        self.grpc.iter().any(|p| p.matches(service))
    }
}
