//! The Python example (`examples/python/echopost_example.py`) works against the real
//! daemon from the proto alone: it generates its stubs with grpcio-tools at run time,
//! appends over the UNIX socket and reads the records back.
//!
//! CI installs `examples/python/requirements.txt` and sets `CI`, so there a missing
//! grpcio is a failure. On a developer machine without it the test prints how to install
//! it and passes, so `cargo test` does not demand a Python setup.

use std::path::PathBuf;
use std::process::Command;

use crate::support::daemon::{Area, Daemon, read_all};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Why the example cannot run here, if it cannot.
fn python_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "python3 cannot import grpc / grpc_tools: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("python3 cannot be run: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_appends_and_reads_back_over_the_socket() {
    if let Some(why) = python_missing() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{why}; CI must run `python3 -m pip install -r examples/python/requirements.txt` first"
            );
        }
        eprintln!(
            "SKIPPED python_example: {why}. Install it with `python3 -m pip install -r examples/python/requirements.txt` to run this test."
        );
        return;
    }
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let root = workspace_root();
    let script = root.join("examples/python/echopost_example.py");
    let socket = area.socket();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .arg("--socket")
            .arg(&socket)
            .current_dir(&root)
            .output()
            .expect("run python3")
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
