//! Ingest through the real binary and socket: Append, AppendStream, Read, Status, health
//! and reflection, and durability across a restart.

use std::collections::HashMap;
use std::time::Duration;

use echopost_proto::v1::AppendRequest;
use tokio_stream::StreamExt;

use crate::support::daemon::{self, Area, Daemon, append, read_all, record, status};

#[tokio::test]
async fn append_and_read_back_in_order() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;

    let a = append(&mut c, &[b"one"]).await.unwrap();
    assert_eq!((a.first_sequence, a.last_sequence), (1, 1));
    let a = append(&mut c, &[b"two", b"three", b"four"]).await.unwrap();
    assert_eq!((a.first_sequence, a.last_sequence), (2, 4));

    // A record with its own timestamp, id, headers and route keeps them all.
    let mut custom = record(b"five".to_vec());
    custom.id = "id-5".into();
    custom.route = "POST /v1/things".into();
    custom.timestamp_unix_nanos = 1_234_567;
    custom.headers = HashMap::from([("x-a".to_owned(), "b".to_owned())]);
    let a = c
        .append(AppendRequest {
            records: vec![custom.clone()],
            ..AppendRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.first_sequence, a.last_sequence), (5, 5));

    let (records, _) = read_all(&mut c, 0, 0).await;
    let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let payloads: Vec<&[u8]> = records
        .iter()
        .map(|r| r.record.as_ref().unwrap().payload.as_slice())
        .collect();
    assert_eq!(
        payloads,
        vec![&b"one"[..], b"two", b"three", b"four", b"five"]
    );
    // Zero timestamps are replaced with the time of receipt; others are kept.
    for r in &records[..4] {
        assert!(r.record.as_ref().unwrap().timestamp_unix_nanos > 1_600_000_000_000_000_000);
    }
    assert_eq!(records[4].record.as_ref().unwrap(), &custom);

    // Read is an inspection: reading again returns the same; from/limit select a window.
    let (again, _) = read_all(&mut c, 1, 0).await;
    assert_eq!(again, records);
    let (window, _) = read_all(&mut c, 3, 2).await;
    assert_eq!(
        window.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![3, 4]
    );

    let st = status(&mut c).await;
    assert_eq!(st.first_sequence, 1);
    assert_eq!(st.next_sequence, 6);
    assert_eq!(st.backlog_records, 5);
    assert!(
        st.backlog_bytes > 0 && st.disk_bytes >= st.backlog_bytes,
        "{st:?}"
    );
    assert_eq!(st.sync_policy, "always");
    assert_eq!(st.max_disk_bytes, 0);
    assert_eq!(st.upstream, "");
    assert_eq!(
        st.upstream_state,
        echopost_proto::v1::UpstreamState::None as i32
    );
    assert_eq!(st.pid as i32, d.pid());
    assert_eq!(st.dir, area.dir().display().to_string());
    assert_eq!(st.source_id.len(), 32, "{st:?}");
    assert!(st.session_id.ends_with(&format!("-{}", d.pid())), "{st:?}");
    assert!(st.uptime_seconds > 0.0);
    assert!(!st.version.is_empty());
    assert!(
        st.oldest_record_unix_nanos > 0,
        "oldest record timestamp missing: {st:?}"
    );
    assert_eq!(st.estimated_drain_seconds, -1.0);
}

#[tokio::test]
async fn append_stream_answers_each_request_in_order() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;

    let requests: Vec<AppendRequest> = (0..200u32)
        .map(|i| AppendRequest {
            records: (0..(i % 3 + 1))
                .map(|j| record(format!("{i}-{j}").into_bytes()))
                .collect(),
            ..AppendRequest::default()
        })
        .collect();
    let sizes: Vec<u64> = requests.iter().map(|r| r.records.len() as u64).collect();
    let mut responses = c
        .append_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut next = 1;
    let mut n = 0;
    while let Some(r) = responses.next().await {
        let r = r.unwrap();
        assert_eq!(r.first_sequence, next, "response {n}");
        assert_eq!(r.last_sequence, next + sizes[n] - 1, "response {n}");
        next = r.last_sequence + 1;
        n += 1;
    }
    assert_eq!(n, 200, "one response per request");

    let (records, _) = read_all(&mut c, 0, 10_000).await;
    assert_eq!(records.len() as u64, next - 1);
    let mut expected = Vec::new();
    for (i, s) in sizes.iter().enumerate() {
        for j in 0..*s {
            expected.push(format!("{i}-{j}").into_bytes());
        }
    }
    let got: Vec<Vec<u8>> = records
        .into_iter()
        .map(|r| r.record.unwrap().payload)
        .collect();
    assert_eq!(got, expected, "stored in arrival order");
}

#[tokio::test]
async fn read_streams_in_bounded_batches_with_default_limit() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    for chunk in 0..6 {
        let payloads: Vec<Vec<u8>> = (0..250)
            .map(|i| format!("{}", chunk * 250 + i).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        append(&mut c, &refs).await.unwrap();
    }
    // Limit 0 means the default of 1000 records, sent in several bounded messages.
    let (records, messages) = read_all(&mut c, 0, 0).await;
    assert_eq!(records.len(), 1000);
    assert!(messages >= 4, "1000 records came in {messages} message(s)");
    assert!(
        records
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1)
    );
    let (tail, _) = read_all(&mut c, 1001, 0).await;
    assert_eq!(tail.len(), 500);
    assert_eq!(tail.last().unwrap().sequence, 1500);
}

#[tokio::test]
async fn restart_finds_everything() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let mut sent = Vec::new();
    for i in 0..20u32 {
        let p = format!("record {i}").into_bytes();
        append(&mut c, &[&p]).await.unwrap();
        sent.push(p);
    }
    let source_before = status(&mut c).await.source_id;
    drop(c);
    d.stop().await;
    assert!(!area.socket().exists(), "socket left behind after SIGTERM");

    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let st = status(&mut c).await;
    assert_eq!(st.next_sequence, 21);
    assert_eq!(st.backlog_records, 20);
    assert_eq!(
        st.source_id, source_before,
        "the source id must survive restarts"
    );
    let (records, _) = read_all(&mut c, 0, 0).await;
    let got: Vec<Vec<u8>> = records
        .iter()
        .map(|r| r.record.as_ref().unwrap().payload.clone())
        .collect();
    assert_eq!(got, sent);
    // Sequences continue where they left off.
    let a = append(&mut c, &[b"after restart"]).await.unwrap();
    assert_eq!(a.first_sequence, 21);
    drop(c);
    d.stop().await;
}

#[tokio::test]
async fn restart_after_a_crash_keeps_acknowledged_records() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    for i in 0..10u32 {
        append(&mut c, &[format!("{i}").as_bytes()]).await.unwrap();
    }
    drop(c);
    d.kill(); // SIGKILL: no shutdown at all; the socket file stays behind (stale).
    assert!(area.socket().exists());

    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let (records, _) = read_all(&mut c, 0, 0).await;
    assert_eq!(records.len(), 10);
    drop(c);
    d.stop().await;
    assert!(
        d.session_logs().contains("replaced a stale socket"),
        "{}",
        d.session_logs()
    );
}

#[tokio::test]
async fn concurrent_clients_all_get_distinct_durable_sequences() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let mut c = d.client().await;
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25u32 {
                let p = format!("{t}:{i}");
                let a = append(&mut c, &[p.as_bytes()]).await.unwrap();
                got.push((a.first_sequence, p));
            }
            got
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        for (seq, p) in t.await.unwrap() {
            assert!(all.insert(seq, p).is_none(), "sequence {seq} given twice");
        }
    }
    let mut c = d.client().await;
    let (records, _) = read_all(&mut c, 0, 0).await;
    assert_eq!(records.len(), 200);
    for r in records {
        let p = String::from_utf8(r.record.unwrap().payload).unwrap();
        assert_eq!(all.get(&r.sequence), Some(&p));
    }
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_socket() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut h = d.health().await;
    for service in ["", "echopost.v1.EchoPost"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let ch = daemon::connect(&d.socket).await.unwrap();
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer: {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["echopost.v1.EchoPost", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn same_uid_is_allowed_and_allow_uid_is_accepted() {
    // The daemon's own uid is always accepted (every test relies on it); --allow-uid adds
    // more. Refusal of other uids is covered by the unit tests of `echopost::peer`, since a
    // test cannot connect as another user without privileges.
    let area = Area::new();
    let d = Daemon::start(&area, &["--allow-uid", "4242", "--allow-uid", "4243"]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"x"]).await.unwrap();
    let log = d.session_logs();
    assert!(log.contains("4242") && log.contains("4243"), "{log}");
}

/// Needs root (to run the daemon as another user); skipped otherwise. The daemon runs as
/// `nobody` (65534) and this process (root) connects: every request, health included, is
/// refused with PERMISSION_DENIED naming the uid, unless `--allow-uid 0` is given.
#[tokio::test]
async fn another_uid_is_refused_with_permission_denied_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    use tonic_health::pb::HealthCheckRequest;

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to start the daemon as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    for allow in [false, true] {
        let area = Area::new();
        std::fs::set_permissions(area.root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::create_dir(area.dir()).unwrap();
        std::os::unix::fs::chown(area.dir(), Some(NOBODY), Some(NOBODY)).unwrap();
        let args: &[&str] = if allow { &["--allow-uid", "0"] } else { &[] };
        let mut d = Daemon::spawn_as(&area, args, Some(NOBODY));

        // Wait until the daemon answers at all (refusals count as answers).
        let deadline = std::time::Instant::now() + daemon::STARTUP_TIMEOUT;
        let health = loop {
            assert!(d.try_status().is_none(), "exited: {}", d.stderr());
            assert!(
                std::time::Instant::now() < deadline,
                "not up: {}",
                d.stderr()
            );
            if let Ok(ch) = daemon::connect(&d.socket).await {
                let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                break h
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut c = d.client().await;
        let appended = append(&mut c, &[b"from root"]).await;
        if allow {
            health.unwrap();
            assert_eq!(appended.unwrap().first_sequence, 1);
        } else {
            let e = health.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            let e = appended.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            assert!(e.message().contains("--allow-uid 0"), "{}", e.message());
            let e = c
                .status(echopost_proto::v1::StatusRequest {})
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(d.session_logs().contains("refusing a connection"));
        }
        d.stop().await;
    }
}

#[tokio::test]
async fn sync_policies_interval_and_never_store_and_read_back() {
    for policy in ["interval:20", "never"] {
        let area = Area::new();
        let mut d = Daemon::start(&area, &["--sync", policy]).await;
        let mut c = d.client().await;
        for i in 0..5u32 {
            append(&mut c, &[format!("{i}").as_bytes()]).await.unwrap();
        }
        assert_eq!(status(&mut c).await.sync_policy, policy);
        let (records, _) = read_all(&mut c, 0, 0).await;
        assert_eq!(records.len(), 5, "{policy}");
        drop(c);
        d.stop().await;
        let mut d = Daemon::start(&area, &["--sync", policy]).await;
        let mut c = d.client().await;
        assert_eq!(status(&mut c).await.next_sequence, 6, "{policy}");
        drop(c);
        d.stop().await;
    }
}

#[tokio::test]
async fn session_log_records_startup_recovery_and_shutdown() {
    let area = Area::new();
    let mut d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    append(&mut c, &[b"x", b"y"]).await.unwrap();
    drop(c);
    d.stop().await;
    let logs: Vec<_> = std::fs::read_dir(area.dir().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let name = &logs[0];
    assert!(
        name.ends_with(&format!("-{}.log", d.pid())) && name.contains('T') && name.contains('Z'),
        "{name}"
    );
    let text = d.session_logs();
    for needle in [
        "echopost starting",
        "log recovered",
        "accepting records",
        "shutting down",
        "SIGTERM",
        "backlog_records=2",
        "lock released",
        "echopost exited cleanly",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    // The same lines go to stderr.
    assert!(d.stderr().contains("accepting records"));
}

#[tokio::test]
async fn upstream_flag_starts_the_replayer_and_reports_it() {
    let area = Area::new();
    // Nothing listens on port 9 of localhost; the replayer keeps probing.
    let mut d = Daemon::start(
        &area,
        &["--upstream", "grpc://127.0.0.1:9", "--healthy-after", "2"],
    )
    .await;
    let mut c = d.client().await;
    append(&mut c, &[b"kept"]).await.unwrap();
    let st = status(&mut c).await;
    assert_eq!(st.upstream, "grpc://127.0.0.1:9");
    assert_ne!(
        st.upstream_state,
        echopost_proto::v1::UpstreamState::Unspecified as i32
    );
    assert_eq!(st.backlog_records, 1);
    drop(c);
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.stop().await;
    assert!(d.session_logs().contains("replay started"));
}
