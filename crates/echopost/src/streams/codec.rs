//! What the stream and producer state looks like on disk: a frame's metadata entry and
//! the checkpoint's data, both protobuf (prost messages defined here, not in the public
//! proto: they are EchoPost's private format, read only by EchoPost).
//!
//! ```text
//! FrameMeta   { string producer_id = 1; uint64 producer_sequence = 2; }
//! Checkpoint  { uint32 format = 1; repeated ProducerPb producers = 2 (oldest use first);
//!               repeated StreamPb streams = 3; }
//! ProducerPb  { string id = 1; uint64 next = 2; repeated BatchPb recent = 3; uint64 used = 4; }
//! BatchPb     { uint64 producer_sequence = 1; uint64 records = 2; uint64 first_sequence = 3;
//!               uint64 last_sequence = 4; optional uint64 stream_version = 5; }
//! StreamPb    { string name = 1; uint64 version = 2; uint64 last_sequence = 3; }
//! // the backlog index (`super::backlog`): where it starts counting (absent in a
//! // checkpoint written before it existed: then the checkpoint's sequence) and its blocks
//! Checkpoint  { ...; optional uint64 backlog_from = 4; repeated BlockPb blocks = 5; }
//! BlockPb     { uint64 first_sequence = 1; uint64 end_sequence = 2;
//!               repeated BacklogPb streams = 3; }
//! BacklogPb   { string name = 1; uint64 records = 2; uint64 bytes = 3;
//!               uint64 first_sequence = 4; uint64 last_sequence = 5;
//!               int64 oldest_unix_nanos = 6; }
//! ```

use prost::Message;

use super::backlog::{Backlog, BacklogIndex};
use super::tables::{Producer, ProducerBatch, Stream, Tables};

/// The checkpoint format this build writes and reads.
const FORMAT: u32 = 1;

/// A frame's metadata: the producer of its batch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FrameMeta {
    #[prost(string, tag = "1")]
    pub producer_id: String,
    #[prost(uint64, tag = "2")]
    pub producer_sequence: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckpointPb {
    #[prost(uint32, tag = "1")]
    format: u32,
    #[prost(message, repeated, tag = "2")]
    producers: Vec<ProducerPb>,
    #[prost(message, repeated, tag = "3")]
    streams: Vec<StreamPb>,
    #[prost(uint64, optional, tag = "4")]
    backlog_from: Option<u64>,
    #[prost(message, repeated, tag = "5")]
    blocks: Vec<BlockPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BlockPb {
    #[prost(uint64, tag = "1")]
    first_sequence: u64,
    #[prost(uint64, tag = "2")]
    end_sequence: u64,
    #[prost(message, repeated, tag = "3")]
    streams: Vec<BacklogPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BacklogPb {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    records: u64,
    #[prost(uint64, tag = "3")]
    bytes: u64,
    #[prost(uint64, tag = "4")]
    first_sequence: u64,
    #[prost(uint64, tag = "5")]
    last_sequence: u64,
    #[prost(int64, tag = "6")]
    oldest_unix_nanos: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProducerPb {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint64, tag = "2")]
    next: u64,
    #[prost(message, repeated, tag = "3")]
    recent: Vec<BatchPb>,
    #[prost(uint64, tag = "4")]
    used: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BatchPb {
    #[prost(uint64, tag = "1")]
    producer_sequence: u64,
    #[prost(uint64, tag = "2")]
    records: u64,
    #[prost(uint64, tag = "3")]
    first_sequence: u64,
    #[prost(uint64, tag = "4")]
    last_sequence: u64,
    #[prost(uint64, optional, tag = "5")]
    stream_version: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamPb {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "2")]
    version: u64,
    #[prost(uint64, tag = "3")]
    last_sequence: u64,
}

/// Why stored state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stream state checkpoint does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream state checkpoint has format {0}; this build reads format {FORMAT}")]
    Format(u32),
}

/// The checkpoint's data for `tables`.
pub fn encode_tables(tables: &Tables) -> Vec<u8> {
    let pb = CheckpointPb {
        format: FORMAT,
        producers: tables
            .producers_by_use()
            .map(|(id, p)| ProducerPb {
                id: id.to_owned(),
                next: p.next,
                used: p.used,
                recent: p
                    .recent
                    .iter()
                    .map(|b| BatchPb {
                        producer_sequence: b.producer_sequence,
                        records: b.records,
                        first_sequence: b.first_seq,
                        last_sequence: b.last_seq,
                        stream_version: b.stream_version,
                    })
                    .collect(),
            })
            .collect(),
        streams: tables
            .streams
            .iter()
            .map(|(name, s)| StreamPb {
                name: name.clone(),
                version: s.version,
                last_sequence: s.last_seq,
            })
            .collect(),
        backlog_from: Some(tables.backlog.counted_from),
        blocks: tables
            .backlog
            .blocks()
            .map(|b| BlockPb {
                first_sequence: b.first_seq,
                end_sequence: b.end_seq,
                streams: b
                    .streams
                    .iter()
                    .map(|(name, f)| BacklogPb {
                        name: name.to_string(),
                        records: f.records,
                        bytes: f.bytes,
                        first_sequence: f.first_seq,
                        last_sequence: f.last_seq,
                        oldest_unix_nanos: f.oldest_unix_nanos,
                    })
                    .collect(),
            })
            .collect(),
    };
    pb.encode_to_vec()
}

/// Tables from the data of a checkpoint at `seq`, with these limits (producers beyond
/// `max_producers` are dropped, least recently used first).
pub fn decode_tables(
    data: &[u8],
    max_producers: usize,
    max_streams: usize,
    seq: u64,
) -> Result<Tables, CodecError> {
    let pb = CheckpointPb::decode(data)?;
    if pb.format != FORMAT {
        return Err(CodecError::Format(pb.format));
    }
    let mut t = Tables::new(max_producers, max_streams);
    let skip = pb.producers.len().saturating_sub(max_producers.max(1));
    for p in pb.producers.into_iter().skip(skip) {
        t.restore_producer(
            p.id,
            Producer {
                next: p.next,
                used: p.used,
                recent: p
                    .recent
                    .into_iter()
                    .map(|b| ProducerBatch {
                        producer_sequence: b.producer_sequence,
                        records: b.records,
                        first_seq: b.first_sequence,
                        last_seq: b.last_sequence,
                        stream_version: b.stream_version,
                    })
                    .collect(),
            },
        );
    }
    for s in pb.streams {
        t.streams.insert(
            s.name,
            Stream {
                version: s.version,
                last_seq: s.last_sequence,
            },
        );
    }
    t.backlog = BacklogIndex::new(pb.backlog_from.unwrap_or(seq));
    for b in pb.blocks {
        let streams = b
            .streams
            .into_iter()
            .map(|f| {
                (
                    f.name,
                    Backlog {
                        records: f.records,
                        bytes: f.bytes,
                        first_seq: f.first_sequence,
                        last_seq: f.last_sequence,
                        oldest_unix_nanos: f.oldest_unix_nanos,
                    },
                )
            })
            .collect();
        t.backlog
            .restore_block(b.first_sequence, b.end_sequence, streams);
    }
    Ok(t)
}
