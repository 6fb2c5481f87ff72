//! One append request → the body of one log frame.
//!
//! What is stored per record is the record's protobuf encoding as the client sent it
//! (a slice of the received message, see `echopost_proto::raw::RawAppendRequest`), checked
//! with [`check_record`] (the same check the replayer runs before it sends a record) and
//! copied into the frame once, with a timestamp field appended when the record's timestamp
//! is zero ("time of receipt"). Replay and `Read` decode those bytes, so they return
//! exactly what was sent. Everything is checked before anything touches the log, so a bad
//! request stores nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use echopost_log::BatchBody;
use echopost_proto::raw::{check_record, put_timestamp_field, timestamp_field_len};
use tonic::Status;

use crate::replay::{ForwardKind, check_forwardable};
use crate::streams::MAX_NAME_BYTES;
use crate::streams::tables::{StreamCounts, count_record};

/// Nanoseconds since the UNIX epoch now.
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What every record of an append must satisfy, besides being a valid `Record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRules {
    /// `--max-record-bytes`: the largest stored form of one record.
    pub max_record_bytes: usize,
    /// With `--sink forward`, each record must be replayable as that kind of request
    /// (a route, headers the protocol can carry): [`crate::replay::check_forwardable`].
    pub forward: Option<ForwardKind>,
}

impl RecordRules {
    /// Only the size limit.
    pub fn sized(max_record_bytes: usize) -> RecordRules {
        RecordRules {
            max_record_bytes,
            forward: None,
        }
    }
}

/// Checks a batch and builds the body of one log frame from it: each record's bytes as
/// received, with a timestamp field appended when its timestamp is zero (`now_nanos`),
/// and `meta` as the frame's metadata entry. Refuses (`INVALID_ARGUMENT`, nothing
/// stored) an empty batch, a record that does not decode as a `Record`, a record whose
/// stored form would exceed the size limit, naming it, a stream name over
/// [`MAX_NAME_BYTES`] bytes (issue 14), and, with a forward sink, a record that could not
/// be replayed as its request. Also returns the batch's records per stream.
pub fn encode_batch(
    records: &[Bytes],
    rules: &RecordRules,
    now_nanos: i64,
    meta: Option<&[u8]>,
) -> Result<(BatchBody, StreamCounts), Status> {
    let max_record_bytes = rules.max_record_bytes;
    if records.is_empty() {
        return Err(Status::invalid_argument(
            "empty batch: an append needs at least one record",
        ));
    }
    let stamp_len = timestamp_field_len(now_nanos);
    let capacity = records
        .iter()
        .map(|r| r.len() + echopost_log::RECORD_OVERHEAD + stamp_len)
        .sum();
    let mut body = match meta {
        Some(m) => BatchBody::with_meta(capacity, m),
        None => BatchBody::with_capacity(capacity),
    };
    let mut streams: StreamCounts = Vec::new();
    for (i, raw) in records.iter().enumerate() {
        let info = check_record(raw).map_err(|e| {
            Status::invalid_argument(format!("record {i} of the batch: {e}; nothing was stored"))
        })?;
        if let Some(kind) = rules.forward {
            check_forwardable(kind, raw).map_err(|e| {
                Status::invalid_argument(format!(
                    "record {i} of the batch cannot be replayed: {e}; nothing was stored"
                ))
            })?;
        }
        let stamp = (info.timestamp_unix_nanos == 0).then_some(now_nanos);
        let len = raw.len() + if stamp.is_some() { stamp_len } else { 0 };
        if len > max_record_bytes {
            return Err(Status::invalid_argument(format!(
                "record {i} of the batch is {len} bytes (encoded), above the limit of {max_record_bytes} bytes set by --max-record-bytes; nothing was stored"
            )));
        }
        if info.stream_len > 0 {
            let stream = info.stream(raw);
            if stream.len() > MAX_NAME_BYTES {
                return Err(Status::invalid_argument(format!(
                    "record {i} of the batch has a stream name of {} bytes, above the limit of {MAX_NAME_BYTES} bytes; nothing was stored",
                    stream.len()
                )));
            }
            count_record(
                &mut streams,
                stream,
                i as u64,
                (len + echopost_log::RECORD_OVERHEAD) as u64,
                stamp.unwrap_or(info.timestamp_unix_nanos),
            );
        }
        body.push_with(|buf| {
            buf.extend_from_slice(raw);
            if let Some(now) = stamp {
                put_timestamp_field(now, buf);
            }
        });
    }
    Ok((body, streams))
}

#[cfg(test)]
mod tests {
    use super::*;
    use echopost_proto::raw::RawAppendRequest;
    use echopost_proto::v1::Record;
    use prost::Message;
    use tonic::Code;

    fn rec(payload: &[u8]) -> Record {
        Record {
            payload: payload.to_vec(),
            ..Record::default()
        }
    }

    fn raw(records: &[Record]) -> Vec<Bytes> {
        RawAppendRequest::from_records(records).records
    }

    #[test]
    fn empty_batch_is_invalid() {
        let e = encode_batch(&[], &RecordRules::sized(100), 1, None).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("empty batch"));
    }

    #[test]
    fn oversized_record_is_invalid_and_names_the_limit() {
        let e = encode_batch(
            &raw(&[rec(b"ok"), rec(&[0; 200])]),
            &RecordRules::sized(100),
            1,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("record 1"), "{}", e.message());
        assert!(e.message().contains("100 bytes"), "{}", e.message());
        assert!(
            e.message().contains("--max-record-bytes"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn zero_timestamps_are_stamped_others_kept() {
        let mut with_ts = rec(b"b");
        with_ts.timestamp_unix_nanos = 7;
        let (out, _) = encode_batch(
            &raw(&[rec(b"a"), with_ts]),
            &RecordRules::sized(1000),
            42,
            None,
        )
        .unwrap();
        let out: Vec<&[u8]> = out.records().collect();
        let a = Record::decode(out[0]).unwrap();
        let b = Record::decode(out[1]).unwrap();
        assert_eq!(a.timestamp_unix_nanos, 42);
        assert_eq!(a.payload, b"a");
        assert_eq!(b.timestamp_unix_nanos, 7);
    }

    fn on(stream: &str) -> Record {
        Record {
            stream: stream.into(),
            ..rec(b"x")
        }
    }

    #[test]
    fn streams_are_counted_as_recovery_counts_them() {
        let mut records = [on("a"), on("b"), rec(b"none"), on("a"), on("c"), on("b")];
        records[3].timestamp_unix_nanos = 7;
        let (body, counts) =
            encode_batch(&raw(&records), &RecordRules::sized(1000), 1, None).unwrap();
        let stored: Vec<&[u8]> = body.records().collect();
        let again = crate::streams::count_records(stored.iter().copied());
        assert_eq!(counts, again);
        let a = &counts[0];
        assert_eq!(
            (a.stream.as_str(), a.records, a.first_index, a.last_index),
            ("a", 2, 0, 3)
        );
        assert_eq!(
            a.oldest_unix_nanos, 1,
            "the stamp of the record sent without one"
        );
        let sizes: u64 = stored
            .iter()
            .enumerate()
            .filter(|(i, _)| [0, 3].contains(i))
            .map(|(_, r)| (r.len() + echopost_log::RECORD_OVERHEAD) as u64)
            .sum();
        assert_eq!(a.bytes, sizes);
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn a_stream_name_over_256_bytes_is_invalid() {
        let ok = "s".repeat(256);
        assert!(encode_batch(&raw(&[on(&ok)]), &RecordRules::sized(10_000), 1, None).is_ok());
        let long = "é".repeat(129);
        let e = encode_batch(
            &raw(&[on("fine"), on(&long)]),
            &RecordRules::sized(10_000),
            1,
            None,
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("258 bytes"), "{}", e.message());
        assert!(e.message().contains("256"), "{}", e.message());
    }
}
