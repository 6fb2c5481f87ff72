//! Python grpcio with a plain channel, no options, on the three forms of a UNIX target
//! grpc-core resolves: `unix:ABS`, `unix:///ABS` and `unix:./REL` (relative to the
//! client's working directory). grpc-core sends the socket path (percent-encoded) as
//! `:authority` for all three, which the daemon's HTTP/2 server would refuse without the
//! `:authority` layer; the daemon's debug line shows the layer replaced it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{H2_DEBUG, REPLACED_LINE, fixture, h2_warnings, proto_root, python, run_client, say};
use crate::support::daemon::{Area, Daemon, read_all};

/// One record as `py/grpcio_client.py` builds it for `tag`.
struct Expected {
    id: String,
    stream: String,
    payload: Vec<u8>,
    headers: HashMap<String, String>,
    route: &'static str,
}

/// The three records `grpcio_client.py` appends for `tag` (its `records()`).
fn expected(tag: &str) -> Vec<Expected> {
    let headers = HashMap::from([
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-client".to_owned(), "grpcio".to_owned()),
    ]);
    vec![
        Expected {
            id: format!("{tag}-1"),
            stream: tag.to_owned(),
            payload: br#"{"event": "signup", "user": 42}"#.to_vec(),
            headers,
            route: "POST /events",
        },
        Expected {
            id: format!("{tag}-2"),
            stream: tag.to_owned(),
            payload: "h\u{e9}llo".as_bytes().to_vec(),
            headers: HashMap::new(),
            route: "POST /events",
        },
        Expected {
            id: format!("{tag}-3"),
            stream: tag.to_owned(),
            payload: vec![0, 1, 2, 255],
            headers: HashMap::new(),
            route: "PUT /raw",
        },
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn canonical(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref()
        .canonicalize()
        .unwrap_or_else(|_| p.as_ref().to_path_buf())
}

/// How the target names the socket, relative to the client's working directory.
enum Target {
    /// `unix:` + the absolute path.
    Absolute,
    /// `unix://` + the absolute path (so `unix:///...`).
    Uri,
    /// `unix:./dir/echopost.sock`, run in the area's root.
    Relative,
}

/// Starts a daemon, runs the grpcio client on `target` and asserts everything it got.
async fn grpcio_on(test: &str, target: Target) {
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let mut d = Daemon::start(&area, H2_DEBUG).await;
    let abs = area.socket();
    assert!(abs.is_absolute());
    let (target, cwd) = match target {
        Target::Absolute => (format!("unix:{}", abs.display()), workspace_cwd()),
        Target::Uri => (format!("unix://{}", abs.display()), workspace_cwd()),
        Target::Relative => {
            // The path names the socket only from the area's root: not from this test's
            // working directory, nor the daemon's.
            let rel = Path::new("./dir/echopost.sock");
            assert!(area.root.path().join(rel).exists());
            assert!(!rel.exists());
            (
                format!("unix:{}", rel.display()),
                area.root.path().to_path_buf(),
            )
        }
    };
    let tag = format!("grpcio-{}", test.rsplit("::").next().unwrap_or(test));
    let mut cmd = Command::new(&python);
    cmd.arg(fixture("py/grpcio_client.py"))
        .arg("--target")
        .arg(&target)
        .arg("--proto-root")
        .arg(proto_root())
        .arg("--tag")
        .arg(&tag)
        .current_dir(&cwd);
    let run = run_client(cmd).await;
    run.expect_success("py/grpcio_client.py");
    let r = run.result();
    let ctx = format!("target {target}; client output:\n{}", run.stdout);

    assert_eq!(
        canonical(r["cwd"].as_str().unwrap()),
        canonical(&cwd),
        "{ctx}"
    );
    // Append: the first batch of an empty log.
    assert_eq!(r["append"]["first_sequence"], 1, "{ctx}");
    assert_eq!(r["append"]["last_sequence"], 3, "{ctx}");
    // Status: the three records, this daemon.
    let st = &r["status"];
    assert_eq!(st["first_sequence"], 1, "{ctx}");
    assert_eq!(st["next_sequence"], 4, "{ctx}");
    assert_eq!(st["backlog_records"], 3, "{ctx}");
    assert!(st["backlog_bytes"].as_u64().unwrap() > 0, "{ctx}");
    assert_eq!(st["pid"], d.pid(), "{ctx}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"), "{ctx}");
    assert_eq!(
        canonical(st["dir"].as_str().unwrap()),
        canonical(area.dir()),
        "{ctx}"
    );
    // Read: the records as sent, at the sequences Append gave.
    let want = expected(&tag);
    let read = r["read"].as_array().unwrap();
    assert_eq!(read.len(), want.len(), "{ctx}");
    for (i, (got, w)) in read.iter().zip(&want).enumerate() {
        assert_eq!(got["sequence"], i + 1, "{ctx}");
        assert_eq!(got["id"], w.id.as_str(), "{ctx}");
        assert_eq!(got["stream"], w.stream.as_str(), "{ctx}");
        assert_eq!(got["payload_hex"], hex(&w.payload), "{ctx}");
        assert_eq!(got["route"], w.route, "{ctx}");
        let headers: HashMap<String, String> =
            serde_json::from_value(got["headers"].clone()).unwrap();
        assert_eq!(headers, w.headers, "{ctx}");
        assert!(got["timestamp_unix_nanos"].as_i64().unwrap() > 0, "{ctx}");
    }
    // Health: the server and the service.
    assert_eq!(
        r["health"],
        serde_json::json!({"": "SERVING", "echopost.v1.EchoPost": "SERVING"}),
        "{ctx}"
    );

    // The daemon's own view agrees: the records are stored as grpcio sent them.
    let mut c = d.client().await;
    let (stored, _) = read_all(&mut c, 1, 0).await;
    assert_eq!(stored.len(), want.len());
    for (i, (s, w)) in stored.iter().zip(&want).enumerate() {
        let rec = s.record.as_ref().unwrap();
        assert_eq!(s.sequence, i as u64 + 1);
        assert_eq!(
            (
                rec.id.as_str(),
                rec.stream.as_str(),
                &rec.payload,
                rec.route.as_str()
            ),
            (w.id.as_str(), w.stream.as_str(), &w.payload, w.route)
        );
        assert_eq!(rec.headers, w.headers);
    }
    drop(c);

    // grpc-core sent an :authority the server would refuse; the layer replaced it, and
    // nothing was refused.
    let logs = d.session_logs();
    assert!(
        logs.contains(REPLACED_LINE),
        "no `{REPLACED_LINE}` line: grpcio no longer sends the socket path as :authority, \
         so this test no longer covers the layer; session log:\n{logs}"
    );
    let warnings = h2_warnings(&logs);
    assert!(warnings.is_empty(), "{warnings:#?}");
    d.stop().await;
    say(format!(
        "{test}: grpcio {} insecure_channel({target:?}) with no options (cwd {}): Append -> \
         sequences 1..3; Status next_sequence 4, backlog 3 records, pid {} and dir of this \
         daemon; Read -> the 3 records as sent (ids, streams, payloads, headers, routes, \
         stamped); Health/Check \"\" and echopost.v1.EchoPost SERVING; the daemon stored \
         them so; its :authority was replaced, no HTTP/2 warning ({:.1} s)",
        r["grpcio"].as_str().unwrap_or("?"),
        cwd.display(),
        d.pid(),
        run.elapsed.as_secs_f64()
    ));
}

/// The working directory for the absolute targets: the workspace root.
fn workspace_cwd() -> PathBuf {
    super::workspace_root()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_plain_channel_unix_absolute_path() {
    grpcio_on(
        "real_clients::grpcio::grpcio_plain_channel_unix_absolute_path",
        Target::Absolute,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_plain_channel_unix_uri_absolute_path() {
    grpcio_on(
        "real_clients::grpcio::grpcio_plain_channel_unix_uri_absolute_path",
        Target::Uri,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_plain_channel_unix_relative_path() {
    grpcio_on(
        "real_clients::grpcio::grpcio_plain_channel_unix_relative_path",
        Target::Relative,
    )
    .await;
}
