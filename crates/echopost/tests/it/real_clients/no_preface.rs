//! Connections that never speak HTTP/2: one that connects and says nothing (and one that
//! stops halfway through the preface) is closed by the daemon after its 10 s preface
//! timeout; one that sends something else instead of the preface (an HTTP/1.1 request, a
//! TLS ClientHello) is closed at once. Either way the daemon serves other clients
//! meanwhile, and its session log has one warning per such connection saying what
//! happened.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{h2_warnings, say};
use crate::support::daemon::{Area, Daemon, connect, session_logs, status};

/// The daemon's preface timeout (`PREFACE_TIMEOUT` in `src/daemon/h2/mod.rs`).
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the test waits for the daemon to close a silent connection.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// Waits up to `timeout` until `cond` holds for the session logs of `dir`; returns them.
async fn wait_logs(dir: &Path, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = session_logs(dir);
        if cond(&logs) || Instant::now() > deadline {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The uid this test runs as (the owner of a directory it just made), as the daemon names
/// peers in its log lines: `peer=uid N`.
fn own_uid(area: &Area) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(area.root.path()).expect("area").uid()
}

/// Reads until the daemon closes the connection (or resets it), at most `limit`; returns
/// the bytes read and when it closed, or `None` if it was still open after `limit`.
async fn read_until_closed(s: &mut UnixStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The first frame in `bytes` is a SETTINGS frame (type 4) on stream 0: what an HTTP/2
/// server sends first.
fn starts_with_settings(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[3] == 4 && bytes[5..9] == [0, 0, 0, 0]
}

/// One round of service for others: a new connection, `Status` and a health check.
async fn serve_one(d: &Daemon) -> Duration {
    let start = Instant::now();
    let mut c = d.client().await;
    let st = status(&mut c).await;
    assert_eq!(st.pid, u32::try_from(d.pid()).unwrap());
    let mut h = HealthClient::new(connect(&d.socket).await.expect("connect"));
    let r = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Check")
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_the_preface_timeout() {
    let test = "real_clients::no_preface::silent_connection_is_closed_after_the_preface_timeout";
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let uid = own_uid(&area);

    let mut silent = UnixStream::connect(&d.socket).await.expect("connect");
    let mut partial = UnixStream::connect(&d.socket).await.expect("connect");
    // Half the preface, then nothing.
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let silent_task =
        tokio::spawn(async move { read_until_closed(&mut silent, CLOSE_LIMIT).await });
    let partial_task =
        tokio::spawn(async move { read_until_closed(&mut partial, CLOSE_LIMIT).await });

    // Others are served while the two connections hang.
    let mut served = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        served.push(serve_one(&d).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(served.len() >= 3, "{served:?}");
    let slowest = *served.iter().max().unwrap();
    assert!(slowest < Duration::from_secs(5), "{served:?}");

    let mut closes = Vec::new();
    for (what, task) in [("silent", silent_task), ("half a preface", partial_task)] {
        let (got, closed) = task.await.expect("reader");
        let closed = closed.unwrap_or_else(|| {
            panic!("the daemon did not close the {what} connection within {CLOSE_LIMIT:?}")
        });
        assert!(
            closed >= PREFACE_TIMEOUT - Duration::from_secs(1),
            "the {what} connection was closed after {closed:?}, before the preface timeout"
        );
        // The daemon spoke HTTP/2 to it (its SETTINGS) and nothing else.
        assert!(starts_with_settings(&got), "{what}: {got:?}");
        closes.push(format!("{what} closed after {:.1} s", closed.as_secs_f64()));
    }
    // And it still serves after closing them.
    served.push(serve_one(&d).await);

    let expected = "closing a connection that sent no HTTP/2 preface within 10 s";
    let logs = wait_logs(&d.dir, Duration::from_secs(5), |l| {
        h2_warnings(l).len() >= 2
    })
    .await;
    let warnings = h2_warnings(&logs);
    assert_eq!(warnings.len(), 2, "one warning per connection:\n{logs}");
    for w in &warnings {
        assert!(w.contains(expected), "{w}");
        assert!(w.contains(&format!("peer=uid {uid}")), "{w}");
    }
    d.stop().await;
    say(format!(
        "{test}: a connection that sent nothing and one that sent half the preface got the \
         daemon's SETTINGS and were closed ({}; limit {CLOSE_LIMIT:?}); meanwhile {} rounds of \
         Status + Health/Check on new connections were served (slowest {slowest:?}); the \
         session log has one warning each: `{expected} peer=uid {uid}`",
        closes.join(", "),
        served.len(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_the_preface_is_closed_and_logged_once() {
    let test = "real_clients::no_preface::garbage_instead_of_the_preface_is_closed_and_logged_once";
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let uid = own_uid(&area);
    // A client connected before the garbage arrives, still served after.
    let mut before = d.client().await;
    status(&mut before).await;

    let garbage: [(&str, &[u8], &str); 2] = [
        (
            "an HTTP/1.1 request",
            b"GET /echopost.v1.EchoPost/Status HTTP/1.1\r\nHost: localhost\r\n\r\n",
            // What the warning shows: the first 32 bytes, escaped.
            r"(it began with GET /echopost.v1.EchoPost/Status)",
        ),
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
            r"(it began with \x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage)",
        ),
    ];
    let mut closes = Vec::new();
    for (what, bytes, _) in &garbage {
        let mut s = UnixStream::connect(&d.socket).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        let closed = closed
            .unwrap_or_else(|| panic!("the daemon did not close the connection that sent {what}"));
        closes.push(format!("{what}: closed after {} ms", closed.as_millis()));
        // Others are still served, on an old connection and on a new one.
        let st = status(&mut before).await;
        assert_eq!(st.pid, u32::try_from(d.pid()).unwrap());
        serve_one(&d).await;
    }

    let logs = wait_logs(&d.dir, Duration::from_secs(5), |l| {
        h2_warnings(l).len() >= garbage.len()
    })
    .await;
    let warnings = h2_warnings(&logs);
    assert_eq!(
        warnings.len(),
        garbage.len(),
        "one warning per garbage connection:\n{logs}"
    );
    for ((what, _, shown), w) in garbage.iter().zip(&warnings) {
        assert!(
            w.contains("does not start with the HTTP/2 preface"),
            "{what}: {w}"
        );
        assert!(
            w.contains(shown),
            "{what}: the warning does not show `{shown}`: {w}"
        );
        assert!(w.contains(&format!("peer=uid {uid}")), "{what}: {w}");
    }
    drop(before);
    d.stop().await;
    say(format!(
        "{test}: {}; a client connected before and new clients were served after each; the \
         session log has exactly one warning per connection, naming the bytes it got and the \
         peer (uid {uid}):\n  {}",
        closes.join(", "),
        warnings.join("\n  ")
    ));
}
