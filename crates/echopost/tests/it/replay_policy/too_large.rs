//! Size refusals: a main server whose request limit is below `--batch-bytes` gets halved
//! batches (nothing is dead-lettered), the largest record ingest accepts by default fits a
//! stock gRPC server's default limit inside `Sink/Deliver`, and in forward mode a record
//! too large alone (HTTP 413) is dead-lettered with its size while the others go through.

use std::time::Instant;

use echopost_log::LogOptions;
use prost::Message;

use super::*;
use crate::support::daemon::Area;
use crate::support::replay::{fill, open_log_with};

/// Sequences of the accepted `Deliver` calls, in arrival order, and the calls themselves.
fn accepted(server: &PyServer) -> (Vec<u64>, Vec<Value>) {
    let calls: Vec<Value> = server
        .events_of("deliver")
        .into_iter()
        .filter(|e| e["ok"] == true)
        .collect();
    let seqs = calls
        .iter()
        .flat_map(|e| {
            e["seqs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    (seqs, calls)
}

const SMALL_RECORDS: u64 = 20_000;
const SMALL_PAYLOAD: usize = 256;
const ONE_MIB: u64 = 1 << 20;

/// 20,000 records of 256 bytes, already buffered, to a grpcio Sink that takes at most
/// 1 MiB per message, with the default `--batch-bytes` (4 MiB): grpcio refuses the first
/// batches with RESOURCE_EXHAUSTED ("Received message larger than max"), the replayer
/// halves them until they fit, and every record arrives, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sink_with_a_1mib_limit_gets_every_record_in_halved_batches() {
    let test = "grpc_sink_with_a_1mib_limit_gets_every_record_in_halved_batches";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    // Buffered before the daemon starts, so the first batch is a full 4 MiB one.
    {
        let log = open_log_with(&area.dir(), LogOptions::default());
        fill(&log, 1, SMALL_RECORDS, |i| {
            let mut r = order(i);
            r.payload = format!("order-{i:06} ").into_bytes();
            r.payload.resize(SMALL_PAYLOAD, b'x');
            r
        });
    }
    let args = [
        proto_arg().to_vec(),
        vec!["--max-receive".into(), ONE_MIB.to_string()],
    ]
    .concat();
    let server = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let start = Instant::now();
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let dir = area.dir();
    wait_until("every record delivered", || {
        accepted(&server).0.len() >= SMALL_RECORDS as usize
    })
    .await;
    let took = start.elapsed();
    let (seqs, calls) = accepted(&server);
    assert_eq!(
        seqs,
        (1..=SMALL_RECORDS).collect::<Vec<_>>(),
        "every record, in order, once; {}",
        context(&d, &server)
    );
    let largest = calls
        .iter()
        .map(|c| c["bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(largest <= ONE_MIB, "{largest}");
    let per_call: Vec<usize> = calls
        .iter()
        .map(|c| c["seqs"].as_array().unwrap().len())
        .collect();
    let mut st = status_json(&dir).await;
    for _ in 0..250 {
        if st["backlog_records"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    assert_eq!(st["backlog_records"], 0, "{st:#}");
    assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
    let logs = d.session_logs();
    // The size of each refused batch, from the driver's warning.
    let halved: Vec<u64> = logs
        .lines()
        .filter(|l| l.contains("halving it to"))
        .filter_map(|l| l.split("records=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let halvings = halved.len();
    assert!(
        halvings >= 2,
        "a 4 MiB batch needs two halvings to fit 1 MiB: {logs}"
    );
    // "Halve the batch (and later ones)": no batch is larger than one already refused,
    // not even one the feed had read ahead before the first refusal.
    assert!(
        halved.windows(2).all(|w| w[1] <= w[0]),
        "a batch larger than a refused one was sent: refused batches of {halved:?} records"
    );
    assert!(
        logs.contains("larger than max"),
        "the refusals are grpcio's: {logs}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "delivered {} of {SMALL_RECORDS} in order in {} Deliver calls (records per call: first {:?}, most {}; \
             largest request {largest} bytes), {halvings} halvings after grpcio's size refusals (refused batches of {halved:?} records), \
             dead-lettered {}, duplicates {}, drained in {:.2}s",
            seqs.len(),
            calls.len(),
            per_call.first(),
            per_call.iter().max().unwrap(),
            letters.len(),
            duplicates(&seqs),
            took.as_secs_f64(),
        ),
    );
}

/// The same 1 MiB grpcio Sink, and one record of 2 MiB among small ones: the batches
/// holding it are halved down to that record alone, which is dead-lettered with its size;
/// every other record is delivered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_sink_with_a_1mib_limit_dead_letters_only_a_record_too_large_alone() {
    let test = "grpc_sink_with_a_1mib_limit_dead_letters_only_a_record_too_large_alone";
    let Some(python) = python(test) else {
        return;
    };
    const RECORDS: u64 = 2000;
    const BIG: u64 = 1234;
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let args = [
        proto_arg().to_vec(),
        vec!["--max-receive".into(), ONE_MIB.to_string()],
    ]
    .concat();
    let server = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let big = order_of_size(BIG, 2 << 20);
    let big_len = big.encoded_len();
    let records: Vec<Record> = (1..=RECORDS)
        .map(|i| if i == BIG { big.clone() } else { order(i) })
        .collect();
    let start = Instant::now();
    // One append: the record is in the middle of the first batch.
    let mut c = d.client().await;
    c.append(AppendRequest {
        records,
        ..AppendRequest::default()
    })
    .await
    .expect("append");
    let dir = area.dir();
    let mut st = status_json(&dir).await;
    while st["backlog_records"] != 0 && start.elapsed() < LONG_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    let took = start.elapsed();
    assert_eq!(st["backlog_records"], 0, "{st:#}\n{}", context(&d, &server));
    let (seqs, calls) = accepted(&server);
    let want: Vec<u64> = (1..=RECORDS).filter(|s| *s != BIG).collect();
    assert_eq!(seqs, want, "{}", context(&d, &server));
    let logs = d.session_logs();
    let halvings = logs.matches("halving it to").count();
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["sequence"], BIG);
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{big_len} bytes")) && reason.contains("larger than max"),
        "the reason gives the record's size and the server's answer: {reason}"
    );
    report(
        test,
        format!(
            "a {big_len}-byte record among {RECORDS}: delivered {} in order in {} Deliver calls, {halvings} halvings, \
             dead-lettered {} (reason: {reason:?}), duplicates {}, {:.2}s",
            seqs.len(),
            calls.len(),
            letters.len(),
            duplicates(&seqs),
            took.as_secs_f64(),
        ),
    );
}

/// The default `--max-record-bytes` (4095 KiB).
const DEFAULT_MAX_RECORD: usize = 4095 * 1024;

/// Order `i` padded so that its encoded size is exactly `size`.
fn order_of_size(i: u64, size: usize) -> Record {
    let mut r = order(i);
    let extra = size - r.encoded_len();
    r.payload.resize(r.payload.len() + extra, b'x');
    // The payload's length prefix grew with it.
    while r.encoded_len() > size {
        r.payload.pop();
    }
    assert_eq!(r.encoded_len(), size, "cannot pad to {size}");
    r
}

/// The largest record ingest accepts by default is delivered to a stock grpcio Sink with
/// its default 4 MiB receive limit: the default `--max-record-bytes` leaves room for the
/// `DeliverRequest` envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_default_record_reaches_a_stock_grpcio_sink() {
    let test = "largest_default_record_reaches_a_stock_grpcio_sink";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server = PyServer::start(&python, "grpc_sink.py", &proto_arg(), area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let mut c = d.client().await;

    // One byte more is refused at ingest: the record below is at the limit.
    let over = order_of_size(2, DEFAULT_MAX_RECORD + 1);
    let refused = c
        .append(AppendRequest {
            records: vec![over],
            ..AppendRequest::default()
        })
        .await
        .expect_err("a record above the default limit is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let biggest = order_of_size(2, DEFAULT_MAX_RECORD);
    let payload_len = biggest.payload.len() as u64;
    let start = Instant::now();
    append(&d, vec![order(1), biggest, order(3)]).await;
    wait_until("the three records delivered", || {
        accepted(&server).0.len() >= 3
    })
    .await;
    let took = start.elapsed();
    let (seqs, calls) = accepted(&server);
    assert_eq!(seqs, vec![1, 2, 3], "{}", context(&d, &server));
    let big_call = calls
        .iter()
        .find(|c| c["seqs"].as_array().unwrap().contains(&2.into()))
        .unwrap();
    assert_eq!(big_call["max_payload"], payload_len, "{big_call}");
    let request_bytes = big_call["bytes"].as_u64().unwrap();
    assert!(request_bytes <= 4 << 20, "{request_bytes}");
    let failed = server
        .events_of("deliver")
        .iter()
        .filter(|e| e["ok"] == false)
        .count();
    let dir = area.dir();
    let mut st = status_json(&dir).await;
    for _ in 0..250 {
        if st["backlog_records"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    assert_eq!(st["backlog_records"], 0, "{st:#}");
    assert_eq!(st["dead_lettered_records"], 0, "{st:#}");
    let logs = d.session_logs();
    assert!(
        !logs.contains("too large"),
        "nothing was refused as too large: {logs}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "a {DEFAULT_MAX_RECORD}-byte record (payload {payload_len} bytes; one byte more refused at ingest) \
             delivered to grpcio's default 4 MiB limit in a {request_bytes}-byte DeliverRequest \
             ({} bytes to spare) with its neighbours: delivered {} in order in {} Deliver calls, \
             {failed} failed, dead-lettered {}, duplicates {}, {:.2}s",
            (4u64 << 20) - request_bytes,
            seqs.len(),
            calls.len(),
            letters.len(),
            duplicates(&seqs),
            took.as_secs_f64(),
        ),
    );
}

/// Forward mode to an HTTP server that answers 413 to bodies above N bytes: the records
/// above N are dead-lettered, each with its size in the reason; the others are delivered
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_413_dead_letters_only_the_records_too_large_alone_with_their_size() {
    let test = "http_413_dead_letters_only_the_records_too_large_alone_with_their_size";
    let Some(python) = python(test) else {
        return;
    };
    const N: usize = 1000;
    const RECORDS: u64 = 100;
    let big: [u64; 3] = [10, 50, 100];
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let server = PyServer::start(
        &python,
        "http_server.py",
        &["--max-body".into(), N.to_string()],
        area.root.path(),
    )
    .await;
    let upstream = format!("http://127.0.0.1:{}", server.port);
    let mut d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let records: Vec<Record> = (1..=RECORDS)
        .map(|i| {
            let mut r = order(i);
            if big.contains(&i) {
                r.payload.resize(N + 1 + i as usize, b'x');
            }
            r
        })
        .collect();
    let sizes: Vec<(u64, usize, usize)> = records
        .iter()
        .zip(1..)
        .filter(|(_, i)| big.contains(i))
        .map(|(r, i)| (i, r.encoded_len(), r.payload.len()))
        .collect();
    let start = Instant::now();
    append(&d, records).await;
    let dir = area.dir();
    let mut st = status_json(&dir).await;
    while st["backlog_records"] != 0 && start.elapsed() < LONG_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = status_json(&dir).await;
    }
    let took = start.elapsed();
    assert_eq!(st["backlog_records"], 0, "{st:#}\n{}", context(&d, &server));
    let reqs = server.events_of("req");
    let accepted: Vec<u64> = reqs
        .iter()
        .filter(|e| e["status"] == 200)
        .map(|e| order_number(e["body"].as_str().unwrap()).unwrap())
        .collect();
    let want: Vec<u64> = (1..=RECORDS).filter(|i| !big.contains(i)).collect();
    assert_eq!(accepted, want, "{}", context(&d, &server));
    let refused = reqs.iter().filter(|e| e["status"] == 413).count();
    assert_eq!(
        refused,
        big.len(),
        "each record too large is sent once: {reqs:?}"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    let got: Vec<u64> = letters
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(got, big.to_vec(), "{letters:#?}");
    for (l, (seq, stored, payload)) in letters.iter().zip(&sizes) {
        let reason = l["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("{stored} bytes"))
                && reason.contains("too large")
                && reason.contains("413"),
            "record {seq} ({stored} bytes stored, payload {payload}): {reason}"
        );
    }
    report(
        test,
        format!(
            "413 above {N} bytes: delivered {} of {RECORDS} in order, dead-lettered {} (sizes stored/payload {:?}; \
             first reason: {:?}), duplicates {}, attempts {} ({refused} answered 413), {:.2}s",
            accepted.len(),
            letters.len(),
            sizes
                .iter()
                .map(|(_, s, p)| format!("{s}/{p}"))
                .collect::<Vec<_>>(),
            letters.first().and_then(|l| l["reason"].as_str()),
            duplicates(&accepted),
            reqs.len(),
            took.as_secs_f64(),
        ),
    );
}

const SLOW_RECORDS: u64 = 400;

/// A grpcio Sink whose work grows with the batch (6 ms a record: 2.4 s for the whole
/// backlog in one `Deliver`, 0.6 s for a quarter of it) behind `--request-timeout 1s`: a
/// long `Deliver` is not cut short again and again; the batch is halved until the server
/// answers in time (400 → 200 and 200 → 100 + 100 twice: three timeouts), and everything
/// arrives in order in batches, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_slower_than_the_request_timeout_is_halved_not_repeated() {
    let test = "deliver_slower_than_the_request_timeout_is_halved_not_repeated";
    let Some(python) = python(test) else {
        return;
    };
    let area = Area::new();
    std::fs::create_dir_all(area.dir()).unwrap();
    let mut args = proto_arg().to_vec();
    args.extend(["--seconds-per-record".to_owned(), "0.006".to_owned()]);
    let server = PyServer::start(&python, "grpc_sink.py", &args, area.root.path()).await;
    let upstream = format!("grpc://127.0.0.1:{}", server.port);
    // Stored before the daemon starts, so that the first Deliver holds all of them.
    let dir = area.dir();
    {
        let log = open_log_with(&dir, LogOptions::default());
        fill(&log, 1, SLOW_RECORDS, order);
    }
    let mut d = Daemon::start(&area, &["--upstream", &upstream, "--request-timeout", "1s"]).await;
    let start = Instant::now();
    wait_until("every record accepted", || {
        accepted(&server).0.len() >= SLOW_RECORDS as usize
    })
    .await;
    let took = start.elapsed();
    let (seqs, calls) = accepted(&server);
    assert_eq!(
        seqs,
        (1..=SLOW_RECORDS).collect::<Vec<_>>(),
        "every record, in order, once among the answered calls; {}",
        context(&d, &server)
    );
    let cancelled = server
        .events_of("deliver")
        .iter()
        .filter(|e| e["cancelled"] == true)
        .count();
    let smallest = calls
        .iter()
        .map(|c| c["seqs"].as_array().unwrap().len())
        .min()
        .unwrap_or(0);
    assert!(
        cancelled <= 4,
        "{cancelled} calls timed out: the batch is halved after each, not repeated; {}",
        context(&d, &server)
    );
    assert!(
        smallest >= 50,
        "delivered in batches (smallest {smallest} records), not record by record"
    );
    d.stop().await;
    let letters = dead_letters(&dir).await;
    assert!(letters.is_empty(), "{letters:?}");
    report(
        test,
        format!(
            "6 ms a record, --request-timeout 1s: {cancelled} Deliver calls timed out, then \
             delivered {} of {SLOW_RECORDS} in order in {} calls (smallest {smallest} records), \
             dead-lettered {}, {:.2}s",
            seqs.len(),
            calls.len(),
            letters.len(),
            took.as_secs_f64()
        ),
    );
}
