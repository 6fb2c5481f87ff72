//! The front door (issue 15): unmodified clients point at the socket instead of the main
//! server, and the main server receives their requests, byte for byte, after replay.
//!
//! | module | client → daemon → main server | what it proves |
//! |---|---|---|
//! | [`grpc`] | grpcio generic calls (`py/grpc_call.py`) → `--accept-grpc 'acme.*'` → grpcio generic server (`py/grpc_app.py`) | unary calls (gzip-compressed, binary metadata, empty message) are answered OK and replayed with identical bytes and metadata; streaming and unmatched calls get UNIMPLEMENTED and store nothing |
//! | [`http`] | `http.client` over the UNIX socket (`py/http_post.py`) and `curl --unix-socket` → `--accept-http` → `http.server` (`py/http_app.py`) | JSON, chunked binary with `Expect: 100-continue` and empty requests are answered 202 with their sequences and replayed identically; an oversized body gets 413 and stores nothing |
//! | [`otel`] | the OpenTelemetry Python SDK (OTLP/gRPC, configured by environment variables only, `py/otel_export.py`) → `--accept-grpc 'opentelemetry.proto.collector.*'` → an OTLP receiver built from `opentelemetry-proto` (`py/otlp_receiver.py`) | traces, logs and metrics exported while the receiver is down, across a `kill -9` of the daemon, all arrive once it is up: every acknowledged item, once, in export order per signal |
//! | [`activation`] | `systemd-socket-activate`, and the test as a service manager holding the socket | the daemon takes the passed socket (`LISTEN_FDS`/`LISTEN_PID`), stores and replays, exits 0 once drained, leaves the socket file alone; the next connection is served by a new daemon on the same socket |
//!
//! The Python programs run with the environment `scripts/test` prepares (see
//! [`crate::real_clients`]); the main servers are [`crate::replay_policy::PyServer`]s.

mod activation;
mod grpc;
mod http;
mod otel;

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

/// A program of this suite (`py/...`).
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/front_door/py")
        .join(name)
}

/// Decodes a `*_b64` field of a client's or server's JSON line.
pub fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(
            v.as_str()
                .unwrap_or_else(|| panic!("not a base64 string: {v}")),
        )
        .unwrap_or_else(|e| panic!("not base64 ({e}): {v}"))
}

/// The value of `name` in a `[[name, value], ...]` list, if present.
pub fn field<'a>(pairs: &'a Value, name: &str) -> Option<&'a str> {
    pairs
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

/// Writes what a test checked to the real stderr.
pub fn report(test: &str, line: impl AsRef<str>) {
    crate::real_clients::say(format!("front_door::{test}: {}", line.as_ref()));
}
