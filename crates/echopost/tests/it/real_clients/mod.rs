//! Stock gRPC clients of other languages, and deliberately odd HTTP/2 clients, against the
//! real daemon on its UNIX socket: the contract is that any stock client works with
//! `unix:PATH` and no options, whatever `:authority` it sends (see
//! `src/daemon/h2/mod.rs`), and that a connection which never speaks HTTP/2 costs the
//! daemon nothing but one warning.
//!
//! | module | client | what it proves |
//! |---|---|---|
//! | [`grpcio`] | Python grpcio, `py/grpcio_client.py` | `Append`, `Status`, `Read`, health `Check` over `unix:ABS`, `unix:///ABS`, `unix:./REL` |
//! | [`grpc_js`] | Node @grpc/grpc-js, `node/client.js` | `Append`, `Status` over `unix:ABS` |
//! | [`raw_h2`] | Python `h2`, `py/h2_authority.py` | a `Status` call with each odd `:authority` is answered |
//! | [`no_preface`] | a Rust socket | silent and garbage connections are closed and logged; others are served |
//!
//! The clients come from the test command, `scripts/test`: the Python packages are in the
//! virtual environment it makes (`examples/python/requirements.txt` and
//! `py/requirements.txt`), whose interpreter it exports as `ECHOPOST_TEST_PYTHON`; the Node
//! packages are installed with `npm ci` into `node/node_modules` (from the committed
//! `node/package-lock.json`), and the node it used is exported as `ECHOPOST_TEST_NODE`.
//! With the variable of a client set, or under CI (`CI` set), a client that cannot run
//! fails its test; a plain `cargo test` without them tries `python3` / `node` from `PATH`
//! and skips, with a message naming `scripts/test`, when they lack the packages.
//!
//! Every client runs as a child process with a time limit ([`CLIENT_TIMEOUT`]), and prints
//! `RESULT <json>` lines that the test asserts on; every test writes what it checked to
//! stderr (uncaptured, so it shows in a passing run).

mod grpc_js;
mod grpcio;
mod no_preface;
mod raw_h2;

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The Python interpreter `scripts/test` provides.
pub const PYTHON_VAR: &str = "ECHOPOST_TEST_PYTHON";
/// The node `scripts/test` installed the Node client's packages for.
pub const NODE_VAR: &str = "ECHOPOST_TEST_NODE";
/// How long one client program may run before it is killed and its test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Python clients import: grpcio, grpcio-tools, grpcio-health-checking, h2.
const PYTHON_IMPORTS: &str = "import grpc, grpc_tools, grpc_health.v1.health_pb2, h2.connection";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A file of this suite's fixtures (`py/...`, `node/...`).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/real_clients")
        .join(rel)
}

/// The repository's proto root (holding `echopost/v1/echopost.proto`).
pub fn proto_root() -> PathBuf {
    workspace_root().join("proto")
}

/// Writes a line to the real stderr: unlike `eprintln!`, it is not captured by the test
/// harness, so what a test checked shows in the output of a passing run.
pub fn say(line: impl AsRef<str>) {
    let _ = writeln!(std::io::stderr().lock(), "{}", line.as_ref());
}

/// A program from environment variable `var` (a relative path with a directory is taken
/// from the workspace root, a bare name is looked up in `PATH`), else `default` from
/// `PATH`; and whether its client must work (`var` set, or `CI` set).
fn program(var: &str, default: &str) -> (OsString, bool) {
    match std::env::var_os(var).filter(|p| !p.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            let p = if p.is_relative() && p.components().count() > 1 {
                workspace_root().join(p)
            } else {
                p
            };
            (p.into_os_string(), true)
        }
        None => (default.into(), std::env::var_os("CI").is_some()),
    }
}

/// Runs `cmd` briefly to see whether a client can run; `Err` says why not.
fn probe(mut cmd: Command, what: &str) -> Result<(), String> {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            // The last line of a traceback or a node error says what is missing.
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .find(|l| l.contains("Error"))
                .or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
                .unwrap_or("");
            Err(format!("{what} ({})", last.trim()))
        }
        Err(e) => Err(format!("{what}: cannot be run: {e}")),
    }
}

/// Fails the test (client required) or reports the skip (not required).
fn unavailable(test: &str, why: &str, var: &str, required: bool) {
    if required {
        panic!(
            "{why}. Run the tests with `scripts/test`: it installs the real clients (a Python \
             virtual environment in target/py, the Node packages in \
             crates/echopost/tests/it/real_clients/node/node_modules) and sets {var}"
        );
    }
    say(format!(
        "SKIPPED {test}: {why}. `scripts/test` (the test command) installs the real clients \
         and runs this test with them."
    ));
}

/// The Python interpreter with the suite's packages, or `None` (after reporting the skip)
/// when it has none and none is required.
pub fn python(test: &str) -> Option<OsString> {
    let (python, required) = program(PYTHON_VAR, "python3");
    let mut cmd = Command::new(&python);
    cmd.args(["-c", PYTHON_IMPORTS]);
    let what = format!("{} cannot `{PYTHON_IMPORTS}`", python.to_string_lossy());
    match probe(cmd, &what) {
        Ok(()) => Some(python),
        Err(why) => {
            unavailable(test, &why, PYTHON_VAR, required);
            None
        }
    }
}

/// node, able to load the Node client's packages from `node/node_modules`, or `None`
/// (after reporting the skip) when it cannot and it is not required.
pub fn node(test: &str) -> Option<OsString> {
    let (node, required) = program(NODE_VAR, "node");
    let mut cmd = Command::new(&node);
    cmd.args([
        "-e",
        "require('@grpc/grpc-js'); require('@grpc/proto-loader')",
    ])
    .current_dir(fixture("node"));
    let what = format!(
        "{} cannot load @grpc/grpc-js and @grpc/proto-loader from {} (npm ci there installs them)",
        node.to_string_lossy(),
        fixture("node/node_modules").display()
    );
    match probe(cmd, &what) {
        Ok(()) => Some(node),
        Err(why) => {
            unavailable(test, &why, NODE_VAR, required);
            None
        }
    }
}

/// What a client program did.
#[derive(Debug)]
pub struct ClientRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ClientRun {
    /// Panics with everything the program printed unless it exited with status 0.
    pub fn expect_success(&self, what: &str) -> &ClientRun {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The JSON documents of its `RESULT <json>` lines, in order.
    pub fn results(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("not JSON ({e}): {j}")))
            .collect()
    }

    /// The single `RESULT` document.
    pub fn result(&self) -> serde_json::Value {
        let mut r = self.results();
        assert_eq!(
            r.len(),
            1,
            "expected one RESULT line; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        r.remove(0)
    }
}

/// Runs `cmd` to completion with [`CLIENT_TIMEOUT`] (killed and failing after it), on the
/// blocking pool so the test's runtime keeps running.
pub async fn run_client(mut cmd: Command) -> ClientRun {
    tokio::task::spawn_blocking(move || {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        let mut out_pipe = child.stdout.take().expect("stdout pipe");
        let mut err_pipe = child.stderr.take().expect("stderr pipe");
        let out = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out_pipe.read_to_end(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err_pipe.read_to_end(&mut s);
            s
        });
        let (status, timed_out) = loop {
            if let Some(s) = child.try_wait().expect("wait for the client") {
                break (s, false);
            }
            if start.elapsed() > CLIENT_TIMEOUT {
                let _ = child.kill();
                break (child.wait().expect("wait for the killed client"), true);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let run = ClientRun {
            status,
            stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
            elapsed: start.elapsed(),
        };
        assert!(
            !timed_out,
            "{shown} did not finish within {CLIENT_TIMEOUT:?} and was killed:\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        run
    })
    .await
    .expect("the client's task")
}

/// The session log's lines at level WARN from the daemon's HTTP/2 layer (the warnings
/// about connections).
pub fn h2_warnings(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(" WARN ") && l.contains("echopost::daemon::h2"))
        .map(str::to_owned)
        .collect()
}

/// A daemon argument that logs the HTTP/2 layer at debug level, which includes the line
/// saying an `:authority` was replaced.
pub const H2_DEBUG: &[&str] = &["--log-level", "info,echopost::daemon::h2=debug"];
/// The debug line the HTTP/2 layer writes (once per connection) when it replaced an
/// `:authority`.
pub const REPLACED_LINE: &str = "replaced an :authority the HTTP/2 server would refuse";
