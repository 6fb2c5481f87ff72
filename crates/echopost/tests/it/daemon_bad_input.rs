//! Bad input through the real binary and socket: every case gets its documented status
//! and stores nothing (checked with Status and Read).

use echopost_proto::v1::AppendRequest;
use tonic::Code;

use crate::support::daemon::{
    self, Area, Daemon, append, assert_nothing_stored, read_all, record, status,
};

#[tokio::test]
async fn empty_batch_is_invalid_argument() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let e = c
        .append(AppendRequest {
            records: vec![],
            ..AppendRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("empty batch"), "{}", e.message());
    assert_nothing_stored(&mut c).await;
}

#[tokio::test]
async fn record_above_the_default_limit_is_invalid_argument_and_the_batch_is_not_stored() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    // The payload alone is 4 MiB, above the default limit (4 MiB less 1 KiB, so that the
    // largest record fits a stock gRPC server's 4 MiB message inside `Sink/Deliver`).
    let big = vec![b'x'; 4 << 20];
    let e = append(&mut c, &[b"small and fine", &big])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("4193280"), "{}", e.message());
    assert!(
        e.message().contains("--max-record-bytes"),
        "{}",
        e.message()
    );
    assert_nothing_stored(&mut c).await;
}

#[tokio::test]
async fn max_record_bytes_flag_sets_the_limit() {
    let area = Area::new();
    let d = Daemon::start(&area, &["--max-record-bytes", "1KiB"]).await;
    let mut c = d.client().await;
    let e = append(&mut c, &[&[0u8; 2000]]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("1024"), "{}", e.message());
    assert_nothing_stored(&mut c).await;
    append(&mut c, &[&[0u8; 900]]).await.unwrap();
    assert_eq!(status(&mut c).await.next_sequence, 2);
}

fn oversized_request() -> AppendRequest {
    // 17 records of 4,000,000 bytes: each under --max-record-bytes (4 MiB), together
    // above the 64 MiB gRPC message limit.
    AppendRequest {
        records: (0..17).map(|_| record(vec![7u8; 4_000_000])).collect(),
        ..AppendRequest::default()
    }
}

#[tokio::test]
async fn request_above_the_grpc_limit_is_resource_exhausted() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let e = c.append(oversized_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("67108864"), "{}", e.message());
    // The daemon is fine afterwards, and nothing was stored.
    let mut c = d.client().await;
    assert_nothing_stored(&mut c).await;
}

#[tokio::test]
async fn stream_request_above_the_grpc_limit_is_resource_exhausted() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let requests = vec![
        AppendRequest {
            records: vec![record(b"fine".to_vec())],
            ..AppendRequest::default()
        },
        oversized_request(),
    ];
    let mut responses = c
        .append_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.first_sequence, 1);
    let e = responses.message().await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("67108864"), "{}", e.message());
    let mut c = d.client().await;
    assert_eq!(
        status(&mut c).await.next_sequence,
        2,
        "only the first request is stored"
    );
}

#[tokio::test]
async fn bad_request_in_a_stream_ends_it_after_the_good_ones() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let one = |p: &[u8]| AppendRequest {
        records: vec![record(p.to_vec())],
        ..AppendRequest::default()
    };
    let requests = vec![
        one(b"a"),
        one(b"b"),
        AppendRequest {
            records: vec![],
            ..AppendRequest::default()
        },
        one(b"never stored"),
    ];
    let mut responses = c
        .append_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        responses.message().await.unwrap().unwrap().first_sequence,
        1
    );
    assert_eq!(
        responses.message().await.unwrap().unwrap().first_sequence,
        2
    );
    let e = responses.message().await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let (records, _) = read_all(&mut c, 0, 0).await;
    let payloads: Vec<Vec<u8>> = records
        .into_iter()
        .map(|r| r.record.unwrap().payload)
        .collect();
    assert_eq!(payloads, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[tokio::test]
async fn over_the_disk_quota_is_resource_exhausted_buffer_full() {
    let area = Area::new();
    let d = Daemon::start(&area, &["--max-disk", "64KiB"]).await;
    let mut c = d.client().await;
    let payload = vec![1u8; 1000];
    let mut stored = 0u64;
    let err = loop {
        match append(&mut c, &[&payload]).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "the quota was never reached");
    };
    assert!(stored > 10, "refused too early: after {stored} appends");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().starts_with("buffer full: "),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("bytes of 65536"),
        "{}",
        err.message()
    );

    // The refused append stored nothing, and the daemon keeps refusing while full.
    let st = status(&mut c).await;
    assert_eq!(st.next_sequence, stored + 1);
    assert_eq!(st.max_disk_bytes, 65536);
    assert!(st.disk_bytes <= 65536, "{st:?}");
    let again = append(&mut c, &[&payload]).await.unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted);
    assert_eq!(status(&mut c).await.next_sequence, stored + 1);
    let (records, _) = read_all(&mut c, 0, 0).await;
    assert_eq!(records.len() as u64, stored);
    // The first refusal is logged once, with the figures.
    let logs = d.session_logs();
    assert_eq!(logs.matches("disk quota reached").count(), 1, "{logs}");
}

#[tokio::test]
async fn client_disconnecting_mid_stream_loses_only_unacknowledged_requests() {
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<AppendRequest>(8);
    let mut responses = c
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acked = Vec::new();
    for i in 0..5u32 {
        tx.send(AppendRequest {
            records: vec![record(format!("{i}").into_bytes())],
            ..AppendRequest::default()
        })
        .await
        .unwrap();
        acked.push(responses.message().await.unwrap().unwrap().first_sequence);
    }
    // Send more without waiting, then vanish.
    for i in 5..8u32 {
        let _ = tx
            .send(AppendRequest {
                records: vec![record(format!("{i}").into_bytes())],
                ..AppendRequest::default()
            })
            .await;
    }
    drop(responses);
    drop(tx);
    drop(c);

    let mut c = d.client().await;
    let (records, _) = read_all(&mut c, 0, 0).await;
    let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
    assert!(seqs.len() >= 5 && seqs.len() <= 8, "{seqs:?}");
    for s in acked {
        assert!(seqs.contains(&s), "acknowledged {s} missing");
    }
    // The daemon keeps serving.
    append(&mut c, &[b"next"]).await.unwrap();
}

/// Sends `records` as they are, each the bytes of one would-be `Record`.
async fn append_raw(
    area: &Area,
    records: Vec<Vec<u8>>,
) -> Result<echopost_proto::v1::AppendResponse, tonic::Status> {
    use echopost_proto::raw::RawAppendRequest;
    let channel = daemon::connect(&area.socket()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = RawAppendRequest {
        records: records.into_iter().map(Into::into).collect(),
        ..RawAppendRequest::default()
    };
    grpc.unary(
        tonic::Request::new(request),
        http::uri::PathAndQuery::from_static("/echopost.v1.EchoPost/Append"),
        tonic_prost::ProstCodec::<RawAppendRequest, echopost_proto::v1::AppendResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_invalid_argument_and_the_batch_is_not_stored() {
    use prost::Message;
    let area = Area::new();
    let d = Daemon::start(&area, &[]).await;
    let mut c = d.client().await;
    let good = record(b"fine".to_vec()).encode_to_vec();
    // `stream` (field 2, a string) holding bytes that are not UTF-8.
    let not_utf8 = vec![0x12, 0x02, 0xff, 0xfe];
    // `payload` (field 3) claiming 200 bytes and holding 3.
    let truncated = vec![0x1a, 0xc8, 0x01, 1, 2, 3];
    // An unknown field encoded as a group: valid protobuf, but never stored.
    let group = vec![0x3b, 0x08, 0x01, 0x3c];
    for (bad, why) in [
        (not_utf8, "not UTF-8"),
        (truncated, "past the end"),
        (group, "group"),
    ] {
        let e = append_raw(&area, vec![good.clone(), bad])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("record 1"), "{}", e.message());
        assert!(e.message().contains(why), "{}", e.message());
        assert_nothing_stored(&mut c).await;
    }
    // The same path stores well-formed records, as sent, timestamp filled in.
    let mut unknown_field = good.clone();
    unknown_field.extend_from_slice(&[0xf8, 0x01, 0x05]); // field 31, varint 5
    let a = append_raw(&area, vec![good, unknown_field]).await.unwrap();
    assert_eq!((a.first_sequence, a.last_sequence), (1, 2));
    let (stored, _) = read_all(&mut c, 0, 0).await;
    assert_eq!(stored.len(), 2);
    for s in &stored {
        let r = s.record.as_ref().unwrap();
        assert_eq!(r.payload, b"fine");
        assert!(r.timestamp_unix_nanos > 0);
    }
}

/// A record that could never be replayed as its request, appended to a daemon that
/// replays verbatim (`--sink forward`), with `headers` and `route`.
fn routed(route: &str, headers: &[(&str, &str)]) -> echopost_proto::v1::Record {
    echopost_proto::v1::Record {
        payload: b"{}".to_vec(),
        route: route.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// With `--sink forward`, a record without a route, with a route of the wrong form, or with
/// a header the protocol cannot carry is refused at append time (INVALID_ARGUMENT, naming
/// the problem, nothing stored), so it is never dead-lettered at replay time. The upstream
/// is unreachable: nothing here depends on it.
#[tokio::test]
async fn unreplayable_records_are_refused_at_append_time_with_a_forward_sink() {
    // (upstream, refused records, accepted records)
    let http_bad = [
        (routed("", &[]), "no route"),
        (routed("POST", &[]), "METHOD /path"),
        (routed("POST orders", &[]), "must start with '/'"),
        (routed("P@ST /x", &[]), "bad method"),
        (routed("POST /x", &[("bad name", "v")]), "not valid in HTTP"),
        (
            routed("POST /x", &[("x-a", "line\nbreak")]),
            "control character",
        ),
        (
            routed("POST /x", &[("x-a", "nul\0byte")]),
            "control character",
        ),
        (
            routed("POST /x", &[("x-a", "bell\u{7}")]),
            "control character",
        ),
    ];
    let http_good = [
        routed("POST /orders?x=1", &[("Content-Type", "application/json")]),
        // Non-ASCII text goes out as its UTF-8 bytes (documented).
        routed("PUT /x", &[("x-name", "café")]),
        routed("GET /", &[("x-tab", "a\tb")]),
    ];
    let grpc_bad = [
        (routed("", &[]), "no route"),
        (routed("POST /orders", &[]), "/pkg.Service/Method"),
        (routed("/pkg.S/M?q=1", &[]), "no query"),
        (routed("/pkg.S/M", &[("x-name", "café")]), "printable ASCII"),
        (
            routed("/pkg.S/M", &[("x-a", "line\nbreak")]),
            "printable ASCII",
        ),
    ];
    let grpc_good = [
        routed("/pkg.S/M", &[("x-a", "plain")]),
        routed("/pkg.S/M", &[("x-trace-bin", "AAEC")]),
    ];
    for (upstream, bad, good) in [
        ("http://127.0.0.1:1", &http_bad[..], &http_good[..]),
        ("grpc://127.0.0.1:1", &grpc_bad[..], &grpc_good[..]),
    ] {
        let area = Area::new();
        let d = Daemon::start(&area, &["--upstream", upstream, "--sink", "forward"]).await;
        let mut c = d.client().await;
        for (record, why) in bad {
            // Each bad record alongside a good one: the whole batch is refused.
            let e = c
                .append(AppendRequest {
                    records: vec![good[0].clone(), record.clone()],
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                Code::InvalidArgument,
                "{upstream} {record:?}: {e:?}"
            );
            assert!(
                e.message()
                    .contains("record 1 of the batch cannot be replayed")
                    && e.message().contains(why),
                "{upstream} {record:?}: {}",
                e.message()
            );
        }
        assert_nothing_stored(&mut c).await;
        let r = c
            .append(AppendRequest {
                records: good.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{upstream}: {e:?}"))
            .into_inner();
        assert_eq!((r.first_sequence, r.last_sequence), (1, good.len() as u64));
        eprintln!(
            "daemon_bad_input: {upstream}: {} unreplayable records refused at append time, {} accepted",
            bad.len(),
            good.len()
        );
    }
    // Without a forward sink the same records are just data: accepted.
    let area = Area::new();
    let d = Daemon::start(&area, &["--upstream", "grpc://127.0.0.1:1"]).await;
    let mut c = d.client().await;
    let all: Vec<_> = http_bad.iter().map(|(r, _)| r.clone()).collect();
    let r = c
        .append(AppendRequest {
            records: all,
            ..Default::default()
        })
        .await
        .expect("the deliver sink stores routeless records")
        .into_inner();
    assert_eq!(r.last_sequence, http_bad.len() as u64);
}
