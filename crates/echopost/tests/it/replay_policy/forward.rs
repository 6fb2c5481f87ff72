//! Forward mode to HTTP applications: an empty POST to a server that requires a length,
//! the backoff after sporadic 503s, and `--status-class` moving 409 from the records'
//! fault (dead-letter) to a transient one (retry).

use std::time::Instant;

use super::*;
use crate::support::daemon::{Area, echopost_async};

/// Waits until the daemon's backlog is empty; returns the last `status --json`.
async fn drained(dir: &Path, d: &Daemon, server: &PyServer) -> Value {
    let deadline = Instant::now() + LONG_WAIT;
    loop {
        let st = status_json(dir).await;
        if st["backlog_records"] == 0 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after {LONG_WAIT:?}: {st:#}\n{}",
            context(d, server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The orders the server accepted (2xx), in arrival order.
fn accepted_orders(server: &PyServer) -> Vec<u64> {
    server
        .events_of("req")
        .iter()
        .filter(|e| {
            e["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))
        })
        .filter_map(|e| order_number(e["body"].as_str().unwrap()))
        .collect()
}

/// A record with an empty payload on `POST /x` (and `PUT /x`), to a server that answers
/// 411 when Content-Length is missing: delivered, and the server saw `Content-Length: 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_post_carries_content_length_zero() {
    let test = "empty_post_carries_content_length_zero";
    let Some(python) = python(test) else {
        return;
    };
    let (area, server, mut d) = http_setup(&python, &["--require-length".into()], &[]).await;
    let empty = |route: &str| Record {
        id: format!("empty {route}"),
        stream: "orders".into(),
        payload: Vec::new(),
        headers: Default::default(),
        route: route.into(),
        timestamp_unix_nanos: 1,
    };
    append(
        &d,
        vec![
            order(1),
            empty("POST /x"),
            order(3),
            empty("PUT /x"),
            order(5),
        ],
    )
    .await;
    let dir = area.dir();
    let st = drained(&dir, &d, &server).await;
    let reqs = server.events_of("req");
    let seen: Vec<(String, String, u64, Option<String>, u64)> = reqs
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
                e["content_length"].as_str().map(str::to_owned),
                e["len"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen.iter()
            .map(|(m, p, s, c, l)| (m.as_str(), p.as_str(), *s, c.as_deref(), *l))
            .filter(|(_, p, ..)| *p == "/x")
            .collect::<Vec<_>>(),
        vec![
            ("POST", "/x", 200, Some("0"), 0),
            ("PUT", "/x", 200, Some("0"), 0)
        ],
        "{}",
        context(&d, &server)
    );
    assert_eq!(reqs.len(), 5, "each record sent once: {reqs:#?}");
    assert!(reqs.iter().all(|e| e["status"] == 200), "no 411: {reqs:#?}");
    assert_eq!(accepted_orders(&server), vec![1, 3, 5]);
    assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
    assert_eq!(st["delivered_records"], 5, "{st:#}");
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "delivered {} of 5 (empty POST /x and PUT /x with Content-Length: 0), dead-lettered {}, \
             duplicates 0, attempts {} (411: {})",
            st["delivered_records"],
            letters.len(),
            reqs.len(),
            reqs.iter().filter(|e| e["status"] == 411).count(),
        ),
    );
}

/// A server that answers 503 to every 50th request: 500 records are delivered in well
/// under the time a backoff that kept growing would take (ten failures in a row without a
/// reset wait about 40 s on average; with the reset each waits at most 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_starts_over_after_each_success() {
    let test = "backoff_starts_over_after_each_success";
    let Some(python) = python(test) else {
        return;
    };
    const RECORDS: u64 = 500;
    const WITHIN: Duration = Duration::from_secs(20);
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server = PyServer::start(
        &python,
        "http_server.py",
        &[
            "--fail-every".into(),
            "50".into(),
            "--fail-status".into(),
            "503".into(),
        ],
        area.root.path(),
    )
    .await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let start = Instant::now();
    append(&d, (1..=RECORDS).map(order).collect()).await;
    let dir = area.dir();
    let st = drained(&dir, &d, &server).await;
    let took = start.elapsed();
    let reqs = server.events_of("req");
    let accepted = accepted_orders(&server);
    assert_eq!(
        accepted,
        (1..=RECORDS).collect::<Vec<_>>(),
        "{}",
        context(&d, &server)
    );
    let failed = reqs.iter().filter(|e| e["status"] == 503).count();
    assert!(failed >= 10, "{failed} 503s: {reqs:?}");
    assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
    let logs = d.session_logs();
    let backoffs: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("delivery failed; backing off"))
        .collect();
    assert_eq!(backoffs.len(), failed, "{logs}");
    for l in &backoffs {
        assert!(
            l.contains("attempt=1 "),
            "every 503 follows a success, so each backoff is the first of its series: {l}"
        );
    }
    assert!(
        took < WITHIN,
        "500 records with a 503 every 50 requests took {took:?}: the backoff did not start over; {logs}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "delivered {} of {RECORDS} in order in {:.2}s (bound {WITHIN:?}), dead-lettered {}, duplicates {}, \
             attempts {} ({failed} answered 503, each backed off as attempt 1), health probes {}",
            accepted.len(),
            took.as_secs_f64(),
            letters.len(),
            duplicates(&accepted),
            reqs.len(),
            server.events_of("health").len(),
        ),
    );
}

const CONFLICT_RECORDS: u64 = 200;
/// Every 20th order conflicts on its first attempt (409), then goes through.
fn conflicts(i: u64) -> bool {
    i.is_multiple_of(20)
}

async fn conflict_run(test: &str, extra: &[&str]) -> Option<(Vec<u64>, Vec<Value>, usize)> {
    let python = python(test)?;
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server = PyServer::start(
        &python,
        "http_server.py",
        &["--conflict-marker".into(), "CONFLICT".into()],
        area.root.path(),
    )
    .await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut args = vec!["--upstream", upstream.as_str()];
    args.extend_from_slice(extra);
    let mut d = Daemon::start(&area, &args).await;
    let start = Instant::now();
    append(
        &d,
        (1..=CONFLICT_RECORDS)
            .map(|i| {
                let mut r = order(i);
                if conflicts(i) {
                    r.payload.extend_from_slice(b" CONFLICT");
                }
                r
            })
            .collect(),
    )
    .await;
    let dir = area.dir();
    let st = drained(&dir, &d, &server).await;
    let took = start.elapsed();
    let reqs = server.events_of("req");
    let accepted = accepted_orders(&server);
    let conflicted = reqs.iter().filter(|e| e["status"] == 409).count();
    assert_eq!(
        conflicted,
        (1..=CONFLICT_RECORDS).filter(|i| conflicts(*i)).count(),
        "each conflicting record got one 409: {reqs:?}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert_eq!(
        st["dead_lettered_records"],
        letters.len(),
        "{st:#}\n{letters:#?}"
    );
    report(
        test,
        format!(
            "{}: delivered {} of {CONFLICT_RECORDS} in order, dead-lettered {}, duplicates {}, attempts {} \
             ({conflicted} answered 409), {:.2}s",
            if extra.is_empty() {
                "default classes".to_owned()
            } else {
                extra.join(" ")
            },
            accepted.len(),
            letters.len(),
            duplicates(&accepted),
            reqs.len(),
            took.as_secs_f64(),
        ),
    );
    Some((accepted, letters, reqs.len()))
}

/// `--status-class http:409=transient`: a record answered 409 once is sent again and
/// delivered; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_class_409_transient_retries_and_delivers_everything() {
    let Some((accepted, letters, attempts)) = conflict_run(
        "status_class_409_transient_retries_and_delivers_everything",
        &["--status-class", "http:409=transient"],
    )
    .await
    else {
        return;
    };
    assert_eq!(accepted, (1..=CONFLICT_RECORDS).collect::<Vec<_>>());
    assert!(letters.is_empty(), "{letters:#?}");
    assert_eq!(attempts as u64, CONFLICT_RECORDS + CONFLICT_RECORDS / 20);
}

/// Without the override, 409 is the record's fault: exactly the records answered 409 are
/// dead-lettered (with the server's answer as the reason), the others are delivered in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_classes_dead_letter_the_records_answered_409() {
    let Some((accepted, letters, attempts)) =
        conflict_run("default_classes_dead_letter_the_records_answered_409", &[]).await
    else {
        return;
    };
    let want: Vec<u64> = (1..=CONFLICT_RECORDS).filter(|i| !conflicts(*i)).collect();
    assert_eq!(accepted, want);
    let got: Vec<u64> = letters
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    let want_dead: Vec<u64> = (1..=CONFLICT_RECORDS).filter(|i| conflicts(*i)).collect();
    assert_eq!(got, want_dead, "{letters:#?}");
    for l in &letters {
        let reason = l["reason"].as_str().unwrap();
        assert!(
            reason.contains("HTTP 409") && reason.contains("conflict"),
            "{reason}"
        );
    }
    assert_eq!(attempts as u64, CONFLICT_RECORDS);
}

/// `dead-letters requeue` while the daemon runs (issue: requeue breaks identity and order):
/// the records answered 409 are dead-lettered, then requeued through the running daemon,
/// replayed after everything stored before them, in their own order, each with the
/// `Idempotency-Key` of its first delivery attempt (`SOURCE:ORIGINAL SEQUENCE`), and the
/// dead-letter log is empty afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_while_running_keeps_order_and_identity() {
    let test = "requeue_while_running_keeps_order_and_identity";
    let Some(python) = python(test) else {
        return;
    };
    let (area, server, mut d) = http_setup(
        &python,
        &["--conflict-marker".into(), "CONFLICT".into()],
        &[],
    )
    .await;
    // Without an id, so that the key is the record's (source, sequence) identity.
    let conflicting = |i: u64| {
        let mut r = order(i);
        r.id.clear();
        if conflicts(i) {
            r.payload.extend_from_slice(b" CONFLICT");
        }
        r
    };
    append(&d, (1..=CONFLICT_RECORDS).map(conflicting).collect()).await;
    let dir = area.dir();
    let st = drained(&dir, &d, &server).await;
    let source = st["source_id"].as_str().expect("source id").to_owned();
    let dead: Vec<u64> = (1..=CONFLICT_RECORDS).filter(|i| conflicts(*i)).collect();
    let mut letters = dead_letters(&dir).await;
    for _ in 0..250 {
        if letters.len() == dead.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        letters = dead_letters(&dir).await;
    }
    assert_eq!(letters.len(), dead.len(), "{letters:#?}");
    // Newer records, stored before the requeue: they are replayed before the requeued ones.
    append(
        &d,
        (CONFLICT_RECORDS + 1..=CONFLICT_RECORDS + 5)
            .map(order)
            .collect(),
    )
    .await;

    let out = echopost_async(
        &[
            "dead-letters",
            "requeue",
            "--dir",
            dir.to_str().unwrap(),
            "--json",
        ],
        None,
    )
    .await
    .expect_code(0);
    assert_eq!(out.json()["requeued"], dead.len(), "{}", out.stdout);
    let want: Vec<u64> = (1..=CONFLICT_RECORDS + 5)
        .filter(|i| !conflicts(*i))
        .chain(dead.iter().copied())
        .collect();
    wait_until("the requeued records delivered", || {
        accepted_orders(&server).len() >= want.len()
    })
    .await;
    let accepted = accepted_orders(&server);
    assert_eq!(accepted, want, "{}", context(&d, &server));
    // Each requeued record carries the key of its first attempt.
    let reqs = server.events_of("req");
    for i in &dead {
        let keys: Vec<&str> = reqs
            .iter()
            .filter(|e| order_number(e["body"].as_str().unwrap_or_default()) == Some(*i))
            .map(|e| e["headers"]["idempotency-key"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            keys.len(),
            2,
            "order {i}: a 409, then the requeued delivery"
        );
        assert!(
            keys.iter().all(|k| *k == format!("{source}:{i}")),
            "order {i}: the key of its first attempt, before and after: {keys:?}"
        );
    }
    let after = drained(&dir, &d, &server).await;
    assert_eq!(after["dead_lettered_records"], dead.len(), "{after:#}");
    d.stop().await;
    let left = dead_letters(&dir).await;
    assert!(left.is_empty(), "the dead-letter log is empty: {left:#?}");
    report(
        test,
        format!(
            "dead-lettered {}, requeued {} while running (source {source}), delivered {} in the \
             expected order, duplicates {}",
            dead.len(),
            dead.len(),
            accepted.len(),
            duplicates(&accepted)
        ),
    );
}
