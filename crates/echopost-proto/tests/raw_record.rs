//! `raw::check_record` must accept exactly what prost's `Record::decode` accepts, with
//! the same timestamp, because the daemon stores records it only checked and every
//! reader decodes them with prost later. These properties compare the two on random
//! bytes, on valid records, and on valid records with damage or extra fields.

use echopost_proto::raw::{RawAppendRequest, check_record, put_timestamp_field};
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
            prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
            if wire == 2 {
                prost::encoding::encode_varint(content.len() as u64, &mut out);
            }
            out.extend_from_slice(&content);
            out
        })
}

fn same_verdict(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = check_record(bytes);
    let prost = Record::decode(bytes);
    prop_assert_eq!(
        ours.is_ok(),
        prost.is_ok(),
        "check_record {:?} but prost {:?} for {:02x?}",
        ours,
        prost,
        bytes
    );
    if let (Ok(ts), Ok(r)) = (ours, prost) {
        prop_assert_eq!(ts, r.timestamp_unix_nanos);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        same_verdict(&bytes)?;
    }

    /// A request whose records are random field soup: the daemon's view (split, then
    /// check each record) accepts it exactly when prost decodes it as an AppendRequest.
    #[test]
    fn random_requests(records in prop::collection::vec(prop::collection::vec(field(), 0..4), 0..4)) {
        let mut wire = Vec::new();
        for fields in &records {
            let record = fields.concat();
            prost::encoding::encode_varint(1 << 3 | 2, &mut wire);
            prost::encoding::encode_varint(record.len() as u64, &mut wire);
            wire.extend_from_slice(&record);
        }
        let ours = RawAppendRequest::decode(wire.as_slice())
            .map(|raw| raw.records.iter().all(|r| check_record(r).is_ok()))
            .unwrap_or(false);
        prop_assert_eq!(ours, AppendRequest::decode(wire.as_slice()).is_ok(), "{:02x?}", wire);
    }

    #[test]
    fn valid_records(r in record()) {
        let bytes = r.encode_to_vec();
        prop_assert_eq!(check_record(&bytes), Ok(r.timestamp_unix_nanos));
    }

    #[test]
    fn valid_records_with_extra_fields(r in record(), extra in prop::collection::vec(field(), 0..4), at in any::<prop::sample::Index>()) {
        let mut bytes = r.encode_to_vec();
        // Fields are inserted at a field boundary: the start or the end.
        let tail: Vec<u8> = extra.concat();
        if at.index(2) == 0 {
            let mut front = tail;
            front.extend_from_slice(&bytes);
            bytes = front;
        } else {
            bytes.extend_from_slice(&tail);
        }
        same_verdict(&bytes)?;
    }

    #[test]
    fn damaged_records(r in record(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let bytes = r.encode_to_vec();
        if !bytes.is_empty() {
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] = byte;
            same_verdict(&flipped)?;
            same_verdict(&bytes[..cut.index(bytes.len())])?;
        }
    }

    #[test]
    fn an_appended_timestamp_field_sets_the_timestamp(r in record(), now in any::<i64>()) {
        let mut bytes = r.encode_to_vec();
        put_timestamp_field(now, &mut bytes);
        let back = Record::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(check_record(&bytes), Ok(now));
        prop_assert_eq!(back, Record { timestamp_unix_nanos: now, ..r });
    }

    #[test]
    fn raw_requests_split_into_the_records_prost_decodes(records in prop::collection::vec(record(), 0..5)) {
        let wire = AppendRequest { records: records.clone() }.encode_to_vec();
        let raw = RawAppendRequest::decode(wire.as_slice()).unwrap();
        prop_assert_eq!(raw.records.len(), records.len());
        for (bytes, r) in raw.records.iter().zip(&records) {
            prop_assert_eq!(&Record::decode(bytes.as_ref()).unwrap(), r);
        }
        // And it encodes back to the same message.
        prop_assert_eq!(raw.encode_to_vec(), wire);
        prop_assert_eq!(RawAppendRequest::from_records(&records), raw);
    }
}
