//! The main server the bench's daemon replays to: the no-op `Sink/Deliver` server
//! (`--sink deliver`) or the HTTP server that accepts verbatim replays (`--sink http`),
//! each answering after `--sink-latency`.

use std::time::{Duration, Instant};

use super::http_sink::HttpSink;
use super::noop_sink::NoopSink;
use crate::cli::BenchSinkArg;

/// One of the bench's built-in main servers.
pub enum BenchSink {
    Deliver(NoopSink),
    Http(HttpSink),
}

impl BenchSink {
    /// Starts the sink `kind`, unhealthy, answering each request after `latency`.
    pub async fn start(kind: BenchSinkArg, latency: Duration) -> std::io::Result<BenchSink> {
        Ok(match kind {
            BenchSinkArg::Deliver => BenchSink::Deliver(NoopSink::start(None, latency).await?),
            BenchSinkArg::Http => BenchSink::Http(HttpSink::start(latency).await?),
        })
    }

    /// The daemon's `--upstream`.
    pub fn url(&self) -> String {
        match self {
            BenchSink::Deliver(s) => s.url(),
            BenchSink::Http(s) => s.url(),
        }
    }

    /// The daemon's `--sink`.
    pub fn run_sink(&self) -> &'static str {
        match self {
            BenchSink::Deliver(_) => "deliver",
            BenchSink::Http(_) => "forward",
        }
    }

    /// Lets replay start (healthy) or holds it back.
    pub async fn set_serving(&self, serving: bool) {
        match self {
            BenchSink::Deliver(s) => s.set_serving(serving).await,
            BenchSink::Http(s) => s.set_serving(serving),
        }
    }

    /// When the first replayed request arrived.
    pub fn first_call(&self) -> Option<Instant> {
        match self {
            BenchSink::Deliver(s) => s.first_call(),
            BenchSink::Http(s) => s.first_call(),
        }
    }

    /// Request bytes received (gRPC messages, or HTTP bodies).
    pub fn wire_bytes(&self) -> u64 {
        match self {
            BenchSink::Deliver(s) => s.wire_bytes(),
            BenchSink::Http(s) => s.wire_bytes(),
        }
    }

    /// Requests received.
    pub fn calls(&self) -> u64 {
        match self {
            BenchSink::Deliver(s) => s.calls(),
            BenchSink::Http(s) => s.calls(),
        }
    }
}
