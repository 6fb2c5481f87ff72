//! `raw::check_record` against prost's `Record::decode`: what it accepts, prost accepts
//! with the same timestamp and payload; what it calls malformed, prost refuses; it refuses
//! more than prost only for the documented reasons (`RecordError::Unsupported`). The
//! daemon stores records it only checked and the replayer checks them again with the
//! same function, so these are what keep every stored record decodable.

use echopost_proto::raw::{
    RawAppendRequest, RecordError, RecordInfo, check_record, put_timestamp_field,
};
use echopost_proto::v1::{AppendRequest, Record};
use proptest::prelude::*;
use prost::Message;

fn record() -> impl Strategy<Value = Record> {
    (
        ".{0,8}",
        ".{0,8}",
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::hash_map(".{0,4}", ".{0,4}", 0..3),
        ".{0,8}",
        any::<i64>(),
    )
        .prop_map(|(id, stream, payload, headers, route, ts)| Record {
            id,
            stream,
            payload,
            headers,
            route,
            timestamp_unix_nanos: ts,
        })
}

fn key(tag: u32, wire: u8, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), out);
}

/// A field of any tag (1..=20, so known tags appear often) and any wire type, with
/// content that may or may not fit it.
fn field() -> impl Strategy<Value = Vec<u8>> {
    (
        1u32..=20,
        0u8..=7,
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(tag, wire, content)| {
            let mut out = Vec::new();
            key(tag, wire, &mut out);
            if wire == 2 {
                prost::encoding::encode_varint(content.len() as u64, &mut out);
            }
            out.extend_from_slice(&content);
            out
        })
}

/// Checks the contract on `bytes`; returns whether `check_record` refused it as
/// unsupported.
fn contract(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let ours = check_record(bytes);
    let prost = Record::decode(bytes);
    match (&ours, &prost) {
        (Ok(info), Ok(r)) => {
            prop_assert_eq!(info.timestamp_unix_nanos, r.timestamp_unix_nanos);
            prop_assert_eq!(info.payload_len, r.payload.len() as u64);
            prop_assert_eq!(info.stream(bytes), r.stream.as_str());
        }
        (Ok(_), Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "accepted what prost refuses ({e}): {bytes:02x?}"
            )));
        }
        (Err(RecordError::Malformed(why)), Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "called malformed ({why}) what prost accepts: {bytes:02x?}"
            )));
        }
        (Err(RecordError::Malformed(_)), Err(_)) => {}
        (Err(RecordError::Unsupported(_)), _) => return Ok(true),
    }
    Ok(false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        contract(&bytes)?;
    }

    #[test]
    fn valid_records(r in record()) {
        let bytes = r.encode_to_vec();
        let info: RecordInfo = check_record(&bytes).unwrap();
        prop_assert_eq!(info.timestamp_unix_nanos, r.timestamp_unix_nanos);
        prop_assert_eq!(info.payload_len, r.payload.len() as u64);
        prop_assert_eq!(info.stream(&bytes), r.stream.as_str());
    }

    #[test]
    fn valid_records_with_extra_fields(r in record(), extra in prop::collection::vec(field(), 0..4), front in any::<bool>()) {
        let mut bytes = r.encode_to_vec();
        let more: Vec<u8> = extra.concat();
        if front {
            let mut b = more;
            b.extend_from_slice(&bytes);
            bytes = b;
        } else {
            bytes.extend_from_slice(&more);
        }
        contract(&bytes)?;
    }

    #[test]
    fn damaged_records(r in record(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let bytes = r.encode_to_vec();
        if !bytes.is_empty() {
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] = byte;
            contract(&flipped)?;
            let mut inserted = bytes.clone();
            inserted.insert(at.index(bytes.len() + 1), byte);
            contract(&inserted)?;
            contract(&bytes[..cut.index(bytes.len())])?;
        }
    }

    #[test]
    fn an_appended_timestamp_field_sets_the_timestamp(r in record(), now in any::<i64>()) {
        let mut bytes = r.encode_to_vec();
        put_timestamp_field(now, &mut bytes);
        let back = Record::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(check_record(&bytes).map(|i| i.timestamp_unix_nanos), Ok(now));
        prop_assert_eq!(back, Record { timestamp_unix_nanos: now, ..r });
    }

    /// A request whose records are random field soup: whenever the daemon's view (split,
    /// then check each record) accepts it, prost decodes it as an AppendRequest.
    #[test]
    fn random_requests(records in prop::collection::vec(prop::collection::vec(field(), 0..4), 0..4)) {
        let mut wire = Vec::new();
        for fields in &records {
            let record = fields.concat();
            key(1, 2, &mut wire);
            prost::encoding::encode_varint(record.len() as u64, &mut wire);
            wire.extend_from_slice(&record);
        }
        let ours = RawAppendRequest::decode(wire.as_slice())
            .map(|raw| raw.records.iter().all(|r| check_record(r).is_ok()))
            .unwrap_or(false);
        if ours {
            prop_assert!(AppendRequest::decode(wire.as_slice()).is_ok(), "{:02x?}", wire);
        }
    }

    #[test]
    fn raw_requests_split_into_the_records_prost_decodes(records in prop::collection::vec(record(), 0..5),
                                                         producer_id in "[a-z0-9é]{0,12}",
                                                         producer_sequence in any::<u64>(),
                                                         expected in any::<Option<u64>>()) {
        let wire = AppendRequest {
            records: records.clone(),
            producer_id: producer_id.clone(),
            producer_sequence,
            expected_stream_version: expected,
        }
        .encode_to_vec();
        let raw = RawAppendRequest::decode(wire.as_slice()).unwrap();
        prop_assert_eq!(&raw.producer_id, &producer_id);
        prop_assert_eq!(raw.producer_sequence, producer_sequence);
        prop_assert_eq!(raw.expected_stream_version, expected);
        prop_assert_eq!(raw.records.len(), records.len());
        for (bytes, r) in raw.records.iter().zip(&records) {
            prop_assert_eq!(&Record::decode(bytes.as_ref()).unwrap(), r);
        }
        // And it encodes back to the same message.
        prop_assert_eq!(raw.encode_to_vec(), wire);
        prop_assert_eq!(
            RawAppendRequest {
                producer_id,
                producer_sequence,
                expected_stream_version: expected,
                ..RawAppendRequest::from_records(&records)
            },
            raw
        );
    }
}

/// 20,000 deterministic mutations of realistic records (some with unknown fields, groups
/// among them): the contract holds, and the mutations do reach the error paths.
#[test]
fn mutated_records_keep_the_contract() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let (mut refused, mut unsupported) = (0, 0);
    for i in 0..20_000u64 {
        let r = Record {
            id: format!("id-{i}"),
            stream: "orders".into(),
            payload: vec![i as u8; (i % 300) as usize],
            headers: [("content-type".to_string(), "application/json".to_string())]
                .into_iter()
                .collect(),
            route: "POST /v1/orders".into(),
            timestamp_unix_nanos: -(i as i64) * 1_000_000_007,
        };
        let mut b = r.encode_to_vec();
        if i % 7 == 0 {
            b.extend_from_slice(&[0x45, 1, 2, 3, 4]); // fixed32 field 8
            if i % 14 == 0 {
                b.extend_from_slice(&[0x3b, 0x08, 0x01, 0x3c]); // group 7 { 1: 1 }
            }
        }
        for _ in 0..1 + next(3) {
            let n = b.len() as u64;
            match next(4) {
                0 if n > 0 => {
                    let at = next(n) as usize;
                    b[at] = next(256) as u8;
                }
                1 if n > 0 => b.truncate(next(n) as usize),
                2 => b.insert(next(n + 1) as usize, next(256) as u8),
                _ => b.insert(next(n + 1) as usize, 0xff),
            }
        }
        match contract(&b) {
            Ok(true) => unsupported += 1,
            Ok(false) => {}
            Err(e) => panic!("mutation {i}: {e}"),
        }
        if check_record(&b).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 5_000, "{refused}");
    assert!(unsupported > 100, "{unsupported}");
}

#[test]
fn what_prost_lets_through_but_is_not_stored() {
    // `headers` (field 4) keyed as a varint: prost reads a length anyway.
    let odd_header = [0x20, 0x00];
    assert!(Record::decode(&odd_header[..]).is_ok());
    assert!(matches!(
        check_record(&odd_header),
        Err(RecordError::Unsupported(_))
    ));
    // Groups nested 100 deep in a header entry: prost's map decoding allows 99, a
    // record embedded in a DeliverRequest even less; refused whatever the depth.
    let mut entry = vec![0x1b; 100];
    entry.extend(vec![0x1c; 100]);
    let mut deep = vec![0x22];
    prost::encoding::encode_varint(entry.len() as u64, &mut deep);
    deep.extend_from_slice(&entry);
    assert!(matches!(
        check_record(&deep),
        Err(RecordError::Unsupported(_))
    ));
    // A single unknown group at the top level.
    let group = [0x3b, 0x08, 0x01, 0x3c];
    assert!(Record::decode(&group[..]).is_ok());
    assert!(matches!(
        check_record(&group),
        Err(RecordError::Unsupported(_))
    ));
    // Unknown fields of the other wire types are kept.
    let unknown = [0x45, 1, 2, 3, 4, 0x48, 0x05, 0x51, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(check_record(&unknown).is_ok());
}
