//! Records as they arrive on the wire, before (and instead of) decoding them.
//!
//! # Why
//! The daemon stores each record as protobuf bytes and sends those bytes back out when it
//! replays. Decoding an `AppendRequest` into owned `Record`s only to encode every record
//! again costs several allocations and copies per record, the largest share of the
//! daemon's CPU per batched append. [`RawAppendRequest`] keeps each record as a slice
//! of the received message instead (no copy), and [`check_record`] proves that the slice
//! is a `Record` that decodes, and finds its timestamp and payload length, without
//! building one. The daemon stores the client's bytes as they are (adding a timestamp
//! field when the record has none), and the replayer checks them again with the same
//! function before it sends them on as they are (`deliver` mode) or decodes them.
//!
//! # Invariants
//! * What [`check_record`] accepts, prost's `Record::decode` accepts too, with the same
//!   timestamp and payload; so a stored record decodes wherever it is read, and the
//!   replayer, which runs the same check, never finds a record ingest let in to be
//!   damaged.
//! * It refuses two things prost would let through, because they would make a stored
//!   record fail somewhere else ([`RecordError::Unsupported`]): groups (a proto2
//!   encoding `echopost.v1` never uses, which nest, and a record embedded in a
//!   `DeliverRequest` or a dead letter has less nesting budget left than on its own),
//!   and a `headers` entry whose key says it is not length-delimited (prost reads a
//!   length regardless; no encoder writes that).
//! * Anything else it refuses ([`RecordError::Malformed`]), prost refuses too.
//!
//! The property tests in this crate and the `request_decode` fuzz target hold these
//! against prost itself.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// `echopost.v1.AppendRequest` with each record kept as its encoded bytes, sliced from
/// the received message without copying. The batch's other fields (issue 14's idempotent
/// producer and expected stream version) are decoded as usual: they are few bytes.
#[derive(Clone, PartialEq, Eq, Default, Debug)]
pub struct RawAppendRequest {
    /// `repeated Record records = 1`, each as the bytes of one `Record`.
    pub records: Vec<Bytes>,
    /// `string producer_id = 2` (empty: no deduplication).
    pub producer_id: String,
    /// `uint64 producer_sequence = 3`.
    pub producer_sequence: u64,
    /// `optional uint64 expected_stream_version = 4`.
    pub expected_stream_version: Option<u64>,
}

impl RawAppendRequest {
    /// The request carrying `records` (each encoded once).
    pub fn from_records(records: &[crate::v1::Record]) -> RawAppendRequest {
        RawAppendRequest {
            records: records
                .iter()
                .map(|r| Bytes::from(r.encode_to_vec()))
                .collect(),
            ..RawAppendRequest::default()
        }
    }
}

impl Message for RawAppendRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for record in &self.records {
            encoding::bytes::encode(1, record, buf);
        }
        if !self.producer_id.is_empty() {
            encoding::string::encode(2, &self.producer_id, buf);
        }
        if self.producer_sequence != 0 {
            encoding::uint64::encode(3, &self.producer_sequence, buf);
        }
        if let Some(v) = &self.expected_stream_version {
            encoding::uint64::encode(4, v, buf);
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
            match tag {
                2 => encoding::string::merge(wire_type, &mut self.producer_id, buf, ctx),
                3 => encoding::uint64::merge(wire_type, &mut self.producer_sequence, buf, ctx),
                4 => encoding::uint64::merge(
                    wire_type,
                    self.expected_stream_version.get_or_insert(0),
                    buf,
                    ctx,
                ),
                _ => encoding::skip_field(wire_type, tag, buf, ctx),
            }
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::bytes::encoded_len_repeated(1, &self.records)
            + if self.producer_id.is_empty() {
                0
            } else {
                encoding::string::encoded_len(2, &self.producer_id)
            }
            + if self.producer_sequence == 0 {
                0
            } else {
                encoding::uint64::encoded_len(3, &self.producer_sequence)
            }
            + self
                .expected_stream_version
                .as_ref()
                .map_or(0, |v| encoding::uint64::encoded_len(4, v))
    }

    fn clear(&mut self) {
        self.records.clear();
        self.producer_id.clear();
        self.producer_sequence = 0;
        self.expected_stream_version = None;
    }
}

/// The two fields of an `echopost.v1.Record` that say where a verbatim replay goes
/// (`headers = 4`, `route = 5`), decoded from a record's bytes without the rest: prost
/// skips the payload without copying it. Used to check, at append time, that a record
/// can be sent as the request its route names.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RecordRouting {
    #[prost(map = "string, string", tag = "4")]
    pub headers: std::collections::HashMap<String, String>,
    #[prost(string, tag = "5")]
    pub route: String,
}

/// Why bytes are not an `echopost.v1.Record` EchoPost stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not valid protobuf for a `Record` (prost would refuse it too).
    #[error("not a valid echopost.v1.Record: {0}")]
    Malformed(&'static str),
    /// Valid protobuf that EchoPost still refuses to store (see the module documentation).
    #[error("not stored: {0}")]
    Unsupported(&'static str),
}

/// What [`check_record`] learned about a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// `timestamp_unix_nanos` (0 when absent; the last one when repeated, as prost).
    pub timestamp_unix_nanos: i64,
    /// Length of `payload` (of the last one when repeated, as prost).
    pub payload_len: u64,
    /// Where `stream` lies in the record's bytes (the last one when repeated, as prost;
    /// length 0 when absent): see [`RecordInfo::stream`].
    pub stream_start: u32,
    /// Length of `stream`, in bytes.
    pub stream_len: u32,
}

impl RecordInfo {
    /// The record's `stream` (UTF-8, checked), sliced from the bytes it was learned from.
    pub fn stream<'a>(&self, record: &'a [u8]) -> &'a str {
        let start = self.stream_start as usize;
        record
            .get(start..start + self.stream_len as usize)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("")
    }
}

/// Checks, without allocating, that `buf` is an `echopost.v1.Record` EchoPost stores
/// (see the module documentation for exactly which), and returns its timestamp and
/// payload length.
pub fn check_record(buf: &[u8]) -> Result<RecordInfo, RecordError> {
    let mut r = Wire { buf, pos: 0 };
    let mut info = RecordInfo {
        timestamp_unix_nanos: 0,
        payload_len: 0,
        stream_start: 0,
        stream_len: 0,
    };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            2 => {
                let s = r.len_delimited(wt)?;
                if !is_utf8(s) {
                    return Err(RecordError::Malformed("a string field is not UTF-8"));
                }
                // A record is at most 4 GiB (the engine's format), so these fit.
                info.stream_len = s.len() as u32;
                info.stream_start = (r.pos - s.len()) as u32;
            }
            1 | 5 => {
                if !is_utf8(r.len_delimited(wt)?) {
                    return Err(RecordError::Malformed("a string field is not UTF-8"));
                }
            }
            3 => info.payload_len = r.len_delimited(wt)?.len() as u64,
            4 => {
                if wt != WT_LEN {
                    return Err(RecordError::Unsupported(
                        "a headers entry that is not length-delimited",
                    ));
                }
                check_header(r.len_delimited(wt)?)?;
            }
            6 => {
                if wt != WT_VARINT {
                    return Err(RecordError::Malformed(
                        "timestamp_unix_nanos has the wrong wire type",
                    ));
                }
                // int64 is the varint's bits as two's complement, as prost reads it.
                info.timestamp_unix_nanos = r.varint()? as i64;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(info)
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

/// One `headers` map entry: `string key = 1; string value = 2;`, other fields skipped.
fn check_header(buf: &[u8]) -> Result<(), RecordError> {
    let mut r = Wire { buf, pos: 0 };
    while !r.done() {
        let (tag, wt) = r.key()?;
        match tag {
            1 | 2 => {
                if !is_utf8(r.len_delimited(wt)?) {
                    return Err(RecordError::Malformed("a header is not UTF-8"));
                }
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

#[inline(always)]
fn is_utf8(s: &[u8]) -> bool {
    s.is_ascii() || std::str::from_utf8(s).is_ok()
}

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_FIXED32: u8 = 5;

/// A cursor over protobuf wire format, with prost's rules for keys and varints.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, RecordError> {
        // Keys and most lengths of a record fit in one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, RecordError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(RecordError::Malformed("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b >= 0x02 {
                return Err(RecordError::Malformed("varint too long"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(RecordError::Malformed("varint too long"))
    }

    fn key(&mut self) -> Result<(u32, u8), RecordError> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(RecordError::Malformed("invalid field key"));
        }
        let wt = (key & 7) as u8;
        if wt > WT_FIXED32 {
            return Err(RecordError::Malformed("invalid wire type"));
        }
        let tag = (key as u32) >> 3;
        if tag == 0 {
            return Err(RecordError::Malformed("invalid field number 0"));
        }
        if wt == WT_START_GROUP || wt == WT_END_GROUP {
            return Err(RecordError::Unsupported("a group field (proto2 groups)"));
        }
        Ok((tag, wt))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], RecordError> {
        let rest = self.buf.len() - self.pos;
        if n > rest as u64 {
            return Err(RecordError::Malformed(
                "a field runs past the end of the record",
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn len_delimited(&mut self, wt: u8) -> Result<&'a [u8], RecordError> {
        if wt != WT_LEN {
            return Err(RecordError::Malformed(
                "a known field has the wrong wire type",
            ));
        }
        let n = self.varint()?;
        self.take(n)
    }

    /// Skips an unknown field (never a group: `key` refuses those).
    fn skip(&mut self, wt: u8) -> Result<(), RecordError> {
        match wt {
            WT_VARINT => {
                self.varint()?;
            }
            WT_FIXED64 => {
                self.take(8)?;
            }
            WT_FIXED32 => {
                self.take(4)?;
            }
            _ => {
                let n = self.varint()?;
                self.take(n)?;
            }
        }
        Ok(())
    }
}
