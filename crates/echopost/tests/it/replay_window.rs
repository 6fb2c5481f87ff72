//! The delivery window (`--in-flight N`, issue 16) against real main servers on loopback.
//!
//! | test | server | what it proves |
//! |---|---|---|
//! | `strict_order_with_one_in_flight` | `window_server.py`, answers held 0–15 ms | with the default `--in-flight 1` the server receives every record once, in sequence order, never two at a time |
//! | `a_window_delivers_everything_though_answers_come_out_of_order` | the same, 0–40 ms, `--in-flight 16` | several requests are held at once and answered out of order; every record arrives, once; no record arrives before one N or more places before it; the daemon counts each once |
//! | `failures_inside_a_window_are_retried` | every 9th request answered 503 | every failed request is retried until accepted; a record the server accepted is not sent again; nothing is dead-lettered |
//! | `kill_9_mid_window_then_restart` | answers held 100–300 ms, every 13th 503 | after SIGKILL with a window in flight, the cursor covers only records the server had accepted; after a restart every record is delivered at least once, duplicates bounded by what was accepted beyond the cursor |
//! | `deliver_batches_in_a_window` | Rust tonic `Sink` (in-process replayer), 20 ms per call, UNAVAILABLE twice mid-way | `Deliver` batches in a window: every record accepted exactly once, the cursor at the end |
//! | `grpc_calls_in_a_window` | Rust tonic `shop.v1.Orders`, UNAVAILABLE twice, one poison order | verbatim gRPC multiplexed on the channel: everything but the poison order forwarded once, the poison one dead-lettered |
//!
//! The HTTP tests run the real `echopost run` process (the Python server needs
//! `ECHOPOST_TEST_PYTHON`, like `replay_policy`; skipped without it outside CI). Every test
//! prints what it counted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echopost::config::SinkKind;
use echopost_proto::v1::Record;
use prost::Message;
use serde_json::Value;
use tonic::Code;

use crate::real_clients::say;
use crate::replay_policy::{
    LONG_WAIT, PyServer, append, dead_letters, duplicates, order, order_number, python,
    status_json, wait_until,
};
use crate::support::daemon::{Area, Daemon};
use crate::support::replay::{config, drained, fill, init_tracing, open_log, spawn_replay};
use crate::support::upstream::{CreateOrder, GrpcServer, GrpcState};

/// Prints what a test counted.
fn report(test: &str, line: impl AsRef<str>) {
    say(format!("replay_window::{test}: {}", line.as_ref()));
}

/// Orders (by number) in the order of the events `ev` of `server`, filtered by `keep`.
fn orders_of(server: &PyServer, ev: &str, keep: impl Fn(&Value) -> bool) -> Vec<u64> {
    server
        .events_of(ev)
        .iter()
        .filter(|e| keep(e))
        .filter_map(|e| order_number(e["body"].as_str().unwrap_or("")))
        .collect()
}

/// Orders the server answered with 2xx, in answer order.
fn accepted(server: &PyServer) -> Vec<u64> {
    orders_of(server, "answer", |e| {
        e["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
    })
}

/// Most requests the server held at once.
fn peak_in_flight(server: &PyServer) -> u64 {
    server
        .events_of("arrive")
        .iter()
        .filter_map(|e| e["inflight"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Requests answered in another order than they arrived (`n` is the arrival number).
fn answered_out_of_order(server: &PyServer) -> usize {
    let ns: Vec<u64> = server
        .events_of("answer")
        .iter()
        .filter_map(|e| e["n"].as_u64())
        .collect();
    ns.windows(2).filter(|w| w[1] < w[0]).count()
}

/// Checks the window's bound on reordering: when record `s` first arrives, every record
/// at or below `s - n` has already arrived. Returns the largest overtaking seen (how far
/// a record arrived ahead of an earlier one), which is below `n`.
fn assert_window_order(first_arrivals: &[u64], n: u64) -> u64 {
    let mut seen = BTreeSet::new();
    let mut max_ahead = 0;
    for &s in first_arrivals {
        let missing_below = (1..s).find(|t| !seen.contains(t));
        if let Some(t) = missing_below {
            assert!(
                s - t < n,
                "record {s} arrived while record {t} had not: {} apart, the window is {n}",
                s - t
            );
            max_ahead = max_ahead.max(s - t);
        }
        seen.insert(s);
    }
    max_ahead
}

/// First arrival of each order, in arrival order.
fn first_arrivals(server: &PyServer) -> Vec<u64> {
    let mut seen = HashSet::new();
    orders_of(server, "arrive", |_| true)
        .into_iter()
        .filter(|o| seen.insert(*o))
        .collect()
}

/// Waits until the backlog is empty (status through the CLI).
async fn wait_drained(area: &Area, d: &Daemon) -> Value {
    let dir = area.dir();
    let deadline = Instant::now() + LONG_WAIT;
    loop {
        let st = status_json(&dir).await;
        if st["backlog_records"] == 0 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after {LONG_WAIT:?}: {st:#}\n{}",
            d.session_logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `window_server.py` with `args` and a daemon replaying to it with `daemon_args`.
async fn start(
    python: &std::ffi::OsString,
    area: &Area,
    args: &[&str],
    daemon_args: &[&str],
) -> (PyServer, Daemon) {
    std::fs::create_dir_all(area.dir()).unwrap();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let server = PyServer::start(python, "window_server.py", &args, area.root.path()).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut all = vec!["--upstream", upstream.as_str()];
    all.extend_from_slice(daemon_args);
    let d = Daemon::start(area, &all).await;
    (server, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_with_one_in_flight() {
    let test = "strict_order_with_one_in_flight";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let n = 150;
    let (server, mut d) = start(&python, &area, &["--delay-ms-max", "15"], &[]).await;
    append(&d, (1..=n).map(order).collect()).await;
    let st = wait_drained(&area, &d).await;
    let arrivals = orders_of(&server, "arrive", |_| true);
    assert_eq!(
        arrivals,
        (1..=n).collect::<Vec<_>>(),
        "strict order, each once"
    );
    assert_eq!(peak_in_flight(&server), 1, "one request at a time");
    assert_eq!(st["delivered_records"], n);
    d.stop().await;
    report(
        test,
        format!(
            "received {} of {n} in sequence order, duplicates {}, peak in flight {}",
            arrivals.len(),
            duplicates(&arrivals),
            peak_in_flight(&server)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_delivers_everything_though_answers_come_out_of_order() {
    let test = "a_window_delivers_everything_though_answers_come_out_of_order";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let (n, window) = (400u64, 16u64);
    let (server, mut d) = start(
        &python,
        &area,
        &["--delay-ms-max", "40"],
        &["--in-flight", "16"],
    )
    .await;
    append(&d, (1..=n).map(order).collect()).await;
    let st = wait_drained(&area, &d).await;
    let got = accepted(&server);
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (1..=n).collect(), "every record accepted");
    assert_eq!(duplicates(&got), 0, "no failure, so nothing sent twice");
    let peak = peak_in_flight(&server);
    assert!(
        (2..=window).contains(&peak),
        "several requests at once, never more than the window: {peak}"
    );
    let reordered = answered_out_of_order(&server);
    assert!(reordered > 0, "the server answered out of order");
    let max_ahead = assert_window_order(&first_arrivals(&server), window);
    assert_eq!(st["delivered_records"], n, "{st:#}");
    assert_eq!(st["first_sequence"], n + 1, "{st:#}");
    d.stop().await;
    report(
        test,
        format!(
            "accepted {} of {n}, duplicates 0, peak in flight {peak} (window {window}), \
             answers out of order {reordered}, largest overtaking {max_ahead} records",
            distinct.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_inside_a_window_are_retried() {
    let test = "failures_inside_a_window_are_retried";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let (n, window) = (300u64, 16u64);
    let (server, mut d) = start(
        &python,
        &area,
        &["--delay-ms-max", "20", "--fail-every", "9"],
        &["--in-flight", "16"],
    )
    .await;
    append(&d, (1..=n).map(order).collect()).await;
    let st = wait_drained(&area, &d).await;
    let got = accepted(&server);
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (1..=n).collect(), "every record accepted");
    assert_eq!(
        duplicates(&got),
        0,
        "a record the server accepted is not sent again"
    );
    let failed = orders_of(&server, "answer", |e| e["status"] == 503);
    assert!(!failed.is_empty(), "some requests failed");
    assert!(peak_in_flight(&server) > 1, "the window was used");
    let max_ahead = assert_window_order(&first_arrivals(&server), window);
    assert_eq!(st["delivered_records"], n, "{st:#}");
    assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
    d.stop().await;
    let letters = dead_letters(&area.dir()).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "accepted {} of {n}, failed attempts {} (all retried), duplicates 0, dead-lettered 0, \
             requests {}, largest overtaking {max_ahead} records",
            distinct.len(),
            failed.len(),
            server.events_of("answer").len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_window_then_restart() {
    let test = "kill_9_mid_window_then_restart";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    let (n, window) = (400u64, 32u64);
    let server_args = [
        "--delay-ms-min",
        "100",
        "--delay-ms-max",
        "300",
        "--fail-every",
        "13",
    ];
    let (server, mut d) = start(&python, &area, &server_args, &["--in-flight", "32"]).await;
    append(&d, (1..=n).map(order).collect()).await;
    wait_until("100 records accepted", || accepted(&server).len() >= 100).await;
    d.kill();
    // The server answers whatever was still in flight to a dead peer; let its last
    // events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: HashSet<u64> = accepted(&server).into_iter().collect();
    let dir = area.dir();
    let st = status_json(&dir).await;
    let first_unacked = st["first_sequence"].as_u64().unwrap();
    assert_eq!(st["next_sequence"], n + 1, "{st:#}");
    let cursor = first_unacked - 1;
    for seq in 1..=cursor {
        assert!(
            before.contains(&seq),
            "the cursor ({cursor}) passed record {seq}, which the server never accepted"
        );
    }
    let beyond = before.iter().filter(|s| **s > cursor).count();

    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut d2 = Daemon::start(&area, &["--upstream", &upstream, "--in-flight", "32"]).await;
    let st2 = wait_drained(&area, &d2).await;
    let got = accepted(&server);
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (1..=n).collect(), "every record delivered");
    let dups = duplicates(&got);
    assert!(
        dups <= beyond,
        "duplicates ({dups}) come only from records accepted beyond the cursor ({beyond})"
    );
    assert_eq!(st2["dead_lettered_records"], 0, "{st2:#}");
    d2.stop().await;
    report(
        test,
        format!(
            "killed with {} of {n} accepted; cursor at {cursor} (never past an unaccepted \
             record); {beyond} accepted beyond it (window {window}); after restart accepted {} \
             of {n}, duplicates {dups}, failed attempts {}",
            before.len(),
            distinct.len(),
            orders_of(&server, "answer", |e| e["status"] == 503).len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_batches_in_a_window() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 1000;
    fill(&log, 1, n, crate::support::replay::record);
    let state = Arc::new(GrpcState::default());
    *state.deliver_delay.lock().unwrap() = Duration::from_millis(20);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.batch_records = 25;
    cfg.in_flight = 4;
    let replay = spawn_replay(&log, cfg);
    let st = Arc::clone(&state);
    crate::support::replay::eventually("200 records delivered", || {
        st.delivered_seqs().len() >= 200
    })
    .await;
    state
        .script
        .lock()
        .unwrap()
        .extend([Code::Unavailable, Code::Unavailable]);
    drained(&log).await;
    let seqs = state.delivered_seqs();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct, (1..=n).collect(), "every record accepted");
    assert_eq!(duplicates(&seqs), 0, "no accepted batch sent again");
    assert!(state.script.lock().unwrap().is_empty(), "both failures met");
    assert_eq!(replay.progress.delivered_records.load(Ordering::Relaxed), n);
    replay.stop().await.unwrap();
    assert_eq!(log.stats().acked, n);
    let calls = state.deliver_calls.load(Ordering::SeqCst);
    server.stop().await;
    report(
        "deliver_batches_in_a_window",
        format!(
            "accepted {} of {n} in {calls} Deliver calls (2 failed with UNAVAILABLE and were \
             retried), duplicates 0, acked {n}",
            distinct.len()
        ),
    );
}

/// `shop.v1.Orders/Create` as an application called it.
fn grpc_order(i: u64) -> Record {
    Record {
        id: format!("rec-{i}"),
        stream: "orders".into(),
        payload: CreateOrder {
            order_id: format!("o-{i}"),
            quantity: 1,
        }
        .encode_to_vec(),
        headers: HashMap::new(),
        route: "/shop.v1.Orders/Create".into(),
        timestamp_unix_nanos: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_in_a_window() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 300;
    fill(&log, 1, n, grpc_order);
    let state = Arc::new(GrpcState::default());
    state.poison_orders.lock().unwrap().insert("o-77".into());
    state
        .script
        .lock()
        .unwrap()
        .extend([Code::Unavailable, Code::Unavailable]);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.sink = Some(SinkKind::Forward);
    cfg.in_flight = 8;
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;
    let ids: Vec<u64> = state
        .forwarded
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.order.order_id[2..].parse().unwrap())
        .collect();
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    let want: BTreeSet<u64> = (1..=n).filter(|i| *i != 77).collect();
    assert_eq!(distinct, want, "everything but the poison order");
    assert_eq!(duplicates(&ids), 0);
    assert_eq!(replay.progress.dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(
        replay.progress.delivered_records.load(Ordering::Relaxed),
        n - 1
    );
    replay.stop().await.unwrap();
    assert_eq!(log.stats().acked, n);
    server.stop().await;
    report(
        "grpc_calls_in_a_window",
        format!(
            "forwarded {} of {n} (2 UNAVAILABLE retried), dead-lettered 1 (o-77), duplicates 0, acked {n}",
            distinct.len()
        ),
    );
}
