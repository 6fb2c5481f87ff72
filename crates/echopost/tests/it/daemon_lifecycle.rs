//! Lifecycle of the real binary: second instances, signals, the linger exit (and its race
//! with appends), stale sockets, permissions, startup corruption, configuration errors.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::support::daemon::{
    self, Area, Daemon, EXIT_TIMEOUT, append, code, read_all, run_to_exit, status,
};

#[tokio::test]
async fn second_instance_on_the_same_directory_exits_3() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let (s, err) = run_to_exit(&area, &[]).await;
    assert_eq!(code(s), 3, "stderr:\n{err}");
    assert!(err.contains("another echopost is running on"), "{err}");
    assert!(err.contains(&area.dir().display().to_string()), "{err}");
    // The first instance is unharmed and still owns its socket.
    let mut c = d.client().await;
    append(&mut c, &[b"still here"]).await.unwrap();
    assert!(area.socket().exists());
}

#[tokio::test]
async fn second_instance_on_a_live_socket_exits_3_and_leaves_it_alone() {
    let a = Area::new();
    let b = Area::new();
    let first = Daemon::start(&a, &[]).await;
    let sock = a.socket().display().to_string();
    let (s, err) = run_to_exit(&b, &["--socket", &sock]).await;
    assert_eq!(code(s), 3, "stderr:\n{err}");
    assert!(err.contains("already listening"), "{err}");
    let mut c = first.client().await;
    append(&mut c, &[b"x"]).await.unwrap();
}

#[tokio::test]
async fn sigterm_exits_0_removes_the_socket_and_releases_the_lock() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"a", b"b"]).await.unwrap();
    drop(c);
    d.stop().await;
    assert!(!area.socket().exists());
    // The lock is released: the engine can open the directory, and the records are there.
    let log = echopost_log::Log::open(area.dir(), echopost_log::LogOptions::default())
        .expect("the directory must be unlocked after SIGTERM");
    assert_eq!(log.stats().next_seq, 3);
    let recs = log.reader(1).next_batch(10, 1 << 20).unwrap();
    assert_eq!(recs.len(), 2);
}

#[tokio::test]
async fn sigint_exits_0() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    d.signal(libc::SIGINT);
    let s = d.wait_exit(EXIT_TIMEOUT).await;
    assert_eq!(code(s), 0, "{}", d.stderr());
    assert!(d.session_logs().contains("SIGINT"));
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_still_exits_0() {
    use echopost_proto::v1::AppendRequest;
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<AppendRequest>(4);
    let mut responses = c
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(AppendRequest {
        records: vec![daemon::record(b"in stream".to_vec())],
        ..AppendRequest::default()
    })
    .await
    .unwrap();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.first_sequence, 1);
    // The client keeps the stream open; shutdown must not wait for it forever.
    let started = Instant::now();
    d.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited {:?} for an idle stream",
        started.elapsed()
    );
    let end = responses.message().await;
    assert!(end.is_err(), "the stream should end with a status: {end:?}");
    drop(tx);
    // Everything let go of the log in time: it was closed (not just synced), and no
    // connection had to be cut after the grace period.
    let logs = d.session_logs();
    assert!(logs.contains("lock released"), "{logs}");
    assert!(!logs.contains("still in use"), "{logs}");
    assert!(!logs.contains("grace period"), "{logs}");
}

#[tokio::test]
async fn linger_exit_with_an_empty_backlog() {
    let area = Area::new();
    let started = Instant::now();
    let mut d = Daemon::start(&area, &["--linger", "300ms"]).await;
    let s = d.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code(s), 0, "{}", d.stderr());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "exited before the linger time"
    );
    assert!(!area.socket().exists(), "the socket must be removed");
    let logs = d.session_logs();
    assert!(logs.contains("--linger"), "{logs}");
    assert!(logs.contains("socket removed"), "{logs}");
    // Lock released.
    echopost_log::Log::open(area.dir(), echopost_log::LogOptions::default()).unwrap();
}

#[tokio::test]
async fn appends_postpone_the_linger_exit_and_a_backlog_prevents_it() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &["--linger", "300ms"]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"undelivered"]).await.unwrap();
    // Without an upstream nothing is delivered: the backlog keeps the daemon up well past
    // the linger time.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(d.try_status().is_none(), "exited with a backlog");
    assert_eq!(status(&mut c).await.backlog_records, 1);
    drop(c);
    d.stop().await;
}

/// How the appends of one race round are timed.
#[derive(Clone, Copy, Debug)]
enum Fire {
    /// When the daemon logs that it is closing the gate for the linger exit.
    AtTheDecision,
    /// At a fixed time after the daemon became ready.
    After(Duration),
}

/// One round: six clients with open connections fire appends (each until its first
/// refusal, at most 20) timed by `fire`; then the outcome is checked against what is on
/// disk after a restart. Returns (acknowledged, exited by linger).
async fn race_round(fire: Fire, linger_ms: u64) -> (usize, bool) {
    let area = Area::new();
    let mut d = Daemon::start(&area, &["--linger", &format!("{linger_ms}ms")]).await;
    let ready = Instant::now();
    let go = Arc::new(tokio::sync::Notify::new());
    let acked = Arc::new(Mutex::new(Vec::<(u64, Vec<u8>)>::new()));
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let mut c = d.client().await; // connected before the race
        let (acked, go) = (Arc::clone(&acked), Arc::clone(&go));
        let notified = go.notified_owned();
        tasks.push(tokio::spawn(async move {
            match fire {
                Fire::AtTheDecision => notified.await,
                Fire::After(at) => tokio::time::sleep(at.saturating_sub(ready.elapsed())).await,
            }
            for i in 0..20u64 {
                let p = format!("t{t}-{i}").into_bytes();
                match append(&mut c, &[&p]).await {
                    Ok(a) => acked.lock().await.push((a.first_sequence, p)),
                    Err(e) => {
                        // Refused by the closed gate (UNAVAILABLE), or the connection is
                        // going away. A request sent just as the server's GOAWAY arrives
                        // was never processed (HTTP/2 guarantees it for streams above
                        // the GOAWAY's last stream id); the h2 client reports it as
                        // INTERNAL "h2 protocol error", which only the client can see.
                        let goaway = e.code() == tonic::Code::Internal
                            && format!("{e:?}").contains("GoAway");
                        assert!(
                            goaway
                                || matches!(
                                    e.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::Unknown
                                        | tonic::Code::Cancelled
                                ),
                            "unexpected refusal: {e:?}"
                        );
                        return;
                    }
                }
            }
        }));
    }
    if let Fire::AtTheDecision = fire {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !d.stderr().contains("closing the ingest gate") {
            assert!(
                Instant::now() < deadline,
                "no linger decision: {}",
                d.stderr()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        go.notify_waiters();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    // Give a pending linger exit time to finish, then stop the daemon if it is still up.
    let deadline = Instant::now() + Duration::from_millis(linger_ms * 3);
    while d.try_status().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exited = match d.try_status() {
        Some(s) => {
            assert_eq!(code(s), 0, "{}", d.stderr());
            true
        }
        None => {
            d.stop().await;
            false
        }
    };
    if exited {
        // Nothing is delivered without an upstream, so an acknowledged record would have
        // kept the daemon up.
        assert!(
            acked.is_empty(),
            "{fire:?}: exited after acknowledging {acked:?}"
        );
    }
    let mut again = Daemon::start(&area, &[]).await;
    let mut c = again.client().await;
    let (records, _) = read_all(&mut c, 0, 0).await;
    for (seq, p) in &acked {
        let r = records.iter().find(|r| r.sequence == *seq);
        assert_eq!(
            r.map(|r| &r.record.as_ref().unwrap().payload),
            Some(p),
            "{fire:?}: acknowledged sequence {seq} lost"
        );
    }
    drop(c);
    again.stop().await;
    (acked.len(), exited)
}

/// Appends race with the linger exit: each is either refused or stored, and an
/// acknowledged append is never lost. Rounds fire at the moment of the decision (those
/// must all be refused and the daemon must exit) and at times around it. The
/// slipped-in-before-the-check case is driven deterministically by the unit tests of
/// `lifecycle::try_linger_exit`.
#[tokio::test]
async fn appends_racing_the_linger_exit_are_never_acknowledged_and_lost() {
    // Long enough that the six clients of a round connect before it runs out on a busy
    // machine (connecting is not activity; only appends are).
    let linger_ms = 1000;
    let mut rounds = vec![tokio::spawn(race_round(Fire::AtTheDecision, linger_ms))];
    for k in 0..6u64 {
        let at = Duration::from_millis(linger_ms - 20 + k * 20);
        rounds.push(tokio::spawn(race_round(Fire::After(at), linger_ms)));
    }
    let mut outcomes = Vec::new();
    for r in rounds {
        outcomes.push(r.await.unwrap());
    }
    eprintln!("(acknowledged, exited) per round: {outcomes:?}");
    let (acked, exited) = outcomes[0];
    assert!(exited && acked == 0, "at the decision: {outcomes:?}");
}

#[tokio::test]
async fn stale_socket_is_replaced_and_a_non_socket_is_not() {
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    {
        // Leave a socket file nobody listens on, as a crashed run would.
        let l = std::os::unix::net::UnixListener::bind(area.socket()).unwrap();
        drop(l);
    }
    assert!(area.socket().exists());
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"x"]).await.unwrap();
    drop(c);
    d.stop().await;
    assert!(d.session_logs().contains("replaced a stale socket"));

    std::fs::write(area.socket(), b"not a socket").unwrap();
    let (s, err) = run_to_exit(&area, &[]).await;
    assert_eq!(code(s), 2, "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(area.socket()).unwrap(), b"not a socket");
}

#[tokio::test]
async fn socket_is_0600_in_a_0700_directory() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let meta = std::fs::metadata(area.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(area.dir()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let logs_mode = std::fs::metadata(area.dir().join("logs"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(logs_mode, 0o700);
    drop(d);

    // A socket outside DIR gets its own 0700 directory when it does not exist yet.
    let area = Area::new();
    let sock = area.root.path().join("run").join("ep.sock");
    let s = sock.display().to_string();
    let _d = Daemon::start(&area, &["--socket", &s]).await;
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let pm = std::fs::metadata(sock.parent().unwrap()).unwrap();
    assert_eq!(pm.permissions().mode() & 0o777, 0o700);
}

#[tokio::test]
async fn corruption_found_at_startup_exits_4_naming_the_file() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
        .await
        .unwrap();
    append(&mut c, &[b"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"])
        .await
        .unwrap();
    drop(c);
    d.stop().await;

    // Damage the first record's payload; a valid frame follows, so this is not a torn
    // write that recovery may drop.
    let seg = std::fs::read_dir(area.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"AAAAAAAA")
        .expect("payload in the segment");
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let (s, err) = run_to_exit(&area, &[]).await;
    assert_eq!(code(s), 4, "stderr:\n{err}");
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "{err}");
    assert!(err.contains("echopost verify --dir"), "{err}");
    assert!(err.contains("move the damaged directory aside"), "{err}");
    // Nothing was changed, and no socket was created.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    assert!(!area.socket().exists());
}

#[tokio::test]
async fn configuration_errors_exit_2_with_a_clear_message() {
    let area = Area::new();
    for (args, needle) in [
        (
            &["--upstream", "ftp://example.com"][..],
            "unsupported scheme",
        ),
        (&["--upstream", "localhost:9000"][..], "needs a scheme"),
        (&["--sync", "sometimes"][..], "invalid sync policy"),
        (&["--max-disk", "12 parsecs"][..], "unknown unit"),
        (&["--linger", "3"][..], "unit is required"),
        (&["--max-record-bytes", "1GiB"][..], "--max-record-bytes"),
        (
            &["--upstream", "grpc://h:1", "--upstream-header", "nocolon"][..],
            "Name: value",
        ),
        (&["--log-level", "info,[[["][..], "--log-level"),
    ] {
        let (s, err) = run_to_exit(&area, args).await;
        assert_eq!(code(s), 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    // Nothing was created for a configuration error found before startup.
    assert!(!area.socket().exists());
}

#[tokio::test]
async fn environment_twins_configure_the_daemon() {
    let area = Area::new();
    let dir = area.dir();
    let stderr = area.root.path().join("env-stderr.txt");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echopost"));
    cmd.arg("run");
    for v in daemon::ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.env("ECHOPOST_DIR", &dir)
        .env("ECHOPOST_LINGER", "200ms")
        .env("ECHOPOST_SYNC", "interval:15")
        .env("ECHOPOST_MAX_DISK", "1MiB")
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not linger-exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let err = daemon::read_lossy(&stderr);
    assert_eq!(code(status), 0, "{err}");
    assert!(err.contains("sync=interval:15"), "{err}");
    assert!(err.contains("max_disk_bytes=1048576"), "{err}");
    assert!(err.contains("linger_ms=200"), "{err}");
    assert!(dir.join("logs").is_dir());
}

#[tokio::test]
async fn help_documents_every_flag_and_its_environment_twin() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_echopost"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dir",
        "--socket",
        "--upstream",
        "--sync",
        "--max-disk",
        "--linger",
        "--max-record-bytes",
        "--log-level",
        "--allow-uid",
        "--sink",
        "--health-service",
        "--health-url",
        "--healthy-after",
        "--batch-records",
        "--batch-bytes",
        "--upstream-ca",
        "--upstream-header",
        "--request-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
        let env = format!(
            "ECHOPOST_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(help.contains(&env), "{env} missing from help:\n{help}");
    }
}
