//! Request decoding: the daemon decodes `AppendRequest`s from untrusted clients, down to
//! each record's bytes (`raw::RawAppendRequest`), and checks each record with
//! `raw::check_record` instead of decoding it; the records are decoded with prost only
//! later, when read or replayed. Decoding arbitrary bytes must never panic; whatever
//! decodes must survive an encode/decode round trip unchanged; and `check_record` must
//! accept exactly what `Record::decode` accepts, with the same timestamp.
#![no_main]

use echopost_proto::raw::{RawAppendRequest, check_record};
use echopost_proto::v1::{AppendRequest, Record};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = AppendRequest::decode(data) {
        let again = AppendRequest::decode(req.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(again, req);
    }
    match (Record::decode(data), check_record(data)) {
        (Ok(rec), Ok(timestamp)) => {
            assert_eq!(timestamp, rec.timestamp_unix_nanos);
            let again = Record::decode(rec.encode_to_vec().as_slice()).expect("re-decode");
            assert_eq!(again, rec);
        }
        (Err(_), Err(_)) => {}
        (prost, ours) => panic!("prost says {prost:?}, check_record says {ours:?}"),
    }
    // A raw request is a valid AppendRequest exactly when every record checks.
    if let Ok(raw) = RawAppendRequest::decode(data) {
        let all_valid = raw.records.iter().all(|r| check_record(r).is_ok());
        assert_eq!(all_valid, AppendRequest::decode(data).is_ok());
    }
    let _ = AppendRequest::decode_length_delimited(data);
});
