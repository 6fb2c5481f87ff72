//! A daemon stopped with SIGSTOP: it holds its directory, and the kernel still accepts
//! connections on its socket, but nothing answers. Every client must give up within its
//! deadline instead of hanging (before, `echopost send` blocked for 300 s and
//! `send --start-daemon` for 600 s), none may start a second daemon for the directory,
//! and after SIGCONT everything works again with the same, single daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use echopost_client::{Client, ClientError, DaemonSettings, Fallback, Record};

use crate::support::daemon::{Area, CliOutput, Daemon, daemons_that_ran, echopost, session_logs};

/// The deadline every client is given here.
const DEADLINE: Duration = Duration::from_secs(2);
/// Slack on top of it: starting the (debug) binary on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

fn timed(f: impl FnOnce() -> CliOutput) -> (CliOutput, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn assert_within_deadline(what: &str, took: Duration) {
    eprintln!("stopped daemon: {what} gave up after {took:?} (deadline {DEADLINE:?})");
    assert!(
        took < DEADLINE + MARGIN,
        "{what} took {took:?}, deadline {DEADLINE:?}"
    );
}

/// The session log files of `dir`: one per daemon process ever started there (each
/// creates its log before it tries the directory's lock).
fn session_log_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn fallback(area: &Area) -> Fallback {
    let mut s = DaemonSettings::new(area.dir());
    s.binary = env!("CARGO_BIN_EXE_echopost").into();
    s.extra_args = vec!["--linger".into(), "1h".into()];
    s.start_timeout = DEADLINE;
    s.call_timeout = DEADLINE;
    Fallback::new(s)
}

fn record(payload: &str) -> Record {
    Record {
        payload: payload.as_bytes().to_vec(),
        ..Record::default()
    }
}

/// Resumes the daemon however the test ends, so that its `Drop` finds it runnable.
struct Continue(i32);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the test's own child.
        unsafe {
            libc::kill(self.0, libc::SIGCONT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gives_up_within_its_deadline_and_all_works_after_sigcont() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let dir = area.dir().display().to_string();
    let socket = area.socket();
    echopost(&["send", "--dir", &dir], Some(b"a\nb\n")).expect_code(0);
    let logs_before = session_log_files(&area.dir());
    assert_eq!(logs_before.len(), 1, "{logs_before:?}");

    d.signal(libc::SIGSTOP);
    let resume = Continue(d.pid());

    // `send`: connects (the kernel queues the connection), then its append times out.
    let (out, took) = timed(|| {
        echopost(
            &["send", "--dir", &dir, "--timeout", "2s"],
            Some(b"while stopped\n"),
        )
    });
    let out = out.expect_code(3);
    assert!(
        out.stderr.contains("did not answer Append within 2s"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("may or may not"), "{}", out.stderr);
    assert!(took >= DEADLINE, "gave up before its deadline: {took:?}");
    assert_within_deadline("send", took);

    // `status`: the Status call times out, and the directory is locked: exit 3.
    let (out, took) = timed(|| echopost(&["status", "--dir", &dir, "--timeout", "2s"], None));
    let out = out.expect_code(3);
    assert!(out.stderr.contains("not answering"), "{}", out.stderr);
    assert!(out.stderr.contains("within 2s"), "{}", out.stderr);
    assert_within_deadline("status", took);

    // `inspect`.
    let (out, took) = timed(|| echopost(&["inspect", "--dir", &dir, "--timeout", "2s"], None));
    let out = out.expect_code(3);
    assert!(
        out.stderr.contains("did not answer Status within 2s"),
        "{}",
        out.stderr
    );
    assert_within_deadline("inspect", took);

    // `send --start-daemon`: the lock is held, so it starts nothing and gives up.
    let (out, took) = timed(|| {
        echopost(
            &[
                "send",
                "--start-daemon",
                "--dir",
                &dir,
                "--timeout",
                "2s",
                "--",
                "--linger",
                "1h",
            ],
            Some(b"while stopped\n"),
        )
    });
    let out = out.expect_code(3);
    assert!(
        out.stderr.contains("No second daemon was started"),
        "{}",
        out.stderr
    );
    assert_within_deadline("send --start-daemon", took);

    // `Fallback`, in this process.
    let f = fallback(&area);
    let t = Instant::now();
    let e = f.append(vec![record("while stopped")]).await.unwrap_err();
    let took = t.elapsed();
    assert!(matches!(e, ClientError::NotAnswering { .. }), "{e:?}");
    assert_within_deadline("Fallback::append", took);

    // `Client`, with its call deadline.
    let t = Instant::now();
    let c = Client::builder(&socket).timeout(DEADLINE).connect().await;
    let e = match c {
        Ok(c) => c.append(vec![record("while stopped")]).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(e.is_timeout(), "{e:?}");
    assert_within_deadline("Client::append", t.elapsed());

    // Nothing was started: no daemon process even tried the directory.
    assert_eq!(session_log_files(&area.dir()), logs_before);

    // SIGCONT: everything works again, with the same daemon.
    drop(resume);
    let out = echopost(
        &["send", "--dir", &dir, "--timeout", "10s", "--json"],
        Some(b"after\n"),
    )
    .expect_code(0);
    assert_eq!(out.json()["records"], 1);
    let st = echopost(&["status", "--dir", &dir, "--json"], None)
        .expect_code(0)
        .json();
    assert_eq!(st["mode"], "online");
    assert_eq!(st["pid"], d.pid());
    let lines = echopost(&["inspect", "--dir", &dir, "--json", "--limit", "0"], None)
        .expect_code(0)
        .json_lines();
    let payloads: Vec<&str> = lines.iter().filter_map(|l| l["payload"].as_str()).collect();
    for p in ["a", "b", "after"] {
        assert!(payloads.contains(&p), "{p} missing from {payloads:?}");
    }
    f.append(vec![record("fallback after")]).await.unwrap();
    echopost(
        &[
            "send",
            "--start-daemon",
            "--dir",
            &dir,
            "--",
            "--linger",
            "1h",
        ],
        Some(b"start-daemon after\n"),
    )
    .expect_code(0);
    let c = Client::builder(&socket)
        .timeout(DEADLINE)
        .connect()
        .await
        .unwrap();
    assert_eq!(c.status().await.unwrap().pid as i32, d.pid());

    // Exactly one daemon ever ran here: one session log, the one of this pid.
    let logs = session_log_files(&area.dir());
    assert_eq!(logs, logs_before, "{}", session_logs(&area.dir()));
    assert!(logs[0].ends_with(&format!("-{}.log", d.pid())), "{logs:?}");
    assert_eq!(daemons_that_ran(&area.dir()), 1);
    assert!(
        d.try_status().is_none(),
        "the daemon exited: {}",
        d.stderr()
    );
    d.stop().await;
}
