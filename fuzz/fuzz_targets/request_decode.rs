//! Request decoding: the daemon decodes `AppendRequest`s (and the `Record`s inside) from
//! untrusted clients. Decoding arbitrary bytes must never panic, and whatever decodes must
//! survive an encode/decode round trip unchanged.
#![no_main]

use echopost_proto::v1::{AppendRequest, Record};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = AppendRequest::decode(data) {
        let again = AppendRequest::decode(req.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(again, req);
    }
    if let Ok(rec) = Record::decode(data) {
        let again = Record::decode(rec.encode_to_vec().as_slice()).expect("re-decode");
        assert_eq!(again, rec);
    }
    let _ = AppendRequest::decode_length_delimited(data);
});
