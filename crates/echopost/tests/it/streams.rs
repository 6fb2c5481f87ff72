//! Streams and idempotent producers (issue 14) against the real daemon on its socket.
//!
//! * A retry after `kill -9` between the sync and the answer: the daemon is started with
//!   the test-only `ECHOPOST_TEST_STALL_AFTER_SYNC` hook, which makes the commit thread
//!   create a marker file and stop once a producer's batch is durable, before answering.
//!   The test waits for the marker and sends SIGKILL, so the kill falls exactly there
//!   (deterministic, no timing guess). The retry on the restarted daemon stores nothing
//!   and gets the original sequences.
//! * Two producers racing on one expected version: one stored, one `ABORTED`.
//! * `ListStreams`, `Read` by stream and `Peek` on a mixed backlog, before and after part
//!   of it was delivered to a real gRPC sink, and `echopost streams` / `status` on it.
//! * The limits: stream names over 256 bytes, `--max-streams`, producer number gaps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use echopost_proto::v1::echo_post_client::EchoPostClient;
use echopost_proto::v1::{
    AppendRequest, AppendResponse, ListStreamsRequest, PeekRequest, ReadRequest, Record, StreamInfo,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::daemon::{self, Area, Daemon, echopost_async, read_all, run_command, status};
use crate::support::upstream::{GrpcServer, GrpcState};

fn on(stream: &str, payload: &str) -> Record {
    Record {
        stream: stream.to_owned(),
        payload: payload.as_bytes().to_vec(),
        ..Record::default()
    }
}

fn produced(id: &str, seq: u64, records: Vec<Record>) -> AppendRequest {
    AppendRequest {
        records,
        producer_id: id.to_owned(),
        producer_sequence: seq,
        expected_stream_version: None,
    }
}

async fn send(
    c: &mut EchoPostClient<Channel>,
    r: AppendRequest,
) -> Result<AppendResponse, tonic::Status> {
    c.append(r).await.map(tonic::Response::into_inner)
}

async fn list(c: &mut EchoPostClient<Channel>) -> Vec<StreamInfo> {
    c.list_streams(ListStreamsRequest {})
        .await
        .expect("ListStreams")
        .into_inner()
        .streams
}

async fn read_stream(c: &mut EchoPostClient<Channel>, stream: &str) -> Vec<(u64, String)> {
    let mut rs = c
        .read(ReadRequest {
            from_sequence: 0,
            limit: 0,
            stream: stream.to_owned(),
        })
        .await
        .expect("Read")
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = rs.message().await.expect("Read message") {
        for r in m.records {
            let rec = r.record.unwrap_or_default();
            assert_eq!(rec.stream, stream);
            out.push((r.sequence, String::from_utf8(rec.payload).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_kill_9_between_sync_and_answer_stores_one_copy() {
    let area = Area::new();
    let marker = area.root.path().join("synced");
    let stderr = area.root.path().join("stderr-stalled.txt");
    let mut cmd = run_command(&area.dir(), &[], &stderr);
    cmd.env("ECHOPOST_TEST_STALL_AFTER_SYNC", &marker);
    let mut child = cmd.spawn().expect("spawn echopost");
    let channel = loop {
        if let Ok(ch) = daemon::connect(&area.socket()).await {
            break ch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut c = EchoPostClient::new(channel);
    // A batch without a producer is answered normally (the hook waits for a producer's).
    let before = send(
        &mut c,
        AppendRequest {
            records: vec![on("s", "plain")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(before.first_sequence, 1);

    let batch = produced("app-1", 100, vec![on("s", "x"), on("s", "y"), on("s", "z")]);
    let attempt = tokio::spawn({
        let mut c = c.clone();
        let batch = batch.clone();
        async move { send(&mut c, batch).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the hook never fired: {}",
            daemon::read_lossy(&stderr)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let lost = attempt.await.unwrap();
    assert!(
        lost.is_err(),
        "the first attempt must not have been answered: {lost:?}"
    );

    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let retry = send(&mut c, batch.clone()).await.unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(
        (retry.first_sequence, retry.last_sequence),
        (2, 4),
        "the original sequences"
    );
    assert_eq!(retry.stream_version, 4);
    let stored = read_all(&mut c, 0, 0).await.0;
    assert_eq!(stored.len(), 4, "one copy: {stored:?}");
    // The series goes on after the batch; a second retry is still a duplicate.
    let next = send(&mut c, produced("app-1", 103, vec![on("s", "w")]))
        .await
        .unwrap();
    assert_eq!(
        (next.first_sequence, next.duplicate, next.stream_version),
        (5, false, 5)
    );
    assert!(send(&mut c, batch).await.unwrap().duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_numbers_out_of_series_are_refused_naming_the_expected_one() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let a = send(&mut c, produced("p", 7, vec![on("", "a"), on("", "b")]))
        .await
        .unwrap();
    assert_eq!(
        (a.first_sequence, a.last_sequence, a.duplicate),
        (1, 2, false)
    );
    // A gap, an unknown older number, and a known number with another record count.
    for (seq, n) in [(10u64, 1usize), (3, 1), (7, 1)] {
        let e = send(&mut c, produced("p", seq, vec![on("", "g"); n]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("expected 9"), "{}", e.message());
    }
    assert_eq!(status(&mut c).await.next_sequence, 3, "nothing stored");
    // Across a restart (the state comes back from the log).
    drop(c);
    let mut d = d;
    d.stop().await;
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let again = send(&mut c, produced("p", 7, vec![on("", "a"), on("", "b")]))
        .await
        .unwrap();
    assert_eq!(
        (again.first_sequence, again.last_sequence, again.duplicate),
        (1, 2, true)
    );
    let e = send(&mut c, produced("p", 10, vec![on("", "g")]))
        .await
        .unwrap_err();
    assert!(e.message().contains("expected 9"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_racing_on_one_expected_version_get_one_winner() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let first = send(
        &mut c,
        AppendRequest {
            records: vec![on("orders", "created")],
            expected_stream_version: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(first.stream_version, 1);
    for round in 0..20u64 {
        let expected = 1 + round;
        let mut tasks = Vec::new();
        for who in 0..2 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                send(
                    &mut c,
                    AppendRequest {
                        records: vec![on("orders", &format!("by {who}"))],
                        expected_stream_version: Some(expected),
                        ..Default::default()
                    },
                )
                .await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    won += 1;
                    assert_eq!(r.stream_version, expected + 1);
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::Aborted, "{e:?}");
                    assert!(
                        e.message()
                            .contains(&format!("at version {}", expected + 1)),
                        "{}",
                        e.message()
                    );
                }
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
    let infos = list(&mut c).await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].version, 21);
    assert_eq!(infos[0].backlog_records, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_names_and_the_stream_count_are_limited() {
    let area = Area::new();
    let d = Daemon::start(&area, &["--max-streams", "3"]).await;
    let mut c = d.client().await;
    let long = "n".repeat(257);
    let e = send(
        &mut c,
        AppendRequest {
            records: vec![on(&long, "x")],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("256"), "{}", e.message());
    send(
        &mut c,
        AppendRequest {
            records: vec![on(&"n".repeat(256), "x"), on("b", "y")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Two new streams where one is left: the whole batch is refused.
    let e = send(
        &mut c,
        AppendRequest {
            records: vec![on("c", "1"), on("d", "2")],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("--max-streams") && e.message().contains('3'),
        "{}",
        e.message()
    );
    send(
        &mut c,
        AppendRequest {
            records: vec![on("c", "1"), on("b", "2"), on("", "none")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = send(
        &mut c,
        AppendRequest {
            records: vec![on("e", "1")],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(list(&mut c).await.len(), 3);
    let e = send(
        &mut c,
        AppendRequest {
            records: vec![on("b", "1"), on("c", "2")],
            expected_stream_version: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "expected version needs one stream: {e:?}"
    );
    // Records without a stream have no version to expect: refused whatever the number,
    // alone or mixed with a named stream, and nothing is stored.
    let unnamed = Record {
        payload: b"no stream".to_vec(),
        ..Default::default()
    };
    for (records, expected) in [
        (vec![unnamed.clone()], 0),
        (vec![unnamed.clone(), unnamed.clone()], 5),
        (vec![on("b", "1"), unnamed.clone()], 2),
    ] {
        let before = list(&mut c).await;
        let e = send(
            &mut c,
            AppendRequest {
                records,
                expected_stream_version: Some(expected),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("without a stream"), "{}", e.message());
        assert_eq!(list(&mut c).await, before, "nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_read_and_peek_by_stream_before_and_after_partial_delivery() {
    let area = Area::new();
    let state = Arc::new(GrpcState::default());
    let server = GrpcServer::start(Arc::clone(&state), None, None).await;
    // Everything Deliver gets fails transiently until the script runs out: nothing is
    // delivered while the test looks at the full backlog.
    state
        .script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(Code::Unavailable, 100_000));
    let upstream = server.url();
    let d = Daemon::start(&area, &["--upstream", &upstream]).await;
    let mut c = d.client().await;
    // A mixed backlog: a, b interleaved in one batch, then c, then a again.
    send(
        &mut c,
        AppendRequest {
            records: vec![on("a", "a1"), on("b", "b1"), on("a", "a2"), on("", "none")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    send(&mut c, produced("p", 1, vec![on("c", "c1")]))
        .await
        .unwrap();
    send(
        &mut c,
        AppendRequest {
            records: vec![on("a", "a3")],
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let infos = list(&mut c).await;
    let names: Vec<&str> = infos.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let a = &infos[0];
    assert_eq!(
        (
            a.version,
            a.backlog_records,
            a.first_sequence,
            a.last_sequence
        ),
        (3, 3, 1, 6)
    );
    assert!(
        a.backlog_bytes > 3 * 4 && a.oldest_record_unix_nanos > 0,
        "{a:?}"
    );
    assert_eq!(
        read_stream(&mut c, "a").await,
        [(1, "a1".into()), (3, "a2".into()), (6, "a3".into())]
    );
    assert_eq!(read_stream(&mut c, "b").await, [(2, "b1".into())]);
    let peek = c
        .peek(PeekRequest { stream: "a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(peek.record.as_ref().map(|r| r.sequence), Some(6));
    assert_eq!(peek.stream_version, 3);
    let e = c
        .peek(PeekRequest {
            stream: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The CLI, live: `streams --json` and `status`'s largest backlogs.
    let dir = area.dir();
    let out = echopost_async(&["streams", "--json", "--dir", dir.to_str().unwrap()], None)
        .await
        .expect_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["stream"], "a");
    assert_eq!(lines[0]["version"], 3);
    let st = echopost_async(&["status", "--json", "--dir", dir.to_str().unwrap()], None)
        .await
        .expect_code(0)
        .json();
    assert_eq!(st["top_streams"][0]["stream"], "a");
    assert_eq!(st["top_streams"][0]["backlog_records"], 3);
    let only_a = echopost_async(
        &[
            "inspect",
            "--json",
            "--stream",
            "a",
            "--dir",
            dir.to_str().unwrap(),
        ],
        None,
    )
    .await
    .expect_code(0)
    .json_lines();
    assert_eq!(
        only_a
            .iter()
            .map(|l| l["sequence"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 3, 6]
    );

    // Deliver everything so far, then hold the rest back again.
    state.script.lock().unwrap().clear();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&mut c).await.backlog_records > 0 {
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state
        .script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(Code::Unavailable, 100_000));
    send(
        &mut c,
        AppendRequest {
            records: vec![on("b", "b2"), on("a", "a4")],
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let infos = list(&mut c).await;
    let by: std::collections::HashMap<&str, &StreamInfo> =
        infos.iter().map(|s| (s.stream.as_str(), s)).collect();
    assert_eq!(
        (
            by["a"].version,
            by["a"].backlog_records,
            by["a"].first_sequence
        ),
        (4, 1, 8)
    );
    assert_eq!(
        (
            by["b"].version,
            by["b"].backlog_records,
            by["b"].first_sequence
        ),
        (2, 1, 7)
    );
    assert_eq!(
        (
            by["c"].version,
            by["c"].backlog_records,
            by["c"].first_sequence
        ),
        (1, 0, 0)
    );
    assert_eq!(read_stream(&mut c, "a").await, [(8, "a4".into())]);
    assert!(read_stream(&mut c, "c").await.is_empty());
    let e = c
        .peek(PeekRequest { stream: "c".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "c was delivered: {e:?}");
    let peek = c
        .peek(PeekRequest { stream: "b".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(peek.record.map(|r| r.sequence), Some(7));

    // Offline, after a clean stop, `echopost streams` says the same.
    drop(c);
    let mut d = d;
    d.stop().await;
    let out = echopost_async(&["streams", "--json", "--dir", dir.to_str().unwrap()], None)
        .await
        .expect_code(0)
        .json_lines();
    let a = out.iter().find(|l| l["stream"] == "a").unwrap();
    assert_eq!(
        (a["version"].as_u64(), a["backlog_records"].as_u64()),
        (Some(4), Some(1))
    );
    let c_line = out.iter().find(|l| l["stream"] == "c").unwrap();
    assert_eq!(c_line["version"], 1);
    assert!(c_line["first_sequence"].is_null());
    server.stop().await;
}
