//! `--accept-http`: `http.client` and `curl --unix-socket`, replayed to `http.server`.

use std::process::Command;

use serde_json::Value;

use super::{b64, field, report, script};
use crate::real_clients::run_client;
use crate::replay_policy::{PyServer, context, python, status_json, wait_until};
use crate::support::daemon::{Area, Daemon};

/// `--max-record-bytes` of the test's daemon: room for the test's bodies, not for `big`.
const LIMIT: usize = 64 << 10;

/// JSON, chunked binary (with `Expect: 100-continue`) and body-less requests are answered
/// `202 Accepted` with their sequence numbers, and the main server receives each with
/// the same method, path and query, body bytes and application headers; hop-by-hop and
/// framing headers are not replayed. A body over `--max-record-bytes` gets 413 and stores
/// nothing. `curl --unix-socket` works too (when curl is installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_stored_and_replayed_byte_for_byte() {
    let test = "requests_are_stored_and_replayed_byte_for_byte";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server =
        PyServer::start_script(&python, &script("http_app.py"), &[], area.root.path()).await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let limit = LIMIT.to_string();
    let mut d = Daemon::start(
        &area,
        &[
            "--upstream",
            &upstream,
            "--accept-http",
            "--max-record-bytes",
            &limit,
        ],
    )
    .await;

    let mut cmd = Command::new(&python);
    cmd.arg(script("http_post.py"))
        .arg(&d.socket)
        .arg((LIMIT + 1).to_string());
    let run = run_client(cmd).await;
    run.expect_success("http_post.py");
    let results = run.results();
    let by_step = |step: &str| -> Value {
        results
            .iter()
            .find(|r| r["step"] == step)
            .unwrap_or_else(|| panic!("no result for {step}: {results:#?}"))
            .clone()
    };
    let mut expected = Vec::new();
    for (i, step) in ["json", "binary", "empty"].into_iter().enumerate() {
        let r = by_step(step);
        assert_eq!(r["status"], 202, "{step}: {r:#}\n{}", d.session_logs());
        assert_eq!(r["content_type"], "application/json", "{r:#}");
        let answer: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let seq = i as u64 + 1;
        assert_eq!(
            answer,
            serde_json::json!({"first_sequence": seq, "last_sequence": seq}),
            "{step}"
        );
        expected.push((step, r));
    }
    let big = by_step("big");
    assert_eq!(big["status"], 413, "{big:#}");
    assert!(
        big["body"].as_str().unwrap().contains("--max-record-bytes"),
        "the answer names the limit: {big:#}"
    );

    // curl, when installed, with a body that makes it wait for 100 Continue.
    let curl_body = serde_json::json!({"from": "curl", "n": [1, 2, 3]}).to_string();
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(&d.socket)
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &curl_body,
            "-w",
            "\n%{http_code}",
            "http://localhost/v1/curl?x=1",
        ])
        .output();
    let curl_ran = match curl {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "curl: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (body, code) = text.rsplit_once('\n').unwrap();
            assert_eq!(code, "202", "{text}");
            let answer: Value = serde_json::from_str(body).unwrap();
            assert_eq!(answer["first_sequence"], 4, "{answer}");
            true
        }
        Err(e) => {
            report(
                test,
                format!("curl not run ({e}); http.client covered the requests"),
            );
            false
        }
    };

    let want = 3 + usize::from(curl_ran);
    wait_until("every request at the main server", || {
        server.events_of("req").len() >= want
    })
    .await;
    let reqs = server.events_of("req");
    assert_eq!(
        reqs.len(),
        want,
        "each once, not the refused one: {reqs:#?}\n{}",
        context(&d, &server)
    );
    let shape: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    let mut want_shape = vec![
        ("POST", "/v1/orders?tenant=t1"),
        ("PUT", "/blobs/7"),
        ("DELETE", "/v1/orders/9"),
    ];
    if curl_ran {
        want_shape.push(("POST", "/v1/curl?x=1"));
    }
    assert_eq!(shape, want_shape, "in order");
    for (req, (step, sent)) in reqs.iter().zip(&expected) {
        assert_eq!(
            b64(&req["body_b64"]),
            b64(&sent["payload_b64"]),
            "{step}: the body, byte for byte"
        );
        for gone in ["transfer-encoding", "expect"] {
            assert_eq!(
                field(&req["headers"], gone),
                None,
                "{step}: {gone} is not replayed: {req:#}"
            );
        }
    }
    assert_eq!(
        field(&reqs[0]["headers"], "content-type"),
        Some("application/json")
    );
    assert_eq!(field(&reqs[0]["headers"], "x-request-id"), Some("r-1"));
    assert_eq!(
        field(&reqs[1]["headers"], "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(field(&reqs[2]["headers"], "x-request-id"), Some("r-3"));
    if curl_ran {
        assert_eq!(b64(&reqs[3]["body_b64"]), curl_body.as_bytes());
        assert!(
            field(&reqs[3]["headers"], "user-agent").is_some_and(|ua| ua.starts_with("curl/")),
            "curl's own headers are the application's: {:#}",
            reqs[3]
        );
    }
    // The server answered; the daemon counts a record delivered once it has its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = status_json(&area.dir()).await;
        if st["delivered_records"] == want && st["backlog_records"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st:#}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    d.stop().await;
    report(
        test,
        format!(
            "{want} requests (JSON, chunked binary with Expect: 100-continue, empty{}) answered 202 and replayed byte for byte; \
             a body of {} bytes over --max-record-bytes {LIMIT} got 413",
            if curl_ran { ", curl --unix-socket" } else { "" },
            LIMIT + 1
        ),
    );
}
