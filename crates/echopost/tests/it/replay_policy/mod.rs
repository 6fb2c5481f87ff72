//! The replay policy (`src/replay/classify.rs`, the driver's split and isolation steps)
//! against real main servers: the real `echopost run` process replays to stock Python
//! servers on loopback, a grpcio `echopost.v1.Sink` (`py/grpc_sink.py`) and an
//! `http.server` application (`py/http_server.py`), each misbehaving the way a real main
//! server does.
//!
//! | module | server | what it proves |
//! |---|---|---|
//! | [`server_level`] | HTTP 401/403/404 on the route (health 200); grpcio without the Sink service (UNIMPLEMENTED) | a server-level refusal pauses replay and dead-letters nothing; `status` shows that reason, not an older one; everything is delivered, in order, once the server is fixed |
//! | [`isolation`] | a grpcio Sink whose handler raises (UNKNOWN) on one record | with `--isolate-after 0s`, only that record is dead-lettered (with a reason), every other one is delivered in order, within a bounded time |
//! | [`too_large`] | grpcio with a 1 MiB receive limit; stock grpcio (4 MiB); HTTP 413 above N bytes; a Sink slower than `--request-timeout` for a whole batch | batches are halved until they fit (or until the server answers in time); the largest record ingest accepts by default fits a stock gRPC server; a record too large alone is dead-lettered with its size |
//! | [`redirects`] | 307/308 to the same origin; 308 to another origin; 301; health 503 with `Retry-After` (seconds, and a date against a `Date` decades off) | same-origin 307/308 are followed with method, body and credentials; other redirects pause replay, dead-letter nothing, send nothing elsewhere, and `status` says to fix `--upstream`; probes wait as asked |
//! | [`forward`] | HTTP 411 without Content-Length; 503 every 50th request; 409 then 2xx | an empty POST carries `Content-Length: 0`; the backoff starts over after each success; `--status-class http:409=transient` retries what the default dead-letters |
//!
//! The servers run as child processes of the test with the Python environment that
//! `scripts/test` prepares (`ECHOPOST_TEST_PYTHON`, as for [`crate::real_clients`]: a
//! missing interpreter or package fails the test under `scripts/test` or CI and skips it
//! otherwise). A server prints `READY <port>` and then one `EVENT <json>` line per request
//! it saw; the test counts those and asserts on them. Some servers take commands on their
//! standard input (switch an answer from 401 to 200, say), which is how a test moves from
//! one phase to the next at a moment it chose, not after a guessed delay.
//!
//! Every test prints (to the real stderr, so a passing run shows it) what it counted:
//! records delivered, dead-lettered, duplicates, attempts, and how long it took.

mod forward;
mod isolation;
mod redirects;
mod server_level;
mod too_large;

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use echopost_proto::v1::{AppendRequest, Record};
use serde_json::Value;

use crate::real_clients::{proto_root, say};
use crate::support::daemon::{Area, Daemon, echopost_async, read_lossy};

/// Upper bound for any wait in these tests: long enough for a slow, shared machine
/// (replay backs off up to 30 s after repeated failures), short enough that a stuck
/// replay fails the test instead of hanging it.
pub const LONG_WAIT: Duration = Duration::from_secs(90);
/// How long a Python server may take to start listening (grpcio-tools generates the
/// stubs first).
const SERVER_START: Duration = Duration::from_secs(30);

/// A program of this suite (`py/...`).
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/replay_policy/py")
        .join(name)
}

/// The Python interpreter with grpcio and friends, or `None` when the test is skipped
/// (see [`crate::real_clients::python`]).
pub fn python(test: &str) -> Option<OsString> {
    crate::real_clients::python(test)
}

/// A Python main server running as a child process; killed when dropped.
pub struct PyServer {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    events: Arc<Mutex<Vec<Value>>>,
    stderr_path: PathBuf,
}

impl PyServer {
    /// Starts `py/<script>` with `args` and waits until it listens. Its stderr goes to a
    /// file in `dir` (shown when a test fails).
    pub async fn start(python: &OsString, script_name: &str, args: &[String], dir: &Path) -> Self {
        PyServer::start_script(python, &script(script_name), args, dir).await
    }

    /// Starts the Python program at `path` (another suite's server) like [`PyServer::start`].
    pub async fn start_script(python: &OsString, path: &Path, args: &[String], dir: &Path) -> Self {
        let script_name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let script_name = script_name.as_str();
        let stderr_path = dir.join(format!(
            "{}-{}.stderr",
            script_name.trim_end_matches(".py"),
            std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
        ));
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_path).expect("server stderr file"),
            ));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script_name}: {e}"));
        let stdout = child.stdout.take().expect("stdout pipe");
        let stdin = child.stdin.take();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<u16>();
        {
            let events = Arc::clone(&events);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = line.strip_prefix("READY ") {
                        let _ = ready_tx.send(port.trim().parse().unwrap_or(0));
                    } else if let Some(j) = line.strip_prefix("EVENT ") {
                        match serde_json::from_str(j) {
                            Ok(v) => events.lock().unwrap().push(v),
                            Err(e) => {
                                events.lock().unwrap().push(serde_json::json!({
                                    "ev": "bad-line", "line": line, "error": e.to_string()
                                }));
                            }
                        }
                    }
                }
            });
        }
        let mut server = PyServer {
            name: script_name.to_owned(),
            child,
            stdin,
            port: 0,
            events,
            stderr_path,
        };
        let start = Instant::now();
        loop {
            match ready_rx.try_recv() {
                Ok(port) => {
                    assert!(port > 0, "{} reported no port", server.name);
                    server.port = port;
                    return server;
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = server.child.wait();
                    panic!(
                        "{} exited before listening; stderr:\n{}",
                        server.name,
                        server.stderr()
                    );
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                start.elapsed() < SERVER_START,
                "{} did not listen within {SERVER_START:?}; stderr:\n{}",
                server.name,
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its events of kind `ev`.
    pub fn events_of(&self, ev: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["ev"] == ev)
            .cloned()
            .collect()
    }

    /// Sends a command line and waits until the server acknowledged it.
    pub async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the server's stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("command {line:?} to {}: {e}", self.name));
        let want = line.trim().to_owned();
        wait_until(&format!("{} acknowledges {line:?}", self.name), || {
            self.events_of("ack").iter().any(|e| e["command"] == want)
        })
        .await;
    }

    /// What it wrote to stderr.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Kills it and waits until it is gone (its port is free again).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh directory, `py/http_server.py` started with `args`, and a daemon replaying to
/// it (`--upstream http://127.0.0.1:PORT` followed by `extra`).
pub async fn http_setup(
    python: &OsString,
    args: &[String],
    extra: &[&str],
) -> (Area, PyServer, Daemon) {
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let (server, d) = http_setup_in(python, &area, args, extra).await;
    (area, server, d)
}

/// [`http_setup`] in an existing `area`.
pub async fn http_setup_in(
    python: &OsString,
    area: &Area,
    args: &[String],
    extra: &[&str],
) -> (PyServer, Daemon) {
    let server = PyServer::start(python, "http_server.py", args, area.root.path()).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut flags = vec!["--upstream", upstream.as_str()];
    flags.extend_from_slice(extra);
    let d = Daemon::start(area, &flags).await;
    (server, d)
}

/// Polls `cond` every 20 ms until it holds; panics after [`LONG_WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG_WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {LONG_WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Order `i` as an application would have posted it: `POST /orders` with a JSON body
/// that starts with its number (the HTTP server reports the first 64 characters).
pub fn order(i: u64) -> Record {
    let mut r = Record {
        id: format!("order-{i:06}"),
        stream: "orders".into(),
        payload: format!("order-{i:06} {{\"order\": {i}, \"qty\": 1}}").into_bytes(),
        headers: Default::default(),
        route: "POST /orders".into(),
        // Set, so that the stored record is exactly the encoded one (ingest stamps a
        // record without a timestamp).
        timestamp_unix_nanos: 1_700_000_000_000_000_000 + i as i64,
    };
    r.headers
        .insert("content-type".into(), "application/json".into());
    r
}

/// The order number in a body (or body prefix) that [`order`] made, if it is one.
pub fn order_number(body: &str) -> Option<u64> {
    body.strip_prefix("order-")?.get(..6)?.parse().ok()
}

/// Appends `records` through the daemon's socket, 500 per request, in order.
pub async fn append(d: &Daemon, records: Vec<Record>) {
    let mut c = d.client().await;
    for chunk in records.chunks(500) {
        c.append(AppendRequest {
            records: chunk.to_vec(),
            ..AppendRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("append: {e}; daemon stderr:\n{}", d.stderr()));
    }
}

/// `echopost status --dir DIR --json`.
pub async fn status_json(dir: &Path) -> Value {
    echopost_async(&["status", "--dir", dir.to_str().unwrap(), "--json"], None)
        .await
        .expect_code(0)
        .json()
}

/// `echopost status --dir DIR`, as an operator reads it.
pub async fn status_text(dir: &Path) -> String {
    echopost_async(&["status", "--dir", dir.to_str().unwrap()], None)
        .await
        .expect_code(0)
        .stdout
}

/// `echopost dead-letters list --dir DIR --json`, one value per dead letter (retried while
/// a running replayer holds the dead-letter log for a moment, exit 3).
pub async fn dead_letters(dir: &Path) -> Vec<Value> {
    let deadline = Instant::now() + LONG_WAIT;
    loop {
        let out = echopost_async(
            &[
                "dead-letters",
                "list",
                "--dir",
                dir.to_str().unwrap(),
                "--json",
            ],
            None,
        )
        .await;
        if out.code == 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return out.expect_code(0).json_lines();
    }
}

/// Records delivered more than once in `ids` (arrival order).
pub fn duplicates<T: Eq + std::hash::Hash + Copy>(ids: &[T]) -> usize {
    let mut seen = std::collections::HashSet::new();
    ids.iter().filter(|i| !seen.insert(**i)).count()
}

/// The daemon's session log and stderr, and a server's stderr, for failure messages.
pub fn context(d: &Daemon, server: &PyServer) -> String {
    format!(
        "daemon session log:\n{}\n{} stderr:\n{}",
        d.session_logs(),
        server.name,
        server.stderr()
    )
}

/// `--proto-root` for `py/grpc_sink.py`.
pub fn proto_arg() -> [String; 2] {
    [
        "--proto-root".to_owned(),
        proto_root().display().to_string(),
    ]
}

/// Prints what a test counted.
pub fn report(test: &str, line: impl AsRef<str>) {
    say(format!("replay_policy::{test}: {}", line.as_ref()));
}
