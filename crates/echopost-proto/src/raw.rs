//! Records as they arrive on the wire, before (and instead of) decoding them.
//!
//! # Why
//! The daemon stores each record as protobuf bytes and sends those bytes back out when it
//! replays. Decoding an `AppendRequest` into owned `Record`s only to encode every record
//! again costs several allocations and copies per record, the largest share of the
//! daemon's CPU per batched append. [`RawAppendRequest`] keeps each record as a slice
//! of the received message instead (no copy), and [`check_record`] proves that the slice
//! is a `Record` that decodes, and finds its timestamp, without building one. The daemon
//! stores the client's bytes as they are (adding a timestamp field when the record has
//! none); every reader decodes them with prost, so the records it replays are exactly the
//! records prost would have decoded on arrival.
//!
//! # Invariant
//! [`check_record`] accepts exactly the byte strings that `Record::decode` accepts, and
//! reports the same `timestamp_unix_nanos`. The property tests in this crate hold it to
//! that against prost itself. It walks the fields with prost's own key, varint and
//! skip functions (prost's `encoding` module, which its generated code also uses), so
//! unknown fields, groups and malformed varints are judged by the same code.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// `echopost.v1.AppendRequest` with each record kept as its encoded bytes, sliced from
/// the received message without copying.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct RawAppendRequest {
    /// `repeated Record records = 1`, each as the bytes of one `Record`.
    pub records: Vec<Bytes>,
}

impl RawAppendRequest {
    /// The request carrying `records` (each encoded once).
    pub fn from_records(records: &[crate::v1::Record]) -> RawAppendRequest {
        RawAppendRequest {
            records: records
                .iter()
                .map(|r| Bytes::from(r.encode_to_vec()))
                .collect(),
        }
    }
}

impl Message for RawAppendRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for record in &self.records {
            encoding::bytes::encode(1, record, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == 1 {
            // `Bytes` takes its value with `copy_to_bytes`, which on the receive buffer is
            // a reference-counted slice, not a copy.
            let mut record = Bytes::new();
            encoding::bytes::merge(wire_type, &mut record, buf, ctx)?;
            self.records.push(record);
            Ok(())
        } else {
            encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::bytes::encoded_len_repeated(1, &self.records)
    }

    fn clear(&mut self) {
        self.records.clear();
    }
}

/// Why bytes are not an `echopost.v1.Record`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not valid protobuf, or a field of the wrong wire type.
    #[error("not a valid echopost.v1.Record: {0}")]
    Malformed(#[from] DecodeError),
    /// A length-delimited field is longer than what is left of the record.
    #[error("not a valid echopost.v1.Record: a field runs past the end of the record")]
    Truncated,
    /// A string field holds bytes that are not UTF-8.
    #[error("not a valid echopost.v1.Record: field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
}

/// Checks that `raw` decodes as an `echopost.v1.Record` (exactly when `Record::decode`
/// would accept it) and returns its `timestamp_unix_nanos` (0 when absent), without
/// decoding it into owned fields.
pub fn check_record(mut raw: &[u8]) -> Result<i64, RecordError> {
    let buf = &mut raw;
    let mut timestamp = 0i64;
    while !buf.is_empty() {
        let (tag, wire_type) = encoding::decode_key(buf)?;
        match tag {
            1 => check_string(wire_type, buf, "id")?,
            2 => check_string(wire_type, buf, "stream")?,
            3 => {
                encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                take_delimited(buf)?;
            }
            // Like prost's map decoding, the entry's wire type is not checked: its
            // length is read whatever the key said.
            4 => check_header(take_delimited(buf)?)?,
            5 => check_string(wire_type, buf, "route")?,
            6 => encoding::int64::merge(wire_type, &mut timestamp, buf, DecodeContext::default())?,
            _ => encoding::skip_field(wire_type, tag, buf, DecodeContext::default())?,
        }
    }
    Ok(timestamp)
}

/// The protobuf encoding of `timestamp_unix_nanos = value`. Appended to a record's bytes
/// it sets the field, whatever the record held before (the last value of a scalar
/// field wins).
pub fn put_timestamp_field(value: i64, buf: &mut impl BufMut) {
    encoding::int64::encode(6, &value, buf);
}

/// Bytes [`put_timestamp_field`] writes for `value`.
pub fn timestamp_field_len(value: i64) -> usize {
    encoding::int64::encoded_len(6, &value)
}

/// Reads a length and returns that many bytes, which must all be there.
fn take_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], RecordError> {
    let len = encoding::decode_varint(buf)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= buf.len())
        .ok_or(RecordError::Truncated)?;
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn check_string(
    wire_type: WireType,
    buf: &mut &[u8],
    field: &'static str,
) -> Result<(), RecordError> {
    encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
    let content = take_delimited(buf)?;
    std::str::from_utf8(content).map_err(|_| RecordError::NotUtf8(field))?;
    Ok(())
}

/// One `headers` map entry (`string key = 1; string value = 2;`, other fields skipped).
fn check_header(mut entry: &[u8]) -> Result<(), RecordError> {
    let buf = &mut entry;
    while !buf.is_empty() {
        let (tag, wire_type) = encoding::decode_key(buf)?;
        match tag {
            1 | 2 => check_string(wire_type, buf, "headers")?,
            _ => encoding::skip_field(wire_type, tag, buf, DecodeContext::default())?,
        }
    }
    Ok(())
}
