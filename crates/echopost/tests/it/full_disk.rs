//! A full disk, for real (issue 13): the state directory on a 1 MiB tmpfs mounted in a
//! user namespace (`unshare -Urm`; the test skips with the reason printed where that does
//! not work). Through `echopost_client::Fallback` (which starts the real daemon through a
//! wrapper that counts the starts):
//!
//! 1. appends until the device is full: the refusal is `RESOURCE_EXHAUSTED` naming the
//!    directory, not `UNAVAILABLE`;
//! 2. keeps appending for 6 s: every append fails at once with an error for the
//!    application, and the helper starts only a few daemons (it backs off), not one per
//!    try;
//! 3. a daemon with a healthy main server on the still-full disk delivers every
//!    acknowledged record and exits 0, giving the space back;
//! 4. appends succeed again.
//!
//! The scenario runs in a child process of this test binary inside the namespace: the
//! same test, started again with `ECHOPOST_FULL_DISK_ROOT` set, runs it there. (The
//! engine's own full-disk behaviour is also covered, on every platform, by the simulated
//! file system's capacity in the `cursor_recovery` and `io_faults` suites.)

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_client::{ClientError, DaemonSettings, Fallback, Record};

use crate::support::daemon::{ENV_VARS, ForeignDaemon};
use crate::support::upstream::{GrpcServer, GrpcState};

const INNER: &str = "ECHOPOST_FULL_DISK_ROOT";
const RECORD_BYTES: usize = 2000;

#[test]
fn full_disk_on_a_small_tmpfs() {
    if let Ok(root) = std::env::var(INNER) {
        // Inside the namespace: the scenario itself.
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(full_disk_scenario(PathBuf::from(root)));
        return;
    }
    let probe = Command::new("unshare")
        .args(["-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "full_disk: SKIPPED: `unshare -Urm` + tmpfs mount failed here ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("full_disk: SKIPPED: cannot run `unshare`: {e}");
            return;
        }
    }
    let root = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut inner = Command::new("unshare");
    for v in ENV_VARS {
        // The daemons inherit the scenario's environment.
        inner.env_remove(v);
    }
    let status = inner
        .arg("-Urm")
        .arg(exe)
        .args([
            "--exact",
            "full_disk::full_disk_on_a_small_tmpfs",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, root.path())
        .status()
        .expect("run the scenario in a user namespace");
    assert!(status.success(), "the full-disk scenario failed: {status}");
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = format!("record {i} ").into_bytes();
    v.resize(RECORD_BYTES, b'a' + (i % 26) as u8);
    v
}

fn starts(counter: &Path) -> usize {
    std::fs::read_to_string(counter)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits until no process holds `DIR/LOCK` (a daemon refusing on the full disk is on its
/// way out).
async fn wait_unlocked(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let free = match std::fs::File::open(dir.join("LOCK")) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if free {
            return;
        }
        assert!(Instant::now() < deadline, "a daemon kept {dir:?} locked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fallback(dir: &Path, socket: &Path, binary: &Path) -> Fallback {
    let mut s = DaemonSettings::new(dir);
    s.binary = binary.to_path_buf();
    s.socket = Some(socket.to_path_buf());
    s.extra_args = vec!["--linger".into(), "1s".into()];
    s.start_timeout = Duration::from_secs(5);
    s.call_timeout = Duration::from_secs(5);
    Fallback::new(s)
}

/// The scenario, run inside the user namespace with `root` as its scratch directory.
async fn full_disk_scenario(root: PathBuf) {
    let disk = root.join("disk");
    std::fs::create_dir_all(&disk).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("mount");
    assert!(mounted.success(), "mount tmpfs: {mounted}");
    let dir = disk.join("dir");
    let socket = root.join("ep.sock");
    let counter = root.join("starts");
    let wrapper = root.join("echopost-counting");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho start >> '{}'\nexec '{}' \"$@\"\n",
            counter.display(),
            env!("CARGO_BIN_EXE_echopost")
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // 1. Fill the device.
    let app = fallback(&dir, &socket, &wrapper);
    let mut acknowledged = BTreeSet::new();
    let full = loop {
        let i = acknowledged.len() as u64;
        assert!(
            i < 5000,
            "a 1 MiB device cannot hold {i} records of {RECORD_BYTES} bytes"
        );
        match app
            .append(vec![Record {
                payload: payload(i),
                ..Record::default()
            }])
            .await
        {
            Ok(a) => {
                acknowledged.insert(a.first_sequence);
            }
            Err(e) => break e,
        }
    };
    let ClientError::Status(status) = &full else {
        panic!("the full device must be a status from the daemon, got {full:?}");
    };
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "a full disk is RESOURCE_EXHAUSTED, not UNAVAILABLE: {status:?}"
    );
    assert!(
        status.message().contains(&format!(
            "no space left on the device holding {}",
            dir.display()
        )),
        "{status:?}"
    );
    let starts_filling = starts(&counter);

    // 2. The application keeps trying: errors come back, daemons are not started in a loop.
    let t = Instant::now();
    let mut tries = 0;
    let mut slowest = Duration::ZERO;
    while t.elapsed() < Duration::from_secs(6) {
        let one = Instant::now();
        let r = app
            .append(vec![Record {
                payload: payload(9999),
                ..Record::default()
            }])
            .await;
        assert!(r.is_err(), "the device is still full");
        slowest = slowest.max(one.elapsed());
        tries += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let starts_retrying = starts(&counter) - starts_filling;
    assert!(
        starts_retrying <= 8,
        "{starts_retrying} daemons started for {tries} refused appends in 6 s: the helper must back off"
    );
    assert!(
        tries > 2 * starts_retrying,
        "{tries} tries started {starts_retrying} daemons: most must get the error without a start"
    );
    wait_unlocked(&dir).await;
    let bytes_full = bytes_in(&dir);

    // 3. A healthy main server: the next start on the still-full disk drains it.
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut drain = Command::new(env!("CARGO_BIN_EXE_echopost"))
        .args(["run", "--dir"])
        .arg(&dir)
        .arg("--socket")
        .arg(&socket)
        .args(["--upstream", &server.url(), "--linger", "300ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(root.join("drain.stderr")).expect("stderr file"),
        ))
        .spawn()
        .expect("start the draining daemon");
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = drain.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = drain.kill();
            panic!("the draining daemon did not exit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(root.join("drain.stderr")).unwrap_or_default();
    assert_eq!(exit.code(), Some(0), "drain on a full disk: {stderr}");
    let delivered: Vec<u64> = state.delivered_seqs();
    let distinct: BTreeSet<u64> = delivered.iter().copied().collect();
    let missing: Vec<&u64> = acknowledged.difference(&distinct).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    let bytes_drained = bytes_in(&dir);
    assert!(
        bytes_drained < bytes_full / 4,
        "delivered data given back: {bytes_full} bytes before, {bytes_drained} after"
    );
    server.stop().await;

    // 4. Room again: a new application's append is stored.
    let again = fallback(&dir, &socket, &wrapper);
    let a = again
        .append(vec![Record {
            payload: payload(10_000),
            ..Record::default()
        }])
        .await
        .expect("the drained disk takes appends again");
    assert!(a.first_sequence > *acknowledged.last().expect("records"));
    // That daemon has no main server, so it would never linger out: stop it, or it
    // outlives the test (with its namespace and tmpfs).
    let status = again
        .ensure_running()
        .await
        .expect("the daemon that took the append")
        .status()
        .await
        .expect("its status");
    let daemon = ForeignDaemon {
        pid: status.pid as i32,
    };

    println!(
        "full disk (1 MiB tmpfs): {} records acknowledged before ENOSPC ({} daemon start(s)); \
         then {tries} refused appends in 6 s started {starts_retrying} daemon(s) (slowest \
         refusal {slowest:?}); the next start delivered {} records ({} distinct, every \
         acknowledged one) and exited 0; the directory went from {bytes_full} to \
         {bytes_drained} bytes; total daemon starts {}",
        acknowledged.len(),
        starts_filling,
        delivered.len(),
        distinct.len(),
        starts(&counter)
    );
    daemon.stop(Duration::from_secs(10)).await;
    assert!(!daemon.alive(), "the last daemon did not stop on SIGTERM");
}
