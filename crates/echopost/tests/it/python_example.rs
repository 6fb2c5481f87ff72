//! The Python example (`examples/python/echopost_example.py`) works against the real
//! daemon from the proto alone: it generates its stubs with grpcio-tools at run time,
//! appends over the UNIX socket and reads the records back.
//!
//! The interpreter is `ECHOPOST_TEST_PYTHON`, which `scripts/test` (the test command)
//! points at the virtual environment it installs `examples/python/requirements.txt` into.
//! With that variable set, or under CI (`CI` set), an interpreter that cannot run the
//! example fails the test: passing without its client would prove nothing. A plain
//! `cargo test` without it tries `python3` and, when that lacks grpcio, skips with a
//! message that names `scripts/test`.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use crate::support::daemon::{Area, Daemon, read_all};

/// The interpreter `scripts/test` provides.
const PYTHON_VAR: &str = "ECHOPOST_TEST_PYTHON";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The interpreter to run the example with, and whether it must work: `ECHOPOST_TEST_PYTHON`
/// must (a relative path such as `target/py/bin/python` is taken from the workspace root,
/// a bare name is looked up in `PATH`); `python3` from `PATH` must only under CI.
fn interpreter() -> (OsString, bool) {
    match std::env::var_os(PYTHON_VAR).filter(|p| !p.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            let p = if p.is_relative() && p.components().count() > 1 {
                workspace_root().join(p)
            } else {
                p
            };
            (p.into_os_string(), true)
        }
        None => ("python3".into(), std::env::var_os("CI").is_some()),
    }
}

/// Why `python` cannot run the example, if it cannot.
fn python_missing(python: &OsString) -> Option<String> {
    let shown = python.to_string_lossy();
    match Command::new(python)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            // The traceback's last line says what is missing.
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            Some(format!(
                "{shown} cannot import grpc / grpc_tools ({})",
                last.trim()
            ))
        }
        Err(e) => Some(format!("{shown} cannot be run: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_appends_and_reads_back_over_the_socket() {
    let (python, required) = interpreter();
    if let Some(why) = python_missing(&python) {
        if required {
            panic!(
                "{why}. Run the tests with `scripts/test`: it installs examples/python/requirements.txt \
                 into a virtual environment (target/py) and sets {PYTHON_VAR} to its interpreter"
            );
        }
        // Straight to the stderr handle: unlike `eprintln!`, it is not captured by the test
        // harness, so the skip shows in the output of a passing run.
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED python_example: {why}. `scripts/test` (the test command) installs the \
             example's requirements into target/py and runs this test with them."
        );
        return;
    }
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let root = workspace_root();
    let script = root.join("examples/python/echopost_example.py");
    let socket = area.socket();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .arg("--socket")
            .arg(&socket)
            .current_dir(&root)
            .output()
            .expect("run the Python example")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the example failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("read back 3 records"), "{stdout}");

    // The records really are in the daemon, as the example sent them.
    let mut c = d.client().await;
    let (records, _) = read_all(&mut c, 1, 0).await;
    assert_eq!(records.len(), 3, "{stdout}");
    let first = records[0].record.as_ref().unwrap();
    assert_eq!(first.stream, "python-example");
    assert_eq!(first.route, "POST /events");
    assert_eq!(
        first.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        records[2].record.as_ref().unwrap().payload,
        vec![0, 1, 2, 255]
    );
    drop(c);
    d.stop().await;
}
