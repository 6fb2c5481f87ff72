//! The replayer in `forward` mode: records replayed verbatim to an HTTP server (plain and
//! TLS) and to a plain gRPC service that knows nothing about EchoPost. In-process, against
//! real servers on loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use echopost::config::SinkKind;
use echopost::replay::{UpstreamState, dead_letters};
use echopost_proto::v1::Record;
use prost::Message;
use tonic::Code;

use crate::support::replay::*;
use crate::support::upstream::*;

/// An application's HTTP request, as stored by EchoPost.
fn http_record(i: u64) -> Record {
    Record {
        id: format!("rec-{i}"),
        stream: "orders".into(),
        payload: format!("{{\"order\":\"o-{i}\",\"qty\":{}}}", i % 7).into_bytes(),
        headers: HashMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("x-request-id".to_string(), format!("req-{i}")),
            ("authorization".to_string(), "Bearer stale".to_string()),
            ("host".to_string(), "app.internal".to_string()),
        ]),
        route: format!("POST /v1/orders?n={i}"),
        timestamp_unix_nanos: 1,
    }
}

fn body(i: u64) -> String {
    String::from_utf8(http_record(i).payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_records_are_replayed_as_the_original_requests() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 300, http_record);
    let state = Arc::new(HttpState::default());
    let server = HttpServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&format!("{}/api", server.url()), dir.path());
    assert_eq!(
        cfg.clone().validate().unwrap().sink(),
        SinkKind::Forward,
        "HTTP upstreams default to forward"
    );
    cfg.health_url = Some(format!("{}/healthz", server.url()));
    cfg.upstream_headers = vec!["authorization: Bearer fresh".into()];
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;

    let reqs = state.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 300);
    for (k, r) in reqs.iter().enumerate() {
        let i = k as u64 + 1;
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, format!("/api/v1/orders?n={i}"));
        assert_eq!(r.body, body(i).as_bytes());
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-request-id"], format!("req-{i}").as_str());
        assert_eq!(r.headers["authorization"], "Bearer fresh");
        assert_ne!(r.headers["host"], "app.internal");
    }
    assert!(state.health_probes.load(Ordering::SeqCst) >= 1);
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_5xx_and_429_with_retry_after_are_retried() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 20, http_record);
    let state = Arc::new(HttpState::default());
    state.script.lock().unwrap().extend([
        (503, None),
        (500, None),
        (429, Some("1".to_string())),
        (408, None),
    ]);
    let server = HttpServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    drained(&log).await;

    let reqs = state.requests.lock().unwrap().clone();
    // Record 1 four times (503, 500, 429, 408), then accepted; then the rest once each.
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..5], &[503, 500, 429, 408, 201]);
    for r in &reqs[..5] {
        assert_eq!(r.body, body(1).as_bytes(), "the same record is retried");
    }
    let waited = reqs[3].at.duration_since(reqs[2].at);
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 not honoured (waited {waited:?})"
    );
    let accepted = state.accepted_bodies();
    assert_eq!(accepted, (1..=20).map(body).collect::<Vec<_>>());
    assert!(dead_letters::list(dir.path()).unwrap().is_empty());
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_poison_record_is_dead_lettered_and_replay_goes_on() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 2000;
    fill(&log, 1, n, http_record);
    let state = Arc::new(HttpState::default());
    *state.poison.lock().unwrap() = Some("\"o-1234\"".into());
    let server = HttpServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    drained(&log).await;

    let expected: Vec<String> = (1..=n).filter(|i| *i != 1234).map(body).collect();
    assert_eq!(state.accepted_bodies(), expected);
    let attempts = state
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.status == 422)
        .count();
    assert_eq!(attempts, 1, "a permanent rejection is not retried");
    assert_eq!(replay.progress.dead_lettered.load(Ordering::Relaxed), 1);
    replay.stop().await.unwrap();

    let letters = dead_letters::list(dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    let stored = letters[0].record.as_ref().unwrap();
    assert_eq!(stored.sequence, 1234);
    assert_eq!(stored.record.as_ref().unwrap(), &http_record(1234));
    assert!(letters[0].reason.contains("422"), "{}", letters[0].reason);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_cannot_be_replayed_are_dead_lettered_not_dropped() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let make = |i: u64| {
        let mut r = http_record(i);
        if i == 3 {
            r.route = "not a route".into();
        }
        if i == 5 {
            r.headers.insert("bad header".into(), "x".into());
        }
        r
    };
    fill(&log, 1, 6, make);
    let state = Arc::new(HttpState::default());
    let server = HttpServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    drained(&log).await;
    assert_eq!(
        state.accepted_bodies(),
        [1, 2, 4, 6].into_iter().map(body).collect::<Vec<_>>()
    );
    replay.stop().await.unwrap();
    let letters = dead_letters::list(dir.path()).unwrap();
    let got: Vec<(u64, String)> = letters
        .iter()
        .map(|l| (l.record.as_ref().unwrap().sequence, l.reason.clone()))
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, 3);
    assert!(got[0].1.contains("route"), "{}", got[0].1);
    assert_eq!(got[1].0, 5);
    assert!(got[1].1.contains("bad header"), "{}", got[1].1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_url_down_then_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 10, http_record);
    let state = Arc::new(HttpState::default());
    state.healthy.store(false, Ordering::SeqCst);
    let server = HttpServer::start(Arc::clone(&state), None, None).await;
    let replay = spawn_replay(&log, config(&server.url(), dir.path()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replay.progress.state(), UpstreamState::Probing);
    assert!(
        state.health_probes.load(Ordering::SeqCst) >= 2,
        "probes retried"
    );
    assert!(state.requests.lock().unwrap().is_empty());
    assert!(replay.progress.last_error().contains("503"));
    state.healthy.store(true, Ordering::SeqCst);
    drained(&log).await;
    assert_eq!(
        state.accepted_bodies(),
        (1..=10).map(body).collect::<Vec<_>>()
    );
    replay.stop().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    init_tracing();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 50, http_record);
    let state = Arc::new(HttpState::default());
    let server = HttpServer::start(Arc::clone(&state), None, Some(&pki)).await;

    // Not trusted without the CA: the health probe fails the handshake.
    let cfg = config(&server.url(), dir.path());
    if let Some(e) = not_trusted_without_the_ca(&log, cfg.clone(), Duration::from_millis(600)).await
    {
        assert!(
            e.contains("certificate") || e.contains("Certificate"),
            "{e}"
        );
    }
    assert!(state.requests.lock().unwrap().is_empty());

    let mut cfg = cfg;
    cfg.upstream_ca = Some(pki.ca_file.clone());
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;
    assert_eq!(
        state.accepted_bodies(),
        (1..=50).map(body).collect::<Vec<_>>()
    );
    replay.stop().await.unwrap();
    server.stop().await;
}

/// The main server's certificate is re-issued by a new CA mid-drain: deliveries fail the
/// TLS handshake (a server-level failure: nothing dead-lettered) until the operator
/// replaces the `--upstream-ca` file; the replayer reads it again after the failure and
/// delivers the rest without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_ca_rotated_mid_drain_is_read_again() {
    init_tracing();
    let (old_pki, new_pki) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    fill(&log, 1, 40, http_record);
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("upstream-ca.pem");
    std::fs::copy(&old_pki.ca_file, &ca_file).unwrap();
    let state = Arc::new(HttpState::default());
    let server = HttpServer::start(Arc::clone(&state), None, Some(&old_pki)).await;
    let addr = server.addr;
    let mut cfg = config(&server.url(), dir.path());
    cfg.upstream_ca = Some(ca_file.clone());
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;

    // The server comes back with a certificate from another CA.
    server.stop().await;
    let server = HttpServer::start(Arc::clone(&state), Some(addr), Some(&new_pki)).await;
    fill(&log, 41, 80, http_record);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        state.accepted_bodies().len(),
        40,
        "nothing gets through an untrusted certificate"
    );
    assert_eq!(log.stats().backlog_records, 40);

    // The operator replaces the file (atomically, as configuration tools do).
    let tmp = ca_dir.path().join("upstream-ca.pem.new");
    std::fs::copy(&new_pki.ca_file, &tmp).unwrap();
    std::fs::rename(&tmp, &ca_file).unwrap();
    drained(&log).await;
    assert_eq!(
        state.accepted_bodies(),
        (1..=80).map(body).collect::<Vec<_>>(),
        "every record, in order, once"
    );
    let dead = echopost::replay::dead_letters::list(dir.path()).unwrap();
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    eprintln!(
        "replay_forward: CA rotated mid-drain: delivered {} of 80 in order, dead-lettered {}, \
         recovered without a restart",
        state.accepted_bodies().len(),
        dead.len()
    );
    replay.stop().await.unwrap();
    server.stop().await;
}

/// An application's gRPC call `shop.v1.Orders/Create`, as stored by EchoPost.
fn grpc_record(i: u64) -> Record {
    Record {
        id: format!("rec-{i}"),
        stream: "orders".into(),
        payload: CreateOrder {
            order_id: format!("o-{i}"),
            quantity: (i % 5) as u32 + 1,
        }
        .encode_to_vec(),
        headers: HashMap::from([
            ("x-tenant".to_string(), "acme".to_string()),
            ("grpc-timeout".to_string(), "1n".to_string()),
        ]),
        route: "/shop.v1.Orders/Create".into(),
        timestamp_unix_nanos: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_forwarded_to_a_plain_service() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let n = 300;
    fill(&log, 1, n, grpc_record);
    let state = Arc::new(GrpcState::default());
    state.poison_orders.lock().unwrap().insert("o-77".into());
    state
        .script
        .lock()
        .unwrap()
        .extend([Code::Unavailable, Code::ResourceExhausted]);
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    let mut cfg = config(&server.url(), dir.path());
    cfg.sink = Some(SinkKind::Forward);
    cfg.upstream_headers = vec!["Authorization: Bearer t0k".into()];
    let replay = spawn_replay(&log, cfg);
    drained(&log).await;

    let calls = state.forwarded.lock().unwrap().clone();
    let ids: Vec<String> = calls.iter().map(|c| c.order.order_id.clone()).collect();
    let expected: Vec<String> = (1..=n)
        .filter(|i| *i != 77)
        .map(|i| format!("o-{i}"))
        .collect();
    assert_eq!(ids, expected, "in order, once, poison left out");
    for c in &calls {
        assert_eq!(c.path, "/shop.v1.Orders/Create");
        assert_eq!(c.metadata["x-tenant"], "acme");
        assert_eq!(c.metadata["authorization"], "Bearer t0k");
        let i: u64 = c.order.order_id[2..].parse().unwrap();
        assert_eq!(c.order.quantity, (i % 5) as u32 + 1);
    }
    assert_eq!(state.deliver_calls.load(Ordering::SeqCst), 0);
    replay.stop().await.unwrap();
    let letters = dead_letters::list(dir.path()).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record.as_ref().unwrap().sequence, 77);
    assert!(
        letters[0].reason.contains("InvalidArgument"),
        "{}",
        letters[0].reason
    );
    server.stop().await;
}
