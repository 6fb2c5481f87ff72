//! `--accept-grpc`: a stock grpcio client's generic calls, replayed to a grpcio server.

use std::process::Command;

use super::{b64, field, report, script};
use crate::real_clients::run_client;
use crate::replay_policy::{PyServer, context, python, status_json, wait_until};
use crate::support::daemon::{Area, Daemon};

/// Unary calls to `acme.*` are answered OK with an empty message and arrive at the main
/// server in order with the same bytes (the gzip-compressed one decompressed) and the
/// application's metadata (text and `-bin`); a client-streaming call and a call to an
/// unmatched service get UNIMPLEMENTED and store nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_are_stored_and_replayed_byte_for_byte() {
    let test = "unary_calls_are_stored_and_replayed_byte_for_byte";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server =
        PyServer::start_script(&python, &script("grpc_app.py"), &[], area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream, "--accept-grpc", "acme.*"]).await;

    let mut cmd = Command::new(&python);
    cmd.arg(script("grpc_call.py")).arg(&d.socket);
    let run = run_client(cmd).await;
    run.expect_success("grpc_call.py");
    let results = run.results();
    let by_step = |step: &str| {
        results
            .iter()
            .find(|r| r["step"] == step)
            .unwrap_or_else(|| panic!("no result for {step}: {results:#?}"))
            .clone()
    };
    for step in ["create", "cancel", "ping"] {
        let r = by_step(step);
        assert_eq!(r["code"], "OK", "{step}: {r:#}\n{}", d.session_logs());
        assert_eq!(
            b64(&r["response_b64"]),
            b"",
            "{step}: an empty response message"
        );
    }
    let upload = by_step("upload");
    assert_eq!(upload["code"], "UNIMPLEMENTED", "{upload:#}");
    assert!(
        upload["details"].as_str().unwrap().contains("streaming"),
        "the message says why: {upload:#}"
    );
    let other = by_step("other");
    assert_eq!(other["code"], "UNIMPLEMENTED", "{other:#}");

    wait_until("three calls at the main server", || {
        server.events_of("call").len() >= 3
    })
    .await;
    let dir = area.dir();
    let calls = server.events_of("call");
    let methods: Vec<&str> = calls
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "/acme.orders.v1.Orders/Create",
            "/acme.orders.v1.Orders/Cancel",
            "/acme.orders.v1.Orders/Ping"
        ],
        "in order, each once, nothing of the refused calls: {calls:#?}\n{}",
        context(&d, &server)
    );
    for (call, step) in calls.iter().zip(["create", "cancel", "ping"]) {
        let sent = by_step(step);
        assert_eq!(
            b64(&call["body_b64"]),
            b64(&sent["payload_b64"]),
            "{step}: the request message, byte for byte"
        );
        for pair in sent["metadata"].as_array().unwrap() {
            let key = pair[0].as_str().unwrap();
            assert_eq!(
                field(&call["metadata"], key),
                pair[1].as_str(),
                "{step}: metadata {key} replayed as sent: {call:#}"
            );
        }
        for transport in ["grpc-encoding", "grpc-accept-encoding", "grpc-timeout"] {
            let replayed = field(&call["metadata"], transport);
            assert!(
                transport != "grpc-encoding" || replayed.is_none_or(|v| v == "identity"),
                "{step}: the original call's {transport} is not replayed: {call:#}"
            );
        }
    }
    // The server answered; the daemon counts a record delivered once it has its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = status_json(&dir).await;
        assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
        if st["delivered_records"] == 3 && st["backlog_records"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st:#}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    d.stop().await;
    report(
        test,
        format!(
            "3 unary calls (gzip, -bin metadata, empty message) answered OK and replayed byte for byte; \
             streaming and unmatched calls UNIMPLEMENTED; main server saw {} calls",
            calls.len()
        ),
    );
}
