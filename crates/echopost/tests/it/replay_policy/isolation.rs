//! One record the main server cannot take, with a transient-looking answer: a grpcio Sink
//! whose handler raises on it (grpcio answers UNKNOWN, which is transient by default, so
//! the record is retried rather than dead-lettered on sight). With `--isolate-after 0s`
//! the batch is sent record by record after `SPLIT_AFTER` failures, the record fails
//! alone, the next record goes through, the record fails once more and only then is it
//! dead-lettered; every other record is delivered in order, within a bounded time.

use std::time::Instant;

use super::*;
use crate::support::daemon::Area;

const RECORDS: u64 = 400;
/// Most records per `Deliver` batch.
const BATCH: u64 = 50;
/// The bound the issue asks for: one bad record must not hold up the rest for long.
const WITHIN: Duration = Duration::from_secs(60);

async fn poison_record_isolated(test: &str, poison: u64) {
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let args = [
        proto_arg().to_vec(),
        vec!["--poison".into(), "POISON".into()],
    ]
    .concat();
    let server = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let batch = BATCH.to_string();
    let mut d = Daemon::start(
        &area,
        &[
            "--upstream",
            &upstream,
            "--isolate-after",
            "0s",
            "--batch-records",
            &batch,
        ],
    )
    .await;
    let records: Vec<Record> = (1..=RECORDS)
        .map(|i| {
            let mut r = order(i);
            if i == poison {
                r.payload = format!("order-{i:06} POISON").into_bytes();
            }
            r
        })
        .collect();
    // One append: the backlog is there at once, so the batches are 1-50, 51-100, ...
    let start = Instant::now();
    let mut c = d.client().await;
    c.append(AppendRequest {
        records,
        ..AppendRequest::default()
    })
    .await
    .expect("append the orders");

    let dir = area.dir();
    let delivered = || -> Vec<u64> {
        server
            .events_of("deliver")
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
    wait_until("every other record delivered", || {
        delivered().len() >= RECORDS as usize - 1
    })
    .await;
    let mut st = status_json(&dir).await;
    while st["backlog_records"] != 0 && start.elapsed() < LONG_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    let took = start.elapsed();
    let seqs = delivered();
    let want: Vec<u64> = (1..=RECORDS).filter(|s| *s != poison).collect();
    assert_eq!(
        seqs,
        want,
        "every record but {poison}, in order, once; {}",
        context(&d, &server)
    );
    assert_eq!(st["backlog_records"], 0, "{st:#}");
    assert_eq!(st["dead_lettered_records"], 1, "{st:#}");
    let calls = server.events_of("deliver");
    let failed: Vec<&Value> = calls.iter().filter(|e| e["ok"] == false).collect();
    for f in &failed {
        let s: Vec<u64> = f["seqs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert!(s.contains(&poison), "a failed call without the poison: {f}");
    }
    let alone = failed
        .iter()
        .filter(|f| f["seqs"].as_array().unwrap().len() == 1)
        .count();
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = &letters[0];
    assert_eq!(letter["sequence"], poison, "{letter:#}");
    assert_eq!(letter["id"], format!("order-{poison:06}"), "{letter:#}");
    let reason = letter["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Unknown")
            && reason.contains(&format!("cannot process record {poison}"))
            && reason.contains("accepted the next record"),
        "the reason says what the server answered and why the record is to blame: {reason}"
    );
    assert!(
        took < WITHIN,
        "one bad record held up the rest for {took:?} (more than {WITHIN:?}); {}",
        context(&d, &server)
    );
    report(
        test,
        format!(
            "poison record {poison}: delivered {} of {RECORDS} in order, dead-lettered {} (reason: {reason:?}), \
             duplicates {}, attempts {} Deliver calls ({} failed: {} as a batch, {alone} alone), drained in {:.2}s",
            seqs.len(),
            letters.len(),
            duplicates(&seqs),
            calls.len(),
            failed.len(),
            failed.len() - alone,
            took.as_secs_f64(),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_raising_on_one_record_mid_batch_dead_letters_only_it() {
    poison_record_isolated(
        "handler_raising_on_one_record_mid_batch_dead_letters_only_it",
        137,
    )
    .await;
}

/// The record is the last of its batch: the record to test the server with comes from
/// the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_raising_on_the_last_record_of_a_batch_dead_letters_only_it() {
    poison_record_isolated(
        "handler_raising_on_the_last_record_of_a_batch_dead_letters_only_it",
        150,
    )
    .await;
}

/// The record is the last one of the backlog: there is no next record to prove the
/// server works, so it is retried (it blocks nobody) until one arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_raising_on_the_last_record_waits_for_a_next_one() {
    let test = "handler_raising_on_the_last_record_waits_for_a_next_one";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let args = [
        proto_arg().to_vec(),
        vec!["--poison".into(), "POISON".into()],
    ]
    .concat();
    let server = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(
        &area,
        &[
            "--upstream",
            &upstream,
            "--isolate-after",
            "0s",
            "--batch-records",
            "50",
        ],
    )
    .await;
    let n = 20u64;
    let mut records: Vec<Record> = (1..n).map(order).collect();
    let mut last = order(n);
    last.payload = format!("order-{n:06} POISON").into_bytes();
    records.push(last);
    append(&d, records).await;
    let failed_alone = || {
        server
            .events_of("deliver")
            .iter()
            .filter(|e| e["ok"] == false && e["seqs"].as_array().unwrap().len() == 1)
            .count()
    };
    wait_until("the last record failing alone again and again", || {
        failed_alone() >= 4
    })
    .await;
    let dir = area.dir();
    let st = status_json(&dir).await;
    assert_eq!(
        st["dead_lettered_records"], 0,
        "nothing to prove the server with yet: {st:#}"
    );
    assert_eq!(st["backlog_records"], 1, "{st:#}");
    let waited = failed_alone();

    // A next record arrives: it is delivered, and the bad one is dead-lettered.
    let start = Instant::now();
    append(&d, vec![order(n + 1)]).await;
    wait_until("the next record delivered", || {
        server
            .events_of("deliver")
            .iter()
            .any(|e| e["ok"] == true && e["seqs"].as_array().unwrap().contains(&(n + 1).into()))
    })
    .await;
    let mut st = status_json(&dir).await;
    while st["backlog_records"] != 0 && start.elapsed() < LONG_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    let took = start.elapsed();
    assert_eq!(st["backlog_records"], 0, "{st:#}");
    assert_eq!(st["dead_lettered_records"], 1, "{st:#}");
    let seqs: Vec<u64> = server
        .events_of("deliver")
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
        .collect();
    let want: Vec<u64> = (1..n).chain([n + 1]).collect();
    assert_eq!(seqs, want, "{}", context(&d, &server));
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["sequence"], n);
    report(
        test,
        format!(
            "delivered {} of {}, dead-lettered {} (record {n}, after {waited} failures alone with no next record, \
             then {:.2}s after record {} arrived), duplicates {}, attempts {} Deliver calls",
            seqs.len(),
            n + 1,
            letters.len(),
            took.as_secs_f64(),
            n + 1,
            duplicates(&seqs),
            server.events_of("deliver").len(),
        ),
    );
}
