//! A raw HTTP/2 client (the Python `h2` package, `py/h2_authority.py`) sends a real gRPC
//! `Status` call with each `:authority` a client may send on a UNIX socket, odd ones
//! included, each on a connection of its own and all together on one connection. Every
//! call must be answered: `:status 200`, `grpc-status: 0`, and a StatusResponse that
//! decodes.

use std::process::Command;

use echopost_proto::v1::StatusResponse;
use prost::Message as _;
use serde_json::Value;

use super::{H2_DEBUG, REPLACED_LINE, fixture, h2_warnings, python, run_client, say};
use crate::support::daemon::{Area, Daemon};

/// The cases: a name, and the `:authority` sent (`None`: no `:authority` at all).
fn cases() -> Vec<(&'static str, Option<Vec<u8>>)> {
    let mut long = b"/".to_vec();
    long.resize(295, b'x');
    long.extend_from_slice(b".sock");
    assert_eq!(long.len(), 300);
    vec![
        // A plain host name, the baseline.
        ("localhost", Some(b"localhost".to_vec())),
        // The raw socket path (grpc-core before 1.57 style, Swift, Bazel).
        ("raw_path", Some(b"/var/run/x.sock".to_vec())),
        // The percent-encoded path grpc-core sends today.
        (
            "percent_encoded_path",
            Some(b"tmp%2Fep%2Fechopost.sock".to_vec()),
        ),
        ("empty", Some(Vec::new())),
        ("missing", None),
        ("300_bytes", Some(long)),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The StatusResponse in a gRPC response body: one uncompressed, length-prefixed message.
fn decode_body(body: &[u8]) -> Result<StatusResponse, String> {
    if body.len() < 5 {
        return Err(format!("a body of {} bytes has no gRPC frame", body.len()));
    }
    if body[0] != 0 {
        return Err(format!("compressed flag {}", body[0]));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(format!(
            "the frame says {len} bytes, the body has {} after the prefix",
            body.len() - 5
        ));
    }
    StatusResponse::decode(&body[5..]).map_err(|e| format!("not a StatusResponse: {e}"))
}

/// Asserts one call was answered as a successful `Status`; returns a line about it.
fn check(r: &Value, pid: u32) -> String {
    let ctx = format!("{r:#}");
    assert_eq!(r["reset"], Value::Null, "the stream was reset: {ctx}");
    assert_eq!(r["goaway"], Value::Null, "the connection was closed: {ctx}");
    assert_eq!(r["ended"], true, "{ctx}");
    let headers = &r["headers"];
    assert_eq!(headers[":status"], "200", "{ctx}");
    assert!(
        headers["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/grpc")),
        "{ctx}"
    );
    // A trailers-only response carries grpc-status in the headers; a successful unary
    // call has it in the trailers.
    assert_eq!(r["trailers"]["grpc-status"], "0", "{ctx}");
    let body = unhex(r["body_hex"].as_str().unwrap());
    let st = decode_body(&body).unwrap_or_else(|e| panic!("{e}: {ctx}"));
    assert_eq!(st.pid, pid, "{ctx}");
    assert_eq!(st.version, env!("CARGO_PKG_VERSION"), "{ctx}");
    assert_eq!(st.next_sequence, 1, "{ctx}");
    assert_eq!(st.backlog_records, 0, "{ctx}");
    assert!(!st.session_id.is_empty(), "{ctx}");
    format!(
        "{} ({} connection, stream {}): :status 200, grpc-status 0, StatusResponse of {} bytes",
        r["case"].as_str().unwrap(),
        r["connection"].as_str().unwrap(),
        r["stream"],
        body.len() - 5
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_h2_status_call_with_each_odd_authority() {
    let test = "real_clients::raw_h2::raw_h2_status_call_with_each_odd_authority";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let mut d = Daemon::start(&area, H2_DEBUG).await;
    let cases = cases();
    let mut cmd = Command::new(&python);
    cmd.arg(fixture("py/h2_authority.py"))
        .arg("--socket")
        .arg(area.socket());
    for (name, authority) in &cases {
        let value = authority.as_deref().map_or_else(|| "-".to_owned(), hex);
        cmd.arg("--case").arg(format!("{name}={value}"));
    }
    let run = run_client(cmd).await;
    run.expect_success("py/h2_authority.py");
    let results = run.results();
    assert_eq!(
        results.len(),
        2 * cases.len(),
        "one result per case and connection kind:\n{}",
        run.stdout
    );
    let pid = u32::try_from(d.pid()).unwrap();
    let mut checked = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let (name, authority) = &cases[i % cases.len()];
        let connection = if i < cases.len() { "own" } else { "shared" };
        assert_eq!(r["case"], *name, "{r:#}");
        assert_eq!(r["connection"], connection, "{r:#}");
        assert_eq!(
            r["authority_hex"],
            authority.as_deref().map_or(Value::Null, |a| hex(a).into()),
            "the client did not send the case's :authority: {r:#}"
        );
        checked.push(check(r, pid));
    }
    // The shared connection carried every case as its own stream.
    let streams: Vec<u64> = results[cases.len()..]
        .iter()
        .map(|r| r["stream"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..cases.len() as u64).map(|i| 2 * i + 1).collect();
    assert_eq!(streams, want);

    let logs = d.session_logs();
    let warnings = h2_warnings(&logs);
    assert!(warnings.is_empty(), "{warnings:#?}");
    // Once per connection whose :authority was replaced: the raw path, the percent-encoded
    // path, the empty value, the 300-byte path, and the shared connection.
    let replaced = logs.lines().filter(|l| l.contains(REPLACED_LINE)).count();
    assert_eq!(replaced, 5, "session log:\n{logs}");
    d.stop().await;
    say(format!(
        "{test}: {} gRPC Status calls over raw HTTP/2 ({:.1} s), each answered:\n  {}\n  \
         :authority replaced on the 5 connections that needed it; no HTTP/2 warning",
        results.len(),
        run.elapsed.as_secs_f64(),
        checked.join("\n  ")
    ));
}
