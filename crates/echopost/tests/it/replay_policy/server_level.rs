//! Server-level refusals: the main server is up (its health check passes) but refuses
//! every delivery for a reason that has nothing to do with the records: expired
//! credentials (HTTP 401), a forbidden route (403), a route that is not deployed yet (404),
//! a gRPC server without the `echopost.v1.Sink` service (UNIMPLEMENTED). Replay must pause,
//! dead-letter nothing, say why in `status`, and deliver everything, in order, once the
//! server is fixed.

use std::time::Instant;

use super::*;
use crate::support::daemon::Area;

/// Records buffered while the main server refuses them.
const HTTP_RECORDS: u64 = 300;
/// How long the HTTP server refuses deliveries.
const REFUSING: Duration = Duration::from_secs(3);

/// HTTP 401/403/404 on `POST /orders` while `GET /healthz` answers 200, then 200.
async fn http_refusal_then_fixed(test: &str, status: u16, body: &str) {
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    // First unhealthy, so that `status` holds an older reason (the failed health probe)
    // that must not outlive the refusals that follow.
    let mut server = PyServer::start(
        &python,
        "http_server.py",
        &[
            "--health-status".into(),
            "503".into(),
            "--post-status".into(),
            status.to_string(),
            "--post-body".into(),
            body.into(),
        ],
        area.root.path(),
    )
    .await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    append(&d, (1..=HTTP_RECORDS).map(order).collect()).await;

    let dir = area.dir();
    let mut before = Value::Null;
    for _ in 0..500 {
        before = status_json(&dir).await;
        if before["upstream_detail"]
            .as_str()
            .is_some_and(|s| s.contains("healthz"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = before["upstream_detail"].as_str().unwrap_or_default();
    assert!(
        stale.contains("healthz") && stale.contains("503"),
        "while the health check fails, status says so: {before:#}"
    );

    server.command("health 200").await;
    let refusing = Instant::now();
    wait_until(&format!("three deliveries answered {status}"), || {
        server
            .events_of("req")
            .iter()
            .filter(|e| e["status"] == status)
            .count()
            >= 3
    })
    .await;
    // The refusals go on for a few seconds (the backoff grows meanwhile); status says the
    // same all along.
    let first = status_json(&dir).await;
    tokio::time::sleep(REFUSING.saturating_sub(refusing.elapsed())).await;
    let during = status_json(&dir).await;
    for st in [&first, &during] {
        let detail = st["upstream_detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("server failure") && detail.contains(&format!("HTTP {status}")),
            "status during the refusals: {st:#}"
        );
    }
    let detail = during["upstream_detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("server failure")
            && detail.contains(&format!("HTTP {status}"))
            && detail.contains(body)
            && detail.contains("/orders"),
        "status shows the server-level reason: {during:#}"
    );
    assert!(
        !detail.contains("healthz"),
        "status shows a stale reason: {during:#}"
    );
    // Stuck, not slow: the same first record, since the first refusal, more attempts.
    let (f0, f1) = (&first["failing"], &during["failing"]);
    assert_eq!(f1["class"], "server", "{during:#}");
    assert_eq!(f1["stuck_sequence"], 1, "{during:#}");
    assert_eq!(
        f0["since_unix_nanos"], f1["since_unix_nanos"],
        "the failure keeps its start time: {first:#} {during:#}"
    );
    assert!(
        f1["attempts"].as_u64().unwrap_or(0) > f0["attempts"].as_u64().unwrap_or(u64::MAX),
        "attempts are counted: {first:#} {during:#}"
    );
    let text = status_text(&dir).await;
    assert!(
        text.contains("stuck at sequence 1 for") && text.contains("the last a server failure"),
        "the human status says it is stuck: {text}"
    );
    assert_eq!(during["dead_lettered_records"], 0, "{during:#}");
    assert_eq!(during["delivered_records"], 0, "{during:#}");
    assert_eq!(during["backlog_records"], HTTP_RECORDS, "{during:#}");
    let refused = server.events_of("req").len();

    server.command("post 200").await;
    let refused_for = refusing.elapsed();
    let fixed = Instant::now();
    wait_until("every record accepted", || {
        server
            .events_of("req")
            .iter()
            .filter(|e| e["status"] == 200)
            .count()
            >= HTTP_RECORDS as usize
    })
    .await;
    let took = fixed.elapsed();
    let after = status_json(&dir).await;
    let reqs = server.events_of("req");
    let accepted: Vec<u64> = reqs
        .iter()
        .filter(|e| e["status"] == 200)
        .map(|e| order_number(e["body"].as_str().unwrap()).expect("an order"))
        .collect();
    assert_eq!(
        accepted,
        (1..=HTTP_RECORDS).collect::<Vec<_>>(),
        "every record, in order, once; {}",
        context(&d, &server)
    );
    for e in &reqs {
        assert!(
            e["status"] == 200 || e["status"] == status,
            "unexpected answer {e}"
        );
    }
    let mut after = after;
    for _ in 0..250 {
        if after["backlog_records"] == 0
            && after["upstream_detail"].is_null()
            && after["failing"].is_null()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = status_json(&dir).await;
    }
    assert_eq!(after["backlog_records"], 0, "{after:#}");
    assert_eq!(after["dead_lettered_records"], 0, "{after:#}");
    assert_eq!(after["delivered_records"], HTTP_RECORDS, "{after:#}");
    assert!(
        after["upstream_detail"].is_null() && after["failing"].is_null(),
        "the reason is cleared by the next success: {after:#}"
    );
    let logs = d.session_logs();
    assert!(
        logs.contains("replay is paused and nothing is dead-lettered"),
        "the pause is logged at error: {logs}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    report(
        test,
        format!(
            "HTTP {status}: delivered {} of {HTTP_RECORDS} in order, dead-lettered {}, duplicates {}, \
             attempts {} ({refused} refused with {status} \"{body}\", health probes {}), \
             refused for {:.1}s, drained {:.2}s after the fix; status during the refusals: {detail:?}",
            accepted.len(),
            letters.len(),
            duplicates(&accepted),
            reqs.len(),
            server.events_of("health").len(),
            refused_for.as_secs_f64(),
            took.as_secs_f64(),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_401_pauses_dead_letters_nothing_then_delivers_all_in_order() {
    http_refusal_then_fixed(
        "http_401_pauses_dead_letters_nothing_then_delivers_all_in_order",
        401,
        "token expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_403_pauses_dead_letters_nothing_then_delivers_all_in_order() {
    http_refusal_then_fixed(
        "http_403_pauses_dead_letters_nothing_then_delivers_all_in_order",
        403,
        "forbidden for this client",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_404_pauses_dead_letters_nothing_then_delivers_all_in_order() {
    http_refusal_then_fixed(
        "http_404_pauses_dead_letters_nothing_then_delivers_all_in_order",
        404,
        "no route /orders (not deployed yet)",
    )
    .await;
}

/// Records buffered while the gRPC server lacks the Sink service.
const GRPC_RECORDS: u64 = 500;

/// A grpcio server that serves health (SERVING) but not `echopost.v1.Sink` (grpcio
/// answers UNIMPLEMENTED), then, on the same port, one with the Sink (the deployment
/// finished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_without_the_sink_service_pauses_then_delivers_all() {
    let test = "grpc_server_without_the_sink_service_pauses_then_delivers_all";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let mut args = proto_arg().to_vec();
    args.push("--no-sink".into());
    let mut bare = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let port = bare.port;
    let upstream = format!("grpc://127.0.0.1:{port}");
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    append(&d, (1..=GRPC_RECORDS).map(order).collect()).await;

    let dir = area.dir();
    let mut during = Value::Null;
    for _ in 0..1000 {
        during = status_json(&dir).await;
        if during["upstream_detail"]
            .as_str()
            .is_some_and(|s| s.contains("Unimplemented"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detail = during["upstream_detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.starts_with("server failure") && detail.contains("Unimplemented"),
        "status shows the missing service as a server-level failure: {during:#}\n{}",
        context(&d, &bare)
    );
    assert_eq!(during["failing"]["class"], "server", "{during:#}");
    assert_eq!(during["failing"]["stuck_sequence"], 1, "{during:#}");
    assert_eq!(during["dead_lettered_records"], 0, "{during:#}");
    assert_eq!(during["delivered_records"], 0, "{during:#}");
    // Let it be refused a few more times (backoff grows) before the fix.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refusals = d
        .session_logs()
        .matches("replay is paused and nothing is dead-lettered")
        .count();
    bare.stop();
    drop(bare);

    let args = [
        proto_arg().to_vec(),
        vec!["--port".into(), port.to_string()],
    ]
    .concat();
    let sink = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let fixed = Instant::now();
    let delivered = || -> Vec<u64> {
        sink.events_of("deliver")
            .iter()
            .filter(|e| e["ok"] == true)
            .flat_map(|e| {
                e["seqs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_u64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    wait_until("every record delivered to the Sink", || {
        delivered().len() >= GRPC_RECORDS as usize
    })
    .await;
    let took = fixed.elapsed();
    let seqs = delivered();
    assert_eq!(
        seqs,
        (1..=GRPC_RECORDS).collect::<Vec<_>>(),
        "every record, in order, once; {}",
        context(&d, &sink)
    );
    let mut after = status_json(&dir).await;
    for _ in 0..250 {
        if after["backlog_records"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = status_json(&dir).await;
    }
    assert_eq!(after["backlog_records"], 0, "{after:#}");
    assert_eq!(after["dead_lettered_records"], 0, "{after:#}");
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:?}");
    report(
        test,
        format!(
            "delivered {} of {GRPC_RECORDS} in order in {} Deliver calls, dead-lettered {}, duplicates {}, \
             the pause logged at error {refusals}x (the first refusal, then every 20th), drained {:.2}s after the Sink came up; \
             status during the refusals: {detail:?}",
            seqs.len(),
            sink.events_of("deliver").len(),
            letters.len(),
            duplicates(&seqs),
            took.as_secs_f64(),
        ),
    );
}
