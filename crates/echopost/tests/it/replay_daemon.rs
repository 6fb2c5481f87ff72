//! Replay through the real `echopost` binary: `echopost run --upstream URL` against a real
//! gRPC main server on loopback, on a directory whose backlog the test wrote with the
//! engine beforehand. Covers what only a process can show: exit when drained, SIGKILL in
//! the middle of a replay and a restart, exit code 4 on corruption, the dead-letter
//! commands, and the source id being stable across runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_log::LogOptions;
use prost::Message;

use crate::support::daemon;
use crate::support::replay::*;
use crate::support::upstream::*;

fn echopost(args: &[&str], stderr: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_echopost"));
    for v in daemon::ENV_VARS {
        c.env_remove(v);
    }
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(stderr).unwrap()));
    c
}

/// `echopost run` on `dir`, replaying to `upstream`.
fn run_daemon(root: &Path, dir: &Path, upstream: &str, extra: &[&str], tag: &str) -> Child {
    let socket = root.join(format!("{tag}.sock"));
    let mut args = vec![
        "run",
        "--dir",
        dir.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--upstream",
        upstream,
        "--linger",
        "300ms",
    ];
    args.extend_from_slice(extra);
    echopost(&args, &root.join(format!("{tag}.stderr")))
        .spawn()
        .unwrap()
}

async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("echopost did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    let _ = child.wait();
}

fn stderr_of(root: &Path, tag: &str) -> String {
    std::fs::read_to_string(root.join(format!("{tag}.stderr"))).unwrap_or_default()
}

/// Session logs and stderr of every run, for failure messages.
fn all_logs(root: &Path, dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(root).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "stderr") {
            s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("logs")) {
        for e in rd.flatten() {
            s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    s
}

fn prefill(dir: &Path, n: u64, opts: LogOptions) {
    let log = open_log_with(dir, opts);
    fill(&log, 1, n, record);
    drop(log);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn first_seq(seg: &Path) -> u64 {
    seg.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_drains_the_backlog_and_exits() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dir");
    prefill(&dir, 5000, LogOptions::default());
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;

    let mut d = run_daemon(root.path(), &dir, &server.url(), &[], "run1");
    let status = wait_exit(&mut d, WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", all_logs(root.path(), &dir));
    assert_eq!(state.delivered_seqs(), (1..=5000).collect::<Vec<_>>());
    let source = std::fs::read_to_string(dir.join("source-id")).unwrap();
    for (s, _, _) in state.batches.lock().unwrap().iter() {
        assert_eq!(
            s.trim(),
            source.trim(),
            "DeliverRequest.source is the directory's id"
        );
    }
    assert!(!source.trim().is_empty());
    let log = open_log(&dir);
    assert_eq!(log.stats().backlog_records, 0);
    assert_eq!(log.stats().acked, 5000);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_mid_replay_then_restarted_delivers_everything_in_order() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dir");
    let n = 30_000;
    prefill(&dir, n, LogOptions::default());
    let state = Arc::new(GrpcState::default());
    *state.deliver_delay.lock().unwrap() = Duration::from_millis(5);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let args = ["--batch-records", "500"];

    let mut d = run_daemon(root.path(), &dir, &server.url(), &args, "run1");
    eventually("a third delivered", || {
        state.delivered.lock().unwrap().len() >= 10_000
    })
    .await;
    sigkill(&mut d);
    let delivered_before = state.delivered.lock().unwrap().len();
    assert!(
        delivered_before < n as usize,
        "killed too late to mean anything"
    );

    *state.deliver_delay.lock().unwrap() = Duration::ZERO;
    let mut d = run_daemon(root.path(), &dir, &server.url(), &args, "run2");
    let status = wait_exit(&mut d, WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", all_logs(root.path(), &dir));

    let seqs = state.delivered_seqs();
    assert_in_order_none_skipped(&seqs, n, &[]);
    assert_eq!(first_deliveries(&seqs), (1..=n).collect::<Vec<_>>());
    // Same records, same dedupe key: the source id survives the crash.
    let sources: std::collections::HashSet<String> = state
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.0.clone())
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(open_log(&dir).stats().backlog_records, 0);
    server.stop().await;
}

/// Issue 13: a missing or unreadable cursor is not corruption. The daemon starts from the
/// oldest segment on disk, warns with the records it will deliver again, and delivers
/// them all in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_with_an_unreadable_cursor_redelivers_from_the_oldest_segment() {
    for how in ["missing", "empty", "bad checksum"] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dir");
        let n = 6000;
        let opts = LogOptions {
            segment_bytes: 64 << 10,
            ..LogOptions::default()
        };
        prefill(&dir, n, opts.clone());
        let acked = 2950;
        open_log_with(&dir, opts).ack(acked).unwrap();
        let first_on_disk = first_seq(&segments(&dir)[0]);
        assert!(
            first_on_disk > 1 && first_on_disk <= acked,
            "a delivered part is still on disk: {first_on_disk}"
        );
        let cursor = dir.join("cursor");
        match how {
            "missing" => std::fs::remove_file(&cursor).unwrap(),
            "empty" => std::fs::write(&cursor, b"").unwrap(),
            _ => {
                let mut b = std::fs::read(&cursor).unwrap();
                for at in [18, 512 + 18] {
                    b[at] ^= 0x40;
                }
                std::fs::write(&cursor, b).unwrap();
            }
        }
        let state = Arc::new(GrpcState::default());
        let server = GrpcServer::start(Arc::clone(&state), None, None).await;
        let mut d = run_daemon(root.path(), &dir, &server.url(), &[], "run");
        let status = wait_exit(&mut d, WAIT).await;
        let logs = all_logs(root.path(), &dir);
        assert_eq!(status.code(), Some(0), "{how}: {logs}");
        assert_eq!(
            state.delivered_seqs(),
            (first_on_disk..=n).collect::<Vec<_>>(),
            "{how}: everything from the oldest segment, in order"
        );
        let said = format!("records {first_on_disk}..={n}");
        assert!(
            logs.contains("acknowledgement cursor") && logs.contains(&said),
            "{how}: the warning names what is delivered again ({said}): {logs}"
        );
        assert_eq!(open_log(&dir).stats().acked, n, "{how}");
        println!(
            "cursor {how}: {} records delivered from the oldest segment ({} of them delivered before)",
            n - first_on_disk + 1,
            acked + 1 - first_on_disk
        );
        server.stop().await;
    }
}

/// Issue 13: `verify` recommends `echopost salvage` with the exact command; salvage
/// refuses while the directory is owned, then quarantines the damaged segment byte for
/// byte, prints the exact lost range, and `run` delivers every other record in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salvage_keeps_every_readable_record_and_run_delivers_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dir");
    let n = 6000;
    prefill(
        &dir,
        n,
        LogOptions {
            segment_bytes: 64 << 10,
            ..LogOptions::default()
        },
    );
    let segs = segments(&dir);
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let victim = segs[segs.len() / 2].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    // The frame in the middle of the victim: flip a byte of its body.
    let mut at = echopost_log::format::SEGMENT_HEADER_LEN as usize;
    let mut frames = Vec::new();
    while let Ok((h, _)) = echopost_log::format::parse_frame(&bytes[at..]) {
        if h.kind == echopost_log::format::FrameKind::Batch {
            frames.push((h.first_seq, h.end_seq() - 1, at));
        }
        at += h.frame_len() as usize;
    }
    let (lost_a, lost_b, off) = frames[frames.len() / 2];
    bytes[off + echopost_log::format::FRAME_HEADER_LEN + 2] ^= 0x20;
    std::fs::write(&victim, &bytes).unwrap();
    let d = dir.to_str().unwrap();
    let cli = |args: &[&str], tag: &str| {
        let out = echopost(args, &root.path().join(format!("{tag}.stderr")))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr_of(root.path(), tag),
        )
    };

    let (code, out, _) = cli(&["verify", "--dir", d], "verify");
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains(&format!("`echopost salvage --dir {d}`")),
        "{out}"
    );

    // Owned by another process (as a daemon holds it): refused, nothing changed.
    let lock = std::fs::File::open(dir.join("LOCK")).unwrap();
    lock.lock().unwrap();
    let (code, _, err) = cli(&["salvage", "--dir", d], "salvage-locked");
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), bytes);
    lock.unlock().unwrap();

    let (code, out, err) = cli(&["salvage", "--dir", d], "salvage");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("lost         sequences {lost_a}..={lost_b} (")),
        "exact lost range {lost_a}..={lost_b}: {out}"
    );
    let aside = dir.join("quarantine").join(victim.file_name().unwrap());
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "every byte kept");
    let logged = std::fs::read_to_string(dir.join("quarantine/salvage.log")).unwrap();
    assert!(logged.contains(&format!("{lost_a}..={lost_b}")), "{logged}");
    let (code, out, _) = cli(&["verify", "--dir", d], "verify-after");
    assert_eq!(code, Some(0), "{out}");

    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut r = run_daemon(root.path(), &dir, &server.url(), &[], "run");
    let status = wait_exit(&mut r, WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", all_logs(root.path(), &dir));
    let want: Vec<u64> = (1..=n).filter(|s| !(lost_a..=lost_b).contains(s)).collect();
    assert_eq!(state.delivered_seqs(), want, "everything else, in order");
    println!(
        "salvage: lost {lost_a}..={lost_b} ({} records), {} delivered in order after it",
        lost_b - lost_a + 1,
        want.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_4_on_corruption_in_the_middle_of_the_backlog() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dir");
    let n = 6000;
    {
        let log = open_log_with(
            &dir,
            LogOptions {
                segment_bytes: 64 << 10,
                ..LogOptions::default()
            },
        );
        for i in 1..=n {
            log.append(&[record(i).encode_to_vec()]).unwrap();
        }
    }
    let segs = segments(&dir);
    assert!(segs.len() >= 4);
    let damaged = segs[2].clone();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&damaged, bytes).unwrap();

    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut d = run_daemon(root.path(), &dir, &server.url(), &[], "run1");
    let status = wait_exit(&mut d, WAIT).await;
    let logs = all_logs(root.path(), &dir);
    assert_eq!(status.code(), Some(4), "{logs}");
    let name = damaged.file_name().unwrap().to_str().unwrap();
    assert!(logs.contains(name), "the damaged file is named: {logs}");

    let seqs = state.delivered_seqs();
    let k = *seqs.last().unwrap();
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>());
    assert!(k >= first_seq(&damaged) - 1 && k < first_seq(&segs[3]));
    for s in &segs[2..] {
        assert!(s.exists(), "{} was deleted", s.display());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_requeued_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dir");
    prefill(&dir, 3000, LogOptions::default());
    let state = Arc::new(GrpcState::default());
    state.poison_ids.lock().unwrap().insert("rec-1500".into());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;

    let mut d = run_daemon(root.path(), &dir, &server.url(), &[], "run1");
    let status = wait_exit(&mut d, WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", all_logs(root.path(), &dir));
    assert_in_order_none_skipped(&state.delivered_seqs(), 3000, &[1500]);

    let dir_s = dir.to_str().unwrap();
    let out = echopost(
        &["dead-letters", "list", "--dir", dir_s, "--json"],
        &root.path().join("list.stderr"),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr_of(root.path(), "list"));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["sequence"], 1500);
    assert_eq!(lines[0]["id"], "rec-1500");
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("malformed"),
        "{}",
        lines[0]
    );

    let out = echopost(
        &["dead-letters", "requeue", "--dir", dir_s, "--json"],
        &root.path().join("requeue.stderr"),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        stderr_of(root.path(), "requeue")
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requeued"], 1);

    // The main server now takes it; the next run delivers it as record 3001.
    state.poison_ids.lock().unwrap().clear();
    let mut d = run_daemon(root.path(), &dir, &server.url(), &[], "run2");
    let status = wait_exit(&mut d, WAIT).await;
    assert_eq!(status.code(), Some(0), "{}", all_logs(root.path(), &dir));
    let last = state.delivered.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, 3001);
    let mut want = record(1500);
    want.headers
        .insert("echopost-original-sequence".into(), "1500".into());
    assert_eq!(last.1, want);
    server.stop().await;
}
