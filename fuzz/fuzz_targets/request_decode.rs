//! Request decoding: the daemon decodes `AppendRequest`s from untrusted clients, down to
//! each record's bytes (`raw::RawAppendRequest`), and checks each record with
//! `raw::check_record` instead of decoding it; the replayer runs the same check before it
//! sends or decodes a stored record. Decoding arbitrary bytes must never panic; whatever
//! decodes must survive an encode/decode round trip unchanged; whatever `check_record`
//! accepts, prost's `Record::decode` must accept with the same timestamp and payload; and
//! what it calls malformed, prost must refuse.
#![no_main]

use echopost_proto::raw::{RawAppendRequest, RecordError, check_record};
use echopost_proto::v1::{AppendRequest, Record};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = AppendRequest::decode(data) {
        let again = AppendRequest::decode(req.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(again, req);
    }
    match (check_record(data), Record::decode(data)) {
        (Ok(info), Ok(rec)) => {
            assert_eq!(info.timestamp_unix_nanos, rec.timestamp_unix_nanos);
            assert_eq!(info.payload_len, rec.payload.len() as u64);
            let again = Record::decode(rec.encode_to_vec().as_slice()).expect("re-decode");
            assert_eq!(again, rec);
        }
        (Ok(_), Err(e)) => panic!("check_record accepted what prost refuses: {e}"),
        (Err(RecordError::Malformed(why)), Ok(_)) => {
            panic!("check_record called malformed ({why}) what prost accepts")
        }
        (Err(_), _) => {}
    }
    // A raw request whose records all check is an AppendRequest prost decodes.
    if let Ok(raw) = RawAppendRequest::decode(data)
        && raw.records.iter().all(|r| check_record(r).is_ok())
    {
        assert!(AppendRequest::decode(data).is_ok());
    }
    let _ = AppendRequest::decode_length_delimited(data);
});
