//! The replayer in `deliver` mode against a real gRPC main server on loopback (Health +
//! `echopost.v1.Sink`), driven in-process through `echopost::replay::run` on a log in a
//! temporary directory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost::replay::{self, ReplayError, UpstreamState, dead_letters};
use echopost_log::LogOptions;
use prost::Message;
use tonic::Code;

use crate::support::replay::*;
use crate::support::upstream::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_server_down_at_start_then_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 3000, record);
    let addr = free_port();
    let replay = spawn_replay(&log, config(&format!("grpc://{addr}"), dir.path()));

    // Down: probing, nothing sent, nothing acknowledged.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replay.progress.state(), UpstreamState::Probing);
    assert!(!replay.progress.last_error().is_empty());
    assert_eq!(log.stats().backlog_records, 3000);

    // Up: everything arrives, once, in order, with its content and the source id.
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), Some(addr), None).await;
    drained(&log).await;
    let seqs = state.delivered_seqs();
    assert_eq!(seqs, (1..=3000).collect::<Vec<_>>());
    for (seq, rec) in state.delivered.lock().unwrap().iter() {
        assert_eq!(rec, &record(*seq));
    }
    for (source, batch, _) in state.batches.lock().unwrap().iter() {
        assert_eq!(source, "test-source");
        assert!(batch.len() <= 1000, "batch of {}", batch.len());
    }
    assert_eq!(replay.progress.state(), UpstreamState::Replaying);
    assert_eq!(
        replay.progress.delivered_records.load(Ordering::Relaxed),
        3000
    );
    let payload: u64 = (1..=3000).map(|i| record(i).payload.len() as u64).sum();
    assert_eq!(
        replay.progress.delivered_bytes.load(Ordering::Relaxed),
        payload
    );
    let snap = replay.progress.snapshot(0);
    assert_eq!(snap.estimated_drain_seconds, 0.0);

    replay.stop().await.unwrap();
    let stats = log.stats();
    assert_eq!(stats.acked, 3000);
    assert_eq!(stats.segments, 1, "delivered segments are deleted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_must_say_serving_for_healthy_after_probes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 100, record);
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    server.set_serving(false).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.healthy_after = 3;
    let replay = spawn_replay(&log, cfg);

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replay.progress.state(), UpstreamState::Probing);
    assert!(
        replay.progress.last_error().contains("NOT_SERVING"),
        "{}",
        replay.progress.last_error()
    );
    assert_eq!(state.deliver_calls.load(Ordering::SeqCst), 0);

    let serving_at = Instant::now();
    server.set_serving(true).await;
    drained(&log).await;
    // Three good probes spaced by the probe interval before the first batch.
    assert!(serving_at.elapsed() >= 2 * replay::HEALTHY_PROBE_INTERVAL);
    assert_eq!(state.delivered_seqs(), (1..=100).collect::<Vec<_>>());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_health_service_is_the_one_probed() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 50, record);
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    // The server as a whole says NOT_SERVING, the Sink service says SERVING.
    server.set_serving(false).await;
    server
        .health
        .set_service_status("echopost.v1.Sink", tonic_health::ServingStatus::Serving)
        .await;

    // An unknown service name is never healthy.
    let mut cfg = config(&server.url(), dir.path());
    cfg.health_service = "no.such.Service".into();
    let wrong = spawn_replay(&log, cfg.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(wrong.progress.state(), UpstreamState::Probing);
    assert!(
        wrong.progress.last_error().contains("NotFound"),
        "{}",
        wrong.progress.last_error()
    );
    wrong.stop().await.unwrap();
    assert_eq!(state.deliver_calls.load(Ordering::SeqCst), 0);

    cfg.health_service = "echopost.v1.Sink".into();
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;
    assert_eq!(state.delivered_seqs(), (1..=50).collect::<Vec<_>>());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transient_code_is_retried_with_the_same_records() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 10, record);
    let state = Arc::new(GrpcState::default());
    state.script.lock().unwrap().extend([
        Code::Unavailable,
        Code::DeadlineExceeded,
        Code::ResourceExhausted,
        Code::Aborted,
        Code::Internal,
        Code::Unknown,
    ]);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    drained(&log).await;
    // Six failed calls, then the same ten records, once.
    assert_eq!(state.deliver_calls.load(Ordering::SeqCst), 7);
    let batches = state.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1, (1..=10).collect::<Vec<_>>());
    assert!(dead_letters::list(dir.path()).unwrap().is_empty());
    assert_eq!(replay.progress.dead_lettered.load(Ordering::Relaxed), 0);
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_main_server_mid_replay() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 20_000;
    fill(&log, 1, n, record);
    let state = Arc::new(GrpcState::default());
    *state.deliver_delay.lock().unwrap() = Duration::from_millis(3);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let addr = server.addr;
    let mut cfg = config(&server.url(), dir.path());
    cfg.batch_records = 250;
    let replay = spawn_replay(&log, cfg);

    // Down in the middle of the backlog.
    eventually("a quarter delivered", || {
        state.delivered.lock().unwrap().len() >= 5000
    })
    .await;
    server.stop().await;
    eventually("replayer noticed", || {
        matches!(
            replay.progress.state(),
            UpstreamState::BackingOff | UpstreamState::Probing
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(log.stats().backlog_records > 0);

    // Back, but answering UNAVAILABLE / NOT_SERVING for a while.
    state
        .script
        .lock()
        .unwrap()
        .extend([Code::Unavailable, Code::Unavailable]);
    let server = GrpcServer::start(Arc::clone(&state), Some(addr), None).await;
    eventually("half delivered", || {
        state.delivered.lock().unwrap().len() >= 10_000
    })
    .await;
    server.set_serving(false).await;
    state.script.lock().unwrap().push_back(Code::Unavailable);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_serving(true).await;

    drained(&log).await;
    let seqs = state.delivered_seqs();
    assert_in_order_none_skipped(&seqs, n, &[]);
    assert_eq!(first_deliveries(&seqs), (1..=n).collect::<Vec<_>>());
    replay.stop().await.unwrap();
    assert_eq!(log.stats().acked, n);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_record_among_thousands_is_dead_lettered() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 5000;
    fill(&log, 1, n, record);
    let state = Arc::new(GrpcState::default());
    state.poison_ids.lock().unwrap().insert("rec-2345".into());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    drained(&log).await;

    // All others arrive, in order, once.
    let seqs = state.delivered_seqs();
    assert_in_order_none_skipped(&seqs, n, &[2345]);
    assert_eq!(seqs.len() as u64, n - 1, "no re-deliveries expected");
    assert_eq!(replay.progress.dead_lettered.load(Ordering::Relaxed), 1);

    // The poison record is on disk with the reason, and can be put back.
    let mut letters = Vec::new();
    eventually("dead-letter log readable", || {
        match dead_letters::list(dir.path()) {
            Ok(l) => {
                letters = l;
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(letters.len(), 1);
    let stored = letters[0].record.as_ref().unwrap();
    assert_eq!(stored.sequence, 2345);
    assert_eq!(stored.record.as_ref().unwrap(), &record(2345));
    assert!(
        letters[0].reason.contains("InvalidArgument") && letters[0].reason.contains("malformed"),
        "{}",
        letters[0].reason
    );
    assert!(letters[0].dead_lettered_unix_nanos > 0);

    // Once the main server accepts it, a requeue delivers it as a new record.
    state.poison_ids.lock().unwrap().clear();
    let mut requeued = 0;
    eventually("requeue", || {
        match dead_letters::requeue(dir.path(), &log) {
            Ok(k) => {
                requeued = k;
                true
            }
            Err(_) => false,
        }
    })
    .await;
    assert_eq!(requeued, 1);
    drained(&log).await;
    let last = state.delivered.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, n + 1);
    // Unchanged but for the header that keeps its dedupe identity.
    let mut want = record(2345);
    want.headers
        .insert("echopost-original-sequence".into(), "2345".into());
    assert_eq!(last.1, want);
    assert!(dead_letters::list(dir.path()).unwrap().is_empty());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_replay_and_restarted() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    {
        let log = open_log(dir.path());
        fill(&log, 1, n, record);
    }
    let state = Arc::new(GrpcState::default());
    *state.deliver_delay.lock().unwrap() = Duration::from_millis(2);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.batch_records = 200;

    // Crash three times at different points, without any orderly shutdown.
    for stop_at in [3000usize, 9000, 15000] {
        let log = open_log(dir.path());
        let replay = spawn_replay(&log, cfg.clone());
        eventually("progress before the crash", || {
            state.delivered.lock().unwrap().len() >= stop_at
        })
        .await;
        replay.kill();
        drop(log);
    }
    let log = open_log(dir.path());
    assert!(log.stats().acked < n, "the crashes happened mid-replay");
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;

    let seqs = state.delivered_seqs();
    assert_in_order_none_skipped(&seqs, n, &[]);
    assert_eq!(first_deliveries(&seqs), (1..=n).collect::<Vec<_>>());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_the_middle_of_the_backlog_stops_replay() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_bytes: 64 << 10,
        ..LogOptions::default()
    };
    let n = 6000;
    {
        let log = open_log_with(dir.path(), opts.clone());
        // Small appends, so that segments hold many frames.
        for i in 1..=n {
            log.append(&[record(i).encode_to_vec()]).unwrap();
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let damaged = segs[2].clone();
    let damaged_first: u64 = damaged
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next_first: u64 = segs[3]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&damaged, bytes).unwrap();

    let log = open_log_with(dir.path(), opts);
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    let progress = Arc::clone(&replay.progress);
    let err = replay.finished().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReplayError::Corruption(_)), "{err:?}");
    assert!(
        msg.contains(damaged.file_name().unwrap().to_str().unwrap()),
        "{msg}"
    );
    assert_eq!(progress.state(), UpstreamState::Stopped);

    // Everything before the damage was delivered (in order, once) and acknowledged;
    // nothing at or after it was acknowledged, and no file from the damaged one on is
    // gone.
    let seqs = state.delivered_seqs();
    let k = *seqs.last().unwrap();
    assert_eq!(seqs, (1..=k).collect::<Vec<_>>());
    assert!(
        k >= damaged_first - 1,
        "delivered up to {k}, damage in segment {damaged_first}"
    );
    assert!(k < next_first, "delivered {k}, past the damaged segment");
    let stats = log.stats();
    assert_eq!(stats.acked, k);
    assert_eq!(stats.backlog_records, n - k);
    for s in &segs[2..] {
        assert!(s.exists(), "{} was deleted", s.display());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_record_is_corruption_naming_its_sequence() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 100, record);
    log.append(&[vec![0xff_u8; 7]]).unwrap(); // sequence 101: not a Record
    fill(&log, 102, 150, record);
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    let err = replay.finished().await.unwrap_err();
    assert!(matches!(err, ReplayError::Corruption(_)), "{err:?}");
    assert!(err.to_string().contains("record 101"), "{err}");
    assert_eq!(state.delivered_seqs(), (1..=100).collect::<Vec<_>>());
    assert_eq!(log.stats().acked, 100);
    assert_eq!(log.stats().backlog_records, 50);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_respect_the_byte_limit() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let big = |i: u64| {
        let mut r = record(i);
        r.payload = vec![(i % 251) as u8; 1000];
        r
    };
    fill(&log, 1, 3000, big);
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.batch_bytes = 256 << 10;
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;
    let batches = state.batches.lock().unwrap().clone();
    for (_, seqs, size) in &batches {
        assert!(*size <= 256 << 10, "batch of {size} bytes");
        assert!(
            seqs.len() > 200,
            "batches should be nearly full: {}",
            seqs.len()
        );
    }
    let all: Vec<u64> = batches.iter().flat_map(|b| b.1.clone()).collect();
    assert_eq!(all, (1..=3000).collect::<Vec<_>>());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_with_a_private_ca_and_an_auth_header() {
    init_tracing();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 500, record);
    let state = Arc::new(GrpcState::default());
    *state.require_auth.lock().unwrap() = Some("Bearer s3cret".into());
    let server = GrpcServer::start(Arc::clone(&state), None, Some(&pki)).await;

    // Without the CA the server is not trusted: nothing is sent.
    let cfg = config(&server.url(), dir.path());
    not_trusted_without_the_ca(&log, cfg.clone(), Duration::from_millis(700)).await;
    assert_eq!(state.deliver_calls.load(Ordering::SeqCst), 0);

    let mut cfg = cfg;
    cfg.upstream_ca = Some(pki.ca_file.clone());
    cfg.upstream_headers = vec!["authorization: Bearer s3cret".into()];
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;
    assert_eq!(state.delivered_seqs(), (1..=500).collect::<Vec<_>>());
    assert_eq!(
        state.last_metadata.lock().unwrap()["authorization"],
        "Bearer s3cret"
    );
    replay.stop().await.unwrap();
    server.stop().await;
}

/// Every bad replay setting is refused by validation, naming its flag, so a replayer never
/// starts with one (the daemon exits 2 before the directory is touched).
#[test]
fn bad_configurations_are_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let mut c = config("http://127.0.0.1:9", dir.path());
    c.sink = Some(echopost::config::SinkKind::Deliver);
    cases.push((c, "--sink"));
    let mut c = config("grpcs://localhost:9", dir.path());
    c.upstream_ca = Some(dir.path().join("no-such-ca.pem"));
    cases.push((c, "--upstream-ca"));
    cases.push((config("ftp://x", dir.path()), "--upstream"));
    let mut c = config("grpc://127.0.0.1:9", dir.path());
    c.upstream_headers = vec!["bad name: v".into()];
    cases.push((c, "--upstream-header"));
    for (settings, flag) in cases {
        let what = format!("{settings:?}");
        let e = settings.validate().unwrap_err();
        assert!(e.to_string().contains(flag), "{what}: {e}");
    }
}
