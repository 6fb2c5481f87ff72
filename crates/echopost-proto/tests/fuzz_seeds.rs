//! The seed corpus of the `request_decode` fuzz target (`fuzz/seeds/request_decode/`),
//! encoded here by prost from the real messages and checked against the committed files.
//!
//! After a change of the proto, rewrite them with
//! `ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost-proto --test fuzz_seeds`.
//! Other files in that folder (inputs a fuzzer found, kept as regressions) are left alone.

use std::collections::HashMap;
use std::path::Path;

use echopost_proto::raw::check_record;
use echopost_proto::v1::{AppendRequest, Record};
use prost::Message;

fn record(id: &str, payload: &[u8], header: Option<(&str, &str)>, ts: i64) -> Record {
    Record {
        id: id.to_owned(),
        stream: "orders".to_owned(),
        payload: payload.to_vec(),
        // At most one header: a map's encoding order is not fixed, the seeds must be.
        headers: header
            .map(|(k, v)| HashMap::from([(k.to_owned(), v.to_owned())]))
            .unwrap_or_default(),
        route: String::new(),
        timestamp_unix_nanos: ts,
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let one = record(
        "r-1",
        b"{\"n\":1}",
        Some(("content-type", "json")),
        1_700_000_000_000_000_000,
    );
    let request = AppendRequest {
        records: vec![
            one.clone(),
            record("", b"", None, 0),
            record("r-3", &[0, 255, 10], None, -1),
        ],
        producer_id: "producer-7".to_owned(),
        producer_sequence: 3,
        expected_stream_version: Some(12),
    };
    let mut routed = record("r-4", b"x", None, i64::MAX);
    routed.route = "audit".to_owned();
    let mut unknown_field = one.encode_to_vec();
    // Field 15, varint: a newer client's field this build does not know.
    unknown_field.extend_from_slice(&[0x78, 0x01]);
    vec![
        ("append_request", request.encode_to_vec()),
        (
            "append_request_length_delimited",
            request.encode_length_delimited_to_vec(),
        ),
        ("record", one.encode_to_vec()),
        ("record_routed", routed.encode_to_vec()),
        ("record_unknown_field", unknown_field),
    ]
}

#[test]
fn request_decode_seeds_are_current() {
    let seeds = seeds();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/request_decode");
    let write = std::env::var_os("ECHOPOST_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    if write {
        std::fs::create_dir_all(&dir).expect("create the seed folder");
    }
    let mut stale = Vec::new();
    for (name, bytes) in &seeds {
        // Each is what the daemon takes: a request or a record it accepts.
        if name.starts_with("record") {
            check_record(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        } else if !name.ends_with("length_delimited") {
            AppendRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes).expect("write a seed");
        } else if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds missing or out of date: {stale:?}; rewrite them with \
         ECHOPOST_WRITE_FUZZ_SEEDS=1 cargo test -p echopost-proto --test fuzz_seeds"
    );
    let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
    println!("request_decode: {} seeds, {bytes} bytes", seeds.len());
}
